"""The typed reader of ``ports.json`` (sim/ports.py): every field as written by ``describe()``,
and one-line errors naming the file and the field."""

import json
import subprocess
import sys

import pytest

from spikeloom.hw.accel import generate
from spikeloom.model.randnet import random_conv_model, random_model
from spikeloom.sim.ports import Ports, PortsError


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("ports")
    generate(random_model((12, 9, 4), seed=3), 3, d / "rom", trace=True)
    conv = random_conv_model(seed=2)
    generate(conv, 2, d / "load", weights="load", storage={ly.name: "sparse" if i == 1 else "dense"
                                                            for i, ly in enumerate(conv.layers)})
    return d


def test_every_field_as_written(folders):
    for sub in ("rom", "load"):
        raw = json.loads((folders / sub / "ports.json").read_text())
        p = Ports.load(folders / sub)  # the folder or the file
        assert p == Ports.load(folders / sub / "ports.json")
        assert (p.n_pe, p.model, p.top) == (raw["n_pe"], raw["model"], raw["top"])
        assert (p.input_port, p.input_width, p.input_count) == tuple(raw["input"][k] for k in ("port", "width", "count"))
        assert [(f.name, f.offset, f.width) for f in p.result.fields] == [
            (f["name"], f["offset"], f["width"]) for f in raw["result"]["fields"]]
        assert p.result.width == raw["result"]["width"] and p.result.port == "o_result"
        assert [ly.name for ly in p.layers] == [ly["name"] for ly in raw["layers"]]
        for ly, r in zip(p.layers, raw["layers"]):
            assert all(getattr(ly, k) == r[k] for k in ly.__dataclass_fields__), ly.name
        assert tuple(p.sparse_layers) == tuple(raw["sparse_layers"]) and p.counters == tuple(raw["counters"])
        assert [m.file for m in p.memories] == [m["file"] for m in raw["memories"]]
        assert p.weight_files() == [m["file"] for m in raw["memories"] if m["name"] == "weight"]
        assert p.memory("rows", None).pe is None and p.memory("weight", p.n_pe - 1).pe == f"pe_{p.n_pe - 1}"
        assert p.weight_memory_bits == raw["weight_memory_bits"] and p.raw == raw
        assert p.folder == folders / sub
        first = p.layers[0].name
        assert p.counter_field(first, "spikes") == p.result.field(f"{first}.spikes")
    rom, load = Ports.load(folders / "rom"), Ports.load(folders / "load")
    assert rom.trace is not None and load.trace is None
    assert not rom.weights_loaded and rom.weight_count is None
    assert load.weights_loaded and load.weight_port == "i_weights"
    assert load.weight_count == load.n_pe * load.memory("weight", 0).depth
    assert tuple(load.sparse_layers) == (load.layers[1].name,) and load.storage()[load.layers[1].name] == "sparse"
    cut = load.sparse_layers[load.layers[1].name]
    assert load.plan_storage() == {ly.name: f"sparse:{cut}" if i == 1 else "dense" for i, ly in enumerate(load.layers)}
    # a layer's own segments must agree with sparse_segments
    raw = json.loads((folders / "load" / "ports.json").read_text())
    raw["layers"][1]["segments"] = "tap" if cut != "tap" else "row"
    with pytest.raises(PortsError, match=f"layer '{load.layers[1].name}' has segments"):
        Ports.from_dict(raw)


def test_payload_fields():
    p = Ports.from_dict(_minimal())
    f = p.result.field("timesteps")
    assert (f.offset, f.width, f.mask) == (4, 3, 7)
    assert p.result.unpack(0b101_0110) == {"pred": 6, "timesteps": 5}
    with pytest.raises(PortsError, match="no payload field 'cycles'"):
        p.result.field("cycles")


