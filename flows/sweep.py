"""``spikeloom sweep SPEC.toml``: design-space exploration of one network on Dask distributed.

A sweep spec (TOML, ``flows/sweeps/digits.toml`` is the shipped example) names the network (an
arch of ``model/snn.py`` trained on a dataset), the axes and their values (every combination, or a
random sample of them), the stages run per point and the points synthesised for an FPGA target.
Each point is the pipeline's own steps (:mod:`spikeloom.flows.steps`): quantize (QAT and exit
calibration), ``evaluate`` (the golden model: accuracy with every timestep and with the early
exit, mean timesteps), ``cycles`` (the cycle model's cycles per inference and the bound),
``energy`` (energy per inference: the generated hardware's energy model on the golden counters,
or on the co-simulation's RTL counters with ``cosim``), ``cosim`` (the test images co-simulated
against the golden model) and ``synth`` (:func:`spikeloom.flows.synth.run_target`: LUT, FF, block
RAM, DSP, fmax and images/s).

The engine is Dask distributed: an embedded ``LocalCluster`` (one single-threaded worker process
per CPU, ``--workers N``), or ``--scheduler tcp://HOST:PORT`` for a cluster someone started
(``dask scheduler`` and ``dask worker``, or ``dask-jobqueue`` on Slurm/PBS/LSF: README, "Sweeps").
The dataset split is loaded once by the client and sent with the graph as a task of its own (not
scattered: Dask's memory manager drops a scattered key's extra copies, and a scattered key whose
last copy dies with its worker is lost for good, failing every point that needs it; a task's
result is computed again on another worker); the float network is
trained once per training configuration (a task), and each model quantized once (a task) for all
the points that share it; training, QAT and synthesis are cached by content under
``BUILD/cache/`` (:meth:`Context.key <spikeloom.flows.steps.Context.key>`), so sweeps that share
points share work.

Writes ``BUILD/sweep/<name>/``: ``results.jsonl`` (one line per point, appended as points finish:
a rerun computes only the points it lacks, and an interrupted sweep loses nothing done), a table
(``table.txt``, also printed), ``pareto_energy.png`` (accuracy vs energy per inference) and
``pareto_lut.png`` (images/s vs LUTs of the synthesised points; dominated points grey),
``summary.json`` (the spec, the counts, and per run its cluster and wall time), and a folder per
point (``points/``: its model file, generated Verilog, synthesis and ``log.txt``). A point that
fails is recorded with its one-line error and the sweep goes on; ``--retry-failed`` runs failed
points again.
"""

import contextlib
import hashlib
import itertools
import json
import os
import random
import sys
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from spikeloom.hw.plan import PES_RANGE
from spikeloom.model.config import T_MAX_RANGE, WIDTH_RANGES, NeuronConfig, QuantConfig, check_int
from spikeloom.model.errors import ConfigError, SpikeloomError

from . import cluster, progress, steps
from .cluster import one_line
from .common import Parser, parse_and_run, table
from .output import atomic_write, claim_folder, check_claimable

__all__ = ["AXES", "STAGES", "Spec", "load_spec", "points", "run", "pareto", "main"]

#: axis -> (where its value goes, allowed range); the ranges have their homes in hw/plan.py and model/config.py
AXES = {"n_pe": ("hardware", PES_RANGE), "weight_bits": ("quant", WIDTH_RANGES["weight_bits"]),
        "input_bits": ("quant", WIDTH_RANGES["input_bits"]),
        "membrane_bits": ("neuron", WIDTH_RANGES["membrane_bits"]), "t_max": ("train", T_MAX_RANGE)}
#: The stages a point can run besides quantize (always: the point's model), in this order.
STAGES = ("evaluate", "cycles", "energy", "cosim", "synth")
#: The fields of a result line that differ between two runs of the same point (time, place).
VOLATILE = ("wall_s", "synth_wall_s", "worker", "finished", "folder")
SPEC_SECTIONS = ("sweep", "axes", "sample", "train", "quant", "neuron", "synth")


