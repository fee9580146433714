"""The stream-protocol properties of ``hw/formal.py`` under SymbiYosys on one small network, and
the deliberate faults (``StreamCheck(mutation=...)``) each of which the proof must reject.

``make formal`` (``flows/formal.py``) runs the full set: larger networks, 1-3 PEs, conv, pooling,
a residual layer, both storages, with the covers to two complete inferences.
"""

import re

import pytest

from spikeloom.flows.formal import cases, run_sby
from spikeloom.hw.formal import COVERS, INVARIANTS, MUTATIONS, PROPERTIES, StreamCheck, rtlil_text
from spikeloom.model.randnet import random_model

# the smallest network the accelerator takes (analog layer -> hidden -> output), one timestep:
# a result is valid about 26 cycles after reset
DEPTH = 32
# the induction depth of `make formal`
K = 2


@pytest.fixture(scope="module")
def model():
    return random_model((2, 2, 2), t_max=1, seed=0)


def test_every_property_invariant_and_cover_is_a_named_check(model):
    text = rtlil_text(StreamCheck(model, 1))
    names = re.findall(r"^  cell \$check \\(\w+)$", text, re.M)
    assert sorted(names) == sorted(("reset_at_start",) + PROPERTIES + INVARIANTS + COVERS)


def test_bad_options_are_refused(model):
    with pytest.raises(ValueError, match="mutation"):
        StreamCheck(model, 1, mutation="bogus")
    with pytest.raises(ValueError, match="properties"):
        StreamCheck(model, 1, properties=("held", "nonsense"))
    with pytest.raises(ValueError, match="properties"):
        StreamCheck(model, 1, properties=())


def test_every_property_is_proved_by_induction(model, tmp_path):
    # unbounded: k-induction with the invariants, every reachable state
    r = run_sby(StreamCheck(model, 1), tmp_path, "prove", K)
    assert (r.status, r.failed) == ("PASS", ()), r.log


def test_paired_events_are_proved_by_induction(tmp_path):
    """A design whose output layer takes two events a word (hw/plan.py, "Paired events"): the spike
    queue's pair registers (``SpikeEventSource.consistent``) keep every property inductive."""
    from spikeloom.hw.plan import Plan

    paired = random_model((2, 3, 2), t_max=1, seed=1)
    assert [lp.paired for lp in Plan(paired, 2).layers] == [False, True]
    r = run_sby(StreamCheck(paired, 2), tmp_path, "prove", K)
    assert r.status == "PASS", r.log


def test_without_the_invariants_stable_is_not_inductive(model, tmp_path):
    # what the invariants are for: an unreachable state (results pending in the PE pipeline while
    # a result waits) breaks the induction of `stable` at this k
    r = run_sby(StreamCheck(model, 1, properties=("stable",), invariants=False), tmp_path, "prove", K)
    assert r.status == "UNKNOWN" and r.failed == ("stable",), r.log


@pytest.mark.slow
def test_results_are_reached_within_depth(model, tmp_path):
    # the properties are not vacuous: a result is transferred, one waits under back-pressure
    r = run_sby(StreamCheck(model, 1), tmp_path, "cover", DEPTH)
    assert {"result_taken", "result_waits"} <= set(r.covered), r.log
    assert max(r.covered.values()) < DEPTH


def test_the_cases_cover_dense_conv_pes_and_timesteps():
    cs = cases()
    kinds = {ly.kind for c in cs for ly in c.model.layers}
    assert {"dense", "conv"} <= kinds
    assert {1, 2, 3} <= {c.n_pe for c in cs}
    assert all(c.model.t_max >= 2 for c in cs)
    assert any(ly.shortcut is not None for c in cs for ly in c.model.layers)
    assert any(ly.pool_op == "sum" for c in cs for ly in c.model.layers)
    assert any(c.model.readout == "count" for c in cs)
    # both weight storages, as the generator resolves each case's choice
    from spikeloom.hw.plan import Plan

    plans = [Plan(c.model, c.n_pe, c.storage) for c in cs]
    sparse = [bool(p.sparse_layers) for p in plans]
    assert any(sparse) and not all(sparse)
    # compressed layers in lockstep and with PE queues (hw/plan.py, "PE queues")
    assert any(p.queued for p in plans) and any(p.sparse_layers and not p.queued for p in plans)


# each fault breaks the property it names: the proof does not pass, and bmc finds a trace that
# violates that property within DEPTH cycles
EXPECTED = {"handshake": "held", "drop": "input_closed", "payload": "stable", "early": "reset_clears"}
# `make test` keeps under its time budget with two of them (one before the first result, one at it)
FAST = ("handshake", "early")


@pytest.mark.parametrize("mutation", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow) for m in MUTATIONS])
def test_a_broken_wrapper_fails_the_proof(model, mutation, tmp_path):
    proof = run_sby(StreamCheck(model, 1, mutation=mutation), tmp_path / "prove", "prove", K)
    assert proof.status != "PASS", proof.log
    r = run_sby(StreamCheck(model, 1, mutation=mutation), tmp_path / "bmc", "bmc", DEPTH)
    assert r.status == "FAIL", r.log
    assert EXPECTED[mutation] in r.failed, r.log


@pytest.mark.parametrize("argv,needle", [
    (["--jobs", "x"], "--jobs = 'x' must be an integer"),
    (["--jobs", "0"], "--jobs = 0 is outside the allowed range [1, 64]"),
    (["--build", "FILE"], "is a file, not a folder"),
])
def test_bad_formal_options_are_one_line(tmp_path, capsys, argv, needle):
    from spikeloom.flows import formal

    (tmp_path / "FILE").write_text("x")
    argv = [str(tmp_path / "FILE") if a == "FILE" else a for a in argv]
    assert formal.main([*argv, *([] if "--build" in argv else ["--build", str(tmp_path / "b")])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spikeloom: error: ") and needle in err, err
    assert not (tmp_path / "b").exists()
