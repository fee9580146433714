"""The versioned model file: the "program" that the hardware generator and the golden model consume.

A model file is a zip archive (written byte-for-byte deterministically) holding

* ``model.json`` -- the metadata, human-readable (``spikeloom inspect MODEL`` prints it), and
* one ``.npy`` member per integer array, named in ``model.json``.

The in-memory types are :mod:`spikeloom.model.ir`; this module is only their file format. The
semantics of every field are in ``model/SEMANTICS.md``. :func:`load` validates everything and raises
:class:`ModelFileError` naming the file, the field and the value on any problem.
"""

import io
import math
import json
import zipfile
import zlib
from pathlib import Path

from .files import atomic_write

import numpy as np

from .config import RESET_MODES, LayerNeuron, NeuronConfig
from .errors import ConfigError, ModelFileError
from .ir import KINDS, POOL_OPS, ROLES, Layer, QuantModel, fail, int_at_least, validate

FORMAT = "spikeloom.model"
#: The newest version this module writes and reads. A model that needs nothing of version 2 is
#: written as version 1, byte for byte what earlier spikeloom wrote.
VERSION = 2
#: What version 2 adds; a version-2 file lists the ones it uses in ``requires``, so that a reader
#: can name what it lacks.
FEATURES = {
    "layer_neurons": "per-layer neurons (leak multiplier, firing rule, reset)",
    "sum_pool": "sum pooling of spikes",
}


def features(model: QuantModel):
    """The version-2 features ``model`` uses (sorted names of :data:`FEATURES`)."""
    used = set()
    if not model.uses_v1_neuron():
        used.add("layer_neurons")
    if any(ly.pool_op == "sum" for ly in model.layers):
        used.add("sum_pool")
    return sorted(used)
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)
#: Limits of what :func:`read_meta` and :func:`load` inflate, checked from the zip directory (and
#: each array's ``.npy`` header) before anything is decompressed or allocated.
MAX_JSON_BYTES = 16 << 20
MAX_ARRAY_BYTES = 64 << 20
MAX_TOTAL_BYTES = 256 << 20
#: How deeply model.json may nest (the format itself needs 5 levels; ``extra`` may use the rest).
MAX_JSON_DEPTH = 32
#: Descriptive fields written for human readers: a file whose text says anything else means
#: something this reader does not compute, so it is refused (``model/SEMANTICS.md``).
V1_NEURON_MODEL = "lif"
V1_FIRE_WHEN = "u >= threshold"
EXIT_RULE = "exit after timestep t when top1(z_t) - top2(z_t) >= threshold, or t == t_max"
#: Every field model.json may have, per object; anything of the user's own goes under ``extra``
#: (read back, never interpreted).
TOP_FIELDS = ("format", "version", "requires", "name", "dataset", "classes", "t_max", "input", "neuron", "exit",
              "layers", "extra")
INPUT_FIELDS = ("shape", "bits", "signed", "scale")
V1_NEURON_FIELDS = ("model", "leak_shift", "reset", "membrane_bits", "fire_when")
V2_NEURON_FIELDS = ("membrane_bits", "per_layer")
EXIT_FIELDS = ("criterion", "threshold", "rule")
LAYER_FIELDS = ("name", "kind", "role", "in_features", "out_features", "weight_bits", "acc_bits", "scale", "arrays",
                "neuron")
CONV_FIELDS = ("in_shape", "out_shape", "kernel", "stride", "padding", "pool", "shortcut", "pool_op")
ARRAY_FIELDS = ("weight", "bias", "threshold", "shortcut_weight")


def _input_scale(bits):
    return 1.0 / ((1 << bits) - 1)


def _meta(model: QuantModel):
    need = features(model)
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
            if layer.pool_op != "max":
                d["pool_op"] = layer.pool_op
        if "layer_neurons" in need and layer.neuron is not None:
            d["neuron"] = layer.neuron.as_dict()
        layers.append(d)
    neuron = {"model": V1_NEURON_MODEL, "leak_shift": model.neuron.leak_shift, "reset": model.neuron.reset,
              "membrane_bits": model.neuron.membrane_bits, "fire_when": V1_FIRE_WHEN}
    if "layer_neurons" in need:
        neuron = {"membrane_bits": model.neuron.membrane_bits, "per_layer": True}
    meta = {
        "format": FORMAT, "version": 2 if need else 1, "name": model.name, "dataset": model.dataset,
        "classes": list(model.classes), "t_max": model.t_max,
        "input": {"shape": list(model.input_shape), "bits": model.input_bits, "signed": False,
                  "scale": _input_scale(model.input_bits)},
        "neuron": neuron,
        "exit": {"criterion": model.exit_criterion, "threshold": model.exit_threshold, "rule": EXIT_RULE},
        "layers": layers, "extra": model.extra,
    }
    if need:
        meta["requires"] = need
    return meta


