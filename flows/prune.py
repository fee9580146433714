"""``make prune``: spatio-temporal pruning, from the trained network to cycles on the accelerator.

Every row is one trained variant of the network, quantized, evaluated by the integer golden model
and (unless ``--no-cosim``) generated and co-simulated like ``make sim``:

* ``dense-t4``: the default network at T = 4 (``steps.step_train`` / ``step_quantize``);
* ``pruned80-t4``, ``pruned90-t4``: the dense float network magnitude-pruned to 80 / 90% with
  ``balance = N`` (the same number of weights in every PE's share of every input row, and with
  ``--balance-groups tap``, the default, of every tap of a conv row: the hardware cuts those rows
  by tap and reads only the landing taps, so a zero-skipping PE array walks ``synaptic events / N``
  cycles, at the map's edges too), fine-tuned with the masks kept, then QAT (which keeps pruned
  weights at exactly zero);
* ``direct-t1``: trained directly at T = 1, the baseline the seed says fails;
* ``stp-t1``: the seed's spatio-temporal pruning: trained at T = 5 (with ``--units M`` removable
  Units after stage AS, then removed), balanced-pruned and fine-tuned, then the timesteps reduced
  5 -> 4 -> ... -> 1 (each stage initialised from the previous one, thresholds trainable), then QAT.
  Units are Conv-BN-LIF blocks (a fully-connected network can take none). By default there are
  none: on the VGG default, over 3 seeds, 2 Units cost the one-timestep row 0.65 points
  (``stp-t1-units`` in the ablation measures them; BENCHMARKS.md).

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

Pruning is step by step (``--ramp``, default over the first half of the fine-tuning epochs, the
cubic schedule of Zhu & Gupta, re-pruned every epoch; :class:`spikeloom.model.pruning.GradualPrune`)
and the fine-tuning keeps the best state only from the ramp's end; the quantization-aware
fine-tuning of the pruned rows is distilled from the dense network too (``--no-qat-distill``).

``--seeds K`` trains every row with K seeds (``--seed``, ``--seed + 1``, ...), side by side as Dask
tasks (:mod:`spikeloom.flows.cluster`); training is deterministic, so each seed's figures are the
same wherever it ran. The ablation rows (:data:`ABLATION`, ``make prune-ablation``) take one part
of the stp schedule away each.

Variants are cached under ``build/prune/seed-<seed>/<row>/`` on a key made of the configuration,
the row's recipe and the source of every module training imports (``model/pruning.py`` included),
so a second run does not train. Writes ``build/pruning.json`` (``rows``: every seed's rows;
``summary``: each row's mean, sample standard deviation and per-seed values over the seeds) and
prints a table.
"""

import copy
import hashlib
import inspect
import json
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from spikeloom.model.config import EPOCHS_MAX
from spikeloom.model.errors import ConfigError, SpikeloomError, as_options

from . import common, steps
from .common import Parser, check_cosim, check_pes, parse_and_run
from .output import atomic_write, check_out_dir, check_out_file

ROWS = ("dense-t4", "pruned80-t4", "pruned90-t4", "direct-t1", "stp-t1")
#: Units of the ``stp-t1-units`` row when the stp row has none (``--units 0``, the default).
ABLATION_UNITS = 2
#: The stp row with one part of its schedule changed (``--rows``, ``make prune-ablation``): what each
#: part buys. ``units``: :data:`ABLATION_UNITS` Units while training at ``t_from`` (only when the stp
#: row has none and the network can take them); ``no-units``: none (only when the stp row has some,
#: ``--units M``); ``no-stages``: ``t_from`` straight to 1 in one stage of the same epochs as all the
#: stages; ``no-distill``: no distillation (fine-tuning, stages and QAT); ``at-once``: pruned all at
#: once instead of step by step.
ABLATION = {"stp-t1-units": {"units": ABLATION_UNITS}, "stp-t1-no-units": {"units": 0},
            "stp-t1-no-stages": {"one_stage": True}, "stp-t1-no-distill": {"distill": 0.0, "qat_distill": False},
            "stp-t1-at-once": {"ramp": 0.0}}
ALL_ROWS = ROWS + tuple(ABLATION)


