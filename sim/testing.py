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
