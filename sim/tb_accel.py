"""cocotb scoreboard bench for the generated accelerator (stimulus, golden model, checker).

The job (``$SPIKELOOM_JOB``, written by :func:`spikeloom.sim.runner.cosim`) names the model file,
the generated ``ports.json`` and the input images. The expected results come from the one golden
model (:mod:`spikeloom.model.golden`). Every image's class, exit timestep and every activity counter
must be equal; with the trace port, the spikes of every timestep and layer are compared too and the
first divergence (image, timestep, layer, neuron) is reported.

The design runs inside the free-running harness of :mod:`spikeloom.sim.harness` (the toplevel
``spikeloom_cosim``): its own clock, the input stream with random idle cycles, random back-pressure
on every output stream, the hold rule checked on them at every edge (``protocol_errors``), and a
watchdog per result, all in Verilog. This bench only sets each round of images up and wakes when the
round is done, so the simulator runs at its own speed. The other benches (``tb_faults``, ``tb_top``)
drive the core's ports from Python with :mod:`spikeloom.sim.streams` and use the helpers here.
"""

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge

from spikeloom.model import golden, modelfile
from spikeloom.model.geometry import channel

from .harness import FILES, Depths, parse_words, rounds, threshold, unpack_word
from .ports import Ports
from .records import field_mismatches, from_golden
from .streams import MAX_IDLE, HoldRule, StreamMonitor, cycle_now, lost_message, patience


def unpack(stream, value, prefix):
    """``{field: int}`` of a payload (a cocotb value) of ``stream`` (a :class:`Ports` stream); a
    payload with X/Z bits is an error naming the fields they fall in."""
    try:
        return stream.unpack(value.to_unsigned())
    except ValueError:
        return unpack_word(stream, str(value), prefix)


