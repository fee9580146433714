"""cocotb fault bench: resets at random points of a long random stream of images, every result
checked against the golden model.

The scoreboard of :mod:`spikeloom.sim.tb_accel` (the job from ``$SPIKELOOM_JOB``, written by
:func:`spikeloom.sim.runner.cosim` with ``bench="tb_faults"``; expected results from
:mod:`spikeloom.model.golden`; records compared with :mod:`spikeloom.sim.records`), with a seeded
schedule of resets of four kinds:

* ``input``: part of an image's values transferred, then reset;
* ``compute``: every value of the image transferred, no result yet (``o_result.valid`` low when
  the reset is asserted; a reset that finds the result already waiting counts as ``result``);
* ``result``: the result waits (valid high) while ``ready`` is held low for a random while, then reset;
* ``weights`` (``weights="load"`` designs only): part of the ``i_weights`` stream transferred, then reset.

After every reset the bench starts the stream protocol again (the whole weight stream first when
the design loads its weights: the sequencer returns to its weight phase and ``i_data`` stays closed
until the last word) and goes on with the next image: an interrupted image is not sent again, so a
stale result of it would be compared with the next image's expectation. Checked besides each
result's class, exit timestep and every counter:

* ``o_result.valid`` never rises unless a whole image has been transferred since the last result or
  reset (no stale, spurious or duplicated result), and it is low when a reset is released;
* the results taken are exactly the completed images, in order (the ``o_result`` monitor's transfer
  count equals the number of checked images, also after a quiet tail at the end);
* the hold rule on every output stream (:class:`~spikeloom.sim.streams.StreamMonitor`).

The job's ``options``: ``resets`` (``{kind: count}``, spread over the images at random) and
``max_hold`` (most cycles a waiting result is held before its reset). Results: counts of checked
inferences, resets by kind, stalled cycles and stalled results, and every problem found.
"""

import json
import os
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, SimTimeoutError, with_timeout

from spikeloom.model import modelfile

from .ports import Ports
from .streams import CLOCK_NS, StreamSink, StreamSource, cycle_now, patience, wait_high
from .tb_accel import compare, expected, monitors, unpack, weight_words

#: The reset kinds, in the order of the results' counts.
KINDS = ("input", "compute", "result", "weights")
#: Of these, the ones that interrupt an image (``weights`` happens before the first image of a run).
IMAGE_KINDS = KINDS[:3]


def schedule(rng, n_images, resets, loads_weights):
    """``(image_faults, weight_faults)``: ``{image index: kind}`` for the image kinds of ``resets``
    (``{kind: count}``) at distinct random images, and per run start (the first, and one after each
    image fault) the number of weight-load resets before the full weight stream."""
    planned = [k for k in IMAGE_KINDS for _ in range(resets.get(k, 0))]
    if len(planned) > n_images:
        raise ValueError(f"{len(planned)} image resets planned for {n_images} images")
    rng.shuffle(planned)
    faults = dict(zip(sorted(rng.sample(range(n_images), len(planned))), planned))
    starts = [0] * (len(planned) + 1)
    for _ in range(resets.get("weights", 0) if loads_weights else 0):
        starts[rng.randrange(len(starts))] += 1
    return faults, starts