@dataclass(frozen=True)
class Spec:
    """A sweep spec, checked (:func:`load_spec`)."""

    path: Path
    name: str
    dataset: str
    network: str
    stages: tuple
    axes: dict  # axis -> tuple of values, in the spec's order
    base: dict  # "train", "quant", "neuron": the spec's fixed settings (dataclass fields)
    data_seed: int = 0
    sample: int | None = None  # a random sample of this many grid points (None: the whole grid)
    sample_seed: int = 0
    cosim_images: int | None = None
    simulator: str = "verilator"
    synth_target: str | None = None
    synth_where: dict = field(default_factory=dict)  # axis -> allowed values of the synthesised points


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib


def load_spec(path):
    """Read and check a sweep spec; a bad one is a :class:`ConfigError` of one line naming the file,
    the field, the value and what is allowed. ``path``: a file, or the name of a shipped spec
    (``digits``: ``flows/sweeps/digits.toml``)."""
    path = _spec_path(path)
    try:
        with open(path, "rb") as f:
            data = _toml().load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the sweep spec ({e.strerror or e})") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not a valid TOML file ({e})") from None

    def bad(msg):
        return ConfigError(f"{path}: {msg}")

    for k in data:
        if k not in SPEC_SECTIONS:
            raise bad(f"unknown section [{k}]; allowed: {', '.join(SPEC_SECTIONS)}")
    for k in SPEC_SECTIONS:
        if not isinstance(data.get(k, {}), dict):
            raise bad(f"{k} must be a table ([{k}])")
    sw = dict(data.get("sweep", {}))
    known = {"name", "dataset", "network", "stages", "data_seed", "cosim_images", "simulator"}
    for k in sw:
        if k not in known:
            raise bad(f"sweep.{k}: unknown field; allowed: {', '.join(sorted(known))}")
    name = sw.get("name", path.stem)
    if not isinstance(name, str) or not steps.RUN_NAME.fullmatch(name):
        raise bad(f"sweep.name = {name!r}: 1 to 80 letters, digits, '.', '_' or '-', starting with a letter or digit")
    from spikeloom.model.snn import ARCHS

    network = sw.get("network", "mlp")
    if network not in ARCHS:
        raise bad(f"sweep.network = {network!r}; allowed: {', '.join(ARCHS)}")
    dataset = sw.get("dataset", "digits")
    if not isinstance(dataset, str):
        raise bad(f"sweep.dataset = {dataset!r} must be a string ('digits', 'cifar:PATH' or 'folder:PATH')")
    stages = sw.get("stages", ["evaluate", "cycles", "energy"])
    if not isinstance(stages, list) or not stages:
        raise bad(f"sweep.stages = {stages!r} must be a non-empty list; allowed: {', '.join(STAGES)}")
    for s in stages:
        if s not in STAGES:
            raise bad(f"sweep.stages: {s!r} is not a stage; allowed: {', '.join(STAGES)}")

    def integer(field_, value, lo, hi=None):
        try:
            return check_int(None, f"{path}: {field_}", value, lo, hi)
        except ConfigError as e:
            raise ConfigError(str(e)) from None

    data_seed = integer("sweep.data_seed", sw.get("data_seed", 0), 0)
    cosim_images = sw.get("cosim_images")
    if cosim_images is not None:
        integer("sweep.cosim_images", cosim_images, 1)
    from spikeloom.sim.runner import SIMULATORS

    simulator = sw.get("simulator", "verilator")
    if simulator not in SIMULATORS:
        raise bad(f"sweep.simulator = {simulator!r}; allowed: {', '.join(SIMULATORS)}")

    axes = {}
    for axis, values in data.get("axes", {}).items():
        if axis not in AXES:
            raise bad(f"axes.{axis}: unknown axis; allowed: {', '.join(AXES)}")
        if not isinstance(values, list) or not values:
            raise bad(f"axes.{axis} = {values!r} must be a non-empty list of values")
        lo, hi = AXES[axis][1]
        for v in values:
            integer(f"axes.{axis}", v, lo, hi)
        if len(set(values)) != len(values):
            raise bad(f"axes.{axis} = {values!r} lists a value twice")
        axes[axis] = tuple(values)
    if not axes:
        raise bad(f"[axes] names no axis; allowed: {', '.join(AXES)}")

    # the fixed settings: the dataclasses check them (their messages name the field and the range)
    from spikeloom.model.train import TrainConfig

    base = {}
    for sec, cls in (("train", TrainConfig), ("quant", QuantConfig), ("neuron", NeuronConfig)):
        given = dict(data.get(sec, {}))
        names = {f.name for f in fields(cls)}
        for k in given:
            if k not in names:
                raise bad(f"{sec}.{k}: unknown field; allowed: {', '.join(sorted(names))}")
            if k in axes:
                raise bad(f"{sec}.{k} = {given[k]!r}: {k} is an axis of this sweep (axes.{k}); give it in one place")
            if (sec, k) == ("train", "arch"):
                raise bad(f"train.arch = {given[k]!r}: the network is sweep.network")
        if sec == "train":
            given["arch"] = network
        if sec == "quant":
            given.setdefault("input_bits", steps.Context(build=Path(".")).quant.input_bits)
        try:
            cls(**given)
            for axis, values in axes.items():
                if AXES[axis][0] == sec:
                    for v in values:
                        cls(**{**given, axis: v})
        except ConfigError as e:
            raise bad(str(e)) from None
        except TypeError as e:
            raise bad(f"[{sec}]: {e}") from None
        base[sec] = given

    sample = data.get("sample", {})
    for k in sample:
        if k not in ("points", "seed"):
            raise bad(f"sample.{k}: unknown field; allowed: points, seed")
    n_grid = 1
    for v in axes.values():
        n_grid *= len(v)
    n_sample = integer("sample.points", sample["points"], 1, n_grid) if "points" in sample else None
    sample_seed = integer("sample.seed", sample.get("seed", 0), 0)

    syn = dict(data.get("synth", {}))
    for k in syn:
        if k not in ("target", "where"):
            raise bad(f"synth.{k}: unknown field; allowed: target, where")
    from .synth import TARGETS

    target = syn.get("target")
    if ("synth" in stages) != (target is not None):
        raise bad("synth.target names the FPGA target of the 'synth' stage: give both or neither "
                  f"(stages {stages}, synth.target {target!r})")
    if target is not None and target not in TARGETS:
        raise bad(f"synth.target = {target!r}; allowed: {', '.join(TARGETS)}")
    where = {}
    if not isinstance(syn.get("where", {}), dict):
        raise bad(f"synth.where = {syn['where']!r} must be a table of axis = value or [values]")
    for axis, v in syn.get("where", {}).items():
        if axis not in axes:
            raise bad(f"synth.where.{axis}: not an axis of this sweep; allowed: {', '.join(axes)}")
        vals = v if isinstance(v, list) else [v]
        for x in vals:
            if x not in axes[axis]:
                raise bad(f"synth.where.{axis} = {x!r} is not one of axes.{axis} = {list(axes[axis])}")
        where[axis] = tuple(vals)
    return Spec(path=path, name=name, dataset=dataset, network=network, stages=tuple(s for s in STAGES if s in stages),
                axes=axes, base=base, data_seed=data_seed, sample=n_sample, sample_seed=sample_seed,
                cosim_images=cosim_images, simulator=simulator, synth_target=target, synth_where=where)


