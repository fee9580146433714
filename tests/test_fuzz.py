"""The random-network campaign's generator (flows/fuzz.py, model/randnet.py ``random_any_model``):
it draws every category of the space the model file and the generator accept, only networks the
generator takes, the same networks for the same seed, and its options fail in one line."""

import json

import numpy as np
import pytest
from dataclasses import replace

from spikeloom.flows import fuzz
from spikeloom.hw.plan import Plan
from spikeloom.model import modelfile
from spikeloom.model.config import FIRE_RULES, RESETS, NeuronConfig
from spikeloom.model.errors import ConfigError, ModelFileError
from spikeloom.model.golden import run
from spikeloom.model.ir import validate
from spikeloom.model.randnet import T_MAX_RANGE, WIDTH_RANGES

DRAWS = 200

#: Every value each axis must show within DRAWS networks of one seed.
MUST = {
    "kind": {"dense", "conv", "pool", "sum_pool", "floor_pool", "residual", "conv+dense"},
    "input": {"flat", "c_in 1", "c_in 2", "c_in 3"},
    "neurons": {"v1", "per_layer"},
    "reset": set(RESETS),
    "fire": set(FIRE_RULES),
    "leak": {"none", "shift", "multiplier", "full"},
    "readout": {"integrate", "count"},
    "storage": set(fuzz.STORAGE_CHOICES),
    "weights": set(fuzz.WEIGHT_MODES),
    "trace": {"on", "off"},
    "queues": {f"depth {d}" for d in fuzz.QUEUE_DEPTHS},
    "n_pe": {str(fuzz.N_RANGE[0]), str(fuzz.N_RANGE[1]), "2", "4", "10"},
    **{w: {f"min {lo}", f"max {hi}", "between"} for w, (lo, hi) in WIDTH_RANGES.items()},
    "t_max": {f"min {T_MAX_RANGE[0]}", f"max {T_MAX_RANGE[1]}", "between"},
    "exit_threshold": {"0", "1..9", ">=10", "unreachable"},
}


@pytest.fixture(scope="module")
def cases():
    return [fuzz.draw(3, i) for i in range(DRAWS)]


def test_every_category_is_drawn(cases):
    seen = {}
    for c in cases:
        for axis, values in fuzz.categories(c).items():
            seen.setdefault(axis, set()).update(values)
    missing = {a: sorted(v - seen.get(a, set())) for a, v in MUST.items() if v - seen.get(a, set())}
    assert not missing, f"never drawn in {DRAWS} networks: {missing}"


def test_drawn_networks_are_valid_and_the_generator_takes_them(cases):
    for c in cases:
        validate(c.model)
        Plan(c.model, c.n_pe, c.storage, queue_depth=c.queue_depth)  # no refusal: the campaign draws what the generator takes
        assert fuzz.N_RANGE[0] <= c.n_pe <= fuzz.N_RANGE[1]
        x = c.inputs
        hi = (1 << c.model.input_bits) - 1
        assert x.shape == (3, c.model.input_size) and x.min() >= 0 and x.max() <= hi
        assert not x[0].any() and (x[1] == hi).all()


def test_inputs_and_densities_reach_their_ends(cases):
    fractions = [float((c.inputs[2:] == 0).mean()) for c in cases]
    assert min(fractions) < 0.1 and max(fractions) > 0.9
    layer_density = [float((ly.weight != 0).mean()) for c in cases for ly in c.model.layers]
    assert min(layer_density) == 0.0 and max(layer_density) == 1.0


def test_extreme_values_are_drawn(cases):
    """Weights at the ends of their range and thresholds at 1 and the membrane maximum."""
    w_end = th_one = th_max = 0
    for c in cases:
        for ly in c.model.layers:
            hi = (1 << (ly.weight_bits - 1)) - 1
            w_end += int(np.abs(ly.weight).max(initial=0) == hi)
            if ly.threshold is not None:
                th_one += int((ly.threshold == 1).all())
                th_max += int((ly.threshold == (1 << (c.model.neuron.membrane_bits - 1)) - 1).all())
    assert w_end > 20 and th_one > 3 and th_max > 3


def test_the_same_seed_gives_the_same_networks(tmp_path):
    for i in (0, 7, 31):
        a, b = fuzz.draw(11, i), fuzz.draw(11, i)
        pa = modelfile.save(a.model, tmp_path / "a.slm").read_bytes()
        assert pa == modelfile.save(b.model, tmp_path / "b.slm").read_bytes()
        assert a.options == b.options and np.array_equal(a.inputs, b.inputs)
    other = modelfile.save(fuzz.draw(12, 0).model, tmp_path / "c.slm").read_bytes()
    assert other != modelfile.save(fuzz.draw(11, 0).model, tmp_path / "d.slm").read_bytes()


