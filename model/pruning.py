"""Spatio-temporal pruning: weight masks, structured channel pruning, removable Units, fewer timesteps.

Spatial (weights): :func:`magnitude_prune` zeroes the smallest weights to an exact target sparsity
(per layer or globally), or, with ``balance=N``, to the same count in every processing element's
share of every input row (what a zero-skipping PE array turns into fewer cycles, see
:func:`pe_load`); :func:`channel_prune` whole output channels by the L1 norm of their
BatchNorm-folded weights. Both return *masks* (``{parameter name: bool tensor}``, ``True`` = kept);
:func:`apply_masks`, :func:`keep_masks` (an ``after_step`` hook for :mod:`~spikeloom.model.train`),
:func:`attach_masks` (an optimizer post-step hook) and :class:`KeepZeros` keep pruned weights at
exactly zero during fine-tuning, so they are exactly zero in the exported integer model too.

Spatial (Units): an :class:`~spikeloom.model.snn.SNN` built with ``units=M, unit_at=AS`` trains with M
extra Conv-BN-LIF blocks after stage AS; :func:`remove_units` returns the base network, which is then
fine-tuned (``train_float(..., model=base)``).

Temporal: :func:`spikeloom.model.train.reduce_timesteps` (a training schedule, so it lives with
training, which imports this module) retrains at T-1 from the T network, T = t_from .. t_to
(Chowdhury, Rathi, Roy, ECCV 2022), with trainable thresholds.
"""

import math

import numpy as np
import torch

from . import geometry
from .errors import ConfigError
from .snn import SNN

SCOPES = ("layer", "global")
#: The groups balanced pruning balances inside a conv row: the hardware's cuts of a compressed row.
GROUPS = geometry.SEGMENTS


def prunable(model):
    """{name: parameter} of the synaptic weights: every parameter with 2 or more dimensions
    (Linear / Conv2d weights of :class:`SNN`, head and shortcuts included; ``W.i`` / ``Wsc.i`` of
    :class:`IntSNN`). BatchNorm parameters, biases and thresholds are 1-d and never pruned here."""
    return {n: p for n, p in model.named_parameters() if p.dim() >= 2}


