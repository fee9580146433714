"""The command line: every kind of bad input ends with a clear message and exit status 2."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from spikeloom.model import modelfile
from spikeloom.model.randnet import random_model


def spikeloom(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "spikeloom.flows.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def spikeloom_here(capsys, *args):
    """``spikeloom ARGS`` run in this process (no interpreter start-up per call): the same exit
    status and output as :func:`spikeloom`; an unexpected exception fails the test instead of
    printing a traceback."""
    from spikeloom.flows.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def assert_clean_error(r, *needles):
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith("spikeloom: error:"), r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


@pytest.fixture
def model_path(tmp_path):
    return modelfile.save(random_model((6, 5, 3), seed=1, input_bits=3), tmp_path / "m.slm")


def test_help():
    r = spikeloom("--help")
    assert r.returncode == 0 and "run" in r.stdout and "inspect" in r.stdout


def test_version_is_the_installed_package_version():
    from importlib.metadata import version

    r = spikeloom("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"spikeloom {version('spikeloom')}", r


def test_a_closed_output_pipe_ends_quietly(model_path):
    """``spikeloom inspect M | head -0``: the reader is gone before the first line; no traceback,
    exit status 141 (128 + SIGPIPE, as a shell reports it)."""
    p = subprocess.Popen([sys.executable, "-m", "spikeloom.flows.cli", "inspect", str(model_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=300) == 141 and err == "", err



def test_inspect_ok(model_path, capsys):
    r = spikeloom_here(capsys, "inspect", model_path)
    assert r.returncode == 0 and "fc1" in r.stdout


def test_truncated_model_file(model_path):
    """Through a real process, like test_help: the installed entry point prints one line, no traceback."""
    model_path.write_bytes(model_path.read_bytes()[:100])
    assert_clean_error(spikeloom("inspect", model_path), "m.slm", "truncated or corrupted")


def test_golden_input_of_wrong_shape(model_path, tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 7), np.int64))
    assert_clean_error(spikeloom_here(capsys, "golden", model_path, "--input", x), "7 values per image", "expects 6")
    np.save(x, np.full((2, 6), 9, np.int64))
    assert_clean_error(spikeloom_here(capsys, "golden", model_path, "--input", x), "[0, 7]")
    np.save(x, np.ones((2, 6), np.int64))
    r = spikeloom_here(capsys, "golden", model_path, "--input", x)
    assert r.returncode == 0 and '"pred"' in r.stdout


def test_dataset_path_errors(tmp_path, capsys):
    assert_clean_error(spikeloom_here(capsys, "train", "--dataset", f"folder:{tmp_path / 'missing'}", "--build", tmp_path),
                       "missing", "does not exist")
    (tmp_path / "empty").mkdir()
    assert_clean_error(spikeloom_here(capsys, "train", "--dataset", f"folder:{tmp_path / 'empty'}", "--build", tmp_path),
                       "empty")


def test_bit_width_out_of_range(tmp_path, capsys):
    assert_clean_error(spikeloom_here(capsys, "quantize", "--weight-bits", "1", "--build", tmp_path),
                       "--weight-bits = 1", "[2, 16]")


def test_generate_pes_out_of_range(model_path, tmp_path, capsys):
    assert_clean_error(spikeloom_here(capsys, "generate", model_path, "--pes", "0", "-o", tmp_path / "g"), "--pes = 0", "[1, 64]")


def test_generate_writes_verilog(model_path, tmp_path, capsys):
    r = spikeloom_here(capsys, "generate", model_path, "--pes", "3", "-o", tmp_path / "g")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "g" / "spikeloom_accel.v").read_text().count("module ") >= 2
    assert (tmp_path / "g" / "ports.json").exists()


def test_export_folder(model_path, tmp_path, capsys):
    r = spikeloom_here(capsys, "export", model_path, "--pes", "2", "-o", tmp_path / "x")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "x" / "rtl" / "spikeloom_top.v").exists() and (tmp_path / "x" / "README.md").exists()


def test_golden_storage_option_errors(model_path, tmp_path, capsys):
    """In this process: each case is a parse and a check, not an interpreter start-up."""
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 6), np.int64))
    golden = ("golden", model_path, "--input", x, "--counters")
    assert_clean_error(spikeloom_here(capsys, *golden, "--pes", "65"), "--pes = 65", "[1, 64]")
    ports = tmp_path / "g" / "ports.json"
    assert_clean_error(spikeloom_here(capsys, *golden, "--pes", "2", "--ports", ports), "--pes 2", "--ports", "give one")
    assert_clean_error(spikeloom_here(capsys, *golden, "--ports", ports), f"--ports {ports}", "cannot read")
    assert spikeloom_here(capsys, "generate", model_path, "--pes", "3", "-o", tmp_path / "g").returncode == 0
    r = spikeloom_here(capsys, *golden, "--ports", ports)
    assert r.returncode == 0 and '"n_pe": 3' in r.stdout, r.stderr
    good = ports.read_text()
    ports.write_text(good[:200])
    assert_clean_error(spikeloom_here(capsys, *golden, "--ports", ports), f"--ports {ports}", "not JSON")
    desc = json.loads(good)
    ports.write_text(json.dumps({**desc, "sparse_layers": desc["sparse_layers"] + [desc["layers"][0]["name"]]}))
    assert_clean_error(spikeloom_here(capsys, *golden, "--ports", ports), f"--ports {ports}", "sparse_layers")
    ports.write_text(good.replace('"n_pe": 3', '"n_pe": 99'))
    assert_clean_error(spikeloom_here(capsys, *golden, "--ports", ports), f"--ports {ports}: n_pe = 99", "[1, 64]")
    other = modelfile.save(random_model((6, 4, 3), seed=2, input_bits=3), tmp_path / "other.slm")
    assert spikeloom_here(capsys, "generate", other, "--pes", "3", "-o", tmp_path / "o").returncode == 0
    assert_clean_error(spikeloom_here(capsys, *golden, "--ports", tmp_path / "o" / "ports.json"), "--ports", "written for model")


def test_neuron_option_errors(tmp_path, capsys):
    """Each bad neuron option is one line naming the option and what it allows (nothing trains)."""
    def bad(*args):
        return spikeloom_here(capsys, "train", "--build", tmp_path, *args)
    assert_clean_error(bad("--beta", "1.5"), "--beta = 1.5", "[0, 1]")
    assert_clean_error(bad("--beta", "0.9", "--leak-frac", "17"), "--leak-frac = 17", "[0, 16]")
    assert_clean_error(bad("--beta", "0.9", "--leak-shift", "2"), "--beta 0.9", "--leak-shift 2", "give one")
    assert_clean_error(bad("--leak-frac", "8"), "--leak-frac 8", "give --beta")
    assert_clean_error(bad("--leak-shift", "9"), "--leak-shift = 9", "[0, 8]")
    assert_clean_error(bad("--fire", "=>"), "--fire = '=>'", "'>=', '>'")
    assert_clean_error(bad("--reset", "later"), "--reset = 'later'", "subtract_next", "subtract_recheck")
    assert_clean_error(bad("--pool", "avg"), "--pool = 'avg'", "vgg, resnet", "arch 'mlp'")
    assert_clean_error(bad("--arch", "vgg", "--pool", "min"), "--pool = 'min'", "'max', 'sum', 'avg'")
    assert not any(tmp_path.iterdir())


def test_neuron_options_make_the_neuron():
    from spikeloom.flows.cli import _context, build_parser
    from spikeloom.model.config import LayerNeuron, NeuronConfig

    def neuron(*args):
        return _context(build_parser().parse_args(["run", *args])).neuron
    assert neuron() == NeuronConfig()  # the default run's neuron is version 1's default
    assert neuron("--leak-shift", "0", "--reset", "zero") == NeuronConfig(0, "zero")
    n = neuron("--beta", "0.9", "--leak-frac", "8", "--fire", ">", "--reset", "subtract_next", "--membrane-bits", "20")
    assert n == NeuronConfig(reset="subtract_next", membrane_bits=20, fire=">", beta=0.9, leak_frac=8)
    assert n.layer_neuron() == LayerNeuron(26, 8, ">", "subtract_next") and not n.is_v1
    assert neuron("--beta", "0.95").layer_neuron() == LayerNeuron(13, 8, ">=", "subtract")


def test_inspect_names_v2_neurons_pools_and_readout(tmp_path, capsys):
    from spikeloom.model.config import LayerNeuron
    from spikeloom.model.randnet import random_conv_model

    m = random_conv_model(seed=1, pool_op="sum", readout="count",
                          neurons=[LayerNeuron(26, 8, ">", "subtract_next"), LayerNeuron(0, 0, ">=", "zero"),
                                   LayerNeuron(1, 2, ">=", "subtract")])
    r = spikeloom_here(capsys, "inspect", modelfile.save(m, tmp_path / "v2.slm"))
    assert r.returncode == 0, r.stderr
    assert "(format v2)" in r.stdout and "neuron per layer, 14-bit membranes" in r.stdout
    assert "spike-count readout" in r.stdout and "sum pool 2" in r.stdout
    assert "leak a = 26, f = 8 (beta 0.898438), fire '>', reset subtract_next" in r.stdout
    assert "leak a = 0, f = 0 (beta 1), fire '>=', reset zero" in r.stdout
    r = spikeloom_here(capsys, "inspect", modelfile.save(random_model((6, 5, 3), seed=1), tmp_path / "v1.slm"))
    assert "input 6 at " in r.stdout and "neuron leak shift 1, reset subtract, 16-bit membranes, exit" in r.stdout
    assert r.stdout.splitlines()[0].count("(") == 1  # "(format v1)": plain text, no Python reprs
    assert "leak a" not in r.stdout


def _subparsers():
    import argparse

    from spikeloom.flows.cli import build_parser

    p = build_parser()
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_option_has_help_and_states_its_default():
    """`spikeloom CMD --help` explains every argument; an option with a default says what it is."""
    for name, sp in _subparsers().items():
        text = sp.format_help()
        for act in sp._actions:
            assert act.help and act.help.strip(), (name, act.option_strings or act.dest)
            d = act.default
            if act.option_strings and d not in (None, False) and act.nargs != 0 and act.dest != "help":
                line = sp._get_formatter()._get_help_string(act)
                assert "default" in line, (name, act.option_strings, line)
        assert "--help" in text


def test_pipeline_subcommands_take_only_their_steps_options(capsys):
    """train does not offer quantization or hardware options; evaluate offers --pes (its counters) but no
    co-simulation; run offers them all. An option given to the wrong subcommand is one line naming the
    subcommands that take it."""
    subs = _subparsers()

    def opts(name):
        return {o for a in subs[name]._actions for o in a.option_strings}
    assert not opts("train") & {"--weight-bits", "--input-bits", "--target-drop", "--pes", "--sim", "--cosim-images",
                                "--no-cosim", "--tech", "--nir", "--dt", "--finetune"}
    assert {"--weight-bits", "--target-drop"} <= opts("quantize") and "--pes" not in opts("quantize")
    assert "--pes" in opts("evaluate") and not opts("evaluate") & {"--sim", "--cosim-images", "--tech", "--nir"}
    assert opts("train") | opts("evaluate") | {"--sim", "--cosim-images", "--no-cosim", "--allow-large", "--tech", "--waves",
                                               "--nir", "--dt", "--finetune"} == opts("run")
    r = spikeloom_here(capsys, "train", "--sim", "icarus")
    assert_clean_error(r, "train: unrecognized arguments: --sim icarus", "`spikeloom run`", "spikeloom train --help")
    assert len(r.stderr.splitlines()) == 1
    assert_clean_error(spikeloom_here(capsys, "run", "--pes", "many"), "run: argument --pes: invalid int value: 'many'")


def test_golden_prints_one_shape_with_class_names_and_scores(tmp_path, capsys):
    """With or without --counters the same keys; per image the class index and name, the exit step and
    the output scores at the exit (their first arg-max is the class)."""
    from dataclasses import replace

    from spikeloom.model import golden

    m = replace(random_model((6, 5, 3), seed=1, input_bits=3), classes=("cat", "dog", "owl"))
    path = modelfile.save(m, tmp_path / "m.slm")
    x = np.random.default_rng(0).integers(0, 8, (5, 6))
    np.save(tmp_path / "x.npy", x)
    plain = json.loads(spikeloom_here(capsys, "golden", path, "--input", tmp_path / "x.npy").stdout)
    full = json.loads(spikeloom_here(capsys, "golden", path, "--input", tmp_path / "x.npy", "--counters").stdout)
    assert plain.keys() == full.keys() and plain["counters"] is None and full["counters"]
    assert plain["results"] == full["results"] and plain["classes"] == ["cat", "dog", "owl"]
    ref = golden.run(m, x, sparse=())
    for i, r in enumerate(plain["results"]):
        assert r["pred"] == ref.pred[i] and r["timesteps"] == ref.exit_t[i]
        assert r["class"] == plain["classes"][r["pred"]]
        assert r["scores"] == ref.z[ref.exit_t[i] - 1, i].tolist() and int(np.argmax(r["scores"])) == r["pred"]


def test_readme_command_examples_use_real_options():
    """Every `spikeloom CMD ...` and `make sim ... ARGS="..."` example in README.md names options that CMD
    takes, and the files an example passes to --tech exist."""
    import re
    import shlex

    subs = _subparsers()
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    seen = 0
    for line in readme.splitlines():
        for cmd, rest in re.findall(r"spikeloom ([a-z][a-z-]+)((?: [^`#]*)?)", line):
            if cmd not in subs:
                continue
            takes = {o for a in subs[cmd]._actions for o in a.option_strings}
            for o in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                assert o in takes, (cmd, o, line)
                seen += 1
        for args in re.findall(r'make sim[^`]*ARGS="([^"]*)"', line):
            from spikeloom.flows.cli import build_parser

            a, extra = build_parser().parse_known_args(["run", *shlex.split(args)])
            assert not extra, (line, extra)
            if a.tech is not None:
                assert (Path(__file__).parents[1] / a.tech).is_file(), line
            seen += 1
    assert seen > 20


@pytest.mark.parametrize("module, args, needle", [
    ("bench", ["--pes", "1,x"], "--pes = 'x' must be an integer"),
    ("bench", ["--images"], "argument --images: expected one argument"),
    ("ablation", ["--bogus"], "spikeloom-ablation: unrecognized arguments: --bogus"),
    ("synth", ["--target", "vu9p"], "argument --target: invalid choice: 'vu9p'"),
    ("formal", ["--jobs", "x", "--nope"], "spikeloom-formal: unrecognized arguments: --nope"),
    ("fuzz", ["--networks", "many", "--x"], "spikeloom-fuzz: unrecognized arguments: --x"),
    ("prune", ["--rows"], "argument --rows: expected one argument"),
])
def test_make_target_flows_parse_errors_are_one_line(capsys, module, args, needle):
    """The flows behind make targets (make bench, synth, formal, ...) parse like `spikeloom`: a bad
    option is one line naming it, exit 2, before any work."""
    import importlib

    main = importlib.import_module(f"spikeloom.flows.{module}").main
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("spikeloom: error:") and len(err.splitlines()) == 1, err
    assert needle in err, err
    if "argument" in needle:  # argparse's own checks name where the help is
        assert f"see `spikeloom-{module} --help`" in err, err


def test_hardware_and_cosimulation_options_are_checked_even_when_unused(tmp_path, capsys):
    """evaluate's --pes and run --no-cosim's --sim / --cosim-images are recorded in the run: a bad
    value is refused, one line, before any work."""
    assert_clean_error(spikeloom_here(capsys, "evaluate", "--pes", "0", "--build", tmp_path), "--pes = 0", "[1, 64]")
    assert_clean_error(spikeloom_here(capsys, "run", "--no-cosim", "--sim", "bogus", "--build", tmp_path),
                       "--sim = 'bogus'")
    assert_clean_error(spikeloom_here(capsys, "run", "--no-cosim", "--cosim-images", "-5", "--build", tmp_path),
                       "--cosim-images = -5")
    assert not any(tmp_path.iterdir())


def test_storage_option(model_path, tmp_path, capsys):
    """``--storage``: a rule, a storage, or LAYER=S per layer; every bad value one line, before any work."""
    gen = ("generate", model_path, "--pes", "2", "-o")
    assert_clean_error(spikeloom_here(capsys, *gen, tmp_path / "a", "--storage", "quick"), "--storage = 'quick'",
                       "auto, fast, dense, sparse")
    assert_clean_error(spikeloom_here(capsys, *gen, tmp_path / "a", "--storage", "fc1=dense,fc2"), "'fc2' is not LAYER=S")
    assert_clean_error(spikeloom_here(capsys, *gen, tmp_path / "a", "--storage", "fc1=slow"), "layer 'fc1' = 'slow'")
    assert_clean_error(spikeloom_here(capsys, *gen, tmp_path / "a", "--storage", "fc9=dense"),
                       "--storage names layer 'fc9'", "fc1, fc2")
    assert_clean_error(spikeloom_here(capsys, "export", model_path, "-o", tmp_path / "a", "--storage", "fc9=dense"),
                       "--storage names layer 'fc9'")
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 6), np.int64))
    assert_clean_error(spikeloom_here(capsys, "cosim", model_path, "--input", x, "--build", tmp_path / "a",
                                      "--storage", "fc1=dense,fc1=sparse"), "layer 'fc1' is given twice")
    assert_clean_error(spikeloom_here(capsys, "run", "--no-cosim", "--storage", "zero", "--build", tmp_path / "a"),
                       "--storage = 'zero'")
    # the layer names of a network still to be trained: against its untrained shape, before training
    assert_clean_error(spikeloom_here(capsys, "run", "--no-cosim", "--storage", "fc9=dense", "--build", tmp_path / "a"),
                       "--storage names layer 'fc9'", "fc1, fc2, fc3")
    assert not (tmp_path / "a").exists()
    r = spikeloom_here(capsys, *gen, tmp_path / "g", "--storage", "fc1=fast,fc2=sparse")
    assert r.returncode == 0, r.stderr
    layers = json.loads((tmp_path / "g" / "ports.json").read_text())["layers"]
    assert [(ly["storage_rule"], ly["storage"] if ly["storage_rule"] != "fast" else "-") for ly in layers] == \
        [("fast", "-"), ("sparse", "sparse")]
    assert all(ly["dense_cycles"] > 0 and ly["sparse_cycles"] > 0 for ly in layers)


def test_single_file_outputs_never_replace_an_input_or_a_users_file(model_path, tmp_path, capsys):
    """``export-nir -o``, ``import -o`` and ``prune --out`` write one file: it may replace a file of
    the same kind that spikeloom wrote (a rerun), but never the command's own input or a file it
    did not write (an outside audit found all three replacing them, even with exit 0)."""
    user = tmp_path / "notes.txt"
    user.write_text("mine\n")
    before = model_path.read_bytes()
    assert_clean_error(spikeloom_here(capsys, "export-nir", model_path, "-o", model_path),
                       f"-o {model_path}: is the input model")
    assert_clean_error(spikeloom_here(capsys, "export-nir", model_path, "-o", user),
                       f"-o {user}: exists and is not a NIR graph spikeloom wrote")
    g = tmp_path / "g.nir"
    for _ in range(2):   # the second run replaces the graph the first wrote
        assert spikeloom_here(capsys, "export-nir", model_path, "-o", g).returncode == 0
    assert_clean_error(spikeloom_here(capsys, "import", g, "-o", g, "--dt", "1e-4"), f"-o {g}: is the input graph")
    assert_clean_error(spikeloom_here(capsys, "import", g, "-o", user, "--dt", "1e-4"),
                       f"-o {user}: exists and is not a model file spikeloom wrote")
    m2 = tmp_path / "m2.slm"
    for _ in range(2):
        assert spikeloom_here(capsys, "import", g, "-o", m2, "--dt", "1e-4").returncode == 0
    assert_clean_error(spikeloom_here(capsys, "prune", "--out", user, "--build", tmp_path / "pb"),
                       f"--out {user}: exists and is not a pruning report spikeloom wrote")
    assert user.read_text() == "mine\n" and model_path.read_bytes() == before
    # a report of any version of make prune may be replaced by the next run (before --seeds: no
    # "seeds" or "summary")
    from spikeloom.flows.prune import is_report

    old = tmp_path / "old.json"
    old.write_text('{"dataset": "digits", "net": "vgg", "n_pe": 8, "image_size": null, "rows": []}')
    assert is_report(old) and not is_report(user)


def test_an_empty_path_is_refused_not_taken_as_the_current_folder(model_path, tmp_path, capsys, monkeypatch):
    """``-o ""`` was ``Path("")``, the current folder: ``generate`` and ``export`` wrote into it."""
    monkeypatch.chdir(tmp_path)
    for args in (("generate", model_path, "-o", ""), ("export", model_path, "-o", " "), ("inspect", "")):
        assert_clean_error(spikeloom_here(capsys, *args), "is an empty path")
    assert_clean_error(spikeloom_here(capsys, "gpu-baseline", model_path, "--dataset", ""), "dataset ''", "no path given")
    assert_clean_error(spikeloom_here(capsys, "gpu-baseline", model_path, "--runs", str(10 ** 12)), "--runs", "[1, 100000]")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([model_path.name])