def _spec_path(path):
    p = Path(path)
    if not p.exists() and p.suffix == "" and "/" not in str(path):
        shipped = Path(__file__).resolve().parent / "sweeps" / f"{path}.toml"
        if shipped.exists():
            return shipped
    return p


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its axis values and what it runs."""

    values: dict
    stages: tuple

    @property
    def label(self):
        return ",".join(f"{k}={v}" for k, v in self.values.items())


def points(spec):
    """The spec's points, in grid order (a random sample of them, kept in grid order, with [sample])."""
    names = list(spec.axes)
    grid = [dict(zip(names, combo)) for combo in itertools.product(*spec.axes.values())]
    if spec.sample is not None:
        keep = sorted(random.Random(spec.sample_seed).sample(range(len(grid)), spec.sample))
        grid = [grid[i] for i in keep]
    out = []
    for v in grid:
        synth = "synth" in spec.stages and all(v[a] in allowed for a, allowed in spec.synth_where.items())
        out.append(Point(v, tuple(s for s in spec.stages if s != "synth" or synth)))
    return out


def configs(spec, point):
    """The point's ``(TrainConfig, QuantConfig, NeuronConfig, n_pe)``."""
    from spikeloom.model.train import TrainConfig

    parts = {sec: dict(spec.base[sec]) for sec in ("train", "quant", "neuron")}
    n_pe = 8
    for axis, v in point.values.items():
        where = AXES[axis][0]
        if where == "hardware":
            n_pe = v
        else:
            parts[where][axis] = v
    return TrainConfig(**parts["train"]), QuantConfig(**parts["quant"]), NeuronConfig(**parts["neuron"]), n_pe


