"""The ``spikeloom`` command line: one subcommand per pipeline step, and ``run`` for all of them."""

import json
import sys
from pathlib import Path

import numpy as np

from spikeloom.model.config import EPOCHS_MAX
from spikeloom.model.errors import SpikeloomError

from . import cosim as cosim_flow, fit, output, steps
from .common import STORAGE_HELP, Parser, add_design_arguments, check_cosim, check_pes, check_storage, parse_and_run, storage_text


def _add_data_options(p):
    g = p.add_argument_group("data and output")
    g.add_argument("--dataset", default="digits",
                   help="'digits' (embedded default), 'cifar:PATH' or 'folder:PATH' (local folders only)")
    g.add_argument("--image-size", type=int, default=None, metavar="S",
                   help="image folders: resize every image to S x S (default 64)")
    g.add_argument("--channels", type=int, default=None, metavar="{1,3}",
                   help="image folders: 3 (RGB) or 1 (grey levels) (default 3)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the train/val/test split")
    g.add_argument("--build", type=Path, default=Path("build"), help="output folder")


def _add_training_options(p, run=False):
    g = p.add_argument_group("network and training")
    g.add_argument("--arch", default="mlp", help="network: mlp, vgg or resnet" +
                   ("; or a named reference network with fixed random weights, generated and co-simulated "
                    "without training: cifar-random (model/randnet.py NAMED), on random-valued images unless "
                    "--dataset names a dataset other than digits" if run else ""))
    g.add_argument("--pool", default="max", help="pool stages of vgg/resnet: max, sum (spike counts) "
                   "or avg (sum with 1/q^2 folded into the next weights)")
    g.add_argument("--t-max", type=int, default=None, help="timesteps per inference (default 4" +
                   ("; with --nir: the graph's spikeloom metadata, else 4)" if run else ")"))
    g.add_argument("--epochs", type=int, default=None,
                   help="float training epochs (default: the architecture's, model/train.py TrainConfig)")
    g.add_argument("--qat-epochs", type=int, default=None,
                   help="quantization-aware fine-tuning epochs (default: the architecture's)")
    g.add_argument("--loss", default="early", help="uniform|early|late|learnable (ATSNN), final|tet (baselines)")
    g.add_argument("--seed", type=int, default=0, help="training seed")
    g = p.add_argument_group("neuron")
    g.add_argument("--membrane-bits", type=int, default=None, help="signed membrane width (default 16)")
    g.add_argument("--leak-shift", type=int, default=None, help="leak u -= u >>> k (0: no leak; default 1)")
    g.add_argument("--beta", type=float, default=None,
                   help="decay factor in [0, 1] instead of --leak-shift: leak u -= (u * a) >>> F with "
                   "a = rint((1 - beta) 2^F) (1: no leak)")
    g.add_argument("--leak-frac", type=int, default=None, help="F, fraction bits of the quantized --beta (default 8)")
    g.add_argument("--fire", default=">=", help="firing rule: '>=' (u >= threshold) or '>'")
    g.add_argument("--reset", default=None, help="zero|subtract|subtract_next|subtract_recheck (default subtract" +
                   ("; with --nir: the graph's metadata, else zero)" if run else ")"))


def _add_quant_options(p):
    g = p.add_argument_group("quantization and early exit")
    g.add_argument("--weight-bits", type=int, default=None, help="signed weight width (default 8)")
    g.add_argument("--input-bits", type=int, default=None, help="unsigned input width (default 4)")
    g.add_argument("--target-drop", type=float, default=0.0,
                   help="exit calibration: the share of validation images whose decision exiting early may change "
                        "(bounds the validation accuracy drop; default 0: none)")


def _add_hardware_options(p, cosim):
    g = p.add_argument_group("hardware" + (" and co-simulation" if cosim else ""))
    g.add_argument("--pes", type=int, default=8, help="processing elements N of the accelerator" +
                   ("" if cosim else " (the weight storage that the counters assume)"))
    g.add_argument("--storage", default="auto", metavar="RULE", help=STORAGE_HELP)
    if not cosim:
        return
    g.add_argument("--sim", default="verilator", help="co-simulator: verilator or icarus")
    g.add_argument("--cosim-images", type=int, default=None, metavar="K",
                   help="co-simulate only the first K test images (default: all)")
    g.add_argument("--no-cosim", action="store_true", help="stop after the golden-model evaluation")
    g.add_argument("--allow-large", action="store_true",
                   help="generate even when the weights exceed the largest documented FPGA's block RAM "
                   "(flows/fit.py; refused otherwise, before training)")
    g.add_argument("--tech", type=Path, default=None, help="technology table (JSON) for the energy model "
                   "(default: model/tech/horowitz45.json, 45 nm CMOS)")


