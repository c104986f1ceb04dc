"""``lineage verify``, ``lineage promote`` and ``lineage promoted`` (added to ml/cli.py's parser).

    lineage verify BUNDLE.tar.gz [--threads N] [--keep DIR]
        safe extraction, every sha256, onnx.checker, parity samples re-run in ONNX Runtime;
        exit 0 when everything holds, 1 otherwise
    lineage promote COMPONENT VERSION [--by NAME] [--note TEXT]
        promote a component (lm, embedding, relation) of onnx_bundle@VERSION (prefix ok);
        exit 1, with the reason, when the bundle's blocking checks failed
    lineage promoted [COMPONENT] [--history]
        what is promoted now (or every promotion, newest first); the same as
        lineage stats "select * from promotions order by promoted_at desc"

Heavy imports (onnx, onnxruntime) happen inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_verify(args: argparse.Namespace) -> int:
    from ml.export.bundle import verify_bundle

    path = Path(args.bundle)
    if not path.is_file():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
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


def add_commands(sub) -> None:
    v = sub.add_parser("verify", help="check a bundle .tar.gz: safe extraction, sha256, parity samples in ORT")
    v.add_argument("bundle", metavar="BUNDLE.tar.gz")
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
