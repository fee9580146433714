"""ATSNN time-dependent loss schedules and the TET / final-output baselines."""

import pytest
import torch

from spikeloom.model.errors import ConfigError
from spikeloom.model.losses import SCHEDULES, DistillLoss, TimeLoss


@pytest.mark.parametrize("schedule", ["uniform", "early", "late", "learnable", "final"])
def test_weights_sum_to_one(schedule):
    w = TimeLoss(schedule, 5).weights()
    assert torch.isclose(w.sum(), torch.tensor(1.0)) and (w >= 0).all()


def test_schedule_shapes():
    assert TimeLoss("early", 4).weights().tolist() == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert TimeLoss("late", 4).weights().tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert TimeLoss("final", 3).weights().tolist() == [0.0, 0.0, 1.0]


def test_final_equals_ce_on_mean_output():
    z = torch.randn(3, 5, 4).cumsum(0)
    y = torch.randint(0, 4, (5,))
    assert torch.isclose(TimeLoss("final", 3)(z, y), torch.nn.functional.cross_entropy(z[-1] / 3, y))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_loss_backpropagates(schedule):
    z = torch.randn(4, 6, 3, requires_grad=True)
    loss = TimeLoss(schedule, 4)
    loss(z.cumsum(0), torch.randint(0, 3, (6,))).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    if schedule == "learnable":
        assert loss.logits.grad is not None


def test_unknown_schedule():
    with pytest.raises(ConfigError, match="loss"):
        TimeLoss("sometimes")


def test_distillation_is_the_base_loss_at_alpha_zero_and_pulls_every_timestep_to_the_teacher():
    torch.manual_seed(0)
    base = TimeLoss("early", 4)
    z = torch.randn(4, 6, 3).cumsum(0)
    y = torch.randint(0, 3, (6,))
    soft = torch.randn(6, 3)
    assert torch.isclose(DistillLoss(base, 0.0)(z, y, soft), base(z, y))
    # a student whose mean output z_t / t equals the teacher's at every t has zero distillation term
    t = torch.arange(1, 5, dtype=torch.float32).view(4, 1, 1)
    assert torch.isclose(DistillLoss(base, 1.0)(soft.expand(4, 6, 3) * t, y, soft), torch.tensor(0.0), atol=1e-6)
    # its gradient moves an early timestep's output towards the teacher's answer
    zz = torch.zeros(4, 6, 3, requires_grad=True)
    DistillLoss(base, 1.0)(zz.cumsum(0), y, soft).backward()
    assert (zz.grad[0].argmin(-1) == soft.argmax(-1)).all()


@pytest.mark.parametrize("kw", [{"alpha": 1.5}, {"alpha": -0.1}, {"tau": 0.0}])
def test_distillation_rejects_bad_settings(kw):
    with pytest.raises(ConfigError, match="distill"):
        DistillLoss(TimeLoss("early", 4), **kw)
