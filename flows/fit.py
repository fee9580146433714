"""Before the long work: what the data holds, and whether the network will fit the hardware.

:func:`preflight` runs at the start of every pipeline command (``run``, ``train``, ``quantize``,
``evaluate``), after the options are checked and before training:

- the data: the split sizes, the files the loader skipped (a corrupt image is left out and
  counted), and a warning when the test split is too small for its accuracy to mean much;
- the hardware the configuration asks for: the network's weights, the weight memory bits of the
  accelerator on N PEs, the generated Verilog's size, and for every documented FPGA target
  (``flows/synth.py`` ``TARGETS``) whether the weight memories fit it (``synth.check_fits``, the
  check ``make synth`` makes). Before training the weights are not known; the estimate takes the
  configuration's untrained network, whose dense storage bounds the generator's choice from above.

``run`` (which generates the hardware) refuses a network whose weights exceed the largest documented
FPGA's block RAM (:data:`LARGE_BITS`) unless ``--allow-large``: a 64x64 RGB image on the default MLP is
13 Mbit of weights, a 43 MB Verilog file and a Verilator build of many minutes. Everything lands in
the report's ``preflight`` section.
"""

import math

from spikeloom.model.errors import SpikeloomError

from .synth import TARGETS, check_fits

#: A test split smaller than this gets a warning: one image is more than one point of accuracy.
MIN_TEST_IMAGES = 100

#: The generated Verilog besides its memory contents, measured with ``spikeloom generate`` on
#: random and digits MLPs, conv nets, the VGG and the ResNet at N = 1, 2, 8, 16: about 105 kB,
#: plus 23.5 kB per PE and 25 kB per conv layer (tests/test_fit.py holds the estimate to the files).
LOGIC_BYTES = 105_000
LOGIC_BYTES_PER_PE = 23_500
LOGIC_BYTES_PER_CONV = 25_000
#: ... and of each PE's event queue and walker in a plan with queued layers (hw/queues.py; measured
#: on the random conv networks of tests/test_fit.py: 12.6-14.2 kB a PE)
LOGIC_BYTES_PER_QUEUE = 13_000


#: Weight memory bits above which ``run`` refuses to generate unless asked (``--allow-large``): the
#: block RAM of the largest documented FPGA target.
LARGE_BITS = max(t["blocks"] * t["block_bits"] for t in TARGETS.values())


def _digits(n):
    """Total decimal digits of the integers 0 .. n - 1."""
    total, lo, k = 0, 0, 1
    while lo < n:
        hi = min(n, 10 ** k)
        total += (hi - lo) * k
        lo, k = hi, k + 1
    return total


def _init_bytes(name, depth, width, copies=1):
    """Bytes of the ``initial`` block lines ``    name[i] = W'hXX;`` of ``copies`` memories."""
    fixed = len(f"    {name}[] = {width}'h{'0' * math.ceil(width / 4)};\n")
    return copies * (depth * fixed + _digits(depth))


def verilog_bytes(plan):
    """An estimate of ``spikeloom_accel.v``'s size for ``plan`` (a :class:`~spikeloom.hw.plan.Plan`):
    the memory contents line by line (every per-PE memory and the row table) plus the logic."""
    depth, widths = plan.depths(), plan.word_widths()
    mem = (_init_bytes("rows", plan.n_rows, plan.rows_bits)
           + sum(_init_bytes(m, depth[m], widths[m], plan.n_pe) for m in depth))
    convs = sum(ly.kind == "conv" for ly in plan.model.layers)
    return (mem + LOGIC_BYTES + LOGIC_BYTES_PER_PE * plan.n_pe + LOGIC_BYTES_PER_CONV * convs
            + LOGIC_BYTES_PER_QUEUE * plan.n_pe * plan.queued)


def shape_model(ctx):
    """The configuration's network, untrained (initial weights), as a QuantModel: its layers,
    sizes and storage are those training will give (``ctx``: a ``steps.Context``)."""
    from spikeloom.model.snn import SNN, IntSNN

    split = ctx.split()
    classes = tuple(split.train.classes)
    f = SNN(split.train.shape, len(classes), ctx.train.arch, ctx.neuron, ctx.train.t_max, pool=ctx.train.pool)
    i = IntSNN(f.folded_stages(), split.train.shape, ctx.neuron, ctx.quant, ctx.train.t_max)
    return i.export(ctx.tag, ctx.dataset, 0, classes=classes)