def _check_fraction(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
        raise ConfigError(f"{name} = {v!r} must be a number in [0, 1]")


def _smallest(values, k):
    """Bool mask (True = kept) dropping exactly the ``k`` smallest ``values`` (stable: on ties the
    lower flat index goes first)."""
    keep = torch.ones(values.numel(), dtype=torch.bool)
    if k:
        order = torch.sort(values.flatten(), stable=True).indices
        keep[order[:k]] = False
    return keep.reshape(values.shape)


@torch.no_grad()
def apply_masks(model, masks):
    """Multiply each masked parameter by its mask in place (pruned entries become exactly 0.0)."""
    params = dict(model.named_parameters())
    for name, m in masks.items():
        if name not in params:
            raise KeyError(f"mask for {name!r}, which is not a parameter of {type(model).__name__}")
        params[name].mul_(m.to(params[name].dtype))
    return model


def _check_balance(n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"balance = {n!r} must be a positive integer (the number of processing elements N)")


def _pe_groups(shape, n):
    """For a weight of ``shape`` (out, in, ...) spread over ``n`` PEs (the hardware's ownership rule,
    :func:`spikeloom.model.geometry.owner`: PE p owns outputs o with o % n == p): the PEs that own
    at least one output, and per PE the number of weights it holds in one input row (dense:
    column ``W[:, i]``; conv: input channel ``W[:, c]``, every tap)."""
    out, taps = shape[0], int(np.prod(shape[2:], dtype=np.int64))
    pes = [p for p in range(n) if geometry.pe_channels(p, out, n)]
    return pes, [len(geometry.pe_channels(p, out, n)) * taps for p in pes]


def balanced_keep(shape, keep, n):
    """Weights per (input row, PE) group kept by balanced pruning of a ``shape`` weight over ``n``
    PEs at keep fraction ``keep``: ``floor(keep * row size / P)`` (``P`` = PEs owning an output),
    at most the smallest group's size. Rounding down makes the sparsity at least the requested."""
    pes, sizes = _pe_groups(shape, n)
    row = sum(sizes)
    return min(math.floor(keep * row / len(pes) + 1e-9), min(sizes))


def _balanced_mask(w, keep, n, fill=False, groups="row"):
    """Mask (True = kept) keeping the ``balanced_keep`` largest magnitudes of every (row, PE) group;
    on ties the lower flat index inside the group stays. ``fill``: see :func:`magnitude_prune`.
    ``groups``: a conv weight's rows are cut into segments first (:func:`_segment_rows`)."""
    if groups != "row" and w.dim() == 4 and w.shape[-1] > 1:
        return _balanced_mask(_segment_rows(w, groups), keep, n, fill).reshape(w.shape)
    a = w.abs().transpose(0, 1)  # (rows, out, *taps)
    rows, out = a.shape[0], a.shape[1]
    a = a.reshape(rows, out, -1)
    pes, sizes = _pe_groups(tuple(w.shape), n)
    k = balanced_keep(tuple(w.shape), keep, n)
    order = [torch.sort(a[:, geometry.pe_slice(p, n), :].reshape(rows, -1), dim=1, descending=True, stable=True)
             for p in pes]
    counts = torch.full((rows,), k, dtype=torch.long)
    if fill and k < min(sizes):
        extra = (math.floor(keep * w.numel() + 1e-9) - k * len(pes) * rows) // len(pes)
        if extra > 0:
            gain = sum(o.values[:, k] for o in order)  # what one more weight per group adds to a row
            counts[torch.sort(gain, descending=True, stable=True).indices[:extra]] = k + 1
    mask = torch.zeros_like(a, dtype=torch.bool)
    for p, o in zip(pes, order):
        sub = torch.zeros_like(o.indices, dtype=torch.bool)
        sub.scatter_(1, o.indices, torch.arange(o.indices.shape[1])[None, :] < counts[:, None])
        mask[:, geometry.pe_slice(p, n), :] = sub.reshape(rows, -1, a.shape[2])
    return mask.reshape(w.transpose(0, 1).shape).transpose(0, 1).contiguous()


def _segment_rows(w, groups):
    """A conv weight ``(out, in, k, k)`` with every input row cut into its segments
    (:data:`spikeloom.model.geometry.SEGMENTS`: kernel rows, or taps), as ``(out, in * S, k * k / S)``:
    each segment a row of its own (the hardware's compressed rows cut so, ``hw/plan.py``)."""
    k = w.shape[-1]
    per = k if groups == "kernel-row" else 1
    return w.reshape(w.shape[0], -1, per)


@torch.no_grad()
def magnitude_prune(model, sparsity, scope="layer", names=None, balance=None, fill=False, groups="row"):
    """Zero the smallest-magnitude synaptic weights; return the masks (already applied).

    Parameters
    ----------
    model : SNN or IntSNN (any module; see :func:`prunable`)
    sparsity : float in [0, 1]
        Fraction of weights set to zero: exactly ``round(sparsity * n)`` of the ``n`` weights of each
        parameter (``scope="layer"``) or of all of them together (``scope="global"``). Weights that
        are already zero count (they are the smallest).
    names : iterable of str, optional
        Restrict to these parameters (default: all of :func:`prunable`).
    balance : int, optional
        ``N``, the processing elements of the accelerator. PE ``p`` owns the outputs ``o`` with
        ``o % N == p`` and, for every input event, walks its own nonzero weights of that input's row
        (dense: input ``i``, the column ``W[:, i]``; conv: input channel ``c``, ``W[:, c, :, :]``),
        so an event costs the *largest* of the PEs' counts. Balanced pruning keeps the same number
        ``k`` of largest-magnitude weights in every (row, PE) group, so the largest equals the
        mean: ``k = floor((1 - sparsity) * row size / P)`` with ``P = min(N, out)`` PEs owning an
        output, capped at the smallest group (:func:`balanced_keep`). Rounding down makes every
        parameter's sparsity *at least* ``sparsity`` (e.g. 81.25% for 80% of a 128-output layer
        over 8 PEs: 3 of 16 kept). Per layer only (``scope="layer"``). A group that already holds
        more than ``size - k`` zeros keeps fewer than ``k`` nonzeros (its load is below the max).
        A layer with too few outputs per PE keeps nothing (a 10-class head over 8 PEs at 80%:
        ``floor(0.2 * 10 / 8) = 0``) unless ``fill`` is set.
    fill : bool
        With ``balance``: spend what rounding ``k`` down leaves of the budget
        (``floor((1 - sparsity) * n)`` weights) on whole rows: the rows whose next weights (the
        ``k+1``-th largest of each group, summed over the row's groups) are largest keep ``k + 1``
        in *every* group, as many rows as the budget pays for (``P`` weights each). Every row stays
        balanced (an event costs its row's count on every PE), the sparsity is still at least
        ``sparsity`` (and within ``P`` weights of it), and a layer with fewer outputs per PE than
        ``1 / (1 - sparsity)`` keeps one weight per PE in its best rows and empties the others.
    groups : str
        With ``balance``: the groups balanced inside a conv weight's row (:data:`GROUPS`): the
        whole row (``"row"``, default), each kernel row (``"kernel-row"``: the ``k`` taps of one
        ``ky``) or each tap (``"tap"``), every one a row of its own above. The hardware cuts a
        compressed row the same way (``hw/plan.py``, "Weight storage") and reads only the
        segments with a landing tap, so with ``"tap"`` an event costs exactly its landing
        synaptic events / N cycles, at the map's edges too. Dense weights have one tap: a row.
    """
    if groups not in GROUPS:
        raise ConfigError(f"groups = {groups!r}; allowed: {', '.join(GROUPS)}")
    _check_fraction("sparsity", sparsity)
    if scope not in SCOPES:
        raise ConfigError(f"scope = {scope!r}; allowed: {', '.join(SCOPES)}")
    if fill and balance is None:
        raise ConfigError("fill = True needs balance = N (it fills balanced rows)")
    if balance is not None:
        _check_balance(balance)
        if scope != "layer":
            raise ConfigError(f"balance = {balance!r} prunes every layer's (row, PE) groups on their own; "
                              f"it needs scope = 'layer', got {scope!r}")
    params = prunable(model)
    if names is not None:
        missing = sorted(set(names) - set(params))
        if missing:
            raise ConfigError(f"not prunable weights of this model: {missing}; prunable: {sorted(params)}")
        params = {n: params[n] for n in names}
    if balance is not None:
        masks = {n: _balanced_mask(p.detach(), 1.0 - sparsity, balance, fill, groups) for n, p in params.items()}
    elif scope == "layer":
        masks = {n: _smallest(p.abs(), round(sparsity * p.numel())) for n, p in params.items()}
    else:
        flat = torch.cat([p.abs().flatten() for p in params.values()])
        keep = _smallest(flat, round(sparsity * flat.numel()))
        masks, at = {}, 0
        for n, p in params.items():
            masks[n] = keep[at:at + p.numel()].reshape(p.shape)
            at += p.numel()
    apply_masks(model, masks)
    return masks


def pe_load(weight, n):
    """Nonzero weights per (input row, PE) of one weight array (numpy or torch; (out, in) or
    (out, in, k, k)) spread over ``n`` PEs as in :func:`magnitude_prune`'s ``balance``.

    Returns ``(loads, imbalance)``: ``loads`` (rows, P) int array, and ``sum over rows of the max
    over PEs / sum over rows of the mean over the P PEs owning an output`` (1.0 = balanced, the
    event-walk cycles equal the synaptic events / P; ``nan`` for an all-zero weight)."""
    _check_balance(n)
    w = weight.detach().cpu().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight)
    nz = (w != 0).swapaxes(0, 1)
    nz = nz.reshape(nz.shape[0], nz.shape[1], -1)
    pes, _ = _pe_groups(w.shape, n)
    loads = np.stack([nz[:, geometry.pe_slice(p, n), :].sum(axis=(1, 2)) for p in pes], axis=1)
    mean = loads.sum() / len(pes)
    return loads, (float(loads.max(axis=1).sum() / mean) if mean else float("nan"))


