# yolokd, AGPL-3.0 License
"""`KDModel`: the student's training loss with a frozen teacher, as its task's loss plus a stack of weighted terms.

It extends Ultralytics' `DistillationModel`, which freezes the teacher, leaves it out of the EMA and re-taps the
heads after deepcopy or pickle.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.distill_model import DistillationModel
from ultralytics.utils.torch_utils import copy_attr

from yolokd.balance import AutoBalance, effective_weights
from yolokd.config import KDConfig, KDError
from yolokd.losses import TERMS, DistillInputs, Side, Term
from yolokd.nonfinite import NonFiniteGuard, finite_student
from yolokd.pair import probe_pair, register_taps
from yolokd.pseudo import UnlabeledLoss
from yolokd.schedules import SCHEDULES, Progress
from yolokd.taps import HEAD, detect_head, head_outputs, model_task
from yolokd.targets import Assigned, GroundTruth, ground_truth, recorded_assignment, recording_assignment
from yolokd.teacher_runtime import TeacherRuntime


def check_tasks(terms: list[Term], names: list[str], task: str) -> None:
    """Raise a one-line `KDError` when a term cannot read this task's models (e.g. a mask term on a detector)."""
    for name, term in zip(names, terms):
        if task not in term.tasks:
            raise KDError(
                f"term '{name}' ({term.type}) distils {'/'.join(term.tasks)} models but the student is a '{task}' "
                f"model; leave it out of method= for this task"
            )


