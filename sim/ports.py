"""A typed reader of ``ports.json``, the port description ``hw/accel.py``'s ``describe()`` writes.

Every reader of the file (the cocotb benches, the runner, the export, synthesis, the energy step,
the tests) goes through :meth:`Ports.load`: it checks that every field the readers use is present
and of the right type, and a problem is one line that names the file and the field. Imports
neither torch nor cocotb.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from spikeloom.model.errors import SpikeloomError
from spikeloom.model.geometry import SEGMENTS

__all__ = ["Field", "Stream", "LayerPorts", "Memory", "Ports", "PortsError"]


class PortsError(SpikeloomError, ValueError):
    """``ports.json`` is missing, unreadable or lacks a field (the message names the file and field)."""


class _Reader:
    """Field access on one JSON object with errors that name the file and the field's path."""

    def __init__(self, source, obj, where=""):
        self.source, self.obj, self.where = source, obj, where
        if not isinstance(obj, dict):
            raise PortsError(f"{source}: {where or 'the top level'} must be an object, got {type(obj).__name__}")

    def _name(self, key):
        return f"{self.where}.{key}" if self.where else key

    def get(self, key, kind, optional=False):
        if key not in self.obj:
            if optional:
                return None
            raise PortsError(f"{self.source}: field {self._name(key)!r} is missing")
        v = self.obj[key]
        if v is None and optional:
            return None
        ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
        if not ok:
            raise PortsError(f"{self.source}: field {self._name(key)!r} must be "
                             f"{getattr(kind, '__name__', kind)}, got {v!r}")
        return v

    def sub(self, key, optional=False):
        v = self.get(key, dict, optional)
        return None if v is None else _Reader(self.source, v, self._name(key))

    def items(self, key):
        return [_Reader(self.source, v, f"{self._name(key)}[{i}]") for i, v in enumerate(self.get(key, list))]


@dataclass(frozen=True)
class Field:
    """A bit field of a stream payload: ``(payload >> offset) & mask``."""

    name: str
    offset: int
    width: int

    @property
    def mask(self):
        return (1 << self.width) - 1

    def extract(self, payload):
        return (payload >> self.offset) & self.mask


@dataclass(frozen=True)
class Stream:
    """A valid/ready stream port (``port``) and its payload's fields."""

    port: str
    width: int
    fields: tuple

    def field(self, name):
        for f in self.fields:
            if f.name == name:
                return f
        raise PortsError(f"port {self.port} has no payload field {name!r}")

    def unpack(self, payload):
        """``{field name: int}`` of one payload value."""
        return {f.name: f.extract(payload) for f in self.fields}

    def pack(self, values):
        """The payload value of ``{field name: int}`` (the inverse of :meth:`unpack`; every field
        must be given, and fit its width)."""
        out = 0
        for f in self.fields:
            v = int(values[f.name])
            if not 0 <= v <= f.mask:
                raise ValueError(f"field {f.name} = {v} does not fit its {f.width} bits")
            out |= v << f.offset
        return out


@dataclass(frozen=True)
class LayerPorts:
    """One layer as the hardware holds it (plan rows, storage, neuron and weight addresses)."""

    name: str
    role: str
    kind: str
    in_features: int
    out_features: int
    channels: int
    positions: int
    chunks: int
    neuron_base: int
    weight_base: int
    storage: str
    weight_words: int
    dense_bits: int
    sparse_bits: int
    # how the storage was chosen and the event cycles of both storages (hw/plan.py; absent in the
    # ports.json of older generators)
    storage_rule: str | None = None
    dense_cycles: int | None = None
    sparse_cycles: int | None = None
    segments: str | None = None   # how a compressed layer cuts its rows (SEGMENTS; None: dense)
    groups: int | None = None     # lane groups of its packed tail word (hw/plan.py, "Packed tail"; 1: none)
    paired: bool | None = None    # its events go two to a word (hw/plan.py, "Paired events"; absent: None)
    queued: bool | None = None    # its PEs walk their own entries from queues (hw/plan.py, "PE queues"; absent: None)


@dataclass(frozen=True)
class Memory:
    """One memory: ``pe`` is ``"pe_<p>"`` or None for the shared ones; ``file`` is relative to
    the folder of ``ports.json``."""

    pe: str | None
    name: str
    depth: int
    width: int
    file: str
    initialised: bool


def _input_shape(r, inp):
    """``input.shape`` (absent in files of earlier generators: ``None``): positive integers whose
    product is ``input.count``."""
    shape = inp.get("shape", list, optional=True)
    if shape is None:
        return None
    count = inp.get("count", int)
    if (not shape or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape)
            or math.prod(shape) != count):
        raise PortsError(f"{r.source}: field 'input.shape' = {shape!r} must be positive integers whose product is "
                         f"input.count = {count}")
    return tuple(shape)


