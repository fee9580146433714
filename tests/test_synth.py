"""The synthesis flow (export -> synthesis -> place and route -> timing -> bitstream) on a tiny network.

Full-size builds (the default network, N sweeps) are `slow`: `make synth` runs them.
"""

import json
import re
from dataclasses import replace

import pytest

from spikeloom.flows import cluster, synth
from spikeloom.flows.export import LUTRAM_MAX_DEPTH
from spikeloom.model import modelfile
from spikeloom.model.errors import SpikeloomError
from spikeloom.model.randnet import random_model
from spikeloom.sim.ports import Ports


def _tiny():
    """The network the ``built`` fixture synthesises (its biases and thresholds small: see
    test_ecp5_netlist_does_not_depend_on_biases_thresholds_or_exit_threshold)."""
    return random_model((16, 12, 4), seed=1, weight_bits=8, threshold_range=(2, 9), exit_threshold=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    model = modelfile.save(_tiny(), d / "tiny.slm")
    # one placement seed on the iCE40; two on the ECP5, whose build is placed and routed twice and
    # keeps the faster (nextpnr takes about a minute a run here). The second run merges its entry
    # into the first's synth.json.
    synth.run(["ice40-up5k"], [2], model, d, log=lambda *a: None, place_seeds=[3])
    report = synth.run(["ecp5-25k"], [2], model, d, log=lambda *a: None, place_seeds=[3, 1])
    return d, model, report


#: The placement seeds the fixture gives each target.
SEEDS = {"ice40-up5k": [3], "ecp5-25k": [3, 1]}


@pytest.mark.parametrize("target", ["ice40-up5k", "ecp5-25k"])  # both FPGA families
def test_flow_writes_resources_fmax_and_bitstream(built, target):
    d, _, report = built
    on_disk = json.loads((d / "synth.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    e = report["targets"][target]
    assert e["n_pe"] == 2
    for k in ("luts", "ffs", "brams", "dsps"):
        assert 0 < e[k]["used"] <= e[k]["available"], (k, e[k])
    if target == "ice40-up5k":
        # the target's default: weights streamed in after reset, one SPRAM per PE
        assert e["weights"] == "load" and e["sprams"]["used"] == 2
    else:
        assert e["weights"] == "rom" and e["brams"]["used"] >= 2  # one weight memory per PE, in block RAM
    assert e["dsps"]["used"] >= 2  # the multipliers of the analog layer
    assert 1 < e["fmax_mhz"] < 1000
    # every seed's result, the entry the fastest's (the first listed among equals), each seed's files
    # in its own folder (the build's folder itself for a single seed)
    tries = e["place_seeds"]
    assert [t["seed"] for t in tries] == SEEDS[target] and all(t["critical_path_ns"] > 0 for t in tries)
    assert e["fmax_mhz"] == max(t["fmax_mhz"] for t in tries)
    assert e["place_seed"] == next(t["seed"] for t in tries if t["fmax_mhz"] == e["fmax_mhz"])
    for t in tries:
        folder = synth.seed_folder(d / "synth" / f"{target}-n2", t["seed"], SEEDS[target])
        assert (folder / "nextpnr.log").stat().st_size > 0
        assert json.loads((folder / "report.json").read_text())["fmax"]
    assert e["critical_path"]["delay_ns"] > 0 and e["critical_path"]["through"]
    bit = d / "synth" / f"{target}-n2" / ("spikeloom_top.bit" if target.startswith("ecp5") else "spikeloom_top.bin")
    assert e["bitstream"] == str(bit) and bit.stat().st_size > 1024
    assert e["throughput"]["peak_sops"] == pytest.approx(2 * e["fmax_mhz"] * 1e6)
    assert (d / "synth.png").stat().st_size > 0
    assert {(r["target"], r["n_pe"]) for r in report["runs"]} == {("ice40-up5k", 2), ("ecp5-25k", 2)}


def test_weight_memory_outside_block_ram_fails_loudly(built):
    """The check behind the synthesis step: a weight memory larger than the block RAM cells found for it."""
    d, _, _ = built
    work = d / "synth" / "ice40-up5k-n2"
    ports = Ports.load(work / "export" / "ports.json")
    # as if the memory had been mapped to far fewer blocks than it needs
    ports = replace(ports, memories=tuple(replace(m, depth=m.depth * 1024) if m.name == "weight" else m
                                          for m in ports.memories))
    rtl = [work / "export" / "rtl" / "spikeloom_accel.v", work / "export" / "rtl" / "spikeloom_top.v"]
    with pytest.raises(SpikeloomError, match="not in block RAM"):
        synth.step_synthesis("ice40-up5k", rtl, work, ports, log=lambda *a: None)


def test_ecp5_neuron_memories_stay_out_of_block_ram(built):
    """On ECP5 acc and membrane become distributed RAM, so that no DP16KD's unregistered output
    starts a PE loop, and the read-only bias and threshold DP16KD (not LUT ROM, whose logic would
    follow their contents), each read into the block's output register; iCE40 is left to Yosys."""
    d, _, _ = built
    cells = json.loads((d / "synth" / "ecp5-25k-n2" / "synth.json").read_text())["modules"][synth.TOP]["cells"]
    pat = re.compile(r"\.pe_\d+\.(acc|membrane|bias|threshold)\.")
    bram = {pat.search(n).group(1) for n, c in cells.items() if c["type"] == "DP16KD" and pat.search(n)}
    assert bram == {"bias", "threshold"}
    assert all(c["parameters"]["REGMODE_A"] == "OUTREG" for n, c in cells.items()
               if c["type"] == "DP16KD" and pat.search(n))
    dpr = {pat.search(n).group(1) for n, c in cells.items() if c["type"] == "TRELLIS_DPR16X4" and pat.search(n)}
    assert dpr == {"acc", "membrane"}
    ports = Ports.load(d / "synth" / "ecp5-25k-n2" / "export" / "ports.json")
    assert synth.lutram_memories("ecp5-25k", ports) == {
        "acc": "distributed", "bias": "block", "membrane": "distributed", "threshold": "block"}
    assert synth.lutram_memories("ice40-up5k", ports) == {}
    # deep ones (large conv layers at small N) stay block RAM; bias and threshold are block RAM at any depth
    ports = replace(ports, memories=tuple(replace(m, depth=LUTRAM_MAX_DEPTH + 1) for m in ports.memories))
    assert synth.lutram_memories("ecp5-85k", ports) == {"bias": "block", "threshold": "block"}


def test_ecp5_netlist_does_not_depend_on_biases_thresholds_or_exit_threshold(built, tmp_path):
    """Two networks of one architecture whose biases, thresholds (small in one, so that their top
    bits are 0 in every word, large in the other) and exit thresholds differ: Yosys's ECP5
    netlists are the same cells, parameters and connections but for initial values (the DP16KD
    contents), so nextpnr places them alike and their fmax is one
    (a LUT ROM or a constant in the logic made them differ: BENCHMARKS.md, "One netlist per
    architecture"). The small one is the ``built`` fixture's (its netlist as nextpnr got it, the
    output registers absorbed); the large one is exported and synthesised as that build was."""
    import numpy as np

    d, _, report = built
    e = report["targets"]["ecp5-25k"]
    b = _tiny()
    rng = np.random.default_rng(5)
    for ly in b.layers:
        ly.bias = rng.integers(-3000, 3000, ly.bias.shape).astype(ly.bias.dtype)
        if ly.threshold is not None:
            ly.threshold = rng.integers(5000, 30000, ly.threshold.shape).astype(ly.threshold.dtype)
    b.exit_threshold = 40000
    path = modelfile.save(b, tmp_path / "b.slm")
    rtl = synth.step_export(path, 2, tmp_path, weights=e["weights"], log=lambda *a: None,
                            bank_depth=e["weight_bank_depth"], freq_mhz=e["fmax_goal_mhz"],
                            packed_tail=e["packed_tail"])
    net, _, _ = synth.step_synthesis("ecp5-25k", rtl, tmp_path, Ports.load(tmp_path / "export" / "ports.json"),
                                     log=lambda *a: None)
    synth.absorb_output_registers(net)
    nets = []
    for path in (d / "synth" / "ecp5-25k-n2" / "synth.json", net):
        cells = json.loads(path.read_text())["modules"][synth.TOP]["cells"]
        nets.append({n: (c["type"], {k: v for k, v in c["parameters"].items() if not k.startswith("INIT")},
                         c["connections"]) for n, c in cells.items()})
    assert "DP16KD" in {c[0] for c in nets[0].values()}
    assert nets[0].keys() == nets[1].keys()
    assert [n for n in nets[0] if nets[0][n] != nets[1][n]] == []


def test_weights_that_do_not_fit_are_refused_before_the_tools(tmp_path):
    """The default network's shape: 207 kbit of 8-bit weights exceed the UP5K's 120 kbit of EBR, and
    its 4 SPRAMs hold one PE's weights each."""
    model = modelfile.save(random_model((64, 128, 128, 10), seed=1, weight_bits=8), tmp_path / "mlp.slm")
    with pytest.raises(SpikeloomError, match="use --weights load|Use --weights load"):
        synth.run_target("ice40-up5k", model, 4, tmp_path, weights="rom")
    with pytest.raises(SpikeloomError, match="8 for N = 8; the device has 4"):
        synth.run_target("ice40-up5k", model, 8, tmp_path, weights="load")
    with pytest.raises(SpikeloomError, match="'flash'"):
        synth.run_target("ecp5-25k", model, 4, tmp_path, weights="flash")
    # ECP5: every PE's bias and threshold memories are block RAM as well (1 weight block per PE
    # at N = 32 would fit the 25F's 56 alone)
    with pytest.raises(SpikeloomError, match="1 DP16KD per PE and the biases and thresholds 2, 96 for N = 32"):
        synth.run_target("ecp5-25k", model, 32, tmp_path)
    assert not (tmp_path / "synth").exists()  # refused before any tool ran


def test_bad_arguments(tmp_path):
    with pytest.raises(SpikeloomError, match="does not exist"):
        synth.run(["ecp5-25k"], [2], tmp_path / "missing.slm", tmp_path)
    with pytest.raises(SpikeloomError, match="unknown target"):
        synth.run_target("xc7a35t", tmp_path / "m.slm", 2, tmp_path)
    assert synth.main(["--build", str(tmp_path), "--model", str(tmp_path / "missing.slm")]) == 2
    assert synth.main(["--build", str(tmp_path), "--model", "lenet"]) == 2  # neither a file nor an arch


@pytest.mark.parametrize("argv,needle", [
    (["--workers", "0"], "--workers = 0 is outside the allowed range"),
    (["--workers", "two"], "--workers = 'two' must be an integer"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], "--workers sizes the embedded LocalCluster"),
    (["--scheduler", "127.0.0.1:8786"], "--scheduler '127.0.0.1:8786': give the scheduler's address"),
])
def test_bad_cluster_options_are_one_line_before_any_work(tmp_path, capsys, argv, needle):
    """Checked before the default model would be trained, and before any build."""
    assert synth.main(["--build", str(tmp_path / "b"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spikeloom: error: ") and needle in err, err
    assert not (tmp_path / "b").exists()


def test_every_build_is_checked_before_any_runs(tmp_path):
    """ice40-up5k N = 8 cannot hold the weights: refused before the ecp5-25k build would start."""
    model = modelfile.save(random_model((64, 128, 128, 10), seed=1, weight_bits=8), tmp_path / "mlp.slm")
    with pytest.raises(SpikeloomError, match="8 for N = 8; the device has 4"):
        synth.run(["ecp5-25k", "ice40-up5k"], [8], model, tmp_path / "b", weights="load")
    assert not (tmp_path / "b").exists()


def test_default_model_is_trained_when_missing(tmp_path, monkeypatch):
    """A fresh clone has no model in make sim's run folder: plain `make synth` trains it with make sim's
    cached steps; a model already there (whatever it was trained with) is used as it is."""
    from spikeloom.flows import steps

    calls = []

    def fake_train(ctx, log=print):
        calls.append(("train", ctx.train.arch, ctx.model_path))
        return "float"

    def fake_quantize(ctx, fm, log=print):
        calls.append(("quantize", fm))
        ctx.model_path.parent.mkdir(parents=True)
        modelfile.save(random_model((16, 12, 4), seed=1, weight_bits=8), ctx.model_path)
        return None, None

    monkeypatch.setattr(steps, "step_train", fake_train)
    monkeypatch.setattr(steps, "step_quantize", fake_quantize)
    path = synth.default_model(tmp_path, log=lambda *a: None)
    assert path == steps.RunContext(build=tmp_path).model_path and path.exists()
    assert path.parent.parent == tmp_path / "runs" and path.parent.name.startswith("digits-mlp-")
    assert calls == [("train", "mlp", path), ("quantize", "float")]
    assert synth.default_model(tmp_path, log=lambda *a: None) == path
    assert len(calls) == 2  # the existing model is not retrained


@pytest.mark.slow
@pytest.mark.parametrize("n_pe", [1, 2, 4, 8, 16])
def test_default_network_ecp5_85k_sweep(n_pe):
    """`make synth TARGET=ecp5-85k PES=1,2,4,8,16` one N at a time (on make sim's default model)."""
    report = synth.run(["ecp5-85k"], [n_pe])
    assert report["targets"]["ecp5-85k"]["brams"]["used"] >= n_pe


def test_images_per_s_only_from_a_cosim_of_the_same_model(tmp_path):
    """build/report.json is the last make sim's, whichever NET it ran: its cycles give images/s only
    for the model file it co-simulated; otherwise the cycle model on the model's test images does."""
    mlp, vgg = tmp_path / "digits-mlp" / "model.slm", tmp_path / "digits-vgg" / "model.slm"
    digits = random_model((64, 12, 10), seed=1)
    digits.dataset = "digits"
    modelfile.save(digits, mlp)
    modelfile.save(random_model((64, 12, 10), seed=2), vgg)  # dataset "random": no test images at hand
    cos = {"n_pe": 8, "cycles_mean": 1000.0, "cycles_to_bound": 1.05, "simulator": "verilator", "n_images": 360,
           "packed_tail": True, "paired_events": True}
    (tmp_path / "report.json").write_text(json.dumps({"model": {"model_file": str(vgg)}, "cosim": cos}))
    got = synth._throughput(8, 100.0, vgg, tmp_path)
    assert got["images_per_s"] == pytest.approx(1e5) and got["cycles_to_bound"] == 1.05
    assert "report.json cosim" in got["cycles_source"]
    # another design (no packed tail, or a report that does not say): not its cycles
    assert synth._throughput(8, 100.0, vgg, tmp_path, pack=False) == {"peak_sops": 800e6}
    assert synth._throughput(8, 100.0, vgg, tmp_path, pair=False) == {"peak_sops": 800e6}   # (weights loaded)
    (tmp_path / "report.json").write_text(json.dumps({"model": {"model_file": str(vgg)},
                                                      "cosim": {k: v for k, v in cos.items() if k != "packed_tail"}}))
    assert synth._throughput(8, 100.0, vgg, tmp_path) == {"peak_sops": 800e6}
    (tmp_path / "report.json").write_text(json.dumps({"model": {"model_file": str(vgg)}, "cosim": cos}))
    assert synth._throughput(4, 100.0, vgg, tmp_path) == {"peak_sops": 400e6}  # another N, no test images
    got = synth._throughput(8, 100.0, mlp, tmp_path)  # not the co-simulated model: the cycle model
    want = synth.model_cycles(mlp, 8)
    assert want["n_images"] == 360 and want["cycles_to_bound"] >= 1
    assert got["cycles_mean"] == want["cycles_mean"] and "perf.py" in got["cycles_source"]
    assert got["images_per_s"] == pytest.approx(100e6 / want["cycles_mean"])


def test_builds_run_as_tasks_and_merge_in_the_jobs_order(tmp_path, monkeypatch):
    """``make synth PES=4,2,1`` on a cluster (here one in this process, so that the flow can be
    faked): the builds finish in any order, synth.json takes them in the jobs' order (its
    ``targets`` entry is the last N given), paths stay as the user gave them, and a build that
    fails is reported after the others are written."""
    import os
    import time

    from distributed import LocalCluster

    def fake_run_target(target, model_path, n_pe, build, weights=None, log=print, place_seeds=None):
        log(f"building {target} N = {n_pe}")
        time.sleep(0.2 * n_pe)  # N = 1 finishes first
        if n_pe == 2:
            raise SpikeloomError("nextpnr: routing failed")
        bit = Path(build) / "synth" / f"{target}-n{n_pe}" / "spikeloom_top.bit"
        return {"n_pe": n_pe, "model": str(model_path), "bitstream": str(bit), "fmax_mhz": 100.0 + n_pe,
                "fmax_ok": True, **{k: {"used": n_pe, "available": 9} for k in ("luts", "ffs", "brams", "dsps")},
                "critical_path": {"delay_ns": 1.0}, "throughput": {"peak_sops": 1e8}, "wall_s": 0.1}

    from pathlib import Path

    monkeypatch.setattr(synth, "run_target", fake_run_target)
    model = modelfile.save(random_model((16, 12, 4), seed=1, weight_bits=8), tmp_path / "tiny.slm")
    monkeypatch.chdir(tmp_path)
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as c:
        with pytest.raises(SpikeloomError, match=r"^synth: ecp5-25k N = 2: nextpnr: routing failed$"):
            synth.run(["ecp5-25k"], [4, 2, 1], Path("tiny.slm"), Path("b"), scheduler=c.scheduler_address,
                      log=lambda *a: None)
    rep = json.loads((tmp_path / "b" / "synth.json").read_text())
    assert [(r["target"], r["n_pe"]) for r in rep["runs"]] == [("ecp5-25k", 1), ("ecp5-25k", 4)]
    e = rep["targets"]["ecp5-25k"]
    assert e["n_pe"] == 1  # the last N given, though N = 1 finished first
    assert e["model"] == "tiny.slm" and e["bitstream"] == os.path.join("b", "synth", "ecp5-25k-n1", "spikeloom_top.bit")
    assert (tmp_path / "b" / "synth" / "ecp5-25k-n4" / "flow.log").read_text() == "building ecp5-25k N = 4\n"
    assert model.exists()


def test_the_default_model_is_trained_only_once_the_cluster_is_there(tmp_path, monkeypatch, capsys):
    trained = []
    monkeypatch.setattr(synth, "default_model", lambda *a, **k: trained.append(a))
    monkeypatch.setattr(cluster, "CONNECT_S", 2)
    assert synth.main(["--build", str(tmp_path / "b"), "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "--scheduler tcp://127.0.0.1:9: cannot connect" in capsys.readouterr().err and not trained


def _bram_netlist(tmp_path, ff_params=None, ff_extra=None, extra_sink=False, to_port=False):
    """A Yosys JSON netlist: one DP16KD whose port A's two read data bits feed flip-flops."""
    ff_params = {"CEMUX": "1 ", "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR", "REGSET": "RESET",
                 "SRMODE": "LSR_OVER_CE", **(ff_params or {})}
    ram = {"type": "DP16KD", "parameters": {"REGMODE_A": "NOREG", "REGMODE_B": "NOREG", "CLKAMUX": "CLKA"},
           "port_directions": {"CLKA": "input", "OCEA": "input", "RSTA": "input", "DOA0": "output",
                               "DOA1": "output", "DOA2": "output"},
           "connections": {"CLKA": [2], "OCEA": ["1"], "RSTA": ["0"], "DOA0": [10], "DOA1": [11], "DOA2": [12]}}
    cells = {"ram": ram}
    for i in range(2):
        con = {"CLK": [2], "DI": [10 + i], "Q": [20 + i], "LSR": ["0"], **(ff_extra or {})}
        cells[f"ff{i}"] = {"type": "TRELLIS_FF", "parameters": dict(ff_params),
                           "port_directions": {"CLK": "input", "DI": "input", "Q": "output", "LSR": "input",
                                               "CE": "input"}, "connections": con}
    if extra_sink:
        cells["lut"] = _lut(10, 30)
    return _netlist(tmp_path, cells, [20, 21] + [12] * to_port)


def _lut(a, z):
    return {"type": "LUT4", "parameters": {}, "port_directions": {"A": "input", "Z": "output"},
            "connections": {"A": [a], "Z": [z]}}


def _netlist(tmp_path, cells, outs):
    """Write a Yosys JSON netlist of ``cells`` (clock net 2, output port bits ``outs``)."""
    net = {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"},
                               "ports": {"clk": {"direction": "input", "bits": [2]},
                                         "q": {"direction": "output", "bits": outs}},
                               "cells": cells, "netnames": {}}}}
    path = tmp_path / "net.json"
    path.write_text(json.dumps(net))
    return path


def test_read_data_registers_move_into_the_block_ram(tmp_path):
    path = _bram_netlist(tmp_path)
    assert synth.absorb_output_registers(path) == 1
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    assert set(cells) == {"ram"}  # both flip-flops are the block's output register now
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_A"] == "OUTREG" and ram["parameters"]["REGMODE_B"] == "NOREG"
    assert (ram["connections"]["DOA0"], ram["connections"]["DOA1"], ram["connections"]["DOA2"]) == ([20], [21], [12])


def test_read_data_registers_with_one_enable_move_into_the_block_ram_with_it(tmp_path):
    # (the event pipeline's rows word: it holds while RW stalls)
    path = _bram_netlist(tmp_path, ff_params={"CEMUX": "CE"}, ff_extra={"CE": [5]})
    assert synth.absorb_output_registers(path) == 1
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    assert set(cells) == {"ram"}
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_A"] == "OUTREG" and ram["connections"]["OCEA"] == [5]
    assert (ram["connections"]["DOA0"], ram["connections"]["DOA1"]) == ([20], [21])


def test_read_data_registers_with_two_enables_stay_flip_flops(tmp_path):
    path = _bram_netlist(tmp_path, ff_params={"CEMUX": "CE"}, ff_extra={"CE": [5]})
    net = json.loads(path.read_text())
    net["modules"]["top"]["cells"]["ff1"]["connections"]["CE"] = [6]
    path.write_text(json.dumps(net))
    assert synth.absorb_output_registers(path) == 0
    assert json.loads(path.read_text()) == net


@pytest.mark.parametrize("case", [
    {"ff_params": {"CEMUX": "CE"}, "ff_extra": {"CE": ["1"], "LSR": [6]}},   # an enable tied on, but a reset
    {"ff_extra": {"LSR": [6]}},                                # a reset
    {"ff_params": {"CLKMUX": "INV"}},                          # the other clock edge
    {"ff_extra": {"CLK": [7]}},                                # another clock
    {"ff_params": {"CEMUX": "INV"}},                           # an inverted enable (tied 1: never loads)
    {"extra_sink": True},                                      # the read data also used unregistered
    {"to_port": True}])                                        # a read data bit straight to a port
def test_read_data_registers_that_differ_stay_flip_flops(tmp_path, case):
    path = _bram_netlist(tmp_path, **case)
    before = json.loads(path.read_text())
    assert synth.absorb_output_registers(path) == 0
    assert json.loads(path.read_text()) == before


@pytest.mark.parametrize("depth,width,weights,want", [
    (25856, 8, "rom", 2048),   # the default MLP at N = 1: 13 banks of one 2048 x 9 block each
    (6464, 8, "rom", 2048),    # N = 4: 4 banks (8192 x 2 four side by side is as few, but Yosys splits it)
    (3232, 8, "rom", 2048),    # N = 8: 2 banks of one block, not one of two 4096 x 4 side by side
    (1616, 8, "rom", None),    # N = 16: one block
    (3000, 20, "rom", None),   # 4096 x 4: five blocks side by side, fewer than any banks
    (5000, 20, "rom", 2048),   # wide words: three 2048 x 9 blocks side by side per bank
    (25856, 8, "load", None)])  # loaded weights (SPRAM on iCE40) are never banked
def test_weight_bank_depth(depth, width, weights, want):
    assert synth.weight_bank_depth("ecp5-85k", depth, width, weights) == want
    assert synth.weight_bank_depth("ice40-up5k", depth, width, weights) is None


def _dsp_netlist(tmp_path, shared_q=False):
    """A MULT18X18D whose A0, A1 (and A2, a sign-extension copy of A1) come from flip-flops and whose
    P0 feeds one."""
    ff = {"CEMUX": "1 ", "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR", "REGSET": "RESET"}
    dirs = {"CLK": "input", "DI": "input", "Q": "output", "LSR": "input"}
    cells = {"mul": {"type": "MULT18X18D", "parameters": {},
                     "port_directions": {"A0": "input", "A1": "input", "A2": "input", "B0": "input",
                                         "P0": "output"},
                     "connections": {"A0": [40], "A1": [41], "A2": [41], "B0": ["1"], "P0": [50]}},
             "fa0": {"type": "TRELLIS_FF", "parameters": ff, "port_directions": dirs,
                     "connections": {"CLK": [2], "DI": [30], "Q": [40], "LSR": ["0"]}},
             "fa1": {"type": "TRELLIS_FF", "parameters": ff, "port_directions": dirs,
                     "connections": {"CLK": [2], "DI": [31], "Q": [41], "LSR": ["0"]}},
             "fp0": {"type": "TRELLIS_FF", "parameters": ff, "port_directions": dirs,
                     "connections": {"CLK": [2], "DI": [50], "Q": [60], "LSR": ["0"]}}}
    if shared_q:  # A1's register also feeds other logic: it must stay
        cells["lut"] = _lut(41, 70)
    return _netlist(tmp_path, cells, [])


def test_multiplier_registers_move_into_the_dsp(tmp_path):
    path = _dsp_netlist(tmp_path)
    assert synth.absorb_output_registers(path) == 2  # the output register and the A input register
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    assert set(cells) == {"mul"}
    mul = cells["mul"]
    assert mul["parameters"] == {"REG_OUTPUT_CLK": "CLK0", "REG_OUTPUT_CE": "CE0", "REG_OUTPUT_RST": "RST0",
                                 "REG_INPUTA_CLK": "CLK0", "REG_INPUTA_CE": "CE0", "REG_INPUTA_RST": "RST0"}
    con = mul["connections"]
    assert (con["A0"], con["A1"], con["A2"], con["P0"], con["CLK0"], con["CE0"], con["RST0"]) == \
        ([30], [31], [31], [60], [2], ["1"], ["0"])
    # A1's register also feeds other logic: the DSP takes a copy, the flip-flop stays for the LUT
    path = _dsp_netlist(tmp_path, shared_q=True)
    assert synth.absorb_output_registers(path) == 2
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    assert set(cells) == {"fa1", "mul", "lut"} and cells["mul"]["parameters"]["REG_INPUTA_CLK"] == "CLK0"
    assert cells["mul"]["connections"]["A1"] == [31] and cells["lut"]["connections"]["A"] == [41]
    # an input from logic, not a flip-flop: the A register stays unused
    path = _dsp_netlist(tmp_path)
    net = json.loads(path.read_text())
    net["modules"]["top"]["cells"]["mul"]["connections"]["A2"] = [30]
    path.write_text(json.dumps(net))
    assert synth.absorb_output_registers(path) == 1
    assert "REG_INPUTA_CLK" not in json.loads(path.read_text())["modules"]["top"]["cells"]["mul"]["parameters"]
    # a product register with an enable: the DSP's output register (its CE0 tied to 1) does not take it
    path = _dsp_netlist(tmp_path)
    net = json.loads(path.read_text())
    fp0 = net["modules"]["top"]["cells"]["fp0"]
    fp0["parameters"]["CEMUX"], fp0["connections"]["CE"] = "CE", [5]
    path.write_text(json.dumps(net))
    assert synth.absorb_output_registers(path) == 1
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    assert "fp0" in cells and "REG_OUTPUT_CLK" not in cells["mul"]["parameters"]


def test_abc9_failure_is_recognised(tmp_path):
    """Only an assertion failure inside an ABC9 step of Yosys's log makes step_synthesis map again
    with classic ABC: other failures (a missing file, an assertion in another pass) are errors."""
    log = tmp_path / "yosys.log"
    abc9 = ("3.46.19.6. Executing AIGER frontend.\nRemoved 25561 unused cells.\n\n"
            "3.46.19.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate ABC mapped design into module).\n"
            "<suppressed ~18650 debug messages>\n"
            "ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in kernel/rtlil.cc:3091.\n")
    other = ("3.46.19.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate ABC mapped design into module).\n"
             "3.47. Executing OPT_CLEAN pass.\n"
             "ERROR: Assert `x' failed in passes/opt/opt_clean.cc:1.\n")
    missing = "1. Executing Verilog-2005 frontend: a.v\nERROR: Can't open input file `a.v' for reading\n"
    for text, want in ((abc9, True), (other, False), (missing, False)):
        log.write_text(text)
        assert synth.abc9_failed(log) is want, text
    assert not synth.abc9_failed(tmp_path / "absent.log")


def test_classic_abc_script_synthesises(tmp_path):
    """The script ``step_synthesis`` falls back to when ABC9 fails (``ecp5_synth_script(...,
    classic_abc=True)``) is a whole synth_ecp5: a small counter with a comparison maps to LUT4s,
    carry cells and flip-flops, and a ROM named ``bias`` to block RAM, as the PEs' are."""
    from spikeloom.flows.export import ecp5_synth_script

    (tmp_path / "t.v").write_text(
        "module t(input clk, input [7:0] a, input [3:0] i, output reg [7:0] q, output reg gt, output reg [7:0] r);\n"
        "  reg [7:0] rom [0:15];\n  integer k;\n  initial for (k = 0; k < 16; k = k + 1) rom[k] = k * 13;\n"
        "  always @(posedge clk) begin q <= q + a; gt <= q > a; r <= rom[i]; end\nendmodule\n")
    (tmp_path / "t.v").write_text((tmp_path / "t.v").read_text().replace("rom", "bias"))
    script = 'read_verilog t.v; setattr -set ram_style "block" m:bias; ' + ecp5_synth_script(
        "t", "t.json", classic_abc=True)
    synth._run([synth._tool("yosys"), "-q", "-l", "yosys.log", "-p", script], tmp_path / "yosys.out", tmp_path,
               tool_log=tmp_path / "yosys.log")
    cells = json.loads((tmp_path / "t.json").read_text())["modules"]["t"]["cells"].values()
    types = {c["type"] for c in cells}
    assert {"LUT4", "CCU2C", "TRELLIS_FF", "DP16KD"} <= types, types
    log = (tmp_path / "yosys.log").read_text()
    assert "Executing ABC pass" in log and "Executing ABC9 pass" not in log
