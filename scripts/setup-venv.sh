#!/usr/bin/env bash
# Creates .venv (if needed) and installs ubiq into it.
#   scripts/setup-venv.sh runtime   numpy, OpenCV, onnxruntime, LiteRT: what `ubiq detect` needs
#   scripts/setup-venv.sh dev       + test tools, and torch + ultralytics for the export tests
# Re-running is cheap: a stamp file skips installs that are already up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-runtime}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=".venv/.ubiq-${profile}-$(cat pyproject.toml scripts/*.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
case "$profile" in
  runtime)
    "${pip[@]}" -e .
    ;;
  dev)
    bash scripts/install-system-deps.sh
    # torch first, pinned: the [train] extra would otherwise pull a newer CUDA build.
    "${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
    # One command for all extras: pip resolves litert-torch's pins together with the rest.
    "${pip[@]}" -e ".[dev,train,tflite,speech,openvino,mqtt]"
    # Silero VAD's ONNX file: the package declares torch (and torchaudio) as dependencies
    # but ubiq reads only its ONNX file, so install it without them.
    "${pip[@]}" --no-deps "silero-vad>=5"
    # PyGObject for the GStreamer sources; newer releases need a newer GLib than Debian 12.
    "${pip[@]}" "pygobject<3.51"
    # torch and ultralytics are toolchain-only (never imported by `ubiq detect`); the tests
    # use them to train and export real models offline. torch 2.14.1 is served from local disk.
    "${pip[@]}" "ultralytics>=8.3" "onnxslim>=0.1"
    # Tracking metrics and the peer trackers of benchmarks/track_vs_peers.py.
    "${pip[@]}" "trackers>=2.6"
    # ultralytics (and supervision) pull in opencv-python, which overwrites the cv2 module of
    # opencv-python-headless (a different major version here): keep only the headless 4.x.
    .venv/bin/python -m pip uninstall --quiet -y opencv-python || true
    "${pip[@]}" --force-reinstall --no-deps "opencv-python-headless>=4.8,<5"
    ;;
  *)
    echo "usage: scripts/setup-venv.sh runtime|dev" >&2
    exit 2
    ;;
esac
touch "$stamp"
