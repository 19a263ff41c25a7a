#!/usr/bin/env bash
# Creates the Python virtualenv with the reference libraries that the scripts in
# tools/reference/ use to write golden fixtures under tests/golden/. It lives
# OUTSIDE the repository (default ~/.cache/qlora-train/venv-ref, or $1). CI does
# not need it: the fixtures are committed.
#   bash tools/reference/setup_venv.sh [VENV_DIR]
#   VENV_DIR/bin/python tools/reference/make_safetensors_fixtures.py
set -euo pipefail
VENV=${1:-$HOME/.cache/qlora-train/venv-ref}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --upgrade pip
"$VENV/bin/python" -m pip install torch transformers peft bitsandbytes tokenizers safetensors numpy jinja2
"$VENV/bin/python" - <<'PYEOF'
import importlib
for n in ("torch", "transformers", "peft", "bitsandbytes", "tokenizers", "safetensors", "numpy", "jinja2"):
    try:
        print(n, importlib.import_module(n).__version__)
    except Exception as e:
        print(n, "FAILED:", e)
PYEOF
echo "reference venv ready: $VENV"
