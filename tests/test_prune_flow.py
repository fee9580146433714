"""``make prune`` end to end on the digits MLP with tiny epochs: rows, balance, caching, co-simulation."""

import json

import pytest

from spikeloom.flows import prune as flow
from spikeloom.model.errors import ConfigError
from spikeloom.sim.testing import require_icarus

TINY = dict(net="mlp", pes=8, epochs=1, qat_epochs=1, finetune_epochs=1, stage_epochs=1, t_from=2)
KEYS = ("name", "weight_sparsity", "timesteps", "accuracy", "synaptic_events_mean", "cycles_mean", "weight_bits",
        "mean_timesteps", "accuracy_fixed_t", "cycles_bound_mean")


def test_prune_flow_rows_cache_and_cosim(tmp_path):
    logs = []
    rep = flow.run(tmp_path, rows=("dense-t4", "pruned80-t4", "stp-t1"), cosim=False, log=logs.append, **TINY)
    on_disk = json.loads((tmp_path / "pruning.json").read_text())
    assert [r["name"] for r in on_disk["rows"]] == ["dense-t4", "pruned80-t4", "stp-t1"] == \
        [r["name"] for r in rep["rows"]]
    rows = {r["name"]: r for r in on_disk["rows"]}
    for r in rows.values():
        assert all(k in r for k in KEYS) and r["cycles_mean"] is None  # no co-simulation asked for
        assert 0 <= r["accuracy"] <= 1 and r["synaptic_events_mean"] > 0 and r["cycles_bound_mean"] > 0
    dense, p80, stp = rows["dense-t4"], rows["pruned80-t4"], rows["stp-t1"]
    assert dense["timesteps"] == p80["timesteps"] == 4 and stp["timesteps"] == 1 == stp["mean_timesteps"]
    assert dense["weight_sparsity"] < 0.1 and p80["weight_sparsity"] >= 0.8 and stp["weight_sparsity"] >= 0.8
    for r in (p80, stp):
        sp = r["layer_sparsity"]
        assert sp["fc3"] >= 0.5 and sp["fc1"] >= 0.8 and sp["fc2"] >= 0.8  # the head keeps more
        # balanced over the 8 PEs in the integer model (a kept weight that rounds to 0 only lowers a mean)
        assert all(1.0 <= v < 1.02 for v in r["pe_imbalance"].values())
        assert r["weight_bits"] < 0.4 * dense["weight_bits"]  # compressed storage of the kept weights
        assert r["synaptic_events_mean"] < dense["synaptic_events_mean"]
    assert [s["t_max"] for s in stp["stages"]] == [2, 2, 1]  # T=2 training, pruned fine-tune, T=1
    assert "dense-t4" in logs[-2] and "stp-t1" in logs[-2]  # the table

    # a second run trains nothing, and co-simulates the pruned row on the generated hardware (Icarus)
    require_icarus()
    logs.clear()
    rep = flow.run(tmp_path, rows=("pruned80-t4",), simulator="icarus", cosim_images=2, log=logs.append, **TINY)
    assert not any("training" in str(m) for m in logs) and any("reusing" in str(m) for m in logs)
    (row,) = rep["rows"]
    assert row["accuracy"] == p80["accuracy"] and row["cosim_mismatches"] == 0 and row["cosim_images"] == 2
    assert row["cycles_mean"] >= row["cosim_cycles_bound_mean"] > 0


def test_prune_flow_errors(tmp_path):
    with pytest.raises(ConfigError, match="rows"):
        flow.run(tmp_path, rows=("pruned50",), **TINY)
    with pytest.raises(ConfigError, match="pes"):
        flow.run(tmp_path, **{**TINY, "pes": 0})
    with pytest.raises(ConfigError, match="unit_at"):
        flow.run(tmp_path, unit_at=9, **TINY)
    with pytest.raises(ConfigError, match="Units need"):  # the MLP has no feature map for a Unit
        flow.run(tmp_path, rows=("stp-t1",), units=1, cosim=False, **TINY)
    assert flow.main(["--build", str(tmp_path), "--rows", "nope"]) == 2