def point_key(spec, point):
    """Names a point's result: everything that determines it (network, data, settings, stages)."""
    train, quant, neuron, n_pe = configs(spec, point)
    cfg = {"dataset": spec.dataset, "data_seed": spec.data_seed, "train": train.as_dict(), "quant": asdict(quant),
           "neuron": asdict(neuron), "n_pe": n_pe, "stages": point.stages,
           "cosim": [spec.simulator, spec.cosim_images] if "cosim" in point.stages else None,
           "synth": spec.synth_target if "synth" in point.stages else None}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


# -- the tasks (run on the workers) ---------------------------------------------------------------

@dataclass
class PointContext(steps.Context):
    """A :class:`~spikeloom.flows.steps.Context` whose files go to ``folder`` (a point's, or a
    model's), its training caches to ``build/cache/`` as every flow's."""

    folder: Path = None

    @property
    def workdir(self):
        return self.folder

    @property
    def out_dir(self):
        return self.folder


def _context(spec, point, build, folder, split):
    train, quant, neuron, _ = configs(spec, point)
    return PointContext(build=Path(build), dataset=spec.dataset, data_seed=spec.data_seed, train=train, quant=quant,
                        neuron=neuron, folder=Path(folder), _split=split)


@contextlib.contextmanager
def _logged(folder):
    """A task's output (its steps' progress lines) into ``folder/log.txt``, not the worker's terminal."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / "log.txt", "a") as f, contextlib.redirect_stdout(f):
        yield lambda *a, **k: print(*a, **k, file=f)


def task_train(spec, point, build, folder, split):
    """``(float network, its report section)`` of ``point``'s training configuration (cached under
    ``build/cache/``; the section has the float network's test accuracy)."""
    ctx = _context(spec, point, build, folder, split)
    with _logged(folder) as log:
        model = steps.step_train(ctx, log=log)
    return model, ctx.report["model"]


def task_quantize(spec, point, build, folder, split, trained):
    """``(fake-quant network, model, the float network's report section)`` of ``point``'s
    quantization (cached under ``build/cache/``)."""
    ctx = _context(spec, point, build, folder, split)
    with _logged(folder) as log:
        imodel, qmodel = steps.step_quantize(ctx, trained[0], log=log)
    return imodel, qmodel, trained[1]


def task_point(spec, point, build, folder, split, quantized):
    """Run ``point``'s stages; returns its result line (``status`` "failed" with the one-line error
    of the stage that failed, and the figures of the stages before it: a point's failure is a
    result, not an exception)."""
    import socket

    t0 = time.perf_counter()
    rec = {"status": "ok", "error": None}
    try:
        with _logged(folder) as log:
            _point(spec, point, build, folder, split, quantized, log, rec)
    except Exception as e:  # noqa: BLE001 - any failure of a point is recorded and the sweep goes on
        rec.update(status="failed", error=one_line(e))
    rec.update(wall_s=round(time.perf_counter() - t0, 2), worker=f"{socket.gethostname()}:{os.getpid()}",
               folder=str(folder))
    return rec


