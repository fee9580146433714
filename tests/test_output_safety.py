"""Nothing a user keeps is ever lost (:mod:`spikeloom.flows.output`): ``generate``/``export`` into
folders with the user's own files, output paths that cannot be folders, an export that fails
half-way, and cache writes killed mid-write (SIGKILL) whose next run neither reuses a partial
entry nor crashes."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from spikeloom.flows import export as export_flow
from spikeloom.flows import output, steps
from spikeloom.flows.cli import main
from spikeloom.model import modelfile
from spikeloom.model.randnet import random_model

MARKER = output.MARKER


def spikeloom_here(capsys, *args):
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("spikeloom: error:") and r.stderr.count("\n") == 1, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def tree(folder):
    """Every file under ``folder`` (hidden ones too) with its digest."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def listed(folder):
    return set(json.loads((Path(folder) / MARKER).read_text())["files"])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return (modelfile.save(random_model((6, 5, 3), seed=1, input_bits=3), d / "m.slm"),
            modelfile.save(random_model((6, 4, 3), seed=2, input_bits=3), d / "m2.slm"))


@pytest.fixture
def project(tmp_path):
    """A user's project folder: their own Verilog, memory file, notes and README."""
    p = tmp_path / "proj"
    for rel, text in (("rtl/my_top.v", "module my_top; endmodule\n"), ("mem/my_rom.hex", "00\n01\n"),
                      ("notes.txt", "keep me\n"), ("constraints/board.xdc", "# mine\n")):
        (p / rel).parent.mkdir(parents=True, exist_ok=True)
        (p / rel).write_text(text)
    return p


@pytest.mark.parametrize("cmd", ["export", "generate"])
def test_a_foreign_folder_is_refused_and_untouched(capsys, models, project, cmd):
    before = tree(project)
    r = spikeloom_here(capsys, cmd, models[0], "--pes", "2", "-o", project)
    assert_one_line_error(r, f"-o {project}", "--force", MARKER)
    assert tree(project) == before
    assert sorted(os.listdir(project.parent)) == ["proj"]  # no staging folder left beside it


@pytest.mark.parametrize("cmd", ["export", "generate"])
def test_force_adds_files_and_keeps_the_users(capsys, models, project, cmd):
    mine = tree(project)
    r = spikeloom_here(capsys, cmd, models[0], "--pes", "3", "-o", project, "--force")
    assert r.returncode == 0, r.stderr
    after = tree(project)
    assert {k: after[k] for k in mine} == mine
    # the marker lists exactly what spikeloom wrote, with the command
    meta = json.loads((project / MARKER).read_text())
    assert set(meta["files"]) == set(after) - set(mine) - {MARKER}
    assert meta["command"].startswith(f"spikeloom {cmd} {models[0]} --pes 3")
    assert ("mem/pe_2_weight.hex" in meta["files"]) and not any(f.startswith(".") for f in meta["files"])
    # a second run with fewer PEs, and then the other command, into the same (now marked) folder:
    # the files of the previous output are replaced or removed, the user's stay
    for again in (cmd, "generate" if cmd == "export" else "export"):
        prev = listed(project)
        r = spikeloom_here(capsys, again, models[1], "--pes", "2", "-o", project)
        assert r.returncode == 0, r.stderr
        now = tree(project)
        assert {k: now[k] for k in mine} == mine
        assert set(now) == set(mine) | listed(project) | {MARKER}
        assert not (prev - listed(project)) & set(now)
        assert "mem/pe_2_weight.hex" not in now
    assert not [e for e in os.listdir(project) if e.startswith(output.STAGE_PREFIX)]


def test_a_marked_folder_never_loses_an_unlisted_file(capsys, models, tmp_path):
    out = tmp_path / "out"
    assert spikeloom_here(capsys, "export", models[0], "--pes", "2", "-o", out).returncode == 0
    # the user adds files, one of them under a name that a 3-PE export would write
    (out / "rtl" / "mine.v").write_text("// mine\n")
    (out / "mem" / "pe_2_weight.hex").write_text("my own weights\n")
    before = tree(out)
    for force in ((), ("--force",)):
        r = spikeloom_here(capsys, "export", models[0], "--pes", "3", "-o", out, *force)
        assert_one_line_error(r, "mem/pe_2_weight.hex", "did not write", "move")
        assert tree(out) == before
    # with the name free again the export goes through, and the other file stays
    (out / "mem" / "pe_2_weight.hex").unlink()
    assert spikeloom_here(capsys, "export", models[0], "--pes", "3", "-o", out).returncode == 0
    assert (out / "rtl" / "mine.v").read_text() == "// mine\n"
    assert "mem/pe_2_weight.hex" in listed(out)


