"""``lineage verify``, ``lineage promote``, ``lineage promoted`` and ``lineage export-hf`` (added to ml/cli.py's parser).

Each exits 1 with the reason when what it checks does not hold; heavy imports (onnx, onnxruntime) happen
inside the commands. Arguments and exit codes: ``lineage COMMAND --help`` and DESIGN.md, "Module notes".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _resolve_target(store, target: str) -> list[tuple[str, str]]:
    """(asset, version) pairs named by ASSET@VERSION (a unique prefix works) or a version directory."""
    from ml.paths import ASSET_NAME_RE, HEX_RE

    if "@" in target and not Path(target).exists():
        asset, _, prefix = target.partition("@")
        found = [v.data_version for v in store.versions(asset) if v.data_version.startswith(prefix)]
        if len(found) != 1:
            raise LookupError(f"{target}: {'no such version in the store' if not found else f'ambiguous: {found}'}")
        return [(asset, found[0])]
    if not isinstance(store.root, Path):  # an s3:// store has no version directories here
        raise LookupError(f"{target}: not ASSET@VERSION (the store is {store.root})")
    path = Path(target).resolve()
    root = store.root.resolve()
    for cand in (path, *path.parents):  # the version directory itself or anything inside it
        if cand.parent.parent == root and ASSET_NAME_RE.match(cand.parent.name) and HEX_RE.match(cand.name):
            return [(cand.parent.name, cand.name)]
    raise LookupError(f"{target}: not ASSET@VERSION, a version directory under {root}, or a package file")


def verify_versions(home: Path, pairs: list[tuple[str, str]], quiet_ok: bool = False) -> int:
    """Integrity of stored versions against their manifests; a corrupt one is recorded in the catalog
    (corrupt_versions) and moved aside like a step would. Returns the number of corrupt versions."""
    from ml.catalog import Catalog, corrupt_rows
    from ml.store import ArtifactStore, CorruptVersionError, describe_problem

    store, catalog = ArtifactStore(home), Catalog(home)
    bad = 0
    for asset, version in pairs:
        try:
            v = store.open(asset, version)
        except CorruptVersionError as err:
            bad += 1
            moved = store.quarantine(asset, version)
            catalog.append({"corrupt_versions": corrupt_rows(err, "lineage verify", moved_to=moved)})
            print(f"FAIL {asset}@{version}: {len(err.problems)} file(s) differ from the manifest")
            for p in err.problems:
                print(f"       {describe_problem(p)}")
            print(f"       recorded in corrupt_versions; moved to {moved} (the next run rebuilds it)")
            continue
        if not quiet_ok:
            print(f"ok   {asset}@{version}: {len(v.manifest['files'])} files, {v.bytes} bytes match the manifest")
    return bad


def cmd_verify(args: argparse.Namespace) -> int:
    from ml.paths import lineage_home
    from ml.store import ArtifactStore

    home = lineage_home(args.home)
    if args.all or (args.target and not Path(args.target).is_file()):
        store = ArtifactStore(home)
        try:
            pairs = ([(v.asset, v.data_version) for a in store.assets() for v in store.versions(a)] if args.all
                     else _resolve_target(store, args.target))  # assets(): a local or an s3:// store
        except LookupError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        bad = verify_versions(home, pairs, quiet_ok=args.all)
        print(f"{len(pairs)} version(s) checked, {bad} corrupt" if args.all else
              f"{args.target}: {'verified' if not bad else 'VERIFICATION FAILED'}")
        return 1 if bad else 0
    if not args.target:
        print("lineage verify: give ASSET@VERSION, a version directory, a package file, or --all", file=sys.stderr)
        return 2
    from ml.export.verify import verify_bundle

    path = Path(args.target)
    report = verify_bundle(path, threads=args.threads, keep=Path(args.keep) if args.keep else None)
    print(report.render())
    print(f"{path}: {'verified' if report.ok else 'VERIFICATION FAILED'}")
    return 0 if report.ok else 1


def cmd_promote(args: argparse.Namespace) -> int:
    from ml.catalog import Catalog
    from ml.export.promote import PromotionRefused, promote
    from ml.paths import lineage_home
    from ml.store import ArtifactStore

    home = lineage_home(args.home)
    catalog = Catalog(home)
    try:
        row = promote(catalog, ArtifactStore(home), args.component, args.version, by=args.by, note=args.note)
    except PromotionRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(f"promoted {row['component']} of onnx_bundle@{row['bundle_version']} ({row['model_version']}) "
          f"by {row['promoted_by']} at {row['promoted_at'].isoformat()}")
    try:
        catalog.ensure_views()
    except Exception as exc:  # someone holds catalog.duckdb; the row is written either way
        print(f"note: could not refresh {catalog.db_path}: {exc}", file=sys.stderr)
    return 0


def cmd_promoted(args: argparse.Namespace) -> int:
    from ml.catalog import Catalog
    from ml.cli import _print_frame
    from ml.export.promote import promotions
    from ml.paths import lineage_home

    df = promotions(Catalog(lineage_home(args.home)), args.component, history=args.history)
    if df.height == 0:
        print("nothing promoted yet" + (f" for {args.component}" if args.component else ""))
        return 0
    _print_frame(df, args.format, 200)
    return 0


def cmd_export_hf(args: argparse.Namespace) -> int:
    from ml.export import hf_release
    from ml.paths import lineage_home
    from ml.store import ArtifactStore

    store = ArtifactStore(lineage_home(args.home))
    dest = Path(args.dir)
    asset, sep, version = args.version.partition("@")
    try:
        if sep:  # a checkpoint version: build the release folders straight from it
            if asset not in {a for a, _ in hf_release.RELEASE_MODELS.values()}:
                raise hf_release.ReleaseError(f"{asset!r} is not a language-model checkpoint asset "
                                              f"({sorted(a for a, _ in hf_release.RELEASE_MODELS.values())})")
            found = [v.data_version for v in store.versions(asset) if v.data_version.startswith(version)]
            if len(found) != 1:
                raise hf_release.ReleaseError(
                    f"{asset}@{version}: {'no' if not found else 'more than one'} stored version matches")
            if dest.exists() and any(dest.iterdir()):
                raise hf_release.ReleaseError(f"{dest} exists and is not an empty directory; choose a new one")
            index = hf_release.build_release(store, {asset: found[0]}, dest, log=print)
            if args.model:
                print(f"note: --model is ignored when building from a checkpoint; wrote {sorted(index['models'])}")
            written = [dest / n for n in sorted(index["models"])]
            ok = index["passed"]
        else:
            versions = store.versions(hf_release.ASSET)
            found = versions[-1:] if args.version == "latest" else \
                [v for v in versions if v.data_version.startswith(args.version)]
            if len(found) != 1:
                raise hf_release.ReleaseError(
                    f"{hf_release.ASSET}@{args.version}: {'no' if not found else 'more than one'} stored "
                    "version matches (materialize hf_release first, or pass ASSET@VERSION of a checkpoint)")
            written = hf_release.copy_release(found[0].path / hf_release.RELEASE_DIR, dest, args.model)
            ok = json.loads((found[0].path / hf_release.RELEASE_DIR / hf_release.INDEX).read_text("utf-8"))["passed"]
    except (hf_release.ReleaseError, FileNotFoundError) as exc:
        print(f"export-hf: {exc}", file=sys.stderr)
        return 1
    for folder in written:
        print(f"wrote {folder} (AutoModelForCausalLM.from_pretrained({str(folder)!r}))")
    if not ok:
        print("WARNING: greedy parity with the source checkpoint FAILED for this release (see release.json)",
              file=sys.stderr)
        return 1
    return 0


def add_commands(sub) -> None:
    h = sub.add_parser("export-hf", help="write standalone Hugging Face model folders (+ model cards) to DIR")
    h.add_argument("version", metavar="VERSION", help="hf_release version (prefix, or 'latest'), or ASSET@VERSION "
                   "of lm_checkpoint / lora_adapter / dpo_adapter")
    h.add_argument("dir", metavar="DIR", help="new or empty directory")
    h.add_argument("--model", choices=["lm", "sft", "dpo"], help="only this model, written as DIR itself")
    h.set_defaults(func=cmd_export_hf)

    v = sub.add_parser("verify", help="check a bundle .tar.gz (safe extraction, sha256, parity samples in ORT), "
                                      "a stored version (ASSET@VERSION or its directory) or, with --all, the whole store")
    v.add_argument("target", nargs="?", metavar="BUNDLE.tar.gz|ASSET@VERSION|DIR")
    v.add_argument("--all", action="store_true", help="every version in the store, against its manifest")
    v.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (default: all cores)")
    v.add_argument("--keep", help="extract into this (empty or new) directory and keep it")
    v.set_defaults(func=cmd_verify)

    p = sub.add_parser("promote", help="promote COMPONENT of onnx_bundle@VERSION (refused if a blocking check failed)")
    p.add_argument("component", metavar="COMPONENT", help="lm, embedding or relation")
    p.add_argument("version", metavar="VERSION", help="onnx_bundle data version (a unique prefix works)")
    p.add_argument("--by", help="who promotes (default: $LINEAGE_USER, else the login name)")
    p.add_argument("--note", default="", help="free text kept with the promotion")
    p.set_defaults(func=cmd_promote)

    s = sub.add_parser("promoted", help="what is promoted now; --history: every promotion")
    s.add_argument("component", nargs="?", metavar="COMPONENT")
    s.add_argument("--history", action="store_true")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.set_defaults(func=cmd_promoted)
