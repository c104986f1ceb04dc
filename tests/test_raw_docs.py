import gzip
import io
import json

import polars as pl

from ml.raw_docs import REASONS, IngestConfig, doc_id_for, ingest, iter_lines, read_docs, read_quarantine, scan_landing
from tests.conftest import write_lines


def doc(**kw) -> str:
    base = {"title": "T", "content": "Some real content here.", "url": "https://example.org/t"}
    base.update(kw)
    return json.dumps(base)


# one real malformed line per reason (files are read in name order)
MALFORMED = {
    "blank_line": "   ",
    "invalid_utf8": b'{"title": "T", "content": "caf\xe9 au lait", "url": "u"}',
    "nul_byte": b'{"title": "T", "content": "a\x00b", "url": "u"}',
    "too_large": doc(content="x" * 5000),
    "truncated_line": '{"title": "T", "content": "the writer died in the mid',
    "invalid_json": '{"title": "T", "content": "x", "url": "u",, }',
    "not_object": '["a", "list", "is", "not", "a", "document"]',
    "missing_field": '{"title": "T", "content": "no url"}',
    "wrong_type": '{"title": "T", "content": 42, "url": "u"}',
    "empty_content": doc(content=" \t\n "),
    "duplicate_doc": doc(title="another title, same doc", content="Some   real content here."),
}


def test_every_reason_code_fires_on_a_real_malformed_line(tmp_path):
    landing = tmp_path / "landing"
    lines = [doc()] + list(MALFORMED.values())
    write_lines(landing / "a.jsonl", lines)
    report = ingest(scan_landing(landing), tmp_path / "out", IngestConfig(max_doc_bytes=1000))
    q = read_quarantine(tmp_path / "out").collect()
    got = dict(zip(q["line"].to_list(), q["reason"].to_list()))
    expected = {i + 2: reason for i, reason in enumerate(MALFORMED)}
    assert got == expected
    assert report.kept == 1 and report.lines_read == len(lines)
    assert report.lines_read == report.kept + report.quarantined
    # each row says where and why, with a short printable excerpt
    row = q.filter(pl.col("reason") == "too_large").row(0, named=True)
    assert row["source"] == "a.jsonl" and len(row["excerpt"]) <= 160 and "5" in row["detail"]
    assert "\\0" in q.filter(pl.col("reason") == "nul_byte")["excerpt"][0]


def test_escaped_nul_and_lone_surrogates_are_caught_after_parsing(tmp_path):
    landing = tmp_path / "landing"
    write_lines(landing / "a.jsonl", [
        '{"title": "T", "content": "a\\u0000b", "url": "u"}',
        '{"title": "T", "content": "broken \\ud800 surrogate", "url": "u"}',
        '{"title": "T", "content": "x", "url": "u", "score": NaN}',
    ])
    ingest(scan_landing(landing), tmp_path / "out")
    assert read_quarantine(tmp_path / "out").collect()["reason"].to_list() == ["nul_byte", "invalid_utf8", "invalid_json"]


def test_final_line_without_newline_is_kept_when_complete_and_quarantined_when_cut(tmp_path):
    landing = tmp_path / "landing"
    write_lines(landing / "complete.jsonl", [doc(url="https://e/1"), doc(url="https://e/2")], trailing_newline=False)
    write_lines(landing / "cut.jsonl", [doc(url="https://e/3"), '{"title": "T", "content": "cu'], trailing_newline=False)
    report = ingest(scan_landing(landing), tmp_path / "out")
    assert report.kept == 3
    assert read_quarantine(tmp_path / "out").collect().select("source", "line", "reason").rows() == [
        ("cut.jsonl", 2, "truncated_line")]


