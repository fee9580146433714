"""NIR export (model/nir_export.py, `spikeloom export-nir`): the exact form imports back to the same
layers and golden results; the portable form runs in snnTorch with the golden model's accuracy; every
refusal is one line, exit 2."""

import numpy as np
import nir
import pytest

from spikeloom.model import golden, modelfile
from spikeloom.model.config import LayerNeuron
from spikeloom.model.errors import ConfigError, ModelFileError
from spikeloom.model.nir_export import to_nir
from spikeloom.model import nir_sim
from spikeloom.model.nir_import import chain, from_nir, read
from spikeloom.model.randnet import random_conv_model, random_inputs, random_model

from test_cli import assert_clean_error, spikeloom_here

NEURONS = [LayerNeuron(3, 2, ">", "subtract_recheck"), LayerNeuron(0, 0, ">=", "zero"),
           LayerNeuron(1, 1, ">=", "subtract"), LayerNeuron(26, 8, ">", "subtract_next")]


def _models():
    n = NEURONS
    sum_convs = ((4, 3, 1, 1, 2, False), (5, 3, 1, 1, 1, False))
    return {
        "mlp": random_model((6, 5, 4, 3), seed=1, neurons=n[:2]),
        "mlp-count": random_model((6, 5, 4, 3), seed=2, neurons=n[1:], readout="count"),
        "mlp-image": random_model((16, 7, 3), seed=5, input_shape=(1, 4, 4), neurons=[n[3]], t_max=6),
        "conv-sum": random_conv_model(seed=3, pool_op="sum", convs=sum_convs, neurons=n[1:3]),
        "conv-sum-count": random_conv_model(seed=4, pool_op="sum", convs=sum_convs[:1], hidden=(6,),
                                            neurons=[n[0], n[3], n[2]], readout="count"),
    }


def same_layers(a, b):
    """Every layer's name, arrays, widths, geometry and neuron dynamics are the same."""
    assert [ly.name for ly in a.layers] == [ly.name for ly in b.layers]
    assert (a.input_shape, a.input_bits, a.t_max, a.neuron.membrane_bits) == \
        (b.input_shape, b.input_bits, b.t_max, b.neuron.membrane_bits)
    for x, y in zip(a.layers, b.layers):
        assert (x.role, x.kind, x.weight_bits, x.in_shape, x.stride, x.padding, x.pool, x.pool_op) == \
            (y.role, y.kind, y.weight_bits, y.in_shape, y.stride, y.padding, y.pool, y.pool_op), x.name
        assert np.array_equal(x.weight, y.weight) and np.array_equal(x.bias, y.bias), x.name
        assert (x.threshold is None) == (y.threshold is None), x.name
        if x.threshold is not None:
            assert np.array_equal(x.threshold, y.threshold) and x.neuron.same_as(y.neuron), x.name


@pytest.mark.parametrize("dt", [1e-4, 0.3])
@pytest.mark.parametrize("which", list(_models()))
def test_exact_round_trip(tmp_path, which, dt):
    # to_nir(exact) -> nir.write/read -> from_nir with no options (all from the metadata): the same
    # layers, so golden.run gives the same z, predictions and exits on random inputs
    model = _models()[which]
    graph, rows, notes = to_nir(model, dt, "exact")
    assert len(rows) == len(model.layers) - (model.readout == "count")
    nir.write(tmp_path / "g.nir", graph)
    back, report = from_nir(read(tmp_path / "g.nir"), dt)
    same_layers(model, back)
    # a layer without a leak is exact; with one, only the leak's floor differs from NIR's beta v
    for r in report:
        assert r.max_abs_error == 0.0, r
    types = {type(n).__name__ for n in graph.nodes.values()}
    assert types <= {"Input", "Output", "Flatten", "Affine", "Conv2d", "IF", "LIF", "I", "SumPool2d"}
    x = random_inputs(model, 64, seed=7)
    g1 = golden.run(model, x, sparse=(), trace=True)
    g2 = golden.run(back, x, sparse=(), trace=True, exit_threshold=model.exit_threshold)
    assert np.array_equal(g1.z, g2.z) and np.array_equal(g1.pred, g2.pred) and np.array_equal(g1.exit_t, g2.exit_t)
    assert all(np.array_equal(g1.spikes[k], g2.spikes[k]) for k in g1.spikes)
    assert any(s.any() for s in g1.spikes.values())


