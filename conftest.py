"""Test-suite settings shared by tests/ and sim/."""

import os

# Verilator models compiled without C++ optimisation: every co-simulation test builds its own model
# and simulates a few dozen images, so compiling dominates (sim/runner.py OPT_ENV). A value set in
# the environment wins.
os.environ.setdefault("SPIKELOOM_VERILATOR_OPT", "-O0")
