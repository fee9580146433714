"""The pipeline as named steps: train -> quantize -> evaluate -> generate -> cosim -> energy.

Each step reads what the previous one wrote, checks its own output before returning, and adds a
section to the run's report. Steps that train are cached on a key made of their configuration and
the source of the code they run, so an unchanged ``make sim`` does not train again. Every step shows
its progress and records its wall time (:mod:`spikeloom.flows.progress`, the report's ``timing``).

The command line's pipeline commands work in a :class:`RunContext`: one run folder per
configuration (``build/runs/<dataset>-<net>-<hash>/`` or ``build/runs/<name>/``), caches under
``build/cache/<key>/``, ``build/latest`` and ``build/report.json`` for the last run. Other flows
(prune, ablation, bench) use a plain :class:`Context`: everything under their own ``build`` folder.
"""

import hashlib
import inspect
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from spikeloom.model import PINNED_ENV, exit_criteria
from spikeloom.model import golden, modelfile
from spikeloom.model.config import NeuronConfig, QuantConfig
from spikeloom.model.data import load_dataset
from spikeloom.model.errors import ConfigError, InputError, ModelFileError, SpikeloomError
from spikeloom.model.train import TrainConfig

from . import progress, sources
from .common import check_pes, check_storage, storage_text, table
from .output import atomic_write

#: What training and quantization run: the modules :func:`step_train` and :func:`step_quantize`
#: import. The cache key hashes these and every module they import (``flows/sources.py`` reads the
#: import graph from the source), plus the two step functions' own source.
TRAINING_ROOTS = ("spikeloom.model.train", "spikeloom.model.snn", "spikeloom.model.data", "spikeloom.model.exit_criteria",
                  "spikeloom.model.golden", "spikeloom.model.modelfile", "spikeloom.model.config",
                  "spikeloom.model.errors", "spikeloom.flows.common", "spikeloom.flows.output",
                  "spikeloom.flows.progress")


@dataclass
class Context:
    """What the steps share: configuration, paths, and the report being built."""

    build: Path
    dataset: str = "digits"
    data_seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    quant: QuantConfig = field(default_factory=lambda: QuantConfig(input_bits=4))
    image_size: int | None = None  # image folders: resize to S x S (None: the loader's default)
    channels: int | None = None  # image folders: 1 (grey) or 3 (RGB) (None: the loader's default, RGB)
    nir: Path | None = None  # a NIR graph to import instead of training (run --nir)
    report: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)  # this command's wall time per step (flows/progress.py)
    started: float = field(default_factory=time.perf_counter)
    _split: object = None

    @property
    def arch(self):
        """The network's name in reports: the trained architecture, or ``nir:<graph stem>``."""
        return f"nir:{Path(self.nir).stem}" if self.nir is not None else self.train.arch

    @property
    def tag(self):
        name = Path(self.dataset.split(":", 1)[-1]).name if self.dataset != "digits" else "digits"
        return f"{name}-{self.arch.replace(':', '-')}"

    @property
    def workdir(self):
        """The folder of this configuration's files (model, generated RTL, co-simulations)."""
        return self.build / self.tag

    @property
    def out_dir(self):
        """Where the report and the plots go."""
        return self.build

    def cache_dir(self, stage):
        """The folder of the cache entries of training stage ``stage`` (``"train"``, ``"quantize"``):
        ``build/cache/<key>/``, shared by every flow (``run``, ``make bench``, ...) that trains the same
        network under the same code, and never written by another."""
        return self.build / "cache" / self.key(stage)

    @property
    def model_path(self):
        return self.workdir / "model.slm"

    @property
    def model_name(self):
        """The model's name in its file (``spikeloom inspect``): :attr:`tag`, and the options that
        differ from ``run``'s defaults, e.g. ``digits-mlp-epochs=2,loss=uniform``; a hash of them
        when that would be longer than :data:`NAME_OPTIONS_MAX` characters."""
        ref = Context(build=self.build)
        parts = [(k, getattr(self, k)) for k in ("data_seed", "image_size", "channels")
                 if getattr(self, k) != getattr(ref, k)]
        for mine, default in ((self.train.as_dict(), ref.train.as_dict()), (asdict(self.neuron), asdict(ref.neuron)),
                              (asdict(self.quant), asdict(ref.quant))):
            parts += [(k, v) for k, v in mine.items() if k != "arch" and v != default.get(k)]
        if not parts:
            return self.tag
        text = ",".join(f"{k}={_FIRE_NAMES.get(v, re.sub(r'[^A-Za-z0-9._+-]', '', str(v)))}" for k, v in parts)
        if len(text) > NAME_OPTIONS_MAX:
            text = hashlib.sha256(text.encode()).hexdigest()[:8]
        return f"{self.tag}-{text}"

    def split(self):
        if self._split is None:
            self._split = load_dataset(self.dataset, seed=self.data_seed, size=self.image_size,
                                       channels=self.channels)
        return self._split

    def key(self, stage):
        """Cache key of a training stage: its configuration plus the source of every module that
        training and quantization can run (``TRAINING_ROOTS`` and all they import)."""
        cfg = {"stage": stage, "dataset": self.dataset, "data_seed": self.data_seed,
               "train": self.train.as_dict(), "neuron": asdict(self.neuron),
               # a network trained under other kernels (an environment override of the pins) is another network
               "kernels": {k: os.environ.get(k) for k in PINNED_ENV}}
        if stage == "quantize":
            cfg["quant"] = asdict(self.quant)
            cfg["name"] = self.model_name
        if self.image_size is not None:
            cfg["image_size"] = self.image_size
        if self.channels is not None:
            cfg["channels"] = self.channels
        h = sources.source_hash(TRAINING_ROOTS, json.dumps(cfg, sort_keys=True).encode())
        for fn in (step_train, step_quantize, Context.split):
            h.update(inspect.getsource(fn).encode())
        return h.hexdigest()[:16]


#: The longest list of non-default options in a model's name (:attr:`Context.model_name`).
NAME_OPTIONS_MAX = 48
_FIRE_NAMES = {">=": "ge", ">": "gt"}
#: A run folder's name given by the user (``--name``).
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


