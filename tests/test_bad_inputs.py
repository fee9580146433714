"""Bad inputs of every kind against every subcommand: one line ``spikeloom: error: ...``, exit 2.

Each case builds its bad input in a fresh folder, runs ``spikeloom`` there (in this process, see
``spikeloom_here``; a few through a real process) and asserts: exit status 2; stderr exactly one
line, starting ``spikeloom: error:``, naming the file, field or option, the value and what is
allowed; no traceback; and nothing new left in the folder. Long work (training, generation,
co-simulation) is replaced by a trap: an option or an input that is only checked after the work
started fails its case instead of training for minutes.
"""

import io
import json
import math
import pickle
import zipfile

import numpy as np
import pytest

from spikeloom.model import modelfile
from spikeloom.model.randnet import random_conv_model, random_model

from test_cli import spikeloom, spikeloom_here

CASES = []  # (group, id, build(tmp) -> (argv, needles))


def case(group, name, *needles):
    def deco(fn):
        CASES.append(pytest.param(fn, needles, id=f"{group}-{name}"))
        return fn
    return deco


def cases(group, table):
    """Many cases from one builder: ``table`` maps a name to (builder, needles)."""
    for name, (fn, needles) in table.items():
        CASES.append(pytest.param(fn, needles, id=f"{group}-{name}"))


# --------------------------------------------------------------------------- model files

_BASE = {}


def base_bytes(kind):
    """The bytes of a valid model file: ``dense`` (6-5-3 MLP, v1), ``conv`` (residual conv net, v1)."""
    if kind not in _BASE:
        import tempfile
        from pathlib import Path

        m = random_model((6, 5, 3), seed=1, input_bits=3) if kind == "dense" else random_conv_model(seed=1)
        with tempfile.TemporaryDirectory() as d:
            _BASE[kind] = modelfile.save(m, Path(d) / "m.slm").read_bytes()
    return _BASE[kind]


def members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_zip(path, items, compress=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compress) as z:
        for n, d in items.items():
            z.writestr(n, d)
    return path


def mutated(tmp, kind="dense", meta=None, raw_json=None, **replace):
    """A copy of a valid model file with ``meta(d)`` applied to model.json (or model.json replaced by
    ``raw_json``) and members replaced (``replace``: member name with '/' as '__' -> bytes)."""
    items = members(base_bytes(kind))
    d = json.loads(items["model.json"])
    if meta is not None:
        new = meta(d)
        d = new if isinstance(new, dict) else d
    items["model.json"] = raw_json if raw_json is not None else json.dumps(d)
    for k, v in replace.items():
        items[k.replace("_npy", ".npy").replace("__", "/")] = v() if callable(v) else v
    return write_zip(tmp / "m.slm", items)


_BOMBS = {}


def bomb(base, sizes):
    """``base`` with members replaced by runs of zeros of ``sizes`` MiB (a few hundred KB compressed)."""
    key = tuple(sorted(sizes.items()))
    if key not in _BOMBS:
        items = members(base)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for n, d in items.items():
                if n in sizes:
                    with z.open(n, "w", force_zip64=True) as f:
                        chunk = b"\0" * (1 << 20)
                        for _ in range(sizes[n]):
                            f.write(chunk)
                else:
                    z.writestr(n, d)
        _BOMBS[key] = out.getvalue()
    return _BOMBS[key]


