"""cocotb bench for the export's AXI4-Stream wrapper ``spikeloom_axis`` (``flows/export_axis.py``).

The bench builds the s_axis frames itself from the wrapper's documented framing (one value per
lane, lane 0 in the low bits, the last beat padded, tlast on it; with ``--weights load`` the weight
frame first), drives them with random tvalid gaps (:class:`AxisSource`, a
:class:`~spikeloom.sim.streams.StreamSource` with tlast) and takes the result frames with random
tready (:class:`~spikeloom.sim.streams.StreamSink`), a :class:`~spikeloom.sim.streams.StreamMonitor`
checking the hold rule on m_axis. Every field of every result is compared with the golden model's
records (the vectors the export's own testbench uses: ``cycles`` from the cycle model, compared on
the frames streamed without gaps). Back-to-back frames, and frames with an early and a missing
tlast (the wrapper must drop their results, count them in ``frame_errors`` and go on).
``throughput`` checks that the wrapper adds no bubble: with tvalid and tready held high, the beats
of an all-zero image are taken one per ``lanes`` cycles and a result's beats leave on consecutive
cycles. The job comes from ``$SPIKELOOM_JOB`` as for :mod:`spikeloom.sim.tb_top`, with ``width``.
"""

import json
import os
import random
from dataclasses import replace
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from .axis import AxisLayout, expected_records
from spikeloom.model import golden, modelfile

from .ports import Ports
from .records import field_mismatches
from .streams import CLOCK_NS, StreamMonitor, StreamSink, StreamSource, cycle_now, patience
from .tb_accel import weight_words


def lanes_to_beats(values, ly):
    """Lane values (ints below 2**ly.lane) as beats of ``ly.lanes`` lanes, lane 0 in the low bits,
    the last beat padded with zero lanes: ``[(tdata, tlast)]`` with tlast on the last beat."""
    values = list(values)
    beats = []
    for k in range(0, len(values), ly.lanes):
        data = sum(int(v) << (i * ly.lane) for i, v in enumerate(values[k:k + ly.lanes]))
        beats.append([data, False])
    beats[-1][1] = True
    return [tuple(b) for b in beats]


def weight_lanes(words, ly, width):
    """The weight frame's lanes: each ``width``-bit two's-complement word as ``ly.pieces`` lanes,
    least significant first."""
    mask = (1 << ly.lane) - 1
    return [((w & ((1 << width) - 1)) >> (k * ly.lane)) & mask for w in words for k in range(ly.pieces)]


class AxisSource(StreamSource):
    """A :class:`StreamSource` of AXI4-Stream beats: ``tdata`` is the payload, ``tlast`` set with it."""

    def __init__(self, dut, rng, idle):
        super().__init__(dut.aclk, dut.s_axis_tvalid, dut.s_axis_tdata, dut.s_axis_tready, rng=rng, idle=idle)
        self.tlast = dut.s_axis_tlast

    async def frame(self, beats, gapless=False):
        """Send ``[(tdata, tlast)]``; ``gapless``: idle cycles only before the first beat."""
        idle = self.chance
        for k, (data, last) in enumerate(beats):
            if gapless and k == 1:
                self.chance = 0.0
            self.tlast.value = int(last)
            await self.send(data)
        self.chance = idle


async def reset(dut):
    Clock(dut.aclk, CLOCK_NS, unit="ns").start()
    dut.aresetn.value = 0
    dut.s_axis_tvalid.value = 0
    dut.s_axis_tlast.value = 0
    dut.m_axis_tready.value = 0
    await ClockCycles(dut.aclk, 3)
    dut.aresetn.value = 1


def setup(dut):
    job = json.loads(Path(os.environ["SPIKELOOM_JOB"]).read_text())
    ports = Ports.load(job["ports"])
    model = modelfile.load(job["model"])
    return job, ports, model, AxisLayout(ports, job["width"])


def weight_frame(ports, ly):
    return lanes_to_beats(weight_lanes(weight_words(ports), ly, ports.weight_width), ly)


async def receive(sink, ly, n, within, out):
    """``n`` result frames from m_axis as payload ints; a frame whose tlast is not on its
    ``ly.result_beats``-th beat is an error."""
    for i in range(n):
        value = 0
        for k in range(ly.result_beats):
            data = (await sink.recv(within, f"beat {k} of result {i}")).to_unsigned()
            last = bool(sink.tlast.value)
            assert last == (k == ly.result_beats - 1), f"result {i}: tlast = {last} on beat {k} of {ly.result_beats}"
            value |= data << (k * ly.width)
        out.append(value)


