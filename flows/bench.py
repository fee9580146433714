"""``make bench``: cycles per inference of the generated accelerator against N and against spike
count, each beside its bound, measured by Verilator co-simulation of the default model.

Writes ``build/bench.json`` and ``build/bench_cycles.png``. Every figure is from one run.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from spikeloom.model import golden
from spikeloom.model.errors import SpikeloomError

from . import steps
from spikeloom.hw.plan import PES_RANGE

from .common import Parser, int_option, parse_and_run, table


def run(build=Path("build"), pes=(1, 2, 4, 8, 16), n_images=200, simulator="verilator", log=print):
    ctx = steps.Context(build=build)
    fm = steps.step_train(ctx, log=log)
    _, qm = steps.step_quantize(ctx, fm, log=log)
    x_q = golden.quantize_input(qm, ctx.split().test.x)[:n_images]
    res = golden.run(qm, x_q, sparse=())
    spikes = sum(c["spikes"] for c in res.counters().values())
    syn = res.totals()["synaptic_events"]
    rows, per_image = [], {}
    for n in pes:
        t0 = time.perf_counter()
        gen = steps.step_generate(ctx, qm, n, log=log)
        c = steps.step_cosim(ctx, qm, gen, simulator, n_images, log=log)
        if c["mismatches"]:
            raise SpikeloomError(f"N={n}: {c['mismatches']} mismatching images; benchmark figures would be wrong")
        imgs = json.loads((Path(gen) / f"cosim_{simulator}" / "results.json").read_text())["images"]
        per_image[n] = {"cycles": [i["cycles"] for i in imgs], "bound": [i["cycle_bound"] for i in imgs]}
        rows.append({"n_pe": n, "cycles_mean": c["cycles_mean"], "cycles_bound_mean": c["cycles_bound_mean"],
                     "cycles_to_bound": c["cycles_to_bound"], "cycles_to_bound_max": c["cycles_to_bound_max"],
                     "sim_cycles_per_s": c["sim_cycles_per_s"], "wall_s": time.perf_counter() - t0})
    report = {"model": str(ctx.model_path), "n_images": int(len(x_q)), "simulator": simulator,
              "mean_timesteps": float(res.exit_t.mean()), "sweep": rows,
              "per_image": {"spikes": spikes.tolist(), "synaptic_events": syn.tolist(),
                            "timesteps": res.exit_t.tolist(),
                            **{f"n{n}": v for n, v in per_image.items()}}}
    build.mkdir(parents=True, exist_ok=True)
    (build / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, build / "bench_cycles.png")
    log(table([[r["n_pe"], f"{r['cycles_mean']:.1f}", f"{r['cycles_bound_mean']:.1f}",
                       f"{r['cycles_to_bound']:.3f}", f"{r['cycles_to_bound_max']:.3f}",
                       f"{r['sim_cycles_per_s'] / 1e3:.0f}k"] for r in rows],
                     ["N", "cycles/inference", "bound", "cycles/bound", "worst image", "sim cycles/s"]))
    log(f"wrote {build / 'bench.json'} and {build / 'bench_cycles.png'}")
    return report


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    ns = [r["n_pe"] for r in report["sweep"]]
    a.plot(ns, [r["cycles_mean"] for r in report["sweep"]], "o-", label="measured (RTL)")
    a.plot(ns, [r["cycles_bound_mean"] for r in report["sweep"]], "k--", label="bound")
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("processing elements N")
    a.set_ylabel("cycles per inference (mean)")
    a.set_title(f"cycles vs N ({report['n_images']} digits test images)")
    a.legend()
    a.grid(alpha=0.3, which="both")
    pi = report["per_image"]
    n = max(ns) if 8 not in ns else 8
    sp = np.array(pi["spikes"])
    b.scatter(sp, pi[f"n{n}"]["cycles"], s=8, label=f"measured, N={n}")
    b.scatter(sp, pi[f"n{n}"]["bound"], s=8, marker="x", c="k", label="bound")
    b.set_xlabel("spikes per inference")
    b.set_ylabel("cycles per inference")
    b.set_title("cycles vs spike count")
    b.legend()
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = Parser(prog="spikeloom-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=Path, default=Path("build"), help="output folder")
    p.add_argument("--pes", default="1,2,4,8,16", help="comma-separated PE counts N of the sweep")
    p.add_argument("--images", type=int, default=200, help="test images per point")
    p.add_argument("--sim", default="verilator", help="co-simulator: verilator or icarus")

    def job(a):
        pes = tuple(int_option("--pes", v, *PES_RANGE) for v in a.pes.split(","))
        run(a.build, pes, a.images, a.sim)
    return parse_and_run(p, argv, job)


if __name__ == "__main__":
    sys.exit(main())
