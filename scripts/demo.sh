#!/usr/bin/env bash
# The main job: the detection app on the demo clip with a real pretrained model (BlazeFace,
# fetched offline from the mediapipe wheel on PyPI when the official address is out of reach).
# Writes runs/demo/annotated.mp4 and runs/demo/detections.jsonl. Extra arguments go to `ubiq detect`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh runtime
mkdir -p runs/demo
exec .venv/bin/ubiq detect --source demo --model blazeface \
  --save runs/demo/annotated.mp4 --jsonl runs/demo/detections.jsonl "$@"