def recipes(net, pes, units=0, unit_at=1, stp_sparsity=0.8, t_from=5, finetune_epochs=80,
            stage_epochs=20, head_sparsity=0.5, first_sparsity=None, distill=0.5, ramp=0.5, qat_distill=True,
            final_epochs=60, balance_groups="tap"):
    """{row name: recipe} for ``net`` and ``pes`` processing elements (the recipe is part of the
    row's cache key). ``units``: the stp row's Units (a fully-connected network can take none)."""
    from spikeloom.model.snn import ARCHS

    if net not in ARCHS:
        raise ConfigError(f"net = {net!r}; allowed: {', '.join(ARCHS)}")
    stages = ARCHS[net]
    if not (isinstance(unit_at, int) and 1 <= unit_at <= len(stages)):
        raise ConfigError(f"unit_at = {unit_at!r} is outside the allowed range [1, {len(stages)}] for {net!r}")
    units = 0 if units is None else units
    if first_sparsity is None and stages[0][0] == "conv":
        first_sparsity = 0.0  # a conv first layer is small: keep it (see prune_weights)
    prune = {"balance": pes, "finetune_epochs": finetune_epochs, "head_sparsity": head_sparsity,
             "first_sparsity": first_sparsity, "distill": distill, "ramp": ramp,
             "qat_distill": bool(qat_distill and distill), "balance_groups": balance_groups}
    book = {
        "dense-t4": {"kind": "dense", "t_max": 4},
        "pruned80-t4": {"kind": "prune", "t_max": 4, "sparsity": 0.8, **prune},
        "pruned90-t4": {"kind": "prune", "t_max": 4, "sparsity": 0.9, **prune},
        "direct-t1": {"kind": "direct", "t_max": 1},
        "stp-t1": {"kind": "stp", "t_max": 1, "t_from": t_from, "units": units, "unit_at": unit_at,
                   "sparsity": stp_sparsity, "stage_epochs": stage_epochs,
                   "final_epochs": stage_epochs if final_epochs is None else final_epochs, **prune},
    }
    for name, change in ABLATION.items():
        book[name] = {**book["stp-t1"], **change}
    return book


@dataclass
class PruneContext(steps.Context):
    """A :class:`steps.Context` for one row: the recipe and this module's source (the training
    schedule of every row lives here) join the cache key (the dense row's key is ``steps.Context``'s
    own: it is the plain pipeline's network; the image size and model/pruning.py are in that key
    already)."""

    recipe: dict = field(default_factory=dict)

    def key(self, stage):
        base = super().key(stage)
        if self.recipe.get("kind", "dense") == "dense":
            return base
        h = hashlib.sha256(base.encode())
        h.update(json.dumps({"recipe": self.recipe}, sort_keys=True).encode())
        # this module decides what a row trains (its schedule, pruning, teachers, shared stages)
        h.update(inspect.getsource(sys.modules[__name__]).encode())
        return h.hexdigest()[:16]


