"""scripts/env.sh: sourcing it sets up the environment and leaves the caller's shell as it was.

Each test copies env.sh into a throw-away checkout whose .venv is already "installed" (a stamp that
matches its pyproject.toml), so nothing is installed and the real .venv is never touched.
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ENV_SH = Path(__file__).resolve().parents[1] / "scripts" / "env.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")


def _checkout(tmp_path: Path, installed: bool = True) -> Path:
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "configs").mkdir()
    (root / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(ENV_SH, root / "scripts" / "env.sh")
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (root / "configs" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    python = root / ".venv" / "bin" / "python"
    python.write_text("#!/bin/sh\necho 'pip: no network here' >&2\nexit 1\n")  # any install attempt fails
    python.chmod(0o755)
    if installed:
        want = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()[:16]
        (root / ".venv" / ".lineage-forge-installed").write_text(want + "\n")
    return root


def _interactive(script: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    """Run ``script`` in an interactive bash (as in a terminal: `bash -i`, no rc files)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LINEAGE_HOME", "DAGSTER_HOME", "BASH_ENV", "ENV")}
    env["HOME"] = str(home)
    return subprocess.run([BASH, "--norc", "--noprofile", "-i"], input=script, text=True, capture_output=True,
                          cwd=cwd, env=env, timeout=60)


STATE = 'echo "STATE opts=$- shellopts=$SHELLOPTS pwd=$PWD"'


def _states(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("STATE ")]


def test_sourcing_keeps_options_and_directory_and_the_shell_survives_a_failure(tmp_path):
    root = _checkout(tmp_path)
    elsewhere = tmp_path / "somewhere else"
    elsewhere.mkdir()
    script = f"""
{STATE}
source "{root}/scripts/env.sh"
echo "sourced rc=$?"
{STATE}
false
ls /no/such/path
false | true
echo "SURVIVED after failures"
echo "LINEAGE_HOME=$LINEAGE_HOME"
echo "DAGSTER_HOME=$DAGSTER_HOME"
echo "PATH=$PATH"
echo "ROOT=${{ROOT:-unset}} VENV=${{VENV:-unset}} STAMP=${{STAMP:-unset}}"
type _lineage_forge_env >/dev/null 2>&1 && echo "FUNCTION LEFT" || echo "no function left"
source "{root}/scripts/env.sh"
echo "PATH2=$PATH"
exit 7
"""
    r = _interactive(script, elsewhere, tmp_path)
    assert r.returncode == 7, r.stderr  # the shell reached its own exit, not one caused by `false`
    out = r.stdout
    before, after = _states(out)
    assert before == after, (before, after)  # $-, set -o options (no errexit/nounset/pipefail) and $PWD
    assert f"pwd={elsewhere}" in after
    assert "errexit" not in after and "nounset" not in after and "pipefail" not in after
    assert "sourced rc=0" in out
    assert "SURVIVED after failures" in out
    assert f"LINEAGE_HOME={root}/.lineage" in out
    assert f"DAGSTER_HOME={root}/.lineage/dagster" in out
    assert (root / ".lineage" / "dagster" / "dagster.yaml").is_file()
    assert (root / ".lineage" / "landing").is_dir()
    path = next(line for line in out.splitlines() if line.startswith("PATH="))[len("PATH="):]
    assert path.split(":")[0] == f"{root}/.venv/bin"
    path2 = next(line for line in out.splitlines() if line.startswith("PATH2="))[len("PATH2="):]
    assert path2 == path  # sourcing twice does not grow PATH
    assert "ROOT=unset VENV=unset STAMP=unset" in out  # no helper variables leak into the shell
    assert "no function left" in out
    assert "[env] installing" not in out  # the stamp matched: nothing installed


def test_a_failed_install_returns_1_and_leaves_the_shell_open(tmp_path):
    root = _checkout(tmp_path, installed=False)  # the stamp is missing: env.sh tries to install; pip fails
    script = f"""
{STATE}
source "{root}/scripts/env.sh"
echo "sourced rc=$?"
{STATE}
echo "SURVIVED"
exit 3
"""
    r = _interactive(script, tmp_path, tmp_path)
    assert r.returncode == 3, r.stderr
    assert "sourced rc=1" in r.stdout
    assert "SURVIVED" in r.stdout
    before, after = _states(r.stdout)
    assert before == after
    assert "setting up" in r.stderr and "failed" in r.stderr
    assert not (root / ".venv" / ".lineage-forge-installed").exists()


def test_a_strict_script_that_sources_it_keeps_its_own_options(tmp_path):
    """demo.sh and test.sh run under `set -euo pipefail` and source env.sh: their options stay on."""
    root = _checkout(tmp_path)
    script = tmp_path / "strict.sh"
    script.write_text(f"""set -euo pipefail
cd /
source "{root}/scripts/env.sh"
echo "shellopts=$SHELLOPTS pwd=$PWD"
""")
    r = subprocess.run([BASH, str(script)], text=True, capture_output=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k not in ("LINEAGE_HOME", "DAGSTER_HOME")})
    assert r.returncode == 0, r.stderr
    assert "errexit" in r.stdout and "nounset" in r.stdout and "pipefail" in r.stdout
    assert "pwd=/\n" in r.stdout
