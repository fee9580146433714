"""``make synth``: the exported accelerator through synthesis, place and route, timing and bitstream.

A flow of named steps, each checking its output before the next runs:

``check_fits`` (the weight memories against the device's block RAM / SPRAM, before any tool) ->
``export`` (:func:`spikeloom.flows.export.export`: Verilog, wrapper, memory files) ->
``synthesis`` (Yosys ``synth_ecp5`` / ``synth_ice40``; every PE's weight memory must be mapped to
block RAM, or SPRAM for loaded weights on iCE40 UltraPlus; a weight memory blown up into logic
fails loudly; on ECP5 the flip-flops registering block RAM read data and multiplier operands and
products then move into the blocks' own registers, :func:`absorb_output_registers`) ->
``place_route`` (nextpnr, its ``--report`` JSON; once per placement seed of ``--place-seeds``,
the fastest kept) -> ``timing`` (fmax and the
register-to-register critical path of the clock from that report) -> ``bitstream`` (``ecppack`` /
``icepack``).

Weights (``--weights``, default per target): ``rom`` keeps them in block RAM initialised by the
bitstream (ECP5; a weight memory deeper than one block configuration is exported in banks of that
depth, :func:`weight_bank_depth`, so that each block's read data has a register of its own);
``load`` generates weight memories without initial contents, written through the accelerator's
weight-load port after reset (the wrapper takes them from the input stream),
which on the UP5K are its four SPRAMs: the default network's 207 kbit of weights do not fit the
UP5K's 120 kbit of EBR.

Targets: ``ecp5-25k`` (LFE5U-25F), ``ecp5-85k`` (LFE5U-85F), ``ice40-up5k``. All tools are the
YoWASP WebAssembly builds from PyPI, so results do not depend on a local toolchain.

Writes ``build/synth.json`` (``targets.<target>``: ``n_pe``, ``luts``, ``ffs``, ``brams``,
``dsps`` as ``{"used", "available"}``, ``fmax_mhz``, ``bitstream``, throughput; ``runs``: every
(target, N) built so far, for the plot), prints a table and plots resources and fmax against N
(``build/synth.png``).
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from spikeloom.model import modelfile
from spikeloom.model.errors import SpikeloomError
from spikeloom.sim.ports import Ports

from .common import Parser, parse_and_run
from .export import BRAM_MEMORIES, TOP, ecp5_ram_styles, ecp5_synth_script, export

__all__ = ["TARGETS", "DEFAULT_BUILD", "default_model", "run_target", "run", "main"]

BIN = Path(sys.executable).parent


def _tool(name):
    return str(BIN / f"yowasp-{name}")


# (depth, data bits) of a DP16KD port's configurations (not PDPW16KD's 512 x 36 read port, whose
# read register absorb_output_registers does not move)
ECP5_BRAM_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18))

# block_bits: bits of one block RAM, a lower bound on the blocks a memory needs: ECP5's DP16KD holds
# 18 kbit with its 9th bits, which Yosys packs with 8-bit data too (the default network's
# 25856 x 8 weight memory at N = 1 takes 12 DP16KD, not 13);
# blocks: how many the device has. weights: how the default build stores the weights (hw/plan.py
# WEIGHT_STORES); the UP5K's 120 kbit of EBR cannot hold the default network's weights, its four
# 256 kbit SPRAMs (single-port, no initial contents) can, written through the weight-load port.
# fmax_goal_mhz: the clock goal (issue 21's floors), given to nextpnr as --freq and reported as
# synth.json's fmax_goal_mhz / fmax_ok (the 25F N = 8 build reached the same fmax at --freq 150 and 100).
# spram: the single-port RAM a "load" weight memory is mapped to, (cell, data bits, count).
#: nextpnr options of every target: the analytic placer's timing weight at 50 (nextpnr's default
#: 10). BENCHMARKS.md, "Placer timing weight": over three digits models and three placement seeds
#: of the 25F N = 8 build, the mean fmax went from about 124 MHz (10) to 132.5 (30) and 136.3 (50),
#: and nextpnr took 66-102 s where the default often took over 190 s; 100 was worse. The UP5K N = 4
#: build's three seeds: 37.91 / 41.76 / 40.21 MHz at 10, 41.66 / 42.84 / 42.14 at 50.
#: And the router's timing-driven rip-up (``--tmg-ripup``: router1 rips up and reroutes the nets of
#: failing paths): BENCHMARKS.md, "Timing-driven rip-up in the router": the same 25F placements
#: went from a mean of 144.2 MHz to 148.3 (eight of nine; router2 instead: 96-111). The UP5K and
#: the 85F meet their goals without it (nothing to rip up).
PLACER = ("--placer-heap-timingweight", "50", "--tmg-ripup")
#: place_seeds: the target's nextpnr placement seeds unless ``--place-seeds`` names others (default
#: PLACE_SEEDS). The 25F's is 5: the ECP5 netlist does not depend on the model's values (biases
#: and thresholds in DP16KD, the exit threshold a memory word unless it is never met, >=
#: 2**membrane_bits: BENCHMARKS.md, "One netlist per architecture"), so one placement seed gives
#: every digits MLP (exit thresholds calibrated on data) the same fmax, and over seeds 1-6
#: of the N = 8 netlist at this RTL seed 5 was the fastest (152.14 MHz; seed 1: 149.08). A change
#: to the RTL makes a new netlist, whose seeds must be measured again.
TARGETS = {
    "ecp5-25k": {"family": "ecp5", "device": ["--25k", "--package", "CABGA381", "--speed", "6"],
                 "bram": "DP16KD", "dsp": "MULT18X18D", "block_bits": 18432, "blocks": 56, "weights": "rom",
                 "bram_shapes": ECP5_BRAM_SHAPES, "fmax_goal_mhz": 150.0, "packed_tail": True,
                 "nextpnr": PLACER, "place_seeds": (5,)},
    "ecp5-85k": {"family": "ecp5", "device": ["--85k", "--package", "CABGA381", "--speed", "6"],
                 "bram": "DP16KD", "dsp": "MULT18X18D", "block_bits": 18432, "blocks": 208, "weights": "rom",
                 "bram_shapes": ECP5_BRAM_SHAPES, "fmax_goal_mhz": 120.0, "packed_tail": True,
                 "nextpnr": PLACER},
    "ice40-up5k": {"family": "ice40", "device": ["--up5k", "--package", "sg48"],
                   "bram": "SB_RAM40_4K", "dsp": "SB_MAC16", "block_bits": 4096, "blocks": 30, "weights": "load",
                   "spram": ("SB_SPRAM256KA", 16384 * 16, 4), "fmax_goal_mhz": 38.0,
                   # the UltraPlus is nearly full without it (95% of its cells for the digits MLP at N = 4;
                   # the packed tail's 280 LUTs and 160 flip-flops did not fit)
                   "packed_tail": False, "nextpnr": PLACER},
}
# plain `make synth`: the default network on these targets and N
DEFAULT_BUILD = {"ecp5-25k": 8, "ice40-up5k": 4}


def _run(cmd, log_path, cwd, timeout=3600, tool_log=None):
    """Run a tool; on failure a SpikeloomError with the last lines of its output, or of
    ``tool_log`` (the tool's own log file) where the output is empty (Yosys with ``-q``)."""
    # The YoWASP tools see only their working directory (a WASI sandbox): paths are relative to it.
    with open(log_path, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, cwd=cwd)
    if r.returncode:
        shown = Path(log_path)
        if not shown.read_text(errors="replace").strip() and tool_log is not None and Path(tool_log).exists():
            shown = Path(tool_log)
        tail = shown.read_text(errors="replace").splitlines()[-15:]
        raise SpikeloomError(f"{Path(cmd[0]).name} failed (exit {r.returncode}); see {shown}:\n  "
                             + "\n  ".join(tail))


#: Yosys's ABC9 LUT mapping (synth_ecp5's ``map_luts``; Yosys 0.70 has no ``-noabc9``) can fail an
#: internal assertion when it puts ABC's result back into the netlist, on some netlists and not on
#: others that differ in a few cells (``Assert `GetSize(conn.first) == GetSize(conn.second)'
#: failed`` after ``ABC_OPS_REINTEGRATE``). ``step_synthesis`` then runs synth_ecp5 again with
#: ``map_luts`` done by classic ABC (:func:`~spikeloom.flows.export.ecp5_synth_script`, ``classic_abc``).
ABC9_FAILURE = re.compile(r"Executing ABC[^\n]*\n(?:(?![^\n]*Executing )[^\n]*\n)*ERROR: Assert")


def abc9_failed(yosys_log):
    """True when the Yosys log ends in an assertion failure within an ABC9 step (:data:`ABC9_FAILURE`)."""
    text = Path(yosys_log).read_text(errors="replace")[-20000:] if Path(yosys_log).exists() else ""
    return bool(ABC9_FAILURE.search(text))


def check_fits(target, plan, weights):
    """A clear error, before any tool runs, when the weight memories cannot be placed as asked."""
    t = TARGETS[target]
    bits, depth, width = plan.weight_memory_bits, plan.weight_depth, plan.word_bits
    if weights == "load" and "spram" in t:
        cell, spram_bits, count = t["spram"]
        # one memory per PE, each on whole SPRAMs (16-bit words: a narrower weight still takes a word)
        per_pe = math.ceil(depth / (spram_bits // 16)) * math.ceil(width / 16)
        if per_pe * plan.n_pe > count:
            raise SpikeloomError(
                f"{target} --weights load: every PE's weight memory ({depth} x {width} bits) takes {per_pe} "
                f"{cell}, {per_pe * plan.n_pe} for N = {plan.n_pe}; the device has {count}. Use a smaller N.")
        return
    # (a paired plan reads the weights through two ports: a dual-port DP16KD holds them once, the
    # iCE40's block RAM, one read port, twice)
    per_pe = math.ceil(depth * width / t["block_bits"]) * (2 if plan.paired and t["family"] == "ice40" else 1)
    # on ECP5 every PE's bias and threshold memories are block RAM too (flows/export.py BRAM_MEMORIES)
    params = (len(BRAM_MEMORIES) * min(bram_blocks(s, plan.neuron_depth, plan.membrane_bits) for s in t["bram_shapes"])
              if t["family"] == "ecp5" else 0)
    if (per_pe + params) * plan.n_pe > t["blocks"]:
        hint = (" Use --weights load (the weights in SPRAM, streamed in after reset)." if "spram" in t else
                " Use a larger device, another N or fewer weight bits.")
        also = f" and the biases and thresholds {params}" if params else ""
        raise SpikeloomError(
            f"{target} --weights {weights}: the weights take {bits / 1024:.0f} kbit, at least {per_pe} "
            f"{t['bram']} per PE{also}, {(per_pe + params) * plan.n_pe} for N = {plan.n_pe}; the device has "
            f"{t['blocks']} ({t['blocks'] * t['block_bits'] // 1024} kbit).{hint}")


def step_export(model_path, n_pe, work, weights="rom", log=print, bank_depth=None, freq_mhz=100.0, packed_tail=True):
    # the synthesis work folder is spikeloom's own (under --build): an export folder written before
    # the output marker existed is replaced file by file (force; files it does not write stay);
    # its constraint examples name the target's goal
    files = export(model_path, n_pe, work / "export", freq_mhz=freq_mhz, weights=weights, force=True,
                   bank_depth=bank_depth, packed_tail=packed_tail)
    rtl = [work / "export" / "rtl" / "spikeloom_accel.v", work / "export" / "rtl" / f"{TOP}.v"]
    if not all(p.exists() and p.stat().st_size for p in rtl):
        raise SpikeloomError(f"export wrote no Verilog under {work / 'export'}")
    log(f"[export] {len(files)} files under {work / 'export'}")
    return rtl


def bram_blocks(shape, depth, width):
    """Block RAMs of configuration ``shape`` = (depth, width) that a ``depth`` x ``width`` memory takes."""
    return math.ceil(depth / shape[0]) * math.ceil(width / shape[1])


def weight_bank_depth(target, depth, width, weights):
    """The weight memory's bank depth on ``target`` (``BankedROM``, ``--weight-bank-depth``), or None
    for one memory: the block RAM configuration that holds ``depth`` x ``width`` in the fewest
    blocks, and of those the widest (shallowest), so that Yosys has no other way to map a bank in
    as few blocks (a deeper bank it may split by depth again, behind a multiplexer). Banks make
    every block's read data end in a register of its own (which :func:`absorb_output_registers`
    moves into the block) instead of passing the depth multiplexer first; a memory one
    configuration deep needs none."""
    shapes = TARGETS[target].get("bram_shapes")
    if weights != "rom" or not shapes:
        return None
    bd, _ = min(shapes, key=lambda s: (bram_blocks(s, depth, width), s[0]))
    return bd if depth > bd else None


# Output registers of ECP5 hard blocks that absorb_output_registers fills with the fabric
# flip-flops registering the block's outputs: cell type -> [(output pins, clock pin, parameters
# that must hold before, parameters set after, pins that must be constant before, pins tied after,
# the register's enable pin or None)]. DP16KD: each read port's REGMODE, its enable the port's
# output clock enable OCE (flip-flops with one enable, e.g. the event pipeline's rows word, which
# holds while RW stalls; the port's read enable then holds the word it registers);
# MULT18X18D: the output register (P) on clock CLK0, with its enable CE0 tied to 1 and reset RST0
# to 0 (Yosys leaves every register of the block unused).
HARD_BLOCK_REGISTERS = {
    "DP16KD": [([f"DO{p}{i}" for i in range(18)], f"CLK{p}", {f"REGMODE_{p}": "NOREG", f"CLK{p}MUX": f"CLK{p}"},
                {f"REGMODE_{p}": "OUTREG"}, {f"OCE{p}": "1", f"RST{p}": "0"}, {}, f"OCE{p}") for p in "AB"],
    "MULT18X18D": [([f"P{i}" for i in range(36)], "CLK0", {"REG_OUTPUT_CLK": "NONE"},
                    {"REG_OUTPUT_CLK": "CLK0", "REG_OUTPUT_CE": "CE0", "REG_OUTPUT_RST": "RST0"},
                    {}, {"CE0": "1", "RST0": "0"}, None)],
}


# The input registers likewise (fabric flip-flops that drive the block's input pins, a copy per
# block): MULT18X18D's A and B registers on clock CLK0.
HARD_BLOCK_INPUT_REGISTERS = {
    "MULT18X18D": [([f"{g}{i}" for i in range(18)], "CLK0", {f"REG_INPUT{g}_CLK": "NONE"},
                    {f"REG_INPUT{g}_CLK": "CLK0", f"REG_INPUT{g}_CE": "CE0", f"REG_INPUT{g}_RST": "RST0"},
                    {}, {"CE0": "1", "RST0": "0"}) for g in "AB"],
}


def absorb_output_registers(net_path):
    """Move the flip-flops that register a hard block's outputs into the block's own output
    register (:data:`HARD_BLOCK_REGISTERS`: a DP16KD read port's ``REGMODE = "OUTREG"``, a
    MULT18X18D's output register), in the Yosys JSON netlist ``net_path`` (rewritten in place).
    Yosys maps those registers to fabric flip-flops, so every path from a block RAM starts with its
    slow clock-to-output and every multiply ends with a route to the fabric.

    A group of outputs qualifies when each output that is used drives exactly one flip-flop (its
    D input, nothing else, no top-level port) that has no reset and one clock, not inverted (for a
    DP16KD port: the port's clock, with its output enable 1 and reset 0), and no enable, or for a
    DP16KD one enable net, not inverted, shared by the group (it becomes the port's ``OCE``); a group
    of inputs when each input that is not constant is such a flip-flop's output (the block then
    registers the flip-flop's D itself; the flip-flop stays while other cells read it). The
    block's register holds, every cycle, what those flip-flops held (the initial value aside, which
    the design does not rely on: ``BankedROM``'s registers and the PE's ``w1``, ``w3``, ``val3``
    and ``prod4`` are ``reset_less``). Returns the number of groups moved."""
    net = json.loads(Path(net_path).read_text())
    top = next(m for m in net["modules"].values() if m.get("attributes", {}).get("top"))
    cells = top["cells"]
    outs = {b for p in top["ports"].values() if p["direction"] != "input" for b in p["bits"]}
    sinks, drivers = {}, {}  # net -> [(cell, pin) reading it]; net -> (cell, pin) driving it
    for name, c in cells.items():
        for port, bits_ in c["connections"].items():
            for b in bits_:
                if isinstance(b, str):
                    continue
                if c["port_directions"].get(port) == "output":
                    drivers[b] = (name, port)
                else:
                    sinks.setdefault(b, []).append((name, port))

    def enabled_ff(name):
        """(clock net, enable net or None) of a flip-flop on the rising edge without reset whose
        enable is absent or one net, not inverted; else None."""
        c = cells[name]
        if c["type"] != "TRELLIS_FF" or c["parameters"].get("CLKMUX", "CLK").strip() != "CLK":
            return None
        con, par = c["connections"], c["parameters"]
        cemux, lsrmux = par.get("CEMUX", "CE").strip(), par.get("LSRMUX", "LSR").strip()
        ce = con.get("CE", ["1"])
        no_ce = cemux == "1" or (cemux == "CE" and ce == ["1"])
        one_ce = cemux == "CE" and len(ce) == 1 and not isinstance(ce[0], str)
        no_lsr = lsrmux == "0" or (lsrmux == "LSR" and con.get("LSR", ["0"]) == ["0"])
        clk = con.get("CLK", ["x"])
        if not no_lsr or isinstance(clk[0], str) or not (no_ce or one_ce):
            return None
        return clk, (None if no_ce else ce)

    def plain_ff(name):
        """The clock net of a flip-flop without enable or reset on the rising edge, else None."""
        got = enabled_ff(name)
        return got[0] if got and got[1] is None else None

    def unused(c, before, fixed, tie):
        """The block's register is free: its parameters as Yosys leaves them, the pins ``fixed``
        constant, the pins to ``tie`` unconnected or already tied so."""
        con, par = c["connections"], c["parameters"]
        return (all(par.get(k, v).strip() == v for k, v in before.items())
                and all(con.get(k) == [v] for k, v in fixed.items())
                and all(con.get(k, ["0"]) in (["0"], [v]) for k, v in tie.items()))

    def enable(c, clk_pin, clk, tie, after):
        """Turn the block's register on: its clock, the tied pins, its parameters."""
        for pin, v in {clk_pin: clk, **{k: [v] for k, v in tie.items()}}.items():
            c["connections"][pin] = v
            c["port_directions"][pin] = "input"
        c["parameters"].update(after)

    changed, drop = 0, set()
    for name, c in cells.items():
        con = c["connections"]
        for pins, clk_pin, before, after, fixed, tie, ce_pin in HARD_BLOCK_REGISTERS.get(c["type"], []):
            if not unused(c, before, fixed, tie):
                continue
            clk, ce, moves = con.get(clk_pin), False, []   # ce: the group's enable net (None: none), False: not seen
            for pin in pins:
                b = con.get(pin, ["x"])[0]
                if not isinstance(b, str) and b in outs:  # read by a top-level port: not a register's alone
                    moves = None
                    break
                if isinstance(b, str) or not sinks.get(b):
                    continue
                s = sinks[b]
                got = enabled_ff(s[0][0]) if len(s) == 1 and s[0][1] == "DI" and s[0][0] not in drop else None
                if (got is None or (clk is not None and got[0] != clk) or (got[1] is not None and ce_pin is None)
                        or (ce is not False and got[1] != ce)):
                    moves = None
                    break
                clk, ce = got
                moves.append((pin, s[0][0]))
            if not moves:
                continue
            for pin, ff in moves:
                con[pin] = cells[ff]["connections"]["Q"]
                drop.add(ff)
            enable(c, clk_pin, clk, tie, after)
            if ce:
                con[ce_pin] = ce
            changed += 1
    # Input registers: a flip-flop may feed several blocks (Yosys merges the equal operand
    # registers of the PEs) and other logic; each block takes a copy of it (its D net, its own
    # register), and the flip-flop goes only when nothing else reads it. (``drivers`` may name a
    # flip-flop dropped above as a Q net's driver; ``drop`` excludes it.)
    moved = set()  # (cell, pin) no longer reading a flip-flop's Q
    for name, c in cells.items():
        con = c["connections"]
        for pins, clk_pin, before, after, fixed, tie in HARD_BLOCK_INPUT_REGISTERS.get(c["type"], []):
            if not unused(c, before, fixed, tie):
                continue
            clk = con.get(clk_pin)
            if clk is not None and clk != ["0"] and isinstance(clk[0], str):
                continue
            clk, moves = (None if clk in (None, ["0"]) else clk), {}
            for pin in pins:
                b = con.get(pin, ["0"])[0]
                if isinstance(b, str):
                    continue
                ff, port = drivers.get(b, (None, None))
                ff_clk = plain_ff(ff) if port == "Q" and ff not in drop else None
                if ff_clk is None or (clk is not None and ff_clk != clk):
                    moves = None
                    break
                clk = ff_clk
                moves[pin] = ff
            if not moves:
                continue
            for pin, ff in moves.items():
                con[pin] = cells[ff]["connections"]["DI"]
                moved.add((name, pin))
            enable(c, clk_pin, clk, tie, after)
            changed += 1
    for name, c in cells.items():
        if c["type"] == "TRELLIS_FF" and name not in drop:
            q = c["connections"].get("Q", ["x"])[0]
            if not isinstance(q, str) and q not in outs and sinks.get(q) and \
                    all(s in moved for s in sinks[q]):
                drop.add(name)
    for ff in drop:
        del cells[ff]
    tmp = Path(str(net_path) + ".tmp")
    tmp.write_text(json.dumps(net))
    tmp.replace(net_path)
    return changed


def lutram_memories(target, ports):
    """``{memory name: ram_style}`` of the per-neuron memories that ``step_synthesis`` marks: kept out
    of block RAM (acc, membrane), or in it at any depth (bias, threshold)."""
    return ecp5_ram_styles(ports.memories) if TARGETS[target]["family"] == "ecp5" else {}


def step_synthesis(target, rtl, work, ports, log=print):
    """Yosys synthesis to a JSON netlist; checks that every PE's weight memory is in block RAM
    (SPRAM for a loaded weight memory on iCE40 UltraPlus). Returns the netlist, its cell counts
    by type and the Yosys synthesis command that made it (:func:`abc9_failed`)."""
    t = TARGETS[target]
    net = work / "synth.json"
    if net.exists():
        net.unlink()
    spram = ports.weights_loaded and "spram" in t
    cmd = "synth_ecp5" if t["family"] == "ecp5" else "synth_ice40 -dsp -device u" + (" -spram" if spram else "")
    srcs = " ".join(str(Path(p).relative_to(work)) for p in rtl)
    # the weight memories (no initial contents, one address) go to SPRAM: Yosys picks it only on request
    mark = 'setattr -set ram_style "huge" m:weight; ' if spram else ""
    for name, style in lutram_memories(target, ports).items():
        mark += f'setattr -set ram_style "{style}" m:{name}; '
    def run(synth):
        script = f"read_verilog {srcs}; {mark}{synth}; tee -q -o stat.txt stat"
        _run([_tool("yosys"), "-q", "-l", "yosys.log", "-p", script], work / "yosys.out", work,
             tool_log=work / "yosys.log")

    log(f"[synthesis] yosys {cmd} ({target})")
    cmd = ecp5_synth_script(TOP, net.name) if t["family"] == "ecp5" else f"{cmd} -top {TOP} -json {net.name}"
    (work / "yosys_abc9.log").unlink(missing_ok=True)   # an earlier build's
    try:
        run(cmd)
    except SpikeloomError:
        if t["family"] != "ecp5" or not abc9_failed(work / "yosys.log"):
            raise
        (work / "yosys.log").replace(work / "yosys_abc9.log")
        cmd = ecp5_synth_script(TOP, net.name, classic_abc=True)
        log(f"[synthesis] Yosys's ABC9 LUT mapping failed an internal assertion (see {work / 'yosys_abc9.log'}); "
            f"again with classic ABC: yosys {cmd}")
        run(cmd)
    if not net.exists():
        raise SpikeloomError(f"yosys wrote no netlist {net}")
    cells = json.loads(net.read_text())["modules"][TOP]["cells"]
    types = {}
    for c in cells.values():
        types[c["type"]] = types.get(c["type"], 0) + 1
    # every PE's weight memory: the block RAM cells named after it, and enough of them to hold it
    wmem = ports.memory("weight", 0)
    ram, block_bits = (t["spram"][0], t["spram"][1]) if spram else (t["bram"], t["block_bits"])
    need = math.ceil(wmem.depth * wmem.width / block_bits)
    for p in range(ports.n_pe):
        pat = re.compile(rf"(^|\.)pe_{p}\.weight(\.|$)")
        got = sum(1 for name, c in cells.items() if c["type"] == ram and pat.search(name))
        if got < need:
            raise SpikeloomError(
                f"{target}: the weight memory of pe_{p} ({wmem.depth} x {wmem.width} bits) is not in "
                f"block RAM: {got} {ram} cells for it, at least {need} needed; Yosys mapped it to logic "
                f"(see {work / 'stat.txt'}). The device has too few block RAMs for this model and N, or the "
                f"memory's shape does not fit a block RAM port.")
    return net, types, cmd


#: nextpnr's placement seed of a build unless ``--place-seeds`` names others or the target has its
#: own (``place_seeds`` in :data:`TARGETS`).
PLACE_SEEDS = (1,)
#: The seeds ``--place-seeds`` takes (nextpnr's ``--seed`` is a signed 32-bit int; 0 and below are
#: left out so that a seed is never confused with "no seed").
PLACE_SEED_RANGE = (1, 2**31 - 1)


def seed_folder(work, seed, seeds):
    """Where nextpnr's files of placement seed ``seed`` go: the build's folder itself when it is
    the only seed, else ``seed-<seed>/`` in it."""
    return work if len(seeds) == 1 else work / f"seed-{seed}"


def step_place_route(target, net, work, freq, log=print, seed=1):
    """nextpnr on the netlist ``net`` with placement seed ``seed``, its files (``nextpnr.log``,
    ``report.json``, the routed design) in ``work``. Returns the report and the routed design."""
    t = TARGETS[target]
    work.mkdir(parents=True, exist_ok=True)
    report = work / "report.json"
    for p in (report, work / "top.config", work / "top.asc"):
        if p.exists():
            p.unlink()
    common = ["--json", os.path.relpath(net, work), "--report", report.name, "--freq", f"{freq:g}",
              "--seed", str(seed), "--timing-allow-fail"]
    if t["family"] == "ecp5":
        out = work / "top.config"
        cmd = [_tool("nextpnr-ecp5"), *t["device"], *common, *t.get("nextpnr", ()), "--lpf-allow-unconstrained",
               "--textcfg", out.name]
    else:
        out = work / "top.asc"
        cmd = [_tool("nextpnr-ice40"), *t["device"], *common, *t.get("nextpnr", ()), "--pcf-allow-unconstrained",
               "--asc", out.name]
    log(f"[place_route] nextpnr-{t['family']} {' '.join(t['device'])} --freq {freq:g} --seed {seed}")
    _run(cmd, work / "nextpnr.log", work)
    if not report.exists() or not out.exists():
        raise SpikeloomError(f"nextpnr wrote no report or no routed design; see {work / 'nextpnr.log'}")
    return json.loads(report.read_text()), out


def _resources(target, rep, types, ports):
    t = TARGETS[target]
    u = rep["utilization"]

    def get(key):
        v = u.get(key, {"used": 0, "available": 0})
        return {"used": int(v["used"]), "available": int(v["available"])}

    if t["family"] == "ecp5":
        return {"luts": get("TRELLIS_COMB"), "ffs": get("TRELLIS_FF"), "brams": get("DP16KD"),
                "dsps": get("MULT18X18D"), "lutram": get("TRELLIS_RAMW")}
    lc = get("ICESTORM_LC")
    ffs = sum(n for ty, n in types.items() if ty.startswith("SB_DFF"))
    # SB_CARRY is the carry chain beside a logic cell's LUT, not a LUT of its own: LUTs are SB_LUT4 alone
    luts = types.get("SB_LUT4", 0)
    return {"luts": {"used": luts, "available": lc["available"]}, "ffs": {"used": ffs, "available": lc["available"]},
            "logic_cells": lc, "brams": get("ICESTORM_RAM"), "dsps": get("ICESTORM_DSP"),
            "sprams": get("ICESTORM_SPRAM")}


def _path_cells(steps_):
    out, t = [], 0.0
    for s in steps_:
        t += s["delay"]
        if s["type"] == "routing":
            continue
        cell = s["to"]["cell"]
        short = cell if len(cell) <= 90 else cell[:60] + "..." + cell[-27:]
        if out and out[-1]["cell"] == short:
            out[-1]["at_ns"] = round(t, 2)
        else:
            out.append({"cell": short, "type": s["type"], "at_ns": round(t, 2)})
    return out


def step_timing(rep, work, log=print):
    """fmax of the clock and a summary of the critical path, from nextpnr's report."""
    fm = rep.get("fmax") or {}
    if not fm:
        raise SpikeloomError(f"nextpnr's report has no fmax; see {work / 'nextpnr.log'}")
    clk, v = min(fm.items(), key=lambda kv: kv[1]["achieved"])
    path = {}
    # the register-to-register path of that clock, the one that sets fmax (the report also lists
    # unconstrained <async> paths through the I/O, e.g. the combinational result-byte read-out)
    own = [c for c in rep.get("critical_paths", []) if c["from"] == c["to"] and clk in c["from"]]
    if own:
        cp = max(own, key=lambda c: sum(s["delay"] for s in c["path"]))
        steps_ = cp["path"]
        through = []
        for s in steps_:
            cell = s["to"]["cell"].split("$")[0]
            part = ".".join(cell.split(".")[:2]) if cell.startswith(("pe_", "core.")) else cell.split(".")[0]
            part = re.sub(r"_(TRELLIS|LUT4|CCU2|L6MUX|PFUMX|DPRAM|SB_).*", "", part)
            if part and (not through or through[-1] != part):
                through.append(part)
        path = {"from": steps_[0]["from"]["cell"], "to": steps_[-1]["to"]["cell"],
                "delay_ns": round(sum(s["delay"] for s in steps_), 2),
                "logic_ns": round(sum(s["delay"] for s in steps_ if s["type"] != "routing"), 2),
                "routing_ns": round(sum(s["delay"] for s in steps_ if s["type"] == "routing"), 2),
                "through": through[:24],
                # every cell the path enters, with the delay up to and including it (nextpnr's names:
                # the RTL signal a LUT/carry/RAM cell drives, then the primitive's suffixes)
                "cells": _path_cells(steps_)}
    return float(v["achieved"]), clk, path


def step_bitstream(target, routed, work, log=print):
    t = TARGETS[target]
    if t["family"] == "ecp5":
        bit = work / f"{TOP}.bit"
        cmd = [_tool("ecppack"), "--compress", os.path.relpath(routed, work), bit.name]
    else:
        bit = work / f"{TOP}.bin"
        cmd = [_tool("icepack"), os.path.relpath(routed, work), bit.name]
    if bit.exists():
        bit.unlink()
    log(f"[bitstream] {Path(cmd[0]).name} -> {bit}")
    _run(cmd, work / "pack.log", work)
    if not bit.exists() or bit.stat().st_size < 1024:
        raise SpikeloomError(f"no bitstream at {bit}")
    return bit


def _throughput(n_pe, fmax, model_path, build, pack=True, pair=True):
    """Peak synaptic operations per second and images per second at the measured cycles per inference
    (``pack``: the design packs last chunks, as ``make sim``'s does; ``pair``: it pairs events,
    as a design with initialised weight memories does)."""
    out = {"peak_sops": n_pe * fmax * 1e6}
    rep = Path(build) / "report.json"
    if rep.exists():
        r = json.loads(rep.read_text())
        cos = r.get("cosim") or {}
        # the last make sim's figures count only if it co-simulated this very model file (make sim
        # NET=vgg writes the same report.json) and the file has not been rewritten since
        mf = (r.get("model") or {}).get("model_file")
        same = (mf is not None and Path(mf).resolve() == Path(model_path).resolve()
                and rep.stat().st_mtime >= Path(model_path).stat().st_mtime)
        # (the same design: N and packed tail; a report from before the packed tail does not say)
        # (a report from before paired events had none)
        if (same and cos.get("packed_tail") == pack and cos.get("paired_events", False) == pair
                and cos.get("n_pe") == n_pe and cos.get("cycles_mean")):
            out.update({"cycles_mean": cos["cycles_mean"], "cycles_to_bound": cos.get("cycles_to_bound"),
                        "images_per_s": fmax * 1e6 / cos["cycles_mean"],
                        "cycles_source": f"{rep} cosim ({cos.get('simulator')}, {cos.get('n_images')} images)"})
            return out
    c = model_cycles(model_path, n_pe, pack, pair)
    if c is not None:
        out.update({"cycles_mean": c["cycles_mean"], "cycles_to_bound": c["cycles_to_bound"],
                    "images_per_s": fmax * 1e6 / c["cycles_mean"],
                    "cycles_source": f"hw/perf.py cycle model ({c['n_images']} test images of {c['dataset']}, "
                                     "input stream without idle cycles; the RTL's own count, as the tests check)"})
    return out


def model_cycles(model_path, n_pe, pack=True, pair=True):
    """Mean cycles per inference and cycles-to-bound of ``model_path`` on ``n_pe`` PEs (``pack``,
    ``pair``: ``Plan``'s) over its test images, from the cycle model (no co-simulation needed); None when its
    dataset is not at hand."""
    from spikeloom.hw.plan import Plan
    from spikeloom.model import golden
    from spikeloom.model.data import load_dataset

    from .common import dataset_options
    from .energy import cycles_model

    qm = modelfile.load(model_path)
    if not qm.dataset:
        return None
    try:
        seed, size, channels = dataset_options(qm, qm.dataset)
        split = load_dataset(qm.dataset, seed=seed, size=size, channels=channels)
    except (SpikeloomError, OSError, ValueError):
        return None  # e.g. an image folder that is not on this machine
    x = golden.quantize_input(qm, split.test.x)
    plan = Plan(qm, n_pe, pack=pack, pair=pair)
    res = golden.run(qm, x, trace=True, sparse=plan.sparse_layers)
    cyc = cycles_model(qm, n_pe, x, res, plan).astype(float)
    bound = res.cycle_bound(qm, n_pe).astype(float)
    return {"cycles_mean": float(cyc.mean()), "cycles_to_bound": float(cyc.mean() / bound.mean()),
            "n_images": len(x), "dataset": qm.dataset}


def _check_target_name(target):
    if target not in TARGETS:
        raise SpikeloomError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}")


def check_target(target, model_path, n_pe, weights=None, plan_out=None):
    """The checks before any tool runs: the target, the weight store, the generator's plan of the
    model at N and :func:`check_fits`. Returns the weight store (``weights`` None: the target's);
    the plan is appended to the list ``plan_out`` when given."""
    from spikeloom.hw.plan import WEIGHT_STORES, Plan

    _check_target_name(target)
    weights = TARGETS[target]["weights"] if weights is None else weights
    if weights not in WEIGHT_STORES:
        raise SpikeloomError(f"--weights must be one of {', '.join(WEIGHT_STORES)}, got {weights!r}")
    try:
        plan = Plan(modelfile.load(model_path), n_pe, pair=weights == "rom")
    except (TypeError, ValueError) as e:
        raise SpikeloomError(str(e)) from e
    check_fits(target, plan, weights)
    if plan_out is not None:
        plan_out.append(plan)
    return weights


def run_target(target, model_path, n_pe, build=Path("build"), weights=None, log=print, place_seeds=None):
    """The flow for one target and N; returns the target's entry of synth.json.

    ``weights``: ``"rom"`` or ``"load"`` (hw/plan.py ``WEIGHT_STORES``); None: the target's default.
    ``place_seeds``: nextpnr placement seeds to place and route the one netlist with, one after
    the other (default: the target's, else :data:`PLACE_SEEDS`); the entry and the bitstream are the fastest seed's
    (the first listed among equals), ``place_seeds`` in the entry lists every seed's fmax and
    critical path.
    """
    seeds = tuple(place_seeds or TARGETS.get(target, {}).get("place_seeds", PLACE_SEEDS))
    plans = []
    t, weights = TARGETS.get(target), check_target(target, model_path, n_pe, weights, plans)
    bank_depth = weight_bank_depth(target, plans[0].weight_depth, plans[0].word_bits, weights)
    work = Path(build) / "synth" / f"{target}-n{n_pe}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rtl = step_export(model_path, n_pe, work, weights=weights, log=log, bank_depth=bank_depth,
                      freq_mhz=t["fmax_goal_mhz"], packed_tail=t["packed_tail"])
    ports = Ports.load(work / "export" / "ports.json")
    net, types, yosys_cmd = step_synthesis(target, rtl, work, ports, log=log)
    if t["family"] == "ecp5":
        absorbed = absorb_output_registers(net)
        log(f"[synthesis] {absorbed} DP16KD read ports / MULT18X18D take their data register as output register"
            + (f"; weight memories in banks of {bank_depth} words" if bank_depth else ""))
    freq = t["fmax_goal_mhz"]
    # nextpnr's files of an earlier build of this folder with other seeds go, so that every seed's
    # files here are this build's (the folder is the flow's own, build/synth/<target>-n<N>)
    keep = {seed_folder(work, s, seeds) for s in seeds}
    for old in work.glob("seed-*"):
        if old.is_dir() and old not in keep:
            shutil.rmtree(old)
    if work not in keep:
        for name in ("nextpnr.log", "report.json", "top.config", "top.asc"):
            (work / name).unlink(missing_ok=True)
    tries, best = [], None
    for seed in seeds:
        folder = seed_folder(work, seed, seeds)
        rep, routed = step_place_route(target, net, folder, freq, log=log, seed=seed)
        res = _resources(target, rep, types, ports)
        for k, v in res.items():
            if v["available"] and v["used"] > v["available"]:
                raise SpikeloomError(f"{target}: {k} {v['used']} used > {v['available']} available")
        fmax, clk, path = step_timing(rep, folder, log=log)
        log(f"[timing] {clk}: fmax {fmax:.2f} MHz (goal {freq:g}, seed {seed}); critical path "
            f"{path.get('delay_ns')} ns through {' -> '.join(path.get('through', [])[:8])}")
        tries.append({"seed": seed, "fmax_mhz": round(fmax, 2), "critical_path_ns": path.get("delay_ns")})
        if best is None or fmax > best[0]:
            best = (fmax, seed, res, path, routed)
    fmax, seed, res, path, routed = best
    bit = step_bitstream(target, routed, work, log=log)
    fmax = round(fmax, 2)
    entry = {"n_pe": n_pe, "model": str(model_path), "weights": weights, **res, "fmax_mhz": fmax,
             "fmax_goal_mhz": freq, "place_seed": seed, "place_seeds": tries,
             "fmax_ok": fmax >= freq, "weight_bank_depth": bank_depth, "packed_tail": t["packed_tail"],
             "paired_events": weights == "rom",
             "yosys_synth": yosys_cmd, "critical_path": path, "bitstream": str(bit),
             "throughput": _throughput(n_pe, fmax, model_path, build, t["packed_tail"], weights == "rom"),
             "wall_s": round(time.perf_counter() - t0, 1)}
    return entry


def _fmt(r):
    return f"{r['used']}/{r['available']}"


def table(entries):
    rows = [["target", "N", "weights", "LUTs", "FFs", "BRAMs", "SPRAMs", "DSPs", "fmax (MHz)", "peak GSOP/s",
             "images/s", "cycles/bound"]]
    for target, e in entries:
        th = e.get("throughput", {})
        rows.append([target, str(e["n_pe"]), e.get("weights", "rom"), _fmt(e["luts"]), _fmt(e["ffs"]),
                     _fmt(e["brams"]), _fmt(e["sprams"]) if "sprams" in e else "-", _fmt(e["dsps"]),
                     f"{e['fmax_mhz']:.1f}", f"{th.get('peak_sops', 0) / 1e9:.2f}",
                     f"{th['images_per_s']:.0f}" if "images_per_s" in th else "-",
                     f"{th['cycles_to_bound']:.3f}" if th.get("cycles_to_bound") else "-"])
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for target in sorted({r["target"] for r in runs}):
        rs = sorted((r for r in runs if r["target"] == target), key=lambda r: r["n_pe"])
        n = [r["n_pe"] for r in rs]
        for key, style in (("luts", "o-"), ("ffs", "s--"), ("brams", "^-"), ("dsps", "d:")):
            a1.plot(n, [100 * r[key]["used"] / max(r[key]["available"], 1) for r in rs], style,
                    label=f"{target} {key}")
        a2.plot(n, [r["fmax_mhz"] for r in rs], "o-", label=target)
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.set_xlabel("N (processing elements)")
        a.grid(alpha=0.3)
    a1.set_ylabel("utilisation (%)")
    a1.legend(fontsize=6)
    a2.set_ylabel("fmax (MHz, nextpnr)")
    a2.legend(fontsize=7)
    fig.suptitle("spikeloom: resources and fmax against N (make synth)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def default_model(build=Path("build"), arch="mlp", log=print):
    """The model file in the run folder of ``make sim NET=<arch>`` (its other options at their
    defaults: ``BUILD/runs/digits-<arch>-<hash>/model.slm``). A model already there is used as it is; a
    missing one is trained and quantized first by the same cached steps, so ``make synth`` works on a
    fresh clone."""
    from spikeloom.model.train import TrainConfig

    from . import steps

    ctx = steps.RunContext(build=Path(build), train=TrainConfig(arch=arch))
    if not ctx.model_path.exists():
        log(f"[model] {ctx.model_path} does not exist: training the default {arch} model first (as make sim does)")
        steps.step_quantize(ctx, steps.step_train(ctx, log=log), log=log)
    return ctx.model_path


def _job(target, model_path, n_pe, build, weights, place_seeds=None):
    """One (target, N) on a worker: :func:`run_target`, its log in its work folder's ``flow.log``."""
    log_path = Path(build) / "synth" / f"{target}-n{n_pe}" / "flow.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as f:
        def log(*a):
            print(*a, file=f, flush=True)

        return run_target(target, model_path, n_pe, build, weights=weights, log=log, place_seeds=place_seeds)


def run(targets=None, pes=None, model_path=None, build=Path("build"), weights=None, log=print, scheduler=None,
        workers=None, arch="mlp", place_seeds=None):
    """Build every (target, N), each a task on Dask (:mod:`spikeloom.flows.cluster`: an embedded
    LocalCluster of ``workers`` processes, default one per job up to the CPUs, or the cluster of
    ``scheduler``); merge into ``build/synth.json`` in the order of the jobs (targets, then
    ``pes``); table and plot. Returns the report. ``model_path`` None: ``make sim NET=<arch>``'s
    model (:func:`default_model`, trained first if missing, once the cluster is there). Every job
    is checked (:func:`check_target`) before any runs; a job that fails is reported after the
    others' results are written, then raised."""
    import os
    import uuid

    from . import cluster, progress

    scheduler, workers = cluster.check_args(scheduler, workers)
    build = Path(build)
    jobs = [(t, n) for t in (targets or DEFAULT_BUILD) for n in (pes or [DEFAULT_BUILD.get(t, 8)])]
    for t, _ in jobs:
        _check_target_name(t)
    if model_path is not None:
        model_path = Path(model_path)
        if not model_path.exists():
            raise SpikeloomError(f"model file {model_path} does not exist")
        modelfile.load(model_path)
        for t, n in jobs:
            check_target(t, model_path, n, weights)
    if scheduler is None:
        workers = min(workers or os.cpu_count() or 1, len(jobs))
    results = {}
    with cluster.connect(scheduler, workers) as (client, where):
        if model_path is None:  # trained (if missing) only once the cluster is known to be there
            model_path = default_model(build, arch, log=log)
            for t, n in jobs:
                check_target(t, model_path, n, weights)
        token = uuid.uuid4().hex[:8]
        # the workers' paths are absolute: their working folder need not be this one
        futures = {client.submit(_job, t, model_path.absolute(), n, build.absolute(), weights, place_seeds,
                                 key=f"synth-{t}-n{n}-{token}", pure=False): (t, n) for t, n in jobs}
        with progress.step("synth", None, f"{len(jobs)} builds ({', '.join(f'{t} N = {n}' for t, n in jobs)}) "
                           f"on {where}; each logs to {build / 'synth' / '<target>-n<N>' / 'flow.log'}") as bar:
            bar.count(len(jobs), "builds")
            for fut in cluster.completed(futures):
                target, n = futures[fut]
                try:
                    e = fut.result()
                except Exception as exc:  # noqa: BLE001 -- the others' results are still written
                    results[(target, n)] = cluster.task_error(exc)
                    bar.wrap(log)(f"[synth] {target} N = {n}: FAILED: {results[(target, n)]}")
                    bar.update(1)
                    continue
                seeds = e.get("place_seeds", [])
                each = (f" (seed {e['place_seed']}; " + ", ".join(f"seed {s['seed']}: {s['fmax_mhz']}" for s in seeds)
                        + ")" if len(seeds) > 1 else "")
                bar.wrap(log)(f"[synth] {target} N = {n}: fmax {e['fmax_mhz']} MHz{each}, {e['luts']['used']} LUTs, "
                              f"{e['wall_s']} s; critical path {e['critical_path'].get('delay_ns')} ns")
                # the paths as the client gave them, not the workers' absolute ones
                e["model"] = str(model_path)
                e["bitstream"] = str(build / Path(e["bitstream"]).relative_to(build.absolute()))
                results[(target, n)] = e
                bar.update(1)
    out_path = build / "synth.json"
    report = json.loads(out_path.read_text()) if out_path.exists() else {}
    report.setdefault("targets", {})
    runs = [r for r in report.get("runs", []) if Path(r.get("model", "")).resolve() == model_path.resolve()]
    done, errors = [], []
    for target, n in jobs:  # in the jobs' order, whichever finished first
        e = results.get((target, n), "not run")
        if isinstance(e, str):
            errors.append(f"{target} N = {n}: {e}")
            continue
        report["targets"][target] = e
        runs = [r for r in runs if not (r["target"] == target and r["n_pe"] == n)] + [{"target": target, **e}]
        done.append((target, e))
    report["runs"] = sorted(runs, key=lambda r: (r["target"], r["n_pe"]))
    report["notes"] = {
        "fmax_mhz": "nextpnr's achieved fmax for clk after routing, of the fastest placement seed tried "
                    "(place_seed; default seed 1 only; --freq is the goal)",
        "place_seeds": "every nextpnr placement seed tried (--place-seeds): its fmax and critical path (ns); "
                       "the same netlist, so the spread is placement alone",
        "luts": "ECP5: TRELLIS_COMB (LUT4s incl. carry and LUTRAM halves); iCE40: SB_LUT4 cells, of the logic cells",
        "weights": "rom: weight memories initialised block RAM; load: no initial contents, streamed in after "
                   "reset (iCE40 UP5K: SB_SPRAM256KA, counted in sprams)",
        "critical_path": "nextpnr's register-to-register critical path of the clock (the one that sets fmax)",
        "yosys_synth": "the Yosys synthesis command of the netlist: on ECP5 the LUTs mapped by classic ABC "
                       "when Yosys's ABC9 mapping failed an internal assertion (its log kept as yosys_abc9.log)",
        "peak_sops": "N x fmax: one synaptic operation per PE per cycle (a paired layer's PEs do two: "
                     "hw/plan.py, \"Paired events\")",
        "images_per_s": "fmax / cycles per inference: measured by make sim's co-simulation of the same model "
                        "(build/report.json cosim), else the cycle model on the test images (cycles_source)",
    }
    build.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1) + "\n")
    if done:
        log(table(done))
    plot(report["runs"], build / "synth.png")
    log(f"wrote {out_path} and {build / 'synth.png'}")
    if errors:
        raise SpikeloomError("synth: " + "; ".join(errors))
    return report


