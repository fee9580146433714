"""Model file: round trip, deterministic bytes, and a clear error for every kind of bad file."""

import json
import zipfile

import numpy as np
import pytest

from dataclasses import replace

from spikeloom.model import golden, modelfile
from spikeloom.model.config import LayerNeuron
from spikeloom.model.errors import ModelFileError
from spikeloom.model.randnet import random_conv_model, random_inputs, random_model


@pytest.fixture
def saved(tmp_path):
    m = random_model((10, 7, 3), seed=3)
    return m, modelfile.save(m, tmp_path / "m.slm")


def _rewrite(path, edit_meta=None, drop=None, replace=None):
    """Copy the archive with model.json edited / a member dropped or replaced."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    if edit_meta:
        meta = json.loads(members["model.json"])
        edit_meta(meta)
        members["model.json"] = json.dumps(meta)
    if drop:
        del members[drop]
    if replace:
        members.update(replace)
    out = path.with_name("edited.slm")
    with zipfile.ZipFile(out, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    return out


def test_round_trip_and_deterministic(saved, tmp_path):
    m, path = saved
    back = modelfile.load(path)
    assert back.neuron == m.neuron and back.exit_threshold == m.exit_threshold
    for a, b in zip(m.layers, back.layers):
        assert (a.weight == b.weight).all() and (a.bias == b.bias).all() and a.role == b.role
    again = modelfile.save(back, tmp_path / "again.slm")
    assert again.read_bytes() == path.read_bytes()


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        modelfile.load(tmp_path / "nope.slm")


def test_truncated(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        modelfile.load(path)


def test_corrupted_bytes(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    for i in range(60, 200):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=str(path.name)):
        modelfile.load(path)


def test_not_a_zip(tmp_path):
    p = tmp_path / "x.slm"
    p.write_text("hello")
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        modelfile.load(p)


def test_other_version(saved):
    _, path = saved
    bad = _rewrite(path, edit_meta=lambda m: m.update(version=3))
    with pytest.raises(ModelFileError, match=r"version 3; this spikeloom reads versions 1..2"):
        modelfile.load(bad)


def test_newer_file_names_the_feature_it_needs(saved):
    _, path = saved
    bad = _rewrite(path, edit_meta=lambda m: m.update(version=3, requires=["layer_neurons", "delays"]))
    with pytest.raises(ModelFileError, match=r"version 3 and requires 'delays'; .*layer_neurons, sum_pool"):
        modelfile.load(bad)
    bad = _rewrite(path, edit_meta=lambda m: m.update(version=2, requires=["synapse_delay"]))
    with pytest.raises(ModelFileError, match=r"requires 'synapse_delay'"):
        modelfile.load(bad)


def test_v1_model_is_written_as_version_1(saved):
    m, path = saved
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("model.json"))
    assert meta["version"] == 1 and "requires" not in meta and meta["neuron"]["leak_shift"] == 1


# neurons: each new option of version 2 (leak multiplier, '>' rule, each reset), per layer
@pytest.mark.parametrize("neurons", [
    [LayerNeuron(29, 8, ">", "subtract_next"), LayerNeuron(0, 0, ">=", "zero")],
    [LayerNeuron(1, 1, ">=", "subtract_recheck"), LayerNeuron(3, 4, ">", "subtract")],
])
def test_version_2_round_trip(tmp_path, neurons):
    m = random_model((10, 7, 6, 3), seed=4)
    m.layers = [replace(ly, neuron=n) for ly, n in zip(m.layers, neurons)] + m.layers[2:]
    path = modelfile.save(m, tmp_path / "v2.slm")
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("model.json"))
    assert meta["version"] == 2 and meta["requires"] == ["layer_neurons"]
    back = modelfile.load(path)
    assert [ly.neuron for ly in back.layers] == neurons + [None]
    assert modelfile.save(back, tmp_path / "again.slm").read_bytes() == path.read_bytes()
    x = random_inputs(m, 30, seed=1)
    assert (golden.run(back, x, sparse=()).z == golden.run(m, x, sparse=()).z).all()


def test_version_2_bad_neuron_is_named(tmp_path):
    m = random_model((10, 7, 3), seed=4)
    m.layers[0] = replace(m.layers[0], neuron=LayerNeuron(3, 2, ">", "zero"))
    path = modelfile.save(m, tmp_path / "v2.slm")
    bad = _rewrite(path, edit_meta=lambda d: d["layers"][0]["neuron"]["leak"].update(mul=9))
    with pytest.raises(ModelFileError, match=r"layers\[0\]\.neuron.leak_mul = 9 is outside the allowed range \[0, 4\]"):
        modelfile.load(bad)
    bad = _rewrite(path, edit_meta=lambda d: d["layers"][0]["neuron"].update(reset="later"))
    with pytest.raises(ModelFileError, match=r"neuron.reset = 'later'; allowed: 'zero', 'subtract', 'subtract_next'"):
        modelfile.load(bad)


def test_mismatched_shapes(saved):
    _, path = saved
    bad = _rewrite(path, replace={"layers/1/weight.npy": _npy(np.zeros((3, 8), np.int32))})
    with pytest.raises(ModelFileError, match="in_features|inputs"):
        modelfile.load(bad)
    bad = _rewrite(path, replace={"layers/0/bias.npy": _npy(np.zeros(5, np.int32))})
    with pytest.raises(ModelFileError, match="bias shape"):
        modelfile.load(bad)


def test_weights_do_not_fit_bit_width(saved):
    _, path = saved
    bad = _rewrite(path, edit_meta=lambda m: m["layers"][0].update(weight_bits=3))
    with pytest.raises(ModelFileError, match=r"does not fit in 3-bit signed range \[-3, 3\]"):
        modelfile.load(bad)


def test_missing_member_and_field(saved):
    _, path = saved
    with pytest.raises(ModelFileError, match="missing"):
        modelfile.load(_rewrite(path, drop="layers/0/threshold.npy"))
    with pytest.raises(ModelFileError, match="missing field 'neuron'"):
        modelfile.load(_rewrite(path, edit_meta=lambda m: m.pop("neuron")))
    with pytest.raises(ModelFileError, match="reset"):
        modelfile.load(_rewrite(path, edit_meta=lambda m: m["neuron"].update(reset="hold")))


def test_bad_acc_bits_is_caught(saved):
    _, path = saved
    with pytest.raises(ModelFileError, match="acc_bits"):
        modelfile.load(_rewrite(path, edit_meta=lambda m: m["layers"][0].update(acc_bits=4)))


def _npy(a):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a)
    return buf.getvalue()


def _v2_file(tmp_path):
    m = random_conv_model(seed=3, pool_op="sum")
    m.layers[1] = replace(m.layers[1], neuron=LayerNeuron(3, 2, ">", "subtract_next"))
    return modelfile.save(m, tmp_path / "v2.slm")


# Each field a version-2 file could state without the file meaning it: named, never ignored.
@pytest.mark.parametrize("edit, message", [
    # a layer neuron in a file that does not require per-layer neurons
    (lambda d: (d.update(requires=["sum_pool"]), d.update(neuron={"model": "lif", "leak_shift": 1, "reset": "zero",
                                                                  "membrane_bits": 14, "fire_when": "u >= threshold"})),
     r"layers\[0\]\.neuron is set but requires does not list 'layer_neurons'"),
    # a neuron on the output integrator
    (lambda d: d["layers"][-1].update(neuron=d["layers"][0]["neuron"]), r"output integrator has no threshold and no neuron"),
    # a pool_op on a dense layer
    (lambda d: d["layers"][-1].update(pool_op="sum"), r"pool_op .*are for conv layers only"),
    # version 1's network-wide neuron fields beside per-layer neurons
    (lambda d: d["neuron"].update(leak_shift=99, reset="bogus"), r"neuron has \['leak_shift', 'reset'\], version 1"),
    # a feature listed twice, or listed and not used
    (lambda d: d.update(requires=["layer_neurons", "layer_neurons", "sum_pool"]), r"lists a feature twice"),
    (lambda d: [ly.pop("pool_op", None) for ly in d["layers"]], r"requires lists 'sum_pool' but no layer"),
])
def test_version_2_fields_are_never_silently_ignored(tmp_path, edit, message):
    path = _v2_file(tmp_path)
    assert modelfile.load(path).layers[1].neuron == LayerNeuron(3, 2, ">", "subtract_next")
    with pytest.raises(ModelFileError, match=message):
        modelfile.load(_rewrite(path, edit_meta=edit))


def test_save_is_atomic_and_keeps_plain_permissions(tmp_path):
    # model files are written through a temporary file (model/files.py) yet get the permissions a
    # plain write gives (0666 less the umask), or keep those of the file they replace
    import os

    from spikeloom.model.randnet import random_model

    umask = os.umask(0o022)
    try:
        p = modelfile.save(random_model((6, 4, 3), seed=1), tmp_path / "m.slm")
        assert p.stat().st_mode & 0o777 == 0o644
        os.chmod(p, 0o600)
        modelfile.save(random_model((6, 4, 3), seed=2), p)
        assert p.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(umask)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.slm"]
