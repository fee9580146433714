"""Test-suite settings shared by tests/ and sim/."""

import os

import pytest

# Verilator models compiled without C++ optimisation: every co-simulation test builds its own model
# and simulates a few dozen images, so compiling dominates (sim/runner.py OPT_ENV). A value set in
# the environment wins.
os.environ.setdefault("SPIKELOOM_VERILATOR_OPT", "-O0")


def pytest_runtest_setup(item):
    """Tests marked ``icarus`` skip with the printed reason when Icarus is absent (fail under CI=true)."""
    if item.get_closest_marker("icarus") is not None:
        from spikeloom.sim.testing import require_icarus

        require_icarus()


class DaskCluster:
    """A real ``dask scheduler`` and single-threaded ``dask worker`` processes (no nanny: killing a
    worker's process kills the worker) on 127.0.0.1, ports chosen by the OS, for the tests of the
    flows that run on Dask (flows/cluster.py: sweep, fuzz, synth). Made by the ``dask_cluster`` fixture."""

    def __init__(self, folder):
        self.folder, self.procs, self.address, self.workers, self.log = folder, [], None, [], None

    def env(self):
        return {**os.environ, "SPIKELOOM_PROGRESS_INTERVAL": "1", "PYTHONUNBUFFERED": "1"}

    def _spawn(self, *args):
        """``dask ARGS`` in the test's folder, its output to ``dask.log``."""
        import subprocess
        import sys
        from pathlib import Path

        if self.log is None:
            self.log = open(self.folder / "dask.log", "w")
        return subprocess.Popen([str(Path(sys.executable).parent / "dask"), *args], stdout=self.log,
                                stderr=self.log, env=self.env(), cwd=self.folder)

    def start(self, n_workers=2):
        """Start the scheduler and ``n_workers`` workers; returns (address, worker processes)."""
        import json
        import time

        sched_file = self.folder / "scheduler.json"
        self.procs.append(self._spawn("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--scheduler-file", str(sched_file)))
        deadline = time.monotonic() + 60
        while True:  # the file appears before its contents
            try:
                self.address = json.loads(sched_file.read_text())["address"]
                break
            except (OSError, ValueError, KeyError):
                assert self.procs[0].poll() is None and time.monotonic() < deadline, \
                    (self.folder / "dask.log").read_text()
                time.sleep(0.1)
        self.add_workers(n_workers)
        return self.address, self.workers

    def add_workers(self, n):
        """Start ``n`` more workers and wait until the scheduler has them all; returns their processes."""
        import time

        from distributed import Client

        names = [f"w{len(self.workers) + i}" for i in range(n)]
        new = [self._spawn("worker", self.address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                           "--no-dashboard", "--name", name) for name in names]
        self.workers += new
        self.procs += new
        deadline = time.monotonic() + 60
        with Client(self.address, timeout="30s") as c:  # by name: a killed worker may not be gone yet
            while not set(names) <= {w["name"] for w in c.scheduler_info(n_workers=-1)["workers"].values()}:
                assert all(p.poll() is None for p in new) and time.monotonic() < deadline, \
                    (self.folder / "dask.log").read_text()
                time.sleep(0.1)
        return new

    def kill_busy_worker(self, prefix, ready, watched, within=120):
        """Once ``ready()`` is true, SIGKILL a worker while it runs a task whose key starts with
        ``prefix``; ``watched`` (the client's process) must run meanwhile. Returns (its process id,
        the keys it was running and had not reported done, ``prefix`` removed).

        A task can finish between the question "what do you run?" and the kill; its result then
        reached the scheduler and the point counts as done by that worker, not lost. So the worker is
        frozen (SIGSTOP) first, what it already sent is let arrive, and the scheduler says which of
        its tasks are still processing there: those are the lost ones. None lost: it runs on and the
        next busy moment is taken."""
        import signal
        import time

        from distributed import Client

        from spikeloom.flows import cluster

        with Client(self.address, timeout="30s") as c:
            pids = c.run(os.getpid)  # worker address -> process id
            deadline = time.monotonic() + within
            while True:
                assert watched.poll() is None, watched.stdout.read().decode()
                assert time.monotonic() < deadline, f"no worker ran a {prefix} task after ready() in {within} s"
                if ready():
                    busy = {w: ks for w, ks in cluster.executing(c, prefix).items() if ks}
                    if busy:
                        w, ks = next(iter(busy.items()))
                        os.kill(pids[w], signal.SIGSTOP)
                        time.sleep(1.0)  # what the worker sent before it stopped reaches the scheduler
                        lost = set(cluster.still_processing(c, w, ks))
                        if lost:
                            os.kill(pids[w], signal.SIGKILL)
                            return pids[w], {k.removeprefix(prefix) for k in lost}
                        os.kill(pids[w], signal.SIGCONT)
                time.sleep(0.05)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait(timeout=30)
        if self.log is not None:
            self.log.close()


@pytest.fixture
def dask_cluster(tmp_path):
    """A :class:`DaskCluster` (``.start(n_workers)``), every process of it stopped after the test."""
    c = DaskCluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()
