"""The versioned model file: the "program" that the hardware generator and the golden model consume.

A model file is a zip archive (written byte-for-byte deterministically) holding

* ``model.json`` -- the metadata, human-readable (``spikeloom inspect MODEL`` prints it), and
* one ``.npy`` member per integer array, named in ``model.json``.

The semantics of every field are in ``model/SEMANTICS.md``. :func:`load` validates everything and
raises :class:`ModelFileError` naming the file, the field and the value on any problem.
"""

import io
import json
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .config import RESET_MODES, NeuronConfig
from .errors import ConfigError, ModelFileError

FORMAT = "spikeloom.model"
VERSION = 1
ROLES = ("analog", "spiking", "output")
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def signed_range(bits):
    """The closed range of a two's-complement integer of ``bits`` bits."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def bits_for(lo, hi):
    """Smallest two's-complement width holding every integer in [lo, hi]."""
    b = 1
    while not (signed_range(b)[0] <= lo and hi <= signed_range(b)[1]):
        b += 1
    return b


@dataclass
class Layer:
    """One fully-connected layer of the integer network.

    ``role`` is ``"analog"`` for the first layer (its input current ``W x + b`` is computed once per
    inference from the unsigned input values), ``"spiking"`` for hidden LIF layers driven by spike
    events, and ``"output"`` for the last, non-spiking integrator (``z <- sat(z + W s + b)``).
    ``weight`` has shape (out, in); ``bias`` (out,); ``threshold`` (out,) for analog/spiking layers,
    ``None`` for the output layer. ``scale`` maps the layer's integers back to real units (the
    output layer's ``z * scale`` are the logits).
    """

    name: str
    role: str
    weight: np.ndarray
    bias: np.ndarray
    threshold: np.ndarray | None
    weight_bits: int
    scale: list = field(default_factory=list)

    @property
    def in_features(self):
        return int(self.weight.shape[1])

    @property
    def out_features(self):
        return int(self.weight.shape[0])


@dataclass
class QuantModel:
    """A quantized SNN: integer arrays plus the metadata that defines their semantics."""

    name: str
    dataset: str
    input_shape: tuple
    input_bits: int
    t_max: int
    neuron: NeuronConfig
    exit_criterion: str
    exit_threshold: int
    layers: list
    classes: tuple = ()
    extra: dict = field(default_factory=dict)

    @property
    def input_size(self):
        return int(np.prod(self.input_shape))

    @property
    def n_classes(self):
        return self.layers[-1].out_features

    def acc_range(self, layer: Layer):
        """Worst-case range of one timestep's input current ``W s + b`` of ``layer``."""
        w = layer.weight.astype(np.int64)
        in_max = (1 << self.input_bits) - 1 if layer.role == "analog" else 1
        pos = np.clip(w, 0, None).sum(axis=1) * in_max + layer.bias
        neg = np.clip(w, None, 0).sum(axis=1) * in_max + layer.bias
        return int(min(neg.min(), 0)), int(max(pos.max(), 0))

    def acc_bits(self, layer: Layer):
        """Accumulator width that can never overflow for ``layer`` (checked, not assumed)."""
        return bits_for(*self.acc_range(layer))

    def with_exit_threshold(self, threshold: int):
        return replace(self, exit_threshold=int(threshold))


def _fail(path, msg):
    raise ModelFileError(f"{path}: {msg}")


