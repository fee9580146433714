"""``spikeloom cosim``: a model file co-simulated against the golden model from ``--input`` or
``--dataset``, its report and table, a mismatch reported as ``run`` reports it, ``--waves`` (an FST
of the chosen images only) on ``cosim`` and ``run``, and every bad input refused in one line
before any work (the style of tests/test_bad_inputs.py)."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from spikeloom.model import golden, modelfile
from spikeloom.model.randnet import random_inputs, random_model
from spikeloom.sim.streams import CLOCK_NS

from test_bad_inputs import assert_one_line_error, base_bytes, listing, no_long_work  # noqa: F401  (a fixture)
from test_data import cifar10  # noqa: F401  (a fixture)
from test_cli import spikeloom_here


def small_model(**kw):
    """A 20-13-5 network whose input is a (1, 4, 5) image; early and late exits on random inputs."""
    return random_model((20, 13, 5), seed=1, exit_threshold=20, t_max=4, input_shape=(1, 4, 5), **kw)


def fst_times(path):
    """(start, end, timescale exponent) from an FST file's header block."""
    b = Path(path).read_bytes()[:80]
    assert b[0] == 0, "an FST file starts with its header block (type 0)"
    start, end = struct.unpack(">QQ", b[9:25])
    return start, end, struct.unpack("b", b[73:74])[0]


@pytest.mark.cosim
@pytest.mark.icarus
def test_cosim_input_with_waves(tmp_path, monkeypatch, capsys):
    """(B, C, H, W) images from --input under Icarus: every image equal to the golden model, the
    table and report.json; --waves 2:4 co-simulates images 2..4 again into an FST that ends with them."""
    monkeypatch.chdir(tmp_path)
    m = small_model()
    modelfile.save(m, tmp_path / "m.slm")
    x = random_inputs(m, 8).reshape(8, 1, 4, 5)
    np.save(tmp_path / "x.npy", x)
    r = spikeloom_here(capsys, "cosim", "m.slm", "--input", "x.npy", "--sim", "icarus", "--pes", "3",
                       "--waves", "2:4", "--build", "out")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    header = next(line for line in r.stdout.splitlines() if line.startswith("simulator"))
    for col in ("images", "mismatches", "cycles (mean)", "bound (mean)", "energy (nJ/inference)"):
        assert col in header
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    c = rep["cosim"]
    assert (c["simulator"], c["n_pe"], c["n_images"], c["mismatches"]) == ("icarus", 3, 8, 0)
    assert "accuracy" not in c, "no labels with --input: no accuracy"
    assert rep["images"]["input"] == "x.npy" and rep["energy"]["per_inference_nj"] > 0
    # the RTL's results are the golden model's, image by image (what the bench compared, read back)
    res = golden.run(m, x.reshape(8, -1), sparse=())
    rtl = json.loads(next((tmp_path / "out").glob("rtl_n3/cosim_icarus/results.json")).read_text())
    assert [i["pred"] for i in rtl["images"]] == res.pred.tolist()
    assert [i["timesteps"] for i in rtl["images"]] == res.exit_t.tolist()
    assert len(set(res.exit_t.tolist())) > 1
    # the waveform: images 2..4 only, its path printed last (before the report's) and in the report
    w = rep["waves"]
    path = Path(w["path"])
    assert w["images"] == [2, 4] and w["mismatches"] == 0 and path.is_file() and path.stat().st_size > 0
    assert f"waveform of images 2..4: {path}" in r.stdout.splitlines()
    waves_run = json.loads((path.parent / "rtl_n3" / "waves_icarus" / "results.json").read_text())
    assert waves_run["n_images"] == 3
    assert [i["pred"] for i in waves_run["images"]] == res.pred[2:5].tolist()
    start, end, exp = fst_times(path)
    assert start == 0 and end * 10.0 ** exp == pytest.approx(w["sim_cycles"] * CLOCK_NS * 1e-9)
    assert w["sim_cycles"] < rtl["sim_cycles"], "the waveform covers fewer cycles than the whole run"


