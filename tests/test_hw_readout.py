"""The spike-count readout (SEMANTICS.md, "Spike-count readout") on the generated accelerator.

A count readout is a spiking class layer followed by the identity integrator of
``ir.count_readout``: the hardware runs it as any other network, so RTL == golden == cycle model
must hold with no special case anywhere, and the early exit acts on spike counts.
"""

import numpy as np
import pytest

from spikeloom.hw import perf
from spikeloom.hw.plan import Plan
from spikeloom.hw.simulate import rtl_run
from spikeloom.model import golden
from spikeloom.model.randnet import random_conv_model, random_inputs, random_model
from spikeloom.sim import records


def _check(model, n_pe, x, storage):
    plan = Plan(model, n_pe, storage)
    g = golden.run(model, x, trace=True, sparse=plan.sparse_layers)
    got = rtl_run(model, n_pe, x, idle=0.0, backpressure=0.0, storage=storage)
    cyc = [perf.cycles(model, n_pe, x[b], g, b, plan=plan) for b in range(len(x))]
    diff = records.field_mismatches(records.from_golden(g, cyc), got)
    assert not diff, "\n".join(diff)
    return g


# n_pe: 3 = class layer split over chunks with padding lanes; 8 = more lanes than classes
@pytest.mark.parametrize("n_pe", [3, 8])
# storage: the 2-bit identity weights dense, or compressed (one stored weight per row)
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_count_readout_dense_net(n_pe, storage):
    model = random_model((16, 12, 5), seed=5, readout="count", t_max=6, exit_threshold=1)
    assert model.readout == "count"
    x = random_inputs(model, 8, seed=3)
    g = _check(model, n_pe, x, storage)
    counts = np.cumsum(g.spikes[model.layers[-2].name], axis=0)
    assert (g.z == counts).all()
    assert (g.exit_t < model.t_max).any()  # the margin of the counts exits early


def test_count_readout_conv_net():
    model = random_conv_model(seed=4, readout="count", t_max=4, exit_threshold=1)
    # two of the four images, the cost of Amaranth's simulator being per timestep: one runs to T_max,
    # one exits after the first timestep (the two left out ran to T_max as well)
    x = random_inputs(model, 4, seed=5)[2:]
    g = _check(model, 4, x, "auto")
    assert g.exit_t.tolist() == [model.t_max, 1]
