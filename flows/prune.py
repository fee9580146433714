"""``make prune``: spatio-temporal pruning, from the trained network to cycles on the accelerator.

Every row is one trained variant of the network, quantized, evaluated by the integer golden model
and (unless ``--no-cosim``) generated and co-simulated like ``make sim``:

* ``dense-t4``: the default network at T = 4 (``steps.step_train`` / ``step_quantize``);
* ``pruned80-t4``, ``pruned90-t4``: the dense float network magnitude-pruned to 80 / 90% with
  ``balance = N`` (the same number of weights in every PE's share of every input row, so a
  zero-skipping PE array walks ``synaptic events / N`` cycles), fine-tuned with the masks kept,
  then QAT (which keeps pruned weights at exactly zero);
* ``direct-t1``: trained directly at T = 1, the baseline the seed says fails;
* ``stp-t1``: the seed's spatio-temporal pruning: M removable Units inserted after stage AS and
  trained at T = 5, removed, the base network balanced-pruned and fine-tuned, then the timesteps
  reduced 5 -> 4 -> ... -> 1 (each stage initialised from the previous one, thresholds trainable),
  then QAT. Units are Conv-BN-LIF blocks: a fully-connected network (``--net mlp``) gets none.

A conv first layer is kept whole (``--first-sparsity``, default 0 for a conv first layer): it is
about 1% of the weights and does its synaptic work once, on the image, but pruned its neurons see
less of the image and fire more, and every extra spike costs the next layer a row of events (on
the VGG default: 344 instead of 210 first-layer spikes at t = 1, 1.6x the second layer's events).
``--distill ALPHA`` fine-tunes the pruned networks (and the stp row's timestep stages) towards the
dense network's outputs at every timestep (:class:`spikeloom.model.losses.DistillLoss`), which
keeps them confident early: fewer timesteps under the early exit.

The output layer has too few neurons per PE to keep the same count in every group (10 classes over
8 PEs: ``floor(0.2 * 10 / 8) = 0`` at 80%); ``fill`` keeps one weight per PE in its best input rows
and empties the others (an empty row costs no storage and no cycle). It is pruned less
(``--head-sparsity``, default 0.5) and the hidden layers more, so that the row's sparsity over all
weights is the one asked for.

Variants are cached under ``build/prune/<row>/`` on a key made of the configuration, the row's
recipe and the source of every module training imports (``model/pruning.py`` included), so a second run does not train.
Writes ``build/pruning.json`` (``rows``) and prints a table.
"""

import copy
import hashlib
import inspect
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from spikeloom.model.errors import ConfigError, SpikeloomError

from . import common, steps
from .common import Parser, check_cosim, check_pes, parse_and_run
from .output import atomic_write, check_out_dir

ROWS = ("dense-t4", "pruned80-t4", "pruned90-t4", "direct-t1", "stp-t1")


def recipes(net, pes, units=None, unit_at=1, stp_sparsity=0.8, t_from=5, finetune_epochs=80,
            stage_epochs=20, head_sparsity=0.5, first_sparsity=None, distill=0.5):
    """{row name: recipe} for ``net`` and ``pes`` processing elements (the recipe is part of the
    row's cache key). ``units=None``: 2 Units for a conv network, none for a fully-connected one."""
    from spikeloom.model.snn import ARCHS

    if net not in ARCHS:
        raise ConfigError(f"net = {net!r}; allowed: {', '.join(ARCHS)}")
    stages = ARCHS[net]
    if not (isinstance(unit_at, int) and 1 <= unit_at <= len(stages)):
        raise ConfigError(f"unit_at = {unit_at!r} is outside the allowed range [1, {len(stages)}] for {net!r}")
    if units is None:
        units = 2 if stages[unit_at - 1][0] != "dense" else 0
    if first_sparsity is None and stages[0][0] == "conv":
        first_sparsity = 0.0  # a conv first layer is small: keep it (see prune_weights)
    prune = {"balance": pes, "finetune_epochs": finetune_epochs, "head_sparsity": head_sparsity,
             "first_sparsity": first_sparsity, "distill": distill}
    return {
        "dense-t4": {"kind": "dense", "t_max": 4},
        "pruned80-t4": {"kind": "prune", "t_max": 4, "sparsity": 0.8, **prune},
        "pruned90-t4": {"kind": "prune", "t_max": 4, "sparsity": 0.9, **prune},
        "direct-t1": {"kind": "direct", "t_max": 1},
        "stp-t1": {"kind": "stp", "t_max": 1, "t_from": t_from, "units": units, "unit_at": unit_at,
                   "sparsity": stp_sparsity, "stage_epochs": stage_epochs, **prune},
    }


