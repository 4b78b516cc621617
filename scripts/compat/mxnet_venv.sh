#!/usr/bin/env bash
# Install the reference implementation, MXNet 1.9.1, into a private venv and print its
# python path. Used by the compatibility checks and benchmarks. Idempotent.
# Pins: plain `pip install mxnet` brings a numpy that mxnet 1.9.1 cannot import.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${MXNET_VENV:-$here/../.venv-mxnet}
if ! "$venv/bin/python" -c 'import mxnet, cv2' >/dev/null 2>&1; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q "mxnet==1.9.1" "numpy<1.24" "opencv-python-headless<4.12" pillow >&2
fi
echo "$venv/bin/python"
