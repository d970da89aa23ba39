# yolokd, AGPL-3.0 License
"""Deterministic, offline generator of a synthetic YOLO-format data set for detection, segmentation, pose or OBB.

Three looks (`STYLES`): ``shapes`` (up to 8 classes of filled shapes on textured backgrounds with clutter and
occlusion, the default), ``glyphs`` (rotated letters and a digit on stripes or checks, for transfer checks) and
``aerial`` (many small shapes on natural-looking ground). An object is labelled only if at least 40% of it is
visible, with the amodal box of its full shape. Image ``i`` of a split is drawn from
``default_rng([seed, split_id, i])``, so the files are byte-identical for the same arguments and across tasks.

Modules: `drawing`, `looks`, `scene`, `labels` and `writer` (`make_dataset`); import from the package.
"""

from __future__ import annotations

from yolokd.data.synthetic.drawing import GLYPHS, SHAPES
from yolokd.data.synthetic.labels import KPT_NAMES, TASKS, extreme_points, pose_line, rotated_box
from yolokd.data.synthetic.looks import STYLES, Style, class_names
from yolokd.data.synthetic.scene import Drawn
from yolokd.data.synthetic.writer import STAMP_NAME, make_dataset  # noqa: F401  (STAMP_NAME: not in __all__)

# the private names the tests import, as the helpers were named before the split into modules
_Drawn, _extreme_points, _pose_line, _rotated_box = Drawn, extreme_points, pose_line, rotated_box

__all__ = ["GLYPHS", "KPT_NAMES", "SHAPES", "STYLES", "TASKS", "Style", "class_names", "make_dataset"]