@dataclass
class PruneContext(steps.Context):
    """A :class:`steps.Context` for one row: the recipe and this row's training code join the cache
    key (the dense row's key is ``steps.Context``'s own: it is the plain pipeline's network; the
    image size and model/pruning.py are in that key already)."""

    recipe: dict = field(default_factory=dict)

    def key(self, stage):
        base = super().key(stage)
        if self.recipe.get("kind", "dense") == "dense":
            return base
        h = hashlib.sha256(base.encode())
        h.update(json.dumps({"recipe": self.recipe}, sort_keys=True).encode())
        h.update(inspect.getsource(_train_variant).encode())
        return h.hexdigest()[:16]


def prune_weights(model, sparsity, pes, head_sparsity=0.5, first_sparsity=None):
    """Balanced magnitude pruning over ``pes`` PEs (with ``fill``) of every layer to ``sparsity`` of
    all weights: the output layer to ``head_sparsity``, the first (analog-input) layer to
    ``first_sparsity`` (``None``: like the others), the other layers to what makes up the total.

    The first layer is a small share of the weights (144 of 15248 in the VGG default) and does its
    synaptic work once per inference, on the image; pruning it makes its neurons fire more (they
    see less of the image), and every extra spike costs the second layer a whole row of events."""
    from spikeloom.model import pruning as prune

    params = prune.prunable(model)
    first = next(iter(params))
    fixed = {"head.weight": head_sparsity}
    if first_sparsity is not None:
        fixed[first] = first_sparsity
    hidden = [n for n in params if n not in fixed]
    n_all = sum(p.numel() for p in params.values())
    spent = sum(s * params[n].numel() for n, s in fixed.items())
    n_hidden = sum(params[n].numel() for n in hidden)
    s_hidden = min(1.0, max(0.0, (sparsity * n_all - spent) / n_hidden)) if n_hidden else 0.0
    masks = {}
    if hidden:
        masks.update(prune.magnitude_prune(model, s_hidden, balance=pes, fill=True, names=hidden))
    for n, s in fixed.items():
        masks.update(prune.magnitude_prune(model, s, balance=pes, fill=True, names=[n]))
    return masks