def _point(spec, point, build, folder, split, quantized, log, out):
    """The stages of ``point``, each adding its figures to ``out`` as it finishes."""
    from spikeloom.model import golden, modelfile

    from .energy import cycles_model

    imodel, qmodel, float_section = quantized
    ctx = _context(spec, point, build, folder, split)
    ctx.report["model"] = dict(float_section)
    _, _, _, n_pe = configs(spec, point)
    modelfile.save(qmodel, ctx.model_path)
    if "evaluate" in point.stages:
        steps.step_evaluate(ctx, imodel, qmodel, n_pe=n_pe, log=log)
        m = ctx.report["model"]
        out.update(accuracy_float=m["accuracy_float"], accuracy_fixed_t=m["accuracy_fixed_t"],
                   accuracy_adaptive=m["accuracy_adaptive"], mean_timesteps=m["mean_timesteps"],
                   relative_complexity=m["relative_complexity"])
    if "cycles" in point.stages:
        x = golden.quantize_input(qmodel, split.test.x)
        plan = steps.check_hardware(qmodel, n_pe, "cycles")
        res = golden.run(qmodel, x, trace=True, sparse=plan.sparse_layers)
        cyc = cycles_model(qmodel, n_pe, x, res, plan).astype(float)
        bound = res.cycle_bound(qmodel, n_pe).astype(float)
        out.update(cycles_mean=float(cyc.mean()), cycles_bound_mean=float(bound.mean()),
                   cycles_to_bound=float(cyc.mean() / bound.mean()))
    gen = None
    if "energy" in point.stages or "cosim" in point.stages:
        gen = steps.step_generate(ctx, qmodel, n_pe, log=log)
    if "cosim" in point.stages:
        c = steps.step_cosim(ctx, qmodel, gen, spec.simulator, spec.cosim_images, log=log)
        if c["mismatches"]:
            raise SpikeloomError(f"cosim: {c['mismatches']} of {c['n_images']} images differ from the golden model")
        out.update(cosim_images=c["n_images"], cosim_accuracy=c["accuracy"], cosim_cycles_mean=c["cycles_mean"],
                   cosim_cycles_to_bound=c["cycles_to_bound"])
    if "energy" in point.stages:
        sec = steps.step_energy(ctx, qmodel, gen, spec.simulator, log=log)
        out.update(energy_nj=sec["per_inference_nj"], energy_fixed_t_nj=sec["fixed_t_per_inference_nj"],
                   pj_per_sop=sec["pj_per_sop"], energy_source=sec["source"])
    if "synth" in point.stages:
        e = synthesise(spec.synth_target, ctx.model_path, n_pe, Path(build), Path(folder), log)
        th = e.get("throughput", {})
        out.update(target=spec.synth_target, luts=e["luts"]["used"], ffs=e["ffs"]["used"], brams=e["brams"]["used"],
                   dsps=e["dsps"]["used"], fmax_mhz=e["fmax_mhz"], synth_wall_s=e["wall_s"])
        cycles = out.get("cosim_cycles_mean") or out.get("cycles_mean") or th.get("cycles_mean")
        if cycles:
            out["images_per_s"] = e["fmax_mhz"] * 1e6 / cycles


def synthesise(target, model_path, n_pe, build, folder, log=print):
    """:func:`spikeloom.flows.synth.run_target` for the model file at ``model_path``, cached by
    content (the model file's bytes, target, N, and the source of the synthesis flow and the
    hardware it generates) under ``build/cache/synth-<key>/entry.json``."""
    from spikeloom.hw.plan import Plan  # noqa: F401 - the hardware's modules are in the key

    from . import sources
    from .synth import run_target

    extra = json.dumps({"target": target, "n_pe": n_pe}).encode() + Path(model_path).read_bytes()
    key = sources.source_hash(("spikeloom.flows.synth", "spikeloom.hw.accel"), extra).hexdigest()[:16]
    path = Path(build) / "cache" / f"synth-{key}" / "entry.json"
    if steps.cached(path, key):
        log(f"[synth] reusing {path} (cache key {key})")
        return json.loads(path.read_text())
    entry = run_target(target, model_path, n_pe, Path(folder), log=log)
    steps.store(path, key, json.dumps(entry, indent=1) + "\n")
    return entry


