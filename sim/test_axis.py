"""The export's AXI4-Stream wrapper (``rtl/spikeloom_axis.v``) under Verilator: random tvalid and
tready, back-to-back frames, an early and a missing tlast, every result field against the golden
model, and no bubble between beats (:mod:`spikeloom.sim.tb_axis`)."""

import json

import pytest

from spikeloom.flows.export import AXIS, export
from spikeloom.model import modelfile
from spikeloom.model.randnet import random_inputs, random_model
from spikeloom.sim.testing import run_wrapper_bench

pytestmark = pytest.mark.cosim


def run_axis(tmp_path, model, n_pe, weights, width, n_images=6):
    path = modelfile.save(model, tmp_path / "model.slm")
    out = tmp_path / "export"
    export(path, n_pe, out, weights=weights, axis=True, axis_width=width, tb_images=1)
    x = random_inputs(model, n_images, seed=2)
    x[0] = 0
    work = tmp_path / "work"
    results, log = run_wrapper_bench(path, out, x, work, simulator="verilator", toplevel=AXIS, bench="tb_axis",
                                     seed=5, idle=0.3, backpressure=0.3, width=width)
    return results, json.loads((work / "throughput.json").read_text()), log


# one lane per beat with initialised weights; four lanes (the last beat of an image padded) with
# the weight frame streamed first
@pytest.mark.parametrize("weights,width,sizes", [("rom", 8, (16, 12, 4)), ("load", 32, (14, 12, 4))])
def test_axis_wrapper_matches_golden(tmp_path, weights, width, sizes):
    model = random_model(sizes, seed=7, weight_bits=8, exit_threshold=20, t_max=3)
    r, t, log = run_axis(tmp_path, model, 3, weights, width)
    assert r["results"] == r["expected"] == 6 + 3, (r, log[-3000:])
    assert not r["mismatches"] and not r["protocol_errors"], r
    assert r["frame_errors"] == r["malformed"] == 2
    assert r["cycles_compared"] == 5 and r["stalled_cycles"] > 0
    assert not t["problems"], t
    assert "FAIL=0" in log, log[-2000:]


def test_export_testbench_runs_under_verilator_binary(tmp_path):
    """The export README's Verilator command builds and runs the AXI4-Stream testbench: PASS, and
    exit status 0 (a flipped expected field: FAIL and a nonzero status)."""
    import os
    import subprocess

    from spikeloom.sim.runner import verilator_env

    model = random_model((14, 12, 4), seed=7, weight_bits=8, exit_threshold=20, t_max=3)
    out = tmp_path / "export"
    export(modelfile.save(model, tmp_path / "m.slm"), 3, out, weights="load", axis=True, axis_width=16, tb_images=4)
    name = f"{AXIS}_tb"
    env = {**os.environ, **verilator_env()}
    b = subprocess.run(["verilator", "--binary", "-Wno-fatal", "--top-module", name, "-f", "files.f", f"tb/{name}.v"],
                       cwd=out, capture_output=True, text=True, env=env, timeout=600)
    assert b.returncode == 0, (b.stdout + b.stderr)[-3000:]
    r = subprocess.run([f"obj_dir/V{name}"], cwd=out, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "PASS: 4 images" in r.stdout, (r.stdout + r.stderr)[-3000:]
    exp = out / "tb" / "expected.hex"
    lines = exp.read_text().split()
    lines[3] = f"{int(lines[3], 16) ^ 1:0{len(lines[3])}x}"  # bit 0: the class of image 3
    exp.write_text("\n".join(lines) + "\n")
    r = subprocess.run([f"obj_dir/V{name}"], cwd=out, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "FAIL: image 3: pred" in r.stdout, (r.stdout + r.stderr)[-3000:]