def test_a_marker_cannot_remove_files_outside_the_folder(capsys, models, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"files": ["../victim.txt", "README.md"]}))
    assert_one_line_error(spikeloom_here(capsys, "export", models[0], "-o", out), MARKER, "not a spikeloom output marker")
    # --force takes the folder as one spikeloom did not write: nothing it did not write is removed
    assert spikeloom_here(capsys, "export", models[0], "-o", out, "--force").returncode == 0
    assert victim.read_text() == "precious\n" and "../victim.txt" not in listed(out)


def test_an_export_that_fails_half_way_changes_nothing(capsys, models, tmp_path, monkeypatch):
    def broken(*args):
        raise KeyboardInterrupt  # as Ctrl-C while the README is written

    monkeypatch.setattr(export_flow, "readme", broken)
    new = tmp_path / "a" / "b" / "new"
    r = spikeloom_here(capsys, "export", models[0], "-o", new)
    assert r.returncode == 130
    assert sorted(os.listdir(tmp_path)) == []  # neither the folder nor the parents made for it
    monkeypatch.undo()
    old = tmp_path / "old"
    assert spikeloom_here(capsys, "export", models[0], "--pes", "2", "-o", old).returncode == 0
    (old / "mine.txt").write_text("mine\n")
    before = tree(old)
    monkeypatch.setattr(export_flow, "readme", broken)
    assert spikeloom_here(capsys, "export", models[0], "--pes", "3", "-o", old).returncode == 130
    assert tree(old) == before and sorted(os.listdir(tmp_path)) == ["old"]