def _minimal():
    return {"top": "spikeloom_accel", "model": "m", "n_pe": 2, "input": {"port": "i_data", "width": 4, "count": 3},
            "result": {"port": "o_result", "width": 7, "fields": [{"name": "pred", "offset": 0, "width": 4},
                                                                  {"name": "timesteps", "offset": 4, "width": 3}]},
            "trace": None, "weights": {"store": "rom", "port": None, "order": "initialised"}, "counters": [],
            "layers": [], "sparse_layers": [], "weight_memory_bits": 0, "memories": []}


# each edit: a missing field, a wrong type, a bad value, deep inside and at the top
@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.pop("n_pe"), "field 'n_pe' is missing"),
    (lambda d: d.update(n_pe="8"), "field 'n_pe' must be int, got '8'"),
    (lambda d: d.update(n_pe=True), "field 'n_pe' must be int, got True"),
    (lambda d: d.update(n_pe=0), "field 'n_pe' must be >= 1"),
    (lambda d: d["input"].pop("width"), "field 'input.width' is missing"),
    (lambda d: d["result"]["fields"][1].pop("offset"), "field 'result.fields[1].offset' is missing"),
    (lambda d: d.update(result=[]), "field 'result' must be dict"),
    (lambda d: d["weights"].update(store="flash"), "'weights.store' must be 'rom' or 'load'"),
    (lambda d: d["weights"].update(store="load"), "field 'weights.port' must be str, got None"),
    (lambda d: d.update(sparse_layers=["fc9"]), "'sparse_layers' names 'fc9'"),
    (lambda d: d.update(sparse_segments={"fc9": "tap"}), "field 'sparse_segments' = {'fc9': 'tap'}"),
    (lambda d: d.update(memories=[{"pe": None, "name": "rows"}]), "field 'memories[0].depth' is missing"),
])
def test_errors_name_file_and_field(tmp_path, edit, needle):
    d = _minimal()
    edit(d)
    path = tmp_path / "ports.json"
    path.write_text(json.dumps(d))
    with pytest.raises(PortsError) as e:
        Ports.load(path)
    msg = str(e.value)
    assert needle in msg and msg.startswith(str(path)) and "\n" not in msg, msg


def test_unreadable(tmp_path):
    with pytest.raises(PortsError, match="cannot read"):
        Ports.load(tmp_path / "nothing.json")
    (tmp_path / "ports.json").write_text("{")
    with pytest.raises(PortsError, match="not JSON"):
        Ports.load(tmp_path)
    (tmp_path / "ports.json").write_text("[]")
    with pytest.raises(PortsError, match="the top level must be an object"):
        Ports.load(tmp_path)


def test_imports_neither_torch_nor_cocotb():
    code = ("import sys, spikeloom.sim.ports, spikeloom.sim.records; "
            "bad = [m for m in ('torch', 'cocotb') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_packed_tail_plan_round_trip(tmp_path):
    """``Ports.plan`` rebuilds the generated plan, packed or not (``packed_tail``; a ports.json of
    the first packed-tail generator has the layers' ``groups`` only); groups that another model's
    plan would not have are a one-line error, not a silent wrong cycle count."""
    model = random_model((12, 9, 5), seed=3, density=1.0)
    for pack in (True, False):
        generate(model, 4, tmp_path / str(pack), storage="dense", pack=pack)
        p = Ports.load(tmp_path / str(pack))
        assert p.packed_tail is pack and [ly.groups for ly in p.layers] == ([1, 4] if pack else [1, 1])
        assert [lp.groups for lp in p.plan(model).layers] == [ly.groups for ly in p.layers]
    raw = json.loads((tmp_path / "True" / "ports.json").read_text())
    del raw["packed_tail"]
    assert Ports.from_dict(raw).packed_tail
    other = random_model((12, 9, 6), seed=3, density=1.0)   # 6 = 4 + 2 at N = 4: 2 groups, not 4
    with pytest.raises(PortsError, match="packed-tail groups"):
        Ports.load(tmp_path / "True").plan(other)
