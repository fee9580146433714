"""cocotb bench for the export's pin-level wrapper ``spikeloom_top`` (``flows/export.py``).

What the core benches cannot see: with ``--weights load`` the wrapper takes the weight words from
its input stream after reset (``in_data``-wide pieces, least significant first), and it reads the
result payload out one byte at a time (``res_byte_sel`` -> ``res_byte``). The bench streams the
weights and the images through ``in_*``, reads every result byte, and checks the decoded payload
(class, timesteps and every counter) against the golden model. The job comes from
``$SPIKELOOM_JOB`` as for :mod:`spikeloom.sim.tb_accel`.
"""

import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, Timer

from spikeloom.model import modelfile

from .tb_accel import compare, expected, weight_words


async def send(dut, value):
    """One transfer on the input stream (valid held until a rising edge with ready)."""
    dut.in_valid.value = 1
    dut.in_data.value = value
    while True:
        await RisingEdge(dut.clk)
        if dut.in_ready.value:
            break
    dut.in_valid.value = 0


async def drive(dut, ports, words, x):
    in_w = ports["input"]["width"]
    if words is not None:
        wb = ports["weights"]["width"]
        pieces = -(-wb // in_w)
        for w in words:
            for k in range(pieces):
                await send(dut, (w >> (k * in_w)) & ((1 << in_w) - 1))
    for image in x:
        for v in image:
            await send(dut, int(v))


async def read_payload(dut, n_bytes):
    value = 0
    for k in range(n_bytes):
        dut.res_byte_sel.value = k
        await Timer(1, unit="ps")
        value |= dut.res_byte.value.to_unsigned() << (8 * k)
    return value


@cocotb.test()
async def wrapper(dut):
    job = json.loads(Path(os.environ["SPIKELOOM_JOB"]).read_text())
    ports = json.loads(Path(job["ports"]).read_text())
    model = modelfile.load(job["model"])
    x = np.load(job["inputs"])
    res, counters = expected(model, x, False, tuple(ports.get("sparse_layers", ())))
    load = (ports.get("weights") or {}).get("store") == "load"
    words = weight_words(ports, Path(job["ports"]).parent) if load else None

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.in_valid.value = 0
    dut.res_ready.value = 0
    dut.res_byte_sel.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    cocotb.start_soon(drive(dut, ports, words, x))

    fields = [(f["name"], f["offset"], (1 << f["width"]) - 1) for f in ports["result"]["fields"]]
    n_bytes = -(-ports["result"]["width"] // 8)
    mismatches, images = [], []
    for i in range(len(x)):
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if dut.res_valid.value:
                break
        pins = (dut.res_pred.value.to_unsigned(), dut.res_timesteps.value.to_unsigned())
        await Timer(1, unit="ps")  # out of the read-only phase
        payload = await read_payload(dut, n_bytes)
        got = {name: (payload >> off) & mask for name, off, mask in fields}
        problems = compare(i, got, res, counters, model)
        if pins != (got["pred"], got["timesteps"]):
            problems.append(f"image {i}: res_pred/res_timesteps {pins} differ from the payload bytes")
        mismatches.extend(problems)
        images.append({"pred": got["pred"], "timesteps": got["timesteps"], "cycles": got["cycles"],
                       "ok": not problems})
        dut.res_ready.value = 1
        await RisingEdge(dut.clk)
        dut.res_ready.value = 0
    out = {"n_images": len(images), "mismatched_images": sum(not r["ok"] for r in images),
           "mismatches": mismatches[:50], "images": images, "weight_words": len(words or [])}
    Path(job["results"]).write_text(json.dumps(out))
    assert not mismatches, "\n".join(mismatches[:20])
