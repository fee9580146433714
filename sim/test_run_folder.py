"""A user's RGB image folder through the whole pipeline: ``spikeloom run --dataset folder:
--image-size 8`` trains the default MLP on a small generated folder (one of its images corrupt:
skipped and counted), quantizes it and co-simulates every test image.

Issue 18: this run once ended with "18 of 18 images differ between the RTL and the golden model"
(the dense first layer over a (3, H, W) input). The run must co-simulate with zero mismatches under
both simulators; the command's own check (exit status) and the report's counts are both asserted.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .test_icarus import requires_icarus

pytestmark = pytest.mark.cosim

CLASSES = ("blue", "green", "red")


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory):
    """Three classes x 30 noisy 20x20 RGB PNGs; a class is its brighter channel (some images are
    ambiguous, so that not every image exits at the first timestep); one more file is corrupt."""
    root = tmp_path_factory.mktemp("rgb") / "scenes"
    rng = np.random.default_rng(0)
    for k, cls in enumerate(CLASSES):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(30):
            a = rng.integers(0, 160, (20, 20, 3))
            a[..., 2 - k] += rng.integers(10, 90)
            Image.fromarray(a.astype(np.uint8), "RGB").save(d / f"{i:02d}.png")
    (root / "red" / "99.png").write_bytes(b"\x89PNG\r\n\x1a\n cut off in a copy")
    return root


def _run(folder, build, simulator):
    cmd = [sys.executable, "-m", "spikeloom.flows.cli", "run", "--dataset", f"folder:{folder}", "--image-size", "8",
           "--epochs", "30", "--qat-epochs", "5", "--pes", "3", "--sim", simulator, "--build", str(build)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200)


# make test: Verilator; the same run under Icarus in make test-slow (sim/test_icarus.py keeps Icarus in make test)
@pytest.mark.parametrize("simulator", ["verilator", pytest.param("icarus", marks=[requires_icarus, pytest.mark.slow])])
def test_rgb_folder_run_cosimulates_exactly(rgb_folder, tmp_path_factory, simulator):
    build = tmp_path_factory.mktemp(f"run-{simulator}")
    r = _run(rgb_folder, build, simulator)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((build / "report.json").read_text())
    c = report["cosim"]
    assert c["simulator"] == simulator and c["n_pe"] == 3
    assert c["n_images"] == 18 and c["mismatches"] == 0
    data = report["preflight"]["data"]
    assert data["skipped_images"] == 1 and data["skipped"][0]["file"].endswith("99.png")
    assert "1 unreadable image(s) skipped" in r.stdout and "the test split has 18 images" in r.stdout
    assert report["preflight"]["hardware"]["weights"] == 3 * 8 * 8 * 128 + 128 * 128 + 128 * 3
    model = report["model"]
    assert model["golden_vs_fakequant_agreement"] == 1.0
    assert model["accuracy_adaptive"] > 0.5  # trained, not a constant classifier
    # the generated hardware reads a (3, 8, 8) image through a dense first layer
    from spikeloom.model import modelfile
    qm = modelfile.load(build / "latest" / "model.slm")
    assert tuple(qm.input_shape) == (3, 8, 8) and qm.layers[0].kind == "dense"
    # the build step named its log before it started, the log is there, and every step was timed
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith(f"[build] {simulator} build"))
    log = (build / "latest" / "rtl_n3" / f"cosim_{simulator}" / f"sim_build_{simulator}" / "build.log").resolve()
    assert line.endswith(f"log: {log}") and log.is_file()
    assert set(report["timing"]) == {"train", "quantize", "evaluate", "generate", "build", "cosim", "energy", "total"}
