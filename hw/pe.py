"""One processing element: its slice of weights, input currents and membranes, and the LIF datapath."""

from amaranth import Array, Cat, Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .common import bits, per_layer, signed_ge
from .plan import MEMORIES, WEIGHT_STORES, geometries

#: Pipeline stages of the PE outputs (stage ``s`` of a command issued in cycle k is cycle k + s;
#: ``exe`` is stage 1; an output "in stage s" is a register written at the end of stage s - 1):
#: ``read``/``syn`` in stage 4, ``z`` in stage 6, ``spike`` in stage 7.
W_NZ_STAGE, Z_STAGE, SPIKE_STAGE = 4, 6, 7


def issue_layout(plan):
    """Stage-0 (read) command broadcast to every PE."""
    return data.StructLayout({
        "w_addr": unsigned(bits(plan.weight_depth)),
        "n_addr": unsigned(bits(plan.neuron_depth)),
        # a paired word's second weight (hw/plan.py, "Paired events"), read through a second port
        **({"w_addr2": unsigned(bits(plan.weight_depth))} if plan.paired else {}),
    })


def neuron_field(plan):
    """The command field that selects the update's neuron model (an index into ``plan.neurons``),
    present only when the plan has more than one."""
    return {"neuron": unsigned(bits(len(plan.neurons)))} if len(plan.neurons) > 1 else {}


def lead_layout(plan):
    """Stage-0 copies of the exec fields the PE registers itself (see :class:`PE`'s ``lead``)."""
    return data.StructLayout({"first_t": 1, "output": 1, "lane": 1, **neuron_field(plan)})


def leak_in_stage1(plan):
    """True when the leak term is a shift of the membrane, the same for every layer, and no reset
    subtracts a pending threshold before saturation: the term is formed beside the stage-1
    register and the base sum in stage 2 (version 1's datapath). Otherwise stage 2 forms the leak
    product and the membrane plus bias (minus the pending threshold), stage 3 their difference."""
    keys = {nr.leak_key() for nr in plan.neurons}
    return len(keys) == 1 and next(iter(keys))[0] <= 1 and all(nr.reset != "subtract_next" for nr in plan.neurons)


def exec_layout(plan):
    """Stage-1 (compute) command broadcast to every PE, one cycle after its issue."""
    max_taps = max(s.taps for s in geometries(plan))
    return data.StructLayout({
        "acc": 1,        # acc[addr] <- acc[addr] + w * val
        "clear": 1,      # acc[addr] <- 0 (with parity 0; ignored when acc or update is set)
        "update": 1,     # membrane update of neuron addr
        "output": 1,     # update is the output integrator (no leak, no spike)
        "first_t": 1,    # timestep 1: the old membrane reads as 0
        "layer0": 1,     # the command is for the analog layer (acc words carry the image parity)
        "img": 1,        # parity of the current image
        "sparse": 1,     # acc: the neuron comes from the stored entry (compressed storage)
        "addr": unsigned(bits(plan.neuron_depth)),  # neuron (dense acc, update, clear) or event base (sparse)
        "mask": unsigned(max_taps),                   # sparse: the taps that land for this event
        "geo": unsigned(bits(len(geometries(plan)))),
        "val": unsigned(plan.value_bits),             # the event's value (input, spike count or 1)
        **neuron_field(plan),  # the neuron model of the update's layer (several models only)
        **({"packed": 1} if plan.max_groups else {}),  # acc: a packed tail word (hw/plan.py, "Packed tail")
        **({"pair": 1} if plan.paired else {}),        # acc: a paired word (hw/plan.py, "Paired events")
        # the load and accumulate phases, where a PE's own word of a queued layer (hw/plan.py, "PE
        # queues") takes the command's place: the accelerator sets that PE's acc, addr, val, mask
        # and geo from its queue's walker
        **({"own": 1} if plan.queued else {}),
    })


def psum_shape(plan):
    """A packed tail word's sum of one channel's weights over its lane groups (``PE.psum``)."""
    return signed(plan.weight_bits + bits(plan.max_groups))


def pack_group(plan, geo, p):
    """The lane group of PE ``p`` in a packed tail word of source ``geo``'s layer (``None``: no
    group, or the layer is not packed)."""
    lp = plan.layers[geometries(plan)[geo].layer]
    return p // lp.last_lanes if lp.packed and p < lp.groups * lp.last_lanes else None


#: The deepest weight bank (words): far beyond any block RAM's depth. A bank at least as deep as the
#: memory is one memory, as without banks.
BANK_DEPTH_MAX = 1 << 20


def is_bank_depth(value):
    """A weight bank depth: an int, a power of two in ``[2, BANK_DEPTH_MAX]``."""
    return type(value) is int and 2 <= value <= BANK_DEPTH_MAX and not value & (value - 1)