def add_run_folder_options(group):
    """The run-folder option of the pipeline commands (``run``, ``train``, ``quantize``, ``evaluate``)."""
    group.add_argument("--name", default=None, metavar="NAME",
                       help="the run folder: BUILD/runs/NAME (default: BUILD/runs/<dataset>-<net>-<hash of the "
                            "configuration>); letters, digits, '.', '_' and '-'")


#: :class:`RunContext`'s own fields and the command-line options that give them.
_RUN_OPTIONS = {"n_pe": "pes", "storage": "storage", "simulator": "sim", "cosim_images": "cosim_images",
                "tech": "tech", "name": "name"}


def run_settings(args):
    """:class:`RunContext`'s own fields from parsed pipeline options (an option a subcommand does
    not have takes the field's default; ``--storage`` is checked here)."""
    defaults = {f.name: f.default for f in fields(RunContext)}
    settings = {k: getattr(args, opt, defaults[k]) for k, opt in _RUN_OPTIONS.items()}
    settings["storage"] = check_storage(settings["storage"])
    return settings


def _file_hash(path, option):
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as e:
        raise ConfigError(f"{option} {path}: cannot read it ({e.strerror or e})") from None


#: Report sections that a later command on the same run folder adds to, key by key (RunContext.open).
MERGED_SECTIONS = ("model", "preflight")


@dataclass
class RunContext(Context):
    """A :class:`Context` whose results go to the run folder of its configuration (README, "Run folders").

    - :attr:`workdir`: ``build/runs/<dataset>-<net>-<hash>/`` (:attr:`config_hash`, of everything that
      determines the results: :meth:`config`) or ``build/runs/<name>/`` (``--name``): the model file,
      ``report.json``, the plots, and ``rtl_n<N>/`` (the generated Verilog; ``cosim_<simulator>/``:
      the co-simulation's results, ``sim.log`` and ``sim_build_<simulator>/build.log``);
    - the training and quantization caches in ``build/cache/<key>/`` (:meth:`Context.key`), shared by
      every configuration that trains the same network and never written by another;
    - :meth:`open` points ``build/latest`` at the folder, and loads its report: the commands that
      write into one folder (``train``, ``quantize``, ``evaluate``, ``run``) add to each other's
      sections as long as the model is the same (:attr:`model_key`);
    - :func:`write_report` copies the report to ``build/report.json`` (what other tools read).
    """

    n_pe: int = 8
    storage: str | dict = "auto"  # --storage (flows/common.py check_storage)
    simulator: str = "verilator"
    cosim_images: int | None = None
    tech: Path | None = None
    import_options: dict | None = None  # run --nir: dt, finetune and the import's options
    name: str | None = None

    def __post_init__(self):
        if self.name is not None and not RUN_NAME.fullmatch(self.name):
            raise ConfigError(f"--name {self.name!r}: a run folder's name is 1 to 80 letters, digits, '.', '_' "
                              "or '-', starting with a letter or a digit")

    def config(self):
        """Everything that determines the run's results; its hash names the run folder."""
        cfg = {"dataset": self.dataset, "data_seed": self.data_seed, "image_size": self.image_size,
               **({"channels": self.channels} if self.channels is not None else {}),
               "train": self.train.as_dict(), "neuron": asdict(self.neuron), "quant": asdict(self.quant),
               "n_pe": self.n_pe, "kernels": {k: os.environ.get(k) for k in PINNED_ENV}}
        if self.storage != "auto":  # (the default names the folders it named before --storage existed)
            cfg["storage"] = self.storage
        if self.nir is not None:
            cfg["nir"] = {"graph": _file_hash(self.nir, "--nir"), **(self.import_options or {})}
        return cfg

    @cached_property
    def config_hash(self):
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True, default=str).encode()).hexdigest()[:8]

    @cached_property
    def model_key(self):
        """Names the model of this run and the code that made it: a report written for another key
        describes another model, and :meth:`open` does not keep its sections."""
        if self.nir is None:
            return self.key("quantize")
        cfg = json.dumps(self.config(), sort_keys=True, default=str).encode()
        return sources.source_hash(TRAINING_ROOTS + ("spikeloom.model.nir_import",), cfg).hexdigest()[:16]

    @property
    def workdir(self):
        return self.build / "runs" / (self.name or f"{self.tag}-{self.config_hash}")

    @property
    def out_dir(self):
        return self.workdir

    def open(self, log=print):
        """Make the run folder and load the report it has for the same model (``build/latest`` points
        at it once its report is written, :func:`write_report`). Called once the options are
        checked, before the first step."""
        progress.interval()  # a bad SPIKELOOM_PROGRESS_INTERVAL is refused before any work,
        from spikeloom.sim.runner import check_environment
        check_environment()  # as are bad SPIKELOOM_VERILATOR_OPT and SPIKELOOM_OBJCACHE values,
        if self.dataset is not None:
            self.split()  # and so is a bad dataset: no run folder is made for either
        folder = self.workdir
        _check_latest(self.build)  # before the folder is made: a refusal leaves nothing behind
        old = _read_report(folder / "report.json")
        run = old.get("run") if isinstance(old.get("run"), dict) else {}
        if old and self.name is not None and run.get("config_hash") != self.config_hash:
            raise ConfigError(f"--name {self.name}: {folder} holds the run of another configuration (hash "
                              f"{run.get('config_hash')}; this one is {self.config_hash}): choose another name "
                              "or remove that folder")
        if old and run.get("model_key") == self.model_key:
            # sections that several commands fill (train the float accuracy, evaluate the rest;
            # preflight's data and hardware) merge key by key; the others are replaced whole
            merged = {k: {**old[k], **v} if k in MERGED_SECTIONS and isinstance(old.get(k), dict) else v
                      for k, v in self.report.items()}
            self.report = {**old, **merged}
        elif old:
            log(f"[run] {folder}: its report describes another model (the code or the cache changed); "
                "it starts anew")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--build {self.build}: cannot make the run folder {folder} "
                              f"({e.strerror or e})") from None
        log(f"[run] run folder {folder} ({'--name ' + self.name if self.name else 'configuration ' + self.config_hash}"
            f"); {self.build / 'latest'} points to it once its report is written")
        return folder

    def run_section(self):
        # the co-simulation settings are the last command's: they change how a result was obtained
        # (simulator, images, energy table), not the model or the hardware, so they do not name the folder
        return {"folder": str(self.workdir), "name": self.name, "config_hash": self.config_hash,
                "config": self.config(), "model_key": self.model_key,
                "settings": {"simulator": self.simulator, "cosim_images": self.cosim_images,
                             "tech": _file_hash(self.tech, "--tech")}}


