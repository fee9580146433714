"""The compile cache of the Verilator run-time library (sim/objcache.py), driven with a stand-in
compiler that logs every compile it really runs; sim/runner.py's environment that turns it on."""

import os
import shlex
import sys
from pathlib import Path

import pytest

from spikeloom.model.errors import SpikeloomError
from spikeloom.sim import objcache, runner

# A stand-in for c++: "-c -o OUT SRC" writes OUT (the source's bytes and the headers it names in
# lines "#include <PATH>", read now) and, with -MMD, OUT.d listing SRC and those headers; every
# compile appends a line to $FAKE_CXX_LOG. "#error" in the source fails the compile; "#touch"
# appends to the first header after reading it.
FAKE_CXX = r'''
import os, sys
args = sys.argv[1:]
if "-dumpfullversion" in args:
    print("1.0\nfake-linux")
    sys.exit(0)
out = args[args.index("-o") + 1]
src = [a for a in args if a.endswith(".cpp")][0]
text = open(src).read()
with open(os.environ["FAKE_CXX_LOG"], "a") as f:
    f.write(src + "\n")
if "#error" in text:
    sys.exit(1)
heads = [ln.split("<", 1)[1].rstrip(">") for ln in text.splitlines() if ln.startswith("#include <")]
with open(out, "w") as f:
    f.write(text + "".join(open(h).read() for h in heads))
if "#touch" in text:  # a header edited while the compile runs
    with open(heads[0], "a") as f:
        f.write("edited during the compile\n")
if "-MMD" in args:  # escaped as gcc does
    esc = lambda p: p.replace(" ", "\\ ").replace("#", "\\#").replace("$", "$$")
    with open(out[:-2] + ".d", "w") as f:
        f.write(esc(out) + ": " + " \\\n ".join(esc(p) for p in [src] + heads) + "\n")
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """(run, log, lib): ``run(build_dir, src, *extra)`` compiles through the cache from
    ``build_dir``; ``log()`` lists the compiles that really ran; ``lib`` is a library folder
    outside every build folder."""
    cxx = tmp_path / "fake_cxx"
    cxx.write_text(f"#!{sys.executable}\n{FAKE_CXX}")
    cxx.chmod(0o755)
    log = tmp_path / "compiles.log"
    log.touch()
    monkeypatch.setenv("FAKE_CXX_LOG", str(log))
    monkeypatch.setenv(objcache.ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(objcache, "SETTLE_NS", 0)  # the files here are written just before
    lib = tmp_path / "lib"
    lib.mkdir()

    def run(build, src, *extra, out="lib.o"):
        build.mkdir(parents=True, exist_ok=True)
        here = Path.cwd()
        os.chdir(build)
        try:
            return objcache.main([str(cxx), "-MMD", *extra, "-c", "-o", out, str(src)])
        finally:
            os.chdir(here)

    run.cxx = cxx
    return run, lambda: log.read_text().splitlines(), lib


def _entries(tmp_path):
    return [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]


def test_a_library_object_is_compiled_once_and_copied_into_later_builds(tmp_path, fake):
    run, log, lib = fake
    (lib / "h.h").write_text("header 1\n")
    src = lib / "lib.cpp"
    src.write_text(f"#include <{lib / 'h.h'}>\n")
    assert run(tmp_path / "b1", src) == 0
    assert run(tmp_path / "b2", src) == 0
    assert log() == [str(src)]  # the second build compiled nothing
    for name in ("lib.o", "lib.d"):
        assert (tmp_path / "b2" / name).read_bytes() == (tmp_path / "b1" / name).read_bytes()
    assert "header 1" in (tmp_path / "b2" / "lib.o").read_text()


def test_a_changed_header_source_or_flag_compiles_again(tmp_path, fake):
    run, log, lib = fake
    head, src = lib / "h.h", lib / "lib.cpp"
    head.write_text("header 1\n")
    src.write_text(f"#include <{head}>\n")
    run(tmp_path / "b1", src)
    head.write_text("header two\n")  # another size: the recorded stamp no longer matches
    run(tmp_path / "b2", src)
    assert "header two" in (tmp_path / "b2" / "lib.o").read_text()
    run(tmp_path / "b3", src)  # the entry was replaced: served again
    src.write_text(f"#include <{head}>\n// edited\n")
    run(tmp_path / "b4", src)
    run(tmp_path / "b5", src, "-DVM_TRACE=1")
    assert len(log()) == 4  # b1, b2, b4, b5
    assert "edited" in (tmp_path / "b4" / "lib.o").read_text()


def test_design_files_and_what_reads_them_are_never_cached(tmp_path, fake):
    run, log, lib = fake
    build = tmp_path / "b1"
    build.mkdir()
    (build / "Vtop.h").write_text("design 1\n")
    main = lib / "main.cpp"  # like cocotb's verilator.cpp: a library file that includes the design
    main.write_text(f"#include <{build / 'Vtop.h'}>\n")
    design = build / "Vtop__ALL.cpp"
    design.write_text("design\n")
    for _ in range(2):
        assert run(build, main, out="main.o") == 0
        assert run(build, design, out="all.o") == 0
    assert len(log()) == 4
    assert not _entries(tmp_path)


def test_a_failed_compile_keeps_its_status_and_stores_nothing(tmp_path, fake):
    run, log, lib = fake
    src = lib / "bad.cpp"
    src.write_text("#error no\n")
    assert run(tmp_path / "b1", src) == 1
    assert run(tmp_path / "b2", src) == 1
    assert len(log()) == 2


def test_commands_it_cannot_serve_run_as_given(tmp_path, fake, capsys):
    run, log, lib = fake
    src = lib / "lib.cpp"
    src.write_text("x\n")
    (lib / "h.h").write_text("h\n")
    rel = lib / "rel.cpp"  # a header named by a relative path: which file it is depends on the folder
    rel.write_text("#include <../lib/h.h>\n")
    for b in ("b1", "b2"):
        run(tmp_path / b, src, "-x", "c++-header")  # a precompiled header
        run(tmp_path / b, src, "--coverage")
        run(tmp_path / b, Path("..") / "lib" / "lib.cpp")  # the source by a relative path
        run(tmp_path / b, rel)
    assert len(log()) == 8
    assert not _entries(tmp_path)
    assert objcache.main([]) == 2
    assert objcache.main([str(tmp_path / "no-such-compiler"), "-c", "x.cpp"]) == 127
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no-such-compiler" in err[1]


def test_escaped_paths_a_header_edited_mid_compile_and_a_new_compiler(tmp_path, fake):
    run, log, lib = fake
    odd = lib / "a dir#with$odd"
    odd.mkdir()
    (odd / "h.h").write_text("h\n")
    src = odd / "lib.cpp"
    src.write_text(f"#include <{odd / 'h.h'}>\n")
    run(tmp_path / "b1", src)
    run(tmp_path / "b2", src)
    assert len(log()) == 1  # gcc's escapes (space, #, $) read back: served
    os.utime(run.cxx, ns=(0, 0))  # another compiler binary
    run(tmp_path / "b3", src)
    assert len(log()) == 2
    touch = lib / "touch.cpp"
    touch.write_text(f"#include <{lib / 'th.h'}>\n#touch\n")
    (lib / "th.h").write_text("before\n")
    run(tmp_path / "b4", touch)
    run(tmp_path / "b5", touch)
    assert len(log()) == 4  # what the first compile read was not what it left: not kept


def test_a_cache_it_cannot_write_only_means_no_caching(tmp_path, fake, monkeypatch):
    run, log, lib = fake
    src = lib / "lib.cpp"
    src.write_text("x\n")

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(objcache.tempfile, "mkdtemp", refuse)
    assert run(tmp_path / "b1", src) == 0 and (tmp_path / "b1" / "lib.o").is_file()
    monkeypatch.setenv(objcache.ENV, str(src))  # a file where the folder should be
    assert run(tmp_path / "b2", src) == 0 and (tmp_path / "b2" / "lib.o").is_file()
    assert len(log()) == 2


def test_the_runner_turns_the_cache_on_and_off_and_keeps_a_users_own(monkeypatch, tmp_path):
    ours = f"{shlex.quote(sys.executable)} {shlex.quote(objcache.__file__)}"
    monkeypatch.delenv("OBJCACHE", raising=False)
    monkeypatch.setenv("MAKEFLAGS", "s -j2 -- FOO=bar")  # a parent make's
    monkeypatch.setenv(objcache.ENV, str(tmp_path))
    env = runner.verilator_env()
    assert env["OBJCACHE"] == ours
    words = env["MAKEFLAGS"].split()
    assert words[:4] == ["s", "-j2", "--", "FOO=bar"] and "VM_PARALLEL_BUILDS=0" in words
    monkeypatch.setenv("MAKEFLAGS", env["MAKEFLAGS"])  # as after a first build: no word twice
    assert runner.verilator_env()["MAKEFLAGS"] == env["MAKEFLAGS"]
    monkeypatch.setenv("MAKEFLAGS", "VM_PARALLEL_BUILDS=1")  # the user's choice stays
    assert "VM_PARALLEL_BUILDS=0" not in runner.verilator_env()["MAKEFLAGS"].split()
    monkeypatch.setenv("OBJCACHE", ours)
    monkeypatch.setenv(objcache.ENV, "off")
    assert runner.verilator_env()["OBJCACHE"] == ""
    monkeypatch.setenv("OBJCACHE", "ccache")
    monkeypatch.setenv(objcache.ENV, str(tmp_path))
    assert "OBJCACHE" not in runner.verilator_env()


def test_a_cache_folder_the_user_names_must_be_a_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("OBJCACHE", raising=False)
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file", tmp_path / "file" / "below"):
        monkeypatch.setenv(objcache.ENV, str(bad))
        with pytest.raises(SpikeloomError, match=rf"^{objcache.ENV}=.*not a folder that can be written"):
            runner.verilator_env()
    monkeypatch.setenv(objcache.ENV, str(tmp_path / "new" / "cache"))  # made when missing
    assert runner.verilator_env()["OBJCACHE"] and (tmp_path / "new" / "cache").is_dir()


def test_cache_folder(monkeypatch, tmp_path):
    assert objcache.cache_dir({objcache.ENV: "OFF"}) is None
    assert objcache.cache_dir({objcache.ENV: str(tmp_path)}) == tmp_path
    assert objcache.cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "spikeloom" / "verilator-objs"

    def nowhere():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(objcache.Path, "home", nowhere)
    assert objcache.cache_dir({}) is None
