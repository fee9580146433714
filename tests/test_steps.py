"""The pipeline end to end on digits with few epochs: report keys, exactness, caching."""

import json

from spikeloom.flows import steps
from spikeloom.model.train import TrainConfig


def test_pipeline_report_and_cache(tmp_path):
    ctx = steps.Context(build=tmp_path, train=TrainConfig(epochs=3, qat_epochs=2))
    fm = steps.step_train(ctx, log=lambda *_: None)
    im, qm = steps.step_quantize(ctx, fm, log=lambda *_: None)
    steps.step_evaluate(ctx, im, qm, log=lambda *_: None)
    rep = json.loads(steps.write_report(ctx, log=lambda *_: None).read_text())
    m = rep["model"]
    for key in ("accuracy_float", "accuracy_fixed_t", "accuracy_adaptive", "mean_timesteps", "exit_histogram",
                "synaptic_events_fixed_t", "synaptic_events_adaptive", "golden_vs_fakequant_agreement"):
        assert key in m, key
    assert rep["dataset"] == "digits" and rep["t_max"] == 4
    assert m["golden_vs_fakequant_agreement"] == 1.0
    assert sum(m["exit_histogram"]) == m["n_test"] == 360
    assert m["synaptic_events_adaptive"] <= m["synaptic_events_fixed_t"]
    assert (tmp_path / "accuracy_vs_timesteps.png").stat().st_size > 1000
    # an unchanged second run trains nothing
    logs = []
    ctx2 = steps.Context(build=tmp_path, train=TrainConfig(epochs=3, qat_epochs=2))
    steps.step_quantize(ctx2, steps.step_train(ctx2, log=logs.append), log=logs.append)
    assert any("reusing" in s and "float.pt" in s for s in logs) and any("reusing" in s and "model.slm" in s for s in logs)
    # a changed configuration does train again
    logs.clear()
    steps.step_train(steps.Context(build=tmp_path, train=TrainConfig(epochs=2, qat_epochs=2)), log=logs.append)
    assert not any("reusing" in s for s in logs)
