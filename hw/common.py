"""Small helpers shared by the accelerator's components."""

from amaranth import Array, Cat, Const, Value
from amaranth.utils import ceil_log2


def bits(n):
    """Unsigned width of the values 0..n-1 (at least 1)."""
    return max(1, ceil_log2(max(n, 1)))


def per_layer(values, width, sel):
    """``values[sel]``: a constant table indexed by a layer signal."""
    return Array(Const(v, width) for v in values)[sel]


def _bits_signed(v):
    v = Value.cast(v)
    return len(v) + (0 if v.shape().signed else 1)


def ordered(v, width=None):
    """The value ``v`` as ``v + 2**(width - 1)``, unsigned, ``width`` bits (by default the fewest
    that hold ``v`` as a signed value; ``v`` sign- or zero-extended to it, as its shape says):
    offset binary, in the same order. Comparing two such values is an unsigned comparison, one
    carry chain whose carry out is the result; a signed comparison also takes the chain's last
    sum bit (on ECP5 a second carry cell and a route back into the chain's row). Only the top bit
    is inverted."""
    v = Value.cast(v)
    need = _bits_signed(v)
    width = need if width is None else width
    if width < need:
        raise ValueError(f"width {width} cannot hold the value ({len(v)} bits, {v.shape()})")
    top = v[-1] if v.shape().signed else Const(0, 1)
    ext = Cat(v, top.replicate(width - len(v)))
    return Cat(ext[:width - 1], ~ext[width - 1])


def from_ordered(v):
    """The signed value of the offset-binary ``v`` (:func:`ordered` of ``len(v)`` bits): its top bit
    inverted, read as signed."""
    return Cat(v[:-1], ~v[-1]).as_signed()


def greater(a, b):
    """``a > b``, written as ``b < a``: Yosys (0.70) maps ``$lt`` and ``$ge`` to a carry chain whose
    carry out is the result, but ``$gt`` and ``$le`` to the chain and an equality tree of the
    operands beside it, whose LUT levels come after the chain's inputs (two 17-bit operands on the
    ECP5: 8 CCU2C and 1 LUT4 for ``<``; 8 CCU2C, 14 LUT4 and 2 PFUMX for ``>``). The tree was the
    ECP5-25F N = 8 critical path, in the exit unit's pairwise comparisons."""
    return Value.cast(b) < a


def signed_ge(a, b, strict=False):
    """``a >= b`` (``a > b`` when ``strict``), as an unsigned comparison of their :func:`ordered`
    forms (either may be signed or unsigned)."""
    w = max(_bits_signed(a), _bits_signed(b))
    oa, ob = ordered(a, w), ordered(b, w)
    return greater(oa, ob) if strict else oa >= ob
