"""Layer geometry and the PE mapping: the one home of where neurons are and where an event lands.

The golden model (its convolutions and counters), the hardware plan (``hw/plan.py``: placement,
weight rows, the event tables of the RTL) and balanced pruning (``model/pruning.py``) all import
these definitions; none of them re-derives one.

**PE ownership.** Over ``n_pe`` processing elements, PE ``p`` owns output channel
``o = c * n_pe + p`` of every layer: ``owner(o, n_pe) == (p, c)`` (``c`` is the *chunk*) and
``channel(p, c, n_pe) == o``. A dense layer's channels are its neurons.

**Kernels.** A :class:`Kernel` ``(k, stride, pad)`` is the window of a conv layer over its
``(C_in, H, W)`` input map, or the 1x1 window ``(1, shortcut_stride, 0)`` of a residual shortcut
over its source map. An output is ``out_size(n) = (n + 2 * pad - k) // stride + 1`` long per axis.
An input event at ``(y, x)`` meets tap ``t = ky * k + kx``, which *lands* on the output
``(oy, ox) = ((y + pad - ky) / stride, (x + pad - kx) / stride)`` when both are integers inside
the output map (:meth:`Kernel.landing`). A dense layer has no kernel: its one tap always lands
on its 1x1 map (:data:`DENSE_LANDING`).

**Per layer kind** (:func:`kernel`, :func:`shortcut_kernel`, :func:`map_hw`, :func:`pool`):
``dense``: no kernel, a 1x1 map of ``out`` channels; ``conv``: the layer's kernel, map
``(C_out, H_out, W_out)`` (``Layer.map_shape``), its spikes pooled (``Layer.pool_op``) ``pool x pool`` before they
leave; residual shortcut: a 1x1 kernel with the shortcut's stride onto the layer's map.
"""

from dataclasses import dataclass

import numpy as np

#: The landing taps of an event on a dense layer: the one tap, on the 1x1 map.
DENSE_LANDING = ((0, 0, 0),)


# ---------------------------------------------------------------------- PE ownership

def owner(o, n_pe):
    """``(pe, chunk)`` of output channel ``o`` over ``n_pe`` PEs: ``o = chunk * n_pe + pe``."""
    chunk, pe = divmod(o, n_pe)
    return pe, chunk


def channel(pe, chunk, n_pe):
    """Output channel of lane ``pe`` in ``chunk`` (the inverse of :func:`owner`; it may be a
    padding lane, ``>=`` the layer's channels)."""
    return chunk * n_pe + pe


def chunks(channels, n_pe):
    """Chunks (groups of ``n_pe`` lanes) that hold ``channels`` output channels."""
    return -(-channels // n_pe)


def pe_channels(pe, channels, n_pe):
    """The output channels PE ``pe`` owns among ``channels``, in chunk order (a ``range``)."""
    return range(channel(pe, 0, n_pe), channels, n_pe)


def pe_slice(pe, n_pe):
    """The same channels as :func:`pe_channels`, as a slice of an array's channel axis."""
    return slice(channel(pe, 0, n_pe), None, n_pe)


# ---------------------------------------------------------------------- kernels

@dataclass(frozen=True)
class Kernel:
    """A ``k`` x ``k`` window moved by ``stride`` over a map zero-padded by ``pad`` on each side."""

    k: int = 1
    stride: int = 1
    pad: int = 0

    @property
    def taps(self):
        return self.k * self.k

    def out_size(self, n):
        """Output length along an axis of input length ``n``."""
        return (n + 2 * self.pad - self.k) // self.stride + 1

    def out_hw(self, hw):
        """``(H_out, W_out)`` of an input map ``(H, W)``."""
        return self.out_size(hw[0]), self.out_size(hw[1])

    def axis_landing(self, v, out_n):
        """``[(kk, o)]``: the kernel offsets ``kk`` (0..k-1, ascending) along one axis that map
        input coordinate ``v`` onto output coordinate ``o`` inside ``0..out_n-1``."""
        out = []
        for kk in range(self.k):
            nv = v + self.pad - kk
            if nv % self.stride == 0 and 0 <= nv // self.stride < out_n:
                out.append((kk, nv // self.stride))
        return out

    def landing(self, y, x, out_hw):
        """Taps of an event at ``(y, x)`` that land in the ``out_hw`` map, as ``(t, oy, ox)`` in
        ascending ``t = ky * k + kx``."""
        xs = self.axis_landing(x, out_hw[1])
        return [(ky * self.k + kx, oy, ox) for ky, oy in self.axis_landing(y, out_hw[0]) for kx, ox in xs]

    def windows(self, x, out_hw):
        """Yield ``(ky, kx, window)``: ``window[b, c, oy, ox] = x_pad[b, c, oy*stride + ky, ox*stride + kx]``
        for a (B, C, H, W) array ``x`` (the input each tap sees, per output position)."""
        ho, wo = out_hw
        s, p = self.stride, self.pad
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
        for ky in range(self.k):
            for kx in range(self.k):
                yield ky, kx, xp[:, :, ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s]

    def cover(self, hw, out_hw, taps=None):
        """(H, W) 0/1 array: the input positions with at least one landing tap in ``out_hw``
        (``taps``: only these taps ``t = ky * k + kx`` count; default all)."""
        cover = np.zeros(hw, np.int64)
        ho, wo = out_hw
        for ky in range(self.k):
            ys = np.arange(ho) * self.stride + ky - self.pad
            ys = ys[(ys >= 0) & (ys < hw[0])]
            for kx in range(self.k):
                if taps is not None and ky * self.k + kx not in taps:
                    continue
                xs = np.arange(wo) * self.stride + kx - self.pad
                xs = xs[(xs >= 0) & (xs < hw[1])]
                cover[np.ix_(ys, xs)] = 1
        return cover


#: How a compressed weight row (an input channel's ``k x k`` taps) is cut into segments, each
#: read as a burst of its own when one of its taps lands (``hw/plan.py``, "Weight storage"): the
#: whole row, its kernel rows, or its single taps.
SEGMENTS = ("row", "kernel-row", "tap")


def segment_taps(segments, k):
    """The taps of each segment of a ``k x k`` row cut by ``segments`` (:data:`SEGMENTS`), as
    ``range``s of ``t = ky * k + kx`` in order (a one-tap row is one segment whatever the cut)."""
    if segments not in SEGMENTS:
        raise ValueError(f"segments = {segments!r}; allowed: {', '.join(SEGMENTS)}")
    if segments == "row" or k == 1:
        return [range(k * k)]
    if segments == "kernel-row":
        return [range(ky * k, ky * k + k) for ky in range(k)]
    return [range(t, t + 1) for t in range(k * k)]


# ---------------------------------------------------------------------- per layer kind

def kernel(layer):
    """The :class:`Kernel` of a conv layer's main input; ``None`` for a dense layer."""
    if layer.kind != "conv":
        return None
    return Kernel(int(layer.weight.shape[-1]), layer.stride, layer.padding)


def shortcut_kernel(layer):
    """The 1x1 :class:`Kernel` of ``layer``'s residual shortcut; ``None`` without one."""
    return None if layer.shortcut is None else Kernel(1, layer.shortcut_stride, 0)


def map_hw(layer):
    """``(H_out, W_out)`` of the layer's neuron map (``Layer.map_shape``; a dense layer: ``(1, 1)``)."""
    return tuple(layer.map_shape[1:]) or (1, 1)


def pool(layer):
    """The pooling factor applied to the layer's spikes (1: none; dense layers never pool)."""
    return layer.pool if kernel(layer) is not None else 1
