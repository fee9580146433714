"""ATSNN's time-dependent loss on the accumulated output, and its baselines.

``z`` is the accumulated output (T, B, K): ``z_t = o_1 + ... + o_t``. The time-dependent loss is
``L = sum_t w_t * CE(z_t / t, y)`` with ``sum_t w_t = 1`` (a reconstruction of ATSNN's loss; the
uniform schedule is DT-SNN's). Baselines: ``final`` (CE on the final output only) and ``tet``
(Deng et al. 2022: ``(1 - l) * mean_t CE(o_t, y) + l * MSE(o, 1)``).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .config import check_choice
from .errors import ConfigError

SCHEDULES = ("uniform", "early", "late", "learnable", "final", "tet")


class DistillLoss(nn.Module):
    """Knowledge distillation for fine-tuning a pruned network from its dense teacher.

    ``L = (1 - alpha) * base(z, y) + alpha * tau^2 * sum_t w_t * KL(p_teacher || softmax(z_t / t / tau))``
    with ``p_teacher = softmax(z_teacher_T / T_teacher / tau)`` (the teacher's mean output over all of
    its timesteps) and ``w_t`` the base loss's schedule. Every timestep of the student is pulled
    towards the teacher's final answer, so the pruned network stays confident early, which is what
    the early exit turns into fewer timesteps. ``soft`` (the third argument) holds the teacher's
    logits ``z_teacher_T / T_teacher`` for the batch.
    """

    def __init__(self, base, alpha=0.5, tau=2.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"distill alpha = {alpha!r} is outside [0, 1]")
        if not tau > 0:
            raise ConfigError(f"distill tau = {tau!r} must be > 0")
        self.base, self.alpha, self.tau = base, alpha, tau

    def forward(self, z, y, soft):
        T = z.shape[0]
        t = torch.arange(1, T + 1, dtype=z.dtype, device=z.device).view(T, 1, 1)
        logp = F.log_softmax(z / t / self.tau, dim=-1)
        p_t = F.softmax(soft / self.tau, dim=-1)
        kl = (p_t * (torch.log(p_t.clamp_min(1e-12)) - logp)).sum(-1).mean(-1)  # (T,)
        w = self.base.weights(T) if self.base.schedule != "tet" else torch.full((T,), 1.0 / T)
        kd = (w.to(z.device) * kl).sum() * self.tau ** 2
        return (1 - self.alpha) * self.base(z, y) + self.alpha * kd


class TimeLoss(nn.Module):
    """The loss, selected by ``schedule``; ``learnable`` owns trainable schedule logits."""

    def __init__(self, schedule="early", t_max=4, tet_lambda=1e-3):
        super().__init__()
        self.schedule = check_choice("train", "loss", schedule, SCHEDULES)
        self.t_max = t_max
        self.tet_lambda = tet_lambda
        self.logits = nn.Parameter(torch.zeros(t_max)) if schedule == "learnable" else None

    def weights(self, T=None):
        """The per-timestep weights w_t (sum 1) for the z-based schedules."""
        T = T or self.t_max
        t = torch.arange(1, T + 1, dtype=torch.float32)
        if self.schedule == "uniform":
            w = torch.ones(T)
        elif self.schedule == "early":
            w = T + 1 - t
        elif self.schedule == "late":
            w = t
        elif self.schedule == "learnable":
            return torch.softmax(self.logits[:T], dim=0)
        else:
            w = (t == T).float()
        return w / w.sum()

    def forward(self, z, y):
        T = z.shape[0]
        if self.schedule == "tet":
            o = torch.diff(z, dim=0, prepend=torch.zeros_like(z[:1]))
            ce = torch.stack([F.cross_entropy(o[i], y) for i in range(T)]).mean()
            return (1 - self.tet_lambda) * ce + self.tet_lambda * F.mse_loss(o, torch.ones_like(o))
        t = torch.arange(1, T + 1, dtype=z.dtype, device=z.device).view(T, 1, 1)
        mean = z / t
        ce = torch.stack([F.cross_entropy(mean[i], y) for i in range(T)])
        return (self.weights(T).to(z.device) * ce).sum()
