"""NIR import (model/nir_import.py): exact graphs equal a float64 simulation of the NIR graph on
every input and every step; unsupported nodes are one-line errors; an imported model co-simulates."""

import numpy as np
import nir
import pytest

from spikeloom.hw.plan import Plan
from spikeloom.hw.simulate import rtl_run
from spikeloom.model import golden, modelfile
from spikeloom.model.errors import ConfigError, ModelFileError
from spikeloom.model import nir_sim
from spikeloom.model.nir_import import chain, from_nir
from spikeloom.sim import records

from test_cli import assert_clean_error, spikeloom_here


# --- the float64 simulation of the NIR graph (model/nir_sim.py, written from NIR's equations) ---

def simulate(graph, x, dt, reset, steps):
    """Spikes {node: (T, B, n)} of every IF/LIF node and the readout (T, B, K) of the graph's chain
    for the constant real input ``x`` (B, *input_shape)."""
    r = nir_sim.simulate(chain(graph), x, dt, steps, reset)
    return r.spikes, r.out


def graph_of(*nodes):
    return nir.NIRGraph.from_list(*nodes, type_check=False)


def mlp(rng, neuron, n_in=6, hidden=5, classes=3, wmax=3):
    w1 = rng.integers(-wmax, wmax + 1, (hidden, n_in)).astype(float)
    w2 = rng.integers(-wmax, wmax + 1, (classes, hidden)).astype(float)
    b1 = rng.integers(-1, 2, hidden).astype(float)
    return graph_of(nir.Input(input_type=np.array([n_in])), nir.Affine(w1, b1), neuron(hidden),
                    nir.Affine(w2, np.zeros(classes)), nir.I(r=np.full(classes, 1.0 / DT)),
                    nir.Output(output_type=np.array([classes])))


DT = 0.25


def if_neuron(th=(2.0, 5.0)):
    return lambda n: nir.IF(r=np.full(n, 1.0 / DT), v_threshold=np.linspace(*th, n).round())


def lif_neuron(tau_steps):
    # r = tau / dt: the input gain dt r / tau is 1; tau = k dt gives beta = 1 - 1/k (dyadic)
    return lambda n: nir.LIF(tau=np.full(n, tau_steps * DT), r=np.full(n, tau_steps * 1.0), v_leak=np.zeros(n),
                             v_threshold=np.linspace(2, 5, n).round(), v_reset=np.zeros(n))


def assert_same(graph, model, x_q, reset):
    """golden(x_q) == the float64 simulation of the graph on x = x_q / (2^B - 1), every step."""
    g = golden.run(model, x_q, sparse=(), trace=True)
    x = x_q.reshape((len(x_q),) + tuple(model.input_shape)) / ((1 << model.input_bits) - 1)
    spikes, z = simulate(graph, x, DT, reset, model.t_max)
    spiking = [ly for ly in model.layers if ly.threshold is not None]
    assert len(spiking) == len(spikes)
    for ly, (node, s) in zip(spiking, spikes.items()):
        assert np.array_equal(g.spikes[ly.name], s), f"spikes of {node} differ"
    assert any(s.any() for s in spikes.values()) and not all(s.all() for s in spikes.values())
    out = model.layers[-1]
    want = z.reshape(z.shape[0], z.shape[1], -1) / out.scale[0] if model.readout == "integrate" else \
        spikes[list(spikes)[-1]].cumsum(axis=0)
    assert np.array_equal(g.z, want)
    return g


def binary_inputs(rng, model, n=256):
    x = rng.integers(0, 2, (n, model.input_size))
    x[0] = 0
    return x


# reset: NIR's own (zero), a plain subtraction, snnTorch's subtract-reset Leaky (subtract_next)
@pytest.mark.parametrize("reset", ["zero", "subtract", "subtract_next", "subtract_recheck"])
def test_if_mlp_imports_exactly(reset):
    rng = np.random.default_rng(1)
    graph = mlp(rng, if_neuron())
    model, report = from_nir(graph, DT, reset, input_bits=1, t_max=6)
    assert {r.mapping for r in report} == {"exact"} and max(r.max_abs_error for r in report) == 0.0
    assert model.layers[0].neuron.fire == ">" and model.layers[0].neuron.reset == reset
    assert [(r.name, r.type) for r in report] == [(n, type(v).__name__) for n, v in graph.nodes.items()]
    assert_same(graph, model, binary_inputs(rng, model), reset)