def prune_weights(model, sparsity, pes, head_sparsity=0.5, first_sparsity=None, groups="row"):
    """Balanced magnitude pruning over ``pes`` PEs (with ``fill``) of every layer to ``sparsity`` of
    all weights: the output layer to ``head_sparsity``, the first (analog-input) layer to
    ``first_sparsity`` (``None``: like the others), the other layers to what makes up the total.
    ``groups``: what is balanced inside a conv row (``model/pruning.py`` ``GROUPS``).

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
        masks.update(prune.magnitude_prune(model, s_hidden, balance=pes, fill=True, names=hidden, groups=groups))
    for n, s in fixed.items():
        masks.update(prune.magnitude_prune(model, s, balance=pes, fill=True, names=[n], groups=groups))
    return masks


def _train_variant(ctx, recipe, dense_float, log):
    """Train the float network of one non-dense row; returns (model, stages) with stages the best
    validation accuracy of each training stage."""
    import torch

    from spikeloom.model import pruning as prune
    from spikeloom.model.snn import SNN
    from spikeloom.model.train import reduce_timesteps, steps_per_epoch, train_float

    split, cfg, neu = ctx.split(), ctx.train, ctx.neuron
    stages = []

    alpha = recipe.get("distill", 0.0)
    teacher = dense_float if alpha else None  # distillation from the dense network (fine-tuning only)

    def fit(desc, model, c, after_step=None, teacher=None, select_from=0):
        model, hist = train_float(split, c, neu, model=model, after_step=after_step, teacher=teacher,
                                  distill=alpha, select_from=select_from)
        stages.append({"stage": desc, "t_max": model.t_max, "epochs": c.epochs,
                       "val_accuracy": max(h["val"] for h in hist)})
        log(f"[prune] {desc}: best validation accuracy {100 * stages[-1]['val_accuracy']:.2f}%")
        return model

    kind = recipe["kind"]
    if kind == "direct":
        return fit(f"trained directly at T={recipe['t_max']}", None, replace(cfg, t_max=recipe["t_max"])), stages
    ft = replace(cfg, epochs=recipe["finetune_epochs"], lr=cfg.lr / 3)

    def pruned_finetune(model, c, what):
        """Prune ``model`` (at once, or step by step over the first ``ramp`` of the epochs) and
        fine-tune it with ``c``; returns (model, the final masks)."""
        sp, pes, head, first = (recipe["sparsity"], recipe["balance"], recipe["head_sparsity"],
                                recipe["first_sparsity"])
        groups = recipe.get("balance_groups", "row")
        ramp = math.floor(recipe.get("ramp", 0.0) * c.epochs)  # < c.epochs: the last epochs are selectable
        if not ramp:
            masks = prune_weights(model, sp, pes, head, first, groups)
            hook = prune.keep_masks(masks)
        else:
            per_epoch = steps_per_epoch(len(split.train), c.batch_size)
            hook = prune.GradualPrune(lambda m, f: prune_weights(m, f * sp, pes, f * head,
                                                                 None if first is None else f * first, groups),
                                      ramp * per_epoch, per_epoch)
        how = f"over {ramp} epochs" if ramp else "at once"
        model = fit(f"{what}pruned to {100 * sp:.0f}% {how} (balanced per {groups}, N={pes}), fine-tuned", model, c,
                    hook, teacher,
                    select_from=ramp)
        masks = masks if not ramp else hook.masks
        stages[-1]["sparsity"] = prune.sparsity(model)["total"]
        return model, masks

    if kind == "prune":
        return pruned_finetune(copy.deepcopy(dense_float), ft, "")[0], stages
    # stp: Units during training, removed; balanced weight pruning; T = t_from -> 1
    t_from, m = recipe["t_from"], recipe["units"]
    shape, classes = split.train.shape, len(split.train.classes)
    start = ("t_from", "units", "unit_at")

    def train_units():
        # its initial weights are the seed's own: without this they came from the global generator
        # as the rows before it in the process left it (a row's result depended on the --rows
        # asked for, and a cached stp row on the run that had cached it)
        torch.manual_seed(cfg.seed)
        net = SNN(shape, classes, cfg.arch, neu, t_from, units=m, unit_at=recipe["unit_at"])
        units = f" with {m} Unit(s) after stage {recipe['unit_at']}" if m else ""
        return fit(f"T={t_from}{units}", net, replace(cfg, t_max=t_from))

    def pruned():
        model = _shared_stage(ctx, "units", start, recipe, stages, log, train_units,
                              lambda: SNN(shape, classes, cfg.arch, neu, t_from, units=m, unit_at=recipe["unit_at"]))
        if m:
            model = prune.remove_units(model)
        return pruned_finetune(model, replace(ft, t_max=t_from), f"T={t_from}, {'Units removed, ' if m else ''}")[0]

    model = _shared_stage(ctx, "pruned", start + ("sparsity", "balance", "head_sparsity", "first_sparsity",
                                                  "finetune_epochs", "distill", "ramp", "balance_groups"),
                          recipe, stages, log, pruned, lambda: SNN(shape, classes, cfg.arch, neu, t_from))
    masks = {n: p.detach() != 0 for n, p in prune.prunable(model).items()}  # the pruned weights are exact zeros
    history = []
    t_to, ep = recipe["t_max"], recipe["stage_epochs"]
    each = [ep] * (t_from - t_to - 1) + [recipe.get("final_epochs") or ep]  # the last stage (T = t_to) its own
    one = recipe.get("one_stage", False)  # the ablation: straight to t_to, with every stage's epochs
    model = reduce_timesteps(model, split, cfg, t_from=t_from, t_to=t_to, epochs=[sum(each)] if one else each,
                             history=history, after_step=prune.keep_masks(masks), teacher=teacher, distill=alpha,
                             stages=[t_to] if one else None)
    for h in history:
        stages.append({"stage": f"T={h['t_max']} (trainable thresholds)", "t_max": h["t_max"],
                       "epochs": len(h["history"]), "val_accuracy": max(e["val"] for e in h["history"])})
        log(f"[prune] {stages[-1]['stage']}: best validation accuracy {100 * stages[-1]['val_accuracy']:.2f}%")
    return model, stages


def _cached_net(path, key, train, make):
    """A float network cached at ``path`` (its state) and ``<path>.json`` (what ``train`` returned
    beside it) under ``key``: ``(model, info, reused)``, with ``train() -> (model, info)`` run when
    the entry is missing or stale and ``make(info)`` building the empty network to load."""
    import torch

    info_path = path.with_suffix(".json")
    if steps.cached(path, key) and info_path.is_file():
        info = json.loads(info_path.read_text())
        model = make(info)
        model.load_state_dict(torch.load(path, weights_only=True))
        return model, info, True
    model, info = train()
    steps.forget(path)  # the key, written last by store(), covers both files
    atomic_write(info_path, json.dumps(info, indent=1) + "\n")
    steps.store(path, key, lambda tmp: torch.save(model.state_dict(), tmp))
    return model, info, False


def _shared_stage(ctx, tag, keys, recipe, stages, log, train, make):
    """The float network after one of the stp schedule's first stages, which rows that differ only
    later share (the ablation's): trained by ``train()`` (which appends to ``stages``), or read
    from ``build/prune/seed-<seed>/stages/<tag>-<key>.pt``, whose key covers the configuration,
    the recipe's ``keys`` and the training code; ``make()`` builds the empty network to load."""
    key = replace(ctx, recipe={"kind": f"stp-stage-{tag}", **{k: recipe.get(k) for k in keys}}).key("train")
    path = Path(ctx.build).parent / "stages" / f"{tag}-{key}.pt"
    n = len(stages)

    def fresh():
        model = train()
        return model, stages[n:]

    model, done, reused = _cached_net(path, key, fresh, lambda _: make())
    if reused:
        stages.extend(done)
        log(f"[prune] reusing {path} ({done[-1]['stage']})")
    return model


def step_train_variant(ctx, recipe, dense_float, log=print):
    """Train (or reuse) the float network of a non-dense row; also sets ``accuracy_float``."""
    from spikeloom.model import golden
    from spikeloom.model.snn import SNN
    from spikeloom.model.train import accumulate

    split = ctx.split()
    path = ctx.workdir / "float.pt"
    key = ctx.key("train")

    def train():
        model, stages = _train_variant(ctx, recipe, dense_float, log)
        return model, {"t_max": model.t_max, "learn_threshold": model.learn_threshold, "stages": stages}

    def make(meta):
        return SNN(split.train.shape, len(split.train.classes), ctx.train.arch, ctx.neuron, meta["t_max"],
                   learn_threshold=meta["learn_threshold"])

    model, meta, reused = _cached_net(path, key, train, make)
    if reused:
        log(f"[train] reusing {path} (cache key {key})")
    stages = meta["stages"]
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
    distil = ctx.recipe.get("qat_distill") and dense_float is not None
    im, qm = steps.step_quantize(ctx, fm, log=log, teacher=dense_float if distil else None,
                                 distill=ctx.recipe.get("distill", 0.0))
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
        # the integer network read after its first timestep: what a T > 1 row gives at T = 1 untouched
        "accuracy_t1": m["accuracy_per_t"][0],
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
             f(100 * r["accuracy_fixed_t"], ".2f"), f(100 * r["accuracy_t1"], ".2f"),
             f(100 * r["weight_sparsity"], ".1f"),
             f(r["synaptic_events_mean"], ".0f"), f(r["cycles_bound_mean"], ".0f"), f(r["cycles_mean"], ".0f"),
             f(r.get("cycles_mean_vs_dense"), ".3f"), r["weight_bits"], f(r.get("weight_bits_vs_dense"), ".3f")]
            for r in rows]
    return common.table(body, ["row", "T", "mean T", "acc (%)", "acc fixed T (%)", "acc t=1 (%)", "sparsity (%)",
                               "syn events", "cycle bound", "cycles", "cycles/dense", "weight bits",
                               "bits/dense"])


