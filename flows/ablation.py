"""``make ablation``: the ATSNN loss ablation (in the spirit of the seed's Table 5) on the default.

For each loss schedule (ATSNN's time-dependent loss with uniform = DT-SNN, early- and late-weighted
and learnable weights; the CE-on-final-output and TET baselines) it trains, quantizes and calibrates
the digits MLP, and reports the integer golden model's accuracy at every timestep, and accuracy,
mean timesteps and relative synaptic work under the calibrated early exit. Writes
``build/ablation.json``.
"""

import json
import sys
from pathlib import Path

from spikeloom.model.losses import SCHEDULES
from spikeloom.model.train import TrainConfig

from . import steps
from .common import Parser, parse_and_run, table


def run(build=Path("build"), losses=SCHEDULES, log=print):
    rows = []
    for loss in losses:
        ctx = steps.Context(build=build / "ablation" / loss, train=TrainConfig(loss=loss))
        quiet = lambda *_: None  # noqa: E731
        fm = steps.step_train(ctx, log=quiet)
        im, qm = steps.step_quantize(ctx, fm, log=quiet)
        steps.step_evaluate(ctx, im, qm, log=quiet)
        m = ctx.report["model"]
        rows.append({"loss": loss, "accuracy_per_t": m["accuracy_per_t"], "accuracy_fixed_t": m["accuracy_fixed_t"],
                     "accuracy_adaptive": m["accuracy_adaptive"], "mean_timesteps": m["mean_timesteps"],
                     "relative_complexity": m["relative_complexity"], "exit_threshold": m["exit_threshold"]})
        log(f"[ablation] {loss}: adaptive {100 * m['accuracy_adaptive']:.2f}% at {m['mean_timesteps']:.2f} timesteps")
    T = len(rows[0]["accuracy_per_t"])
    text = table([[r["loss"], *(f"{100 * a:.2f}" for a in r["accuracy_per_t"]), f"{100 * r['accuracy_adaptive']:.2f}",
                   f"{r['mean_timesteps']:.2f}", f"{r['relative_complexity']:.2f}"] for r in rows],
                 ["loss", *(f"T{t + 1} (%)" for t in range(T)), "adaptive (%)", "mean T", "complexity"])
    log(text)
    build.mkdir(parents=True, exist_ok=True)
    (build / "ablation.json").write_text(json.dumps({"dataset": "digits", "rows": rows}, indent=1) + "\n")
    log(f"wrote {build / 'ablation.json'}")
    return rows


def main(argv=None):
    p = Parser(prog="spikeloom-ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=Path, default=Path("build"), help="output folder")
    p.add_argument("--losses", default=",".join(SCHEDULES), help="comma-separated loss schedules to train")
    return parse_and_run(p, argv, lambda a: run(a.build, tuple(a.losses.split(","))))


if __name__ == "__main__":
    sys.exit(main())