def validate(model: QuantModel, path="model"):
    """Check the whole model for consistency; raise ModelFileError naming the first problem."""
    if not model.layers:
        _fail(path, "has no layers")
    try:
        neuron = NeuronConfig(model.neuron.leak_shift, model.neuron.reset, model.neuron.membrane_bits)
    except ConfigError as e:
        _fail(path, str(e))
    if not isinstance(model.t_max, int) or not 1 <= model.t_max <= 64:
        _fail(path, f"t_max = {model.t_max!r} is outside the allowed range [1, 64]")
    if not isinstance(model.input_bits, int) or not 1 <= model.input_bits <= 16:
        _fail(path, f"input.bits = {model.input_bits!r} is outside the allowed range [1, 16]")
    if model.exit_criterion != "margin":
        _fail(path, f"exit.criterion = {model.exit_criterion!r}; the integer model supports 'margin'")
    if not isinstance(model.exit_threshold, int) or model.exit_threshold < 0:
        _fail(path, f"exit.threshold = {model.exit_threshold!r} must be an integer >= 0")
    lo_m, hi_m = signed_range(neuron.membrane_bits)
    expect_in = model.input_size
    for i, layer in enumerate(model.layers):
        where = f"layer {i} ({layer.name!r})"
        want_role = "analog" if i == 0 else ("output" if i == len(model.layers) - 1 else "spiking")
        if len(model.layers) == 1:
            _fail(path, "needs at least two layers (an analog input layer and an output layer)")
        if layer.role != want_role:
            _fail(path, f"{where}: role {layer.role!r}, expected {want_role!r} at this position")
        if not 2 <= layer.weight_bits <= 16:
            _fail(path, f"{where}: weight_bits = {layer.weight_bits!r} outside [2, 16]")
        for nm, arr, ndim in (("weight", layer.weight, 2), ("bias", layer.bias, 1)):
            if not isinstance(arr, np.ndarray) or arr.ndim != ndim or arr.dtype.kind not in "iu":
                _fail(path, f"{where}: {nm} must be a {ndim}-d integer array, got "
                      f"{getattr(arr, 'dtype', type(arr))} with shape {getattr(arr, 'shape', None)}")
        out, inp = layer.weight.shape
        if inp != expect_in:
            _fail(path, f"{where}: weight has {inp} inputs (shape {layer.weight.shape}) but the "
                  f"previous stage gives {expect_in}")
        if layer.bias.shape != (out,):
            _fail(path, f"{where}: bias shape {layer.bias.shape} does not match {out} outputs")
        lo_w, hi_w = signed_range(layer.weight_bits)
        bad = np.argwhere((layer.weight < lo_w + 1) | (layer.weight > hi_w))
        if len(bad):
            j, k = bad[0]
            _fail(path, f"{where}: weight value {int(layer.weight[j, k])} at [{j}, {k}] does not fit "
                  f"in {layer.weight_bits}-bit signed range [{lo_w + 1}, {hi_w}]")
        if np.any(layer.bias < lo_m) or np.any(layer.bias > hi_m):
            _fail(path, f"{where}: bias outside the {neuron.membrane_bits}-bit membrane range "
                  f"[{lo_m}, {hi_m}] (min {int(layer.bias.min())}, max {int(layer.bias.max())})")
        if layer.role == "output":
            if layer.threshold is not None:
                _fail(path, f"{where}: the output integrator has no threshold")
            if out < 2:
                _fail(path, f"{where}: an output layer needs at least 2 classes, got {out}")
        else:
            th = layer.threshold
            if not isinstance(th, np.ndarray) or th.shape != (out,) or th.dtype.kind not in "iu":
                _fail(path, f"{where}: threshold must be an integer array of shape ({out},), got "
                      f"{getattr(th, 'shape', th)!r}")
            if np.any(th < 1) or np.any(th > hi_m):
                _fail(path, f"{where}: thresholds must lie in [1, {hi_m}] "
                      f"(min {int(th.min())}, max {int(th.max())})")
        if model.acc_bits(layer) > 32:
            _fail(path, f"{where}: the worst-case input current needs {model.acc_bits(layer)} bits; "
                  "at most 32 are supported (lower weight_bits or input bits)")
        expect_in = out
    if model.classes and len(model.classes) != model.n_classes:
        _fail(path, f"{len(model.classes)} class names for {model.n_classes} outputs")
    return model


def _meta(model: QuantModel):
    layers = []
    for i, layer in enumerate(model.layers):
        d = {"name": layer.name, "kind": "dense", "role": layer.role,
             "in_features": layer.in_features, "out_features": layer.out_features,
             "weight_bits": layer.weight_bits, "acc_bits": model.acc_bits(layer),
             "scale": [float(s) for s in layer.scale],
             "arrays": {"weight": f"layers/{i}/weight.npy", "bias": f"layers/{i}/bias.npy"}}
        if layer.threshold is not None:
            d["arrays"]["threshold"] = f"layers/{i}/threshold.npy"
        layers.append(d)
    return {
        "format": FORMAT, "version": VERSION, "name": model.name, "dataset": model.dataset,
        "classes": list(model.classes), "t_max": model.t_max,
        "input": {"shape": list(model.input_shape), "bits": model.input_bits, "signed": False,
                  "scale": 1.0 / ((1 << model.input_bits) - 1)},
        "neuron": {"model": "lif", "leak_shift": model.neuron.leak_shift, "reset": model.neuron.reset,
                   "membrane_bits": model.neuron.membrane_bits, "fire_when": "u >= threshold"},
        "exit": {"criterion": model.exit_criterion, "threshold": model.exit_threshold,
                 "rule": "exit after timestep t when top1(z_t) - top2(z_t) >= threshold, or t == t_max"},
        "layers": layers, "extra": model.extra,
    }


def save(model: QuantModel, path):
    """Validate ``model`` and write it to ``path`` (deterministic bytes for the same model)."""
    validate(model, path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = _meta(model)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        def put(name, data):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
        put("model.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
        for i, layer in enumerate(model.layers):
            for key, arr in (("weight", layer.weight), ("bias", layer.bias), ("threshold", layer.threshold)):
                if arr is None:
                    continue
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arr.astype(np.int32)), allow_pickle=False)
                put(meta["layers"][i]["arrays"][key], buf.getvalue())
    return path


