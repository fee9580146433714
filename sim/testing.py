"""pytest helpers shared by tests/ and sim/ (imported by test code only, never by the library).

Icarus Verilog is a system tool that the README's two commands do not install (``.ci/run`` does).
A test that needs it carries the ``icarus`` marker (``conftest.py`` applies :func:`require_icarus`
before it runs), or calls :func:`require_icarus` itself before its Icarus part: without ``iverilog``
it is skipped with the reason printed in pytest's summary, except under ``CI=true``, where the
missing tool fails the test.
"""

import os

import pytest

from .runner import ICARUS_MISSING, icarus_available

__all__ = ["require_icarus"]


def require_icarus():
    """Skip the running test (fail it under ``CI=true``) when Icarus is not installed."""
    if icarus_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{ICARUS_MISSING} (.ci/run installs it); CI=true, where a skipped Icarus test is a failure",
                    pytrace=False)
    pytest.skip(f"{ICARUS_MISSING} (.ci/run installs it)")


def run_wrapper_bench(path, out, x, work, *, simulator, toplevel, bench, **job):
    """Run the cocotb ``bench`` (a module under ``spikeloom.sim``) on an export's wrapper ``toplevel``
    (``out/rtl/<toplevel>.v`` around the exported core) with images ``x``; ``path`` is the model file
    the bench's golden model reads, ``job`` its own settings. Returns the bench's results and the
    simulation log's text (the results file is written by the bench; a bench that fails before it
    leaves none, and the caller's ``results.json`` read fails loudly)."""
    import json

    import numpy as np

    from .runner import build

    work.mkdir()
    np.save(work / "inputs.npy", x)
    job = {"model": str(path.resolve()), "ports": str((out / "ports.json").resolve()),
           "inputs": str((work / "inputs.npy").resolve()), "results": str((work / "results.json").resolve()), **job}
    (work / "job.json").write_text(json.dumps(job))
    runner = build(out / "rtl" / "spikeloom_accel.v", work / "sim_build", simulator, toplevel=toplevel,
                   extra_sources=[out / "rtl" / f"{toplevel}.v"])
    try:
        runner.test(test_module=f"spikeloom.sim.{bench}", hdl_toplevel=toplevel, test_dir=work.resolve(),
                    extra_env={"SPIKELOOM_JOB": str((work / "job.json").resolve())},
                    results_xml=str((work / "results.xml").resolve()), log_file=(work / "sim.log").resolve())
    except SystemExit:
        pass
    log = (work / "sim.log").read_text() if (work / "sim.log").exists() else ""
    return json.loads((work / "results.json").read_text()), log
