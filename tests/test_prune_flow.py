"""``make prune`` end to end on the digits MLP with tiny epochs: rows, balance, caching, co-simulation."""

import json

import numpy as np
import pytest

from spikeloom.flows import prune as flow
from spikeloom.model import golden, modelfile
from spikeloom.model.data import load_dataset
from spikeloom.model.errors import ConfigError, SpikeloomError
from spikeloom.sim.testing import require_icarus

TINY = dict(net="mlp", pes=8, epochs=1, qat_epochs=1, finetune_epochs=1, stage_epochs=1, final_epochs=1, t_from=2)
KEYS = ("name", "weight_sparsity", "timesteps", "accuracy", "synaptic_events_mean", "cycles_mean", "weight_bits",
        "mean_timesteps", "accuracy_fixed_t", "accuracy_t1", "cycles_bound_mean")


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
    # acc t=1: the integer network read after timestep 1 (a T = 1 row: its accuracy)
    assert stp["accuracy_t1"] == stp["accuracy_fixed_t"] == stp["accuracy"]
    qm = modelfile.load(dense["model_file"])
    split = load_dataset("digits", seed=0)
    z = golden.run(qm, golden.quantize_input(qm, split.test.x), sparse=()).z
    assert dense["accuracy_t1"] == float((golden.first_argmax(z[0]) == split.test.y).mean())
    assert [s["t_max"] for s in stp["stages"]] == [2, 2, 1]  # T=2 training, pruned fine-tune, T=1
    assert "dense-t4" in logs[-2] and "stp-t1" in logs[-2]  # the table
    assert all(r["seed"] == 0 for r in rep["rows"]) and on_disk["seeds"] == [0]
    assert [e["name"] for e in on_disk["summary"]] == ["dense-t4", "pruned80-t4", "stp-t1"]
    assert all(e["accuracy_mean"] == rows[e["name"]]["accuracy"] and e["accuracy_std"] == 0.0
               and e["accuracy_t1_mean"] == rows[e["name"]]["accuracy_t1"] for e in on_disk["summary"])
    assert (tmp_path / "prune" / "seed-0" / "stp-t1" / "digits-mlp" / "model.slm").exists()

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
    # the ablation's Units row is refused where it would repeat the stp row or cannot be built
    with pytest.raises(ConfigError, match=r"stp-t1-units would repeat stp-t1 \(the stp row has 2 Units"):
        flow.run(tmp_path, rows=("stp-t1-units",), units=2, cosim=False, **{**TINY, "net": "vgg"})
    for units in (0, 1):  # an MLP's Units row cannot be built, whatever --units says
        with pytest.raises(ConfigError, match="stp-t1-units does not apply: 'mlp' can take no Units after stage 1"):
            flow.run(tmp_path, rows=("stp-t1-units",), units=units, cosim=False, **TINY)
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
              qat_epochs=1, finetune_epochs=1, stage_epochs=1, final_epochs=1, t_from=2, device="auto", cosim=False,
              units=2)
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