def in_run_folder(ctx, **settings):
    """A :class:`RunContext` with ``ctx``'s configuration and ``settings`` (its own fields)."""
    return RunContext(**{f.name: getattr(ctx, f.name) for f in fields(Context)}, **settings)


def _read_report(path):
    """The report at ``path`` as a dict; ``{}`` when there is none or it cannot be read."""
    try:
        rep = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return rep if isinstance(rep, dict) else {}


def _check_latest(build):
    link = Path(build) / "latest"
    if link.exists() and not link.is_symlink():
        raise ConfigError(f"{link} is not the link spikeloom keeps there (a file or folder); move it away")


def _link_latest(build, folder):
    """``build/latest`` -> ``folder`` (a relative link), replaced in one step: a new link under a
    temporary name, renamed over the old one."""
    _check_latest(build)
    link = Path(build) / "latest"
    tmp = link.parent / f".latest.{secrets.token_hex(4)}"
    os.symlink(os.path.relpath(folder, link.parent), tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def describe_neuron(n):
    """One line for a :class:`~spikeloom.model.config.LayerNeuron` (logs, ``spikeloom inspect``)."""
    return f"leak a = {n.leak_mul}, f = {n.leak_frac} (beta {n.beta:g}), fire '{n.fire}', reset {n.reset}"


def check_storage_names(qmodel, storage):
    """``--storage`` (checked, :func:`~spikeloom.flows.common.check_storage`) names only layers of ``qmodel``."""
    names = [ly.name for ly in qmodel.layers]
    for k in storage if isinstance(storage, dict) else ():
        if k not in names:
            raise ConfigError(f"--storage names layer {k!r}; the network's layers are {', '.join(names)}")


def check_hardware(qmodel, n_pe, step, storage="auto"):
    """The hardware plan of ``qmodel`` on ``n_pe`` PEs with weight storage ``storage``; a model the
    generator cannot map (e.g. residual connections that overlap) is a one-line error naming the
    layer."""
    from spikeloom.hw.plan import Plan

    storage = check_storage(storage)
    check_storage_names(qmodel, storage)
    try:
        return Plan(qmodel, n_pe, storage)
    except ValueError as e:
        raise SpikeloomError(f"{step}: {qmodel.name!r} cannot be mapped to the hardware: {e}") from None


def weight_storage(qmodel, n_pe=None, ports=None, storage="auto"):
    """The weight storage that the golden counters assume, as the hardware has it.

    ``n_pe``: what the generator picks for ``qmodel`` on ``n_pe`` PEs (``Plan(qmodel, n_pe, storage)``);
    ``ports``: the ``sparse_layers`` of a ``ports.json`` written by ``spikeloom generate`` (a path;
    it must describe ``qmodel``); neither: every layer dense. Returns ``{"source", "n_pe",
    "sparse_layers", "sparse_segments"}`` (the compressed layers' names, and how each cuts its rows:
    what ``golden.run``'s ``sparse`` takes); errors name the option (``--pes`` or ``--ports``) and
    its value.
    """
    if n_pe is not None and ports is not None:
        raise ConfigError(f"--pes {n_pe} and --ports {ports} both give the weight storage; give one")
    if ports is not None:
        return _ports_storage(qmodel, Path(ports))
    if n_pe is None:
        return {"source": "dense (neither --pes nor --ports given)", "n_pe": None, "sparse_layers": [],
                "sparse_segments": {}}
    check_pes(n_pe)
    plan = check_hardware(qmodel, n_pe, f"--pes {n_pe}", storage)
    how = "" if storage == "auto" else f" --storage {storage_text(storage)}"
    return {"source": f"generator's choice for --pes {n_pe}{how}", "n_pe": n_pe,
            "sparse_layers": list(plan.sparse_layers), "sparse_segments": dict(plan.sparse_layers)}


def _ports_storage(qmodel, path):
    from spikeloom.sim.ports import Ports, PortsError

    try:
        ports = Ports.load(path)
    except PortsError as e:
        raise InputError(f"--ports {e}") from None
    check_pes(ports.n_pe, f"--ports {path}: n_pe")
    got = [(ly.name, ly.kind, ly.in_features, ly.out_features) for ly in ports.layers]
    want = [(ly.name, ly.kind, ly.in_features, ly.out_features) for ly in qmodel.layers]
    if ports.model != qmodel.name or got != want:
        raise InputError(f"--ports {path}: written for model {ports.model!r} with layers "
                         f"{[g[0] for g in got]}, not for {qmodel.name!r} with layers {[w[0] for w in want]}")
    sparse = [ly.name for ly in qmodel.layers if ly.name in ports.sparse_layers]
    return {"source": f"--ports {path}", "n_pe": ports.n_pe, "sparse_layers": sparse,
            "sparse_segments": {n: ports.sparse_layers[n] for n in sparse}}


def _key_file(path: Path):
    return path.with_suffix(path.suffix + ".key")


def cached(path: Path, key: str):
    """True when ``path`` exists and was written under cache key ``key`` (see :func:`store`)."""
    meta = _key_file(path)
    return path.is_file() and meta.is_file() and meta.read_text(errors="replace").strip() == key


def mark(path: Path, key: str):
    """Record that ``path`` was just written, whole, under cache key ``key`` (``<path>.key`` beside
    it, written atomically)."""
    atomic_write(_key_file(path), key + "\n")


def forget(path: Path):
    """Drop the cache key of ``path``: what is written there next is no cache entry until marked."""
    _key_file(path).unlink(missing_ok=True)


def store(path: Path, key: str, fill):
    """Write the cache entry ``path`` under ``key``: ``fill(tmp)`` writes the file. An interrupted
    run leaves no entry to reuse: the old key goes first, the file is written through a temporary
    file that replaces ``path`` only when complete, and the key is written last."""
    forget(path)
    atomic_write(path, fill)
    mark(path, key)


def step_train(ctx: Context, log=print):
    """Train the float SNN (or reuse the cached one)."""
    import torch

    from spikeloom.model.snn import SNN
    from spikeloom.model.train import train_float

    from spikeloom.model.determinism import settings
    from spikeloom.model.train import accumulate

    with progress.step("train", ctx.timing, f"{ctx.train.arch} on {ctx.dataset}") as p:
        log = p.wrap(log)
        split = ctx.split()
        key = ctx.key("train")
        path = ctx.cache_dir("train") / "float.pt"
        if cached(path, key):
            log(f"[train] reusing {path} (cache key {key})")
            model = SNN(split.train.shape, len(split.train.classes), ctx.train.arch, ctx.neuron, ctx.train.t_max,
                        pool=ctx.train.pool)
            model.load_state_dict(torch.load(path, weights_only=True))
        else:
            log(f"[train] training {ctx.train.arch} on {ctx.dataset} ({len(split.train)} images, "
                f"T_max={ctx.train.t_max}, loss={ctx.train.loss})")
            with p.epochs():
                model, _ = train_float(split, ctx.train, ctx.neuron)
            store(path, key, lambda tmp: torch.save(model.state_dict(), tmp))
        z = accumulate(model, split.test.x)
    ctx.report.setdefault("model", {})["training_determinism"] = settings()
    ctx.report["model"]["accuracy_float"] = float((golden.first_argmax(z[-1]) == split.test.y).mean())
    ctx.report["model"]["accuracy_float_per_t"] = [float((golden.first_argmax(z[t]) == split.test.y).mean())
                                                   for t in range(z.shape[0])]
    return model


def step_quantize(ctx: Context, float_model, log=print, teacher=None, distill=0.5):
    """Fold BatchNorm, quantization-aware fine-tuning (distilled from ``teacher``, a float
    network, with weight ``distill`` when given: ``train_qat``), exit threshold calibration, model
    file. The teacher must be part of ``ctx``'s cache key (as a pruning row's recipe is)."""
    import torch

    from spikeloom.model.snn import IntSNN
    from spikeloom.model.train import train_qat

    with progress.step("quantize", ctx.timing, "BN folding, QAT, exit calibration") as p:
        log = p.wrap(log)
        split = ctx.split()
        key = ctx.key("quantize")
        path = ctx.cache_dir("quantize") / "model.slm"
        qpath = path.with_name("qat.pt")
        if cached(path, key) and cached(qpath, key):
            log(f"[quantize] reusing {path} (cache key {key})")
            imodel = IntSNN(float_model.folded_stages(), split.train.shape, ctx.neuron, ctx.quant, ctx.train.t_max)
            imodel.load_state_dict(torch.load(qpath, weights_only=True))
            qmodel = modelfile.load(path)
        else:
            neu = "" if ctx.neuron.is_v1 else f"; neurons: {describe_neuron(ctx.neuron.layer_neuron())}"
            log(f"[quantize] BN folding + QAT ({ctx.quant.weight_bits}-bit weights, "
                f"{ctx.quant.input_bits}-bit inputs, {ctx.neuron.membrane_bits}-bit membranes{neu})")
            with p.epochs():
                imodel, _ = train_qat(float_model, split, ctx.train, ctx.neuron, ctx.quant, teacher=teacher,
                                      distill=distill)
            zv = imodel.exact_z(golden.quantize_values(split.val.x, ctx.quant.input_bits))
            theta = int(exit_criteria.calibrate(zv, split.val.y, ctx.train.target_drop, "margin"))
            log(f"[quantize] exit threshold (margin) = {theta}, calibrated on {len(split.val)} validation "
                f"images: at most {100 * ctx.train.target_drop:g}% of their decisions changed by exiting early")
            qmodel = imodel.export(ctx.model_name, ctx.dataset, theta, classes=split.train.classes,
                                   extra={"data_seed": ctx.data_seed, "train": ctx.train.as_dict(),
                                          "quant": asdict(ctx.quant),
                                          **({"image_size": ctx.image_size} if ctx.image_size is not None else {}),
                                          **({"channels": ctx.channels} if ctx.channels is not None else {})})
            store(qpath, key, lambda tmp: torch.save(imodel.state_dict(), tmp))
            store(path, key, lambda tmp: modelfile.save(qmodel, tmp))
        if path != ctx.model_path:  # a run folder: its own copy of the cached model file
            atomic_write(ctx.model_path, path.read_bytes())
        back = modelfile.load(ctx.model_path)
    if any((a.weight != b.weight).any() for a, b in zip(back.layers, qmodel.layers)):
        raise ModelFileError(f"{ctx.model_path}: written model does not read back identically")
    return imodel, back


def step_import(ctx: Context, dt, options, finetune=0, out=None, log=print):
    """Import the NIR graph ``ctx.nir`` (:mod:`spikeloom.model.nir_import`) and write its model file
    (``out``, default ``ctx.model_path``). ``options``: ``from_nir``'s ``reset``, ``input_bits``,
    ``t_max``, ``weight_bits``, ``membrane_bits``; ``None`` for one takes the graph's spikeloom
    metadata, else ``nir_import.DEFAULTS``.

    With a dataset (``ctx.dataset`` not ``None``): the validation split calibrates the quantization
    (membrane ranges from the float simulation of the graph) and the early-exit threshold
    (margin, ``ctx.train.target_drop``); the test split gives the float accuracy of the NIR graph
    (float64 Euler simulation, :mod:`spikeloom.model.nir_sim`) beside the integer model's; with
    ``finetune`` > 0 the integer network is fine-tuned (QAT) that many epochs on the training split.
    Without one, the model runs every timestep (no early exit). Returns ``(IntSNN or None,
    QuantModel)``; the report's ``import`` section has every node's mapping and error.
    """
    with progress.step("import", ctx.timing, f"NIR graph {Path(ctx.nir).name}") as p:
        return _import(ctx, dt, options, finetune, out, p.wrap(log), p)


def _import(ctx, dt, options, finetune, out, log, p):
    from spikeloom.model import nir_import, nir_sim

    graph = nir_import.read(ctx.nir)
    split = ctx.split() if ctx.dataset is not None else None
    model, nodes = nir_import.from_nir(graph, dt, **options, name=Path(ctx.nir).stem,
                                       calibration=None if split is None else split.val.x)
    T = model.t_max
    resets = {r.name: r.reset for r in nodes if r.reset is not None}
    sec = {"graph": str(ctx.nir), "dt": dt, "reset": sorted(set(resets.values())), "input_bits": model.input_bits,
           "t_max": T, "weight_bits": sorted({ly.weight_bits for ly in
                                            (model.layers[:-1] if model.readout == "count" else model.layers)}),
           "membrane_bits": model.neuron.membrane_bits,
           "exact": all(r.mapping == "exact" for r in nodes), "nodes": [r.as_dict() for r in nodes]}
    if split is not None:
        if model.n_classes != len(split.train.classes):
            raise ConfigError(f"{ctx.nir}: the graph has {model.n_classes} outputs but dataset {ctx.dataset!r} "
                              f"has {len(split.train.classes)} classes")
        if tuple(split.train.shape) != tuple(model.input_shape) and \
                int(np.prod(split.train.shape)) != model.input_size:
            raise ConfigError(f"{ctx.nir}: the graph's input shape {tuple(model.input_shape)} does not take "
                              f"dataset {ctx.dataset!r}'s images of shape {tuple(split.train.shape)}")
    log(table([(r.name, r.type, r.layer, r.mapping, f"{r.max_abs_error:.3g}") for r in nodes],
              ["node", "type", "layer", "mapping", "max_abs_error"]))
    for r in nodes:
        if r.note:
            log(f"[import] note: layer {r.layer} ({r.name}): {r.note}")
    imodel = None
    if split is not None:
        from spikeloom.model.snn import IntSNN
        from spikeloom.model.train import finetune_imported

        model = replace(model, dataset=ctx.dataset, classes=tuple(split.train.classes))
        y = split.test.y
        x = split.test.x.reshape((len(y),) + tuple(model.input_shape))
        f_pred = nir_sim.simulate(nir_import.chain(graph), x, dt, T, resets).pred()
        x_q = golden.quantize_input(model, split.test.x)

        def accuracy(m):
            g = golden.run(m, x_q, sparse=())
            return float((g.fixed_pred() == y).mean()), float((g.fixed_pred() == f_pred).mean())

        acc_q, agree = accuracy(model)
        sec.update({"calibration": f"{ctx.dataset} validation split ({len(split.val)} images)",
                    "accuracy_float": float((f_pred == y).mean()), "accuracy_quantized_fixed_t": acc_q,
                    "agreement_with_float": agree, "finetune_epochs": int(finetune)})
        log(f"[import] {ctx.dataset} test split, {len(y)} images: NIR graph in float64 {100 * sec['accuracy_float']:.2f}%, "
            f"integer model {100 * acc_q:.2f}% at T = {T} (same class as the float graph on {100 * agree:.1f}%)")
        if finetune:
            log(f"[import] QAT fine-tuning {finetune} epochs on {len(split.train)} training images")
            with p.epochs():
                imodel, _ = finetune_imported(model, split, ctx.train, finetune)
            model = imodel.export(model.name, model.dataset, model.exit_threshold, classes=model.classes,
                                  extra=model.extra)
            acc_ft, agree_ft = accuracy(model)
            sec.update({"accuracy_finetuned_fixed_t": acc_ft, "agreement_with_float_finetuned": agree_ft})
            log(f"[import] after fine-tuning: integer model {100 * acc_ft:.2f}% at T = {T}")
        else:
            imodel = IntSNN.from_model(model)
        zv = imodel.exact_z(golden.quantize_input(model, split.val.x))
        theta = int(exit_criteria.calibrate(zv, split.val.y, ctx.train.target_drop, "margin"))
        model = model.with_exit_threshold(theta)
        sec["exit_threshold"] = theta
        log(f"[import] exit threshold (margin) = {theta}, calibrated on {len(split.val)} validation images: at "
            f"most {100 * ctx.train.target_drop:g}% of their decisions changed by exiting early")
    ctx.report["import"] = sec
    path = Path(out) if out is not None else ctx.model_path
    if out is None:
        forget(path)  # no longer the trained model that a cache key may name
    try:
        modelfile.save(model, path)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write the model file ({e.strerror or e})") from e
    log(f"[import] model file: {path} ({len(model.layers)} layers, {'exact' if sec['exact'] else 'quantized'}; "
        f"T_max {T}{'' if split is not None else ', no early exit'})")
    return imodel, modelfile.load(path)


def step_evaluate(ctx: Context, imodel, qmodel, n_pe=None, log=print):
    """Golden-model evaluation on the test split, agreement with the fake-quant network, report.

    ``n_pe``: the counters (``weight_reads``) assume the weight storage the generator picks for
    ``n_pe`` PEs, as the RTL counts them (a model the generator cannot map, or no ``n_pe``: dense
    storage); the report's ``counters_storage`` says which.
    """
    with progress.step("evaluate", ctx.timing, f"golden model on the test split of {ctx.dataset}") as p:
        return _evaluate(ctx, imodel, qmodel, n_pe, p.wrap(log))


def _evaluate(ctx, imodel, qmodel, n_pe, log):
    split = ctx.split()
    x_q = golden.quantize_input(qmodel, split.test.x)
    y = split.test.y
    try:
        storage = weight_storage(qmodel, n_pe, storage=getattr(ctx, "storage", "auto"))
    except SpikeloomError as e:
        log(f"[evaluate] counters assume dense weight storage: {e}")
        storage = {"source": f"dense ({e})", "n_pe": None, "sparse_layers": [], "sparse_segments": {}}
    res = golden.run(qmodel, x_q, sparse=storage["sparse_segments"])
    T = qmodel.t_max
    acc_fixed = float((res.fixed_pred() == y).mean())
    acc_adapt = float((res.pred == y).mean())
    syn_fixed = float(res.totals(adaptive=False)["synaptic_events"].mean())
    syn_adapt = float(res.totals(adaptive=True)["synaptic_events"].mean())
    z_fq = imodel.exact_z(x_q)
    fq_exit = golden.exit_steps(golden.top2_margin(z_fq), qmodel.exit_threshold, T)
    fq_pred = golden.first_argmax(z_fq[fq_exit - 1, np.arange(len(y))])
    agree = float(((fq_pred == res.pred) & (fq_exit == res.exit_t)).mean())
    hist = np.bincount(res.exit_t, minlength=T + 1)[1:].tolist()
    m = ctx.report.setdefault("model", {})
    m.update({
        "name": qmodel.name, "arch": ctx.arch, "n_test": int(len(y)),
        "accuracy_fixed_t": acc_fixed, "accuracy_adaptive": acc_adapt,
        "mean_timesteps": float(res.exit_t.mean()), "exit_histogram": hist,
        "exit_criterion": "margin", "exit_threshold": qmodel.exit_threshold,
        "synaptic_events_fixed_t": syn_fixed, "synaptic_events_adaptive": syn_adapt,
        "relative_complexity": syn_adapt / syn_fixed if syn_fixed else 1.0,
        "golden_vs_fakequant_agreement": agree,
        "accuracy_per_t": [float((golden.first_argmax(res.z[t]) == y).mean()) for t in range(T)],
        "counters_adaptive_mean": {ln: {k: float(v.mean()) for k, v in cs.items()}
                                   for ln, cs in res.counters(adaptive=True).items()},
        "counters_storage": {**storage, "layers": res.storage()},
        "model_file": str(ctx.model_path),
    })
    ctx.report.update({"dataset": ctx.dataset, "t_max": T})
    # Software-only criteria (they need exp/log) on the same integer outputs, for comparison.
    zv = imodel.exact_z(golden.quantize_input(qmodel, split.val.x))
    scale = qmodel.layers[-1].scale[0]
    criteria = {}
    for crit in ("margin", "max_softmax", "entropy"):
        zs = z_fq if crit == "margin" else z_fq * scale
        th = qmodel.exit_threshold if crit == "margin" else exit_criteria.calibrate(zv * scale, split.val.y, ctx.train.target_drop, crit)
        acc, tm, steps = exit_criteria.evaluate(zs, y, th, crit)
        syn = res.step_counters
        mask = np.arange(1, T + 1)[:, None] <= steps[None, :]
        se = sum((c["synaptic_events"] * mask).sum(axis=0) for c in syn.values()).mean()
        criteria[crit] = {"threshold": float(th), "accuracy": acc, "mean_timesteps": tm,
                          "relative_complexity": float(se / syn_fixed) if syn_fixed else 1.0,
                          "sweep": [{"threshold": float(a), "accuracy": b, "mean_timesteps": c}
                                    for a, b, c in exit_criteria.sweep(zs, y, crit)]}
    m["criteria"] = criteria
    rows = [["SNN, every timestep", f"{T} of {T}", f"{100 * acc_fixed:.2f}", "1.00"],
            ["ATSNN early exit (margin, integer: the hardware's)", f"{res.exit_t.mean():.2f} of {T}",
             f"{100 * acc_adapt:.2f}", f"{m['relative_complexity']:.2f}"]]
    for crit in ("max_softmax", "entropy"):
        c = criteria[crit]
        rows.append([f"ATSNN early exit ({crit}, software only)", f"{c['mean_timesteps']:.2f} of {T}",
                     f"{100 * c['accuracy']:.2f}", f"{c['relative_complexity']:.2f}"])
    text = table(rows, ["method", "mean timesteps of T_max", "test accuracy (%)", "synaptic ops vs every timestep"])
    n_val = len(split.val)
    log(f"\n{ctx.dataset} test split, {len(y)} images; float SNN {100 * m['accuracy_float']:.2f}%; golden model = "
        f"fake-quant network on {100 * agree:.1f}% of images\n"
        f"(exit thresholds calibrated on the validation split, {n_val} images: at most "
        f"{100 * ctx.train.target_drop:g}% of their decisions changed by exiting early; the test split can differ "
        f"by a few images)\n{text}\n"
        "synaptic ops vs every timestep: synaptic events per inference relative to running all T_max timesteps\n"
        f"images exiting after t = {', '.join(map(str, range(1, T + 1)))} timesteps: {', '.join(map(str, hist))}\n")
    if agree != 1.0:
        raise SpikeloomError(f"golden model and fake-quant network disagree on {100 * (1 - agree):.2f}% "
                             "of test images: the integer semantics have diverged")
    plot_model(ctx, m)
    return res


def _accuracy_floor(values):
    """The lower end of an accuracy axis (percent): 10 points under the lowest value, in tens, so
    that a one-image difference does not fill the plot."""
    return max(0.0, 10 * np.floor(min(values) / 10) - 10)


def plot_model(ctx: Context, m):
    """``accuracy_vs_timesteps.png`` (the exit-threshold sweep of each criterion, the whole range and
    a zoom on the calibrated point, with the every-timestep and float accuracies as reference lines)
    and ``exit_histogram.png`` (images per exit timestep, counted on the bars)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = ctx.report["t_max"]
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    colours = {"margin": "tab:blue", "max_softmax": "tab:orange", "entropy": "tab:green"}
    accs = [100 * r["accuracy"] for c in m["criteria"].values() for r in c["sweep"]]
    accs += [100 * m["accuracy_fixed_t"], 100 * m["accuracy_float"]]
    lo = _accuracy_floor(accs)
    zoom_hi = max(1.25, min(T, 1 + 2 * (m["mean_timesteps"] - 1)))  # T = 1: a window around the one point
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, (x0, x1), zoomed in zip(axes, ((1, max(T, 1.25)), (1, zoom_hi)), (False, True)):
        for crit, c in m["criteria"].items():
            sw = [r for r in c["sweep"] if x0 - 1e-9 <= r["mean_timesteps"] <= x1 + 1e-9]
            ax.plot([r["mean_timesteps"] for r in sw], [100 * r["accuracy"] for r in sw], ".-", ms=3,
                    color=colours.get(crit), label=f"{crit} threshold sweep")
        ax.plot([m["mean_timesteps"]], [100 * m["accuracy_adaptive"]], "*", color="tab:red", ms=12,
                label=f"calibrated margin: {100 * m['accuracy_adaptive']:.2f}% at {m['mean_timesteps']:.2f}")
        ax.axhline(100 * m["accuracy_fixed_t"], color="0.3", ls="--", lw=1,
                   label=f"every timestep (T={T}): {100 * m['accuracy_fixed_t']:.2f}%")
        ax.axhline(100 * m["accuracy_float"], color="tab:purple", ls=":", lw=1,
                   label=f"float SNN: {100 * m['accuracy_float']:.2f}%")
        ax.set_xlim(x0 - 0.02 * (x1 - x0), x1 + 0.02 * (x1 - x0))
        if zoomed:
            near = [a for c in m["criteria"].values() for r in c["sweep"] if r["mean_timesteps"] <= x1
                    for a in [100 * r["accuracy"]]] + [100 * m["accuracy_adaptive"], 100 * m["accuracy_fixed_t"]]
            pad = max(1.0, 100 / m["n_test"])  # at least one image either side
            ax.set_ylim(max(0, min(near) - pad), min(100.5, max(near) + pad))
            ax.set_title(f"zoom: mean timesteps 1 to {x1:.2f} (one image = {100 / m['n_test']:.2f} points)",
                         fontsize=9)
        else:
            ax.set_ylim(lo, 100.5)
            ax.set_title(f"{ctx.tag}: test accuracy vs mean timesteps\n(exit threshold sweep, test split, "
                         f"{m['n_test']} images)", fontsize=9)
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xlabel("mean timesteps per image")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(ctx.out_dir / "accuracy_vs_timesteps.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    hist = m["exit_histogram"]
    bars = ax.bar(range(1, T + 1), hist, color="tab:blue")
    ax.bar_label(bars, labels=[str(h) for h in hist], fontsize=8)
    if max(hist) > 20 * max(1, min(h for h in hist if h) if any(hist) else 1):
        ax.set_yscale("symlog", linthresh=1)  # small counts stay visible beside a tall bar
        ax.set_ylabel("images (symmetric log scale)")
    else:
        ax.set_ylabel("images")
    ax.set_ylim(top=max(hist) * (3 if ax.get_yscale() != "linear" else 1.15) + 1)
    ax.set_xlabel("exit timestep")
    ax.set_title(f"{ctx.tag}: exit timestep per image\n(test split, {sum(hist)} images, mean {m['mean_timesteps']:.2f} "
                 f"of {T})", fontsize=9)
    ax.set_xticks(range(1, T + 1))
    fig.tight_layout()
    fig.savefig(ctx.out_dir / "exit_histogram.png", dpi=120)
    plt.close(fig)


def write_report(ctx: Context, log=print):
    """Write the report with its ``timing`` section (this command's steps, over those of earlier
    commands on the same run folder; ``total``: this command) and print the timing table. A run
    folder's report is copied to ``build/report.json``, which always holds the last run's report."""
    total = time.perf_counter() - ctx.started
    ctx.report["timing"] = {**ctx.report.get("timing", {}), **ctx.timing, "total": round(total, 3)}
    if isinstance(ctx, RunContext):
        ctx.report["run"] = ctx.run_section()
    text = json.dumps(ctx.report, indent=2, sort_keys=True) + "\n"
    path = atomic_write(ctx.out_dir / "report.json", text)
    log(progress.table(ctx.timing, total))
    if ctx.out_dir != ctx.build:
        # build/report.json and build/latest move together, when a run's report is complete
        copy = atomic_write(ctx.build / "report.json", text)
        if isinstance(ctx, RunContext):
            _link_latest(ctx.build, ctx.workdir)
        log(f"report: {path} (copied to {copy})")
    else:
        log(f"report: {path}")
    return path


def step_generate(ctx: Context, qmodel, n_pe=8, trace=False, log=print, storage=None):
    """Generate the accelerator's Verilog, memory images and port description for ``qmodel``
    (``storage``: ``--storage``, default the run's, ``ctx.storage``, else ``"auto"``)."""
    if storage is None:
        storage = getattr(ctx, "storage", "auto")
    with progress.step("generate", ctx.timing, f"{qmodel.name} on N = {n_pe} PEs") as p:
        return _generate(ctx, qmodel, n_pe, trace, storage, p.wrap(log))


#: The report's ``hardware.layers`` keys, from ``ports.json``'s layers.
HARDWARE_LAYER_KEYS = ("name", "kind", "storage", "weight_words", "dense_bits", "sparse_bits", "storage_rule",
                       "dense_cycles", "sparse_cycles", "segments")


def storage_table(ports):
    """Per layer: the storage chosen (and by which rule; a compressed layer's rows cut by kernel row
    or tap say so), its weight bits, and the cycles of an event at every input summed for both
    storages (``hw/plan.py``; compressed: as cut by the rule): the generate step's summary."""
    rows = [[ly.name, ly.storage + (f" ({ly.segments})" if ly.storage == "sparse" and ly.segments not in (None, "row")
                                    else ""), ly.storage_rule or "-",
             f"{ly.dense_bits if ly.storage == 'dense' else ly.sparse_bits:,}",
             f"{ly.dense_cycles:,}" if ly.dense_cycles is not None else "-",
             f"{ly.sparse_cycles:,}" if ly.sparse_cycles is not None else "-"] for ly in ports.layers]
    return table(rows, ["layer", "storage", "rule", "weight bits", "event cycles dense", "event cycles sparse"])


def _generate(ctx, qmodel, n_pe, trace, storage, log):
    from spikeloom.hw.accel import generate
    from spikeloom.sim.ports import Ports

    storage = check_storage(storage)
    check_hardware(qmodel, n_pe, "generate", storage)
    out = ctx.workdir / f"rtl_n{n_pe}{'_trace' if trace else ''}"
    generate(qmodel, n_pe, out, trace=trace, storage=storage)
    verilog = out / "spikeloom_accel.v"
    if not verilog.exists() or not (out / "ports.json").exists():
        raise SpikeloomError(f"generate wrote no Verilog into {out}")
    ports = Ports.load(out)
    log(f"[generate] {verilog} ({verilog.stat().st_size // 1024} KiB, N = {n_pe} PEs, --storage "
        f"{storage_text(storage)}); {ports.weight_memory_bits} weight bits; per layer (event cycles: an event at "
        f"every input, summed):\n{storage_table(ports)}")
    ctx.report["hardware"] = {"n_pe": n_pe, "storage": ports.storage(), "segments": dict(ports.sparse_layers),
                              "storage_option": storage,
                              "weight_memory_bits": ports.weight_memory_bits,
                              "layers": [{k: getattr(ly, k) for k in HARDWARE_LAYER_KEYS} for ly in ports.layers]}
    return out


def step_cosim(ctx: Context, qmodel, gen_dir, simulator="verilator", n_images=None, seed=0, log=print):
    """Co-simulate the test split on the generated RTL and check every image against the golden model."""
    from spikeloom.sim.ports import Ports
    from spikeloom.sim.runner import cosim

    split = ctx.split()
    x_q = golden.quantize_input(qmodel, split.test.x)
    y = split.test.y
    if n_images:
        x_q, y = x_q[:n_images], y[:n_images]
    log(f"[cosim] {len(x_q)} images under {simulator} (random idle and back-pressure on the streams)")
    with progress.Phases(ctx.timing) as phase:  # "build", then "cosim"
        r = cosim(ctx.model_path, gen_dir, x_q, Path(gen_dir) / f"cosim_{simulator}", simulator=simulator, seed=seed,
                  phase=phase)
        imgs = r["images"]
        pred = np.array([i["pred"] for i in imgs])
        cycles = np.array([i["cycles"] for i in imgs], dtype=float)
        bound = np.array([i["cycle_bound"] for i in imgs], dtype=float)
        ports = Ports.load(gen_dir)
        res = golden.run(qmodel, x_q, sparse=ports.sparse_layers)
    c = {"simulator": simulator, "n_pe": r["n_pe"], "packed_tail": ports.packed_tail,
         "paired_events": ports.paired_events, "n_images": r["n_images"],
         "mismatches": r["mismatched_images"], "accuracy": float((pred == y[:len(pred)]).mean()),
         "accuracy_golden_same_images": float((res.pred == y).mean()),
         "mean_timesteps": float(np.mean([i["timesteps"] for i in imgs])),
         "cycles_mean": float(cycles.mean()), "cycles_bound_mean": float(bound.mean()),
         "cycles_to_bound": float(cycles.mean() / bound.mean()),
         "cycles_to_bound_max": float((cycles / bound).max()),
         "sim_cycles_per_s": r["sim_cycles_per_s"], "sim_wall_s": r["wall_s"],
         "first_mismatches": r["mismatches"][:20]}
    ctx.report["cosim"] = c
    log(table([[simulator, c["n_pe"], c["n_images"], c["mismatches"], f"{100 * c['accuracy']:.2f}",
                 f"{c['mean_timesteps']:.3f}", f"{c['cycles_mean']:.1f}", f"{c['cycles_bound_mean']:.1f}",
                 f"{c['cycles_to_bound']:.3f}", f"{c['sim_cycles_per_s'] / 1e3:.0f}k"]],
                ["simulator", "N", "images", "mismatches", "accuracy (%)", "mean T", "cycles", "bound",
                 "cycles/bound", "sim cycles/s"]))
    for m in r["mismatches"][:10]:
        log(f"  MISMATCH {m}")
    return c


def step_energy(ctx: Context, qmodel, gen_dir, simulator="verilator", tech_path=None, log=print):
    """Energy per inference from the co-simulated RTL counters (checked against the golden counts)."""
    with progress.step("energy", ctx.timing, "energy model on the co-simulated counters") as p:
        return _energy(ctx, qmodel, gen_dir, simulator, tech_path, p.wrap(log))


def _energy(ctx, qmodel, gen_dir, simulator, tech_path, log):
    from spikeloom.model.power import DEFAULT_TECH, load_tech
    from spikeloom.sim.ports import Ports

    from . import energy

    split = ctx.split()
    ports = Ports.load(gen_dir)
    results = Path(gen_dir) / f"cosim_{simulator}" / "results.json"
    imgs = json.loads(results.read_text())["images"] if results.exists() else None
    x_q = golden.quantize_input(qmodel, split.test.x)
    if imgs is not None:
        x_q = x_q[:len(imgs)]
    tech = load_tech(tech_path or DEFAULT_TECH)
    sec, nb = energy.compute(qmodel, ports, x_q, imgs, tech, x_float=split.test.x[:len(x_q)], log=log)
    if sec["rtl_vs_golden_max_abs_diff_pj"] not in (None, 0.0):
        raise SpikeloomError(f"energy from RTL counters differs from the golden model's by "
                             f"{sec['rtl_vs_golden_max_abs_diff_pj']} pJ: the counters disagree")
    ctx.report["energy"] = sec
    ctx.report["neurobench"] = nb
    rows = [[k, f"{v:.2f}", f"{sec['fixed_t_breakdown'][k]:.2f}"] for k, v in sec["breakdown"].items()]
    rows.append(["total", f"{sec['per_inference_nj']:.2f}", f"{sec['fixed_t_per_inference_nj']:.2f}"])
    log(f"\nenergy per inference in nJ, {len(x_q)} test images; technology: {tech.name} (an ASIC model, "
        f"--tech to change); activity: {sec['source']}\n"
        + table(rows, ["event kind", "early exit (nJ)", f"every timestep, T={qmodel.t_max} (nJ)"]))
    gpu = sec["gpu"]
    log(f"early exit saves {100 * sec['saving_early_exit']:.1f}% vs every timestep; sparsity saves "
        f"{100 * sec['saving_sparsity']:.1f}% vs dense ({sec['dense_per_inference_nj']:.1f} nJ); "
        f"{sec['pj_per_sop']:.2f} pJ per synaptic op (ODIN 12.7, ReckOn 5.3)\n"
        f"GPU baseline: {gpu.get('device', 'GPU')}, {'measured (NVML)' if sec['gpu_method'] == 'nvml' else 'estimated'}"
        f", {sec['gpu_baseline_nj']:.1f} nJ per inference -> accelerator / GPU = "
        f"{100 * sec['accelerator_vs_gpu']:.2f}%")
    energy.plot(sec, ctx.out_dir / "energy_breakdown.png", f"{ctx.tag}: energy per inference by event kind")
    return sec
