"""Cost of the Great Expectations checks, and polars -> pandas -> GX against a DuckDB SQL datasource.

    python bench/quality_checks.py [--chunks 100000] [--repeat 3]

Builds synthetic versions in a temporary LINEAGE_HOME: raw_docs (chunks / 5 documents),
cleaned_chunks (``--chunks`` chunks of ~600 characters) and relation_triples (one triple per
chunk, evidence = the chunk's first sentence). Then, in one run:

1. the production path (``ml/quality``: polars frames -> pandas -> GX pandas datasource) on the
   whole suite of each of the three assets: seconds per 100k chunks, per suite and in total;
2. the cleaned_chunks row checks (chunk_id unique, text not null, length in bounds, doc_id in
   the upstream raw_docs) both ways, each end to end from the Parquet files:
   - pandas: the production path restricted to those four checks;
   - DuckDB: the same derived columns computed by DuckDB SQL into a table
     (``CREATE TABLE ... AS SELECT ... FROM read_parquet(...)``), validated by GX through a SQL
     datasource (``duckdb:///...``, needs the ``duckdb-engine`` SQLAlchemy dialect);
   and prints seconds per 100k chunks for each and the ratio duckdb/pandas.

duckdb-engine is not a dependency of the project (the pandas path is the one in use). To run the
comparison without touching the venv: ``pip install --no-deps --target /tmp/de duckdb-engine`` and
``PYTHONPATH=/tmp/de python bench/quality_checks.py``; without it the DuckDB arm is skipped with a note.
Best of ``--repeat`` runs each; GX's import and context start-up are reported apart (once per
process, paid by the first check of a run).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK_CHECKS = ["chunk_id_unique", "text_not_null", "chunk_length_in_bounds", "doc_id_in_raw_docs"]
WORDS = ("the parser returns a syntax tree and every node records its position in the source file "
         "while the compiler walks these nodes to emit bytecode for the interpreter loop").split()


def build_versions(home: Path, n_chunks: int):
    import numpy as np
    import polars as pl

    from ml.cleaned_chunks.chunking import CHUNK_SCHEMA
    from ml.cleaned_chunks.pipeline import DECISION_SCHEMA
    from ml.raw_docs import DOC_SCHEMA, QUARANTINE_SCHEMA
    from ml.relation_triples.extract import TRIPLE_SCHEMA
    from ml.store import ArtifactStore, BuildResult

    store = ArtifactStore(home)
    rng = np.random.default_rng(0)
    per_doc = 5
    n_docs = max(1, n_chunks // per_doc)
    vocab = np.array(WORDS)
    # 2,000 distinct sentences of 12 words, five per chunk (~600 characters)
    sentences = [" ".join(rng.choice(vocab, 12)).capitalize() + "." for _ in range(2000)]
    pick = rng.integers(0, len(sentences), size=(n_chunks, 5))
    chunk_texts = [" ".join(sentences[j] for j in row) for row in pick]
    doc_ids = [f"{i:016x}" for i in range(n_docs)]
    chunk_doc = [doc_ids[min(i // per_doc, n_docs - 1)] for i in range(n_chunks)]
    contents = [" ".join(chunk_texts[d * per_doc:(d + 1) * per_doc]) for d in range(n_docs)]

    def put(asset, frames, config, upstream):
        def build(out: Path) -> BuildResult:
            for rel, df in frames.items():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                df.write_parquet(out / rel)
            return BuildResult()
        return store.put(asset, build, fingerprint=secrets.token_hex(8), code_version="bench",
                         config=config, upstream=upstream)

    docs = pl.DataFrame({"doc_id": doc_ids, "title": [f"doc {i}" for i in range(n_docs)], "content": contents,
                         "url": [f"https://example.org/{i}" for i in range(n_docs)],
                         "source": ["bench.jsonl"] * n_docs, "line": list(range(1, n_docs + 1)),
                         "meta": [None] * n_docs}, schema=DOC_SCHEMA)
    raw = put("raw_docs", {"docs/part-00000.parquet": docs,
                           "quarantine/part-00000.parquet": pl.DataFrame(schema=QUARANTINE_SCHEMA)}, {}, {})
    lens = [len(t) for t in chunk_texts]
    chunks = pl.DataFrame({
        "chunk_id": [f"{i:020x}" for i in range(n_chunks)], "doc_id": chunk_doc,
        "chunk_index": [i % per_doc for i in range(n_chunks)], "char_start": [0] * n_chunks, "char_end": lens,
        "n_tokens": [len(t.split()) + 5 for t in chunk_texts], "text": chunk_texts}, schema=CHUNK_SCHEMA)
    decisions = pl.DataFrame({"doc_id": doc_ids, "decision": ["kept"] * n_docs, "reason": [None] * n_docs,
                              "duplicate_of": [None] * n_docs, "similarity": [None] * n_docs}, schema=DECISION_SCHEMA)
    cc = put("cleaned_chunks", {"chunks/part-00000.parquet": chunks, "decisions/part-00000.parquet": decisions},
             {"chunk_size": 256}, {"raw_docs": raw.data_version})
    first = [t.index(".") + 1 for t in chunk_texts]
    triples = pl.DataFrame({
        "chunk_id": chunks["chunk_id"], "subject": [t.split()[0] for t in chunk_texts], "relation": ["is_a"] * n_chunks,
        "object": [t[:e].split()[-1].rstrip(".") for t, e in zip(chunk_texts, first)], "confidence": [0.8] * n_chunks,
        "evidence_start": [0] * n_chunks, "evidence_end": first,
        "evidence": [t[:e] for t, e in zip(chunk_texts, first)], "extractor": ["bench@1"] * n_chunks,
    }, schema=TRIPLE_SCHEMA)
    rt = put("relation_triples", {"triples/part-00000.parquet": triples}, {"min_confidence": 0.3},
             {"cleaned_chunks": cc.data_version})
    return store, raw, cc, rt


def best_of(fn, repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds of all threads, last result)."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus), out


def _buffer_gx_sql_results() -> None:
    """GX 1.24 + duckdb-engine: GX fetches rows after closing the connection, and duckdb-engine
    then returns none (every metric fails with IndexError; great_expectations issues #10738,
    #11579). Buffer the rows while the connection is open, as the workaround in #11579 does."""
    from great_expectations.execution_engine.sqlalchemy_execution_engine import SqlAlchemyExecutionEngine

    def execute_query(self, query):
        with self.get_connection() as connection:
            frozen = self._execute_query_with_recovery(connection, query).freeze()
        return frozen()

    SqlAlchemyExecutionEngine.execute_query = execute_query


def duckdb_arm(tmp: Path, raw, cc, chunk_size: int):
    """The four chunk checks through DuckDB SQL + a GX SQL datasource; returns a runner."""
    _buffer_gx_sql_results()
    import sqlalchemy as sa
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    from ml.quality import engine

    context = engine.gx_context()  # the process's ephemeral context
    db = tmp / "checks.duckdb"
    ds = context.data_sources.add_sql(f"duckdb_{secrets.token_hex(3)}", connection_string=f"duckdb:///{db}")
    chunks_glob = str(cc.path / "chunks" / "*.parquet")
    raw_glob = str(raw.path / "docs" / "*.parquet")
    exps = [
        ("chunk_id_unique", "expect_column_values_to_be_unique", {"column": "chunk_id"}),
        ("text_not_null", "expect_column_values_to_not_be_null", {"column": "text_chars"}),
        ("chunk_length_in_bounds", "expect_column_values_to_be_between",
         {"column": "n_tokens", "min_value": 1, "max_value": chunk_size}),
        ("doc_id_in_raw_docs", "expect_column_values_to_be_in_set",
         {"column": "doc_id_in_raw_docs", "value_set": [True]}),
    ]
    state = {"n": 0}

    def run():
        state["n"] += 1
        table = f"chunks_checked_{state['n']}"
        with ds.get_engine().begin() as con:  # the datasource's own connection to the DuckDB file
            con.execute(sa.text(f"""
                CREATE TABLE {table} AS
                SELECT chunk_id, doc_id, chunk_index, coalesce(n_tokens, -1) AS n_tokens,
                       length(text) AS text_chars,
                       coalesce(doc_id IN (SELECT doc_id FROM read_parquet('{raw_glob}')), false) AS doc_id_in_raw_docs
                FROM read_parquet('{chunks_glob}')"""))
        asset = ds.add_table_asset(table, table_name=table)
        batch = asset.add_batch_definition_whole_table("whole").get_batch()
        suite = ExpectationSuite(name=f"sql_{table}")
        for name, type_, kwargs in exps:
            suite.add_expectation(ExpectationConfiguration(type=type_, kwargs=kwargs, meta={"check": name})
                                  .to_domain_obj())
        res = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5,
                                                   "unexpected_index_column_names": ["chunk_id"]})
        return {r.expectation_config.meta["check"]: (bool(r.success), r.exception_info) for r in res.results}

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    per100k = 100_000 / args.chunks

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        os.environ["LINEAGE_HOME"] = str(home)
        t = time.perf_counter()
        store, raw, cc, rt = build_versions(home, args.chunks)
        print(f"synthetic versions: {args.chunks} chunks, {args.chunks // 5} docs, {args.chunks} triples "
              f"({time.perf_counter() - t:.1f} s to build)")

        from ml.quality.validate import validate_version

        t = time.perf_counter()
        from ml.quality import engine
        engine._whole_frame_batch_definition()
        print(f"GX import + ephemeral context: {time.perf_counter() - t:.2f} s (once per process)")

        print(f"\nproduction path (polars -> pandas -> GX), whole suites, best of {args.repeat}:")
        total_w = total_c = 0.0
        for v in (raw, cc, rt):
            w, c, results = best_of(lambda v=v: validate_version(store, v.asset, v.data_version), args.repeat)
            assert all(r["passed"] for r in results), [r for r in results if not r["passed"]]
            total_w, total_c = total_w + w, total_c + c
            print(f"  {v.asset:18s} {len(results)} checks  wall {w * per100k:5.2f} s, CPU {c * per100k:5.2f} s"
                  " per 100k chunks")
        print(f"  {'all three':18s}           wall {total_w * per100k:5.2f} s, CPU {total_c * per100k:5.2f} s"
              " per 100k chunks")
        print(f"\ncleaned_chunks row checks ({', '.join(CHUNK_CHECKS)}), from Parquet,")
        print(f"the two arms interleaved, best of {args.repeat} (wall and CPU of all threads):")

        def pandas_arm():
            res = validate_version(store, "cleaned_chunks", cc.data_version, checks=CHUNK_CHECKS)
            return {r["check_name"]: (r["passed"], r["error"]) for r in res}

        arms = {"polars -> pandas -> GX": pandas_arm}
        try:
            import duckdb_engine  # noqa: F401
            arms["DuckDB SQL -> GX (SQL)"] = duckdb_arm(Path(tmp), raw, cc, 256)
        except ImportError:
            print("  (DuckDB arm skipped: duckdb-engine is not importable; "
                  "pip install --no-deps --target /tmp/de duckdb-engine; PYTHONPATH=/tmp/de)")
        wall = {k: [] for k in arms}
        cpu = {k: [] for k in arms}
        for _ in range(args.repeat):
            for name, run in arms.items():
                t, c = time.perf_counter(), time.process_time()
                ok = run()
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
                assert all(passed for passed, _ in ok.values()), (name, ok)
        for name in arms:
            w, c = min(wall[name]), min(cpu[name])
            print(f"  {name:24s} wall {w:5.2f} s = {w * per100k:5.2f} s per 100k chunks (median "
                  f"{statistics.median(wall[name]):.2f})   CPU {c:5.2f} s = {c * per100k:5.2f} s per 100k")
        if len(arms) == 2:
            (a, b) = arms
            print(f"  ratio duckdb/pandas: wall {min(wall[b]) / min(wall[a]):.2f}, CPU {min(cpu[b]) / min(cpu[a]):.2f}"
                  "  (> 1: the pandas path is faster)")


if __name__ == "__main__":
    main()
