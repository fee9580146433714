"""Run folders (README, "Run folders"): one folder per configuration under build/runs/, caches keyed by
their configuration under build/cache/, build/latest and build/report.json for the last run, and the
pipeline commands adding to one folder's report instead of replacing it."""

import json
import os

import pytest

from spikeloom.flows import steps
from spikeloom.flows.cli import _context, build_parser
from spikeloom.model import modelfile

from test_cli import assert_clean_error, spikeloom_here

# tiny training: one float epoch, no QAT, two timesteps
TINY = ("--epochs", "1", "--qat-epochs", "0", "--t-max", "2")
# configuration A: the whole pipeline, co-simulated under Icarus on two images
A = ("run", *TINY, "--sim", "icarus", "--cosim-images", "2")
# configuration B: another loss, stopped after the golden model (make sim ARGS="--loss uniform --no-cosim")
B = ("run", *TINY, "--loss", "uniform", "--no-cosim")


def snapshot(folder):
    """Every file under ``folder``: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def latest(build):
    link = build / "latest"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link)), "build/latest: a relative link"
    return link.resolve()


@pytest.mark.icarus
def test_two_configurations_two_complete_run_folders(tmp_path, capsys):
    build = tmp_path / "build"
    r = spikeloom_here(capsys, *A, "--build", build)
    assert r.returncode == 0, r.stderr
    (a,) = (build / "runs").iterdir()
    assert latest(build) == a and a.name.startswith("digits-mlp-")
    rep_a = json.loads((a / "report.json").read_text())
    # the build step named its log before it started, and the log is there
    log_line = next(ln for ln in r.stdout.splitlines() if ln.startswith("[build] icarus"))
    build_log = a / "rtl_n8" / "cosim_icarus" / "sim_build_icarus" / "build.log"
    assert f"log: {build_log.resolve()}" in log_line and build_log.is_file()
    # a complete run folder: model, report, plots, generated RTL, co-simulation results and logs
    for f in ("model.slm", "report.json", "accuracy_vs_timesteps.png", "exit_histogram.png", "energy_breakdown.png",
              "rtl_n8/spikeloom_accel.v", "rtl_n8/ports.json", "rtl_n8/cosim_icarus/results.json",
              "rtl_n8/cosim_icarus/sim.log"):
        assert (a / f).is_file(), f
    assert set(rep_a["timing"]) == {"train", "quantize", "evaluate", "generate", "build", "cosim", "energy", "total"}
    assert all(v >= 0 for v in rep_a["timing"].values())
    assert rep_a["cosim"]["mismatches"] == 0 and rep_a["run"]["folder"] == str(a)
    assert rep_a["model"]["model_file"] == str(a / "model.slm")
    before = snapshot(a)

    r = spikeloom_here(capsys, *B, "--build", build)
    assert r.returncode == 0, r.stderr
    (b,) = set((build / "runs").iterdir()) - {a}
    assert latest(build) == b and b.name.startswith("digits-mlp-")
    for f in ("model.slm", "report.json", "accuracy_vs_timesteps.png", "exit_histogram.png"):
        assert (b / f).is_file(), f
    assert snapshot(a) == before, "the second configuration changed the first one's files"
    assert (build / "report.json").read_bytes() == (b / "report.json").read_bytes()  # the contract: the last run's
    rep_b = json.loads((b / "report.json").read_text())
    assert rep_b["run"]["config"]["train"]["loss"] == "uniform" and rep_a["run"]["config"]["train"]["loss"] == "early"
    assert set(rep_b["timing"]) == {"train", "quantize", "evaluate", "total"}
    # the model files are named after what differs from the defaults (spikeloom inspect shows the name)
    name_a, name_b = (modelfile.load(f / "model.slm").name for f in (a, b))
    assert (name_a, name_b) == ("digits-mlp-t_max=2,epochs=1,qat_epochs=0",
                                "digits-mlp-t_max=2,epochs=1,qat_epochs=0,loss=uniform")
    assert spikeloom_here(capsys, "inspect", b / "model.slm").stdout.startswith(f"{b / 'model.slm'}: {name_b} ")
    # each configuration's training cached apart: two float networks, two quantized ones
    entries = sorted(p.name for p in (build / "cache").glob("*/*") if not p.name.endswith(".key"))
    assert entries == ["float.pt", "float.pt", "model.slm", "model.slm", "qat.pt", "qat.pt"]

    # the first configuration again: nothing trains, its folder is the latest again
    r = spikeloom_here(capsys, *A, "--build", build)
    assert r.returncode == 0, r.stderr
    assert "[train] reusing" in r.stdout and "[quantize] reusing" in r.stdout
    assert latest(build) == a and (a / "model.slm").read_bytes() == before["model.slm"][0]
    assert len(list((build / "cache").glob("*/*.pt"))) == 4


def test_commands_add_to_their_run_folders_report(tmp_path, capsys):
    """`evaluate` then `train` on one configuration: train's report keeps evaluate's sections; a
    report written for another model (other code) starts anew."""
    build = tmp_path / "b"
    assert spikeloom_here(capsys, "evaluate", *TINY, "--build", build).returncode == 0
    folder = latest(build)
    rep = json.loads((folder / "report.json").read_text())
    assert {"accuracy_adaptive", "exit_histogram", "accuracy_float"} <= set(rep["model"])
    assert set(rep["timing"]) == {"train", "quantize", "evaluate", "total"}
    rep["hardware"] = {"n_pe": 8, "from": "an earlier run of this configuration"}
    (folder / "report.json").write_text(json.dumps(rep))

    r = spikeloom_here(capsys, "train", *TINY, "--build", build)
    assert r.returncode == 0, r.stderr
    assert latest(build) == folder
    after = json.loads((folder / "report.json").read_text())
    assert after["model"]["accuracy_adaptive"] == rep["model"]["accuracy_adaptive"]  # evaluate's, kept
    assert after["hardware"] == rep["hardware"]
    assert after["timing"]["evaluate"] == rep["timing"]["evaluate"] and "train" in after["timing"]
    assert json.loads((build / "report.json").read_text()) == after

    after["run"]["model_key"] = "another model"
    (folder / "report.json").write_text(json.dumps(after))
    r = spikeloom_here(capsys, "quantize", *TINY, "--build", build)
    assert r.returncode == 0 and "starts anew" in r.stdout, r.stdout
    fresh = json.loads((folder / "report.json").read_text())
    assert "hardware" not in fresh and "accuracy_adaptive" not in fresh["model"]
    assert fresh["run"]["model_key"] != "another model"


def test_named_run_folders(tmp_path, capsys):
    build = tmp_path / "b"
    r = spikeloom_here(capsys, "run", *TINY, "--no-cosim", "--name", "baseline_1.0", "--build", build)
    assert r.returncode == 0, r.stderr
    assert latest(build) == build / "runs" / "baseline_1.0"
    assert json.loads((build / "report.json").read_text())["run"]["name"] == "baseline_1.0"
    # the same name for another configuration: refused before any work, the folder as it was
    before = snapshot(build / "runs" / "baseline_1.0")
    r = spikeloom_here(capsys, "run", *TINY, "--no-cosim", "--seed", "1", "--name", "baseline_1.0", "--build", build)
    assert_clean_error(r, "--name baseline_1.0", "another configuration")
    assert snapshot(build / "runs" / "baseline_1.0") == before


@pytest.mark.parametrize("name", ["a b", "../up", ".hidden", "a/b", "x" * 81, "", "é"])
def test_bad_run_names_are_one_line(tmp_path, capsys, name):
    r = spikeloom_here(capsys, "run", *TINY, "--no-cosim", "--name", name, "--build", tmp_path / "b")
    assert_clean_error(r, "--name", "letters, digits")
    assert not (tmp_path / "b").exists()


def test_the_defaults_run_folder_is_make_sims():
    """`make sim` (its options at their defaults) and a default RunContext (make synth's model) agree."""
    cli = _context(build_parser().parse_args(["run", "--build", "b", "--pes", "8", "--sim", "verilator"]))
    assert cli.workdir == steps.RunContext(build=cli.build).workdir
    assert cli.model_name == "digits-mlp"
    other = _context(build_parser().parse_args(["run", "--build", "b", "--pes", "4"]))
    assert other.workdir != cli.workdir and other.cache_dir("train") == cli.cache_dir("train")


def test_a_failed_run_leaves_latest_and_the_report_copy_at_the_last_complete_run(tmp_path, capsys, monkeypatch):
    """build/latest and build/report.json move together, when a run's report is written."""
    from spikeloom.model.errors import SpikeloomError

    build = tmp_path / "build"
    assert spikeloom_here(capsys, *B, "--build", build).returncode == 0
    first, copy = latest(build), (build / "report.json").read_text()

    def fail(ctx, log=print):
        raise SpikeloomError("training stopped")
    monkeypatch.setattr(steps, "step_train", fail)
    assert_clean_error(spikeloom_here(capsys, *B, "--seed", "5", "--build", build), "training stopped")
    assert latest(build) == first and (build / "report.json").read_text() == copy


def test_a_folder_named_latest_is_refused_before_any_folder_is_made(tmp_path, capsys):
    build = tmp_path / "build"
    (build / "latest").mkdir(parents=True)
    assert_clean_error(spikeloom_here(capsys, *B, "--build", build), "latest", "move it away")
    assert sorted(p.name for p in build.iterdir()) == ["latest"]


def test_the_folder_is_the_model_and_hardware_not_the_simulator():
    """--sim, --cosim-images and --tech are how a result was obtained: the same folder (train,
    quantize and evaluate, which do not take them, find it); N is the hardware: another folder."""
    def ctx(*args):
        return _context(build_parser().parse_args(["run", *args]))
    base = ctx()
    assert ctx("--sim", "icarus", "--cosim-images", "4").workdir == base.workdir
    assert ctx("--tech", "model/tech/horowitz45.json").workdir == base.workdir
    assert ctx("--pes", "4").workdir != base.workdir
    assert _context(build_parser().parse_args(["evaluate"])).workdir == base.workdir
    assert ctx("--sim", "icarus").run_section()["settings"]["simulator"] == "icarus"


def test_the_storage_is_hardware_another_folder_unless_auto():
    """--storage changes the hardware (and the counters evaluate reports): another folder, with the
    checked value in the configuration; the default, auto, keeps the folders named before it existed."""
    def ctx(*args):
        return _context(build_parser().parse_args(["run", *args]))
    base = ctx()
    assert "storage" not in base.config() and ctx("--storage", "auto").workdir == base.workdir
    fast, per_layer = ctx("--storage", "fast"), ctx("--storage", "fc1=sparse, fc2=fast")
    assert fast.workdir != base.workdir and per_layer.workdir not in (base.workdir, fast.workdir)
    assert (fast.storage, per_layer.config()["storage"]) == ("fast", {"fc1": "sparse", "fc2": "fast"})
    assert _context(build_parser().parse_args(["evaluate", "--storage", "fast"])).workdir == fast.workdir
    assert fast.cache_dir("train") == base.cache_dir("train")


def test_every_flow_shares_the_training_cache():
    """make bench and make ablation (plain contexts) find the network make sim trained."""
    from spikeloom.model.train import TrainConfig

    run = _context(build_parser().parse_args(["run"]))
    plain = steps.Context(build=run.build, train=TrainConfig())
    for stage in ("train", "quantize"):
        assert plain.cache_dir(stage) == run.cache_dir(stage) == run.build / "cache" / run.key(stage)


def test_sections_filled_by_several_commands_merge(tmp_path):
    """train after run on one folder: preflight's hardware estimate (run's) stays beside train's data."""
    build = tmp_path / "b"
    ctx = _context(build_parser().parse_args(["run", "--build", str(build)]))
    ctx.workdir.mkdir(parents=True)
    old = {"run": {"model_key": ctx.model_key, "config_hash": ctx.config_hash},
           "preflight": {"data": {"n_test": 1}, "hardware": {"weights": 7}}, "model": {"accuracy_fixed_t": 0.5}}
    (ctx.workdir / "report.json").write_text(json.dumps(old))
    ctx.report = {"preflight": {"data": {"n_test": 360}}, "model": {"accuracy_float": 0.9}}
    ctx.open(log=lambda *a: None)
    assert ctx.report["preflight"] == {"data": {"n_test": 360}, "hardware": {"weights": 7}}
    assert ctx.report["model"] == {"accuracy_fixed_t": 0.5, "accuracy_float": 0.9}
