# yolokd, AGPL-3.0 License
"""Pseudo-labels from the teacher for unlabeled images: its confident boxes, as a batch Ultralytics' loss reads.

The student's box and DFL losses use the teacher's boxes with score >= ``pseudo_conf`` after class-wise NMS
(Unbiased Teacher); its class scores follow the teacher's dense scores (Dense Teacher), so an uncertain object is
never taught as background.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import batched_nms
from ultralytics.utils import DEFAULT_CFG_DICT
from ultralytics.utils.tal import make_anchors

from yolokd.head import decode_boxes, rows
from yolokd.losses import functional as kdf

NMS_IOU = 0.7  # Ultralytics' default IoU of predict and val
MAX_DET = 300  # pseudo-boxes kept per image at the most, Ultralytics' max_det

UNLABELED_ITEMS = ("unl_box", "unl_cls", "unl_dfl", "unl_kd", "pseudo")
"""Items of the unlabeled images: the student's box, class (dense, from the teacher) and DFL losses there, the terms'
weighted sum there, and the teacher's pseudo-boxes per unlabeled image."""


def _gain(model: nn.Module, key: str) -> float:
    """A loss gain of the student's arguments (``box``, ``cls``, ``dfl``), Ultralytics' default where unset."""
    args = getattr(model, "args", None)
    value = args.get(key) if isinstance(args, dict) else getattr(args, key, None)
    return float(DEFAULT_CFG_DICT[key] if value is None else value)


