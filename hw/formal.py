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

``Cover`` statements (``COVERS``) show the properties are not vacuous: a result is transferred,
a result is held under back-pressure, a second image follows a first.

``mutation`` (tests only) inserts a deliberate fault between the accelerator and the ports the
properties watch, each of which a proof must reject: ``"handshake"`` (``valid`` drops every other
cycle whatever ``ready`` says), ``"drop"`` (the first result is taken from the accelerator
without ever reaching ``o_result``), ``"payload"`` (the payload changes while ``valid`` is held)
and ``"early"`` (``valid`` is high in the cycle after reset).
"""

import re

from amaranth import Module, ResetSignal, Signal, Value
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cover
from amaranth.lib import wiring

from .accel import Accelerator

__all__ = ["COVERS", "MUTATIONS", "PROPERTIES", "StreamCheck", "rtlil_text"]

PROPERTIES = ("held", "stable", "one_result", "no_second_image", "input_closed", "reset_clears")
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
        The properties to assert (default: all of ``PROPERTIES``); a proof by induction may close
        for some and not for others.
    mutation : str or None
        One of ``MUTATIONS`` to check that the properties can fail; None: the design as generated.

    Members
    -------
    i_data, o_result
        The accelerator's ports, as its docstring describes them.
    """

    def __init__(self, model, n_pe, *, storage="auto", mutation=None, properties=PROPERTIES):
        try:
            if not properties or any(p not in PROPERTIES for p in properties):
                raise ValueError(f"properties must be a non-empty selection of {', '.join(PROPERTIES)}, "
                                 f"got {properties!r}")
            if mutation is not None and mutation not in MUTATIONS:
                raise ValueError(f"mutation must be None or one of {', '.join(map(repr, MUTATIONS))}, "
                                 f"got {mutation!r}")
        except ValueError:
            self._MustUse__silence = True  # never elaborated: no "created but never used" warning
            raise
        self.accel = Accelerator(model, n_pe, storage=storage)
        self.mutation = mutation
        self.properties = tuple(properties)
        self.input_size = model.input_size
        super().__init__(self.accel.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = dut = self.accel
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
        images = Signal(2)
        with m.If(last & (images != 3)):
            m.d.sync += images.eq(images + 1)
        with m.If(check):
            m.d.comb += [
                Cover(taken_out, "result_taken"),
                Cover(waited & o.valid, "result_waits"),
                Cover(taken_out & (images == 2), "second_image"),
            ]
        return m


_CHECK_CELL = re.compile(r'^  cell \$check \$\d+\n    parameter \\FORMAT "(\w+)"\n', re.M)


def rtlil_text(check):
    """The wrapper as RTLIL (what SymbiYosys reads), top module ``formal_top``. Each ``$check``
    cell is named after its message (``held``, ..., ``result_taken``), so that the solver's
    report names the property."""
    text = rtlil.convert(check, name="formal_top", emit_src=False)
    return _CHECK_CELL.sub(lambda mo: f'  cell $check \\{mo[1]}\n    parameter \\FORMAT "{mo[1]}"\n', text)
