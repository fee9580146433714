"""The export's AXI4-Stream wrapper (``rtl/spikeloom_axis.v``) and its self-checking testbenches.

``spikeloom export --axis`` adds :data:`AXIS`, a wrapper of the core with an AXI4-Stream slave for
the images (one input value per byte lane, an image framed by ``tlast``) and an AXI4-Stream master
for the results (the result payload's whole bytes, framed by ``tlast``), beside the pin-friendly
``spikeloom_top``. Every export also holds a self-checking Verilog testbench per wrapper
(``tb/<wrapper>_tb.v``) and its test vectors (``tb/inputs.hex``, ``tb/expected.hex``) computed by
the golden model: the same records (:func:`spikeloom.sim.records.from_golden`, with the cycle
model's ``cycles``) that the cocotb scoreboard checks the RTL against.

The Verilog is plain Verilog-2001 text (the testbenches use ``$fatal``, which every simulator the
README names accepts), deterministic for the same model, N and options.
"""

import numpy as np

from spikeloom.hw.common import bits
from spikeloom.model.errors import ConfigError
from spikeloom.sim.axis import BYTE, AxisLayout, expected_records

from .common import dataset_options, int_option


def word_pieces(pieces, piece_bits, value, clk, take, what):
    """Verilog that assembles a weight word from ``pieces`` values of ``piece_bits`` bits each,
    least significant first (both wrappers' weight load): ``(regs, last_piece, word, always)``.
    ``value``: the piece offered now; ``take``: the condition that takes it on ``clk``'s edge
    (``rst`` clears the count); ``what``: the pieces' name in the comments. ``word`` is
    ``pieces * piece_bits`` wide, its last piece ``value`` itself."""
    if pieces == 1:
        return "", "1'b1", value, ""
    pc_w = bits(pieces)
    low_w = (pieces - 1) * piece_bits
    regs = (f"    reg  [{pc_w - 1}:0] piece = {pc_w}'d0;  // {what} of the current weight word so far\n"
            f"    reg  [{low_w - 1}:0] low = {low_w}'d0;  // its earlier {what}, the first in the low bits\n")
    nxt = f"{{{value}, low[{low_w - 1}:{piece_bits}]}}" if pieces > 2 else value
    step = f"""
    always @(posedge {clk}) begin
        if (rst) begin
            piece <= {pc_w}'d0;
        end else if ({take}) begin
            piece <= last_piece ? {pc_w}'d0 : piece + {pc_w}'d1;
            low <= {nxt};
        end
    end
"""
    return regs, f"piece == {pc_w}'d{pieces - 1}", f"{{{value}, low}}", step

__all__ = ["AXIS", "AXIS_WIDTHS", "TB_IMAGES", "TB_IMAGES_MAX", "TB_SEED", "ERROR_BITS", "check_axis_width",
           "check_tb_images", "field_rows", "axis_verilog", "axis_constraint_ports", "tb_inputs", "tb_vectors",
           "testbench_verilog", "tb_name"]

AXIS = "spikeloom_axis"
#: ``--axis-width``: the tdata widths (bits) of both streams.
AXIS_WIDTHS = (8, 16, 32, 64)
#: ``--tb-images``: images in the testbench vectors (default, most).
TB_IMAGES, TB_IMAGES_MAX = 8, 1000
#: The testbenches' LFSR seed (``+seed=N`` overrides it at run time).
TB_SEED = 1
#: Width of the wrapper's saturating ``frame_errors`` counter.
ERROR_BITS = 16
#: Model files' ``dataset`` values that name no dataset (random networks, NIR imports).
NO_DATASET = ("", "random", "nir")


def check_axis_width(text):
    """``--axis-width`` (given as text): one of :data:`AXIS_WIDTHS`, else a one-line error."""
    try:
        w = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"--axis-width = {text!r} must be an integer, one of "
                          f"{', '.join(map(str, AXIS_WIDTHS))}") from None
    if w not in AXIS_WIDTHS:
        raise ConfigError(f"--axis-width = {w} is not one of {', '.join(map(str, AXIS_WIDTHS))} (bits)")
    return w


def check_tb_images(text):
    """``--tb-images`` (given as text): an integer in [1, :data:`TB_IMAGES_MAX`]."""
    return int_option("--tb-images", text, 1, TB_IMAGES_MAX)


