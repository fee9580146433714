"""Energy per inference from activity counts: sum over event kinds of count x energy per event,
plus leakage over the cycles at a clock frequency.

The counts come either from the RTL's counters (co-simulation) or from the golden model (the same
numbers, by construction), so a whole data set can be costed without simulation. Memory energies
depend on each memory's size and word width, read from the hardware's own description
(``ports.json``: per-PE memories with depth and width). Technology numbers live in data files
(``model/tech/*.json``, copy and edit one) with their sources written beside them.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SpikeloomError

TECH_DIR = Path(__file__).resolve().parent / "tech"
DEFAULT_TECH = TECH_DIR / "horowitz45.json"
EVENT_KINDS = ("first_layer_mac", "value_mac", "synaptic_ac", "row_lookup", "weight_read", "acc_access", "membrane_read",
               "membrane_write", "param_read", "neuron_update", "spike_queue", "exit_eval", "leakage")


class TechTableError(SpikeloomError):
    """A technology table that is missing a field, has a negative energy or the wrong unit."""


@dataclass(frozen=True)
class Tech:
    """A validated technology table (energies in pJ)."""

    name: str
    clock_mhz: float
    add_pj: dict
    mult_pj: dict
    sram_pj_per_64bit: dict
    register_pj_per_bit: float
    leakage_uw_per_kbyte: float
    logic_leakage_uw: float
    sources: dict
    path: str = ""

    def add(self, bits):
        """Energy of a ``bits``-wide integer add (linear in width between table points)."""
        return _interp(self.add_pj, bits, log=False)

    def mult(self, bits):
        return _interp(self.mult_pj, bits, log=True)

    def sram(self, nbytes, width):
        """Energy of one ``width``-bit access to an SRAM of ``nbytes`` bytes."""
        return _interp(self.sram_pj_per_64bit, max(nbytes, 1) / 1024, log=True) * width / 64


def _interp(table, x, log):
    pts = sorted(table.items())
    if len(pts) == 1:
        return pts[0][1] * (x / pts[0][0] if not log else 1.0)
    i = 0
    while i < len(pts) - 2 and x > pts[i + 1][0]:
        i += 1
    (x0, y0), (x1, y1) = pts[i], pts[i + 1]
    if log:
        k = math.log(y1 / y0) / math.log(x1 / x0)
        return y0 * (x / x0) ** k
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _num(path, where, v, positive=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TechTableError(f"{path}: {where} must be a number, got {v!r}")
    if v < 0 or (positive and v == 0):
        raise TechTableError(f"{path}: {where} = {v!r} must be {'> 0' if positive else '>= 0'} "
                             "(energies, powers and sizes cannot be negative)")
    return float(v)


def _curve(path, d, key, positive_keys=True):
    if key not in d:
        raise TechTableError(f"{path}: missing field {key!r}")
    t = d[key]
    if not isinstance(t, dict) or not t:
        raise TechTableError(f"{path}: {key} must be a non-empty object {{size: pJ}}, got {t!r}")
    out = {}
    for k, v in t.items():
        try:
            kk = float(k)
        except ValueError:
            raise TechTableError(f"{path}: {key} has a non-numeric key {k!r}") from None
        out[_num(path, f"{key}[{k!r}] key", kk, positive=True)] = _num(path, f"{key}[{k!r}]", v, positive=True)
    return out


#: Every field a technology table may have (``name`` and ``sources`` are text for readers).
TECH_FIELDS = ("format", "version", "name", "unit", "clock_mhz", "add_pj", "mult_pj", "sram_pj_per_64bit",
               "register_pj_per_bit", "leakage_uw_per_kbyte", "logic_leakage_uw", "sources")
#: Largest technology table read (a real one is a few KB).
MAX_TECH_BYTES = 1 << 20


def load_tech(path=DEFAULT_TECH) -> Tech:
    """Read and validate a technology table."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_TECH_BYTES:
            raise TechTableError(f"{path}: {path.stat().st_size} bytes; a technology table has at most "
                                 f"{MAX_TECH_BYTES} bytes")
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise TechTableError(f"{path}: technology table does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise TechTableError(f"{path}: not a readable JSON technology table ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise TechTableError(f"{path}: expected a JSON object")
    unknown = sorted(set(d) - set(TECH_FIELDS))
    if unknown:
        raise TechTableError(f"{path}: unknown field {unknown[0]!r} (allowed: {', '.join(TECH_FIELDS)})")
    if d.get("format") != "spikeloom.tech" or d.get("version") != 1:
        raise TechTableError(f"{path}: format/version is {d.get('format')!r}/{d.get('version')!r}, "
                             "expected 'spikeloom.tech'/1")
    if d.get("unit") != "pJ":
        raise TechTableError(f"{path}: unit = {d.get('unit')!r}; energies must be given in 'pJ'")
    for key in ("clock_mhz", "register_pj_per_bit", "leakage_uw_per_kbyte", "logic_leakage_uw"):
        if key not in d:
            raise TechTableError(f"{path}: missing field {key!r}")
    sources = d.get("sources")
    if not isinstance(sources, dict):
        raise TechTableError(f"{path}: missing field 'sources' (say where every number comes from)")
    return Tech(name=str(d.get("name", path.stem)), clock_mhz=_num(path, "clock_mhz", d["clock_mhz"], True),
                add_pj=_curve(path, d, "add_pj"), mult_pj=_curve(path, d, "mult_pj"),
                sram_pj_per_64bit=_curve(path, d, "sram_pj_per_64bit"),
                register_pj_per_bit=_num(path, "register_pj_per_bit", d["register_pj_per_bit"]),
                leakage_uw_per_kbyte=_num(path, "leakage_uw_per_kbyte", d["leakage_uw_per_kbyte"]),
                logic_leakage_uw=_num(path, "logic_leakage_uw", d["logic_leakage_uw"]),
                sources=sources, path=str(path))


def memory_sizes(ports):
    """{memory name: (bytes per PE, word width)} from the hardware's description.

    ``ports``: the generated core's :class:`~spikeloom.sim.ports.Ports` (``ports.json`` as read by
    its one reader); this module reads its ``n_pe``, ``memories`` and ``sparse_layers``.
    """
    return {m.name: (m.depth * m.width / 8, m.width) for m in ports.memories if m.pe == "pe_0"}


def shared_memory_sizes(ports):
    """{memory name: (bytes, word width)} of the memories all PEs share (the ``rows`` table)."""
    return {m.name: (m.depth * m.width / 8, m.width) for m in ports.memories if m.pe is None}


def per_event(model, ports, tech: Tech):
    """{layer name: {event kind: pJ per event}} and the count each kind multiplies (a counter name)."""
    mem = memory_sizes(ports)
    m_bits = model.neuron.membrane_bits
    e_w = tech.sram(*mem["weight"])
    e_acc = tech.sram(*mem["acc"])
    e_mem = tech.sram(*mem["membrane"])
    e_par = tech.sram(*mem["bias"])
    e_thr = tech.sram(*mem["threshold"])
    shared = shared_memory_sizes(ports)
    e_rows = tech.sram(*shared["rows"]) if "rows" in shared else 0.0
    sparse = set(ports.sparse_layers)
    addr_bits = max(1, math.ceil(math.log2(max(ly.out_features for ly in model.layers))))
    out = {}
    for ly in model.layers:
        acc = model.acc_bits(ly)
        spiking = ly.role != "output"
        # inputs that are values (the analog layer's pixels, a sum pool's counts) are multiplied
        value_bits = max(1, int(model.in_max(ly)).bit_length())
        mac = tech.mult(max(ly.weight_bits, value_bits)) + tech.add(acc)
        out[ly.name] = {
            # (count name, pJ per count)
            "first_layer_mac": ("synaptic_events", mac if ly.role == "analog" else 0.0),
            "value_mac": ("synaptic_events", mac if ly.role != "analog" and model.in_max(ly) > 1 else 0.0),
            "synaptic_ac": ("synaptic_events", tech.add(acc) if model.in_max(ly) == 1 else 0.0),
            # one rows-table read per input event (the row's start and length)
            "row_lookup": ("input_events", e_rows),
            "weight_read": ("weight_reads", e_w),
            # read-modify-write per weight read (ACC; compressed storage: per landing nonzero entry),
            # read (and clear, but not for the analog layer's reused current) per neuron update. (A
            # packed tail word, hw/plan.py: only group 0's lanes write, the others' reads go to the
            # adders across lanes instead; charged as if each read its own word, an approximation.)
            "acc_access": ("synaptic_events" if ly.name in sparse else "weight_reads", 2 * e_acc),
            "acc_update": ("membrane_reads", e_acc * (1 if ly.role == "analog" else 2)),
            "membrane_read": ("membrane_reads", e_mem),
            "membrane_write": ("membrane_writes", e_mem),
            "param_read": ("membrane_reads", e_par + (e_thr if spiking else 0.0)),
            # leak (a constant multiply: one add per set bit of its multiplier, at least one), + current,
            # + bias, compare (spiking; a reset that waits or rechecks adds one more); + current, + bias
            # (output integrator)
            "neuron_update": ("membrane_reads", _update_adds(ly.neuron) * tech.add(m_bits)),
            # one address-event written and read per spike
            "spike_queue": ("spikes", 2 * addr_bits * tech.register_pj_per_bit),
        }
    return out


def _update_adds(neuron):
    """Additions of one neuron update (``None``: the output integrator)."""
    if neuron is None:
        return 2
    return 3 + max(1, bin(neuron.leak_key()[0]).count("1")) + neuron.has_flag


def leakage_mw(ports, tech: Tech):
    n_pe = ports.n_pe
    kbytes = (sum(b for b, _ in memory_sizes(ports).values()) * n_pe
              + sum(b for b, _ in shared_memory_sizes(ports).values())) / 1024
    return (kbytes * tech.leakage_uw_per_kbyte + tech.logic_leakage_uw) / 1000


def energy(model, ports, counters, timesteps, cycles, tech: Tech):
    """Energy per inference in pJ, broken down.

    ``counters``: {layer: {counter: (B,) array}}; ``timesteps``, ``cycles``: (B,) arrays.
    Returns {"total": (B,), "by_kind": {kind: (B,)}, "by_layer": {layer: (B,)}}.
    """
    pe = per_event(model, ports, tech)
    timesteps = np.asarray(timesteps, dtype=np.float64)
    by_kind = {k: np.zeros_like(timesteps) for k in EVENT_KINDS}
    by_layer = {}
    for ly in model.layers:
        tot = np.zeros_like(timesteps)
        for kind, (count, pj) in pe[ly.name].items():
            e = np.asarray(counters[ly.name][count], dtype=np.float64) * pj
            by_kind["acc_access" if kind == "acc_update" else kind] += e
            tot += e
        by_layer[ly.name] = tot
    # top-1/top-2 merge: two comparisons per class per executed timestep
    by_kind["exit_eval"] = timesteps * model.n_classes * 2 * tech.add(model.neuron.membrane_bits)
    by_kind["leakage"] = np.asarray(cycles, dtype=np.float64) / (tech.clock_mhz * 1e6) * leakage_mw(ports, tech) * 1e9
    total = sum(by_kind.values())
    return {"total": total, "by_kind": by_kind, "by_layer": by_layer}
