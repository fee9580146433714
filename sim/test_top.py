"""The export's pin-level wrapper (``rtl/spikeloom_top.v``) under Icarus: weights through the input
stream (``--weights load``) or initialised (``rom``), images, and every result byte read through
``res_byte_sel``/``res_byte`` and checked against the golden model (:mod:`spikeloom.sim.tb_top`)."""


import pytest

from spikeloom.flows.export import TOP, export
from spikeloom.model import modelfile
from spikeloom.model.randnet import random_inputs, random_model
from spikeloom.sim.testing import run_wrapper_bench

pytestmark = [pytest.mark.cosim, pytest.mark.icarus]


def run_top(tmp_path, model, n_pe, weights, n_images=6, weights_from=None):
    path = modelfile.save(model, tmp_path / "model.slm")
    out = tmp_path / "export"
    export(path, n_pe, out, weights=weights)
    if weights_from is not None:  # the wrapper gets another network's weight words
        other = tmp_path / "other"
        export(modelfile.save(weights_from, tmp_path / "other.slm"), n_pe, other, weights=weights)
        for f in (other / "mem").glob("pe_*_weight.hex"):
            (out / "mem" / f.name).write_text(f.read_text())
    x = random_inputs(model, n_images, seed=2)
    x[0] = 0
    results, _ = run_wrapper_bench(path, out, x, tmp_path / "work", simulator="icarus", toplevel=TOP,
                                   bench="tb_top")
    return results


# weights: streamed through the wrapper's input stream after reset, or initialised in the Verilog
@pytest.mark.parametrize("weights", ["load", "rom"])
def test_wrapper_matches_golden(tmp_path, weights):
    model = random_model((16, 12, 4), seed=7, weight_bits=8, exit_threshold=20, t_max=3)
    r = run_top(tmp_path, model, 3, weights)
    assert r["n_images"] == 6
    assert r["mismatched_images"] == 0, r["mismatches"][:5]
    assert (r["weight_words"] > 0) == (weights == "load")


def test_wrapper_loads_the_streamed_weights(tmp_path):
    """Another network's weight words through the input stream: the results must differ."""
    model = random_model((16, 12, 4), seed=7, weight_bits=8, exit_threshold=20, t_max=3)
    other = random_model((16, 12, 4), seed=8, weight_bits=8, exit_threshold=20, t_max=3)
    r = run_top(tmp_path, model, 3, "load", weights_from=other)
    assert r["mismatched_images"] > 0
