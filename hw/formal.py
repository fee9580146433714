"""Formal-only wrapper: the stream protocol of the generated accelerator as Amaranth assertions.

:class:`StreamCheck` instantiates an :class:`~spikeloom.hw.accel.Accelerator` and exposes its
ports unchanged (``i_data``, ``o_result``; the sync domain's ``clk`` and ``rst`` become inputs
too, so a solver may assert reset in any cycle). Every input is free; the only assumption is on
the environment: reset is asserted in the first cycle. The properties (``PROPERTIES``, each an
``Assert`` named in the exported design) are checked in every cycle:

``held``
    ``o_result.valid`` high and ``ready`` low in a cycle without reset: ``valid`` is high in
    the next cycle (a result is never withdrawn before it is transferred).
``stable``
    Under the same condition the payload of the next cycle equals this cycle's.
``one_result``
    ``o_result.valid`` only while exactly one complete image (``model.input_size`` transfers on
    ``i_data`` since reset or since the last result) has no result: no result without an
    image, none twice for one image.
``no_second_image``
    At most one complete image waits for its result.
``input_closed``
    While an image's result is pending (its last value accepted, its result not yet
    transferred, which includes every cycle in which ``o_result.valid`` is high) ``i_data.ready``
    is low: the design accepts no input while a result waits; the next image's first value is
    accepted at the earliest in the cycle after the result's transfer.
``reset_clears``
    In the cycle after a reset ``o_result.valid`` is low (the tracking counters restart with the
    design, so ``one_result`` then also forbids a result until a new image is complete).

Invariants (``INVARIANTS``, asserted and proved with the properties) relate the wrapper's
tracking state and the result's sources to the design's registers, which the wrapper reads from
the elaborated design by name (the sequencer's ``phase``, ``cnt``, ``layer``; the input source's
position; the queues' registers (push, ``hold``, skid, prefetch slots, memory level); the exit
unit's and the counters' pipeline registers), so that every property is inductive at a small
``k`` (2: every reachable state, however long after reset, without unrolling an inference):

``inv_phase``
    ``phase`` is one of the phases of a design with initialised weights, the registered phase
    flags agree with it, the exit wait's count is below its length, ``layer`` is a layer (0 in
    ``INIT`` and ``LOAD``).
``inv_image``
    The wrapper's count of images waiting for a result is the input source's ``done`` (all values
    of the image taken), which holds from ``UPDATE`` to ``RESULT``.
``inv_position``
    The wrapper's count of values of the current image is the input source's position
    (``(row * H + y) * W + x``, in range), or 0 once ``done``.
``inv_drained``
    From the exit wait on, the commands in the PE pipeline (``s1`` .. ``s7``), the exit unit's
    tree registers and the counters' registered counts are empty once as many cycles have
    passed as their stage: in ``RESULT`` nothing reaches the payload.
``inv_tail``
    From the output layer's update on, the spike (and shortcut) queues are empty, no event is
    being counted and no spiking-layer update is in the PE pipeline.
``inv_queues``
    A spiking-layer update in the PE pipeline belongs to the layer updating (or, in ``ACC``, to the
    one before); the shortcut queue holds entries only from its source layer's ``UPDATE`` to its
    reader's ``ACC``; each spike queue's registers are in a state it reaches from reset
    (:meth:`~spikeloom.hw.events.SpikeEventSource.consistent`).

``Cover`` statements (``COVERS``) show the properties are not vacuous: a result is transferred,
a result is held under back-pressure, a second image follows a first.

``mutation`` (tests only) inserts a deliberate fault between the accelerator and the ports the
properties watch, each of which a proof must reject: ``"handshake"`` (``valid`` drops every other
cycle whatever ``ready`` says), ``"drop"`` (the first result is taken from the accelerator
without ever reaching ``o_result``), ``"payload"`` (the payload changes while ``valid`` is held)
and ``"early"`` (``valid`` is high in the cycle after reset).
"""

import re

from amaranth import Const, Module, ResetSignal, Signal, Value
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cover, Fragment
from amaranth.lib import data, wiring

from .accel import Accelerator
from .events import InputEventSource, SpikeEventSource
from .pe import PE
from .pool import shortcut_readers
from .sequencer import Phase, exit_wait
from .top2 import Top2