def _add_import_options(p):
    g = p.add_argument_group("a network trained elsewhere (NIR), in place of training")
    g.add_argument("--nir", type=Path, default=None, metavar="GRAPH",
                   help="import this NIR graph instead of training (make sim NET=graph.nir); needs --dt")
    g.add_argument("--dt", type=float, default=None, help="with --nir: the graph's Euler time step")
    g.add_argument("--finetune", type=int, default=0, metavar="EPOCHS",
                   help="with --nir: QAT fine-tuning epochs of the imported network")


#: Which option groups each pipeline subcommand takes.
PIPELINE = {
    "train": (_add_data_options, _add_training_options),
    "quantize": (_add_data_options, _add_training_options, _add_quant_options),
    "evaluate": (_add_data_options, _add_training_options, _add_quant_options,
                 lambda p: _add_hardware_options(p, cosim=False)),
    "run": (_add_data_options, lambda p: _add_training_options(p, run=True), _add_quant_options,
            lambda p: _add_hardware_options(p, cosim=True), _add_import_options),
}


#: ``run``'s widths and T_max when not given (with --nir: when the graph's metadata does not give them).
RUN_DEFAULTS = {"t_max": 4, "weight_bits": 8, "input_bits": 4, "membrane_bits": 16}


def _fill_run_defaults(a, meta=None):
    """Options left unset take the graph's spikeloom metadata (``meta``, from ``export-nir``: the
    weight width is per synapse there), else :data:`RUN_DEFAULTS`."""
    for k, v in RUN_DEFAULTS.items():
        if getattr(a, k, None) is None and k not in (meta or {}) and not (meta and k == "weight_bits"):
            setattr(a, k, v)


def _neuron(a):
    """The NeuronConfig of the neuron options; a bad value names its option and the allowed values."""
    from spikeloom.model.config import NeuronConfig
    from spikeloom.model.errors import ConfigError

    # NeuronConfig checks every range and choice; only which options were given is the CLI's to check
    if a.beta is not None and a.leak_shift is not None:
        raise ConfigError(f"--beta {a.beta} and --leak-shift {a.leak_shift} both set the leak; give one")
    if a.leak_frac is not None and a.beta is None:
        raise ConfigError(f"--leak-frac {a.leak_frac} is the precision of --beta; give --beta too")
    kw = {k: v for k, v in (("beta", a.beta), ("leak_frac", a.leak_frac), ("leak_shift", a.leak_shift))
          if v is not None}
    return _as_options(lambda: NeuronConfig(reset=a.reset or "subtract", membrane_bits=a.membrane_bits, fire=a.fire,
                                            **kw), "neuron", a)


def _as_options(make, section, a):
    """``make()``, a config of ``section``; an error about a field that is an option of the command (an
    attribute of ``a``) names the option (:func:`~spikeloom.model.errors.as_options`)."""
    from spikeloom.model.errors import as_options

    return as_options(make, section, lambda field: hasattr(a, field))


def _check_seeds(a):
    from spikeloom.model.config import check_seed

    check_seed(a.seed, "--seed")
    check_seed(a.data_seed, "--data-seed")


def _context(a):
    from spikeloom.model.config import QuantConfig
    from spikeloom.model.train import TrainConfig

    _check_seeds(a)
    for opt, v in (("--nir", getattr(a, "nir", None)), ("--dt", getattr(a, "dt", None)),
                   ("--finetune", getattr(a, "finetune", 0) or None)):
        if v is not None:
            raise SpikeloomError(f"{opt} applies to `run` with an imported graph only (run --nir GRAPH --dt DT)")
    output.check_out_dir(a.build, "--build")
    _fill_run_defaults(a)
    kw = {}
    if a.epochs is not None:
        kw["epochs"] = a.epochs
    if a.qat_epochs is not None:
        kw["qat_epochs"] = a.qat_epochs
    return steps.RunContext(
        build=a.build, dataset=a.dataset, data_seed=a.data_seed, image_size=a.image_size, channels=a.channels,
        train=_as_options(lambda: TrainConfig(arch=a.arch, t_max=a.t_max, loss=a.loss, seed=a.seed,
                                              target_drop=getattr(a, "target_drop", 0.0), pool=a.pool, **kw),
                          "train", a),
        neuron=_neuron(a),
        quant=_as_options(lambda: QuantConfig(weight_bits=a.weight_bits, input_bits=a.input_bits), "quant", a),
        **steps.run_settings(a))