def test_exact_rule_and_thresholds_in_nir_units():
    # rule '>=' is written as NIR's '>' at theta - 1/2 (so a plain NIR reader fires on the same integers)
    model = _models()["mlp"]
    graph, _, _ = to_nir(model, 1e-4, "exact")
    fc2 = graph.nodes["fc2_neuron"]
    assert isinstance(fc2, nir.IF) and np.array_equal(fc2.v_threshold, model.layers[1].threshold - 0.5)
    assert fc2.metadata["spikeloom"]["fire"] == ">=" and 1e-4 * fc2.r[0] == 1.0
    assert np.array_equal(graph.nodes["fc1"].weight, model.layers[0].weight * 15.0)  # x_q = x (2^4 - 1)


# --- the portable form: a float64 Euler simulation of the graph (NIR's equations, reset to 0) ---

def euler(graph, x, dt, steps):
    """The readout after ``steps`` Euler steps of the chain (``model/nir_sim.py``) for the constant
    input ``x`` (B, *shape): the membrane of a last LIF that never fires, else the spike counts of
    the last spiking node."""
    order = chain(graph)
    assert all(type(n).__name__ in ("Input", "Output", "Affine", "Flatten", "Conv2d", "AvgPool2d", "LIF")
               for _, n in order), "the portable form has other nodes"
    return nir_sim.simulate(order, x, dt, steps, "zero").scores()[-1]


@pytest.mark.parametrize("which", ["mlp", "mlp-count", "conv-sum", "conv-sum-count"])
def test_portable_nodes_and_float64_euler(which):
    # every neuron an LIF with threshold 1 (a sum pool an AvgPool2d, the readout an LIF that never
    # fires); with reset zero and no leak NIR's float64 dynamics are ours, so the decisions agree
    model = _models()[which]
    for ly in model.layers:
        if ly.neuron is not None:
            ly.neuron = LayerNeuron(0, 0, ly.neuron.fire, "zero")
    graph, rows, notes = to_nir(model)
    types = [type(n).__name__ for n in graph.nodes.values()]
    assert "IF" not in types and "I" not in types and "SumPool2d" not in types
    assert ("AvgPool2d" in types) == which.startswith("conv")
    lifs = [n for n in graph.nodes.values() if isinstance(n, nir.LIF)]
    assert all(np.all(n.v_threshold == 1) or np.all(np.isposinf(n.v_threshold)) for n in lifs)
    assert all(1.0 - 1e-4 / n.tau.ravel()[0] == 1.0 and 1e-4 * n.r.ravel()[0] / n.tau.ravel()[0] == 1.0 for n in lifs)
    assert not any("reset to zero" in n for n in notes)
    x_q = random_inputs(model, 200, seed=11)
    res = golden.run(model, x_q, sparse=())
    x = x_q.reshape((len(x_q),) + tuple(model.input_shape)) / ((1 << model.input_bits) - 1)
    z = euler(graph, x, 1e-4, model.t_max)
    agree = (golden.first_argmax(z) == res.fixed_pred()).mean()
    print(f"{which}: float64 Euler vs golden decisions {agree:.3f}")
    assert agree == 1.0  # integer sums over theta - 1/2: float64 rounding is far below the 1/2 margin
    # the importer reads the portable graph too (an LIF that never fires is its readout integrator)
    back, _ = from_nir(graph, 1e-4)
    assert back.layers[-1].role == "output" and len(back.layers) == len(model.layers)
    again = golden.run(back, x_q, sparse=()).fixed_pred()
    print(f"{which}: re-imported portable graph vs the model, decisions {(again == res.fixed_pred()).mean():.3f}")
    assert (again == res.fixed_pred()).mean() >= 0.95  # a rule '>=' read as '>' at theta - 1/2, quantized


# --- snnTorch: the default digits MLP, trained here once, through snnTorch's NIR import ---

@pytest.fixture(scope="module")
def digits_mlp(tmp_path_factory):
    from spikeloom.flows import steps
    from spikeloom.model.config import NeuronConfig
    from spikeloom.model.train import TrainConfig

    build = tmp_path_factory.mktemp("digits")
    # the default MLP and neuron with NIR's reset (to zero): the one difference left is the leak's floor
    ctx = steps.Context(build=build, train=TrainConfig(epochs=8, qat_epochs=4), neuron=NeuronConfig(reset="zero"))
    im, qm = steps.step_quantize(ctx, steps.step_train(ctx, log=lambda *_: None), log=lambda *_: None)
    steps.step_evaluate(ctx, im, qm, log=lambda *_: None)
    return ctx, qm


