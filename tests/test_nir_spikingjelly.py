"""A network trained in SpikingJelly, exported with SpikingJelly's own NIR export, imported by
``spikeloom import`` (model/nir_import.py) and run by the golden model and the RTL.

SpikingJelly 2.0.0 (``make venv`` installs it with ``--no-deps``: it requires torchvision, which
would replace the CPU torch; its NIR export needs only ``loguru`` and ``nirtorch`` 2.6 beside it)
exports with ``spikingjelly.activation_based.nir_exchange.to_nir.export_to_nir(net, example, dt=1e-4)``:

* ``layer.Linear`` -> ``Affine``, ``layer.Flatten`` -> ``Flatten``;
* ``LIFNode(tau, decay_input, v_threshold, v_reset)`` -> ``LIF(tau = tau dt, r = 1 if decay_input
  else tau, v_leak = v_reset, v_threshold, v_reset)``: with NIR's Euler step of ``dt`` the gain
  ``dt r / (tau dt)`` is SpikingJelly's ``1 / tau`` on its input (``decay_input=True``) or ``1``,
  and the leak ``beta = 1 - 1 / tau``;
* ``IFNode`` -> ``IF(r = 1 / dt, ...)``: gain 1, no leak;
* a soft reset (``v_reset=None``) is refused by 2.0.0's export itself (NIR cannot say "subtract");
  later SpikingJelly sources write it as ``v_reset = 0`` instead (README, "From SpikingJelly": import
  those with ``--reset subtract``).

So the import takes ``--dt 1e-4 --reset zero``. SpikingJelly fires on ``v >= v_threshold``, NIR (and
so the import) on ``v > v_threshold``: the two differ only where a membrane equals its threshold.

The digits network: 64 inputs in ``[0, 1]`` (``model/data.py``), ``Flatten -> Linear(64, 128) ->
LIFNode -> Linear(128, 10) -> LIFNode``, ``tau = 2`` (SpikingJelly's default; ``beta = 1/2`` is
dyadic, so the leak is exact), hard reset to ``v_reset = 0``, the image as the input current at
each of ``T = 4`` steps, trained on the mean-squared error of the class neurons' firing rates to
the one-hot label (SpikingJelly's tutorials), classified by spike count (the lowest index among
equal counts, as ``torch.argmax``): the import gives a spiking class layer and a spike-count
readout. Imported with the validation split as calibration data (``--dataset digits``) and 8-bit
inputs, 8-bit weights, 24-bit membranes. Measured on this network (golden test accuracy against
SpikingJelly's 97.78%): 24 or 20 membrane bits 97.78%; 16 bits 96.94% with 8-bit inputs (the
membrane range leaves the first layer's weights fewer levels; the import's note says so) and
96.94% with 4-bit inputs (the input rounding itself).
"""

import warnings
from dataclasses import dataclass

import nir
import numpy as np
import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        from spikingjelly.activation_based import functional, layer, neuron
        from spikingjelly.activation_based.nir_exchange.to_nir import export_to_nir
    except ImportError as e:
        raise ImportError("tests/test_nir_spikingjelly.py needs spikingjelly==2.0.0, loguru and nirtorch 2.6, "
                          "which `make venv` installs (SpikingJelly with pip --no-deps: it requires "
                          "torchvision, which would replace the CPU torch)") from e

from spikeloom.hw.accel import generate
from spikeloom.model import golden, modelfile, nir_import
from spikeloom.model.data import load_digits
from spikeloom.model.errors import ModelFileError
from spikeloom.sim.runner import cosim

from test_cli import assert_clean_error, spikeloom_here

DT = 1e-4  # what SpikingJelly's export writes by default; NIR stores no time step
T = 4
TAU = 2.0
HIDDEN = 128
IMPORT = dict(reset="zero", input_bits=8, t_max=T, weight_bits=8, membrane_bits=24)


class deterministic:
    """One thread and deterministic algorithms while training, restored afterwards (other tests
    in the same process keep their settings)."""

    def __enter__(self):
        self.saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved[0])
        torch.use_deterministic_algorithms(self.saved[1])


