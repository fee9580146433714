"""Spiking networks in PyTorch: the float SNN used for training and the integer-exact QAT network.

* :class:`SNN` -- LIF neurons with a surrogate gradient, direct (analog) input encoding, Linear or
  Conv2d synapses each followed by BatchNorm, optional max pooling of spikes, and a non-spiking
  output integrator (``z_t = o_1 + ... + o_t``). Time is folded into the batch for the synapses, so
  each layer costs one matmul/convolution for all timesteps.
  Residual blocks (``res``) and removable spatial "Units" (extra Conv-BN-LIF blocks used during
  training only, see :mod:`~spikeloom.model.pruning`) are stages too.
* :class:`IntSNN` -- the same network after BatchNorm folding (:meth:`SNN.folded_stages`), computed on
  integers exactly as ``model/golden.py`` does (rounding, each layer's neuron: fixed-point leak,
  saturation, firing rule and reset; max or sum pooling, residual shortcuts, an integrating or a
  spike-count readout), with straight-through estimators so it can be fine-tuned
  (quantization-aware training). Evaluated in float64 its outputs equal the golden model's bit for bit.
  :meth:`IntSNN.from_model` builds it from any :class:`~spikeloom.model.ir.QuantModel`.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import LayerNeuron, NeuronConfig, QuantConfig
from .errors import ConfigError
from .ir import POOL_OPS, Layer, QuantModel, count_readout, signed_range, threshold_cap

ARCHS = {
    # name: hidden stages; ("dense", n) | ("conv", channels[, kernel, stride, padding]) | ("pool", k)
    # | ("res", channels[, stride]): a residual block (see SNN)
    "mlp": (("dense", 128), ("dense", 128)),
    "vgg": (("conv", 16), ("conv", 32), ("pool", 2), ("conv", 32), ("pool", 2)),
    "resnet": (("conv", 16), ("res", 16), ("res", 32, 2), ("pool", 2)),
}
STAGE_KINDS = ("dense", "conv", "pool", "res")
#: How the float network's pool stages pool spikes: OR (``max``), window counts (``sum``) or window
#: rates (``avg``: sum pooling with ``1 / q^2`` folded into the readers' weights, ``model/SEMANTICS.md``).
TRAIN_POOLS = ("max", "sum", "avg")
#: How the network's output is read: an integrator of the last layer's currents, or the spike
#: counts of a spiking last layer (``model/SEMANTICS.md``, "Spike-count readout").
READOUTS = ("integrate", "count")


@dataclass
class Folded:
    """One synaptic stage after BatchNorm folding, in float64 real units (threshold 1.0).

    ``kind`` is ``"dense"`` (``weight`` (out, in)) or ``"conv"`` (``weight`` (C_out, C_in, k, k),
    ``stride``, ``padding``, ``pool`` of the output spikes with ``pool_op`` ``"max"`` (OR) or
    ``"sum"`` (window spike counts)). ``shortcut`` is the index of an
    earlier stage whose output spikes drive the 1x1 convolution ``shortcut_weight`` (C_out, C_src,
    1, 1) with ``shortcut_stride``; its current adds to this stage's (``bias`` holds both biases).
    """

    kind: str
    weight: np.ndarray
    bias: np.ndarray
    stride: int = 1
    padding: int = 0
    pool: int = 1
    shortcut: int | None = None
    shortcut_weight: np.ndarray | None = None
    shortcut_stride: int = 1
    pool_op: str = "max"


class _Spike(torch.autograd.Function):
    """Heaviside forward (``v >= 0``, or ``v > 0`` when ``strict``), triangular surrogate gradient
    ``max(0, 1 - |v|)`` backward."""

    @staticmethod
    def forward(ctx, v, strict=False):
        ctx.save_for_backward(v)
        return ((v > 0) if strict else (v >= 0)).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * torch.clamp(1.0 - v.abs(), min=0.0), None


def spike(u, theta, rule=">="):
    """Spikes where ``u >= theta`` (``rule = ">"``: ``u > theta``); the surrogate sees
    ``(u - theta) / theta`` (scale-free)."""
    return _Spike.apply((u - theta) / theta, rule == ">")


def neuron_step(u, flag, cur, theta, neuron, leak, clip=None):
    """One update of ``model/SEMANTICS.md``'s neuron on tensors, for the float and the integer network.

    ``neuron`` gives the firing rule ``fire`` and the ``reset``; ``leak(u)`` is the kept part of the
    membrane and ``clip`` the saturation (None: none, in float). ``flag`` is the reset state of
    ``subtract_next`` (the last spikes) and ``subtract_recheck`` (still above threshold after the
    reset), zeros at the start. Returns ``(u, flag, spikes)``; on integer-valued tensors in float64
    it is :func:`spikeloom.model.golden.lif_step` exactly.
    """
    rule, reset = neuron.fire, neuron.reset
    if reset == "subtract_next":
        v = leak(u) + cur - flag * theta
        v = v if clip is None else clip(v)
        s = spike(v, theta, rule)
        return v, s, s
    v = leak(u) + cur
    v = v if clip is None else clip(v)
    if reset == "zero":
        s = spike(v, theta, rule)
        return v * (1 - s), flag, s
    if reset == "subtract":
        s = spike(v, theta, rule)
        return v - s * theta, flag, s
    s = spike(v - flag * theta, theta, rule)
    v = v - s * theta
    return v, spike(v, theta, rule), s


def int_leak(neuron: LayerNeuron):
    """The integer leak ``u -> u - floor(u * a / 2^f)`` of a layer neuron on integer-valued
    tensors (straight-through floor); exact in float64 while ``|u * a| < 2^53``."""
    a, f = neuron.leak_mul, neuron.leak_frac
    if a == 0:
        return lambda u: u
    if a == 1:
        return lambda u: u - floor_ste(u / (1 << f))
    return lambda u: u - floor_ste(u * a / (1 << f))


def pool_spikes(s, q, op):
    """Spikes (N, C, H, W) pooled over ``q`` x ``q`` windows (floor mode): OR (``"max"``) or the
    window's spike count (``"sum"``), as :func:`spikeloom.model.golden.pool_spikes`."""
    if op == "sum":
        return F.avg_pool2d(s, q, divisor_override=1)
    return F.max_pool2d(s, q)


