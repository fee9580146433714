"""The generated Verilog passes `verilator --lint-only -Wall` with only the documented waivers."""

import subprocess
from dataclasses import replace

import numpy as np
import pytest

from spikeloom.hw.accel import generate
from spikeloom.model.randnet import random_model
from spikeloom.sim.runner import WAIVERS, verilator_env


def _one_word_weights():
    """Compressed storage of almost no weights: one weight word per PE (a memory that small must
    still have an address; hypothesis drew it)."""
    from spikeloom.model.randnet import random_model as rm
    model = rm((4, 2, 3), seed=0, density=0.3)
    w = np.zeros_like(model.layers[1].weight)
    w[1, 0], w[2, 0] = 2, -2
    return replace(model, layers=[replace(model.layers[0], weight=np.zeros_like(model.layers[0].weight)),
                                  replace(model.layers[1], weight=w)])


# PE counts, trace port on/off, weights initialised or loaded through i_weights; at N = 8 and 4 a
# layer with a packed tail (hw/plan.py), loaded at N = 4; one weight word per PE; PE queues
# (compressed, unbalanced), loaded at N = 4
@pytest.mark.parametrize("n_pe,trace,weights,storage", [(1, False, "rom", "auto"), (3, True, "rom", "auto"),
                                                        (8, False, "rom", "dense"), (3, False, "load", "auto"),
                                                        (4, False, "load", "dense"), (2, False, "rom", "tiny"),
                                                        (3, True, "rom", "sparse"), (4, False, "load", "sparse")])
def test_verilator_lint_wall(tmp_path, n_pe, trace, weights, storage):
    model = random_model((20, 13, 11, 5), seed=n_pe) if storage != "tiny" else _one_word_weights()
    generate(model, n_pe, tmp_path, trace=trace, weights=weights, storage="sparse" if storage == "tiny" else storage)
    if storage == "sparse":
        assert '"queued": true' in (tmp_path / "ports.json").read_text()
    env = {**__import__("os").environ, **verilator_env()}
    r = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", "spikeloom_accel", str(WAIVERS),
                        str(tmp_path / "spikeloom_accel.v")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "%Warning" not in r.stderr and "%Error" not in r.stderr, r.stderr[:3000]


# a dense net, a conv/pool/residual net with compressed storage, and compressed layers with PE queues
@pytest.mark.parametrize("conv", [False, True, "queued"])
def test_every_comb_block_runs_at_time_0(tmp_path, conv):
    """Every `always @*` block of the generated Verilog carries write_verilog's time-0 trigger:
    a block without it is not evaluated until an input changes, and a register that keeps its
    initial value then leaves the block's outputs X in an event-driven simulator (Icarus)."""
    import re

    from spikeloom.model.randnet import random_conv_model

    model = random_conv_model(seed=2, in_shape=(1, 4, 4), convs=((3, 3, 1, 1, 2, False), (3, 1, 1, 0, 1, True)),
                              density=0.3) if conv is True else random_model((20, 13, 11, 5), seed=1)
    generate(model, 3, tmp_path, storage="sparse" if conv == "queued" else "auto")
    assert ('"queued": true' in (tmp_path / "ports.json").read_text()) == (conv == "queued")
    text = (tmp_path / "spikeloom_accel.v").read_text()
    blocks = re.findall(r"always @\*( begin\n\s*if \(\\\$auto\$verilog_backend)?", text)
    assert blocks and all(b for b in blocks), f"{sum(not b for b in blocks)} always @* blocks without the trigger"


def test_verilator_opt_setting(monkeypatch):
    """The suite compiles at -O0 (conftest.py); a bad value is a one-line error naming the variable."""
    from spikeloom.model.errors import SpikeloomError
    from spikeloom.sim import runner

    assert runner.verilator_opt() == "-O0"
    monkeypatch.setenv(runner.OPT_ENV, "-O9")
    with pytest.raises(SpikeloomError, match="SPIKELOOM_VERILATOR_OPT='-O9'; allowed"):
        runner.verilator_opt()