def cmd_run(a):
    """Every option and the technology table are checked before the first step starts (the
    co-simulation's too with --no-cosim: they are recorded in the run's report)."""
    from spikeloom.model.randnet import NAMED

    check_pes(a.pes)
    a.storage = check_storage(a.storage)
    check_cosim(a.sim, a.cosim_images)
    if a.arch in NAMED:
        return _run_named(a)
    waves = cosim_flow.check_run_waves(a)
    if a.tech is not None:
        from spikeloom.model.power import load_tech

        load_tech(a.tech)
    if a.nir is not None:
        im, qm, ctx = _run_import(a)
        fit.preflight(ctx, a.pes, generate=not a.no_cosim, allow_large=a.allow_large, qmodel=qm, storage=a.storage)
    else:
        ctx = _context(a)
        fit.preflight(ctx, a.pes, generate=not a.no_cosim, allow_large=a.allow_large, storage=a.storage)
    if waves:  # the range against the images the co-simulation will run, before any of it
        n = len(ctx.split().test)
        cosim_flow.check_waves_range(waves, min(n, a.cosim_images or n))
    if a.nir is None:
        ctx.open()
        fm = steps.step_train(ctx)
        im, qm = steps.step_quantize(ctx, fm)
    steps.step_evaluate(ctx, im, qm, a.pes)
    if not a.no_cosim:
        gen = steps.step_generate(ctx, qm, a.pes)
        c = steps.step_cosim(ctx, qm, gen, a.sim, a.cosim_images)
        for stale in ("energy", "neurobench", "waves"):  # an earlier command's, on this folder
            ctx.report.pop(stale, None)
        if not c["mismatches"]:
            steps.step_energy(ctx, qm, gen, a.sim, a.tech)
        w = None
        try:  # the waveform of a mismatch is what one wants most; the report is written whatever happens
            if waves:
                w = cosim_flow.step_waves(ctx, qm, gen, a.sim, waves, a.cosim_images)
        finally:
            steps.write_report(ctx)
        if c["mismatches"]:
            raise cosim_flow.mismatch_error(c["mismatches"], c["n_images"])
        if w is not None and w["mismatches"]:
            raise cosim_flow.mismatch_error(w["mismatches"], w["images"][1] - w["images"][0] + 1)
        return
    steps.write_report(ctx)


#: Images a named network co-simulates unless --cosim-images says otherwise (each CIFAR-size
#: inference is about 12.5M cycles at N = 8).
NAMED_IMAGES = 20


def _run_named(a):
    """``run --arch NAME`` of a named reference network (model/randnet.py ``NAMED``, fixed random
    weights): no training; generate and co-simulate :data:`NAMED_IMAGES` random-valued images
    (``random_inputs``, seed 0), or with ``--dataset cifar:PATH`` the test split's first images,
    through ``spikeloom cosim``'s flow, into ``build/runs/NAME`` (or ``--name``)."""
    from spikeloom.model.errors import ConfigError
    from spikeloom.model.randnet import named_model, random_inputs

    given = [o for o, v in (("--epochs", a.epochs is not None), ("--qat-epochs", a.qat_epochs is not None),
                            ("--leak-shift", a.leak_shift is not None), ("--beta", a.beta is not None),
                            ("--leak-frac", a.leak_frac is not None), ("--fire", a.fire != ">="),
                            ("--pool", a.pool != "max"), ("--loss", a.loss != "early"), ("--seed", a.seed != 0),
                            ("--t-max", a.t_max is not None), ("--reset", a.reset is not None),
                            ("--membrane-bits", a.membrane_bits is not None),
                            ("--weight-bits", a.weight_bits is not None), ("--input-bits", a.input_bits is not None),
                            ("--nir", a.nir is not None), ("--dt", a.dt is not None), ("--finetune", a.finetune),
                            ("--target-drop", a.target_drop != 0.0), ("--allow-large", a.allow_large),
                            ("--data-seed", a.data_seed != 0 and a.dataset == "digits"), ("--no-cosim", a.no_cosim),
                            ("--image-size", a.image_size is not None), ("--channels", a.channels is not None))
             if v]
    if given:
        raise ConfigError(f"{given[0]}: --arch {a.arch} is a named network with fixed weights and widths; it is "
                          "generated and co-simulated as it is (options: --dataset cifar:PATH, --cosim-images, "
                          "--pes, --storage, --sim, --tech, --waves, --build, --name)")
    _check_seeds(a)
    if a.name is not None:
        steps.RunContext(build=a.build, name=a.name)  # the same rule as every run folder's name
    output.check_out_dir(a.build, "--build")
    model = named_model(a.arch)
    images = a.cosim_images or NAMED_IMAGES
    dataset = None if a.dataset == "digits" else a.dataset
    x = None if dataset else random_inputs(model, images, seed=0)
    folder = a.build / "runs" / (a.name or a.arch)
    r = cosim_flow.cosim_model(model, x, dataset=dataset, data_seed=a.data_seed, pes=a.pes, simulator=a.sim,
                               images=images, storage=a.storage, build=folder, waves=a.waves, tech=a.tech,
                               input_name=f"random images (model/randnet.py random_inputs, seed 0)")
    if r.mismatches:
        raise cosim_flow.mismatch_error(r.mismatches, r.n_images)


