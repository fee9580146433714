"""``spikeloom golden MODEL --input x.npy --counters --pes N`` (or ``--ports ports.json``) prints the
counters the RTL reports, compressed (sparse) weight storage included, layer by layer and image by
image (the RTL under Amaranth's simulator, ``hw/simulate.py``)."""

import json

import numpy as np
import pytest

from spikeloom.flows import cli, steps
from spikeloom.hw.plan import Plan
from spikeloom.hw.simulate import rtl_run
from spikeloom.model import golden, modelfile
from spikeloom.model.randnet import random_conv_model, random_inputs, random_model


def golden_cli(capsys, *args):
    capsys.readouterr()
    assert cli.main(["golden", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def rtl_counters(model, out, n_images):
    """The RTL's counters in the CLI's layout: {layer: {counter: [per image]}}."""
    return {ly.name: {k: [int(r[f"{ly.name}.{k}"]) for r in out] for k in golden.COUNTERS} for ly in model.layers}


# model: a pruned MLP whose first layer stays dense at N = 4 and whose others are compressed; a pruned
# conv net (padding, stride, pooling, a residual shortcut) with every layer compressed at N = 3
@pytest.mark.parametrize("model, n_pe, sparse", [
    (random_model((14, 11, 9, 4), seed=2, density=0.4), 4, ("fc2", "fc3")),
    (random_conv_model(seed=4, density=0.35, hidden=(7,)), 3, ("conv1", "conv2", "fc1", "fc")),
])
def test_golden_counters_equal_the_rtl(tmp_path, capsys, model, n_pe, sparse):
    path = modelfile.save(model, tmp_path / "m.slm")
    x = random_inputs(model, 4, seed=5)
    np.save(tmp_path / "x.npy", x)
    assert tuple(Plan(model, n_pe).sparse_layers) == sparse  # the case this test is about: compressed layers
    rtl = rtl_counters(model, rtl_run(model, n_pe, x, seed=1), len(x))

    by_pes = golden_cli(capsys, path, "--input", tmp_path / "x.npy", "--counters", "--pes", n_pe)
    assert by_pes["counters"] == rtl
    assert by_pes["storage"]["n_pe"] == n_pe
    assert by_pes["storage"]["layers"] == {ly.name: "sparse" if ly.name in sparse else "dense" for ly in model.layers}
    assert [r["pred"] for r in by_pes["results"]] == [int(v) for v in golden.run(model, x, sparse=sparse).pred]

    assert cli.main(["generate", str(path), "--pes", str(n_pe), "-o", str(tmp_path / "gen")]) == 0
    by_ports = golden_cli(capsys, path, "--input", tmp_path / "x.npy", "--counters",
                          "--ports", tmp_path / "gen" / "ports.json")
    assert by_ports["counters"] == rtl
    assert by_ports["storage"]["layers"] == by_pes["storage"]["layers"]

    # without either option the counters are dense-storage counts, and say so: they differ from the RTL's
    dense = golden_cli(capsys, path, "--input", tmp_path / "x.npy", "--counters")
    assert set(dense["storage"]["layers"].values()) == {"dense"} and dense["storage"]["n_pe"] is None
    assert dense["counters"] != rtl
    assert {ln: {k: v for k, v in cs.items() if k != "weight_reads"} for ln, cs in dense["counters"].items()} \
        == {ln: {k: v for k, v in cs.items() if k != "weight_reads"} for ln, cs in rtl.items()}


def test_report_counters_use_the_generators_storage():
    """``step_evaluate``'s storage (report.json's model counters) is the plan's, as the RTL counts."""
    model = random_model((14, 11, 9, 4), seed=2, density=0.4)
    x = random_inputs(model, 3, seed=5)
    st = steps.weight_storage(model, 4)
    assert st["sparse_layers"] == ["fc2", "fc3"] and st["n_pe"] == 4
    res = golden.run(model, x, sparse=st["sparse_layers"])
    rtl = rtl_counters(model, rtl_run(model, 4, x, seed=2), len(x))
    assert {ln: {k: v.tolist() for k, v in cs.items()} for ln, cs in res.counters().items()} == rtl
    assert steps.weight_storage(model)["sparse_layers"] == []


def test_run_needs_the_storage():
    model = random_model((6, 5, 3), seed=1)
    x = random_inputs(model, 2)
    with pytest.raises(TypeError, match="sparse"):
        golden.run(model, x)
    with pytest.raises(TypeError, match="string"):
        golden.run(model, x, sparse="fc1")
    assert golden.run(model, x, sparse=["fc2"]).storage() == {"fc1": "dense", "fc2": "sparse"}
