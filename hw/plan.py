"""Memory plan: how a :class:`QuantModel` is laid out over an array of ``n_pe`` processing elements.

PE ``p`` owns neuron ``j = c * n_pe + p`` of every layer (``c`` is the *chunk*). Per PE, all layers
share one memory of each kind, concatenated at per-layer base offsets:

* ``weight``: address ``weight_base[l] + i * chunks[l] + c`` holds ``W_l[c * n_pe + p, i]``;
* ``acc``, ``membrane``, ``bias``, ``threshold``: address ``neuron_base[l] + c``.

Lanes with ``c * n_pe + p >= out_l`` are padding: weight, bias and threshold 0.
"""

from dataclasses import dataclass

import numpy as np

from spikeloom.model.errors import ModelFileError
from spikeloom.model.modelfile import QuantModel, bits_for, validate

MEMORIES = ("weight", "acc", "membrane", "bias", "threshold")
#: How the weight memories get their contents: ``"rom"``, initialised with the model's weights
#: (block RAM initial contents); ``"load"``, written through the accelerator's ``i_weights`` port
#: after reset (RAM without initial contents, e.g. iCE40 UltraPlus SPRAM).
WEIGHT_STORES = ("rom", "load")


@dataclass(frozen=True)
class LayerPlan:
    """Placement of one layer: ``chunks`` neuron groups of ``n_pe``, the last with ``last_lanes``."""

    name: str
    role: str
    in_features: int
    out_features: int
    chunks: int
    last_lanes: int
    neuron_base: int
    weight_base: int


class Plan:
    """Everything the generator derives from ``(model, n_pe)``: sizes, widths, memory contents.

    Parameters
    ----------
    model : QuantModel
    n_pe : int
        Number of processing elements, 1..64.
    """

    def __init__(self, model, n_pe):
        if not isinstance(model, QuantModel):
            raise TypeError(f"model must be a QuantModel, got {type(model).__name__} ({model!r:.80})")
        if isinstance(n_pe, bool) or not isinstance(n_pe, int):
            raise TypeError(f"n_pe must be an integer, got {n_pe!r}")
        if not 1 <= n_pe <= 64:
            raise ValueError(f"n_pe = {n_pe!r} is outside the allowed range [1, 64]")
        try:
            validate(model)
        except ModelFileError as e:
            raise ValueError(f"invalid model: {e}") from e
        names = [ly.name for ly in model.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique, got {names!r}")
        self.model = model
        self.n_pe = n_pe
        self.layers = []
        nb = wb = 0
        for ly in model.layers:
            c = -(-ly.out_features // n_pe)
            self.layers.append(LayerPlan(ly.name, ly.role, ly.in_features, ly.out_features, c,
                                          ly.out_features - (c - 1) * n_pe, nb, wb))
            nb += c
            wb += ly.in_features * c
        self.neuron_depth = nb
        self.weight_depth = wb
        self.max_chunks = max(lp.chunks for lp in self.layers)
        self.max_spiking_chunks = max(lp.chunks for lp in self.layers[:-1])
        self.max_in = max(lp.in_features for lp in self.layers)
        self.membrane_bits = model.neuron.membrane_bits
        self.weight_bits = max(ly.weight_bits for ly in model.layers)
        self.acc_bits = max(self._acc_bits(ly) for ly in model.layers)

    def _acc_bits(self, ly):
        # The acc memory holds W x without the bias (added in UPDATE); partial sums lie between the
        # sums of the negative and of the positive terms.
        w = ly.weight.astype(np.int64)
        in_max = (1 << self.model.input_bits) - 1 if ly.role == "analog" else 1
        pos = int(np.clip(w, 0, None).sum(axis=1).max()) * in_max
        neg = int(np.clip(w, None, 0).sum(axis=1).min()) * in_max
        return max(bits_for(neg, pos), self.model.acc_bits(ly))

    @property
    def n_layers(self):
        return len(self.layers)

    @property
    def weight_memory_bits(self):
        """Bits of weight storage over all PEs (every stored word, index fields included)."""
        return self.n_pe * self.weight_depth * self.weight_bits

    def widths(self):
        return {"weight": self.weight_bits, "acc": self.acc_bits, "membrane": self.membrane_bits,
                "bias": self.membrane_bits, "threshold": self.membrane_bits}

    def depths(self):
        return {"weight": self.weight_depth, "acc": self.neuron_depth, "membrane": self.neuron_depth,
                "bias": self.neuron_depth, "threshold": self.neuron_depth}

    def init(self, pe, mem):
        """Initial contents (signed ints) of memory ``mem`` of PE ``pe``."""
        n = self.n_pe
        if mem in ("acc", "membrane"):
            return [0] * self.neuron_depth
        out = []
        for lp, ly in zip(self.layers, self.model.layers):
            if mem == "weight":
                for i in range(lp.in_features):
                    for c in range(lp.chunks):
                        j = c * n + pe
                        out.append(int(ly.weight[j, i]) if j < lp.out_features else 0)
            else:
                arr = ly.bias if mem == "bias" else ly.threshold
                for c in range(lp.chunks):
                    j = c * n + pe
                    out.append(int(arr[j]) if arr is not None and j < lp.out_features else 0)
        return out