#: What ``summary`` averages over the seeds (mean and sample standard deviation), per row.
SUMMARY_KEYS = ("accuracy", "accuracy_fixed_t", "accuracy_t1", "accuracy_float", "mean_timesteps", "weight_sparsity",
                "synaptic_events_mean", "cycles_bound_mean", "cycles_mean", "cycles_to_bound", "weight_bits",
                "cycles_mean_vs_dense", "cycles_bound_mean_vs_dense", "weight_bits_vs_dense", "accuracy_vs_dense")


def summarize(by_seed):
    """``[{name, seeds, <key>_mean, <key>_std, <key>_per_seed ...}]``: each row over the seeds of
    ``by_seed`` (``{seed: [rows]}``), for every key of :data:`SUMMARY_KEYS` that every seed has; the
    standard deviation is the sample one (0 for one seed); ``cosim_mismatches`` is the sum."""
    seeds = sorted(by_seed)
    names = [r["name"] for r in by_seed[seeds[0]]]
    out = []
    for name in names:
        rows = [r for s in seeds for r in by_seed[s] if r["name"] == name]
        if len(rows) != len(seeds):
            raise ValueError(f"row {name!r}: {len(rows)} entries over the {len(seeds)} seeds {seeds}")
        e = {"name": name, "seeds": seeds, "timesteps": rows[0]["timesteps"]}
        for k in SUMMARY_KEYS:
            vals = [r.get(k) for r in rows]
            if any(v is None for v in vals):
                continue
            a = np.asarray(vals, dtype=np.float64)
            e[f"{k}_mean"] = float(a.mean())
            e[f"{k}_std"] = float(a.std(ddof=1)) if len(a) > 1 else 0.0
            e[f"{k}_per_seed"] = [float(v) for v in vals]
        if all("cosim_mismatches" in r for r in rows):
            e["cosim_mismatches"] = int(sum(r["cosim_mismatches"] for r in rows))
        out.append(e)
    return out