@dataclass(frozen=True)
class Ports:
    """The contents of one ``ports.json``; :meth:`load` reads and checks a file."""

    path: Path | None
    top: str
    model: str
    n_pe: int
    input_port: str
    input_width: int
    input_count: int
    result: Stream
    trace: Stream | None
    weight_store: str
    weight_port: str | None
    weight_width: int | None
    weight_count: int | None
    weight_order: str
    counters: tuple
    layers: tuple
    sparse_layers: dict     # {compressed layer: how its rows are cut}, as golden.run's ``sparse`` takes it
    weight_memory_bits: int
    memories: tuple
    raw: dict
    packed_tail: bool = False   # layers may pack their last chunk (hw/plan.py; absent before it: False)
    paired_events: bool = False  # layers may take two events a word (hw/plan.py; absent before it: False)
    pe_queue_depth: int = 0      # each PE's event queue of compressed layers (hw/plan.py; absent before it: 0)
    input_shape: tuple | None = None   # the input values' shape, row-major (absent in older files: None)

    @property
    def input_order(self):
        """How an image's values are ordered on the input stream, in words (the README and the
        wrappers' headers): index order, or row-major over the input shape."""
        shape = self.input_shape
        if shape is None or len(shape) < 2:
            return "in index order"
        if len(shape) == 3:
            c, h, w = shape
            return (f"in row-major order of the input shape (C, H, W) = ({c}, {h}, {w}): value "
                    f"(c * {h} + y) * {w} + x is channel c, row y, column x")
        return f"in row-major order of the input shape {' x '.join(map(str, shape))}"

    @classmethod
    def load(cls, path):
        """Read and check ``path`` (a ``ports.json`` file, or the folder that holds one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "ports.json"
        try:
            obj = json.loads(path.read_text())
        except OSError as e:
            raise PortsError(f"{path}: cannot read ({e.strerror or e})") from e
        except ValueError as e:
            raise PortsError(f"{path}: not JSON ({e})") from e
        return cls.from_dict(obj, path)

    @classmethod
    def from_dict(cls, obj, path=None):
        r = _Reader(path or "ports.json", obj)
        inp = r.sub("input")
        w = r.sub("weights")
        store = w.get("store", str)
        if store not in ("rom", "load"):
            raise PortsError(f"{r.source}: field 'weights.store' must be 'rom' or 'load', got {store!r}")
        load = store == "load"
        optional = ("storage_rule", "dense_cycles", "sparse_cycles", "segments", "groups", "paired", "queued")
        layers = tuple(LayerPorts(**{k: ly.get(k, str if k in ("name", "role", "kind", "storage", "storage_rule",
                                                               "segments")
                                               else bool if k in ("paired", "queued") else int, optional=k in optional)
                                     for k in LayerPorts.__dataclass_fields__}) for ly in r.items("layers"))
        names = {ly.name for ly in layers}
        sparse = tuple(r.get("sparse_layers", list))
        for s in sparse:
            if not isinstance(s, str) or s not in names:
                raise PortsError(f"{r.source}: field 'sparse_layers' names {s!r}, which is not a layer")
        segs = r.get("sparse_segments", dict, optional=True) or {}
        for k, v in segs.items():
            if k not in sparse or v not in SEGMENTS:
                raise PortsError(f"{r.source}: field 'sparse_segments' = {{{k!r}: {v!r}}}: the key must be one of "
                                 f"'sparse_layers' {list(sparse)}, the value one of {', '.join(SEGMENTS)}")
        for ly in layers:
            if ly.name in sparse and ly.segments is not None and segs.get(ly.name, "row") != ly.segments:
                raise PortsError(f"{r.source}: layer {ly.name!r} has segments {ly.segments!r}, but field "
                                 f"'sparse_segments' gives it {segs.get(ly.name, 'row')!r}")
        marked = sorted(ly.name for ly in layers if ly.storage == "sparse")
        if sorted(sparse) != marked:
            raise PortsError(f"{r.source}: field 'sparse_layers' = {list(sparse)!r} disagrees with the layers' "
                             f"storage (compressed: {marked})")
        counters = tuple(r.get("counters", list))
        n_pe = r.get("n_pe", int)
        if n_pe < 1:
            raise PortsError(f"{r.source}: field 'n_pe' must be >= 1, got {n_pe!r}")
        return cls(
            path=None if path is None else Path(path), top=r.get("top", str), model=r.get("model", str), n_pe=n_pe,
            input_port=inp.get("port", str), input_width=inp.get("width", int), input_count=inp.get("count", int),
            result=_stream(r.sub("result")), trace=_stream(r.sub("trace", optional=True)),
            weight_store=store, weight_port=w.get("port", str) if load else None,
            weight_width=w.get("width", int) if load else None, weight_count=w.get("count", int) if load else None,
            weight_order=w.get("order", str),
            counters=counters, layers=layers, sparse_layers={n: segs.get(n, "row") for n in sparse},
            weight_memory_bits=r.get("weight_memory_bits", int),
            memories=tuple(Memory(pe=m.get("pe", str, optional=True), name=m.get("name", str),
                                  depth=m.get("depth", int), width=m.get("width", int), file=m.get("file", str),
                                  initialised=m.get("initialised", bool)) for m in r.items("memories")),
            # (absent: the core of an early packed-tail generator had it when a layer packs)
            input_shape=_input_shape(r, inp),
            raw=obj, packed_tail=bool(r.get("packed_tail", bool, optional=True)
                                      if "packed_tail" in obj else any((ly.groups or 1) > 1 for ly in layers)),
            paired_events=bool(r.get("paired_events", bool, optional=True)),
            pe_queue_depth=_queue_depth(r))

    @property
    def folder(self):
        """The folder of ``ports.json`` (memory files are relative to it)."""
        return None if self.path is None else self.path.parent

    @property
    def weights_loaded(self):
        """True when the weight memories start empty and are streamed in through ``weight_port``."""
        return self.weight_store == "load"

    def layer(self, name):
        for ly in self.layers:
            if ly.name == name:
                return ly
        raise PortsError(f"{self.path or 'ports.json'}: no layer {name!r}")

    def memory(self, name, pe=0):
        """The memory ``name`` of PE ``pe`` (``pe=None``: a shared memory)."""
        want = None if pe is None else f"pe_{pe}"
        for m in self.memories:
            if m.name == name and m.pe == want:
                return m
        raise PortsError(f"{self.path or 'ports.json'}: no memory {name!r} of {want or 'the shared memories'}")

    def weight_files(self):
        """Every PE's weight memory file, PE by PE (relative to :attr:`folder`)."""
        return [m.file for m in self.memories if m.name == "weight"]

    def storage(self):
        """``{layer name: "dense" | "sparse"}``: each layer's weight storage."""
        return {ly.name: ly.storage for ly in self.layers}

    def plan_storage(self):
        """``{layer name: "dense" | "sparse:<segments>"}``: the ``storage`` that rebuilds this
        core's plan (``Plan(model, n_pe, ports.plan_storage())``), compressed rows cut as here."""
        return {ly.name: f"sparse:{self.sparse_layers[ly.name]}" if ly.name in self.sparse_layers else "dense"
                for ly in self.layers}

    def plan(self, model):
        """This core's :class:`~spikeloom.hw.plan.Plan` of ``model`` (its storage per layer, compressed
        rows cut as here, and whether it packs last chunks)."""
        from spikeloom.hw.plan import Plan

        plan = Plan(model, self.n_pe, self.plan_storage(), pack=self.packed_tail, pair=self.paired_events,
                    queue_depth=self.pe_queue_depth)
        want = [ly.groups or 1 for ly in self.layers]
        if any(ly.groups is not None for ly in self.layers) and [lp.groups for lp in plan.layers] != want:
            raise PortsError(f"{self.path or 'ports.json'}: the layers' packed-tail groups {want} are not the plan's "
                             f"{[lp.groups for lp in plan.layers]} for this model (another model or generator?)")
        paired = [bool(ly.paired) for ly in self.layers]
        if any(ly.paired is not None for ly in self.layers) and [lp.paired for lp in plan.layers] != paired:
            raise PortsError(f"{self.path or 'ports.json'}: the layers' paired events {paired} are not the plan's "
                             f"{[lp.paired for lp in plan.layers]} for this model (another model or generator?)")
        queued = [bool(ly.queued) for ly in self.layers]
        if any(ly.queued is not None for ly in self.layers) and [lp.queued for lp in plan.layers] != queued:
            raise PortsError(f"{self.path or 'ports.json'}: the layers' PE queues {queued} are not the plan's "
                             f"{[lp.queued for lp in plan.layers]} for this model (another model or generator?)")
        return plan

    def counter_field(self, layer, counter):
        """The result payload field of one per-layer activity counter."""
        return self.result.field(f"{layer}.{counter}")


def _queue_depth(r):
    """``pe_queue_depth`` (absent: 0, a core of a generator before the PE queues)."""
    from spikeloom.hw.plan import QUEUE_DEPTH_RANGE, is_queue_depth

    v = r.get("pe_queue_depth", int, optional=True) or 0
    if not is_queue_depth(v):
        raise PortsError(f"{r.source}: field 'pe_queue_depth' = {v!r}; allowed: 0 or "
                         f"{QUEUE_DEPTH_RANGE[0]}..{QUEUE_DEPTH_RANGE[1]}")
    return v


def _stream(r):
    if r is None:
        return None
    fields = tuple(Field(f.get("name", str), f.get("offset", int), f.get("width", int)) for f in r.items("fields"))
    return Stream(r.get("port", str), r.get("width", int), fields)
