"""cocotb scoreboard bench for the generated accelerator (driver, monitors, golden model, checker).

The job (``$SPIKELOOM_JOB``, written by :func:`spikeloom.sim.runner.cosim`) names the model file,
the generated ``ports.json`` and the input images. The expected results come from the one golden
model (:mod:`spikeloom.model.golden`). Every image's class, exit timestep and every activity counter
must be equal; with the trace port, the spikes of every timestep and layer are compared too and the
first divergence (image, timestep, layer, neuron) is reported. A :class:`~spikeloom.sim.streams.StreamMonitor`
on each output stream checks that valid, once high without ready, holds with a stable payload until
the transfer (``protocol_errors`` in the results).

The Python side never steps the clock while the accelerator computes: it waits on value changes of
the stream handshakes (the monitors step it only while a payload is offered), so the simulator runs
free between transfers.
"""

import json
import os
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from spikeloom.model import golden, modelfile
from spikeloom.model.geometry import channel

from .ports import Ports
from .records import field_mismatches, from_golden
from .streams import CLOCK_NS, StreamMonitor, StreamSink, StreamSource, cycle_now, patience


def unpack(stream, value, prefix):
    """``{field: int}`` of a payload (a cocotb value) of ``stream`` (a :class:`Ports` stream); a
    payload with X/Z bits is an error naming the fields they fall in."""
    try:
        return stream.unpack(value.to_unsigned())
    except ValueError:
        raw = str(value)
        bad = [len(raw) - 1 - i for i, ch in enumerate(raw) if ch not in "01"]
        names = sorted({f.name for f in stream.fields for b in bad if f.offset <= b < f.offset + f.width})
        raise ValueError(f"{prefix}: non-0/1 bits in fields {names}") from None


def weight_words(ports, folder=None):
    """The ``i_weights`` stream: every PE's ``mem/pe_<p>_weight.hex`` words, PE by PE, as written
    by the generator next to ``ports.json`` (or under ``folder``)."""
    folder = Path(folder) if folder else ports.folder
    return [int(w, 16) for f in ports.weight_files() for w in (folder / f).read_text().split()]


async def collect(dut, prefix, n, stream, rng, backpressure, out, tag=None, within=None):
    """Accept ``n`` transfers (forever if None) on stream ``prefix`` with random back-pressure.

    ``tag()``, if given, is stored with each transfer (the trace monitor tags entries with the
    number of results seen so far, which is the index of the image they belong to). ``within``:
    the most cycles to wait for each transfer (:func:`~spikeloom.sim.streams.patience`) before the
    run fails with a lost result.
    """
    sink = StreamSink.of(dut, prefix, rng=rng, backpressure=backpressure)
    while n is None or len(out) < n:
        item = unpack(stream, await sink.recv(within, f"result of image {len(out)}"), prefix)
        out.append(item if tag is None else (tag(), item))


def monitors(dut, ports):
    """A started :class:`StreamMonitor` on each of the design's output streams (``o_result``, and
    ``o_trace`` if it has one), with the payload fields of ``ports`` to name a changed field."""
    streams = [ports.result] + ([ports.trace] if ports.trace is not None else [])
    return [StreamMonitor.of(dut, s.port, fields=s.fields).start() for s in streams]


def expected(model, x, trace, sparse):
    """The golden model's result of images ``x`` and their records."""
    res = golden.run(model, x, trace=trace, sparse=sparse)
    return res, from_golden(res)


def compare(i, got, want, res=None, model=None, spikes_got=None):
    """List of mismatch descriptions for image ``i`` (empty when everything is equal): the RTL's
    payload fields ``got`` against the golden record ``want``; with the trace's spikes, the first
    divergence too."""
    out = field_mismatches([want], [got], first=i)
    if spikes_got is not None and out:
        out.extend(first_divergence(i, spikes_got, res, model))
    return out


