"""The export's pin-level wrapper (``rtl/spikeloom_top.v``) under Icarus: weights through the input
stream (``--weights load``) or initialised (``rom``), images, and every result byte read through
``res_byte_sel``/``res_byte`` and checked against the golden model (:mod:`spikeloom.sim.tb_top`)."""

import json

import numpy as np
import pytest

from spikeloom.flows.export import TOP, export
from spikeloom.model import modelfile
from spikeloom.model.randnet import random_inputs, random_model
from spikeloom.sim.runner import build

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
    work = tmp_path / "work"
    work.mkdir()
    np.save(work / "inputs.npy", x)
    job = {"model": str(path.resolve()), "ports": str((out / "ports.json").resolve()),
           "inputs": str((work / "inputs.npy").resolve()), "results": str((work / "results.json").resolve())}
    (work / "job.json").write_text(json.dumps(job))
    runner = build(out / "rtl" / "spikeloom_accel.v", work / "sim_build", "icarus", toplevel=TOP,
                   extra_sources=[out / "rtl" / f"{TOP}.v"])
    try:
        runner.test(test_module="spikeloom.sim.tb_top", hdl_toplevel=TOP, test_dir=work.resolve(),
                    extra_env={"SPIKELOOM_JOB": str((work / "job.json").resolve())},
                    results_xml=str((work / "results.xml").resolve()), log_file=(work / "sim.log").resolve())
    except SystemExit:
        pass
    return json.loads((work / "results.json").read_text())


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
