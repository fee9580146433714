"""Import a NIR graph (https://neuroir.org) as a :class:`~spikeloom.model.ir.QuantModel`.

:func:`from_nir` walks the graph from its ``Input`` to its ``Output`` and maps each synapse ->
neuron pattern to one of our layers; :func:`read` opens a ``.nir`` file. Numpy and ``nir`` only
(no torch). The discretisation (NIR stores no time step: the caller gives ``dt``) and the mapping
rules are in ``README.md``, "Bring your own network"; in short, with Euler steps of ``dt``:

* ``LIF``: ``v <- (1 - dt/tau) v + (dt/tau) (v_leak + r I)``: our leak ``beta = 1 - dt/tau``
  (:meth:`LayerNeuron.from_beta`), the input gain ``dt r / tau`` folded into the weights before it,
  ``dt v_leak / tau`` into its bias;
* ``IF``: ``v <- v + dt r I`` (no leak), gain ``dt r``;
* ``I``: the output integrator ``z <- z + dt r I``; ``LI``: the same with gain ``dt r / tau`` and
  its leak dropped (always reported as quantized);
* a spike where ``v > v_threshold`` (rule ``>``); the reset is the caller's (:data:`RESETS`), or a
  spikeloom export's metadata (:func:`from_nir`).

The NIR input is the real value ``x`` in ``[0, 1]``; our analog layer reads ``x_q = x (2^B - 1)``
(``B = input_bits``), so the first layer's integer weights are its real weights times
``scale / (2^B - 1)``.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import nir_sim
from .golden import quantize_values
from .config import (FIRE_RULES, LEAK_FRAC_MAX, RESETS, T_MAX_RANGE, WIDTH_RANGES, LayerNeuron, NeuronConfig,
                     check_choice, check_int)
from .errors import ConfigError, ModelFileError
from .ir import LAYER_NAME_MAX, Layer, QuantModel, count_readout, signed_range, threshold_cap, validate

#: Node types that have no spikeloom equivalent, and why (the one-line error names them).
UNSUPPORTED = {
    "CubaLIF": "a current-based synapse is a second state per neuron; spikeloom neurons have one membrane",
    "CubaLI": "a current-based synapse is a second state per neuron; spikeloom's readout has one integrator",
    "Delay": "synaptic delays are not supported",
    "Threshold": "a stand-alone threshold (no membrane) is not supported; use IF or LIF",
    "Conv1d": "1-d convolutions are not supported (Conv2d only)",
    "NIRGraph": "nested subgraphs are not supported; flatten the graph",
}
SYNAPSES = ("Affine", "Linear", "Conv2d")
SPIKING = ("IF", "LIF")
READOUTS = ("I", "LI")
#: A ``beta`` that no leak fraction represents exactly is rounded with enough fraction bits that its
#: decay ``1 - beta`` is off by at most this fraction of itself.
LEAK_REL_ERROR = 0.005


@dataclass
class NodeReport:
    """How one NIR node was mapped: ``mapping`` is ``"exact"`` or ``"quantized"``; ``max_abs_error``
    is the largest difference between the node's parameters and what the integer model computes,
    in the node's own (real) units; ``layer`` is the spikeloom layer it went into."""

    name: str
    type: str
    mapping: str
    max_abs_error: float
    layer: str
    note: str = ""
    reset: str | None = None  # a spiking neuron node's reset (``None`` for every other node)

    def as_dict(self):
        return {"name": self.name, "type": self.type, "mapping": self.mapping,
                "max_abs_error": self.max_abs_error, "layer": self.layer, "note": self.note, "reset": self.reset}


def read(path):
    """The NIR graph in ``path``; a missing or unreadable file is one ModelFileError line."""
    import nir

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        return nir.read(path, type_check=False)  # from_nir checks every shape it uses, naming the node
    except Exception as e:  # h5py/nir raise many kinds; all mean "not a NIR graph we can read"
        raise ModelFileError(f"{path}: not a readable NIR graph ({type(e).__name__}: {e})") from e


def _bad(name, node, why):
    raise ModelFileError(f"NIR node {name!r} ({type(node).__name__}): {why}")


