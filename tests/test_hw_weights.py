"""The weight-load port (WeightLoader) under Amaranth's simulator: every word to its PE and
address, in order, with idle cycles; ``ready`` falls after the last word; then the issue address
passes through."""

import random

from amaranth.sim import Simulator

from spikeloom.hw.weights import WeightLoader


def test_words_reach_their_pe_and_address():
    n_pe, depth = 3, 5
    dut = WeightLoader(n_pe, depth, 8)
    rng = random.Random(1)
    words = [(37 * i + 11) % 256 for i in range(n_pe * depth)]
    writes, done_at = [], []

    async def bench(ctx):
        ctx.set(dut.issue_addr, 6)
        i, cyc = 0, 0
        while i < len(words) or cyc < 60:
            valid = i < len(words) and rng.random() < 0.7
            ctx.set(dut.i_weights.valid, valid)
            ctx.set(dut.i_weights.payload, words[i] if i < len(words) else 0)
            en = ctx.get(dut.load_en)
            assert ctx.get(dut.i_weights.ready) == (i < len(words))
            if en:
                assert valid and bin(en).count("1") == 1
                writes.append((en.bit_length() - 1, ctx.get(dut.w_addr), ctx.get(dut.load_data)))
            if ctx.get(dut.done):
                done_at.append(i)
            if i >= len(words):
                assert ctx.get(dut.w_addr) == 6 and not en
            if valid:
                i += 1
            await ctx.tick()
            cyc += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert writes == [(k // depth, k % depth, w) for k, w in enumerate(words)]
    assert done_at == [len(words) - 1]
