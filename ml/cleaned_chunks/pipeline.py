"""cleaned_chunks: raw docs -> cleaned, deduplicated, quality-filtered, chunked text.

Every input document gets exactly one decision (kept, exact_duplicate, filtered, near_duplicate), checked
in the order cleaning -> empty -> exact dedup -> rules -> near dedup, so ``duplicate_of`` always names a
kept document. Decisions, passes and memory: DESIGN.md, "Module notes"; files: ml/FORMATS.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl

from ml.cleaned_chunks.chunking import CHUNK_SCHEMA, ChunkConfig, chunk_frame
from ml.cleaned_chunks.clean import CleanConfig, check_patterns, clean_frame, exact_key_expr, line_rules
from ml.cleaned_chunks.filters import MIX, FilterConfig, WordArrays, compute_features, first_failing_reason
from ml.cleaned_chunks.minhash import MinHasher, _band_hash, lsh_params, resolve

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
    batch_docs: int = 1_000  # documents cleaned and hashed at once: the unit step's memory
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
    """The documents of ``paths`` in batches of at most ``batch`` rows, read one Parquet row group
    at a time (raw_docs writes row groups of ``ROW_GROUP_ROWS``), never a whole file."""
    import pyarrow.parquet as pq

    for path in paths:
        with pq.ParquetFile(path) as f:
            for rb in f.iter_batches(batch_size=batch, columns=[*DOC_COLUMNS, "content"]):
                yield pl.from_arrow(rb)


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


# ---- 1. per unit: everything that depends on one document alone --------------------------------
LOCAL_SCHEMA = {"doc_id": pl.String, "key": pl.UInt64, "decision": pl.String, "reason": pl.String}
SURVIVOR_SCHEMA = {**{c: pl.String for c in DOC_COLUMNS}, "text": pl.String}


def curate_unit(raw_parts: list[Path], out: Path, cfg: CurationConfig = CurationConfig()) -> dict[str, int]:
    """Clean, rule-filter, exact-key, MinHash and chunk the documents of one unit into ``out``
    (layout: FORMATS.md, cleaned_chunks units). Returns the unit's stats: docs_in, chars_in,
    lines_removed.<rule>. Memory: one batch of ``batch_docs`` documents and the unit's signatures."""
    check_patterns(cfg.clean.boilerplate_patterns)
    hasher = MinHasher(cfg.num_perm, cfg.minhash_seed)
    rules = [name for name, _ in line_rules(cfg.clean)]
    stats: dict[str, int] = {"docs_in": 0, "chars_in": 0, **{f"lines_removed.{r}": 0 for r in rules}}
    for sub in ("local", "survivors", "chunks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    signatures, has_shingles = [np.empty((0, cfg.num_perm), np.uint32)], [np.empty(0, bool)]
    part, survivor_rows = 0, []
    for batch in iter_batches(raw_parts, cfg.batch_docs):
        stats["docs_in"] += batch.height
        stats["chars_in"] += int(batch["content"].str.len_chars().sum())
        cleaned = clean_frame(batch, "content", cfg.clean)
        for rule in rules:
            stats[f"lines_removed.{rule}"] += int(cleaned[rule].sum())
        cleaned = cleaned.select(*DOC_COLUMNS, "text", key=exact_key_expr("text"))
        decision = np.full(cleaned.height, None, dtype=object)
        reason = np.full(cleaned.height, None, dtype=object)
        empty = (cleaned["text"].str.len_chars() == 0).to_numpy()
        decision[empty], reason[empty] = "filtered", "empty_after_cleaning"
        todo = np.flatnonzero(~empty)
        survivors = cleaned.clear()
        if len(todo):
            sub = cleaned[todo]
            words = WordArrays.from_texts(sub["text"])
            fails = first_failing_reason(compute_features(sub, "text", cfg.filters, words), cfg.filters).to_numpy()
            failed = fails != None  # noqa: E711 (object array)
            decision[todo[failed]], reason[todo[failed]] = "filtered", fails[failed]
            keep_local = np.flatnonzero(~failed)
            if len(keep_local):
                survivors = sub[keep_local]
                if cfg.near_dedup:
                    doc, sh = _shingles(words, cfg.shingle_size, keep_local)
                    sig, has = hasher.signatures(doc, sh, len(keep_local), cfg.threads)
                    signatures.append(sig)
                    has_shingles.append(has)
        key = cleaned["key"].to_numpy().astype(np.uint64)
        pl.DataFrame({"doc_id": cleaned["doc_id"], "key": pl.Series(key).scatter(np.flatnonzero(empty), None),
                      "decision": decision.tolist(), "reason": reason.tolist()},
                     schema=LOCAL_SCHEMA).write_parquet(out / "local" / f"part-{part:05d}.parquet")
        survivors = survivors.select(*DOC_COLUMNS, "text")
        survivors.write_parquet(out / "survivors" / f"part-{part:05d}.parquet")
        survivor_rows.append(survivors.height)
        chunk_frame(survivors.select("doc_id", "text"), cfg.chunk).write_parquet(out / "chunks" / f"part-{part:05d}.parquet")
        part += 1
    if not part:  # no documents: empty parts, so every glob finds a file
        pl.DataFrame(schema=LOCAL_SCHEMA).write_parquet(out / "local" / "part-00000.parquet")
        pl.DataFrame(schema=SURVIVOR_SCHEMA).write_parquet(out / "survivors" / "part-00000.parquet")
        pl.DataFrame(schema=CHUNK_SCHEMA).write_parquet(out / "chunks" / "part-00000.parquet")
        survivor_rows.append(0)
    np.save(out / "survivor_rows.npy", np.array(survivor_rows, np.int64))  # rows per survivors part
    if cfg.near_dedup:
        np.save(out / "signatures.npy", np.concatenate(signatures))
        np.save(out / "has.npy", np.concatenate(has_shingles))
    return stats


# ---- 2. the dedup index: the state after a prefix of units --------------------------------------
EXACT_SCHEMA = {"key": pl.UInt64, "doc_id": pl.String}
KEPT_SCHEMA = {"doc_id": pl.String, "unit": pl.Int32, "row": pl.Int32}


@dataclass
class DedupIndex:
    """What the decisions of later documents depend on, after some units in order: the first
    non-empty document of each exact-dedup key, and per kept document with shingles its LSH band
    hashes and where its cleaned text is (unit position, row among the unit's survivors).
    Greedy decisions in document order depend on earlier documents only, so merging new units
    against the index of the units before them gives exactly a cold run's decisions. Held as
    Arrow columns and numpy arrays (no Python object per document)."""

    exact: pl.DataFrame  # EXACT_SCHEMA: key, the first doc_id with it
    kept: pl.DataFrame  # KEPT_SCHEMA: doc_id, unit, row
    bands: np.ndarray  # uint64 [n_bands, kept]: band-major, so probing a band reads one contiguous row

    @classmethod
    def empty(cls, n_bands: int = 0) -> "DedupIndex":
        return cls(pl.DataFrame(schema=EXACT_SCHEMA), pl.DataFrame(schema=KEPT_SCHEMA), np.empty((n_bands, 0), np.uint64))

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.exact.write_parquet(out / "exact.parquet")
        self.kept.write_parquet(out / "kept.parquet")
        np.save(out / "bands.npy", self.bands)

    @classmethod
    def load(cls, path: Path) -> "DedupIndex":
        return cls(pl.read_parquet(path / "exact.parquet").cast(EXACT_SCHEMA),
                   pl.read_parquet(path / "kept.parquet").cast(KEPT_SCHEMA), np.load(path / "bands.npy"))


def _band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    out = np.empty((sig.shape[0], bands), np.uint64)
    for b in range(bands):
        out[:, b] = _band_hash(sig, b, rows)
    return out


class ShingleFile:
    """The shingle sets of the merge's candidate documents in a temporary file: each document's
    hashes sorted and unique (as ``ShingleSets``), appended in ascending document order and read
    back one document at a time (``os.pread``), so the merge holds an offset per candidate
    document, not its shingles."""

    def __init__(self, path: Path):
        self.path, self._out = path, open(path, "wb")
        self._docs: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self.docs = np.empty(0, np.int64)
        self.offsets = np.zeros(1, np.int64)
        self._fd = -1

    def add(self, docs: np.ndarray, doc: np.ndarray, hashes: np.ndarray) -> None:
        """The sets of ``docs`` (ascending, after every earlier ``add``) from (index into docs,
        shingle hash) pairs."""
        order = np.lexsort((hashes, doc))
        doc, hashes = doc[order], hashes[order]
        first = np.r_[True, (doc[1:] != doc[:-1]) | (hashes[1:] != hashes[:-1])] if len(doc) else np.empty(0, bool)
        doc, hashes = doc[first], hashes[first]
        self._out.write(np.ascontiguousarray(hashes, dtype=np.uint64).tobytes())
        self._docs.append(np.asarray(docs, np.int64))
        self._counts.append(np.bincount(doc, minlength=len(docs)).astype(np.int64))

    def finish(self) -> "ShingleFile":
        self._out.close()
        self.docs = np.concatenate(self._docs) if self._docs else np.empty(0, np.int64)
        self.offsets = np.r_[0, np.cumsum(np.concatenate(self._counts))].astype(np.int64) if self._counts \
            else np.zeros(1, np.int64)
        self._docs = self._counts = []
        self._fd = os.open(self.path, os.O_RDONLY)
        return self

    def close(self) -> None:
        if not self._out.closed:
            self._out.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __getitem__(self, d: int) -> np.ndarray:
        k = int(np.searchsorted(self.docs, d))
        if k == len(self.docs) or self.docs[k] != d:
            raise KeyError(f"no shingles held for document {d}")
        lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
        return np.frombuffer(os.pread(self._fd, (hi - lo) * 8, lo * 8), dtype=np.uint64)


SHINGLE_BLOCK = 1000  # documents whose shingles are computed at once


def _unit_shingles(units, index: np.ndarray, unit: np.ndarray, row: np.ndarray, n: int, out: ShingleFile) -> None:
    """Shingle sets of documents ``index`` (the merge's numbering, ascending), whose text is row
    ``row`` of unit ``unit``'s survivors, into ``out``: recomputed exactly as ``curate_unit``
    computed them for the signatures, one unit and ``SHINGLE_BLOCK`` documents at a time. Units
    come in ascending order, and within a unit rows ascend with the numbering, so the documents
    reach ``out`` in ascending order."""
    cuts = np.flatnonzero(np.r_[True, unit[1:] != unit[:-1], True])
    check = getattr(units, "check_file", None)
    for a, b in zip(cuts[:-1], cuts[1:]):
        u = int(unit[a])
        rows, idx = row[a:b].astype(np.int64), index[a:b]
        text = _survivor_text(units[u] if check is None else units.unverified(u), rows,
                              (lambda rel, u=u: check(u, rel)) if check else None)
        for lo in range(0, len(rows), SHINGLE_BLOCK):
            block = text.slice(lo, SHINGLE_BLOCK)
            d, h = _shingles(WordArrays.from_texts(block), n, np.arange(len(block)))
            out.add(idx[lo:lo + len(block)], d, h)


def _survivor_text(unit: Path, rows: np.ndarray, check=None) -> pl.Series:
    """The cleaned text of survivors ``rows`` (ascending) of a unit, reading only the survivors
    parts that hold them (``survivor_rows.npy``); ``check(relpath)`` verifies each file read first."""
    if check:
        check("survivor_rows.npy")
    counts = np.load(unit / "survivor_rows.npy")
    starts = np.r_[0, np.cumsum(counts)]
    part = np.searchsorted(starts, rows, side="right") - 1
    texts = []
    for k in np.unique(part):
        rel = f"survivors/part-{int(k):05d}.parquet"
        if check:
            check(rel)
        local = (rows[part == k] - starts[k]).tolist()
        texts.append(pl.read_parquet(unit / rel, columns=["text"]).with_row_index("row")
                     .filter(pl.col("row").is_in(local)).sort("row")["text"])
    return pl.concat(texts) if texts else pl.Series("text", [], pl.String)


@dataclass
class MergeResult:
    decisions: list[pl.DataFrame]  # one DECISION_SCHEMA frame per merged unit, documents in order
    index: DedupIndex  # the state after every unit
    lsh: dict


def _exact_dedup(local: pl.DataFrame, earlier: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(row, duplicate_of) of the unit's exact duplicates (of an earlier unit's document or of one
    earlier in the unit), and the unit's new (key, doc_id): the first document of each key no
    earlier unit has."""
    k = (local.select("doc_id", "key").with_row_index("row").filter(pl.col("key").is_not_null())
         .with_columns(first_here=pl.col("key").is_first_distinct()))
    firsts = k.filter("first_here").select("key", first_unit="doc_id")
    j = (k.join(earlier.rename({"doc_id": "first_old"}), on="key", how="left", maintain_order="left")
         .join(firsts, on="key", how="left", maintain_order="left")
         .with_columns(first=pl.coalesce("first_old", "first_unit")))
    dups = j.filter(pl.col("first") != pl.col("doc_id")).select("row", duplicate_of="first")
    new = j.filter(pl.col("first_old").is_null() & pl.col("first_here")).select("key", "doc_id")
    return dups, new


def merge(units: list[Path], start: int, index: DedupIndex, cfg: CurationConfig = CurationConfig(),
          tmp: Path | None = None) -> MergeResult:
    """Decisions of the computed units ``units[start:]`` (in order), given ``index``: the state after
    ``units[:start]``. Exact dedup against every earlier key, then near dedup of the survivors against
    the kept documents of the index and of each other, looking only at the LSH buckets a new
    document falls in. Its cost grows with the new units (and one pass over the index's band
    hashes); its memory holds per new survivor a row number, 8 bytes per band and its doc_id
    (Arrow), per candidate document an offset (their shingles go to a file in ``tmp``)."""
    bands, rows = lsh_params(cfg.jaccard_threshold, cfg.num_perm) if cfg.near_dedup else (0, 0)
    earlier = index.exact
    new_exact: list[pl.DataFrame] = []
    frames, surv_ids, surv_unit, surv_row, surv_pos, sigs, has_parts = [], [], [], [], [], [], []
    for u in range(start, len(units)):
        local = pl.read_parquet(units[u] / "local" / "*.parquet")
        passed = local["decision"].is_null().to_numpy()  # survivors' rows, in order
        frame = local.select("doc_id", "decision", "reason",
                             duplicate_of=pl.lit(None, pl.String), similarity=pl.lit(None, pl.Float64))
        if cfg.exact_dedup:
            dups, new = _exact_dedup(local, earlier)
            earlier = pl.concat([earlier, new])
            new_exact.append(new)
            if dups.height:
                r = dups["row"].to_numpy()
                frame = frame.with_columns(
                    frame["decision"].scatter(r, "exact_duplicate"), frame["reason"].scatter(r, "exact_duplicate"),
                    frame["duplicate_of"].scatter(r, dups["duplicate_of"]),
                    frame["similarity"].scatter(r, 1.0))  # same lower-cased, whitespace-split words: same shingles
        srow = np.cumsum(passed) - 1  # row among the unit's survivors
        mine = np.flatnonzero(passed & frame["decision"].is_null().to_numpy())  # not an exact duplicate either
        surv_ids.append(frame["doc_id"].gather(mine))
        surv_unit.append(np.full(len(mine), u, np.int32))
        surv_row.append(srow[mine].astype(np.int32))
        surv_pos.append(mine)
        if cfg.near_dedup:  # band hashes only: 8 bytes a band instead of 4 a permutation
            sigs.append(_band_hashes(np.load(units[u] / "signatures.npy", mmap_mode="r")[srow[mine]], bands, rows))
            has_parts.append(np.load(units[u] / "has.npy")[srow[mine]])
        frames.append(frame)
    s_unit = np.concatenate(surv_unit) if surv_unit else np.empty(0, np.int32)
    s_row = np.concatenate(surv_row) if surv_row else np.empty(0, np.int32)
    s_ids = pl.concat(surv_ids) if surv_ids else pl.Series("doc_id", [], pl.String)
    n_old, n_new = index.kept.height, len(s_ids)
    dup = np.full(n_new, -1, np.int64)  # in the merge's numbering: old kept 0..n_old-1, then survivors
    sim = np.full(n_new, np.nan)
    new_bands = np.empty((n_new, bands), np.uint64)
    has = np.zeros(n_new, bool)
    lsh: dict = {}
    if cfg.near_dedup:
        new_bands = np.concatenate(sigs) if sigs else np.empty((0, bands), np.uint64)
        del sigs
        has = np.concatenate(has_parts) if has_parts else np.empty(0, bool)
        new_idx = np.flatnonzero(has)  # documents without shingles are kept without a comparison
        docs_out, buckets_out = [], []
        for b in range(bands):  # one hash-set probe of the index's band (polars), the rest on new documents
            hn, ho = new_bands[new_idx, b], index.bands[b]
            shared_old = pl.Series(ho).is_in(pl.Series(hn).implode()).to_numpy()
            shared_new = pl.Series(hn).is_duplicated().to_numpy()
            if shared_old.any():
                shared_new |= np.isin(hn, ho[shared_old])
            if not shared_new.any():
                continue
            _, bucket = np.unique(np.r_[ho[shared_old], hn[shared_new]], return_inverse=True)
            docs_out.append(np.r_[np.flatnonzero(shared_old), n_old + new_idx[shared_new]])
            buckets_out.append(bucket.astype(np.int64) + b * (n_old + n_new))
        lsh = {"bands": bands, "rows": rows, "candidate_docs": 0, "verified_pairs": 0, "bucket_overflow": 0}
        if docs_out:
            d, bk = np.concatenate(docs_out), np.concatenate(buckets_out)
            del docs_out, buckets_out
            order = np.lexsort((bk, d))
            d, bk = d[order], bk[order]
            need = np.unique(d)
            old, new = need[need < n_old], need[need >= n_old] - n_old
            k_unit, k_row = index.kept["unit"].to_numpy(), index.kept["row"].to_numpy()
            with tempfile.TemporaryDirectory(prefix="merge-shingles-", dir=tmp) as td:
                sets = ShingleFile(Path(td) / "shingles.u64")
                try:
                    _unit_shingles(units, need, np.r_[k_unit[old], s_unit[new]], np.r_[k_row[old], s_row[new]],
                                   cfg.shingle_size, sets)
                    sets.finish()
                    result = resolve(n_old + n_new, d, bk, sets, cfg.jaccard_threshold, bands, rows, known_kept=n_old)
                finally:
                    sets.close()
            dup, sim = result.duplicate_of[n_old:], result.similarity[n_old:]
            lsh.update(candidate_docs=result.candidate_docs, verified_pairs=result.verified_pairs,
                       bucket_overflow=result.bucket_overflow)
    # near decisions into the unit frames
    removed = dup >= 0
    target = np.where(removed, dup, 0)
    old_t = removed & (target < n_old)
    dup_id = np.full(n_new, None, dtype=object)
    if old_t.any():
        dup_id[old_t] = index.kept["doc_id"].gather(target[old_t]).to_numpy()
    if (new_t := removed & ~old_t).any():
        dup_id[new_t] = s_ids.gather(target[new_t] - n_old).to_numpy()
    reason = f"near_duplicate:jaccard>={cfg.jaccard_threshold}"
    out, off = [], 0
    for frame, pos in zip(frames, surv_pos):
        sl = slice(off, off + len(pos))
        off += len(pos)
        rem = removed[sl]
        if not len(pos):
            out.append(frame.select(*DECISION_SCHEMA).cast(DECISION_SCHEMA))
            continue
        frame = frame.with_columns(
            frame["decision"].scatter(pos, np.where(rem, "near_duplicate", "kept").tolist()),
            frame["reason"].scatter(pos[rem], reason) if rem.any() else pl.col("reason"),
            frame["duplicate_of"].scatter(pos[rem], dup_id[sl][rem].tolist()) if rem.any() else pl.col("duplicate_of"),
            frame["similarity"].scatter(pos[rem], sim[sl][rem]) if rem.any() else pl.col("similarity"))
        if frame["decision"].null_count():
            raise AssertionError("a document ended without a decision")
        out.append(frame.select(*DECISION_SCHEMA).cast(DECISION_SCHEMA))
    # the index after every unit
    kept_new = np.flatnonzero((dup < 0) & has)
    new_index = DedupIndex(
        pl.concat([index.exact, *new_exact]).cast(EXACT_SCHEMA),
        pl.concat([index.kept, pl.DataFrame({"doc_id": s_ids.gather(kept_new), "unit": s_unit[kept_new],
                                              "row": s_row[kept_new]}, schema=KEPT_SCHEMA)]),
        np.concatenate([index.bands.reshape(bands, index.kept.height), new_bands[kept_new].T], axis=1))
    return MergeResult(out, new_index, lsh)


# ---- 3. per unit again: its share of the version --------------------------------------------------
def write_part(unit: Path, decisions: pl.DataFrame, out: Path, cfg: CurationConfig = CurationConfig()) -> dict:
    """The unit's share of a version into ``out``: ``docs.parquet`` and ``chunks.parquet`` of its
    kept documents, ``decisions.parquet`` (one row per input document). Returns its stats."""
    kept = decisions.filter(pl.col("decision") == "kept").select("doc_id")
    out.mkdir(parents=True, exist_ok=True)
    docs = pl.scan_parquet(unit / "survivors" / "*.parquet").join(kept.lazy(), on="doc_id", how="semi",
                                                                   maintain_order="left").collect()
    chunks = pl.scan_parquet(unit / "chunks" / "*.parquet").join(kept.lazy(), on="doc_id", how="semi",
                                                                  maintain_order="left").collect()
    docs.write_parquet(out / "docs.parquet")
    chunks.write_parquet(out / "chunks.parquet")
    decisions.write_parquet(out / "decisions.parquet")
    stats = {f"docs.{d}": int(n) for d, n in decisions.group_by("decision").len().rows()}
    stats.update({f"filtered.{r}": int(n) for r, n in
                  decisions.filter(pl.col("decision") == "filtered").group_by("reason").len().rows()})
    stats.update(kept_chars=int(docs["text"].str.len_chars().sum()), chunks=chunks.height,
                 chunk_chars=int(chunks["text"].str.len_chars().sum()), chunk_tokens=int(chunks["n_tokens"].sum()))
    return stats


def add_stats(report: CurationReport, unit_stats: dict, part_stats: dict) -> None:
    report.docs_in += int(unit_stats["docs_in"])
    report.chars_in += int(unit_stats["chars_in"])
    for k, v in unit_stats.items():
        if k.startswith("lines_removed."):
            report.lines_removed[k.split(".", 1)[1]] += int(v)
    for k, v in part_stats.items():
        if k.startswith("docs."):
            report.decisions[k.split(".", 1)[1]] += int(v)
        elif k.startswith("filtered."):
            report.filtered[k.split(".", 1)[1]] += int(v)
    report.kept_chars += int(part_stats["kept_chars"])
    report.chunks += int(part_stats["chunks"])
    report.chunk_chars += int(part_stats["chunk_chars"])
    report.chunk_tokens += int(part_stats["chunk_tokens"])


def assemble(parts: list[Path], out: Path, link=None) -> None:
    """The version's files from the units' parts, in unit order: ``docs/u<i>.parquet``,
    ``chunks/u<i>.parquet``, ``decisions/u<i>.parquet`` (hard links where the file system allows)."""
    link = link or place_file
    for sub in ("docs", "chunks", "decisions"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(parts):
            link(part / f"{sub}.parquet", out / sub / f"u{i:05d}.parquet")


def place_file(src: Path, dst: Path) -> None:
    """``dst`` with ``src``'s bytes: a hard link (parts are immutable, read-only files), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def curate(raw_parts: list[Path], out: Path, tmp: Path, cfg: CurationConfig = CurationConfig(),
           units: list[list[Path]] | None = None) -> CurationReport:
    """A cold run without a store: ``raw_parts`` as one unit (or ``units``, lists of raw parts in
    order), every unit computed into ``tmp``, merged from an empty index, assembled into ``out``."""
    units = units if units is not None else [list(raw_parts)]
    report = CurationReport()
    unit_dirs, unit_stats = [], []
    for i, parts in enumerate(units):
        unit_dirs.append(tmp / f"unit-{i:05d}")
        unit_stats.append(curate_unit(parts, unit_dirs[-1], cfg))
    if not sum(s["docs_in"] for s in unit_stats):
        raise ValueError("cleaned_chunks: raw_docs has no documents")
    bands = lsh_params(cfg.jaccard_threshold, cfg.num_perm)[0] if cfg.near_dedup else 0
    merged = merge(unit_dirs, 0, DedupIndex.empty(bands), cfg)
    part_dirs = []
    for i, (unit, decisions) in enumerate(zip(unit_dirs, merged.decisions)):
        part_dirs.append(tmp / f"part-{i:05d}")
        add_stats(report, unit_stats[i], write_part(unit, decisions, part_dirs[-1], cfg))
    report.lsh = merged.lsh
    assemble(part_dirs, out, shutil.copyfile)
    assert sum(report.decisions.values()) == report.docs_in, "accounting: a document vanished"
    return report


def read_chunks(version_dir: Path) -> pl.LazyFrame:
    return pl.scan_parquet(version_dir / "chunks" / "*.parquet")


def read_decisions(version_dir: Path) -> pl.LazyFrame:
    return pl.scan_parquet(version_dir / "decisions" / "*.parquet")


def read_clean_docs(version_dir: Path) -> pl.LazyFrame:
    return pl.scan_parquet(version_dir / "docs" / "*.parquet")
