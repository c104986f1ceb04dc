"""ml.wiki against a local fake MediaWiki Action API on 127.0.0.1 (no network)."""

from __future__ import annotations

import gzip
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from ml.wiki import DEFAULT_USER_AGENT, WikiReport, download_wiki, read_titles

ARTICLES = {  # title -> (pageid, plain text)
    "Neural network": (101, "A neural network is a model.\n\nLayers\nIt has layers."),
    "Python (programming language)": (102, "Python is a language — “ünïcode” included."),
    "Dagster": (103, "Dagster is an orchestrator."),
    "C++": (104, "C++ is a language."),
    "Flaky": (105, "Flaky answers after a while."),
    "Busy": (106, "Busy says come back later."),
    "Lagged": (107, "Lagged replicas."),
    "Garbled": (108, "Garbled once."),
    "Dropped": (109, "Dropped connection once."),
    "Slow": (110, "Slow once."),
    "Broken": (111, "Broken until fixed."),
    "Empty page": (112, "   "),
}
REDIRECTS = {"NN": "Neural network"}
NO_FULLURL = {"C++"}  # the client must build the url itself
INVALID_CHARS = set("[]{}<>")


class FakeTime:
    """A monotonic clock that only moves when slept on; records the sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class ApiState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.faults: dict[str, list] = {}  # title -> faults served once each, in order
        self.always: dict[str, int] = {}  # title -> HTTP status served every time
        self.clock = None  # when set, each request records clock() as its start time

    def titles_requested(self) -> list[str]:
        return [r["query"]["titles"] for r in self.requests]


def _page(requested: str) -> tuple[dict, dict]:
    """(query part, page) for one requested title, the way formatversion=2 answers."""
    query: dict = {}
    title = requested.replace("_", " ").strip()
    title = title[:1].upper() + title[1:]
    if title != requested:
        query["normalized"] = [{"fromencoded": False, "from": requested, "to": title}]
    if title in REDIRECTS:
        query["redirects"] = [{"from": title, "to": REDIRECTS[title]}]
        title = REDIRECTS[title]
    if not title or INVALID_CHARS & set(title):
        return query, {"title": requested, "invalidreason": "The requested page title contains invalid characters.",
                       "invalid": True}
    if title not in ARTICLES:
        return query, {"ns": 0, "title": title, "missing": True}
    pageid, text = ARTICLES[title]
    page = {"pageid": pageid, "ns": 0, "title": title, "extract": text, "contentmodel": "wikitext"}
    if title not in NO_FULLURL:
        page["fullurl"] = "https://en.wikipedia.org/wiki/" + quote(title.replace(" ", "_"))
    return query, page


def _handler(state: ApiState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}
            title = query.get("titles", "")
            with state.lock:
                state.requests.append({
                    "path": self.path, "query": query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "t": state.clock() if state.clock else None,
                })
                pending = state.faults.get(title)
                fault = pending.pop(0) if pending else None
                status = state.always.get(title)
            if isinstance(fault, tuple):
                fault, extra = fault
            else:
                extra = {}
            if status is not None:
                self._send(b"always failing", status=status)
            elif isinstance(fault, int):
                self._send(b"try again", status=fault, headers=extra)
            elif fault == "maxlag":
                self._send(json.dumps({"error": {"code": "maxlag", "info": "Waiting for a replica: 6 seconds lagged."}}).encode(),
                           headers={"Retry-After": "1", **extra})
            elif fault == "apierror":
                self._send(json.dumps({"error": {"code": "badvalue", "info": "Unrecognized value."}}).encode())
            elif fault == "badjson":
                self._send(b'{"query": {"pages": [')
            elif fault == "drop":
                self.close_connection = True
            elif fault == "slow":
                time.sleep(1.0)
            else:
                q, page = _page(title)
                self._send(json.dumps({"batchcomplete": True, "query": {**q, "pages": [page]}}).encode())

        def _send(self, body: bytes, status: int = 200, headers: dict | None = None) -> None:
            gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
            if gzipped:
                body = gzip.compress(body)
            with state.lock:
                state.requests[-1]["gzipped"] = gzipped
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            if gzipped:
                self.send_header("Content-Encoding", "gzip")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


class FakeApi:
    def __init__(self, url: str, state: ApiState) -> None:
        self.url = url
        self.state = state


@pytest.fixture
def api():
    state = ApiState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield FakeApi(f"http://127.0.0.1:{server.server_address[1]}/w/api.php", state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fetch(api: FakeApi, titles: list[str], out: Path, fake: FakeTime | None = None, **kwargs) -> WikiReport:
    fake = fake or FakeTime()
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("timeout", 5.0)
    return download_wiki(titles, out, api_url=api.url, sleep=fake.sleep, clock=fake.clock,
                         rng=random.Random(0), log=lambda _msg: None, **kwargs)


def read_jsonl(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


def test_fetch_writes_articles_with_user_agent_and_gzip(api, tmp_path):
    out = tmp_path / "landing" / "wiki.jsonl"
    titles = ["Neural network", "Python (programming language)", "C++"]
    report = fetch(api, titles, out)

    assert (report.written, report.requests, report.retries, report.failed) == (3, 3, 0, [])
    records = read_jsonl(out)
    assert [r["title"] for r in records] == titles
    assert [r["requested_title"] for r in records] == titles
    for record in records:
        pageid, text = ARTICLES[record["title"]]
        assert record["content"] == text
        assert record["pageid"] == pageid
    assert records[0]["url"] == "https://en.wikipedia.org/wiki/Neural_network"
    assert records[2]["url"] == "https://en.wikipedia.org/wiki/C%2B%2B"  # built from the title
    assert "“ünïcode”" in out.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes

    assert api.state.titles_requested() == titles
    for request in api.state.requests:
        assert request["headers"]["user-agent"] == DEFAULT_USER_AGENT
        assert "gzip" in request["headers"]["accept-encoding"]
        assert request["gzipped"] is True
        q = request["query"]
        assert urlsplit(request["path"]).path == "/w/api.php"
        assert (q["action"], q["format"], q["formatversion"]) == ("query", "json", "2")
        assert (q["prop"], q["inprop"], q["explaintext"], q["redirects"], q["maxlag"]) == \
            ("extracts|info", "url", "1", "1", "5")
    assert (out.parent / "wiki.jsonl.done").read_text(encoding="utf-8").split("\n")[:-1] == titles
    assert (out.parent / "wiki.jsonl.missing.txt").read_text(encoding="utf-8") == ""
    assert "3 written" in report.summary()

    fetch(api, ["Dagster"], tmp_path / "other.jsonl", user_agent="test-agent/1.0 (ops@example.org)")
    assert api.state.requests[-1]["headers"]["user-agent"] == "test-agent/1.0 (ops@example.org)"


def test_normalization_and_redirect_record_final_title(api, tmp_path):
    out = tmp_path / "wiki.jsonl"
    report = fetch(api, ["neural network", "NN", "Python_(programming_language)"], out)

    records = read_jsonl(out)
    assert [(r["title"], r["requested_title"]) for r in records] == [
        ("Neural network", "neural network"),
        ("Python (programming language)", "Python_(programming_language)"),
    ]
    # "NN" redirects to a page already written: settled, not written a second time.
    assert report.duplicate == ["NN"]
    assert report.written == 2
    assert "NN" in (tmp_path / "wiki.jsonl.done").read_text(encoding="utf-8").split("\n")

    redirected = tmp_path / "redirected.jsonl"
    fetch(api, ["NN"], redirected)
    [record] = read_jsonl(redirected)
    assert (record["title"], record["requested_title"], record["pageid"]) == ("Neural network", "NN", 101)
    assert record["content"] == ARTICLES["Neural network"][1]
    assert record["url"] == "https://en.wikipedia.org/wiki/Neural_network"


def test_missing_invalid_and_empty_are_reported_not_written(api, tmp_path):
    out = tmp_path / "wiki.jsonl"
    titles = ["Dagster", "No such article", "Bad[title]", "Empty page", "a|b"]
    report = fetch(api, titles, out)

    assert [r["title"] for r in read_jsonl(out)] == ["Dagster"]
    assert report.not_found == ["No such article"]
    assert report.invalid == ["Bad[title]", "a|b"]
    assert report.empty == ["Empty page"]
    assert report.failed == []
    assert "a|b" not in api.state.titles_requested()  # would be two titles to the API

    missing = dict(line.split("\t") for line in
                   (tmp_path / "wiki.jsonl.missing.txt").read_text(encoding="utf-8").splitlines())
    assert set(missing) == {"No such article", "Bad[title]", "Empty page", "a|b"}
    assert missing["No such article"].startswith("not_found:")
    assert missing["Bad[title]"] == "invalid: The requested page title contains invalid characters."
    assert missing["Empty page"].startswith("empty:")

    # Definitively settled: a rerun asks for none of them again.
    before = len(api.state.requests)
    again = fetch(api, titles, out)
    assert (again.skipped_done, again.requests, again.written) == (5, 0, 0)
    assert len(api.state.requests) == before
    assert (tmp_path / "wiki.jsonl.missing.txt").read_text(encoding="utf-8") == ""


def test_transient_failures_are_retried(api, tmp_path):
    api.state.faults = {
        "Flaky": [503, 503],
        "Busy": [(429, {"Retry-After": "2"})],
        "Lagged": ["maxlag"],
        "Garbled": ["badjson"],
        "Dropped": ["drop"],
    }
    fake = FakeTime()
    out = tmp_path / "wiki.jsonl"
    titles = ["Flaky", "Busy", "Lagged", "Garbled", "Dropped"]
    report = fetch(api, titles, out, fake=fake)

    assert report.failed == []
    assert [r["title"] for r in read_jsonl(out)] == titles
    assert report.retries == 6
    assert report.requests == len(titles) + 6
    requested = api.state.titles_requested()
    assert (requested.count("Flaky"), requested.count("Busy"), requested.count("Dropped")) == (3, 2, 2)
    assert any(s >= 2 for s in fake.sleeps)  # Retry-After: 2 honoured
    assert any(1 <= s < 2 for s in fake.sleeps)  # maxlag's Retry-After: 1 honoured


def test_timeout_is_retried(api, tmp_path):
    api.state.faults = {"Slow": ["slow"]}
    out = tmp_path / "wiki.jsonl"
    report = fetch(api, ["Slow"], out, timeout=0.3)
    assert (report.written, report.retries, report.failed) == (1, 1, [])


def test_permanent_failures_are_reported_and_the_run_continues(api, tmp_path):
    api.state.always = {"Broken": 500, "Gone": 404}
    api.state.faults = {"Dagster": ["apierror"]}
    out = tmp_path / "wiki.jsonl"
    titles = ["Broken", "Neural network", "Gone", "Dagster", "C++"]
    report = fetch(api, titles, out, max_retries=3)

    assert [r["title"] for r in read_jsonl(out)] == ["Neural network", "C++"]
    failed = dict(report.failed)
    assert set(failed) == {"Broken", "Gone", "Dagster"}
    assert "HTTP 500" in failed["Broken"] and "gave up after 3 retries" in failed["Broken"]
    assert failed["Gone"] == "HTTP 404"
    assert failed["Dagster"].startswith("API error badvalue")
    requested = api.state.titles_requested()
    assert (requested.count("Broken"), requested.count("Gone"), requested.count("Dagster")) == (4, 1, 1)
    assert report.retries == 3
    missing = (tmp_path / "wiki.jsonl.missing.txt").read_text(encoding="utf-8")
    assert "Broken\tfailed: HTTP 500" in missing and "Gone\tfailed: HTTP 404" in missing
    done = (tmp_path / "wiki.jsonl.done").read_text(encoding="utf-8").split("\n")
    assert "Broken" not in done and "Gone" not in done and "Dagster" not in done

    # Failures are not settled: once the server recovers, a rerun fetches them.
    api.state.always = {}
    again = fetch(api, titles, out)
    assert (again.skipped_done, again.written, again.failed) == (2, 2, [])
    assert again.not_found == ["Gone"]
    assert sorted(r["title"] for r in read_jsonl(out)) == ["Broken", "C++", "Dagster", "Neural network"]


def test_rate_limit_spaces_request_starts(api, tmp_path):
    fake = FakeTime()
    api.state.clock = fake.clock
    api.state.faults = {"Flaky": [503]}  # a retry is a request start too
    titles = ["Neural network", "Dagster", "Flaky", "C++", "Python (programming language)"]
    report = fetch(api, titles, tmp_path / "wiki.jsonl", fake=fake, rate=4.0)

    assert report.written == 5 and report.retries == 1
    starts = [r["t"] for r in api.state.requests]
    assert len(starts) == 6
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(gap >= 0.25 - 1e-9 for gap in gaps), gaps
    assert all(gap <= 0.25 + 1e-9 for gap in gaps), gaps  # and no slower than needed
    assert fake.sleeps and all(s <= 0.25 for s in fake.sleeps)


def test_resume_with_limit_does_not_duplicate(api, tmp_path):
    out = tmp_path / "wiki.jsonl"
    titles = ["Neural network", "Dagster", "No such article", "C++", "Python (programming language)"]
    first = fetch(api, titles, out, limit=2)
    assert (first.written, first.requests, first.skipped_done) == (2, 2, 0)
    assert [r["title"] for r in read_jsonl(out)] == titles[:2]

    second = fetch(api, titles, out)
    assert second.skipped_done == 2
    assert (second.written, second.not_found, second.requests) == (2, ["No such article"], 3)
    assert api.state.titles_requested() == titles
    written = [r["requested_title"] for r in read_jsonl(out)]
    assert len(written) == len(set(written))
    assert set(written) == {t for t in titles if t in ARTICLES}

    third = fetch(api, titles, out)
    assert (third.skipped_done, third.requests, third.written) == (5, 0, 0)


def test_resume_after_crash_truncates_partial_line_and_skips_unrecorded_article(api, tmp_path):
    out = tmp_path / "wiki.jsonl"
    fetch(api, ["Neural network"], out)
    # Killed after writing the "Dagster" line but before recording it in .done ...
    article = {"title": "Dagster", "content": ARTICLES["Dagster"][1], "url": "https://en.wikipedia.org/wiki/Dagster",
               "pageid": 103, "requested_title": "Dagster"}
    with open(out, "ab") as f:
        f.write((json.dumps(article) + "\n").encode())
        # ... and a later run killed in the middle of writing an article line,
        f.write(b'{"title": "C++", "content": "C++ is a lan')
    with open(tmp_path / "wiki.jsonl.done", "a", encoding="utf-8") as f:
        f.write("C+")  # and in the middle of a .done line.

    before = len(api.state.requests)
    report = fetch(api, ["Neural network", "Dagster", "C++"], out)

    assert api.state.titles_requested()[before:] == ["C++"]
    assert (report.skipped_done, report.written) == (2, 1)
    records = read_jsonl(out)  # every line is complete, valid JSON
    assert [r["title"] for r in records] == ["Neural network", "Dagster", "C++"]
    assert records[2]["content"] == ARTICLES["C++"][1]
    done = (tmp_path / "wiki.jsonl.done").read_text(encoding="utf-8")
    assert done.split("\n") == ["Neural network", "Dagster", "C++", ""]


def test_read_titles_from_directory(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("# second file\nDagster\n\n  C++  \nNeural network\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("Neural network\n# a comment\n   \nPython (programming language)\n"
                                    "Neural network\n", encoding="utf-8")
    (tmp_path / "sub" / "c.txt").write_text("Dagster\nNN", encoding="utf-8")
    (tmp_path / "notes.md").write_text("Not a title\n", encoding="utf-8")

    assert read_titles(tmp_path) == ["Neural network", "Python (programming language)", "Dagster", "C++", "NN"]
    assert read_titles(tmp_path / "b.txt") == ["Dagster", "C++", "Neural network"]


def test_cli_download_wiki_output_is_valid_landing_data(api, tmp_path, capsys):
    from ml.cli import main
    from ml.raw_docs import ingest, scan_landing

    titles = tmp_path / "titles"
    titles.mkdir()
    (titles / "a.txt").write_text("Dagster\nNo such article\n# comment\nC++\n")
    out = tmp_path / "landing" / "wiki.jsonl"
    rc = main(["download-wiki", "--titles", str(titles), "--out", str(out), "--api-url", api.url, "--rate", "50"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "No such article" in (out.parent / "wiki.jsonl.missing.txt").read_text()
    assert "2" in printed  # the summary counts the two written articles
    report = ingest(scan_landing(out.parent), tmp_path / "raw")
    assert report.kept == 2 and report.quarantined == 0
    # a second run fetches nothing new
    assert main(["download-wiki", "--titles", str(titles), "--out", str(out), "--api-url", api.url]) == 0
    assert len(read_jsonl(out)) == 2
