"""An offline sample corpus of real English prose from the running Python's own documentation.

No network: ``pydoc_topics`` (the help texts of ``pydoc_data.topics``) and ``stdlib_docstrings``
(standard-library docstrings read with ``ast``, nothing imported), each to ``landing/sample/<source>.jsonl``.
Deterministic for one Python install; left uncleaned and unde-duplicated on purpose (later stages test
on it). Sources, fields and sizes: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import ast
import json
import logging
import os
import sysconfig
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from ml.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

SOURCES = ("pydoc_topics", "stdlib_docstrings")

# Directory names never descended into: third-party packages, test suites (their
# docstrings describe test cases, and lib2to3's test data is not valid Python 3) and caches.
SKIP_DIRS = frozenset({"site-packages", "test", "tests", "idle_test", "__pycache__"})

_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _doc(title: str, content: str, url: str, source: str) -> dict:
    return {"title": title, "content": content, "url": url, "source_kind": source}


def _long_enough(text: str, min_words: int) -> bool:
    return len(text.split()) >= min_words


def _pydoc_topics(min_words: int) -> Iterator[dict]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        text = topics[key]
        if _long_enough(text, min_words):
            yield _doc(key, text, "https://docs.python.org/3/reference/#" + key.lower(), "pydoc_topics")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _stdlib_files() -> Iterator[Path]:
    root = sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning and sorting in place also fixes the order os.walk descends in.
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(dirpath, name)


def _docstrings(node: ast.AST, prefix: str) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of every class/function below node, in source order.

    Recurses through every statement, not just definition bodies, so definitions inside
    ``if`` / ``try`` blocks (platform-specific variants) are found too.
    """
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _DEFINITIONS):
            name = f"{prefix}.{child.name}"
            doc = ast.get_docstring(child, clean=True)
            if doc:
                yield name, doc
            yield from _docstrings(child, name)
        else:
            yield from _docstrings(child, prefix)


def _stdlib_docstrings(min_words: int) -> Iterator[dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    parsed = undecodable = unparsable = 0
    for path in _stdlib_files():
        try:
            source = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            undecodable += 1
            continue
        try:
            with warnings.catch_warnings():
                # Old modules have invalid escape sequences; parsing them warns, harmlessly.
                warnings.simplefilter("ignore")
                tree = ast.parse(source, filename=str(path))
        except (SyntaxError, ValueError):  # ValueError: source containing NUL bytes
            unparsable += 1
            continue
        parsed += 1
        module = _module_name(root, path)
        url_base = f"https://docs.python.org/3/library/{module.split('.')[0]}.html#"
        module_doc = ast.get_docstring(tree, clean=True)
        named = [(module, module_doc)] if module_doc else []
        for name, doc in [*named, *_docstrings(tree, module)]:
            if _long_enough(doc, min_words):
                yield _doc(name, doc, url_base + name, "stdlib_docstrings")
    log.info("stdlib_docstrings: %d files parsed, %d undecodable, %d unparsable under %s",
             parsed, undecodable, unparsable, root)


@lru_cache(maxsize=8)
def _available(source: str, min_words: int) -> tuple[dict, ...]:
    # The stdlib does not change while a process runs and a scan takes seconds, so each
    # (source, min_words) is built once; callers only ever get copies of these dicts.
    if source == "pydoc_topics":
        return tuple(_pydoc_topics(min_words))
    if source == "stdlib_docstrings":
        return tuple(_stdlib_docstrings(min_words))
    raise ValueError(f"unknown sample source {source!r}; expected one of {SOURCES}")


def iter_documents(source: str, min_words: int = 25) -> Iterator[dict]:
    """Every document of one source, in its deterministic order."""
    for doc in _available(source, min_words):
        yield dict(doc)


def _quotas(limit: int, available: list[int]) -> list[int]:
    """Split limit across sources in proportion to what each has (largest remainder).

    Every source that has documents gets at least one when limit allows it.
    """
    total = sum(available)
    if limit >= total:
        return list(available)
    shares = [divmod(limit * n, total) for n in available]
    quotas = [whole for whole, _ in shares]
    # Hand the leftover units to the largest remainders; ties go to the earlier source.
    by_remainder = sorted(range(len(shares)), key=lambda i: (-shares[i][1], i))
    for i in by_remainder[: limit - sum(quotas)]:
        quotas[i] += 1
    if limit >= len(available):
        for i, n in enumerate(available):
            if n and not quotas[i]:
                donor = max(range(len(quotas)), key=lambda j: quotas[j])  # first of the largest
                quotas[donor] -= 1
                quotas[i] = 1
    return quotas


def build_sample_corpus(limit: int | None = None, min_words: int = 25) -> dict[str, list[dict]]:
    """source -> documents: all of them, or ``limit`` in total split proportionally.

    With a limit each source contributes the first documents of its deterministic order.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    docs = {source: list(iter_documents(source, min_words)) for source in SOURCES}
    if limit is None:
        return docs
    quotas = _quotas(limit, [len(docs[source]) for source in SOURCES])
    return {source: docs[source][:quota] for source, quota in zip(SOURCES, quotas)}


def write_sample_corpus(landing_dir: Path, limit: int | None = None,
                        min_words: int = 25) -> dict[str, tuple[Path, int]]:
    """Write ``<landing_dir>/sample/<source>.jsonl`` per source; source -> (path, docs).

    Every source gets a file, empty if its quota is zero, so the directory always matches
    the last call. Each file is replaced atomically through a hidden ``.<name>.*.tmp``
    sibling (which neither a ``*.jsonl`` glob nor the landing scan picks up), and a file
    whose bytes would not change is not rewritten, so its mtime stays put and a watcher
    sees nothing new.
    """
    out_dir = Path(landing_dir) / "sample"
    written = {}
    for source, docs in build_sample_corpus(limit, min_words).items():
        path = out_dir / f"{source}.jsonl"
        data = "".join(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n" for doc in docs)
        payload = data.encode("utf-8")
        if not (path.is_file() and path.read_bytes() == payload):
            atomic_write_bytes(path, payload)
        written[source] = (path, len(docs))
    return written
