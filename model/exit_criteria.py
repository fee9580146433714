"""Early exit: confidence criteria on the accumulated output and threshold calibration.

After timestep ``t`` an inference exits when ``confidence(z_t) >= theta`` (or at ``t_max``), and
predicts ``argmax z_t``. Criteria:

* ``margin``: top-1 minus top-2 of ``z_t`` -- free in hardware (no exp, no log); in the integer
  model it is computed on the integer ``z_t`` and ``theta`` is an integer.
* ``max_softmax``: ``max softmax(z_t)`` (SEENN).
* ``entropy``: ``1 - H(softmax(z_t)) / ln K`` (DT-SNN).
"""

import numpy as np

from .config import EXIT_CRITERIA, check_choice
from .golden import exit_steps, first_argmax, top2_margin


def confidence(z, criterion="margin"):
    """Confidence of each row of ``z`` (..., K) under ``criterion``."""
    check_choice("exit", "criterion", criterion, EXIT_CRITERIA)
    z = np.asarray(z)
    if criterion == "margin":
        return top2_margin(z)
    zf = z.astype(np.float64)
    p = np.exp(zf - zf.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    if criterion == "max_softmax":
        return p.max(axis=-1)
    h = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=-1)
    return 1.0 - h / np.log(z.shape[-1])


def evaluate(z, y, theta, criterion="margin"):
    """Accuracy, mean timesteps and exit steps of exiting at ``theta`` on accumulated outputs z (T,B,K)."""
    conf = confidence(z, criterion)
    steps = exit_steps(conf, theta, z.shape[0])
    pred = first_argmax(z[steps - 1, np.arange(z.shape[1])])
    return float((pred == y).mean()), float(steps.mean()), steps


def sweep(z, y, criterion="margin", n_max=200):
    """(theta, accuracy, mean timesteps) for candidate thresholds, ascending in theta.

    Candidates are the distinct confidence values seen (thinned to ``n_max``), plus one above the
    largest (which never exits early).
    """
    conf = confidence(z, criterion)
    cands = np.unique(conf)
    if len(cands) > n_max:
        cands = np.unique(np.quantile(cands, np.linspace(0, 1, n_max), method="nearest"))
    top = cands.max() + 1 if criterion == "margin" else np.nextafter(cands.max(), np.inf)
    cands = np.append(cands, top)
    rows = []
    for th in cands:
        acc, tm, _ = evaluate(z, y, th, criterion)
        rows.append((th.item() if hasattr(th, "item") else th, acc, tm))
    return rows


def calibrate(z, y, target_drop=0.0, criterion="margin"):
    """Smallest threshold whose accuracy is within ``target_drop`` of running all timesteps.

    Mean timesteps never decrease as theta grows, so the smallest feasible theta gives the fewest
    timesteps. ``z`` are validation-split accumulated outputs (T, B, K), ``y`` their labels.
    """
    fixed = float((first_argmax(z[-1]) == y).mean())
    for th, acc, _ in sweep(z, y, criterion, n_max=10_000):
        if acc >= fixed - target_drop - 1e-12:
            return th
    return sweep(z, y, criterion)[-1][0]