def npy(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def setter(path, value):
    """meta -> meta with the field at ``path`` (keys and indices) set to ``value`` (``DELETE``: removed)."""
    def f(d):
        obj = d
        for k in path[:-1]:
            obj = obj[k]
        if value is DELETE:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
        return d
    return f


DELETE = object()


def raw_npy(header, body=b""):
    h = repr(header).encode()
    pad = 64 - (10 + len(h) + 1) % 64
    return b"\x93NUMPY\x01\x00" + (len(h) + pad + 1).to_bytes(2, "little") + h + b" " * pad + b"\n" + body

# every command that reads a model file first: the same bad file through each
READERS = {
    "inspect": lambda m, t: ["inspect", m],
    "golden": lambda m, t: ["golden", m, "--input", good_npy(t)],
    "generate": lambda m, t: ["generate", m, "-o", t / "gen"],
    "export": lambda m, t: ["export", m, "-o", t / "exp"],
    "export-nir": lambda m, t: ["export-nir", m, "-o", t / "g.nir"],
    "gpu-baseline": lambda m, t: ["gpu-baseline", m],
    "cosim-dataset": lambda m, t: ["cosim", m, "--dataset", "digits", "--build", t / "cs"],
    "cosim-folder": lambda m, t: ["cosim", m, "--dataset", f"folder:{t}", "--build", t / "cs"],
}


def good_npy(tmp):
    p = tmp / "x.npy"
    if not p.exists():
        np.save(p, np.ones((2, 6), np.int64))
    return p


def model_case(name, needles, kind="dense", readers=("inspect",), meta=None, raw_json=None, raw=None, **replace):
    def build(tmp, reader):
        if raw is not None:
            (tmp / "m.slm").write_bytes(raw(base_bytes(kind)) if callable(raw) else raw)
            m = tmp / "m.slm"
        else:
            m = mutated(tmp, kind, meta, raw_json, **replace)
        return READERS[reader](m, tmp), needles
    for r in readers:
        CASES.append(pytest.param(lambda tmp, r=r: build(tmp, r), needles, id=f"model-{name}-{r}"))


ALL = tuple(READERS)
# file-level damage
model_case("zero-bytes", ("m.slm", "truncated or corrupted"), readers=ALL, raw=b"")
model_case("truncated", ("m.slm", "truncated or corrupted"), readers=ALL, raw=lambda b: b[:100])
model_case("truncated-half", ("m.slm",), readers=("inspect", "golden"), raw=lambda b: b[:len(b) // 2])
model_case("not-a-zip", ("m.slm", "truncated or corrupted"), readers=("inspect", "generate"), raw=b"hello\n" * 50)
model_case("no-model-json", ("m.slm", "no model.json"), readers=("inspect", "export-nir"),
           raw=lambda b: write_zip(io.BytesIO(), {"x.txt": b"1"}).getvalue())
model_case("json-not-utf8", ("m.slm", "not valid JSON"), raw_json=b"\xff\xfe{")
model_case("json-syntax", ("m.slm", "not valid JSON"), readers=("inspect", "golden"), raw_json=b"{\"format\": ")
model_case("json-a-list", ("m.slm", "format", "spikeloom.model"), raw_json=b"[1, 2]")
model_case("json-deeply-nested", ("m.slm", "model.json", "nested too deeply"), readers=ALL,
           raw_json=b"{\"extra\": " + b"[" * 100000 + b"]" * 100000 + b"}")
model_case("json-nested-extra", ("m.slm", "model.json", "nested too deeply", "at most 32 levels"),
           meta=setter(["extra"], json.loads("[" * 200 + "]" * 200)))
# the split seed the model file's free-form extra gives a dataset run (was a traceback)
model_case("extra-data-seed-text", ("extra.data_seed", "--data-seed", "must be an integer", "'abc'"),
           readers=("cosim-dataset",), meta=setter(["extra", "data_seed"], "abc"))
model_case("extra-data-seed-negative", ("extra.data_seed", "= -1", "[0, 4294967295]"),
           readers=("cosim-dataset",), meta=setter(["extra", "data_seed"], -1))
model_case("extra-image-size", ("the model file's extra.image_size = -1", "[1, 1024]"),
           readers=("cosim-folder",), meta=setter(["extra", "image_size"], -1))
model_case("extra-channels", ("the model file's extra.channels = 'x'", "1 (grey levels), 3 (RGB)"),
           readers=("cosim-folder",), meta=setter(["extra", "channels"], "x"))
model_case("format-wrong", ("m.slm", "format", "'other'"), meta=setter(["format"], "other"))
model_case("version-3", ("m.slm", "version 3", "1..2"), readers=("inspect", "generate"), meta=setter(["version"], 3))
model_case("version-bool", ("m.slm", "version True"), meta=setter(["version"], True))
model_case("requires-unknown", ("m.slm", "'teleport'"), meta=setter(["requires"], ["teleport"]))
model_case("array-member-missing", ("m.slm", "layers/0/weight.npy", "missing"),
           raw=lambda b: write_zip(io.BytesIO(), {k: v for k, v in members(b).items()
                                                   if k != "layers/0/weight.npy"}).getvalue())
model_case("array-member-garbage", ("m.slm", "layers/0/bias.npy", "corrupted"), readers=("inspect", "golden"),
           layers__0__bias_npy=b"not an npy")
model_case("array-member-float", ("m.slm", "layers/0/bias.npy", "float64", "integers"),
           layers__0__bias_npy=npy(np.zeros(5, np.float64)))
model_case("array-member-object", ("m.slm", "layers/0/bias.npy", "holds object values", "integers"),
           layers__0__bias_npy=raw_npy({"descr": "|O", "fortran_order": False, "shape": (5,)}, pickle.dumps([1] * 5)))
model_case("array-member-huge-header", ("m.slm", "layers/0/weight.npy", "declares shape"),
           readers=("inspect", "golden"),
           layers__0__weight_npy=raw_npy({"descr": "<i4", "fortran_order": False, "shape": (10 ** 11, 6)}))
model_case("zip-bomb", ("m.slm", "layers/0/weight.npy", "inflates to 100.0 MiB", "at most 64 MiB"),
           readers=("inspect", "export", "golden"), raw=lambda b: bomb(b, {"layers/0/weight.npy": 100}))
model_case("zip-bomb-json", ("m.slm", "model.json", "inflates to 20.0 MiB", "at most 16 MiB"),
           raw=lambda b: bomb(b, {"model.json": 20}))
model_case("zip-bomb-total", ("m.slm", "inflate to 300.0 MiB in all", "at most 256 MiB"),
           raw=lambda b: bomb(b, {f"layers/{i}/{a}.npy": 60 for i, a in ((0, "weight"), (0, "bias"), (0, "threshold"),
                                                                         (1, "weight"), (1, "bias"))}))
# wrong JSON types
for nm, path, value, needles in (
        ("layers-number", ["layers"], 5, ("'layers'", "5")),
        ("layers-object", ["layers"], {"a": 1}, ("'layers'",)),
        ("layer-a-number", ["layers", 0], 3, ("layers[0]", "3")),
        ("input-a-list", ["input"], [], ("'input'",)),
        ("input-shape-number", ["input", "shape"], 6, ("input.", "'shape'", "6")),
        ("input-shape-string", ["input", "shape"], "6", ("input.", "'shape'")),
        ("input-shape-bool", ["input", "shape"], [True, 6], ("input.shape", "True", "positive integers")),
        ("input-shape-empty", ["input", "shape"], [], ("input.shape", "[]")),
        ("input-shape-zero", ["input", "shape"], [0], ("input.shape", "[0]")),
        ("input-shape-float", ["input", "shape"], [6.0], ("input.shape", "6.0")),
        ("input-bits-string", ["input", "bits"], "3", ("input.", "'bits'", "integer", "'3'")),
        ("input-bits-0", ["input", "bits"], 0, ("input.bits = 0", "[1, 16]")),
        ("input-bits-17", ["input", "bits"], 17, ("input.bits = 17", "[1, 16]")),
        ("t-max-string", ["t_max"], "4", ("'t_max'", "integer", "'4'")),
        ("t-max-float", ["t_max"], 4.0, ("'t_max'", "integer", "4.0")),
        ("t-max-0", ["t_max"], 0, ("t_max = 0", "[1, 64]")),
        ("t-max-65", ["t_max"], 65, ("t_max = 65", "[1, 64]")),
        ("t-max-bool", ["t_max"], True, ("'t_max'", "integer", "True")),
        ("exit-threshold-negative", ["exit", "threshold"], -1, ("exit.threshold = -1", ">= 0")),
        ("exit-threshold-null", ["exit", "threshold"], None, ("exit.", "'threshold'", "None")),
        ("exit-criterion", ["exit", "criterion"], "entropy", ("exit.criterion = 'entropy'", "'margin'")),
        ("exit-a-number", ["exit"], 7, ("'exit'", "7")),
        ("name-number", ["name"], 3, ("'name'", "3")),
        ("classes-number", ["classes"], 5, ("classes", "5", "list")),
        ("classes-count", ["classes"], ["a", "b"], ("2 class names", "3 outputs")),
        ("classes-not-strings", ["classes"], [1, 2, 3], ("classes", "[1, 2, 3]", "strings")),
        ("extra-a-list", ["extra"], [1], ("extra", "[1]", "object")),
        ("neuron-a-number", ["neuron"], 3, ("'neuron'", "3")),
        ("neuron-leak-shift-9", ["neuron", "leak_shift"], 9, ("leak_shift = 9", "[0, 8]")),
        ("neuron-leak-shift-float", ["neuron", "leak_shift"], 1.5, ("'leak_shift'", "integer", "1.5")),
        ("neuron-membrane-bits-3", ["neuron", "membrane_bits"], 3, ("membrane_bits = 3", "[4, 32]")),
        ("neuron-reset-bogus", ["neuron", "reset"], "later", ("neuron.reset = 'later'", "zero")),
        ("neuron-reset-missing", ["neuron", "reset"], DELETE, ("missing field", "'reset'")),
        ("layer-weight-bits-1", ["layers", 0, "weight_bits"], 1, ("weight_bits = 1", "[2, 16]")),
        ("layer-weight-bits-float", ["layers", 0, "weight_bits"], 6.5, ("'weight_bits'", "integer", "6.5")),
        ("layer-weight-bits-bool", ["layers", 0, "weight_bits"], True, ("'weight_bits'", "integer", "True")),
        ("layer-role-bogus", ["layers", 0, "role"], "hidden", ("layers[0].role = 'hidden'", "analog")),
        ("layer-role-swapped", ["layers", 1, "role"], "spiking", ("role 'spiking'", "expected 'output'")),
        ("layer-kind-bogus", ["layers", 0, "kind"], "lstm", ("layers[0].kind = 'lstm'", "dense")),
        ("layer-name-number", ["layers", 0, "name"], 7, ("layers[0].", "'name'", "7")),
        # (a space broke the Verilog; a quote the exported test bench's messages)
        ("layer-name-space", ["layers", 0, "name"], "fc 1", ("layer 0: name = 'fc 1'", "ASCII letters", "'.'")),
        ("layer-name-quote", ["layers", 0, "name"], 'fc"1', ("layer 0: name = 'fc\"1'", "1 to 100")),
        ("layer-name-long", ["layers", 0, "name"], "f" * 101, ("layer 0: name = 'fff", "1 to 100")),
        ("layer-arrays-list", ["layers", 0, "arrays"], [], ("layers[0].", "'arrays'")),
        ("layer-array-name-number", ["layers", 0, "arrays", "weight"], 3, ("layers[0].arrays.", "'weight'", "3")),
        ("layer-array-name-absent", ["layers", 0, "arrays", "weight"], "nowhere.npy", ("'nowhere.npy'", "missing")),
        ("layer-in-features", ["layers", 0, "in_features"], 7, ("in_features = 7", "shape (5, 6)")),
        ("layer-out-features", ["layers", 0, "out_features"], 4, ("out_features = 4", "shape (5, 6)")),
        ("layer-acc-bits", ["layers", 0, "acc_bits"], 99, ("acc_bits = 99", "bits")),
        ("scale-string", ["layers", 0, "scale"], "abc", ("layers[0].", "'scale'", "wrong type", "'abc'")),
        ("scale-number", ["layers", 0, "scale"], 3, ("layers[0].", "'scale'", "wrong type", "int (3)")),
        ("scale-nan", ["layers", 0, "scale"], [math.nan], ("layer 0 ('fc1')", "scale value nan", "finite and > 0")),
        ("scale-inf", ["layers", 0, "scale"], [math.inf], ("layer 0 ('fc1')", "scale value inf", "finite and > 0")),
        ("scale-text-items", ["layers", 0, "scale"], ["a"], ("layer 0 ('fc1')", "scale value 'a'", "list of numbers")),
        ("scale-bool", ["layers", 0, "scale"], [True], ("layer 0 ('fc1')", "scale value True", "list of numbers")),
        ("scale-negative", ["layers", 0, "scale"], [-1.0], ("layer 0 ('fc1')", "scale value -1.0", "finite and > 0")),
        ("scale-length", ["layers", 0, "scale"], [1.0, 2.0], ("layer 0 ('fc1')", "scale = 2 values", "length 0, 1 or 5")),
        ("input-scale-wrong", ["input", "scale"], 0.5, ("input.scale = 0.5", "reads only 0.142857")),
        ("input-signed", ["input", "signed"], True, ("input.signed = True", "reads only False")),
        ("fire-when-other", ["neuron", "fire_when"], "u > threshold", ("neuron.fire_when = 'u > threshold'",
                                                                      "'u >= threshold'")),
        ("neuron-model-other", ["neuron", "model"], "izhikevich", ("neuron.model = 'izhikevich'", "'lif'")),
        ("exit-rule-other", ["exit", "rule"], "exit when bored", ("exit.rule", "'exit when bored'")),
        ("unknown-top", ["signed_inputs"], True, ("unknown field 'signed_inputs'", "extra")),
        ("unknown-layer", ["layers", 0, "dilation"], 2, ("unknown field layers[0].'dilation'", "extra")),
        ("unknown-neuron", ["neuron", "threshold_mode"], "adaptive", ("unknown field neuron.'threshold_mode'",)),
        ("unknown-input", ["input", "offset"], 1, ("unknown field input.'offset'",)),
        ("unknown-exit", ["exit", "patience"], 2, ("unknown field exit.'patience'",)),
        ("dense-with-stride", ["layers", 0, "stride"], 2, ("layers[0]", "'stride'", "conv")),
):
    model_case(nm, ("m.slm",) + needles, meta=setter(path, value))


def dup_names(d):
    d["layers"][1]["name"] = d["layers"][0]["name"]


model_case("duplicate-layer-names", ("m.slm", "name 'fc1'", "twice"), readers=("inspect", "golden", "generate"),
           meta=dup_names)
model_case("zero-neuron-layer", ("m.slm", "layer 0", "no neurons"), readers=("inspect", "golden"),
           meta=lambda d: (d["layers"][0].update(out_features=0), d["layers"][1].update(in_features=0)),
           layers__0__weight_npy=npy(np.zeros((0, 6), np.int32)), layers__0__bias_npy=npy(np.zeros(0, np.int32)),
           layers__0__threshold_npy=npy(np.zeros(0, np.int32)),
           layers__1__weight_npy=npy(np.zeros((3, 0), np.int32)))
model_case("zero-input-layer", ("m.slm", "input.shape"), meta=setter(["input", "shape"], [0, 6]))
model_case("weight-out-of-range", ("m.slm", "weight value 99", "6-bit"),
           layers__0__weight_npy=npy(np.full((5, 6), 99, np.int32)))
model_case("threshold-zero", ("m.slm", "thresholds must lie in [1,"),
           layers__0__threshold_npy=npy(np.zeros(5, np.int32)))
model_case("bias-shape", ("m.slm", "bias shape (4,)"), layers__0__bias_npy=npy(np.zeros(4, np.int32)))
model_case("weight-3d", ("m.slm", "weight", "2-d integer array"), readers=("inspect", "golden"),
           layers__0__weight_npy=npy(np.zeros((5, 6, 1), np.int32)))

# conv geometry
CONV_BAD = (
    ("stride-0", [0, "stride"], 0, ("layer 0 ('conv1')", "stride = 0", ">= 1")),
    ("stride-negative", [0, "stride"], -1, ("layer 0 ('conv1')", "stride = -1", ">= 1")),
    ("stride-bool", [0, "stride"], True, ("layers[0].", "'stride'", "integer", "True")),
    ("stride-float", [0, "stride"], 1.0, ("layers[0].", "'stride'", "integer", "1.0")),
    ("pool-0", [1, "pool"], 0, ("layer 1 ('conv2')", "pool = 0", ">= 1")),
    ("pool-negative", [1, "pool"], -2, ("layer 1 ('conv2')", "pool = -2", ">= 1")),
    ("pool-huge", [1, "pool"], 50, ("layer 1 ('conv2')", "pool = 50", "larger than")),
    ("padding-negative", [0, "padding"], -1, ("layer 0 ('conv1')", "padding = -1", "[0, 2]")),
    ("padding-too-large", [0, "padding"], 3, ("layer 0 ('conv1')", "padding = 3", "[0, 2]")),
    ("in-shape-bool", [0, "in_shape"], [True, 6, 6], ("layers[0].in_shape", "True")),
    ("in-shape-short", [0, "in_shape"], [6, 6], ("layers[0].in_shape", "[6, 6]")),
    ("in-shape-number", [0, "in_shape"], 6, ("layers[0].", "'in_shape'", "6")),
    ("in-shape-tiny", [0, "in_shape"], [1, 1, 1], ("layer 0 ('conv1')", "in_shape (1, 1, 1)", "(1, 6, 6)")),
    ("out-shape-wrong", [1, "out_shape"], [5, 2, 2], ("layers[1].out_shape = [5, 2, 2]", "[5, 3, 3]")),
    ("kernel-mismatch", [0, "kernel"], 5, ("layers[0].kernel = 5", "shape (4, 1, 3, 3)")),
    ("shortcut-stride-0", [1, "shortcut", "stride"], 0, ("layer 1 ('conv2')", "shortcut_stride = 0", ">= 1")),
    ("shortcut-unknown-source", [1, "shortcut", "from"], "conv9", ("shortcut = 'conv9'", "earlier layer")),
    ("shortcut-a-list", [1, "shortcut"], [], ("layers[1].", "'shortcut'")),
    ("pool-op-without-requires", [1, "pool_op"], "sum", ("layers[1].pool_op", "sum_pool")),
)
for nm, (i, *rest), value, needles in CONV_BAD:
    model_case(f"conv-{nm}", ("m.slm",) + needles, kind="conv", readers=("inspect", "generate"),
               meta=setter(["layers", i, *rest], value))
model_case("conv-kernel-larger-than-map", ("m.slm", "layer 0 ('conv1')", "kernel 9", "empty output"), kind="conv",
           meta=lambda d: d["layers"][0].update(kernel=9, padding=0),
           layers__0__weight_npy=npy(np.ones((4, 1, 9, 9), np.int32)))
model_case("conv-output-layer", ("m.slm", "output layer must be 'dense'"), kind="conv",
           meta=lambda d: d["layers"][2].update(kind="conv", in_shape=[5, 3, 3], stride=1, padding=0, pool=1,
                                                 kernel=1, out_shape=[3, 3, 3], out_features=27),
           layers__2__weight_npy=npy(np.ones((3, 5, 1, 1), np.int32)))


# --------------------------------------------------------------------------- .npy inputs (golden --input)

NPY_BAD = {
    "zero-bytes": (b"", ("x.npy", "empty file")),
    "text": (b"1 2 3 4 5 6\n", ("x.npy", "not a .npy file")),
    "truncated-header": (raw_npy({"descr": "<i8", "fortran_order": False, "shape": (2, 6)})[:20], ("x.npy",)),
    "truncated-data": (raw_npy({"descr": "<i8", "fortran_order": False, "shape": (2, 6)}, b"\0" * 40),
                       ("x.npy", "truncated")),
    "huge-header": (raw_npy({"descr": "<i8", "fortran_order": False, "shape": (10 ** 12, 6)}),
                    ("x.npy", "shape (1000000000000, 6)")),
    "huge-header-overflow": (raw_npy({"descr": "<i8", "fortran_order": False, "shape": (2 ** 62, 2 ** 62)}),
                             ("x.npy", "shape")),
    "huge-header-square": (raw_npy({"descr": "<i8", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)}),
                           ("x.npy", "shape (1000000, 1000000)", "8000000000000 bytes")),
    "object-dtype": (raw_npy({"descr": "|O", "fortran_order": False, "shape": (2, 6)}, pickle.dumps(list(range(12)))),
                     ("x.npy", "object")),
    "empty-batch": (npy(np.zeros((0, 6), np.int64)), ("x.npy", "no images", "(0, 6)")),
    "empty-1d": (npy(np.zeros((0,), np.int64)), ("x.npy",)),
    "scalar": (npy(np.int64(3)), ("x.npy", "shape ()")),
    "wrong-width": (npy(np.zeros((2, 7), np.int64)), ("7 values per image", "expects 6")),
    "version-3": (b"\x93NUMPY\x03\x00" + raw_npy({"descr": "<i8", "fortran_order": False, "shape": (2, 6)})[8:],
                  ("x.npy", "version (3, 0)")),
    "bad-header-dict": (raw_npy({"descr": "<i8", "shape": (2, 6)}), ("x.npy", "not a .npy file")),
    "bad-descr": (raw_npy({"descr": "<q9", "fortran_order": False, "shape": (2, 6)}), ("x.npy", "not a .npy file")),
    "int8-negative": (npy(np.full((2, 6), -3, np.int8)), ("min -3", "[0, 7]")),
    "float-fraction": (npy(np.full((2, 6), 0.5)), ("x.npy", "float64", "integer")),
    "float-whole": (npy(np.ones((2, 6))), ("x.npy", "float64", "integer")),
    "complex": (npy(np.ones((2, 6), np.complex64)), ("x.npy", "complex64", "integer")),
    "bool": (npy(np.ones((2, 6), bool)), ("x.npy", "bool", "integer")),
    "strings": (npy(np.full((2, 6), "a")), ("x.npy", "<U1", "integer")),
    "structured": (npy(np.zeros((2, 6), [("a", "i4")])), ("x.npy", "integer")),
    "negative": (npy(np.full((2, 6), -1, np.int64)), ("-1", "[0, 7]")),
    "too-large": (npy(np.full((2, 6), 8, np.int64)), ("8", "[0, 7]")),
    "uint64-huge": (npy(np.full((2, 6), 2 ** 63, np.uint64)), ("9223372036854775808", "[0, 7]")),
}


def npy_case(data, needles):
    def build(tmp):
        (tmp / "x.npy").write_bytes(data)
        m = tmp / "m.slm"
        m.write_bytes(base_bytes("dense"))
        return ["golden", m, "--input", tmp / "x.npy"], needles
    return build, needles


cases("npy", {k: npy_case(*v) for k, v in NPY_BAD.items()})


@case("npy", "missing", "nothere.npy", "does not exist")
def _npy_missing(tmp):
    (tmp / "m.slm").write_bytes(base_bytes("dense"))
    return ["golden", tmp / "m.slm", "--input", tmp / "nothere.npy"]


@case("npy", "a-folder", "d.npy", "not a file")
def _npy_folder(tmp):
    (tmp / "m.slm").write_bytes(base_bytes("dense"))
    (tmp / "d.npy").mkdir()
    return ["golden", tmp / "m.slm", "--input", tmp / "d.npy"]


# --------------------------------------------------------------------------- golden options

def golden_opts(*opts):
    def build(tmp):
        (tmp / "m.slm").write_bytes(base_bytes("dense"))
        return ["golden", tmp / "m.slm", "--input", good_npy(tmp), *opts]
    return build


cases("golden", {
    "exit-threshold-negative": (golden_opts("--exit-threshold", "-1"), ("--exit-threshold = -1", ">= 0")),
    "pes-0": (golden_opts("--counters", "--pes", "0"), ("--pes = 0", "[1, 64]")),
    "pes-65": (golden_opts("--pes", "65"), ("--pes = 65", "[1, 64]")),
    "ports-missing": (golden_opts("--ports", "nope.json"), ("--ports nope.json", "cannot read")),
    "model-missing": (lambda tmp: ["golden", tmp / "none.slm", "--input", good_npy(tmp)],
                      ("none.slm", "does not exist")),
    "model-a-folder": (lambda tmp: ["golden", tmp, "--input", good_npy(tmp)], ("is not a file",)),
})


# --------------------------------------------------------------------------- image folders, CIFAR

def png(tmp, path, color=(10, 20, 30)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


def folder_set(tmp, classes=("a", "b"), per_class=6):
    root = tmp / "imgs"
    for c in classes:
        for i in range(per_class):
            png(tmp, root / c / f"{i}.png", (i * 20, 10, 30))
    return root


def train_on(spec, *opts):
    return ["train", "--dataset", spec, "--build", "build", "--epochs", "1", *opts]


def one_class(tmp):
    return train_on(f"folder:{folder_set(tmp, ('only',))}")


def corrupt_class(tmp):
    """Every image of class b corrupt: one corrupt image is skipped and counted (tests/test_fit.py),
    a class with none readable is an error."""
    root = folder_set(tmp)
    for p in (root / "b").iterdir():
        p.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return train_on(f"folder:{root}")


def no_images(tmp):
    root = folder_set(tmp)
    for p in (root / "b").iterdir():
        p.unlink()
    (root / "b" / "notes.txt").write_text("x")
    return train_on(f"folder:{root}")


def folder_is_file(tmp):
    (tmp / "f").write_text("x")
    return train_on(f"folder:{tmp / 'f'}")


def empty_folder(tmp):
    (tmp / "e").mkdir()
    return train_on(f"folder:{tmp / 'e'}")


def too_few(tmp):
    return train_on(f"folder:{folder_set(tmp, per_class=1)}")


def image_size(n):
    return lambda tmp: train_on(f"folder:{folder_set(tmp)}", "--image-size", str(n))


cases("images", {
    "one-class": (one_class, ("imgs", "1 class", "at least 2")),
    "corrupt-class": (corrupt_class, ("imgs/b", "no readable image", "6 unreadable", "0.png")),
    "channels-2": (lambda tmp: train_on(f"folder:{folder_set(tmp)}", "--channels", "2"),
                   ("--channels = 2", "1 (grey levels), 3 (RGB)")),
    "channels-digits": (lambda tmp: train_on("digits", "--channels", "1"), ("--channels = 1", "image folders")),
    "class-without-images": (no_images, ("imgs/b", "no images")),
    "folder-is-a-file": (folder_is_file, ("is not a directory",)),
    "empty-folder": (empty_folder, ("no class subfolders",)),
    "too-few-images": (too_few, ("too few samples",)),
    "image-size-0": (image_size(0), ("--image-size = 0", "[1, 1024]")),
    "image-size-negative": (image_size(-3), ("--image-size = -3", "[1, 1024]")),
    "image-size-huge": (image_size(100000), ("--image-size = 100000", "[1, 1024]")),
    "image-size-digits": (lambda tmp: train_on("digits", "--image-size", "16"), ("--image-size = 16", "image folders")),
    "dataset-missing": (lambda tmp: train_on("nowhere"), ("'nowhere'", "does not exist")),
    "dataset-missing-folder": (lambda tmp: train_on("folder:nowhere"), ("nowhere", "does not exist")),
})


CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def cifar(tmp, edit=None, name=None):
    """A tiny CIFAR-10 folder (4 images per batch); ``edit(batch)`` changes file ``name``."""
    root = tmp / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    files = {f: {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 0, 1]}
             for f in CIFAR_FILES}
    files["batches.meta"] = {b"label_names": [b"cat", b"dog"]}
    for f, d in files.items():
        if f == name and edit is not None:
            d = edit(d)
        (root / f).write_bytes(d if isinstance(d, bytes) else pickle.dumps(d))
    return train_on(f"cifar:{root}")


def cifar_edit(name, edit, needles):
    return (lambda tmp: cifar(tmp, edit, name)), needles


def without(key):
    return lambda d: {k: v for k, v in d.items() if k != key}


def with_(key, value):
    return lambda d: {**d, key: value}


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def cifar_missing(tmp):
    argv = cifar(tmp)
    (tmp / "cifar-10-batches-py" / "data_batch_3").unlink()
    return argv


cases("cifar", {
    "no-data-key": cifar_edit("data_batch_1", without(b"data"), ("data_batch_1", "'data'")),
    "no-labels-key": cifar_edit("test_batch", without(b"labels"), ("test_batch", "'labels'")),
    "data-wrong-shape": cifar_edit("data_batch_2", with_(b"data", np.zeros((4, 100), np.uint8)),
                                   ("data_batch_2", "(N, 3072)", "(4, 100)")),
    "data-1d": cifar_edit("data_batch_2", with_(b"data", np.zeros(3072, np.uint8)), ("data_batch_2", "(3072,)")),
    "data-float": cifar_edit("data_batch_2", with_(b"data", np.full((4, 3072), 0.5)), ("data_batch_2", "uint8")),
    "data-out-of-range": cifar_edit("data_batch_2", with_(b"data", np.full((4, 3072), 300)),
                                    ("data_batch_2", "uint8")),
    "labels-short": cifar_edit("data_batch_4", with_(b"labels", [0, 1]), ("data_batch_4", "4 images", "(2,)")),
    "labels-out-of-range": cifar_edit("data_batch_5", with_(b"labels", [0, 1, 2, 1]), ("data_batch_5", "0..2",
                                                                                       "2 class names")),
    "labels-strings": cifar_edit("data_batch_5", with_(b"labels", ["a", "b", "c", "d"]), ("data_batch_5", "labels")),
    "not-a-dict": cifar_edit("data_batch_1", lambda d: [1, 2], ("data_batch_1", "list", "not a dict")),
    "truncated": cifar_edit("data_batch_1", lambda d: pickle.dumps(d)[:50], ("data_batch_1", "truncated or corrupt")),
    "evil-global": cifar_edit("data_batch_1", lambda d: pickle.dumps(Evil()), ("data_batch_1", "refusing")),
    "meta-no-names": cifar_edit("batches.meta", lambda d: {b"other": 1}, ("batches.meta", "'label_names'")),
    "meta-names-empty": cifar_edit("batches.meta", lambda d: {b"label_names": []}, ("batches.meta", "'label_names'")),
    "missing-batch": (cifar_missing, ("data_batch_3", "missing")),
})


# --------------------------------------------------------------------------- tech tables (run --tech)

def tech(edit=None, raw=None):
    def build(tmp):
        from spikeloom.model.power import DEFAULT_TECH

        d = json.loads(DEFAULT_TECH.read_text())
        if edit is not None:
            d = edit(d) or d
        (tmp / "t.json").write_text(raw if raw is not None else json.dumps(d))
        return ["run", "--build", "build", "--tech", "t.json"]
    return build


def tech_set(key, value):
    def edit(d):
        if value is DELETE:
            del d[key]
        else:
            d[key] = value
    return tech(edit)


def tech_curve_set(value):
    def edit(d):
        curve = next(k for k, v in d.items() if isinstance(v, dict) and k not in ("sources",))
        d[curve] = value
    return tech(edit)


cases("tech", {
    "missing-file": (lambda tmp: ["run", "--build", "build", "--tech", "none.json"], ("none.json", "does not exist")),
    "a-folder": (lambda tmp: (tmp / "td").mkdir() or ["run", "--build", "build", "--tech", "td"], ("td",)),
    "not-json": (tech(raw="{oops"), ("t.json", "not a readable JSON")),
    "a-list": (tech(raw="[]"), ("t.json", "JSON object")),
    "format-wrong": (tech_set("format", "other"), ("t.json", "'other'", "'spikeloom.tech'")),
    "version-2": (tech_set("version", 2), ("t.json", "/2", "'spikeloom.tech'/1")),
    "unit-nj": (tech_set("unit", "nJ"), ("t.json", "unit = 'nJ'", "'pJ'")),
    "no-sources": (tech_set("sources", DELETE), ("t.json", "'sources'")),
    "clock-negative": (tech_set("clock_mhz", -5), ("t.json", "clock_mhz", "-5")),
    "clock-string": (tech_set("clock_mhz", "fast"), ("t.json", "clock_mhz", "'fast'", "number")),
    "clock-bool": (tech_set("clock_mhz", True), ("t.json", "clock_mhz", "True", "number")),
    "clock-nan": (tech(raw=None, edit=lambda d: d.update(clock_mhz=math.nan)), ("t.json", "clock_mhz", "nan")),
    "clock-missing": (tech_set("clock_mhz", DELETE), ("t.json", "'clock_mhz'")),
    "register-negative": (tech_set("register_pj_per_bit", -1.0), ("t.json", "register_pj_per_bit", "-1.0")),
    "curve-empty": (tech_curve_set({}), ("t.json", "non-empty object")),
    "curve-a-number": (tech_curve_set(3), ("t.json", "non-empty object", "3")),
    "curve-bad-key": (tech_curve_set({"big": 1.0}), ("t.json", "'big'")),
    "curve-negative": (tech_curve_set({"8": -1.0}), ("t.json", "-1.0")),
    "curve-string-value": (tech_curve_set({"8": "x"}), ("t.json", "'x'", "number")),
    "unknown-field": (tech_set("dram_pj", 5), ("t.json", "unknown field 'dram_pj'")),
    "deeply-nested": (tech(raw="[" * 100000 + "]" * 100000), ("t.json", "not a readable JSON", "RecursionError")),
    "too-large": (tech(raw=" " * (2 << 20) + "{}"), ("t.json", "2097154 bytes", "at most 1048576")),
    "empty-file": (tech(raw=""), ("t.json", "not a readable JSON")),
})


# --------------------------------------------------------------------------- options

def opts(cmd, *args):
    return lambda tmp: [cmd, "--build", "build", *args]


PIPE = ("run", "train", "quantize", "evaluate")
OPTION_BAD = {
    "seed-negative": (("--seed", "-1"), ("--seed = -1", "[0, 4294967295]")),
    "seed-huge": (("--seed", str(2 ** 70)), ("--seed = 1180591620717411303424", "[0, 4294967295]")),
    "data-seed-negative": (("--data-seed", "-1"), ("--data-seed = -1", "[0, 4294967295]")),
    "data-seed-huge": (("--data-seed", str(2 ** 40)), ("--data-seed = 1099511627776", "[0, 4294967295]")),
    "t-max-0": (("--t-max", "0"), ("--t-max = 0", "[1, 64]")),
    "epochs-0": (("--epochs", "0"), ("--epochs = 0", "[1, 10000]")),
    "epochs-huge": (("--epochs", "10000000000"), ("--epochs = 10000000000", "[1, 10000]")),
    "weight-bits-17": (("--weight-bits", "17"), ("--weight-bits = 17", "[2, 16]")),
    "input-bits-0": (("--input-bits", "0"), ("--input-bits = 0", "[1, 16]")),
    "membrane-bits-40": (("--membrane-bits", "40"), ("--membrane-bits = 40", "[4, 32]")),
    "arch-bogus": (("--arch", "transformer"), ("--arch = 'transformer'", "'mlp'")),
    "loss-bogus": (("--loss", "hinge"), ("--loss = 'hinge'", "'early'")),
    "target-drop-1": (("--target-drop", "1.5"), ("--target-drop = 1.5", "[0, 1)")),
    "target-drop-nan": (("--target-drop", "nan"), ("--target-drop = nan", "[0, 1)")),
    "beta-nan": (("--beta", "nan"), ("--beta = nan", "[0, 1]")),
    "nir-without-run": (("--dt", "0.1"), ("unrecognized arguments: --dt 0.1", "`spikeloom run`")),
}
for cmd in PIPE:
    for nm, (args, needles) in OPTION_BAD.items():
        if cmd != "train" and nm in ("arch-bogus", "loss-bogus", "target-drop-nan", "beta-nan", "epochs-0",
                                     "membrane-bits-40", "t-max-0") or (cmd == "run" and nm == "nir-without-run"):
            continue  # one command is enough for the config dataclasses' own checks
        if cmd == "train" and args[0] in ("--weight-bits", "--input-bits", "--target-drop"):
            # options of the steps after training: train does not take them (and says which commands do)
            needles = (f"train: unrecognized arguments: {' '.join(args)}", "`spikeloom quantize`")
        CASES.append(pytest.param(opts(cmd, *args), needles, id=f"option-{cmd}-{nm}"))

RUN_BAD = {
    "sim-bogus": (("--sim", "modelsim"), ("--sim = 'modelsim'", "verilator, icarus")),
    "pes-0": (("--pes", "0"), ("--pes = 0", "[1, 64]")),
    "cosim-images-0": (("--cosim-images", "0"), ("--cosim-images = 0", ">= 1")),
    "cosim-images-negative": (("--cosim-images", "-4"), ("--cosim-images = -4", ">= 1")),
    "nir-missing": (("--nir", "none.nir", "--dt", "1e-4"), ("--nir none.nir", "no such file")),
    "nir-dt-0": (("--nir", "none.nir", "--dt", "0"), ("--dt = 0.0", "> 0")),
    "nir-dt-inf": (("--nir", "none.nir", "--dt", "inf"), ("--dt = inf", "> 0")),
    "nir-with-arch": (("--nir", "none.nir", "--dt", "1", "--arch", "vgg"), ("--arch", "with --nir")),
    "nir-t-max-0": (("--nir", "none.nir", "--dt", "1", "--t-max", "0"), ("--t-max = 0", "[1, 64]")),
}
for nm, (args, needles) in RUN_BAD.items():
    CASES.append(pytest.param(opts("run", *args), needles, id=f"option-run-{nm}"))


def graph(tmp):
    p = tmp / "g.nir"
    p.write_bytes(b"not hdf5")
    return p


IMPORT_BAD = {
    "dt-0": (("--dt", "0"), ("--dt = 0.0", "> 0")),
    "dt-negative": (("--dt", "-1"), ("--dt = -1.0", "> 0")),
    "dt-nan": (("--dt", "nan"), ("--dt = nan", "> 0")),
    "reset-bogus": (("--dt", "1", "--reset", "soft"), ("--reset = 'soft'", "subtract_next")),
    "t-max-65": (("--dt", "1", "--t-max", "65"), ("--t-max = 65", "[1, 64]")),
    "input-bits-0": (("--dt", "1", "--input-bits", "0"), ("--input-bits = 0", "[1, 16]")),
    "weight-bits-1": (("--dt", "1", "--weight-bits", "1"), ("--weight-bits = 1", "[2, 16]")),
    "membrane-bits-64": (("--dt", "1", "--membrane-bits", "64"), ("--membrane-bits = 64", "[4, 32]")),
    "finetune-no-dataset": (("--dt", "1", "--finetune", "2"), ("--finetune 2", "--dataset")),
    "target-drop-2": (("--dt", "1", "--target-drop", "2"), ("--target-drop = 2.0", "[0, 1)")),
    "seed-negative": (("--dt", "1", "--seed", "-5"), ("--seed = -5", "[0, 4294967295]")),
    "data-seed-negative": (("--dt", "1", "--data-seed", "-5", "--dataset", "digits"),
                           ("--data-seed = -5", "[0, 4294967295]")),
    "out-a-folder": (("--dt", "1", "-o", "."), ("-o .", "is a folder")),
    "graph-missing": (("--dt", "1", "--graph-override", "none.nir"), ("none.nir",)),
    "graph-not-hdf5": (("--dt", "1"), ("g.nir",)),
}


def import_case(args, needles):
    def build(tmp):
        a = list(args)
        g = graph(tmp)
        if "--graph-override" in a:
            i = a.index("--graph-override")
            g = a[i + 1]
            del a[i:i + 2]
        out = [] if "-o" in a else ["-o", "out.slm"]
        return ["import", g, *out, *a]
    return build, needles


cases("option-import", {k: import_case(*v) for k, v in IMPORT_BAD.items()})


def with_model(cmd, *args):
    def build(tmp):
        (tmp / "m.slm").write_bytes(base_bytes("dense"))
        return [cmd, "m.slm", *args]
    return build


cases("option", {
    "gpu-baseline-runs-0": (with_model("gpu-baseline", "--runs", "0"), ("--runs = 0", "[1, 100000]")),
    "gpu-baseline-runs-negative": (with_model("gpu-baseline", "--runs", "-3"), ("--runs = -3", "[1, 100000]")),
    "gpu-baseline-dataset-missing": (with_model("gpu-baseline", "--dataset", "nowhere"), ("'nowhere'",
                                                                                         "does not exist")),
    "export-nir-dt-0": (with_model("export-nir", "-o", "g.nir", "--dt", "0"), ("--dt = 0.0", "> 0")),
    "export-nir-form": (with_model("export-nir", "-o", "g.nir", "--form", "fast"), ("--form = 'fast'", "exact")),
    "export-nir-out-folder": (with_model("export-nir", "-o", "."), ("-o .", "is a folder")),
    "export-nir-under-a-file": (with_model("export-nir", "-o", "m.slm/g.nir"), ("-o m.slm/g.nir",
                                                                               "is a file, not a folder")),
    "generate-pes-0": (with_model("generate", "-o", "g", "--pes", "0"), ("--pes = 0", "[1, 64]")),
    "generate-pes-99": (with_model("generate", "-o", "g", "--pes", "99"), ("--pes = 99", "[1, 64]")),
    "export-pes-0": (with_model("export", "-o", "g", "--pes", "0"), ("--pes = 0", "[1, 64]")),
    "export-freq-0": (with_model("export", "-o", "g", "--freq", "0"), ("--freq", "0")),
    "inspect-missing": (lambda tmp: ["inspect", "none.slm"], ("none.slm", "does not exist")),
    "inspect-folder": (lambda tmp: ["inspect", "."], (".", "is not a file")),
})

PRUNE_BAD = {
    "pes-0": (("--pes", "0"), ("--pes = 0", "[1, 64]")),
    "rows-bogus": (("--rows", "nope"), ("rows = ['nope']", "dense-t4")),
    "rows-empty": (("--rows", ","), ("rows = []",)),
    "seed-negative": (("--seed", "-1"), ("--seed = -1", "[0, 4294967295]")),
    "data-seed-negative": (("--data-seed", "-1"), ("--data-seed = -1", "[0, 4294967295]")),
    "distill-2": (("--distill", "2"), ("--distill = 2.0", "[0, 1]")),
    "first-sparsity-2": (("--first-sparsity", "2"), ("--first-sparsity = 2.0", "[0, 1]")),
    "sim-bogus": (("--sim", "modelsim"), ("--sim = 'modelsim'", "verilator, icarus")),
    "net-bogus": (("--net", "lstm"), ("lstm",)),
    "device-bogus": (("--device", "tpu"), ("'tpu'", "cpu")),
    "image-size-0": (("--image-size", "0"), ("--image-size = 0", "[1, 1024]")),
    "cosim-images-0": (("--cosim-images", "0"), ("--cosim-images = 0", ">= 1")),
    "weight-bits-1": (("--weight-bits", "1"), ("--weight-bits = 1", "[2, 16]")),
    "epochs-0": (("--epochs", "0"), ("--epochs = 0", "[1, 10000]")),
    "qat-epochs-huge": (("--qat-epochs", "20000"), ("--qat-epochs = 20000", "[0, 10000]")),
    "seeds-0": (("--seeds", "0"), ("--seeds = 0", "[1, 64]")),
    "seeds-past-the-range": (("--seed", "4294967295", "--seeds", "2"), ("the last seed", "4294967296",
                                                                         "[0, 4294967295]")),
    "ramp-1": (("--ramp", "1"), ("--ramp = 1.0", "[0, 1)")),
    "workers-0": (("--seeds", "2", "--workers", "0"), ("--workers = 0", "[1, 256]")),
    "workers-with-scheduler": (("--seeds", "2", "--workers", "2", "--scheduler", "tcp://h:1"), ("--workers",
                                                                                                "--scheduler")),
    "scheduler-bogus": (("--scheduler", "nowhere"), ("--scheduler 'nowhere'", "tcp://")),
    "stp-sparsity-2": (("--stp-sparsity", "1.5"), ("--stp-sparsity = 1.5", "[0, 1]")),
    "head-sparsity-2": (("--head-sparsity", "2"), ("--head-sparsity = 2.0", "[0, 1]")),
    "seeds-3-dataset-bogus": (("--seeds", "3", "--dataset", "bogus"), ("dataset 'bogus'",)),
    "seeds-3-device-bogus": (("--seeds", "3", "--device", "tpu"), ("'tpu'", "cpu")),
}
for nm, (args, needles) in PRUNE_BAD.items():
    CASES.append(pytest.param(opts("prune", *args), needles, id=f"option-prune-{nm}"))


# --------------------------------------------------------------------------- output locations

def a_file(tmp):
    (tmp / "f").write_text("mine\n")
    return "f"


def out_case(argv, needles):
    def build(tmp):
        a_file(tmp)
        if any(str(x).endswith(".slm") for x in argv):
            (tmp / "m.slm").write_bytes(base_bytes("dense"))
        return [str(x).replace("GRAPH", str(graph(tmp))) for x in argv]
    return build, needles


cases("output", {
    "run-build-a-file": out_case(["run", "--build", "f"], ("--build f", "is a file")),
    "train-build-a-file": out_case(["train", "--build", "f"], ("--build f", "is a file")),
    "quantize-build-under-a-file": out_case(["quantize", "--build", "f/b"], ("--build f/b", "f is a file")),
    "evaluate-build-under-a-file": out_case(["evaluate", "--build", "f/b/c"], ("--build f/b/c", "f is a file")),
    "run-nir-build-a-file": out_case(["run", "--nir", "GRAPH", "--dt", "1", "--build", "f"], ("--build f", "is a file")),
    "prune-build-a-file": out_case(["prune", "--build", "f"], ("--build f", "is a file")),
    "prune-build-under-a-file": out_case(["prune", "--build", "f/p"], ("--build f/p", "f is a file")),
    "prune-out-a-folder": out_case(["prune", "--out", "."], ("--out .", "is a folder")),
    "prune-out-under-a-file": out_case(["prune", "--out", "f/p.json"], ("--out f/p.json", "f is a file")),
    "import-out-under-a-file": out_case(["import", "GRAPH", "--dt", "1", "-o", "f/m.slm"], ("-o f/m.slm", "f is a file")),
    "export-nir-out-under-a-file": out_case(["export-nir", "m.slm", "-o", "f/g.nir"], ("-o f/g.nir", "f")),
})


# --------------------------------------------------------------------------- the checks


class LongWorkStarted(AssertionError):
    pass


@pytest.fixture
def no_long_work(monkeypatch):
    """Training, generation, co-simulation and the GPU baseline's work trap: a bad input must be
    refused before any of them starts."""
    from spikeloom.flows import energy, steps
    from spikeloom.model import train

    def trap(*a, **k):
        raise LongWorkStarted("long work started before the bad input was refused")
    monkeypatch.setattr(train, "train_float", trap)
    monkeypatch.setattr(steps, "step_generate", trap)
    monkeypatch.setattr(steps, "step_cosim", trap)
    monkeypatch.setattr(energy, "gpu_baseline", trap)


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def assert_one_line_error(r, needles):
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and r.stderr.endswith("\n"), r.stderr
    assert lines[0].startswith("spikeloom: error: "), r.stderr
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])


