"""cocotb scoreboard bench for the generated accelerator (driver, monitors, golden model, checker).

The job (``$SPIKELOOM_JOB``, written by :func:`spikeloom.sim.runner.cosim`) names the model file,
the generated ``ports.json`` and the input images. The expected results come from the one golden
model (:mod:`spikeloom.model.golden`). Every image's class, exit timestep and every activity counter
must be equal; with the trace port, the spikes of every timestep and layer are compared too and the
first divergence (image, timestep, layer, neuron) is reported.

The Python side never steps the clock while the accelerator computes: it waits on value changes of
the stream handshakes, so the simulator runs free between transfers.
"""

import json
import os
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from spikeloom.model import golden, modelfile


def _fields(desc):
    return [(f["name"], f["offset"], (1 << f["width"]) - 1) for f in desc["fields"]]


def _unpack(value, fields):
    return {name: (value >> off) & mask for name, off, mask in fields}


async def wait_high(signal):
    """Return once ``signal`` has settled high in this or a later timestep (no clock stepping).

    The settled value is checked in ReadOnly first: a signal that rose in this timestep, after the
    value read at the clock edge, fires no later edge to wait for.
    """
    await ReadOnly()
    if not signal.value:
        await RisingEdge(signal)


async def drive_inputs(dut, x, rng, idle):
    """Stream every image's values into ``i_data`` with random idle cycles (valid low)."""
    valid, payload, ready, clk = dut.i_data__valid, dut.i_data__payload, dut.i_data__ready, dut.clk
    for image in x:
        for v in image:
            if idle and rng.random() < idle:
                valid.value = 0
                await ClockCycles(clk, rng.randint(1, 4))
            valid.value = 1
            payload.value = int(v)
            while True:
                await RisingEdge(clk)
                if ready.value:
                    break
                await wait_high(ready)
    valid.value = 0


def weight_words(ports, folder):
    """The ``i_weights`` stream: every PE's ``mem/pe_<p>_weight.hex`` words, PE by PE, as written
    by the generator next to ``ports.json`` (``folder``)."""
    files = [m["file"] for m in ports["memories"] if m["name"] == "weight"]
    return [int(w, 16) for f in files for w in (Path(folder) / f).read_text().split()]


async def drive_weights(dut, words, rng, idle):
    """Stream the weight words into ``i_weights`` with random idle cycles (valid low)."""
    valid, payload, ready, clk = dut.i_weights__valid, dut.i_weights__payload, dut.i_weights__ready, dut.clk
    for w in words:
        if idle and rng.random() < idle:
            valid.value = 0
            await ClockCycles(clk, rng.randint(1, 4))
        valid.value = 1
        payload.value = w
        while True:
            await RisingEdge(clk)
            if ready.value:
                break
            await wait_high(ready)
    valid.value = 0


async def collect(dut, prefix, n, fields, rng, backpressure, out, tag=None):
    """Accept ``n`` transfers (forever if None) on stream ``prefix`` with random back-pressure.

    ``tag()``, if given, is stored with each transfer (the trace monitor tags entries with the
    number of results seen so far, which is the index of the image they belong to).
    """
    valid, payload, ready, clk = (getattr(dut, f"{prefix}__valid"), getattr(dut, f"{prefix}__payload"),
                                  getattr(dut, f"{prefix}__ready"), dut.clk)
    while n is None or len(out) < n:
        if backpressure and rng.random() < backpressure:
            ready.value = 0
            await ClockCycles(clk, rng.randint(1, 6))
        ready.value = 1
        await wait_high(valid)
        await RisingEdge(clk)
        if valid.value:
            try:
                item = _unpack(payload.value.to_unsigned(), fields)
            except ValueError:
                raw = str(payload.value)
                bad = [len(raw) - 1 - i for i, ch in enumerate(raw) if ch not in "01"]
                names = sorted({n for n, off, mask in fields for b in bad if off <= b < off + mask.bit_length()})
                raise ValueError(f"{prefix}: non-0/1 bits in fields {names}") from None
            out.append(item if tag is None else (tag(), item))


