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


def _candidates(conf, criterion, n_max, smallest=False):
    """Thresholds worth trying, ascending: the distinct confidences seen (thinned to ``n_max``),
    plus one above the largest (which never exits early). ``smallest``: instead, the smallest
    threshold of each stretch that behaves alike on ``conf`` (the lowest confidence, then just
    above each one: ``c + 1`` for the integer margin), so that none smaller behaves the same."""
    cands = np.unique(conf)
    if len(cands) > n_max:
        cands = np.unique(np.quantile(cands, np.linspace(0, 1, n_max), method="nearest"))
    above = cands + 1 if criterion == "margin" else np.nextafter(cands, np.inf)
    if smallest:
        return np.concatenate([cands[:1], above])
    return np.append(cands, above[-1])


def sweep(z, y, criterion="margin", n_max=200):
    """(theta, accuracy, mean timesteps) for candidate thresholds, ascending in theta.

    Candidates are the distinct confidence values seen (thinned to ``n_max``), plus one above the
    largest (which never exits early).
    """
    rows = []
    for th in _candidates(confidence(z, criterion), criterion, n_max):
        acc, tm, _ = evaluate(z, y, th, criterion)
        rows.append((th.item() if hasattr(th, "item") else th, acc, tm))
    return rows


def calibrate(z, y=None, target_drop=0.0, criterion="margin"):
    """Smallest threshold under which exiting early changes the decision of at most a ``target_drop``
    share of the images (0: every early exit predicts what running all timesteps predicts).

    ``z`` are validation-split accumulated outputs (T, B, K). The rule needs no labels (``y`` is
    accepted for callers that pass them): a changed decision costs at most one correct image, so
    the validation accuracy drop is at most ``target_drop`` too. Asking only for the accuracy
    (within ``target_drop`` of running all timesteps) lets images that an early exit gets right by
    chance pay for images it loses; on a 360-image validation split that picked thresholds that
    lost up to 2.5 points on the test split (BENCHMARKS.md, "Exit calibration"). Mean timesteps
    never decrease as theta grows, so the smallest feasible theta gives the fewest timesteps;
    the threshold returned is the smallest of its stretch (one above the largest margin of a
    decision it must not change), not the next confidence seen: the stretch between behaves
    alike on the validation split, and its lower end exits most.
    """
    final = first_argmax(z[-1])  # the decisions of running all timesteps, as the labels to keep
    cands = _candidates(confidence(z, criterion), criterion, 10_000, smallest=True)
    for th in cands:
        if 1.0 - evaluate(z, final, th, criterion)[0] <= target_drop + 1e-12:
            return th.item()
    return cands[-1].item()  # not reached: the last candidate never exits early