def weight_words(ports, folder=None):
    """The ``i_weights`` stream: every PE's ``mem/pe_<p>_weight.hex`` words, PE by PE, as written
    by the generator next to ``ports.json`` (or under ``folder``)."""
    folder = Path(folder) if folder else ports.folder
    return [int(w, 16) for f in ports.weight_files() for w in (folder / f).read_text().split()]


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
    payload fields ``got`` against the golden record ``want``; with the trace's spikes
    (``spikes_got``), every spike of every executed timestep and layer too (the first divergence is
    named; when only the fields differ, that the spikes agree)."""
    out = field_mismatches([want], [got], first=i)
    if spikes_got is not None:
        div = first_divergence(i, spikes_got, res, model)
        if div or out:
            out.extend(div or [f"image {i}: spikes agree in every timestep and layer; the difference is in the "
                                "output layer"])
    return out


def first_divergence(i, spikes_got, res, model):
    """The first (timestep, layer, neuron) whose spike differs, from the trace port (neurons in
    golden's flat (C, H, W) order), as a one-line list; empty when every spike agrees."""
    for t in range(int(max(res.exit_t[i], max((k[0] for k in spikes_got), default=0)))):
        for li, ly in enumerate(model.layers[:-1]):
            want = set(np.flatnonzero(res.spikes[ly.name][t, i]).tolist()) if t < res.t_max else set()
            got = spikes_got.get((t + 1, li), set())
            if want != got:
                n = min(want ^ got)
                return [f"image {i}: first divergence at timestep {t + 1}, layer {li} ({ly.name}), neuron {n}: "
                        f"RTL {'spikes' if n in got else 'silent'}, golden model {'spikes' if n in want else 'silent'}"]
    return []


def hold_violations(h, stream):
    """The hold-rule violations the harness counted on output ``stream`` (a :class:`Ports` stream),
    in :class:`~spikeloom.sim.streams.HoldRule`'s words: the first dropped valid and the first changed
    payload in full, then how many more of each."""
    name, out = stream.port, []
    drops, changes = (int(getattr(h, f"{name}_{k}").value) for k in ("drops", "changes"))
    if drops:
        out.append(f"{name}: valid dropped at cycle {int(getattr(h, f'{name}_drop_cycle').value)} before the "
                   f"transfer (held without ready; {drops} times in all)")
    if changes:
        old, new = (int(getattr(h, f"{name}_change_{k}").value) for k in ("old", "new"))
        fields = ", ".join(HoldRule(name, stream.fields).changed_fields(old, new))
        out.append(f"{name}: payload field(s) {fields} changed at cycle {int(getattr(h, f'{name}_change_cycle').value)}"
                   f" while valid was held without ready ({changes} times in all)")
    return out


@cocotb.test()
async def scoreboard(dut):
    """Images through the free-running harness (:mod:`spikeloom.sim.harness`): the bench sets a round
    of images up, raises ``go``, and wakes again when the round is done (or its watchdog fired)."""
    h = dut
    job = json.loads(Path(os.environ["SPIKELOOM_JOB"]).read_text())
    ports = Ports.load(job["ports"])
    model = modelfile.load(job["model"])
    x = np.load(job["inputs"])
    trace = job["trace"] and ports.trace is not None
    res, want = expected(model, x, trace, ports.sparse_layers)
    depths = Depths(ports, job["options"].get("round_images"))  # as sim/runner.py built the harness
    dut._log.info(f"{len(x)} images, {model.name}, golden results ready; N = {ports.n_pe}")

    h.seed.value = int(job["seed"]) & 0xFFFFFFFF
    h.idle_th.value = threshold(job["idle"])
    h.bp_o_result.value = threshold(job["backpressure"])
    h.bp_o_trace.value = threshold(job["backpressure"] if trace else 0.0)
    load = ports.weights_loaded
    words = []
    if load:
        words = weight_words(ports, job.get("weights_dir"))
        assert len(words) == ports.weight_count, f"{len(words)} weight words, {ports.weight_count} expected"
        Path(FILES["weights"]).write_text("".join(f"{w:x}\n" for w in words))
    await ClockCycles(h.clk, 3)
    h.rst.value = 0
    dut._log.info("reset released")

    bound = res.cycle_bound(model, ports.n_pe)
    results, trace_entries, lost = [], [], []
    t0, simulating, n_rounds = time.perf_counter(), 0.0, 0
    for start, stop in rounds(ports, res.exit_t, depths):
        chunk = np.asarray(x[start:stop], dtype=np.int64)
        Path(FILES["inputs"]).write_text("".join(f"{int(v):x}\n" for v in chunk.ravel()))
        within = patience(bound[start:stop].max(), ports.input_count)
        if load and start == 0:
            within += len(words) * (MAX_IDLE + 1)
        h.n_values.value = chunk.size
        h.n_images.value = len(chunk)
        h.patience.value = within
        h.load_weights.value = int(load and start == 0)
        n_rounds += 1
        h.go.value = 1
        await RisingEdge(h.clk)
        h.go.value = 0
        waited = time.perf_counter()
        await First(RisingEdge(h.done), RisingEdge(h.timeout))
        simulating += time.perf_counter() - waited
        await ReadOnly()
        n_res = int(h.o_result_n.value)
        if n_res > stop - start:  # a result beyond the round's last image (captured before it closed)
            lost.append(f"o_result: {n_res - (stop - start)} result(s) more than the {stop - start} images of "
                        f"images {start}..{stop - 1}")
            n_res = stop - start
        words_res = parse_words(FILES["results"], ports.result.width) if n_res else []
        for k, w in enumerate(words_res[:n_res]):
            try:
                results.append(unpack_word(ports.result, w, "o_result"))
            except ValueError as e:
                # a payload with X/Z bits: named here, and the image's fields read -1 (never a golden value)
                lost.append(f"image {start + k}: {e}")
                results.append({f.name: -1 for f in ports.result.fields})
        if ports.trace is not None and int(h.o_trace_n.value):
            n_tr = int(h.o_trace_n.value)
            if int(h.o_trace_overflow.value):
                lost.append(f"o_trace: {n_tr} entries in images {start}..{stop - 1}, more than the {depths.trace} "
                            "the harness holds (the golden model expects fewer)")
            for w in parse_words(FILES["trace"], ports.trace.width + 32)[:n_tr]:
                if isinstance(w, int):
                    tag, payload = w >> ports.trace.width, w & ((1 << ports.trace.width) - 1)
                    trace_entries.append((start + tag, ports.trace.unpack(payload)))
                else:
                    lost.append(f"o_trace: an entry in images {start}..{stop - 1} had X/Z bits")
        if int(h.timeout.value):
            lost.append(lost_message("o_result", f"result of image {start + n_res}", within))
            break
        await RisingEdge(h.clk)
    wall = time.perf_counter() - t0
    sim_cycles = cycle_now()
    streams = [ports.result] + ([ports.trace] if ports.trace is not None else [])
    protocol = [m for s in streams for m in hold_violations(h, s)]
    stalled = {s.port: int(getattr(h, f"{s.port}_stalled").value) for s in streams}

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
        if got["pred"] < 0:
            problems = [f"image {i}: the result payload had X/Z bits"]
        else:
            problems = compare(i, got, want[i], res, model, spikes[i] if trace else None)
            problems_all.extend(problems)
        images.append({**{k: int(v) for k, v in got.items()}, "cycle_bound": int(bound[i]), "ok": not problems})
    out = {"simulator": job["simulator"], "n_pe": n_pe, "n_images": len(results),
           # images without a result count as mismatched
           "mismatched_images": sum(not r["ok"] for r in images) + len(x) - len(results),
           "mismatches": problems_all[:200],
           "images": images, "wall_s": wall, "sim_cycles": sim_cycles,
           "sim_cycles_per_s": sim_cycles / wall if wall else 0.0,
           # of wall_s: seconds the simulator ran free (the rest is this bench's Python between rounds)
           "free_running_s": simulating, "rounds": n_rounds,
           # images whose every spike was compared through the trace port
           "spikes_compared": len(results) if trace else 0,
           "stalled_cycles": stalled, "protocol_errors": protocol[:200]}
    Path(job["results"]).write_text(json.dumps(out))
    assert len(results) == len(x), f"{len(results)} results for {len(x)} images"
    assert not problems_all, "\n".join(problems_all[:20])
    assert not protocol, "\n".join(protocol[:20])
