#!/usr/bin/env bash
# Source this file: creates or updates .venv (torch 2.13.0 first, then the project) and
# sets LINEAGE_HOME / DAGSTER_HOME, installing the dagster.yaml template on first use.
# Re-installs only when pyproject.toml changed since the last install.
#
# Sourcing leaves your shell as it was: its options ($-, `set -o`), its working directory and
# its variables, apart from PATH (.venv/bin first, added once), LINEAGE_HOME and DAGSTER_HOME.
# The install runs in a subshell (its own directory and variables); a failure returns 1.

_lineage_forge_env() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
  (
    # every step checked by hand: `set -e` does not apply inside a function called as a condition
    cd "$root" || exit 1
    python="${PYTHON:-python3}"
    venv="$root/.venv"
    stamp="$venv/.lineage-forge-installed"
    want="$(sha256sum pyproject.toml | cut -c1-16)" && [ -n "$want" ] || exit 1
    if [ ! -x "$venv/bin/python" ]; then
      echo "[env] creating $venv"
      "$python" -m venv "$venv" || exit 1
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
      echo "[env] installing torch 2.13.0 (CPU wheel), then lineage-forge and its dependencies"
      # setuptools' "Editable installation ... folders with the same name" notice: nothing to act on
      export PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:Editable installation"
      "$venv/bin/python" -m pip install --quiet --upgrade pip || exit 1
      # torch first and pinned: anything else would pull several GB of CUDA packages
      "$venv/bin/python" -m pip install --quiet "torch==2.13.0" || exit 1
      "$venv/bin/python" -m pip install --quiet -e ".[dev]" "torch==2.13.0" || exit 1
      echo "$want" > "$stamp" || exit 1
    fi
  ) || { echo "[env] setting up $root/.venv failed" >&2; return 1; }
  local path=":$PATH:"  # .venv/bin first, once (sourcing again does not grow PATH)
  while [[ "$path" == *":$root/.venv/bin:"* ]]; do path="${path/":$root/.venv/bin:"/:}"; done
  path="${path#:}"; path="${path%:}"
  export PATH="$root/.venv/bin${path:+:$path}"
  export LINEAGE_HOME="${LINEAGE_HOME:-$root/.lineage}"
  export DAGSTER_HOME="${DAGSTER_HOME:-$LINEAGE_HOME/dagster}"
  mkdir -p "$LINEAGE_HOME/landing" "$DAGSTER_HOME" || return 1
  [ -f "$DAGSTER_HOME/dagster.yaml" ] || cp "$root/configs/dagster.yaml" "$DAGSTER_HOME/dagster.yaml" || return 1
}

if _lineage_forge_env; then
  unset -f _lineage_forge_env
  true
else
  unset -f _lineage_forge_env
  # sourced: return to the caller (whose shell stays open); run as a script: exit
  return 1 2>/dev/null || exit 1
fi