def _train_variant(ctx, recipe, dense_float, log):
    """Train the float network of one non-dense row; returns (model, stages) with stages the best
    validation accuracy of each training stage."""
    from spikeloom.model import pruning as prune
    from spikeloom.model.snn import SNN
    from spikeloom.model.train import reduce_timesteps, train_float

    split, cfg, neu = ctx.split(), ctx.train, ctx.neuron
    stages = []

    alpha = recipe.get("distill", 0.0)
    teacher = dense_float if alpha else None  # distillation from the dense network (fine-tuning only)

    def fit(desc, model, c, after_step=None, teacher=None):
        model, hist = train_float(split, c, neu, model=model, after_step=after_step, teacher=teacher,
                                  distill=alpha)
        stages.append({"stage": desc, "t_max": model.t_max, "epochs": c.epochs,
                       "val_accuracy": max(h["val"] for h in hist)})
        log(f"[prune] {desc}: best validation accuracy {100 * stages[-1]['val_accuracy']:.2f}%")
        return model

    kind = recipe["kind"]
    if kind == "direct":
        return fit(f"trained directly at T={recipe['t_max']}", None, replace(cfg, t_max=recipe["t_max"])), stages
    ft = replace(cfg, epochs=recipe["finetune_epochs"], lr=cfg.lr / 3)
    if kind == "prune":
        model = copy.deepcopy(dense_float)
        masks = prune_weights(model, recipe["sparsity"], recipe["balance"], recipe["head_sparsity"],
                              recipe["first_sparsity"])
        model = fit(f"pruned {100 * prune.sparsity(model)['total']:.1f}% (balanced, N={recipe['balance']}), "
                    "fine-tuned", model, ft, prune.keep_masks(masks), teacher)
        return model, stages
    # stp: Units during training, removed; balanced weight pruning; T = t_from -> 1
    t_from, m = recipe["t_from"], recipe["units"]
    net = SNN(split.train.shape, len(split.train.classes), cfg.arch, neu, t_from, units=m,
              unit_at=recipe["unit_at"])
    model = fit(f"T={t_from} with {m} Unit(s) after stage {recipe['unit_at']}", net, replace(cfg, t_max=t_from))
    if m:
        model = prune.remove_units(model)
    masks = prune_weights(model, recipe["sparsity"], recipe["balance"], recipe["head_sparsity"],
                          recipe["first_sparsity"])
    model = fit(f"T={t_from}, Units removed, pruned {100 * prune.sparsity(model)['total']:.1f}% "
                f"(balanced, N={recipe['balance']}), fine-tuned", model, replace(ft, t_max=t_from),
                prune.keep_masks(masks), teacher)
    history = []
    model = reduce_timesteps(model, split, cfg, t_from=t_from, t_to=recipe["t_max"],
                             epochs=recipe["stage_epochs"], history=history, after_step=prune.keep_masks(masks),
                             teacher=teacher, distill=alpha)
    for h in history:
        stages.append({"stage": f"T={h['t_max']} (trainable thresholds)", "t_max": h["t_max"],
                       "epochs": len(h["history"]), "val_accuracy": max(e["val"] for e in h["history"])})
        log(f"[prune] {stages[-1]['stage']}: best validation accuracy {100 * stages[-1]['val_accuracy']:.2f}%")
    return model, stages


def step_train_variant(ctx, recipe, dense_float, log=print):
    """Train (or reuse) the float network of a non-dense row; also sets ``accuracy_float``."""
    import torch

    from spikeloom.model import golden
    from spikeloom.model.snn import SNN
    from spikeloom.model.train import accumulate

    split = ctx.split()
    path = ctx.workdir / "float.pt"
    info = ctx.workdir / "float.json"
    key = ctx.key("train")
    if steps.cached(path, key) and info.exists():
        meta = json.loads(info.read_text())
        log(f"[train] reusing {path} (cache key {key})")
        model = SNN(split.train.shape, len(split.train.classes), ctx.train.arch, ctx.neuron, meta["t_max"],
                    learn_threshold=meta["learn_threshold"])
        model.load_state_dict(torch.load(path, weights_only=True))
        stages = meta["stages"]
    else:
        model, stages = _train_variant(ctx, recipe, dense_float, log)
        steps.forget(path)  # the key, written last by store(), covers both files
        atomic_write(info, json.dumps({"t_max": model.t_max, "learn_threshold": model.learn_threshold,
                                       "stages": stages}, indent=1) + "\n")
        steps.store(path, key, lambda tmp: torch.save(model.state_dict(), tmp))
    if model.t_max != ctx.train.t_max:
        raise SpikeloomError(f"{path}: the network runs {model.t_max} timesteps, the row {ctx.train.t_max}")
    z = accumulate(model, split.test.x)
    ctx.report.setdefault("model", {})["accuracy_float"] = float((golden.first_argmax(z[-1]) == split.test.y).mean())
    ctx.report["model"]["stages"] = stages
    return model


def _weight_storage(qmodel, pes):
    """Weight memory bits of all PEs with each layer in the cheaper of dense and compressed
    (zero-skipping) storage (``Plan(storage="auto")``), the same all dense, and the choice per layer."""
    from spikeloom.hw.plan import Plan

    auto, dense = Plan(qmodel, pes, storage="auto"), Plan(qmodel, pes, storage="dense")
    return {"weight_bits": int(auto.weight_memory_bits), "weight_bits_dense_storage": int(dense.weight_memory_bits),
            "weight_storage": {r["layer"]: r["storage"] for r in auto.storage_report}}


