"""One record per inference for the golden model and the RTL (sim/records.py), and its checker."""

import numpy as np
import pytest

from spikeloom.hw.simulate import rtl_run
from spikeloom.model import golden
from spikeloom.model.randnet import random_inputs, random_model
from spikeloom.sim.records import InferenceRecord, counter_arrays, from_golden, mismatches


@pytest.fixture(scope="module")
def run():
    model = random_model((10, 7, 3), seed=4, exit_threshold=6)
    x = random_inputs(model, 4, seed=1)
    return model, x, golden.run(model, x, sparse=())


def test_golden_and_rtl_give_the_same_record(run):
    """The RTL's payload fields (Amaranth simulator) and the golden result become equal records."""
    model, x, res = run
    want = from_golden(res)
    got = [InferenceRecord.from_fields(r) for r in rtl_run(model, 2, x, seed=0, storage="dense")]
    assert [g.cycles > 0 for g in got] == [True] * len(x)
    assert all(not mismatches(w, g) for w, g in zip(want, got))
    assert [InferenceRecord(g.pred, g.timesteps, g.counters) for g in got] == want
    cs = res.counters()
    assert want[2].pred == res.pred[2] and want[2].timesteps == res.exit_t[2]
    assert want[2].counters == {ln: {k: int(v[2]) for k, v in c.items()} for ln, c in cs.items()}


def test_flat_round_trip(run):
    _, _, res = run
    r = from_golden(res, cycles=np.array([5, 6, 7, 8]))[1]
    assert r.cycles == 6
    fields = {**r.flat(), "cycle_bound": 3, "ok": True}  # a bench's extra keys are ignored
    assert InferenceRecord.from_fields(fields) == r


def test_mismatches_name_every_differing_field(run):
    _, _, res = run
    want = from_golden(res)[0]
    assert mismatches(want, want) == []
    counters = {ln: dict(c) for ln, c in want.counters.items()}
    ln = next(iter(counters))
    counters[ln]["spikes"] += 1
    got = InferenceRecord(want.pred + 1, want.timesteps, counters, cycles=99)
    lines = mismatches(want, got, image=3)
    assert lines == [f"image 3: pred = {want.pred + 1} from the RTL, {want.pred} from the golden model",
                     f"image 3: {ln}.spikes = {want.counters[ln]['spikes'] + 1} from the RTL, "
                     f"{want.counters[ln]['spikes']} from the golden model"]
    # a counter the RTL did not report is a mismatch too
    del counters[ln]["spikes"]
    assert any(f"{ln}.spikes = None" in m for m in mismatches(want, InferenceRecord(want.pred, want.timesteps, counters)))
    # cycles are compared when both sides have them
    timed = InferenceRecord(want.pred, want.timesteps, want.counters, cycles=10)
    assert mismatches(timed, InferenceRecord(want.pred, want.timesteps, want.counters, cycles=11)) == [
        "cycles = 11 from the RTL, 10 from the golden model"]
    assert mismatches(timed, want) == []


def test_counter_arrays(run):
    model, _, res = run
    arrays = counter_arrays(from_golden(res), [ly.name for ly in model.layers])
    cs = res.counters()
    assert arrays.keys() == cs.keys()
    for ln in cs:
        assert arrays[ln].keys() == cs[ln].keys()
        for k in cs[ln]:
            assert arrays[ln][k].dtype == np.int64 and (arrays[ln][k] == cs[ln][k]).all()