def _run_import(a):
    """``run --nir``: the import step in place of training and quantization (calibrated on --dataset)."""
    from spikeloom.model.errors import ConfigError

    given = [o for o, v in (("--arch", a.arch != "mlp"), ("--epochs", a.epochs is not None),
                            ("--qat-epochs", a.qat_epochs is not None), ("--leak-shift", a.leak_shift is not None),
                            ("--beta", a.beta is not None), ("--leak-frac", a.leak_frac is not None),
                            ("--fire", a.fire != ">="), ("--pool", a.pool != "max"), ("--loss", a.loss != "early"))
             if v]
    if given:
        raise ConfigError(f"{given[0]} sets how a network is trained; with --nir the graph brings its own network "
                          "(use --reset, --t-max, --input-bits, --weight-bits, --membrane-bits, --finetune)")
    reset = a.reset  # None: the graph's metadata, else zero (what NIR's equations say)
    _check_import_options(a, reset)
    output.check_out_dir(a.build, "--build")
    if not a.nir.is_file():
        raise ConfigError(f"--nir {a.nir}: no such file")
    from spikeloom.model import nir_import

    _fill_run_defaults(a, nir_import.meta(nir_import.read(a.nir)))
    a.graph = a.nir
    ctx = steps.in_run_folder(_import_context(a, a.build), **steps.run_settings(a),
                              import_options={"dt": a.dt, "finetune": a.finetune, **_import_options(a, reset)})
    ctx.open()
    ctx.report["model"] = {}
    im, qm = steps.step_import(ctx, a.dt, _import_options(a, reset), a.finetune)
    ctx.report["model"]["accuracy_float"] = ctx.report["import"]["accuracy_float"]
    return im, qm, ctx


def default_cosim_build(model_path):
    """``build/cosim-<model file stem>-<hash of its bytes>``: two model files of one name (every run
    folder's is ``model.slm``) never share a folder; the same model file always finds its own."""
    import hashlib

    p = Path(model_path)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()[:8] if p.is_file() else "missing"
    return Path("build") / f"cosim-{p.stem}-{digest}"


def cmd_cosim(a):
    """Every option, the model file and the images are checked before generation starts."""
    from .cosim import cosim_model, mismatch_error

    r = cosim_model(a.model, a.input, dataset=a.dataset, data_seed=a.data_seed, pes=a.pes, simulator=a.sim,
                    images=a.images, storage=a.storage, build=a.build or default_cosim_build(a.model), waves=a.waves,
                    tech=a.tech, seed=a.seed)
    if r.mismatches:
        raise mismatch_error(r.mismatches, r.n_images)


def cmd_generate(a):
    from spikeloom.hw.accel import generate
    from spikeloom.model import modelfile

    check_pes(a.pes)
    storage = check_storage(a.storage)
    output.check_replaceable(a.out, a.force)
    model = modelfile.load(a.model)
    steps.check_hardware(model, a.pes, "generate", storage)
    command = (f"spikeloom generate {a.model} --pes {a.pes} --storage {storage_text(storage)} --weights {a.weights}"
               + (" --trace" if a.trace else ""))
    with output.staged(a.out, command, a.force) as (stage, _):
        generate(model, a.pes, stage, trace=a.trace, weights=a.weights, storage=storage)
    print(f"wrote {a.out}/spikeloom_accel.v, {a.out}/ports.json and {a.out}/mem/")


#: The most repetitions ``gpu-baseline --runs`` takes (each one passes the whole test split).
GPU_RUNS_MAX = 100_000


def cmd_gpu_baseline(a):
    from spikeloom.model import modelfile

    from . import energy

    from spikeloom.model.config import check_int

    check_int(None, "--runs", a.runs, 1, GPU_RUNS_MAX)
    model = modelfile.load(a.model)
    x = None
    if a.dataset is not None:
        from spikeloom.model.data import load_dataset

        from .common import check_dataset_images, dataset_options

        # as the model reads it (an image folder at the model's size and channels), and checked
        seed, size, channels = dataset_options(model, a.dataset)
        test = load_dataset(a.dataset, seed=seed, size=size, channels=channels).test
        check_dataset_images(model, a.dataset, test.shape)
        x = test.x
    r = energy.gpu_baseline(model, x, n_runs=a.runs)
    print(json.dumps(r, indent=1))


def cmd_train(a):
    ctx = _context(a)
    fit.preflight(ctx)
    ctx.open()
    steps.step_train(ctx)
    steps.write_report(ctx)
    print(f"float accuracy on the test split: {ctx.report['model']['accuracy_float']:.4f}")