# tau = 2 dt (beta 1/2) and 4 dt (beta 3/4): dyadic leaks, exact through the 2^(f (T-1)) scale
@pytest.mark.parametrize("tau_steps", [2, 4])
@pytest.mark.parametrize("reset", ["zero", "subtract_next", "subtract_recheck"])
def test_lif_mlp_dyadic_beta_imports_exactly(tau_steps, reset):
    rng = np.random.default_rng(tau_steps)
    graph = mlp(rng, lif_neuron(tau_steps), wmax=2)
    model, report = from_nir(graph, DT, reset, input_bits=1, t_max=5, weight_bits=16, membrane_bits=24)
    assert {r.mapping for r in report} == {"exact"}
    assert model.layers[0].neuron.beta == 1 - 1 / tau_steps
    assert_same(graph, model, binary_inputs(rng, model), reset)


def test_multibit_inputs_import_exactly():
    """x = x_q / (2^B - 1): first-layer weights that are multiples of 2^B - 1 stay integers."""
    rng = np.random.default_rng(5)
    w1 = rng.integers(-3, 4, (5, 4)) * 15.0
    graph = graph_of(nir.Input(input_type=np.array([4])), nir.Linear(w1), if_neuron((20, 40))(5),
                     nir.Linear(rng.integers(-2, 3, (3, 5)).astype(float)), nir.I(r=np.full(3, 1 / DT)),
                     nir.Output(output_type=np.array([3])))
    model, report = from_nir(graph, DT, "zero", input_bits=4, t_max=6)
    assert {r.mapping for r in report} == {"exact"}
    assert np.array_equal(model.layers[0].weight, w1 / 15)
    x = rng.integers(0, 16, (256, 4))
    g = golden.run(model, x, sparse=(), trace=True)
    spikes, z = simulate(graph, x / 15.0, DT, "zero", 6)
    # x_q / 15 * (15 k) is not always exact in float64: compare against the integer-input graph
    spikes_int, z_int = simulate(graph_of(nir.Input(input_type=np.array([4])), nir.Linear(w1 / 15),
                                          *[graph.nodes[k] for k in ("if", "linear_1", "i", "output")]),
                                 x.astype(float), DT, "zero", 6)
    assert np.array_equal(g.spikes[model.layers[0].name], spikes_int["if"])
    assert np.array_equal(g.z, z_int)
    assert (spikes["if"] != spikes_int["if"]).mean() < 0.01  # the float graph agrees but for ties


def conv_graph(rng, pool="sum"):
    w = rng.integers(-2, 3, (3, 2, 3, 3)).astype(float)
    pool_node = nir.SumPool2d(np.array([2, 2]), np.array([2, 2]), np.array([0, 0])) if pool == "sum" else \
        nir.AvgPool2d(np.array([2, 2]), np.array([2, 2]), np.array([0, 0]))
    return graph_of(nir.Input(input_type=np.array([2, 6, 6])),
                    nir.Conv2d((6, 6), w, 1, 1, 1, 1, rng.integers(-1, 2, 3).astype(float)),
                    nir.IF(r=np.full((3, 6, 6), 1 / DT), v_threshold=np.full((3, 6, 6), 3.0)),
                    pool_node, nir.Flatten(input_type={"input": np.array([3, 3, 3])}, start_dim=0),
                    nir.Affine(rng.integers(-2, 3, (4, 27)).astype(float), np.zeros(4)),
                    nir.I(r=np.full(4, 1 / DT)), nir.Output(output_type=np.array([4])))


def test_conv_sum_pool_imports_exactly():
    rng = np.random.default_rng(7)
    graph = conv_graph(rng)
    model, report = from_nir(graph, DT, "zero", input_bits=1, t_max=5)
    assert {r.mapping for r in report} == {"exact"}
    conv = model.layers[0]
    assert (conv.kind, conv.pool, conv.pool_op, conv.padding) == ("conv", 2, "sum", 1)
    assert_same(graph, model, binary_inputs(rng, model), "zero")


