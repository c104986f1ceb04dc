"""``lineage catalog compact``: fold the catalog's batches into one, so queries stop slowing down with every run.

    lineage catalog compact             fold every committed batch into one compacted batch; remove the batches
                                        folded at least $LINEAGE_CATALOG_KEEP_S (15 min) ago
    lineage catalog compact --dry-run   list what it would fold, change nothing

Safe to run at any time, beside running pipelines, readers and another compactor: every query answers as
before (DESIGN.md, "Module notes": ml/catalog.py), a batch written meanwhile stays as it is, and of two
compactors exactly one commits. Local and ``s3://`` homes alike.
"""

from __future__ import annotations

import argparse
import time

from ml.paths import lineage_home


def cmd_compact(args: argparse.Namespace) -> int:
    from ml.catalog import Catalog

    catalog = Catalog(lineage_home(args.home))
    t0 = time.perf_counter()
    out = catalog.compact(dry_run=args.dry_run)
    folded, leftovers = out["fold"], out["leftovers"]
    if out["batch"] is None:
        print(f"nothing to compact: {len(folded)} visible batch(es) in {catalog.root}")
        if leftovers:
            verb = "would remove" if args.dry_run else "removed"
            print(f"{verb} {len(leftovers)} batch(es) an earlier compaction absorbed")
        return 0
    if args.dry_run:
        print(f"would fold {len(folded)} batch(es) into {out['batch']} and remove them"
              + (f" (and {len(leftovers)} already absorbed)" if leftovers else ""))
        for b in folded:
            print(f"  {b}")
        print("dry run: run without --dry-run to compact")
        return 0
    if out["status"] != "committed":
        print(f"not compacted ({out['status']}); run it again to fold what is new")
        return 1
    print(f"folded {len(folded)} batch(es) into {out['batch']}; removed {out['removed']} batch(es) "
          f"({time.perf_counter() - t0:.2f} s)")
    return 0


def add_commands(sub) -> None:
    c = sub.add_parser("catalog", help="catalog maintenance: compact (fold the batches into one)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = c.add_subparsers(dest="catalog_command", required=True, metavar="SUBCOMMAND")
    k = csub.add_parser("compact", help="fold every committed batch into one (queries answer as before)",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("--dry-run", action="store_true", help="list what would be folded, change nothing")
    k.set_defaults(func=cmd_compact)