def cmd_quantize(a):
    ctx = _context(a)
    fit.preflight(ctx)
    ctx.open()
    _, qm = steps.step_quantize(ctx, steps.step_train(ctx))
    steps.write_report(ctx)
    print(f"model file: {ctx.model_path}")


def cmd_evaluate(a):
    check_pes(a.pes)
    ctx = _context(a)
    fit.preflight(ctx, a.pes, storage=ctx.storage)
    ctx.open()
    fm = steps.step_train(ctx)
    im, qm = steps.step_quantize(ctx, fm)
    steps.step_evaluate(ctx, im, qm, a.pes)
    steps.write_report(ctx)


def cmd_inspect(a):
    from spikeloom.model import modelfile

    model = modelfile.load(a.model)
    _, meta = modelfile.read_meta(a.model)
    if a.json:
        print(json.dumps(meta, indent=2))
        return
    v1 = model.uses_v1_neuron()
    n = model.neuron
    neuron = (f"leak shift {n.leak_shift}, reset {n.reset}, {n.membrane_bits}-bit membranes" if v1
              else f"per layer, {n.membrane_bits}-bit membranes")
    shape = "x".join(str(d) for d in model.input_shape)
    print(f"{a.model}: {model.name} (format v{meta['version']}), dataset {model.dataset}, T_max {model.t_max}, "
          f"input {shape} at {model.input_bits} bits, neuron {neuron}, "
          f"exit margin >= {model.exit_threshold}" + ("" if model.readout == "integrate" else ", spike-count readout"))
    for ly in model.layers:
        th = "" if ly.threshold is None else f", thresholds {int(ly.threshold.min())}..{int(ly.threshold.max())}"
        if not v1 and ly.neuron is not None:
            th += f", {steps.describe_neuron(ly.neuron)}"
        if ly.pool_op != "max":
            th += f", {ly.pool_op} pool {ly.pool}"
        print(f"  {ly.name:6s} {ly.role:8s} {ly.in_features:5d} -> {ly.out_features:5d}  "
              f"{ly.weight_bits}-bit weights ({100 * (ly.weight == 0).mean():.1f}% zero), "
              f"acc {model.acc_bits(ly)} bits{th}")


def cmd_golden(a):
    from spikeloom.model import golden, modelfile

    from spikeloom.model.data import load_npy
    from spikeloom.model.errors import InputError
    from spikeloom.model.ir import check_exit_threshold

    if a.exit_threshold is not None:
        check_exit_threshold(a.exit_threshold, "--exit-threshold")
    model = modelfile.load(a.model)
    storage = steps.weight_storage(model, a.pes, a.ports)
    try:
        x = golden.check_input(model, load_npy(a.input, "--input"))
    except InputError as e:
        msg = str(e)
        raise InputError(msg if msg.startswith("--input") else f"--input {a.input}: {msg}") from None
    res = golden.run(model, x, exit_threshold=a.exit_threshold, sparse=storage["sparse_segments"])
    print(json.dumps(golden_json(model, res, storage, a.exit_threshold, a.counters), indent=1))


def golden_json(model, res, storage, exit_threshold=None, counters=False):
    """What ``spikeloom golden`` prints: one shape whatever the options. Per image the class index
    ``pred``, its name ``class`` (the model file's class names, else the index), the exit
    ``timesteps`` and the output layer's accumulated ``scores`` at the exit (the values the exit
    margin and the arg-max read); ``counters`` is ``null`` unless asked for."""
    names = [str(c) for c in model.classes] or [str(k) for k in range(model.n_classes)]
    z = res.z[res.exit_t - 1, np.arange(len(res.pred))]
    results = [{"pred": int(p), "class": names[int(p)], "timesteps": int(t), "scores": [int(v) for v in s]}
               for p, t, s in zip(res.pred, res.exit_t, z)]
    return {"model": model.name, "classes": names, "t_max": int(model.t_max),
            "exit_threshold": int(model.exit_threshold if exit_threshold is None else exit_threshold),
            "results": results,
            "storage": {"source": storage["source"], "n_pe": storage["n_pe"], "layers": res.storage(),
                        "segments": dict(res.segments)},
            "counters": ({ln: {k: v.tolist() for k, v in cs.items()} for ln, cs in res.counters().items()}
                         if counters else None)}