@pytest.mark.parametrize("build, needles", CASES)
def test_bad_input(build, needles, tmp_path, monkeypatch, capsys, no_long_work):
    monkeypatch.chdir(tmp_path)
    got = build(tmp_path)
    argv, needles = got if isinstance(got, tuple) else (got, needles)
    before = listing(tmp_path)
    r = spikeloom_here(capsys, *argv)
    assert_one_line_error(r, needles)
    assert listing(tmp_path) == before, "files left behind"


def test_case_count():
    """The suite keeps its promise of at least 150 bad inputs."""
    assert len(CASES) >= 150, len(CASES)


# a few through a real process: the installed entry point, its interpreter start-up and exit status
@pytest.mark.parametrize("name", ["model-truncated-inspect", "model-zip-bomb-inspect", "npy-huge-header",
                                  "model-json-deeply-nested-inspect", "images-one-class"])
def test_bad_input_subprocess(name, tmp_path):
    build, needles = next((p.values[0], p.values[1]) for p in CASES if p.id == name)
    got = build(tmp_path)
    argv = got[0] if isinstance(got, tuple) else got
    needles = got[1] if isinstance(got, tuple) else needles
    before = listing(tmp_path)
    assert_one_line_error(spikeloom(*argv, cwd=tmp_path), needles)
    assert listing(tmp_path) == before, "files left behind"


def test_zip_bomb_refused_before_inflating(tmp_path):
    """A 100 MiB member (about 100 KB compressed) is refused from the zip directory: the peak of
    what Python and numpy allocate stays far below the inflated size."""
    import tracemalloc

    from spikeloom.model.errors import ModelFileError

    path = tmp_path / "m.slm"
    path.write_bytes(bomb(base_bytes("dense"), {"layers/0/weight.npy": 100}))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="inflates to 100.0 MiB"):
            modelfile.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
