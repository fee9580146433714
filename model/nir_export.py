"""Write a :class:`~spikeloom.model.ir.QuantModel` as a NIR graph (https://neuroir.org).

:func:`to_nir` maps each layer to ``Affine``/``Conv2d`` -> neuron (-> pool) nodes and returns the
graph and the notes on what other backends do differently; :func:`write` saves it atomically.
Numpy and ``nir`` only (no torch). The rules are in ``README.md``, "Export to NIR"; with Euler steps of
``dt`` (NIR stores none; ``v <- (1 - dt/tau) v + (dt/tau) (v_leak + r I)``), every neuron gets the
pass-through gain ``dt r / tau = 1`` (``IF``/``I``: ``dt r = 1``), so one step adds ``W x + b`` as in
``model/golden.py``. Two forms:

* ``"portable"`` (default; what snnTorch's ``import_from_nir`` and other backends load): every
  spiking layer an ``LIF`` (no leak: ``tau`` so large that ``1 - dt/tau == 1.0``), each neuron's
  weights and bias divided by its threshold (threshold 1; rule ``>=`` on integers is ``>`` at
  ``theta - 1/2``, exact on integer membranes only), sum pooling as ``AvgPool2d`` with ``q^2``
  folded into the next synapse, the output integrator an ``LIF`` that never fires
  (``v_threshold = +inf``, no leak) whose membrane is the class score (in the output layer's integer
  units);
* ``"exact"`` (integer units, for ``spikeloom import``): ``IF`` / ``LIF`` / ``I``, ``SumPool2d``,
  per-neuron thresholds (``theta - 1/2`` for rule ``>=``); importing it gives back the same layers.

Both: the NIR input is the real ``x`` in ``[0, 1]``; our analog layer reads ``x_q = x (2^B - 1)``, so
the first layer's weights are ``W (2^B - 1)``. A spike-count readout ends at the class layer's
spikes (the identity counter is dropped). NIR resets to ``v_reset = 0`` and cannot say "subtract":
the spikeloom neuron (reset, rule, leak), ``weight_bits``, ``input_bits``, ``t_max`` and
``membrane_bits`` are in the nodes' and the graph's ``metadata["spikeloom"]``, which
:mod:`~spikeloom.model.nir_import` reads back. Max pooling (an OR of spikes, not linear) and residual
shortcuts have no NIR chain form and are refused.
"""

import numpy as np

from .errors import ConfigError, ModelFileError
from .files import atomic_write

FORMS = ("portable", "exact")
#: ``tau / dt`` of a layer without leak in the portable form: ``1 - 2^-60 == 1.0`` in float64.
NO_LEAK_TAU = 2.0 ** 60


def _refuse(model):
    for ly in model.layers:
        if ly.shortcut is not None:
            raise ModelFileError(f"layer {ly.name!r}: a residual shortcut (from {ly.shortcut!r}) is a merging "
                                 "branch; NIR export writes chains only")
        if ly.pool > 1 and ly.pool_op == "max":
            raise ModelFileError(f"layer {ly.name!r}: max pooling (an OR of spikes) is not linear and has no NIR "
                                 "node; train with --pool sum or avg")


def _near(x, ok, n=8):
    """A float64 within ``n`` ulps of ``x`` for which ``ok`` holds (nearest first), else None."""
    lo = hi = float(x)
    if ok(lo):
        return lo
    for _ in range(n):
        lo, hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
        for c in (float(lo), float(hi)):
            if ok(c):
                return c
    return None


def _exact_leak(dt, neuron):
    """(tau, r) of an ``LIF`` whose float64 ``1 - dt/tau`` is exactly ``1 - a/2^f`` and whose gain
    ``dt r / tau`` is exactly 1 (as :mod:`nir_import` computes them), so the import is exact."""
    frac = neuron.leak_mul / (1 << neuron.leak_frac)
    tau = _near(dt / frac, lambda t: 1.0 - (1.0 - dt / t) == frac)
    r = None if tau is None else _near(tau / dt, lambda v: dt * v / tau == 1.0)
    if r is None:
        raise ConfigError(f"dt = {dt!r}: no float64 tau with dt / tau = {frac!r} exactly; give another --dt")
    return tau, r