@cocotb.test()
async def frames(dut):
    job, ports, model, ly = setup(dut)
    x = np.load(job["inputs"])
    want = expected_records(model, ports, x)
    rng = random.Random(job["seed"])
    await reset(dut)

    # (frame beats, index of the expected record or None for a malformed frame, sent without gaps)
    image = [lanes_to_beats(v, ly) for v in x]
    plan = [(b, i, i % 2 == 0) for i, b in enumerate(image)]
    if ly.beats > 1:  # tlast early: on the middle beat of image 0 (an image of one beat cannot end early)
        cut = image[0][:ly.beats // 2]
        plan.append((cut[:-1] + [(cut[-1][0], True)], None, False))
    plan.append((image[0], 0, True))
    # tlast missing: image 1's beats without it, then two more beats, the second with tlast
    plan.append(([(d, False) for d, _ in image[1]] + [(0x5A, False), (0xA5, True)], None, False))
    plan += [(image[1], 1, False), (image[2], 2, True)]
    malformed = sum(i is None for _, i, _ in plan)
    expect = [(i, gapless) for _, i, gapless in plan if i is not None]

    src = AxisSource(dut, rng, job["idle"])
    sink = StreamSink(dut.aclk, dut.m_axis_tvalid, dut.m_axis_tdata, dut.m_axis_tready, rng=random.Random(job["seed"] + 1),
                      backpressure=job["backpressure"])
    sink.tlast = dut.m_axis_tlast
    monitor = StreamMonitor(dut.aclk, dut.m_axis_tvalid, dut.m_axis_tdata, dut.m_axis_tready, "m_axis").start()

    async def send_all():
        if ly.load:
            await src.frame(weight_frame(ports, ly))
        for beats, _, gapless in plan:
            await src.frame(beats, gapless)
        src.close()
    cocotb.start_soon(send_all())
    res = golden.run(model, x, sparse=ports.sparse_layers)
    within = patience(res.cycle_bound(model, ports.n_pe).max(), ly.count + ly.weight_lanes) * ly.result_beats
    got = []
    problems = []
    try:
        await receive(sink, ly, len(expect), within, got)
    except AssertionError as e:
        problems.append(str(e))
    dut.m_axis_tready.value = 1
    await ClockCycles(dut.aclk, 200)
    records = [want[i] if gapless else replace(want[i], cycles=None) for i, gapless in expect]
    fields = [ports.result.unpack(v) for v in got]
    problems += field_mismatches(records, fields)
    errors = dut.frame_errors.value.to_unsigned()
    if errors != malformed:
        problems.append(f"frame_errors = {errors} after {malformed} malformed frames")
    if monitor.transfers != len(expect) * ly.result_beats:
        problems.append(f"{monitor.transfers} m_axis beats for {len(expect)} results of {ly.result_beats} beats: "
                        "a malformed frame's result was not dropped")
    Path(job["results"]).write_text(json.dumps({
        "test": "frames", "results": len(got), "expected": len(expect), "frame_errors": errors,
        "malformed": malformed, "beats": monitor.transfers, "stalled_cycles": monitor.stalled_cycles,
        "mismatches": problems[:50], "protocol_errors": monitor.errors[:50],
        "cycles_compared": sum(r.cycles is not None for r in records)}))
    assert not problems, "\n".join(problems[:20])
    monitor.check()


async def transfers(clk, valid, ready, out):
    """Append the cycle number of every transfer of a stream to ``out`` (sampled before each edge)."""
    while True:
        await ReadOnly()
        if valid.value and ready.value:
            out.append(cycle_now())
        await RisingEdge(clk)


@cocotb.test()
async def throughput(dut):
    job, ports, _, ly = setup(dut)
    zero = np.zeros((2, ly.count), dtype=np.int64)
    await reset(dut)
    dut.m_axis_tready.value = 1
    ins, outs = [], []
    cocotb.start_soon(transfers(dut.aclk, dut.s_axis_tvalid, dut.s_axis_tready, ins))
    cocotb.start_soon(transfers(dut.aclk, dut.m_axis_tvalid, dut.m_axis_tready, outs))
    src = AxisSource(dut, random.Random(0), 0.0)
    frames = ([weight_frame(ports, ly)] if ly.load else []) + [lanes_to_beats(v, ly) for v in zero]
    for f in frames:
        await src.frame(f)
    src.close()
    for _ in range(100000):
        await RisingEdge(dut.aclk)
        if len(outs) == 2 * ly.result_beats:
            break
    await ClockCycles(dut.aclk, 5)
    problems = []
    # the images' beats after their second: one per `lanes` cycles (each lane is a value the core
    # takes at once); the first two may wait for the core
    first = ly.weight_beats
    for i in range(2):
        beats = ins[first + i * ly.beats:first + (i + 1) * ly.beats]
        gaps = [b - a for a, b in zip(beats[1:], beats[2:])]
        if any(g != ly.lanes for g in gaps):
            problems.append(f"image {i}: s_axis beats {gaps} cycles apart, expected {ly.lanes}")
    for i in range(2):
        beats = outs[i * ly.result_beats:(i + 1) * ly.result_beats]
        if len(beats) != ly.result_beats or beats[-1] - beats[0] != ly.result_beats - 1:
            problems.append(f"result {i}: m_axis beats at cycles {beats}, expected {ly.result_beats} consecutive")
    Path(job["results"]).with_name("throughput.json").write_text(json.dumps(
        {"test": "throughput", "in_beats": len(ins), "out_beats": len(outs), "problems": problems}))
    assert not problems, "\n".join(problems)
