# yolokd, AGPL-3.0 License
"""Keep every test offline and quiet, and away from the user's Ultralytics settings."""

from __future__ import annotations

import os
import tempfile

# Must be set before ultralytics is imported anywhere: no download attempts, no telemetry, no auto-install, and a
# private settings folder so the user's settings file is never read or written by the tests.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolokd-ultralytics-cfg-"))
os.environ.setdefault("YOLO_VERBOSE", "False")