def test_width_ranges_are_the_model_files_limits():
    """The campaign's 'both ends' are the ends validate() accepts: one step beyond is refused."""
    base = fuzz.draw(0, 1).model
    lo, hi = WIDTH_RANGES["membrane_bits"]
    for bad in (lo - 1, hi + 1):
        with pytest.raises((ConfigError, ModelFileError)):
            validate(replace(base, neuron=NeuronConfig(1, "subtract", bad)))
    for name, value in (("input_bits", WIDTH_RANGES["input_bits"]), ("t_max", T_MAX_RANGE)):
        for bad in (value[0] - 1, value[1] + 1):
            with pytest.raises(ModelFileError):
                validate(replace(base, **{name: bad}))
    lo, hi = WIDTH_RANGES["weight_bits"]
    for bad in (lo - 1, hi + 1):
        with pytest.raises(ModelFileError):
            validate(replace(base, layers=[replace(base.layers[0], weight_bits=bad), *base.layers[1:]]))


def test_injected_model_differs_on_the_all_max_input():
    for i in range(40):
        c = fuzz.draw(5, i)
        wrong = fuzz.injected(c.model)
        got = run(wrong, c.inputs[1:2], sparse=())
        want = run(c.model, c.inputs[1:2], sparse=())
        name = c.model.layers[0].name
        assert got.counters()[name]["synaptic_events"][0] != want.counters()[name]["synaptic_events"][0]


