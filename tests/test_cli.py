"""The ``lineage`` command line as a user meets it: trace prints each version once (depth, json,
dot), help says what every argument is, plain ``stats`` fits the terminal, a closed pipe ends a
command quietly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml.catalog import SCHEMAS, Catalog, now_utc
from ml.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def _version(cat: Catalog, asset: str, v: str, ups: list[tuple[str, str]], rows: int = 1) -> None:
    t = now_utc()
    cat.append({
        "asset_versions": [{"asset": asset, "data_version": v, "run_id": "run-1", "created_at": t, "cache_hit": False,
                            "rows": rows, "bytes": 123456, "code_version": "c" * 12, "fingerprint": "f" * 16,
                            "path": f"/somewhere/quite/long/artifacts/{asset}/{v}"}],
        "lineage_edges": [{"asset": asset, "data_version": v, "upstream_asset": ua, "upstream_version": uv}
                          for ua, uv in ups],
    })


@pytest.fixture
def diamond(tmp_path) -> Path:
    """landing -> raw -> chunks -> {tokenizer, triples}; corpus <- chunks + tokenizer;
    model <- corpus + tokenizer + triples; bundle <- model + tokenizer: chunks is reached by
    five paths from the bundle, raw_docs and the landing file by as many."""
    cat = Catalog(tmp_path)
    _version(cat, "raw_docs", "r" * 16, [("landing:a.jsonl", "a" * 16)])
    _version(cat, "cleaned_chunks", "c" * 16, [("raw_docs", "r" * 16)])
    _version(cat, "tokenizer", "t" * 16, [("cleaned_chunks", "c" * 16)])
    _version(cat, "relation_triples", "e" * 16, [("cleaned_chunks", "c" * 16)])
    _version(cat, "tokenized_corpus", "k" * 16, [("cleaned_chunks", "c" * 16), ("tokenizer", "t" * 16)])
    _version(cat, "lm_checkpoint", "m" * 16,
             [("tokenized_corpus", "k" * 16), ("tokenizer", "t" * 16), ("relation_triples", "e" * 16)])
    _version(cat, "onnx_bundle", "b" * 16, [("lm_checkpoint", "m" * 16), ("tokenizer", "t" * 16)])
    return tmp_path


def _run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().out


def test_trace_expands_each_version_once(diamond, capsys):
    rc, out = _run(capsys, "--home", str(diamond), "trace", "onnx_bundle")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "onnx_bundle@" + "b" * 16
    assert lines[1] == "upstream: 7 versions"
    for name in ("raw_docs@" + "r" * 16, "cleaned_chunks@" + "c" * 16, "tokenizer@" + "t" * 16,
                 "landing:a.jsonl@" + "a" * 16, "lm_checkpoint@" + "m" * 16):
        mentions = [line for line in lines if line.endswith(name) or f"{name}  (" in line]
        expanded = [line for line in mentions if "(see " not in line]
        assert len(expanded) == 1, (name, mentions)  # printed in full once ...
    # ... and every later mention refers back to it, with nothing under it
    assert sum("(see above)" in line for line in lines) >= 3
    assert sum("raw_docs@" in line for line in lines) == 1  # only under its first mention of chunks
    assert "downstream: 0 versions" in out and "(none)" in out
    assert out.index("cleaned_chunks@" + "c" * 16 + "\n") < out.index("cleaned_chunks@" + "c" * 16 + "  (see above)")


def test_trace_depth_json_and_dot(diamond, capsys):
    rc, out = _run(capsys, "--home", str(diamond), "trace", "onnx_bundle", "--depth", "1")
    assert rc == 0
    assert "upstream: 2 versions within depth 1" in out
    assert "lm_checkpoint@" + "m" * 16 + "  …" in out  # more beyond the depth
    assert "raw_docs" not in out and "(… more beyond --depth)" in out

    rc, out = _run(capsys, "--home", str(diamond), "trace", "cleaned_chunks@ccc", "--format", "json")
    data = json.loads(out)
    assert data["data_version"] == "c" * 16  # a unique prefix names the version
    up = {(n["asset"], n["distance"]) for n in data["upstream"]["nodes"]}
    assert up == {("raw_docs", 1), ("landing:a.jsonl", 2)}
    down = {(n["asset"], n["distance"]) for n in data["downstream"]["nodes"]}
    assert down == {("tokenizer", 1), ("relation_triples", 1), ("tokenized_corpus", 1), ("lm_checkpoint", 2),
                    ("onnx_bundle", 2)}
    assert {"from": "raw_docs@" + "r" * 16, "to": "cleaned_chunks@" + "c" * 16} in data["upstream"]["edges"]
    assert {"from": "tokenizer@" + "t" * 16, "to": "onnx_bundle@" + "b" * 16} in data["downstream"]["edges"]

    rc, out = _run(capsys, "--home", str(diamond), "trace", "onnx_bundle", "--format", "dot")
    assert out.startswith("digraph lineage {") and out.rstrip().endswith("}")
    edges = [line for line in out.splitlines() if "->" in line]
    assert len(edges) == len(set(edges)) == 11  # every edge of the graph once
    assert f'  "cleaned_chunks@{"c" * 16}" -> "tokenizer@{"t" * 16}";' in edges


def test_trace_errors_are_one_line(diamond, capsys):
    assert main(["--home", str(diamond), "trace", "nosuch"]) == 1
    assert "no version of 'nosuch'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--home", str(diamond), "trace", "onnx_bundle", "--depth", "x"])


def test_help_is_plain_and_complete():
    parser = build_parser()
    top = parser.format_help()
    assert "``" not in top and "ml/" not in top and ".py" not in top
    sub = parser._subparsers._group_actions[0].choices
    stats_help = sub["stats"].format_help()
    for table, schema in SCHEMAS.items():
        assert f"  {table}: " in stats_help
    assert "data_version" in stats_help
    for cmd in ("stats", "trace"):
        for action in sub[cmd]._actions:
            assert action.help, (cmd, action.dest)  # every argument of stats and trace says what it is


def test_plain_stats_fits_the_terminal(diamond):
    env = {**os.environ, "LINEAGE_HOME": str(diamond), "COLUMNS": "80"}
    r = subprocess.run([sys.executable, "-m", "ml.cli", "stats"], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    table = r.stdout.splitlines()[1:]
    assert max(len(line) for line in table) <= 80
    assert any("onnx_bundle" in line and "b" * 16 in line for line in table)  # names and versions whole at 80
    wide = subprocess.run([sys.executable, "-m", "ml.cli", "stats", "select * from asset_versions"],
                          env={**env, "COLUMNS": "100"}, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert max(len(line) for line in wide.stdout.splitlines()) <= 100


@pytest.mark.parametrize("argv", [["trace", "onnx_bundle"], ["stats"], ["stats", "select * from range(5000)"]])
def test_closed_pipe_ends_quietly(diamond, argv):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write, as after `| head` has its lines
    try:
        r = subprocess.run([sys.executable, "-m", "ml.cli", *argv], stdout=write_end, stderr=subprocess.PIPE,
                           text=True, cwd=REPO, env={**os.environ, "LINEAGE_HOME": str(diamond)}, timeout=60)
    finally:
        os.close(write_end)
    assert r.stderr == ""
    assert r.returncode == 141