def test_avg_pool_is_sum_pool_with_quarter_weights():
    rng = np.random.default_rng(7)
    model, report = from_nir(conv_graph(rng, "avg"), DT, "zero", input_bits=1, t_max=5)
    by = {r.name: r for r in report}
    assert by["avgpool2d"].type == "AvgPool2d" and model.layers[0].pool_op == "sum"
    assert by["affine"].mapping == "quantized" and by["affine"].max_abs_error < 0.02


def test_spiking_class_layer_gets_a_count_readout():
    rng = np.random.default_rng(3)
    graph = graph_of(nir.Input(input_type=np.array([6])), nir.Linear(rng.integers(-3, 4, (5, 6)).astype(float)),
                     if_neuron()(5), nir.Linear(rng.integers(-3, 4, (3, 5)).astype(float)), if_neuron((1, 2))(3),
                     nir.Output(output_type=np.array([3])))
    model, _ = from_nir(graph, DT, "subtract", input_bits=1, t_max=6)
    assert model.readout == "count" and len(model.layers) == 3
    assert_same(graph, model, binary_inputs(rng, model), "subtract")


def test_real_weights_are_quantized_with_a_reported_error(tmp_path):
    rng = np.random.default_rng(4)
    graph = graph_of(nir.Input(input_type=np.array([6])), nir.Affine(rng.normal(0, 1, (5, 6)), rng.normal(0, .1, 5)),
                     nir.LIF(tau=np.full(5, 10 * DT), r=np.ones(5), v_leak=np.zeros(5), v_threshold=np.full(5, .3),
                             v_reset=np.zeros(5)),
                     nir.Affine(rng.normal(0, 1, (3, 5)), np.zeros(3)), nir.LI(np.full(3, 5 * DT), np.ones(3),
                                                                               np.zeros(3)),
                     nir.Output(output_type=np.array([3])))
    model, report = from_nir(graph, DT, "subtract_next", input_bits=8, t_max=8, membrane_bits=24)
    by = {r.name: r for r in report}
    assert all(r.mapping == "quantized" for r in report if r.type not in ("Input", "Output"))
    assert 0 < by["affine"].max_abs_error < 0.02  # 8-bit weights of values within about 3
    # 16-bit membranes cap the threshold at 2^15 / 8 integers: a coarser weight scale, a larger error
    _, narrow = from_nir(graph, DT, "subtract_next", input_bits=8, t_max=8, membrane_bits=16)
    assert {r.name: r for r in narrow}["affine"].max_abs_error > 2 * by["affine"].max_abs_error
    assert by["li"].max_abs_error == pytest.approx(0.2)  # the leak dt / tau the integrator drops
    assert by["lif"].max_abs_error < 0.01
    assert model.layers[0].neuron.beta == pytest.approx(0.9, abs=2 ** -9)
    modelfile.save(model, tmp_path / "m.slm")
    assert modelfile.load(tmp_path / "m.slm").layers[0].neuron.same_as(model.layers[0].neuron)


# --- one-line errors for what cannot be mapped ---

def _lif(n):
    return lif_neuron(2)(n)


def _recurrent():
    g = mlp(np.random.default_rng(0), if_neuron())
    g.nodes["rec"] = nir.Linear(np.eye(5))
    g.edges += [("if", "rec"), ("rec", "if")]
    return g


def _branch():
    g = mlp(np.random.default_rng(0), if_neuron())
    g.nodes["side"] = nir.I(r=np.ones(5))
    g.edges.append(("if", "side"))
    return g


def _mlp_with(neuron_node):
    rng = np.random.default_rng(0)
    return graph_of(nir.Input(input_type=np.array([6])), nir.Affine(rng.normal(size=(5, 6)), np.zeros(5)),
                    neuron_node, nir.Affine(rng.normal(size=(3, 5)), np.zeros(3)), nir.I(r=np.ones(3)),
                    nir.Output(output_type=np.array([3])))


def _mlp_with_weight(v):
    g = _mlp_with(nir.IF(r=np.ones(5), v_threshold=np.ones(5)))
    g.nodes["affine"].weight[0, 0] = v
    return g


