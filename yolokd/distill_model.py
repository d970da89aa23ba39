# yolokd, AGPL-3.0 License
"""`KDModel`: teacher + student + adapters on Ultralytics' `DistillationModel` seam, summing a stack of terms.

Reusing the seam means Ultralytics already freezes ``teacher_model.`` parameters, drops the teacher from the EMA,
forwards ``criterion``/``end2end``/``set_head_attr`` to the student, keeps the teacher in eval mode under
``train()``, fuses to the bare student, and handles the hook state on deepcopy/pickle (EMA, checkpoints, DDP).
What differs from the built-in: the adapters are the terms' (``projector`` is a ``ModuleDict`` by term name), the
loss is a configurable stack of terms, and the taps read the Detect head once per model.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.distill_model import DistillationModel, FeatureHook
from ultralytics.utils.tal import make_anchors
from ultralytics.utils.torch_utils import copy_attr

from yolokd.balance import AutoBalance
from yolokd.config import KDConfig, KDError
from yolokd.losses import TERMS, DistillInputs, Probe, Side, Term
from yolokd.nonfinite import NonFiniteGuard, cuda_autocast, finite_grad
from yolokd.pseudo import UnlabeledLoss
from yolokd.schedules import SCHEDULES, Progress
from yolokd.taps import NeckStop, clear_neck_stops, detect_head, dummy_forward, head_outputs, model_task
from yolokd.targets import Assigned, GroundTruth, ground_truth, recording_assignment, rotated_to_anchor_frame
from yolokd.teacher import fold_batchnorm
from yolokd.teacher_runtime import HEAD, TeacherRuntime


def check_tasks(terms: list[Term], names: list[str], task: str) -> None:
    """Raise a one-line `KDError` when a term cannot read this task's models (e.g. a mask term on a detector).

    Examples:
        >>> from yolokd.losses.cwd import CWD
        >>> check_tasks([CWD()], ["cwd"], "pose")  # neck terms read every task
    """
    for name, term in zip(names, terms):
        if task not in term.tasks:
            raise KDError(
                f"term '{name}' ({term.type}) distils {'/'.join(term.tasks)} models but the student is a '{task}' "
                f"model; leave it out of method= for this task"
            )


class KDModel(TeacherRuntime, NonFiniteGuard, UnlabeledLoss, DistillationModel):
    """Teacher + student + per-term adapters; ``loss(batch)`` returns detection plus weighted distillation losses.

    Attributes:
        teacher_model (nn.Module): Frozen teacher, eval mode, run under ``torch.no_grad()``.
        student_model (nn.Module): The student being trained.
        projector (nn.ModuleDict): Trainable adapters by term name (only terms that need adapters appear).
        terms (nn.ModuleList): The distillation terms, in configuration order.
        kd_config (KDConfig): The configuration the model was built from.
        progress (Progress): Training progress, set by the trainer before each batch; drives the weight schedules.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        config: KDConfig,
        imgsz: int = 64,
        teacher_classes: list[int] | None = None,
    ):
        """Build the pair, tap both heads, probe shapes and create the adapters.

        Args:
            student (nn.Module): Student model with a Detect head (detect, segment, pose or obb).
            teacher (nn.Module): Teacher of the same task (checked with `yolokd.teacher.check_pair` by the caller).
            config (KDConfig): Validated distillation configuration.
            imgsz (int): Dummy input size for the shape probe (rounded up to a multiple of the largest stride).
            teacher_classes (list[int], optional): The teacher class that feeds each student class (from
                `yolokd.teacher.check_pair`); None when both have the same classes in the same order. The teacher's
                class logits are reduced to these before any term reads them.
        """
        nn.Module.__init__(self)  # DistillationModel.__init__ would build Ultralytics' own projector and loss
        device = next(student.parameters()).device
        self.teacher_model = teacher.to(device)
        self._freeze_teacher()
        fold_batchnorm(self.teacher_model)  # eval-mode BatchNorm folded into the convs: a cheaper teacher forward
        self.teacher_channels_last: bool | None = None  # None: chosen at the first forward, by the image's device
        self.student_model = student
        self.kd_config = config
        self.teacher_classes = None if teacher_classes is None else [int(c) for c in teacher_classes]
        self.terms = nn.ModuleList(TERMS[s.type](**s.params) for s in config.terms)
        check_tasks(list(self.terms), [s.name for s in config.terms], model_task(student))
        self.stage_taps = sorted({tap for t in self.terms for tap in t.taps()})
        self.needs_targets = any(t.needs_targets for t in self.terms)
        # no term reads the teacher's head outputs or stages: its forward ends at the Detect inputs (the neck)
        self.teacher_to_neck = not self.stage_taps and not any(t.reads_teacher_head for t in self.terms)
        self.progress = Progress()
        self.catchup = 1.0  # `yolokd.schedules.catchup_factor`: fades distillation once the student nears the teacher
        self.nonfinite_skips: dict[str, int] = {}  # term name -> steps skipped because its value was NaN/Inf
        self._nonfinite: torch.Tensor | None = None  # the same, counted on the device since the last flush
        ratios = [s.balance for s in config.terms]  # terms with balance > 0 get automatic weights
        self.balance = AutoBalance(ratios) if any(r > 0 for r in ratios) else None
        # DistillationModel's pickling hooks read these names
        self.feats_idx = self.teacher_feats_idx = [detect_head(student).i]
        self._teacher_feats: dict = {}
        self._student_feats: dict = {}
        self._teacher_hooks: list = []
        self._student_hooks: list = []
        self._register_feature_hooks()

        gs = int(max(student.stride.max(), teacher.stride.max()))
        imgsz = max(gs, -(-int(imgsz) // gs) * gs)
        ch = student.yaml.get("channels", 3) if hasattr(student, "yaml") else 3
        s_feats, s_stages = dummy_forward(student, self._student_feats, HEAD, imgsz, ch)
        t_feats, t_stages = dummy_forward(self.teacher_model, self._teacher_feats, HEAD, imgsz, ch)
        self.probe = Probe(
            student_channels=[f.shape[1] for f in s_feats],
            teacher_channels=[f.shape[1] for f in t_feats],
            strides=[int(s) for s in student.stride.tolist()],
            student_reg_max=int(detect_head(student).reg_max),
            teacher_reg_max=int(detect_head(self.teacher_model).reg_max),
            student_stage_channels={k: v.shape[1] for k, v in s_stages.items()},
            teacher_stage_channels={k: v.shape[1] for k, v in t_stages.items()},
        )
        adapters = {spec.name: a for spec, t in zip(config.terms, self.terms) if (a := t.make_adapters(self.probe))}
        self.projector = nn.ModuleDict(adapters).to(device)
        copy_attr(self, student)

    # ------------------------------------------------------------------ hooks (called by DistillationModel pickling)
    def _register_feature_hooks(self) -> None:
        """Tap the Detect head (and the head stages the terms asked for) of student and teacher."""
        self._remove_feature_hooks()
        for model, store, handles in (
            (self.student_model, self._student_feats, self._student_hooks),
            (self.teacher_model, self._teacher_feats, self._teacher_hooks),
        ):
            if model is None:  # the EMA copy has no teacher
                continue
            head = detect_head(model)
            if model is self.teacher_model and getattr(self, "teacher_to_neck", False):
                clear_neck_stops(head)
                handles.append(head.register_forward_pre_hook(NeckStop(store, HEAD)))
                continue
            modules = [(head, HEAD)]
            for attr, stage in getattr(self, "stage_taps", []):
                branch = getattr(head, attr, None)
                if branch is None:
                    raise KDError(f"{type(model).__name__} head has no '{attr}' branch to tap")
                modules += [(seq[stage], (attr, level, stage)) for level, seq in enumerate(branch)]
            for module, key in modules:
                self._clear_feature_hooks(module)
                handles.append(module.register_forward_hook(FeatureHook(store, key)))

    # ------------------------------------------------------------------ weights
    def term_weights(self, progress: Progress | None = None) -> dict[str, float]:
        """Current effective weight of each term: ``weight x distill_weight x catchup x schedule(progress)``.

        ``weight`` is the yaml's, or for a term with ``balance > 0`` its automatic weight (`yolokd.balance`: running
        during the first steps, then frozen; 0 before its first measurement).

        Args:
            progress (Progress, optional): Progress to evaluate at; defaults to ``self.progress``.

        Returns:
            (dict[str, float]): ``{term name: weight}``.
        """
        base = [s.weight for s in self.kd_config.terms]
        if self.balance is not None:  # automatic weights (running, then frozen); reading them syncs once
            auto = self.balance.current().tolist()
            base = [a if s.balance > 0 else w for s, a, w in zip(self.kd_config.terms, auto, base)]
        return {s.name: b * f for s, b, f in zip(self.kd_config.terms, base, self.schedule_factors(progress))}

    def schedule_factors(self, progress: Progress | None = None) -> list[float]:
        """Each term's ``distill_weight x catchup x schedule(progress)``: its weight's multiplier, 0 where it is off.

        ``catchup`` is 1 until the student nears the teacher's validation score (`yolokd.schedules.catchup_factor`).
        """
        p = progress or self.progress
        dw = self.kd_config.distill_weight * getattr(self, "catchup", 1.0)
        return [dw * SCHEDULES[s.schedule](p) for s in self.kd_config.terms]

    def item_names(self) -> list[str]:
        """Loss-item names of the terms (``<name>_loss``), in order."""
        return [f"{s.name}_loss" for s in self.kd_config.terms]

    # ------------------------------------------------------------------ loss
    def loss(self, batch: dict, preds=None):
        """Detection loss of the student plus the weighted distillation terms.

        Args:
            batch (dict): Preprocessed batch.
            preds (Any, optional): Student predictions, only used in validation mode.

        With ``batch["unlabeled_img"]`` (the trainer's unlabeled images, `yolokd.unlabeled`) the student also learns
        from the teacher alone on those images (`_unlabeled_loss`).

        Returns:
            loss (torch.Tensor): ``cat[detection loss x batch size, term values x batch size]`` (and the unlabeled
                loss's parts x batch size).
            loss_items (dict[str, torch.Tensor]): Detached items: the detection items, one per term (and
                `UNLABELED_ITEMS`).
        """
        img = batch["img"]
        if not self.training:  # validation during training: the terms are not evaluated
            preds = self.student_model(img) if preds is None else preds
            det, items = self.student_model.loss(batch, preds)
            self._student_feats.clear()  # the taps fired during validation too
            kd = torch.zeros(len(self.terms), device=det.device, dtype=det.dtype)
            items.update({k: v for k, v in zip(self.item_names(), kd)})
            return torch.cat([det, kd]), items

        det, kd, items = self._distil(batch)
        parts = [det.float(), kd * img.shape[0]]
        if "unlabeled_img" in batch:  # the trainer's unlabeled stream (`yolokd.unlabeled`)
            u, u_items = self._unlabeled_loss(batch["unlabeled_img"], img.shape[0])
            parts.append(u)
            items.update(u_items)
        return torch.cat(parts), items

    def _distil(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """One labelled batch: the student's detection loss and each weighted term (per image), with their items."""
        img = batch["img"]
        self._student_feats.clear()
        t_out, t_stages = self._teacher_forward(img)
        classes = self._class_index(img.device)
        if classes is not None and "scores" in t_out:  # only the matched teacher classes reach the terms
            t_out["scores"] = t_out["scores"].index_select(1, classes)
        preds = self.student_model(img)
        det, items, assigned, gt = self._detection_loss(batch, preds)
        inputs = self._inputs(batch, self._student_outputs(img), t_out, t_stages, assigned, gt, classes)
        kd = self._terms(inputs, det.detach().float().sum() / img.shape[0])
        items.update({k: v.detach() for k, v in zip(self.item_names(), kd)})
        return det, kd, items

    def _student_outputs(self, img: torch.Tensor) -> dict:
        """The student's tapped head outputs (and stages, kept in the taps), their gradients kept finite.

        Under CUDA AMP they are left as they are: Ultralytics' GradScaler skips a step with non-finite gradients.
        """
        s_out = head_outputs(self._student_feats.pop(HEAD))
        if not (img.is_cuda and cuda_autocast()):
            s_out = {
                k: [finite_grad(f) for f in v] if k == "feats" else finite_grad(v) if torch.is_tensor(v) else v
                for k, v in s_out.items()
            }  # a skipped term's NaN gradient never reaches the student
            self._student_feats.update({k: finite_grad(v) for k, v in self._student_feats.items()})
        return s_out

    def _inputs(self, batch, s_out, t_out, t_stages, assigned, gt, classes) -> DistillInputs:
        """What the terms read of one step (the student's stages are taken from the taps, which are then cleared)."""
        s_head, t_head = detect_head(self.student_model), detect_head(self.teacher_model)
        inputs = DistillInputs(
            student=Side(list(s_out["feats"]), s_out, dict(self._student_feats), s_head, self.probe.student_reg_max),
            teacher=Side(list(t_out["feats"]), t_out, t_stages, t_head, self.probe.teacher_reg_max),
            batch=batch,
            progress=self.progress,
            assigned=assigned,
            cache={"ground_truth": gt} if gt is not None else {},
            strides=list(self.probe.strides),
            classes=classes,
        )
        self._student_feats.clear()
        return inputs

    def _terms(self, inputs: DistillInputs, det: torch.Tensor | None) -> torch.Tensor:
        """Each term's ``weight x factor x value`` (non-finite ones zeroed and counted), ``(n_terms,)`` float32.

        ``det`` is the step's detection loss per image, which the automatic weights measure (None: use the weights
        as they stand, measuring nothing, as on the unlabeled images).
        """
        factors = self.schedule_factors()
        raws: list[torch.Tensor | None] = []
        for spec, term, f in zip(self.kd_config.terms, self.terms, factors):
            # scheduled off, or a fixed weight of 0: skip the computation (DDP runs with find_unused_parameters=True)
            if f == 0 or (spec.balance == 0 and spec.weight == 0):
                raws.append(None)
                continue
            raws.append(term(inputs, self.projector[spec.name] if spec.name in self.projector else None))
        zero = inputs.student_feats[0].new_zeros(())
        weights: list = [s.weight for s in self.kd_config.terms]
        if self.balance is not None:  # automatic weights from the measured sizes (device tensors: no host sync)
            auto = self.balance.weights(det, raws) if det is not None else self.balance.current().to(zero.device)
            weights = [a if s.balance > 0 else w for s, a, w in zip(self.kd_config.terms, auto, weights)]
        values = [zero if r is None else w * f * r for r, w, f in zip(raws, weights, factors)]
        values = self._drop_nonfinite([v.float().reshape(()) for v in values])
        return torch.stack(values) if values else zero.float().reshape(0)

    def _detection_loss(self, batch: dict, preds) -> tuple[torch.Tensor, dict, Assigned | None, GroundTruth | None]:
        """The student's loss (its task's: detect, segment, pose, OBB), plus its TAL assignment and the ground truth.

        The assignment and ground truth are None unless a term sets ``needs_targets``; the ground truth is shared with
        the terms through `DistillInputs.cache`. The assignment is the one the loss itself made: it is recorded from
        the criterion's assigner during the one loss call (`yolokd.targets.recording_assignment`; the one-to-many
        branch of an end-to-end criterion such as YOLO26's ``E2ELoss``), so nothing is assigned twice.
        """
        student = self.student_model
        if getattr(student, "criterion", None) is None:
            student.criterion = student.init_criterion()
        if not self.needs_targets:
            det, items = student.loss(batch, preds)
            return det, items, None, None
        crit = getattr(student.criterion, "one2many", student.criterion)
        with recording_assignment(crit.assigner) as rec:
            det, items = student.loss(batch, preds)
        feats = head_outputs(preds)["feats"]
        strides = [float(s) for s in self.probe.strides]  # host numbers: no device read
        anchor_points, stride_tensor = make_anchors(feats, strides, 0.5)
        bboxes, rboxes = rec["bboxes"], None
        if bboxes.shape[-1] == 5:  # OBB: xywhr in pixels
            rboxes, bboxes = bboxes, rotated_to_anchor_frame(bboxes, anchor_points * stride_tensor)
        assigner = crit.assigner
        assigned = Assigned(
            fg_mask=rec["fg_mask"].bool(),
            target_gt_idx=rec["gt_idx"],
            target_bboxes=bboxes,
            anchor_points=anchor_points,
            stride_tensor=stride_tensor,
            target_labels=rec["labels"].long(),
            alpha=float(assigner.alpha),
            beta=float(assigner.beta),
            target_scores_sum=rec["scores_sum"],
            target_rboxes=rboxes,
        )
        return det, items, assigned, ground_truth(batch, tuple(batch["img"].shape[-2:]))

    def term_stats(self, reset: bool = False) -> dict[str, float]:
        """Term statistics (e.g. gate ratios) as ``<term name>/<stat>``, and the non-finite skip counts.

        Each term statistic is its mean since the terms' last reset (`Term.stats`): the epoch-end callback reads them
        with ``reset=True``, so TensorBoard gets epoch means. Reading copies a few numbers to the host, once.

        Args:
            reset (bool): Reset the terms' statistics after reading them (the skip counts are cumulative).

        Returns:
            (dict[str, float]): ``{"<term name>/<stat>": mean, "nonfinite/<term name>": count}``.
        """
        stats = {f"{s.name}/{k}": v for s, t in zip(self.kd_config.terms, self.terms) for k, v in t.stats.items()}
        stats.update({f"nonfinite/{k}": float(v) for k, v in self.flush_nonfinite().items()})
        if reset:
            for t in self.terms:
                t.reset_stats()
        return stats
