"""cleaned_chunks: raw docs → cleaned, deduplicated, quality-filtered, chunked text.

Every input document gets exactly one decision, recorded in ``decisions/``:

==================  ==========================================================
kept                passed every rule; its cleaned text is chunked
exact_duplicate     same normalized text as an earlier document (duplicate_of);
                    similarity 1.0
filtered            a rule fired; ``reason`` is the rule's code (filters.RULES)
near_duplicate      exact Jaccard ≥ threshold with an earlier kept document
                    (duplicate_of), found through MinHash/LSH; similarity = that
                    Jaccard (definition in minhash.py)
==================  ==========================================================

Order of the checks: cleaning → empty text → exact dedup → quality rules → near
dedup among the documents that passed the rules, so ``duplicate_of`` always points
at a document that is kept.

Two passes over bounded batches: pass 1 cleans, exact-dedups, filters and MinHashes
each batch, spilling the survivors' cleaned text to ``tmp``; then LSH finds the
survivors that share a bucket, their shingles are recomputed from the spilled text
(those documents only), and exact Jaccard decides; pass 2 chunks the documents that
remain. Memory: one batch plus a uint32 signature (num_perm × 4 bytes) and an
exact-dedup key per document, plus the shingle hashes (8 bytes per word) of the
documents that share an LSH bucket.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl

from ml.cleaned_chunks.chunking import ChunkConfig, chunk_frame
from ml.cleaned_chunks.clean import CleanConfig, check_patterns, clean_frame, exact_key_expr, line_rules
from ml.cleaned_chunks.filters import MIX, FilterConfig, WordArrays, compute_features, first_failing_reason
from ml.cleaned_chunks.minhash import MinHasher, ShingleSets, near_duplicates

DECISIONS = ("kept", "exact_duplicate", "near_duplicate", "filtered")
# similarity: exact Jaccard with duplicate_of (1.0 for an exact duplicate), null otherwise
DECISION_SCHEMA = {"doc_id": pl.String, "decision": pl.String, "reason": pl.String, "duplicate_of": pl.String,
                   "similarity": pl.Float64}
DOC_COLUMNS = ("doc_id", "title", "url", "source")


@dataclass(frozen=True)
class CurationConfig:
    clean: CleanConfig = field(default_factory=CleanConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    exact_dedup: bool = True
    near_dedup: bool = True
    jaccard_threshold: float = 0.8
    shingle_size: int = 5
    num_perm: int = 128
    minhash_seed: int = 42
    batch_docs: int = 10_000
    threads: int = 2


@dataclass
class CurationReport:
    docs_in: int = 0
    chars_in: int = 0
    decisions: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    lines_removed: Counter = field(default_factory=Counter)
    chunks: int = 0
    chunk_chars: int = 0
    chunk_tokens: int = 0
    kept_chars: int = 0
    lsh: dict = field(default_factory=dict)

    def stats(self) -> dict[str, float]:
        s: dict[str, float] = {"docs_in": self.docs_in, "chars_in": self.chars_in}
        for d in DECISIONS:
            s[f"docs.{d}"] = self.decisions.get(d, 0)
        for reason, n in sorted(self.filtered.items()):
            s[f"filtered.{reason}"] = n
        for rule, n in sorted(self.lines_removed.items()):
            s[f"lines_removed.{rule}"] = n
        dup = self.decisions.get("exact_duplicate", 0) + self.decisions.get("near_duplicate", 0)
        s.update({
            "docs_out": self.decisions.get("kept", 0),
            "duplicate_rate": dup / self.docs_in if self.docs_in else 0.0,
            "chunks": self.chunks,
            "chars": self.kept_chars,
            "mean_chunk_chars": self.chunk_chars / self.chunks if self.chunks else 0.0,
            "mean_chunk_tokens": self.chunk_tokens / self.chunks if self.chunks else 0.0,
            **{f"lsh.{k}": v for k, v in self.lsh.items()},
        })
        return s


def iter_batches(paths: list[Path], batch: int) -> Iterator[pl.DataFrame]:
    for path in paths:
        df = pl.read_parquet(path, columns=[*DOC_COLUMNS, "content"])
        for lo in range(0, df.height, batch):
            yield df.slice(lo, batch)


def _shingles(words: WordArrays, n: int, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(doc, shingle hash) for the docs in ``keep`` (batch indices, ascending), docs sorted."""
    pos, h = words.ngram_hashes(n)
    doc = words.doc[pos]
    counts = np.bincount(words.doc, minlength=words.n_docs)
    short = [d for d in keep if 0 < counts[d] < n]  # fewer than n words: one shingle of all of them
    if short:
        starts = np.r_[0, np.cumsum(counts)]
        extra_h = []
        with np.errstate(over="ignore"):
            for d in short:
                v = np.uint64(0)
                for x in words.hash[starts[d]:starts[d + 1]]:
                    v = v * MIX ^ x
                extra_h.append(v)
        doc = np.r_[doc, np.array(short, dtype=np.int64)]
        h = np.r_[h, np.array(extra_h, dtype=np.uint64)]
    mask = np.isin(doc, keep)
    doc, h = doc[mask], h[mask]
    order = np.argsort(doc, kind="stable")
    # renumber docs to 0..len(keep)-1 in keep order
    return np.searchsorted(keep, doc[order]), h[order]


