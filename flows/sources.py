"""The project's own import graph, read from the source (no module is imported to build it).

Used for the training cache keys (:meth:`spikeloom.flows.steps.Context.key` hashes the source of
every module that training and quantization can import, found here, instead of a hand-written file
list that goes stale) and by ``tests/test_sources.py`` (no import cycles, no ``torch`` under hw/).
Imports inside functions count: a lazy import is still code that runs.
"""

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "spikeloom"
#: The import packages and their folders (pyproject.toml's package-dir mapping).
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "hw", "sim", "flows")


def module_file(name):
    """The source file of module ``spikeloom.<pkg>[.<mod>]`` (a package's ``__init__.py``), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE or len(parts) < 2 or parts[1] not in PACKAGES:
        return None
    base = ROOT.joinpath(*parts[1:])
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _modules():
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            rel = p.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([PACKAGE, *parts])] = p
    return out


def _resolve(module, node, is_pkg):
    """Absolute names a ``from``/``import`` node of ``module`` refers to (modules, or attributes
    that may be modules: both are returned, the caller keeps those that exist)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".")
        if not is_pkg:
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{a.name}" for a in node.names]


@lru_cache(maxsize=1024)
def _imports(name, is_pkg, text, filename):
    """The absolute names the imports of module ``name`` (source ``text``) refer to, as a tuple: a
    module's source is parsed once per text (a new text, a file edited since, is parsed again)."""
    return tuple(target for node in ast.walk(ast.parse(text, filename))
                 if isinstance(node, (ast.Import, ast.ImportFrom)) for target in _resolve(name, node, is_pkg))


@lru_cache(maxsize=1)
def import_graph():
    """``{module: frozenset(imported modules)}`` over the project's modules (third-party names,
    e.g. ``torch``, are kept as they are written so that they can be checked too)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for target in _imports(name, path.name == "__init__.py", path.read_text(), str(path)):
            top = target.split(".")[0]
            if top != PACKAGE:
                deps.add(top)
            elif target in mods:
                deps.add(target)
        parent = name.rsplit(".", 1)[0]
        if parent in mods:  # a module's package is imported (run) before it
            deps.add(parent)
        deps.discard(name)
        graph[name] = frozenset(deps)
    return graph


def closure(roots):
    """The project's modules reachable from ``roots`` (included), following every import."""
    graph = import_graph()
    seen, todo = set(), list(roots)
    while todo:
        m = todo.pop()
        if m in seen or m not in graph:
            continue
        seen.add(m)
        todo.extend(graph[m])
    return seen


def cycles():
    """Every import cycle among the project's modules, as lists of module names (empty: none)."""
    graph = import_graph()
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def source_hash(roots, extra=b""):
    """sha256 of the source of every module reachable from ``roots`` (path and bytes, in name order)."""
    h = hashlib.sha256(extra)
    for m in sorted(closure(roots)):
        p = module_file(m)
        h.update(m.encode() + b"\0" + p.read_bytes() + b"\0")
    return h
