"""``make fuzz``: the random-network campaign. Many small random networks, drawn from the whole space
the model file and the generator accept, are generated and co-simulated under Icarus Verilog against
the golden model (the scoreboard of ``sim/tb_accel.py``: every field of every image equal).

Network ``i`` of seed ``S`` is drawn from ``numpy.random.default_rng([S, i])`` alone
(:func:`draw`), so the same seed gives the same networks on any machine, whatever ``--jobs``. Per
network: :func:`spikeloom.model.randnet.random_any_model` (dense, conv, pooling, residual; every
neuron model, reset, firing rule and leak; both readouts; bit widths and T_max at both ends), the
generator's options (N = 1..16, weight storage dense, compressed, auto or mixed per layer, weights
``rom`` or ``load``, trace port on or off), random idle and back-pressure, and a few inputs (all
zeros, all at the largest value, random with any density).

``build/fuzz.json``: the counts (networks, images, passed, mismatched, refused, errors), broken down
by every drawn axis, the wall time and, for every failing network, a folder ``build/fuzz/fail-<i>/``
(``model.slm``, ``inputs.npy``, ``case.json`` with the generator's and the bench's options) that
``python -m spikeloom.flows.fuzz --replay build/fuzz/fail-<i>`` co-simulates again. A network the
generator refuses (a one-line ``ValueError``) counts as ``refused`` with its reason, not as passed.

The networks are tasks on Dask (:mod:`spikeloom.flows.cluster`, the sweep's and ``make synth``'s
executor): an embedded LocalCluster of ``--jobs`` worker processes (default one per CPU), or the
cluster of ``--scheduler tcp://HOST:PORT``. A network whose worker dies is run again on another
worker; one that kills every worker it runs on is an error with its reproducer.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from spikeloom.hw.plan import QUEUE_DEPTH, SPARSE_FORMS, STORAGES
from spikeloom.model.config import check_seed
from spikeloom.model.data import load_npy
from spikeloom.model.errors import ConfigError, SpikeloomError
from spikeloom.model.randnet import WIDTH_RANGES, T_MAX_RANGE, extreme_inputs, random_any_model

from . import cluster
from .common import Parser, check_cosim, int_option, parse_and_run, table
from .output import atomic_write, check_out_dir

#: The generator's PE counts the campaign draws (both ends more often than the rest).
N_RANGE = (1, 16)
#: Weight storages drawn: every layer dense, every layer compressed, the plan's choice, or a
#: random choice per layer (``hw/plan.py``).
STORAGE_CHOICES = ("dense", "sparse", "auto", "mixed")
#: What "mixed" draws per layer: dense, or compressed with its rows whole or cut by kernel row or tap.
MIXED_FORMS = STORAGES + tuple(f for f in SPARSE_FORMS if f != "sparse:row")
WEIGHT_MODES = ("rom", "load")
#: Idle (input) and back-pressure (outputs) probabilities of the bench's streams.
STALLS = (0.0, 0.2, 0.6)
#: PE queue depths drawn (hw/plan.py, "PE queues"): none (lockstep), small ones that fill, odd, the default
QUEUE_DEPTHS = (0, 2, 3, QUEUE_DEPTH)
OUTCOMES = ("passed", "mismatched", "refused", "errors")
CASE_FILE = "case.json"


@dataclass
class Case:
    """One network of a campaign and everything needed to co-simulate it again."""

    seed: int
    index: int
    model: object
    n_pe: int
    storage: object  # "dense" | "sparse" | "auto" | {layer: one of MIXED_FORMS}
    weights: str
    trace: bool
    inputs: np.ndarray
    sim_seed: int
    idle: float
    backpressure: float
    queue_depth: int = QUEUE_DEPTH

    @property
    def options(self):
        """The generator's and the bench's options (``case.json``)."""
        return {"n_pe": self.n_pe, "storage": self.storage, "weights": self.weights, "trace": self.trace,
                "sim_seed": self.sim_seed, "idle": self.idle, "backpressure": self.backpressure,
                "queue_depth": self.queue_depth}


def draw(seed, index, images=3):
    """Network ``index`` of the campaign of ``seed`` (deterministic on any machine)."""
    rng = np.random.default_rng([seed, index])
    model = random_any_model(rng)
    # both ends, and mostly few PEs: generation time grows with N (about 0.15 s per PE)
    u = rng.random()
    n_pe = (N_RANGE[0] if u < 0.25 else N_RANGE[1] if u < 0.3 else int(rng.integers(2, 5)) if u < 0.8
            else int(rng.integers(5, N_RANGE[1])))
    storage = str(rng.choice(STORAGE_CHOICES))
    if storage == "mixed":
        storage = {ly.name: str(rng.choice(MIXED_FORMS)) for ly in model.layers}
    weights = str(rng.choice(WEIGHT_MODES))
    trace = bool(rng.random() < 0.5)
    inputs = extreme_inputs(model, images, rng)
    sim_seed, idle, backpressure = int(rng.integers(0, 1 << 16)), float(rng.choice(STALLS)), float(rng.choice(STALLS))
    # (drawn last: the draws before it are those of a campaign before the PE queues)
    return Case(seed, index, model, n_pe, storage, weights, trace, inputs, sim_seed, idle, backpressure,
                int(rng.choice(QUEUE_DEPTHS)))


def _width_class(value, name):
    lo, hi = WIDTH_RANGES[name]
    return f"min {lo}" if value == lo else f"max {hi}" if value == hi else "between"


def _leak_class(nr):
    a, f = nr.leak_mul, nr.leak_frac
    return "none" if a == 0 else "full" if a == 1 << f else "shift" if a == 1 else "multiplier"


def categories(case):
    """``{axis: [values]}`` that ``case`` shows, read off the network and its options (a conv
    network with pooling and a shortcut is ``conv``, ``pool`` and ``residual``; ``floor_pool``: a
    pooled map that does not divide by its pool)."""
    m = case.model
    convs = [ly for ly in m.layers if ly.kind == "conv"]
    neurons = [ly.neuron for ly in m.layers if ly.role != "output"]
    kind = ["dense"] if not convs else ["conv"]
    kind += ["pool"] if any(ly.pool > 1 for ly in convs) else []
    kind += ["sum_pool"] if any(ly.pool > 1 and ly.pool_op == "sum" for ly in convs) else []
    kind += ["floor_pool"] if any(ly.map_shape[1] % ly.pool or ly.map_shape[2] % ly.pool for ly in convs) else []
    kind += ["residual"] if any(ly.shortcut for ly in convs) else []
    if convs and any(ly.kind == "dense" and ly.role != "output" for ly in m.layers):
        kind.append("conv+dense")
    t = m.t_max
    e = m.exit_threshold
    return {
        "kind": kind,
        "input": ["flat" if len(m.input_shape) == 1 else f"c_in {m.input_shape[0]}"],
        "neurons": ["v1" if m.uses_v1_neuron() else "per_layer"],
        "reset": sorted({nr.reset for nr in neurons}),
        "fire": sorted({nr.fire for nr in neurons}),
        "leak": sorted({_leak_class(nr) for nr in neurons}),
        "readout": [m.readout],
        "storage": ["mixed" if isinstance(case.storage, dict) else case.storage],
        "weights": [case.weights],
        "queues": [f"depth {case.queue_depth}"],
        "trace": ["on" if case.trace else "off"],
        "n_pe": [str(case.n_pe)],
        "weight_bits": [_width_class(m.layers[0].weight_bits, "weight_bits")],
        "input_bits": [_width_class(m.input_bits, "input_bits")],
        "membrane_bits": [_width_class(m.neuron.membrane_bits, "membrane_bits")],
        "t_max": [f"min {T_MAX_RANGE[0]}" if t == T_MAX_RANGE[0] else f"max {T_MAX_RANGE[1]}"
                  if t == T_MAX_RANGE[1] else "between"],
        "exit_threshold": ["0" if e == 0 else "1..9" if e < 10 else "unreachable"
                           if e >= 1 << m.neuron.membrane_bits else ">=10"],
    }


def injected(model):
    """A copy of ``model`` whose golden results must differ from the hardware's: one weight of the
    analog layer turned from zero to nonzero or back, the one (channel 0, input channel 0, tap
    (p, p)) that the image's first value meets at output position (0, 0), so the all-max input
    counts other synaptic events (``--inject-mismatch``: the campaign's checker is live)."""
    from spikeloom.model.errors import ModelFileError
    from spikeloom.model.ir import validate

    first = model.layers[0]
    at = (0, 0, first.padding, first.padding) if first.kind == "conv" else (0, 0)
    for v in ((0,) if first.weight[at] else (1, -1)):
        w = first.weight.copy()
        w[at] = v
        wrong = replace(model, layers=[replace(first, weight=w), *model.layers[1:]])
        try:
            return validate(wrong)
        except ModelFileError:
            continue
    raise SpikeloomError("cannot inject a mismatch: every changed weight overflows the 32-bit current")


class _Timeout(Exception):
    """A network ran past its time limit."""


class _Cancelled(Exception):
    """The campaign no longer wants this network (interrupted, or its client gone)."""


def _alarm(signum, frame):
    raise _Timeout()


def _quiet_unraisable(u):
    """``sys.unraisablehook``: our own asynchronous exception, delivered inside a destructor
    (``__del__`` cannot pass it on), is not news; the watchdog raises it again. Others as usual."""
    if not isinstance(u.exc_value, (_Timeout, _Cancelled)):
        sys.__unraisablehook__(u)


def _raise_in(thread_id, exc):
    """Raise ``exc`` (a class; None: clear a pending one) in the thread ``thread_id`` at its next
    Python instruction (CPython's ``PyThreadState_SetAsyncExc``)."""
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


def _dask_cancelled():
    """A function telling whether the Dask task running this thread was cancelled (its client
    cancelled it, was interrupted or went away), or None outside a Dask task."""
    try:
        from distributed import get_worker
        from distributed.worker import thread_state

        worker, key = get_worker(), thread_state.key
    except (ImportError, ValueError, AttributeError):
        return None

    def cancelled():
        ts = worker.state.tasks.get(key)
        return ts is None or ts.state in ("cancelled", "released", "forgotten")

    return cancelled


class _Deadline:
    """The block of one network, ended by :class:`_Timeout` once ``seconds`` have passed, or by
    :class:`_Cancelled` once ``cancelled()`` is true.

    In the main thread (a replay) SIGALRM interrupts whatever runs. In a Dask worker's thread (a
    campaign's network; a worker may run several at once) a watchdog thread kills this network's
    processes only (those whose working folder or command line lies in ``folder``: its simulator,
    its compiler) and raises the exception in this thread at its next Python instruction, again
    every half second until the block ends, so a hang in Python (the generator) ends too."""

    def __init__(self, seconds, folder, cancelled=None):
        self.seconds, self.folder, self.cancelled = seconds, str(Path(folder).absolute()), cancelled
        self.fired = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    def __enter__(self):
        self.main = threading.current_thread() is threading.main_thread()
        if self.main:
            self._old = signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(self.seconds)
            return self
        self._tid = threading.get_ident()
        sys.unraisablehook = _quiet_unraisable
        self._watch = threading.Thread(target=self._watchdog, daemon=True)
        self._watch.start()
        return self

    def _mine(self):
        import psutil

        out = []
        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.cwd().startswith(self.folder) or any(self.folder in a for a in p.cmdline()):
                    out += [p, *p.children(recursive=True)]
        return out

    def _watchdog(self):
        import psutil

        end = time.monotonic() + self.seconds
        while not self._done.wait(0.5):
            reason = _Timeout if time.monotonic() >= end else (
                _Cancelled if self.cancelled is not None and self.cancelled() else None)
            if reason is None:
                continue
            with self._lock:
                if self._done.is_set():
                    return
                self.fired = self.fired or reason
                for p in self._mine():
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                _raise_in(self._tid, self.fired)

    def __exit__(self, et, ev, tb):
        if self.main:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, self._old)
            return False
        with self._lock:
            self._done.set()
            _raise_in(self._tid, None)  # one raised just now, not yet seen: cleared
        self._watch.join()
        if self.fired is not None:  # whatever the block ended with, it ran past its time, or is unwanted
            raise self.fired() from None
        return False


