"""Units of raw_docs and cleaned_chunks in the artifact store: computed once, reused by every version.

A unit is one landing file; its results are immutable store entries named by what they are
made of, so an incremental run merges only the units after the longest stored prefix. Names with ``__``
are no catalog assets. The entries and their fingerprints: DESIGN.md, "Curation in units" and "Module notes".
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import ml.cleaned_chunks.chunking as chunking
import ml.cleaned_chunks.clean as clean
import ml.cleaned_chunks.filters as filters
import ml.cleaned_chunks.minhash as minhash
import ml.cleaned_chunks.pipeline as pipeline
import ml.raw_docs as raw_docs
from ml.fsutil import digest_json, sha256_file, source_digest
from ml.store import ArtifactStore, BuildResult, CorruptVersionError, StoredVersion

RAW_UNIT = "raw_docs__unit"
CURATION_UNIT = "cleaned_chunks__unit"
CURATION_PART = "cleaned_chunks__part"
CURATION_INDEX = "cleaned_chunks__index"
UNIT_ASSETS = (RAW_UNIT, CURATION_UNIT, CURATION_PART, CURATION_INDEX)

# exact-dedup keys are polars hashes: a new polars may hash differently, so its version is part of the code
RAW_CODE = source_digest(raw_docs.__file__)
CURATION_CODE = source_digest(*(m.__file__ for m in (clean, filters, minhash, chunking, pipeline))) + "-pl" + \
    importlib.metadata.version("polars")


def _verified_lookup(store: ArtifactStore, asset: str, fingerprint: str) -> StoredVersion | None:
    """``store.lookup`` of a unit entry, verified; a corrupt one is moved aside (``quarantine``) and
    counts as missing, so it is built again in this run. (A version's files are hard links of its
    units' parts: a byte flipped in one shows in the other.)"""
    try:
        return store.lookup(asset, fingerprint)
    except CorruptVersionError as err:
        store.quarantine(err.asset, err.data_version)
        return None


# ---- raw_docs ------------------------------------------------------------------------------------
def _ingest_config_json(cfg: raw_docs.IngestConfig) -> dict[str, Any]:
    c = asdict(cfg)
    c.pop("slice_bytes", None)  # a unit is a file or a slice (named by its byte range), whatever cut it
    return c


def raw_unit_fingerprint(lf: raw_docs.LandingFile, cfg: raw_docs.IngestConfig) -> str:
    fp = {"relpath": lf.relpath, "sha256": lf.sha256, "config": _ingest_config_json(cfg), "code": RAW_CODE}
    if lf.sliced:
        fp["slice"] = [lf.offset, lf.size, lf.first_line]
    return digest_json(fp)


def ingest_unit(store: ArtifactStore, lf: raw_docs.LandingFile, cfg: raw_docs.IngestConfig,
                run_id: str = "") -> StoredVersion:
    """The stored unit of one landing file: found by fingerprint, else validated now."""
    fp = raw_unit_fingerprint(lf, cfg)
    if (found := _verified_lookup(store, RAW_UNIT, fp)) is not None:
        return found

    def build(out: Path) -> BuildResult:
        stats = raw_docs.ingest_file(lf, out, cfg)
        return BuildResult(stats=stats, rows=stats["kept"])

    return store.put(RAW_UNIT, build, fingerprint=fp, code_version=RAW_CODE, config=_ingest_config_json(cfg),
                     upstream={f"landing:{lf.relpath}" + (f"@{lf.offset}+{lf.size}" if lf.sliced else ""): lf.sha256},
                     run_id=run_id)


def assemble_raw(store: ArtifactStore, files: list[raw_docs.LandingFile], units: list[str],
                 out: Path) -> raw_docs.IngestReport:
    """raw_docs' version files from the stored units (data versions, in landing order)."""
    opened = [store.open(RAW_UNIT, u) for u in units]
    return raw_docs.assemble(files, [v.path for v in opened], [v.stats for v in opened], out)


# ---- cleaned_chunks ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurationUnit:
    """One unit of a raw_docs version: its ``docs/u<i>-*.parquet`` files (relpaths, sha256s)."""

    name: str
    parts: tuple[str, ...]
    sha256: tuple[str, ...]


def plan_units(raw: StoredVersion) -> list[CurationUnit]:
    """The units of a raw_docs version, in order, from its manifest (no file is read)."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for f in raw.manifest["files"]:
        path = f["path"]
        if path.startswith("docs/"):
            name = path[len("docs/"):].split("-", 1)[0]
            groups.setdefault(name, []).append((path, f["sha256"]))
    return [CurationUnit(name, tuple(p for p, _ in sorted(g)), tuple(s for _, s in sorted(g)))
            for name, g in sorted(groups.items())]


def _config_json(cfg: pipeline.CurationConfig) -> dict[str, Any]:
    c = asdict(cfg)
    c.pop("threads", None)  # how many threads compute a signature changes nothing in it
    c.pop("batch_docs", None)  # nor how many documents are cleaned at once
    return c


def curation_unit_fingerprint(unit: CurationUnit, cfg: pipeline.CurationConfig) -> str:
    return digest_json({"raw": list(unit.sha256), "config": _config_json(cfg), "code": CURATION_CODE})


def curate_unit(store: ArtifactStore, raw: StoredVersion | Callable[[], StoredVersion], unit: CurationUnit,
                cfg: pipeline.CurationConfig, run_id: str = "") -> StoredVersion:
    """The stored per-document work of one unit: found by fingerprint (verified later, when the merge
    reads it), else computed now from ``raw`` (the raw_docs version, or a function that gets it:
    a found unit never reads it). Only the unit's own raw parts are read, and those are verified
    against the manifest first (``check_files``), so a unit step costs its unit, not the corpus."""
    fp = curation_unit_fingerprint(unit, cfg)
    if (found := store.lookup(CURATION_UNIT, fp, verify=False)) is not None:
        return found

    version = check_files(raw() if callable(raw) else raw, list(unit.parts))

    def build(out: Path) -> BuildResult:
        stats = pipeline.curate_unit([version.file(p) for p in unit.parts], out, cfg)
        return BuildResult(stats=stats, rows=stats["docs_in"])

    return store.put(CURATION_UNIT, build, fingerprint=fp, code_version=CURATION_CODE, config=_config_json(cfg),
                     upstream={"raw_docs": version.data_version, "unit": unit.name}, run_id=run_id)


def chain(units: list[str], cfg: pipeline.CurationConfig) -> list[str]:
    """chain[i]: digest of the config and units[0..i] (data versions): what unit i's decisions,
    and the index after it, depend on."""
    out, prev = [], digest_json({"config": _config_json(cfg), "code": CURATION_CODE})
    for u in units:
        prev = digest_json([prev, u])
        out.append(prev)
    return out


class _VerifiedPaths:
    """Unit directories for ``pipeline.merge``, each verified against its manifest (``store.open``)
    the first time the merge reads it: the new units, and the earlier ones whose text a candidate
    needs; an earlier unit nothing is read from is never hashed."""

    def __init__(self, store: ArtifactStore, versions: list[StoredVersion]):
        self.store, self.versions, self.paths, self.checked = store, versions, {}, set()

    def __len__(self) -> int:
        return len(self.versions)

    def __getitem__(self, i: int) -> Path:
        if i not in self.paths:
            self.paths[i] = self.store.open(CURATION_UNIT, self.versions[i].data_version).path
        return self.paths[i]

    def unverified(self, i: int) -> Path:
        """Unit i's directory, for reading only files passed to ``check_file`` first."""
        return self.paths.get(i) or self.versions[i].path

    def check_file(self, i: int, relpath: str) -> None:
        """One file of unit i against its manifest, once: the merge reads a few survivors parts of
        an earlier unit, so only those are hashed, not the whole unit."""
        if i in self.paths or (i, relpath) in self.checked:
            return
        check_files(self.versions[i], [relpath])
        self.checked.add((i, relpath))


def check_files(version: StoredVersion, relpaths: list[str]) -> StoredVersion:
    """Some files of a stored version against its manifest (size, sha256): verify-on-read of the
    files a step reads when it reads a small share of a large version. A mismatch is a
    ``CorruptVersionError`` naming the files, as ``store.open`` would raise for the whole version."""
    listed = {f["path"]: f for f in version.manifest["files"]}
    problems = []
    for rel in relpaths:
        entry, path = listed.get(rel), version.file(rel)
        size = path.stat().st_size if path.is_file() else None
        actual = sha256_file(path) if size is not None and entry and size == entry["bytes"] else None
        if entry is None or actual != entry["sha256"]:
            problems.append({"path": rel, "expected_sha256": entry and entry["sha256"], "actual_sha256": actual,
                             "expected_bytes": entry and entry["bytes"], "actual_bytes": size})
    if problems:
        raise CorruptVersionError(version.asset, version.data_version, version.path, problems)
    return version


def merge_and_assemble(store: ArtifactStore, units: list[str], cfg: pipeline.CurationConfig, out: Path,
                       run_id: str = "", log: Callable[[str], None] = lambda s: None,
                       reuse_prefix: bool = True) -> pipeline.CurationReport:
    """cleaned_chunks' version files from the stored units (data versions, in order): merge the
    units after the longest stored prefix against its index, store their parts and the new index,
    then link every part into ``out``. ``reuse_prefix=False`` merges every unit from an empty index
    (a cold merge over stored per-unit work: what an incremental run is compared with)."""
    links = chain(units, cfg)
    n = len(units)
    bands = minhash.lsh_params(cfg.jaccard_threshold, cfg.num_perm)[0] if cfg.near_dedup else 0
    start, index, parts = 0, pipeline.DedupIndex.empty(bands), []
    for p in range(n if reuse_prefix else 0, 0, -1):  # the longest prefix whose index and parts are all stored
        found = _verified_lookup(store, CURATION_INDEX, links[p - 1])
        if found is None:
            continue
        prefix = []
        for i in range(p):
            if (part := _verified_lookup(store, CURATION_PART, links[i])) is None:
                break
            prefix.append(part)
        if len(prefix) == p:
            start, parts = p, prefix
            index = pipeline.DedupIndex.load(found.path)
            break
    unit_versions = [store.get(CURATION_UNIT, u) for u in units]  # manifests only
    report = pipeline.CurationReport()
    if not sum(int(v.stats["docs_in"]) for v in unit_versions):
        raise ValueError("cleaned_chunks: raw_docs has no documents")
    log(f"cleaned_chunks: {start} of {n} unit(s) decided by an earlier run; merging {n - start}")
    if start < n:
        merged = pipeline.merge(_VerifiedPaths(store, unit_versions), start, index, cfg)
        report.lsh = merged.lsh
        for i, decisions in zip(range(start, n), merged.decisions):
            unit_path = unit_versions[i].path

            def build(part_dir: Path, unit_path=unit_path, decisions=decisions) -> BuildResult:
                return BuildResult(stats=pipeline.write_part(unit_path, decisions, part_dir, cfg), rows=decisions.height)

            parts.append(store.put(CURATION_PART, build, fingerprint=links[i], code_version=CURATION_CODE,
                                   config=_config_json(cfg), upstream={"unit": units[i], "chain": links[i]},
                                   run_id=run_id))

        def build_index(index_dir: Path) -> BuildResult:
            merged.index.save(index_dir)
            return BuildResult(stats={"kept_with_shingles": merged.index.kept.height,
                                      "exact_keys": merged.index.exact.height}, rows=merged.index.kept.height)

        store.put(CURATION_INDEX, build_index, fingerprint=links[-1], code_version=CURATION_CODE,
                  config=_config_json(cfg), upstream={"chain": links[-1]}, run_id=run_id)
    else:
        report.lsh = {"bands": bands, "rows": minhash.lsh_params(cfg.jaccard_threshold, cfg.num_perm)[1]
                      if cfg.near_dedup else 0, "candidate_docs": 0, "verified_pairs": 0, "bucket_overflow": 0}
    opened = [store.open(CURATION_PART, v.data_version) for v in parts]
    for unit, part in zip(unit_versions, opened):
        pipeline.add_stats(report, unit.stats, part.stats)
    pipeline.assemble([v.path for v in opened], out)
    report.lsh["units_merged"] = n - start
    report.lsh["units_reused"] = start
    assert sum(report.decisions.values()) == report.docs_in, "accounting: a document vanished"
    return report
