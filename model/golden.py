"""The integer golden model: the executable specification the hardware must match bit for bit.

Numpy, vectorised over a batch, int64 throughout. ``model/SEMANTICS.md`` describes the same
arithmetic in prose; this module is the reference when the two differ (they must not). Unit tests,
the cocotb checkers and the energy model import this module; there is no second copy.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from . import geometry
from .errors import InputError
from .geometry import Kernel
from .config import LayerNeuron
from .ir import Layer, QuantModel, signed_range

#: Per-layer activity counters, each counted per timestep (the analog layer's one-off work is
#: counted in timestep 1, the step in which the hardware does it).
COUNTERS = ("input_events", "synaptic_events", "weight_reads", "membrane_reads", "membrane_writes", "spikes")


@dataclass
class GoldenResult:
    """Everything one batch of inferences produced.

    Attributes
    ----------
    pred : (B,) predicted class at the exit timestep (lowest index among equal maxima).
    exit_t : (B,) number of timesteps executed (1..t_max).
    z : (T, B, K) accumulated output after each timestep.
    margin : (T, B) top-1 minus top-2 of ``z`` after each timestep.
    step_counters : {layer name: {counter: (T, B) array}} activity of each timestep.
    spikes : {layer name: (T, B, out) bool} per-timestep spike trains, if traced.
    sparse : names of the layers whose ``weight_reads`` count compressed storage (the others: dense).
    """

    pred: np.ndarray
    exit_t: np.ndarray
    z: np.ndarray
    margin: np.ndarray
    step_counters: dict
    spikes: dict = field(default_factory=dict)
    sparse: tuple = ()
    segments: dict = field(default_factory=dict)  # {sparse layer: how its rows are cut}

    @property
    def t_max(self):
        return self.z.shape[0]

    def storage(self):
        """{layer name: "dense" | "sparse"}: the weight storage that ``weight_reads`` counts."""
        return {ln: "sparse" if ln in self.sparse else "dense" for ln in self.step_counters}

    def counters(self, adaptive=True):
        """{layer: {counter: (B,)}} summed over executed timesteps (all T if not ``adaptive``)."""
        steps = self.exit_t if adaptive else np.full_like(self.exit_t, self.t_max)
        mask = np.arange(1, self.t_max + 1)[:, None] <= steps[None, :]
        return {ln: {k: (v * mask).sum(axis=0) for k, v in cs.items()} for ln, cs in self.step_counters.items()}

    def totals(self, adaptive=True):
        """{counter: (B,)} summed over layers."""
        out = {k: 0 for k in COUNTERS}
        for cs in self.counters(adaptive).values():
            for k, v in cs.items():
                out[k] = out[k] + v
        return out

    def cycle_bound(self, model: QuantModel, n_pe, adaptive=True):
        """(B,) the work bound on cycles per inference for ``n_pe`` processing elements: the
        :func:`work_bound` of this run's synaptic events over its executed timesteps (all
        ``t_max`` if not ``adaptive``); a lower bound for PEs that do one synaptic operation a
        cycle (the hardware's paired layers do two: ``hw/plan.py``, "Paired events")."""
        steps = self.exit_t if adaptive else np.full_like(self.exit_t, self.t_max)
        return work_bound(model, {ly.name: self.step_counters[ly.name]["synaptic_events"] for ly in model.layers},
                          steps, n_pe)

    def fixed_pred(self):
        """Predictions when every inference runs all ``t_max`` timesteps."""
        return first_argmax(self.z[-1])


def work_bound(model: QuantModel, step_synaptic, steps, n_pe):
    """(B,) the work bound on cycles per inference of ``n_pe`` processing elements.

    Sum over executed timesteps (``t <= steps[b]``) and layers of
    ``ceil(synaptic events / N) + ceil(neurons / N)``: N synaptic operations and N neuron updates
    per cycle (the accelerator's paired layers do up to 2N synaptic operations a cycle, and can
    run below it there). ``step_synaptic`` is ``{layer name: (T, B) or (T, 1)}`` synaptic events of each
    timestep; the analog layer's one-off work is its timestep-1 entry (0 after), as in
    :attr:`GoldenResult.step_counters`. The one home of the bound: the golden result, the energy
    step's dense network and the reports all call it.
    """
    steps = np.asarray(steps)
    t_max = max(len(v) for v in step_synaptic.values())
    mask = np.arange(1, t_max + 1)[:, None] <= steps[None, :]
    total = np.zeros(len(steps), np.int64)
    for ly in model.layers:
        work = -(-np.asarray(step_synaptic[ly.name]) // n_pe) + -(-ly.out_features // n_pe)
        total += (work * mask).sum(axis=0)
    return total

def first_argmax(z):
    """argmax over the last axis; the lowest index wins among equal maxima (as in hardware)."""
    return np.argmax(z, axis=-1)


def top2_margin(z):
    """top1 - top2 of integer scores along the last axis (0 when the two largest are equal)."""
    part = np.sort(z, axis=-1)
    return part[..., -1] - part[..., -2]


def exit_steps(margin, threshold, t_max=None):
    """First timestep (1-based) with ``margin >= threshold``, else ``t_max``."""
    t_max = margin.shape[0] if t_max is None else t_max
    hit = margin[:t_max] >= threshold
    return np.where(hit.any(axis=0), hit.argmax(axis=0) + 1, t_max)


def saturate(v, bits):
    lo, hi = signed_range(bits)
    return np.clip(v, lo, hi)


def fires(v, threshold, rule):
    """The firing rule of ``model/SEMANTICS.md``: ``v >= theta`` or ``v > theta``."""
    return v > threshold if rule == ">" else v >= threshold


def leak(u, neuron: LayerNeuron):
    """``u - ((u * a) >> f)`` (floor), the layer's leak; ``a = 0``: no leak."""
    a, f = neuron.leak_mul, neuron.leak_frac
    return u - ((u * a) >> f) if a else u


def lif_step(u, flag, current, threshold, neuron: LayerNeuron, bits):
    """One integer update of a spiking layer: leak, integrate with saturation, fire, reset.

    ``u`` and ``flag`` are the neuron state (int64 membranes and a bool per neuron, both zero at
    the start of an inference); ``flag`` is the previous spike (``subtract_next``) or whether the
    membrane stayed above threshold after its reset (``subtract_recheck``), unused otherwise.
    Returns ``(u_next, flag_next, spikes)``.
    """
    rule, reset = neuron.fire, neuron.reset
    pending = np.where(flag, threshold, 0) if neuron.has_flag else 0
    if reset == "subtract_next":
        v = saturate(leak(u, neuron) + current - pending, bits)
        s = fires(v, threshold, rule)
        return v, s, s
    v = saturate(leak(u, neuron) + current, bits)
    if reset == "zero":
        s = fires(v, threshold, rule)
        return np.where(s, 0, v), flag, s
    s = fires(v - pending, threshold, rule)
    u = np.where(s, v - threshold, v)
    return u, (fires(u, threshold, rule) if reset == "subtract_recheck" else flag), s


def pool_spikes(s, q, op):
    """The values a conv layer passes on: its spikes pooled over ``q`` x ``q`` windows with stride
    ``q``, floor mode; ``op = "max"`` (OR, bool) or ``"sum"`` (spike counts, int64)."""
    if q == 1:
        return s
    b, c, h, w = s.shape
    hp, wp = h // q, w // q
    win = s[:, :, :hp * q, :wp * q].reshape(b, c, hp, q, wp, q)
    return win.sum(axis=(3, 5), dtype=np.int64) if op == "sum" else win.any(axis=(3, 5))


def quantize_values(x, bits):
    """Map inputs in [0, 1] (any shape with ``B`` leading) to ``bits``-bit unsigned integers (B, F)."""
    x = np.asarray(x, dtype=np.float64)
    qmax = (1 << bits) - 1
    return np.clip(np.rint(x * qmax), 0, qmax).astype(np.int64).reshape(len(x), -1)


def quantize_input(model: QuantModel, x):
    """:func:`quantize_values` at the model's input width."""
    return quantize_values(x, model.input_bits)


def check_input(model: QuantModel, x_q):
    x_q = np.asarray(x_q)
    if x_q.ndim < 1 or x_q.dtype.kind not in "iu":
        raise InputError(f"input must be an integer array of shape (batch, {model.input_size}); "
                         f"got dtype {x_q.dtype} and shape {x_q.shape}")
    if x_q.ndim > 1 and len(x_q) == 0:
        raise InputError(f"input holds no images (shape {x_q.shape}); give at least one")
    if x_q.ndim > 2 and len(model.input_shape) == 3:
        # images as arrays for a (C, H, W) input: their shape is the model's (size-1 axes aside), so
        # that an image of the right size in another layout (e.g. channels last) is not read
        # scrambled (a flat input, (F,), reads any image row-major: SEMANTICS.md, "Input order")
        per, want = x_q.shape[1:], tuple(model.input_shape)
        if tuple(d for d in per if d != 1) != tuple(d for d in want if d != 1):
            raise InputError(f"input images of shape {per}; the model's input shape is {want} (C, H, W): give "
                             f"(batch, {', '.join(map(str, want))}), or (batch, {model.input_size}) flattened "
                             "row-major")
    x_q = x_q.reshape(len(x_q), -1) if x_q.ndim > 1 else x_q.reshape(1, -1)
    if x_q.shape[1] != model.input_size:
        raise InputError(f"input has {x_q.shape[1]} values per image, the model expects "
                         f"{model.input_size} (input shape {tuple(model.input_shape)})")
    qmax = (1 << model.input_bits) - 1
    if x_q.size and (x_q.min() < 0 or x_q.max() > qmax):
        raise InputError(f"input values must lie in [0, {qmax}] ({model.input_bits}-bit unsigned); "
                         f"got min {int(x_q.min())}, max {int(x_q.max())}")
    return x_q.astype(np.int64)


#: Every integer of magnitude below this is a float64 exactly (53-bit significand).
FLOAT64_EXACT = 1 << 53


def int_matmul(a, b):
    """``a @ b`` of integer arrays, exactly, as int64: through float64 BLAS when no product and no
    partial sum can reach :data:`FLOAT64_EXACT` (then every one is an integer a float64 holds, and
    every addition is exact), else in int64 (no BLAS path, slow). The bound: each output is a sum
    of ``a[..., k] * b[k, j]``, at most ``max|a| * max_j sum_k |b[k, j]|`` in magnitude, and so is
    every partial sum in any order of addition."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.size and b.size:
        amax = int(np.abs(a).max())
        bcol = int(np.abs(b.astype(np.int64)).sum(axis=0).max())
        if amax * bcol < FLOAT64_EXACT:
            return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a.astype(np.int64) @ b.astype(np.int64)


def conv2d(x, w, stride=1, padding=0):
    """Exact integer cross-correlation (``torch.nn.functional.conv2d`` without bias), int64.

    ``x`` (B, C_in, H, W), ``w`` (C_out, C_in, k, k) -> (B, C_out, H_out, W_out).
    """
    kn = Kernel(w.shape[-1], stride, padding)
    ho, wo = kn.out_hw(x.shape[2:])
    out = np.zeros((x.shape[0], w.shape[0], ho, wo), np.int64)
    w = w.astype(np.int64)
    for ky, kx, win in kn.windows(x.astype(np.int64), (ho, wo)):
        # (B, C_in, ho, wo) x (C_out, C_in) -> (B, ho, wo, C_out): one exact product per tap
        out += int_matmul(win.transpose(0, 2, 3, 1), w[:, :, ky, kx].T).transpose(0, 3, 1, 2)
    return out


def _conv_counts(x, w, kn, out_hw, sparse=False):
    """(input_events, synaptic_events, weight_reads), each (B,), of the input map ``x`` through the
    weights ``w`` (C_out, C_in, k, k) applied with the :class:`~spikeloom.model.geometry.Kernel` ``kn``.

    Every nonzero input is one event; it meets kernel tap (ky, kx) when the tap lands inside the
    output map. ``synaptic_events`` counts the nonzero weights ``w[:, c, ky, kx]`` of the taps that
    land. ``weight_reads`` depends on the storage: dense kernel storage reads the ``C_out`` weights
    of every landing tap; compressed (``sparse``: its segmentation, ``True`` = ``"row"``) storage
    reads the nonzero weights of each segment of the event's input channel ``w[:, c, :, :]``
    (:func:`~spikeloom.model.geometry.segment_taps`; the whole row when uncut) for every event
    with a landing tap in that segment.
    """
    nz = (x != 0).astype(np.int64)
    c_out = w.shape[0]
    nnz = (w != 0).sum(axis=0).astype(np.int64)  # (C_in, k, k)
    syn = np.zeros(len(x), np.int64)
    taps = np.zeros(len(x), np.int64)
    for ky, kx, win in kn.windows(nz, out_hw):
        per_c = win.sum(axis=(2, 3))  # (B, C_in): events landing through this tap
        syn += int_matmul(per_c, nnz[:, ky, kx])
        taps += per_c.sum(axis=1)
    if sparse:
        reads = np.zeros(len(x), np.int64)
        flat = nnz.reshape(len(nnz), -1)
        for seg in geometry.segment_taps("row" if sparse is True else sparse, kn.k):
            cover = kn.cover(x.shape[2:], out_hw, taps=seg)
            reads += int_matmul((nz * cover).sum(axis=(2, 3)), flat[:, list(seg)].sum(axis=1))
    else:
        reads = taps * c_out
    return nz.sum(axis=(1, 2, 3)), syn, reads


def dense_synapses(layer: Layer, shortcut_shape=None):
    """Synaptic operations of one timestep of ``layer`` if every input were active and every
    weight nonzero (the "dense" reference of energy and NeuroBench counts)."""
    kn = geometry.kernel(layer)
    if kn is None:
        return int(layer.in_features * layer.out_features)
    out_hw = geometry.map_hw(layer)
    ones = np.ones((1,) + tuple(layer.in_shape), np.int64)
    syn = int(_conv_counts(ones, np.ones_like(layer.weight), kn, out_hw)[1][0])
    if layer.shortcut is not None:
        ones = np.ones((1,) + tuple(shortcut_shape), np.int64)
        syn += int(_conv_counts(ones, np.ones_like(layer.shortcut_weight), geometry.shortcut_kernel(layer),
                                out_hw)[1][0])
    return syn


def synapses(layer: Layer, inp, shortcut_inp=None, sparse=False):
    """Input current of ``layer`` for the input ``inp`` (and the shortcut source's spikes), exactly.

    Returns ``(current, counts)``: current (B, *layer.map_shape) int64 (bias included) and
    ``counts`` = {"input_events", "synaptic_events", "weight_reads"} each (B,). ``sparse``: the
    layer's weights are in compressed storage (``True``, or how its rows are cut, one of
    :data:`~spikeloom.model.geometry.SEGMENTS`: only nonzero weights are read, see
    :func:`_conv_counts`); otherwise every weight of an event's row is read, zeros included.
    """
    nb = len(inp)
    kn = geometry.kernel(layer)
    if kn is None:
        v = inp.reshape(nb, -1).astype(np.int64)
        nz = (v != 0).astype(np.int64)
        current = int_matmul(v, layer.weight.T) + layer.bias
        ev = nz.sum(axis=1)
        syn = int_matmul(nz, (layer.weight != 0).sum(axis=0))
        return current, {"input_events": ev, "synaptic_events": syn,
                         "weight_reads": syn if sparse else ev * layer.out_features}
    out_hw = geometry.map_hw(layer)
    current = conv2d(inp, layer.weight, kn.stride, kn.pad) + layer.bias.astype(np.int64)[:, None, None]
    ev, syn, reads = _conv_counts(inp, layer.weight, kn, out_hw, sparse)
    if layer.shortcut is not None:
        # a 1x1 kernel of stride r: the source map's positions (y, x) = (r * oy, r * ox)
        sk = geometry.shortcut_kernel(layer)
        current = current + conv2d(shortcut_inp, layer.shortcut_weight, sk.stride)
        ev_sc, syn_sc, reads_sc = _conv_counts(shortcut_inp, layer.shortcut_weight, sk, out_hw, sparse)
        ev, syn, reads = ev + ev_sc, syn + syn_sc, reads + reads_sc
    return current, {"input_events": ev, "synaptic_events": syn, "weight_reads": reads}


#: Bytes of working arrays :func:`run` allows itself per block of images (it runs larger batches block by block).
BLOCK_BYTES = 1 << 29


def block_images(model: QuantModel):
    """Images per block of :func:`run`: all ``t_max`` timesteps of a block go through each layer at
    once, so its largest map (inputs or outputs, a few int64/float64 copies) of ``t_max`` images
    stays within :data:`BLOCK_BYTES`."""
    widest = max(max(ly.in_features, ly.out_features) for ly in model.layers)
    return max(1, BLOCK_BYTES // (64 * model.t_max * widest))


def _dynamics(model: QuantModel, x, sparse, trace):
    """The output layer's membranes ``(T, B, classes)``, the per-timestep counters ``{layer:
    {counter: (T, B)}}`` and (``trace``) the spikes ``{layer: (T, B, out_features)}`` of the images
    ``x`` (B, input_size), every timestep. Layer by layer: a layer's input currents of all ``T``
    timesteps are one batch of ``T * B`` images (the inputs at timestep t depend only on the layers
    before it at t), then its membranes step through t."""
    nb, T, mb = len(x), model.t_max, model.neuron.membrane_bits
    step = {ly.name: {k: np.zeros((T, nb), np.int64) for k in COUNTERS} for ly in model.layers}
    spikes = {}
    first = model.layers[0]
    x0 = x if geometry.kernel(first) is None else x.reshape((nb,) + tuple(first.in_shape))
    outs, s_prev, z_hist = {}, None, None
    for i, ly in enumerate(model.layers):
        c = step[ly.name]
        if i == 0:
            # the encoded input is the same at every timestep: its current is computed once
            current, counts = synapses(first, x0, sparse=sparse.get(first.name, False))
            for k, v in counts.items():
                c[k][0] = v
            currents = [current] * T
        else:
            sc = outs.get(ly.shortcut) if ly.shortcut is not None else None
            current, counts = synapses(ly, s_prev, sc, sparse.get(ly.name, False))
            for k, v in counts.items():
                c[k][:] = v.reshape(T, nb)
            currents = current.reshape((T, nb) + current.shape[1:])
        c["membrane_reads"][:] = ly.out_features
        c["membrane_writes"][:] = ly.out_features
        if ly.role == "output":
            z_hist = np.zeros((T, nb, model.n_classes), np.int64)
            state = np.zeros((nb,) + ly.map_shape, np.int64)
            for t in range(T):
                state = saturate(state + currents[t], mb)
                z_hist[t] = state
            continue
        thr = ly.threshold.astype(np.int64).reshape((-1,) + (1,) * (len(ly.map_shape) - 1))
        u = np.zeros((nb,) + ly.map_shape, np.int64)
        flag = np.zeros((nb,) + ly.map_shape, bool)
        s_all = np.zeros((T, nb) + ly.map_shape, bool)
        for t in range(T):
            u, flag, s_all[t] = lif_step(u, flag, currents[t], thr, ly.neuron, mb)
        flat = s_all.reshape(T, nb, -1)
        c["spikes"][:] = flat.sum(axis=2)
        if trace:
            spikes[ly.name] = flat
        s_prev = pool_spikes(s_all.reshape((T * nb,) + ly.map_shape), geometry.pool(ly), ly.pool_op)
        outs[ly.name] = s_prev
    return z_hist, step, spikes


def run(model: QuantModel, x_q, *, sparse, exit_threshold=None, trace=False) -> GoldenResult:
    """Run integer inference on a batch of quantized inputs ``x_q`` (B, input_size).

    ``sparse`` (required) names the layers whose weights are in compressed storage: a collection
    of names (rows uncut), or ``{name: segments}`` with how each layer's rows are cut
    (:data:`~spikeloom.model.geometry.SEGMENTS`). It changes only the ``weight_reads`` counter,
    but that counter is what the hardware counts, so every caller says which storage it means:
    the hardware plan's (``Plan(model, n_pe).sparse_layers``, or ``ports.json``'s, ``Ports.sparse_layers``),
    or ``()`` for dense storage of every layer. The result records it (:attr:`GoldenResult.sparse`,
    :attr:`GoldenResult.segments`).

    All ``t_max`` timesteps are computed (the dynamics up to t do not depend on the exit), then each
    inference's exit timestep is the first ``t`` with ``margin(z_t) >= exit_threshold``. Dense and
    conv layers (with pooling and residual shortcuts) and each layer's neuron follow
    ``model/SEMANTICS.md``.
    """
    x = check_input(model, x_q)
    thr = model.exit_threshold if exit_threshold is None else exit_threshold
    if isinstance(sparse, str):
        raise TypeError(f"sparse must be a collection of layer names, got the string {sparse!r}")
    sparse = dict(sparse) if isinstance(sparse, Mapping) else {n: "row" for n in sparse}
    unknown = sorted(set(sparse) - {ly.name for ly in model.layers})
    if unknown:
        raise InputError(f"sparse names layers the model does not have: {unknown}")
    bad = {n: v for n, v in sparse.items() if v not in geometry.SEGMENTS}
    if bad:
        raise InputError(f"sparse: segments {bad}; allowed: {', '.join(geometry.SEGMENTS)}")
    nb, T = len(x), model.t_max
    block = block_images(model)
    parts = [_dynamics(model, x[i:i + block], sparse, trace) for i in range(0, nb, block)]
    z_hist = np.concatenate([p[0] for p in parts], axis=1)
    step = {ly.name: {k: np.concatenate([p[1][ly.name][k] for p in parts], axis=1) for k in COUNTERS}
            for ly in model.layers}
    spikes = {name: np.concatenate([p[2][name] for p in parts], axis=1) for name in parts[0][2]}
    margin = top2_margin(z_hist)
    exit_t = exit_steps(margin, thr, T)
    pred = first_argmax(z_hist[exit_t - 1, np.arange(nb)])
    return GoldenResult(pred=pred, exit_t=exit_t, z=z_hist, margin=margin, step_counters=step, spikes=spikes,
                        sparse=tuple(ly.name for ly in model.layers if ly.name in sparse),
                        segments={ly.name: sparse[ly.name] for ly in model.layers if ly.name in sparse})