def test_seeds_on_dask_equal_the_same_seeds_one_by_one(tmp_path):
    """--seeds 2 on two Dask worker processes gives, seed by seed, the rows of each seed trained
    alone in this process (with another PyTorch thread count): the table does not depend on where
    or beside what a seed ran. The summary is the mean and sample spread of those rows; the pruned
    row is pruned step by step (--ramp) and fine-tuned only from the ramp's end."""
    import torch

    kw = dict(TINY, finetune_epochs=2, ramp=0.5, rows=("dense-t4", "pruned80-t4"), cosim=False)
    both = flow.run(tmp_path / "both", seeds=2, workers=2, log=lambda *_: None, **kw)
    n = torch.get_num_threads()
    torch.set_num_threads(max(2, n))  # the Dask workers run one thread each
    try:
        alone = [flow.run(tmp_path / f"s{s}", seed=s, log=lambda *_: None, **kw) for s in (0, 1)]
    finally:
        torch.set_num_threads(n)
    keys = ("accuracy", "accuracy_fixed_t", "accuracy_float", "mean_timesteps", "nonzero_weights",
            "synaptic_events_mean", "cycles_bound_mean", "weight_bits", "exit_threshold", "layer_sparsity")
    assert [(r["seed"], r["name"]) for r in both["rows"]] == [(0, "dense-t4"), (0, "pruned80-t4"),
                                                               (1, "dense-t4"), (1, "pruned80-t4")]
    for r in both["rows"]:
        (same,) = [a for a in alone[r["seed"]]["rows"] if a["name"] == r["name"]]
        assert {k: r[k] for k in keys} == {k: same[k] for k in keys}
    assert both["rows"][0]["accuracy"] != both["rows"][2]["accuracy"] or \
        both["rows"][0]["nonzero_weights"] != both["rows"][2]["nonzero_weights"] or \
        both["rows"][0]["exit_threshold"] != both["rows"][2]["exit_threshold"]  # the seeds differ
    import numpy as np

    for e in both["summary"]:
        acc = [r["accuracy"] for r in both["rows"] if r["name"] == e["name"]]
        assert e["seeds"] == [0, 1] and e["accuracy_per_seed"] == acc
        assert e["accuracy_mean"] == pytest.approx(np.mean(acc))
        assert e["accuracy_std"] == pytest.approx(np.std(acc, ddof=1))
    p80 = [r for r in both["rows"] if r["name"] == "pruned80-t4"]
    for r in p80:
        (stage,) = r["stages"]
        assert "over 1 epochs" in stage["stage"] and stage["sparsity"] >= 0.8 and r["weight_sparsity"] >= 0.8
        assert r["model_file"].startswith(str(tmp_path / "both" / "prune" / f"seed-{r['seed']}"))
    assert (tmp_path / "both" / "prune" / "seed-1" / "digits-mlp.log").read_text().count("[prune]") >= 2
    on_disk = json.loads((tmp_path / "both" / "pruning.json").read_text())
    assert on_disk["summary"] == both["summary"] and on_disk["seeds"] == [0, 1]


def test_ablation_rows_take_one_part_of_the_schedule_away(tmp_path):
    book = flow.recipes("vgg", 8)
    stp = book["stp-t1"]
    assert stp["units"] == 0 and stp["ramp"] == 0.5 and stp["qat_distill"] and stp["distill"] == 0.5
    for units, moot in ((0, "stp-t1-no-units"), (flow.ABLATION_UNITS, "stp-t1-units")):  # default, --units 2
        book = flow.recipes("vgg", 8, units=units)
        stp = book["stp-t1"]
        for name, change in flow.ABLATION.items():
            diff = {k for k in set(stp) | set(book[name]) if stp.get(k) != book[name].get(k)}
            assert diff == (set() if name == moot else set(change)), (units, name)
    logs = []
    rep = flow.run(tmp_path, rows=("stp-t1", "stp-t1-no-stages", "stp-t1-at-once"), cosim=False,
                   out=tmp_path / "abl.json", log=logs.append,
                   **dict(TINY, t_from=3, stage_epochs=2, final_epochs=3, finetune_epochs=4))
    rows = {r["name"]: r for r in rep["rows"]}
    # the rows share the stages before the one they change: trained once, then read back
    reused = [m for m in map(str, logs) if m.startswith("[prune] reusing")]
    assert len(reused) == 2 and "pruned-" in reused[0] and "units-" in reused[1], reused
    assert rows["stp-t1-no-stages"]["stages"][:2] == rows["stp-t1"]["stages"][:2]
    assert rows["stp-t1-at-once"]["stages"][0] == rows["stp-t1"]["stages"][0]
    # T=3 with Units, pruned at T=3, T=2 (--stage-epochs), T=1 (--final-epochs); or straight from T=3
    # to T=1 in one stage with both stages' epochs
    assert [(s["t_max"], s["epochs"]) for s in rows["stp-t1"]["stages"]] == [(3, 1), (3, 4), (2, 2), (1, 3)]
    assert [(s["t_max"], s["epochs"]) for s in rows["stp-t1-no-stages"]["stages"]] == [(3, 1), (3, 4), (1, 5)]
    assert "over 2 epochs" in rows["stp-t1-no-stages"]["stages"][1]["stage"]
    assert "at once" in rows["stp-t1-at-once"]["stages"][1]["stage"]
    assert json.loads((tmp_path / "abl.json").read_text())["summary"] and not (tmp_path / "pruning.json").exists()