def _spilled_shingles(spill: Path, part_rows: list[int], n: int, docs: np.ndarray) -> ShingleSets:
    """Shingle sets of survivors ``docs`` (ascending global indices), recomputed from the spilled
    cleaned text exactly as pass 1 computed them for the signatures."""
    starts = np.r_[0, np.cumsum(part_rows)]
    doc_parts, hash_parts = [], []
    for part in np.unique(np.searchsorted(starts, docs, side="right") - 1):
        local = docs[(docs >= starts[part]) & (docs < starts[part + 1])] - starts[part]
        text = pl.read_parquet(spill / f"part-{part:05d}.parquet", columns=["text"])["text"].gather(local)
        d, h = _shingles(WordArrays.from_texts(text), n, np.arange(len(local)))
        doc_parts.append(local[d] + starts[part])
        hash_parts.append(h)
    return ShingleSets.from_hashes(np.concatenate(doc_parts), np.concatenate(hash_parts))


def curate(raw_parts: list[Path], out: Path, tmp: Path, cfg: CurationConfig = CurationConfig()) -> CurationReport:
    check_patterns(cfg.clean.boilerplate_patterns)
    report = CurationReport()
    hasher = MinHasher(cfg.num_perm, cfg.minhash_seed)
    rules = [name for name, _ in line_rules(cfg.clean)]
    seen_exact: dict[int, str] = {}
    decisions: list[pl.DataFrame] = []
    survivor_ids: list[str] = []
    signatures: list[np.ndarray] = []
    has_shingles: list[np.ndarray] = []
    spill = tmp / "survivors"
    spill.mkdir(parents=True, exist_ok=True)
    n_spill = 0
    spill_rows: list[int] = []

    # ---- pass 1: clean, exact dedup, filter, minhash -----------------------------------------
    for batch in iter_batches(raw_parts, cfg.batch_docs):
        report.docs_in += batch.height
        report.chars_in += int(batch["content"].str.len_chars().sum())
        cleaned = clean_frame(batch, "content", cfg.clean)
        for rule in rules:
            report.lines_removed[rule] += int(cleaned[rule].sum())
        cleaned = cleaned.select(*DOC_COLUMNS, "text", key=exact_key_expr("text"))

        decision = np.full(cleaned.height, None, dtype=object)
        reason = np.full(cleaned.height, None, dtype=object)
        dup_of = np.full(cleaned.height, None, dtype=object)
        similarity = np.full(cleaned.height, None, dtype=object)
        empty = (cleaned["text"].str.len_chars() == 0).to_numpy()
        decision[empty], reason[empty] = "filtered", "empty_after_cleaning"
        if cfg.exact_dedup:
            for i, (key, doc_id) in enumerate(zip(cleaned["key"].to_list(), cleaned["doc_id"].to_list())):
                if empty[i]:
                    continue
                first = seen_exact.setdefault(key, doc_id)
                if first != doc_id:
                    decision[i], reason[i], dup_of[i] = "exact_duplicate", "exact_duplicate", first
                    similarity[i] = 1.0  # same lower-cased, whitespace-split words: same shingles
        todo = np.flatnonzero(decision == None)  # noqa: E711 (object array)
        if len(todo):
            sub = cleaned[todo]
            words = WordArrays.from_texts(sub["text"])
            fails = first_failing_reason(compute_features(sub, "text", cfg.filters, words), cfg.filters).to_numpy()
            failed = fails != None  # noqa: E711
            decision[todo[failed]], reason[todo[failed]] = "filtered", fails[failed]
            keep_local = np.flatnonzero(~failed)
            if len(keep_local):
                survivors = sub[keep_local]
                survivors.select(*DOC_COLUMNS, "text").write_parquet(spill / f"part-{n_spill:05d}.parquet")
                n_spill += 1
                spill_rows.append(len(keep_local))
                survivor_ids.extend(survivors["doc_id"].to_list())
                if cfg.near_dedup:
                    doc, sh = _shingles(words, cfg.shingle_size, keep_local)
                    sig, has = hasher.signatures(doc, sh, len(keep_local), cfg.threads)
                    signatures.append(sig)
                    has_shingles.append(has)
        decisions.append(pl.DataFrame({"doc_id": cleaned["doc_id"], "decision": decision.tolist(),
                                       "reason": reason.tolist(), "duplicate_of": dup_of.tolist(),
                                       "similarity": similarity.tolist()},
                                      schema=DECISION_SCHEMA))

    # ---- near-duplicate clusters over all survivors ------------------------------------------
    dup = np.full(len(survivor_ids), -1, dtype=np.int64)
    sim = np.full(len(survivor_ids), np.nan)
    if cfg.near_dedup and survivor_ids:
        result = near_duplicates(np.concatenate(signatures), np.concatenate(has_shingles), cfg.jaccard_threshold,
                                 lambda docs: _spilled_shingles(spill, spill_rows, cfg.shingle_size, docs))
        dup, sim = result.duplicate_of, result.similarity
        report.lsh = {"bands": result.bands, "rows": result.rows, "candidate_docs": result.candidate_docs,
                      "verified_pairs": result.verified_pairs, "bucket_overflow": result.bucket_overflow}
    is_rep = dup < 0
    removed = np.flatnonzero(~is_rep)
    near = pl.DataFrame({
        "doc_id": [survivor_ids[i] for i in removed],
        "decision": "near_duplicate", "reason": f"near_duplicate:jaccard>={cfg.jaccard_threshold}",
        "duplicate_of": [survivor_ids[dup[i]] for i in removed], "similarity": sim[removed],
    }, schema=DECISION_SCHEMA)
    kept = pl.DataFrame({"doc_id": [survivor_ids[i] for i in np.flatnonzero(is_rep)],
                         "decision": "kept"}, schema={"doc_id": pl.String, "decision": pl.String})

    # ---- pass 2: chunk what is kept -----------------------------------------------------------
    (out / "docs").mkdir(parents=True)
    (out / "chunks").mkdir(parents=True)
    offset = 0
    for part in range(n_spill):
        docs = pl.read_parquet(spill / f"part-{part:05d}.parquet")
        n = docs.height
        docs = docs.filter(pl.Series(is_rep[offset:offset + n]))
        offset += n
        docs.write_parquet(out / "docs" / f"part-{part:05d}.parquet")
        chunks = chunk_frame(docs.select("doc_id", "text"), cfg.chunk)
        chunks.write_parquet(out / "chunks" / f"part-{part:05d}.parquet")
        report.kept_chars += int(docs["text"].str.len_chars().sum())
        report.chunks += chunks.height
        report.chunk_chars += int(chunks["text"].str.len_chars().sum())
        report.chunk_tokens += int(chunks["n_tokens"].sum())

    # ---- one decision per input document, in input order ----------------------------------------
    if not decisions:
        raise ValueError("cleaned_chunks: raw_docs has no documents")
    all_decisions = pl.concat(decisions).with_row_index("order")
    resolved = (all_decisions
                .join(near.select("doc_id", near_reason="reason", near_dup="duplicate_of", near_sim="similarity"),
                      on="doc_id", how="left")
                .join(kept.select("doc_id", kept_flag="decision"), on="doc_id", how="left")
                .with_columns(
                    decision=pl.coalesce("decision", pl.when(pl.col("near_dup").is_not_null()).then(pl.lit("near_duplicate")),
                                         "kept_flag"),
                    reason=pl.coalesce("reason", "near_reason"),
                    duplicate_of=pl.coalesce("duplicate_of", "near_dup"),
                    similarity=pl.coalesce("similarity", "near_sim"))
                .sort("order").select(*DECISION_SCHEMA))
    if resolved["decision"].null_count():
        raise AssertionError("a document ended without a decision")
    report.decisions.update(dict(resolved.group_by("decision").len().rows()))
    report.filtered.update(dict(resolved.filter(pl.col("decision") == "filtered").group_by("reason").len().rows()))
    (out / "decisions").mkdir()
    resolved.write_parquet(out / "decisions" / "part-00000.parquet")
    assert sum(report.decisions.values()) == report.docs_in, "accounting: a document vanished"
    return report


def read_chunks(version_dir: Path) -> pl.LazyFrame:
    return pl.scan_parquet(version_dir / "chunks" / "*.parquet")


def read_decisions(version_dir: Path) -> pl.LazyFrame:
    return pl.scan_parquet(version_dir / "decisions" / "*.parquet")


def read_clean_docs(version_dir: Path) -> pl.LazyFrame:
    return pl.scan_parquet(version_dir / "docs" / "*.parquet")