def chain(graph):
    """The graph's nodes in order from its one ``Input`` to its one ``Output``: [(name, node)].

    Branches, recurrent edges (cycles), nodes off the path and unsupported node types are one
    ModelFileError naming the node."""
    import nir

    nodes = graph.nodes
    for name, node in nodes.items():
        t = type(node).__name__
        if t in UNSUPPORTED:
            _bad(name, node, UNSUPPORTED[t])
        if not isinstance(node, (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten,
                                 nir.SumPool2d, nir.AvgPool2d, nir.Scale, nir.IF, nir.LIF, nir.LI, nir.I)):
            _bad(name, node, "unknown node type for spikeloom")
    ins = [n for n, v in nodes.items() if isinstance(v, nir.Input)]
    outs = [n for n, v in nodes.items() if isinstance(v, nir.Output)]
    if len(ins) != 1 or len(outs) != 1:
        raise ModelFileError(f"NIR graph: needs exactly one Input and one Output node, has inputs {ins} "
                             f"and outputs {outs}")
    succ, preds = {}, {}
    for a, b in graph.edges:
        if a not in nodes or b not in nodes:
            raise ModelFileError(f"NIR graph: edge ({a!r}, {b!r}) names a node the graph does not have")
        succ.setdefault(a, []).append(b)
        preds.setdefault(b, []).append(a)
    _no_cycles(nodes, succ)
    order, seen, cur = [], set(), ins[0]
    while True:
        seen.add(cur)
        order.append((cur, nodes[cur]))
        if len(preds.get(cur, [])) > 1:
            _bad(cur, nodes[cur], f"has {len(preds[cur])} inputs {sorted(preds[cur])}; spikeloom maps "
                 "chains only (no merging branches)")
        nxt = succ.get(cur, [])
        if cur == outs[0]:
            break
        if not nxt:
            _bad(cur, nodes[cur], "does not lead to the Output node")
        if len(nxt) > 1:
            _bad(cur, nodes[cur], f"branches to {sorted(nxt)}; spikeloom maps chains only")
        cur = nxt[0]
    off = sorted(set(nodes) - seen)
    if off:
        _bad(off[0], nodes[off[0]], "is not on the path from Input to Output")
    return order


def _no_cycles(nodes, succ):
    """A recurrent edge (an edge that closes a cycle) is one ModelFileError naming its target."""
    state = {}
    for root in nodes:
        if root in state:
            continue
        stack = [(root, iter(succ.get(root, [])))]
        state[root] = "open"
        while stack:
            u, it = stack[-1]
            v = next(it, None)
            if v is None:
                state[u] = "done"
                stack.pop()
            elif state.get(v) == "open":
                _bad(v, nodes[v], f"recurrent edge from {u!r} (a cycle); spikeloom runs feed-forward chains only")
            elif v not in state:
                state[v] = "open"
                stack.append((v, iter(succ.get(v, []))))


def _pair(v, what, name, node):
    a = np.atleast_1d(np.asarray(v)).ravel()
    if len(a) == 1:
        a = np.repeat(a, 2)
    if len(a) != 2 or a[0] != a[1]:
        _bad(name, node, f"{what} = {np.asarray(v).tolist()} must be the same in both dimensions")
    return int(a[0])


def _finite(a, what, name, node, inf_ok=False):
    """``a`` as float64; NaN (or an infinity, unless ``inf_ok`` allows +inf) is one line naming the node."""
    a = np.asarray(a, np.float64)
    bad = np.isnan(a) | (np.isinf(a) & ~(inf_ok & (a > 0)))
    if bad.any():
        _bad(name, node, f"{what} has a non-finite value ({float(a[bad].ravel()[0])!r}); spikeloom maps finite numbers")
    return a


def _per_unit(arr, shape, what, name, node):
    """A neuron parameter as one value per output channel (conv: constant over H, W) -> (C,)."""
    a = _finite(arr, what, name, node, inf_ok=what == "v_threshold")
    if a.ndim == 0 or a.size == 1:
        return np.full(shape[0], float(a.ravel()[0]))
    if len(shape) == 3 and a.size == shape[0]:
        return a.ravel().copy()  # one value per channel, e.g. shape (C, 1, 1)
    if int(a.size) != int(np.prod(shape)):
        _bad(name, node, f"{what} has {a.size} values but the layer has {int(np.prod(shape))} neurons")
    a = a.reshape(shape)
    if len(shape) == 3:
        flat = a.reshape(shape[0], -1)
        if not np.all(flat == flat[:, :1]):
            _bad(name, node, f"{what} differs within a channel; spikeloom conv layers have one value per channel")
        return flat[:, 0].copy()
    return a.copy()