def summary_table(summary):
    """The rows over the seeds: mean +- sample standard deviation, and each seed's accuracy (``acc -
    dense``: the spread of the difference seed by seed, which is what a comparison with dense needs)."""
    def f(e, k, fmt, scale=1.0, spread=False):
        if f"{k}_mean" not in e:
            return "-"
        m = format(scale * e[f"{k}_mean"], fmt)
        return f"{m} ± {format(scale * e[f'{k}_std'], fmt.lstrip('+'))}" if spread else m

    body = [[e["name"], e["timesteps"], f(e, "mean_timesteps", ".2f"), f(e, "accuracy", ".2f", 100, True),
             " ".join(format(100 * v, ".2f") for v in e.get("accuracy_per_seed", [])),
             f(e, "accuracy_vs_dense", "+.2f", 100, True), f(e, "accuracy_t1", ".2f", 100, True),
             f(e, "weight_sparsity", ".1f", 100),
             f(e, "cycles_bound_mean", ".0f"), f(e, "cycles_mean", ".0f", spread=True),
             f(e, "cycles_mean_vs_dense", ".3f"), f(e, "cycles_to_bound", ".3f"), f(e, "weight_bits_vs_dense", ".3f"),
             e.get("cosim_mismatches", "-")]
            for e in summary]
    return common.table(body, ["row", "T", "mean T", "acc (%)", "acc per seed (%)", "acc - dense", "acc t=1 (%)",
                               "sparsity (%)",
                               "cycle bound", "cycles", "cycles/dense", "cycles/bound", "bits/dense", "mismatches"])


def _seed_rows(build, seed, order, book, base, quant, dataset, data_seed, image_size, pes, cosim, simulator,
               cosim_images, log, split=None):
    """Train (cached), evaluate and (``cosim``) co-simulate ``order``'s rows for one training seed,
    each under ``build/prune/seed-<seed>/<row>/``; returns the rows (with their ratios to dense)."""
    from spikeloom.model.config import NeuronConfig

    base = replace(base, seed=seed)
    shared = split  # the split already read (in this process), else read by the first row

    def context(name):
        nonlocal shared
        recipe = book[name]
        ctx = PruneContext(build=Path(build) / "prune" / f"seed-{seed}" / name, dataset=dataset, data_seed=data_seed,
                           train=replace(base, t_max=recipe["t_max"]), neuron=NeuronConfig(), quant=quant,
                           recipe=recipe, image_size=image_size)
        ctx._split = shared
        shared = ctx.split()
        return ctx

    done, dense_float = [], None  # (row, context, integer model)
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
    for r in out:
        r["seed"] = seed
    _ratios(out)
    log(f"\n{dataset}, {base.arch}, seed {seed}, N = {pes} PEs, test split (golden model)\n{table(out)}\n")
    if cosim:
        for row, ctx, qm in done:
            hardware_row(row, ctx, qm, pes, simulator, cosim_images, log=log)
        _ratios(out)
        log(f"\n{dataset}, {base.arch}, seed {seed}, N = {pes} PEs, with co-simulated cycles ({simulator})\n"
            f"{table(out)}\n")
    return out


def _seed_task(kw, log_path):
    """One seed's rows on a Dask worker: its whole log (progress included) into ``log_path``."""
    import contextlib

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        return _seed_rows(**kw, log=print)