def snntorch_net(graph):
    """``(step, modules)``: one time step of the network snnTorch's own ``import_from_nir`` builds
    for the graph, and its modules."""
    from snntorch import import_nir

    net = import_nir.import_from_nir(graph)
    return net, list(net.modules())


def test_portable_into_snntorch(digits_mlp, tmp_path, capsys):
    import snntorch as snn
    import torch

    from spikeloom.model.data import load_dataset

    ctx, model = digits_mlp
    r = spikeloom_here(capsys, "export-nir", ctx.model_path, "-o", tmp_path / "mlp.nir")
    assert r.returncode == 0, r.stderr
    assert "fc1" in r.stdout and "LIF" in r.stdout and "note:" in r.stdout
    graph = read(tmp_path / "mlp.nir")
    assert graph.metadata["spikeloom"]["form"] == "portable"
    step, mods = snntorch_net(graph)
    leaky = [m for m in mods if isinstance(m, snn.Leaky)]
    assert len(leaky) == 3
    test = load_dataset("digits").test
    x_q = golden.quantize_input(model, test.x)
    res = golden.run(model, x_q, sparse=())
    x = torch.tensor(x_q.reshape((len(x_q),) + tuple(model.input_shape)) / ((1 << model.input_bits) - 1),
                     dtype=torch.float32)
    pred = []
    with torch.no_grad():
        for xi in x:  # one image at a time: snnTorch's Flatten keeps NIR's unbatched start_dim
            for m in leaky:
                m.reset_mem()
            for _ in range(model.t_max):
                step(xi)
            pred.append(int(torch.argmax(leaky[-1].mem)))
    pred = np.array(pred)
    acc_snn = float((pred == test.y).mean())
    acc_fixed = float((res.fixed_pred() == test.y).mean())
    acc_float = ctx.report["model"]["accuracy_float"]
    print(f"digits test split: snnTorch {100 * acc_snn:.2f}%, golden fixed-T {100 * acc_fixed:.2f}%, "
          f"float {100 * acc_float:.2f}%, same decisions {100 * (pred == res.fixed_pred()).mean():.2f}%")
    assert abs(acc_snn - acc_fixed) <= 0.005 and abs(acc_snn - acc_float) <= 0.005
    # float64 NIR dynamics: the same decisions as golden on most images (the leak's floor aside)
    z = euler(graph, x.numpy().astype(np.float64), 1e-4, model.t_max)
    agree = (golden.first_argmax(z) == res.fixed_pred()).mean()
    print(f"float64 Euler vs golden decisions {100 * agree:.2f}%")
    assert agree >= 0.98


# --- refusals: one line, exit 2 ---

def test_refusals(tmp_path, capsys):
    maxpool = random_conv_model(seed=2, convs=((4, 3, 1, 1, 2, False),))
    with pytest.raises(ModelFileError, match=r"layer 'conv2': a residual shortcut \(from 'conv1'\)"):
        to_nir(random_conv_model(seed=1, convs=((4, 3, 1, 1, 1, False), (5, 3, 1, 1, 1, True))))
    with pytest.raises(ModelFileError, match="layer 'conv1': max pooling"):
        to_nir(maxpool)
    with pytest.raises(ConfigError, match="--form = 'fast'"):
        to_nir(_models()["mlp"], form="fast")
    p_max = modelfile.save(random_conv_model(seed=2, convs=((4, 3, 1, 1, 2, False),)), tmp_path / "max.slm")
    p_res = modelfile.save(random_conv_model(seed=1, convs=((4, 3, 1, 1, 1, False), (5, 3, 1, 1, 1, True))),
                           tmp_path / "res.slm")
    good = modelfile.save(_models()["mlp"], tmp_path / "ok.slm")
    out = tmp_path / "g.nir"
    for args, needles in (
            ((p_max, "-o", out), ("layer 'conv1': max pooling (an OR of spikes) is not linear",)),
            ((p_res, "-o", out), ("layer 'conv2': a residual shortcut",)),
            ((good, "-o", out, "--form", "fast"), ("--form = 'fast'; allowed: portable, exact",)),
            ((good, "-o", out, "--dt", "0"), ("--dt = 0.0 must be > 0",)),
            ((tmp_path / "missing.slm", "-o", out), ("missing.slm",)),
            ((good, "-o", good / "g.nir"), ("ok.slm is a file, not a folder",)),
            ((good, "-o", tmp_path), ("is a folder",))):
        r = spikeloom_here(capsys, "export-nir", *args)
        assert_clean_error(r, *needles)
        assert len(r.stderr.strip().splitlines()) == 1
        assert not out.exists() and not list(tmp_path.glob(".g.nir.*"))
    r = spikeloom_here(capsys, "export-nir", good, "-o", out, "--form", "exact")
    assert r.returncode == 0 and out.exists() and not list(tmp_path.glob(".g.nir.*"))
    assert "reset to zero" in r.stdout  # the model resets by subtraction in some layers