def first_divergence(i, spikes_got, res, model):
    """The first (timestep, layer, neuron) whose spike differs, from the trace port (neurons in
    golden's flat (C, H, W) order)."""
    for t in range(int(max(res.exit_t[i], max((k[0] for k in spikes_got), default=0)))):
        for li, ly in enumerate(model.layers[:-1]):
            want = set(np.flatnonzero(res.spikes[ly.name][t, i]).tolist()) if t < res.t_max else set()
            got = spikes_got.get((t + 1, li), set())
            if want != got:
                n = min(want ^ got)
                return [f"image {i}: first divergence at timestep {t + 1}, layer {li} ({ly.name}), neuron {n}: "
                        f"RTL {'spikes' if n in got else 'silent'}, golden model {'spikes' if n in want else 'silent'}"]
    return [f"image {i}: spikes agree in every timestep and layer; the difference is in the output layer"]


@cocotb.test()
async def scoreboard(dut):
    job = json.loads(Path(os.environ["SPIKELOOM_JOB"]).read_text())
    ports = Ports.load(job["ports"])
    model = modelfile.load(job["model"])
    x = np.load(job["inputs"])
    rng = random.Random(job["seed"])
    trace = job["trace"] and ports.trace is not None
    res, want = expected(model, x, trace, ports.sparse_layers)
    dut._log.info(f"{len(x)} images, {model.name}, golden results ready; N = {ports.n_pe}")

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    dut.i_data__valid.value = 0
    dut.o_result__ready.value = 0
    if ports.trace is not None:
        dut.o_trace__ready.value = 1
    load = ports.weights_loaded
    if load:
        dut.i_weights__valid.value = 0
        words = weight_words(ports, job.get("weights_dir"))
        assert len(words) == ports.weight_count, f"{len(words)} weight words, {ports.weight_count} expected"
    watch = monitors(dut, ports)
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    dut._log.info("reset released")

    results, trace_entries = [], []
    t0 = time.perf_counter()
    if load:
        src = StreamSource.of(dut, "i_weights", rng=random.Random(job["seed"] + 2), idle=job["idle"])
        cocotb.start_soon(src.send_all(words))
        dut._log.info(f"streaming {len(words)} weight words into i_weights")
    cocotb.start_soon(StreamSource.of(dut, "i_data", rng=rng, idle=job["idle"]).send_all(
        v for image in x for v in image))
    if ports.trace is not None:
        cocotb.start_soon(collect(dut, "o_trace", None, ports.trace, random.Random(job["seed"] + 1),
                                  job["backpressure"] if trace else 0.0, trace_entries, tag=lambda: len(results)))
    bound = res.cycle_bound(model, ports.n_pe)
    within = patience(bound.max() if len(x) else 0, ports.input_count)
    lost = []  # a result that never came (the watchdog of collect): reported, not a hang
    try:
        await collect(dut, "o_result", len(x), ports.result, rng, job["backpressure"], results, within=within)
    except AssertionError as e:
        lost.append(str(e))
    wall = time.perf_counter() - t0
    sim_cycles = cycle_now()

    spikes = [dict() for _ in x]
    n_pe = ports.n_pe
    positions = [ly.positions for ly in ports.layers]
    for img, e in trace_entries:
        if img < len(x):
            s = spikes[img].setdefault((e["timestep"], e["layer"]), set())
            s.update(channel(b, e["chunk"], n_pe) * positions[e["layer"]] + e.get("pos", 0)
                     for b in range(n_pe) if e["mask"] >> b & 1)

    problems_all, images = list(lost), []
    for i, got in enumerate(results):
        problems = compare(i, got, want[i], res, model, spikes[i] if trace else None)
        problems_all.extend(problems)
        images.append({**{k: int(v) for k, v in got.items()}, "cycle_bound": int(bound[i]), "ok": not problems})
    out = {"simulator": job["simulator"], "n_pe": n_pe, "n_images": len(results),
           # images without a result count as mismatched
           "mismatched_images": sum(not r["ok"] for r in images) + len(x) - len(results),
           "mismatches": problems_all[:200],
           "images": images, "wall_s": wall, "sim_cycles": sim_cycles,
           "sim_cycles_per_s": sim_cycles / wall if wall else 0.0,
           "stalled_cycles": {w.rule.name: w.stalled_cycles for w in watch},
           "protocol_errors": [e for w in watch for e in w.errors][:200]}
    Path(job["results"]).write_text(json.dumps(out))
    assert len(results) == len(x), f"{len(results)} results for {len(x)} images"
    assert not problems_all, "\n".join(problems_all[:20])
    for w in watch:
        w.check()