def _brief(text, n=300):
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def run_case(case, folder, simulator="icarus", golden_model=None, timeout=300):
    """Generate and co-simulate ``case`` in ``folder``; the outcome dict (``outcome`` one of
    :data:`OUTCOMES` ``"passed"``, ``"mismatched"``, ``"refused"``, ``"error"``; ``detail``: the
    refusal, the first mismatches or the error)."""
    from spikeloom.hw.accel import generate
    from spikeloom.hw.plan import Plan
    from spikeloom.model import modelfile
    from spikeloom.sim.runner import cosim

    folder = Path(folder)
    t0 = time.perf_counter()
    out = {"index": case.index, "images": int(len(case.inputs)), "mismatched_images": 0}
    model_path = modelfile.save(case.model, folder / "model.slm")
    gpath = modelfile.save(golden_model, folder / "golden.slm") if golden_model is not None else None
    try:
        with _Deadline(timeout, folder, _dask_cancelled()):
            try:  # the generator's documented refusals are its plan's (hw/plan.py); a later failure is an error
                Plan(case.model, case.n_pe, case.storage, queue_depth=case.queue_depth)  # (trace, weights: valid)
            except (ValueError, TypeError) as e:
                return {**out, "outcome": "refused", "detail": _brief(e), "seconds": time.perf_counter() - t0}
            generate(case.model, case.n_pe, folder / "rtl", trace=case.trace, storage=case.storage,
                     weights=case.weights, queue_depth=case.queue_depth)
            r = cosim(model_path, folder / "rtl", case.inputs, folder / "work", simulator=simulator,
                      seed=case.sim_seed, idle=case.idle, backpressure=case.backpressure, golden_model_path=gpath)
        bad = r["mismatched_images"]
        if r["n_images"] != len(case.inputs):
            out.update(outcome="mismatched", detail=f"{r['n_images']} results for {len(case.inputs)} images; "
                       + "; ".join(r["mismatches"][:3]))
        else:
            out.update(outcome="mismatched" if bad else "passed", detail="; ".join(r["mismatches"][:5]))
        out["mismatched_images"] = int(bad)
    except _Timeout:
        out.update(outcome="error", detail=f"no result within {timeout} s (a hang?)")
    except _Cancelled:
        out.update(outcome="cancelled", detail="the campaign no longer wants it")
    except Exception as e:  # noqa: BLE001 -- any failure of one network is recorded with its reproducer
        out.update(outcome="error", detail=_brief(f"{type(e).__name__}: {e}"))
    out["seconds"] = time.perf_counter() - t0
    return out


