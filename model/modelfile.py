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
KINDS = ("dense", "conv")
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
    """One synaptic layer of the integer network: fully-connected (``dense``) or convolutional (``conv``).

    ``role`` is ``"analog"`` for the first layer (its input current is computed once per inference
    from the unsigned input values), ``"spiking"`` for hidden LIF layers driven by spike events, and
    ``"output"`` for the last, non-spiking integrator (``z <- sat(z + W s + b)``; always ``dense``).
    ``scale`` maps the layer's integers back to real units (the output layer's ``z * scale`` are
    the logits).

    ``kind = "dense"``: ``weight`` (out, in), ``bias`` and ``threshold`` (out,) (``None`` for the
    output layer). A dense layer after a conv layer reads its (C, H, W) output flattened row-major.

    ``kind = "conv"``: ``weight`` (C_out, C_in, k, k) applied with ``stride`` and zero ``padding`` to
    the (C_in, H, W) spike map ``in_shape``; ``bias``, ``threshold`` (C_out,) per output channel. The
    layer's spikes are max-pooled (OR over ``pool`` x ``pool`` windows, floor mode) before they
    leave it. Optional residual input: ``shortcut`` names an earlier layer whose (pooled) output
    spikes drive a 1x1 convolution ``shortcut_weight`` (C_out, C_src, 1, 1) with ``shortcut_stride``,
    added to this layer's input current (see ``model/SEMANTICS.md``).
    """

    name: str
    role: str
    weight: np.ndarray
    bias: np.ndarray
    threshold: np.ndarray | None
    weight_bits: int
    scale: list = field(default_factory=list)
    kind: str = "dense"
    in_shape: tuple = ()
    stride: int = 1
    padding: int = 0
    pool: int = 1
    shortcut: str | None = None
    shortcut_weight: np.ndarray | None = None
    shortcut_stride: int = 1

    @property
    def kernel(self):
        return int(self.weight.shape[-1]) if self.kind == "conv" else 1

    @property
    def map_shape(self):
        """(C_out, H_out, W_out) of the neuron map (conv) or (out,) (dense)."""
        if self.kind != "conv":
            return (int(self.weight.shape[0]),)
        _, h, w = self.in_shape
        k, s, p = self.kernel, self.stride, self.padding
        return (int(self.weight.shape[0]), (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)

    @property
    def out_shape(self):
        """Shape of the spike map the layer passes on (after pooling)."""
        if self.kind != "conv":
            return self.map_shape
        c, h, w = self.map_shape
        return (c, h // self.pool, w // self.pool)

    @property
    def in_features(self):
        return int(self.weight.shape[1]) if self.kind != "conv" else int(np.prod(self.in_shape))

    @property
    def out_features(self):
        """Number of neurons (membranes) of the layer."""
        return int(np.prod(self.map_shape))

    @property
    def out_size(self):
        """Number of spikes the layer passes on per timestep (after pooling)."""
        return int(np.prod(self.out_shape))

    @property
    def channels(self):
        """Output channels (= neurons for dense): the length of ``bias`` and ``threshold``."""
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

    @property
    def is_dense(self):
        """True when every layer is fully connected (what the generated hardware supports today)."""
        return all(ly.kind == "dense" for ly in self.layers)

    def acc_range(self, layer: Layer):
        """Worst-case range of one timestep's input current ``W s + b`` of ``layer`` (per-channel fan-in
        for conv layers, shortcut included; padding can only remove terms)."""
        in_max = (1 << self.input_bits) - 1 if layer.role == "analog" else 1
        w = layer.weight.astype(np.int64).reshape(layer.channels, -1)
        pos = np.clip(w, 0, None).sum(axis=1) * in_max + layer.bias
        neg = np.clip(w, None, 0).sum(axis=1) * in_max + layer.bias
        if layer.shortcut_weight is not None:
            sc = layer.shortcut_weight.astype(np.int64).reshape(layer.channels, -1)
            pos = pos + np.clip(sc, 0, None).sum(axis=1)
            neg = neg + np.clip(sc, None, 0).sum(axis=1)
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
    expect_shape = tuple(model.input_shape)
    earlier = []
    for i, layer in enumerate(model.layers):
        where = f"layer {i} ({layer.name!r})"
        want_role = "analog" if i == 0 else ("output" if i == len(model.layers) - 1 else "spiking")
        if len(model.layers) == 1:
            _fail(path, "needs at least two layers (an analog input layer and an output layer)")
        if layer.role != want_role:
            _fail(path, f"{where}: role {layer.role!r}, expected {want_role!r} at this position")
        if layer.kind not in KINDS:
            _fail(path, f"{where}: kind = {layer.kind!r}; allowed: {KINDS}")
        if layer.kind == "conv" and layer.role == "output":
            _fail(path, f"{where}: the output layer must be 'dense' (one integrator per class), got 'conv'")
        if not 2 <= layer.weight_bits <= 16:
            _fail(path, f"{where}: weight_bits = {layer.weight_bits!r} outside [2, 16]")
        wdim = 4 if layer.kind == "conv" else 2
        for nm, arr, ndim in (("weight", layer.weight, wdim), ("bias", layer.bias, 1)):
            if not isinstance(arr, np.ndarray) or arr.ndim != ndim or arr.dtype.kind not in "iu":
                _fail(path, f"{where}: {nm} must be a {ndim}-d integer array, got "
                      f"{getattr(arr, 'dtype', type(arr))} with shape {getattr(arr, 'shape', None)}")
        if layer.kind == "dense":
            if layer.in_shape or layer.stride != 1 or layer.padding != 0 or layer.pool != 1 \
                    or layer.shortcut is not None or layer.shortcut_weight is not None:
                _fail(path, f"{where}: in_shape, stride, padding, pool and shortcut are for conv layers only")
            out, inp = layer.weight.shape
            expect_in = int(np.prod(expect_shape))
            if inp != expect_in:
                _fail(path, f"{where}: weight has {inp} inputs (shape {layer.weight.shape}) but the "
                      f"previous stage gives {expect_in}")
        else:
            _check_conv(path, where, layer, expect_shape, earlier)
            out = layer.channels
        if layer.bias.shape != (out,):
            _fail(path, f"{where}: bias shape {layer.bias.shape} does not match {out} outputs")
        lo_w, hi_w = signed_range(layer.weight_bits)
        for nm, arr in (("weight", layer.weight), ("shortcut_weight", layer.shortcut_weight)):
            if arr is None:
                continue
            bad = np.argwhere((arr < lo_w + 1) | (arr > hi_w))
            if len(bad):
                at = ", ".join(str(int(v)) for v in bad[0])
                _fail(path, f"{where}: {nm} value {int(arr[tuple(bad[0])])} at [{at}] does not fit "
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
        expect_shape = layer.out_shape
        earlier.append(layer)
    if model.classes and len(model.classes) != model.n_classes:
        _fail(path, f"{len(model.classes)} class names for {model.n_classes} outputs")
    return model


def _pos_int(v, lo=1):
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _check_conv(path, where, layer, expect_shape, earlier):
    """The conv-only checks of :func:`validate` (geometry, shapes, the residual shortcut)."""
    shp = tuple(layer.in_shape)
    if len(shp) != 3 or not all(_pos_int(v) for v in shp):
        _fail(path, f"{where}: in_shape = {layer.in_shape!r} must be (C, H, W), three positive integers")
    if len(expect_shape) != 3:
        _fail(path, f"{where}: a conv layer needs a (C, H, W) spike map but the previous stage gives "
              f"shape {tuple(expect_shape)}")
    if shp != tuple(expect_shape):
        _fail(path, f"{where}: in_shape {shp} but the previous stage gives {tuple(expect_shape)}")
    c_out, c_in, kh, kw = layer.weight.shape
    if kh != kw or kh < 1 or c_out < 1:
        _fail(path, f"{where}: conv weight must be (C_out, C_in, k, k) with a square kernel, got "
              f"{layer.weight.shape}")
    if c_in != shp[0]:
        _fail(path, f"{where}: weight has {c_in} input channels (shape {layer.weight.shape}) but the "
              f"input map has {shp[0]}")
    for nm in ("stride", "pool", "shortcut_stride"):
        if not _pos_int(getattr(layer, nm)):
            _fail(path, f"{where}: {nm} = {getattr(layer, nm)!r} must be an integer >= 1")
    if not _pos_int(layer.padding, 0) or layer.padding >= kh:
        _fail(path, f"{where}: padding = {layer.padding!r} must be an integer in [0, {kh - 1}] "
              f"(kernel {kh})")
    _, h, w = layer.map_shape
    if h < 1 or w < 1:
        _fail(path, f"{where}: kernel {kh}, stride {layer.stride}, padding {layer.padding} on a "
              f"{shp[1]}x{shp[2]} map give an empty output ({h}x{w})")
    if h < layer.pool or w < layer.pool:
        _fail(path, f"{where}: pool = {layer.pool} is larger than the {h}x{w} output map")
    if (layer.shortcut is None) != (layer.shortcut_weight is None):
        _fail(path, f"{where}: shortcut = {layer.shortcut!r} and shortcut_weight must be given together")
    if layer.shortcut is None:
        return
    src = [ly for ly in earlier if ly.name == layer.shortcut]
    if len(src) != 1:
        _fail(path, f"{where}: shortcut = {layer.shortcut!r} must name exactly one earlier layer, "
              f"found {len(src)}")
    src_shape = src[0].out_shape
    if src[0].kind != "conv":
        _fail(path, f"{where}: shortcut source {layer.shortcut!r} is {src[0].kind!r}; it must be a conv layer")
    sw = layer.shortcut_weight
    if not isinstance(sw, np.ndarray) or sw.dtype.kind not in "iu" or sw.shape != (c_out, src_shape[0], 1, 1):
        _fail(path, f"{where}: shortcut_weight must be an integer array of shape "
              f"({c_out}, {src_shape[0]}, 1, 1), got {getattr(sw, 'shape', sw)!r}")
    ss = layer.shortcut_stride
    got = ((src_shape[1] - 1) // ss + 1, (src_shape[2] - 1) // ss + 1)
    if got != (h, w):
        _fail(path, f"{where}: the shortcut from {layer.shortcut!r} ({src_shape[1]}x{src_shape[2]}, "
              f"stride {ss}) gives a {got[0]}x{got[1]} map, the layer's is {h}x{w}")


def _meta(model: QuantModel):
    layers = []
    for i, layer in enumerate(model.layers):
        d = {"name": layer.name, "kind": layer.kind, "role": layer.role,
             "in_features": layer.in_features, "out_features": layer.out_features,
             "weight_bits": layer.weight_bits, "acc_bits": model.acc_bits(layer),
             "scale": [float(s) for s in layer.scale],
             "arrays": {"weight": f"layers/{i}/weight.npy", "bias": f"layers/{i}/bias.npy"}}
        if layer.threshold is not None:
            d["arrays"]["threshold"] = f"layers/{i}/threshold.npy"
        if layer.kind == "conv":
            d.update(in_shape=list(layer.in_shape), out_shape=list(layer.out_shape), kernel=layer.kernel,
                     stride=layer.stride, padding=layer.padding, pool=layer.pool)
            if layer.shortcut is not None:
                d["shortcut"] = {"from": layer.shortcut, "stride": layer.shortcut_stride}
                d["arrays"]["shortcut_weight"] = f"layers/{i}/shortcut_weight.npy"
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
            for key, arr in (("weight", layer.weight), ("bias", layer.bias), ("threshold", layer.threshold),
                             ("shortcut_weight", layer.shortcut_weight)):
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
            if kind not in KINDS:
                _fail(path, f"{where}kind = {kind!r}; allowed: {KINDS}")
            geo = {}
            if kind == "conv":
                in_shape = _get(ld, "in_shape", list, path, where)
                if len(in_shape) != 3 or not all(_pos_int(v) for v in in_shape):
                    _fail(path, f"{where}in_shape = {in_shape!r} must be [C, H, W], positive integers")
                geo = {nm: _get(ld, nm, int, path, where) for nm in ("stride", "padding", "pool")}
                geo["in_shape"] = tuple(in_shape)
                if "shortcut" in ld:
                    sc = _get(ld, "shortcut", dict, path, where)
                    geo["shortcut"] = _get(sc, "from", str, path, where + "shortcut.")
                    geo["shortcut_stride"] = _get(sc, "stride", int, path, where + "shortcut.")
                    geo["shortcut_weight"] = array(_get(arrays, "shortcut_weight", str, path, where + "arrays."))
            layer = Layer(
                name=_get(ld, "name", str, path, where), role=role,
                weight=array(_get(arrays, "weight", str, path, where + "arrays.")),
                bias=array(_get(arrays, "bias", str, path, where + "arrays.")),
                threshold=array(arrays["threshold"]) if "threshold" in arrays else None,
                weight_bits=_get(ld, "weight_bits", int, path, where),
                scale=list(ld.get("scale", [])), kind=kind, **geo)
            if kind == "conv":
                if layer.weight.ndim != 4 or layer.weight.shape[2] != layer.weight.shape[3]:
                    _fail(path, f"{where}weight must be (C_out, C_in, k, k) for a conv layer, got shape "
                          f"{layer.weight.shape}")
                got = _get(ld, "kernel", int, path, where)
                if got != layer.kernel:
                    _fail(path, f"{where}kernel = {got} but the weight array has shape {layer.weight.shape}")
                if "out_shape" in ld and min(layer.map_shape) > 0 and ld["out_shape"] != list(layer.out_shape):
                    _fail(path, f"{where}out_shape = {ld['out_shape']!r} but in_shape, kernel, stride, padding "
                          f"and pool give {list(layer.out_shape)}")
                wants = (("in_features", layer.in_features),
                         ("out_features", layer.out_features if min(layer.map_shape) > 0 else None))
            else:
                wants = (("in_features", layer.weight.shape[1] if layer.weight.ndim == 2 else None),
                         ("out_features", layer.weight.shape[0] if layer.weight.ndim >= 1 else None))
            for key, want in wants:
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