@pytest.mark.cosim
def test_cosim_dataset_digits(tmp_path, monkeypatch, capsys):
    """--dataset digits under Verilator (the default): the test split's first 12 images, with
    labels (accuracy in the table and the report), zero mismatches."""
    monkeypatch.chdir(tmp_path)
    m = random_model((64, 16, 10), seed=2, exit_threshold=30, t_max=4, input_shape=(1, 8, 8))
    modelfile.save(m, tmp_path / "d.slm")
    r = spikeloom_here(capsys, "cosim", "d.slm", "--dataset", "digits", "--images", "12", "--pes", "4")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((next((tmp_path / "build").glob("cosim-d-*")) / "report.json").read_text())
    c = rep["cosim"]
    assert (c["simulator"], c["n_images"], c["mismatches"]) == ("verilator", 12, 0)
    assert rep["images"] == {"dataset": "digits", "data_seed": 0, "split": "test", "labels": True, "n_images": 12}
    from spikeloom.model.data import load_dataset

    test = load_dataset("digits", seed=0).test
    res = golden.run(m, golden.quantize_input(m, test.x[:12]), sparse=())
    assert c["accuracy"] == pytest.approx(float((res.pred == test.y[:12]).mean()))
    assert f"{100 * c['accuracy']:.2f}" in r.stdout
    assert (next((tmp_path / "build").glob("cosim-d-*")) / "model.slm").read_bytes() == (tmp_path / "d.slm").read_bytes()


@pytest.mark.cosim
@pytest.mark.icarus
def test_cosim_mismatch_is_reported_as_run_does(tmp_path, monkeypatch, capsys):
    """The bench checks against another exit threshold than the RTL has: the mismatches are counted,
    the report is written, and the command ends with run's one-line error, exit status 2."""
    from spikeloom.sim import runner

    monkeypatch.chdir(tmp_path)
    m = small_model()
    modelfile.save(m, tmp_path / "m.slm")
    other = modelfile.save(m.with_exit_threshold(1), tmp_path / "other.slm")
    np.save(tmp_path / "x.npy", random_inputs(m, 6))
    real = runner.cosim
    monkeypatch.setattr(runner, "cosim", lambda *a, **k: real(*a, **{**k, "golden_model_path": other}))
    r = spikeloom_here(capsys, "cosim", "m.slm", "--input", "x.npy", "--sim", "icarus", "--pes", "2")
    n = json.loads((next((tmp_path / "build").glob("cosim-m-*")) / "report.json").read_text())["cosim"]["mismatches"]
    assert n > 0
    assert_one_line_error(r, (f"{n} of 6 images differ between the RTL and the golden model",
                              "cosim.first_mismatches"))
    assert "MISMATCH" in r.stdout


@pytest.mark.cosim
@pytest.mark.slow  # two Verilator builds; make test has the Icarus FST (test_cosim_input_with_waves)
def test_cosim_waves_verilator_fst(tmp_path):
    """Verilator's waveform is an FST (--trace-fst), of the chosen images only."""
    from spikeloom.sim.runner import fst_available

    assert fst_available(), "apt-get install liblz4-dev (Verilator's FST writer)"
    from spikeloom.flows.cosim import cosim_model

    m = small_model()
    r = cosim_model(m, random_inputs(m, 6), pes=2, build=tmp_path / "b", waves="1:2", energy=False)
    assert r.mismatches == 0 and r.waves.suffix == ".fst"
    _, end, exp = fst_times(r.waves)
    rep = json.loads(r.report.read_text())
    assert end * 10.0 ** exp == pytest.approx(rep["waves"]["sim_cycles"] * CLOCK_NS * 1e-9)


@pytest.mark.cosim
@pytest.mark.icarus
def test_run_waves(tmp_path, monkeypatch):
    """run --waves: the run's own model, its first test images, an FST in the build folder."""
    import spikeloom.flows.cli as cli
    from spikeloom.flows import steps

    m = random_model((64, 12, 10), seed=3, exit_threshold=25, t_max=3, input_shape=(1, 8, 8))

    def quick(ctx, fm, log=print):  # no training: the run's quantize step returns a small network
        modelfile.save(m, ctx.model_path)
        return None, m
    monkeypatch.setattr(steps, "step_train", lambda ctx, log=print: None)
    monkeypatch.setattr(steps, "step_quantize", quick)
    monkeypatch.setattr(steps, "step_evaluate", lambda *a, **k: None)
    assert cli.main(["run", "--build", str(tmp_path / "b"), "--sim", "icarus", "--pes", "2",
                     "--cosim-images", "5", "--waves", "3:4"]) == 0
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["cosim"]["mismatches"] == 0 and rep["waves"]["images"] == [3, 4]
    assert Path(rep["waves"]["path"]).stat().st_size > 0
    # the waveform is the run folder's own: another configuration's run does not overwrite it
    assert Path(rep["waves"]["path"]).parent == (tmp_path / "b" / "latest").resolve()
    assert json.loads((tmp_path / "b" / "latest" / "report.json").read_text())["waves"] == rep["waves"]


