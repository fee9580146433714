"""Early-exit support: a running top-1 / top-2 over the output values as the output layer updates."""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .common import bits, from_ordered, greater, ordered, signed_ge


class Top2(wiring.Component):
    """Running top-1 (value, lowest index among equals) and top-2 value, ``n_lanes`` values a cycle.

    Values arrive in increasing index order (lane ``p`` of a step has index ``base + p``), so a
    later value replaces the top-1 only when strictly greater: the lowest index wins ties, as in
    ``golden.first_argmax``. The lanes are merged by a balanced tree (depth ``ceil_log2(n_lanes)``)
    with a register after every level, then into the running top-1 / top-2: a step's values are
    included in the outputs ``latency = ceil_log2(n_lanes) + 1`` cycles after it is presented
    (one more from ``INPUT_REGISTER_LANES`` lanes on, below). Steps may be presented back to back.

    ``margin_ok`` (``top1 - top2 >= threshold``) is a register too, valid in the same cycle as the
    outputs: it is computed beside them from the running values and the step's, as the margin of
    whichever values the merge keeps (three comparisons of registers, or, for the running values
    kept, ``margin_ok`` itself; then the merge's choice), so that neither a subtraction nor a
    comparison of the merge's result is in the path of the exit decision that uses it.

    From 5 to 8 lanes (``RANKED``) the lanes are ranked in as many stages as the tree has levels
    (``_ranked``), in place of the tree: every pair of lanes compared, each result into one
    register; each lane's losses decoded into "is the top-1" and "is the top-2"; those flags
    select the values and the index. In a tree level a comparison's result selects about 20 value
    and index bits in the same cycle: on the ECP5-25F that fan-out was 1.4 ns of route after the
    carry chain, and a level 7.6-8 ns (the N = 8 critical path, at levels 0 and 1). Over 8 lanes
    the tree stays: groups of 8 ranked, then merged by the tree, made the 85F N = 16 build slower
    (106.16 MHz against 127.11), the larger exit unit having moved the PEs' spike flags away from
    the sequencer.

    From ``INPUT_REGISTER_LANES`` lanes on, the lane values, their valid bits and the controls are
    registered before the tree's first level: the lanes come from PEs spread over the die, and the
    first level's comparison, with the long routes in front of it, was the critical path of a
    16-PE ECP5-85F build. The register costs a cycle of ``latency``; the margin computed beside the
    outputs gave one back.

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
    threshold : int or None
        Exit threshold of ``margin_ok`` (>= 0), a constant of the logic; or ``None``: the member
        ``threshold`` gives it, with each step (the accelerator reads it from a memory, so that
        the logic does not depend on the model's value: see ``hw/accel.py``).

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
    threshold : In(unsigned(value_bits))
        Only with ``threshold=None``: the exit threshold, sampled with every step (``en``) like
        the values; the same in every step. ``margin_ok`` is 0 until the first step is merged.
    top1, top2 : Out(signed(value_bits + 1))
        Largest and second-largest values so far (``-2**value_bits`` when none).
    top1_index : Out(unsigned(...))
    margin_ok : Out(1)
        Registered: ``top1 - top2 >= threshold`` of the outputs in the same cycle.
    """

    INPUT_REGISTER_LANES = 16
    #: Lane counts whose values are ranked (``_ranked``) in ``RANK_STAGES`` stages in place of
    #: the tree's ``ceil_log2(n_lanes) = RANK_STAGES`` levels.
    RANKED, RANK_STAGES = range(5, 9), 3

    def __init__(self, n_lanes, value_bits, n_values, threshold=0):
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0):
            raise ValueError(f"threshold must be an integer >= 0 or None, got {threshold!r}")
        self._n = n_lanes
        self._bits = value_bits
        # A margin never exceeds 2**(value_bits + 1) - 1: larger thresholds act as this one.
        self._thr = None if threshold is None else min(threshold, 1 << (value_bits + 1))
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
            "margin_ok": Out(1, init=self._thr == 0),
            **({"threshold": In(unsigned(value_bits))} if threshold is None else {}),
        })

    @staticmethod
    def latency_of(n_lanes):
        """``latency`` of a ``Top2`` of ``n_lanes`` lanes: the input register (from
        ``INPUT_REGISTER_LANES`` lanes on), a register per tree level, then the running top-1 /
        top-2 register (with ``margin_ok`` beside it)."""
        return (n_lanes >= Top2.INPUT_REGISTER_LANES) + ceil_log2(n_lanes) + 1

    def elaborate(self, platform):
        m = Module()
        nb = self._bits
        neg = 0   # "none", in offset binary below every value
        vshape = unsigned(nb + 1)
        mshape = signed(nb + 3)   # a value minus or plus the threshold
        thr_regs = []

        def thr_at(k):
            # the threshold k registers after the inputs: the constant, or the member delayed
            if self._thr is not None:
                return self._thr
            while len(thr_regs) < k:
                r = Signal(self.threshold.shape(), name=f"thr_{len(thr_regs)}", reset_less=True)
                m.d.sync += r.eq(thr_regs[-1] if thr_regs else self.threshold)
                thr_regs.append(r)
            return thr_regs[k - 1] if k else self.threshold

        thr0 = self._thr or 0   # the registers' initial values: the constant's, or those of 0
        # v + 2**bits in bits + 1 bits
        values = [ordered(self.values[p], nb + 1) for p in range(self._n)]
        valid, base, en, restart = self.valid, self.base, self.en, self.restart
        stage = 0   # registers of en so far (named en_0, en_1, ... in order)
        if self._n >= self.INPUT_REGISTER_LANES:
            regs = ([Signal(vshape, name=f"in_{p}", reset_less=True) for p in range(self._n)]
                    + [Signal.like(valid, name="in_valid", reset_less=True),
                       Signal.like(base, name="in_base", reset_less=True)])
            m.d.sync += [r.eq(v) for r, v in zip(regs, [*values, valid, base])]
            *values, valid, base = regs
            en, restart = self._delayed(m, en, restart, stage)
            stage += 1

        top1, top2 = Signal(vshape, name="t1"), Signal(vshape, name="t2")   # offset binary; 0 = none
        m.d.comb += [self.top1.eq(from_ordered(top1)), self.top2.eq(from_ordered(top2))]

        b, inv, step_m, depth, en, restart = self._step(m, values, valid, base, en, restart, stage, thr_at)
        # top1 - threshold beside top1, so that a margin is one comparison: top1 - top2 >= threshold
        # iff top1 - threshold >= top2
        t1m = Signal(mshape, name="t1m", init=-thr0)
        # hold: (register, its next value when the step wins) of the registers held beside top1
        if depth:
            w = nb + 1
            ntop1 = Signal(vshape, name="nt1", init=(1 << w) - 1)
            hold = [(ntop1, inv[0]), (t1m, step_m)]

            def over(a, not_b):
                # a > b for unsigned w-bit a, b: the carry out of a + ~b (a - b - 1 >= 0), with ~b
                # from a register: an addition, whose carry chain needs no inverter in front of it
                # (on the iCE40 an inverted operand is a logic cell per bit before the chain)
                return (a + not_b)[w]

            b_wins = restart | over(b[0], ntop1)
            a1_over_b2 = ~restart & over(top1, inv[1])
            a2_over_b1 = ~restart & over(top2, inv[0])
            # the step's top-1 minus the threshold against the step's top-2 and the running top-1;
            # the running top-1 minus the threshold against the step's top-1
            step_margin = signed_ge(step_m, b[2])
            over_top1 = signed_ge(step_m, top1)
            keeps_over_step = signed_ge(t1m, b[0])
        else:
            # one lane, no tree: the lane's value is compared as it comes (a register outside),
            # its valid bit enters the results, not the operands (an invalid lane, the leaf's
            # value none, never wins, and keeping top2 equals taking that value only when top2
            # is none too); the leaf's second value is none.
            v, lane_valid = values[0], valid[0]
            b = (v, b[1], b[2])
            b_wins = restart | (lane_valid & greater(v, top1))
            a1_over_b2 = ~restart & (top1 != neg)
            a2_over_b1 = ~restart & (~lane_valid | greater(top2, v))
            # top1 + threshold beside top1: v - threshold >= top1 iff v >= top1 + threshold
            thr = thr_at(stage)
            t1p = Signal(mshape, name="t1p", init=thr0)
            hold = [(t1m, v - thr), (t1p, v + thr)]
            step_margin = signed_ge(v, thr)   # against the step's top-2, none
            over_top1 = signed_ge(v, t1p)
            keeps_over_step = ~lane_valid | signed_ge(t1m, v)
        # the margin of the values as they are, t1m >= top2, is margin_ok itself (its init is that
        # of the registers' inits; with the threshold as a member, 0 until the first step, which is
        # a restart): one comparison fewer in front of it
        keeps_margin = self.margin_ok
        with m.If(en):
            m.d.sync += [
                top1.eq(Mux(b_wins, b[0], top1)),
                *(r.eq(Mux(b_wins, v, r)) for r, v in hold),
                self.top1_index.eq(Mux(b_wins, b[1], self.top1_index)),
                top2.eq(Mux(b_wins, Mux(a1_over_b2, top1, b[2]), Mux(a2_over_b1, top2, b[0]))),
            ]
        # the margin of the values kept: when the step wins, top2 becomes the larger of the step's
        # top-2 and (unless restart) the running top-1; when it does not, the larger of the running
        # top-2 and the step's top-1. Without a step the values stay, and so does their margin.
        m.d.sync += self.margin_ok.eq(Mux(en, Mux(b_wins, step_margin & (restart | over_top1),
                                                  keeps_margin & keeps_over_step), keeps_margin))
        return m

    def _step(self, m, values, valid, base, en, restart, stage, thr_at):
        """The step's top-1 (value, index) and top-2 value, ranked or through the tree, as
        ``(b, inv, step_m, depth, en, restart)``: ``b`` the last level's node (one lane: the lane's
        leaf, ``depth`` 0), ``inv`` its inverted top-1 and top-2 registers, ``step_m`` its top-1
        minus the threshold (both None for one lane), ``depth`` the levels, ``en`` and
        ``restart`` delayed as many cycles. ``thr_at(k)``: the threshold ``k`` registers after
        the inputs (``stage`` of them before the first level)."""
        nb, neg = self._bits, 0
        vshape, ishape = unsigned(nb + 1), self.top1_index.shape()
        mshape = signed(nb + 3)
        inv = step_m = None

        def node(name):
            return (Signal(vshape, name=f"{name}_v1"), Signal(ishape, name=f"{name}_i1"),
                    Signal(vshape, name=f"{name}_v2"))

        def merge(a, b, name):
            # a holds lower indices than b; also the winner's value minus the threshold, picked
            # beside the value (both differences are formed from the operands' registers)
            out = node(name)
            thr = thr_at(stage)
            b_wins = greater(b[0], a[0])
            m.d.comb += [
                out[0].eq(Mux(b_wins, b[0], a[0])),
                out[1].eq(Mux(b_wins, b[1], a[1])),
                out[2].eq(Mux(b_wins, Mux(greater(a[0], b[2]), a[0], b[2]), Mux(greater(a[2], b[0]), a[2], b[0]))),
            ]
            return out, Mux(b_wins, b[0] - thr, a[0] - thr)

        def leaf(p):
            out = node(f"lane_{p}")
            m.d.comb += [
                out[0].eq(Mux(valid[p], values[p], neg)),
                out[1].eq(base + p),
                out[2].eq(neg),
            ]
            return out

        def merge_lanes(p, name):
            # merge(leaf(p), leaf(p + 1)) with the valid bits in the comparison's result instead of
            # its operands (the values are compared as they come, from registers): an invalid lane
            # (none) never wins, and a leaf's second value is none
            out = node(name)
            va, vb = valid[p], valid[p + 1]
            za, zb = values[p], values[p + 1]
            thr = thr_at(stage)
            b_wins = vb & (~va | greater(zb, za))
            m.d.comb += [
                out[0].eq(Mux(b_wins, zb, Mux(va, za, neg))),
                out[1].eq(Mux(b_wins, base + (p + 1), base + p)),
                out[2].eq(Mux(b_wins, Mux(va, za, neg), Mux(vb, zb, neg))),
            ]
            return out, Mux(b_wins, zb - thr, Mux(va, za - thr, neg - thr))

        def last(nd, m1, name):
            # the last level's registers: the step's values also inverted, for the running merge's
            # comparisons, and its top-1 minus the threshold, for the margins. Its second value is
            # held inverted only: a plain register of the same select as well shared that select's
            # logic with the inverted one and put a logic level, and a route, after it (the 85F
            # N = 4 critical path).
            reg = node(name)
            inv = (Signal(vshape, name=f"{name}_nv1"), Signal(vshape, name=f"{name}_nv2"))
            step_m = Signal(mshape, name=f"{name}_m1")
            m.d.sync += [reg[0].eq(nd[0]), reg[1].eq(nd[1]), inv[0].eq(~nd[0]), inv[1].eq(~nd[2]),
                         step_m.eq(m1)]
            return (reg[0], reg[1], ~inv[1]), inv, step_m

        depth = 0
        level = list(range(self._n))  # lanes, then nodes
        if self._n in self.RANKED:
            # the lanes ranked in three stages, as deep as the tree's levels
            nd, m1 = self._ranked(m, values, valid, base, thr_at(stage + 1), mshape, "g")
            nd, inv, step_m = last(nd, m1, f"r{self.RANK_STAGES - 1}_0")
            level = [nd]
            for _ in range(self.RANK_STAGES):
                en, restart = self._delayed(m, en, restart, stage)
                stage += 1
            depth = self.RANK_STAGES
        while len(level) > 1:
            if depth == 0:
                merged = [merge_lanes(p, f"t0_{p // 2}") if p + 1 < self._n else (leaf(p), None)
                          for p in level[::2]]
            else:
                merged = [merge(level[i], level[i + 1], f"t{depth}_{i // 2}") if i + 1 < len(level)
                          else (level[i], None) for i in range(0, len(level), 2)]
            level = []
            for j, (nd, m1) in enumerate(merged):
                if len(merged) > 1:
                    reg = node(f"r{depth}_{j}")
                    m.d.sync += [r.eq(v) for r, v in zip(reg, nd)]
                    level.append(reg)
                else:
                    nd, inv, step_m = last(nd, m1, f"r{depth}_0")
                    level.append(nd)
            en, restart = self._delayed(m, en, restart, stage)
            stage += 1
            depth += 1
        # merge() of the running values (forgotten on restart) with the step's: restart enters the
        # comparisons' results, not their operands, so that they start at registers. On restart
        # the step wins (it has a valid lane, above the forgotten values).
        return (level[0] if depth else leaf(0)), inv, step_m, depth, en, restart

    def _ranked(self, m, values, valid, base, thr, mshape, name):
        """The top-1 (value, index) and top-2 value of ``values`` (offset binary, lanes
        ``0, 1, ...`` after ``base``, invalid ones none), ``RANK_STAGES`` registers later, and the
        top-1 minus ``thr``: every pair compared (a result's one register is all it drives), each
        lane's losses decoded into "is top-1" and "is top-2", then those select (AND-OR; exactly one
        lane is each, and "none" is 0). Returns ``((v1, i1, v2), v1 - thr)`` of the last stage's
        inputs (the caller registers them)."""
        r = len(values)
        vshape, ishape = unsigned(self._bits + 1), self.top1_index.shape()
        # stage 0: "lane j is above lane i" for i < j (a later lane must be strictly greater),
        # the lanes' values with invalid ones none, and the step's base
        above = {}
        for i in range(r):
            for j in range(i + 1, r):
                above[i, j] = Signal(name=f"{name}_a{i}_{j}", reset_less=True)
                m.d.sync += above[i, j].eq(valid[j] & (~valid[i] | greater(values[j], values[i])))
        v0 = [Signal(vshape, name=f"{name}_s0_v{i}", reset_less=True) for i in range(r)]
        base0 = Signal.like(base, name=f"{name}_s0_base", reset_less=True)
        m.d.sync += [base0.eq(base), *(v.eq(Mux(valid[i], values[i], 0)) for i, v in enumerate(v0))]
        # stage 1: lane i is the top-1 when no lane is above it, the top-2 when exactly one is
        sel1 = [Signal(name=f"{name}_s1_top1_{i}", reset_less=True) for i in range(r)]
        sel2 = [Signal(name=f"{name}_s1_top2_{i}", reset_less=True) for i in range(r)]
        v1 = [Signal(vshape, name=f"{name}_s1_v{i}", reset_less=True) for i in range(r)]
        m1 = [Signal(mshape, name=f"{name}_s1_m{i}", reset_less=True) for i in range(r)]
        i1 = [Signal(ishape, name=f"{name}_s1_i{i}", reset_less=True) for i in range(r)]
        for i in range(r):
            over = [above[i, j] for j in range(i + 1, r)] + [~above[j, i] for j in range(i)]
            some, several = Const(0), Const(0)
            for o in over:
                some, several = some | o, several | (some & o)
            m.d.sync += [sel1[i].eq(~some), sel2[i].eq(some & ~several), v1[i].eq(v0[i]),
                         m1[i].eq(v0[i] - thr), i1[i].eq(base0 + i)]

        def pick(sel, vals):
            out = Const(0, vals[0].shape())
            for s, v in zip(sel, vals):
                out = out | Mux(s, v, 0)
            return out

        # stage 2 (the caller's registers): the selections
        return (pick(sel1, v1), pick(sel1, i1), pick(sel2, v1)), pick(sel1, m1)

    @staticmethod
    def _delayed(m, en, restart, stage):
        """``en`` and ``restart`` a register later (``en_<stage>``, ``restart_<stage>``)."""
        en_r, restart_r = Signal(name=f"en_{stage}"), Signal(name=f"restart_{stage}")
        m.d.sync += [en_r.eq(en), restart_r.eq(restart)]
        return en_r, restart_r
