"""Progress and timing of the long steps (flows/progress.py): plain lines every few seconds when the
output is not a terminal, a bar when it is, each step's wall time in the report, and the build step
naming its log."""

import io
import json
import re
import threading
import time

import pytest

from spikeloom.flows import progress
from spikeloom.model.errors import ConfigError, SpikeloomError

from test_cli import assert_clean_error, spikeloom_here

STATUS = re.compile(r"^\[(\w+)\] (.*), (\d+(\.\d)?) s$")


def status_lines(text, name):
    return [m for m in map(STATUS.match, text.splitlines()) if m and m[1] == name]


def test_a_silent_step_prints_a_line_every_interval_in_a_log():
    out = io.StringIO()
    timing = {}
    with progress.step("build", timing, "compiling", stream=out, every=0.1, tty=False):
        time.sleep(0.65)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[build] compiling" and re.fullmatch(r"\[build\] done in \d\.\d s", lines[-1])
    ticks = status_lines(out.getvalue(), "build")
    assert 3 <= len(ticks) <= 8, lines  # about one per 0.1 s, none skipped for long
    assert [float(m[3]) for m in ticks] == sorted(float(m[3]) for m in ticks)
    assert 0.6 <= timing["build"] < 5


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.05")
    assert progress.interval() == 0.05
    out = io.StringIO()
    with progress.step("energy", None, "counting", stream=out, tty=False):
        time.sleep(0.3)
    assert len(status_lines(out.getvalue(), "energy")) >= 3
    for bad in ("0", "-1", "fast", "nan", "1e9"):
        monkeypatch.setenv(progress.INTERVAL_ENV, bad)
        with pytest.raises(ConfigError, match=progress.INTERVAL_ENV):
            progress.interval()
    monkeypatch.delenv(progress.INTERVAL_ENV)
    assert progress.interval() == progress.DEFAULT_INTERVAL


def test_training_epochs_show_in_a_log_and_on_a_terminal():
    from spikeloom.model.data import load_dataset
    from spikeloom.model.config import NeuronConfig
    from spikeloom.model.train import TrainConfig, train_float

    split = load_dataset("digits")
    cfg = TrainConfig(epochs=3, t_max=2, batch_size=256)
    out = io.StringIO()
    with progress.step("train", {}, "mlp", stream=out, every=1e-6, tty=False) as p, p.epochs():
        train_float(split, cfg, NeuronConfig())
    epochs = [m[2] for m in status_lines(out.getvalue(), "train") if "epoch" in m[2]]
    done = [int(re.search(r"epoch (\d)/3", e)[1]) for e in epochs]
    assert all(e.startswith("train (float): epoch ") for e in epochs) and done == sorted(done), epochs
    assert {1, 2, 3} <= set(done), out.getvalue()  # every epoch, as it ends
    assert all(re.search(r"\(loss \d\.\d{3}, val \d\.\d{3}\)$", e) for e, k in zip(epochs, done) if k), epochs
    # on a terminal: a tqdm bar, redrawn in place, and no plain status lines
    tty = io.StringIO()
    with progress.step("train", {}, "mlp", stream=tty, every=1e-6, tty=True) as p, p.epochs():
        train_float(split, cfg, NeuronConfig())
    bar = tty.getvalue()
    assert "\r[train] train (float):" in bar and "/3 [" in bar and "epoch/s" in bar, bar
    assert not status_lines(bar, "train")
    # outside a step, training shows no bar of ours
    from spikeloom.model import train
    assert train.EPOCH_BAR.get() is None


def test_phases_time_each_step_and_a_failed_one_records_nothing():
    out, timing = io.StringIO(), {}
    with progress.Phases(timing, stream=out, every=10, tty=False) as phase:
        phase("build", "compiling; log: x/build.log")
        time.sleep(0.2)
        phase("cosim", "two images")
        time.sleep(0.1)
    assert set(timing) == {"build", "cosim"} and timing["build"] >= 0.2 and timing["cosim"] >= 0.1
    assert out.getvalue().splitlines()[0] == "[build] compiling; log: x/build.log"
    with pytest.raises(ValueError, match="boom"):
        with progress.Phases(timing, stream=out, every=10, tty=False) as phase:
            phase("energy", "x")
            raise ValueError("boom")
    assert "energy" not in timing and "[energy] stopped after" in out.getvalue()
    assert not [t for t in threading.enumerate() if t.name.startswith("progress-")]  # no ticker left running


def test_a_run_in_a_log_prints_periodic_lines_and_its_timing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.05")
    r = spikeloom_here(capsys, "run", "--epochs", "3", "--qat-epochs", "2", "--t-max", "2", "--no-cosim",
                       "--build", tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("train", "quantize", "evaluate"):
        assert status_lines(r.stdout, name), name
        assert re.search(rf"^\[{name}\] done in \d+(\.\d)? s$", r.stdout, re.M), name
    assert any("train (QAT): epoch " in m[2] for m in status_lines(r.stdout, "quantize"))
    table = r.stdout[r.stdout.index("step      wall time (s)"):]
    assert [ln.split()[0] for ln in table.splitlines()[2:6]] == ["train", "quantize", "evaluate", "total"]
    rep = json.loads((tmp_path / "report.json").read_text())
    assert set(rep["timing"]) == {"train", "quantize", "evaluate", "total"}
    assert rep["timing"]["total"] >= rep["timing"]["train"] + rep["timing"]["quantize"] + rep["timing"]["evaluate"]


def test_a_bad_interval_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "soon")
    r = spikeloom_here(capsys, "run", "--epochs", "1", "--no-cosim", "--build", tmp_path / "b")
    assert_clean_error(r, progress.INTERVAL_ENV, "'soon'")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("var,value", [("SPIKELOOM_VERILATOR_OPT", "-O9"), ("SPIKELOOM_OBJCACHE", "FILE")])
def test_a_bad_verilator_setting_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, var, value):
    if value == "FILE":  # a file where the compile cache's folder should be
        (tmp_path / "f").write_text("x")
        value = str(tmp_path / "f")
    monkeypatch.setenv(var, value)
    r = spikeloom_here(capsys, "run", "--epochs", "1", "--build", tmp_path / "b")
    assert_clean_error(r, var, repr(value))
    assert not (tmp_path / "b").exists()


def test_a_failed_build_names_its_log_which_exists(tmp_path):
    from spikeloom.sim.runner import build

    bad = tmp_path / "broken.v"
    bad.write_text("module spikeloom_accel(input clk);\n  this is not verilog\nendmodule\n")
    calls = []
    with pytest.raises(SpikeloomError) as e:
        build(bad, tmp_path / "sim_build", "verilator", phase=lambda *a: calls.append(a))
    log = (tmp_path / "sim_build" / "build.log").resolve()
    assert calls == [("build", f"verilator build of spikeloom_accel (broken.v); log: {log}")]
    assert log.is_file() and "syntax error" in log.read_text()
    assert f"see {log}" in str(e.value) and "syntax error" in str(e.value) and "\n" not in str(e.value)
