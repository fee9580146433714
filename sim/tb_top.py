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
from cocotb.triggers import ClockCycles, Timer

from spikeloom.model import modelfile

from .ports import Ports
from .streams import CLOCK_NS, StreamSink, StreamSource
from .tb_accel import compare, expected, weight_words


def input_values(ports, words, x):
    """What the wrapper's input stream carries: the weight words (if loaded) as ``in_data``-wide
    pieces, least significant first, then every image's values."""
    in_w = ports.input_width
    if words is not None:
        pieces = -(-ports.weight_width // in_w)
        for w in words:
            for k in range(pieces):
                yield (w >> (k * in_w)) & ((1 << in_w) - 1)
    for image in x:
        yield from (int(v) for v in image)


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
    ports = Ports.load(job["ports"])
    model = modelfile.load(job["model"])
    x = np.load(job["inputs"])
    res, want = expected(model, x, False, ports.sparse_layers)
    words = weight_words(ports) if ports.weights_loaded else None

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    dut.in_valid.value = 0
    dut.res_ready.value = 0
    dut.res_byte_sel.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    cocotb.start_soon(StreamSource(dut.clk, dut.in_valid, dut.in_data, dut.in_ready).send_all(
        input_values(ports, words, x)))
    result = StreamSink(dut.clk, dut.res_valid, None, dut.res_ready)

    n_bytes = -(-ports.result.width // 8)
    mismatches, images = [], []
    for i in range(len(x)):
        await result.wait_valid()
        pins = (dut.res_pred.value.to_unsigned(), dut.res_timesteps.value.to_unsigned())
        await Timer(1, unit="ps")  # out of the read-only phase
        got = ports.result.unpack(await read_payload(dut, n_bytes))
        problems = compare(i, got, want[i])
        if pins != (got["pred"], got["timesteps"]):
            problems.append(f"image {i}: res_pred/res_timesteps {pins} differ from the payload bytes")
        mismatches.extend(problems)
        images.append({"pred": got["pred"], "timesteps": got["timesteps"], "cycles": got["cycles"],
                       "ok": not problems})
        await result.ack()
    out = {"n_images": len(images), "mismatched_images": sum(not r["ok"] for r in images),
           "mismatches": mismatches[:50], "images": images, "weight_words": len(words or [])}
    Path(job["results"]).write_text(json.dumps(out))
    assert not mismatches, "\n".join(mismatches[:20])
