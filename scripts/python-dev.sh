#!/usr/bin/env bash
# Builds the Python binding (`jammi_ai`) into a virtualenv with maturin, in the dev profile
# and the workspace's target directory (or $CARGO_TARGET_DIR), so it reuses the DataFusion
# stack `cargo test` built;
# installs what its tests and benchmark need the first time. Extra arguments go to
# `maturin develop` (e.g. --release for the benchmark).
#   scripts/python-dev.sh && ~/.cache/jammi-py/venv/bin/pytest python/tests
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${JAMMI_PY_VENV:-$HOME/.cache/jammi-py/venv}"
if ! "$venv/bin/python" -c 'import maturin, pytest, pyarrow, pandas, polars, numpy, duckdb, usearch' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    'maturin>=1.9,<2' pytest 'pyarrow>=15' pandas polars numpy duckdb usearch
fi
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --manifest-path python/Cargo.toml "$@"