def _conv_with(**kw):
    args = dict(input_shape=(6, 6), weight=np.ones((3, 2, 3, 3)), stride=1, padding=0, dilation=1, groups=1,
                bias=np.zeros(3))
    args.update(kw)
    if kw.get("groups", 1) != 1:
        args["weight"] = np.ones((2, 1, 3, 3))
        args["bias"] = np.zeros(2)
    c = args["weight"].shape[0]
    return graph_of(nir.Input(input_type=np.array([2, 6, 6])), nir.Conv2d(**args),
                    nir.IF(r=np.ones(c), v_threshold=np.ones(c)), nir.Flatten(input_type={"input": np.array([c, 4, 4])}, start_dim=0),
                    nir.Affine(np.ones((3, c * 16)), np.zeros(3)), nir.I(r=np.ones(3)),
                    nir.Output(output_type=np.array([3])))


UNSUPPORTED = {
    "CubaLIF": (lambda: _mlp_with(nir.CubaLIF(tau_syn=np.ones(5), tau_mem=np.ones(5), r=np.ones(5),
                                              v_leak=np.zeros(5), v_threshold=np.ones(5))),
                "'cubalif' (CubaLIF): a current-based synapse"),
    "CubaLI": (lambda: graph_of(nir.Input(input_type=np.array([6])), nir.Affine(np.ones((5, 6)), np.zeros(5)),
                                _lif(5), nir.Affine(np.ones((3, 5)), np.zeros(3)),
                                nir.CubaLI(tau_syn=np.ones(3), tau_mem=np.ones(3), r=np.ones(3), v_leak=np.zeros(3)),
                                nir.Output(output_type=np.array([3]))),
               "'cubali' (CubaLI): a current-based synapse"),
    "NIRGraph": (lambda: _mlp_with(nir.NIRGraph.from_list(nir.IF(r=np.ones(5), v_threshold=np.ones(5)),
                                                          type_check=False)),
                 "'nirgraph' (NIRGraph): nested subgraphs"),
    "skip connection": (lambda: _skip(), "'input' (Input): branches to ['affine', 'skip']"),
    "Delay": (lambda: _mlp_with(nir.Delay(np.ones(5))), "'delay' (Delay): synaptic delays"),
    "Threshold": (lambda: _mlp_with(nir.Threshold(np.ones(5))), "'threshold' (Threshold): a stand-alone threshold"),
    "Conv1d": (lambda: graph_of(nir.Input(input_type=np.array([2, 6])),
                                nir.Conv1d(6, np.ones((3, 2, 3)), 1, 0, 1, 1, np.zeros(3)),
                                nir.IF(r=np.ones(3), v_threshold=np.ones(3)), nir.Output(output_type=None)),
               "'conv1d' (Conv1d): 1-d convolutions"),
    "recurrent": (_recurrent, "recurrent edge"),
    "branch": (_branch, "'if' (IF): branches to"),
    "dilation": (lambda: _conv_with(dilation=2), "'conv2d' (Conv2d): dilation = [2, 2]"),
    "groups": (lambda: _conv_with(groups=2), "'conv2d' (Conv2d): groups = 2"),
    "pool with stride != kernel": (lambda: _pool_graph(), "'sumpool2d' (SumPool2d): kernel_size [2, 2], stride [1, 1]"),
    "v_reset != 0 with reset zero": (lambda: _mlp_with(nir.IF(r=np.ones(5), v_threshold=np.ones(5),
                                                              v_reset=np.full(5, -1.0))),
                                     "'if' (IF): v_reset = -1.0; --reset zero resets to 0 only"),
    "NaN weight": (lambda: _mlp_with_weight(np.nan), "'affine' (Affine): weight has a non-finite value (nan)"),
    "inf weight": (lambda: _mlp_with_weight(np.inf), "'affine' (Affine): weight has a non-finite value (inf)"),
    "NaN threshold": (lambda: _mlp_with(nir.IF(r=np.ones(5), v_threshold=np.array([1, np.nan, 1, 1, 1.0]))),
                      "'if' (IF): v_threshold has a non-finite value (nan)"),
    "inf r": (lambda: _mlp_with(nir.IF(r=np.full(5, np.inf), v_threshold=np.ones(5))),
              "'if' (IF): r has a non-finite value (inf)"),
    "some +inf thresholds": (lambda: _mlp_with(nir.IF(r=np.ones(5), v_threshold=np.array([1, np.inf, 1, 1, 1.0]))),
                             "'if' (IF): v_threshold is +inf for some neurons only"),
    "LIF tau per neuron": (lambda: _mlp_with(nir.LIF(tau=np.arange(1, 6.0), r=np.ones(5), v_leak=np.zeros(5),
                                                     v_threshold=np.ones(5))),
                           "'lif' (LIF): tau differs between neurons"),
}


