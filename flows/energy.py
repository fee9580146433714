"""The energy step: energy per inference from the RTL's counters (and, identically, from the golden
model's), the savings from early exit and from sparsity, pJ/SOP, NeuroBench-style metrics, and a GPU
baseline (measured with NVML when a CUDA GPU is present, else estimated from a documented figure).
"""

import time

import numpy as np

from spikeloom.hw import perf
from spikeloom.model import golden
from spikeloom.model.power import EVENT_KINDS, energy, load_tech
from spikeloom.sim import records

# RTX 3090 Ti (the seed's GPU): 450 W board power at 40 TFLOP/s FP32 peak -> 11.25 pJ/FLOP. A peak
# figure: at the batch sizes of an inference service the GPU is far less efficient, so this
# estimate flatters the GPU.
GPU_PJ_PER_FLOP = 450.0 / 40e12 * 1e12
GPU_NAME = "RTX 3090 Ti (450 W, 40 TFLOP/s FP32 peak)"
NO_EXIT = 1 << 40


def dense_synapses(model):
    """Per layer: synaptic operations of one timestep with every input active and every weight nonzero."""
    shapes = {ly.name: ly.out_shape for ly in model.layers}
    return [golden.dense_synapses(ly, shapes.get(ly.shortcut)) for ly in model.layers]


def dense_counters(model, timesteps):
    """Counters of the same network with every synapse processed (no event-driven sparsity)."""
    T = np.asarray(timesteps)
    out = {}
    for i, (ly, ds) in enumerate(zip(model.layers, dense_synapses(model))):
        syn = ds * (np.ones_like(T) if i == 0 else T)
        out[ly.name] = {"input_events": (ly.in_features * (np.ones_like(T) if i == 0 else T)),
                        "synaptic_events": syn, "weight_reads": syn,
                        "membrane_reads": ly.out_features * T, "membrane_writes": ly.out_features * T,
                        "spikes": (ly.out_features * T) if ly.role != "output" else 0 * T}
    return out


def dense_step_synapses(model):
    """``{layer: (T_max, 1)}`` synaptic events of each timestep of the dense network (the analog
    layer's one-off work in timestep 1, as the golden model counts it)."""
    out = {}
    for i, (ly, ds) in enumerate(zip(model.layers, dense_synapses(model))):
        steps = np.full((model.t_max, 1), ds, np.int64)
        if i == 0:
            steps[1:] = 0
        out[ly.name] = steps
    return out


def cycles_model(model, n_pe, x, res, plan):
    """Cycles of every image of ``x`` from the cycle model (hw/perf.py), an int array."""
    return perf.batch_cycles(model, n_pe, x, res, plan)


def neurobench(model, res):
    """NeuroBench-style metrics of the adaptive run (means per inference)."""
    c = res.counters(adaptive=True)
    spiking = [ly for ly in model.layers if ly.role != "output"]
    acts = sum(ly.out_features * res.exit_t for ly in spiking)
    spikes = sum(c[ly.name]["spikes"] for ly in spiking)
    weights = sum(ly.weight.size for ly in model.layers)
    zeros = sum(int((ly.weight == 0).sum()) for ly in model.layers)
    m_bits = model.neuron.membrane_bits
    footprint = sum(ly.weight.size * ly.weight_bits + ly.bias.size * m_bits
                    + (0 if ly.threshold is None else ly.threshold.size * m_bits) for ly in model.layers) / 8
    return {"effective_macs": float(c[model.layers[0].name]["synaptic_events"].mean()),
            "effective_acs": float(sum(c[ly.name]["synaptic_events"] for ly in model.layers[1:]).mean()),
            "activation_sparsity": float(1 - (spikes / acts).mean()),
            "membrane_updates": float(sum(c[ly.name]["membrane_writes"] for ly in model.layers).mean()),
            "connection_sparsity": zeros / weights, "footprint_bytes": footprint,
            "synaptic_operations_dense": float(sum(ds * (1 if i == 0 else model.t_max)
                                                   for i, ds in enumerate(dense_synapses(model))))}