def evaluate_row(name, ctx, pes, dense_float=None, log=print):
    """Train (cached), quantize (cached) and golden-evaluate one row; returns (row, float model, qmodel)."""
    from spikeloom.model import pruning as prune

    quiet = lambda *_: None  # noqa: E731
    log(f"[prune] {name}: {json.dumps(ctx.recipe, sort_keys=True)}")
    if ctx.recipe["kind"] == "dense":
        fm = steps.step_train(ctx, log=log)
    else:
        fm = step_train_variant(ctx, ctx.recipe, dense_float, log=log)
    im, qm = steps.step_quantize(ctx, fm, log=log)
    res = steps.step_evaluate(ctx, im, qm, pes, log=quiet)
    steps.write_report(ctx, log=quiet)
    m = ctx.report["model"]
    weights = [ly.weight for ly in qm.layers] + [ly.shortcut_weight for ly in qm.layers
                                                  if ly.shortcut_weight is not None]
    n_w = sum(w.size for w in weights)
    nnz = sum(int((w != 0).sum()) for w in weights)
    imbalance = {}
    for ly in qm.layers:
        _, imb = prune.pe_load(ly.weight, pes)
        imbalance[ly.name] = imb
    row = {
        "name": name, "recipe": ctx.recipe, "model_file": str(ctx.model_path),
        "timesteps": qm.t_max, "mean_timesteps": m["mean_timesteps"],
        "accuracy": m["accuracy_adaptive"], "accuracy_fixed_t": m["accuracy_fixed_t"],
        "accuracy_float": m["accuracy_float"], "exit_threshold": qm.exit_threshold,
        "weight_sparsity": 1.0 - nnz / n_w, "nonzero_weights": nnz, "weights": n_w,
        "layer_sparsity": {ly.name: float((ly.weight == 0).mean()) for ly in qm.layers},
        "pe_imbalance": imbalance,
        "synaptic_events_mean": m["synaptic_events_adaptive"],
        "synaptic_events_fixed_t_mean": m["synaptic_events_fixed_t"],
        "spikes_mean": float(res.totals(adaptive=True)["spikes"].mean()),
        "cycles_bound_mean": float(res.cycle_bound(qm, pes).mean()),
        **_weight_storage(qm, pes),
        "cycles_mean": None,
        "stages": m.get("stages", []),
    }
    return row, fm, qm


def hardware_row(row, ctx, qm, pes, simulator, n_images, log=print):
    """Generate the accelerator for one row and co-simulate it; adds the cycles to ``row``."""
    gen = steps.step_generate(ctx, qm, pes, log=log)
    c = steps.step_cosim(ctx, qm, gen, simulator, n_images, log=log)
    steps.write_report(ctx, log=lambda *_: None)
    row.update({"cycles_mean": c["cycles_mean"], "cosim_cycles_bound_mean": c["cycles_bound_mean"],
                "cycles_to_bound": c["cycles_to_bound"], "cosim_images": c["n_images"],
                "cosim_mismatches": c["mismatches"], "cosim_accuracy": c["accuracy"], "simulator": simulator})
    return row


def _ratios(rows):
    ref = next((r for r in rows if r["name"] == "dense-t4"), None)
    if ref is None:
        return
    for r in rows:
        for k in ("cycles_mean", "cycles_bound_mean", "weight_bits", "synaptic_events_mean"):
            if r.get(k) is not None and ref.get(k):
                r[f"{k}_vs_dense"] = r[k] / ref[k]
        r["accuracy_vs_dense"] = r["accuracy"] - ref["accuracy"]


