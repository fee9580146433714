"""Training: float SNN with the ATSNN time-dependent loss, then quantization-aware fine-tuning.

:func:`train_float` trains :class:`~spikeloom.model.snn.SNN`; :func:`train_qat` folds its
BatchNorm, quantizes, and fine-tunes the integer-exact :class:`~spikeloom.model.snn.IntSNN` so that
the integer network keeps the float network's accuracy. Both are deterministic for a seed on CPU, on any
machine (:mod:`spikeloom.model.determinism`).

``TrainConfig.device`` picks where the optimisation runs: ``"cpu"`` (default), ``"cuda"`` or
``"auto"`` (CUDA when PyTorch sees a GPU, else the CPU). The returned networks are always on the CPU.
"""

import contextvars
import copy
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from .config import EPOCHS_MAX, EXIT_CRITERIA, T_MAX_RANGE, NeuronConfig, QuantConfig, check_choice, check_int
from .determinism import single_threaded
from .errors import ConfigError
from .golden import first_argmax, quantize_values
from .losses import SCHEDULES, DistillLoss, TimeLoss
from .pruning import KeepZeros
from .snn import ARCHS, SNN, TRAIN_POOLS, IntSNN


DEVICES = ("cpu", "cuda", "auto")

#: Who shows the epochs of a training: ``None``, a tqdm bar on a terminal only; or ``bar(epochs, desc)``
#: returning an iterable over ``range(epochs)`` with ``set_postfix(**values)``, which the pipeline's
#: steps install for the duration of a step (``spikeloom.flows.progress.Step.epochs``: lines in a log too).
EPOCH_BAR = contextvars.ContextVar("spikeloom_epoch_bar", default=None)


def resolve_device(name):
    """The :class:`torch.device` for ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA if available)."""
    check_choice("train", "device", name, DEVICES)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but PyTorch sees no CUDA GPU (torch.cuda.is_available() "
                          "is False); use 'auto' or 'cpu'")
    return torch.device(name)