def _bn_scale(bn):
    return (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().abs()


def _row_l1(w):
    return w.detach().abs().reshape(w.shape[0], -1).sum(dim=1)


@torch.no_grad()
def channel_prune(model: SNN, ratio):
    """Structured pruning: in every LIF layer of ``model`` (not the head), remove the
    ``round(ratio * C)`` output channels (at most C - 1) with the smallest L1 norm of their
    BatchNorm-folded input weights (``|a_j| * sum |W_j|``; for a residual block's second layer the
    shortcut's folded weights add in). A removed channel has its weight rows and its BatchNorm
    ``gamma`` and ``beta`` zeroed: it gets no current and never spikes. Returns the masks (applied).
    """
    _check_fraction("ratio", ratio)
    if not isinstance(model, SNN):
        raise TypeError(f"channel_prune needs a float SNN, got {type(model).__name__}")
    groups = []  # (score (C,), [(param name, row-shaped?)])
    for i, (kind, blk) in enumerate(zip(model.kinds, model.blocks)):
        if kind == "pool":
            continue
        pre = f"blocks.{i}."
        groups.append((_bn_scale(blk["bn"]) * _row_l1(blk["syn"].weight),
                       [pre + "syn.weight", pre + "bn.weight", pre + "bn.bias"]))
        if kind == "res":
            score = _bn_scale(blk["bn2"]) * _row_l1(blk["syn2"].weight) + _bn_scale(blk["bnsc"]) * _row_l1(blk["sc"].weight)
            groups.append((score, [pre + n for n in ("syn2.weight", "sc.weight", "bn2.weight", "bn2.bias",
                                                     "bnsc.weight", "bnsc.bias")]))
    params = dict(model.named_parameters())
    masks = {}
    for score, names in groups:
        c = score.numel()
        keep = _smallest(score, min(round(ratio * c), c - 1))
        for n in names:
            shape = params[n].shape
            masks[n] = keep.reshape(-1, *([1] * (len(shape) - 1))).expand(shape).clone()
    apply_masks(model, masks)
    return masks


def keep_masks(masks):
    """An ``after_step(model)`` hook for ``train_float`` / ``train_qat`` that re-applies ``masks``."""
    return lambda model: apply_masks(model, masks)


def attach_masks(optimizer, model, masks):
    """Re-apply ``masks`` after every ``optimizer.step()`` (returns the hook handle to remove it)."""
    apply_masks(model, masks)
    return optimizer.register_step_post_hook(lambda *_: apply_masks(model, masks))


class GradualPrune:
    """``after_step`` hook that prunes step by step (Zhu & Gupta 2017, "To prune, or not to prune"):
    the sparsity rises as ``final * (1 - (1 - k / ramp)^3)`` over the first ``ramp`` optimizer steps
    (fast while the network has much to spare, slowly near the end), re-pruning every ``every`` steps
    with ``prune_fn(model, fraction)`` (which prunes ``fraction`` of the way to the final masks, and
    returns the masks it applied); between re-prunings, and after the ramp, the last masks are kept,
    so a pruned weight stays zero. ``masks``: the final masks once the ramp is over.

    The training should keep no state from the ramp (``train_float(select_from=...)``): those are
    denser than the result."""

    def __init__(self, prune_fn, ramp, every):
        if not (isinstance(ramp, int) and ramp >= 1 and isinstance(every, int) and every >= 1):
            raise ConfigError(f"GradualPrune needs whole ramp >= 1 and every >= 1 steps, got {ramp!r}, {every!r}")
        self.prune_fn, self.ramp, self.every = prune_fn, ramp, every
        self.step, self.masks = 0, None

    def fraction(self, k):
        """How far along the way to the final sparsity step ``k`` is, in [0, 1]."""
        return 1.0 - (1.0 - min(k, self.ramp) / self.ramp) ** 3

    def __call__(self, model):
        k, self.step = self.step, self.step + 1
        if self.masks is None or (k <= self.ramp and k % self.every == 0) or k == self.ramp:
            self.masks = self.prune_fn(model, self.fraction(k))
        else:
            apply_masks(model, self.masks)


class KeepZeros:
    """``after_step`` hook that keeps every synaptic weight that is zero at the first call at zero.

    For QAT after pruning the float net: ``train_qat(..., after_step=KeepZeros())`` (the training
    loop calls the hook once before the first step, when the masks are recorded).
    """

    def __init__(self):
        self.masks = None

    def __call__(self, model):
        if self.masks is None:
            self.masks = {n: p.detach() != 0 for n, p in prunable(model).items()}
        apply_masks(model, self.masks)


def sparsity(model, names=None):
    """Fraction of exactly-zero synaptic weights, ``{name: fraction}`` plus ``"total"``."""
    params = prunable(model)
    if names is not None:
        params = {n: params[n] for n in names}
    out = {n: float((p == 0).sum()) / p.numel() for n, p in params.items()}
    out["total"] = float(sum((p == 0).sum() for p in params.values())) / sum(p.numel() for p in params.values())
    return out


@torch.no_grad()
def remove_units(model: SNN) -> SNN:
    """The base network of ``model`` without its Units, sharing no tensors with it, with every other
    block's (and the head's) trained parameters and BatchNorm statistics copied."""
    if not isinstance(model, SNN):
        raise TypeError(f"remove_units needs a float SNN, got {type(model).__name__}")
    base = SNN(model.input_shape, model.n_classes, model.arch, model.neuron, model.t_max,
               learn_threshold=model.learn_threshold)
    kept = [i for i, u in enumerate(model.is_unit) if not u]
    state = model.state_dict()
    new = {}
    for key, v in base.state_dict().items():
        parts = key.split(".")
        if parts[0] == "blocks":
            parts[1] = str(kept[int(parts[1])])
        elif parts[0] == "thetas":
            j, suffix = parts[1].rstrip("b"), parts[1][len(parts[1].rstrip("b")):]
            parts[1] = str(kept[int(j)]) + suffix
        new[key] = state[".".join(parts)].clone()
    base.load_state_dict(new)
    return base


__all__ = ["prunable", "apply_masks", "magnitude_prune", "balanced_keep", "pe_load", "channel_prune", "keep_masks", "attach_masks",
           "GradualPrune", "KeepZeros", "sparsity", "remove_units"]