def gpu_baseline(model, x_float=None, n_runs=200, log=print):
    """Joules per inference of the same network run densely on a GPU.

    With a CUDA GPU and NVML (``pynvml``), the dense float network (T_max timesteps) runs ``n_runs``
    batches and the board's total-energy counter is read before and after ("nvml"). Otherwise the
    dense FLOPs are multiplied by a documented pJ/FLOP figure ("estimate").
    """
    flops = 2.0 * sum(ds * (1 if i == 0 else model.t_max) for i, ds in enumerate(dense_synapses(model)))
    try:
        import torch
        if torch.cuda.is_available() and x_float is not None and model.is_dense:  # NVML run: dense nets
            import pynvml
            return _nvml(model, x_float, n_runs, torch, pynvml, flops, log)
    except ImportError:
        pass
    return {"method": "estimate", "per_inference_nj": flops * GPU_PJ_PER_FLOP / 1e3, "flops": flops,
            "pj_per_flop": GPU_PJ_PER_FLOP, "device": GPU_NAME,
            "note": "no CUDA GPU with NVML here: dense FLOPs x the GPU's peak-efficiency pJ/FLOP (flatters the GPU)"}


def _nvml(model, x_float, n_runs, torch, pynvml, flops, log):
    """Measure with NVML's total-energy counter: the dense integer network as float matmuls on the GPU."""
    dev = torch.device("cuda")
    ws = [torch.tensor(ly.weight, dtype=torch.float32, device=dev) for ly in model.layers]
    bs = [torch.tensor(ly.bias, dtype=torch.float32, device=dev) for ly in model.layers]
    th = [None if ly.threshold is None else torch.tensor(ly.threshold, dtype=torch.float32, device=dev)
          for ly in model.layers]
    x = torch.tensor(golden.quantize_input(model, x_float), dtype=torch.float32, device=dev)

    def infer():
        cur0 = x @ ws[0].T + bs[0]
        u = [torch.zeros(len(x), ly.out_features, device=dev) for ly in model.layers]
        for _ in range(model.t_max):
            s = None
            for i in range(len(ws)):
                cur = cur0 if i == 0 else s @ ws[i].T + bs[i]
                u[i] = u[i] + cur
                if th[i] is not None:
                    s = (u[i] >= th[i]).float()
                    u[i] = u[i] - s * th[i]
        return u[-1]

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    infer()
    torch.cuda.synchronize()
    e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
    t0 = time.perf_counter()
    for _ in range(n_runs):
        infer()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    joules = (pynvml.nvmlDeviceGetTotalEnergyConsumption(h) - e0) / 1e3
    n = n_runs * len(x)
    return {"method": "nvml", "per_inference_nj": joules / n * 1e9, "flops": flops, "inferences": n,
            "seconds": dt, "fps": n / dt, "device": torch.cuda.get_device_name()}


def compute(qmodel, ports, x_q, rtl_images=None, tech=None, x_float=None, log=print):
    """The ``energy`` and ``neurobench`` report sections.

    ``ports``: the generated hardware's :class:`~spikeloom.sim.ports.Ports`. ``rtl_images`` are
    the co-simulation's per-image results (payload fields); without them the golden model's counts
    and the exact cycle model give the same numbers.
    """
    tech = tech or load_tech()
    n_pe = ports.n_pe
    sparse = ports.sparse_layers
    names = [ly.name for ly in qmodel.layers]
    plan = ports.plan(qmodel)
    res = golden.run(qmodel, x_q, trace=True, sparse=sparse)
    g_recs = records.from_golden(res, cycles_model(qmodel, n_pe, x_q, res, plan))
    e_golden = records_energy(qmodel, ports, g_recs, names, tech)
    fixed = golden.run(qmodel, x_q, exit_threshold=NO_EXIT, trace=True, sparse=sparse)
    e_fixed = energy(qmodel, ports, fixed.counters(adaptive=False), fixed.exit_t,
                     cycles_model(qmodel, n_pe, x_q, fixed, plan), tech)
    T = np.full(len(x_q), qmodel.t_max)
    dense_cycles = golden.work_bound(qmodel, dense_step_synapses(qmodel), T, n_pe)
    e_dense = energy(qmodel, ports, dense_counters(qmodel, T), T, dense_cycles, tech)
    source = "golden model counts + cycle model"
    e_main, diff = e_golden, None
    if rtl_images is not None:
        e_rtl = records_energy(qmodel, ports, [records.InferenceRecord.from_fields(im) for im in rtl_images], names, tech)
        dyn = [k for k in EVENT_KINDS if k != "leakage"]
        diff = float(max(np.abs(e_rtl["by_kind"][k] - e_golden["by_kind"][k]).max() for k in dyn))
        e_main, source = e_rtl, "RTL counters from co-simulation"
    syn = res.totals(adaptive=True)["synaptic_events"]
    per = e_main["total"] / 1e3
    gpu = gpu_baseline(qmodel, x_float, log=log)
    sec = {
        "per_inference_nj": float(per.mean()),
        "per_inference_nj_distribution": {q: float(np.percentile(per, p)) for q, p in
                                          (("min", 0), ("p10", 10), ("median", 50), ("p90", 90), ("max", 100))},
        "fixed_t_per_inference_nj": float(e_fixed["total"].mean() / 1e3),
        "dense_per_inference_nj": float(e_dense["total"].mean() / 1e3),
        "saving_early_exit": float(1 - e_main["total"].mean() / e_fixed["total"].mean()),
        "saving_sparsity": float(1 - e_fixed["total"].mean() / e_dense["total"].mean()),
        "pj_per_sop": float(e_main["total"].sum() / syn.sum()),
        "breakdown": {k: float(v.mean() / 1e3) for k, v in e_main["by_kind"].items()},
        "by_layer": {k: float(v.mean() / 1e3) for k, v in e_main["by_layer"].items()},
        "fixed_t_breakdown": {k: float(v.mean() / 1e3) for k, v in e_fixed["by_kind"].items()},
        "source": source, "rtl_vs_golden_max_abs_diff_pj": diff,
        # (as per_inference_nj: the mean of the per-image nJ, so that the two are equal, not a rounding apart,
        # when the RTL's counters are the golden model's)
        "golden_per_inference_nj": float((e_golden["total"] / 1e3).mean()),
        "gpu_baseline_nj": gpu["per_inference_nj"], "gpu_method": gpu["method"], "gpu": gpu,
        "accelerator_vs_gpu": float(per.mean() / gpu["per_inference_nj"]),
        "tech": {"name": tech.name, "path": tech.path, "clock_mhz": tech.clock_mhz},
        "anchors_pj_per_sop": {"ODIN (28 nm)": 12.7, "ReckOn (28 nm)": 5.3},
        "n_images": int(len(x_q)),
    }
    return sec, neurobench(qmodel, res)