def _get(d, key, typ, path, where):
    if not isinstance(d, dict) or key not in d:
        _fail(path, f"missing field {where}{key!r}")
    v = d[key]
    if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
        _fail(path, f"field {where}{key!r} must be an integer, got {v!r}")
    if typ is not int and not isinstance(v, typ):
        _fail(path, f"field {where}{key!r} has the wrong type: {type(v).__name__} ({v!r})")
    return v


def read_meta(path):
    """Open ``path`` and return (zipfile, metadata dict), with clear errors for bad files."""
    path = Path(path)
    if not path.exists():
        _fail(path, "model file does not exist")
    if not path.is_file():
        _fail(path, "is not a file")
    try:
        zf = zipfile.ZipFile(path)
        raw = zf.read("model.json")
    except KeyError:
        _fail(path, "not a spikeloom model file (no model.json inside)")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        _fail(path, f"not a readable spikeloom model file (truncated or corrupted: {e})")
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(path, f"model.json is not valid JSON ({e})")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        _fail(path, f"format is {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        _fail(path, f"model file version {meta.get('version')!r}; this spikeloom reads version {VERSION} "
              "(re-export the model with this version)")
    return zf, meta


def load(path) -> QuantModel:
    """Read and validate a model file."""
    zf, meta = read_meta(path)

    def array(name):
        try:
            with zf.open(name) as f:
                arr = np.lib.format.read_array(io.BytesIO(f.read()), allow_pickle=False)
        except KeyError:
            _fail(path, f"array member {name!r} named in model.json is missing")
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as e:
            _fail(path, f"array member {name!r} is corrupted ({e})")
        return arr

    with zf:
        inp = _get(meta, "input", dict, path, "")
        neu = _get(meta, "neuron", dict, path, "")
        ex = _get(meta, "exit", dict, path, "")
        reset = _get(neu, "reset", str, path, "neuron.")
        if reset not in RESET_MODES:
            _fail(path, f"neuron.reset = {reset!r}; allowed: {RESET_MODES}")
        try:
            neuron = NeuronConfig(_get(neu, "leak_shift", int, path, "neuron."), reset,
                                  _get(neu, "membrane_bits", int, path, "neuron."))
        except ConfigError as e:
            _fail(path, str(e))
        layers = []
        for i, ld in enumerate(_get(meta, "layers", list, path, "")):
            where = f"layers[{i}]."
            arrays = _get(ld, "arrays", dict, path, where)
            role = _get(ld, "role", str, path, where)
            if role not in ROLES:
                _fail(path, f"{where}role = {role!r}; allowed: {ROLES}")
            kind = _get(ld, "kind", str, path, where)
            if kind != "dense":
                _fail(path, f"{where}kind = {kind!r}; this version supports 'dense'")
            layer = Layer(
                name=_get(ld, "name", str, path, where), role=role,
                weight=array(_get(arrays, "weight", str, path, where + "arrays.")),
                bias=array(_get(arrays, "bias", str, path, where + "arrays.")),
                threshold=array(arrays["threshold"]) if "threshold" in arrays else None,
                weight_bits=_get(ld, "weight_bits", int, path, where),
                scale=list(ld.get("scale", [])))
            for key, want in (("in_features", layer.weight.shape[1] if layer.weight.ndim == 2 else None),
                              ("out_features", layer.weight.shape[0] if layer.weight.ndim >= 1 else None)):
                got = _get(ld, key, int, path, where)
                if got != want:
                    _fail(path, f"{where}{key} = {got} but the weight array has shape {layer.weight.shape}")
            layers.append(layer)
        shape = _get(inp, "shape", list, path, "input.")
        if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
            _fail(path, f"input.shape = {shape!r} must be a list of positive integers")
        model = QuantModel(
            name=_get(meta, "name", str, path, ""), dataset=_get(meta, "dataset", str, path, ""),
            input_shape=tuple(shape), input_bits=_get(inp, "bits", int, path, "input."),
            t_max=_get(meta, "t_max", int, path, ""), neuron=neuron,
            exit_criterion=_get(ex, "criterion", str, path, "exit."),
            exit_threshold=_get(ex, "threshold", int, path, "exit."),
            layers=layers, classes=tuple(meta.get("classes", ())), extra=meta.get("extra", {}))
    validate(model, path)
    for i, (layer, ld) in enumerate(zip(model.layers, meta["layers"])):
        if ld.get("acc_bits") != model.acc_bits(layer):
            _fail(path, f"layers[{i}].acc_bits = {ld.get('acc_bits')!r} but the weights need "
                  f"{model.acc_bits(layer)} bits")
    return model