def expected(model, x, trace, sparse=()):
    res = golden.run(model, x, trace=trace, sparse=sparse)
    return res, res.counters(adaptive=True)


def compare(i, got, res, counters, model, spikes_got=None):
    """List of mismatch descriptions for image ``i`` (empty when everything is equal)."""
    out = []
    want = {"pred": int(res.pred[i]), "timesteps": int(res.exit_t[i])}
    for ln, cs in counters.items():
        for k, v in cs.items():
            want[f"{ln}.{k}"] = int(v[i])
    for k, v in want.items():
        if got.get(k) != v:
            out.append(f"image {i}: {k} = {got.get(k)} from the RTL, {v} from the golden model")
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
    ports = json.loads(Path(job["ports"]).read_text())
    model = modelfile.load(job["model"])
    x = np.load(job["inputs"])
    rng = random.Random(job["seed"])
    trace = job["trace"] and ports.get("trace") is not None
    res, counters = expected(model, x, trace, tuple(ports.get("sparse_layers", ())))
    dut._log.info(f"{len(x)} images, {model.name}, golden results ready; N = {ports['n_pe']}")

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.i_data__valid.value = 0
    dut.o_result__ready.value = 0
    if ports.get("trace") is not None:
        dut.o_trace__ready.value = 1
    load = (ports.get("weights") or {}).get("store") == "load"
    if load:
        dut.i_weights__valid.value = 0
        words = weight_words(ports, job.get("weights_dir") or Path(job["ports"]).parent)
        assert len(words) == ports["weights"]["count"], f"{len(words)} weight words, {ports['weights']['count']} expected"
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    dut._log.info("reset released")

    results, trace_entries = [], []
    t0 = time.perf_counter()
    if load:
        cocotb.start_soon(drive_weights(dut, words, random.Random(job["seed"] + 2), job["idle"]))
        dut._log.info(f"streaming {len(words)} weight words into i_weights")
    cocotb.start_soon(drive_inputs(dut, x, rng, job["idle"]))
    if ports.get("trace") is not None:
        cocotb.start_soon(collect(dut, "o_trace", None, _fields(ports["trace"]), random.Random(job["seed"] + 1),
                                  job["backpressure"] if trace else 0.0, trace_entries, tag=lambda: len(results)))
    await collect(dut, "o_result", len(x), _fields(ports["result"]), rng, job["backpressure"], results)
    wall = time.perf_counter() - t0
    sim_cycles = int(cocotb.utils.get_sim_time("ns") // 10)

    spikes = [dict() for _ in x]
    n_pe = ports["n_pe"]
    positions = [ly.get("positions", 1) for ly in ports["layers"]]
    for img, e in trace_entries:
        if img < len(x):
            s = spikes[img].setdefault((e["timestep"], e["layer"]), set())
            s.update((e["chunk"] * n_pe + b) * positions[e["layer"]] + e.get("pos", 0)
                     for b in range(n_pe) if e["mask"] >> b & 1)

    mismatches, images = [], []
    bound = res.cycle_bound(model, n_pe)
    for i, got in enumerate(results):
        problems = compare(i, got, res, counters, model, spikes[i] if trace else None)
        mismatches.extend(problems)
        images.append({**{k: int(v) for k, v in got.items()}, "cycle_bound": int(bound[i]), "ok": not problems})
    out = {"simulator": job["simulator"], "n_pe": n_pe, "n_images": len(results),
           "mismatched_images": sum(not r["ok"] for r in images), "mismatches": mismatches[:200],
           "images": images, "wall_s": wall, "sim_cycles": sim_cycles,
           "sim_cycles_per_s": sim_cycles / wall if wall else 0.0}
    Path(job["results"]).write_text(json.dumps(out))
    assert len(results) == len(x), f"{len(results)} results for {len(x)} images"
    assert not mismatches, "\n".join(mismatches[:20])
