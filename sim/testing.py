"""pytest helpers shared by tests/ and sim/ (imported by test code only, never by the library).

Icarus Verilog is a system tool that the README's two commands do not install (``.ci/run`` does).
A test that needs it carries the ``icarus`` marker (``conftest.py`` applies :func:`require_icarus`
before it runs), or calls :func:`require_icarus` itself before its Icarus part: without ``iverilog``
it is skipped with the reason printed in pytest's summary, except under ``CI=true``, where the
missing tool fails the test.
"""

import os
import shutil

import pytest

ICARUS_MISSING = "Icarus Verilog (iverilog, vvp) is not installed: apt-get install iverilog (.ci/run installs it)"


def icarus_available():
    """True when both of Icarus's programs are on PATH."""
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def require_icarus():
    """Skip the running test (fail it under ``CI=true``) when Icarus is not installed."""
    if icarus_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{ICARUS_MISSING}; CI=true, where a skipped Icarus test is a failure", pytrace=False)
    pytest.skip(ICARUS_MISSING)
