"""Early-exit support: a running top-1 / top-2 over the output values as the output layer updates."""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .common import bits, from_ordered, ordered, signed_ge


class Top2(wiring.Component):
    """Running top-1 (value, lowest index among equals) and top-2 value, ``n_lanes`` values a cycle.

    Values arrive in increasing index order (lane ``p`` of a step has index ``base + p``), so a
    later value replaces the top-1 only when strictly greater: the lowest index wins ties, as in
    ``golden.first_argmax``. The lanes are merged by a balanced tree (depth ``ceil_log2(n_lanes)``)
    with a register after every level, then into the running top-1 / top-2: a step's values are
    included in the outputs ``latency = ceil_log2(n_lanes) + 1`` cycles after it is presented.
    Steps may be presented back to back.

    ``margin_ok`` (``top1 - top2 >= threshold``) is registered: it follows the outputs one cycle
    later (``latency + 1`` cycles after a step), so that the subtraction and the comparison are
    not in the path of the exit decision that uses it.

    Inside, the values are held in offset binary (``v + 2**value_bits``, unsigned, "none" is 0):
    the order is the same, and an unsigned comparison is one carry chain whose carry out is the
    result, where a signed one also needs the chain's last sum bit (on ECP5 a second carry cell
    and a route back into the chain's row). A lane value's conversion inverts its sign bit only.

    Parameters
    ----------
    n_lanes : int
    value_bits : int
        Signed width of the values.
    n_values : int
        Number of values over all steps (size of the index).
    threshold : int
        Exit threshold of ``margin_ok`` (>= 0).

    Members
    -------
    values : In(data.ArrayLayout(signed(value_bits), n_lanes))
    valid : In(n_lanes)
        Lanes holding a real value this step.
    base : In(unsigned(...))
        Index of lane 0.
    en : In(1)
        Merge this step (the outputs include it ``latency`` cycles later).
    restart : In(1)
        With ``en``: forget the previous steps (the first step of a scan; it must have a valid lane).
    top1, top2 : Out(signed(value_bits + 1))
        Largest and second-largest values so far (``-2**value_bits`` when none).
    top1_index : Out(unsigned(...))
    margin_ok : Out(1)
        Registered: ``top1 - top2 >= threshold`` of the outputs in the previous cycle.
    """

    def __init__(self, n_lanes, value_bits, n_values, threshold=0):
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
            raise ValueError(f"threshold must be an integer >= 0, got {threshold!r}")
        self._n = n_lanes
        self._bits = value_bits
        # A margin never exceeds 2**(value_bits + 1) - 1: larger thresholds act as this one.
        self._thr = min(threshold, 1 << (value_bits + 1))
        self.latency = self.latency_of(n_lanes)
        ib = bits(n_values)
        super().__init__({
            "values": In(data.ArrayLayout(signed(value_bits), n_lanes)),
            "valid": In(n_lanes),
            "base": In(unsigned(ib)),
            "en": In(1),
            "restart": In(1),
            "top1": Out(signed(value_bits + 1)),
            "top2": Out(signed(value_bits + 1)),
            "top1_index": Out(unsigned(ib)),
            "margin_ok": Out(1),
        })

    @staticmethod
    def latency_of(n_lanes):
        """``latency`` of a ``Top2`` of ``n_lanes`` lanes: a register per tree level, then the running
        top-1 / top-2 register."""
        return ceil_log2(n_lanes) + 1

    def elaborate(self, platform):
        m = Module()
        nb = self._bits
        neg = 0   # "none", in offset binary below every value
        vshape, ishape = unsigned(nb + 1), self.top1_index.shape()

        # v + 2**bits in bits + 1 bits
        values = [ordered(self.values[p], nb + 1) for p in range(self._n)]
        top1, top2 = Signal(vshape, name="t1"), Signal(vshape, name="t2")   # offset binary; 0 = none
        m.d.comb += [self.top1.eq(from_ordered(top1)), self.top2.eq(from_ordered(top2))]

        def node(name):
            return (Signal(vshape, name=f"{name}_v1"), Signal(ishape, name=f"{name}_i1"),
                    Signal(vshape, name=f"{name}_v2"))

        def merge(a, b, name):
            # a holds lower indices than b
            out = node(name)
            b_wins = b[0] > a[0]
            m.d.comb += [
                out[0].eq(Mux(b_wins, b[0], a[0])),
                out[1].eq(Mux(b_wins, b[1], a[1])),
                out[2].eq(Mux(b_wins, Mux(a[0] > b[2], a[0], b[2]), Mux(a[2] > b[0], a[2], b[0]))),
            ]
            return out

        def leaf(p):
            out = node(f"lane_{p}")
            m.d.comb += [
                out[0].eq(Mux(self.valid[p], values[p], neg)),
                out[1].eq(self.base + p),
                out[2].eq(neg),
            ]
            return out

        def merge_lanes(p, name):
            # merge(leaf(p), leaf(p + 1)) with the valid bits in the comparison's result instead of
            # its operands (the values are compared as they come, from registers outside): an
            # invalid lane (none) never wins, and a leaf's second value is none
            out = node(name)
            va, vb = self.valid[p], self.valid[p + 1]
            za, zb = values[p], values[p + 1]
            b_wins = vb & (~va | (zb > za))
            m.d.comb += [
                out[0].eq(Mux(b_wins, zb, Mux(va, za, neg))),
                out[1].eq(Mux(b_wins, self.base + (p + 1), self.base + p)),
                out[2].eq(Mux(b_wins, Mux(va, za, neg), Mux(vb, zb, neg))),
            ]
            return out

        en, restart = self.en, self.restart
        depth = 0
        level = list(range(self._n))  # lanes, then nodes
        while len(level) > 1:
            if depth == 0:
                merged = [merge_lanes(p, f"t0_{p // 2}") if p + 1 < self._n else leaf(p) for p in level[::2]]
            else:
                merged = [merge(level[i], level[i + 1], f"t{depth}_{i // 2}") if i + 1 < len(level) else level[i]
                          for i in range(0, len(level), 2)]
            level = []
            for j, nd in enumerate(merged):
                reg = node(f"r{depth}_{j}")
                m.d.sync += [r.eq(v) for r, v in zip(reg, nd)]
                level.append(reg)
            if len(level) == 1:
                # the step's values also inverted, for the running merge's comparisons
                inv = (Signal(vshape, name=f"r{depth}_0_nv1"), Signal(vshape, name=f"r{depth}_0_nv2"))
                m.d.sync += [inv[0].eq(~merged[0][0]), inv[1].eq(~merged[0][2])]
            en_r, restart_r = Signal(name=f"en_{depth}"), Signal(name=f"restart_{depth}")
            m.d.sync += [en_r.eq(en), restart_r.eq(restart)]
            en, restart = en_r, restart_r
            depth += 1
        # merge() of the running values (forgotten on restart) with the step's: restart enters the
        # comparisons' results, not their operands, so that they start at registers. On restart
        # the step wins (it has a valid lane, above the forgotten values).
        b = level[0] if depth else leaf(0)
        hold_inv = []   # (register, its next value when the step wins) of top1 held inverted
        if depth:
            w = nb + 1
            ntop1 = Signal(vshape, name="nt1", init=(1 << w) - 1)
            hold_inv.append((ntop1, inv[0]))

            def greater(a, not_b):
                # a > b for unsigned w-bit a, b: the carry out of a + ~b (a - b - 1 >= 0), with ~b
                # from a register: an addition, whose carry chain needs no inverter in front of it
                # (on the iCE40 an inverted operand is a logic cell per bit before the chain)
                return (a + not_b)[w]

            b_wins = restart | greater(b[0], ntop1)
            a1_over_b2 = ~restart & greater(top1, inv[1])
            a2_over_b1 = ~restart & greater(top2, inv[0])
        else:
            # one lane, no tree: the lane's value is compared as it comes (a register outside),
            # its valid bit enters the results, not the operands (an invalid lane, the leaf's
            # value none, never wins, and keeping top2 equals taking that value only when top2
            # is none too); the leaf's second value is none.
            v, valid = values[0], self.valid[0]
            b = (v, b[1], b[2])
            b_wins = restart | (valid & (v > top1))
            a1_over_b2 = ~restart & (top1 != neg)
            a2_over_b1 = ~restart & (~valid | (top2 > v))
        # top1 - threshold beside top1 (the step's value minus the threshold is formed beside the
        # comparisons that pick it), so that margin_ok is one comparison: top1 - top2 >= threshold
        # iff top1 - threshold >= top2
        mshape = signed(nb + 3)
        t1m = Signal(mshape, name="t1m", init=-self._thr)
        b0m = Signal(mshape, name="b0m")
        m.d.comb += b0m.eq(b[0] - self._thr)
        with m.If(en):
            m.d.sync += [
                top1.eq(Mux(b_wins, b[0], top1)),
                *(r.eq(Mux(b_wins, v, r)) for r, v in hold_inv),
                t1m.eq(Mux(b_wins, b0m, t1m)),
                self.top1_index.eq(Mux(b_wins, b[1], self.top1_index)),
                top2.eq(Mux(b_wins, Mux(a1_over_b2, top1, b[2]), Mux(a2_over_b1, top2, b[0]))),
            ]
        m.d.sync += self.margin_ok.eq(signed_ge(t1m, top2))
        return m