def _skip():
    g = mlp(np.random.default_rng(0), if_neuron())
    g.nodes["skip"] = nir.Affine(np.ones((3, 6)), np.zeros(3))
    g.edges += [("input", "skip"), ("skip", next(a for a, b in g.edges if b == "output"))]
    return g


def _pool_graph():
    g = _conv_with()
    g.nodes["sumpool2d"] = nir.SumPool2d(np.array([2, 2]), np.array([1, 1]), np.array([0, 0]))
    g.edges = [("if", "sumpool2d"), ("sumpool2d", "flatten")] + [e for e in g.edges if e[0] != "if"]
    return g


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unmappable_nodes_are_one_line_errors(case):
    make, needle = UNSUPPORTED[case]
    with pytest.raises(ModelFileError) as e:
        from_nir(make(), DT, "zero", input_bits=1, t_max=4)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg, msg


@pytest.mark.parametrize("bad, needle", [(dict(dt=0.0), "dt = 0.0 must be a number > 0"),
                                         (dict(reset="soft"), "import.reset = 'soft'"),
                                         (dict(t_max=0), "import.t_max = 0")])
def test_bad_options_are_errors(bad, needle):
    args = dict(dt=DT, reset="zero", input_bits=1, t_max=4) | bad
    with pytest.raises(ConfigError, match=needle):
        from_nir(mlp(np.random.default_rng(0), if_neuron()), **args)


# --- the command line ---

def test_cli_import_writes_the_model_and_prints_the_table(tmp_path, capsys):
    rng = np.random.default_rng(1)
    graph = mlp(rng, if_neuron())
    nir.write(tmp_path / "g.nir", graph)
    r = spikeloom_here(capsys, "import", tmp_path / "g.nir", "-o", tmp_path / "m.slm", "--dt", DT,
                       "--input-bits", 1, "--t-max", 6)
    assert r.returncode == 0, r.stderr
    assert "exact" in r.stdout and "affine_1" in r.stdout and "IF" in r.stdout
    model = modelfile.load(tmp_path / "m.slm")
    assert model.t_max == 6 and model.input_bits == 1
    assert_same(graph, model, binary_inputs(rng, model), "zero")


@pytest.mark.parametrize("make, needle", [(UNSUPPORTED["CubaLIF"][0], "(CubaLIF)"),
                                          (UNSUPPORTED["recurrent"][0], "recurrent edge"),
                                          (UNSUPPORTED["dilation"][0], "dilation")])
def test_cli_unmappable_graph_is_one_line_exit_2(tmp_path, capsys, make, needle):
    nir.write(tmp_path / "g.nir", make())
    r = spikeloom_here(capsys, "import", tmp_path / "g.nir", "-o", tmp_path / "m.slm", "--dt", DT)
    assert_clean_error(r, needle)
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.slm").exists()


@pytest.mark.parametrize("args, needle", [(["missing.nir"], "no such file"),
                                          (["notnir.nir"], "not a readable NIR graph"),
                                          (["g.nir", "--dt", "0"], "--dt = 0.0 must be > 0"),
                                          (["g.nir", "--dt", "-1"], "--dt = -1.0 must be > 0"),
                                          (["g.nir", "--input-bits", "0"], "--input-bits = 0"),
                                          (["g.nir", "--t-max", "65"], "--t-max = 65"),
                                          (["g.nir", "--weight-bits", "1"], "--weight-bits = 1"),
                                          (["g.nir", "--membrane-bits", "40"], "--membrane-bits = 40")])