@pytest.mark.slow  # six tiny trainings; the fast tier keeps the ablation rows' own test
def test_ablation_alias_and_rows_that_do_not_apply(tmp_path):
    """--rows ablation: dense-t4, direct-t1, stp-t1 and the ablation rows that apply to the network
    (an MLP's stp row has no Units and can take none, so neither stp-t1-no-units nor stp-t1-units;
    asked for by name they are refused)."""
    with pytest.raises(ConfigError, match="stp-t1-no-units would repeat stp-t1"):
        flow.run(tmp_path, rows=("stp-t1-no-units",), cosim=False, **TINY)
    logs = []
    rep = flow.run(tmp_path, rows=("ablation",), cosim=False, log=logs.append, **TINY)
    assert [r["name"] for r in rep["rows"]] == ["dense-t4", "direct-t1", "stp-t1", "stp-t1-no-stages",
                                                "stp-t1-no-distill", "stp-t1-at-once"]
    assert any(str(m).startswith("[prune] no stp-t1-units row: it does not apply") for m in logs)
    assert any(str(m).startswith("[prune] no stp-t1-no-units row: it would repeat stp-t1") for m in logs)


def test_several_seeds_check_the_data_before_any_worker(tmp_path):
    """A bad dataset is one line before the cluster starts, with one seed or several."""
    import time

    for seeds in (1, 3):
        t = time.perf_counter()
        with pytest.raises(SpikeloomError, match="does not exist"):
            flow.run(tmp_path, dataset=f"folder:{tmp_path / 'nowhere'}", seeds=seeds, cosim=False, **TINY)
        assert time.perf_counter() - t < 10 and not (tmp_path / "prune").exists()


def test_the_training_device_is_in_the_key_as_resolved(tmp_path):
    """--device auto trains on the CPU of a machine without CUDA and shares the CPU's cache entry;
    on CUDA it would be another entry (CUDA training is outside the determinism)."""
    import torch

    logs = []
    flow.run(tmp_path, rows=("dense-t4",), cosim=False, device="cpu", log=logs.append, **TINY)
    logs.clear()
    flow.run(tmp_path, rows=("dense-t4",), cosim=False, device="auto", log=logs.append, **TINY)
    reused = any("reusing" in str(m) for m in logs)
    assert reused != torch.cuda.is_available()


def test_a_row_does_not_depend_on_the_rows_run_before_it(tmp_path):
    """The stp row trains its own network from scratch: its initial weights come from its seed,
    not from the global generator as the rows before it left it (the same row, alone or after
    direct-t1 in the same process, is the same network)."""
    from spikeloom.model import modelfile

    alone = flow.run(tmp_path / "alone", rows=("stp-t1",), cosim=False, **TINY)
    after = flow.run(tmp_path / "after", rows=("direct-t1", "stp-t1"), cosim=False, **TINY)
    a, b = (modelfile.load(r["model_file"]) for r in (alone["rows"][-1], after["rows"][-1]))
    assert [ly.name for ly in a.layers] == [ly.name for ly in b.layers]
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.weight, lb.weight) and np.array_equal(la.threshold, lb.threshold), la.name
    assert alone["rows"][-1]["accuracy"] == after["rows"][-1]["accuracy"]


def test_the_summary_table_gives_the_spread_of_the_difference_to_dense_and_acc_at_t1():
    def row(name, t, acc, t1, dense):
        return {"name": name, "timesteps": t, "accuracy": acc, "accuracy_t1": t1, "accuracy_vs_dense": acc - dense}

    by_seed = {0: [row("dense-t4", 4, 0.98, 0.97, 0.98), row("stp-t1", 1, 0.97, 0.97, 0.98)],
               1: [row("dense-t4", 4, 0.99, 0.98, 0.99), row("stp-t1", 1, 0.975, 0.975, 0.99)]}
    summary = flow.summarize(by_seed)
    assert summary[1]["accuracy_t1_per_seed"] == [0.97, 0.975]
    lines = {ln.split()[0]: ln for ln in flow.summary_table(summary).splitlines()[2:]}
    # the difference seed by seed: -1.0 and -1.5 points, spread 0.35 (not the rows' own spreads)
    assert "-1.25 ± 0.35" in lines["stp-t1"] and "+0.00 ± 0.00" in lines["dense-t4"]
    assert "97.50 ± 0.71" in lines["dense-t4"]  # acc t=1 of the T = 4 row
