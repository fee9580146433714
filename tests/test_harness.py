"""The co-simulation harness's pure parts (sim/harness.py): no simulator needed. The harness itself
runs in every co-simulation of the sim/ tier (a Verilator build of it fails on any warning)."""

import numpy as np
import pytest

from spikeloom.hw.accel import generate
from spikeloom.model.randnet import random_model
from spikeloom.sim.harness import (TOP, Depths, harness_verilog, parse_words, rounds, threshold,
                                   trace_per_timestep, unpack_word)
from spikeloom.sim.ports import Field, Ports, Stream


def test_parse_words_reads_icarus_and_verilator_files(tmp_path):
    """Address comments (Icarus) are skipped; a word with unknown digits comes back as a bit string
    whose X bits name the payload fields they fall in."""
    f = tmp_path / "w.hex"
    f.write_text("// 0x00000000\n1f\n// 0x00000001\n0x3\nabc\n")
    words = parse_words(f, 12)
    assert words[0] == 0x1F and words[2] == 0xABC
    assert words[1] == "0000xxxx0011"[-12:].rjust(12, "x")
    s = Stream("o_result", 12, (Field("pred", 0, 4), Field("timesteps", 4, 4), Field("cycles", 8, 4)))
    assert unpack_word(s, 0xABC, "o_result") == {"pred": 0xC, "timesteps": 0xB, "cycles": 0xA}
    with pytest.raises(ValueError, match=r"o_result: non-0/1 bits in fields \['timesteps'\]"):
        unpack_word(s, words[1], "o_result")


def test_threshold_of_probabilities():
    assert threshold(0.0) == 0 and threshold(1.0) == 1 << 16 and threshold(0.25) == 1 << 14
    with pytest.raises(ValueError):
        threshold(1.5)


def _ports(tmp_path, trace):
    model = random_model((20, 13, 11, 5), seed=3, t_max=4)
    generate(model, 3, tmp_path / "rtl", trace=trace)
    return Ports.load(tmp_path / "rtl" / "ports.json")


def test_rounds_respect_both_memories(tmp_path):
    """Rounds hold at most ``images`` images and, with the trace port, no more entries than the trace
    memory; every image is in exactly one round, in order."""
    ports = _ports(tmp_path, trace=True)
    d = Depths(ports, max_images=4)
    assert d.images == 4 and d.inputs == 4 * ports.input_count
    exit_t = np.array([4, 1, 2, 4, 4, 3, 1, 1, 4, 2])
    per_step = trace_per_timestep(ports)
    d.trace = 9 * per_step  # room for 9 timesteps of entries per round
    r = rounds(ports, exit_t, d)
    assert [i for a, b in r for i in range(a, b)] == list(range(10))
    for a, b in r:
        assert b - a <= 4 and (b - a == 1 or exit_t[a:b].sum() * per_step <= d.trace)
    assert r == [(0, 3), (3, 5), (5, 9), (9, 10)]
    with pytest.raises(ValueError):
        Depths(ports, max_images=0)


def test_harness_text_names_every_stream(tmp_path):
    """The harness instantiates the core with every port of ``ports.json`` connected, its clock at the
    benches' period, a sink per output stream and the weight source only for loaded weights."""
    ports = _ports(tmp_path, trace=True)
    text = harness_verilog(ports)
    assert f"module {TOP};" in text and f"{ports.top} dut(" in text
    for port in ("i_data", "o_result", "o_trace"):
        assert all(f".{port}__{s}(" in text for s in ("valid", "payload", "ready"))
    assert "always #5 clk = !clk;" in text and "weights_mem" not in text
    assert "o_trace_mem" in text and "o_result_mem" in text

