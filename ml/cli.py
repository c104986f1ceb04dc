"""``lineage``: the command line beside the Dagster UI (stats, trace, verify, gc, rebuild, sample corpus, ...).

Every command reads LINEAGE_HOME (``--home`` before the command; default ``$LINEAGE_HOME``, else
``.lineage/`` in the checkout); commands that live beside their stage come from ``PLUGIN_MODULES``.
The commands: ``lineage --help`` and README; output into a closed pipe ends a command quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import textwrap
from pathlib import Path

import polars as pl

from ml.catalog import SCHEMAS, Catalog, CatalogError
from ml.paths import landing_dir, lineage_home

# modules with ``add_commands(subparsers)``: validate-config (training), verify/promote (export), gc, catalog compact
PLUGIN_MODULES = ("ml.train.cli", "ml.export.cli", "ml.gc", "ml.rebuild", "ml.catalog_cli")


def _terminal_width() -> int:
    return shutil.get_terminal_size((120, 24)).columns


def _print_frame(df: pl.DataFrame, fmt: str, max_rows: int) -> None:
    if fmt == "csv":
        sys.stdout.write(df.write_csv())
    elif fmt == "json":
        sys.stdout.write(df.write_ndjson())
    else:
        width = _terminal_width()
        shown = min(df.height, max_rows)
        # the table fits the terminal: strings are cut (…) to the longest length that wraps no more
        # lines than the shortest cut would; csv/json keep every value whole
        def render(str_len: int) -> str:
            with pl.Config(tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=str_len, tbl_width_chars=width,
                           tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
                return str(df)

        fewest = render(8).count("\n")
        text = next(t for t in (render(n) for n in (60, 40, 32, 24, 16, 12, 8)) if t.count("\n") <= fewest)
        print(text)
        if df.height > shown:
            print(f"({df.height} rows, {shown} shown; --max-rows to see more)")


def _latest_summary(df: pl.DataFrame) -> pl.DataFrame:
    """The latest-versions table in few, narrow columns, oldest first (n: versions of the asset;
    every column: --format csv/json)."""
    return df.select(
        "asset", "data_version", "rows",
        pl.col("bytes").map_elements(_human_bytes, return_dtype=pl.String).alias("size"),
        pl.col("cache_hit").alias("hit"),
        pl.col("n_versions").alias("n"),
    )


def _human_bytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


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
        if args.format == "table":
            print(f"latest version of each asset (catalog: {catalog.db_path or catalog.root})")
            df = _latest_summary(df)
    _print_frame(df, args.format, args.max_rows)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from ml.lineage import lineage_graph, render_text, to_dot, to_json

    asset, _, version = args.target.partition("@")
    try:
        graph = lineage_graph(Catalog(lineage_home(args.home)), asset, version or None, depth=args.depth)
    except CatalogError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    render = {"text": render_text, "json": to_json, "dot": to_dot}[args.format]
    print(render(graph))
    return 0


def cmd_sample_corpus(args: argparse.Namespace) -> int:
    from ml.sample_corpus import write_sample_corpus

    from ml.storage import is_url, location

    landing = location(args.landing) if args.landing else landing_dir(lineage_home(args.home))
    if is_url(landing):  # an object-store landing zone: written locally, each file uploaded in one PUT
        import tempfile

        from ml.storage import write_bytes_atomic

        with tempfile.TemporaryDirectory() as tmp:
            local = write_sample_corpus(Path(tmp), limit=args.limit, min_words=args.min_words)
            written = {}
            for source, (path, n) in local.items():
                url = landing / Path(path).relative_to(tmp).as_posix()
                write_bytes_atomic(url, Path(path).read_bytes())
                written[source] = (url, n)
    else:
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


def _tables_epilog() -> str:
    lines = ["catalog tables (columns):"]
    for table, schema in SCHEMAS.items():
        lines.extend(textwrap.wrap(", ".join(schema), width=96, initial_indent=f"  {table}: ",
                                   subsequent_indent=" " * (4 + len(table))))
    lines += ["", "examples:",
              '  lineage stats "select asset, count(*) as versions from asset_versions group by asset"',
              '  lineage stats "select * from check_results where not passed" --format csv > failed.csv']
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lineage", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The command line beside the Dagster UI: query the catalog, trace version-level\n"
                    "lineage, verify and promote bundles.",
        epilog="Every command works on LINEAGE_HOME (--home goes before the command).\n"
               "lineage COMMAND --help shows a command's arguments.")
    p.add_argument("--home", help="LINEAGE_HOME (default: $LINEAGE_HOME or .lineage/ in the checkout)")
    sub = p.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    s = sub.add_parser("stats", help="run SQL on the catalog; no SQL: latest version of each asset",
                       description="Run SQL (DuckDB) on the catalog. Without SQL: the latest version of each "
                                   "asset.", epilog=_tables_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("sql", nargs="?", metavar="SQL", help='a query over the tables below, e.g. "select * from asset_versions"')
    s.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table: fitted to the terminal, long values cut (default); csv or json (one object "
                        "per line): every row and value whole, for other tools")
    s.add_argument("--max-rows", type=int, default=50, metavar="N",
                   help="rows shown in table format (default: %(default)s; csv and json print every row)")
    s.set_defaults(func=cmd_stats)

    t = sub.add_parser("trace", help="version-level lineage of ASSET[@VERSION] (default: latest)",
                       description="What a version was made from (down to raw_docs and the landing files) and "
                                   "what was made from it. Each version is printed once; later mentions refer back.")
    t.add_argument("target", metavar="ASSET[@VERSION]",
                   help="an asset, e.g. onnx_bundle (its latest version), or asset@version (a unique prefix of "
                        "the version is enough)")
    t.add_argument("--depth", type=int, default=None, metavar="N",
                   help="follow at most N edges up and down (default: all)")
    t.add_argument("--format", choices=["text", "json", "dot"], default="text",
                   help="text: two trees (default); json: nodes and edges; dot: Graphviz (dot -Tsvg)")
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
    try:
        rc = args.func(args)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:  # `lineage ... | head` closed the pipe: stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail either
        return 141  # 128 + SIGPIPE, what a shell reports for a tool ended by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
