"""spikeloom cosim: a model file you already have, generated and co-simulated against the golden model (no training).

The images come from a ``.npy`` file (``--input``: quantized unsigned integers, ``(B, F)`` or
``(B, C, H, W)``) or from a dataset's test split (``--dataset``). The run reuses ``run``'s steps
(:func:`~spikeloom.flows.steps.step_generate`, :func:`~spikeloom.flows.steps.step_cosim`,
:func:`~spikeloom.flows.steps.step_energy`): every result field and counter of every image is
compared with the golden model, and the energy comes from the RTL's counters. The build folder is
the run's folder: ``model.slm`` (a copy of the model), ``rtl_n<N>/`` (Verilog, co-simulation),
``report.json``, ``energy_breakdown.png`` and, with ``--waves``, the waveform.

Waveforms (``--waves A:B``, here and on ``run``): images ``A`` to ``B`` (both included, counted
from 0 as in the report's per-image results) are co-simulated once more, alone, from reset, in a
separate model built with tracing, and every signal of that run is dumped as FST (Verilator
``--trace-fst``, Icarus ``vvp -fst``). The waveform holds the reset, the weight load if any, and
those images only; the waves run checks its images against the golden model too. :func:`cosim_model`
is what :func:`spikeloom.cosim` (the Python API) and the command run.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikeloom.model.errors import ConfigError, SpikeloomError

from . import output
from .common import check_cosim, check_dataset_images, check_pes, check_storage, dataset_options, table

__all__ = ["CosimResult", "cosim_model", "add_waves_option", "parse_waves", "check_run_waves", "step_waves",
           "mismatch_error"]

WAVES_HELP = ("A:B: dump an FST waveform of images A..B (both included, from 0), co-simulated again alone from "
              "reset in a separate traced build; the path is printed and in the report ('waves')")


def add_waves_option(parser):
    """``--waves A:B`` on ``parser`` (``cosim``; ``run`` through the lead's parser)."""
    parser.add_argument("--waves", default=None, metavar="A:B", help=WAVES_HELP)


def parse_waves(text, option="--waves"):
    """``"A:B"`` (or ``"A"``, one image) -> ``(A, B)`` with ``0 <= A <= B``; ``None`` -> ``None``."""
    if text is None:
        return None
    parts = str(text).split(":")
    try:
        a, b = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (None, None)
    except ValueError:
        a = b = None
    if a is None or not 0 <= a <= b:
        raise ConfigError(f"{option} = {text!r} must be A:B, the first and last image to dump (0 <= A <= B, "
                          "counted from 0), or A for one image")
    return a, b


def check_waves_simulator(simulator, option="--waves"):
    """Verilator writes FST through the lz4 library: its headers must be installed."""
    from spikeloom.sim.runner import FST_MISSING, fst_available

    if simulator == "verilator" and not fst_available():
        raise ConfigError(f"{option} under Verilator: {FST_MISSING}; or use --sim icarus")


def check_waves_range(span, n_images, option="--waves"):
    """Refuse a range that reaches past the ``n_images`` co-simulated images."""
    if span is not None and span[1] >= n_images:
        raise ConfigError(f"{option} {span[0]}:{span[1]}: image {span[1]} is not co-simulated "
                          f"(images 0..{n_images - 1})")


def check_run_waves(a):
    """``run --waves``, checked before the first step: ``(A, B)`` or None (no ``--waves``)."""
    span = parse_waves(getattr(a, "waves", None))
    if span is None:
        return None
    if a.no_cosim:
        raise ConfigError(f"--waves {a.waves} dumps a co-simulation; --no-cosim runs none")
    check_waves_simulator(a.sim)
    if a.cosim_images is not None:
        check_waves_range(span, a.cosim_images)
    return span


def step_waves(ctx, qmodel, gen_dir, simulator, span, n_images=None, seed=0, log=print):
    """Co-simulate images ``span = (A, B)`` of the run's test split again, alone and traced, into an
    FST in the run's folder (``ctx.out_dir``); adds the report's ``waves`` section and returns it."""
    from spikeloom.model import golden
    from spikeloom.sim.runner import cosim

    a, b = span
    x_q = golden.quantize_input(qmodel, ctx.split().test.x)
    check_waves_range(span, min(len(x_q), n_images or len(x_q)))
    path = Path(ctx.out_dir).resolve() / f"waves_{simulator}_images_{a}-{b}.fst"
    log(f"[waves] images {a}..{b} again under {simulator}, traced (a separate build)")
    r = cosim(ctx.model_path, gen_dir, x_q[a:b + 1], Path(gen_dir) / f"waves_{simulator}", simulator=simulator,
              seed=seed, waves=path)
    sec = {"path": r["waves"], "format": "fst", "images": [a, b], "simulator": simulator,
           "sim_cycles": r["sim_cycles"], "mismatches": r["mismatched_images"], "first_mismatches": r["mismatches"][:20]}
    ctx.report["waves"] = sec
    for m in r["mismatches"][:10]:
        log(f"  MISMATCH (waves run) {m}")
    log(f"waveform of images {a}..{b}: {sec['path']} ({Path(sec['path']).stat().st_size // 1024} KiB, "
        f"{r['sim_cycles']} cycles)")
    return sec


def mismatch_error(mismatches, n_images):
    """The error that ends ``run`` and ``cosim`` when ``mismatches`` of ``n_images`` images differ."""
    return SpikeloomError(f"{mismatches} of {n_images} images differ between the RTL and the golden model "
                          "(see cosim.first_mismatches in the report)")


@dataclass(frozen=True)
class CosimResult:
    """What :func:`cosim_model` (``spikeloom cosim``, :func:`spikeloom.cosim`) produced.

    Attributes
    ----------
    mismatches : images whose class, exit timestep or a counter differ from the golden model (0: all equal).
    n_images : images co-simulated.
    images : per image, the RTL's result as a :class:`~spikeloom.sim.records.InferenceRecord`
        (``pred``, ``timesteps``, ``counters``, ``cycles``), image 0 first.
    cycle_bound : (n_images,) the golden model's work bound on each image's cycles (N synaptic
        operations a cycle; a paired layer can run below it, ``hw/plan.py``, "Paired events").
    first_mismatches : one line per differing field (at most 20).
    energy : the report's ``energy`` section (RTL counters; None when there were mismatches or
        energy was not asked for).
    waves : the waveform's path, or None.
    build : the run's folder; report : its ``report.json``.
    """

    mismatches: int
    n_images: int
    images: list
    cycle_bound: np.ndarray
    first_mismatches: list = field(default_factory=list)
    energy: dict | None = None
    waves: Path | None = None
    build: Path | None = None
    report: Path | None = None

    @property
    def cycles(self):
        """(n_images,) clock cycles of each inference in the RTL."""
        return np.array([r.cycles for r in self.images], dtype=np.int64)

    @property
    def pred(self):
        """(n_images,) the RTL's predicted classes."""
        return np.array([r.pred for r in self.images], dtype=np.int64)

    @property
    def timesteps(self):
        """(n_images,) the RTL's executed timesteps."""
        return np.array([r.timesteps for r in self.images], dtype=np.int64)


def _context(build, model, dataset, data_seed, image_size, split=None, channels=None):
    """A :class:`~spikeloom.flows.steps.Context` whose folder is ``build`` itself (the model file
    goes in ``build/model.slm``) and whose plots are titled with the model's name; ``split``:
    images given by the user, not a dataset's."""
    from dataclasses import dataclass

    from . import steps

    @dataclass
    class ModelRun(steps.Context):
        model_name: str = ""

        @property
        def workdir(self):
            return self.build

        @property
        def tag(self):
            return self.model_name

    return ModelRun(build=Path(build), dataset=dataset, data_seed=data_seed, image_size=image_size,
                    channels=channels, _split=split, model_name=model.name)


def _input_split(model, x_q):
    """The user's quantized images ``x_q`` (B, F) as a test split (no labels: -1), in the [0, 1]
    values that :func:`~spikeloom.model.golden.quantize_input` maps back to exactly ``x_q``."""
    from spikeloom.model.data import Dataset, Split

    qmax = (1 << model.input_bits) - 1
    x = (x_q / qmax).astype(np.float32).reshape(len(x_q), -1, 1, 1)
    d = Dataset("input", x, np.full(len(x_q), -1, np.int64), tuple(model.classes or ()))
    return Split(train=d, val=d, test=d)


def cosim_model(model, x=None, *, dataset=None, data_seed=None, pes=8, storage="auto", simulator="verilator", images=None,
                build, waves=None, energy=True, tech=None, seed=0, log=print, input_name="--input"):
    """Generate the accelerator for ``model`` on ``pes`` PEs and co-simulate images on it.

    Parameters
    ----------
    model : QuantModel, or the path of a model file.
    x : quantized images, ``(B, F)`` or ``(B, C, H, W)`` unsigned integers in the model's input
        range (an array, or the path of a ``.npy`` file); or None with ``dataset``.
    dataset : ``"digits"``, ``"cifar:PATH"`` or ``"folder:PATH"``: its test split, labels included
        (then accuracy is reported); ``data_seed`` its split seed (default: the model's).
    pes, simulator : processing elements; ``"verilator"`` or ``"icarus"``.
    storage : the weight storage per layer (``--storage``: ``"auto"``, ``"fast"``, ``"dense"``,
        ``"sparse"``, ``"LAYER=S,..."`` or a dict; ``hw/plan.py``).
    images : co-simulate only the first ``images`` images.
    build : the run's folder (model copy, Verilog, co-simulation, report).
    waves : ``(A, B)`` or ``"A:B"``: an FST of images A..B (module docstring).
    energy : the energy step (RTL counters) after a co-simulation without mismatches.
    tech : a technology table (JSON path) for the energy model (default: the 45 nm table).

    Returns a :class:`CosimResult`; writes ``build/report.json``. Every option is checked before
    any work (:class:`~spikeloom.model.errors.SpikeloomError` naming it).
    """
    from spikeloom.model import golden, modelfile
    from spikeloom.model.config import check_int, check_seed
    from spikeloom.model.data import load_npy
    from spikeloom.model.errors import InputError

    from . import steps

    if (x is None) == (dataset is None):
        raise ConfigError("give the images: --input X.npy or --dataset SPEC (one of them)")
    check_pes(pes)
    storage = check_storage(storage)
    check_cosim(simulator, None)
    if images is not None:
        check_int(None, "--images", images, 1)
    check_seed(seed, "--seed")
    if data_seed is not None:
        check_seed(data_seed, "--data-seed")
    span = parse_waves(":".join(map(str, waves)) if isinstance(waves, (tuple, list)) else waves)
    if span is not None:
        check_waves_simulator(simulator)
    output.check_claimable(build, "--build")  # a user's non-empty folder is refused, not written into
    if tech is not None:
        from spikeloom.model.power import load_tech

        load_tech(tech)
    if not hasattr(model, "layers"):
        model = modelfile.load(model)
    steps.check_hardware(model, pes, "cosim", storage)
    if x is not None:
        where = f"{input_name} {x}" if isinstance(x, (str, Path)) else input_name
        arr = load_npy(x, input_name) if isinstance(x, (str, Path)) else np.asarray(x)
        try:
            x_q = golden.check_input(model, arr)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        ctx = _context(build, model, "input", 0, None, _input_split(model, x_q))
        source = {"input": str(x) if isinstance(x, (str, Path)) else "array" if input_name == "--input" else input_name,
                  "labels": False}
    else:
        dseed, size, channels = dataset_options(model, dataset, data_seed)
        ctx = _context(build, model, dataset, dseed, size, channels=channels)
        test = ctx.split().test
        check_dataset_images(model, dataset, test.shape)
        if len(test.classes) != model.n_classes:
            raise InputError(f"--dataset {dataset}: {len(test.classes)} classes; the model has {model.n_classes}")
        source = {"dataset": dataset, "data_seed": dseed, "split": "test", "labels": True}
    n = len(ctx.split().test)
    n_run = min(n, images) if images else n
    check_waves_range(span, n_run)

    output.claim_folder(build, f"spikeloom cosim {model.name}", "--build")
    modelfile.save(model, ctx.model_path)
    ctx.report.update({"dataset": ctx.dataset, "t_max": model.t_max, "images": {**source, "n_images": n_run},
                       "model": {"name": model.name, "model_file": str(ctx.model_path)}})
    log(f"[cosim] {model.name}: {n_run} images from {source.get('input') or dataset}, N = {pes}, {simulator}")
    gen = steps.step_generate(ctx, model, pes, log=log, storage=storage)
    step_lines = []
    c = steps.step_cosim(ctx, model, gen, simulator, images, seed=seed, log=step_lines.append)
    if not source["labels"]:  # the step scores -1 labels: no accuracy without labels
        c.pop("accuracy")
        c.pop("accuracy_golden_same_images")
    for line in step_lines:  # the step's own table has an accuracy column; ours follows
        if line.startswith(("[cosim]", "  MISMATCH")):
            log(line)
    sec = None
    if energy and not c["mismatches"]:
        sec = steps.step_energy(ctx, model, gen, simulator, tech, log=log)
    if span is not None:
        step_waves(ctx, model, gen, simulator, span, n_run, seed=seed, log=log)
    rows = [[simulator, pes, c["n_images"], c["mismatches"], f"{c['mean_timesteps']:.3f}",
             f"{c['cycles_mean']:.1f}", f"{c['cycles_bound_mean']:.1f}", f"{c['cycles_to_bound']:.3f}",
             f"{100 * c['accuracy']:.2f}" if "accuracy" in c else "-",
             f"{sec['per_inference_nj']:.2f}" if sec else "-"]]
    log("\n" + table(rows, ["simulator", "N", "images", "mismatches", "mean timesteps", "cycles (mean)",
                            "bound (mean)", "cycles/bound", "accuracy (%)", "energy (nJ/inference)"]))
    if span is not None:
        log(f"waveform of images {span[0]}..{span[1]}: {ctx.report['waves']['path']}")
    report = steps.write_report(ctx, log=log)
    from spikeloom.sim.records import InferenceRecord

    res = json.loads((Path(gen) / f"cosim_{simulator}" / "results.json").read_text())
    return CosimResult(mismatches=c["mismatches"], n_images=c["n_images"],
                       images=[InferenceRecord.from_fields(im) for im in res["images"]],
                       cycle_bound=np.array([im["cycle_bound"] for im in res["images"]], dtype=np.int64),
                       first_mismatches=c["first_mismatches"], energy=sec,
                       waves=Path(ctx.report["waves"]["path"]) if span is not None else None,
                       build=Path(build), report=report)
