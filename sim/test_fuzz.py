"""The random-network campaign (flows/fuzz.py) end to end under Icarus: a small campaign passes with
its report, and a campaign whose golden model is deliberately wrong records every network as a
failing case whose reproducer folder replays to the same mismatch."""

import json
import subprocess
import sys

import numpy as np
import pytest

from spikeloom.flows import fuzz
from spikeloom.model import modelfile

from .test_icarus import requires_icarus

pytestmark = [pytest.mark.cosim, requires_icarus]


#: The fields of a network's record that differ between two runs of it (time).
VOLATILE = ("seconds", "worker")


def per_network(rep_or_path):
    """``{index: record}`` of a report's networks (passed ones included), without the volatile fields."""
    return {r["index"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in rep_or_path}


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """Four networks on the embedded LocalCluster (two workers); (report, build folder, records)."""
    build = tmp_path_factory.mktemp("local")
    records = []
    rep = fuzz.campaign(4, seed=1, jobs=2, build=build, log=lambda *a: None, on_network=records.append)
    return rep, build, records


def test_small_campaign_passes(local):
    rep, tmp_path, _ = local
    on_disk = json.loads((tmp_path / "fuzz.json").read_text())
    assert on_disk == json.loads(json.dumps(rep))
    c = rep["counts"]
    assert c["networks"] == 4 and c["mismatched"] == 0 and c["errors"] == 0, rep["failures"]
    assert c["passed"] + c["refused"] == 4 and c["passed"] >= 3
    assert rep["images_per_network"] == 3 and c["images"] == 3 * c["passed"]
    assert sum(v["networks"] for v in rep["by"]["weights"].values()) == 4
    assert not rep["failures"] and not list((tmp_path / "fuzz").iterdir())  # passed networks leave nothing
    assert rep["jobs"] == 2 and rep["cluster"] == "LocalCluster, 2 worker processes" and not rep["worker_died"]


def test_campaign_on_a_scheduler_with_two_workers_gives_the_local_results(local, tmp_path, dask_cluster):
    """The same networks through ``--scheduler`` on a real ``dask scheduler`` and two ``dask worker``
    processes: network i is drawn from (seed, i) alone, so each record equals the local run's."""
    _, _, local_records = local
    address, workers = dask_cluster.start(2)
    records = []
    rep = fuzz.campaign(2, seed=1, build=tmp_path, scheduler=address, log=lambda *a: None,
                        on_network=records.append)
    assert rep["cluster"] == f"scheduler {address}" and rep["jobs"] == 2
    assert f"--scheduler {address}" in rep["command"]
    want = per_network(local_records)
    assert per_network(records) == {i: want[i] for i in range(2)}
    assert {int(r["worker"].rsplit(":", 1)[1]) for r in records} <= {p.pid for p in workers}  # run by the workers


def test_a_network_past_its_timeout_is_an_error_with_its_reproducer(tmp_path):
    """On a worker (not the main thread: no SIGALRM) the time limit ends the network (its
    processes killed, its thread interrupted); the network is an error with its reproducer."""
    rep = fuzz.campaign(1, seed=1, jobs=1, build=tmp_path, timeout=1, log=lambda *a: None)
    assert rep["counts"]["errors"] == 1, rep
    f = rep["failures"][0]
    assert f["detail"] == "no result within 1 s (a hang?)"
    names = {p.name for p in (tmp_path / "fuzz" / "fail-0").iterdir()}
    assert {"case.json", "inputs.npy", "model.slm"} <= names <= {"case.json", "inputs.npy", "model.slm", "sim.log"}


def test_a_network_whose_workers_died_is_an_error_with_its_reproducer(tmp_path):
    """What the client records when Dask gives up on a network (every worker running it died)."""
    from distributed import KilledWorker

    from spikeloom.flows import cluster

    r = fuzz._lost((4, 2, str(tmp_path), 3, "icarus", True, 300), cluster.task_error(KilledWorker("net-2", "tcp://127.0.0.1:1", 3)),
                   tmp_path)
    assert r["outcome"] == "error" and r["detail"].startswith("every worker that ran it died") and "after 4 tries" in r["detail"] and r["images"] == 3
    folder = tmp_path / "fuzz" / "fail-2"
    assert r["folder"] == str(folder) and r["categories"] == fuzz.categories(fuzz.draw(4, 2))
    assert sorted(p.name for p in folder.iterdir()) == ["case.json", "golden.slm", "inputs.npy", "model.slm"]
    assert json.loads((folder / "case.json").read_text())["options"] == json.loads(json.dumps(fuzz.draw(4, 2).options))


@pytest.mark.slow  # about a minute of a real cluster
def test_a_worker_killed_mid_campaign_loses_no_network(local, tmp_path, dask_cluster):
    _, _, local_records = local
    address, workers = dask_cluster.start(2)
    proc = subprocess.Popen([sys.executable, "-m", "spikeloom.flows.fuzz", "--networks", "6", "--seed", "1",
                             "--scheduler", address, "--build", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=dask_cluster.env(), cwd=tmp_path)
    dask_cluster.procs.append(proc)
    killed, lost = dask_cluster.kill_busy_worker("net-", lambda: True, proc)
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out
    rep = json.loads((tmp_path / "fuzz.json").read_text())
    assert rep["counts"]["networks"] == 6 and rep["counts"]["errors"] == 0 and not rep["worker_died"], rep
    assert killed in {w.pid for w in workers} and lost


def test_injected_mismatch_is_recorded_and_replays(tmp_path, capsys):
    assert fuzz.main(["--networks", "2", "--seed", "4", "--jobs", "1", "--inject-mismatch",
                      "--build", str(tmp_path)]) == 1
    rep = json.loads((tmp_path / "fuzz.json").read_text())
    assert rep["counts"]["mismatched"] == 2 and rep["counts"]["passed"] == 0, rep
    assert rep["injected_mismatch"] and len(rep["failures"]) == 2
    for k, f in enumerate(rep["failures"]):
        folder = tmp_path / "fuzz" / f"fail-{f['index']}"
        assert f["folder"] == str(folder) and f["replay"] == f"python -m spikeloom.flows.fuzz --replay {folder}"
        assert "synaptic_events" in f["detail"]
        case = fuzz.draw(4, f["index"])
        assert np.array_equal(np.load(folder / "inputs.npy"), case.inputs)
        saved = modelfile.load(folder / "model.slm")
        assert np.array_equal(saved.layers[0].weight, case.model.layers[0].weight)
        info = json.loads((folder / "case.json").read_text())
        assert info["options"] == json.loads(json.dumps(case.options)) and info["outcome"] == "mismatched"
        # each replays to the same mismatch: the first through replay(), the other through the command
        # line (its exit status and the line it prints)
        if k == 0:
            again = fuzz.replay(folder, log=lambda *a: None)
            assert again["outcome"] == "mismatched" and again["detail"] == f["detail"]
        else:
            capsys.readouterr()
            assert fuzz.main(["--replay", str(folder)]) == 1
            out = capsys.readouterr().out
            assert f"network {f['index']} (seed 4): mismatched" in out and f": {f['detail']}" in out, out


def test_ctrl_c_reports_the_finished_networks_and_leaves_nothing_running(tmp_path, dask_cluster):
    """Ctrl-C reaches every process of the terminal's group: the workers and their simulators
    ignore it (no network cut short into a false failure), the campaign reports what finished,
    exits 130 and leaves no process and no work folder behind."""
    import os
    import signal
    import time

    import psutil

    # SIGINT at its default in the campaign, as from a terminal: a test run started in the background
    # of a non-interactive shell (``make test &``) hands its children SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler (the campaign ran all 40 networks and exited 0)
    proc = subprocess.Popen([sys.executable, "-m", "spikeloom.flows.fuzz", "--networks", "40", "--seed", "2",
                             "--jobs", "2", "--build", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=dask_cluster.env(), cwd=tmp_path, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    dask_cluster.procs.append(proc)
    deadline = time.monotonic() + 120
    buf = b""
    while b"fuzz: 2/40" not in buf:  # two networks done, others running
        assert proc.poll() is None and time.monotonic() < deadline, buf.decode()
        buf += proc.stdout.read1(4096)
    group = [p for p in psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGINT)
    # the ceiling the other campaigns here get: a lost interrupt shows as what it is (the whole
    # campaign run, exit 0), not as a timeout
    out = (buf + proc.communicate(timeout=300)[0]).decode()
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    rep = json.loads((tmp_path / "fuzz.json").read_text())
    assert rep["interrupted"] and 2 <= rep["counts"]["networks"] < 40 and rep["counts"]["errors"] == 0, rep
    assert rep["counts"]["passed"] + rep["counts"]["refused"] == rep["counts"]["networks"]
    assert not list((tmp_path / "fuzz").iterdir())  # no failure folder, no work folder
    gone, alive = psutil.wait_procs(group, timeout=15)
    assert not alive, alive