def replay_command(folder):
    return f"python -m spikeloom.flows.fuzz --replay {folder}"


def _keep(case, dest, outcome, simulator, inject, work=None):
    """The reproducer of a failing network: ``dest/`` with model.slm (and golden.slm, the golden
    model's, when ``inject``), inputs.npy, case.json (options, outcome, the one command) and the
    co-simulation's sim.log when its work folder ``work`` has one."""
    from spikeloom.model import modelfile

    dest.mkdir(parents=True, exist_ok=True)
    modelfile.save(case.model, dest / "model.slm")
    if inject:
        modelfile.save(injected(case.model), dest / "golden.slm")
    if work is not None and (Path(work) / "work" / "sim.log").exists():
        shutil.copy2(Path(work) / "work" / "sim.log", dest / "sim.log")
    np.save(dest / "inputs.npy", case.inputs)
    info = {"seed": case.seed, "index": case.index, "simulator": simulator, "options": case.options,
            "outcome": outcome["outcome"], "detail": outcome["detail"], "replay": replay_command(dest)}
    atomic_write(dest / CASE_FILE, json.dumps(info, indent=1) + "\n")


def _failed(case, build, out, simulator, inject, work=None):
    """``out`` with the folder and the command of the reproducer it now has."""
    dest = Path(build) / "fuzz" / f"fail-{case.index}"
    _keep(case, dest, out, simulator, inject, work)
    return {**out, "folder": str(dest), "replay": replay_command(dest)}