def _check_import_options(a, reset):
    """The NIR import options' ranges, before any work (one line naming the option)."""
    from spikeloom.model.config import RESETS, T_MAX_RANGE, WIDTH_RANGES
    from spikeloom.model.errors import ConfigError

    _check_seeds(a)
    if a.dt is None:
        raise ConfigError("--dt is missing: a NIR graph stores no time step; give --dt DT (snnTorch and "
                          "SpikingJelly export with 1e-4)")
    if not (a.dt > 0 and np.isfinite(a.dt)):
        raise ConfigError(f"--dt = {a.dt!r} must be > 0 (the Euler time step, in the graph's time unit; "
                          "snnTorch and SpikingJelly export with 1e-4)")
    if reset is not None and reset not in RESETS:
        raise ConfigError(f"--reset = {reset!r}; allowed: {', '.join(RESETS)}")
    for opt, v, lo, hi in (("--input-bits", a.input_bits, *WIDTH_RANGES["input_bits"]),
                           ("--t-max", a.t_max, *T_MAX_RANGE),
                           ("--weight-bits", a.weight_bits, *WIDTH_RANGES["weight_bits"]),
                           ("--membrane-bits", a.membrane_bits, *WIDTH_RANGES["membrane_bits"]),
                           ("--finetune", a.finetune, 0, EPOCHS_MAX)):
        if v is not None and not lo <= v <= hi:
            raise ConfigError(f"{opt} = {v} is outside the allowed range [{lo}, {hi}]")
    if not 0.0 <= a.target_drop < 1.0:
        raise ConfigError(f"--target-drop = {a.target_drop} is outside the allowed range [0, 1)")
    if a.finetune and a.dataset is None:
        raise ConfigError(f"--finetune {a.finetune} trains on a dataset; give --dataset too")


def _import_context(a, build):
    """The context of an import: the dataset, and what fine-tuning and exit calibration use (the
    widths and T_max are the import's own, ``_import_options``)."""
    from spikeloom.model.train import TrainConfig

    return steps.Context(build=build, dataset=a.dataset, data_seed=a.data_seed, nir=a.graph,
                         image_size=getattr(a, "image_size", None), channels=getattr(a, "channels", None),
                         train=_as_options(lambda: TrainConfig(target_drop=a.target_drop, seed=a.seed), "train", a))


def _import_options(a, reset):
    return {"reset": reset, "input_bits": a.input_bits, "t_max": a.t_max, "weight_bits": a.weight_bits,
            "membrane_bits": a.membrane_bits}


def cmd_import(a):
    """Check every value, read the NIR graph, map it (calibrated on --dataset), write the model file
    atomically, print the table."""
    from spikeloom.model.errors import ConfigError

    from spikeloom.model import modelfile

    _check_import_options(a, a.reset)
    output.check_out_file(a.out, "-o", inputs=[("graph", a.graph)], ours=modelfile.is_model_file, what="a model file")
    ctx = _import_context(a, a.out.parent)
    steps.step_import(ctx, a.dt, _import_options(a, a.reset), a.finetune, out=a.out)


def cmd_export_nir(a):
    """Check every value, load the model file, map it, write the NIR graph atomically, print the table."""
    from spikeloom.model import modelfile, nir_export
    from spikeloom.model.errors import ConfigError

    if a.form not in nir_export.FORMS:
        raise ConfigError(f"--form = {a.form!r}; allowed: {', '.join(nir_export.FORMS)}")
    if not (a.dt > 0 and np.isfinite(a.dt)):
        raise ConfigError(f"--dt = {a.dt!r} must be > 0 (the Euler time step written into the graph)")
    output.check_out_file(a.out, "-o", inputs=[("model", a.model)], ours=nir_export.written_here,
                          what="a NIR graph")
    model = modelfile.load(a.model)
    graph, rows, notes = nir_export.to_nir(model, a.dt, a.form)
    try:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        nir_export.write(graph, a.out)
    except OSError as e:
        raise ConfigError(f"-o {a.out}: cannot write ({e.strerror or e})") from e
    from .common import table

    print(table(rows, ["layer", "nodes", "neuron"]))
    for n in notes:
        print(f"note: {n}")
    print(f"NIR graph: {a.out} ({a.form}, {len(graph.nodes)} nodes, dt = {a.dt:g})")


def version():
    """The installed package's version, :data:`spikeloom.__version__`."""
    from spikeloom import __version__

    return __version__


