"""``make bench``'s verification section and co-simulation profile (flows/bench.py) on small networks:
every figure measured, 0 mismatches, the RTL's cycles equal to the cycle model's without idle input."""

import json

import pytest

from spikeloom.flows import bench
from spikeloom.model.randnet import random_conv_model, random_inputs, random_model

pytestmark = pytest.mark.cosim


@pytest.mark.slow  # a benchmark flow: generate, build and two co-simulations
def test_verification_rows(tmp_path):
    conv = random_conv_model(seed=3)
    nets = [("conv", conv, random_inputs(conv, 6, seed=2), 4)]
    rows = bench.verification(tmp_path, nets, "verilator", log=lambda *_: None)
    assert [r["net"] for r in rows] == ["conv"]
    for r, (_, model, x, n_exact) in zip(rows, nets):
        assert r["images"] == len(x) and r["cycles_equal_cycle_model"] == n_exact and r["mismatches"] == 0
        for k in ("golden_images_per_s", "cycle_model_cycles_per_s", "generate_s", "build_s", "cosim_cycles_per_s",
                  "cosim_images_per_s", "verilog_bytes"):
            assert r[k] > 0, k
    report = {"simulator": "verilator", "verification": rows,
              "sweep": [{"n_pe": 8, "verilog_bytes": rows[0]["verilog_bytes"], "sim_cycles_per_s": 1e6}]}
    bench.plot_verification(json.loads(json.dumps(report)), tmp_path / "v.png")
    assert (tmp_path / "v.png").stat().st_size > 10_000


@pytest.mark.slow  # six Verilator builds
def test_cosim_profile_variants(tmp_path):
    model = random_model((20, 13, 5), seed=2, exit_threshold=20, t_max=4)
    rows = bench.cosim_profile(tmp_path, model, random_inputs(model, 30, seed=1), pes=3, log=lambda *_: None)
    assert [r["variant"] for r in rows] == [v[0] for v in bench.PROFILE_VARIANTS]
    assert all(r["sim_cycles"] > 0 and r["build_s"] > 0 for r in rows)
    assert rows[0]["free_running_s"] is None and all(r["free_running_s"] > 0 for r in rows[1:])