def field_rows(ports):
    """The headers' table of the result payload's fields: name, bit range, bytes."""
    return "\n".join(f"//   {f.name:<34} [{f.offset + f.width - 1:>4}:{f.offset:<4}]  "
                     f"bytes {f.offset // BYTE}..{(f.offset + f.width - 1) // BYTE}"
                     for f in ports.result.fields)


def axis_constraint_ports():
    """(clock, inputs, outputs) of :data:`AXIS` for the constraint files."""
    return ("aclk", ("aresetn", "s_axis_tdata[*]", "s_axis_tvalid", "s_axis_tlast", "m_axis_tready"),
            ("s_axis_tready", "m_axis_tdata[*]", "m_axis_tvalid", "m_axis_tlast", "frame_errors[*]"))


def axis_verilog(ports, t_max, width, core, worst):
    """Verilog of :data:`AXIS` for the core ``core`` described by ``ports``; ``worst`` is the
    header's bound on ``cycles`` (``export.worst_case_cycles``)."""
    ly = AxisLayout(ports, width)
    W, LANE, L = width, ly.lane, ly.lanes
    in_w, res_w = ly.in_w, ly.result_w
    R = ly.result_beats
    load = ly.load
    frame_max = max(ly.count, ly.weight_lanes)
    pw = bits(frame_max)
    last = ports.layers[-1]
    pred, steps = ports.result.field("pred"), ports.result.field("timesteps")
    lane_w = bits(L)
    lane_reg = f"    reg  [{lane_w - 1}:0] lane = {lane_w}'d0;  // the lane of `beat` that is offered next\n" if L > 1 else ""
    lane_sel = f"beat[lane * {LANE} +: {LANE}]" if L > 1 else f"beat[{LANE - 1}:0]"
    lane_end = f"lane == {lane_w}'d{L - 1}" if L > 1 else "1'b1"
    frame_len = (f"(weights_phase ? {pw}'d{ly.weight_lanes - 1} : {pw}'d{ly.count - 1})" if load
                 else f"{pw}'d{ly.count - 1}")
    rb = bits(R + 1)
    pad = R * W - res_w
    padded = f"{{{{{pad}{{1'b0}}}}, payload}}" if pad else "payload"
    shift = f"\n            out <= out >> {W};" if R > 1 else ""
    if load:
        P = ly.pieces
        wb = ports.weight_width
        asm_regs, last_piece, word, asm_step = word_pieces(P, LANE, "value", "aclk", "take & weights_phase", "lanes")
        weights_regs = f"""    // weight load (--weights load): the first frame after reset carries the weight words
    reg  weights_phase = 1'b1;  // high until the weight frame's last lane is taken
{asm_regs}"""
        weights_wires = f"""    wire last_piece = {last_piece};
    wire [{P * LANE - 1}:0] word = {word};
    wire weights_ready;
    wire value_ready = weights_phase ? (~last_piece | weights_ready) : data_ready;
"""
        phase_step = f"""            if (take & frame_end & weights_phase)
                weights_phase <= 1'b0;
"""
        phase_rst = "            weights_phase <= 1'b1;\n"
        core_in = f"""        .i_weights__payload(word[{wb - 1}:0]),
        .i_weights__valid(value_valid & weights_phase & last_piece),
        .i_weights__ready(weights_ready),
        .i_data__payload(value[{in_w - 1}:0]),
        .i_data__valid(value_valid & ~weights_phase),
        .i_data__ready(data_ready),"""
        drop_when = "(early | late) & ~weights_phase"
        wl_header = f"""//
// Weights (this core was generated with --weights load: its weight memories have no initial
// contents). After every reset the first frame on s_axis carries the {ports.weight_count} weight words
// ({ports.n_pe} PEs x {ports.weight_count // ports.n_pe}), PE by PE, address by address (the words of mem/pe_0_weight.hex, then
// mem/pe_1_weight.hex, ...): each {wb}-bit word (the README's "Weight memory layout": the weight in
// two's complement, a compressed layer's tap and chunk fields above it) as {P} lane(s), least significant
// {LANE} bits first, {L} lane(s) per beat, {ly.weight_lanes} lanes = {ly.weight_beats} beats, tlast on the last beat (its unused
// lanes are padding). The images follow as below; a misplaced tlast in the weight frame is
// handled as for an image (zero words / skipped beats, frame_errors counts it).
"""
    else:
        weights_regs, asm_step = "", ""
        weights_wires = "    wire value_ready = data_ready;\n"
        phase_step = phase_rst = ""
        core_in = f"""        .i_data__payload(value[{in_w - 1}:0]),
        .i_data__valid(value_valid),
        .i_data__ready(data_ready),"""
        drop_when = "early | late"
        wl_header = ""
    if not load and LANE > in_w:
        unused = f"    wire unused = &{{1'b0, value[{LANE - 1}:{in_w}]}};  // lane bits above the input value\n"
    elif load and ly.pieces * LANE > ports.weight_width:
        unused = (f"    wire unused = &{{1'b0, word[{ly.pieces * LANE - 1}:{ports.weight_width}]}};  "
                  f"// lane bits above the weight word\n")
    else:
        unused = ""
    return f"""\
// {AXIS}: AXI4-Stream top level of the spikeloom accelerator (generated by `spikeloom export --axis`).
//
// Model "{ports.model}", N = {ports.n_pe} processing elements, {W}-bit streams. The core `{core}`
// (rtl/{core}.v) is plain Verilog-2001 generated by Amaranth. rtl/spikeloom_top.v is the other
// wrapper of the same core (a narrow custom interface); either can be the top level.
//
// Clock and reset
//   aclk         one clock; every port is sampled / changes on its rising edge.
//   aresetn      synchronous, active low. Hold it low for at least 1 cycle after configuration
//                (registers also carry their reset values as power-on values). s_axis_tready is
//                low while aresetn is low. After reset the core clears its accumulators for
//                {last.neuron_base + last.chunks} cycles{' (after the weights)' if load else ''} before it takes the first input value.
{wl_header}//
// Input stream s_axis (AXI4-Stream slave; a transfer on a rising edge with tvalid & tready)
//   s_axis_tdata  [{W - 1}:0]  {L} lane(s) of {LANE} bits: lane k = tdata[{LANE}k+{LANE - 1}:{LANE}k] holds one unsigned input
//                 value in its low {in_w} bits (higher bits ignored). An image is {ly.count} values
//                 {ports.input_order}, lane 0 first: {ly.beats} beat(s), the unused lanes of the last beat are
//                 padding.
//   s_axis_tvalid / s_axis_tready   tready depends combinationally on the core's readiness,
//                 never on tvalid; with tvalid held high the wrapper takes one beat per {L} value(s)
//                 (one per cycle while the core takes a value per cycle: zero values are taken at once,
//                 nonzero ones when the PE array is free) with no bubble between beats.
//   s_axis_tlast  high on the last beat of each image (frame). A frame whose tlast comes early
//                 (before its last value) is completed with zero values; one without tlast on its
//                 last value's beat has its further beats discarded up to and including the next
//                 beat with tlast (when a sender only forgot a tlast, that is the next frame's
//                 last beat: that frame is lost too). Either way the image's result is dropped (no
//                 result frame) and frame_errors counts it; the beat after the frame's end starts a
//                 new frame. Never a hang.
//   Values of the next image are taken only after the previous result has left the core (it
//   waits in the result register below, so the next image streams in while it is sent).
//
// Result stream m_axis (AXI4-Stream master; one frame per image)
//   m_axis_tdata  [{W - 1}:0]  the {res_w}-bit result payload as {ly.result_bytes} whole byte(s), byte k = payload[8k+7:8k],
//                 low bytes first: {R} beat(s), beat j = payload bytes {W // BYTE}j..{W // BYTE}j+{W // BYTE - 1} (bytes past the
//                 payload read 0).
//   m_axis_tvalid / m_axis_tready   tvalid stays high with stable tdata/tlast until tready;
//                 consecutive beats of a frame go out on consecutive cycles while tready is high.
//   m_axis_tlast  high on the last beat of each result frame.
//   frame_errors  [{ERROR_BITS - 1}:0]  frames with a misplaced tlast since reset (saturating; 0 = none).
//
// Latency: `cycles` (a payload field) counts the clock cycles strictly between the cycle in which
// the core takes an image's first value (at the earliest the cycle after the image's first beat)
// and the core's result; with the beats streamed without gaps it is at most {worst} cycles for this
// model and N. The result frame's first beat is offered the cycle after the core's result.
//
// Result payload fields (bit ranges in the {res_w}-bit payload, LSB first; also in ports.json):
//   pred is the predicted class, [{pred.offset + pred.width - 1}:{pred.offset}]; timesteps the executed timesteps (1..{t_max}), [{steps.offset + steps.width - 1}:{steps.offset}].
{field_rows(ports)}
`default_nettype none
module {AXIS} (
    input  wire              aclk,
    input  wire              aresetn,
    input  wire [{W - 1:>2}:0]       s_axis_tdata,
    input  wire              s_axis_tvalid,
    output wire              s_axis_tready,
    input  wire              s_axis_tlast,
    output wire [{W - 1:>2}:0]       m_axis_tdata,
    output wire              m_axis_tvalid,
    input  wire              m_axis_tready,
    output wire              m_axis_tlast,
    output wire [{ERROR_BITS - 1:>2}:0]       frame_errors
);
    wire rst = ~aresetn;
    wire [{res_w - 1}:0] payload;  // the core's result stream
    wire res_valid;
    wire res_ready;
    wire res_fire = res_valid & res_ready;

    // input side: one beat register, offered to the core one lane (value) at a time
    localparam [1:0] SEND = 2'd0;  // lanes of `beat` go to the core
    localparam [1:0] FILL = 2'd1;  // an early tlast: zero values complete the frame
    localparam [1:0] SKIP = 2'd2;  // a missing tlast: beats are discarded up to the next tlast
    reg  [1:0] state = SEND;
    reg  [{W - 1}:0] beat = {W}'d0;
    reg  beat_valid = 1'b0;
    reg  beat_last = 1'b0;  // its tlast
{lane_reg}    reg  [{pw - 1}:0] pos = {pw}'d0;  // the index in its frame of the value offered
    reg  drop = 1'b0;  // the core's next result belongs to a malformed frame
    reg  [{ERROR_BITS - 1}:0] errors = {ERROR_BITS}'d0;
{weights_regs}    wire data_ready;
    wire [{LANE - 1}:0] value = state == FILL ? {LANE}'d0 : {lane_sel};
    wire value_valid = (state == SEND & beat_valid) | state == FILL;
{weights_wires}{unused}    wire take = value_valid & value_ready;
    wire frame_end = pos == {frame_len};
    wire lane_end = {lane_end};
    wire beat_done = state == SEND & take & (lane_end | frame_end);
    wire late = beat_done & frame_end & ~beat_last;
    wire early = beat_done & ~frame_end & beat_last;
    assign s_axis_tready = aresetn & (state == SKIP | ~beat_valid | beat_done);
    wire beat_in = s_axis_tvalid & s_axis_tready;
    assign frame_errors = errors;
{asm_step}
    always @(posedge aclk) begin
        if (rst) begin
            state <= SEND;
            beat_valid <= 1'b0;
            pos <= {pw}'d0;
            drop <= 1'b0;
            errors <= {ERROR_BITS}'d0;
{phase_rst}        end else begin
            if (take) begin
                pos <= frame_end ? {pw}'d0 : pos + {pw}'d1;
{f"                if (state == SEND & ~lane_end){chr(10)}                    lane <= lane + {lane_w}'d1;{chr(10)}" if L > 1 else ""}                if (state == FILL & frame_end)
                    state <= SEND;
            end
{phase_step}            if (early)
                state <= FILL;
            if ((early | late) & errors != {{{ERROR_BITS}{{1'b1}}}})
                errors <= errors + {ERROR_BITS}'d1;
            if ({drop_when})
                drop <= 1'b1;
            else if (res_fire)
                drop <= 1'b0;
            if (beat_in & (state == SKIP | late)) begin
                beat_valid <= 1'b0;
                state <= s_axis_tlast ? SEND : SKIP;
            end else if (beat_in) begin
                beat <= s_axis_tdata;
                beat_valid <= 1'b1;
                beat_last <= s_axis_tlast;
{f"                lane <= {lane_w}'d0;{chr(10)}" if L > 1 else ""}            end else if (beat_done) begin
                beat_valid <= 1'b0;
                if (late)
                    state <= SKIP;
            end
        end
    end

    // result side: the payload's bytes as {R} beat(s); a dropped frame's result is taken and discarded
    reg  [{R * W - 1}:0] out = {R * W}'d0;
    reg  [{rb - 1}:0] beats_left = {rb}'d0;
    assign m_axis_tvalid = beats_left != {rb}'d0;
    assign m_axis_tlast = beats_left == {rb}'d1;
    assign m_axis_tdata = out[{W - 1}:0];
    assign res_ready = drop | ~m_axis_tvalid | (m_axis_tlast & m_axis_tready);

    always @(posedge aclk) begin
        if (rst) begin
            beats_left <= {rb}'d0;
        end else if (res_fire & ~drop) begin
            out <= {padded};
            beats_left <= {rb}'d{R};
        end else if (m_axis_tvalid & m_axis_tready) begin{shift}
            beats_left <= beats_left - {rb}'d1;
        end
    end

    {core} core (
        .clk(aclk),
        .rst(rst),
{core_in}
        .o_result__payload(payload),
        .o_result__valid(res_valid),
        .o_result__ready(res_ready)
    );
endmodule
`default_nettype wire
"""