def build_parser():
    p = Parser(prog="spikeloom", description=(
        "From a trained spiking neural network to a verified hardware accelerator. "
        "Steps: train -> quantize -> evaluate (golden model); 'run' does them all."))
    p.add_argument("--version", action="version", version=f"spikeloom {version()}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=Parser)
    for name, fn, help_ in (("run", cmd_run, "the main job (what `make sim` runs): train (cached) -> quantize -> "
                             "golden evaluation -> generate -> co-simulation -> energy"),
                            ("train", cmd_train, "train the float SNN (cached)"),
                            ("quantize", cmd_quantize, "fold BN, QAT, calibrate the exit, write the model file"),
                            ("evaluate", cmd_evaluate, "golden-model evaluation and report")):
        sp = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        for add in PIPELINE[name]:
            add(sp)
        steps.add_run_folder_options(sp)
        sp.set_defaults(fn=fn)
    sp = sub.add_parser("inspect", help="validate a model file and summarise it")
    sp.add_argument("model", type=Path, help="the model file (.slm)")
    sp.add_argument("--json", action="store_true", help="print the metadata as JSON")
    sp.set_defaults(fn=cmd_inspect)
    sp = sub.add_parser("generate", help="generate the accelerator's Verilog for a model file")
    add_design_arguments(sp)
    sp.add_argument("--trace", action="store_true", help="add the spike trace port")
    sp.add_argument("--weights", default="rom", choices=["rom", "load"],
                    help="rom: weight memories initialised (default); load: written through i_weights after reset")
    sp.set_defaults(fn=cmd_generate)
    from . import export as export_flow

    sp = sub.add_parser("export", help="a self-contained Verilog folder for vendor tools (Vivado, Quartus, Yosys)",
                        description=export_flow.__doc__.split("\n\n")[0])
    export_flow.add_arguments(sp)
    sp.set_defaults(fn=export_flow.run_args)
    sp = sub.add_parser("gpu-baseline", help="joules per inference of the network run densely on a GPU "
                        "(NVML energy counter when a CUDA GPU is present, else a documented estimate)")
    sp.add_argument("model", type=Path, help="the model file (.slm)")
    sp.add_argument("--dataset", default="digits", help="images to run on the GPU (test split)")
    sp.add_argument("--runs", type=int, default=200, help="repetitions over the test split (NVML)")
    sp.set_defaults(fn=cmd_gpu_baseline)
    from . import prune as prune_flow

    sp = sub.add_parser("prune", help="spatio-temporal pruning rows -> build/pruning.json (what `make prune` runs)",
                        description=prune_flow.__doc__.split("\n\n")[0])
    prune_flow.add_arguments(sp)
    sp.set_defaults(fn=prune_flow.run_args)
    from . import fuzz as fuzz_flow

    sp = sub.add_parser("fuzz", help="the random-network campaign -> build/fuzz.json (what `make fuzz` runs)",
                        description=fuzz_flow.__doc__.split("\n\n")[0])
    fuzz_flow.add_arguments(sp)
    sp.set_defaults(fn=fuzz_flow.cli_args)
    sp = sub.add_parser("import", help="a NIR graph (snnTorch, SpikingJelly, Norse, ...) -> a model file",
                        description="Map a NIR graph to a spikeloom model file: per node, exact or quantized "
                        "and the largest error. README.md, 'Bring your own network'.")
    sp.add_argument("graph", type=Path, help="the .nir file")
    sp.add_argument("-o", "--out", type=Path, required=True, help="the model file to write (.slm)")
    sp.add_argument("--dt", type=float, required=True, help="the Euler time step (NIR stores none)")
    sp.add_argument("--reset", default=None, metavar="{zero,subtract,subtract_next,subtract_recheck}",
                    help="the spiking layers' reset (NIR cannot say 'subtract'; snnTorch's subtract-reset "
                    "Leaky is subtract_next, SpikingJelly's soft reset (v_reset=None) subtract); default: the graph's spikeloom metadata (export-nir), else zero, "
                    "NIR's reset to v_reset = 0")
    meta = "default: the graph's spikeloom metadata, else"
    sp.add_argument("--input-bits", type=int, default=None,
                    help=f"unsigned input width (the graph's inputs in [0, 1]); {meta} 8")
    sp.add_argument("--t-max", type=int, default=None, help=f"timesteps per inference; {meta} 8")
    sp.add_argument("--weight-bits", type=int, default=None, help=f"signed weight width; {meta} 8")
    sp.add_argument("--membrane-bits", type=int, default=None, help=f"signed membrane width; {meta} 16")
    sp.add_argument("--dataset", default=None, help="calibration data: 'digits', 'cifar:PATH' or 'folder:PATH' "
                    "(validation split: membrane ranges and the exit threshold; test split: float vs integer "
                    "accuracy). Without it: thresholds capped at 1/8 of the membrane range, no early exit")
    sp.add_argument("--data-seed", type=int, default=0, help="seed of the dataset's train/val/test split")
    sp.add_argument("--finetune", type=int, default=0, metavar="EPOCHS",
                    help="QAT fine-tuning of the imported integer network on --dataset's training split")
    sp.add_argument("--target-drop", type=float, default=0.0,
                    help="exit calibration: the share of validation images whose decision exiting early may change "
                        "(bounds the validation accuracy drop; default 0: none)")
    sp.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
    sp.set_defaults(fn=cmd_import)
    sp = sub.add_parser("export-nir", help="a model file -> a NIR graph (for snnTorch, Norse, SpikingJelly, ...)",
                        description="Write a spikeloom model file as a NIR graph: portable (every backend's LIF, "
                        "thresholds 1) or exact (integer units, for spikeloom import). README.md, 'Export to NIR'.")
    sp.add_argument("model", type=Path, help="the model file (.slm)")
    sp.add_argument("-o", "--out", type=Path, required=True, help="the .nir file to write")
    sp.add_argument("--dt", type=float, default=1e-4, help="the Euler time step of the graph (default 1e-4, snnTorch's)")
    sp.add_argument("--form", default="portable", metavar="{portable,exact}",
                    help="portable (default): LIF nodes other backends load; exact: integer units, IF/LIF/I, SumPool2d")
    sp.set_defaults(fn=cmd_export_nir)
    cosim_flow.add_waves_option(sub.choices["run"])
    sp = sub.add_parser("cosim", help="generate and co-simulate a model file you have (no training) against the "
                        "golden model", description=cosim_flow.__doc__.split("\n\n")[0])
    sp.add_argument("model", type=Path, help="the model file (.slm)")
    sp.add_argument("--input", type=Path, default=None, metavar="X.npy",
                    help="quantized images: (B, F) or (B, C, H, W) unsigned ints in the model's input range")
    sp.add_argument("--dataset", default=None, help="instead of --input, a dataset's test split (with labels: accuracy too): "
                    "'digits', 'cifar:PATH' or 'folder:PATH'")
    sp.add_argument("--data-seed", type=int, default=None,
                    help="with --dataset: seed of its train/val/test split (default: the model's, else 0)")
    sp.add_argument("--pes", type=int, default=8, help="processing elements of the generated accelerator (default 8)")
    sp.add_argument("--storage", default="auto", metavar="RULE", help=STORAGE_HELP)
    sp.add_argument("--sim", default="verilator", help="co-simulator: verilator (default) or icarus")
    sp.add_argument("--images", type=int, default=None, metavar="K", help="co-simulate only the first K images "
                    "(default: all)")
    sp.add_argument("--build", type=Path, default=None, metavar="DIR",
                    help="the run's folder: model copy, Verilog, co-simulation, report.json (default: "
                    "build/cosim-<model file name>-<hash of its bytes>)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the random idle and back-pressure on the streams")
    sp.add_argument("--tech", type=Path, default=None, help="technology table (JSON) for the energy model; "
                    "default: model/tech/horowitz45.json")
    cosim_flow.add_waves_option(sp)
    sp.set_defaults(fn=cmd_cosim)
    sp = sub.add_parser("golden", help="run the integer golden model on quantized inputs (.npy, (B, F) ints)",
                        description="Run the integer golden model and print JSON: per image the class (index and "
                        "name), the exit timestep and the output scores at the exit; with --counters every "
                        "layer's activity counters (else null).")
    sp.add_argument("model", type=Path, help="the model file (.slm)")
    sp.add_argument("--input", type=Path, required=True,
                    help="a .npy of (B, F) or (B, C, H, W) unsigned integers within the model's input bits")
    sp.add_argument("--exit-threshold", type=int, default=None,
                    help="early-exit margin (default: the model file's calibrated threshold)")
    sp.add_argument("--counters", action="store_true", help="fill `counters`: every layer's counters per image")
    g = sp.add_argument_group("weight storage of the counters (weight_reads), as the RTL counts them; "
                              "default: every layer dense")
    g.add_argument("--pes", type=int, default=None, help="the storage the generator picks for N processing elements "
                   "by default (--storage auto); for another --storage, give the generated core's --ports")
    g.add_argument("--ports", type=Path, default=None,
                   help="the storage of a generated accelerator: its ports.json (spikeloom generate -o DIR)")
    sp.set_defaults(fn=cmd_golden)
    from . import sweep as sweep_flow

    sp = sub.add_parser("sweep", help="design-space exploration on Dask -> build/sweep/<name>/ (what `make sweep` runs)",
                        description=sweep_flow.__doc__.split("\n\n")[0])
    sweep_flow.add_arguments(sp)
    sp.set_defaults(fn=sweep_flow.cli_args)
    p.owners = _option_owners(sub)
    return p


def _option_owners(sub):
    """Option string -> the subcommands (of the subparsers action ``sub``) that take it."""
    owners = {}
    for name, sp in sub.choices.items():
        for act in sp._actions:
            for o in act.option_strings:
                if o not in ("-h", "--help"):
                    owners.setdefault(o, []).append(name)
    return owners


def main(argv=None):
    return parse_and_run(build_parser(), argv, lambda a: a.fn(a), subcommand="cmd")


if __name__ == "__main__":
    sys.exit(main())