def _dyadic(beta):
    """(LayerNeuron leak fraction, exact) for ``beta``: the smallest ``f`` with ``(1 - beta) 2^f``
    an integer; else the smallest ``f`` that rounds the decay ``1 - beta`` to within
    :data:`LEAK_REL_ERROR` of itself (``beta = 0.9``: ``f = 10``, ``a = 102``), at most
    :data:`~spikeloom.model.config.LEAK_FRAC_MAX`."""
    for f in range(LEAK_FRAC_MAX + 1):
        if float((1.0 - beta) * (1 << f)).is_integer():
            return f, True
    d = 1.0 - beta
    for f in range(LEAK_FRAC_MAX + 1):
        if abs(round(d * (1 << f)) / (1 << f) - d) <= LEAK_REL_ERROR * d:
            return f, False
    return LEAK_FRAC_MAX, False


@dataclass
class _Stage:
    """One layer in real units before quantization."""

    name: str
    kind: str
    W: np.ndarray             # real weights with the neuron's input gain folded in
    b: np.ndarray
    in_shape: tuple
    stride: int = 1
    padding: int = 0
    theta: np.ndarray | None = None
    beta: float | None = None
    leak_frac: int = 0
    pool: int = 1
    nodes: tuple = ()          # [(name, type, role)] for the report
    W_orig: np.ndarray | None = None
    gain: np.ndarray | None = None
    pre_div: float = 1.0        # an AvgPool's 1/q^2 before this layer
    leak_exact: bool = True
    dropped_leak: float = 0.0   # LI: the leak per step the integrator does not have
    v_reset: np.ndarray | None = None
    fold: np.ndarray | None = None  # folded Scale factors per output channel
    meta: dict | None = None    # the neuron node's metadata["spikeloom"] (a spikeloom export), else {}
    syn_meta: dict | None = None  # the synapse node's metadata["spikeloom"]
    reset: str = "zero"         # the options from_nir resolves per layer (caller, metadata, default)
    fire: str = ">"
    weight_bits: int = 8


