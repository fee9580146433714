"""The Python API (``api/``, the package ``spikeloom``): the README's example run as written, each
function against the code it wraps, a lazy import, and the package mapping of pyproject.toml in
the editable install and in a wheel."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import spikeloom
from spikeloom.model import golden, modelfile
from spikeloom.model.errors import ConfigError, InputError, ModelFileError, SpikeloomError
from spikeloom.model.randnet import random_inputs, random_model

ROOT = Path(__file__).resolve().parent.parent


def readme_example():
    """The first ```python block of README.md's "Python API" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Python API\n"):]
    section = section[:section.index("\n## ", 1)]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.cosim
def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The example on a small model (model.slm in the working folder); then energy() and
    generate() against what its cosim() produced."""
    # on the example's uniform random images: exits at 1, 2 and 4 timesteps, three classes
    m = random_model((20, 13, 5), seed=2, exit_threshold=10, t_max=4, input_shape=(1, 4, 5), density=0.5)
    modelfile.save(m, tmp_path / "model.slm")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(readme_example(), "README.md (Python API)", "exec"), scope)  # noqa: S102
    out = capsys.readouterr().out
    assert out.splitlines()[0] == spikeloom.__version__
    r, x = scope["r"], scope["x"]
    assert r.n_images == len(x) == 8 and r.mismatches == 0 and r.build == Path("build/api")
    assert (r.cycles >= r.cycle_bound).all() and len(set(r.timesteps.tolist())) > 2
    # the RTL's counters equal the golden model's: energy() (golden counts) gives the same dynamic
    # energy; its leakage follows the cycle model's cycles, without the bench's stream stalls
    e = spikeloom.energy(m, x, r.build / "rtl_n4")
    assert e["source"] == "golden model counts + cycle model"
    assert e["per_inference_nj"] == r.energy["golden_per_inference_nj"]
    assert {k: v for k, v in e["breakdown"].items() if k != "leakage"} == \
        pytest.approx({k: v for k, v in r.energy["breakdown"].items() if k != "leakage"}, rel=1e-12)
    assert e["breakdown"]["leakage"] < r.energy["breakdown"]["leakage"]
    out = spikeloom.generate(m, pes=4, out=tmp_path / "gen")
    assert (out / "spikeloom_accel.v").read_text() == (r.build / "rtl_n4" / "spikeloom_accel.v").read_text()


def test_golden_is_the_golden_model(tmp_path):
    m = random_model((20, 13, 5), seed=5, exit_threshold=20, t_max=4)
    path = modelfile.save(m, tmp_path / "m.slm")
    x = random_inputs(m, 12)
    g = spikeloom.golden(str(path), x.reshape(12, 1, 20), pes=3)
    from spikeloom.hw.plan import Plan

    want = golden.run(m, x, sparse=Plan(m, 3).sparse_layers)
    assert (g.pred == want.pred).all() and (g.exit_t == want.exit_t).all() and (g.z == want.z).all()
    assert g.storage() == want.storage()
    fixed = spikeloom.golden(m, x, exit_threshold=10 ** 6)
    assert (fixed.exit_t == m.t_max).all()


def test_api_errors_name_the_problem(tmp_path):
    m = random_model((6, 5, 3), seed=1, input_bits=3)
    with pytest.raises(InputError, match="7 values per image"):
        spikeloom.golden(m, np.zeros((2, 7), np.int64))
    with pytest.raises(InputError, match=r"\[0, 7\]"):
        spikeloom.golden(m, np.full((2, 6), 8))
    with pytest.raises(ConfigError, match=r"pes = 0"):
        spikeloom.generate(m, pes=0, out=tmp_path / "g")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine\n")
    with pytest.raises(ConfigError, match="not empty"):
        spikeloom.generate(m, pes=2, out=tmp_path / "mine")
    with pytest.raises(ConfigError, match="--input X.npy or --dataset"):
        spikeloom.cosim(m, build=tmp_path / "c")
    with pytest.raises(ModelFileError, match="does not exist"):
        spikeloom.load(tmp_path / "none.slm")
    # energy on hardware generated for another model: refused, not a wrong figure
    other = random_model((6, 4, 3), seed=2, input_bits=3)
    spikeloom.generate(other, pes=2, out=tmp_path / "other")
    with pytest.raises(SpikeloomError, match="written for model"):
        spikeloom.energy(m, np.ones((2, 6), np.int64), tmp_path / "other")


def test_import_is_lazy_and_versioned():
    """``import spikeloom`` in a fresh interpreter: no torch, no Amaranth; the installed version."""
    from importlib.metadata import version

    code = ("import sys, spikeloom; print(spikeloom.__version__); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'amaranth', 'cocotb')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [version("spikeloom"), "[]"]
    assert set(spikeloom.__all__) == {"__version__", "load", "golden", "generate", "cosim", "energy"}
    for name in spikeloom.__all__[1:]:
        assert getattr(spikeloom, name).__doc__, name


def test_package_mapping():
    """pyproject.toml maps the package spikeloom to api/ and each subpackage to its folder; the
    installed package (editable here) is those folders."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = cfg["package-dir"]
    assert dirs == {"spikeloom": "api", "spikeloom.model": "model", "spikeloom.hw": "hw", "spikeloom.sim": "sim",
                    "spikeloom.flows": "flows"}
    assert sorted(cfg["packages"]) == sorted(dirs)
    import importlib

    for pkg, folder in dirs.items():
        assert (ROOT / folder / "__init__.py").is_file()
        assert Path(importlib.import_module(pkg).__file__).resolve() == ROOT / folder / "__init__.py"


# a few seconds: a wheel of a copy of the package folders, installed with --target
def test_wheel_install(tmp_path):
    """A non-editable install (a wheel, pip install --target): the API and its subpackages import
    from the install, not from this checkout."""
    import shutil

    src = tmp_path / "src"  # a copy: setuptools writes build/ and *.egg-info into the tree it builds
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for folder in cfg["package-dir"].values():
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "w"), str(src)],
                   check=True, timeout=600, cwd=tmp_path)
    wheel = next((tmp_path / "w").glob("spikeloom-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=600)
    code = ("import spikeloom, spikeloom.model.golden, spikeloom.flows.cosim, spikeloom.sim.runner, spikeloom.hw.plan; "
            "print(spikeloom.__file__); print(spikeloom.model.golden.__file__); print(spikeloom.flows.cosim.__file__); "
            "print(callable(spikeloom.cosim))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(Path(p).resolve().is_relative_to(site.resolve()) for p in lines[:3]), lines
    assert lines[3] == "True"
