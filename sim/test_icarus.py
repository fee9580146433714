"""Co-simulation under the second simulator: the same cocotb scoreboard bench under Icarus Verilog.

Icarus 11 (Debian's) gets a copy of the generated Verilog whose time-0 always-block triggers fire
(:func:`spikeloom.sim.runner.icarus_source`); the bench, the golden model and the checks are the
Verilator tier's (:mod:`sim.test_cosim`).
"""

import numpy as np
import pytest

from spikeloom.model import golden
from spikeloom.model.randnet import random_model
from spikeloom.sim.runner import icarus_source

from .test_cosim import FLOOR_POOL_NETS, floor_pool_cosim, rgb_dense_model, run_config

# Icarus is a system tool the README's commands do not install (.ci/run does): without it these
# tests skip with the reason, except under CI=true, where they fail (sim/testing.py)
requires_icarus = pytest.mark.icarus
pytestmark = [pytest.mark.cosim, requires_icarus]


@pytest.mark.parametrize("n_pe,trace", [(1, False), (3, True)])  # one lane; lanes not dividing the layers + trace port
def test_icarus_random_network(tmp_path, n_pe, trace):
    model = random_model((20, 13, 11, 5), seed=n_pe, exit_threshold=20, t_max=4)
    r, x = run_config(tmp_path, model, n_pe, n_images=12, trace=trace, simulator="icarus")
    assert r["simulator"] == "icarus"
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]
    res = golden.run(model, x, sparse=())
    assert [i["pred"] for i in r["images"]] == res.pred.tolist()
    assert (np.array([i["cycles"] for i in r["images"]]) >= np.array([i["cycle_bound"] for i in r["images"]])).all()


# net: floor-mode pooling, see sim/test_cosim.py FLOOR_POOL_NETS (the 7x5 one under Verilator in make test)
@pytest.mark.parametrize("net", [pytest.param(n, marks=pytest.mark.slow) if n == "7x5_by_3_sum" else n
                                 for n in sorted(FLOOR_POOL_NETS)])
def test_icarus_floor_pooling(tmp_path, net):
    floor_pool_cosim(tmp_path, net, "icarus")


def test_icarus_dense_first_layer_on_an_rgb_image(tmp_path):
    """Issue 18's reproduction (a dense first layer over (3, 4, 4) inputs) under Icarus."""
    model = rgb_dense_model((3, 4, 4))
    r, x = run_config(tmp_path, model, 8, n_images=12, simulator="icarus")
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]


def test_icarus_weights_loaded_through_port(tmp_path):
    """The weight-load port (no initial weights: X until loaded under Icarus) then images."""
    model = random_model((20, 13, 11, 5), seed=4, exit_threshold=20, t_max=4)
    r, x = run_config(tmp_path, model, 3, n_images=8, simulator="icarus", weights="load")
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]


def test_icarus_injected_mismatch_is_caught(tmp_path):
    """A golden model with other weights: the Icarus run must report mismatches (the checker is live)."""
    model = random_model((16, 12, 4), seed=5, exit_threshold=1000, t_max=3)
    wrong = random_model((16, 12, 4), seed=6, exit_threshold=1000, t_max=3)
    r, _ = run_config(tmp_path, model, 2, n_images=6, simulator="icarus", golden_model=wrong)
    assert r["mismatched_images"] > 0


def test_icarus_source_fires_every_trigger(tmp_path):
    from spikeloom.hw.accel import generate

    generate(random_model((6, 5, 3), seed=1), 2, tmp_path)
    text = icarus_source(tmp_path / "spikeloom_accel.v", tmp_path / "b").read_text()
    decls = [line for line in text.splitlines() if line.lstrip().startswith("reg \\$auto$verilog_backend")]
    assert decls and not any("=" in line for line in decls)
    assert text.count("initial #0 ") == len(decls)