def _stages(order, dt, input_shape):
    """Group the chain into layers (real-valued)."""
    import nir

    stages, shape, i = [], tuple(input_shape), 1
    pending_div = 1.0
    n = len(order)
    while i < n - 1:
        name, node = order[i]
        if not type(node).__name__ in SYNAPSES:
            if isinstance(node, nir.Flatten):
                shape = (int(np.prod(shape)),)
                i += 1
                continue
            _bad(name, node, "expected a synapse (Affine, Linear or Conv2d) here" +
                 ("; a Scale folds only right after a synapse" if isinstance(node, nir.Scale) else
                  "; pooling follows a conv layer's neurons" if isinstance(node, (nir.SumPool2d, nir.AvgPool2d))
                  else ""))
        syn_name, syn = name, node
        if isinstance(syn, nir.Conv2d):
            if len(shape) != 3:
                _bad(name, node, f"a 2-d convolution needs a (C, H, W) input, the previous stage gives {shape}")
            if int(syn.groups) != 1:
                _bad(name, node, f"groups = {syn.groups}; spikeloom convolutions have groups = 1")
            if _pair(syn.dilation, "dilation", name, node) != 1:
                _bad(name, node, f"dilation = {np.asarray(syn.dilation).tolist()}; spikeloom needs dilation 1")
            W = _finite(syn.weight, "weight", name, node)
            if W.ndim != 4 or W.shape[2] != W.shape[3]:
                _bad(name, node, f"weight shape {W.shape}: spikeloom needs (C_out, C_in, k, k), a square kernel")
            if W.shape[1] != shape[0]:
                _bad(name, node, f"weight has {W.shape[1]} input channels, the input has {shape[0]}")
            stride = _pair(syn.stride, "stride", name, node)
            k = W.shape[2]
            if isinstance(syn.padding, str):
                if syn.padding == "valid":
                    pad = 0
                elif k % 2 == 1 and stride == 1:
                    pad = k // 2
                else:
                    _bad(name, node, f"padding 'same' with kernel {k}, stride {stride} is not symmetric")
            else:
                pad = _pair(syn.padding, "padding", name, node)
            if syn.input_shape is not None and tuple(int(v) for v in syn.input_shape) != tuple(shape[1:]):
                _bad(name, node, f"input_shape {tuple(syn.input_shape)} but the previous stage gives {shape[1:]}")
            b = _finite(syn.bias, "bias", name, node).reshape(-1) if syn.bias is not None else np.zeros(W.shape[0])
            kind, in_shape = "conv", shape
            oh = (shape[1] + 2 * pad - k) // stride + 1
            ow = (shape[2] + 2 * pad - k) // stride + 1
            out_shape = (W.shape[0], oh, ow)
        else:
            W = _finite(syn.weight, "weight", name, node)
            if W.ndim != 2:
                _bad(name, node, f"weight shape {W.shape}: spikeloom needs (out, in)")
            if W.shape[1] != int(np.prod(shape)):
                _bad(name, node, f"weight has {W.shape[1]} inputs, the previous stage gives {int(np.prod(shape))}")
            b = _finite(syn.bias, "bias", name, node).reshape(-1) if isinstance(syn, nir.Affine) \
                else np.zeros(W.shape[0])
            kind, in_shape, stride, pad = "dense", shape, 1, 0
            out_shape = (W.shape[0],)
        if b.shape != (W.shape[0],):
            _bad(name, node, f"bias shape {b.shape} does not match {W.shape[0]} outputs")
        W_orig = W.copy()
        W = W * pending_div
        pre_div, pending_div = pending_div, 1.0
        nodes = [(syn_name, type(syn).__name__, "synapse")]
        fold = np.ones(W.shape[0])
        i += 1
        while i < n - 1 and isinstance(order[i][1], nir.Scale):
            sn, sc = order[i]
            s = _per_unit(sc.scale, out_shape, "scale", sn, sc)
            W, b, fold = W * s.reshape((-1,) + (1,) * (W.ndim - 1)), b * s, fold * s
            nodes.append((sn, "Scale", "scale"))
            i += 1
        if i >= n - 1:
            _bad(syn_name, syn, "is not followed by a neuron (IF, LIF, LI or I)")
        nn, neu = order[i]
        if not type(neu).__name__ in SPIKING + READOUTS:
            _bad(nn, neu, f"expected a neuron (IF, LIF, LI or I) after synapse {syn_name!r}")
        r = _per_unit(neu.r, out_shape, "r", nn, neu)
        st = _Stage(name=nn, kind=kind, W=W, b=b, in_shape=tuple(in_shape), stride=stride, padding=pad,
                    W_orig=W_orig, pre_div=pre_div, fold=fold, meta=meta(neu), syn_meta=meta(syn))
        # an LIF that never fires (v_threshold = +inf) is a readout integrator (its membrane is the score)
        readout = nir_sim.never_fires(neu)
        if isinstance(neu, (nir.LIF, nir.LI)):
            tau = _per_unit(neu.tau, out_shape, "tau", nn, neu)
            if np.any(tau <= 0):
                _bad(nn, neu, f"tau must be > 0, got {tau.min()}")
            if not np.all(tau == tau[0]):
                _bad(nn, neu, "tau differs between neurons; spikeloom has one leak per layer")
            gain = dt * r / tau
            v_leak = _per_unit(neu.v_leak, out_shape, "v_leak", nn, neu)
            extra = dt * v_leak / tau
            beta = 1.0 - dt / tau[0]
            if not 0.0 <= beta <= 1.0:
                _bad(nn, neu, f"dt / tau = {dt / tau[0]:g} > 1: the Euler step is unstable; give a smaller --dt")
        else:
            gain, extra, beta = dt * r, np.zeros_like(r), 1.0
        st.gain = gain
        st.W = st.W * gain.reshape((-1,) + (1,) * (W.ndim - 1))
        st.b = st.b * gain + extra
        i += 1
        if type(neu).__name__ in SPIKING and not readout:
            st.theta = _per_unit(neu.v_threshold, out_shape, "v_threshold", nn, neu)
            if not np.all(np.isfinite(st.theta)):
                _bad(nn, neu, "v_threshold is +inf for some neurons only (all +inf: a readout that never fires)")
            if _integer_fire_ge(st):  # spikeloom's exact form writes rule '>=' as '>' at theta - 1/2
                st.theta = st.theta + 0.5
            if np.any(st.theta <= 0):
                _bad(nn, neu, f"v_threshold must be > 0 (spikeloom thresholds are positive), got {st.theta.min()}")
            st.v_reset = _per_unit(neu.v_reset, out_shape, "v_reset", nn, neu)
            st.beta = beta
            st.leak_frac, st.leak_exact = _dyadic(beta)
        else:
            if isinstance(neu, (nir.LI, nir.LIF)):
                st.dropped_leak = 1.0 - beta
            if kind != "dense":
                _bad(nn, neu, "the readout integrator must follow a dense synapse (Affine or Linear)")
            if order[i][0] != order[-1][0]:
                _bad(nn, neu, "a readout integrator (I, LI, LIF with v_threshold = +inf) must be the last "
                     "node before Output")
        nodes.append((nn, type(neu).__name__, "neuron"))
        shape = out_shape
        if i < n - 1 and isinstance(order[i][1], (nir.SumPool2d, nir.AvgPool2d)):
            pn, pl = order[i]
            if kind != "conv":
                _bad(pn, pl, "pooling follows a conv layer's neurons only")
            q = _pair(pl.kernel_size, "kernel_size", pn, pl)
            if _pair(pl.stride, "stride", pn, pl) != q or _pair(pl.padding, "padding", pn, pl) != 0:
                _bad(pn, pl, f"kernel_size {np.asarray(pl.kernel_size).tolist()}, stride "
                     f"{np.asarray(pl.stride).tolist()}, padding {np.asarray(pl.padding).tolist()}: spikeloom "
                     "pools with stride == kernel and no padding")
            st.pool = q
            if isinstance(pl, nir.AvgPool2d):
                pending_div = 1.0 / (q * q)
            nodes.append((pn, type(pl).__name__, "pool"))
            shape = (shape[0], shape[1] // q, shape[2] // q)
            i += 1
        st.nodes = tuple(nodes)
        stages.append(st)
    if pending_div != 1.0:
        raise ModelFileError("NIR graph: an AvgPool2d must be followed by a synapse (its 1/q^2 folds into it)")
    return stages


def _input_shape(order):
    name, node = order[0]
    t = node.input_type.get("input") if isinstance(node.input_type, dict) else None
    if t is None:
        _bad(name, node, "has no input shape")
    shp = tuple(int(v) for v in np.asarray(t).ravel())
    return shp


def _integral(a):
    return bool(np.all(np.asarray(a) == np.rint(a)))


def _integer_fire_ge(st):
    """Whether a layer from spikeloom's exact form (integer units) had the rule ``>=``: written as
    ``>`` at ``theta - 1/2``, read back as ``>=`` at ``theta``. In the portable form (threshold units,
    weights divided by ``theta - 1/2``) the written rule ``>`` at the written threshold is the layer."""
    return st.meta.get("fire") == ">=" and st.syn_meta.get("units") == "integer"


def meta(node):
    """The ``metadata["spikeloom"]`` that ``spikeloom export-nir`` writes on a node or graph, else {}
    (plain Python values: nir reads integers back as numpy scalars)."""
    m = getattr(node, "metadata", None)
    m = m.get("spikeloom") if isinstance(m, dict) else None
    if not isinstance(m, dict):
        return {}
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in m.items()}


