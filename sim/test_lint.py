"""The generated Verilog passes `verilator --lint-only -Wall` with only the documented waivers."""

import subprocess

import pytest

from spikeloom.hw.accel import generate
from spikeloom.model.randnet import random_model
from spikeloom.sim.runner import WAIVERS, verilator_env


@pytest.mark.parametrize("n_pe,trace", [(1, False), (3, True), (8, False)])  # PE counts, trace port on/off
def test_verilator_lint_wall(tmp_path, n_pe, trace):
    model = random_model((20, 13, 11, 5), seed=n_pe)
    generate(model, n_pe, tmp_path, trace=trace)
    env = {**__import__("os").environ, **verilator_env()}
    r = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", "spikeloom_accel", str(WAIVERS),
                        str(tmp_path / "spikeloom_accel.v")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "%Warning" not in r.stderr and "%Error" not in r.stderr, r.stderr[:3000]