def estimate(qmodel, n_pe, storage="auto"):
    """The hardware ``qmodel`` asks for on ``n_pe`` PEs with weight storage ``storage`` (``--storage``,
    checked): ``{"weights", "weight_memory_bits",
    "verilog_bytes", "fits": {target: null or the reason it does not fit}}``; ``None`` when the
    generator cannot map the network (the generate step says why)."""
    from spikeloom.hw.plan import Plan

    try:
        plan = Plan(qmodel, n_pe, storage)
    except ValueError:
        return None
    fits = {}
    for name, t in TARGETS.items():
        try:
            # (a target whose weights are loaded into single-port RAM never pairs events, which can
            # change `fast`'s storage choice)
            rom = t["weights"] == "rom" or not plan.paired
            check_fits(name, plan if rom else Plan(qmodel, n_pe, storage, pair=False), t["weights"])
            fits[name] = None
        except SpikeloomError as e:
            fits[name] = str(e)
    return {"n_pe": n_pe, "weights": int(sum(ly.weight.size for ly in qmodel.layers)),
            "weight_memory_bits": int(plan.weight_memory_bits), "verilog_bytes": int(verilog_bytes(plan)),
            "fits": fits}


def data_notes(split, log=print):
    """The split's sizes and skipped files; warnings for what makes its figures unreliable."""
    n = {"train": len(split.train), "val": len(split.val), "test": len(split.test)}
    sec = {**{f"n_{k}": v for k, v in n.items()}, "skipped_images": len(split.skipped),
           "skipped": [{"file": f, "reason": r} for f, r in split.skipped[:20]], "warnings": []}
    if split.skipped:
        first = "; ".join(f"{f} ({r})" for f, r in split.skipped[:3])
        sec["warnings"].append(f"{len(split.skipped)} unreadable image(s) skipped: {first}"
                               + (" ..." if len(split.skipped) > 3 else ""))
    if n["test"] < MIN_TEST_IMAGES:
        sec["warnings"].append(f"the test split has {n['test']} images (train {n['train']}, validation {n['val']}): "
                               f"one image is {100 / max(n['test'], 1):.1f} points of accuracy; the accuracies "
                               f"below are that coarse (give more images per class)")
    for w in sec["warnings"]:
        log(f"warning: {w}")
    return sec


def preflight(ctx, n_pe=None, generate=False, allow_large=False, qmodel=None, storage="auto", log=print):
    """Data notes and the hardware estimate (see the module text) into ``ctx.report["preflight"]``.

    ``n_pe``: the PEs the estimate assumes (``None``: no hardware estimate); ``generate``: the command
    will generate the hardware, so a network above :data:`LARGE_BITS` is refused unless
    ``allow_large``; ``qmodel``: the model when it exists already (an imported graph), else the
    configuration's untrained network; ``storage``: the ``--storage`` the estimate assumes (checked,
    its layer names against the network's, before training).
    """
    sec = {"data": data_notes(ctx.split(), log) if ctx.dataset is not None else None}
    ctx.report["preflight"] = sec
    if n_pe is None:
        return sec
    from .steps import check_storage_names

    model = qmodel if qmodel is not None else shape_model(ctx)
    check_storage_names(model, storage)
    est = estimate(model, n_pe, storage)
    sec["hardware"] = est
    if est is None:
        return sec
    fit = [name for name, why in est["fits"].items() if why is None]
    log(f"[estimate] {est['weights']:,} weights, {est['weight_memory_bits'] / 1e6:.2f} Mbit of weight memory on "
        f"N = {n_pe} PEs, Verilog about {est['verilog_bytes'] / 1e6:.1f} MB; weights fit "
        + ", ".join(f"{t} {'yes' if why is None else 'no'}" for t, why in est["fits"].items()))
    if not fit:
        log("warning: the weights fit none of the documented FPGA targets (flows/synth.py TARGETS), e.g. "
            + next(iter(est["fits"].values())))
    if generate and est["weight_memory_bits"] > LARGE_BITS and not allow_large:
        raise SpikeloomError(
            f"the accelerator would hold {est['weight_memory_bits'] / 1e6:.1f} Mbit of weights (more than the "
            f"{LARGE_BITS / 1e6:.1f} Mbit of block RAM of the largest documented FPGA) in about "
            f"{est['verilog_bytes'] / 1e6:.0f} MB of Verilog; use a smaller input (--image-size, --channels 1), "
            "--no-cosim, or --allow-large to generate it anyway")
    return sec

