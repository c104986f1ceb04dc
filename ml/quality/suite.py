"""How a quality suite is written: the ``Suite``/``CheckDef``/``Prepared`` types, ``Thresholds`` and shared helpers.

A suite reads the upstream versions named in the checked version's manifest, never "the newest", and a
derived column maps a missing value to one that fails (GX skips nulls). How a suite is built:
DESIGN.md, "Module notes".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import polars as pl

from ml.quality.engine import Expectation
from ml.store import ArtifactStore, StoredVersion

EXCERPT = 80  # characters of a text shown in failing-row samples


@dataclass(frozen=True)
class Thresholds:
    """Ceilings and tolerances of the suites (the Dagster checks expose them as run config)."""

    quarantine_rate_max: float = 0.05
    """raw_docs (warning): quarantined lines / lines read."""
    duplicate_rate_max: float = 0.3
    """cleaned_chunks (warning): exact + near duplicate documents / documents in."""
    val_share_tolerance: float = 0.02
    """tokenized_corpus: |val docs / docs - val_ratio| allowed at any corpus size ..."""
    val_share_sigmas: float = 4.0
    """... widened to this many binomial standard errors sqrt(r(1-r)/docs) on small corpora."""
    max_label_share: float = 0.8
    """relation_dataset (warning): the largest share one label may take of the train split."""
    sample_rows: int = 5
    """Failing rows kept per check (metadata and check_results.details)."""

    def __post_init__(self) -> None:
        for name in ("quarantine_rate_max", "duplicate_rate_max", "max_label_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if self.val_share_tolerance < 0 or self.val_share_sigmas < 0:
            raise ValueError("val_share_tolerance and val_share_sigmas must be >= 0")
        if self.sample_rows < 0:
            raise ValueError(f"sample_rows must be >= 0, got {self.sample_rows}")


@dataclass(frozen=True)
class CheckDef:
    name: str
    blocking: bool
    description: str

    @property
    def severity(self) -> str:
        return "ERROR" if self.blocking else "WARN"


@dataclass
class Prepared:
    """A version turned into what GX validates."""

    frames: dict[str, pl.DataFrame]
    expectations: list[Expectation]
    errors: dict[str, str] = field(default_factory=dict)
    """check name -> why its frame could not be built (reported failed, not run)."""
    inputs: dict[str, str] = field(default_factory=dict)
    """upstream asset -> version the suite read."""


@dataclass(frozen=True)
class Suite:
    asset: str
    checks: tuple[CheckDef, ...]
    prepare: Callable[[ArtifactStore, StoredVersion, Thresholds], Prepared]


def expectation(check: str, frame: str, type_: str, sample: tuple[str, ...] = (), notes: Mapping | None = None,
         **kwargs) -> Expectation:
    # severity is filled in from the suite's CheckDef by ml/quality/validate.py
    return Expectation(check, frame, type_, kwargs, sample_columns=sample, notes=dict(notes or {}))



def parquet_parts(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.parquet")) if directory.is_dir() else []


def scan_parts(files: list[Path], columns: list[str], schema: Mapping[str, pl.DataType]) -> pl.LazyFrame:
    """The wanted columns of several parts (a column missing from a part reads as null there;
    a column missing from every part is absent). No parts: an empty frame with ``schema``."""
    frames = []
    for f in files:
        have = pl.read_parquet_schema(f)
        cols = [c for c in columns if c in have]
        # a part with none of the columns still contributes its rows (all null)
        frames.append(pl.scan_parquet(f).select(cols or [pl.nth(0).is_null().alias("_row")]))
    if not frames:
        return pl.LazyFrame(schema={c: schema[c] for c in columns if c in schema})
    return pl.concat(frames, how="diagonal_relaxed").drop("_row", strict=False)


def column_names(lf: pl.LazyFrame) -> list[str]:
    return lf.collect_schema().names()


def schema_frame(tables: Mapping[str, tuple[Mapping[str, pl.DataType], list[Path]]]) -> pl.DataFrame:
    """One row per (table, part, column) with the expected and actual dtype (null when missing
    or unexpected), for ``expect_column_pair_values_to_be_equal(expected, actual)``."""
    rows = []
    for table, (schema, files) in tables.items():
        if not files:
            rows += [{"table": table, "part": None, "column": c, "expected": str(t), "actual": None}
                     for c, t in schema.items()]
            continue
        for f in files:
            actual = dict(pl.read_parquet_schema(f))
            for c in dict.fromkeys([*schema, *actual]):
                rows.append({
                    "table": table, "part": f.name, "column": c,
                    "expected": str(schema[c]) if c in schema else None,
                    "actual": str(actual[c]) if c in actual else None,
                })
    return pl.DataFrame(rows, schema={"table": pl.String, "part": pl.String, "column": pl.String,
                                      "expected": pl.String, "actual": pl.String})


def schema_expectation(notes: Mapping | None = None) -> Expectation:
    return expectation("columns_and_types", "schema", "expect_column_pair_values_to_be_equal",
                ("table", "part", "column", "expected", "actual"), notes,
                column_A="expected", column_B="actual")


def recorded_upstream(store: ArtifactStore, v: StoredVersion, asset: str) -> tuple[StoredVersion | None, str | None]:
    """The upstream version recorded in v's manifest, or why it cannot be read."""
    up = (v.manifest.get("upstream") or {}).get(asset)
    if not up:
        return None, f"{v.asset}@{v.data_version}'s manifest records no upstream {asset} version"
    if not store.has_version(asset, up):
        return None, f"upstream {asset}@{up} (recorded in {v.asset}@{v.data_version}'s manifest) is not in the store"
    return store.open(asset, up), None  # verified against its manifest (CorruptVersionError)


def built_config(v: StoredVersion, key: str) -> tuple[Any, str | None]:
    cfg = v.manifest.get("config") or {}
    if cfg.get(key) is None:
        return None, f"{v.asset}@{v.data_version}'s manifest config has no {key!r}"
    return cfg[key], None


def stripped_chars(col: str) -> pl.Expr:
    """Characters after stripping whitespace; a null counts as empty (0)."""
    return pl.col(col).str.strip_chars().str.len_chars().fill_null(0).cast(pl.Int64)


def excerpt(col: str) -> pl.Expr:
    return pl.col(col).str.slice(0, EXCERPT).alias(f"{col}_excerpt")
