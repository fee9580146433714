"""The AXI4-Stream framing of the export's ``spikeloom_axis`` wrapper, and the results its
benches expect.

One home for what the wrapper generator (``flows/export_axis.py``), the export's Verilog
testbench and the cocotb bench (:mod:`spikeloom.sim.tb_axis`) all need: how many values a beat
carries, how many beats an image, the weight frame and a result take (:class:`AxisLayout`), and
the expected record of every image (:func:`expected_records`: the golden model's record with the
cycle model's ``cycles``). Imports neither torch nor cocotb.
"""

from spikeloom.model.errors import ConfigError

__all__ = ["BYTE", "check_lanes", "AxisLayout", "expected_records"]

BYTE = 8


def check_lanes(input_bits, width):
    """The lane width (bits) of ``input_bits``-bit values: whole bytes; ``width`` must hold whole
    lanes (only inputs wider than 8 bits can fail it), else a one-line error."""
    lane = BYTE * -(-input_bits // BYTE)
    if width % lane:
        raise ConfigError(f"--axis-width = {width} holds no whole number of {lane}-bit input lanes "
                          f"(the model's inputs have {input_bits} bits); use a multiple of {lane}")
    return lane


class AxisLayout:
    """How the streams of the AXI4-Stream wrapper carry values, weight words and results for one core.

    Parameters
    ----------
    ports : the core's :class:`~spikeloom.sim.ports.Ports`.
    width : tdata width in bits of both streams (``--axis-width``).

    Members
    -------
    lane : bits per input lane: the input value's width rounded up to whole bytes.
    lanes : input values per beat.
    beats : beats of one image frame (its last beat padded).
    pieces : lanes per weight word (``--weights load``), least significant first.
    weight_lanes, weight_beats : lanes and beats of the weight frame (0 without a weight load).
    result_bytes, result_beats : whole bytes of the result payload, and the beats of one result frame.
    """

    def __init__(self, ports, width):
        self.width = width
        self.in_w = ports.input_width
        self.lane = check_lanes(self.in_w, width)
        self.lanes = width // self.lane
        self.count = ports.input_count
        self.beats = -(-self.count // self.lanes)
        self.load = ports.weights_loaded
        self.pieces = -(-ports.weight_width // self.lane) if self.load else 0
        self.weight_lanes = ports.weight_count * self.pieces if self.load else 0
        self.weight_beats = -(-self.weight_lanes // self.lanes)
        self.result_w = ports.result.width
        self.result_bytes = -(-self.result_w // BYTE)
        self.result_beats = -(-self.result_bytes * BYTE // width)


def expected_records(model, ports, x):
    """The records (:class:`~spikeloom.sim.records.InferenceRecord`) the core described by
    ``ports`` must return for images ``x``: the golden model's (the scoreboard's
    :func:`~spikeloom.sim.records.from_golden`) with ``cycles`` from the cycle model
    (``hw/perf.py``), which is exact when the input never idles."""
    from spikeloom.hw import perf
    from spikeloom.model import golden

    from .records import from_golden

    res = golden.run(model, x, trace=True, sparse=ports.sparse_layers)  # the cycle model replays the spikes
    plan = ports.plan(model)
    return from_golden(res, perf.batch_cycles(model, ports.n_pe, x, res, plan))
