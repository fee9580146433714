"""The stream-protocol properties of ``hw/formal.py`` under SymbiYosys on one small network, and
the deliberate faults (``StreamCheck(mutation=...)``) each of which a proof must reject.

``make formal`` (``flows/formal.py``) runs the full set: larger networks, 1-3 PEs, conv, deeper.
"""

import re

import pytest

from spikeloom.flows.formal import run_sby
from spikeloom.hw.formal import COVERS, MUTATIONS, PROPERTIES, StreamCheck, rtlil_text
from spikeloom.model.randnet import random_model

# the smallest network the accelerator takes (analog layer -> hidden -> output), one timestep:
# a result is valid about 26 cycles after reset
DEPTH = 32


@pytest.fixture(scope="module")
def model():
    return random_model((2, 2, 2), t_max=1, seed=0)


def test_every_property_and_cover_is_a_named_check(model):
    text = rtlil_text(StreamCheck(model, 1))
    names = re.findall(r"^  cell \$check \\(\w+)$", text, re.M)
    assert sorted(names) == sorted(("reset_at_start",) + PROPERTIES + COVERS)


def test_bad_options_are_refused(model):
    with pytest.raises(ValueError, match="mutation"):
        StreamCheck(model, 1, mutation="bogus")
    with pytest.raises(ValueError, match="properties"):
        StreamCheck(model, 1, properties=("held", "nonsense"))
    with pytest.raises(ValueError, match="properties"):
        StreamCheck(model, 1, properties=())


def test_properties_hold_to_depth(model, tmp_path):
    r = run_sby(StreamCheck(model, 1), tmp_path, "bmc", DEPTH)
    assert (r.status, r.failed) == ("PASS", ()), r.log


@pytest.mark.slow
def test_a_result_is_reached_and_held_within_depth(model, tmp_path):
    # the bmc run above sees a whole inference (the handshake mutation, which needs a result held
    # under back-pressure to fail, shows it too, in `make test`)
    r = run_sby(StreamCheck(model, 1), tmp_path, "cover", DEPTH)
    assert {"result_taken", "result_waits"} <= set(r.covered), r.log
    assert max(r.covered.values()) < DEPTH


def test_held_and_reset_proved_by_induction(model, tmp_path):
    r = run_sby(StreamCheck(model, 1, properties=("held", "reset_clears")), tmp_path, "prove", 4)
    assert r.status == "PASS", r.log


# each fault breaks the property it names; the proof must find it within DEPTH cycles
EXPECTED = {"handshake": "held", "drop": "input_closed", "payload": "stable", "early": "reset_clears"}
# `make test` keeps under its time budget with two of them (one before the first result, one at it)
FAST = ("handshake", "early")


@pytest.mark.parametrize("mutation", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow) for m in MUTATIONS])
def test_a_broken_wrapper_fails_the_proof(model, mutation, tmp_path):
    r = run_sby(StreamCheck(model, 1, mutation=mutation), tmp_path, "bmc", DEPTH)
    assert r.status == "FAIL", r.log
    assert EXPECTED[mutation] in r.failed, r.log
