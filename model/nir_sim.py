"""A float64 simulation of a NIR chain, written from NIR's equations (Euler steps of ``dt``).

This is the real-valued network a NIR graph describes, independent of how
:mod:`~spikeloom.model.nir_import` maps it to integers: the tests hold the golden model to it
(exact imports must match it on every step), and the importer's calibration reads the membrane
ranges and the float accuracy from it. Numpy and ``nir`` only.

Per step, every node reads the previous node's output of the same step (the input is held
constant over the steps):

* ``Affine`` / ``Linear`` / ``Conv2d`` / ``Scale`` / ``Flatten`` / ``SumPool2d`` / ``AvgPool2d``:
  their linear maps (pooling in floor mode);
* ``LIF``: ``v <- v + dt/tau (v_leak - v + r I)``; ``IF``: ``v <- v + dt r I``; then a spike where
  ``v > v_threshold`` and the reset (``zero``: ``v <- v_reset``; the subtractions as
  ``model/SEMANTICS.md`` defines them, which NIR itself cannot express);
* ``I``: ``z <- z + dt r I``; ``LI``: ``z <- z + dt/tau (v_leak - z + r I)``: the readout, and so
  is an ``LIF`` whose thresholds are all ``+inf`` (it never fires).
"""

from dataclasses import dataclass

import numpy as np

from .errors import ModelFileError


@dataclass
class SimResult:
    """``spikes``: {node: (T, B, n) bool} of every IF/LIF node in chain order; ``out``: (T, B, K),
    what reaches the Output node at each step (the readout's state, or spikes); ``peaks``: {node:
    (C,) largest ``|v|`` per channel (conv: over the map) after integration and before the reset,
    over every step and input}; ``readout``: ``"integrate"`` (an I/LI readout) or ``"count"``;
    ``state``: {node: the membrane after the last step} of every neuron node."""

    spikes: dict
    out: np.ndarray
    peaks: dict
    readout: str
    state: dict

    def scores(self):
        """(T, B, K) class scores after each step: the readout's state, or the spike counts so far."""
        out = self.out.reshape(self.out.shape[0], self.out.shape[1], -1)
        return out if self.readout == "integrate" else out.cumsum(axis=0)

    def pred(self):
        """(B,) the class decided after the last step (the first of equal scores)."""
        return np.argmax(self.scores()[-1], axis=1)


def conv2d(x, w, stride, pad):
    """Float cross-correlation (B, C, H, W) x (O, C, k, k) -> (B, O, H', W')."""
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (x.shape[2] + 2 * pad - k) // stride + 1, (x.shape[3] + 2 * pad - k) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for ky in range(k):
        for kx in range(k):
            win = xp[:, :, ky:ky + stride * (oh - 1) + 1:stride, kx:kx + stride * (ow - 1) + 1:stride]
            out += np.tensordot(win, w[:, :, ky, kx], axes=([1], [1])).transpose(0, 3, 1, 2)
    return out


def _per(p, v):
    """A neuron parameter broadcast against the state ``v`` (B, ...): one value, one per neuron,
    or one per channel."""
    p = np.asarray(p, np.float64)
    if p.size == 1:
        return p.reshape(())
    if p.size == int(np.prod(v.shape[1:])):
        return p.reshape(v.shape[1:])
    return p.reshape((-1,) + (1,) * (v.ndim - 2))


def never_fires(node):
    """An LIF whose thresholds are all ``+inf``: a readout integrator (its membrane is the score), as
    :mod:`~spikeloom.model.nir_import` and ``spikeloom export-nir`` read and write it."""
    import nir

    return isinstance(node, nir.LIF) and bool(np.all(np.isposinf(np.asarray(node.v_threshold, np.float64))))


def _first(v):
    return int(np.atleast_1d(np.asarray(v)).ravel()[0])


def _padding(node, k):
    if isinstance(node.padding, str):
        return 0 if node.padding == "valid" else k // 2
    return _first(node.padding)


def simulate(order, x, dt, steps, reset="zero"):
    """Run the chain ``order`` ([(name, node)] from :func:`~spikeloom.model.nir_import.chain`) on
    the real input ``x`` (B, *input_shape) for ``steps`` steps; returns a :class:`SimResult`.
    ``reset``: one reset for every IF/LIF node, or {node name: reset} (``"zero"`` where absent)."""
    import nir

    state, flag, spikes, peaks, out = {}, {}, {}, {}, []
    readout = "count"
    for _ in range(steps):
        h = np.asarray(x, np.float64)
        for name, node in order:
            if isinstance(node, (nir.Input, nir.Output)):
                continue
            if isinstance(node, nir.Affine):
                h = h @ np.asarray(node.weight, np.float64).T + np.asarray(node.bias, np.float64)
            elif isinstance(node, nir.Linear):
                h = h @ np.asarray(node.weight, np.float64).T
            elif isinstance(node, nir.Conv2d):
                w = np.asarray(node.weight, np.float64)
                h = conv2d(h, w, _first(node.stride), _padding(node, w.shape[-1]))
                if node.bias is not None:
                    h = h + np.asarray(node.bias, np.float64).reshape(-1, 1, 1)
            elif isinstance(node, nir.Scale):
                h = h * _per(node.scale, h)
            elif isinstance(node, nir.Flatten):
                h = h.reshape(len(h), -1)
            elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
                q = _first(node.kernel_size)
                b, c, hh, ww = h.shape
                h = h[:, :, :hh // q * q, :ww // q * q].reshape(b, c, hh // q, q, ww // q, q).sum(axis=(3, 5))
                if isinstance(node, nir.AvgPool2d):
                    h = h / (q * q)
            elif isinstance(node, (nir.IF, nir.LIF, nir.I, nir.LI)):
                v = state.get(name, np.zeros_like(h))
                if isinstance(node, (nir.LIF, nir.LI)):
                    v = v + dt / _per(node.tau, v) * (_per(node.v_leak, v) - v + _per(node.r, v) * h)
                else:
                    v = v + dt * _per(node.r, v) * h
                a = np.abs(v).reshape(v.shape[0], v.shape[1], -1).max(axis=(0, 2)) if v.ndim > 2 else \
                    np.abs(v).max(axis=0)
                peaks[name] = np.maximum(peaks.get(name, 0.0), a)
                if isinstance(node, (nir.I, nir.LI)) or never_fires(node):
                    state[name], h, readout = v, v, "integrate"
                    continue
                th = _per(node.v_threshold, v)
                pending = flag.get(name, np.zeros(v.shape, bool))
                rs = reset.get(name, "zero") if isinstance(reset, dict) else reset
                if rs == "subtract_next":
                    v = v - th * pending
                    s = v > th
                    flag[name] = s
                elif rs == "zero":
                    s = v > th
                    v = np.where(s, _per(node.v_reset, v), v)
                else:  # subtract, subtract_recheck (model/SEMANTICS.md)
                    s = (v - th * pending) > th if rs == "subtract_recheck" else v > th
                    v = np.where(s, v - th, v)
                    if rs == "subtract_recheck":
                        flag[name] = v > th
                state[name], h = v, s.astype(np.float64)
                spikes.setdefault(name, []).append(s.reshape(len(s), -1))
            else:
                raise ModelFileError(f"NIR node {name!r} ({type(node).__name__}): not simulated")
        out.append(h)
    return SimResult({k: np.stack(v) for k, v in spikes.items()}, np.stack(out), peaks, readout, state)