# -- the client ------------------------------------------------------------------------------------

def read_results(path):
    """``{point key: result}`` of ``results.jsonl`` (the last line of a key wins; a line that is not
    a whole JSON object, from a write that was cut short, is skipped)."""
    out = {}
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("point"), str):
            out[rec["point"]] = rec
    return out


def _append(path, rec):
    """One result line, appended whole and flushed to disk (a line cut short by a crash before it
    is skipped by :func:`read_results`: a newline first ends it)."""
    line = json.dumps(rec, sort_keys=True) + "\n"
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


def run(spec, build=Path("build"), scheduler=None, workers=None, retry_failed=False, log=print):
    """Run the sweep ``spec`` (a :class:`Spec` or a path); returns ``{point key: result}`` of its points."""
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    build = Path(build).resolve()
    out = build / "sweep" / spec.name
    check_claimable(out, "--build")
    scheduler, workers = cluster.check_args(scheduler, workers)
    pts = points(spec)
    keys = [point_key(spec, p) for p in pts]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{spec.path}: two points of the sweep are the same")
    results_path = out / "results.jsonl"
    done = read_results(results_path)
    todo = [(k, p) for k, p in zip(keys, pts)
            if k not in done or (retry_failed and done[k].get("status") != "ok")]
    split = None
    if todo:  # a dataset that cannot be loaded is refused before the folder is made
        from spikeloom.model.data import load_dataset

        try:
            split = load_dataset(spec.dataset, seed=spec.data_seed)
        except SpikeloomError as e:
            raise ConfigError(f"{spec.path}: sweep.dataset = {spec.dataset!r}: {e}") from None
    claim_folder(out, f"spikeloom sweep {spec.path}", "--build")
    log(f"[sweep] {spec.name}: {len(pts)} points ({', '.join(f'{a} {list(v)}' for a, v in spec.axes.items())}"
        f"{f', a sample of {spec.sample}' if spec.sample else ''}); {len(pts) - len(todo)} already in "
        f"{results_path}, {len(todo)} to run")
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ran_on = None
    if todo:
        ran_on = _compute(spec, build, out, split, todo, results_path, scheduler, workers, log)
    wall = time.perf_counter() - t0
    results = read_results(results_path)
    mine = {k: results[k] for k in keys if k in results}
    report(spec, mine, out, log)
    try:
        old = json.loads((out / "summary.json").read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        old = []
    runs = (old if isinstance(old, list) else []) + [{
        "started": started, "computed": len(todo), "cluster": ran_on, "wall_s": round(wall, 1)}]
    atomic_write(out / "summary.json", json.dumps({
        "spec": str(spec.path), "name": spec.name, "points": len(pts),
        "ok": sum(r.get("status") == "ok" for r in mine.values()),
        "failed": sum(r.get("status") != "ok" for r in mine.values()),
        "missing": len(pts) - len(mine), "runs": runs}, indent=1) + "\n")
    return mine


def _given(value):
    """``value`` itself, as a task's result: data in the graph that Dask can compute again on
    another worker when the workers holding it die (scattered data it cannot)."""
    return value


def _compute(spec, build, out, split, todo, results_path, scheduler, workers, log):
    with cluster.connect(scheduler, workers) as (client, where):
        n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
        log(f"[sweep] {where} ({n_workers} workers now); dataset {spec.dataset} loaded once, sent as a task")
        # keys of this run's own (the dataset's, and those of the tasks that train on it): a client
        # of the same scheduler with another dataset must not share them
        run_id = uuid.uuid4().hex[:12]
        with warnings.catch_warnings():  # the graph carries the dataset once, on purpose
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            split_f = client.submit(_given, split, key=f"dataset-{run_id}", pure=False)
        trains, quants, futures = {}, {}, {}
        for k, p in todo:
            train, quant, neuron, _ = configs(spec, p)
            tkey = hashlib.sha256(json.dumps([train.as_dict(), asdict(neuron)], sort_keys=True).encode()).hexdigest()[:12]
            qkey = hashlib.sha256(f"{tkey}{asdict(quant)}".encode()).hexdigest()[:12]
            if tkey not in trains:
                trains[tkey] = client.submit(task_train, spec, p, str(build), str(out / "models" / f"float-{tkey}"),
                                             split_f, key=f"train-{tkey}-{run_id}", pure=False)
            if qkey not in quants:
                quants[qkey] = client.submit(task_quantize, spec, p, str(build), str(out / "models" / f"q-{qkey}"),
                                             split_f, trains[tkey], key=f"quantize-{qkey}-{run_id}", pure=False)
            folder = out / "points" / f"{k}"
            futures[client.submit(task_point, spec, p, str(build), str(folder), split_f, quants[qkey],
                                  key=f"point-{k}", pure=False)] = (k, p)
        counts = {"ok": 0, "failed": 0}

        def status():
            return f"{counts['ok']} done, {cluster.running(client, 'point-')} running, {counts['failed']} failed"

        with progress.step("sweep", None, f"{len(todo)} points on {where}") as bar:
            bar.count(len(todo), "points")
            bar.info = status()

            def tick():
                bar.info = status()  # shown by the next periodic line

            for f in cluster.completed(futures, tick):
                k, p = futures[f]
                try:
                    rec = f.result()
                except Exception as e:  # noqa: BLE001 - a task that raised (its training, lost workers)
                    rec = {"status": "failed", "error": cluster.task_error(e)}
                rec = {"point": k, "label": p.label, "axes": p.values, "stages": list(p.stages), **rec,
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                _append(results_path, rec)
                counts["ok" if rec["status"] == "ok" else "failed"] += 1
                if rec["status"] != "ok":
                    bar.wrap(log)(f"[sweep] {p.label}: FAILED: {rec['error']}")
                bar.update(1, status())
        return {"where": where, "workers": n_workers}


# -- the table and the Pareto fronts -------------------------------------------------------------

def pareto(items, better):
    """The indices of the points of ``items`` no other point dominates: ``better`` is a pair of
    ``+1`` (larger is better) or ``-1`` per coordinate; a point is dominated by one at least as good
    in both coordinates and better in one."""
    def dominates(a, b):
        ge = all(s * x >= s * y for s, x, y in zip(better, a, b))
        return ge and any(s * x > s * y for s, x, y in zip(better, a, b))

    return [i for i, a in enumerate(items) if not any(dominates(b, a) for j, b in enumerate(items) if j != i)]


FRONTS = {
    "energy": {"x": "energy_nj", "y": "accuracy_adaptive", "better": (-1, +1), "file": "pareto_energy.png",
               "xlabel": "energy per inference (nJ)", "ylabel": "accuracy with early exit (%)"},
    "lut": {"x": "luts", "y": "images_per_s", "better": (-1, +1), "file": "pareto_lut.png",
            "xlabel": "LUTs", "ylabel": "images/s (fmax / cycles per inference)"},
}


def fronts(results):
    """``{front: set of point keys on it}`` over the results that have both coordinates."""
    out = {}
    for name, fr in FRONTS.items():
        have = [(k, r) for k, r in results.items() if r.get(fr["x"]) is not None and r.get(fr["y"]) is not None]
        idx = pareto([(r[fr["x"]], r[fr["y"]]) for _, r in have], fr["better"])
        out[name] = {have[i][0] for i in idx}
    return out


def report(spec, results, out, log=print):
    """The table (printed and ``table.txt``) and the two Pareto plots of ``results``."""
    front = fronts(results)

    def f(r, k, fmt):
        v = r.get(k)
        return "-" if v is None else fmt.format(v)

    order = sorted(results, key=lambda k: [results[k]["axes"].get(a) for a in spec.axes])
    rows = []
    for k in order:
        r = results[k]
        rows.append([*(str(r["axes"].get(a)) for a in spec.axes), r.get("status"),
                     f(r, "accuracy_fixed_t", "{:.2%}"), f(r, "accuracy_adaptive", "{:.2%}"),
                     f(r, "mean_timesteps", "{:.2f}"), f(r, "cycles_mean", "{:.1f}"),
                     f(r, "cycles_bound_mean", "{:.1f}"), f(r, "energy_nj", "{:.2f}"), f(r, "luts", "{}"),
                     f(r, "ffs", "{}"), f(r, "brams", "{}"), f(r, "dsps", "{}"), f(r, "fmax_mhz", "{:.1f}"),
                     f(r, "images_per_s", "{:.0f}"), f(r, "wall_s", "{:.1f}"),
                     "".join(c for c, n in (("E", "energy"), ("L", "lut")) if k in front[n]) or "-"])
    text = table(rows, [*spec.axes, "status", "acc fixed", "acc exit", "mean T", "cycles", "bound", "nJ/inf",
                        "LUTs", "FFs", "BRAMs", "DSPs", "fmax MHz", "images/s", "wall s", "Pareto"])
    failed = [f"{results[k]['label']}: {results[k].get('error')}" for k in order if results[k].get("status") != "ok"]
    text += ("\nPareto: E = accuracy vs energy per inference, L = images/s vs LUTs (not dominated)\n"
             + "".join(f"failed: {x}\n" for x in failed))
    atomic_write(out / "table.txt", text)
    log(text)
    for name, fr in FRONTS.items():
        plot(results, front[name], fr, out / fr["file"], f"{spec.name}: {fr['ylabel']} vs {fr['xlabel']}")
    log(f"[sweep] wrote {out / 'results.jsonl'}, {out / 'table.txt'}, "
        f"{', '.join(str(out / fr['file']) for fr in FRONTS.values())}")


def plot(results, front, fr, path, title):
    """One Pareto plot: the front's points coloured and joined, the dominated ones grey."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 100.0 if fr["y"].startswith("accuracy") else 1.0
    have = {k: r for k, r in results.items() if r.get(fr["x"]) is not None and r.get(fr["y"]) is not None}
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    grey = [r for k, r in have.items() if k not in front]
    ax.scatter([r[fr["x"]] for r in grey], [scale * r[fr["y"]] for r in grey], color="0.7", s=18,
               label=f"dominated ({len(grey)})")
    on = sorted((r for k, r in have.items() if k in front), key=lambda r: r[fr["x"]])
    ax.step([r[fr["x"]] for r in on], [scale * r[fr["y"]] for r in on], where="post", color="tab:blue", lw=1)
    ax.scatter([r[fr["x"]] for r in on], [scale * r[fr["y"]] for r in on], color="tab:blue", s=28, zorder=3,
               label=f"Pareto front ({len(on)})")
    for r in on:
        ax.annotate(r["label"].replace(",", "\n"), (r[fr["x"]], scale * r[fr["y"]]), fontsize=5,
                    xytext=(3, 3), textcoords="offset points")
    if not have:
        ax.text(0.5, 0.5, "no point has both values (run the stages that give them)", ha="center",
                transform=ax.transAxes, fontsize=8)
    ax.set_xlabel(fr["xlabel"])
    ax.set_ylabel(fr["ylabel"])
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if have:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the command line ------------------------------------------------------------------------------

def add_arguments(p):
    p.add_argument("spec", help="the sweep spec (TOML), or the name of a shipped one (digits: flows/sweeps/digits.toml)")
    p.add_argument("--build", type=Path, default=Path("build"), help="output folder: BUILD/sweep/<name>/, "
                   "caches in BUILD/cache/")
    cluster.add_arguments(p)
    p.add_argument("--retry-failed", action="store_true", help="run the points recorded as failed again")


def cli_args(a):
    scheduler, workers = cluster.check_args(a.scheduler, a.workers)
    spec = load_spec(a.spec)
    progress.interval()
    res = run(spec, a.build, scheduler, workers, a.retry_failed)
    if any(r.get("status") != "ok" for r in res.values()):
        print(f"spikeloom: warning: {sum(r.get('status') != 'ok' for r in res.values())} of {len(res)} points "
              "failed (their errors are in the table)", file=sys.stderr)


def main(argv=None):
    p = Parser(prog="spikeloom-sweep", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return parse_and_run(p, argv, cli_args)


if __name__ == "__main__":
    sys.exit(main())