def check_bank_depth(bank_depth, weights="rom"):
    """``bank_depth`` (:class:`PE`): None, or a power of two in ``[2, BANK_DEPTH_MAX]`` with ``weights="rom"``."""
    if bank_depth is None:
        return None
    if not is_bank_depth(bank_depth):
        raise ValueError(f"weight bank depth must be a power of two in [2, {BANK_DEPTH_MAX}], got {bank_depth!r}")
    if weights != "rom":
        raise ValueError(f"weight banks need weights 'rom' (initialised memories), got weights {weights!r}")
    return bank_depth


class BankedROM(Elaboratable):
    """A read-only memory split by depth into banks of ``bank_depth`` words, each bank's read data
    registered, and the bank chosen after those registers: ``data`` is the word at the ``addr`` of
    two cycles before, as a memory read port followed by a register, but no bank's read data
    passes a multiplexer before its register (on ECP5 the register can be the block RAM's own
    output register, see ``flows/synth.py``). The registers and the select have no reset."""

    def __init__(self, shape, init, bank_depth, attrs=None, ports=1):
        self.depth, self.bank_depth = len(init), bank_depth
        self._shape, self._init, self._attrs = shape, list(init), attrs
        self.banks = self.count(self.depth, bank_depth)
        #: per read port (``ports`` of them): its address, and the word read two cycles before
        self.addrs = [Signal(bits(self.depth), name=f"addr{i}" if i else "addr") for i in range(ports)]
        self.datas = [Signal(shape, name=f"data{i}" if i else "data") for i in range(ports)]
        self.addr, self.data = self.addrs[0], self.datas[0]

    @staticmethod
    def count(depth, bank_depth):
        """Banks of a ``depth``-word memory: 0 when it needs none (``bank_depth`` None or not below ``depth``)."""
        return -(-depth // bank_depth) if bank_depth and depth > bank_depth else 0

    def elaborate(self, platform):
        m = Module()
        lo, bd = bits(self.bank_depth), self.bank_depth
        regs = [[] for _ in self.addrs]
        for b in range(self.banks):
            # (a last bank of one word gets a second, never read: no zero-width address)
            words = self._init[b * bd:(b + 1) * bd]
            mem = m.submodules[f"bank_{b}"] = Memory(shape=self._shape, depth=max(len(words), 2), init=words,
                                                     attrs=self._attrs)
            for i, addr in enumerate(self.addrs):
                rd = mem.read_port()
                q = Signal(self._shape, name=f"q_{b}" + (f"_{i}" if i else ""), reset_less=True)
                m.d.comb += rd.addr.eq(addr[:lo])
                m.d.sync += q.eq(rd.data)
                regs[i].append(q)
        for i, (addr, data) in enumerate(zip(self.addrs, self.datas)):
            sfx = f"_{i}" if i else ""
            sel1 = Signal(range(self.banks), name="sel1" + sfx, reset_less=True)
            sel2 = Signal(range(self.banks), name="sel2" + sfx, reset_less=True)
            m.d.sync += [sel1.eq(addr[lo:]), sel2.eq(sel1)]
            m.d.comb += data.eq(Array(regs[i])[sel2])
        return m


class PE(wiring.Component):
    """Processing element ``index`` of the array.

    Seven-stage pipeline for a command whose ``issue`` is sampled in cycle k (stage 0):

    * stage 0 (k): weight, membrane and bias memories read at ``issue``'s addresses;
    * stage 1 (k + 1, ``exe``): the read data are registered (the block RAM's output register),
      the old membrane and its flag as 0 in timestep 1; with a shift leak the same for every layer
      (:func:`leak_in_stage1`), its term ``u >> f`` beside it (0 for the output integrator); with
      a ``subtract_next`` layer, the pending threshold ``theta * r`` (a second threshold read);
    * stage 2 (k + 2): the weight and the value (0 unless ``acc``) registered for the product,
      and for compressed storage the entry's neuron address
      ``addr - D[geo][t] + c`` and whether its tap lands, registered; with the stage-1 leak, the
      leaked old membrane plus bias; otherwise the layer's leak term ``(u * a) >> f`` (a constant
      multiplier per neuron model) and the old membrane plus bias minus the pending threshold;
    * stage 3 (k + 3): ``w * val``; whether the weight is nonzero (the write enable, ``read``
      and ``syn``, registered); the acc memory is read at the command's neuron (data registered);
      the leaked membrane plus bias is registered (formed here from stage 2's two terms, when the
      leak is a product);
    * stage 4 (k + 4): ``acc + w * val`` is written back (``acc``); the membrane update adds the
      acc value (registered); the acc is cleared (or, for the analog layer, rewritten with the
      image parity);
    * stage 5 (k + 5): the sum saturates (registered as ``z``); the threshold, read in stage 4, is
      registered;
    * stage 6 (k + 6): fire, reset and membrane (and flag) write-back with the layer's firing
      rule and reset; ``spike`` is registered.

    The acc value a command uses in stage 4 is the one written by the command one cycle before it
    when that wrote the same address (forwarded from a register), else the stage-3 read: no
    read-after-write distance needs a stall, and no memory read lies in the read-modify-write
    path. The
    analog layer's acc words carry the parity of the image that wrote them; a word of another
    image reads as 0, so a new image needs no clearing pass (every update of the analog layer
    rewrites its words with the current parity). The membrane is read in stage 0 and written in
    stage 6 without forwarding: the sequencer issues two updates of one neuron at least 7 cycles
    apart (there is always an ACC phase or the exit wait, longer than ``Z_STAGE``, between them).
    Each layer's neuron model (``plan.neurons``, selected by the command's ``neuron`` field when
    there are several) follows ``golden.lif_step``; the output integrator never leaks, fires or
    resets.

    Parameters
    ----------
    plan : Plan
    index : int
        Lane of this PE (output channels ``c * n_pe + index``).
    weights : str
        ``"rom"``: the weight memory holds the model's weights from configuration (initial
        contents). ``"load"``: it starts empty and is written through ``load_en``/``load_data``;
        its one address (``issue.w_addr``) serves the reads and the writes, so that the memory
        maps to single-port RAM without initial contents (iCE40 UltraPlus SPRAM).
    bank_depth : int or None
        With ``weights="rom"``: a weight memory deeper than this is a :class:`BankedROM` of banks
        this deep (a power of two; the FPGA's block RAM depth at the word's width), each with its
        own stage-1 register, and the bank chosen in stage 2. None: one memory. Same cycles.

    Members
    -------
    issue : In(issue_layout(plan))
        Read addresses, sampled at the clock edge ending cycle k.
    exe : In(exec_layout(plan))
        Command for the data read at cycle k - 1 (stage 1).
    lane_valid : In(1)
        With ``exe``: this lane holds a real neuron of the current chunk (dense storage and updates).
    lead : In(lead_layout(plan))
        With ``issue`` (stage 0): the ``first_t``, ``output`` (and ``neuron``) fields and the
        ``lane_valid`` of the command that will be ``exe`` in the next cycle. The PE registers
        what stage 1 needs of them in flip-flops of its own (the shared ``exe`` bits would have to
        reach every PE's stage-1 registers from one place in the same cycle).
    read, syn : Out(1)
        Registered, stage ``W_NZ_STAGE`` (4), for ``acc`` commands: this lane read a stored weight
        (``read``) and it was a synaptic event (nonzero weight whose tap lands: ``syn``).
    read2, syn2 : Out(1), only when a layer is paired
        The same for a paired word's second event (``hw/plan.py``, "Paired events"), beside them.
    z : Out(signed(membrane_bits))
        Registered, stage ``Z_STAGE`` (6): the saturated updated membrane / output value of an
        ``update`` command.
    thr : Out(signed(membrane_bits))
        Registered, beside ``z``: the command's neuron's ``threshold`` word (for the output layer the
        exit threshold, ``Plan.exit_word``, which the exit unit takes from PE 0).
    spike : Out(1)
        Registered, stage ``SPIKE_STAGE`` (7): the updated neuron fired (``update`` of a spiking
        layer, valid lane).
    load_en : In(1), only with ``weights="load"``
        Write ``load_data`` to the weight memory at ``issue.w_addr`` at the clock edge ending
        this cycle (the weight memory is not read in that cycle).
    load_data : In(unsigned(word_bits)), only with ``weights="load"``
    tail, psum : Out(signed(weight_bits)), In(psum_shape(plan)), only when a layer is packed
        A packed tail word (``exe.packed``; ``hw/plan.py``, "Packed tail"): ``tail`` is this
        lane's stage-3 weight when its lane group holds an event (else 0; combinational from
        registers), and ``psum`` the sum of ``tail`` over the lane groups of this lane's channel
        (formed by the accelerator, registered here beside the product): a lane of group 0 adds
        it to its acc word, the other lanes write nothing. The word's own products are 0.
    """

    W_NZ_STAGE, Z_STAGE, SPIKE_STAGE = W_NZ_STAGE, Z_STAGE, SPIKE_STAGE

    def __init__(self, plan, index, weights="rom", bank_depth=None):
        if weights not in WEIGHT_STORES:
            raise ValueError(f"weights must be one of {WEIGHT_STORES!r}, got {weights!r}")
        self._plan = plan
        self._index = index
        self._weights = weights
        self._bank_depth = check_bank_depth(bank_depth, weights)
        mb = plan.membrane_bits
        ports = {
            "issue": In(issue_layout(plan)),
            "exe": In(exec_layout(plan)),
            "lane_valid": In(1),
            "lead": In(lead_layout(plan)),
            "spike": Out(1),
            "read": Out(1),
            "syn": Out(1),
            "z": Out(signed(mb)),
            "thr": Out(signed(mb)),
        }
        if weights == "load":
            if plan.paired:
                self._MustUse__silence = True  # never elaborated: no "created but never used" warning
                raise ValueError("weights 'load' (single-port RAM) cannot read the second weight of paired events: "
                                 "a plan with pair=False")
            ports["load_en"] = In(1)
            ports["load_data"] = In(unsigned(plan.word_bits))
        if plan.paired:
            ports["read2"] = Out(1)
            ports["syn2"] = Out(1)
        if plan.max_groups:
            ports["tail"] = Out(signed(plan.weight_bits))
            ports["psum"] = In(psum_shape(plan))
        super().__init__(ports)

    def _memories(self, m):
        """The PE's memories, and the weight memory's read port (and its write port for the load);
        a plan that pairs events reads the weight memory through a second port too
        (``w_rd2``, or a :class:`BankedROM`'s second)."""
        plan, p = self._plan, self._index
        widths, values, depths = plan.word_widths(), plan.widths(), plan.depths()
        mems = {}
        for name in MEMORIES:
            # The weight memory is the design's bulk storage: ask for block RAM (Yosys and Vivado read
            # ram_style) even where a small one would fit in logic; the small per-neuron memories are
            # left to the tool (distributed RAM). acc words: value, then the image parity bit.
            attrs = {"ram_style": "block"} if name == "weight" else None
            # (a word with a bit beside its value, the acc parity or the membrane flag, is unsigned)
            shape = unsigned(widths[name]) if widths[name] != values[name] else signed(widths[name])
            init = [] if name == "weight" and self._weights == "load" else plan.init(p, name)
            if name == "weight" and BankedROM.count(depths[name], self._bank_depth):
                mems[name] = m.submodules[name] = BankedROM(shape, init, self._bank_depth, attrs,
                                                            2 if plan.paired else 1)
                continue
            mems[name] = m.submodules[name] = Memory(shape=shape, depth=depths[name], init=init, attrs=attrs)

        if isinstance(mems["weight"], BankedROM):
            return mems, mems["weight"]
        w_rd = mems["weight"].read_port()
        if self._weights == "load":
            # One address for the write and the read port, and no read while writing: Yosys maps
            # the pair to one single-port RAM port (read-during-write: don't care).
            w_wr = mems["weight"].write_port()
            m.d.comb += [
                w_wr.addr.eq(self.issue.w_addr),
                w_wr.data.eq(self.load_data),
                w_wr.en.eq(self.load_en),
                w_rd.en.eq(~self.load_en),
            ]
        return mems, w_rd

    def _second_weight(self, m, mems, w_rd):
        """A paired word's second weight word (``hw/plan.py``, "Paired events"), read at
        ``issue.w_addr2`` through the weight memory's second port and registered as ``w1`` is."""
        if isinstance(w_rd, BankedROM):
            m.d.comb += w_rd.addrs[1].eq(self.issue.w_addr2)
            return w_rd.datas[1]
        rd2 = mems["weight"].read_port()
        w1b = Signal.like(rd2.data, name="w1b", reset_less=True)
        m.d.comb += rd2.addr.eq(self.issue.w_addr2)
        m.d.sync += w1b.eq(rd2.data)
        return w1b

    def _operands(self, m, w, w1b, fields):
        """The product's operands, registered for stage 3's multiply (the weight's bank multiplexer
        and the multiplier are a cycle each): ``(w3, val3, nz3, nz3b, pair3)``. The value is 0
        unless the command accumulates, so that the product is. (No reset, as w1: what reads them
        is gated by reset command bits.) The value is zeroed a stage earlier, into val2: val3 is
        then a plain copy, which the multiplier's input register can hold, as w3. A paired word's
        two weights are summed into w3, one bit wider (its value is 1); whether each is nonzero is
        registered beside it (their sum can be 0): ``nz3``, ``nz3b``, with ``pair3`` (None
        without paired layers)."""
        plan, exe = self._plan, self.exe
        w3 = Signal(signed(plan.weight_bits + plan.paired), name="w3", reset_less=True)
        val2 = Signal.like(exe.val, name="val2")
        val3 = Signal.like(exe.val, name="val3", reset_less=True)
        # (a packed word's products are summed across lanes: psum; its own product is 0)
        val = val2.eq(Mux(exe.acc & ~exe.packed if plan.max_groups else exe.acc, exe.val, 0))
        if not plan.paired:
            m.d.sync += [val, w3.eq(w), val3.eq(val2)]
            return w3, val3, None, None, None
        m.d.sync += [val, val3.eq(val2)]
        # pair2: this PE's own copy of the command bit, beside the stage-2 weights
        wb = Signal(signed(plan.weight_bits), name="wb")
        pair2 = Signal(name="pair2")
        nz3, nz3b, pair3 = Signal(name="nz3"), Signal(name="nz3b"), Signal(name="pair3")
        m.d.comb += wb.eq(w1b[fields["w"][0]:fields["w"][0] + fields["w"][1]])
        m.d.sync += [pair2.eq(exe.pair), w3.eq(w + Mux(pair2, wb, 0)), nz3.eq(w != 0),
                     nz3b.eq(pair2 & (wb != 0)), pair3.eq(pair2)]
        return w3, val3, nz3, nz3b, pair3

    def _entry_offset(self, m, geo, t, nbits):
        """``D[geo][t]``: the neuron offset of tap ``t`` of source ``geo`` (combinational), which a
        compressed entry's neuron ``event base - D + chunk`` subtracts."""
        plan, tb = self._plan, self._plan.tap_bits
        geos = geometries(plan)
        dtab = []
        for g in geos:
            lp = plan.layers[g.layer]
            d = g.tables(lp.chunks, lp.ho, lp.wo)[2]
            dtab.append(d + [0] * ((1 << max(tb, 1)) - len(d)))
        d_sel = Signal(nbits + 1, name="d_sel")
        with m.Switch(geo):
            for gi, d in enumerate(dtab):
                with m.Case(gi):
                    m.d.comb += d_sel.eq(Array(Const(v, nbits + 1) for v in d)[t])
        return d_sel

    def _select(self, values, width, cmd):
        """``values[cmd.neuron]``: a constant per neuron model of the plan."""
        if len(values) == 1:
            return Const(values[0], width)
        return per_layer(values, width, cmd.neuron)

    @staticmethod
    def _leak_term(v, nr):
        """``(v * a) >> f`` of neuron model ``nr`` (floor; ``a`` and ``f`` in lowest terms)."""
        a, f = nr.leak_key()
        if a == 0:
            return Const(0, 1)
        return (v if a == 1 else v * a) >> f

    @staticmethod
    def _rule(nr, v, theta):
        """``golden.fires``: ``v >= theta`` or ``v > theta``."""
        return signed_ge(v, theta, strict=nr.fire == ">")

    def _fire_reset_of(self, nr, u, thr, r):
        """(spike, membrane written on a spike, new flag) of the saturated ``u`` for neuron model
        ``nr`` (``golden.lif_step``; ``r``: the flag before the step)."""
        f1 = self._rule(nr, u, thr)
        if nr.reset == "zero":
            return f1, 0, 0
        if nr.reset == "subtract":
            return f1, u - thr, 0
        if nr.reset == "subtract_next":
            return f1, u, f1
        # subtract_recheck: fires(u - theta r, theta), and then r <- fires(u - theta s, theta); as
        # theta >= 1, fires(u - theta, theta) = fires(u, 2 theta) implies fires(u, theta)
        f2 = self._rule(nr, u, thr << 1)
        return Mux(r, f2, f1), u - thr, Mux(r, f1, f2)

    def _fire_reset(self, m, u, thr, r, s6):
        """The stage-6 spike, reset membrane and new flag of the command's neuron model."""
        kinds = self._plan.neurons
        if len(kinds) == 1:
            return self._fire_reset_of(kinds[0], u, thr, r)
        mb = self._plan.membrane_bits
        fire, after, flag = Signal(name="fire"), Signal(signed(mb + 1), name="after"), Signal(name="flag_new")
        with m.Switch(s6.neuron):
            for i, nr in enumerate(kinds):
                with m.Case(i):
                    f, a, fl = self._fire_reset_of(nr, u, thr, r)
                    m.d.comb += [fire.eq(f), after.eq(a), flag.eq(fl)]
        return fire, after, flag

    def _stage1(self, m, mems, w_rd, mem_rd, bias_rd):
        """Stage 1: the read data registered (block RAM clock-to-output is slow), as ``(w1, mem1,
        leak1, bias1, flag1, pend1)`` (``None`` for what the plan does not need). The old membrane,
        its flag and leak term are zeroed here, by the registers' synchronous reset (timestep 1:
        the old membrane reads as 0; the output integrator does not leak), so that the command
        bits, shared by every PE, do not enter stage 2's adders."""
        plan = self._plan
        mb, fb, kinds = plan.membrane_bits, plan.flag_bits, plan.neurons
        shift_leak = leak_in_stage1(plan)
        nexts = [int(nr.reset == "subtract_next") for nr in kinds]
        if any(nexts):
            # subtract_next subtracts theta * r before saturation: a second threshold read at issue
            thr_early = mems["threshold"].read_port()
            m.d.comb += thr_early.addr.eq(self.issue.n_addr)
        # (no reset: w1 only enters what stage 2's command bits, reset, gate; a BankedROM's data is
        # its banks' registers already)
        banked = isinstance(w_rd, BankedROM)
        w1 = w_rd.data if banked else Signal.like(w_rd.data, name="w1", reset_less=True)
        mem1 = Signal(signed(mb), name="mem1")
        bias1 = Signal.like(bias_rd.data, name="bias1", reset_less=True)   # (no reset: an output register)
        old = mem_rd.data[:mb].as_signed() if fb else mem_rd.data
        # (only a valid lane's membrane matters: the lane enters the flags, which makes them
        # this PE's own registers)
        zero_old = Signal(name="zero_old")
        lead = self.lead
        m.d.sync += zero_old.eq(lead.first_t & lead.lane)
        leak1 = flag1 = pend1 = None
        if shift_leak:
            a, f = kinds[0].leak_key()
            leak1, zero_leak = Signal(signed(mb), name="leak1"), Signal(name="zero_leak")
            m.d.sync += zero_leak.eq((lead.first_t | lead.output) & lead.lane)
        if not banked:
            m.d.sync += w1.eq(w_rd.data)
        m.d.sync += mem1.eq(Mux(zero_old, 0, old))
        if shift_leak:
            m.d.sync += leak1.eq(Mux(zero_leak, 0, old >> f) if a else 0)
        m.d.sync += bias1.eq(bias_rd.data)
        if fb:
            flag1 = Signal(name="flag1")
            m.d.sync += flag1.eq(mem_rd.data[mb] & ~zero_old)
        if any(nexts):
            # (the decision is registered from the lead, like zero_old: stage 1 adds one Mux)
            take_pend, pend1 = Signal(name="take_pend"), Signal(signed(mb), name="pend1")
            m.d.sync += [
                take_pend.eq(self._select(nexts, 1, lead) & ~lead.first_t & ~lead.output & lead.lane),
                pend1.eq(Mux(take_pend & mem_rd.data[mb], thr_early.data, 0)),
            ]
        return w1, mem1, leak1, bias1, flag1, pend1

    def _base(self, m, s2, base, mem1, leak1, bias1, pend1):
        """Stage 2 registers of the membrane update into ``base``; returns the leaked old membrane
        plus bias (minus the pending threshold) that stage 3 registers: ``base`` itself with the
        stage-1 leak, else ``base - leak2`` (the product leak term registered beside it)."""
        kinds, mb = self._plan.neurons, self._plan.membrane_bits
        if leak1 is not None:
            m.d.sync += base.eq(mem1 - leak1 + bias1)
            return base
        # membrane plus bias minus the pending threshold, and beside it the layer's leak term
        leak2 = Signal(signed(mb), name="leak2")
        term = Signal(signed(mb), name="leak_term")
        m.d.sync += [
            base.eq(mem1 + bias1 - pend1 if pend1 is not None else mem1 + bias1),
            leak2.eq(Mux(s2.output, 0, term)),
        ]
        if len(kinds) == 1:
            m.d.comb += term.eq(self._leak_term(mem1, kinds[0]))
        else:
            with m.Switch(s2.neuron):
                for i, nr in enumerate(kinds):
                    with m.Case(i):
                        m.d.comb += term.eq(self._leak_term(mem1, nr))
        return base - leak2

    def _acc_operands(self, m, acc_wr, acc_rd, addr3, s3, s3_lane, wz4):
        """Stage 4's two acc operands, ``(old_acc, acc_in)``: the acc value (for the membrane
        update) and the write's adder operand (0 for a command that writes 0 or its own product:
        a clear, an update); ``wz4`` is registered here.

        The selection is decided in stage 3 as registered flags, so that between the acc
        memory's read data and the adders lie one shared LUT (the read word's parity bit picks
        one of two flags) and one LUT per bit (read bit or forwarded bit): the read-modify-write
        loop is the design's longest path on the iCE40 UltraPlus. Forwarded: the stage-4 write of
        this cycle wrote the address the stage-3 command reads. A forwarded word is of the
        current image (or a cleared 0); a read word of the analog layer must have the image's
        parity, else it reads as 0 (stale). The flags include this PE's lane, so they are
        registers of this PE's own (the command bits are shared by every PE, far apart); a word
        of an invalid lane is never used, and it is never read as valid later. For a word read
        with parity p, the read data is used when ``take_p`` (not forwarded, not stale); the
        ``_w`` flags also drop the write's operand (wz)."""
        abits = self._plan.widths()["acc"]
        fwd3 = Signal(name="fwd3")
        wz3 = Signal(name="wz3")
        par = [Signal(name=f"par{p}_3") for p in (0, 1)]  # the analog layer's word must have parity p
        m.d.comb += [
            fwd3.eq(acc_wr.en & (acc_wr.addr == addr3)),
            wz3.eq(~s3.acc & ~(s3.update & s3.layer0)),
            par[1].eq(s3.layer0 & s3_lane & s3.img),
            par[0].eq(s3.layer0 & s3_lane & ~s3.img),
        ]
        take = [Signal(name=f"take{p}_4") for p in (0, 1)]      # use a read word of parity p
        take_w = [Signal(name=f"take{p}_w4") for p in (0, 1)]   # ... as the write's operand
        fwd, fwd_w = Signal(name="fwd"), Signal(name="fwd_w")
        fwd_data = Signal.like(acc_rd.data, name="fwd_data")
        m.d.sync += [
            wz4.eq(wz3),
            fwd.eq(fwd3), fwd_w.eq(fwd3 & ~wz3), fwd_data.eq(acc_wr.data),
            *(take[p].eq(~fwd3 & ~par[1 - p]) for p in (0, 1)),
            *(take_w[p].eq(~fwd3 & ~wz3 & ~par[1 - p]) for p in (0, 1)),
        ]
        rd = acc_rd.data

        def operand(name, take_p, use_fwd):
            use_rd = Signal(name=f"{name}_rd")
            v = Signal(signed(abits), name=name)
            m.d.comb += [use_rd.eq(Mux(rd[abits], take_p[1], take_p[0])),
                         v.eq((rd[:abits] & use_rd.replicate(abits)) | (fwd_data[:abits] & use_fwd.replicate(abits)))]
            return v

        return operand("old_acc", take, fwd), operand("acc_in", take_w, fwd_w)

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        abits = plan.widths()["acc"]
        mems, w_rd = self._memories(m)
        acc_wr = mems["acc"].write_port()
        acc_rd = mems["acc"].read_port()
        mem_wr = mems["membrane"].write_port()
        mem_rd = mems["membrane"].read_port()
        bias_rd = mems["bias"].read_port()
        thr_rd = mems["threshold"].read_port()

        mb, fb, kinds = plan.membrane_bits, plan.flag_bits, plan.neurons
        lo, hi = -(1 << (mb - 1)), (1 << (mb - 1)) - 1
        exe = self.exe

        # Stage 2..6 control: the stage-1 command and lane_valid, delayed.
        s2, s3, s4, s5, s6 = (Signal(exec_layout(plan), name=f"s{i}") for i in (2, 3, 4, 5, 6))
        s2_lane, s3_lane, s4_lane, s5_lane, s6_lane = (Signal(name=f"s{i}_lane") for i in (2, 3, 4, 5, 6))
        m.d.sync += [s2.eq(exe), s3.eq(s2), s4.eq(s3), s5.eq(s4), s6.eq(s5),
                     s2_lane.eq(self.lane_valid), s3_lane.eq(s2_lane), s4_lane.eq(s3_lane), s5_lane.eq(s4_lane),
                     s6_lane.eq(s5_lane)]

        # Stage 0: reads.
        m.d.comb += [
            w_rd.addr.eq(self.issue.w_addr),
            mem_rd.addr.eq(self.issue.n_addr),
            bias_rd.addr.eq(self.issue.n_addr),
        ]
        w1, mem1, leak1, bias1, flag1, pend1 = self._stage1(m, mems, w_rd, mem_rd, bias_rd)
        w1b = self._second_weight(m, mems, w_rd) if plan.paired else None

        # Stage 2: the product's operands; leak + bias; the neuron of a compressed entry and whether it lands.
        # the stored word's fields (plan.word_fields: a dense word's bits above w are 0)
        fields = plan.word_fields("sparse")
        field = {k: w1[lsb:lsb + n] for k, (lsb, n) in fields.items()}
        w = Signal(signed(plan.weight_bits), name="w")
        m.d.comb += w.eq(field["w"])
        w3, val3, nz3, nz3b, pair3 = self._operands(m, w, w1b, fields)
        packing = bool(plan.max_groups)
        base = Signal(signed(mb + 2), name="base")
        nbits = bits(plan.neuron_depth)
        addr3 = Signal(nbits, name="addr3")
        lands3 = Signal(name="lands3")
        base_sum = self._base(m, s2, base, mem1, leak1, bias1, pend1)
        # (a compressed layer whose rows need no index fields, one tap and one chunk, still takes
        # the compressed path: its padding entries must neither count nor write)
        t = field.get("t", Const(0, 1))
        c = field.get("c", Const(0, 1))
        d_sel = self._entry_offset(m, s2.geo, t, nbits)
        lands = Signal(name="lands")
        m.d.comb += lands.eq((s2.mask >> t)[0])
        m.d.sync += [addr3.eq(Mux(s2.sparse, s2.addr - d_sel + c, s2.addr)), lands3.eq(lands)]

        # Stage 3: acc read; the product (0 unless the command accumulates; on ECP5 the multiplier's
        # own output register, no reset). wz4 marks a command that writes 0 or its own product (a
        # clear, an update): the written word then has parity 0.
        prod4 = Signal(signed(len(w3) + plan.value_bits + 1), name="prod4", reset_less=True)
        base4 = Signal.like(base, name="base4")
        addr4 = Signal.like(addr3, name="addr4")
        ok4 = Signal(name="ok4")
        wz4 = Signal(name="wz4")
        m.d.comb += acc_rd.addr.eq(addr3)
        m.d.sync += [prod4.eq(w3 * val3), base4.eq(base_sum), addr4.eq(addr3)]
        old_acc, acc_in = self._acc_operands(m, acc_wr, acc_rd, addr3, s3, s3_lane, wz4)

        # Whether the weight is nonzero is decided on the registered operand w3, so that no
        # multiplexer (a banked weight memory's) lies before it: ok4, an acc command that writes;
        # read and syn (stage W_NZ_STAGE).
        w_nz = w3 != 0 if nz3 is None else nz3
        writes = s3_lane
        psum4 = None
        if packing:
            # Packed tail word: this lane's weight (its group's event, value 1) goes to the sum
            # across lanes (``tail``, combinational from registers); the lanes of group 0 write
            # their channel's sum (``psum``, registered as psum4) and the others nothing.
            geos = geometries(plan)
            first = Signal(name="group0")
            with m.Switch(s3.geo):
                for gi in range(len(geos)):
                    if pack_group(plan, gi, self._index) == 0:
                        with m.Case(gi):
                            m.d.comb += first.eq(1)
            writes = Mux(s3.packed, s3_lane & first, s3_lane)
            psum4 = Signal(psum_shape(plan), name="psum4")
            # (tail is a register of its own, stage 2's weight masked by stage 2's command beside
            # w3: no command decode between it and the sum across lanes)
            tail3 = Signal(signed(plan.weight_bits), name="tail3", reset_less=True)
            m.d.sync += tail3.eq(Mux(s2.packed & s2_lane, w, 0))
            m.d.comb += self.tail.eq(tail3)
            m.d.sync += psum4.eq(self.psum)
        m.d.sync += [
            ok4.eq(s3.acc & Mux(s3.sparse, w_nz & lands3, writes)),
            self.read.eq(s3.acc & Mux(s3.sparse, w_nz, s3_lane)),
            self.syn.eq(s3.acc & Mux(s3.sparse, w_nz & lands3, s3_lane & w_nz)),
        ]
        if plan.paired:   # the second event of a paired word (dense: every valid lane reads it)
            m.d.sync += [self.read2.eq(s3.acc & pair3 & s3_lane), self.syn2.eq(s3.acc & s3_lane & nz3b)]

        # Stage 4: acc write-back; the membrane update adds the acc value (registered as pre).
        new_acc = Signal(signed(abits), name="new_acc")
        m.d.comb += [
            new_acc.eq(acc_in + (prod4 if psum4 is None else prod4 | psum4)),   # (one of the two is 0)
            acc_wr.addr.eq(Mux(s4.acc, addr4, s4.addr)),
            acc_wr.en.eq(ok4 | s4.clear | (s4.update & s4.layer0)),
            acc_wr.data.eq(Cat(new_acc, s4.img & ~wz4)),
        ]
        pre = Signal(signed(max(mb + 2, abits) + 1), name="pre")
        m.d.sync += pre.eq(base4 + old_acc)
        # the threshold of stage 6, read here and registered (a block RAM's data register, on ECP5
        # its output register): s4's address is s5's a cycle early, and the memory is read-only
        thr6 = Signal.like(thr_rd.data, name="thr6", reset_less=True)
        m.d.comb += thr_rd.addr.eq(s4.addr)

        # Stage 5: saturate (registered as ``z``); the threshold registered.
        u = self.z
        # pre fits in mb bits iff its bits mb - 1 .. top are all equal: a short reduction instead
        # of two wide comparisons after the adder.
        top = pre[mb - 1:]
        fits = (top == 0) | (top == (1 << len(top)) - 1)
        m.d.sync += [u.eq(Mux(fits, pre[:mb], Mux(pre[-1], lo, hi))), thr6.eq(thr_rd.data)]

        # Stage 6: fire, reset, membrane (and flag) write-back. r6: the flag read in stage 0.
        r6 = flag1
        if any(nr.reset == "subtract_recheck" for nr in kinds):
            for i in range(3, 7):
                r6, prev = Signal(name=f"flag{i}"), r6
                m.d.sync += r6.eq(prev)
        fire, after, flag = self._fire_reset(m, u, thr6, r6, s6)
        m.d.comb += self.thr.eq(thr6)   # with z: the output layer's words, the exit threshold
        written = Mux(s6.output | ~fire, u, after)
        m.d.comb += [
            mem_wr.addr.eq(s6.addr),
            mem_wr.en.eq(s6.update),
            mem_wr.data.eq(Cat(written[:mb], flag & ~s6.output) if fb else written),
        ]
        m.d.sync += self.spike.eq(s6.update & ~s6.output & fire & s6_lane)
        return m