@pytest.mark.parametrize("argv,needle", [
    (["--networks", "0"], "--networks = 0"),
    (["--networks", "many"], "--networks = 'many' must be an integer"),
    (["--jobs", "0"], "--jobs = 0"),
    (["--seed", "-1"], "--seed = -1"),
    (["--seed", str(2 ** 40)], "--seed"),
    (["--images", "2"], "--images = 2"),
    (["--timeout", "x"], "--timeout = 'x'"),
    (["--sim", "bogus"], "--sim = 'bogus'"),
    (["--timeout", "100000000000"], "--timeout = 100000000000 is outside the allowed range [1, 86400]"),
    (["--networks", "99999999999"], "--networks = 99999999999 is outside"),
    (["--jobs", "300"], "--jobs = 300 is outside the allowed range [1, 256]"),
    (["--jobs", "2", "--scheduler", "tcp://127.0.0.1:9"], "--jobs sizes the embedded LocalCluster"),
    (["--scheduler", "localhost:8786"], "--scheduler 'localhost:8786': give the scheduler's address"),
])
def test_bad_options_are_one_line(tmp_path, capsys, argv, needle):
    assert fuzz.main([*argv, "--build", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spikeloom: error: ") and needle in err, err
    assert not (tmp_path / "b").exists()


def test_bad_build_and_replay_folders_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert fuzz.main(["--networks", "1", "--build", str(tmp_path / "file")]) == 2
    assert fuzz.main(["--replay", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(e.startswith("spikeloom: error: ") for e in err), err
    assert "case.json" in err[1]


@pytest.mark.parametrize("case,needle", [
    ("{bad", "is not a readable case file"),
    ('{"seed": 0}', "lacks the field 'options'"),
    (None, "model.slm is missing"),
])
def test_bad_replay_folders_are_one_line(tmp_path, capsys, case, needle):
    """A replay folder whose case file is corrupt, incomplete, or whose model is gone; and options
    that --replay would ignore."""
    folder = tmp_path / "fail-0"
    folder.mkdir()
    if case is None:
        case = json.dumps({"seed": 0, "index": 0, "simulator": "icarus", "options": {
            "n_pe": 1, "storage": "dense", "weights": "rom", "trace": False, "sim_seed": 0, "idle": 0.0,
            "backpressure": 0.0}})
    (folder / "case.json").write_text(case)
    assert fuzz.main(["--replay", str(folder)]) == 2
    assert fuzz.main(["--replay", str(folder), "--sim", "verilator"]) == 2
    assert fuzz.main(["--replay", str(folder), "--scheduler", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(e.startswith("spikeloom: error: ") for e in err), err
    assert needle in err[0] and "--replay takes no other option (given: --sim)" in err[1]
    assert "--replay takes no other option (given: --scheduler)" in err[2]
    assert sorted(p.name for p in folder.iterdir()) == ["case.json"]


def test_report_tallies_by_category():
    a = {"index": 0, "outcome": "passed", "images": 4, "mismatched_images": 0,
         "categories": {"kind": ["conv", "pool"], "n_pe": ["1"]}}
    b = {"index": 1, "outcome": "mismatched", "images": 4, "mismatched_images": 2,
         "categories": {"kind": ["dense"], "n_pe": ["1"]}}
    c = {"index": 2, "outcome": "refused", "images": 4, "mismatched_images": 0,
         "categories": {"kind": ["dense"], "n_pe": ["16"]}}
    counts, by = fuzz._tally([a, b, c])
    assert counts == {"networks": 3, "images": 8, "passed": 1, "mismatched": 1, "refused": 1, "errors": 0,
                      "mismatched_images": 2}
    assert by["n_pe"]["1"] == {"networks": 2, "passed": 1, "mismatched": 1, "refused": 0, "errors": 0}
    assert by["kind"]["dense"]["refused"] == 1 and by["kind"]["pool"]["passed"] == 1
    json.dumps(by)


def _in_thread(fn):
    """Run ``fn`` in a thread (as a Dask worker runs a network); returns (outcome, seconds)."""
    import threading
    import time

    out = {}

    def run():
        t0 = time.monotonic()
        try:
            out["r"] = fn()
        except Exception as e:  # noqa: BLE001 -- the outcome under test
            out["r"] = type(e).__name__
        out["s"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_a_networks_time_limit_ends_only_that_network(tmp_path):
    """Two networks in two threads of one worker process: the one past its limit is ended (its
    simulator killed), the other's process is not touched."""
    import subprocess

    def network(folder, seconds, limit):
        folder.mkdir()
        with fuzz._Deadline(limit, folder):
            subprocess.run(["sleep", str(seconds)], cwd=folder, check=True)
        return "finished"

    a, ra = _in_thread(lambda: network(tmp_path / "a", 60, 1))
    b, rb = _in_thread(lambda: network(tmp_path / "b", 4, 100))
    a.join(30)
    b.join(30)
    assert ra["r"] == "_Timeout" and ra["s"] < 5, ra
    assert rb["r"] == "finished", rb


def test_a_hang_in_python_is_ended_too(tmp_path):
    """The generator is Python: a loop there ends at the limit, as a simulator's hang does."""
    def network():
        with fuzz._Deadline(1, tmp_path):
            while True:
                pass

    t, r = _in_thread(network)
    t.join(30)
    assert not t.is_alive() and r["r"] == "_Timeout" and r["s"] < 5, r


def test_an_unwanted_network_stops(tmp_path):
    """A network whose task was cancelled (the campaign interrupted, its client gone) stops within
    a second or so, before its limit."""
    import subprocess
    import time

    t_cancel = time.monotonic() + 1

    def network():
        with fuzz._Deadline(100, tmp_path, cancelled=lambda: time.monotonic() > t_cancel):
            subprocess.run(["sleep", "30"], cwd=tmp_path)  # its simulator

    t, r = _in_thread(network)
    t.join(30)
    assert r["r"] == "_Cancelled" and r["s"] < 5, r


def test_a_network_in_time_is_not_touched(tmp_path):
    t, r = _in_thread(lambda: [fuzz._Deadline(2, tmp_path).__enter__().__exit__(None, None, None), "ok"][1])
    t.join(10)
    assert r["r"] == "ok"


def test_a_scheduler_without_workers_is_one_line_and_keeps_the_last_campaign(tmp_path, capsys, monkeypatch,
                                                                             dask_cluster):
    from spikeloom.flows import cluster

    address, _ = dask_cluster.start(0)
    kept = tmp_path / "b" / "fuzz" / "fail-3"
    kept.mkdir(parents=True)
    (kept / "case.json").write_text("{}")
    monkeypatch.setattr(cluster, "WAIT_FOR_WORKER_S", 1)
    assert fuzz.main(["--networks", "2", "--sim", "verilator", "--scheduler", address,
                      "--build", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--scheduler {address}: no worker joined the cluster within 1 s" in err, err
    assert (kept / "case.json").exists() and not (tmp_path / "b" / "fuzz.json").exists()


def test_a_task_that_raises_is_an_error_not_a_lost_worker(tmp_path, monkeypatch):
    """A network's task that raises (a bug of the campaign's own code, not of the design) is an
    error with its reproducer; no worker died. (A cluster in this process, so that the task can
    be faked.)"""
    from distributed import LocalCluster

    def fake_one(task):
        seed, index = task[:2]
        if index == 1:
            raise RuntimeError("boom")
        return {"index": index, "outcome": "passed", "detail": "", "images": 3, "mismatched_images": 0,
                "seconds": 0.0, "categories": {}}

    monkeypatch.setattr(fuzz, "_one", fake_one)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None) as c:
        rep = fuzz.campaign(3, seed=4, build=tmp_path, scheduler=c.scheduler_address, log=lambda *a: None)
    assert rep["counts"]["passed"] == 2 and rep["counts"]["errors"] == 1 and not rep["worker_died"], rep
    f = rep["failures"][0]
    assert f["index"] == 1 and f["detail"] == "the network's task failed: RuntimeError: boom"
    assert sorted(p.name for p in (tmp_path / "fuzz" / "fail-1").iterdir()) == ["case.json", "inputs.npy", "model.slm"]
