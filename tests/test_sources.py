"""The project's import graph (``flows/sources.py``): no cycles, no torch under hw/, and training
cache keys that change whenever a source file that training or quantization runs changes."""

import ast
import json
import shutil
import subprocess
import sys

import pytest

from spikeloom.flows import sources, steps


def test_graph_sees_module_level_and_lazy_imports():
    g = sources.import_graph()
    assert "spikeloom.model.pruning" in g["spikeloom.model.train"]       # relative, module level
    assert "spikeloom.hw.accel" in g["spikeloom.flows.steps"]          # absolute, inside a function
    assert "spikeloom.model.golden" in g["spikeloom.flows.steps"]      # from package import module
    assert "torch" in g["spikeloom.model.snn"] and "spikeloom.model" in g["spikeloom.model.snn"]


def test_no_import_cycles():
    assert sources.cycles() == []


def test_no_torch_under_hw():
    """hw/ is Amaranth only: neither it nor anything it imports (model/ file types, the golden
    model) pulls in torch."""
    g = sources.import_graph()
    reach = sources.closure([m for m in g if m.startswith("spikeloom.hw")])
    assert not sorted(m for m in reach if "torch" in g[m])


#: The layers of the data flow (ARCHITECTURE.md): a package imports only its own layer and those below.
LAYERS = ("model", "hw", "sim", "flows")


def test_imports_point_down_the_data_flow():
    """model/ never imports hw/, sim/ or flows/; hw/ never imports sim/ or flows/; sim/'s library
    modules never import flows/ (its test_*.py files, like tests/, may import anything)."""
    g = sources.import_graph()

    def layer(m):
        return LAYERS.index(m.split(".")[1]) if m.startswith("spikeloom.") and m.count(".") else None

    up = sorted((m, d) for m, deps in g.items() if not m.rsplit(".", 1)[-1].startswith("test_")
                for d in deps if layer(m) is not None and layer(d) is not None and layer(d) > layer(m))
    assert up == []


def test_no_hw_function_longer_than_150_lines():
    """hw/ reads as small parts: no function or method over 150 lines (def to last line)."""
    long = []
    for path in sorted((sources.ROOT / "hw").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 150:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A copy of the source tree that ``sources`` reads instead of the real one."""
    for pkg in sources.PACKAGES:
        shutil.copytree(sources.ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(sources, "ROOT", tmp_path)
    sources.import_graph.cache_clear()
    yield tmp_path
    sources.import_graph.cache_clear()


def test_a_cycle_is_found(tree):
    (tree / "model" / "errors.py").write_text((tree / "model" / "errors.py").read_text()
                                              + "\n\ndef _late():\n    from . import golden\n")
    found = sources.cycles()
    assert found and any({"spikeloom.model.errors", "spikeloom.model.golden"} <= set(c) for c in found)


def test_editing_any_training_source_changes_the_key(tree):
    ctx = steps.Context(build=tree / "build")
    base = {s: ctx.key(s) for s in ("train", "quantize")}
    covered = sources.closure(steps.TRAINING_ROOTS)
    assert {"spikeloom.model.pruning", "spikeloom.model.losses", "spikeloom.model.snn"} <= covered
    for m in sorted(covered):
        f = sources.module_file(m)
        text = f.read_text()
        f.write_text(text + "\n# an edit\n")
        sources.import_graph.cache_clear()
        assert all(ctx.key(s) != base[s] for s in base), f"editing {f.relative_to(tree)} kept the cache key"
        f.write_text(text)
    # and the key is not every file: the hardware generator is no training code
    f = tree / "hw" / "accel.py"
    f.write_text(f.read_text() + "\n# an edit\n")
    sources.import_graph.cache_clear()
    assert {s: ctx.key(s) for s in base} == base


def test_key_covers_every_module_training_and_quantization_load(tmp_path):
    """Every spikeloom module that a (tiny) training and quantization run loads is hashed into the
    key: the step functions themselves (flows/steps.py) by their own source, the rest by file."""
    code = f"""
import json, sys
from pathlib import Path
from spikeloom.flows import steps
from spikeloom.model.train import TrainConfig
ctx = steps.Context(build=Path({str(tmp_path)!r}), train=TrainConfig(epochs=1, qat_epochs=1))
steps.step_quantize(ctx, steps.step_train(ctx, log=lambda *a: None), log=lambda *a: None)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("spikeloom."))))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = set(json.loads(r.stdout.strip().splitlines()[-1]))
    assert "spikeloom.model.pruning" in loaded  # QAT's KeepZeros: the file the old hand-written list missed
    hashed = sources.closure(steps.TRAINING_ROOTS) | {"spikeloom.flows.steps", "spikeloom.flows.sources"}
    assert not loaded - hashed - {"spikeloom.flows"}, sorted(loaded - hashed)