def _on_cpu(model):
    """``model`` itself when it lives on the CPU, else a CPU copy (for the numpy-based evaluations)."""
    p = next(model.parameters(), None)
    return model if p is None or p.device.type == "cpu" else copy.deepcopy(model).cpu()


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (the defaults train the digits MLP in well under a minute).

    ``pool``: how the pool stages of the conv archs pool spikes (:data:`~spikeloom.model.snn.TRAIN_POOLS`;
    ``"sum"`` and ``"avg"`` give sum-pooling integer networks).
    """

    arch: str = "mlp"
    t_max: int = 4
    epochs: int = 60
    qat_epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    qat_lr: float = 5e-4
    weight_decay: float = 1e-4
    loss: str = "early"
    seed: int = 0
    target_drop: float = 0.0
    criterion: str = "margin"
    device: str = "cpu"
    pool: str = "max"

    def __post_init__(self):
        check_choice("train", "arch", self.arch, tuple(ARCHS))
        check_int("train", "t_max", self.t_max, *T_MAX_RANGE)
        check_int("train", "epochs", self.epochs, 1, EPOCHS_MAX)
        check_int("train", "qat_epochs", self.qat_epochs, 0, EPOCHS_MAX)
        check_int("train", "batch_size", self.batch_size, 1)
        check_choice("train", "loss", self.loss, SCHEDULES)
        check_choice("train", "criterion", self.criterion, EXIT_CRITERIA)
        check_choice("train", "device", self.device, DEVICES)
        check_choice("train", "pool", self.pool, TRAIN_POOLS)
        if self.pool != "max" and not any(st[0] == "pool" for st in ARCHS[self.arch]):
            raise ConfigError(f"train.pool = {self.pool!r} needs an arch with pool stages "
                              f"({', '.join(a for a in ARCHS if any(st[0] == 'pool' for st in ARCHS[a]))}), "
                              f"got arch {self.arch!r}")
        for f in ("lr", "qat_lr", "weight_decay"):
            if not float(getattr(self, f)) >= 0:
                raise ConfigError(f"train.{f} = {getattr(self, f)!r} must be >= 0")
        if not 0.0 <= self.target_drop < 1.0:
            raise ConfigError(f"train.target_drop = {self.target_drop!r} is outside [0, 1)")

    def as_dict(self):
        """The fields as a dict (cache keys, model-file metadata); ``pool`` only when it is not
        ``"max"``, so that the runs without the option keep their keys and bytes."""
        d = asdict(self)
        if d["pool"] == "max":
            del d["pool"]
        return d


def steps_per_epoch(n, bs):
    """Optimizer steps in one epoch of ``n`` samples in batches of ``bs`` (the last one short)."""
    return len(range(0, n, bs))


def _batches(n, bs, gen):
    perm = torch.randperm(n, generator=gen)
    return [perm[i:i + bs] for i in range(0, n, bs)]


@single_threaded
def _fit(model, loss_fn, x, y, epochs, lr, wd, bs, seed, desc, evaluate, after_step=None, device="cpu",
         soft=None, keep_start=False, select_from=0):
    """Adam + cosine schedule; keeps the state with the best validation score (``keep_start``: the
    starting state competes too, so a fine-tuning never ends below where it started) among the
    epochs from ``select_from`` on (0-based; e.g. those after a pruning ramp, whose earlier states
    are denser than the result must be).

    ``after_step(model)``, if given, runs once before training and after every optimizer step (e.g.
    to record and re-apply pruning masks, :class:`spikeloom.model.pruning.KeepZeros`). The model and
    each batch are moved to ``device`` (a :class:`torch.device`); the model ends on the CPU.
    ``soft``: per-sample targets aligned with ``x`` (a teacher's logits), passed to the loss as its
    third argument (:class:`~spikeloom.model.losses.DistillLoss`).
    """
    if not 0 <= select_from < max(1, epochs):
        raise ConfigError(f"select_from = {select_from!r} is outside the allowed range [0, {max(1, epochs) - 1}]")
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    loss_fn.to(device)
    params = list(model.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    best, best_state, history = -1.0, None, []
    if after_step is not None:
        after_step(model)
    if keep_start and not select_from:
        best, best_state = evaluate(model), copy.deepcopy(model.state_dict())
    make_bar = EPOCH_BAR.get()
    bar = (make_bar(epochs, desc) if make_bar is not None
           else tqdm(range(epochs), desc=desc, unit="epoch", leave=False, mininterval=1.0, disable=None))
    for epoch in bar:
        model.train()
        total = 0.0
        for idx in _batches(len(x), bs, gen):
            opt.zero_grad()
            out = model(x[idx].to(device))
            if soft is None:
                loss = loss_fn(out, y[idx].to(device))
            else:
                loss = loss_fn(out, y[idx].to(device), soft[idx].to(device))
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
            total += loss.item() * len(idx)
        sched.step()
        score = evaluate(model)
        history.append({"loss": total / len(x), "val": score})
        bar.set_postfix(loss=f"{total / len(x):.3f}", val=f"{score:.3f}")
        if epoch >= select_from and score >= best:
            best, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.cpu()
    loss_fn.cpu()
    return history


@single_threaded
def accumulate(model: SNN, x, batch=1024):
    """Float accumulated outputs z (T, B, K) as numpy (the model may live on any device)."""
    model.eval()
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    with torch.no_grad():
        xt = torch.as_tensor(x, dtype=torch.float32)
        return torch.cat([model(xt[i:i + batch].to(dev)).cpu() for i in range(0, len(xt), batch)], dim=1).numpy()


def teacher_logits(teacher, x):
    """A teacher network's mean output ``z_T / T`` (N, K) on float inputs ``x``, as a tensor."""
    return torch.as_tensor(accumulate(teacher, x)[-1] / teacher.t_max)


def train_float(split, cfg: TrainConfig, neuron: NeuronConfig, model=None, after_step=None, teacher=None,
                distill=0.5, select_from=0):
    """Train the float SNN on ``split.train``, selecting the epoch with the best validation accuracy.

    ``model``: start from this :class:`SNN` (fine-tuning; its own ``t_max`` is used) instead of a
    fresh ``cfg.arch`` network. ``after_step``: see :func:`_fit`. ``teacher``: a trained network
    whose outputs the training also matches (:class:`~spikeloom.model.losses.DistillLoss` with
    ``alpha = distill``), e.g. the dense network while a pruned copy of it is fine-tuned.
    ``select_from``: the first epoch whose state may be kept (see :func:`_fit`).
    """
    torch.manual_seed(cfg.seed)
    if model is None:
        model = SNN(split.train.shape, len(split.train.classes), cfg.arch, neuron, cfg.t_max, pool=cfg.pool)
    loss_fn = TimeLoss(cfg.loss, model.t_max)
    soft = None
    if teacher is not None:
        loss_fn = DistillLoss(loss_fn, distill)
        soft = teacher_logits(teacher, split.train.x)
    x = torch.as_tensor(split.train.x)
    y = torch.as_tensor(split.train.y)

    def val_acc(m):
        return float((first_argmax(accumulate(m, split.val.x)[-1]) == split.val.y).mean())

    history = _fit(model, loss_fn, x, y, cfg.epochs, cfg.lr, cfg.weight_decay, cfg.batch_size,
                   cfg.seed, "train (float)", val_acc, after_step, resolve_device(cfg.device), soft,
                   select_from=select_from)
    return model, history


@single_threaded
def train_qat(model: SNN, split, cfg: TrainConfig, neuron: NeuronConfig, quant: QuantConfig, after_step=None,
              keep_zeros=True, teacher=None, distill=0.5):
    """Fold BatchNorm, quantize, and fine-tune the integer-exact network (straight-through).

    Works for every architecture (dense, conv, pool, residual); ``after_step``: see :func:`_fit`.
    ``keep_zeros``: synaptic weights that are exactly zero in the folded network stay exactly zero
    during the fine-tuning (:class:`~spikeloom.model.pruning.KeepZeros`), so a pruned network exports
    with its pruned weights as integer zeros. A trained dense network has no exact zeros, so for it
    this changes nothing. ``teacher`` / ``distill``: distillation from a trained float network, as
    in :func:`train_float` (the teacher sees the float images, the integer network their quantized
    values).
    """
    hooks = [h for h in (KeepZeros() if keep_zeros else None, after_step) if h is not None]

    def each_step(m):
        for h in hooks:
            h(m)

    torch.manual_seed(cfg.seed + 1)
    imodel = IntSNN(model.folded_stages(), split.train.shape, neuron, quant, model.t_max)
    soft = teacher_logits(teacher, split.train.x) if teacher is not None else None
    return imodel, _qat_fit(imodel, split, cfg, cfg.qat_epochs, "train (QAT)", each_step if hooks else None,
                            soft=soft, distill=distill)


def finetune_imported(model, split, cfg: TrainConfig, epochs):
    """QAT fine-tuning of a model that was not trained here (an imported NIR graph): the network
    :meth:`IntSNN.from_model` builds (its quantization steps, thresholds, neurons and readout
    fixed; weights and biases trained straight-through) trained ``epochs`` epochs on
    ``split.train`` with ``cfg``'s loss, learning rate and batch size, keeping the state with the
    best validation accuracy, the imported one included. Returns ``(IntSNN, history)``; ``IntSNN.export`` gives the model."""
    torch.manual_seed(cfg.seed + 1)
    imodel = IntSNN.from_model(model)
    return imodel, _qat_fit(imodel, split, cfg, epochs, "fine-tune (QAT)", None, keep_start=True)


def _qat_fit(imodel, split, cfg, epochs, desc, after_step, keep_start=False, soft=None, distill=0.5):
    """Straight-through training of an :class:`IntSNN` on its quantized inputs -> history
    (``soft``: a teacher's logits on the training split, distilled with weight ``distill``)."""
    bits = imodel.quant.input_bits
    dtype = next(imodel.parameters()).dtype
    x_q = torch.as_tensor(quantize_values(split.train.x, bits), dtype=dtype)
    y = torch.as_tensor(split.train.y)
    xv = quantize_values(split.val.x, bits)

    def val_acc(m):
        return float((first_argmax(_on_cpu(m).exact_z(xv)[-1]) == split.val.y).mean())

    if not epochs:
        return []
    loss = TimeLoss(cfg.loss, imodel.t_max)
    if soft is not None:
        loss = DistillLoss(loss, distill)
    return _fit(imodel, loss, x_q, y, epochs, cfg.qat_lr, 0.0, cfg.batch_size,
                cfg.seed + 1, desc, val_acc, after_step, resolve_device(cfg.device), soft=soft, keep_start=keep_start)


def reduce_timesteps(model, split, cfg, neuron=None, t_from=5, t_to=1, epochs=None, history=None,
                     after_step=None, teacher=None, distill=0.5, stages=None):
    """Progressive temporal pruning: from a network at ``t_from`` timesteps, retrain at ``t_from - 1``
    initialised from it, and so on down to ``t_to``; returns the ``t_to`` network (a new object).

    ``model`` is an :class:`SNN` (trained at ``t_from``; its ``t_max`` must equal it) or ``None``
    (train one at ``t_from`` with ``cfg`` first). Thresholds are made trainable
    (:meth:`SNN.enable_threshold_learning`). Each stage trains ``epochs`` (default ``cfg.epochs``;
    a list: each stage's, in the order of ``stages``) epochs with ``cfg``; ``history``, if a list,
    receives ``{"t_max", "history"}`` per stage.
    ``after_step`` (e.g. :func:`~spikeloom.model.pruning.keep_masks`) is passed to every stage, and so are ``teacher`` and
    ``distill`` (distillation from a trained network, see :func:`train_float`). ``stages``: the
    timesteps of the stages, decreasing from below ``t_from`` to ``t_to`` (default: every one,
    ``t_from - 1, ..., t_to``; ``[t_to]``: in one stage).
    """
    if not (isinstance(t_from, int) and isinstance(t_to, int) and 1 <= t_to <= t_from <= 64):
        raise ConfigError(f"need 1 <= t_to <= t_from <= 64, got t_from = {t_from!r}, t_to = {t_to!r}")
    neuron = neuron if neuron is not None else (model.neuron if model is not None else None)
    if neuron is None:
        raise ConfigError("reduce_timesteps needs a NeuronConfig when no model is given")
    if model is None:
        model, hist = train_float(split, replace(cfg, t_max=t_from), neuron)
        if history is not None:
            history.append({"t_max": t_from, "history": hist})
    elif model.t_max != t_from:
        raise ConfigError(f"the model runs {model.t_max} timesteps but t_from = {t_from}")
    stages = list(range(t_from - 1, t_to - 1, -1)) if stages is None else list(stages)
    if t_to < t_from and (not stages or stages[-1] != t_to or stages[0] >= t_from
                          or any(b >= a for a, b in zip(stages, stages[1:]))):
        raise ConfigError(f"stages = {stages!r} must decrease from below t_from = {t_from} to t_to = {t_to}")
    if isinstance(epochs, (list, tuple)) and len(epochs) != len(stages):
        raise ConfigError(f"epochs = {list(epochs)!r}: one per stage of {stages!r}")
    model = copy.deepcopy(model).enable_threshold_learning()
    for T in stages if t_to < t_from else []:
        model = copy.deepcopy(model)
        model.t_max = T
        n = epochs[stages.index(T)] if isinstance(epochs, (list, tuple)) else epochs
        stage_cfg = replace(cfg, t_max=T, epochs=n or cfg.epochs)
        model, hist = train_float(split, stage_cfg, neuron, model=model, after_step=after_step, teacher=teacher,
                                  distill=distill)
        if history is not None:
            history.append({"t_max": T, "history": hist})
    return model