def table(rows):
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    body = [[r["name"], r["timesteps"], f(r["mean_timesteps"], ".2f"), f(100 * r["accuracy"], ".2f"),
             f(100 * r["accuracy_fixed_t"], ".2f"), f(100 * r["weight_sparsity"], ".1f"),
             f(r["synaptic_events_mean"], ".0f"), f(r["cycles_bound_mean"], ".0f"), f(r["cycles_mean"], ".0f"),
             f(r.get("cycles_mean_vs_dense"), ".3f"), r["weight_bits"], f(r.get("weight_bits_vs_dense"), ".3f")]
            for r in rows]
    return common.table(body, ["row", "T", "mean T", "acc (%)", "acc fixed T (%)", "sparsity (%)",
                               "syn events", "cycle bound", "cycles", "cycles/dense", "weight bits",
                               "bits/dense"])


def run(build=Path("build"), net="vgg", pes=8, rows=ROWS, dataset="digits", image_size=None, data_seed=0,
        epochs=None, qat_epochs=None, finetune_epochs=80, stage_epochs=20, units=None, unit_at=1,
        stp_sparsity=0.8, t_from=5, head_sparsity=0.5, first_sparsity=None, distill=0.5, seed=0, device="auto",
        weight_bits=8, input_bits=4, simulator="verilator", cosim_images=None, cosim=True, log=print):
    """Train, quantize, evaluate (and co-simulate) every row; writes ``build/pruning.json``."""
    from spikeloom.model.config import NeuronConfig, QuantConfig
    from spikeloom.model.train import TrainConfig

    from spikeloom.model.config import check_seed

    check_pes(pes)
    check_seed(seed, "--seed")
    check_seed(data_seed, "--data-seed")
    if cosim:
        check_cosim(simulator, cosim_images)
    check_out_dir(build, "--build")
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        raise ConfigError(f"rows = {list(rows)!r}; allowed: {', '.join(ROWS)}")
    if first_sparsity is not None and not 0.0 <= first_sparsity <= 1.0:
        raise ConfigError(f"--first-sparsity = {first_sparsity} is outside the allowed range [0, 1]")
    if not 0.0 <= distill <= 1.0:
        raise ConfigError(f"--distill = {distill} is outside the allowed range [0, 1]")
    book = recipes(net, pes, units, unit_at, stp_sparsity, t_from, finetune_epochs, stage_epochs, head_sparsity,
                   first_sparsity, distill)
    kw = {k: v for k, v in (("epochs", epochs), ("qat_epochs", qat_epochs)) if v is not None}
    base = TrainConfig(arch=net, seed=seed, device=device, **kw)
    quant = QuantConfig(weight_bits=weight_bits, input_bits=input_bits)
    build = Path(build)
    shared = None

    def context(name):
        nonlocal shared
        recipe = book[name]
        ctx = PruneContext(build=build / "prune" / name, dataset=dataset, data_seed=data_seed,
                           train=replace(base, t_max=recipe["t_max"]), neuron=NeuronConfig(), quant=quant,
                           recipe=recipe, image_size=image_size)
        ctx._split = shared
        shared = ctx.split()
        return ctx

    done, dense_float = [], None  # (row, context, integer model)
    order = sorted(rows, key=ROWS.index)
    if "dense-t4" in order:
        ctx = context("dense-t4")
        row, dense_float, qm = evaluate_row("dense-t4", ctx, pes, log=log)
        done.append((row, ctx, qm))
    elif any(book[r]["kind"] == "prune" or book[r].get("distill") for r in order):
        dense_float = steps.step_train(context("dense-t4"), log=log)  # what pruned rows start from / distil
    for name in order:
        if name != "dense-t4":
            ctx = context(name)
            row, _, qm = evaluate_row(name, ctx, pes, dense_float, log=log)
            done.append((row, ctx, qm))
    out = [r for r, _, _ in done]
    _ratios(out)
    log(f"\n{dataset}, {net}, N = {pes} PEs, test split (golden model)\n{table(out)}\n")
    report = {"dataset": dataset, "net": net, "n_pe": pes, "image_size": image_size, "rows": out}
    if cosim:
        for row, ctx, qm in done:
            hardware_row(row, ctx, qm, pes, simulator, cosim_images, log=log)
        _ratios(out)
        log(f"\n{dataset}, {net}, N = {pes} PEs, with co-simulated cycles ({simulator})\n{table(out)}\n")
    build.mkdir(parents=True, exist_ok=True)
    path = build / "pruning.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {path}")
    bad = [r["name"] for r in out if r.get("cosim_mismatches")]
    if bad:
        raise SpikeloomError(f"rows {bad}: the RTL and the golden model differ (see {path})")
    return report