def digits_net(decay_input, v_reset=0.0):
    net = torch.nn.Sequential(
        layer.Flatten(),
        layer.Linear(64, HIDDEN), neuron.LIFNode(tau=TAU, decay_input=decay_input, v_reset=v_reset, detach_reset=True),
        layer.Linear(HIDDEN, 10), neuron.LIFNode(tau=TAU, decay_input=decay_input, v_reset=v_reset, detach_reset=True))
    functional.set_step_mode(net, "m")
    return net


def repeat(x):
    """The image as the input current at every step: (T, B, ...)."""
    x = torch.as_tensor(x)
    return x.unsqueeze(0).expand(T, *x.shape)


def train(decay_input, split, epochs=30, seed=0):
    with deterministic():
        torch.manual_seed(seed)
        net = digits_net(decay_input)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.from_numpy(split.train.x), torch.from_numpy(split.train.y)
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 32):
                idx = perm[i:i + 32]
                rate = net(repeat(x[idx])).mean(0)
                loss = torch.nn.functional.mse_loss(rate, torch.nn.functional.one_hot(y[idx], 10).float())
                opt.zero_grad()
                loss.backward()
                opt.step()
                functional.reset_net(net)
    return net.eval()


def sj_spikes(net, x):
    """Every LIFNode's / IFNode's spikes (T, B, n) as bool, in order, on the images ``x``."""
    out, h = [], repeat(torch.from_numpy(np.asarray(x, np.float32)))
    with torch.no_grad():
        for m in net:
            h = m(h)
            if isinstance(m, neuron.BaseNode):
                out.append(h.reshape(T, len(x), -1).numpy() != 0)
    functional.reset_net(net)
    return out


@dataclass
class Imported:
    decay_input: bool
    split: object
    net: torch.nn.Module
    path: object          # the .nir file SpikingJelly wrote
    model: object
    report: list


@pytest.fixture(scope="module")
def digits_split():
    return load_digits(seed=0)


@pytest.fixture(scope="module")
def importer(digits_split, tmp_path_factory):
    """``importer(decay_input)``: the digits network trained, exported and imported (once each)."""
    done = {}

    def get(decay_input):
        if decay_input not in done:
            net = train(decay_input, digits_split)
            path = tmp_path_factory.mktemp("sj") / "digits.nir"
            export_to_nir(net, torch.zeros(T, 1, 1, 8, 8), save_path=path, dt=DT)
            functional.reset_net(net)
            model, report = nir_import.from_nir(nir_import.read(path), DT, **IMPORT,
                                                calibration=digits_split.val.x)
            done[decay_input] = Imported(decay_input, digits_split, net, path, model, report)
        return done[decay_input]

    return get


# decay_input: SpikingJelly's default (input divided by tau, NIR r = 1) and the other (r = tau)
@pytest.fixture(params=[True, False], ids=["decay_input", "no_decay_input"])
def imported(request, importer):
    return importer(request.param)


def test_export_is_the_documented_mapping(imported):
    """The graph SpikingJelly wrote: what the module docstring says, so the import's dt and gains hold."""
    g = nir.read(imported.path)
    kinds = sorted(type(v).__name__ for v in g.nodes.values())
    assert kinds == ["Affine", "Affine", "Flatten", "Input", "LIF", "LIF", "Output"]
    for lif in (v for v in g.nodes.values() if isinstance(v, nir.LIF)):
        np.testing.assert_allclose(lif.tau, TAU * DT)
        assert np.all(lif.r == (1.0 if imported.decay_input else TAU))
        assert np.all(lif.v_reset == 0) and np.all(lif.v_leak == 0) and np.all(lif.v_threshold == 1.0)
    rep = {r.type: r for r in imported.report}
    assert rep["Flatten"].mapping == "exact" and rep["Input"].mapping == "exact"
    spiking = [ly for ly in imported.model.layers if ly.neuron is not None]
    assert [ly.neuron.beta for ly in spiking] == [1 - 1 / TAU] * 2  # dyadic: no leak rounding
    assert imported.model.readout == "count" and imported.model.input_shape == (1, 8, 8)


