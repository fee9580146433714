"""Networks trained in snnTorch 1.0 (tests/snntorch_nets.py: a digits MLP and a conv net with
average pooling, beta = 0.9, snnTorch's default reset), exported with snnTorch's own NIR export and
imported with `spikeloom import --dataset digits`: the integer golden model's test accuracy is
within 0.5 point of snnTorch's float accuracy, and the imported model co-simulates with 0
mismatches. The graphs in tests/data are what `python tests/snntorch_nets.py` writes; the slow test
trains and exports afresh."""

import numpy as np
import pytest

import snntorch_nets as nets
from spikeloom.flows.cli import main
from spikeloom.hw.accel import generate
from spikeloom.model import golden, modelfile, nir_import, nir_sim
from spikeloom.model.data import load_dataset
from spikeloom.sim.runner import cosim

#: snnTorch's Leaky: reset by subtraction at the next step; NIR cannot say it, so the import is told.
#: The digits carry 17 grey levels: 4-bit inputs (the pipeline's default) hold them. The 16-bit
#: membranes then keep the MLP's first layer 45 of 127 weight levels (the import notes it); 8-bit
#: inputs would leave the conv net's 6 (README, "Bring your own network").
IMPORT = ["--dt", "1e-4", "--reset", "subtract_next", "--t-max", str(nets.T), "--input-bits", "4",
          "--dataset", "digits"]


@pytest.fixture(scope="module")
def split():
    return load_dataset("digits")


def _import(graph_path, out, *extra):
    assert main(["import", str(graph_path), "-o", str(out), *IMPORT, *extra]) == 0
    return modelfile.load(out)


@pytest.fixture(scope="module", params=["mlp", "conv"])
def imported(request, split, tmp_path_factory):
    kind = request.param
    net = nets.load(kind)
    acc_float, pred_float = nets.accuracy(net, split)
    model = _import(nets.DATA / f"snntorch_{kind}.nir", tmp_path_factory.mktemp(kind) / "m.slm")
    return kind, net, acc_float, pred_float, model


def _golden_accuracy(model, split):
    g = golden.run(model, golden.quantize_input(model, split.test.x), sparse=())
    return float((g.fixed_pred() == split.test.y).mean()), float((g.pred == split.test.y).mean()), g


def test_golden_accuracy_within_half_a_point_of_snntorch(imported, split):
    kind, _, acc_float, _, model = imported
    acc_fixed, acc_adaptive, g = _golden_accuracy(model, split)
    print(f"{kind}: snnTorch float {100 * acc_float:.2f}%, golden at T = {model.t_max} {100 * acc_fixed:.2f}%, "
          f"with early exit {100 * acc_adaptive:.2f}% at {g.exit_t.mean():.2f} mean timesteps")
    assert acc_float > 0.85
    assert abs(acc_fixed - acc_float) <= 0.005
    # the exit threshold (calibrated on the validation split) costs at most a point here
    assert acc_adaptive >= acc_fixed - 0.01 and g.exit_t.mean() < model.t_max


def test_float_simulation_of_the_graph_is_snntorch(imported, split):
    # the NIR graph's float64 simulation (what the importer calibrates on) decides as snnTorch does
    kind, _, _, pred_float, _ = imported
    graph = nir_import.read(nets.DATA / f"snntorch_{kind}.nir")
    x = split.test.x.reshape((-1, 1, 8, 8))
    pred = nir_sim.simulate(nir_import.chain(graph), x, 1e-4, nets.T, "subtract_next").pred()
    assert (pred == pred_float).mean() >= 0.99


def test_imported_snntorch_network_cosimulates(imported, split, tmp_path):
    """The imported network's Verilog under Verilator (input idles, result back-pressure): every
    image's class, exit timestep and activity counters equal the golden model's."""
    kind, _, _, _, model = imported
    x = golden.quantize_input(model, split.test.x[:40])   # compiling dominates: 40 images cost seconds
    path = modelfile.save(model, tmp_path / "model.slm")
    generate(model, 8, tmp_path / "rtl")
    r = cosim(path, tmp_path / "rtl", x, tmp_path / "work", seed=1, idle=0.2, backpressure=0.2)
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]


