"""A compile cache for the run-time library of every Verilator build (Verilator's ``OBJCACHE`` hook).

Every Verilator build compiles the same run-time library into its own folder: Verilator's
``verilated*.cpp`` and cocotb's ``verilator.cpp`` main. For the designs the tests build that is
about 85% of the C++ compile at ``-O0`` (15 of 18 s on the digits MLP, BENCHMARKS.md). The
generated makefile runs each compile as ``$(OBJCACHE) $(CXX) ... -c -o verilated.o
/path/verilated.cpp``; :func:`sim.runner.verilator_env` points ``OBJCACHE`` at this script, which
runs the compile as given except when its source lies outside the build folder (the run-time
library, never the design's own files). Those objects are kept in a cache folder and copied out
on the next build with the same compile.

**When an entry is used.** Its key is the SHA-256 of the compile command without the output name
(so the include folders, defines, optimisation flags, the library's version path), the source's
bytes and the compiler's resolved path, size and modification time. The entry also records every
header the compile read (the ``-MMD`` dependency file) with its size and modification time; a
changed header misses, so the object is compiled again and the entry replaced. A compile that
read a file inside the build folder is never kept. Entries are written to a temporary folder and
renamed into place, so builds running side by side (pytest-xdist) never see half an entry.

**Where.** ``SPIKELOOM_OBJCACHE``: a folder, or ``off`` for none; unset, ``$XDG_CACHE_HOME/spikeloom/
verilator-objs`` (``~/.cache/...``). A folder that cannot be written only means no caching.

This file is run as a script by make, outside the package: it imports only the standard library.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ENV = "SPIKELOOM_OBJCACHE"
SOURCE_SUFFIXES = (".cpp", ".cc", ".c")


def cache_dir(environ=os.environ):
    """The cache folder (a :class:`Path`), or None when ``SPIKELOOM_OBJCACHE=off``."""
    value = environ.get(ENV, "")
    if value.lower() == "off":
        return None
    if value:
        return Path(value)
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spikeloom" / "verilator-objs"


def _cacheable(argv, cwd):
    """``(output, source)`` of a compile this cache may serve (``-c -o OUT SRC``, one source
    outside ``cwd``, no ``-x``), else None."""
    if "-c" not in argv or "-x" in argv or argv.count("-o") != 1:
        return None
    i = argv.index("-o")
    if i + 1 >= len(argv):
        return None
    out = argv[i + 1]
    sources = [a for a in argv[1:] if a.endswith(SOURCE_SUFFIXES) and not a.startswith("-")]
    if len(sources) != 1:
        return None
    src = Path(sources[0])
    if not src.is_absolute():
        src = cwd / src
    src = src.resolve()
    if not src.is_file() or src.is_relative_to(cwd):
        return None
    return out, src


def _stamp(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _key(argv, out, src):
    h = hashlib.sha256()
    compiler = shutil.which(argv[0]) or argv[0]
    real = os.path.realpath(compiler)
    h.update(json.dumps([[a for a in argv if a != out], real, _stamp(real)]).encode())
    h.update(src.read_bytes())
    return h.hexdigest()


def _dep_file(out):
    """The ``-MMD`` dependency file of output ``out`` (gcc and clang: the suffix replaced by ``.d``)."""
    return Path(out).with_suffix(".d")


def _deps(text):
    """The prerequisites of the first rule of a make dependency file (``-MMD``: one rule;
    backslash line continuations, escaped spaces)."""
    rule = text.replace("\\\n", " ").strip().split("\n", 1)[0]
    _, _, body = rule.partition(": ")
    return [w.replace("\0", " ") for w in body.replace("\\ ", "\0").split()]


def _hit(entry, out, want_deps):
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if any(_stamp(p) != stamp for p, stamp in meta["deps"]):
            return False
        tmp = Path(out).with_name(f".{Path(out).name}.{os.getpid()}.tmp")
        shutil.copyfile(entry / "obj", tmp)
        os.replace(tmp, out)
        if want_deps:
            _dep_file(out).write_text(meta["dep_text"])
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _store(root, entry, out, cwd, want_deps):
    dep = _dep_file(out)
    if not want_deps or not dep.is_file():
        return  # without the header list a changed header could not be seen
    text = dep.read_text()
    paths = [Path(p) if Path(p).is_absolute() else cwd / p for p in _deps(text)]
    if any(p.resolve().is_relative_to(cwd) for p in paths):
        return
    meta = {"deps": [[str(p), _stamp(p)] for p in paths], "dep_text": text}
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        shutil.copyfile(out, tmp / "obj")
        (tmp / "meta.json").write_text(json.dumps(meta))
        shutil.rmtree(entry, ignore_errors=True)  # a stale entry (a header changed)
        os.rename(tmp, entry)
    except OSError:
        pass  # another build stored it first, or the folder is read-only: nothing is lost
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv):
    """Run the compile ``argv`` (make's ``$(CXX) ...``), from the cache when it can; its exit status."""
    if not argv:
        print("objcache: no compile command given", file=sys.stderr)
        return 2
    cwd = Path.cwd().resolve()
    root = cache_dir()
    job = _cacheable(argv, cwd) if root is not None else None
    if job is None:
        return subprocess.call(argv)
    out, src = job
    want_deps = "-MMD" in argv or "-MD" in argv
    try:
        root.mkdir(parents=True, exist_ok=True)
        entry = root / _key(argv, out, src)
    except OSError:
        return subprocess.call(argv)
    if _hit(entry, out, want_deps):
        return 0
    rc = subprocess.call(argv)
    if rc == 0:
        _store(root, entry, out, cwd, want_deps)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