def save(model: QuantModel, path):
    """Validate ``model`` and write it to ``path`` (deterministic bytes for the same model).

    The write is atomic: the bytes go to a temporary file beside ``path`` that replaces it only when
    complete, so an existing file is never left half-written or lost on an error."""
    validate(model, path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = _meta(model)
    return atomic_write(path, lambda tmp: _write(model, meta, tmp))


def _write(model, meta, path):
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


def _get(d, key, typ, path, where):
    if not isinstance(d, dict):
        fail(path, f"{where.rstrip('.') or 'model.json'} must be a JSON object, got {d!r}")
    if key not in d:
        fail(path, f"missing field {where}{key!r}")
    v = d[key]
    if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
        fail(path, f"field {where}{key!r} must be an integer, got {v!r}")
    if typ is not int and not isinstance(v, typ):
        fail(path, f"field {where}{key!r} has the wrong type: {type(v).__name__} ({v!r})")
    return v


def _known(d, allowed, path, where):
    """Refuse a field this version does not know: it may change what the file means."""
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        fail(path, f"unknown field {where}{unknown[0]!r} (allowed: {', '.join(allowed)}; "
              "keep data of your own under 'extra')")


def _fixed(d, key, want, path, where):
    """A descriptive field, optional, that must say what this reader computes."""
    if key in d and (type(d[key]) is not type(want) or d[key] != want):
        fail(path, f"{where}{key} = {d[key]!r}; this spikeloom reads only {want!r}")


def _depth(v):
    """How deeply a JSON value nests (iteratively: no recursion limit to hit)."""
    deepest, stack = 0, [(v, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > MAX_JSON_DEPTH:
            break
        if isinstance(v, dict):
            stack += [(x, d + 1) for x in v.values()]
        elif isinstance(v, list):
            stack += [(x, d + 1) for x in v]
    return deepest


def _member(zf, path, name, limit):
    """The zip member ``name``, its inflated size checked against ``limit`` before it is read."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        return None
    if info.file_size > limit:
        fail(path, f"member {name!r} inflates to {info.file_size / (1 << 20):.1f} MiB "
              f"(compressed {info.compress_size} bytes); at most {limit >> 20} MiB are allowed")
    return zf.read(info)


def is_model_file(path):
    """Whether ``path`` is a spikeloom model file (one :func:`read_meta` opens), e.g. a file that an
    output may replace."""
    try:
        zf, _ = read_meta(path)
        zf.close()
        return True
    except ModelFileError:
        return False


def read_meta(path):
    """Open ``path`` and return (zipfile, metadata dict), with clear errors for bad files."""
    path = Path(path)
    if not path.exists():
        fail(path, "model file does not exist")
    if not path.is_file():
        fail(path, "is not a file")
    try:
        zf = zipfile.ZipFile(path)
        total = sum(i.file_size for i in zf.infolist())
        if total > MAX_TOTAL_BYTES:
            fail(path, f"members inflate to {total / (1 << 20):.1f} MiB in all; at most "
                  f"{MAX_TOTAL_BYTES >> 20} MiB are allowed")
        raw = _member(zf, path, "model.json", MAX_JSON_BYTES)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, ValueError) as e:
        fail(path, f"not a readable spikeloom model file (truncated or corrupted: {e})")
    if raw is None:
        fail(path, "not a spikeloom model file (no model.json inside)")
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(path, f"model.json is not valid JSON ({e})")
    except RecursionError:
        fail(path, f"model.json is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    if _depth(meta) > MAX_JSON_DEPTH:
        fail(path, f"model.json is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fail(path, f"format is {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r}")
    version = meta.get("version")
    needs = meta.get("requires", [])
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        fail(path, f"requires = {needs!r} must be a list of feature names")
    if len(set(needs)) != len(needs):
        fail(path, f"requires = {needs!r} lists a feature twice")
    unknown = [n for n in needs if n not in FEATURES]
    if isinstance(version, bool) or version not in range(1, VERSION + 1) or unknown:
        what = f" and requires {', '.join(map(repr, unknown or needs))}" if (unknown or needs) else ""
        fail(path, f"model file version {version!r}{what}; this spikeloom reads versions 1..{VERSION} "
              f"with the features {', '.join(FEATURES)} (upgrade spikeloom or re-export the model)")
    if version == 1 and needs:
        fail(path, f"requires = {needs!r} in a version-1 file (version 1 has no optional features)")
    _known(meta, TOP_FIELDS, path, "")
    return zf, meta


def _layer_neuron(ld, path, where):
    """A layer's ``neuron`` object of a version-2 file."""
    nd = _get(ld, "neuron", dict, path, where)
    _known(nd, ("leak", "fire", "reset"), path, where + "neuron.")
    leak = _get(nd, "leak", dict, path, where + "neuron.")
    _known(leak, ("mul", "frac"), path, where + "neuron.leak.")
    try:
        return LayerNeuron(_get(leak, "mul", int, path, where + "neuron.leak."),
                           _get(leak, "frac", int, path, where + "neuron.leak."),
                           _get(nd, "fire", str, path, where + "neuron."),
                           _get(nd, "reset", str, path, where + "neuron."))
    except ConfigError as e:
        fail(path, f"{where}{e}")


def _array(zf, path, name):
    """An integer array member: its ``.npy`` header (shape and type) is checked against the
    member's size before the array is built."""
    try:
        data = _member(zf, path, name, MAX_ARRAY_BYTES)
        if data is None:
            fail(path, f"array member {name!r} named in model.json is missing")
        buf = io.BytesIO(data)
        version = np.lib.format.read_magic(buf)
        header = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if header is None:
            fail(path, f"array member {name!r} is corrupted (.npy format version {version})")
        shape, _, dtype = header(buf)
        if dtype.hasobject or dtype.kind not in "iu":
            fail(path, f"array member {name!r} holds {dtype} values; model arrays are integers")
        need, held = math.prod(shape) * dtype.itemsize, len(data) - buf.tell()
        if need != held:
            fail(path, f"array member {name!r} declares shape {shape} of {dtype} ({need} bytes) but holds "
                  f"{held} bytes")
        buf.seek(0)
        return np.lib.format.read_array(buf, allow_pickle=False)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, NotImplementedError) as e:
        fail(path, f"array member {name!r} is corrupted ({e})")


def load(path) -> QuantModel:
    """Read and validate a model file: every field's type and value, unknown fields refused,
    every size bounded before it is inflated."""
    zf, meta = read_meta(path)

    def array(name):
        return _array(zf, path, name)

    with zf:
        inp = _get(meta, "input", dict, path, "")
        _known(inp, INPUT_FIELDS, path, "input.")
        neu = _get(meta, "neuron", dict, path, "")
        ex = _get(meta, "exit", dict, path, "")
        _known(ex, EXIT_FIELDS, path, "exit.")
        _fixed(ex, "rule", EXIT_RULE, path, "exit.")
        needs = meta.get("requires", [])
        per_layer = "layer_neurons" in needs
        if per_layer:
            v1_fields = sorted(set(neu) & {"leak_shift", "reset", "fire_when", "model"})
            if v1_fields:
                fail(path, f"neuron has {v1_fields}, version 1's network-wide neuron; a file that requires "
                      "'layer_neurons' gives each spiking layer its own layers[i].neuron")
            _known(neu, V2_NEURON_FIELDS, path, "neuron.")
            _fixed(neu, "per_layer", True, path, "neuron.")
        else:
            _known(neu, V1_NEURON_FIELDS, path, "neuron.")
            _fixed(neu, "model", V1_NEURON_MODEL, path, "neuron.")
            _fixed(neu, "fire_when", V1_FIRE_WHEN, path, "neuron.")
        try:
            if per_layer:
                neuron = NeuronConfig(membrane_bits=_get(neu, "membrane_bits", int, path, "neuron."))
            else:
                reset = _get(neu, "reset", str, path, "neuron.")
                if reset not in RESET_MODES:
                    fail(path, f"neuron.reset = {reset!r}; allowed: {RESET_MODES}")
                neuron = NeuronConfig(_get(neu, "leak_shift", int, path, "neuron."), reset,
                                      _get(neu, "membrane_bits", int, path, "neuron."))
        except ConfigError as e:
            fail(path, str(e))
        layers = []
        for i, ld in enumerate(_get(meta, "layers", list, path, "")):
            where = f"layers[{i}]."
            kind = _get(ld, "kind", str, path, where)
            if kind not in KINDS:
                fail(path, f"{where}kind = {kind!r}; allowed: {KINDS}")
            conv_only = sorted(set(ld) & set(CONV_FIELDS)) if kind == "dense" else []
            if conv_only:
                fail(path, f"{where}{conv_only[0]!r} is set on a dense layer; {', '.join(CONV_FIELDS)} are for "
                      "conv layers only")
            _known(ld, LAYER_FIELDS + CONV_FIELDS, path, where)
            arrays = _get(ld, "arrays", dict, path, where)
            _known(arrays, ARRAY_FIELDS, path, where + "arrays.")
            role = _get(ld, "role", str, path, where)
            if role not in ROLES:
                fail(path, f"{where}role = {role!r}; allowed: {ROLES}")
            geo = {}
            if "pool_op" in ld:  # (any kind: validate() names a dense layer's)
                if "sum_pool" not in needs:
                    fail(path, f"{where}pool_op is set but requires does not list 'sum_pool'")
                geo["pool_op"] = _get(ld, "pool_op", str, path, where)
                if geo["pool_op"] not in POOL_OPS:
                    fail(path, f"{where}pool_op = {geo['pool_op']!r}; allowed: {POOL_OPS}")
            if "neuron" in ld and not per_layer:
                fail(path, f"{where}neuron is set but requires does not list 'layer_neurons'")
            if kind == "conv":
                in_shape = _get(ld, "in_shape", list, path, where)
                if len(in_shape) != 3 or not all(int_at_least(v) for v in in_shape):
                    fail(path, f"{where}in_shape = {in_shape!r} must be [C, H, W], positive integers")
                geo.update({nm: _get(ld, nm, int, path, where) for nm in ("stride", "padding", "pool")})
                geo["in_shape"] = tuple(in_shape)
                if "shortcut" in ld:
                    sc = _get(ld, "shortcut", dict, path, where)
                    _known(sc, ("from", "stride"), path, where + "shortcut.")
                    geo["shortcut"] = _get(sc, "from", str, path, where + "shortcut.")
                    geo["shortcut_stride"] = _get(sc, "stride", int, path, where + "shortcut.")
                    geo["shortcut_weight"] = array(_get(arrays, "shortcut_weight", str, path, where + "arrays."))
            layers.append(Layer(
                name=_get(ld, "name", str, path, where), role=role,
                weight=array(_get(arrays, "weight", str, path, where + "arrays.")),
                bias=array(_get(arrays, "bias", str, path, where + "arrays.")),
                threshold=array(_get(arrays, "threshold", str, path, where + "arrays."))
                if "threshold" in arrays else None,
                weight_bits=_get(ld, "weight_bits", int, path, where),
                scale=_get(ld, "scale", list, path, where) if "scale" in ld else [], kind=kind,
                neuron=_layer_neuron(ld, path, where) if per_layer and ("threshold" in arrays or "neuron" in ld)
                else None, **geo))
        shape = _get(inp, "shape", list, path, "input.")
        if not shape or not all(int_at_least(s) for s in shape):
            fail(path, f"input.shape = {shape!r} must be a list of positive integers")
        classes = meta.get("classes", [])
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            fail(path, f"classes = {classes!r} must be a list of strings (the class names)")
        extra = meta.get("extra", {})
        if not isinstance(extra, dict):
            fail(path, f"extra = {extra!r} must be a JSON object")
        model = QuantModel(
            name=_get(meta, "name", str, path, ""), dataset=_get(meta, "dataset", str, path, ""),
            input_shape=tuple(shape), input_bits=_get(inp, "bits", int, path, "input."),
            t_max=_get(meta, "t_max", int, path, ""), neuron=neuron,
            exit_criterion=_get(ex, "criterion", str, path, "exit."),
            exit_threshold=_get(ex, "threshold", int, path, "exit."),
            layers=layers, classes=tuple(classes), extra=extra)
    validate(model, path)
    _fixed(inp, "signed", False, path, "input.")
    _fixed(inp, "scale", _input_scale(model.input_bits), path, "input.")
    if "sum_pool" in needs and not any(ly.pool_op == "sum" for ly in model.layers):
        fail(path, "requires lists 'sum_pool' but no layer has pool_op 'sum'")
    # the fields that restate what the arrays and the geometry give: checked once both are known valid
    for i, (layer, ld) in enumerate(zip(model.layers, meta["layers"])):
        where = f"layers[{i}]."
        declared = [("in_features", layer.in_features), ("out_features", layer.out_features)]
        if layer.kind == "conv":
            declared.append(("kernel", layer.kernel))
        for key, want in declared:
            got = _get(ld, key, int, path, where)
            if got != want:
                fail(path, f"{where}{key} = {got} but the weight array has shape {layer.weight.shape}"
                      + (f" (in_shape {list(layer.in_shape)})" if layer.kind == "conv" else ""))
        if "out_shape" in ld and ld["out_shape"] != list(layer.out_shape):
            fail(path, f"{where}out_shape = {ld['out_shape']!r} but in_shape, kernel, stride, padding "
                  f"and pool give {list(layer.out_shape)}")
        if ld.get("acc_bits") != model.acc_bits(layer):
            fail(path, f"{where}acc_bits = {ld.get('acc_bits')!r} but the weights need "
                  f"{model.acc_bits(layer)} bits")
    return model
