"""Preference dataset: (prompt, chosen, rejected) examples for DPO, supplied in ``landing/preferences/`` or derived.

Supplied lines go through raw_docs' line reader, so each ends as a kept pair or a quarantine row with a
reason; derived pairs take a wrong answer of the same relation and split as ``rejected``. Every pair of
one prompt lands in one split. Reasons, derivation, splits and accounting: DESIGN.md, "Module notes";
files: ml/FORMATS.md.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ml import raw_docs as rd
from ml.datasets import split_counts
from ml.datasets.mixing import example_shares, plan_docs
from ml.datasets.sft import DEFAULT_SYSTEM, chat_prompt, chat_response
from ml.datasets.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO, doc_unit, drop_cross_split_duplicates
from ml.tokenizer import END, SYSTEM, USER

PREFERENCE_DIR = "preferences"
FIELDS = ("prompt", "chosen", "rejected")
LINE_REASONS = tuple(r for r in rd.REASONS if r != "duplicate_doc") + ("same_response", "duplicate_pair")
ORIGINS = ("landing", "derived")
DERIVE_MODES = ("auto", "always", "never")
SCHEMA = {"prompt": pl.String, "chosen": pl.String, "rejected": pl.String, "origin": pl.String,
          "doc_id": pl.String, "source": pl.String, "rejected_doc_id": pl.String, "meta": pl.String}
PAIR_SCHEMA = {**SCHEMA, "line": pl.Int64}


@dataclass(frozen=True)
class PreferenceConfig:
    seed: int = DEFAULT_SEED
    val_ratio: float = DEFAULT_VAL_RATIO
    test_ratio: float = 0.0
    derive: str = "auto"
    """auto: derive pairs from sft_dataset only when no pair is supplied; always; never."""
    system_prompt: str = DEFAULT_SYSTEM
    """System turn put before a supplied prompt that has no chat template yet."""
    mix_weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.derive not in DERIVE_MODES:
            raise ValueError(f"derive: {self.derive!r}, expected one of {DERIVE_MODES}")


def is_preference_file(relpath: str) -> bool:
    """A landing file of preference pairs: ``preferences/**.jsonl`` or ``.jsonl.gz``."""
    return relpath.split("/", 1)[0] == PREFERENCE_DIR and relpath.endswith(rd.LANDING_SUFFIXES)


def scan_preferences(landing: Path) -> list[rd.LandingFile]:
    """The preference files under ``landing`` (hidden ones left out, as raw_docs does), with sha256; an
    ``s3://`` landing zone lists its objects (size from the listing, sha256 of the streamed bytes)."""
    return [rd.LandingFile(rel, path, rd.stat_landing(path).st_size, _sha256(path))
            for rel, path in rd.visible_files(landing) if is_preference_file(rel)]


def _sha256(path) -> str:
    if not rd.is_url(path):
        return rd.sha256_file(path)
    h = hashlib.sha256()
    with rd.open_landing(path) as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _open(lf: rd.LandingFile):
    """A local file as before; an object streamed (``rd.open_landing``), gunzipped for ``.gz``."""
    if not rd.is_url(lf.path):
        return (gzip.open if lf.relpath.endswith(".gz") else open)(lf.path, "rb")
    raw = rd.open_landing(lf.path)
    return gzip.open(raw, "rb") if lf.relpath.endswith(".gz") else raw


def _norm(text: str) -> str:
    return " ".join(text.split())


def pair_doc_id(prompt: str) -> str:
    """The document of a supplied pair: its whitespace-normalised prompt."""
    return "pref-" + hashlib.sha256(_norm(prompt).encode("utf-8")).hexdigest()[:20]


def to_chat(prompt: str, chosen: str, rejected: str, system: str) -> tuple[str, str, str]:
    """Supplied texts in the SFT chat template (left as they are when they already use it)."""
    if not prompt.lstrip().startswith((SYSTEM, USER)):
        prompt = chat_prompt(prompt.strip(), system)
    fix = (lambda r: r if r.rstrip().endswith(END) else chat_response(r.strip()))
    return prompt, fix(chosen), fix(rejected)


@dataclass
class LineReport:
    files: int = 0
    lines_read: int = 0
    kept: int = 0
    quarantined: int = 0
    reasons: Counter = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.reasons = Counter() if self.reasons is None else self.reasons

    def stats(self) -> dict[str, float]:
        out = {"landing.files": self.files, "landing.lines_read": self.lines_read, "landing.kept": self.kept,
               "landing.quarantined": self.quarantined}
        out.update({f"landing.quarantine.{r}": self.reasons.get(r, 0) for r in LINE_REASONS})
        return out


def read_pairs(files: list[rd.LandingFile], quarantine_dir: Path, system: str = DEFAULT_SYSTEM,
               cfg: rd.IngestConfig = rd.IngestConfig()) -> tuple[pl.DataFrame, LineReport]:
    """Validate every line of the preference files: kept pairs (``PAIR_SCHEMA``) and quarantine
    parts written under ``quarantine_dir`` (raw_docs' ``QUARANTINE_SCHEMA``)."""
    report = LineReport()
    quarantine = rd.PartWriter(Path(quarantine_dir), rd.QUARANTINE_SCHEMA, cfg.batch_rows)
    rows: list[dict] = []
    seen: dict[tuple[str, str, str], tuple[str, int]] = {}

    def reject(src: str, line: int, reason: str, detail: str, data: bytes) -> None:
        quarantine.add((src, line, reason, detail, rd.excerpt(data, cfg.excerpt_chars)))
        report.quarantined += 1
        report.reasons[reason] += 1

    for lf in files:
        report.files += 1
        try:
            with _open(lf) as stream:
                for raw in rd.iter_lines(stream, cfg.max_doc_bytes):
                    report.lines_read += 1
                    obj, reason, detail = rd.classify(raw, FIELDS, FIELDS)
                    if reason:
                        reject(lf.relpath, raw.number, reason, detail, raw.data)
                        continue
                    if _norm(obj["chosen"]) == _norm(obj["rejected"]):
                        reject(lf.relpath, raw.number, "same_response", "chosen == rejected", raw.data)
                        continue
                    key = (_norm(obj["prompt"]), _norm(obj["chosen"]), _norm(obj["rejected"]))
                    if key in seen:
                        first = seen[key]
                        reject(lf.relpath, raw.number, "duplicate_pair", f"same pair as {first[0]}:{first[1]}", raw.data)
                        continue
                    seen[key] = (lf.relpath, raw.number)
                    prompt, chosen, rejected = to_chat(obj["prompt"], obj["chosen"], obj["rejected"], system)
                    extra = {k: v for k, v in obj.items() if k not in FIELDS}
                    doc = pair_doc_id(obj["prompt"])
                    rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "origin": "landing",
                                 "doc_id": doc, "source": lf.relpath, "rejected_doc_id": doc, "line": raw.number,
                                 "meta": json.dumps(extra, sort_keys=True, ensure_ascii=False) if extra else None})
                    report.kept += 1
        except rd.FileTruncated as exc:
            report.lines_read += 1
            reject(lf.relpath, exc.line, "truncated_file", exc.detail, b"")
        except OSError as exc:
            report.lines_read += 1
            reject(lf.relpath, 0, "unreadable_file", f"{type(exc).__name__}: {exc}", b"")
    quarantine.flush(force=True)
    assert report.lines_read == report.kept + report.quarantined, "accounting identity broken"
    return pl.DataFrame(rows, schema=PAIR_SCHEMA), report


def derive_pairs(rows: pl.DataFrame, seed: int) -> tuple[pl.DataFrame, int]:
    """Pairs from SFT rows (prompt, response, relation, object, doc_id, source) of ONE split:
    rejected = the response of another row of the same relation with a different object (else of
    any relation), picked by ``doc_unit(seed, doc_id + prompt, "negative")``. Returns (pairs,
    rows without any candidate)."""
    recs = rows.select("prompt", "response", "relation", "object", "doc_id", "source").to_dicts()
    by_rel: dict[str, list[int]] = {}
    for i, r in enumerate(recs):
        by_rel.setdefault(r["relation"], []).append(i)
    everyone = list(range(len(recs)))
    out, none = [], 0
    for i, r in enumerate(recs):
        obj = _norm(r["object"]).lower()
        u = doc_unit(seed, r["doc_id"] + "\x1f" + r["prompt"], "negative")
        pick = None
        for pool in (by_rel[r["relation"]], everyone):
            start = int(u * len(pool))
            for k in range(len(pool)):
                j = pool[(start + k) % len(pool)]
                if j != i and _norm(recs[j]["object"]).lower() != obj and recs[j]["response"] != r["response"]:
                    pick = j
                    break
            if pick is not None:
                break
        if pick is None:
            none += 1
            continue
        out.append({"prompt": r["prompt"], "chosen": r["response"], "rejected": recs[pick]["response"],
                    "origin": "derived", "doc_id": r["doc_id"], "source": r["source"],
                    "rejected_doc_id": recs[pick]["doc_id"]})
    return pl.DataFrame(out, schema=SCHEMA), none


def build_preference(supplied: pl.DataFrame, sft: pl.DataFrame, docs: pl.DataFrame, cfg: PreferenceConfig
                     ) -> tuple[dict[str, pl.DataFrame], dict[str, float]]:
    """Train/val preference pairs from supplied pairs (``read_pairs``) and the SFT rows (train and
    val of sft_dataset together), planned over ``docs`` (cleaned documents: doc_id, source)."""
    use_derived = cfg.derive == "always" or (cfg.derive == "auto" and supplied.height == 0)
    stats: dict[str, float] = {"derived.used": int(use_derived), "landing.pairs": supplied.height}
    pair_docs = supplied.select("doc_id", "source").unique(subset="doc_id", keep="first", maintain_order=True)
    plan_over = [pair_docs]
    if use_derived:
        plan_over.insert(0, docs.select("doc_id", "source"))
    plan = plan_docs(pl.concat(plan_over), cfg.seed, cfg.val_ratio, dict(cfg.mix_weights), test_ratio=cfg.test_ratio)
    stats.update(plan.stats)
    parts_supplied = plan.assign(supplied.select(list(SCHEMA)))
    made, no_negative = 0, 0
    derived = {k: pl.DataFrame(schema=SCHEMA) for k in ("train", "val", "test", "mixed_out")}
    if use_derived and sft.height:
        sft_parts = plan.assign(sft)
        for k in ("train", "val", "test", "mixed_out"):  # negatives from the same split only
            derived[k], none = derive_pairs(sft_parts[k], cfg.seed)
            made += derived[k].height
            no_negative += none
    stats.update({"derived.sft_rows": sft.height if use_derived else 0, "derived.made": made,
                  "skipped.no_negative": no_negative})
    stats["examples_in"] = supplied.height + made
    parts = {k: pl.concat([derived[k], parts_supplied[k]]) for k in ("train", "val", "test", "mixed_out")}
    stats["skipped.mixed_out"] = parts["mixed_out"].height
    train, val = parts["train"], parts["val"]
    val, dropped = drop_cross_split_duplicates(train, val, ["prompt"])
    test, dropped_test = drop_cross_split_duplicates(pl.concat([train, val]), parts["test"], ["prompt"])
    stats["skipped.prompt_in_train"] = dropped + dropped_test
    out = {"train": train.select(list(SCHEMA)), "val": val.select(list(SCHEMA)), "test": test.select(list(SCHEMA))}
    stats.update(example_shares(out["train"]))
    stats.update(split_counts(out, "origin", ORIGINS))
    return out, stats