def test_golden_accuracy_within_half_a_point(imported):
    """SpikingJelly's float accuracy on the test split vs the integer golden model's, and how often
    each layer's spikes agree (informative: the quantized currents and the firing rule ``>=`` vs
    ``>`` flip a few spikes near threshold)."""
    test = imported.split.test
    theirs = sj_spikes(imported.net, test.x)
    acc_sj = float((golden.first_argmax(theirs[-1].sum(axis=0)) == test.y).mean())
    model = imported.model
    r = golden.run(model, golden.quantize_input(model, test.x), sparse=(), trace=True)
    acc_golden = float((r.fixed_pred() == test.y).mean())
    spiking = [ly for ly in model.layers if ly.threshold is not None]
    agree = {ly.name: float((r.spikes[ly.name] == s).mean()) for ly, s in zip(spiking, theirs)}
    print(f"\ndecay_input={imported.decay_input}: SpikingJelly float accuracy {100 * acc_sj:.2f} %, "
          f"golden {100 * acc_golden:.2f} % ({len(test.y)} test images); spike agreement per layer "
          + ", ".join(f"{k} {100 * v:.2f} %" for k, v in agree.items()))
    assert acc_sj > 0.9  # a trained network, not a chance-level one
    assert abs(acc_sj - acc_golden) <= 0.005
    assert all(v > 0.97 for v in agree.values()), agree
    for s in theirs:
        assert 0.02 < s.mean() < 0.98  # an agreement of silent or saturated layers would prove nothing


def test_cli_import_writes_the_same_model(imported, tmp_path, capsys):
    args = [f"--{k.replace('_', '-')}={v}" for k, v in IMPORT.items()]
    r = spikeloom_here(capsys, "import", imported.path, "-o", tmp_path / "m.slm", "--dt", DT, *args,
                       "--dataset", "digits")
    assert r.returncode == 0, r.stderr
    assert "LIF" in r.stdout and "quantized" in r.stdout
    m = modelfile.load(tmp_path / "m.slm")
    assert [(ly.name, ly.weight.tolist(), ly.bias.tolist()) for ly in m.layers] == \
        [(ly.name, ly.weight.tolist(), ly.bias.tolist()) for ly in imported.model.layers]


@pytest.mark.cosim
def test_imported_model_cosimulates(importer, tmp_path):
    """The imported network's Verilog under Verilator (SpikingJelly's default ``decay_input``; the
    other differs only in its numbers): every result equals the golden model's."""
    imported = importer(True)
    model = imported.model
    x = golden.quantize_input(model, imported.split.test.x[:40])  # compiling dominates: 40 images cost ~2 s
    path = modelfile.save(model, tmp_path / "model.slm")
    generate(model, 8, tmp_path / "rtl")
    r = cosim(path, tmp_path / "rtl", x, tmp_path / "work", seed=0)
    assert r["n_images"] == len(x)
    assert r["mismatched_images"] == 0, r["mismatches"][:5]


# --- the mapping of SpikingJelly's neurons, exactly --------------------------------------------

