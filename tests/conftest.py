import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh LINEAGE_HOME (and DAGSTER_HOME inside it) for one test."""
    h = tmp_path / "lineage_home"
    (h / "landing").mkdir(parents=True)
    (h / "dagster").mkdir()
    (h / "dagster" / "dagster.yaml").write_text((REPO / "configs" / "dagster.yaml").read_text())
    monkeypatch.setenv("LINEAGE_HOME", str(h))
    monkeypatch.setenv("DAGSTER_HOME", str(h / "dagster"))
    return h


def write_lines(path: Path, lines: list[bytes | str], trailing_newline: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = b"\n".join(x.encode("utf-8") if isinstance(x, str) else x for x in lines)
    path.write_bytes(raw + (b"\n" if trailing_newline else b""))
    return path


def subprocess_env(home: Path) -> dict:
    env = dict(os.environ)
    env["LINEAGE_HOME"] = str(home)
    env["DAGSTER_HOME"] = str(home / "dagster")
    return env