class KDModel(TeacherRuntime, NonFiniteGuard, UnlabeledLoss, DistillationModel):
    """Teacher + student + per-term adapters; ``loss(batch)`` returns detection plus weighted distillation losses.

    Attributes:
        teacher_model (nn.Module): Frozen teacher in eval mode, run under ``torch.inference_mode()``.
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
        """Build the terms, tap both heads, probe the shapes and create the adapters.

        Args:
            student (nn.Module): Student with a Detect head (detect, segment, pose or obb).
            teacher (nn.Module): Teacher of the same task, checked by the caller (`yolokd.teacher.check_pair`).
            config (KDConfig): Validated distillation configuration.
            imgsz (int): Dummy input size of the shape probe.
            teacher_classes (list[int], optional): The teacher class of each student class (`check_pair`); None for the
                identity.
        """
        nn.Module.__init__(self)  # not DistillationModel's: it reads student.args, taps the neck, builds a projector
        device = next(student.parameters()).device
        self._set_teacher(teacher, device, teacher_classes)
        self.student_model = student
        self.kd_config = config
        self.terms = nn.ModuleList(TERMS[s.type](**s.params) for s in config.terms)
        check_tasks(list(self.terms), [s.name for s in config.terms], model_task(student))
        self.stage_taps = sorted({tap for t in self.terms for tap in t.taps()})
        self.needs_targets = any(t.needs_targets for t in self.terms)
        # no term reads the teacher's head outputs or stages: its forward ends at the Detect inputs (the neck)
        self.teacher_to_neck = not self.stage_taps and not any(t.reads_teacher_head for t in self.terms)
        self.progress = Progress()
        self.catchup = 1.0  # `yolokd.schedules.catchup_factor`: fades distillation once the student nears the teacher
        self.catchup_first = None  # the student's first val score (`yolokd.schedules.outpaces`)
        self.nonfinite_skips: dict[str, int] = {}  # term name -> steps skipped because its value was NaN/Inf
        self._nonfinite: torch.Tensor | None = None  # the same, counted on the device since the last flush
        ratios = [s.balance for s in config.terms]  # terms with balance > 0 get automatic weights
        self.balance = AutoBalance(ratios) if any(r > 0 for r in ratios) else None
        # DistillationModel's attributes, which its pickling hooks read (tests/test_distill_model.py checks the names)
        self.feats_idx = self.teacher_feats_idx = [detect_head(student).i]
        self._teacher_feats: dict = {}
        self._student_feats: dict = {}
        self._teacher_hooks: list = []
        self._student_hooks: list = []
        self._register_feature_hooks()
        self.probe = probe_pair(student, self.teacher_model, self._student_feats, self._teacher_feats, imgsz)
        adapters = {spec.name: a for spec, t in zip(config.terms, self.terms) if (a := t.make_adapters(self.probe))}
        self.projector = nn.ModuleDict(adapters).to(device)
        copy_attr(self, student)

    def _register_feature_hooks(self) -> None:
        """Tap both heads (`yolokd.pair.register_taps`); unpickling and the trainer's checkpoints call it again."""
        self._remove_feature_hooks()
        stages = getattr(self, "stage_taps", [])
        self._student_hooks += register_taps(self.student_model, self._student_feats, stages)
        if self.teacher_model is not None:  # the EMA copy has no teacher
            to_neck = getattr(self, "teacher_to_neck", False)
            self._teacher_hooks += register_taps(self.teacher_model, self._teacher_feats, stages, to_neck)

    # ------------------------------------------------------------------ weights
    def term_weights(self, progress: Progress | None = None) -> dict[str, float]:
        """Each term's effective weight now (or at ``progress``): ``{term name: weight}`` (`effective_weights`)."""
        auto = self.balance.current().tolist() if self.balance is not None else None  # reading them syncs once
        weights = effective_weights(self.kd_config.terms, self.schedule_factors(progress), auto)
        return {s.name: w for s, w in zip(self.kd_config.terms, weights)}

    def schedule_factors(self, progress: Progress | None = None) -> list[float]:
        """Each term's ``distill_weight x catchup x schedule(progress)``: its weight's multiplier, 0 where it is off."""
        p = progress or self.progress
        dw = self.kd_config.distill_weight * getattr(self, "catchup", 1.0)
        return [dw * SCHEDULES[s.schedule](p) for s in self.kd_config.terms]

    def item_names(self) -> list[str]:
        """Loss-item names of the terms (``<name>_loss``), in order."""
        return [f"{s.name}_loss" for s in self.kd_config.terms]

    # ------------------------------------------------------------------ loss
    def loss(self, batch: dict, preds=None):
        """The student's detection loss plus the weighted terms (zeros in validation, where no term runs).

        With ``batch["unlabeled_img"]`` the student also learns from the teacher alone on those images.

        Returns:
            loss (torch.Tensor): ``cat[detection loss, term values (, unlabeled parts)] x batch size``.
            loss_items (dict[str, torch.Tensor]): Detached: the detection items, one per term (and `UNLABELED_ITEMS`).
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
        """The student's tapped head outputs, and stages (kept in the taps), whose gradients stay finite."""
        return finite_student(head_outputs(self._student_feats.pop(HEAD)), self._student_feats, img.device)

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
        """Each term's ``weight x factor x value`` (non-finite ones zeroed); ``det`` feeds the automatic weights."""
        factors = self.schedule_factors()
        raws: list[torch.Tensor | None] = []
        for spec, term, f in zip(self.kd_config.terms, self.terms, factors):
            # scheduled off, or a fixed weight of 0: skip the computation (DDP runs with find_unused_parameters=True)
            if f == 0 or (spec.balance == 0 and spec.weight == 0):
                raws.append(None)
                continue
            raws.append(term(inputs, self.projector[spec.name] if spec.name in self.projector else None))
        zero = inputs.student_feats[0].new_zeros(())
        auto = None
        if self.balance is not None:  # automatic weights from the measured sizes (device tensors: no host sync)
            auto = self.balance.weights(det, raws) if det is not None else self.balance.current().to(zero.device)
        weights = effective_weights(self.kd_config.terms, factors, auto)
        values = [zero if r is None else w * r for r, w in zip(raws, weights)]
        values = self._drop_nonfinite([v.float().reshape(()) for v in values])
        return torch.stack(values) if values else zero.float().reshape(0)

    def _detection_loss(self, batch: dict, preds) -> tuple[torch.Tensor, dict, Assigned | None, GroundTruth | None]:
        """The student's task loss, with its TAL assignment and the ground truth when a term needs them."""
        student = self.student_model
        if getattr(student, "criterion", None) is None:
            student.criterion = student.init_criterion()
        if not self.needs_targets:
            det, items = student.loss(batch, preds)
            return det, items, None, None
        crit = getattr(student.criterion, "one2many", student.criterion)
        with recording_assignment(crit.assigner) as rec:
            det, items = student.loss(batch, preds)
        assigned = recorded_assignment(rec, head_outputs(preds)["feats"], self.probe.strides, crit.assigner)
        return det, items, assigned, ground_truth(batch, tuple(batch["img"].shape[-2:]))

    def term_stats(self, reset: bool = False) -> dict[str, float]:
        """``{"<term>/<stat>": mean since the last reset, "nonfinite/<term>": skips}``, in one host read."""
        stats = {f"{s.name}/{k}": v for s, t in zip(self.kd_config.terms, self.terms) for k, v in t.stats.items()}
        stats.update({f"nonfinite/{k}": float(v) for k, v in self.flush_nonfinite().items()})
        if reset:
            for t in self.terms:
                t.reset_stats()
        return stats
