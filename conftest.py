"""Test-suite settings shared by tests/ and sim/."""

import os

# Verilator models compiled without C++ optimisation: every co-simulation test builds its own model
# and simulates a few dozen images, so compiling dominates (sim/runner.py OPT_ENV). A value set in
# the environment wins.
os.environ.setdefault("SPIKELOOM_VERILATOR_OPT", "-O0")


def pytest_runtest_setup(item):
    """Tests marked ``icarus`` skip with the printed reason when Icarus is absent (fail under CI=true)."""
    if item.get_closest_marker("icarus") is not None:
        from spikeloom.sim.testing import require_icarus

        require_icarus()