def test_output_paths_that_cannot_be_folders(capsys, models, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x\n")
    for cmd in ("generate", "export"):
        assert_one_line_error(spikeloom_here(capsys, cmd, models[0], "-o", f), f"-o {f}", "is a file")
        assert_one_line_error(spikeloom_here(capsys, cmd, models[0], "-o", f / "sub" / "dir"),
                              f"-o {f / 'sub' / 'dir'}", f"{f} is a file")
    assert f.read_text() == "x\n" and sorted(os.listdir(tmp_path)) == ["file.txt"]
    # run/train: refused before any data is read or any training starts
    for cmd in ("run", "train"):
        t = time.monotonic()
        assert_one_line_error(spikeloom_here(capsys, cmd, "--build", f, "--no-cosim" if cmd == "run" else "--seed=0"),
                              f"--build {f}", "is a file")
        assert_one_line_error(spikeloom_here(capsys, cmd, "--build", f / "b"), f"--build {f / 'b'}", f"{f} is a file")
        assert time.monotonic() - t < 5
    assert_one_line_error(spikeloom_here(capsys, "run", "--nir", tmp_path / "g.nir", "--dt", "1e-4", "--build", f),
                          f"--build {f}", "is a file")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc, where nobody can make a folder")
def test_an_unwritable_output_place(capsys, models):
    for cmd, opt in (("generate", "-o"), ("export", "-o"), ("train", "--build")):
        args = (cmd, models[0], opt, "/proc/spikeloom-out") if opt == "-o" else (cmd, opt, "/proc/spikeloom-out")
        assert_one_line_error(spikeloom_here(capsys, *args), f"{opt} /proc/spikeloom-out", "cannot write in /proc")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder (the /proc case above covers it)")
def test_a_read_only_folder(capsys, models, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_one_line_error(spikeloom_here(capsys, "export", models[0], "-o", ro / "x"), f"-o {ro / 'x'}",
                              f"cannot write in {ro}")
    finally:
        ro.chmod(0o755)


# ---- the training cache: entries written atomically, the key last ----

def _payload(n):
    return bytes(range(256)) * (n // 256)


def test_a_failed_cache_write_leaves_the_old_file_and_no_key(tmp_path):
    path = tmp_path / "float.pt"
    steps.store(path, "k1", lambda tmp: tmp.write_bytes(_payload(4096)))
    assert steps.cached(path, "k1")

    def half(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        steps.store(path, "k2", half)
    assert not steps.cached(path, "k1") and not steps.cached(path, "k2")
    assert path.read_bytes() == _payload(4096) and sorted(os.listdir(tmp_path)) == ["float.pt"]


CHILD = r"""
import os, sys, time
from pathlib import Path
from spikeloom.flows import steps
from spikeloom.flows import output

path, point, ready = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

def block():
    ready.write_text(point)
    time.sleep(600)

def fill(tmp):
    with open(tmp, "wb") as f:
        f.write(bytes(range(256)) * 4096)
        f.flush()
        if point == "write":
            block()
        f.write(bytes(range(256)) * 4096)

if point == "replace":
    real = os.replace
    output.os.replace = lambda a, b: (block() if Path(b) == path else None, real(a, b))[1]
if point == "key":
    real_mark = steps.mark
    steps.mark = lambda p, k: (block(), real_mark(p, k))[1]
steps.store(path, "new-key", fill)
"""


def _kill_when_ready(cmd, ready, timeout=120):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = time.monotonic()
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() - t > timeout:
            proc.kill()
            raise AssertionError(f"the child never reached its kill point: {proc.communicate()[1][-3000:]}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("point", ["write", "replace", "key"])  # in the file, before it replaces the old, before its key
def test_a_cache_write_killed_at_any_point_leaves_no_entry(tmp_path, point):
    path = tmp_path / "float.pt"
    old = _payload(1 << 16)
    steps.store(path, "old-key", lambda tmp: tmp.write_bytes(old))
    ready = tmp_path / "ready"
    _kill_when_ready([sys.executable, "-c", CHILD, str(path), point, str(ready)], ready)
    # neither the old entry nor the new one counts; the file there is whole (old or new), never a part
    assert not steps.cached(path, "old-key") and not steps.cached(path, "new-key")
    assert path.read_bytes() in (old, _payload(1 << 20) * 2)
    # the next run writes the entry again and it counts
    steps.store(path, "new-key", lambda tmp: tmp.write_bytes(b"again"))
    assert steps.cached(path, "new-key") and path.read_bytes() == b"again"


RUN_CHILD = r"""
import sys, time
from pathlib import Path
import torch
from spikeloom.flows import steps
from spikeloom.model.train import TrainConfig

build, ready = Path(sys.argv[1]), Path(sys.argv[2])
real = torch.save

def save(obj, f, *a, **kw):
    real(obj, f, *a, **kw)
    if Path(f).name.startswith(".qat.pt."):  # the QAT weights, half written: killed here
        data = Path(f).read_bytes()
        Path(f).write_bytes(data[: len(data) // 2])
        ready.write_text("qat")
        time.sleep(600)

torch.save = save
ctx = steps.Context(build=build, train=TrainConfig(epochs=1, qat_epochs=0, batch_size=512, t_max=2))
steps.step_quantize(ctx, steps.step_train(ctx, log=lambda *_: None), log=lambda *_: None)
"""


def test_a_run_killed_while_writing_its_model_then_runs_again(tmp_path):
    """A real train -> quantize run killed (SIGKILL) in the middle of writing the QAT weights: the
    next run reuses the finished float network, trains QAT again (no partial entry reused) and
    ends with a model file and both cache entries."""
    from spikeloom.model.train import TrainConfig

    ready = tmp_path / "ready"
    _kill_when_ready([sys.executable, "-c", RUN_CHILD, str(tmp_path), str(ready)], ready, timeout=300)
    ctx = steps.Context(build=tmp_path, train=TrainConfig(epochs=1, qat_epochs=0, batch_size=512, t_max=2))
    trained, quantized = ctx.cache_dir("train"), ctx.cache_dir("quantize")
    assert steps.cached(trained / "float.pt", ctx.key("train"))
    assert not steps.cached(quantized / "qat.pt", ctx.key("quantize")) and not (quantized / "model.slm").exists()
    assert not ctx.model_path.exists()
    logs = []
    _, qm = steps.step_quantize(ctx, steps.step_train(ctx, log=logs.append), log=logs.append)
    assert any("reusing" in s and "float.pt" in s for s in logs)
    assert not any("reusing" in s and ("qat.pt" in s or "model.slm" in s) for s in logs)
    assert steps.cached(quantized / "qat.pt", ctx.key("quantize"))
    assert steps.cached(quantized / "model.slm", ctx.key("quantize"))
    assert ctx.model_path.read_bytes() == (quantized / "model.slm").read_bytes()
    assert modelfile.load(ctx.model_path).name == qm.name