__all__ = ["COVERS", "INVARIANTS", "MUTATIONS", "PROPERTIES", "StreamCheck", "rtlil_text"]

PROPERTIES = ("held", "stable", "one_result", "no_second_image", "input_closed", "reset_clears")
INVARIANTS = ("inv_phase", "inv_image", "inv_position", "inv_drained", "inv_tail", "inv_queues")
COVERS = ("result_taken", "result_waits", "second_image")
MUTATIONS = ("handshake", "drop", "payload", "early")


class StreamCheck(wiring.Component):
    """The accelerator for ``model`` on ``n_pe`` PEs with the protocol properties attached.

    Parameters
    ----------
    model : QuantModel
        The network (as for :class:`~spikeloom.hw.accel.Accelerator`).
    n_pe : int
        Processing elements.
    storage : str or dict
        Weight storage (as for the accelerator).
    properties : tuple of str
        The properties to assert (default: all of ``PROPERTIES``).
    invariants : bool
        Assert ``INVARIANTS`` too (default); without them the properties are still checked by bmc,
        but ``stable`` is not inductive at a small ``k``.
    covers : tuple of str
        The covers to state (default: all of ``COVERS``; a cover run stops once all are reached).
    mutation : str or None
        One of ``MUTATIONS`` to check that the properties can fail; None: the design as generated.

    Members
    -------
    i_data, o_result
        The accelerator's ports, as its docstring describes them.
    """

    def __init__(self, model, n_pe, *, storage="auto", mutation=None, properties=PROPERTIES, invariants=True,
                 covers=COVERS):
        try:
            if not properties or any(p not in PROPERTIES for p in properties):
                raise ValueError(f"properties must be a non-empty selection of {', '.join(PROPERTIES)}, "
                                 f"got {properties!r}")
            if any(c not in COVERS for c in covers):
                raise ValueError(f"covers must be a selection of {', '.join(COVERS)}, got {covers!r}")
            if mutation is not None and mutation not in MUTATIONS:
                raise ValueError(f"mutation must be None or one of {', '.join(map(repr, MUTATIONS))}, "
                                 f"got {mutation!r}")
        except ValueError:
            self._MustUse__silence = True  # never elaborated: no "created but never used" warning
            raise
        self.accel = Accelerator(model, n_pe, storage=storage)
        self.mutation = mutation
        self.properties = tuple(properties)
        self.invariants = invariants
        self.covers = tuple(covers)
        self.input_size = model.input_size
        # the input source's (C, H, W)
        self._shape = InputEventSource.chw(self.accel.plan.layers[0].sources[0].shape)
        super().__init__(self.accel.signature)

    def elaborate(self, platform):
        m = Module()
        dut = self.accel
        # elaborated here, so that the invariants can name the design's registers
        design = Fragment.get(dut, platform)
        m.submodules.accel = design
        i, o = self.i_data, self.o_result
        payload, dut_payload = Value.cast(o.payload), Value.cast(dut.o_result.payload)

        # a free-running bit for the mutations (not reset: a fault must not need the reset's help)
        phase = Signal(reset_less=True)
        m.d.sync += phase.eq(~phase)
        m.d.comb += [dut.i_data.valid.eq(i.valid), dut.i_data.payload.eq(i.payload), i.ready.eq(dut.i_data.ready),
                     o.valid.eq(dut.o_result.valid), payload.eq(dut_payload), dut.o_result.ready.eq(o.ready)]
        if self.mutation == "handshake":
            m.d.comb += [o.valid.eq(dut.o_result.valid & phase), dut.o_result.ready.eq(o.ready & phase)]
        elif self.mutation == "drop":
            swallowed = Signal()
            m.d.sync += swallowed.eq(swallowed | dut.o_result.valid)
            m.d.comb += [o.valid.eq(dut.o_result.valid & swallowed), dut.o_result.ready.eq(o.ready | ~swallowed)]
        elif self.mutation == "payload":
            m.d.comb += payload.eq(dut_payload ^ phase)
        elif self.mutation == "early":
            after_reset = Signal(init=1)
            m.d.sync += after_reset.eq(0)
            m.d.comb += o.valid.eq(dut.o_result.valid | after_reset)

        # environment: reset in the first cycle, nothing else
        started = Signal(reset_less=True)
        m.d.sync += started.eq(1)
        rst = ResetSignal()
        m.d.comb += Assume(started | rst, "reset_at_start")

        # tracking: values of the current image, images complete without a result (saturating)
        taken_in = i.valid & i.ready
        taken_out = o.valid & o.ready
        count = Signal(range(max(self.input_size, 2)))
        last = taken_in & (count == self.input_size - 1)
        with m.If(last):
            m.d.sync += count.eq(0)
        with m.Elif(taken_in):
            m.d.sync += count.eq(count + 1)
        pending = Signal(2)
        with m.If(last & ~taken_out & (pending != 3)):
            m.d.sync += pending.eq(pending + 1)
        with m.Elif(taken_out & ~last & (pending != 0)):
            m.d.sync += pending.eq(pending - 1)

        waited = Signal()               # last cycle: valid & ~ready, no reset
        held_payload = Signal.like(payload)
        after_rst = Signal(reset_less=True)  # high in the cycle after a reset (not reset itself)
        m.d.sync += [waited.eq(o.valid & ~o.ready & ~rst), held_payload.eq(payload), after_rst.eq(rst)]

        check = Signal()                # a cycle in which the properties apply: started, no reset
        m.d.comb += check.eq(started & ~rst)
        holds = {
            "held": ~waited | o.valid,
            "stable": ~waited | (payload == held_payload),
            "one_result": ~o.valid | (pending == 1),
            "no_second_image": pending <= 1,
            "input_closed": ~((pending == 1) & i.ready),
            "reset_clears": ~after_rst | ~o.valid,
        }
        with m.If(check):
            m.d.comb += [Assert(holds[name], name) for name in self.properties]
        if self.invariants:
            inv = self._invariants(design, count, pending)
            with m.If(check):
                m.d.comb += [Assert(inv[name], name) for name in INVARIANTS]
        images = Signal(2)
        with m.If(last & (images != 3)):
            m.d.sync += images.eq(images + 1)
        cover = {"result_taken": taken_out, "result_waits": waited & o.valid,
                 "second_image": taken_out & (images == 2)}
        with m.If(check):
            m.d.comb += [Cover(cover[name], name) for name in self.covers]
        return m


    def _invariants(self, design, count, pending):
        """The invariants (``INVARIANTS``): the wrapper's tracking state and the result's inputs as
        functions of the design's registers, so that every property is inductive at a small ``k``."""
        seq, phase = _part(design, "seq"), _register(design, "seq", "phase")
        inputs = _part(design, "inputs")
        row, y, x = (_register(design, "inputs", name) for name in ("row", "y", "x"))
        cnt, layer = _register(design, "seq", "cnt"), _register(design, "seq", "layer")
        queues = {q: _queue_idle(design, q)
                  for q in ("spikes", "shortcut") if any(name == q for _, name, *_ in design.subfragments)}
        plan = self.accel.plan
        n_c, n_h, n_w = self._shape
        stages = [getattr(seq, f"s{i}") for i in range(1, PE.SPIKE_STAGE + 1)]
        top2_regs = [_register(design, "exit", f"en_{j}") for j in range(Top2.latency_of(plan.n_pe) - 1)]
        wait = exit_wait(plan.n_pe)

        flags = {Phase.LOAD: seq.in_load, Phase.ACC: seq.in_acc, Phase.RESULT: seq.in_result,
                 Phase.UPDATE: _register(design, "seq", "in_update")}
        computing = phase.matches(Phase.UPDATE, Phase.ACC, Phase.EXIT_WAIT, Phase.EXIT, Phase.RESULT)
        position = (row * n_h + y) * n_w + x

        def drained(age):
            # every command issued `age` cycles ago or later was empty: the exit wait's count, the
            # whole wait in EXIT, any age in RESULT
            return ((phase == Phase.RESULT) | ((phase == Phase.EXIT) & (wait >= age))
                    | ((phase == Phase.EXIT_WAIT) & (cnt >= age)))

        # the output layer's last phases: nothing left for the spike queue or the event pipeline
        tail = (((phase == Phase.UPDATE) & (layer == plan.n_layers - 1))
                | phase.matches(Phase.EXIT_WAIT, Phase.EXIT, Phase.RESULT))
        # a spiking update in the PE pipeline: of the layer updating, or of the one before the layer
        # accumulating (the accumulate phase starts right after the update)
        placed = _all(~(st.cmd.update & ~st.cmd.output)
                      | ((phase == Phase.UPDATE) & (st.layer == layer))
                      | ((phase == Phase.ACC) & (st.layer + 1 == layer)) for st in stages)
        # the shortcut queue holds entries only from its source layer's update to its reader's
        # accumulate phase
        windows = [((phase == Phase.UPDATE) & (layer >= src) & (layer < dst))
                   | ((phase == Phase.ACC) & (layer > src) & (layer <= dst))
                   for src, dst in shortcut_readers(plan.model).items()]
        shortcut_placed = queues["shortcut"] | _any(windows) if windows else Const(1)
        return {
            "inv_phase": phase.matches(Phase.INIT, Phase.LOAD, Phase.UPDATE, Phase.ACC, Phase.EXIT_WAIT,
                                       Phase.EXIT, Phase.RESULT)
            & _all(flag == (phase == ph) for ph, flag in flags.items())
            & ((phase != Phase.EXIT_WAIT) | (cnt < wait))
            & (~phase.matches(Phase.INIT, Phase.LOAD) | (layer == 0)) & (layer < plan.n_layers),
            "inv_image": (pending == inputs.done) & (~computing | inputs.done),
            "inv_position": ((inputs.done & (count == 0))
                             | (~inputs.done & (row < n_c) & (y < n_h) & (x < n_w) & (count == position))),
            "inv_drained": _all(~drained(i) | (Value.cast(st) == 0) for i, st in enumerate(stages, 1))
            & _all(~drained(PE.Z_STAGE + j + 1) | ~en for j, en in enumerate(top2_regs))
            & (~drained(PE.W_NZ_STAGE + 1) | ~_register(design, "counters", "acc_cnt_valid"))
            & (~drained(PE.SPIKE_STAGE + 1) | ~_register(design, "counters", "upd_cnt_valid")),
            "inv_tail": ~tail | (_all(queues.values()) & ~_part(design, "events").counted
                                 & _all(~(st.cmd.update & ~st.cmd.output) for st in stages)),
            "inv_queues": placed & shortcut_placed
            & _all(SpikeEventSource.consistent(lambda name, q=q: _register(design, q, name),
                                               _part(design, q).push.payload.shape(), _part(design, q).memory_depth)
                   for q in queues),
        }


