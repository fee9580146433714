"""The co-simulation harness: a sim-only Verilog module around the generated core that runs free.

Driving every input value and every result handshake from Python through cocotb costs a few
microseconds of Python per clock cycle: the default digits MLP co-simulated at about 100k cycles/s.
:func:`harness_verilog` writes ``spikeloom_cosim``, a module that holds the core (``dut``) with

* its own clock (``always #``), so that no Python runs on a clock edge;
* every stream the bench drove, now in Verilog with the same rules: the input images (and a loaded
  design's weights first) from memories the bench fills with ``$readmemh``, valid dropped before a
  value for 1..:data:`~spikeloom.sim.streams.MAX_IDLE` cycles with probability ``idle``; each output
  stream's ready held low, with probability ``backpressure`` per transfer, until valid is high and
  then 1..:data:`~spikeloom.sim.streams.MAX_STALL` cycles more; the draws from seeded xorshift32
  generators, so stalls stay random and reproducible;
* results (and trace entries, tagged with the number of results before them) written to memories
  that the bench reads with ``$writememh`` once per round of images;
* the hold rule of :class:`~spikeloom.sim.streams.HoldRule` checked on every output stream at every
  rising edge (violations counted, the first one kept with its cycle and both payloads), and the
  stalled cycles counted;
* a watchdog: no result within ``patience`` cycles ends the round with ``timeout`` high, and the
  bench names the lost image.

The bench (:mod:`spikeloom.sim.tb_accel`) wakes twice per round: it writes the round's inputs,
raises ``go`` and waits for ``done`` or ``timeout``. A round is as many images as the memories hold.
Everything it compares is what it compared before: every result field against the golden model,
and with the trace port every spike.
"""

import zlib
from pathlib import Path

from .ports import Ports
from .streams import CLOCK_NS, MAX_IDLE, MAX_STALL

__all__ = ["TOP", "FILES", "Depths", "harness_verilog", "harness_public_vlt", "threshold", "parse_words", "unpack_word",
           "rounds"]

#: The harness's module name (the cocotb toplevel); the core is its instance ``dut``.
TOP = "spikeloom_cosim"
#: The files the harness reads and writes, relative to the simulator's working directory.
FILES = {"inputs": "cosim_inputs.hex", "weights": "cosim_weights.hex", "results": "cosim_results.hex",
         "trace": "cosim_trace.hex"}
#: Random draws compare 16 bits of a generator against ``threshold(p)``.
PROB_BITS = 16


def harness_public_vlt():
    """A Verilator configuration file that makes the harness's own signals visible through VPI (the
    bench reads and sets only those; the core stays private, so Verilator optimises it)."""
    return f'`verilator_config\npublic_flat_rw -module "{TOP}" -var "*"\n'


