"""``spikeloom sweep`` (flows/sweep.py): a bad spec is one line before any work; the grid, the sample
and the Pareto fronts; a small sweep on the embedded LocalCluster, interrupted and resumed; the same
sweep on a real ``dask scheduler`` with two ``dask worker`` processes gives the same results; a
worker killed mid-sweep loses no point and runs none twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spikeloom.flows import cli, sweep
from spikeloom.model.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

#: A small sweep: the digits MLP trained one epoch (float and QAT), T_max 2, 2 x 2 points.
TINY = """
[sweep]
name = "tiny"
stages = {stages}
[axes]
n_pe = {pes}
weight_bits = [4, 8]
[train]
epochs = 1
qat_epochs = 1
t_max = 2
"""
#: One point of TINY that fails: synthesis for the iCE40 UP5K with N = 8, whose weight memories
#: need 8 SPRAMs of its 4 (refused by flows/synth.py before any tool runs).
FAILING = """
[synth]
target = "ice40-up5k"
where = { n_pe = 8, weight_bits = 8 }
"""


def write_spec(tmp_path, stages=("evaluate", "cycles", "synth"), pes=(2, 8), name="tiny.toml"):
    path = tmp_path / name
    text = TINY.format(stages=json.dumps(list(stages)), pes=json.dumps(list(pes)))
    path.write_text(text + (FAILING if "synth" in stages else ""))
    return path


def stable(results):
    """The results without what differs between two runs of a point (time, worker, folder)."""
    return {k: {f: v for f, v in r.items() if f not in sweep.VOLATILE} for k, r in results.items()}


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


# -- the spec ----------------------------------------------------------------------------------------

BAD = {
    # an axis the sweep does not know: named with the allowed ones
    "unknown axis": ("[axes]\nn_pes = [1, 2]\n", ["axes.n_pes", "unknown axis", "n_pe, weight_bits"]),
    # a value outside its axis' range: the field, the value and the range
    "bad value": ("[axes]\nweight_bits = [4, 40]\n", ["axes.weight_bits = 40", "[2, 16]"]),
    "not an integer": ("[axes]\nn_pe = [2, 'x']\n", ["axes.n_pe", "'x'", "integer"]),
    "N out of range": ("[axes]\nn_pe = [0]\n", ["axes.n_pe = 0", "[1, 64]"]),
    # a fixed setting's range comes from its dataclass
    "bad fixed setting": ("[axes]\nn_pe = [2]\n[train]\nepochs = 0\n", ["train.epochs = 0", "[1, 10000]"]),
    "unknown field": ("[axes]\nn_pe = [2]\n[quant]\nbits = 3\n", ["quant.bits", "unknown field", "weight_bits"]),
    "unknown stage": ("[sweep]\nstages = ['evaluate', 'place']\n[axes]\nn_pe = [2]\n", ["'place'", "evaluate, cycles"]),
    "synth without target": ("[sweep]\nstages = ['synth']\n[axes]\nn_pe = [2]\n", ["synth.target"]),
    "bad target": ("[sweep]\nstages = ['synth']\n[axes]\nn_pe = [2]\n[synth]\ntarget = 'xc7'\n",
                   ["synth.target = 'xc7'", "ecp5-25k"]),
    "where off the grid": ("[sweep]\nstages = ['synth']\n[axes]\nn_pe = [2]\n[synth]\ntarget = 'ecp5-25k'\n"
                           "where = { n_pe = 4 }\n", ["synth.where.n_pe = 4", "[2]"]),
    "sample too large": ("[axes]\nn_pe = [2, 4]\n[sample]\npoints = 3\n", ["sample.points = 3", "[1, 2]"]),
    "not TOML": ("[axes\n", ["not a valid TOML file"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_is_one_line_before_any_work(tmp_path, capsys, case):
    text, needles = BAD[case]
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    build = tmp_path / "build"
    assert cli.main(["sweep", str(spec), "--build", str(build)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"spikeloom: error: {spec}: "), err
    for n in needles:
        assert n in err, (n, err)
    assert not build.exists()


@pytest.mark.parametrize("argv, needle", [
    (["missing.toml"], "missing.toml: cannot read the sweep spec"),
    (["digits", "--workers", "0"], "--workers = 0 is outside the allowed range"),
    (["digits", "--scheduler", "localhost:8786"], "--scheduler 'localhost:8786'"),
    (["digits", "--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], "--workers sizes the embedded LocalCluster"),
    (["nodata.toml"], "nodata.toml: sweep.dataset = 'folder:missing': image folder missing does not exist"),
])
def test_bad_options_are_one_line(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nodata.toml").write_text("[sweep]\ndataset = 'folder:missing'\n[axes]\nn_pe = [2]\n")
    assert cli.main(["sweep", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "build").exists()


def test_shipped_spec_has_the_points_the_issue_asks_for():
    spec = sweep.load_spec("digits")  # the shipped spec by name: flows/sweeps/digits.toml
    assert spec.path == REPO / "flows" / "sweeps" / "digits.toml"
    assert spec == sweep.load_spec(REPO / "flows" / "sweeps" / "digits.toml")
    pts = sweep.points(spec)
    assert len(pts) >= 24 and {"n_pe", "weight_bits", "t_max"} <= set(spec.axes)
    synth = [p for p in pts if "synth" in p.stages]
    assert len(synth) >= 4 and spec.synth_target == "ecp5-25k"
    assert len({sweep.point_key(spec, p) for p in pts}) == len(pts)


def test_grid_sample_and_synthesised_points(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[sweep]\nstages = ['evaluate', 'synth']\n[axes]\nn_pe = [1, 2, 4]\nweight_bits = [4, 8]\n"
                    "[synth]\ntarget = 'ecp5-25k'\nwhere = { weight_bits = 8, n_pe = [2, 4] }\n")
    spec = sweep.load_spec(path)
    pts = sweep.points(spec)
    assert [tuple(p.values.values()) for p in pts] == [(1, 4), (1, 8), (2, 4), (2, 8), (4, 4), (4, 8)]
    assert [p.label for p in pts if "synth" in p.stages] == ["n_pe=2,weight_bits=8", "n_pe=4,weight_bits=8"]
    train, quant, neuron, n_pe = sweep.configs(spec, pts[3])
    assert (quant.weight_bits, n_pe, quant.input_bits) == (8, 2, 4)  # input bits: `spikeloom run`'s default
    path.write_text(path.read_text() + "[sample]\npoints = 4\nseed = 3\n")
    a, b = sweep.points(sweep.load_spec(path)), sweep.points(sweep.load_spec(path))
    assert a == b and len(a) == 4 and all(p in pts for p in a)
    path.write_text(path.read_text().replace("seed = 3", "seed = 4"))
    assert sweep.points(sweep.load_spec(path)) != a  # another seed, another sample


def test_pareto_front():
    # (energy, accuracy): lower energy and higher accuracy are better
    pts = [(10, 0.9), (5, 0.9), (5, 0.8), (20, 0.95), (20, 0.94), (5, 0.9)]
    assert sweep.pareto(pts, (-1, +1)) == [1, 3, 5]  # equal points dominate neither
    assert sweep.pareto([(1, 1)], (-1, +1)) == [0]
    assert sweep.pareto([], (-1, +1)) == []
    assert sweep.pareto(pts, (+1, +1)) == [3]


def test_failed_result_line_cut_short_is_skipped(tmp_path):
    path = tmp_path / "results.jsonl"
    sweep._append(path, {"point": "a", "status": "ok"})
    with open(path, "a") as f:
        f.write('{"point": "b", "sta')  # a crash in the middle of a write
    sweep._append(path, {"point": "c", "status": "failed", "error": "x"})
    assert sorted(sweep.read_results(path)) == ["a", "c"]
    assert sweep.one_line(ConfigError("first\nsecond")) == "first"
    assert sweep.one_line(KeyError("k")) == "KeyError: 'k'"


# -- running it ----------------------------------------------------------------------------------------

def _env():
    return {**os.environ, "SPIKELOOM_PROGRESS_INTERVAL": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The tiny sweep on the embedded LocalCluster (one worker: the points one after another),
    interrupted (SIGINT, as Ctrl-C) once the first point is in results.jsonl, then run again to the
    end. Returns (spec path, build, results, lines before the rerun)."""
    tmp = tmp_path_factory.mktemp("local")
    spec = write_spec(tmp)
    build = tmp / "build"
    results = build / "sweep" / "tiny" / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "spikeloom.flows.sweep", str(spec), "--build", str(build),
                             "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(),
                            cwd=tmp)
    try:
        deadline = time.monotonic() + 120
        while not (results.exists() and results.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no point finished in 120 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out
    before = lines(results)
    assert 1 <= len(before) < 4, out
    res = sweep.run(spec, build, workers=2)
    return spec, build, res, before


@pytest.mark.slow  # the interrupted local sweep behind it runs for one to two minutes
def test_interrupted_sweep_finishes_only_the_missing_points(local_run):
    spec, build, res, before = local_run
    out = build / "sweep" / "tiny"
    after = lines(out / "results.jsonl")
    assert after[:len(before)] == before  # the lines written before the interrupt stay as they were
    keys = [r["point"] for r in after]
    assert len(keys) == len(set(keys)) == 4  # the rerun ran the missing points, each once
    for r in after:
        assert 0.1 < r["accuracy_adaptive"] <= 1 and r["cycles_mean"] >= r["cycles_bound_mean"] * 0.5
    # the failing point is recorded with its one-line error, and the others ran
    failed = [r for r in after if r["status"] != "ok"]
    assert [r["label"] for r in failed] == ["n_pe=8,weight_bits=8"], after
    assert failed[0]["error"].startswith("ice40-up5k --weights load: ") and "\n" not in failed[0]["error"]
    assert "SPRAM" in failed[0]["error"] and failed[0]["stages"] == ["evaluate", "cycles", "synth"]
    table = (out / "table.txt").read_text()
    assert f"failed: n_pe=8,weight_bits=8: {failed[0]['error']}" in table
    for f in ("pareto_energy.png", "pareto_lut.png", "summary.json"):
        assert (out / f).stat().st_size > 0
    # a finished sweep: the rerun computes nothing and writes no line (a failed point stays failed)
    text = (out / "results.jsonl").read_text()
    again = sweep.run(spec, build, workers=2, log=lambda *a: None)
    assert (out / "results.jsonl").read_text() == text and again == res
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert [r["computed"] for r in runs] == [4 - len(before), 0]  # the interrupted run wrote none


def test_synthesis_is_cached_by_content(tmp_path, monkeypatch):
    from spikeloom.flows import synth
    from spikeloom.model import modelfile
    from spikeloom.model.randnet import random_model

    calls = []

    def fake_run_target(target, model_path, n_pe, build, log=print):
        calls.append((target, n_pe, Path(build)))
        return {"n_pe": n_pe, "luts": {"used": len(calls), "available": 9}}

    monkeypatch.setattr(synth, "run_target", fake_run_target)
    model = tmp_path / "m.slm"
    modelfile.save(random_model((16, 8, 4), seed=0), model)
    first = sweep.synthesise("ecp5-25k", model, 2, tmp_path / "build", tmp_path / "p1", log=lambda *a: None)
    again = sweep.synthesise("ecp5-25k", model, 2, tmp_path / "build", tmp_path / "p2", log=lambda *a: None)
    assert first == again and calls == [("ecp5-25k", 2, tmp_path / "p1")]  # a second sweep's point: reused
    sweep.synthesise("ecp5-25k", model, 4, tmp_path / "build", tmp_path / "p3", log=lambda *a: None)
    sweep.synthesise("ecp5-85k", model, 4, tmp_path / "build", tmp_path / "p4", log=lambda *a: None)
    modelfile.save(random_model((16, 8, 4), seed=1), model)
    sweep.synthesise("ecp5-85k", model, 4, tmp_path / "build", tmp_path / "p5", log=lambda *a: None)
    assert len(calls) == 4  # another N, another target, another model: synthesised


@pytest.mark.slow  # the interrupted local sweep behind it runs for one to two minutes
def test_scheduler_and_two_workers_give_the_local_results(local_run, tmp_path, dask_cluster):
    spec, _, local, _ = local_run
    address, workers = dask_cluster.start(2)
    build = tmp_path / "build"
    assert cli.main(["sweep", str(spec), "--build", str(build), "--scheduler", address]) == 0
    remote = sweep.read_results(build / "sweep" / "tiny" / "results.jsonl")
    assert stable(remote) == stable(local)
    # the points ran on the two workers, not in this process
    assert {r["worker"].rsplit(":", 1)[1] for r in remote.values()} <= {str(p.pid) for p in workers}


def test_a_worker_killed_mid_sweep_loses_no_point(tmp_path, dask_cluster):
    spec = write_spec(tmp_path, stages=("evaluate",), pes=(2, 8))  # no failing point
    build = tmp_path / "build"
    results = build / "sweep" / "tiny" / "results.jsonl"
    address, workers = dask_cluster.start(2)
    sweep_proc = subprocess.Popen([sys.executable, "-m", "spikeloom.flows.sweep", str(spec), "--build", str(build),
                                   "--scheduler", address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=_env(), cwd=tmp_path)
    dask_cluster.procs.append(sweep_proc)
    killed, lost = dask_cluster.kill_busy_worker(  # with another point done
        "point-", lambda: results.exists() and results.read_text().count("\n") >= 1, sweep_proc)
    out = sweep_proc.communicate(timeout=240)[0].decode()
    assert sweep_proc.returncode == 0, out
    recs = lines(results)
    keys = [r["point"] for r in recs]
    assert len(keys) == len(set(keys)) == 4, recs  # every point once: none lost, none twice
    assert all(r["status"] == "ok" for r in recs), recs
    assert killed in {w.pid for w in workers}
    # the points the killed worker was running were run again, by the other worker
    by_key = {r["point"]: r for r in recs}
    assert lost and all(by_key[k]["worker"].rsplit(":", 1)[1] != str(killed) for k in lost), (lost, recs)


def test_the_dataset_outlives_the_only_worker_that_held_it(tmp_path, dask_cluster):
    """The dataset's only copy dies with the one worker of the cluster; a worker that joins later
    computes it again and runs every point (a scattered dataset would be lost for good, and every
    point not yet done would fail: 'cancelled for reason: already forgotten')."""
    spec = write_spec(tmp_path, stages=("evaluate",), pes=(2, 8))
    build = tmp_path / "build"
    results = build / "sweep" / "tiny" / "results.jsonl"
    address, (first,) = dask_cluster.start(1)
    sweep_proc = subprocess.Popen([sys.executable, "-m", "spikeloom.flows.sweep", str(spec), "--build", str(build),
                                   "--scheduler", address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=_env(), cwd=tmp_path)
    dask_cluster.procs.append(sweep_proc)
    killed, lost = dask_cluster.kill_busy_worker("point-", lambda: True, sweep_proc)
    assert killed == first.pid and lost
    (second,) = dask_cluster.add_workers(1)
    out = sweep_proc.communicate(timeout=240)[0].decode()
    assert sweep_proc.returncode == 0, out
    recs = lines(results)
    keys = [r["point"] for r in recs]
    assert len(keys) == len(set(keys)) == 4, recs  # every point once
    assert all(r["status"] == "ok" for r in recs), recs
    by_key = {r["point"]: r for r in recs}
    assert all(by_key[k]["worker"].rsplit(":", 1)[1] == str(second.pid) for k in lost), (lost, recs)
