"""ATSNN time-dependent loss schedules and the TET / final-output baselines."""

import pytest
import torch

from spikeloom.model.errors import ConfigError
from spikeloom.model.losses import SCHEDULES, TimeLoss


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