def threshold(p):
    """The 16-bit threshold of probability ``p`` (a draw below it happens)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability {p} outside [0, 1]")
    return min(int(round(p * (1 << PROB_BITS))), (1 << PROB_BITS))


def trace_per_timestep(ports: Ports):
    """The most trace entries one timestep of an image gives (one per update of a traced layer)."""
    return sum(ly.positions * ly.chunks for ly in ports.layers[:-1]) if ports.trace is not None else 0


class Depths:
    """Memory depths of a harness for ``ports``: a round holds ``images`` images (at most
    ``max_images``, default 1024, and as many as 2^17 input values allow); the trace memory at least
    2^16 entries per round and at least the most one image can give (every update of every traced
    layer in as many timesteps as the ``timesteps`` field counts), so any image fits in a round."""

    INPUT_VALUES = 1 << 17
    MAX_IMAGES = 1024
    TRACE = 1 << 16

    def __init__(self, ports: Ports, max_images=None):
        most = self.MAX_IMAGES if max_images is None else int(max_images)
        if most < 1:
            raise ValueError(f"a round holds at least one image, not {most}")
        self.images = max(1, min(most, self.INPUT_VALUES // ports.input_count))
        self.inputs = self.images * ports.input_count
        most = trace_per_timestep(ports) * ((1 << ports.result.field("timesteps").width) - 1)
        self.trace = max(self.TRACE, 1 << max(0, most - 1).bit_length()) if ports.trace is not None else 1
        self.weights = ports.weight_count if ports.weights_loaded else 1


assert MAX_IDLE <= 7 and MAX_STALL <= 7, "the harness draws idle and stall lengths from 3 bits"


def _salt(name):
    """A fixed, nonzero 32-bit constant per stream name, mixed into the seed of its generator."""
    return zlib.crc32(name.encode()) | 1


def _bits(n):
    """Bits of an unsigned counter that holds ``n``."""
    return max(1, int(n).bit_length())


def _sink(name, width, tag_width, depth, mem_width):
    """The Verilog of one output stream's sink: back-pressure, capture, hold rule, stall count."""
    capture = (f"{name}_mem[{name}_n] <= {{n_res, {name}_payload}};" if tag_width
               else f"{name}_mem[{name}_n] <= {name}_payload;")
    return f"""
  // ---- {name}: sink with random back-pressure, capture into {name}_mem, hold rule
  reg [31:0] {name}_rng;
  reg [1:0] {name}_st;            // 0: ready, 1: stalled until valid, 2: stalled for {name}_cnt more cycles
  reg [2:0] {name}_cnt;
  assign {name}_ready = running && {name}_st == 2'd0;
  reg [{mem_width - 1}:0] {name}_mem [0:{depth - 1}];
  reg [31:0] {name}_n;            // entries captured this round
  reg [31:0] {name}_overflow;     // entries beyond the memory
  reg [31:0] {name}_stalled;      // cycles with valid high and ready low (out of reset)
  // hold-rule violations: valid dropped / payload changed after a stall; the first of each kept
  reg [31:0] {name}_drops, {name}_changes;
  reg [63:0] {name}_drop_cycle, {name}_change_cycle;
  reg [{width - 1}:0] {name}_change_old, {name}_change_new;
  reg {name}_was_stalled;
  reg [{width - 1}:0] {name}_prev;
  wire [10:0] {name}_draw = {{3'd0, {name}_rng[23:16]}} * 11'd{MAX_STALL};
  wire [2:0] {name}_k = {name}_draw[10:8];   // uniform in 0..MAX_STALL-1
  wire {name}_stall = {{1'b0, {name}_rng[15:0]}} < bp_{name};
  always @(posedge clk) begin
    {name}_rng <= rst ? (seed ^ 32'h{_salt(name):08x}) | 32'd1 : xorshift({name}_rng);
    if (go) begin
      {name}_n <= 32'd0;
      {name}_overflow <= 32'd0;
      {name}_st <= {name}_stall ? 2'd1 : 2'd0;
    end else begin
      case ({name}_st)
        2'd0: if ({name}_valid && {name}_ready) begin
          if ({name}_n < {depth})
            {capture}
          else
            {name}_overflow <= {name}_overflow + 32'd1;
          {name}_n <= {name}_n + 32'd1;
          if ({name}_stall) {name}_st <= 2'd1;
        end
        // valid seen while stalled: this edge stalls, then k = 0..MAX_STALL-1 more (1..MAX_STALL in all)
        2'd1: if ({name}_valid) begin
          {name}_st <= {name}_k == 3'd0 ? 2'd0 : 2'd2;
          {name}_cnt <= {name}_k - 3'd1;
        end
        default: if ({name}_cnt == 3'd0) {name}_st <= 2'd0; else {name}_cnt <= {name}_cnt - 3'd1;
      endcase
    end
    // the hold rule (streams.HoldRule): a stall at an edge obliges the next edge to see valid high
    // and the same payload
    if ({name}_was_stalled && {name}_valid !== 1'b1) begin
      if ({name}_drops == 32'd0) {name}_drop_cycle <= cycle;
      {name}_drops <= {name}_drops + 32'd1;
    end else if ({name}_was_stalled && {name}_payload !== {name}_prev) begin
      if ({name}_changes == 32'd0) begin
        {name}_change_cycle <= cycle;
        {name}_change_old <= {name}_prev;
        {name}_change_new <= {name}_payload;
      end
      {name}_changes <= {name}_changes + 32'd1;
    end
    {name}_was_stalled <= {name}_valid && !{name}_ready && !rst;
    {name}_prev <= {name}_payload;
    if ({name}_valid && !{name}_ready && !rst) {name}_stalled <= {name}_stalled + 32'd1;
    if (rst) begin
      {name}_st <= 2'd0;
      {name}_n <= 32'd0;
    end
  end
  initial begin
    {name}_rng = 32'h{_salt(name):08x};
    {name}_st = 2'd0; {name}_cnt = 3'd0; {name}_n = 32'd0; {name}_overflow = 32'd0; {name}_stalled = 32'd0;
    {name}_drops = 32'd0; {name}_changes = 32'd0; {name}_drop_cycle = 64'd0; {name}_change_cycle = 64'd0;
    {name}_change_old = {width}'d0; {name}_change_new = {width}'d0; {name}_was_stalled = 1'b0; {name}_prev = {width}'d0;
  end
"""


