"""Before the long work (flows/fit.py): data notes, the hardware estimate, and the refusal of a
network far beyond the documented FPGAs; image folders: channels, corrupt images skipped and counted."""

import json

import numpy as np
import pytest
from PIL import Image

from spikeloom.flows import fit
from spikeloom.hw.accel import generate
from spikeloom.hw.plan import Plan
from spikeloom.model.data import load_dataset
from spikeloom.model.randnet import random_conv_model, random_model

from test_cli import assert_clean_error, spikeloom_here


def rgb_folder(root, classes=3, per_class=20, side=20, corrupt=()):
    rng = np.random.default_rng(0)
    for k in range(classes):
        d = root / f"c{k}"
        d.mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 80, (side, side, 3)).astype(np.uint8)
            a[..., k % 3] += 150
            Image.fromarray(a).save(d / f"{i}.png")
    for rel in corrupt:
        (root / rel).write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root


@pytest.mark.parametrize("model, n_pe", [
    (random_model((64, 128, 128, 10), seed=1, weight_bits=8), 8),
    (random_model((300, 40, 7), seed=2, weight_bits=5, density=1.0), 3),
    (random_conv_model(seed=3), 2),
    (random_conv_model(seed=4, in_shape=(3, 12, 12), convs=((8, 3, 1, 1, 2, False), (12, 3, 1, 1, 1, False),
                                                            (12, 3, 1, 1, 2, True)), hidden=(20,)), 5),
], ids=["digits-mlp-shape", "odd-mlp", "conv", "conv-rgb"])
def test_verilog_size_estimate_is_close(tmp_path, model, n_pe):
    """The estimate is within 15% of the Verilog the generator writes."""
    generate(model, n_pe, tmp_path)
    real = (tmp_path / "spikeloom_accel.v").stat().st_size
    est = fit.verilog_bytes(Plan(model, n_pe))
    assert abs(est - real) / real < 0.15, (est, real)


def test_estimate_names_the_targets_and_their_verdicts():
    small = fit.estimate(random_model((64, 128, 128, 10), seed=1, weight_bits=8), 8)
    assert small["weights"] == 64 * 128 + 128 * 128 + 128 * 10
    assert small["fits"]["ecp5-25k"] is None and small["fits"]["ecp5-85k"] is None
    assert "ice40-up5k" in small["fits"] and "SB_SPRAM256KA" in small["fits"]["ice40-up5k"]  # 8 PEs > 4 SPRAMs
    big = fit.estimate(random_model((3 * 64 * 64, 128, 128, 10), seed=1, weight_bits=8), 8)
    assert big["weight_memory_bits"] > fit.LARGE_BITS
    assert all(why is not None for why in big["fits"].values())


def test_run_refuses_a_network_beyond_every_fpga_before_training(tmp_path, capsys):
    """A 64x64 RGB folder on the default MLP: 13 Mbit of weights. Refused in seconds with what to do,
    nothing trained; --no-cosim would not generate and is not refused (checked without training)."""
    root = rgb_folder(tmp_path / "imgs")
    r = spikeloom_here(capsys, "run", "--dataset", f"folder:{root}", "--build", tmp_path / "b")
    assert_clean_error(r, "13.0 Mbit of weights", "--image-size", "--allow-large")
    assert "[estimate] 1,589,632 weights" in r.stdout
    assert not list((tmp_path / "b").rglob("*.pt"))


def _context(tmp_path, **kw):
    from spikeloom.flows.cli import _context, build_parser

    args = [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    return _context(build_parser().parse_args(["run", "--build", str(tmp_path / "b"), *args]))


def test_preflight_report_and_warnings(tmp_path):
    root = rgb_folder(tmp_path / "imgs", per_class=12, corrupt=("c1/3.png", "c2/0.png"))
    ctx = _context(tmp_path, dataset=f"folder:{root}", image_size=8)
    logged = []
    sec = fit.preflight(ctx, 4, generate=True, log=logged.append)
    data = sec["data"]
    assert data["skipped_images"] == 2 and {s["file"].rsplit("/", 2)[-2] for s in data["skipped"]} == {"c1", "c2"}
    assert data["n_train"] + data["n_val"] + data["n_test"] == 3 * 12 - 2
    text = "\n".join(logged)
    assert "warning: 2 unreadable image(s) skipped" in text and "c1/3.png" in text
    assert f"the test split has {data['n_test']} images" in text and "points of accuracy" in text
    hw = sec["hardware"]
    assert hw["weights"] == 3 * 8 * 8 * 128 + 128 * 128 + 128 * 3 and hw["n_pe"] == 4
    assert ctx.report["preflight"] is sec and json.dumps(sec)
    big = _context(tmp_path, dataset=f"folder:{root}", image_size=64)
    fit.preflight(big, 8, generate=False, log=logged.append)  # no hardware: told, not refused
    assert "fit none of the documented FPGA targets" in logged[-1]


def test_digits_split_has_no_warning(tmp_path):
    logged = []
    sec = fit.preflight(_context(tmp_path), None, log=logged.append)
    assert sec["data"]["warnings"] == [] and sec["data"]["n_test"] == 360 and not logged


def test_channels_one_reads_grey_levels(tmp_path):
    root = rgb_folder(tmp_path / "imgs", per_class=10)
    grey = load_dataset(f"folder:{root}", size=6, channels=1)
    rgb = load_dataset(f"folder:{root}", size=6)
    assert grey.train.shape == (1, 6, 6) and rgb.train.shape == (3, 6, 6)
    # Pillow's ITU-R 601 luma of the RGB pixels, up to the rounding of 8-bit grey levels
    luma = (rgb.train.x * np.array([0.299, 0.587, 0.114])[None, :, None, None]).sum(axis=1, keepdims=True)
    assert np.abs(grey.train.x - luma).max() <= 1.5 / 255