def _unit_r(dt):
    """``r`` with ``dt * r == 1.0`` exactly (IF and I in the exact form)."""
    r = _near(1.0 / dt, lambda v: dt * v == 1.0)
    if r is None:
        raise ConfigError(f"dt = {dt!r}: no float64 r with dt * r == 1 exactly; give another --dt")
    return r


def _full(v, shape):
    return np.broadcast_to(np.asarray(v, np.float64).reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()


def to_nir(model, dt=1e-4, form="portable"):
    """``(nir.NIRGraph, rows, notes)`` for ``model``: ``rows`` one ``(layer, nodes, what)`` per layer
    for the CLI's table, ``notes`` the lines on what other backends do differently. A model NIR cannot
    express (max pooling, a residual shortcut) is one ModelFileError naming the layer."""
    import nir

    if form not in FORMS:
        raise ConfigError(f"--form = {form!r}; allowed: {', '.join(FORMS)}")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not np.isfinite(dt) or dt <= 0:
        raise ConfigError(f"--dt = {dt!r} must be a number > 0")
    dt = float(dt)
    _refuse(model)
    exact = form == "exact"
    layers = list(model.layers)
    count = model.readout == "count"
    if count:
        layers = layers[:-1]  # the class layer's spikes are the output; a backend counts them
    nodes = {"input": nir.Input({"input": np.array(model.input_shape)})}
    edges, prev = [], "input"
    rows, resets = [], set()

    def add(name, node):
        nonlocal prev
        nodes[name] = node
        edges.append((prev, name))
        prev = name

    shape, carry = tuple(model.input_shape), 1.0
    for i, ly in enumerate(layers):
        W = ly.weight.astype(np.float64) * carry
        b = ly.bias.astype(np.float64)
        carry = 1.0
        if ly.role == "analog":
            W = W * float((1 << model.input_bits) - 1)
        names = []
        if ly.kind == "dense" and len(shape) > 1:
            add(f"{ly.name}_flatten", nir.Flatten({"input": np.array(shape)}, start_dim=0))
            names.append("Flatten")
        mshape = ly.map_shape
        spiking = ly.threshold is not None
        n = ly.neuron
        if spiking:
            th = ly.threshold.astype(np.float64) - (0.5 if n.fire == ">=" else 0.0)
            if not exact:
                div = th.reshape((-1,) + (1,) * (W.ndim - 1))
                W, b, th = W / div, b / th, np.ones_like(th)
        syn_meta = {"spikeloom": {"layer": ly.name, "weight_bits": ly.weight_bits,
                                  "units": "integer" if exact else "threshold"}}
        if ly.kind == "conv":
            syn = nir.Conv2d(input_shape=tuple(int(v) for v in ly.in_shape[1:]), weight=W, stride=(ly.stride,) * 2,
                             padding=(ly.padding,) * 2, dilation=(1, 1), groups=1, bias=b, metadata=syn_meta)
        else:
            syn = nir.Affine(weight=W, bias=b, metadata=syn_meta)
        add(ly.name, syn)
        names.append(type(syn).__name__)
        zeros = np.zeros(mshape)
        nname = f"{ly.name}_neuron"
        if spiking:
            meta = {"spikeloom": {"reset": n.reset, "fire": n.fire, "leak_mul": n.leak_mul, "leak_frac": n.leak_frac,
                                  "threshold": "theta - 1/2" if n.fire == ">=" else "theta"}}
            resets.add(n.reset)
            vth = _full(th, mshape)
            if n.leak_mul == 0 and exact:
                neu = nir.IF(r=np.full(mshape, _unit_r(dt)), v_threshold=vth, v_reset=zeros, metadata=meta)
            else:
                if exact:
                    tau, r = _exact_leak(dt, n)
                elif n.leak_mul == 0:
                    tau, r = dt * NO_LEAK_TAU, NO_LEAK_TAU
                else:
                    tau = dt / (1.0 - n.beta)
                    r = tau / dt
                neu = nir.LIF(tau=np.full(mshape, tau), r=np.full(mshape, r), v_leak=zeros.copy(),
                              v_threshold=vth, v_reset=zeros.copy(), metadata=meta)
            what = f"beta {n.beta:g}, fire '{n.fire}', reset {n.reset}" + \
                ("" if exact else f"; weights / (theta{' - 1/2' if n.fire == '>=' else ''})")
        else:
            meta = {"spikeloom": {"readout": "integrate", "scale": [float(v) for v in ly.scale]}}
            if exact:
                neu = nir.I(r=np.full(mshape, _unit_r(dt)), metadata=meta)
            else:
                neu = nir.LIF(tau=np.full(mshape, dt * NO_LEAK_TAU), r=np.full(mshape, NO_LEAK_TAU),
                              v_leak=zeros.copy(), v_threshold=np.full(mshape, np.inf), v_reset=zeros.copy(),
                              metadata=meta)
            what = "class scores z (the membrane" + ("" if exact else "; never fires") + ")"
        add(nname, neu)
        names.append(type(neu).__name__)
        if count and i == len(layers) - 1:
            what += "; spike-count readout: its spikes are the output"
        shape = mshape
        if ly.pool > 1:
            q = ly.pool
            pool_t = nir.SumPool2d if exact else nir.AvgPool2d
            add(f"{ly.name}_pool", pool_t(kernel_size=np.array([q, q]), stride=np.array([q, q]),
                                          padding=np.array([0, 0])))
            names.append(pool_t.__name__)
            if not exact:
                carry = float(q * q)
                what += f"; sum pool as AvgPool2d, {q * q} folded into the next weights"
            shape = ly.out_shape
        rows.append((ly.name, " -> ".join(names), what))
    out_shape = np.array(shape)
    add("output", nir.Output({"output": out_shape}))
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"spikeloom": {
        "form": form, "dt": dt, "name": model.name, "input_bits": model.input_bits, "t_max": model.t_max,
        "membrane_bits": model.neuron.membrane_bits, "readout": model.readout}})  # nir checks every type
    notes = [f"run {model.t_max} steps of dt = {dt:g} with the input x in [0, 1] each step "
             f"(spikeloom reads rint(x (2^{model.input_bits} - 1))); NIR has no early exit"]
    if resets - {"zero"}:
        notes.append(f"other backends reset to zero (v_reset = 0); this model's reset is "
                     f"{', '.join(sorted(resets))} (in the nodes' metadata)")
    if not exact and any(ly.neuron is not None and ly.neuron.fire == ">=" for ly in layers):
        notes.append("rule '>=' is written as '>' at theta - 1/2: exact on integer membranes only")
    if any(ly.neuron is not None and ly.neuron.leak_mul for ly in layers):
        notes.append("the leak is beta v in NIR; spikeloom keeps ceil(beta u) on integers (the floor of the leak)")
    notes.append(f"NIR membranes do not saturate (spikeloom: {model.neuron.membrane_bits}-bit)")
    return graph, rows, notes


def written_here(path):
    """Whether ``path`` is a NIR graph this module wrote (its ``metadata["spikeloom"]``), e.g. a file
    that ``export-nir -o`` may replace."""
    import nir

    try:
        return "spikeloom" in (nir.read(path).metadata or {})
    except Exception:   # any file at all: h5py and nir raise many kinds on what is not their graph
        return False


def write(graph, path):
    """Write ``graph`` to ``path`` atomically (a temporary file in the same folder, then
    ``os.replace``): never a half-written file."""
    import nir

    return atomic_write(path, lambda tmp: nir.write(tmp, graph))
