"""``lineage``: the command line beside the Dagster UI.

    lineage sample-corpus [--limit N]         write the embedded sample corpus into the landing zone
    lineage stats ["SQL"]                     run SQL on the catalog (no SQL: latest version of each asset)
    lineage trace ASSET[@VERSION]             version-level lineage, upstream and downstream
    lineage download-wiki --titles P --out F  fetch Wikipedia articles into landing-zone JSONL
    lineage validate-config FILE              check a run-config profile's training sections (ml/train/cli.py)
    lineage verify BUNDLE.tar.gz              safe extraction, sha256 and parity re-run of a bundle (ml/export/cli.py)
    lineage promote COMPONENT VERSION         promote a bundle component; lineage promoted [--history]

Every command takes ``--home`` (default: $LINEAGE_HOME, else .lineage/ in the checkout).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import polars as pl

from ml.catalog import Catalog, CatalogError
from ml.paths import landing_dir, lineage_home

# modules with ``add_commands(subparsers)``: validate-config (training), verify/promote (export)
PLUGIN_MODULES = ("ml.train.cli", "ml.export.cli")


def _print_frame(df: pl.DataFrame, fmt: str, max_rows: int) -> None:
    if fmt == "csv":
        sys.stdout.write(df.write_csv())
    elif fmt == "json":
        sys.stdout.write(df.write_ndjson())
    else:
        with pl.Config(tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=220,
                       tbl_hide_dataframe_shape=True):
            print(df)
        if df.height > max_rows:
            print(f"({df.height} rows, {max_rows} shown; --max-rows to see more)")


def cmd_stats(args: argparse.Namespace) -> int:
    catalog = Catalog(lineage_home(args.home))
    catalog.ensure_views()
    if args.sql:
        try:
            df = catalog.query(args.sql)
        except Exception as exc:  # duckdb raises many error types; show the message, not a trace
            print(f"query failed: {exc}", file=sys.stderr)
            return 2
    else:
        df = catalog.latest_versions()
        if df.height == 0:
            print(f"catalog at {catalog.root} is empty: materialize something first")
            return 0
        print(f"latest version of each asset (catalog: {catalog.db_path})")
    _print_frame(df, args.format, args.max_rows)
    return 0


def _render_tree(nodes: list[dict[str, Any]], prefix: str, out: list[str]) -> None:
    for i, node in enumerate(nodes):
        last = i == len(nodes) - 1
        out.append(f"{prefix}{'└── ' if last else '├── '}{node['asset']}@{node['data_version']}")
        _render_tree(node["children"], prefix + ("    " if last else "│   "), out)


def cmd_trace(args: argparse.Namespace) -> int:
    asset, _, version = args.target.partition("@")
    try:
        tree = Catalog(lineage_home(args.home)).trace(asset, version or None)
    except CatalogError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    lines = [f"{tree['asset']}@{tree['data_version']}", "upstream:"]
    _render_tree(tree["upstream"], "  ", lines)
    if not tree["upstream"]:
        lines.append("  (none)")
    lines.append("downstream:")
    _render_tree(tree["downstream"], "  ", lines)
    if not tree["downstream"]:
        lines.append("  (none)")
    print("\n".join(lines))
    return 0


def cmd_sample_corpus(args: argparse.Namespace) -> int:
    from ml.sample_corpus import write_sample_corpus

    landing = Path(args.landing) if args.landing else landing_dir(lineage_home(args.home))
    written = write_sample_corpus(landing, limit=args.limit, min_words=args.min_words)
    total = 0
    for source, (path, n) in written.items():
        print(f"{source}: {n} documents -> {path}")
        total += n
    print(f"{total} documents in {landing}")
    return 0


def cmd_download_wiki(args: argparse.Namespace) -> int:
    from ml.wiki import DEFAULT_USER_AGENT, download_wiki, read_titles

    titles = read_titles(Path(args.titles))
    report = download_wiki(
        titles, Path(args.out), api_url=args.api_url, rate=args.rate, max_retries=args.max_retries,
        limit=args.limit, user_agent=args.user_agent or DEFAULT_USER_AGENT,
    )
    print(report.summary())
    return 1 if report.failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lineage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", help="LINEAGE_HOME (default: $LINEAGE_HOME or .lineage/ in the checkout)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stats", help="run SQL on the catalog; no SQL: latest version of each asset")
    s.add_argument("sql", nargs="?", help='e.g. "select * from asset_versions"')
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.add_argument("--max-rows", type=int, default=50)
    s.set_defaults(func=cmd_stats)

    t = sub.add_parser("trace", help="version-level lineage of ASSET[@VERSION] (default: latest)")
    t.add_argument("target", metavar="ASSET[@VERSION]")
    t.set_defaults(func=cmd_trace)

    c = sub.add_parser("sample-corpus", help="write the embedded sample corpus into the landing zone")
    c.add_argument("--limit", type=int, default=None, help="total number of documents (default: all)")
    c.add_argument("--min-words", type=int, default=25, help="skip docstrings shorter than this")
    c.add_argument("--landing", help="landing directory (default: LINEAGE_HOME/landing)")
    c.set_defaults(func=cmd_sample_corpus)

    w = sub.add_parser("download-wiki", help="fetch Wikipedia articles for a list of titles into JSONL")
    w.add_argument("--titles", required=True, help="file with one title per line, or a directory of *.txt")
    w.add_argument("--out", required=True, help="output .jsonl (appended to; resumable)")
    w.add_argument("--api-url", default="https://en.wikipedia.org/w/api.php")
    w.add_argument("--rate", type=float, default=2.0, help="max requests per second")
    w.add_argument("--max-retries", type=int, default=5)
    w.add_argument("--limit", type=int, default=None, help="process at most N titles this run")
    w.add_argument("--user-agent", default=None)
    w.set_defaults(func=cmd_download_wiki)

    for module in PLUGIN_MODULES:  # subcommands that live beside their stage (their heavy imports stay lazy)
        importlib.import_module(module).add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