def integer_net(kind, rng):
    """``Linear(16, 12) -> neuron -> Linear(12, 6) -> neuron`` whose real weights and biases are
    multiples of 32 (LIF) or 2 (IF) and thresholds odd integers: every membrane SpikingJelly
    reaches in T = 4 steps of leak 1/2 is even, so no membrane ever equals a threshold and the
    firing rules ``>=`` and ``>`` agree; the import is exact (no rounding at all)."""
    step = 2 if kind == "if" else 32
    fcs = [torch.nn.Linear(16, 12), torch.nn.Linear(12, 6)]
    with torch.no_grad():
        for fc in fcs:
            fc.weight.copy_(torch.from_numpy(rng.integers(-3, 4, fc.weight.shape) * float(step)))
            fc.bias.copy_(torch.from_numpy(rng.integers(-1, 2, fc.bias.shape) * float(step)))

    def node():
        if kind == "if":
            return neuron.IFNode(v_threshold=1.0, v_reset=0.0, step_mode="m")
        return neuron.LIFNode(tau=TAU, decay_input=kind == "lif_decay_input", v_threshold=1.0, v_reset=0.0,
                              step_mode="m")

    net = torch.nn.Sequential(fcs[0], node(), fcs[1], node()).eval()
    x = rng.integers(0, 2, (200, 16)).astype(np.float32)
    for i in (1, 3):  # each threshold: the odd integer near the median membrane it would reach
        net[i].v_threshold = float(1 << 30)
        with torch.no_grad():
            h = repeat(torch.from_numpy(x))
            for m in list(net)[:i]:
                h = m(h)
            net[i].store_v_seq = True
            net[i](h)
            v = net[i].v_seq.numpy()
        functional.reset_net(net)
        net[i].store_v_seq = False
        assert np.all(v % 2 == 0)  # (and a reset to 0 keeps it so)
        net[i].v_threshold = float(2 * int(np.median(v[v > 0]) // 2) + 1)
    return net, x


KINDS = ["lif_decay_input", "lif", "if"]  # LIFNode(decay_input=True), LIFNode(decay_input=False), IFNode


@pytest.mark.parametrize("kind", KINDS)
def test_neurons_import_exactly(kind, tmp_path):
    """SpikingJelly's LIFNode (decay_input True and False) and IFNode through its own export: the
    import is exact and the golden model's spikes are SpikingJelly's, every layer, every step."""
    net, x = integer_net(kind, np.random.default_rng(KINDS.index(kind)))
    export_to_nir(net, torch.zeros(T, 1, 16), save_path=tmp_path / "g.nir", dt=DT)
    functional.reset_net(net)
    model, report = nir_import.from_nir(nir_import.read(tmp_path / "g.nir"), DT, "zero", input_bits=1, t_max=T,
                                        weight_bits=16, membrane_bits=24)
    assert {r.mapping for r in report} == {"exact"}, [(r.name, r.mapping) for r in report]
    theirs = sj_spikes(net, x)
    r = golden.run(model, x.astype(np.int64), sparse=(), trace=True)
    spiking = [ly for ly in model.layers if ly.threshold is not None]
    for ly, s in zip(spiking, theirs):
        assert 0.02 < s.mean() < 0.98, f"{ly.name} spikes at rate {s.mean():.3f}"
        assert np.array_equal(r.spikes[ly.name], s), f"{ly.name}: {(r.spikes[ly.name] != s).sum()} spikes differ"
    assert np.array_equal(r.z, np.cumsum(theirs[-1], axis=0))


def test_soft_reset_is_refused_by_the_export():
    """``v_reset=None`` (subtract): SpikingJelly 2.0.0's export refuses it, before any NIR file exists
    (later versions write ``v_reset = 0``: README, "From SpikingJelly")."""
    with pytest.raises(NotImplementedError, match="NIR does not distinguish soft reset"):
        export_to_nir(digits_net(True, v_reset=None), torch.zeros(T, 1, 1, 8, 8), dt=DT)


def test_nonzero_v_reset_is_one_line_exit_2(tmp_path, capsys):
    """``v_reset = -0.5`` exports (as ``v_leak = v_reset = -0.5``); ``--reset zero`` resets to 0
    only: one line naming the node (SpikingJelly's second module, ``_2``), exit 2, no model file."""
    export_to_nir(digits_net(True, v_reset=-0.5), torch.zeros(T, 1, 1, 8, 8), save_path=tmp_path / "g.nir", dt=DT)
    with pytest.raises(ModelFileError, match="v_reset = -0.5; --reset zero resets to 0 only"):
        nir_import.from_nir(nir_import.read(tmp_path / "g.nir"), DT)
    r = spikeloom_here(capsys, "import", tmp_path / "g.nir", "-o", tmp_path / "m.slm", "--dt", DT)
    assert_clean_error(r, "NIR node '_2' (LIF): v_reset = -0.5")
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.slm").exists()
