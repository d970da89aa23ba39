#!/usr/bin/env bash
# yolokd, AGPL-3.0 License
# The CLI takes every `yolo train` argument plus teacher=, method=, distill_weight=, teacher_val=.
set -euo pipefail
yolokd demo epochs=3 teacher_epochs=3 project=runs/example-cli          # builds data + teacher offline
yolokd train model=runs/example-cli/models/yolov8-pico.yaml teacher=runs/example-cli/teacher/weights/best.pt \
  method=examples/custom_method.yaml data=runs/example-cli/data/data.yaml epochs=3 imgsz=128 batch=16 \
  project=runs/example-cli name=custom