# --------------------------------------------------------------------------- bad inputs

def _files(tmp, x=None):
    (tmp / "m.slm").write_bytes(base_bytes("dense"))  # 6-5-3, 3-bit inputs
    np.save(tmp / "x.npy", np.zeros((4, 6), np.int64) if x is None else x)
    (tmp / "f").write_text("mine\n")


BAD = {
    "no-images": ([], ("--input X.npy or --dataset SPEC",)),
    "input-and-dataset": (["--input", "x.npy", "--dataset", "digits"], ("--input X.npy or --dataset SPEC",)),
    "input-missing": (["--input", "none.npy"], ("--input none.npy", "does not exist")),
    "input-wrong-size": (["--input", "x.npy"], ("--input x.npy", "7 values per image", "expects 6"),
                         np.zeros((2, 7), np.int64)),
    "input-out-of-range": (["--input", "x.npy"], ("--input x.npy", "[0, 7]", "max 9"), np.full((2, 6), 9)),
    "input-floats": (["--input", "x.npy"], ("--input x.npy", "integer array", "float64"), np.zeros((2, 6))),
    "input-no-images": (["--input", "x.npy"], ("--input x.npy", "no images"), np.zeros((0, 6), np.int64)),
    "model-missing": (["--input", "x.npy", "--model-override", "none.slm"], ("none.slm", "does not exist")),
    "pes-0": (["--input", "x.npy", "--pes", "0"], ("--pes = 0", "[1, 64]")),
    "sim-bogus": (["--input", "x.npy", "--sim", "modelsim"], ("--sim = 'modelsim'", "verilator, icarus")),
    "images-0": (["--input", "x.npy", "--images", "0"], ("--images = 0", ">= 1")),
    "seed-negative": (["--input", "x.npy", "--seed", "-1"], ("--seed = -1", "[0, 4294967295]")),
    "data-seed-negative": (["--dataset", "digits", "--data-seed", "-1"], ("--data-seed = -1", "[0, 4294967295]")),
    "waves-text": (["--input", "x.npy", "--waves", "three"], ("--waves = 'three'", "A:B")),
    "waves-reversed": (["--input", "x.npy", "--waves", "3:1"], ("--waves = '3:1'", "0 <= A <= B")),
    "waves-negative": (["--input", "x.npy", "--waves=-1:2"], ("--waves = '-1:2'",)),
    "waves-three-parts": (["--input", "x.npy", "--waves", "1:2:3"], ("--waves = '1:2:3'",)),
    "waves-past-the-images": (["--input", "x.npy", "--waves", "2:4"],
                              ("--waves 2:4", "image 4 is not co-simulated", "images 0..3")),
    "waves-past-images-k": (["--input", "x.npy", "--images", "2", "--waves", "1:2"],
                            ("--waves 1:2", "image 2 is not co-simulated", "images 0..1")),
    "build-a-file": (["--input", "x.npy", "--build", "f"], ("--build f", "is a file")),
    "build-under-a-file": (["--input", "x.npy", "--build", "f/b"], ("--build f/b", "f is a file")),
    "dataset-missing": (["--dataset", "nowhere"], ("'nowhere'", "does not exist")),
    "dataset-wrong-shape": (["--dataset", "digits"], ("--dataset digits", "(1, 8, 8)", "reads 6")),
    "tech-missing": (["--input", "x.npy", "--tech", "none.json"], ("none.json",)),
}


@pytest.mark.parametrize("name", BAD)
def test_cosim_bad_input(name, tmp_path, monkeypatch, capsys, no_long_work):  # noqa: F811
    from spikeloom.sim import runner

    monkeypatch.setattr(runner, "fst_available", lambda: True)  # the lz4 check has its own test
    args, needles, *x = BAD[name]
    monkeypatch.chdir(tmp_path)
    _files(tmp_path, x[0] if x else None)
    model = "m.slm"
    if "--model-override" in args:
        model = args[args.index("--model-override") + 1]
        args = args[:args.index("--model-override")]
    before = listing(tmp_path)
    assert_one_line_error(spikeloom_here(capsys, "cosim", model, *args), needles)
    assert listing(tmp_path) == before, "files left behind"