def _any(values):
    out = Const(0)
    for v in values:
        out = out | v
    return out


def _all(values):
    out = Const(1)
    for v in values:
        out = out & v
    return out


def _subfragment(fragment, name):
    sub = next((sub for sub, sub_name, *_ in fragment.subfragments if sub_name == name), None)
    if sub is None:
        raise RuntimeError(f"the design has no submodule named {name!r}")
    return sub


def _part(design, name):
    """The component of the design's submodule ``name`` (its ports are the design's signals)."""
    return _subfragment(design, name).origins[0]


def _queue_idle(design, q):
    """The spike queue ``q`` holds nothing: no entry in its push register or being split, no event
    in its skid register,
    no prefetch slot allocated (in a consistent state, none full and no read in flight), nothing
    in its memory."""
    return (~_register(design, q, "push_valid") & ~_register(design, q, "hold_valid") & ~_register(design, q, "skid_valid")
            & (_register(design, q, "level") == 0)
            & (_register(design, q, "alloc") == 0))


def _register(design, part, name):
    """The signal ``name`` driven in the sync domain of the design's submodule ``part``."""
    fragment = _subfragment(design, part)
    found = {id(sig): sig for stmt in fragment.statements.get("sync", ()) for sig in stmt._lhs_signals()
             if sig.name == name}
    if len(found) != 1:
        raise RuntimeError(f"{part}: expected one register named {name!r}, found {len(found)}")
    return next(iter(found.values()))


_CHECK_CELL = re.compile(r'^  cell \$check \$\d+\n    parameter \\FORMAT "(\w+)"\n', re.M)


def rtlil_text(check):
    """The wrapper as RTLIL (what SymbiYosys reads), top module ``formal_top``. Each ``$check``
    cell is named after its message (``held``, ..., ``result_taken``), so that the solver's
    report names the property."""
    text = rtlil.convert(check, name="formal_top", emit_src=False)
    return _CHECK_CELL.sub(lambda mo: f'  cell $check \\{mo[1]}\n    parameter \\FORMAT "{mo[1]}"\n', text)