def test_cli_bad_values_are_one_line_exit_2(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    nir.write(tmp_path / "g.nir", mlp(np.random.default_rng(0), if_neuron()))
    (tmp_path / "notnir.nir").write_text("hello")
    argv = ["import", *args, "-o", "m.slm"] + ([] if "--dt" in args else ["--dt", "0.25"])
    r = spikeloom_here(capsys, *argv)
    assert_clean_error(r, needle)
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.slm").exists()


def test_cli_output_that_cannot_be_written_is_one_line_before_work(tmp_path, capsys):
    nir.write(tmp_path / "g.nir", mlp(np.random.default_rng(0), if_neuron()))
    (tmp_path / "file").write_text("x")
    for out, needle in ((tmp_path / "file" / "m.slm", "is a file, not a folder"), (tmp_path, "is a folder")):
        r = spikeloom_here(capsys, "import", tmp_path / "g.nir", "-o", out, "--dt", DT)
        assert_clean_error(r, needle)
        assert r.stdout == ""  # refused before the import ran (it prints its node table)


def test_cli_keeps_an_existing_model_when_the_write_fails(tmp_path, capsys, monkeypatch):
    # the write itself fails halfway: the old model file stays, no temporary file is left
    old = _old_model(tmp_path / "m.slm")
    nir.write(tmp_path / "g.nir", mlp(np.random.default_rng(0), if_neuron()))

    def half(model, meta, path):
        with open(path, "wb") as f:
            f.write(b"PK half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile, "_write", half)
    r = spikeloom_here(capsys, "import", tmp_path / "g.nir", "-o", tmp_path / "m.slm", "--dt", DT)
    assert_clean_error(r, "cannot write the model file (No space left on device)")
    assert (tmp_path / "m.slm").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.nir", "m.slm"]


def test_cli_keeps_an_existing_model_on_error(tmp_path, capsys):
    old = _old_model(tmp_path / "m.slm")
    nir.write(tmp_path / "g.nir", UNSUPPORTED["Delay"][0]())
    r = spikeloom_here(capsys, "import", tmp_path / "g.nir", "-o", tmp_path / "m.slm", "--dt", DT)
    assert_clean_error(r, "(Delay)")
    assert (tmp_path / "m.slm").read_bytes() == old


def test_cli_never_replaces_a_file_that_is_not_a_model_file(tmp_path, capsys):
    """``-o`` naming a file spikeloom did not write (here not a model file) is refused before any
    work, and the file stays; the graph itself as ``-o`` too."""
    (tmp_path / "m.slm").write_bytes(b"old")
    nir.write(tmp_path / "g.nir", mlp(np.random.default_rng(0), if_neuron()))
    r = spikeloom_here(capsys, "import", tmp_path / "g.nir", "-o", tmp_path / "m.slm", "--dt", DT)
    assert_clean_error(r, "exists and is not a model file spikeloom wrote")
    assert (tmp_path / "m.slm").read_bytes() == b"old"


def _old_model(path):
    """A model file of an earlier import at ``path``; its bytes."""
    from spikeloom.model.randnet import random_model

    modelfile.save(random_model((6, 5, 3), seed=2, input_bits=3), path)
    return path.read_bytes()


# --- the imported model runs on the hardware ---

@pytest.mark.parametrize("n_pe", [1, 3])
def test_imported_conv_model_cosimulates(n_pe):
    rng = np.random.default_rng(7)
    model, _ = from_nir(conv_graph(rng), DT, "subtract_next", input_bits=1, t_max=3)
    model = model.with_exit_threshold(1 << 40)
    x = binary_inputs(rng, model, n=3)
    plan = Plan(model, n_pe, "auto")
    g = golden.run(model, x, trace=True, sparse=plan.sparse_layers)
    got = rtl_run(model, n_pe, x, seed=0, idle=0.3, backpressure=0.3, storage="auto")
    assert len(got) == len(x)
    diff = records.field_mismatches(records.from_golden(g), got)
    assert not diff, "\n".join(diff)


def test_layer_names_from_node_names_are_valid_layer_names():
    """NIR node names become layer names the model file accepts (``ir.LAYER_NAME``): other
    characters (non-ASCII ones too) become ``_``, and a long name is cut so that a spike-count
    readout's ``<name>_count`` still fits."""
    from spikeloom.model.ir import LAYER_NAME
    from spikeloom.model.nir_import import _safe
    for node in ("1.lif", "é", "a b/c", "x" * 300, "", "0"):
        name = _safe(node, 3)
        assert LAYER_NAME.fullmatch(name) and LAYER_NAME.fullmatch(name + "_count"), (node, name)
    assert _safe("é", 3) == "_" and _safe("", 3) == "layer3" and _safe("1.lif", 0) == "1_lif"
    taken = set()   # names cut to the same prefix stay distinct
    assert len({_safe("m." + "x" * 200 + f".{k}", k, taken) for k in range(3)}) == 3
