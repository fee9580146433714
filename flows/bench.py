"""``make bench``: cycles per inference of the generated accelerator against N and against spike
count, each beside its bound, measured by Verilator co-simulation of the default model; and the
speed of verification itself (``verification``): for the digits MLP and the CIFAR-size ``cifar-random``,
golden-model images/s, cycle-model cycles/s, co-simulation cycles/s and images/s, the Verilator
build's seconds and the generated Verilog's size.

Writes ``build/bench.json``, ``build/bench_cycles.png`` and ``build/bench_verification.png``. Every
figure is from one run.
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


def run(build=Path("build"), pes=(1, 2, 4, 8, 16), n_images=200, simulator="verilator", log=print, verify=True,
        cifar_images=4, profile=False):
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
        rows[-1]["verilog_bytes"] = (Path(gen) / "spikeloom_accel.v").stat().st_size
    report = {"model": str(ctx.model_path), "n_images": int(len(x_q)), "simulator": simulator,
              "mean_timesteps": float(res.exit_t.mean()), "sweep": rows,
              "per_image": {"spikes": spikes.tolist(), "synaptic_events": syn.tolist(),
                            "timesteps": res.exit_t.tolist(),
                            **{f"n{n}": v for n, v in per_image.items()}}}
    if verify:
        report["verification"] = verification(build, verification_nets(qm, x_q, cifar_images), simulator, log)
    if profile:
        report["cosim_profile"] = cosim_profile(build, qm, golden.quantize_input(qm, ctx.split().test.x), simulator,
                                                log=log)
    build.mkdir(parents=True, exist_ok=True)
    (build / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, build / "bench_cycles.png")
    if verify:
        plot_verification(report, build / "bench_verification.png")
    log(table([[r["n_pe"], f"{r['cycles_mean']:.1f}", f"{r['cycles_bound_mean']:.1f}",
                       f"{r['cycles_to_bound']:.3f}", f"{r['cycles_to_bound_max']:.3f}",
                       f"{r['sim_cycles_per_s'] / 1e3:.0f}k"] for r in rows],
                     ["N", "cycles/inference", "bound", "cycles/bound", "worst image", "sim cycles/s"]))
    log(f"wrote {build / 'bench.json'} and {build / 'bench_cycles.png'}")
    return report


#: PEs of the verification rows (the default accelerator).
VERIFY_PES = 8


def verification_nets(qm, x_q, cifar_images):
    """The networks of the ``verification`` section: ``(name, model, images, images whose cycles are
    compared with the cycle model)``: the digits MLP on its test images (all), and ``cifar-random`` on
    ``cifar_images`` random-valued images (the first; 12.5M cycles each)."""
    from spikeloom.model.randnet import named_model, random_inputs

    cifar = named_model("cifar-random")
    return [("digits-mlp", qm, x_q, len(x_q)), ("cifar-random", cifar, random_inputs(cifar, cifar_images, seed=0), 1)]


def verification(build, nets, simulator, log=print):
    """The ``verification`` section: one row per network of ``nets`` (:func:`verification_nets`),
    each timed in this run:

    - ``golden_images_per_s``: :func:`golden.run` of every image, all T_max timesteps, with the trace;
    - ``cycle_model_cycles_per_s``: :func:`spikeloom.hw.perf.batch_cycles`, modelled cycles per second;
    - ``generate_s``, ``verilog_bytes``: the generator and the Verilog it wrote (N = 8);
    - ``build_s``: the Verilator build of the co-simulation harness around it;
    - ``cosim_cycles_per_s``, ``cosim_images_per_s``: the co-simulation with random idle cycles on the
      input and back-pressure on the results, every result field compared (0 mismatches, else an error);
    - ``cycles_equal_cycle_model``: how many images a second co-simulation, without input idle cycles,
      ran: their RTL cycle counts must equal the cycle model's.
    """
    from spikeloom.hw import perf
    from spikeloom.hw.accel import generate
    from spikeloom.hw.plan import Plan
    from spikeloom.model import modelfile
    from spikeloom.sim.runner import cosim

    rows = []
    for name, model, x, n_exact in nets:
        folder = Path(build) / "bench_verification" / name
        folder.mkdir(parents=True, exist_ok=True)
        path = modelfile.save(model, folder / "model.slm")
        plan = Plan(model, VERIFY_PES)
        t0 = time.perf_counter()
        res = golden.run(model, x, sparse=plan.sparse_layers, trace=True)
        golden_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cyc = perf.batch_cycles(model, VERIFY_PES, x, res, plan)
        model_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        gen = folder / f"rtl_n{VERIFY_PES}"
        generate(model, VERIFY_PES, gen)
        generate_s = time.perf_counter() - t0
        marks = {}
        r = cosim(path, gen, x, folder / "cosim", simulator=simulator,
                  phase=lambda ph, _t: marks.setdefault(ph, time.perf_counter()))
        build_s = marks["cosim"] - marks["build"]
        exact = cosim(path, gen, x[:n_exact], folder / "cosim", simulator=simulator, idle=0.0)  # the same build
        bad = r["mismatched_images"] + exact["mismatched_images"]
        if bad:
            raise SpikeloomError(f"{name}: {bad} mismatching images; see {folder}")
        equal = [i["cycles"] for i in exact["images"]] == cyc[:n_exact].tolist()
        if not equal:
            raise SpikeloomError(f"{name}: the RTL's cycles {[i['cycles'] for i in exact['images']][:4]} differ from the "
                                 f"cycle model's {cyc[:n_exact].tolist()[:4]}")
        rows.append({"net": name, "n_pe": VERIFY_PES, "weights": int(sum(ly.weight.size for ly in model.layers)),
                     "images": int(len(x)), "t_max": int(model.t_max),
                     "golden_images_per_s": len(x) / golden_s,
                     "cycle_model_cycles_per_s": float(cyc.sum()) / model_s, "cycles_mean": float(cyc.mean()),
                     "generate_s": generate_s, "verilog_bytes": (gen / "spikeloom_accel.v").stat().st_size,
                     "build_s": build_s, "cosim_cycles_per_s": r["sim_cycles_per_s"],
                     "cosim_images_per_s": r["n_images"] / r["wall_s"], "cosim_wall_s": r["wall_s"],
                     "sim_cycles": r["sim_cycles"], "mismatches": 0, "cycles_equal_cycle_model": n_exact})
        log(f"[verification] {name}: done")
    log(table([[r["net"], r["weights"], r["images"], f"{r['golden_images_per_s']:.1f}",
                f"{r['cycle_model_cycles_per_s'] / 1e6:.2f}M", f"{r['generate_s']:.1f}",
                f"{r['verilog_bytes'] / 2**20:.1f}", f"{r['build_s']:.1f}", f"{r['cosim_cycles_per_s'] / 1e6:.2f}M",
                f"{r['cosim_images_per_s']:.2f}"] for r in rows],
              ["network (N = 8)", "weights", "images", "golden images/s", "cycle model cycles/s", "generate (s)",
               "Verilog (MiB)", "build (s)", "co-sim cycles/s", "co-sim images/s"]))
    return rows


#: The co-simulation profile's variants: (name, bench, build options, C++ optimisation or None for
#: Verilator's default). The first is how every image was co-simulated before the harness.
PROFILE_VARIANTS = (
    ("Python drives every value and handshake (cocotb clock), core public", "tb_faults", {"public": True}, None),
    ("harness, core public through VPI (cocotb's default)", "tb_accel", {"public": True}, None),
    ("harness, memories initialised word by word in the C++", "tb_accel", {"readmem": False}, None),
    ("harness, C++ at Verilator's own -Os", "tb_accel", {}, "-Os"),
    ("harness, C++ at -O0 (make test's builds)", "tb_accel", {}, "-O0"),
    ("harness (the default: C++ at -O2)", "tb_accel", {}, None),
)


def cosim_profile(build, qm, x_q, simulator="verilator", pes=VERIFY_PES, log=print):
    """Where a co-simulation's time goes: the digits MLP on ``pes`` PEs and the images ``x_q``
    under each of :data:`PROFILE_VARIANTS`, each built in its own folder: build seconds, simulated
    cycles/s, images/s, and the seconds the simulator ran free against the bench's own. Every
    variant must give 0 mismatches."""
    import os

    from spikeloom.hw.accel import generate
    from spikeloom.model import modelfile
    from spikeloom.sim.runner import OPT_ENV, cosim

    folder = Path(build) / "bench_profile"
    folder.mkdir(parents=True, exist_ok=True)
    path = modelfile.save(qm, folder / "model.slm")
    gen = folder / f"rtl_n{pes}"
    generate(qm, pes, gen)
    rows, saved = [], os.environ.get(OPT_ENV)
    try:
        for k, (name, bench, opts, opt) in enumerate(PROFILE_VARIANTS):
            if opt is None:
                os.environ.pop(OPT_ENV, None)
            else:
                os.environ[OPT_ENV] = opt
            marks = {}
            r = cosim(path, gen, x_q, folder / f"variant{k}", simulator=simulator, bench=bench, build_options=opts,
                      options={"resets": {}} if bench == "tb_faults" else None,
                      phase=lambda ph, _t: marks.setdefault(ph, time.perf_counter()))
            if r["mismatched_images"]:
                raise SpikeloomError(f"profile variant {name!r}: {r['mismatched_images']} mismatching images")
            rows.append({"variant": name, "build_s": marks["cosim"] - marks["build"], "wall_s": r["wall_s"],
                         "sim_cycles": r["sim_cycles"], "sim_cycles_per_s": r["sim_cycles"] / r["wall_s"],
                         "images_per_s": len(x_q) / r["wall_s"], "free_running_s": r.get("free_running_s")})
            log(f"[profile] {name}: {rows[-1]['sim_cycles_per_s'] / 1e6:.2f}M cycles/s")
    finally:
        if saved is None:
            os.environ.pop(OPT_ENV, None)
        else:
            os.environ[OPT_ENV] = saved
    base = rows[0]["sim_cycles_per_s"]
    log(table([[r["variant"], f"{r['build_s']:.1f}", f"{r['sim_cycles_per_s'] / 1e6:.3f}M",
                f"{r['sim_cycles_per_s'] / base:.1f}x", f"{r['images_per_s']:.0f}",
                "-" if r["free_running_s"] is None else f"{100 * r['free_running_s'] / r['wall_s']:.0f}%"]
               for r in rows],
              ["variant (digits MLP, N = %d, %d images)" % (pes, len(x_q)), "build (s)", "sim cycles/s",
               "vs Python-driven", "images/s", "simulator free-running"]))
    return rows


def plot_verification(report, path):
    """Simulated cycles/s against design size (the generated Verilog's bytes): the N sweep of the
    digits MLP (``make bench``'s own co-simulations) and the verification rows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    sw = [r for r in report["sweep"] if "verilog_bytes" in r]
    ax.plot([r["verilog_bytes"] / 2**20 for r in sw], [r["sim_cycles_per_s"] for r in sw], "o-",
            label="digits MLP, N = " + ", ".join(str(r["n_pe"]) for r in sw))
    for r in sw:
        ax.annotate(f"N={r['n_pe']}", (r["verilog_bytes"] / 2**20, r["sim_cycles_per_s"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    for r in report["verification"]:
        ax.plot(r["verilog_bytes"] / 2**20, r["cosim_cycles_per_s"], "s", ms=8, label=f"{r['net']} (N = {r['n_pe']})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("generated Verilog (MiB)")
    ax.set_ylabel("simulated cycles per second")
    ax.set_title(f"co-simulation speed against design size ({report['simulator']}, random idle + back-pressure)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    p.add_argument("--cifar-images", type=int, default=4,
                   help="random-valued images of the cifar-random verification row (about 12.5M cycles each)")
    p.add_argument("--no-verification", action="store_true",
                   help="skip the verification section (the digits MLP and cifar-random timed)")
    p.add_argument("--profile-cosim", action="store_true",
                   help="also profile the co-simulation (six builds of the digits MLP, N = 8, every test image: "
                   "report key cosim_profile)")

    def job(a):
        pes = tuple(int_option("--pes", v, *PES_RANGE) for v in a.pes.split(","))
        cifar = int_option("--cifar-images", a.cifar_images, 1, 1000)
        run(a.build, pes, a.images, a.sim, verify=not a.no_verification, cifar_images=cifar, profile=a.profile_cosim)
    return parse_and_run(p, argv, job)


if __name__ == "__main__":
    sys.exit(main())