def test_cli_exact_then_import_gives_the_same_model(tmp_path, capsys):
    # export-nir --form exact, then spikeloom import with the matching options: the same model file layers
    model = random_model((6, 5, 4, 3), seed=3, input_bits=3, t_max=5, neurons=[LayerNeuron(1, 2, ">=", "subtract")] * 2)
    src = modelfile.save(model, tmp_path / "m.slm")
    r = spikeloom_here(capsys, "export-nir", src, "-o", tmp_path / "m.nir", "--form", "exact", "--dt", "0.5")
    assert r.returncode == 0, r.stderr
    assert "fc1    Affine -> LIF" in r.stdout and "IF" not in r.stdout.split("note:")[0].replace("LIF", "")
    r = spikeloom_here(capsys, "import", tmp_path / "m.nir", "-o", tmp_path / "back.slm", "--dt", "0.5",
                       "--reset", "subtract", "--input-bits", "3", "--t-max", "5", "--weight-bits", "6",
                       "--membrane-bits", "16")
    assert r.returncode == 0, r.stderr
    same_layers(model, modelfile.load(tmp_path / "back.slm"))


def test_run_nir_takes_t_max_and_widths_from_the_metadata(tmp_path, capsys):
    # make sim NET=exported.nir: what export-nir wrote (T_max, input and membrane widths, resets)
    # comes back without options; a given option still wins
    import json

    model = random_model((64, 12, 10), seed=2, t_max=5, input_bits=3, membrane_bits=20, weight_bits=7,
                         reset="zero")
    modelfile.save(model, tmp_path / "m.slm")
    r = spikeloom_here(capsys, "export-nir", tmp_path / "m.slm", "-o", tmp_path / "g.nir", "--form", "exact")
    assert r.returncode == 0, r.stderr
    for extra, t_max in (([], 5), (["--t-max", "3"], 3)):
        build = tmp_path / f"b{t_max}"
        r = spikeloom_here(capsys, "run", "--nir", tmp_path / "g.nir", "--dt", "1e-4", "--build", build,
                           "--no-cosim", *extra)
        assert r.returncode == 0, r.stderr
        imp = json.loads((build / "report.json").read_text())["import"]
        assert (imp["t_max"], imp["input_bits"], imp["membrane_bits"], imp["weight_bits"]) == (t_max, 3, 20, [7])
        assert imp["reset"] == ["zero"]


def test_portable_integrate_readout_through_run_nir(tmp_path, capsys):
    # export-nir's default form of a model with an integrator readout (an LIF that never fires), back
    # through run --nir with calibration data: the float simulation reads that readout's membrane
    import json

    model = random_model((64, 16, 10), seed=4, t_max=4, input_bits=4, reset="zero")
    modelfile.save(model, tmp_path / "m.slm")
    assert spikeloom_here(capsys, "export-nir", tmp_path / "m.slm", "-o", tmp_path / "g.nir").returncode == 0
    r = spikeloom_here(capsys, "run", "--nir", tmp_path / "g.nir", "--dt", "1e-4", "--build", tmp_path / "b",
                       "--no-cosim")
    assert r.returncode == 0, r.stderr
    imp = json.loads((tmp_path / "b" / "report.json").read_text())["import"]
    assert [n["reset"] for n in imp["nodes"] if n["type"] == "LIF"] == ["zero", None]
    assert imp["agreement_with_float"] >= 0.9, imp