def test_gzip_files_streamed_and_broken_gzip_accounted(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    good = "\n".join(doc(url=f"https://e/{i}", content=f"Document number {i} with words.") for i in range(500)) + "\n"
    (landing / "good.jsonl.gz").write_bytes(gzip.compress(good.encode()))
    cut = gzip.compress(good.encode())
    (landing / "truncated.jsonl.gz").write_bytes(cut[: len(cut) // 2])
    (landing / "notgzip.jsonl.gz").write_bytes(b"this is plain text, not gzip\n")
    report = ingest(scan_landing(landing), tmp_path / "out")
    q = read_quarantine(tmp_path / "out").collect()
    by_source = dict(zip(q["source"].to_list(), q["reason"].to_list()))
    assert by_source == {"truncated.jsonl.gz": "truncated_file", "notgzip.jsonl.gz": "unreadable_file"}
    # the good file's 500 docs are kept; the truncated copy's readable lines are duplicates of them
    assert report.kept == 500
    assert report.reasons["duplicate_doc"] > 0
    assert report.lines_read == report.kept + report.quarantined


def test_oversized_line_is_skipped_without_reading_it_whole():
    big = b'{"content": "' + b"y" * 3_000_000 + b'"}\n' + b'{"after": 1}\n'
    lines = list(iter_lines(io.BufferedReader(io.BytesIO(big)), max_bytes=1000))
    assert [(x.number, x.too_large) for x in lines] == [(1, True), (2, False)]
    assert len(lines[0].data) == 1001 and lines[0].size == 3_000_015
    assert lines[1].data == b'{"after": 1}'


def test_doc_id_is_stable_under_normalization_and_meta_keeps_extras(tmp_path):
    assert doc_id_for("HTTPS://Example.org/a/", "Hello   world\n") == doc_id_for("https://example.org/a", "Hello world")
    assert doc_id_for("https://example.org/a#x", "Hello") != doc_id_for("https://example.org/a#y", "Hello")
    assert doc_id_for("https://example.org/a", "Hello") != doc_id_for("https://example.org/a", "Hello!")
    landing = tmp_path / "landing"
    write_lines(landing / "a.jsonl", [doc(lang="en", tags=["x", "y"]), doc(url="https://e/2")])
    ingest(scan_landing(landing), tmp_path / "out")
    docs = read_docs(tmp_path / "out").collect()
    assert json.loads(docs["meta"][0]) == {"lang": "en", "tags": ["x", "y"]}
    assert docs["meta"][1] is None
    assert docs["doc_id"][0] == doc_id_for("https://example.org/t", "Some real content here.")


def test_same_input_same_bytes_and_small_batches_bound_memory(tmp_path):
    landing = tmp_path / "landing"
    write_lines(landing / "a.jsonl", [doc(url=f"https://e/{i}") for i in range(2500)])
    outs = []
    for run in range(2):
        out = tmp_path / f"out{run}"
        ingest(scan_landing(landing), out, IngestConfig(batch_rows=1000))
        outs.append(sorted((p.relative_to(out).as_posix(), p.read_bytes()) for p in out.rglob("*.parquet")))
    assert outs[0] == outs[1]
    assert [name for name, _ in outs[0] if name.startswith("docs/")] == [
        "docs/u00000-part-00000.parquet", "docs/u00000-part-00001.parquet", "docs/u00000-part-00002.parquet"]


def test_scan_landing_ignores_hidden_and_other_files(tmp_path):
    landing = tmp_path / "landing"
    write_lines(landing / "b.jsonl", [doc()])
    write_lines(landing / "sub" / "a.jsonl.gz", [doc()])
    write_lines(landing / ".partial.jsonl", [doc()])
    write_lines(landing / ".tmp" / "x.jsonl", [doc()])
    write_lines(landing / "notes.txt", ["hi"])
    assert [f.relpath for f in scan_landing(landing)] == ["b.jsonl", "sub/a.jsonl.gz"]
    assert scan_landing(tmp_path / "missing") == []


def test_reason_list_is_documented():
    from tests.conftest import REPO

    formats = (REPO / "ml" / "FORMATS.md").read_text()
    section = formats.split("## Quarantine reasons", 1)[1].split("\n## ", 1)[0]
    for reason in REASONS:
        assert f"\n{reason} " in section, reason


def test_a_scan_with_digests_reads_only_changed_files(tmp_path, monkeypatch):
    import ml.raw_docs as rd

    landing, digests = tmp_path / "landing", tmp_path / "work" / "digests.json"
    write_lines(landing / "a.jsonl", [doc()])
    write_lines(landing / "b.jsonl", [doc(url="https://example.org/b")])
    first = scan_landing(landing, digests)
    assert [f.sha256 for f in first] == [f.sha256 for f in scan_landing(landing)]
    read = []
    real = rd._sha256_nofollow
    monkeypatch.setattr(rd, "_sha256_nofollow", lambda p: read.append(p.name) or real(p))
    assert scan_landing(landing, digests) == first and read == []  # nothing changed: nothing read
    # the same size, other bytes: read again, and the new digest is the file's
    (landing / "b.jsonl").write_text((landing / "b.jsonl").read_text().replace("example", "EXAMPLE"))
    again = scan_landing(landing, digests)
    assert read == ["b.jsonl"]
    assert again[0] == first[0] and again[1].sha256 != first[1].sha256
    assert again[1].sha256 == real(landing / "b.jsonl")
