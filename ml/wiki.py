"""Download Wikipedia articles (MediaWiki Action API, one request per title) into a landing-zone JSONL file.

Resumable: the output is only appended to, one whole fsynced line per article, and a title goes to
``<out>.done`` only after its article is on disk, so a rerun after a kill never writes an article
twice. Politeness, the resume protocol step by step and ``<out>.missing.txt``: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ml.fsutil import atomic_write_bytes

DEFAULT_API_URL = "https://en.wikipedia.org/w/api.php"
DEFAULT_USER_AGENT = "lineage-forge/0.1 (https://github.com/lineage-forge; data pipeline) python-urllib"
ARTICLE_URL_PREFIX = "https://en.wikipedia.org/wiki/"
BACKOFF_CAP = 60.0
FSYNC_EVERY = 20
PROGRESS_EVERY = 100
MAXLAG = 5
RETRYABLE_API_CODES = frozenset({"maxlag", "ratelimited"})
# Characters that would split one title into several in the API request, or break
# the one-title-per-line sidecar files; MediaWiki rejects all of them in titles.
FORBIDDEN_TITLE_CHARS = frozenset("|\n\r")
_TAIL_CHUNK = 1 << 16


@dataclass
class WikiReport:
    """What one ``download_wiki`` run did. ``requested`` counts distinct titles;
    ``duplicate`` lists titles that resolved to a page already in the output (e.g. a
    redirect to an article fetched under its own title), which are not written again."""

    requested: int = 0
    skipped_done: int = 0
    written: int = 0
    not_found: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    requests: int = 0
    retries: int = 0

    def summary(self) -> str:
        lines = [
            f"wiki: {self.requested} requested, {self.skipped_done} already done, "
            f"{self.written} written, {len(self.not_found)} not found, {len(self.invalid)} invalid, "
            f"{len(self.empty)} empty, {len(self.duplicate)} duplicate, {len(self.failed)} failed "
            f"({self.requests} requests, {self.retries} retries)"
        ]
        lines += [f"  failed: {title!r}: {reason}" for title, reason in self.failed]
        return "\n".join(lines)


def read_titles(path: Path) -> list[str]:
    """Titles from a file, or from every ``*.txt`` under a directory (sorted, recursive).

    One title per line; surrounding whitespace is stripped, blank lines and lines
    starting with ``#`` are skipped, and duplicates keep their first position.
    """
    path = Path(path)
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    titles: dict[str, None] = {}
    for file in files:
        for line in file.read_text(encoding="utf-8-sig").split("\n"):
            title = line.strip()
            if title and not title.startswith("#"):
                titles.setdefault(title, None)
    return list(titles)


def article_url(title: str) -> str:
    """The English Wikipedia URL of a title, escaped the way MediaWiki does it."""
    return ARTICLE_URL_PREFIX + urllib.parse.quote(title.replace(" ", "_"), safe=";@$!*(),/~:")


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Failed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _retry_after(headers: Any) -> float | None:
    """``Retry-After`` in seconds; the HTTP-date form is ignored (backoff applies)."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class _Api:
    """Rate-limited, retrying GETs against the Action API; counts requests and retries."""

    def __init__(self, api_url: str, *, rate: float, max_retries: int, backoff_base: float,
                 timeout: float, user_agent: str, sleep: Callable[[float], Any],
                 clock: Callable[[], float], rng: random.Random, log: Callable[[str], None]):
        self.api_url = api_url
        self.interval = 1.0 / rate
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.timeout = timeout
        self.headers = {"User-Agent": user_agent, "Accept-Encoding": "gzip"}
        self.sleep = sleep
        self.clock = clock
        self.rng = rng
        self.log = log
        self.last_start: float | None = None
        self.requests = 0
        self.retries = 0

    def query(self, title: str) -> dict:
        """The decoded response for one title; raises ``_Failed`` when it cannot be had."""
        params = {
            "action": "query", "format": "json", "formatversion": "2", "prop": "extracts|info",
            "inprop": "url", "explaintext": "1", "exsectionformat": "plain", "redirects": "1",
            "maxlag": str(MAXLAG), "titles": title,
        }
        url = f"{self.api_url}?{urllib.parse.urlencode(params)}"
        attempt = 0
        while True:
            self._wait_for_slot()
            self.requests += 1
            try:
                return self._get(url)
            except _Retryable as exc:
                if attempt == self.max_retries:
                    raise _Failed(f"{exc.reason} (gave up after {self.max_retries} retries)") from exc
                delay = self._backoff(attempt, exc.retry_after)
                attempt += 1
                self.retries += 1
                self.log(f"wiki: {title!r}: {exc.reason}; retry {attempt}/{self.max_retries} in {delay:.1f}s")
                self.sleep(delay)

    def _wait_for_slot(self) -> None:
        if self.last_start is not None:
            gap = self.interval - (self.clock() - self.last_start)
            if gap > 0:
                self.sleep(gap)
        self.last_start = self.clock()

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with "equal jitter", at least ``Retry-After``, capped."""
        delay = min(BACKOFF_CAP, self.backoff_base * 2 ** attempt)
        delay = delay / 2 + self.rng.uniform(0, delay / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, BACKOFF_CAP)

    def _get(self, url: str) -> dict:
        request = urllib.request.Request(url, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
                headers = response.headers
        except urllib.error.HTTPError as exc:
            with exc:
                if exc.code == 429 or exc.code >= 500:
                    raise _Retryable(f"HTTP {exc.code}", _retry_after(exc.headers)) from exc
                raise _Failed(f"HTTP {exc.code}") from exc
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            raise _Retryable(f"connection error: {exc}") from exc
        try:
            if headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            data = json.loads(body)
        except (OSError, EOFError, ValueError) as exc:
            raise _Retryable(f"unreadable response body: {exc}") from exc
        if not isinstance(data, dict):
            raise _Retryable("response body is not a JSON object")
        error = data.get("error")
        if error is not None:
            code = error.get("code", "?") if isinstance(error, dict) else "?"
            info = error.get("info", "") if isinstance(error, dict) else str(error)
            if code in RETRYABLE_API_CODES:
                raise _Retryable(f"API error {code}: {info}", _retry_after(headers))
            raise _Failed(f"API error {code}: {info}")
        if "warnings" in data:
            self.log(f"wiki: API warnings: {json.dumps(data['warnings'], ensure_ascii=False)}")
        return data


def _resolve(requested: str, data: dict) -> tuple[str, Any]:
    """Classify one response: ``("article", record)``, or ``(kind, reason)`` where
    kind names the ``WikiReport`` list it belongs to: ``not_found``, ``invalid``,
    ``empty`` or ``failed``."""
    query = data.get("query")
    if not isinstance(query, dict):
        return "failed", "response has no query"
    if query.get("interwiki"):
        return "invalid", "interwiki title"
    title = requested
    for step in ("normalized", "redirects"):
        hops = {hop.get("from"): hop.get("to") for hop in query.get(step) or []}
        seen = set()
        while title in hops and title not in seen:
            seen.add(title)
            title = hops[title]
    pages = query.get("pages") or []
    page = next((p for p in pages if p.get("title") == title), pages[0] if len(pages) == 1 else None)
    if page is None:
        return "failed", "no page for the title in the response"
    if page.get("invalid"):
        return "invalid", page.get("invalidreason") or "invalid title"
    if page.get("special"):
        return "invalid", "special page"
    if page.get("missing"):
        return "not_found", "missing page"
    extract = page.get("extract") or ""
    if not extract.strip():
        return "empty", "empty extract"
    final = page.get("title") or title
    return "article", {
        "title": final,
        "content": extract,
        "url": page.get("fullurl") or article_url(final),
        "pageid": page.get("pageid"),
        "requested_title": requested,
    }


def _truncate_partial_tail(path: Path) -> int:
    """Cut bytes after the last ``\\n`` (a write cut off by a kill); returns bytes cut."""
    if not path.exists():
        return 0
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep, pos = 0, size
        while pos > 0:
            start = max(0, pos - _TAIL_CHUNK)
            f.seek(start)
            newline = f.read(pos - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def _scan_output(out: Path) -> tuple[list[str], set[int]]:
    """``requested_title`` and ``pageid`` of every line already in the output."""
    titles: list[str] = []
    pageids: set[int] = set()
    if not out.exists():
        return titles, pageids
    with open(out, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                titles.append(record["requested_title"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{out}:{number} is not a line written by download_wiki ({exc}); "
                                 "refusing to append to it") from exc
            if record.get("pageid") is not None:
                pageids.add(record["pageid"])
    return titles, pageids


def _read_done(done_path: Path) -> list[str]:
    if not done_path.exists():
        return []
    return [line for line in done_path.read_text(encoding="utf-8").split("\n") if line]


def download_wiki(titles: list[str], out: Path, *, api_url: str = DEFAULT_API_URL,
                  rate: float = 2.0, max_retries: int = 5, backoff_base: float = 1.0, timeout: float = 30.0,
                  user_agent: str = DEFAULT_USER_AGENT, limit: int | None = None,
                  sleep: Callable[[float], Any] = time.sleep, clock: Callable[[], float] = time.monotonic,
                  rng: random.Random | None = None,
                  log: Callable[[str], None] = print) -> WikiReport:
    """Fetch the plain text of ``titles`` into the JSONL file ``out``, resuming a
    previous run on the same file (see the module docstring for the protocol).

    ``limit`` caps how many not-yet-done titles this run processes. ``sleep``,
    ``clock`` and ``rng`` are injectable so tests need not wait. Raises
    ``ValueError`` if ``out`` holds a complete line this function did not write.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done_path = out.with_name(out.name + ".done")
    missing_path = out.with_name(out.name + ".missing.txt")

    for path in (out, done_path):
        if cut := _truncate_partial_tail(path):
            log(f"wiki: truncated a partial last line ({cut} bytes) of {path}")
    done = set(_read_done(done_path))
    written_titles, written_pageids = _scan_output(out)
    unrecorded = [t for t in dict.fromkeys(written_titles) if t not in done]

    api = _Api(api_url, rate=rate, max_retries=max_retries, backoff_base=backoff_base, timeout=timeout,
               user_agent=user_agent, sleep=sleep, clock=clock, rng=rng or random.Random(), log=log)
    wanted = list(dict.fromkeys(titles))
    report = WikiReport(requested=len(wanted))
    problems: list[tuple[str, str]] = []
    processed = unsynced = 0

    with open(out, "ab") as out_f, open(done_path, "a", encoding="utf-8") as done_f:
        def sync() -> None:
            for f in (out_f, done_f):
                f.flush()
                os.fsync(f.fileno())

        def settle(title: str) -> None:
            done_f.write(title + "\n")
            done_f.flush()
            done.add(title)

        try:
            for title in unrecorded:
                settle(title)
            if unrecorded:
                log(f"wiki: recorded {len(unrecorded)} written title(s) missing from {done_path.name}")
            for title in wanted:
                if title in done:
                    report.skipped_done += 1
                    continue
                if limit is not None and processed >= limit:
                    break
                processed += 1
                if not title.strip() or FORBIDDEN_TITLE_CHARS & set(title):
                    kind, result = "invalid", "empty title or forbidden character"
                else:
                    try:
                        kind, result = _resolve(title, api.query(title))
                    except _Failed as exc:
                        kind, result = "failed", exc.reason
                if kind == "article" and result["pageid"] in written_pageids:
                    report.duplicate.append(title)
                    log(f"wiki: {title!r}: same page as an article already written ({result['title']!r})")
                elif kind == "article":
                    out_f.write((json.dumps(result, ensure_ascii=False) + "\n").encode("utf-8"))
                    out_f.flush()
                    os.fsync(out_f.fileno())  # the article is on disk before .done can say so
                    report.written += 1
                    unsynced += 1
                    if result["pageid"] is not None:
                        written_pageids.add(result["pageid"])
                else:
                    problems.append((title, f"{kind}: {result}"))
                    log(f"wiki: {title!r}: {kind}: {result}")
                    getattr(report, kind).append((title, result) if kind == "failed" else title)
                if kind != "failed":
                    settle(title)
                if unsynced >= FSYNC_EVERY:
                    sync()
                    unsynced = 0
                if processed % PROGRESS_EVERY == 0:
                    log(f"wiki: {processed} titles processed, {report.written} written")
        finally:
            sync()

    report.requests, report.retries = api.requests, api.retries
    lines = (f"{title}\t{' '.join(reason.split())}\n" for title, reason in problems)
    atomic_write_bytes(missing_path, "".join(lines).encode("utf-8"))
    return report
