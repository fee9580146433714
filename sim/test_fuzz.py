"""The random-network campaign (flows/fuzz.py) end to end under Icarus: a small campaign passes with
its report, and a campaign whose golden model is deliberately wrong records every network as a
failing case whose reproducer folder replays to the same mismatch."""

import json

import numpy as np
import pytest

from spikeloom.flows import fuzz
from spikeloom.model import modelfile

from .test_icarus import requires_icarus

pytestmark = [pytest.mark.cosim, requires_icarus]


def test_small_campaign_passes(tmp_path):
    rep = fuzz.campaign(6, seed=1, jobs=2, build=tmp_path, log=lambda *a: None)
    on_disk = json.loads((tmp_path / "fuzz.json").read_text())
    assert on_disk == json.loads(json.dumps(rep))
    c = rep["counts"]
    assert c["networks"] == 6 and c["mismatched"] == 0 and c["errors"] == 0, rep["failures"]
    assert c["passed"] + c["refused"] == 6 and c["passed"] >= 5
    assert rep["images_per_network"] == 3 and c["images"] == 3 * c["passed"]
    assert sum(v["networks"] for v in rep["by"]["weights"].values()) == 6
    assert not rep["failures"] and not list((tmp_path / "fuzz").iterdir())  # passed networks leave nothing


def test_injected_mismatch_is_recorded_and_replays(tmp_path, capsys):
    assert fuzz.main(["--networks", "2", "--seed", "4", "--jobs", "1", "--inject-mismatch",
                      "--build", str(tmp_path)]) == 1
    rep = json.loads((tmp_path / "fuzz.json").read_text())
    assert rep["counts"]["mismatched"] == 2 and rep["counts"]["passed"] == 0, rep
    assert rep["injected_mismatch"] and len(rep["failures"]) == 2
    for f in rep["failures"]:
        folder = tmp_path / "fuzz" / f"fail-{f['index']}"
        assert f["folder"] == str(folder) and f["replay"] == f"python -m spikeloom.flows.fuzz --replay {folder}"
        assert "synaptic_events" in f["detail"]
        case = fuzz.draw(4, f["index"])
        assert np.array_equal(np.load(folder / "inputs.npy"), case.inputs)
        saved = modelfile.load(folder / "model.slm")
        assert np.array_equal(saved.layers[0].weight, case.model.layers[0].weight)
        info = json.loads((folder / "case.json").read_text())
        assert info["options"] == json.loads(json.dumps(case.options)) and info["outcome"] == "mismatched"
        again = fuzz.replay(folder, log=lambda *a: None)
        assert again["outcome"] == "mismatched" and again["detail"] == f["detail"]
    capsys.readouterr()
    assert fuzz.main(["--replay", str(tmp_path / "fuzz" / f"fail-{rep['failures'][0]['index']}")]) == 1
    assert "mismatched" in capsys.readouterr().out