def round_ste(v):
    return v + (torch.round(v) - v).detach()


def floor_ste(v):
    return v + (torch.floor(v) - v).detach()


def _stage(spec):
    """Normalise a stage tuple to (kind, n, kernel, stride, padding)."""
    kind, n, *rest = spec
    if kind not in STAGE_KINDS + ("unit",):
        raise ConfigError(f"unknown stage kind {kind!r}; allowed: {', '.join(STAGE_KINDS)}")
    if kind == "conv":
        k, st, pad = (tuple(rest) + (3, 1, 1)[len(rest):])[:3]
    elif kind == "res":
        k, st, pad = 3, (rest[0] if rest else 1), 1
    elif kind == "unit":
        k, st, pad = 3, 1, 1
    else:
        k, st, pad = n, 1, 0
    return kind, n, k, st, pad


class SNN(nn.Module):
    """Float spiking network for training.

    Parameters
    ----------
    input_shape : tuple
        (C, H, W) of one input.
    n_classes : int
    arch : str or tuple
        A key of :data:`ARCHS` or a tuple of stages: ``("dense", n)``, ``("conv", C[, k, stride,
        padding])`` (default 3x3, stride 1, padding 1), ``("pool", k)`` (pooling of the previous
        conv stage's spikes, see ``pool``) and ``("res", C[, stride])``: a residual block ``LIF(BN(conv3x3(LIF(BN(
        conv3x3_stride(s))))) + BN(conv1x1_stride(s)))`` with a projection shortcut.
    neuron : NeuronConfig
    t_max : int
    units : int
        ``M`` removable spatial Units (Conv3x3-BN-LIF, channels kept) inserted after stage ``unit_at``
        (1-based) for training; :func:`spikeloom.model.pruning.remove_units` takes them out again.
    unit_at : int
        ``AS``, the stage after which the Units sit (its output must be a (C, H, W) map).
    learn_threshold : bool
        One trainable threshold per channel of every LIF layer (initial 1.0) instead of the fixed 1.0.
        Folding divides each layer's weights and bias by it, so the integer model is unchanged.
    pool : str
        How every pool stage pools, one of :data:`TRAIN_POOLS`: ``"max"`` (default), ``"sum"`` or
        ``"avg"``; the integer network sums for both of the latter (:meth:`folded_stages`).
    """

    def __init__(self, input_shape, n_classes, arch="mlp", neuron=NeuronConfig(), t_max=4, *, units=0,
                 unit_at=1, learn_threshold=False, pool="max"):
        super().__init__()
        if isinstance(arch, str) and arch not in ARCHS:
            raise ConfigError(f"arch = {arch!r}; allowed: {', '.join(ARCHS)}")
        stages = ARCHS[arch] if isinstance(arch, str) else tuple(arch)
        if isinstance(units, bool) or not isinstance(units, int) or units < 0:
            raise ConfigError(f"units = {units!r} must be an integer >= 0")
        if units and not (isinstance(unit_at, int) and 1 <= unit_at <= len(stages)):
            raise ConfigError(f"unit_at = {unit_at!r} is outside the allowed range [1, {len(stages)}]")
        if pool not in TRAIN_POOLS:
            raise ConfigError(f"pool = {pool!r}; allowed: {', '.join(map(repr, TRAIN_POOLS))}")
        if pool != "max" and not any(_stage(st)[0] == "pool" for st in stages):
            raise ConfigError(f"pool = {pool!r} needs an arch with pool stages (e.g. vgg, resnet), got {arch!r}")
        self.arch, self.neuron, self.t_max, self.pool = arch, neuron, t_max, pool
        self.input_shape = tuple(input_shape)
        self.n_classes, self.units, self.unit_at, self.learn_threshold = n_classes, units, unit_at, learn_threshold
        self.blocks = nn.ModuleList()
        self.thetas = nn.ParameterDict()
        self.kinds, self.specs, self.is_unit = [], [], []
        shape = self.input_shape
        full = []
        for j, st in enumerate(stages):
            full.append((st, False))
            if units and j + 1 == unit_at:
                full += [(("unit", None), True)] * units
        for spec, unit in full:
            kind, n, k, stv, pad = _stage(spec)
            if kind == "unit":
                if len(shape) != 3:
                    raise ConfigError(f"Units need a (C, H, W) map after stage {unit_at}, got shape {shape}")
                n = shape[0]
            i = len(self.blocks)
            if kind == "dense":
                feat = int(np.prod(shape))
                self.blocks.append(nn.ModuleDict({"syn": nn.Linear(feat, n, bias=False), "bn": nn.BatchNorm1d(n)}))
                shape = (n,)
            elif kind in ("conv", "unit", "res"):
                if len(shape) != 3:
                    raise ConfigError(f"a {kind} stage needs a (C, H, W) input, got {shape}")
                if kind == "res" and i == 0:
                    raise ConfigError("a residual block cannot be the first stage (its shortcut needs spikes)")
                mods = {"syn": nn.Conv2d(shape[0], n, k, stride=stv, padding=pad, bias=False),
                        "bn": nn.BatchNorm2d(n)}
                h, w = (shape[1] + 2 * pad - k) // stv + 1, (shape[2] + 2 * pad - k) // stv + 1
                if h < 1 or w < 1:
                    raise ConfigError(f"stage {spec!r} makes the {shape[1]}x{shape[2]} map empty")
                if kind == "res":
                    mods.update(syn2=nn.Conv2d(n, n, 3, padding=1, bias=False), bn2=nn.BatchNorm2d(n),
                                sc=nn.Conv2d(shape[0], n, 1, stride=stv, bias=False), bnsc=nn.BatchNorm2d(n))
                self.blocks.append(nn.ModuleDict(mods))
                shape = (n, h, w)
            elif kind == "pool":
                if i == 0 or self.kinds[-1] == "pool" or len(shape) != 3:
                    raise ConfigError("a pool stage must follow a conv or res stage")
                self.blocks.append(nn.ModuleDict({"pool": nn.MaxPool2d(n)}))
                shape = (shape[0], shape[1] // n, shape[2] // n)
            self.kinds.append(kind)
            self.specs.append((kind, n, k, stv, pad))
            self.is_unit.append(unit)
            if learn_threshold and kind != "pool":
                self.thetas[str(i)] = nn.Parameter(torch.ones(n))
                if kind == "res":
                    self.thetas[f"{i}b"] = nn.Parameter(torch.ones(n))
        self.head = nn.Linear(int(np.prod(shape)), n_classes)

    def enable_threshold_learning(self):
        """Give every LIF layer trainable per-channel thresholds, initialised to 1.0 (the network
        computes exactly the same until they are trained)."""
        if self.learn_threshold:
            return self
        self.learn_threshold = True
        ref = self.head.weight
        for i, (kind, spec) in enumerate(zip(self.kinds, self.specs)):
            if kind == "pool":
                continue
            self.thetas[str(i)] = nn.Parameter(torch.ones(spec[1], dtype=ref.dtype, device=ref.device))
            if kind == "res":
                self.thetas[f"{i}b"] = nn.Parameter(torch.ones(spec[1], dtype=ref.dtype, device=ref.device))
        return self

    def theta(self, key, ndim):
        """The trainable thresholds of LIF layer ``key`` shaped to broadcast over (T, B, n, ...)."""
        if not self.learn_threshold:
            return None
        th = self.thetas[key].clamp(min=0.05)
        return th.reshape(-1, *([1] * (ndim - 3)))

    def lif(self, cur, theta=None):
        """Run LIF neurons over currents (T, B, ...); returns spikes of the same shape. The decay
        is the neuron's (quantized) factor, the firing rule and reset are the neuron's."""
        lam, th = self.neuron.leak, (1.0 if theta is None else theta)
        u = torch.zeros_like(cur[0])
        flag = torch.zeros_like(u)
        out = []
        for t in range(cur.shape[0]):
            u, flag, s = neuron_step(u, flag, cur[t], th, self.neuron, lambda v: lam * v)
            out.append(s)
        return torch.stack(out)

    def forward(self, x, t_max=None):
        """Accumulated outputs z (T, B, K) for float inputs ``x`` (B, C, H, W) in [0, 1]."""
        T = t_max or self.t_max
        B = x.shape[0]
        h = None
        for i, (kind, blk) in enumerate(zip(self.kinds, self.blocks)):
            if kind == "pool":
                if self.pool == "max":
                    h = blk["pool"](h.flatten(0, 1)).unflatten(0, (T, B))
                else:
                    q = self.specs[i][1]
                    h = F.avg_pool2d(h.flatten(0, 1), q, divisor_override=1 if self.pool == "sum" else None)
                    h = h.unflatten(0, (T, B))
                continue
            if i == 0:
                inp = x.flatten(1) if kind == "dense" else x
                cur = blk["bn"](blk["syn"](inp)).unsqueeze(0).expand(T, *([-1] * (inp.dim())))
            else:
                inp = h.flatten(0, 1)
                inp = inp.flatten(1) if kind == "dense" else inp
                cur = blk["bn"](blk["syn"](inp)).unflatten(0, (T, B))
            h = self.lif(cur, self.theta(str(i), cur.dim()))
            if kind == "res":
                cur = blk["bn2"](blk["syn2"](h.flatten(0, 1))) + blk["bnsc"](blk["sc"](inp))
                h = self.lif(cur.unflatten(0, (T, B)), self.theta(f"{i}b", cur.dim() + 1))
        o = self.head(h.flatten(2))
        return torch.cumsum(o, dim=0)

    def folded_stages(self):
        """[:class:`Folded`] for every synaptic stage and the head, BatchNorm (and learned thresholds)
        folded in; what :class:`IntSNN` quantizes. Works for every architecture. Average pooling
        becomes sum pooling with ``1 / q^2`` folded into the weights that read the pooled map (the
        next stage's, a residual block's shortcut, or the head's)."""
        def fold(syn, bn, theta_key=None):
            a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double()
            w = syn.weight.detach().double() * a.reshape(-1, *([1] * (syn.weight.dim() - 1)))
            b = bn.bias.detach().double() - a * bn.running_mean.detach().double()
            return w, b

        def unthreshold(key, *arrays):
            if not self.learn_threshold:
                return arrays
            th = self.thetas[key].detach().double().clamp(min=0.05)
            return tuple(v / th.reshape(-1, *([1] * (v.dim() - 1))) for v in arrays)

        out = []
        div = 1  # q^2 after an average pool: the readers of its map divide their weights by it
        for i, (kind, blk, spec) in enumerate(zip(self.kinds, self.blocks, self.specs)):
            if kind == "pool":
                out[-1].pool = spec[1]
                if self.pool != "max":
                    out[-1].pool_op = "sum"
                    div = spec[1] ** 2 if self.pool == "avg" else 1
                continue
            w, b = unthreshold(str(i), *fold(blk["syn"], blk["bn"]))
            read_div, div = div, 1
            if read_div != 1:
                w = w / read_div
            if kind == "dense":
                out.append(Folded("dense", w.numpy(), b.numpy()))
                continue
            _, _, k, stv, pad = spec
            src = len(out) - 1
            out.append(Folded("conv", w.numpy(), b.numpy(), stride=stv, padding=pad))
            if kind == "res":
                w2, b2 = fold(blk["syn2"], blk["bn2"])
                wsc, bsc = fold(blk["sc"], blk["bnsc"])
                if read_div != 1:
                    wsc = wsc / read_div
                w2, wsc, b2 = unthreshold(f"{i}b", w2, wsc, b2 + bsc)
                out.append(Folded("conv", w2.numpy(), b2.numpy(), stride=1, padding=1, shortcut=src,
                                  shortcut_weight=wsc.numpy(), shortcut_stride=stv))
        head = self.head.weight.detach().double()
        out.append(Folded("dense", (head / div if div != 1 else head).numpy(), self.head.bias.detach().double().numpy()))
        return out


class IntSNN(nn.Module):
    """Integer-exact SNN (BatchNorm folded) with straight-through gradients: dense, conv, pool, residual.

    ``folded`` is a list of :class:`Folded` stages (or, for a fully-connected net, ``(W, b)`` pairs).
    The trainable parameters are the folded float weights and biases (and shortcut weights); every
    forward pass quantizes them (:meth:`qparams`) and runs the integer arithmetic of the golden
    model on integer-valued tensors. ``theta`` (1.0 in float units) becomes an integer threshold per
    neuron (per channel for conv stages).

    Parameters
    ----------
    neuron : NeuronConfig
        The membrane width, and the neuron of every spiking stage unless ``neurons`` is given.
    neurons : list of LayerNeuron, optional
        One neuron per spiking stage (default: ``neuron.layer_neuron()`` for each).
    readout : str
        ``"integrate"``: the last stage is the dense output integrator. ``"count"``: every stage
        spikes and the output counts the spikes of the last (dense, one neuron per class) stage
        (:func:`~spikeloom.model.ir.count_readout`).
    dtype : torch.dtype
        Of the trainable parameters (float32; :meth:`from_model` uses float64 so that every integer
        of up to 32 bits is exact).
    """

    def __init__(self, folded, input_shape, neuron=NeuronConfig(), quant=QuantConfig(), t_max=4, *,
                 neurons=None, readout="integrate", dtype=torch.float32):
        super().__init__()
        if readout not in READOUTS:
            raise ConfigError(f"readout = {readout!r}; allowed: {', '.join(map(repr, READOUTS))}")
        self.neuron, self.quant, self.t_max, self.readout = neuron, quant, t_max, readout
        self.input_shape = tuple(input_shape)
        stages = [f if isinstance(f, Folded) else Folded("dense", *f) for f in folded]
        self.W = nn.ParameterList([nn.Parameter(torch.tensor(f.weight, dtype=dtype)) for f in stages])
        self.b = nn.ParameterList([nn.Parameter(torch.tensor(f.bias, dtype=dtype)) for f in stages])
        self.Wsc = nn.ParameterDict({str(i): nn.Parameter(torch.tensor(f.shortcut_weight, dtype=dtype))
                                     for i, f in enumerate(stages) if f.shortcut is not None})
        self.stages = [Folded(f.kind, None, None, f.stride, f.padding, f.pool, f.shortcut, None, f.shortcut_stride,
                              f.pool_op) for f in stages]
        n_spiking = len(stages) - (readout == "integrate")
        if neurons is None:
            neurons = [neuron.layer_neuron()] * n_spiking
        neurons = list(neurons)
        if len(neurons) != n_spiking or not all(isinstance(n, LayerNeuron) for n in neurons):
            raise ConfigError(f"neurons must be {n_spiking} LayerNeurons (one per spiking stage), got {neurons!r}")
        self.neurons = neurons
        self.weight_bits = [quant.weight_bits] * len(stages)
        self.names = None  # layer names of the export (None: fc1, conv2, ...)
        self.frozen = False  # quantization steps and thresholds fixed (from_model) instead of derived
        self.in_shapes = []
        shape = self.input_shape
        for i, f in enumerate(stages):
            if f.pool_op not in POOL_OPS:
                raise ConfigError(f"stage {i}: pool_op = {f.pool_op!r}; allowed: {', '.join(map(repr, POOL_OPS))}")
            if f.kind == "dense" and f.shortcut is None and f.pool == 1 and f.pool_op == "max":
                self.in_shapes.append(())
                shape = (f.weight.shape[0],)
                continue
            if f.kind != "conv" or len(shape) != 3 or f.weight.ndim != 4 or f.weight.shape[1] != shape[0]:
                raise ConfigError(f"stage {i}: a {f.kind} stage with weight {np.shape(f.weight)} cannot follow "
                                  f"a map of shape {shape} (pool and shortcut are for conv stages)")
            if f.shortcut is not None and not 0 <= f.shortcut < i:
                raise ConfigError(f"stage {i}: shortcut = {f.shortcut!r} must name an earlier stage")
            self.in_shapes.append(shape)
            k = f.weight.shape[-1]
            h = (shape[1] + 2 * f.padding - k) // f.stride + 1
            w = (shape[2] + 2 * f.padding - k) // f.stride + 1
            shape = (f.weight.shape[0], h // f.pool, w // f.pool)
        if stages[-1].kind != "dense":
            raise ConfigError("the last stage (the output integrator, or the counted spiking layer) must be dense")

    @classmethod
    def from_model(cls, model: QuantModel):
        """The network that computes ``model``: its integers, neurons, pooling and readout.

        The float parameters are the model's integers times their quantization steps (derived
        from each layer's ``scale``) and the quantization steps and thresholds stay fixed, so
        :meth:`integer_params` gives back exactly the model's integers until the parameters are
        trained (fine-tuning an imported model)."""
        readout = model.readout
        layers = model.layers[:-1] if readout == "count" else list(model.layers)
        names = [ly.name for ly in layers]
        in_scale0 = 1.0 / ((1 << model.input_bits) - 1)
        folded, effs = [], []
        for i, ly in enumerate(layers):
            eff = np.broadcast_to(np.asarray(ly.scale, np.float64), (ly.channels,)).copy()
            if not (np.isfinite(eff).all() and (eff > 0).all()):
                raise ConfigError(f"layer {ly.name!r}: scale {ly.scale!r} must be positive to build an IntSNN")
            s = eff / (in_scale0 if i == 0 else 1.0)
            shape = (-1,) + (1,) * (ly.weight.ndim - 1)
            sc = None if ly.shortcut_weight is None else ly.shortcut_weight * s.reshape(-1, 1, 1, 1)
            folded.append(Folded(ly.kind, ly.weight * s.reshape(shape), ly.bias * eff, ly.stride, ly.padding,
                                 ly.pool, None if ly.shortcut is None else names.index(ly.shortcut), sc,
                                 ly.shortcut_stride, ly.pool_op))
            effs.append(eff)
        net = cls(folded, model.input_shape,
                  model.neuron, QuantConfig(max(ly.weight_bits for ly in layers), model.input_bits), model.t_max,
                  neurons=[ly.neuron for ly in layers if ly.role != "output"], readout=readout, dtype=torch.float64)
        net.weight_bits = [ly.weight_bits for ly in layers]
        net.names = names + ([model.layers[-1].name] if readout == "count" else [])
        net.frozen = True
        for i, (ly, eff) in enumerate(zip(layers, effs)):
            net.register_buffer(f"eff{i}", torch.tensor(eff, dtype=torch.float64))
            if ly.threshold is not None:
                net.register_buffer(f"theta{i}", torch.tensor(ly.threshold, dtype=torch.float64))
        return net

    def qparams(self):
        """[(Wq, bq, thq, eff_scale, Wscq)] integer-valued float tensors (thq None for the output,
        Wscq None without a shortcut)."""
        lo_m, hi_m = signed_range(self.neuron.membrane_bits)
        th_cap = threshold_cap(self.neuron.membrane_bits)
        s_x = 1.0 / ((1 << self.quant.input_bits) - 1)
        out, n = [], len(self.W)
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            qmax_w = (1 << (self.weight_bits[i] - 1)) - 1
            in_scale = s_x if i == 0 else 1.0
            last = i == n - 1 and self.readout == "integrate"
            sc = self.Wsc[str(i)] if str(i) in self.Wsc else None
            if self.frozen:
                eff = getattr(self, f"eff{i}")
                s = (eff / in_scale).to(W.dtype)
            else:
                per_channel = not (last or not self.quant.per_channel)
                wabs = W.detach().abs().reshape(W.shape[0], -1)
                if sc is not None:
                    wabs = torch.cat([wabs, sc.detach().abs().reshape(W.shape[0], -1)], dim=1)
                a = wabs.amax(dim=1) if per_channel else wabs.amax()
                s = torch.clamp(a / qmax_w, min=1e-12)
                if not last:
                    s = torch.maximum(s, torch.full_like(s, 1.0 / (in_scale * th_cap)))
                s = s.expand(W.shape[0]) if s.dim() == 0 else s
                eff = s * in_scale
            sv = s.reshape(-1, *([1] * (W.dim() - 1)))
            wq = torch.clamp(round_ste(W / sv), -qmax_w, qmax_w)
            scq = None if sc is None else torch.clamp(round_ste(sc / s.reshape(-1, 1, 1, 1)), -qmax_w, qmax_w)
            bq = torch.clamp(round_ste(b / eff), lo_m, hi_m)
            if last:
                thq = None
            elif self.frozen:
                thq = getattr(self, f"theta{i}").to(W.dtype)
            else:
                thq = torch.clamp(torch.round(1.0 / eff), 1, hi_m)
            out.append((wq, bq, thq, eff, scq))
        return out

    def _current(self, i, inp, wq, bq):
        st = self.stages[i]
        if st.kind == "dense":
            return inp @ wq.T + bq
        return F.conv2d(inp, wq, stride=st.stride, padding=st.padding) + bq[:, None, None]

    def _integrate(self, cur):
        """The output integrator ``z <- sat(z + I)`` over currents (T, B, K)."""
        lo_m, hi_m = signed_range(self.neuron.membrane_bits)
        z, zs = torch.zeros_like(cur[0]), []
        for t in range(cur.shape[0]):
            z = torch.clamp(z + cur[t], lo_m, hi_m)
            zs.append(z)
        return torch.stack(zs)

    def run(self, params, x_q):
        """Accumulated integer outputs z (T, B, K) from integer inputs x_q (B, F)."""
        lo_m, hi_m = signed_range(self.neuron.membrane_bits)
        x_q = x_q.to(params[0][0].dtype)
        T, B = self.t_max, x_q.shape[0]
        h, outs = None, []
        for i, (wq, bq, thq, _, scq) in enumerate(params):
            st = self.stages[i]
            if i == 0:
                inp = x_q if st.kind == "dense" else x_q.reshape(B, *self.in_shapes[0])
                cur = self._current(0, inp, wq, bq)
                cur = cur.unsqueeze(0).expand(T, *([-1] * cur.dim()))
            elif st.kind == "dense":
                cur = (h if h.dim() == 3 else h.flatten(2)) @ wq.T + bq
            else:
                cur = self._current(i, h.flatten(0, 1), wq, bq)
                if scq is not None:
                    cur = cur + F.conv2d(outs[st.shortcut].flatten(0, 1), scq, stride=st.shortcut_stride)
                cur = cur.unflatten(0, (T, B))
            if thq is None:
                return self._integrate(cur)
            th = thq if st.kind == "dense" else thq.reshape(-1, 1, 1)
            neu = self.neurons[i]
            leak = int_leak(neu)
            u, spikes = torch.zeros_like(cur[0]), []
            flag = torch.zeros_like(u)
            for t in range(T):
                u, flag, s = neuron_step(u, flag, cur[t], th, neu, leak, lambda v: torch.clamp(v, lo_m, hi_m))
                spikes.append(s)
            h = torch.stack(spikes)
            if st.kind == "conv" and st.pool > 1:
                h = pool_spikes(h.flatten(0, 1), st.pool, st.pool_op).unflatten(0, (T, B))
            outs.append(h)
        return self._integrate(h)  # the spike-count readout: an identity integrator of the last spikes

    def out_scale(self, params):
        """Real units per integer of z: the output layer's scale (a spike count: 1)."""
        return params[-1][3][0] if self.readout == "integrate" else 1.0

    def forward(self, x_q):
        """Logits-scaled accumulated outputs (T, B, K) for training: ``z_int * output scale``."""
        params = self.qparams()
        return self.run(params, x_q) * self.out_scale(params)

    def integer_params(self):
        """The quantized parameters as int64 numpy arrays (what gets exported)."""
        def np_int(v):
            return None if v is None else v.round().long().numpy()
        with torch.no_grad():
            return [(np_int(wq), np_int(bq), np_int(thq), eff.double().numpy(), np_int(scq))
                    for wq, bq, thq, eff, scq in self.qparams()]

    @torch.no_grad()
    def exact_z(self, x_q, batch=4096):
        """Integer z (T, B, K) as int64, computed in float64 from the exported integers."""
        def f64(v):
            return None if v is None else torch.tensor(v, dtype=torch.float64)
        params = [(f64(w), f64(b), f64(th), torch.tensor(e), f64(sc)) for w, b, th, e, sc in self.integer_params()]
        x_q = torch.as_tensor(np.asarray(x_q), dtype=torch.float64).reshape(len(x_q), -1)
        outs = [self.run(params, x_q[i:i + batch]) for i in range(0, len(x_q), batch)]
        return torch.cat(outs, dim=1).round().long().numpy()

    def layer_names(self):
        if self.names is not None:
            return list(self.names[:len(self.stages)])
        return [f"{'conv' if st.kind == 'conv' else 'fc'}{i + 1}" for i, st in enumerate(self.stages)]

    def export(self, name, dataset, exit_threshold, classes=(), extra=None) -> QuantModel:
        """The :class:`QuantModel` of the quantized network: each spiking layer with its neuron,
        conv layers with their ``pool_op``, and for ``readout="count"`` the counting integrator
        after the last spiking layer. The model's network-wide ``neuron`` is this network's when
        it is a version-1 neuron, else only its membrane width."""
        layers = []
        ip = self.integer_params()
        names = self.layer_names()
        n_out = len(ip) - 1 if self.readout == "integrate" else None
        for i, (w, b, th, eff, sc) in enumerate(ip):
            st = self.stages[i]
            role = "analog" if i == 0 else ("output" if i == n_out else "spiking")
            geo = {}
            if st.kind == "conv":
                geo = dict(kind="conv", in_shape=tuple(self.in_shapes[i]), stride=st.stride, padding=st.padding,
                           pool=st.pool, pool_op=st.pool_op)
                if st.shortcut is not None:
                    geo.update(shortcut=names[st.shortcut], shortcut_weight=sc, shortcut_stride=st.shortcut_stride)
            layers.append(Layer(name=names[i], role=role, weight=w, bias=b, threshold=th,
                                weight_bits=self.weight_bits[i],
                                scale=[float(eff[0])] if role == "output" else [float(v) for v in eff],
                                neuron=None if role == "output" else self.neurons[i], **geo))
        if self.readout == "count":
            layers.append(count_readout(layers[-1], None if self.names is None else self.names[-1]))
        neuron = self.neuron if self.neuron.is_v1 else NeuronConfig(membrane_bits=self.neuron.membrane_bits)
        return QuantModel(name=name, dataset=dataset, input_shape=self.input_shape,
                          input_bits=self.quant.input_bits, t_max=self.t_max, neuron=neuron,
                          exit_criterion="margin", exit_threshold=int(exit_threshold), layers=layers,
                          classes=tuple(classes), extra=dict(extra or {}))