def records_energy(qmodel, ports, recs, names, tech):
    """The energy model on per-inference records (golden or RTL: the same record type)."""
    return energy(qmodel, ports, records.counter_arrays(recs, names), np.array([r.timesteps for r in recs]),
                  np.array([r.cycles for r in recs]), tech)


def plot(sec, path, title):
    """Energy per inference by event kind, early exit beside every timestep, each bar with its total;
    the dense (no sparsity) energy as a reference line and the GPU baseline named (a line when it is
    on the same scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in EVENT_KINDS if sec["fixed_t_breakdown"].get(k, 0) > 0 or sec["breakdown"].get(k, 0) > 0]
    fig, ax = plt.subplots(figsize=(9.5, 4))
    y = np.arange(2)
    left = np.zeros(2)
    # distinct hues first (tab10), then the same hues hatched: no two neighbours in paired shades
    base = plt.get_cmap("tab10").colors
    for i, k in enumerate(kinds):
        vals = np.array([sec["breakdown"].get(k, 0), sec["fixed_t_breakdown"].get(k, 0)])
        ax.barh(y, vals, left=left, color=base[i % 10], hatch=None if i < 10 else "//", edgecolor="white",
                label=k)
        left += vals
    totals = [sec["per_inference_nj"], sec["fixed_t_per_inference_nj"]]
    for yi, t in zip(y, totals):
        ax.text(t, yi, f" {t:.1f} nJ", va="center", fontsize=9)
    dense = sec["dense_per_inference_nj"]
    ax.axvline(dense, color="0.3", ls="--", lw=1, label=f"dense, every timestep: {dense:.1f} nJ")
    gpu = sec["gpu_baseline_nj"]
    name = sec.get("gpu", {}).get("device", "GPU")
    how = "measured" if sec.get("gpu_method") == "nvml" else "estimate"
    if gpu <= 1.5 * max(dense, *totals):
        ax.axvline(gpu, color="tab:red", ls=":", lw=1.2, label=f"GPU ({how}): {gpu:.1f} nJ")
        right = 1.15 * max(gpu, dense, *totals)
    else:
        right = 1.2 * max(dense, *totals)
    ax.set_xlim(0, right)
    ax.set_yticks(y, ["early exit", "every timestep"])
    ax.set_xlabel("energy per inference (nJ)")
    ax.set_title(f"{title}\nGPU baseline ({how}): {gpu:.1f} nJ, {gpu / max(totals[0], 1e-12):.0f}x the early-exit "
                 f"accelerator\n({name})", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