def _source(name, width, depth, count_expr, start_expr):
    """The Verilog of one input stream's source: values from ``{name}_mem`` with random idle cycles."""
    return f"""
  // ---- {name}: source with random idle cycles, values from {name}_mem
  reg [31:0] {name}_rng;
  reg [{width - 1}:0] {name}_mem [0:{depth - 1}];
  reg [31:0] {name}_i;            // next value
  reg [2:0] {name}_idle;          // idle cycles left before it
  wire [10:0] {name}_draw = {{3'd0, {name}_rng[23:16]}} * 11'd{MAX_IDLE};
  wire [2:0] {name}_len = 3'd1 + {name}_draw[10:8];   // uniform in 1..MAX_IDLE
  wire {name}_wait = {{1'b0, {name}_rng[15:0]}} < idle_th;
  assign {name}_valid = running && {name}_i < {count_expr} && {name}_idle == 3'd0;
  assign {name}_payload = {name}_mem[{name}_i[{_bits(depth - 1) - 1}:0]];
  always @(posedge clk) begin
    {name}_rng <= rst ? (seed ^ 32'h{_salt(name):08x}) | 32'd1 : xorshift({name}_rng);
    if (go) begin
      {name}_i <= {start_expr};
      {name}_idle <= {name}_wait ? {name}_len : 3'd0;
    end else if ({name}_valid && {name}_ready) begin
      {name}_i <= {name}_i + 32'd1;
      {name}_idle <= {name}_wait ? {name}_len : 3'd0;
    end else if ({name}_idle != 3'd0)
      {name}_idle <= {name}_idle - 3'd1;
    if (rst) {name}_i <= {count_expr};
  end
  initial begin
    {name}_rng = 32'h{_salt(name):08x};
    {name}_i = 32'd0; {name}_idle = 3'd0;
  end
"""


def harness_verilog(ports: Ports, depths: Depths | None = None) -> str:
    """The Verilog text of the harness module :data:`TOP` around ``ports.top`` (see the module doc).

    Its registers that the bench sets before raising ``go`` (all inputs of the harness are
    registers deposited through VPI): ``seed`` (mixed into every generator while ``rst`` is high), ``idle_th``,
    ``bp_o_result``/``bp_o_trace`` (:func:`threshold` of the probabilities), ``n_values`` and
    ``n_images`` of the round, ``patience`` (cycles), ``load_weights`` (stream the weights first:
    the first round after reset of a ``weights="load"`` design).
    """
    depths = depths or Depths(ports)
    rw = ports.result.width
    trace = ports.trace
    load = ports.weights_loaded
    iw = ports.input_width
    names = ["o_result"] + (["o_trace"] if trace is not None else [])
    conns = [".clk(clk)", ".rst(rst)", ".i_data__valid(i_data_valid)", ".i_data__payload(i_data_payload)",
             ".i_data__ready(i_data_ready)", ".o_result__valid(o_result_valid)",
             ".o_result__payload(o_result_payload)", ".o_result__ready(o_result_ready)"]
    decl = [f"  wire i_data_valid, i_data_ready;", f"  wire [{iw - 1}:0] i_data_payload;",
            f"  wire o_result_valid, o_result_ready;", f"  wire [{rw - 1}:0] o_result_payload;"]
    if trace is not None:
        conns += [".o_trace__valid(o_trace_valid)", ".o_trace__payload(o_trace_payload)",
                  ".o_trace__ready(o_trace_ready)"]
        decl += ["  wire o_trace_valid, o_trace_ready;", f"  wire [{trace.width - 1}:0] o_trace_payload;"]
    if load:
        ww = ports.weight_width
        conns += [f".{ports.weight_port}__valid(weights_valid)", f".{ports.weight_port}__payload(weights_payload)",
                  f".{ports.weight_port}__ready(weights_ready)"]
        decl += ["  wire weights_valid, weights_ready;", f"  wire [{ww - 1}:0] weights_payload;"]
    body = [_source("i_data", iw, depths.inputs, "n_values", "32'd0")]
    if load:
        body.append(_source("weights", ports.weight_width, depths.weights, f"32'd{ports.weight_count}",
                            f"load_weights ? 32'd0 : 32'd{ports.weight_count}"))
        # the images wait for the weights: the input source starts after the last weight word
    body.append(_sink("o_result", rw, 0, depths.images, rw))
    if trace is not None:
        body.append(_sink("o_trace", trace.width, 32, depths.trace, trace.width + 32))
    loads = [f'$readmemh("{FILES["inputs"]}", i_data_mem, 0, n_values - 1);']
    if load:
        loads.append(f'if (load_weights) $readmemh("{FILES["weights"]}", weights_mem);')
    dumps = [f'if (o_result_n != 32\'d0) $writememh("{FILES["results"]}", o_result_mem, 0, '
             f'(o_result_n < {depths.images} ? o_result_n : {depths.images}) - 1);']
    if trace is not None:
        dumps.append(f'if (o_trace_n != 32\'d0) $writememh("{FILES["trace"]}", o_trace_mem, 0, '
                     f'(o_trace_n < {depths.trace} ? o_trace_n : {depths.trace}) - 1);')
    half = CLOCK_NS / 2
    return f"""// spikeloom co-simulation harness (generated by spikeloom.sim.harness, sim only; see its doc)
`timescale 1ns/1ps
module {TOP};
  reg clk = 1'b1;  // rising edges at every multiple of the period, as under cocotb's Clock (cycle_now() counts them)
  always #{half:g} clk = !clk;
  reg rst = 1'b1;
  // set by the bench before it raises go
  reg go = 1'b0;
  reg [16:0] idle_th = 17'd0, bp_o_result = 17'd0, bp_o_trace = 17'd0;  // threshold(p): 0..2^16
  reg [31:0] seed = 32'd0, n_values = 32'd0, n_images = 32'd0;
  reg [63:0] patience = 64'd0;
  reg load_weights = 1'b0;
  // status the bench reads
  reg running = 1'b0, done = 1'b0, timeout = 1'b0;
  reg [63:0] cycle = 64'd0;
  reg [31:0] n_res = 32'd0;
  reg [63:0] since = 64'd0;

  function [31:0] xorshift(input [31:0] s);
    reg [31:0] x;
    begin
      x = s ^ (s << 13);
      x = x ^ (x >> 17);
      xorshift = x ^ (x << 5);
    end
  endfunction

{chr(10).join(decl)}
  {ports.top} dut({", ".join(conns)});
{"".join(body)}
  always @(posedge clk) begin
    cycle <= cycle + 64'd1;
    if (go) begin
{chr(10).join("      " + s for s in loads)}
      running <= 1'b1;
      done <= 1'b0;
      timeout <= 1'b0;
      n_res <= 32'd0;
      since <= 64'd0;
    end else if (running) begin
      if (o_result_valid && o_result_ready) begin
        n_res <= n_res + 32'd1;
        since <= 64'd0;
      end else
        since <= since + 64'd1;
      if (n_res >= n_images) begin
{chr(10).join("        " + s for s in dumps)}
        running <= 1'b0;
        done <= 1'b1;
      end else if (since >= patience && !(o_result_valid && o_result_ready)) begin
{chr(10).join("        " + s for s in dumps)}
        running <= 1'b0;
        timeout <= 1'b1;
      end
    end
  end
endmodule
"""