def test_finetune_keeps_the_scales_and_does_not_lose_accuracy(split, tmp_path):
    # QAT fine-tuning of an import at 4-bit weights: scales and thresholds stay, the weights move, and
    # it never ends below the imported state on the validation split (which picks the epoch)
    few = ("--weight-bits", "4")
    before = _import(nets.DATA / "snntorch_mlp.nir", tmp_path / "m.slm", *few)
    model = _import(nets.DATA / "snntorch_mlp.nir", tmp_path / "ft.slm", *few, "--finetune", "2")
    assert [ly.scale for ly in model.layers] == [ly.scale for ly in before.layers]
    assert all(np.array_equal(a.threshold, b.threshold) for a, b in zip(model.layers, before.layers)
               if a.threshold is not None)
    assert any((a.weight != b.weight).any() for a, b in zip(model.layers, before.layers))

    def val_accuracy(m):
        g = golden.run(m, golden.quantize_input(m, split.val.x), sparse=())
        return float((g.fixed_pred() == split.val.y).mean())

    print(f"4-bit weights: validation {100 * val_accuracy(before):.2f}% -> {100 * val_accuracy(model):.2f}% "
          f"fine-tuned; test {100 * _golden_accuracy(before, split)[0]:.2f}% -> "
          f"{100 * _golden_accuracy(model, split)[0]:.2f}%")
    assert val_accuracy(model) >= val_accuracy(before)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_trained_now_in_snntorch(kind, split, tmp_path):
    net = nets.train(kind, split)
    acc_float, _ = nets.accuracy(net, split)
    nets.export(net, tmp_path / "g.nir")
    model = _import(tmp_path / "g.nir", tmp_path / "m.slm")
    acc_fixed = _golden_accuracy(model, split)[0]
    print(f"{kind}: snnTorch float {100 * acc_float:.2f}%, golden {100 * acc_fixed:.2f}%")
    assert abs(acc_fixed - acc_float) <= 0.005


def test_run_nir_reports_the_import(tmp_path, capsys):
    # make sim NET=graph.nir: import in place of training; report.json gets the import section
    import json

    from test_cli import spikeloom_here

    r = spikeloom_here(capsys, "run", "--nir", nets.DATA / "snntorch_mlp.nir", "--dt", "1e-4", "--reset",
                       "subtract_next", "--t-max", nets.T, "--build", tmp_path, "--no-cosim")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "report.json").read_text())
    imp = rep["import"]
    assert imp["reset"] == ["subtract_next"] and imp["t_max"] == nets.T and imp["input_bits"] == 4
    assert imp["weight_bits"] == [8] and imp["membrane_bits"] == 16 and imp["dt"] == 1e-4
    assert [n["type"] for n in imp["nodes"]] == ["Input", "Flatten", "Affine", "LIF", "Affine", "LIF", "Output"]
    assert {"name", "type", "mapping", "max_abs_error", "layer", "note"} <= set(imp["nodes"][2])
    assert abs(imp["accuracy_quantized_fixed_t"] - imp["accuracy_float"]) <= 0.005
    assert rep["model"]["arch"] == "nir:snntorch_mlp" and rep["model"]["accuracy_float"] == imp["accuracy_float"]
    assert rep["model"]["golden_vs_fakequant_agreement"] == 1.0
    assert (tmp_path / "latest" / "model.slm").exists()
    assert (tmp_path / "latest").resolve().name.startswith("digits-nir-snntorch_mlp-")


@pytest.mark.parametrize("args, needle", [
    (["--nir", "missing.nir", "--dt", "1e-4"], "--nir missing.nir: no such file"),
    (["--nir", "G", "--dt", "1e-4", "--arch", "vgg"], "--arch sets how a network is trained"),
    (["--nir", "G", "--dt", "1e-4", "--beta", "0.9"], "--beta sets how a network is trained"),
    (["--nir", "G"], "--dt is missing: a NIR graph stores no time step"),
    (["--nir", "G", "--dt", "0"], "--dt = 0.0 must be > 0"),
    (["--nir", "G", "--dt", "1e-4", "--reset", "soft"], "--reset = 'soft'"),
    (["--dt", "1e-4"], "--dt applies to `run` with an imported graph only"),
    (["--finetune", "2"], "--finetune applies to `run` with an imported graph only"),
])
def test_run_nir_bad_options_are_one_line(tmp_path, capsys, args, needle):
    from test_cli import assert_clean_error, spikeloom_here

    args = [str(nets.DATA / "snntorch_mlp.nir") if a == "G" else a for a in args]
    r = spikeloom_here(capsys, "run", "--build", tmp_path, "--no-cosim", *args)
    assert_clean_error(r, needle)
    assert not any(tmp_path.iterdir())


def test_import_finetune_needs_a_dataset(tmp_path, capsys):
    from test_cli import assert_clean_error, spikeloom_here

    r = spikeloom_here(capsys, "import", nets.DATA / "snntorch_mlp.nir", "-o", tmp_path / "m.slm", "--dt", "1e-4",
                       "--finetune", "1")
    assert_clean_error(r, "--finetune 1 trains on a dataset; give --dataset too")
    assert not (tmp_path / "m.slm").exists()