def _scene_folder(root, n_per_class=10, size=20):
    """A tiny folder-per-class RGB dataset (UC Merced layout): each class a dominant colour."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(("beach", "forest", "runway")):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            img[..., k] += 160
            ext = ".tif" if i % 2 else ".png"
            Image.fromarray(img).save(root / name / f"{name}{i:02d}{ext}")
        Image.fromarray(img[..., 0]).convert("L").save(root / name / "gray.jpg")  # grayscale: read as RGB
    return root


def test_remote_sensing_recipe_on_an_image_folder(tmp_path):
    data = _scene_folder(tmp_path / "scenes")
    kw = dict(net="vgg", pes=8, dataset=f"folder:{data}", image_size=8, rows=("dense-t4", "stp-t1"), epochs=1,
              qat_epochs=1, finetune_epochs=1, stage_epochs=1, t_from=2, device="auto", cosim=False)
    logs = []
    rep = flow.run(tmp_path / "build", log=logs.append, **kw)
    assert rep["dataset"] == f"folder:{data}" and rep["image_size"] == 8
    dense, stp = rep["rows"]
    assert stp["timesteps"] == 1 and stp["weight_sparsity"] >= 0.8
    assert [s["stage"].split(" ")[0] for s in stp["stages"]] == ["T=2", "T=2,", "T=1"]
    assert "2 Unit(s) after stage 1" in stp["stages"][0]["stage"]  # Units trained, then removed
    from spikeloom.model import modelfile

    m = modelfile.load(stp["model_file"])
    assert m.input_shape == (3, 8, 8) and m.n_classes == 3 and m.t_max == 1
    assert [ly.kind for ly in m.layers] == ["conv", "conv", "conv", "dense"]  # the base VGG, no Units
    # the image size is part of the cache key: the same size reuses, another one retrains
    logs.clear()
    flow.run(tmp_path / "build", log=logs.append, **kw)
    assert not any("training" in str(s) for s in logs)
    ctx = flow.PruneContext(build=tmp_path, dataset=kw["dataset"], image_size=8)
    assert ctx.key("train") != flow.PruneContext(build=tmp_path, dataset=kw["dataset"], image_size=12).key("train")
    assert ctx.split().train.shape == (3, 8, 8)


def test_prune_weights_keeps_a_conv_first_layer_and_reaches_the_total():
    import torch

    from spikeloom.model import pruning as prune
    from spikeloom.model.config import NeuronConfig
    from spikeloom.model.snn import SNN

    torch.manual_seed(0)
    m = SNN((1, 8, 8), 10, "vgg", NeuronConfig(), 4)
    book = flow.recipes("vgg", 8)
    assert book["pruned80-t4"]["first_sparsity"] == 0.0 == book["stp-t1"]["first_sparsity"]
    assert flow.recipes("mlp", 8)["pruned80-t4"]["first_sparsity"] is None  # an MLP's first layer is big
    flow.prune_weights(m, 0.8, 8, head_sparsity=0.5, first_sparsity=0.0)
    params = prune.prunable(m)
    assert (params["blocks.0.syn.weight"] != 0).all()
    assert abs(float((params["head.weight"] == 0).float().mean()) - 0.5) < 0.05
    assert prune.sparsity(m)["total"] >= 0.8
    for name, p in params.items():  # every layer stays balanced over the PEs
        assert prune.pe_load(p.detach(), 8)[1] < 1.01 or name == "head.weight"
    m2 = SNN((1, 8, 8), 10, "vgg", NeuronConfig(), 4)
    flow.prune_weights(m2, 0.8, 8, first_sparsity=None)  # None: pruned like the hidden layers
    assert float((prune.prunable(m2)["blocks.0.syn.weight"] == 0).float().mean()) > 0.7


def test_prune_flow_rejects_bad_first_sparsity_and_distill(tmp_path):
    with pytest.raises(ConfigError, match="first-sparsity"):
        flow.run(tmp_path, first_sparsity=1.5, **TINY)
    with pytest.raises(ConfigError, match="distill"):
        flow.run(tmp_path, distill=-1.0, **TINY)


def test_prune_flow_distils_from_the_dense_network(tmp_path, monkeypatch):
    from spikeloom.model import train

    seen = []
    orig = train.train_float

    def spy(*a, **kw):
        seen.append((kw.get("teacher") is not None, kw.get("distill")))
        return orig(*a, **kw)

    monkeypatch.setattr(train, "train_float", spy)
    rep = flow.run(tmp_path, rows=("pruned80-t4",), distill=0.5, cosim=False, **TINY)
    (row,) = rep["rows"]
    assert row["recipe"]["distill"] == 0.5 and row["weight_sparsity"] >= 0.8
    assert (True, 0.5) in seen  # the fine-tuning had the dense network as its teacher