def add_arguments(p):
    p.add_argument("--build", type=Path, default=Path("build"), help="output folder (default: build)")
    p.add_argument("--net", default="vgg", help="network (a key of spikeloom.model.snn.ARCHS; default vgg)")
    p.add_argument("--pes", type=int, default=8, help="processing elements N (balance and hardware)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default: {','.join(ROWS)})")
    p.add_argument("--dataset", default="digits", help="'digits', 'cifar:PATH' or 'folder:PATH' (local only)")
    p.add_argument("--image-size", type=int, default=None,
                   help="folder datasets: resize every image to S x S (default 64)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the train/val/test split")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present; default)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of each from-scratch training")
    p.add_argument("--qat-epochs", type=int, default=None,
                   help="quantization-aware fine-tuning epochs per row (default: the architecture's)")
    p.add_argument("--finetune-epochs", type=int, default=80, help="epochs of fine-tuning after pruning")
    p.add_argument("--stage-epochs", type=int, default=20, help="epochs of each timestep-reduction stage")
    p.add_argument("--units", type=int, default=None,
                   help="stp: Units M (default 2 for conv networks, 0 for fully-connected)")
    p.add_argument("--unit-at", type=int, default=1, help="stp: the stage AS after which the Units sit")
    p.add_argument("--stp-sparsity", type=float, default=0.8, help="stp: weight sparsity (default 0.8)")
    p.add_argument("--head-sparsity", type=float, default=0.5,
                   help="sparsity of the output layer; the hidden layers make up each row's total (default 0.5)")
    p.add_argument("--first-sparsity", type=float, default=None,
                   help="sparsity of the first (analog-input) layer (default: 0 for a conv first layer, "
                        "else like the hidden layers)")
    p.add_argument("--distill", type=float, default=0.5,
                   help="weight alpha of distillation from the dense network while fine-tuning (default 0.5; 0 = off)")
    p.add_argument("--t-from", type=int, default=5, help="stp: timesteps before the reduction (default 5)")
    p.add_argument("--weight-bits", type=int, default=8, help="signed weight width")
    p.add_argument("--input-bits", type=int, default=4, help="unsigned input width")
    p.add_argument("--sim", default="verilator", help="co-simulator: verilator (default) or icarus")
    p.add_argument("--cosim-images", type=int, default=None, help="co-simulate only the first N test images")
    p.add_argument("--no-cosim", action="store_true",
                   help="stop after the golden model (no cycles_mean; for networks the hardware cannot take)")
    return p


def run_args(a):
    return run(build=a.build, net=a.net, pes=a.pes, rows=tuple(r for r in a.rows.split(",") if r),
               dataset=a.dataset, image_size=a.image_size, data_seed=a.data_seed, epochs=a.epochs,
               qat_epochs=a.qat_epochs, finetune_epochs=a.finetune_epochs, stage_epochs=a.stage_epochs,
               units=a.units, unit_at=a.unit_at, stp_sparsity=a.stp_sparsity, t_from=a.t_from,
               head_sparsity=a.head_sparsity, first_sparsity=a.first_sparsity, distill=a.distill, seed=a.seed,
               device=a.device, weight_bits=a.weight_bits, input_bits=a.input_bits, simulator=a.sim,
               cosim_images=a.cosim_images, cosim=not a.no_cosim)


def main(argv=None):
    p = Parser(prog="spikeloom-prune", description=__doc__.split("\n\n")[0])
    return parse_and_run(add_arguments(p), argv, run_args)


if __name__ == "__main__":
    sys.exit(main())
