"""The weight-load port: ``i_weights`` into the PEs' weight memories after reset."""

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .common import bits


class WeightLoader(wiring.Component):
    """Writes the ``i_weights`` stream into the weight memories, PE by PE, address by address.

    The weight memories' one address serves the load: while loading, ``w_addr`` is the load
    address, afterwards ``issue_addr``.

    Parameters
    ----------
    n_pe : int
    depth : int
        Words per PE (``plan.weight_depth``).
    word_bits : int

    Members
    -------
    i_weights : In(stream.Signature(unsigned(word_bits)))
        ``ready`` is registered (high from reset until the last word is transferred), independent
        of ``valid``.
    issue_addr : In(bits(depth))
        The event pipeline's weight address.
    w_addr : Out(bits(depth))
        The PEs' weight address (combinational).
    loading, load_addr : Out(1), Out(bits(depth))
        The load is on (a register), and its address (a register): ``w_addr`` is the one while the
        other is set, else ``issue_addr`` (for PEs whose address is not ``issue_addr``).
    load_en : Out(n_pe)
        Bit ``p``: write ``load_data`` into PE ``p``'s memory at ``w_addr`` this cycle.
    load_data : Out(word_bits)
    done : Out(1)
        The last word is transferred this cycle (combinational).
    """

    def __init__(self, n_pe, depth, word_bits):
        self._n, self._depth = n_pe, depth
        super().__init__({
            "i_weights": In(stream.Signature(word_bits)),
            "issue_addr": In(bits(depth)),
            "w_addr": Out(bits(depth)),
            "loading": Out(1),
            "load_addr": Out(bits(depth)),
            "load_en": Out(n_pe),
            "load_data": Out(word_bits),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n, wl = self._n, self.i_weights
        pe = Signal(range(max(n, 2)))
        addr = Signal(bits(self._depth))
        on = Signal(init=1)
        m.d.comb += [wl.ready.eq(on), self.w_addr.eq(Mux(on, addr, self.issue_addr)), self.load_data.eq(wl.payload),
                     self.loading.eq(on), self.load_addr.eq(addr)]
        for p in range(n):
            m.d.comb += self.load_en[p].eq(wl.valid & on & (pe == p))
        with m.If(wl.valid & on):
            with m.If(addr == self._depth - 1):
                m.d.sync += [addr.eq(0), pe.eq(pe + 1)]
                with m.If(pe == n - 1):
                    m.d.sync += on.eq(0)
                    m.d.comb += self.done.eq(1)
            with m.Else():
                m.d.sync += addr.eq(addr + 1)
        return m
