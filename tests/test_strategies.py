"""The random-network strategies draw every axis they list (``sim/strategies.py`` ``AXES``).

Each strategy is sampled a few hundred times (derandomised: the same networks on every machine) and
every value of every listed axis must occur in the networks themselves, read off the models (the
weight density from the generator's record in ``model.extra``). A
generator narrowed by a later edit (say, back to flat inputs only) fails here instead of silently
shrinking what the hardware tests can find.
"""

import pytest
from hypothesis import HealthCheck, given, settings

from spikeloom.hw.plan import Plan
from spikeloom.model import ir
from spikeloom.sim.strategies import AXES, axes_of, conv_nets, dense_nets

STRATEGIES = {"dense_nets": dense_nets, "conv_nets": conv_nets}
# the set-valued axes of a conv network (one value per conv layer)
PER_CONV = ("kernel", "stride", "padding", "pool", "shortcut")


def _sample(name, n):
    seen = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(STRATEGIES[name]())
    def draw(model):
        ir.validate(model)
        Plan(model, 3)  # the hardware takes it
        seen.append(axes_of(model))

    draw()
    return seen


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_listed_axis_value_is_drawn(name):
    seen = _sample(name, 400)
    missing = {}
    for axis, values in AXES[name].items():
        got = set()
        for s in seen:
            v = s.get(axis)
            got |= v if isinstance(v, set) else {v}
        lost = [v for v in values if v not in got]
        if lost:
            missing[axis] = lost
    assert not missing, f"{name} never drew {missing}"


def test_dense_first_layer_on_every_channel_count():
    # the blind spot of issue 18: a dense first layer over a (C, H, W) image with C = 1..4, and
    # with H != W
    seen = _sample("dense_nets", 400)
    images = [s for s in seen if s["input_form"] == "image"]
    assert {s["c_in"] for s in images} == {1, 2, 3, 4}
    assert any(not s["square"] and s["c_in"] > 1 for s in images)
