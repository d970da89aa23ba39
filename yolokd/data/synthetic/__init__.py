# yolokd, AGPL-3.0 License
"""Deterministic, offline generator of a synthetic YOLO-format data set for detection, segmentation, pose or OBB.

Nothing can be downloaded on the machines that run the yolokd demo, tests and benchmark, so this module draws a small
"shapes" data set with numpy and OpenCV. It is designed to be learnable within a few epochs at 128-192 px, yet hard
enough that a larger YOLOv8 model clearly beats a smaller one after short CPU training:

- Up to 8 classes of filled shapes (see ``SHAPES``): circle, square, triangle, cross, star, ring, diamond, hexagon.
- Textured backgrounds: a random two-colour gradient, low-frequency colour blotches, Gaussian noise, an occasional
  slight blur, and unlabeled clutter (lines, elongated blobs, partial arcs, scribbles) that is not any class.
- 1..``max_objects`` objects per image, sizes log-uniform from 12% to 50% of the image side, random colours (mostly
  with good contrast to the local background, sometimes deliberately low contrast), random rotation where a shape is
  not rotationally symmetric (a square stays axis-aligned so that it cannot become a diamond), per-object shading.
- Occlusion: objects may overlap, later ones drawn on top, and some are placed next to an earlier one on purpose.

A second look, ``style="glyphs"`` (`STYLES`), draws other objects (letters and a digit in Hershey fonts, turned by up
to 20 degrees), on other backgrounds (two-colour stripes or checks), at other sizes (glyph boxes about 16-60% of the
side), with less clutter; the same API, labelling rule and determinism. The benchmark reports its chosen defaults on
it (transfer); it is never used to choose anything.

A third look, ``style="aerial"``, is unlike both: many small objects (the shapes at 4-12% of the side, up to three
times ``max_objects`` per image) on cluttered natural-looking ground (multi-octave noise between earthy and green
colours, with grain) under many thin distractors, as in aerial or crowd scenes.

Labelling rule (amodal boxes): the visible pixels of every object are tracked. An object is labelled only if at least
40% of its full area is visible, i.e. neither hidden by objects drawn later nor cut off by the image border;
otherwise it stays in the image unlabeled (as a hard negative). A labelled object gets the tight box of its FULL,
un-occluded shape (the standard amodal box of COCO-style annotation), clipped to the image.

Tasks (``task=``): the same images and the same labelled objects, with Ultralytics-format labels of another kind, all
from the object's full (amodal) drawn shape: ``detect`` boxes (the default), ``segment`` polygons (the outer contour),
``pose`` boxes with 4 keypoints (the top-, right-, bottom- and left-most pixels, ``KPT_NAMES``; visibility 2 where the
object is visible there, 1 where a later object hides it) and ``obb`` rotated boxes (the minimum-area rectangle). The
extra geometry uses no random numbers, so the images are byte-identical across tasks.

Every image is drawn from its own ``numpy.random.default_rng([seed, split_id, index])``, so the same arguments give
byte-identical files, image ``i`` does not depend on how many images were generated before, and the train, val and
test splits come from disjoint seed streams. The val split is meant for choosing hyper-parameters, the test split for
reporting. A stamp file records the arguments and is written last, so a finished data set is reused at once and an
interrupted or different one is regenerated from scratch.

Modules, each importing only those above it: `drawing` (object masks, backgrounds, clutter), `looks` (`Style`,
`STYLES`, `class_names`), `scene` (one image and the objects to label), `labels` (one label line per task) and
`writer` (`make_dataset`: the files, ``data.yaml`` and the stamp). Import from the package, as before the split:
``from yolokd.data.synthetic import make_dataset``.
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
