"""Run the accelerator under Amaranth's Python simulator (the fast test tier)."""

import random

import numpy as np
from amaranth import Value
from amaranth.sim import Simulator

from .accel import Accelerator, describe
from .plan import QUEUE_DEPTH, Plan


def decode(fields, payload):
    """``{field name: int}`` of a flattened payload, using ``describe()``'s field list."""
    return {f["name"]: (payload >> f["offset"]) & ((1 << f["width"]) - 1) for f in fields}


def rtl_run(model, n_pe, x_q, trace=False, *, seed=0, idle=0.3, backpressure=0.3, max_cycles=1_000_000,
            storage="auto", weights="rom", load_model=None, bank_depth=None, pack=True, queue_depth=QUEUE_DEPTH):
    """Stream the images ``x_q`` (B, input_size) through an ``Accelerator`` and collect the results.

    ``storage``: the weight storage (:class:`~spikeloom.hw.plan.Plan`); the golden model counts
    weight reads for ``Plan(model, n_pe, storage).sparse_layers``.

    With ``weights="load"`` the weights are first streamed into ``i_weights`` (with idle cycles
    too), those of ``load_model`` if given (a test's deliberately different weights), else
    ``model``'s. ``bank_depth``: the weight memories' banks, ``pack``: the packed tail, ``queue_depth``: the PE queues (:class:`Accelerator`).

    Random idle cycles (probability ``idle``) on the input and random back-pressure (probability
    ``backpressure`` of ``ready`` low) on ``o_result`` and ``o_trace``.

    Returns
    -------
    list of dict
        Per image: ``pred``, ``timesteps``, ``cycles``, ``"<layer>.<counter>"`` as ints and, with
        ``trace``, ``"trace"``: the image's trace entries as dicts ``timestep, layer, chunk, mask``.
    """
    x_q = np.asarray(x_q, dtype=np.int64).reshape(len(x_q), -1)
    dut = Accelerator(model, n_pe, trace=trace, storage=storage, weights=weights, bank_depth=bank_depth, pack=pack,
                      queue_depth=queue_depth)
    desc = describe(dut)
    rng = random.Random(seed)
    results, pending = [], []

    async def weight_loader(ctx):
        plan = Plan(load_model or model, n_pe, storage, pack, pair=False, queue_depth=queue_depth)   # (weights "load": never paired)
        mask = (1 << plan.word_bits) - 1
        for p in range(n_pe):
            for w in plan.init(p, "weight"):
                while rng.random() < idle:
                    await ctx.tick()
                ctx.set(dut.i_weights.valid, 1)
                ctx.set(dut.i_weights.payload, w & mask)
                await ctx.tick().until(dut.i_weights.ready)
                ctx.set(dut.i_weights.valid, 0)

    async def producer(ctx):
        for image in x_q:
            for v in image:
                while rng.random() < idle:
                    await ctx.tick()
                ctx.set(dut.i_data.valid, 1)
                ctx.set(dut.i_data.payload, int(v))
                await ctx.tick().until(dut.i_data.ready)
                ctx.set(dut.i_data.valid, 0)

    async def consumer(ctx):
        res = Value.cast(dut.o_result.payload)
        signals = [dut.o_result.valid, res]
        if trace:
            signals += [dut.o_trace.valid, Value.cast(dut.o_trace.payload)]
        cycle = 0
        while len(results) < len(x_q):
            r_ready = int(rng.random() >= backpressure)
            t_ready = int(rng.random() >= backpressure)
            ctx.set(dut.o_result.ready, r_ready)
            if trace:
                ctx.set(dut.o_trace.ready, t_ready)
            _, _, *vals = await ctx.tick().sample(*signals)
            if vals[0] and r_ready:
                out = decode(desc["result"]["fields"], vals[1])
                if trace:
                    out["trace"] = pending[:]
                    pending.clear()
                results.append(out)
            if trace and vals[2] and t_ready:
                pending.append(decode(desc["trace"]["fields"], vals[3]))
            cycle += 1
            if cycle > max_cycles:
                raise TimeoutError(f"no result after {max_cycles} cycles ({len(results)} of {len(x_q)} done)")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    if weights == "load":
        sim.add_testbench(weight_loader, background=True)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    return results