def teacher_boxes(out: dict, strides: list[int], reg_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher head's class probabilities (B, nc, A) and decoded pixel boxes (B, A, 4) at every anchor."""
    anchor_points, stride_tensor = make_anchors(out["feats"], [float(s) for s in strides], 0.5)
    xyxy = decode_boxes(out["boxes"], anchor_points, reg_max) * stride_tensor
    return out["scores"].float().sigmoid(), xyxy


def _ranks(group: torch.Tensor, n: int) -> torch.Tensor:
    """Each element's position within its group, for ``group`` (M,) sorted ascending with values in ``[0, n)``."""
    counts = torch.bincount(group, minlength=n)
    return torch.arange(group.numel(), device=group.device) - (counts.cumsum(0) - counts)[group]


def _best_per_image(order: torch.Tensor, b: torch.Tensor, n: int, cap: int) -> torch.Tensor:
    """``order`` (indices, highest score first; ``b`` their images) by image, at most ``cap`` each (a read if over)."""
    order = order[b[order].argsort(stable=True)]
    return order[_ranks(b[order], n) < cap] if order.numel() > cap else order


def select_boxes(
    probs: torch.Tensor, xyxy: torch.Tensor, conf: float, iou: float = NMS_IOU, max_det: int = MAX_DET
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The confident boxes of every image: best class score >= ``conf``, class-wise NMS at ``iou``, ``max_det`` best.

    One NMS over the whole batch (image and class as its groups): two values reach the host per call, the number of
    candidates and of kept boxes; one more where the batch holds over ``30 x max_det`` candidates or keeps over
    ``max_det`` boxes (the per-image bounds are then applied).

    Args:
        probs (torch.Tensor): (B, nc, A) class probabilities.
        xyxy (torch.Tensor): (B, A, 4) boxes in pixels.
        conf (float): Score threshold.
        iou (float): NMS IoU threshold.
        max_det (int): Boxes kept per image at the most, highest scores first.

    Returns:
        (tuple[Tensor, Tensor, Tensor]): ``batch_idx`` (M,), ``cls`` (M,) and ``xyxy`` (M, 4) of the kept boxes, by
            image, highest score first.

    Examples:
        >>> probs = torch.tensor([[[0.9, 0.8, 0.2]]])  # one image, one class, three anchors
        >>> xyxy = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]])
        >>> b, c, boxes = select_boxes(probs, xyxy, conf=0.5)  # anchor 1 overlaps anchor 0 (IoU 0.81): suppressed
        >>> b.tolist(), c.tolist(), boxes.tolist()
        ([0], [0], [[0.0, 0.0, 10.0, 10.0]])
    """
    n, nc = probs.shape[:2]
    score, cls = probs.max(1)  # (B, A)
    b, a = (score >= conf).nonzero(as_tuple=True)  # by image, then anchor
    score, cls, boxes = score[b, a], cls[b, a], xyxy[b, a]
    if b.numel() > 30 * max_det:  # bound the NMS: only the best candidates of each image
        best = _best_per_image(score.argsort(descending=True, stable=True), b, n, 30 * max_det)
        b, score, cls, boxes = b[best], score[best], cls[best], boxes[best]
    kept = batched_nms(boxes.float(), score.float(), b * nc + cls, iou)  # highest score first
    kept = _best_per_image(kept, b, n, max_det)
    return b[kept], cls[kept], boxes[kept].reshape(-1, 4)


def pseudo_batch(img: torch.Tensor, batch_idx: torch.Tensor, cls: torch.Tensor, xyxy: torch.Tensor) -> dict:
    """A training batch of ``img`` labelled with the given boxes (clipped), in Ultralytics' layout (normalised xywh).

    Examples:
        >>> img, box = torch.zeros(1, 3, 20, 40), torch.tensor([[0.0, 0, 20, 10], [30, 10, 50, 30]])
        >>> b = pseudo_batch(img, torch.tensor([0, 0]), torch.tensor([2, 1]), box)  # the second crosses the border
        >>> b["bboxes"].tolist(), b["cls"].tolist()
        ([[0.25, 0.25, 0.5, 0.5], [0.875, 0.75, 0.25, 0.5]], [[2.0], [1.0]])
    """
    h, w = img.shape[-2:]
    xyxy = torch.stack(
        [xyxy[:, 0].clamp(0, w), xyxy[:, 1].clamp(0, h), xyxy[:, 2].clamp(0, w), xyxy[:, 3].clamp(0, h)], 1
    )
    xywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
    scale = xywh.new_tensor([w, h, w, h])
    return {
        "img": img,
        "batch_idx": batch_idx.float(),
        "cls": cls.float().reshape(-1, 1),
        "bboxes": xywh / scale,
    }


class UnlabeledLoss:
    """`KDModel`'s step on unlabeled images (the host class provides the teacher, the detection loss and the terms)."""

    def _unlabeled_loss(self, img: torch.Tensor, n_labelled: int) -> tuple[torch.Tensor, dict]:
        """The student's loss on unlabeled images, from the teacher alone.

        Box and DFL losses against the teacher's confident boxes, a per-class Bernoulli KL to its dense scores in place
        of the classification loss, and every term of the method; weighted by ``unlabeled_weight`` and ``catchup``.

        Returns:
            (tuple[Tensor, dict]): ``[box, cls, dfl, terms] x weight x n_labelled`` and `UNLABELED_ITEMS`.
        """
        cfg, n = self.kd_config, img.shape[0]
        self._student_feats.clear()
        t_out, t_stages = self._teacher_forward(img, head=True)
        classes = self._class_index(img.device)
        if classes is not None:
            t_out["scores"] = t_out["scores"].index_select(1, classes)
        probs, xyxy = teacher_boxes(t_out, self.probe.strides, self.probe.teacher_reg_max)
        batch = pseudo_batch(img, *select_boxes(probs, xyxy, cfg.pseudo_conf))
        preds = self.student_model(img)
        det, items, assigned, gt = self._detection_loss(batch, preds)
        s_out = self._student_outputs(img)
        dense = kdf.binary_kl(
            rows(s_out["scores"]),
            rows(t_out["scores"]).to(s_out["scores"].dtype),
            avg_factor=probs.sum().clamp(min=1),
        ) * _gain(self.student_model, "cls")
        box, dfl = det[0] / n, det[2] / n  # the detection loss's (box, cls, dfl); its cls is replaced by `dense`
        kd = self._terms(self._inputs(batch, s_out, t_out, t_stages, assigned, gt, classes), None).sum()
        parts = torch.stack([box.float(), dense.float(), dfl.float(), kd])
        w = cfg.unlabeled_weight * getattr(self, "catchup", 1.0)
        count = torch.full((), len(batch["cls"]) / n, device=img.device)
        values = [box, dense, dfl, kd, count]
        return parts * (w * n_labelled), {k: v.detach().float() for k, v in zip(UNLABELED_ITEMS, values)}