def test_cosim_waves_under_verilator_without_lz4(tmp_path, monkeypatch, capsys, no_long_work):  # noqa: F811
    """Verilator's FST writer needs the lz4 headers: without them, one line naming the package and
    the other simulator, before any work."""
    from spikeloom.sim import runner

    monkeypatch.setattr(runner, "fst_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    _files(tmp_path)
    for argv in (["cosim", "m.slm", "--input", "x.npy", "--waves", "0:1"], ["run", "--build", "b", "--waves", "0"]):
        before = listing(tmp_path)
        assert_one_line_error(spikeloom_here(capsys, *argv), ("--waves under Verilator", "liblz4-dev",
                                                               "--sim icarus"))
        assert listing(tmp_path) == before


@pytest.mark.parametrize("args, needles", [
    (["--waves", "359:360"], ("--waves 359:360", "image 360 is not co-simulated", "images 0..359")),
    (["--waves", "x"], ("--waves = 'x'", "A:B")),
    (["--waves", "1:2", "--no-cosim"], ("--waves 1:2", "--no-cosim")),
    (["--waves", "3:5", "--cosim-images", "4"], ("--waves 3:5", "image 5 is not co-simulated")),
])
def test_run_waves_bad_input(args, needles, tmp_path, monkeypatch, capsys, no_long_work):  # noqa: F811
    from spikeloom.sim import runner

    monkeypatch.setattr(runner, "fst_available", lambda: True)
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(spikeloom_here(capsys, "run", "--build", "b", *args), needles)
    assert listing(tmp_path) == []


def test_fst_available_finds_the_header(monkeypatch, tmp_path):
    """fst_available asks the compiler for lz4.h: a compiler that fails says False."""
    from spikeloom.sim.runner import fst_available

    fake = tmp_path / "cxx"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    assert fst_available() is False


def test_cosim_refuses_a_users_folder_and_names_its_own(tmp_path, monkeypatch, capsys, no_long_work):  # noqa: F811
    """--build: a non-empty folder spikeloom did not write is refused before any work (the user's
    files stay); the default folder carries the model file's hash (two model.slm never share one)."""
    from spikeloom.flows.cli import default_cosim_build

    monkeypatch.chdir(tmp_path)
    _files(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.json").write_text("my notes\n")
    assert_one_line_error(spikeloom_here(capsys, "cosim", "m.slm", "--input", "x.npy", "--build", "mine"),
                          ("--build mine", "not empty", "spikeloom did not write it"))
    assert [p.name for p in mine.iterdir()] == ["report.json"] and (mine / "report.json").read_text() == "my notes\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.slm").write_bytes(base_bytes("dense"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.slm").write_bytes(base_bytes("conv"))
    da, db = default_cosim_build(tmp_path / "a" / "model.slm"), default_cosim_build(tmp_path / "b" / "model.slm")
    assert da != db and da.name.startswith("cosim-model-") and da == default_cosim_build(tmp_path / "a" / "model.slm")


def test_a_folder_models_dataset_options():
    """cosim --dataset and the export's testbench load an image folder as the model saw it: its size,
    channels and split seed (flows/common.dataset_options)."""
    from dataclasses import replace

    from spikeloom.flows.common import dataset_options

    m = replace(random_model((36, 5, 3), seed=1, input_shape=(1, 6, 6)), extra={"data_seed": 7})
    assert dataset_options(m, "folder:/x") == (7, 6, 1)
    assert dataset_options(m, "folder:/x", data_seed=2) == (2, 6, 1)
    assert dataset_options(m, "digits") == (7, None, None)
    m3 = replace(m, extra={"image_size": 16, "channels": 3})
    assert dataset_options(m3, "folder:/x") == (0, 16, 3)


@pytest.mark.cosim
@pytest.mark.icarus
def test_run_named_network(tmp_path, monkeypatch, capsys):
    """``run --arch NAME`` of a named reference network (model/randnet.py NAMED; here a small one put
    in its place): no training, random-valued images generated, co-simulated and compared, the
    report in build/runs/NAME with the timing of generate, build and co-simulation. Training options
    are refused in one line before any work."""
    from spikeloom.model import randnet

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(randnet.NAMED, "tiny-random", lambda: small_model())
    r = spikeloom_here(capsys, "run", "--arch", "tiny-random", "--sim", "icarus", "--pes", "3", "--cosim-images", "6")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((tmp_path / "build" / "runs" / "tiny-random" / "report.json").read_text())
    assert rep["model"]["name"] == "tiny-random" and rep["images"]["n_images"] == 6
    assert "random_inputs" in rep["images"]["input"]
    assert (rep["cosim"]["n_images"], rep["cosim"]["mismatches"]) == (6, 0)
    assert {"generate", "build", "cosim"} <= set(rep["timing"])
    res = golden.run(small_model(), random_inputs(small_model(), 6, seed=0), sparse=())
    rtl = json.loads((tmp_path / "build" / "runs" / "tiny-random" / "rtl_n3" / "cosim_icarus" / "results.json").read_text())
    assert [i["pred"] for i in rtl["images"]] == res.pred.tolist()
    for bad in (["--epochs", "2"], ["--t-max", "3"], ["--no-cosim"]):
        r = spikeloom_here(capsys, "run", "--arch", "tiny-random", *bad)
        assert r.returncode == 2 and r.stderr.startswith(f"spikeloom: error: {bad[0]}: --arch tiny-random is a named"), \
            r.stderr


@pytest.mark.cosim
@pytest.mark.icarus
def test_run_named_network_on_cifar_test_images(tmp_path, monkeypatch, capsys, cifar10):
    """``--dataset cifar:PATH`` gives a named network the first images of the CIFAR-10 test split (a
    small 3x32x32 conv network in the named one's place): labels, so accuracy too, every image equal."""
    from spikeloom.model import randnet

    folder, written = cifar10
    monkeypatch.chdir(tmp_path)
    net = lambda: randnet.random_conv_model(seed=5, in_shape=(3, 32, 32), convs=((2, 3, 2, 1, 2, False),),  # noqa: E731
                                            n_classes=10, t_max=2)
    monkeypatch.setitem(randnet.NAMED, "tiny-cifar", net)
    r = spikeloom_here(capsys, "run", "--arch", "tiny-cifar", "--sim", "icarus", "--pes", "2", "--cosim-images", "3",
                       "--dataset", f"cifar:{folder}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((tmp_path / "build" / "runs" / "tiny-cifar" / "report.json").read_text())
    assert rep["images"]["dataset"] == f"cifar:{folder}" and rep["images"]["labels"]
    assert (rep["cosim"]["n_images"], rep["cosim"]["mismatches"]) == (3, 0) and "accuracy" in rep["cosim"]
    x = golden.quantize_input(net(), written["test_batch"][0].reshape(-1, 3, 32, 32) / 255.0)
    rtl = json.loads((tmp_path / "build" / "runs" / "tiny-cifar" / "rtl_n2" / "cosim_icarus" / "results.json").read_text())
    assert [i["pred"] for i in rtl["images"]] == golden.run(net(), x[:3], sparse=()).pred.tolist()


@pytest.mark.cosim
@pytest.mark.icarus
def test_run_named_network_storage_fast(tmp_path, monkeypatch, capsys):
    """``run --storage fast``: the generated core has each layer in the storage with fewer event
    cycles, co-simulates with 0 mismatches, and the run prints and reports per layer the storage, its
    rule, and both storages' bits and event cycles."""
    from spikeloom.model import randnet

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(randnet.NAMED, "tiny-random", lambda: small_model())
    r = spikeloom_here(capsys, "run", "--arch", "tiny-random", "--sim", "icarus", "--pes", "2", "--cosim-images", "4",
                       "--storage", "fast")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((tmp_path / "build" / "runs" / "tiny-random" / "report.json").read_text())
    assert (rep["cosim"]["n_images"], rep["cosim"]["mismatches"]) == (4, 0)
    hw = rep["hardware"]
    assert hw["storage_option"] == "fast" and [ly["name"] for ly in hw["layers"]] == [ly.name for ly in small_model().layers]
    for ly in hw["layers"]:
        assert ly["storage_rule"] == "fast" and hw["storage"][ly["name"]] == ly["storage"]
        cost = {s: (ly[f"{s}_cycles"], ly[f"{s}_bits"]) for s in ("dense", "sparse")}
        assert ly["storage"] == ("sparse" if cost["sparse"] < cost["dense"] else "dense"), ly
        assert f"{ly['name']} " in r.stdout
    assert "event cycles dense" in r.stdout and "event cycles sparse" in r.stdout
