"""Exit criteria and threshold calibration."""

import numpy as np
import pytest

from spikeloom.model import exit_criteria as ee
from spikeloom.model.errors import ConfigError


def _z():
    # 3 timesteps, 4 samples, 3 classes: sample 3 is wrong at t=1 but right later
    z = np.array([[[9, 1, 0], [0, 2, 1], [5, 4, 0], [1, 3, 0]],
                  [[18, 2, 0], [0, 6, 1], [9, 9, 1], [6, 4, 0]],
                  [[27, 3, 0], [0, 9, 2], [15, 10, 1], [12, 5, 0]]])
    y = np.array([0, 1, 0, 0])
    return z, y


def test_confidence_ranges():
    z = np.random.default_rng(0).normal(size=(5, 7))
    for crit in ("max_softmax", "entropy"):
        c = ee.confidence(z, crit)
        assert ((c >= 0) & (c <= 1)).all()
    assert (ee.confidence(np.ones((2, 4)), "entropy") < 1e-12).all()
    with pytest.raises(ConfigError, match="criterion"):
        ee.confidence(z, "oracle")


def test_calibrate_picks_smallest_feasible_threshold():
    z, y = _z()
    th = ee.calibrate(z, y, 0.0)
    acc, tm, steps = ee.evaluate(z, y, th)
    assert acc == 1.0
    # margins at t=1: [8, 1, 1, 2]; sample 3 must not exit at t=1 (margin 2): the smallest such
    # threshold is 3 (every threshold in (2, 5] behaves the same on these images, the next margin
    # seen being 5; the smallest exits most elsewhere)
    assert th == 3 and steps.tolist() == [1, 2, 3, 3]
    assert ee.evaluate(z, y, 5)[2].tolist() == steps.tolist()
    # the next smaller candidate loses accuracy
    assert ee.evaluate(z, y, 2)[0] < 1.0


def test_calibrate_changes_no_decision_that_running_all_timesteps_makes():
    """An image an early exit loses is not paid for by one it gets right by chance: sample 0 is right
    at t=1 but wrong at T, sample 1 the other way round, both with margin 3 at t=1. Exiting at
    theta <= 3 keeps the accuracy (1 of 2) but changes both decisions; the threshold is above 3."""
    z = np.array([[[4, 1, 0], [1, 4, 0]],
                  [[4, 9, 0], [9, 4, 0]]])
    y = np.array([0, 0])
    assert ee.evaluate(z, y, 3)[0] == ee.evaluate(z, y, 10)[0] == 0.5
    th = ee.calibrate(z, y, 0.0)
    assert th > 3 and ee.evaluate(z, y, th)[2].tolist() == [2, 2]
    assert ee.calibrate(z, None, 0.0) == th  # no labels needed
    assert th == 4 and ee.calibrate(z, y, 0.5) == 4  # one changed decision in two allowed: still not both
    assert ee.calibrate(z, y, 0.0, "max_softmax") > max(ee.confidence(z[0], "max_softmax"))


def test_sweep_monotone_in_timesteps():
    z, y = _z()
    rows = ee.sweep(z, y)
    tms = [r[2] for r in rows]
    assert tms == sorted(tms) and tms[-1] == 3.0
