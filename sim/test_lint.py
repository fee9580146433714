"""The generated Verilog passes `verilator --lint-only -Wall` with only the documented waivers."""

import subprocess

import pytest

from spikeloom.hw.accel import generate
from spikeloom.model.randnet import random_model
from spikeloom.sim.runner import WAIVERS, verilator_env


# PE counts, trace port on/off, weights initialised or loaded through i_weights
@pytest.mark.parametrize("n_pe,trace,weights", [(1, False, "rom"), (3, True, "rom"), (8, False, "rom"),
                                                (3, False, "load")])
def test_verilator_lint_wall(tmp_path, n_pe, trace, weights):
    model = random_model((20, 13, 11, 5), seed=n_pe)
    generate(model, n_pe, tmp_path, trace=trace, weights=weights)
    env = {**__import__("os").environ, **verilator_env()}
    r = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", "spikeloom_accel", str(WAIVERS),
                        str(tmp_path / "spikeloom_accel.v")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "%Warning" not in r.stderr and "%Error" not in r.stderr, r.stderr[:3000]