def tb_inputs(model, n, log=print):
    """The testbench images: the first ``n`` of the model's dataset's test split, quantized, or,
    for a model file with no (readable) dataset, ``n`` deterministic random valid inputs. Returns
    ``(x_q (n, F) int64, source text)``."""
    from spikeloom.model import golden
    from spikeloom.model.errors import SpikeloomError
    from spikeloom.model.randnet import random_inputs

    spec = (model.dataset or "").strip()
    if spec not in NO_DATASET:
        from spikeloom.model.data import load_dataset

        try:
            # as the model was trained: its split seed, and an image folder at its input's size and channels
            seed, size, channels = dataset_options(model, spec)
            split = load_dataset(spec, seed=seed, size=size, channels=channels)
            x = golden.quantize_input(model, split.test.x[:n])
            if x.shape[1] == model.input_size and len(x):
                return x.astype(np.int64), f"the first {len(x)} test images of dataset {spec!r}"
            why = f"its images have {x.shape[1]} values, the model takes {model.input_size}"
        except (SpikeloomError, OSError, ValueError) as e:
            why = str(e)
        log(f"[export] testbench: dataset {spec!r} is not usable ({why}); random inputs instead")
    return random_inputs(model, n, seed=0), "random valid inputs, seed 0"


def tb_vectors(model, ports, x):
    """``(inputs.hex text, expected.hex text, expected records)`` for images ``x``: one input
    value per line, image by image; one result payload per line, every field of
    :func:`~spikeloom.sim.axis.expected_records`."""
    recs = expected_records(model, ports, x)
    vd = -(-ports.input_width // 4)
    rd = -(-ports.result.width // 4)
    inputs = "".join(f"{int(v):0{vd}x}\n" for image in x for v in image)
    expected = "".join(f"{ports.result.pack(r.flat()):0{rd}x}\n" for r in recs)
    return inputs, expected, recs


def tb_name(wrapper):
    return f"{wrapper}_tb"


def _lfsr(name):
    return f"{name} <= {{1'b0, {name}[15:1]}} ^ ({name}[0] ? 16'hB400 : 16'h0000);"


def testbench_verilog(ports, wrapper, n_images, worst, width=None, source=""):
    """A self-checking testbench of ``wrapper`` (``"spikeloom_top"`` or :data:`AXIS`, the latter
    with tdata ``width``) on ``n_images`` images of ``tb/inputs.hex``, checked against
    ``tb/expected.hex``. ``worst``: the bound on ``cycles`` per image (for the timeout)."""
    axis = wrapper == AXIS
    in_w, res_w, count = ports.input_width, ports.result.width, ports.input_count
    load = ports.weights_loaded
    fields = ports.result.fields
    n_bytes = -(-res_w // BYTE)
    name = tb_name(wrapper)
    clk = "aclk" if axis else "clk"
    if load:
        wb, wcount, depth = ports.weight_width, ports.weight_count, ports.weight_count // ports.n_pe
        reads = "\n".join(f'        $readmemh("{f}", weights, {p * depth}, {(p + 1) * depth - 1});'
                          for p, f in enumerate(ports.weight_files()))
        wdecl = f"    reg  [{wb - 1}:0] weights [0:{wcount - 1}];  // the weight words, PE by PE (mem/)\n"
    else:
        reads, wdecl = "", ""
    if axis:
        ly = AxisLayout(ports, width)
        L, LANE, W, R = ly.lanes, ly.lane, width, ly.result_beats
        weight_values = ly.weight_lanes
    else:
        pieces = -(-ports.weight_width // in_w) if load else 0
        weight_values = ports.weight_count * pieces if load else 0
    timeout = 4 * (n_images * (worst + 8 * count + 8 * n_bytes) + 8 * weight_values) + 10000
    checks = []
    for f in fields:
        guard = "gapless && " if f.name == "cycles" else ""
        checks.append(f"""            if ({guard}got[{f.offset + f.width - 1}:{f.offset}] !== want[{f.offset + f.width - 1}:{f.offset}]) begin
                mismatch(img, "{f.name}", got[{f.offset + f.width - 1}:{f.offset}], want[{f.offset + f.width - 1}:{f.offset}]);
                bad = 1'b1;
            end""")
    checks = "\n".join(checks)
    if axis:
        ports_decl = f"""    reg  aresetn = 1'b0;
    reg  [{W - 1}:0] s_axis_tdata = {W}'d0;
    reg  s_axis_tvalid = 1'b0;
    wire s_axis_tready;
    reg  s_axis_tlast = 1'b0;
    wire [{W - 1}:0] m_axis_tdata;
    wire m_axis_tvalid;
    reg  m_axis_tready = 1'b0;
    wire m_axis_tlast;
    wire [{ERROR_BITS - 1}:0] frame_errors;

    {AXIS} dut (
        .aclk(aclk), .aresetn(aresetn),
        .s_axis_tdata(s_axis_tdata), .s_axis_tvalid(s_axis_tvalid), .s_axis_tready(s_axis_tready),
        .s_axis_tlast(s_axis_tlast),
        .m_axis_tdata(m_axis_tdata), .m_axis_tvalid(m_axis_tvalid), .m_axis_tready(m_axis_tready),
        .m_axis_tlast(m_axis_tlast), .frame_errors(frame_errors)
    );"""
        reset = "aresetn = 1'b0;\n        repeat (3) @(posedge aclk);\n        aresetn <= 1'b1;"
        frames = f"{n_images + (1 if load else 0)}"
        weight_lane = (f"""                    if (frame == 0) begin  // the weight frame
                        if (idx < {ly.weight_lanes})
                            piece = weights[idx / {ly.pieces}] >> ((idx % {ly.pieces}) * {LANE});
                    end else
""" if load else "")
        driver = f"""    // s_axis driver: the weight frame{'' if load else ' (none)'} then one frame per image; idle cycles (tvalid low) from the
    // LFSR before any frame and inside the odd-numbered images' frames (the even ones stream without gaps)
    localparam FRAMES = {frames};
    localparam FIRST_IMAGE = {1 if load else 0};
    integer frame = 0, beat_i = 0, lane_i, idx;
    reg  [{LANE - 1}:0] piece;
    reg  [{W - 1}:0] data;
    function integer frame_beats(input integer f);
        frame_beats = f < FIRST_IMAGE ? {ly.weight_beats} : {ly.beats};
    endfunction
    task make_beat;
        begin
            data = {W}'d0;
            for (lane_i = 0; lane_i < {L}; lane_i = lane_i + 1) begin
                idx = beat_i * {L} + lane_i;
                piece = {LANE}'d0;
{weight_lane}                    if (idx < {count})
                        piece = inputs[(frame - FIRST_IMAGE) * {count} + idx];
                data[lane_i * {LANE} +: {LANE}] = piece;
            end
        end
    endtask
    always @(posedge aclk) begin
        {_lfsr("src_lfsr")}
        if (aresetn && (!s_axis_tvalid || s_axis_tready)) begin
            if (frame == FRAMES || (src_lfsr[1:0] == 2'b00 && (beat_i == 0 || frame < FIRST_IMAGE
                                                              || (frame - FIRST_IMAGE) % 2 == 1))) begin
                s_axis_tvalid <= 1'b0;
            end else begin
                make_beat;
                s_axis_tdata <= data;
                s_axis_tvalid <= 1'b1;
                s_axis_tlast <= beat_i == frame_beats(frame) - 1;
                if (beat_i == frame_beats(frame) - 1) begin
                    beat_i = 0;
                    frame = frame + 1;
                end else
                    beat_i = beat_i + 1;
            end
        end
    end"""
        sink = f"""    // m_axis sink: tready low on a quarter of the cycles (LFSR); each frame must be {R} beat(s) with
    // tlast on the last; tvalid, once high without tready, must hold with stable tdata and tlast
    reg  [{R * W - 1}:0] frame_data = {R * W}'d0;
    integer got_beats = 0;
    reg  held = 1'b0;
    reg  [{W}:0] held_beat = {W + 1}'d0;
    always @(posedge aclk) begin
        {_lfsr("sink_lfsr")}
        if (aresetn) begin
            if (held && (!m_axis_tvalid || {{m_axis_tlast, m_axis_tdata}} !== held_beat))
                protocol("m_axis: tvalid dropped or tdata/tlast changed before tready");
            held = m_axis_tvalid && !m_axis_tready;
            held_beat = {{m_axis_tlast, m_axis_tdata}};
            if (m_axis_tvalid && m_axis_tready) begin
                if (got_beats < {R})
                    frame_data[got_beats * {W} +: {W}] = m_axis_tdata;
                got_beats = got_beats + 1;
                if (m_axis_tlast) begin
                    if (got_beats != {R})
                        protocol("m_axis: a result frame whose length is not {R} beat(s)");
                    check(results, frame_data[{res_w - 1}:0], results % 2 == 0);
                    got_beats = 0;
                end else if (got_beats == {R})
                    protocol("m_axis: no tlast on beat {R} of a result frame");
            end
            m_axis_tready <= sink_lfsr[1:0] != 2'b00;
        end
    end"""
        final_extra = f"""        if (frame_errors !== {ERROR_BITS}'d0)
            protocol("frame_errors is not 0 after well-formed frames");"""
        stream_text = (f"{W}-bit AXI4-Stream frames ({ly.beats} beat(s) per image, "
                       f"{R} per result)")
    else:
        sel_w = bits(n_bytes)
        pred, steps = ports.result.field("pred"), ports.result.field("timesteps")
        ports_decl = f"""    reg  rst = 1'b1;
    reg  [{in_w - 1}:0] in_data = {in_w}'d0;
    reg  in_valid = 1'b0;
    wire in_ready;
    wire res_valid;
    reg  res_ready = 1'b0;
    wire [{pred.width - 1}:0] res_pred;
    wire [{steps.width - 1}:0] res_timesteps;
    reg  [{sel_w - 1}:0] res_byte_sel = {sel_w}'d0;
    wire [7:0] res_byte;

    spikeloom_top dut (
        .clk(clk), .rst(rst), .in_data(in_data), .in_valid(in_valid), .in_ready(in_ready),
        .res_valid(res_valid), .res_ready(res_ready), .res_pred(res_pred), .res_timesteps(res_timesteps),
        .res_byte_sel(res_byte_sel), .res_byte(res_byte)
    );"""
        reset = "rst = 1'b1;\n        repeat (3) @(posedge clk);\n        rst <= 1'b0;"
        weight_value = (f"""            if (vi < {weight_values})
                value = weights[vi / {pieces}] >> ((vi % {pieces}) * {in_w});
            else
""" if load else "")
        driver = f"""    // input driver: the weight words' pieces{'' if load else ' (none)'} then the images' values; idle cycles (in_valid low)
    // from the LFSR before any image and inside the odd-numbered images (the even ones stream without gaps)
    localparam VALUES = {weight_values + n_images * count};
    integer vi = 0, img_i, pos_i;
    reg  [{in_w - 1}:0] value;
    always @(posedge clk) begin
        {_lfsr("src_lfsr")}
        if (!rst && (!in_valid || in_ready)) begin
            img_i = (vi - {weight_values}) / {count};
            pos_i = (vi - {weight_values}) % {count};
            if (vi == VALUES || (src_lfsr[1:0] == 2'b00 && (vi < {weight_values} || pos_i == 0 || img_i % 2 == 1))) begin
                in_valid <= 1'b0;
            end else begin
{weight_value}                value = inputs[vi - {weight_values}];
                in_data <= value;
                in_valid <= 1'b1;
                vi = vi + 1;
            end
        end
    end"""
        sink = f"""    // result reader: waits 0..7 cycles (LFSR) with res_valid high, reads every payload byte through
    // res_byte_sel/res_byte, checks res_pred/res_timesteps against it, then raises res_ready for one edge
    reg  [{8 * n_bytes - 1}:0] payload_bytes;
    integer k, stall;
    initial begin
        @(negedge rst);
        forever begin
            @(posedge clk);
            #1;
            if (res_valid) begin
                stall = sink_lfsr[2:0];
                repeat (stall) @(posedge clk);
                #1;
                if (!res_valid)
                    protocol("res_valid dropped before res_ready");
                for (k = 0; k < {n_bytes}; k = k + 1) begin
                    res_byte_sel = k;
                    #0.01;
                    payload_bytes[k * 8 +: 8] = res_byte;
                end
                if (res_pred !== payload_bytes[{pred.offset + pred.width - 1}:{pred.offset}] ||
                    res_timesteps !== payload_bytes[{steps.offset + steps.width - 1}:{steps.offset}])
                    protocol("res_pred/res_timesteps differ from the payload bytes");
                check(results, payload_bytes[{res_w - 1}:0], results % 2 == 0);
                res_ready = 1'b1;
                @(posedge clk);
                #1 res_ready = 1'b0;
            end
        end
    end
    always @(posedge clk)
        {_lfsr("sink_lfsr")}"""
        final_extra = ""
        stream_text = "values on in_data, results read through res_byte_sel/res_byte"
    return f"""\
// {name}: self-checking testbench of `{wrapper}` (generated by `spikeloom export`).
//
// Streams the {n_images} images of tb/inputs.hex ({source}){' after the weight words of mem/pe_*_weight.hex' if load else ''}
// through the wrapper ({stream_text}) with random gaps on both sides from seeded 16-bit LFSRs
// (+seed=N overrides seed {TB_SEED}), and compares every field of every result payload with
// tb/expected.hex (the golden model's records; `cycles` from the cycle model, which is exact when
// the input never idles: it is compared on the images streamed without gaps, the even-numbered
// ones). Prints PASS, or FAIL with the first mismatch and the counts; a failure or the timeout
// ({timeout} cycles) ends in $fatal (nonzero exit status). Run it from the export folder (the
// $readmemh paths are relative to it); the README gives the commands for each simulator.
`timescale 1ns / 1ps
`default_nettype none
module {name};
    localparam IMAGES = {n_images};
    reg  {clk} = 1'b0;
    always #5 {clk} = ~{clk};

    reg  [{in_w - 1}:0] inputs [0:{n_images * count - 1}];  // tb/inputs.hex: {count} values per image
    reg  [{res_w - 1}:0] expected [0:{n_images - 1}];  // tb/expected.hex: one result payload per image
{wdecl}    integer seed;
    reg  [15:0] src_lfsr, sink_lfsr;
    integer results = 0, bad_images = 0, mismatches = 0, protocol_errors = 0, cycles_checked = 0;

{ports_decl}

    task mismatch(input integer img, input [8 * 40 - 1:0] field, input [63:0] got, input [63:0] want);
        begin
            if (mismatches == 0)
                $display("FAIL: image %0d: %0s = %0d from the RTL, %0d from the golden model", img, field, got, want);
            mismatches = mismatches + 1;
        end
    endtask

    task protocol(input [8 * 72 - 1:0] what);
        begin
            if (protocol_errors == 0)
                $display("FAIL: %0s (at %0t)", what, $time);
            protocol_errors = protocol_errors + 1;
        end
    endtask

    // every field of result `img` (cycles only when the image was streamed without gaps)
    task check(input integer img, input [{res_w - 1}:0] got, input gapless);
        reg [{res_w - 1}:0] want;
        reg bad;
        begin
            bad = 1'b0;
            if (img >= IMAGES) begin
                protocol("more results than images");
            end else begin
                want = expected[img];
{checks}
                if (gapless)
                    cycles_checked = cycles_checked + 1;
            end
            bad_images = bad_images + bad;
            results = results + 1;
        end
    endtask

    initial begin
        if (!$value$plusargs("seed=%d", seed))
            seed = {TB_SEED};
        src_lfsr = seed[15:0] ^ 16'h5A5A;
        if (src_lfsr == 16'h0000)
            src_lfsr = 16'h0001;
        sink_lfsr = seed[15:0] ^ 16'hC3A7;
        if (sink_lfsr == 16'h0000)
            sink_lfsr = 16'h0001;
        $readmemh("tb/inputs.hex", inputs);
        $readmemh("tb/expected.hex", expected);
{reads}
        {reset}
    end

{driver}

{sink}

    initial begin
        wait (results == IMAGES);
        repeat (20) @(posedge {clk});
{final_extra}
        if (mismatches == 0 && protocol_errors == 0 && results == IMAGES) begin
            $display("PASS: %0d images, every result field equal to the golden model (%0d fields each; cycles on %0d images)",
                     IMAGES, {len(fields)}, cycles_checked);
            $finish;
        end else begin  // (statements after $finish would still run in some simulators)
            $display("FAIL: %0d mismatched fields in %0d of %0d images, %0d protocol errors", mismatches, bad_images,
                     IMAGES, protocol_errors);
            $fatal(1, "{name}: FAIL");
        end
    end

    initial begin
        repeat ({timeout}) @(posedge {clk});
        $display("FAIL: timeout after {timeout} cycles with %0d of %0d results", results, IMAGES);
        $fatal(1, "{name}: timeout");
    end
endmodule
`default_nettype wire
"""
