"""One record per inference, from the golden model or from the RTL, and one checker for both.

The golden model's result (:class:`spikeloom.model.golden.GoldenResult`) and the RTL's result
payload (a ``{field name: int}`` dict as decoded from ``o_result``, whether by the cocotb bench, by
Amaranth's simulator in ``hw/simulate.py`` or read back from a co-simulation's ``results.json``)
become the same :class:`InferenceRecord`; :func:`mismatches` compares two of them. The fast tests,
the cocotb checkers and the energy step all use these. Imports neither torch nor cocotb.
"""

from dataclasses import dataclass, field

import numpy as np

from spikeloom.model.golden import COUNTERS

__all__ = ["InferenceRecord", "from_golden", "mismatches", "field_mismatches", "counter_arrays"]


@dataclass(frozen=True)
class InferenceRecord:
    """What one inference produced.

    Attributes
    ----------
    pred : predicted class.
    timesteps : executed timesteps (1..t_max).
    counters : ``{layer: {counter: int}}`` activity summed over the executed timesteps.
    cycles : clock cycles (the payload's ``cycles`` field, or the cycle model's), None if unknown.
    """

    pred: int
    timesteps: int
    counters: dict = field(default_factory=dict)
    cycles: int | None = None

    @classmethod
    def from_golden(cls, res, b, counters=None, cycles=None):
        """Image ``b`` of ``res = golden.run(...)``; ``counters`` is ``res.counters(adaptive=True)``
        (pass it to avoid recomputing it per image), ``cycles`` an optional per-image array."""
        cs = res.counters(adaptive=True) if counters is None else counters
        return cls(pred=int(res.pred[b]), timesteps=int(res.exit_t[b]),
                   counters={ln: {k: int(v[b]) for k, v in c.items()} for ln, c in cs.items()},
                   cycles=None if cycles is None else int(cycles[b]))

    @classmethod
    def from_fields(cls, fields):
        """A result payload as ``{field name: int}``: ``pred``, ``timesteps``, ``cycles`` and the
        per-layer counters ``"<layer>.<counter>"``; other keys (a bench's ``ok``, ``cycle_bound``,
        ``trace``) are ignored."""
        counters = {}
        for k, v in fields.items():
            if "." in k:
                ln, c = k.rsplit(".", 1)
                counters.setdefault(ln, {})[c] = int(v)
        cyc = fields.get("cycles")
        return cls(pred=int(fields["pred"]), timesteps=int(fields["timesteps"]), counters=counters,
                   cycles=None if cyc is None else int(cyc))

    def flat(self):
        """``{"pred", "timesteps", ["cycles",] "<layer>.<counter>": int}``: the payload's field names."""
        out = {"pred": self.pred, "timesteps": self.timesteps}
        if self.cycles is not None:
            out["cycles"] = self.cycles
        for ln, cs in self.counters.items():
            out.update({f"{ln}.{k}": v for k, v in cs.items()})
        return out


def from_golden(res, cycles=None):
    """Every image of ``res = golden.run(...)`` as a record (counters of the adaptive run)."""
    cs = res.counters(adaptive=True)
    return [InferenceRecord.from_golden(res, b, cs, cycles) for b in range(len(res.pred))]


def mismatches(expected, got, image=None):
    """One line per difference between the golden model's record ``expected`` and the RTL's
    ``got`` (empty when equal): class, timesteps and every counter of ``expected``; cycles too when
    both records carry them."""
    where = "" if image is None else f"image {image}: "
    want, have = expected.flat(), got.flat()
    if expected.cycles is None or got.cycles is None:
        want.pop("cycles", None)
    return [f"{where}{k} = {have.get(k)} from the RTL, {v} from the golden model"
            for k, v in want.items() if have.get(k) != v]


def field_mismatches(expected, fields, first=0):
    """:func:`mismatches` of every record of ``expected`` against the RTL's decoded result payloads
    ``fields`` (``{field name: int}`` dicts, image ``first`` first)."""
    return [m for b, (e, f) in enumerate(zip(expected, fields), first)
            for m in mismatches(e, InferenceRecord.from_fields(f), image=b)]


def counter_arrays(records, layers):
    """``{layer: {counter: (B,) int64}}`` of ``records`` for the layer names ``layers`` (the form
    the energy model takes; every counter of :data:`~spikeloom.model.golden.COUNTERS`, so that an
    empty list gives empty arrays)."""
    return {ln: {k: np.array([r.counters[ln][k] for r in records], dtype=np.int64) for k in COUNTERS}
            for ln in layers}