def is_report(path):
    """Whether ``path`` holds a report :func:`run` wrote (a JSON object with its ``rows``,
    ``dataset`` and ``net``, as every version wrote them), which a later run may replace."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and {"rows", "dataset", "net"} <= set(obj)   # (every version's keys)


def run(build=Path("build"), net="vgg", pes=8, rows=ROWS, dataset="digits", image_size=None, data_seed=0,
        epochs=None, qat_epochs=None, finetune_epochs=80, stage_epochs=20, units=0, unit_at=1,
        stp_sparsity=0.8, t_from=5, head_sparsity=0.5, first_sparsity=None, distill=0.5, ramp=0.5, qat_distill=True,
        final_epochs=60, balance_groups="tap",
        seed=0, seeds=1,
        device="cpu", weight_bits=8, input_bits=4, simulator="verilator", cosim_images=None, cosim=True,
        workers=None, scheduler=None, out=None, log=print):
    """Train, quantize, evaluate (and co-simulate) every row for ``seeds`` training seeds
    (``seed``, ``seed + 1``, ...); writes ``build/pruning.json``: ``rows`` (every seed's rows, each
    with its ``seed``), ``summary`` (each row's mean and spread over the seeds) and a table
    (``out``: another report file, e.g. the ablation's).

    One seed runs in this process; several run side by side as tasks on Dask
    (:mod:`spikeloom.flows.cluster`: an embedded LocalCluster of ``workers`` processes, default one
    per seed up to 4 per CPU, or the cluster of ``scheduler``), each logging to
    ``build/prune/seed-<seed>/<dataset>-<net>.log``. Training is deterministic
    (:mod:`spikeloom.model.determinism`), so the figures do not depend on where a seed ran."""
    import os

    from spikeloom.model.config import QuantConfig, check_int, check_seed
    from spikeloom.model.train import TrainConfig

    from . import cluster, progress

    check_pes(pes)
    check_seed(seed, "--seed")
    check_int(None, "--seeds", seeds, 1, 64)
    check_seed(seed + seeds - 1, f"the last seed (--seed {seed} with --seeds {seeds})")
    check_seed(data_seed, "--data-seed")
    scheduler, workers = cluster.check_args(scheduler, workers)
    if cosim:
        check_cosim(simulator, cosim_images)
    check_out_dir(build, "--build")
    path = Path(build) / "pruning.json" if out is None else Path(out)
    check_out_file(path, "--out" if out is not None else "--build", ours=is_report, what="a pruning report")
    unknown = [r for r in rows if r not in ALL_ROWS and r != "ablation"]
    if unknown or not rows:
        raise ConfigError(f"rows = {list(rows)!r}; allowed: {', '.join(ALL_ROWS)}, or 'ablation' "
                          f"(dense-t4, direct-t1, stp-t1 and the ablation's rows)")
    for opt, v in (("--first-sparsity", first_sparsity), ("--head-sparsity", head_sparsity),
                   ("--stp-sparsity", stp_sparsity)):
        if v is not None and not 0.0 <= v <= 1.0:
            raise ConfigError(f"{opt} = {v} is outside the allowed range [0, 1]")
    if not 0.0 <= distill <= 1.0:
        raise ConfigError(f"--distill = {distill} is outside the allowed range [0, 1]")
    for opt, v, lo in (("--finetune-epochs", finetune_epochs, 1), ("--stage-epochs", stage_epochs, 1),
                       ("--final-epochs", final_epochs, 1), ("--t-from", t_from, 2), ("--units", units, 0)):
        if v is not None:
            check_int(None, opt, v, lo, 64 if opt == "--t-from" else EPOCHS_MAX)
    if not 0.0 <= ramp < 1.0:
        raise ConfigError(f"--ramp = {ramp} is outside the allowed range [0, 1)")
    from spikeloom.model.pruning import GROUPS

    if balance_groups not in GROUPS:
        raise ConfigError(f"--balance-groups = {balance_groups!r}; allowed: {', '.join(GROUPS)}")
    book = recipes(net, pes, units, unit_at, stp_sparsity, t_from, finetune_epochs, stage_epochs, head_sparsity,
                   first_sparsity, distill, ramp, qat_distill, final_epochs, balance_groups)
    kw = {k: v for k, v in (("epochs", epochs), ("qat_epochs", qat_epochs)) if v is not None}
    from spikeloom.model.train import resolve_device

    # the device that trains is part of every cache key ("auto" is the CPU or CUDA, whichever it is here)
    # (a bad epochs count names its option, --epochs / --qat-epochs)
    base = as_options(lambda: TrainConfig(arch=net, seed=seed, device=resolve_device(device).type, **kw), "train",
                      kw.__contains__)
    build = Path(build)
    # the ablation's Units rows apply where they differ from the stp row and the network can take Units
    m = book["stp-t1"]["units"]
    from spikeloom.model.snn import ARCHS

    takes_units = ARCHS[net][unit_at - 1][0] != "dense"  # recipes() has checked net and unit_at
    moot = {}  # row: why it does not apply
    if m == 0:
        moot["stp-t1-no-units"] = f"would repeat stp-t1 (the stp row has no Units: --units {m})"
    if not takes_units:
        moot["stp-t1-units"] = (f"does not apply: {net!r} can take no Units after stage {unit_at} (a fully-connected "
                                "stage has no feature map for them)")
    elif m == ABLATION_UNITS:
        moot["stp-t1-units"] = f"would repeat stp-t1 (the stp row has {m} Units: --units {m})"
    if "ablation" in rows:  # the rows that show what each part of the stp schedule buys
        rows = [r for r in rows if r != "ablation"] + ["dense-t4", "direct-t1", "stp-t1"] + \
            [r for r in ABLATION if r not in moot]
        for r, why in moot.items():
            log(f"[prune] no {r} row: it {why}")
    else:
        for r in rows:
            if r in moot:
                raise ConfigError(f"rows: {r} {moot[r]}")
    order = sorted(dict.fromkeys(rows), key=ALL_ROWS.index)
    # the data is known to be there before any worker starts (a bad one: one line, at once)
    probe = PruneContext(build=build / "prune", dataset=dataset, data_seed=data_seed, train=base,
                         image_size=image_size)
    probe.split()
    quant = as_options(lambda: QuantConfig(weight_bits=weight_bits, input_bits=input_bits), "quant",
                       {"weight_bits", "input_bits"}.__contains__)
    task = dict(order=order, book=book, base=base, quant=quant,
                dataset=dataset, data_seed=data_seed, image_size=image_size, pes=pes, cosim=cosim,
                simulator=simulator, cosim_images=cosim_images)
    seed_list = list(range(seed, seed + seeds))
    by_seed = {}
    if len(seed_list) == 1 and scheduler is None:
        by_seed[seed] = _seed_rows(build, seed, log=log, split=probe.split(), **task)
    else:
        import uuid

        if scheduler is None:
            # seeds take about the same time: all at once ends no later than in rounds of one per
            # CPU (3 seeds on 2 cores: 1.5 seeds' time, not 2), at some memory per worker
            workers = workers or min(len(seed_list), 4 * (os.cpu_count() or 1))
        # one log per seed and network (the MLP's and the VGG's seeds share build/prune/seed-<seed>/)
        logs = {s: build / "prune" / f"seed-{s}" / f"{probe.tag}.log" for s in seed_list}
        errors = []
        with cluster.connect(scheduler, workers) as (client, where):
            token = uuid.uuid4().hex[:8]
            # the workers' paths are absolute: their working folder need not be this one
            # by reference to this module (run as ``python -m``, it is ``__main__`` here, whose
            # functions Dask would ship by value, without their source for the cache key)
            from spikeloom.flows.prune import _seed_task as seed_task

            futures = {client.submit(seed_task, {**task, "build": build.absolute(), "seed": s},
                                     logs[s].absolute(), key=f"prune-seed{s}-{token}", pure=False): s
                       for s in seed_list}
            with progress.step("prune", None, f"{len(seed_list)} seeds ({', '.join(map(str, seed_list))}) on "
                               f"{where}; each logs to {build / 'prune' / 'seed-<seed>' / (probe.tag + '.log')}") as bar:
                bar.count(len(seed_list), "seeds")
                for fut in cluster.completed(futures):
                    s = futures[fut]
                    try:
                        by_seed[s] = fut.result()
                    except Exception as exc:  # noqa: BLE001 -- the other seeds still finish
                        errors.append(f"seed {s}: {cluster.task_error(exc)} (log: {logs[s]})")
                        bar.wrap(log)(f"[prune] FAILED: {errors[-1]}")
                    else:
                        bar.wrap(log)(f"[prune] seed {s} done\n{table(by_seed[s])}")
                    bar.update(1)
        if errors:
            raise SpikeloomError(f"{len(errors)} of {len(seed_list)} seeds failed: {'; '.join(errors)}")
        for s in seed_list:  # the paths as the caller gave them, not the workers' absolute ones
            for r in by_seed[s]:
                r["model_file"] = str(build / Path(r["model_file"]).relative_to(build.absolute()))
    out = [r for s in seed_list for r in by_seed[s]]
    summary = summarize(by_seed)
    report = {"dataset": dataset, "net": net, "n_pe": pes, "image_size": image_size, "seeds": seed_list,
              "rows": out, "summary": summary}
    log(f"\n{dataset}, {net}, N = {pes} PEs, test split, {len(seed_list)} seed(s) {seed_list}: mean ± sample "
        f"standard deviation{' (co-simulated cycles, ' + simulator + ')' if cosim else ' (golden model)'}\n"
        f"{summary_table(summary)}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(report, indent=1) + "\n")
    log(f"wrote {path}")
    bad = sorted({r["name"] for r in out if r.get("cosim_mismatches")})
    if bad:
        raise SpikeloomError(f"rows {bad}: the RTL and the golden model differ (see {path})")
    return report


def add_arguments(p):
    p.add_argument("--build", type=Path, default=Path("build"), help="output folder (default: build)")
    p.add_argument("--out", type=Path, default=None, help="the report file (default: BUILD/pruning.json)")
    p.add_argument("--net", default="vgg", help="network (a key of spikeloom.model.snn.ARCHS; default vgg)")
    p.add_argument("--pes", type=int, default=8, help="processing elements N (balance and hardware)")
    p.add_argument("--rows", default=",".join(ROWS),
                   help=f"comma-separated rows (default: {','.join(ROWS)}); the ablation's: {','.join(ABLATION)}; "
                        "'ablation': dense-t4, direct-t1, stp-t1 and the ablation's rows that apply to --net")
    p.add_argument("--dataset", default="digits", help="'digits', 'cifar:PATH' or 'folder:PATH' (local only)")
    p.add_argument("--image-size", type=int, default=None,
                   help="folder datasets: resize every image to S x S (default 64)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the train/val/test split")
    p.add_argument("--seed", type=int, default=0, help="training seed (the first one with --seeds)")
    p.add_argument("--seeds", type=int, default=1,
                   help="train every row with this many seeds (--seed, --seed + 1, ...): the table gives "
                        "each row's mean and spread over them (default 1)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default: the same figures on any machine, model/determinism.py), cuda or auto "
                        "(CUDA when present; not covered by the determinism, and another cache entry)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of each from-scratch training")
    p.add_argument("--qat-epochs", type=int, default=None,
                   help="quantization-aware fine-tuning epochs per row (default: the architecture's)")
    p.add_argument("--finetune-epochs", type=int, default=80, help="epochs of fine-tuning after pruning")
    p.add_argument("--stage-epochs", type=int, default=20, help="epochs of each timestep-reduction stage")
    p.add_argument("--final-epochs", type=int, default=60,
                   help="epochs of the last timestep-reduction stage (T = 1): the network that is kept trains longest "
                        "(default 60)")
    p.add_argument("--units", type=int, default=0,
                   help="stp: Units M after stage AS while training at --t-from, then removed (conv stages only; "
                        "default 0: on the VGG default they cost the one-timestep row accuracy, BENCHMARKS.md)")
    p.add_argument("--unit-at", type=int, default=1, help="stp: the stage AS after which the Units sit")
    p.add_argument("--stp-sparsity", type=float, default=0.8, help="stp: weight sparsity (default 0.8)")
    p.add_argument("--head-sparsity", type=float, default=0.5,
                   help="sparsity of the output layer; the hidden layers make up each row's total (default 0.5)")
    p.add_argument("--first-sparsity", type=float, default=None,
                   help="sparsity of the first (analog-input) layer (default: 0 for a conv first layer, "
                        "else like the hidden layers)")
    p.add_argument("--distill", type=float, default=0.5,
                   help="weight alpha of distillation from the dense network while fine-tuning (default 0.5; 0 = off)")
    p.add_argument("--ramp", type=float, default=0.5,
                   help="prune step by step over this fraction of the fine-tuning epochs (cubic schedule, "
                        "re-pruned every epoch; 0 = all at once; default 0.5)")
    p.add_argument("--balance-groups", default="tap",
                   help="what balanced pruning balances inside a conv weight row: tap (default: every PE keeps "
                        "as many weights of each tap, so the hardware's rows cut by tap skip the taps that fall "
                        "off the map at no imbalance), kernel-row or row (the whole k x k row)")
    p.add_argument("--no-qat-distill", action="store_true",
                   help="quantization-aware fine-tuning of the pruned rows without distillation from the dense network")
    p.add_argument("--t-from", type=int, default=5, help="stp: timesteps before the reduction (default 5)")
    p.add_argument("--weight-bits", type=int, default=8, help="signed weight width")
    p.add_argument("--input-bits", type=int, default=4, help="unsigned input width")
    p.add_argument("--sim", default="verilator", help="co-simulator: verilator (default) or icarus")
    p.add_argument("--cosim-images", type=int, default=None, help="co-simulate only the first N test images")
    p.add_argument("--no-cosim", action="store_true",
                   help="stop after the golden model (no cycles_mean; for networks the hardware cannot take)")
    from . import cluster

    cluster.add_arguments(p, workers_help="worker processes of the embedded Dask LocalCluster that trains the "
                          "seeds side by side (default: one per seed, up to 4 per CPU: seeds take about the same "
                          "time, so all at once end first)")
    return p


def run_args(a):
    return run(build=a.build, net=a.net, pes=a.pes, rows=tuple(r for r in a.rows.split(",") if r),
               dataset=a.dataset, image_size=a.image_size, data_seed=a.data_seed, epochs=a.epochs,
               qat_epochs=a.qat_epochs, finetune_epochs=a.finetune_epochs, stage_epochs=a.stage_epochs,
               final_epochs=a.final_epochs,
               units=a.units, unit_at=a.unit_at, stp_sparsity=a.stp_sparsity, t_from=a.t_from,
               head_sparsity=a.head_sparsity, first_sparsity=a.first_sparsity, distill=a.distill, ramp=a.ramp,
               qat_distill=not a.no_qat_distill, balance_groups=a.balance_groups, seed=a.seed,
               seeds=a.seeds, workers=a.workers, scheduler=a.scheduler, out=a.out, device=a.device,
               weight_bits=a.weight_bits, input_bits=a.input_bits, simulator=a.sim,
               cosim_images=a.cosim_images, cosim=not a.no_cosim)


def main(argv=None):
    p = Parser(prog="spikeloom-prune", description=__doc__.split("\n\n")[0])
    return parse_and_run(add_arguments(p), argv, run_args)


if __name__ == "__main__":
    sys.exit(main())
