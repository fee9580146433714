"""Small helpers shared by the accelerator's components."""

from amaranth import Array, Const
from amaranth.utils import ceil_log2


def bits(n):
    """Unsigned width of the values 0..n-1 (at least 1)."""
    return max(1, ceil_log2(max(n, 1)))


def per_layer(values, width, sel):
    """``values[sel]``: a constant table indexed by a layer signal."""
    return Array(Const(v, width) for v in values)[sel]