#: The defaults of :func:`from_nir`'s options when neither the caller nor the graph's metadata give one.
DEFAULTS = {"reset": "zero", "input_bits": 8, "t_max": 8, "weight_bits": 8, "membrane_bits": 16}


def from_nir(graph, dt, reset=None, input_bits=None, t_max=None, weight_bits=None, membrane_bits=None,
             name="nir", calibration=None):
    """Map ``graph`` (a ``nir.NIRGraph``) to ``(QuantModel, [NodeReport])``.

    Parameters
    ----------
    dt : float
        The Euler time step (NIR stores none), ``> 0``.
    reset : str
        The reset of every spiking layer, one of :data:`RESETS`: ``"zero"`` (what NIR's equations
        say; needs ``v_reset = 0``) or a subtraction, which NIR cannot express (snnTorch's
        subtract-reset ``Leaky`` is ``"subtract_next"``; ``v_reset`` is then ignored).
    input_bits, t_max, weight_bits, membrane_bits : int
        As in the model file (``model/SEMANTICS.md``).

    An option left ``None`` comes from the graph's spikeloom metadata (``spikeloom export-nir``: the
    graph's ``input_bits``, ``t_max``, ``membrane_bits``; each neuron node's ``reset`` and rule
    ``fire``; each synapse node's ``weight_bits``), else from :data:`DEFAULTS`. A node without
    metadata fires on ``>`` (NIR's rule); with ``fire: ">="`` its ``v_threshold`` is ``theta - 1/2``.

    A layer imports exactly (no rounding at all) when a scale exists that makes its weights, bias
    and thresholds integers within ``weight_bits`` and the membrane range, and, for a leak, keeps
    every leak product integral for ``t_max`` steps (the scale carries ``2^(f (t_max - 1))``);
    otherwise it is quantized with one scale per channel (as ``IntSNN.qparams``; the readout: one
    scale) and the report gives the largest error. When the parameters are already integers in
    range (a spikeloom export in integer units), the unit scale is a candidate too (first for a
    node whose metadata says ``units: "integer"``): the layer comes back as it was written, "exact"
    without a leak and "quantized" with error 0 with one (only the leak's floor differs from NIR's
    real ``beta v``).

    calibration : array or None
        Real inputs ``(B, *input_shape)`` in ``[0, 1]`` (e.g. a validation split) for post-training
        quantization. Without them a spiking layer's scale is capped so that its thresholds stay
        within 1/8 of the membrane range (:func:`~spikeloom.model.ir.threshold_cap`: headroom
        guessed); with them, the float64 simulation of the graph (:mod:`~spikeloom.model.nir_sim`)
        on these inputs gives each channel's largest ``|v|``, and the scale is the largest at which
        that peak still fits the membrane range (so nothing saturates on the calibration data),
        for the readout too; an exact mapping that would saturate there is quantized instead.
    """
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not np.isfinite(dt) or dt <= 0:
        raise ConfigError(f"dt = {dt!r} must be a number > 0")
    gm = meta(graph)
    user_reset, user_wb = reset, weight_bits
    input_bits, t_max, membrane_bits = (v if v is not None else gm.get(k, DEFAULTS[k]) for k, v in
                                        (("input_bits", input_bits), ("t_max", t_max),
                                         ("membrane_bits", membrane_bits)))
    check_choice("import", "reset", DEFAULTS["reset"] if reset is None else reset, RESETS)
    check_int("import", "input_bits", input_bits, *WIDTH_RANGES["input_bits"])
    check_int("import", "t_max", t_max, *T_MAX_RANGE)
    check_int("import", "weight_bits", DEFAULTS["weight_bits"] if weight_bits is None else weight_bits,
              *WIDTH_RANGES["weight_bits"])
    check_int("import", "membrane_bits", membrane_bits, *WIDTH_RANGES["membrane_bits"])
    order = chain(graph)
    input_shape = _input_shape(order)
    stages = _stages(order, float(dt), input_shape)
    if not stages:
        raise ModelFileError("NIR graph: has no synapse -> neuron layer")
    last_spiking = stages[-1].theta is not None
    if len(stages) < (1 if last_spiking else 2):
        raise ModelFileError("NIR graph: needs at least one spiking layer before the readout")
    for st in stages:
        st.reset = user_reset if user_reset is not None else st.meta.get("reset", DEFAULTS["reset"])
        st.fire = ">=" if _integer_fire_ge(st) else ">"
        st.weight_bits = user_wb if user_wb is not None else st.syn_meta.get("weight_bits", DEFAULTS["weight_bits"])
        check_choice("import", "reset", st.reset, RESETS)
        check_choice("import", "fire", st.fire, FIRE_RULES)
        check_int("import", "weight_bits", st.weight_bits, *WIDTH_RANGES["weight_bits"])
        if st.theta is not None and st.reset == "zero" and np.any(st.v_reset != 0):
            nn, typ = next((n, t) for n, t, what in st.nodes if what == "neuron")
            raise ModelFileError(f"NIR node {nn!r} ({typ}): v_reset = {float(st.v_reset[st.v_reset != 0][0])!r}; "
                                 "--reset zero resets to 0 only (or give a subtracting --reset)")
    peaks = {}
    if calibration is not None:
        x_cal = np.asarray(calibration, np.float64)
        if x_cal.ndim < 1 or len(x_cal) == 0 or x_cal.size != len(x_cal) * int(np.prod(input_shape)):
            raise ConfigError(f"calibration inputs of shape {x_cal.shape} do not match the graph's input "
                              f"shape {tuple(input_shape)}")
        x_cal = x_cal.reshape((len(x_cal),) + tuple(input_shape))
        # the integer model sees the quantized input: calibrate on what it will see
        x_cal = (quantize_values(x_cal, input_bits) / ((1 << input_bits) - 1)).reshape(x_cal.shape)
        resets = {next(nn for nn, _, what in st.nodes if what == "neuron"): st.reset for st in stages}
        peaks = nir_sim.simulate(order, x_cal, float(dt), t_max, resets).peaks
    in_div = float((1 << input_bits) - 1)
    lo_m, hi_m = signed_range(membrane_bits)
    layers, report = [], []
    taken = set()   # the layer names so far (_safe keeps them distinct)
    for li, st in enumerate(stages):
        qmax = (1 << (st.weight_bits - 1)) - 1
        role = "analog" if li == 0 else ("output" if st.theta is None else "spiking")
        div = in_div if li == 0 else 1.0
        Wx = st.W / div  # real weight per integer input
        exact_leak = 1 if st.theta is None else 1 << (st.leak_frac * (t_max - 1))
        neuron_node = next(nn for nn, _, what in st.nodes if what == "neuron")
        peak = peaks.get(neuron_node)
        if peak is not None:
            peak = np.broadcast_to(np.asarray(peak, np.float64), (st.W.shape[0],))
            if st.theta is None:
                peak = np.full_like(peak, peak.max())  # the readout has one scale
        s, exact, s_w = None, False, None
        # (scale, exact): integers that carry every leak product for t_max steps (exact in NIR's
        # real dynamics), then the unit scale (the integers as written; a leak then floors)
        cands = [(m * exact_leak, True) for m in ((1.0, div) if div != 1.0 else (1.0,))]
        if exact_leak != 1:
            cands.insert(0 if st.syn_meta.get("units") == "integer" else len(cands), (1.0, False))
        if st.leak_exact and st.dropped_leak == 0.0:
            for cand, leak_ok in cands:
                wq, bq = Wx * cand, st.b * cand
                th = None if st.theta is None else st.theta * cand
                if _integral(wq) and _integral(bq) and (th is None or _integral(th)) \
                        and np.abs(wq).max(initial=0) <= qmax and np.all(bq >= lo_m) and np.all(bq <= hi_m) \
                        and (th is None or (th.min() >= 1 and th.max() <= hi_m)) \
                        and (peak is None or np.all(peak * cand <= hi_m)):
                    s, exact = np.full(st.W.shape[0], cand), leak_ok
                    break
        if s is None:
            per_channel = st.theta is not None
            wabs = np.abs(Wx).reshape(Wx.shape[0], -1)
            a = wabs.max(axis=1) if per_channel else np.full(Wx.shape[0], wabs.max())
            s = np.where(a > 0, qmax / np.where(a > 0, a, 1), 1.0)
            s_w = s
            if peak is not None:
                s = np.minimum(s, hi_m / np.where(peak > 0, peak, np.inf))
            elif st.theta is not None:
                s = np.minimum(s, threshold_cap(membrane_bits) / st.theta)
            if st.theta is not None:
                s = np.maximum(s, 1.0 / st.theta)  # a threshold of at least 1
        sv = s.reshape((-1,) + (1,) * (Wx.ndim - 1))
        wq = np.clip(np.rint(Wx * sv), -qmax, qmax).astype(np.int64)
        bq = np.clip(np.rint(st.b * s), lo_m, hi_m).astype(np.int64)
        thq = None if st.theta is None else np.clip(np.rint(st.theta * s), 1, hi_m).astype(np.int64)
        neuron = None
        if st.theta is not None:
            neuron = LayerNeuron.from_beta(float(st.beta), st.leak_frac, st.fire, st.reset)
        layer = Layer(name=_safe(st.nodes[0][0], li, taken), role=role, weight=wq, bias=bq, threshold=thq,
                      weight_bits=st.weight_bits, scale=[float(1.0 / v) for v in s], kind=st.kind,
                      in_shape=tuple(st.in_shape) if st.kind == "conv" else (), stride=st.stride,
                      padding=st.padding, pool=st.pool, neuron=neuron, pool_op="sum" if st.pool > 1 else "max")
        layers.append(layer)
        # errors in each node's own units
        g = np.where(st.gain * st.fold != 0, st.gain * st.fold, 1.0)
        rec_w = wq / sv * div / (g.reshape(sv.shape) * st.pre_div)
        mapping = "exact" if exact else "quantized"
        note = ""
        if s_w is not None and np.any(s < s_w / 2):
            levels = int(np.abs(wq).reshape(len(s), -1)[s < s_w / 2].max(axis=1, initial=0).min())
            note = (f"the membrane range ({membrane_bits} bits) leaves the weights {levels} of {qmax} levels; "
                    "more --membrane-bits or fewer --input-bits keep more")
        for nn, typ, what in st.nodes:
            if what == "synapse":
                err = float(np.abs(rec_w - st.W_orig).max(initial=0))
                b_err = np.abs(bq / s - st.b) / g
                err = max(err, float(b_err.max(initial=0)))
            elif what == "neuron":
                err = 0.0 if st.theta is None else float(np.abs(thq / s - st.theta).max())
                if st.theta is not None:
                    err = max(err, abs(neuron.beta - st.beta))
                err = max(err, st.dropped_leak)
            else:
                err = 0.0
            m = mapping if what != "neuron" or st.dropped_leak == 0.0 else "quantized"
            report.append(NodeReport(nn, typ, m, err, layer.name, note if what == "synapse" else "",
                                     neuron.reset if what == "neuron" and neuron is not None else None))
    if last_spiking:
        if layers[-1].kind != "dense":
            raise ModelFileError("NIR graph: a spiking class layer (IF/LIF before Output) must be dense")
        if len(layers) == 1:
            raise ModelFileError("NIR graph: a spike-count readout needs a hidden layer before the class layer")
        layers.append(count_readout(layers[-1]))
    # Input, Flatten and Output carry no parameters: exact, in chain order with the others
    done = {r.name: r for r in report}
    report = [done.get(nn) or NodeReport(nn, type(node).__name__, "exact", 0.0, "-") for nn, node in order]
    reset0 = next(st.reset for st in stages if st.theta is not None)  # the file's version-1 field
    model = QuantModel(name=name, dataset="nir", input_shape=tuple(input_shape), input_bits=input_bits,
                       t_max=t_max, neuron=NeuronConfig(0, "zero" if reset0 == "zero" else "subtract", membrane_bits),
                       exit_criterion="margin", exit_threshold=1 << membrane_bits, layers=layers)
    validate(model, "imported NIR graph")
    return model, report


def _safe(name, i, taken=None):
    """Layer ``i``'s name from its NIR node name, one ``ir.LAYER_NAME`` allows: ASCII letters,
    digits, ``_`` and ``-`` kept (others, ``.`` too, become ``_``), at most ``ir.LAYER_NAME_MAX - 6
    - 4`` characters so that a spike-count readout's ``<name>_count`` fits too, and, when ``taken``
    (the names so far, a set it adds to) holds it already, ``_<i>`` appended."""
    keep = "".join(c if (c.isascii() and c.isalnum()) or c in "_-" else "_" for c in str(name))
    keep = keep[:LAYER_NAME_MAX - len("_count") - 4] or f"layer{i}"
    if taken is not None:
        if keep in taken:
            keep = f"{keep}_{i}"
        taken.add(keep)
    return keep
