"""Spiking networks in PyTorch: the float SNN used for training and the integer-exact QAT network.

* :class:`SNN` -- LIF neurons with a surrogate gradient, direct (analog) input encoding, Linear or
  Conv2d synapses each followed by BatchNorm, optional max pooling of spikes, and a non-spiking
  output integrator (``z_t = o_1 + ... + o_t``). Time is folded into the batch for the synapses, so
  each layer costs one matmul/convolution for all timesteps.
* :class:`IntSNN` -- the same fully-connected network after BatchNorm folding, computed on integers
  exactly as ``model/golden.py`` does (rounding, floor-shift leak, saturation, reset), with
  straight-through estimators so it can be fine-tuned (quantization-aware training). Evaluated in
  float64 its outputs equal the golden model's bit for bit.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import NeuronConfig, QuantConfig
from .errors import ConfigError
from .modelfile import Layer, QuantModel, signed_range

ARCHS = {
    # name: hidden stages; ("dense", n) | ("conv", channels) | ("pool", k)
    "mlp": (("dense", 128), ("dense", 128)),
    "vgg": (("conv", 16), ("conv", 32), ("pool", 2), ("conv", 32), ("pool", 2)),
}


class _Spike(torch.autograd.Function):
    """Heaviside forward, triangular surrogate gradient ``max(0, 1 - |v|)`` backward."""

    @staticmethod
    def forward(ctx, v):
        ctx.save_for_backward(v)
        return (v >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * torch.clamp(1.0 - v.abs(), min=0.0)


def spike(u, theta):
    """Spikes where ``u >= theta``; the surrogate sees ``(u - theta) / theta`` (scale-free)."""
    return _Spike.apply((u - theta) / theta)


def round_ste(v):
    return v + (torch.round(v) - v).detach()


def floor_ste(v):
    return v + (torch.floor(v) - v).detach()


class SNN(nn.Module):
    """Float spiking network for training.

    Parameters
    ----------
    input_shape : tuple
        (C, H, W) of one input.
    n_classes : int
    arch : str or tuple
        A key of :data:`ARCHS` or a tuple of stages.
    neuron : NeuronConfig
    t_max : int
    """

    def __init__(self, input_shape, n_classes, arch="mlp", neuron=NeuronConfig(), t_max=4):
        super().__init__()
        if isinstance(arch, str) and arch not in ARCHS:
            raise ConfigError(f"arch = {arch!r}; allowed: {', '.join(ARCHS)}")
        stages = ARCHS[arch] if isinstance(arch, str) else tuple(arch)
        self.arch, self.neuron, self.t_max = arch, neuron, t_max
        self.input_shape = tuple(input_shape)
        self.blocks = nn.ModuleList()
        self.kinds = []
        shape = self.input_shape
        for kind, n in stages:
            if kind == "dense":
                feat = int(np.prod(shape))
                self.blocks.append(nn.ModuleDict({"syn": nn.Linear(feat, n, bias=False), "bn": nn.BatchNorm1d(n)}))
                shape = (n,)
            elif kind == "conv":
                if len(shape) != 3:
                    raise ConfigError(f"a conv stage needs a (C, H, W) input, got {shape}")
                self.blocks.append(nn.ModuleDict({"syn": nn.Conv2d(shape[0], n, 3, padding=1, bias=False),
                                                  "bn": nn.BatchNorm2d(n)}))
                shape = (n, shape[1], shape[2])
            elif kind == "pool":
                self.blocks.append(nn.ModuleDict({"pool": nn.MaxPool2d(n)}))
                shape = (shape[0], shape[1] // n, shape[2] // n)
            else:
                raise ConfigError(f"unknown stage kind {kind!r}; allowed: dense, conv, pool")
            self.kinds.append(kind)
        self.head = nn.Linear(int(np.prod(shape)), n_classes)

    def lif(self, cur):
        """Run LIF neurons over currents (T, B, ...); returns spikes of the same shape."""
        lam, th = self.neuron.leak, 1.0
        u = torch.zeros_like(cur[0])
        out = []
        for t in range(cur.shape[0]):
            u = lam * u + cur[t]
            s = spike(u, th)
            u = u * (1 - s) if self.neuron.reset == "zero" else u - s * th
            out.append(s)
        return torch.stack(out)

    def forward(self, x, t_max=None):
        """Accumulated outputs z (T, B, K) for float inputs ``x`` (B, C, H, W) in [0, 1]."""
        T = t_max or self.t_max
        B = x.shape[0]
        h = None
        for i, (kind, blk) in enumerate(zip(self.kinds, self.blocks)):
            if kind == "pool":
                h = blk["pool"](h.flatten(0, 1)).unflatten(0, (T, B))
                continue
            if i == 0:
                inp = x.flatten(1) if kind == "dense" else x
                cur = blk["bn"](blk["syn"](inp)).unsqueeze(0).expand(T, *([-1] * (inp.dim())))
            else:
                inp = h.flatten(0, 1)
                inp = inp.flatten(1) if kind == "dense" else inp
                cur = blk["bn"](blk["syn"](inp)).unflatten(0, (T, B))
            h = self.lif(cur)
        o = self.head(h.flatten(2))
        return torch.cumsum(o, dim=0)

    def folded(self):
        """[(W, b)] float64 numpy arrays with BatchNorm folded in (dense networks only)."""
        if any(k != "dense" for k in self.kinds):
            raise ConfigError(f"the integer pipeline supports fully-connected networks (arch 'mlp'); "
                              f"arch {self.arch!r} has {sorted(set(self.kinds) - {'dense'})} stages")
        out = []
        for blk in self.blocks:
            bn = blk["bn"]
            a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double()
            w = blk["syn"].weight.detach().double() * a[:, None]
            b = bn.bias.detach().double() - a * bn.running_mean.detach().double()
            out.append((w.numpy(), b.numpy()))
        out.append((self.head.weight.detach().double().numpy(), self.head.bias.detach().double().numpy()))
        return out


class IntSNN(nn.Module):
    """Integer-exact fully-connected SNN (BatchNorm folded) with straight-through gradients.

    The trainable parameters are the folded float weights and biases; every forward pass quantizes
    them (:meth:`qparams`) and runs the integer arithmetic of the golden model on integer-valued
    tensors. ``theta`` (1.0 in float units) becomes an integer threshold per neuron.
    """

    def __init__(self, folded, input_shape, neuron=NeuronConfig(), quant=QuantConfig(), t_max=4):
        super().__init__()
        self.neuron, self.quant, self.t_max = neuron, quant, t_max
        self.input_shape = tuple(input_shape)
        self.W = nn.ParameterList([nn.Parameter(torch.tensor(w, dtype=torch.float32)) for w, _ in folded])
        self.b = nn.ParameterList([nn.Parameter(torch.tensor(b, dtype=torch.float32)) for _, b in folded])

    def qparams(self):
        """[(Wq, bq, thq, eff_scale)] integer-valued float tensors (thq None for the output)."""
        qmax_w = (1 << (self.quant.weight_bits - 1)) - 1
        lo_m, hi_m = signed_range(self.neuron.membrane_bits)
        th_cap = (hi_m + 1) // 8  # thresholds stay at most 1/8 of the membrane range: headroom
        s_x = 1.0 / ((1 << self.quant.input_bits) - 1)
        out, n = [], len(self.W)
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            in_scale = s_x if i == 0 else 1.0
            last = i == n - 1
            a = W.detach().abs().amax() if (last or not self.quant.per_channel) else W.detach().abs().amax(dim=1)
            s = torch.clamp(a / qmax_w, min=1e-12)
            if not last:
                s = torch.maximum(s, torch.full_like(s, 1.0 / (in_scale * th_cap)))
            s = s.expand(W.shape[0]) if s.dim() == 0 else s
            wq = torch.clamp(round_ste(W / s[:, None]), -qmax_w, qmax_w)
            eff = s * in_scale
            bq = torch.clamp(round_ste(b / eff), lo_m, hi_m)
            thq = None if last else torch.clamp(torch.round(1.0 / eff), 1, hi_m)
            out.append((wq, bq, thq, eff))
        return out

    def run(self, params, x_q):
        """Accumulated integer outputs z (T, B, K) from integer inputs x_q (B, F)."""
        neu = self.neuron
        lo_m, hi_m = signed_range(neu.membrane_bits)
        x_q = x_q.to(params[0][0].dtype)
        h = None
        for i, (wq, bq, thq, _) in enumerate(params):
            if i == 0:
                cur = (x_q @ wq.T + bq).unsqueeze(0).expand(self.t_max, -1, -1)
            else:
                cur = h @ wq.T + bq
            if thq is None:
                z, zs = torch.zeros_like(cur[0]), []
                for t in range(self.t_max):
                    z = torch.clamp(z + cur[t], lo_m, hi_m)
                    zs.append(z)
                return torch.stack(zs)
            u, spikes = torch.zeros_like(cur[0]), []
            for t in range(self.t_max):
                leaked = u - floor_ste(u / (1 << neu.leak_shift)) if neu.leak_shift else u
                u = torch.clamp(leaked + cur[t], lo_m, hi_m)
                s = spike(u, thq)
                u = u * (1 - s) if neu.reset == "zero" else u - s * thq
                spikes.append(s)
            h = torch.stack(spikes)
        raise AssertionError("unreachable: the last layer is the output integrator")

    def forward(self, x_q):
        """Logits-scaled accumulated outputs (T, B, K) for training: ``z_int * output scale``."""
        params = self.qparams()
        return self.run(params, x_q) * params[-1][3][0]

    def integer_params(self):
        """The quantized parameters as int64 numpy arrays (what gets exported)."""
        with torch.no_grad():
            return [(wq.round().long().numpy(), bq.round().long().numpy(),
                     None if thq is None else thq.round().long().numpy(), eff.double().numpy())
                    for wq, bq, thq, eff in self.qparams()]

    @torch.no_grad()
    def exact_z(self, x_q, batch=4096):
        """Integer z (T, B, K) as int64, computed in float64 from the exported integers."""
        params = [(torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                   None if th is None else torch.tensor(th, dtype=torch.float64), torch.tensor(e))
                  for w, b, th, e in self.integer_params()]
        x_q = torch.as_tensor(np.asarray(x_q), dtype=torch.float64)
        outs = [self.run(params, x_q[i:i + batch]) for i in range(0, len(x_q), batch)]
        return torch.cat(outs, dim=1).round().long().numpy()

    def export(self, name, dataset, exit_threshold, classes=(), extra=None) -> QuantModel:
        layers = []
        ip = self.integer_params()
        for i, (w, b, th, eff) in enumerate(ip):
            role = "analog" if i == 0 else ("output" if i == len(ip) - 1 else "spiking")
            layers.append(Layer(name=f"fc{i + 1}", role=role, weight=w, bias=b, threshold=th,
                                weight_bits=self.quant.weight_bits,
                                scale=[float(eff[0])] if role == "output" else [float(v) for v in eff]))
        return QuantModel(name=name, dataset=dataset, input_shape=self.input_shape,
                          input_bits=self.quant.input_bits, t_max=self.t_max, neuron=self.neuron,
                          exit_criterion="margin", exit_threshold=int(exit_threshold), layers=layers,
                          classes=tuple(classes), extra=dict(extra or {}))
