# yolokd, AGPL-3.0 License
"""The CWD term: a sum over neck levels of ``kdf.cwd``, optionally on per-channel standardised maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import np_log_softmax, np_standardise
from torch import nn

from yolokd.config import resolve_method
from yolokd.losses import DistillInputs, Side
from yolokd.losses.cwd import CWD

pytestmark = pytest.mark.usefixtures("seeded")


def _inputs(s_feats, t_feats) -> DistillInputs:
    """A hand-built `DistillInputs` with neck features only (all CWD reads)."""
    return DistillInputs(student=Side(list(s_feats), {}), teacher=Side(list(t_feats), {}), batch={})


def _np_cwd(s: np.ndarray, t: np.ndarray, tau: float) -> float:
    """tau^2 / (N C) x the KL of the teacher's spatial softmax from the student's, float64 numpy."""
    n, c = s.shape[:2]
    log_ps, log_pt = (np_log_softmax(x.reshape(n, c, -1) / tau) for x in (s, t))
    return float(tau**2 / (n * c) * (np.exp(log_pt) * (log_pt - log_ps)).sum())


@pytest.mark.parametrize("standardise", [False, True])
def test_cwd_term_sums_levels_hand_computed(standardise: bool) -> None:
    rng = np.random.default_rng(0)
    levels = [(rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4)) * 5) for _ in range(2)]
    prep = np_standardise if standardise else (lambda x: x)
    expected = sum(_np_cwd(prep(s), prep(t), 2.0) for s, t in levels)
    got = CWD(tau=2.0, standardise=standardise)(
        _inputs([torch.tensor(s) for s, _ in levels], [torch.tensor(t) for _, t in levels]),
        nn.ModuleList([nn.Identity(), nn.Identity()]),
    )
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_cwd_standardise_makes_the_loss_blind_to_the_teachers_scale() -> None:
    s, t = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    ident = nn.ModuleList([nn.Identity()])
    std_term, raw_term = CWD(standardise=True), CWD()
    base = float(std_term(_inputs([s], [t]), ident))
    assert float(std_term(_inputs([s], [t * 20.0 - 1.0]), ident)) == pytest.approx(base, rel=1e-5)
    assert float(raw_term(_inputs([s], [t * 20.0]), ident)) > 2 * float(raw_term(_inputs([s], [t]), ident))  # not blind


def test_cwd_yaml_keeps_the_papers_form_by_default() -> None:
    (term,) = resolve_method("cwd")
    assert term.params == {"tau": 1.0} and CWD(**term.params).standardise is False
