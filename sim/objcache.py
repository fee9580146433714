"""A compile cache for the run-time library of every Verilator build (Verilator's ``OBJCACHE`` hook).

Every Verilator build compiles the same run-time library into its own folder: Verilator's
``verilated*.cpp``. For the designs the tests build that is about three quarters of the C++
compile at ``-O0`` (the digits MLP as one file: 8.8 s without this cache, 2.1-2.4 s with it;
BENCHMARKS.md, "Verilator build time"). cocotb's ``verilator.cpp`` main includes the design's
header, so it is compiled every time (see below). The
generated makefile runs each compile as ``$(OBJCACHE) $(CXX) ... -c -o verilated.o
/path/verilated.cpp``; :func:`sim.runner.verilator_env` points ``OBJCACHE`` at this script. It
runs every compile as given, except one of a single source named by an absolute path outside the
build folder, with ``-c -o OBJ`` and ``-MMD``: the run-time library (never the design's own files).
Those objects are kept in a cache folder and copied out on the next build with the same compile.

**When an entry is used.** Its key is the SHA-256 of the compile command without the output name
(the include folders, defines, optimisation flags, the library's version path), the source's
bytes, and the compiler: its resolved path, size and modification time and what
``-dumpfullversion -dumpmachine`` prints. The entry also records every file the compile read (the
``-MMD`` dependency file: the source and every header outside the system folders) with its size
and modification time; a changed one misses, so the object is compiled again and the entry
replaced. Not kept: a compile that read a file inside the build folder, or one named by a
relative path; one whose files changed during it (or in the 2 s before it); one with coverage,
profile, split-debug or temporary-file options (:data:`UNCACHED_OPTIONS`). What it does not see:
system headers (libstdc++, libc), which change with the compiler in practice, and a new header
that would now be found first on the include path. Entries are written to a temporary folder and
renamed into place, so builds running side by side (pytest-xdist) never see half an entry. A
folder that cannot be written, a dependency file it cannot read: the build goes on uncached.

**Where.** ``SPIKELOOM_OBJCACHE``: a folder, or ``off`` for none; unset, ``$XDG_CACHE_HOME/spikeloom/
verilator-objs`` (``~/.cache/...``). It is never pruned: one entry per library file and set of
flags (about 12 entries, 7 MB, after a whole ``make test``); delete the folder to empty it.

This file is run as a script by make, outside the package: it imports only the standard library.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = "SPIKELOOM_OBJCACHE"
SOURCE_SUFFIXES = (".cpp", ".cc", ".c")
#: Options whose compile writes more than the object (coverage notes, split debug info, temporaries)
#: or its dependency file elsewhere: such compiles run as given.
UNCACHED_OPTIONS = ("--coverage", "-fprofile", "-gsplit-dwarf", "-save-temps", "-MF", "-x")
#: A file changed this recently before a compile started is not trusted to be what it read (file
#: times come from a coarser clock than the compile's start).
SETTLE_NS = 2_000_000_000


def cache_dir(environ=os.environ):
    """The cache folder (a :class:`Path`), or None when ``SPIKELOOM_OBJCACHE=off`` (or, unset, when
    there is neither ``XDG_CACHE_HOME`` nor a home folder)."""
    value = environ.get(ENV, "")
    if value.lower() == "off":
        return None
    if value:
        return Path(value)
    base = environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):  # no home folder to be found: no cache
            return None
    return Path(base) / "spikeloom" / "verilator-objs"


def _cacheable(argv, cwd):
    """``(output, source)`` of a compile this cache may serve: ``-c -o OUT SRC`` with ``-MMD`` (or
    ``-MD``), one source given by an absolute path outside ``cwd``, none of
    :data:`UNCACHED_OPTIONS`; else None."""
    if "-c" not in argv or argv.count("-o") != 1 or not {"-MMD", "-MD"} & set(argv):
        return None
    if any(a.startswith(UNCACHED_OPTIONS) for a in argv[1:]):
        return None
    i = argv.index("-o")
    if i + 1 >= len(argv):
        return None
    out = argv[i + 1]
    sources = [a for a in argv[1:] if a.endswith(SOURCE_SUFFIXES) and not a.startswith("-")]
    if len(sources) != 1 or not os.path.isabs(sources[0]):
        return None
    src = Path(sources[0]).resolve()
    if not src.is_file() or src.is_relative_to(cwd):
        return None
    return out, src


def _stamp(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _compiler(argv):
    """What names the compiler: its resolved path and stamp, and what it says its version and
    target are (None if it cannot say: then nothing is cached)."""
    real = os.path.realpath(shutil.which(argv[0]) or argv[0])
    try:
        r = subprocess.run([argv[0], "-dumpfullversion", "-dumpmachine"], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return [real, _stamp(real), r.stdout] if r.returncode == 0 else None


def _key(argv, out, src, compiler):
    h = hashlib.sha256()
    h.update(json.dumps([[a for a in argv if a != out], compiler]).encode())
    h.update(src.read_bytes())
    return h.hexdigest()


def _dep_file(out):
    """The ``-MMD`` dependency file of output ``out`` (gcc and clang: the suffix replaced by ``.d``)."""
    return Path(out).with_suffix(".d")


def _deps(text):
    """The prerequisites of the first rule of a make dependency file as gcc writes it (``-MMD``:
    one rule; backslash line continuations; ``\\ `` a space, ``\\#`` a hash, ``$$`` a dollar)."""
    rule = text.replace("\\\n", " ").strip().split("\n", 1)[0]
    _, _, body = rule.partition(": ")
    body = body.replace("\\ ", "\0").replace("\\#", "#").replace("$$", "$")
    return [w.replace("\0", " ") for w in body.split()]


def _hit(entry, out):
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if any(_stamp(p) != stamp for p, stamp in meta["deps"]):
            return False
        tmp = Path(out).with_name(f".{Path(out).name}.{os.getpid()}.tmp")
        shutil.copyfile(entry / "obj", tmp)
        os.replace(tmp, out)
        _dep_file(out).write_text(meta["dep_text"])
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _store(root, entry, out, src, cwd, started):
    """Keep the object just compiled, if every file it read is named by an absolute path outside
    the build folder, the source among them, and none changed since the compile started."""
    try:
        text = _dep_file(out).read_text()
        deps = _deps(text)
        if str(src) not in {str(Path(p).resolve()) for p in deps if os.path.isabs(p)}:
            return
        if any(not os.path.isabs(p) or Path(p).resolve().is_relative_to(cwd) for p in deps):
            return
        stamps = []
        for p in deps:
            st = os.stat(p)
            if max(st.st_mtime_ns, st.st_ctime_ns) >= started - SETTLE_NS:
                return  # written during the compile (or just before): the object may hold the old text
            stamps.append([p, [st.st_size, st.st_mtime_ns]])
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    except (OSError, ValueError):
        return  # nothing kept: the build goes on uncached
    try:
        shutil.copyfile(out, tmp / "obj")
        (tmp / "meta.json").write_text(json.dumps({"deps": stamps, "dep_text": text}))
        tmp.chmod(0o755)
        shutil.rmtree(entry, ignore_errors=True)  # a stale entry (a header changed)
        os.rename(tmp, entry)
    except OSError:
        pass  # another build stored it first, or the folder is read-only: nothing is lost
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(argv):
    try:
        return subprocess.call(argv)
    except OSError as e:
        print(f"objcache: cannot run {argv[0]}: {e.strerror or e}", file=sys.stderr)
        return 127


def main(argv):
    """Run the compile ``argv`` (make's ``$(CXX) ...``), from the cache when it can; its exit status."""
    if not argv:
        print("objcache: no compile command given", file=sys.stderr)
        return 2
    cwd = Path.cwd().resolve()
    root = cache_dir()
    job = _cacheable(argv, cwd) if root is not None else None
    compiler = _compiler(argv) if job is not None else None
    if compiler is None:
        return _run(argv)
    out, src = job
    try:
        root.mkdir(parents=True, exist_ok=True)
        entry = root / _key(argv, out, src, compiler)
    except OSError:
        return _run(argv)
    if _hit(entry, out):
        return 0
    started = time.time_ns()
    rc = _run(argv)
    if rc == 0:
        _store(root, entry, out, src, cwd, started)
    return rc


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
