# yolokd, AGPL-3.0 License
"""Hyper-parameter tuning of a distillation run: every trial trains with yolokd's trainer, teacher and method.

`KDTuner` keeps Ultralytics' `Tuner` loop and bookkeeping, but runs its trials in-process with the KD trainer.
Searchable KD keys: ``distill_weight``, ``balance`` and ``term_weights.<term name>``; the default space adds
`KD_SPACE` to Ultralytics'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ultralytics.engine.tuner import Tuner

from yolokd.config import PREFIX, TERM_WEIGHT, KDError, build_config, split_kd_args

# the distillation part of the default search space: (min, max) as in Ultralytics' Tuner spaces
KD_SPACE: dict[str, tuple[float, float]] = {"distill_weight": (0.25, 4.0), "balance": (0.05, 1.0)}


def searchable_defaults(kd_args: dict[str, Any], keys: list[str]) -> dict[str, float]:
    """The starting value of each searchable distillation key in ``keys``: the run's, else the method's.

    Examples:
        >>> searchable_defaults({"method": "cwd"}, ["lr0", "distill_weight", "balance", "term_weights.cwd"])
        {'distill_weight': 1.0, 'balance': 0.25, 'term_weights.cwd': 5.0}
    """
    config = build_config({**kd_args, "teacher": None})
    terms = {t.name: t for t in config.terms}
    out: dict[str, float] = {}
    for key in keys:
        if key == "distill_weight":
            out[key] = config.distill_weight
        elif key == "balance":
            out[key] = config.balance if config.balance is not None else max(t.balance for t in terms.values())
        elif key.startswith(TERM_WEIGHT):
            name = key[len(TERM_WEIGHT) :]
            if name not in terms:
                raise KDError(
                    f"search space key '{key}' names no term of method '{config.method}'; its terms are "
                    f"{sorted(terms)} (e.g. '{TERM_WEIGHT}{next(iter(terms))}')"
                )
            out[key] = terms[name].weight
    return out


@contextlib.contextmanager
def kd_trials(trainer: type, callbacks: dict | None) -> Iterator[None]:
    """Inside the block, the trials Ultralytics' `Tuner` builds run in-process with ``trainer`` (a KD trainer).

    Swaps ``ultralytics.engine.trainer.MultiTrainer`` for the loop's duration (restored on exit).
    """
    import ultralytics.engine.trainer as engine

    plain = engine.MultiTrainer

    class KDMultiTrainer(plain):
        """Ultralytics' `MultiTrainer` whose runs train in this process with the KD trainer."""

        def __init__(self, trainer_cls, args, model, _callbacks=None):
            super().__init__(trainer_cls or trainer, args, model, _callbacks=_callbacks or callbacks)

    engine.MultiTrainer = KDMultiTrainer
    try:
        yield
    finally:
        engine.MultiTrainer = plain


class KDTuner(Tuner):
    """Ultralytics' `Tuner` whose trials distil: the KD keys travel with every trial and can be searched.

    Args:
        args (dict): Ultralytics tuning arguments plus the KD keys (``teacher`` is required) and ``space``.
        trainer (type): The KD trainer of the model's task.
        _callbacks (dict, optional): Callbacks, passed to every trial's trainer too.
        model (nn.Module, optional): The student whose weights seed each trial.
    """

    def __init__(self, args: dict, trainer: type, _callbacks: dict | None = None, *, model=None):
        """Split the KD keys off, build Ultralytics' tuner, then carry the KD keys on its arguments."""
        kd_args, args = split_kd_args(dict(args))
        if not kd_args.get("teacher"):
            raise KDError("tune() needs a teacher: pass teacher=path/to/teacher.pt to YOLOKD(...) or to tune()")
        user_space = args.get("space")
        super().__init__(args, _callbacks, model=model)
        if not user_space:
            self.space = {**self.space, **KD_SPACE}
        # vars(self.args) is what each trial is trained with, and its values of the space keys start the search
        for k, v in {**kd_args, **searchable_defaults(kd_args, list(self.space))}.items():
            setattr(self.args, k, v)
        self.trainer = trainer
        kd = ", ".join(k for k in self.space if k in KD_SPACE or k.startswith(TERM_WEIGHT)) or "none"
        from ultralytics.utils import LOGGER

        LOGGER.info(f"{PREFIX}every trial distils from {kd_args['teacher']}; distillation keys searched: {kd}")

    def __call__(self, iterations: int = 300, cleanup: bool = True):
        """Ultralytics' tuning loop, with every trial trained by the KD trainer (`kd_trials`)."""
        with kd_trials(self.trainer, self.callbacks):
            return super().__call__(iterations=iterations, cleanup=cleanup)
