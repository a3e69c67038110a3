#!/usr/bin/env bash
# Installs the pinned Python tools of the Yocto layer's tests (tests/python-requirements.txt:
# oelint-adv, kas) into a virtual environment at target/pyvenv ($CARGO_TARGET_DIR/pyvenv),
# where tests/tests/yocto_layer.rs looks for them.
# Idempotent: does nothing when the environment holds exactly the pinned set already.
# Needs python3 with its venv module (Debian: python3-venv, installed by tests/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=tests/python-requirements.txt
venv="${CARGO_TARGET_DIR:-target}/pyvenv"
stamp="$venv/flipslot-requirements.txt"

if [[ -x $venv/bin/python && -f $stamp ]] && cmp -s "$requirements" "$stamp"; then
  exit 0
fi

echo "pydeps: installing $(grep -cv '^\s*\(#\|$\)' "$requirements") pinned packages into $venv"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --requirement "$requirements"
cp "$requirements" "$stamp"