class FaultBench:
    """The drivers, the checks and the counts of one fault run on ``dut``."""

    def __init__(self, dut, job):
        self.dut, self.job = dut, job
        self.opts = job.get("options") or {}
        self.ports = Ports.load(job["ports"])
        self.model = modelfile.load(job["model"])
        self.x = np.load(job["inputs"])
        self.rng = random.Random(job["seed"])
        self.res, self.want = expected(self.model, self.x, False, self.ports.sparse_layers)
        self.bound = self.res.cycle_bound(self.model, self.ports.n_pe)
        self.load = self.ports.weights_loaded
        self.words = weight_words(self.ports, job.get("weights_dir")) if self.load else None
        self.resets = dict.fromkeys(KINDS, 0)
        self.sent = 0              # i_data values transferred since the last result or reset
        self.checked = 0
        self.problems, self.order_errors = [], []
        self.src = StreamSource.of(dut, "i_data", rng=self.rng, idle=job["idle"])
        self.sink = StreamSink.of(dut, "o_result", rng=random.Random(job["seed"] + 1),
                                  backpressure=job["backpressure"])
        self.wsrc = (StreamSource.of(dut, "i_weights", rng=random.Random(job["seed"] + 2), idle=job["idle"])
                     if self.load else None)

    def cycle(self):
        return cycle_now()

    def patience(self, i):
        """Cycles to wait for image ``i``'s result before calling it lost (streams.patience)."""
        return patience(self.bound[i], self.ports.input_count)

    async def cycles(self, k):
        if k > 0:
            await ClockCycles(self.dut.clk, k)

    def quiet_inputs(self):
        self.dut.i_data__valid.value = 0
        self.dut.o_result__ready.value = 0
        if self.load:
            self.dut.i_weights__valid.value = 0

    async def reset(self, kind=None):
        """Reset for 1..3 cycles with every input quiet; ``o_result.valid`` must be low after it."""
        dut = self.dut
        dut.rst.value = 1
        self.quiet_inputs()
        await ClockCycles(dut.clk, self.rng.randint(1, 3))
        dut.rst.value = 0
        self.sent = 0
        if kind is not None:
            self.resets[kind] += 1
        await ReadOnly()
        if dut.o_result__valid.value:
            self.order_errors.append(f"o_result valid at cycle {self.cycle()} right after a reset ({kind})")
        await RisingEdge(dut.clk)

    async def watch_results(self):
        """``o_result.valid`` may rise only once a whole image has been transferred since the last
        result or reset."""
        valid, n = self.dut.o_result__valid, self.ports.input_count
        while True:
            await RisingEdge(valid)
            await ReadOnly()
            if valid.value and not self.dut.rst.value and self.sent < n:
                self.order_errors.append(f"o_result valid at cycle {self.cycle()} with {self.sent} of {n} values "
                                         f"of an image transferred since the last result or reset")

    async def send_images(self, images):
        """Every value of the images ``images`` (indices), then valid low."""
        for i in images:
            for v in self.x[i]:
                await self.src.send(v)
                self.sent += 1
        self.src.close()

    async def send_prefix(self, i, count):
        for v in self.x[i][:count]:
            await self.src.send(v)
            self.sent += 1
        self.src.close()

    async def take(self, i):
        """Image ``i``'s result, with random back-pressure, checked against the golden model."""
        got = unpack(self.ports.result, await self.sink.recv(self.patience(i), f"result of image {i}"), "o_result")
        if self.sent != self.ports.input_count:
            self.order_errors.append(f"image {i}: its result was taken at cycle {self.cycle()} after {self.sent} "
                                     f"of {self.ports.input_count} values (i_data opens only once the previous "
                                     f"result is taken: a duplicated, early or stale result, or input taken while "
                                     f"a result waited)")
        self.sent = 0
        self.problems.extend(compare(i, got, self.want[i]))
        self.checked += 1
        if self.checked % 1000 == 0:
            self.dut._log.info(f"{self.checked} inferences checked, resets so far {self.resets}")

    async def start_run(self, weight_faults):
        """After a reset: ``weight_faults`` interrupted weight loads, then the whole weight stream
        (``weights="load"``); ROM designs start at once."""
        if not self.load:
            return None
        for _ in range(weight_faults):
            for w in self.words[:self.rng.randrange(1, len(self.words)) if len(self.words) > 1 else 0]:
                await self.wsrc.send(w)
            self.wsrc.close()
            await self.cycles(self.rng.randint(0, 3))
            await self.reset("weights")
        return cocotb.start_soon(self.wsrc.send_all(self.words))

    async def fault(self, i, kind):
        """Interrupt image ``i`` (its earlier images' results taken) with a reset of ``kind``."""
        dut, rng, n = self.dut, self.rng, self.ports.input_count
        dut.o_result__ready.value = 0
        if kind == "input":
            await self.send_prefix(i, rng.randrange(1, n) if n > 1 else 0)
            await self.cycles(rng.randint(0, 3))
        else:
            await self.send_images([i])
            if kind == "compute":
                await self.cycles(rng.randint(0, max(0, int(self.bound[i]) - n) // 2))
            else:
                try:
                    await with_timeout(wait_high(dut.o_result__valid), self.patience(i) * CLOCK_NS, "ns")
                except SimTimeoutError:
                    raise AssertionError(f"o_result: image {i}'s result never became valid within "
                                         f"{self.patience(i)} cycles: a lost result or a deadlock") from None
                await RisingEdge(dut.clk)
                await self.cycles(rng.randint(0, self.opts.get("max_hold", 8)))
            await ReadOnly()
            if kind == "compute" and dut.o_result__valid.value:
                kind = "result"  # the result was quicker than the drawn delay
            await RisingEdge(dut.clk)
        await self.reset(kind)

    async def run(self):
        dut, x = self.dut, self.x
        faults, weight_faults = schedule(self.rng, len(x), self.opts.get("resets", {}), self.load)
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        dut.rst.value = 1
        self.quiet_inputs()
        if self.ports.trace is not None:
            dut.o_trace__ready.value = 1
        self.watch = monitors(dut, self.ports)
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        cocotb.start_soon(self.watch_results())
        t0 = time.perf_counter()
        start, runs = 0, 0
        for end in [*sorted(faults), len(x)]:
            wtask = await self.start_run(weight_faults[runs])
            feeder = cocotb.start_soon(self.send_images(range(start, end)))
            for i in range(start, end):
                await self.take(i)
            await feeder
            if wtask is not None:
                await wtask
            if end < len(x):
                await self.fault(end, faults[end])
            start, runs = end + 1, runs + 1
        # a quiet tail with ready high: no further result may appear
        dut.o_result__ready.value = 1
        await ClockCycles(dut.clk, int(self.bound.max()) + 50 if len(x) else 50)
        result_monitor = self.watch[0]
        if result_monitor.transfers != self.checked:
            self.order_errors.append(f"{result_monitor.transfers} o_result transfers for {self.checked} completed "
                                     f"images")
        return time.perf_counter() - t0

    def report(self, wall):
        w = self.watch[0]
        interrupted = sum(self.resets[k] for k in IMAGE_KINDS)
        return {"simulator": self.job["simulator"], "n_pe": self.ports.n_pe, "n_images": len(self.x),
                "weights": "load" if self.load else "rom", "checked": self.checked, "interrupted": interrupted,
                "resets": self.resets, "stalled_cycles": {m.rule.name: m.stalled_cycles for m in self.watch},
                "stalled_results": w.stalled_transfers,
                "result_transfers": w.transfers,
                "mismatched_images": len({p.split(":")[0] for p in self.problems}),
                "mismatches": self.problems[:200], "order_errors": self.order_errors[:200],
                "protocol_errors": [e for m in self.watch for e in m.errors][:200],
                "wall_s": wall, "sim_cycles": self.cycle()}


@cocotb.test()
async def faults(dut):
    job = json.loads(Path(os.environ["SPIKELOOM_JOB"]).read_text())
    bench = FaultBench(dut, job)
    dut._log.info(f"{len(bench.x)} images, {bench.model.name}, N = {bench.ports.n_pe}, "
                  f"weights {'load' if bench.load else 'rom'}; resets planned: {job['options'].get('resets')}")
    wall = await bench.run()
    out = bench.report(wall)
    Path(job["results"]).write_text(json.dumps(out))
    dut._log.info(f"checked {out['checked']} inferences, resets {out['resets']}, "
                  f"{out['stalled_cycles']['o_result']} stalled cycles over {out['stalled_results']} results")
    assert out["checked"] + out["interrupted"] == len(bench.x), out
    assert not bench.problems, "\n".join(bench.problems[:20])
    assert not bench.order_errors, "\n".join(bench.order_errors[:20])
    for m in bench.watch:
        m.check()
