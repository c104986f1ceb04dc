"""The *_dataset quality suites: no document and no item text in two splits, a non-empty train split,
and (relation_dataset) no label over max_label_share of train.
"""

from __future__ import annotations

from typing import Callable

import polars as pl

from ml.quality.suite import CheckDef, Prepared, Suite, Thresholds, excerpt, expectation
from ml.store import ArtifactStore, StoredVersion

DATASET_ITEM_KEYS = {
    # the texts that make an item: one of them seen in both splits is a leak (the builders in
    # ml/datasets/ drop such val rows: embedding bans every train anchor/positive text from val)
    "embedding_dataset": ("anchor", "positive"),
    "relation_dataset": ("text",),
    "sft_dataset": ("prompt",),
    "gnn_dataset": ("query",),
    "ner_dataset": ("text",),
    "preference_dataset": ("prompt",),
}
# list columns whose documents count as the row's documents too (gnn: every candidate chunk's document)
DATASET_EXTRA_DOCS = {"gnn_dataset": "candidate_doc_ids"}


def _dataset_checks(asset: str) -> tuple[CheckDef, ...]:
    keys = " or ".join(DATASET_ITEM_KEYS[asset])
    checks = [
        CheckDef("no_doc_in_both_splits", True, "no document (doc_id) has rows in two of train, val and test"
                 + (" (every candidate chunk's document counts)" if asset in DATASET_EXTRA_DOCS else "")),
        CheckDef("no_item_in_both_splits", True, f"no item text ({keys}) appears in two of train, val and test"),
        CheckDef("train_split_non_empty", True, "the train split has at least one row (a model cannot "
                 "train on nothing)"),
    ]
    if asset == "relation_dataset":
        checks.append(CheckDef("class_balance", False, "no label takes more than max_label_share of the "
                               "train split"))
    return tuple(checks)


def _dataset(asset: str) -> Callable[[ArtifactStore, StoredVersion, Thresholds], Prepared]:
    keys = list(DATASET_ITEM_KEYS[asset])

    def prepare(store: ArtifactStore, v: StoredVersion, t: Thresholds) -> Prepared:
        errors: dict[str, str] = {}
        parts = []
        for split in ("train", "val", "test"):
            f = v.path / f"{split}.parquet"
            if split == "test" and not f.is_file():
                continue  # a version made before test splits existed: train and val are still checked
            if not f.is_file():
                errors.update({c.name: f"{asset}@{v.data_version} has no {split}.parquet"
                               for c in _dataset_checks(asset)})
                continue
            have = pl.read_parquet_schema(f)
            missing = [c for c in ["doc_id", *keys] if c not in have]
            if missing:
                why = f"{asset}@{v.data_version}: {split}.parquet lacks {missing}"
                errors.setdefault("no_doc_in_both_splits" if "doc_id" in missing else "no_item_in_both_splits", why)
                if "doc_id" in missing and len(missing) > 1:
                    errors.setdefault("no_item_in_both_splits", why)
            cols = [c for c in ["doc_id", *keys, "label"] if c in have]
            part = pl.scan_parquet(f).select(cols).with_columns(split=pl.lit(split))
            extra = DATASET_EXTRA_DOCS.get(asset)
            if extra and extra in have:  # one more row per candidate document (item keys blanked)
                docs = (pl.scan_parquet(f).select(pl.col(extra).alias("doc_id")).explode("doc_id")
                        .with_columns(split=pl.lit(split), **{k: pl.lit(None, pl.String) for k in keys}))
                part = pl.concat([part, docs], how="diagonal_relaxed")
            elif extra:
                errors.setdefault("no_doc_in_both_splits", f"{asset}@{v.data_version}: {split}.parquet lacks {extra}")
            parts.append(part)
        rows = pl.concat(parts, how="diagonal_relaxed").collect() if parts else pl.DataFrame(
            schema={"doc_id": pl.String, "split": pl.String})
        exprs: list[pl.Expr] = []
        if "doc_id" in rows.columns:
            exprs.append((pl.col("split").n_unique().over("doc_id") > 1).alias("doc_in_both_splits"))
        if all(k in rows.columns for k in keys):
            texts = (rows.select(*keys, "split", row=pl.int_range(pl.len()))
                     .unpivot(on=keys, index=["row", "split"], value_name="item").drop_nulls("item"))
            leaked = texts.filter(pl.col("split").n_unique().over("item") > 1)["row"].unique()
            exprs.append(pl.int_range(pl.len()).is_in(leaked.implode()).alias("item_in_both_splits"))
            exprs += [excerpt(k) for k in keys]
        rows = rows.with_columns(exprs)
        sample = ("doc_id", "split", *(f"{k}_excerpt" for k in keys))
        sizes = pl.DataFrame({"split": ["train", "val"],
                              "rows": [int((rows["split"] == sp).sum()) for sp in ("train", "val")]})
        frames = {"rows": rows, "train_rows": sizes.filter(pl.col("split") == "train")}
        expectations = [
            expectation("train_split_non_empty", "train_rows", "expect_column_values_to_be_between", ("split", "rows"),
                 column="rows", min_value=1),
            expectation("no_doc_in_both_splits", "rows", "expect_column_values_to_be_in_set", sample,
                 column="doc_in_both_splits", value_set=[False]),
            expectation("no_item_in_both_splits", "rows", "expect_column_values_to_be_in_set", sample,
                 column="item_in_both_splits", value_set=[False]),
        ]
        if asset == "relation_dataset":
            train = rows.filter(pl.col("split") == "train")
            if "label" in train.columns:
                labels = (train.group_by("label").len("rows").sort("rows", descending=True)
                          .with_columns(share=pl.col("rows") / max(train.height, 1)))
            else:
                labels = pl.DataFrame(schema={"label": pl.String, "rows": pl.UInt32, "share": pl.Float64})
                errors.setdefault("class_balance", "relation_dataset has no label column")
            frames["labels"] = labels
            expectations.append(expectation("class_balance", "labels", "expect_column_values_to_be_between",
                                     ("label", "rows", "share"), column="share", max_value=t.max_label_share))
        return Prepared(frames=frames, expectations=expectations, errors=errors)

    return prepare


SUITES: dict[str, Suite] = {a: Suite(a, _dataset_checks(a), _dataset(a)) for a in DATASET_ITEM_KEYS}