def _one(task):
    """A worker's network: draw, run, keep a reproducer on failure, remove the work folder."""
    seed, index, build, images, simulator, inject, timeout = task
    try:
        case = draw(seed, index, images)
        cats = categories(case)
    except Exception as e:  # noqa: BLE001 -- a bug of the campaign's own generator: an error, no model file
        return {"index": index, "outcome": "error", "detail": _brief(f"drawing failed: {type(e).__name__}: {e}"),
                "images": 0, "mismatched_images": 0, "seconds": 0.0, "categories": {}}
    # this attempt's own folder: a worker killed mid-network leaves its simulator running in its own
    cancelled = _dask_cancelled()
    if cancelled is not None and cancelled():  # the campaign stopped while it waited: not started
        return {"index": index, "outcome": "cancelled", "detail": "", "images": 0, "mismatched_images": 0,
                "seconds": 0.0, "categories": cats}
    folder = Path(build) / "fuzz" / f"net-{index}-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    try:
        golden_model = injected(case.model) if inject else None
        out = run_case(case, folder, simulator, golden_model, timeout)
    except Exception as e:  # noqa: BLE001
        out = {"index": index, "outcome": "error", "detail": _brief(f"{type(e).__name__}: {e}"),
               "images": len(case.inputs), "mismatched_images": 0, "seconds": 0.0}
    if out["outcome"] in ("mismatched", "error") and not (cancelled is not None and cancelled()):
        out = _failed(case, build, out, simulator, inject, folder)  # (an unwanted network leaves nothing)
    shutil.rmtree(folder, ignore_errors=True)
    out["categories"] = cats
    out["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return out


_STALE = re.compile(r"net-\d+(-\d+)?|fail-\d+")


def _clear(fuzz_dir):
    """Remove the previous campaign's network folders (only ``net-<i>[-<pid>]``/``fail-<i>`` folders that
    hold a campaign's files), so that every ``fail-<i>`` is this run's."""
    if not fuzz_dir.is_dir():
        return
    for p in fuzz_dir.iterdir():
        if p.is_dir() and _STALE.fullmatch(p.name) and (
                (p / CASE_FILE).exists() or (p / "model.slm").exists() or not any(p.iterdir())):
            shutil.rmtree(p)


class _Progress:
    """A tqdm bar on a terminal; in a log, a plain line every 5% of the networks."""

    def __init__(self, total, log):
        self.total, self.done, self.log, self.t0 = total, 0, log, time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="net", desc="fuzz", file=sys.stderr)
        self.step = max(1, total // 20)

    def update(self, counts):
        self.done += 1
        post = f"{counts['mismatched']} mismatched, {counts['errors']} errors, {counts['refused']} refused"
        if self.bar is not None:
            self.bar.set_postfix_str(post, refresh=False)
            self.bar.update(1)
        elif self.done % self.step == 0 or self.done == self.total:
            self.log(f"fuzz: {self.done}/{self.total} networks, {post}, {time.perf_counter() - self.t0:.0f} s")

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _tally(results):
    counts = {"networks": len(results), "images": 0, "passed": 0, "mismatched": 0, "refused": 0, "errors": 0,
              "mismatched_images": 0}
    by = {}
    for r in results:
        key = "errors" if r["outcome"] == "error" else r["outcome"]
        counts[key] += 1
        counts["images"] += r["images"] if r["outcome"] != "refused" else 0
        counts["mismatched_images"] += r["mismatched_images"]
        for axis, values in r["categories"].items():
            for v in values:
                c = by.setdefault(axis, {}).setdefault(v, {"networks": 0, **{k: 0 for k in OUTCOMES}})
                c["networks"] += 1
                c[key] += 1
    return counts, {a: dict(sorted(v.items())) for a, v in sorted(by.items())}


def _lost(task, error, build):
    """The record of a network whose task did not return (its workers died, or it raised on the
    way): an error, with its reproducer drawn again here."""
    seed, index, _, images, simulator, inject, _ = task
    out = {"index": index, "outcome": "error", "detail": _brief(error), "images": 0, "mismatched_images": 0,
           "seconds": 0.0, "categories": {}}
    try:
        case = draw(seed, index, images)
        out.update(images=len(case.inputs), categories=categories(case))
        return _failed(case, build, out, simulator, inject)
    except Exception as e:  # noqa: BLE001 -- no reproducer: the record says why
        return {**out, "detail": _brief(f"{error}; no reproducer: {type(e).__name__}: {e}")}


def campaign(networks=1000, seed=0, jobs=None, build=Path("build"), images=3, simulator="icarus",
             inject=False, timeout=300, log=print, scheduler=None, on_network=None):
    """Run the campaign on Dask (:mod:`spikeloom.flows.cluster`: an embedded LocalCluster of
    ``jobs`` worker processes, default one per CPU, or the cluster of ``scheduler``) and write
    ``build/fuzz.json``; returns the report. ``on_network``: called with each network's record
    (outcome, detail, images, categories, seconds, worker) as it finishes."""
    import uuid
    from concurrent.futures import CancelledError

    from distributed import KilledWorker

    scheduler, jobs = cluster.check_args(scheduler, jobs, "--jobs")
    build = Path(build).absolute()  # the workers' tasks write there, whatever their working folder
    t0 = time.perf_counter()
    tasks = [(seed, i, str(build), images, simulator, inject, timeout) for i in range(networks)]
    results = []
    counts = {k: 0 for k in ("mismatched", "errors", "refused")}
    lost = []

    # interrupted (Ctrl-C, or SIGTERM to this process): the networks finished so far are reported;
    # stopped (the scheduler lost, the tasks cancelled by someone else): the same, then one line
    interrupted, stopped = False, None
    where, n_workers = None, jobs
    progress = None
    try:
        with cluster.connect(scheduler, jobs) as (client, where):
            n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
            _clear(build / "fuzz")  # connected: the previous campaign's folders go only now
            (build / "fuzz").mkdir(parents=True, exist_ok=True)
            log(f"fuzz: {networks} networks on {where} ({n_workers} workers now)")
            progress = _Progress(networks, log)
            run = uuid.uuid4().hex[:8]  # two campaigns on one scheduler never share a task
            futures = {client.submit(_one, t, key=f"net-{t[1]}-{run}", pure=False): t for t in tasks}
            try:
                for fut in cluster.completed(futures):
                    try:
                        r = fut.result()
                    except KilledWorker as e:  # every worker that ran it died: an error, with its reproducer
                        r = _lost(futures[fut], cluster.task_error(e), build)
                        lost.append(r["index"])
                    except CancelledError as e:  # not this campaign's doing: the campaign cannot go on
                        stopped = cluster.task_error(e)
                        break
                    except Exception as e:  # noqa: BLE001 -- the task itself raised (a bug of the campaign's)
                        r = _lost(futures[fut], f"the network's task failed: {cluster.task_error(e)}", build)
                    results.append(r)
                    if on_network is not None:
                        on_network(r)
                    if r["outcome"] != "passed":
                        counts["errors" if r["outcome"] == "error" else r["outcome"]] += 1
                    progress.update(counts)
            finally:  # the networks still queued or running stop (a running one sees it within a second)
                with contextlib.suppress(Exception):
                    client.cancel(list(futures))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if progress is not None:
            progress.close()
        if scheduler is None:  # the embedded cluster is closed: the cut-short networks' work folders go
            for p in (build / "fuzz").glob("net-*"):  # (a remote worker removes its own, once it stops)
                if p.is_dir() and _STALE.fullmatch(p.name):
                    shutil.rmtree(p, ignore_errors=True)
    results.sort(key=lambda r: r["index"])
    wall = time.perf_counter() - t0
    totals, by = _tally(results)
    secs = [r["seconds"] for r in results if r["outcome"] != "refused"]
    report = {
        "command": f"python -m spikeloom.flows.fuzz --networks {networks} --seed {seed} "
                   + (f"--scheduler {scheduler}" if scheduler else f"--jobs {n_workers}")
                   + f" --images {images}" + (" --inject-mismatch" if inject else ""),
        "seed": seed, "networks": networks, "images_per_network": images, "simulator": simulator, "jobs": n_workers,
        "cluster": where, "injected_mismatch": inject, "interrupted": interrupted or stopped is not None,
        "stopped_by": stopped, "worker_died": bool(lost),
        "workers_died_on": sorted(lost), "wall_s": round(wall, 1),
        "seconds_per_network": {"mean": round(float(np.mean(secs)), 2) if secs else 0.0,
                                "max": round(float(np.max(secs)), 2) if secs else 0.0},
        "counts": totals, "by": by,
        "refused": [{"index": r["index"], "reason": r["detail"]} for r in results if r["outcome"] == "refused"],
        "failures": [{k: r[k] for k in ("index", "outcome", "detail", "folder", "replay")}
                     for r in results if r["outcome"] in ("mismatched", "error")],
    }
    atomic_write(build / "fuzz.json", json.dumps(report, indent=1) + "\n")
    log(table([[k, v] for k, v in totals.items()], ["networks", "count"]))
    log(f"{wall:.0f} s wall, {report['seconds_per_network']['mean']} s per network on each of {n_workers} "
        f"workers ({where}); wrote {build / 'fuzz.json'}")
    for f in report["failures"][:10]:
        log(f"network {f['index']} {f['outcome']}: {f['detail'][:200]}\n  reproduce: {f['replay']}")
    if interrupted:
        raise KeyboardInterrupt  # after the report of the finished networks: exit status 130
    if stopped is not None:
        raise SpikeloomError(f"fuzz: stopped after {len(results)} of {networks} networks ({stopped}); "
                             f"those are in {build / 'fuzz.json'}")
    return report


def replay(folder, log=print):
    """Co-simulate a failing network's folder again (``--replay``); returns the outcome dict."""
    from spikeloom.model import modelfile

    folder = Path(folder)
    if not (folder / CASE_FILE).is_file():
        raise ConfigError(f"--replay {folder}: no {CASE_FILE} there (a build/fuzz/fail-<i> folder of a campaign)")
    case_file = folder / CASE_FILE
    try:
        info = json.loads(case_file.read_text())
        o = info["options"]
        fields = (info["seed"], info["index"], o["n_pe"], o["storage"], o["weights"], o["trace"], o["sim_seed"],
                  o["idle"], o["backpressure"], info["simulator"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--replay {folder}: {case_file} is not a readable case file ({e})") from None
    except (KeyError, TypeError) as e:
        raise ConfigError(f"--replay {folder}: {case_file} lacks the field {e} (not written by this version "
                          "of spikeloom fuzz)") from None
    for name in ("model.slm", "inputs.npy"):
        if not (folder / name).is_file():
            raise ConfigError(f"--replay {folder}: {name} is missing (a failing network's folder holds "
                              f"{CASE_FILE}, model.slm and inputs.npy)")
    seed, index, n_pe, storage, weights, trace, sim_seed, idle, backpressure, simulator = fields
    check_cosim(simulator, None)
    model = modelfile.load(folder / "model.slm")
    golden_model = modelfile.load(folder / "golden.slm") if (folder / "golden.slm").exists() else None
    case = Case(seed, index, model, n_pe, storage, weights, trace, load_npy(folder / "inputs.npy", "--replay"), sim_seed,
                idle, backpressure, o.get("queue_depth", QUEUE_DEPTH))   # (a case file before the PE queues: the default)
    work = folder / "replay"
    shutil.rmtree(work, ignore_errors=True)
    out = run_case(case, work, simulator, golden_model)
    log(f"network {case.index} (seed {case.seed}): {out['outcome']}"
        + (f", {out['mismatched_images']} of {out['images']} images mismatched" if out["mismatched_images"] else "")
        + (f": {out['detail']}" if out["detail"] else ""))
    return out


#: the most networks one campaign draws (its task list is built up front)
MAX_NETWORKS = 1_000_000
#: the campaign options and their defaults, which --replay refuses (its case file holds them)
REPLAY_IGNORES = {"networks": "1000", "seed": "0", "jobs": None, "scheduler": None, "images": "3", "sim": "icarus", "timeout": "300",
                  "inject_mismatch": False}


def add_arguments(p):
    # plain strings, checked by run_args: a bad value is one line and exit 2, not a usage dump
    p.add_argument("--networks", default="1000", help="number of random networks (default 1000)")
    p.add_argument("--seed", default="0", help="campaign seed: network i is drawn from (seed, i) (default 0)")
    p.add_argument("--jobs", default=None, help="worker processes of the embedded Dask LocalCluster (default: "
                   "the number of CPUs)")
    cluster.add_arguments(p, workers=None)
    p.add_argument("--build", type=Path, default=Path("build"),
                   help="output folder: fuzz.json and fuzz/fail-<i>/ (default: build)")
    p.add_argument("--images", default="3", help="inputs per network, >= 3: all zeros, all max, random (default 3)")
    p.add_argument("--sim", default="icarus", help="co-simulator: icarus (default) or verilator")
    p.add_argument("--timeout", default="300", help="seconds one network may take before it counts as an error")
    p.add_argument("--inject-mismatch", action="store_true",
                   help="check the checker: every network's golden model gets one weight changed, so every "
                        "network must be reported as mismatched, with its reproducer")
    p.add_argument("--replay", type=Path, default=None, metavar="DIR",
                   help="co-simulate a failing network again from its folder (build/fuzz/fail-<i>)")
    return p


def run_args(a):
    """Check every option, then run the campaign (or the replay). Mismatches or errors: exit 1."""
    if a.replay is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in REPLAY_IGNORES.items() if getattr(a, k) != v]
        if given:
            raise ConfigError(f"--replay takes no other option (given: {', '.join(given)}): the folder's "
                              f"{CASE_FILE} holds the network's options")
        out = replay(a.replay)
        return 0 if out["outcome"] in ("passed", "refused") else 1
    networks = int_option("--networks", a.networks, 1, MAX_NETWORKS)
    seed = check_seed(int_option("--seed", a.seed, 0), "--seed")
    scheduler, jobs = cluster.check_args(a.scheduler, a.jobs, "--jobs")
    images = int_option("--images", a.images, 3, 1000)
    timeout = int_option("--timeout", a.timeout, 1, 86400)
    check_cosim(a.sim, None)
    check_out_dir(a.build, "--build")
    rep = campaign(networks, seed, jobs, a.build, images, a.sim, a.inject_mismatch, timeout, scheduler=scheduler)
    return 1 if rep["counts"]["mismatched"] or rep["counts"]["errors"] else 0


def cli_args(a):
    """``spikeloom fuzz``: :func:`run_args`, whose status 1 (a mismatch or an error found) leaves
    the process as its exit status (``guarded`` keeps only the one-line errors' 2)."""
    status = run_args(a)
    if status:
        raise SystemExit(status)


def main(argv=None):
    p = Parser(prog="spikeloom-fuzz", description=__doc__.split("\n\n")[0])
    status = []
    rc = parse_and_run(add_arguments(p), argv, lambda a: status.append(run_args(a)))
    return rc or (status[0] if status else 0)


if __name__ == "__main__":
    sys.exit(main())