def parse_words(path, width):
    """The words of a ``$writememh`` file: ints, or 0/1/X/Z bit strings (MSB first) for a word
    with unknown digits (Icarus writes ``x`` for them)."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.split("//", 1)[0].strip()  # Icarus writes address comments
        if not line:
            continue
        if any(c in "xzXZ" for c in line):  # (not int(): it would read "0x3", digits 0, X, 3, as 3)
            out.append("".join(c * 4 if c in "xzXZ" else f"{int(c, 16):04b}" for c in line)[-width:].rjust(width, "x"))
        else:
            out.append(int(line, 16))
    return out


def unpack_word(stream, word, prefix):
    """``{field: int}`` of a payload of ``stream`` (a :class:`~spikeloom.sim.ports.Stream`): an int,
    or a 0/1/X/Z string, MSB first (:func:`parse_words`, or a cocotb value's text); X or Z bits are a
    ``ValueError`` naming the fields they fall in."""
    if isinstance(word, int):
        return stream.unpack(word)
    bad = [len(word) - 1 - i for i, ch in enumerate(word) if ch not in "01"]
    names = sorted({f.name for f in stream.fields for b in bad if f.offset <= b < f.offset + f.width})
    raise ValueError(f"{prefix}: non-0/1 bits in fields {names}")


def rounds(ports, exit_t, depths):
    """Image ranges ``(start, stop)`` of the harness's rounds: at most ``depths.images`` images, and
    no more trace entries than its trace memory holds (each image's at most one per update with a
    spike: executed timesteps ``exit_t`` (the golden model's, per image) times the updates of every
    traced layer)."""
    per_step = trace_per_timestep(ports)
    out, start, entries = [], 0, 0
    n = len(exit_t)
    for i in range(n):
        e = int(exit_t[i]) * per_step
        if i > start and (i - start >= depths.images or entries + e > depths.trace):
            out.append((start, i))
            start, entries = i, 0
        entries += e
    if n:
        out.append((start, n))
    return out