def _int_list(option, text, lo, hi, distinct=False):
    """``text`` as comma-separated integers in ``[lo, hi]`` (argparse type of ``option``)."""
    try:
        vals = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{option} needs integers separated by commas, got {text!r}") from None
    if not vals or not all(lo <= v <= hi for v in vals):
        raise argparse.ArgumentTypeError(f"{option} values must lie in [{lo}, {hi}], got {text!r}")
    if distinct and len(set(vals)) != len(vals):
        raise argparse.ArgumentTypeError(f"{option} values must be distinct, got {text!r}")
    return vals


def _pes(text):
    from spikeloom.hw.plan import PES_RANGE

    return _int_list("--pes", text, *PES_RANGE)


def _place_seeds(text):
    return _int_list("--place-seeds", text, *PLACE_SEED_RANGE, distinct=True)


def main(argv=None):
    p = Parser(prog="spikeloom-synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=Path, default=Path("build"), help="output folder")
    p.add_argument("--target", action="append", choices=sorted(TARGETS),
                   help="repeatable; default: ecp5-25k (N = 8) and ice40-up5k (N = 4)")
    p.add_argument("--pes", type=_pes, default=None, help="N, or a comma-separated sweep (e.g. 1,2,4,8,16)")
    p.add_argument("--place-seeds", type=_place_seeds, default=None,
                   help="nextpnr placement seeds, comma-separated (e.g. 1,2,3): each build is placed and routed "
                        "once per seed, one after the other, and keeps the fastest (synth.json place_seeds lists "
                        f"them all); default: {','.join(map(str, PLACE_SEEDS))}, ecp5-25k "
                        f"{','.join(map(str, TARGETS['ecp5-25k']['place_seeds']))}")
    p.add_argument("--weights", choices=["rom", "load"], default=None,
                   help="rom: weights initialised in block RAM; load: no initial contents, streamed in after "
                        "reset (SPRAM on iCE40 UltraPlus). Default: per target (ECP5 rom, iCE40 UP5K load)")
    p.add_argument("--model", type=Path, default=None,
                   help="model file, or an arch name (mlp) for make sim NET=<arch>'s model (BUILD/runs/digits-<arch>-<hash>/"
                        "model.slm, trained first if missing); default: the default model")
    from . import cluster

    cluster.add_arguments(p, workers_help="worker processes of the embedded Dask LocalCluster, each running one "
                          "(target, N) build (default: one per build, up to the number of CPUs)")

    def job(a):
        scheduler, workers = cluster.check_args(a.scheduler, a.workers)
        model = a.model
        if model is not None and model.suffix != ".slm" and not model.exists():
            from spikeloom.model.snn import ARCHS

            if str(model) not in ARCHS:
                raise SpikeloomError(f"--model {model}: no such model file, and not an arch name "
                                     f"({', '.join(ARCHS)})")
            report = run(a.target, a.pes, None, a.build, a.weights, scheduler=scheduler, workers=workers,
                         arch=str(model), place_seeds=a.place_seeds)
        else:
            report = run(a.target, a.pes, model, a.build, a.weights, scheduler=scheduler, workers=workers,
                         place_seeds=a.place_seeds)
        bad = [t for t, e in report["targets"].items() if not e.get("fmax_ok")]
        if bad:
            print(f"spikeloom: warning: fmax below the goal on {', '.join(bad)}", file=sys.stderr)
    return parse_and_run(p, argv, job)


if __name__ == "__main__":
    sys.exit(main())
