#!/usr/bin/env bash
# Source this file: creates or updates .venv (torch 2.13.0 first, then the project) and
# sets LINEAGE_HOME / DAGSTER_HOME, installing the dagster.yaml template on first use.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.lineage-forge-installed"
WANT="$(sha256sum pyproject.toml | cut -c1-16)"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[env] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "[env] installing torch 2.13.0 (CPU wheel), then lineage-forge and its dependencies"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # torch first and pinned: anything else would pull several GB of CUDA packages
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export LINEAGE_HOME="${LINEAGE_HOME:-$ROOT/.lineage}"
export DAGSTER_HOME="${DAGSTER_HOME:-$LINEAGE_HOME/dagster}"
mkdir -p "$LINEAGE_HOME/landing" "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp "$ROOT/configs/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
