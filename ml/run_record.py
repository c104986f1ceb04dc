"""The run record (``_run/``): facts about the run that made a version, kept beside its content.

Listed in the manifest and verified on read, but left out of the data version, so a rebuild from the same
inputs lands on the same version. The rule: DESIGN.md, "Content and run facts".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from ml.fsutil import atomic_write_json

RUN_DIR = "_run"
FACTS = "facts.json"  # flat numbers of the run (the catalog's run_facts rows come from the same dict)


def is_run_fact(relpath: str) -> bool:
    """Whether a path inside a version (posix, relative) is a run fact, outside the content digest."""
    return relpath == RUN_DIR or relpath.startswith(RUN_DIR + "/")


def run_dir(out: Path) -> Path:
    d = Path(out) / RUN_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_json(out: Path, name: str, data: Any) -> Path:
    """``<out>/_run/<name>`` (atomic); ``out`` is the staging directory a build writes into."""
    path = run_dir(out) / name
    atomic_write_json(path, data)
    return path


def append_jsonl(out: Path, name: str, row: Mapping[str, Any]) -> None:
    """One line of ``<out>/_run/<name>`` (per-step timings of a training run and the like)."""
    with open(run_dir(out) / name, "a", encoding="utf-8") as f:
        f.write(json.dumps(dict(row), sort_keys=True) + "\n")


def read_json(version_dir: Path, name: str) -> Any:
    """A run-record file of a stored version, or None when that run wrote none."""
    path = Path(version_dir) / RUN_DIR / name
    if not path.is_file():
        return None
    return json.loads(path.read_text("utf-8"))


def flat_numbers(facts: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested dicts of numbers as ``a.b.c -> float`` (what the catalog's run_facts table holds)."""
    out: dict[str, float] = {}
    for k, v in facts.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat_numbers(v, key + "."))
        elif isinstance(v, bool):
            out[key] = float(v)
        elif isinstance(v, (int, float)):
            out[key] = float(v)
    return out
