"""Frozen configuration dataclasses shared by model/ and hw/.

Every value is validated in ``__post_init__``; a bad value raises :class:`ConfigError` naming the
field, the value and the allowed range.
"""

from dataclasses import dataclass

from .errors import ConfigError

#: Resets of version 1 (one configuration for the whole network).
RESET_MODES = ("zero", "subtract")
#: Every reset of a layer's neuron (``model/SEMANTICS.md``, "Neuron models"): to zero, by
#: subtraction now, by subtraction in the next step after the leak (snnTorch's default
#: ``reset_delay=True``), and by subtraction now with the previous reset re-applied in the firing
#: test (snnTorch's ``reset_delay=False``).
RESETS = ("zero", "subtract", "subtract_next", "subtract_recheck")
#: The resets whose neurons keep a flag beside the membrane (the previous spike, or "still above
#: threshold after the reset").
FLAG_RESETS = ("subtract_next", "subtract_recheck")
#: Firing rules: fire when ``u >= theta`` (SpikingJelly, spikeloom v1) or ``u > theta`` (snnTorch, NIR).
FIRE_RULES = (">=", ">")
#: Largest number of fraction bits ``f`` of the leak multiplier ``a / 2^f``.
LEAK_FRAC_MAX = 16
#: The bit widths a model file, an option and the generator accept (inclusive), and T_max's range.
WIDTH_RANGES = {"weight_bits": (2, 16), "input_bits": (1, 16), "membrane_bits": (4, 32)}
T_MAX_RANGE = (1, 64)
EXIT_CRITERIA = ("margin", "entropy", "max_softmax")


#: Seeds (training, data split): what numpy's and scikit-learn's generators accept.
SEED_RANGE = (0, 2 ** 32 - 1)


def check_int(owner, field, value, lo, hi=None):
    """Raise ConfigError unless ``lo <= value <= hi`` and value is an int (bool excluded).
    ``owner`` None: ``field`` is the whole name (a command-line option such as ``--seed``)."""
    name = field if owner is None else f"{owner}.{field}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ConfigError(f"{name} = {value!r} is outside the allowed range {rng}")
    return value


#: The most epochs (training, QAT, fine-tuning) a run may ask for: far beyond any run this needs
#: (digits trains in tens), so that a mistyped count is refused instead of running for days.
EPOCHS_MAX = 10_000


def check_seed(value, name):
    """A seed in :data:`SEED_RANGE` (``name``: the option or field that gave it)."""
    return check_int(None, name, value, *SEED_RANGE)


def check_choice(owner, field, value, choices):
    if value not in choices:
        raise ConfigError(f"{owner}.{field} = {value!r}; allowed: {', '.join(map(repr, choices))}")
    return value


@dataclass(frozen=True)
class NeuronConfig:
    """The neuron that training gives every spiking layer, and the network-wide part of a model.

    Parameters
    ----------
    leak_shift : int
        ``k`` in the leak ``u <- u - (u >>> k)`` (decay factor ``1 - 2**-k``); ``0`` means no leak
        (integrate-and-fire). Not used when ``beta`` is given.
    reset : str
        One of :data:`RESETS`: ``"zero"`` (``u <- 0`` after a spike), ``"subtract"`` (``u <- u -
        theta``), ``"subtract_next"`` (the subtraction waits for the next step, after the leak) or
        ``"subtract_recheck"`` (see ``model/SEMANTICS.md``, "Neuron models").
    membrane_bits : int
        Signed width of membrane potentials and of the output integrator; updates saturate to it.
    fire : str
        Firing rule, one of :data:`FIRE_RULES`.
    beta : float or None
        The decay factor in ``[0, 1]`` in place of ``leak_shift``: quantized to ``1 - a / 2^f`` with
        ``f = leak_frac`` (:meth:`LayerNeuron.from_beta`); ``1``: no leak.
    leak_frac : int
        ``f``, the fraction bits of the quantized ``beta`` (``0 <= f <= 16``; only with ``beta``).

    Only ``leak_shift``, ``reset`` in :data:`RESET_MODES` and ``fire = ">="`` make a version-1
    neuron (:attr:`is_v1`), the one a :class:`~spikeloom.model.ir.QuantModel` may hold; any other
    becomes each layer's :class:`LayerNeuron` (:meth:`layer_neuron`).
    """

    leak_shift: int = 1
    reset: str = "subtract"
    membrane_bits: int = 16
    fire: str = ">="
    beta: float | None = None
    leak_frac: int = 8

    def __post_init__(self):
        check_int("neuron", "leak_shift", self.leak_shift, 0, 8)
        check_choice("neuron", "reset", self.reset, RESETS)
        check_int("neuron", "membrane_bits", self.membrane_bits, *WIDTH_RANGES["membrane_bits"])
        check_choice("neuron", "fire", self.fire, FIRE_RULES)
        check_int("neuron", "leak_frac", self.leak_frac, 0, LEAK_FRAC_MAX)
        if self.beta is not None:
            if self.leak_shift != 1:
                raise ConfigError(f"neuron.leak_shift = {self.leak_shift!r} and neuron.beta = {self.beta!r} "
                                  "both set the leak; give one")
            LayerNeuron.from_beta(self.beta, self.leak_frac)  # checks beta
        elif self.leak_frac != 8:
            raise ConfigError(f"neuron.leak_frac = {self.leak_frac!r} is the precision of beta; "
                              "give neuron.beta too")

    def __repr__(self):
        # the version-1 fields always, the others where they differ from their defaults
        extra = "".join(f", {k}={getattr(self, k)!r}" for k, d in (("fire", ">="), ("beta", None), ("leak_frac", 8))
                        if getattr(self, k) != d)
        return (f"NeuronConfig(leak_shift={self.leak_shift!r}, reset={self.reset!r}, "
                f"membrane_bits={self.membrane_bits!r}{extra})")

    @property
    def is_v1(self) -> bool:
        """True when this is a version-1 network-wide neuron (shift leak, rule ``>=``, reset
        ``zero`` or ``subtract``)."""
        return self.beta is None and self.fire == ">=" and self.reset in RESET_MODES

    def layer_neuron(self) -> "LayerNeuron":
        """The :class:`LayerNeuron` that every spiking layer gets from this configuration."""
        if self.beta is None:
            k = self.leak_shift
            return LayerNeuron(1 if k else 0, k, self.fire, self.reset)
        return LayerNeuron.from_beta(self.beta, self.leak_frac, self.fire, self.reset)

    @property
    def leak(self) -> float:
        """The decay factor lambda as a float (for float training): the quantized ``beta``."""
        if self.beta is not None:
            return self.layer_neuron().beta
        return 1.0 if self.leak_shift == 0 else 1.0 - 2.0 ** -self.leak_shift


@dataclass(frozen=True)
class LayerNeuron:
    """The neuron of one layer: leak, firing rule and reset (``model/SEMANTICS.md``, "Neuron models").

    Parameters
    ----------
    leak_mul, leak_frac : int
        ``a`` and ``f`` of the leak ``u <- u - ((u * a) >> f)`` (arithmetic shift: floor), i.e. the
        decay factor ``beta = 1 - a / 2^f`` rounded so that the kept part is ``ceil(beta * u)``.
        ``a = 0``: no leak (integrate-and-fire); ``a = 1``: version 1's shift leak ``k = f``;
        ``0 <= f <= 16``, ``0 <= a <= 2^f``.
    fire : str
        ``">="`` (spike when ``u >= theta``) or ``">"`` (``u > theta``).
    reset : str
        One of :data:`RESETS`.
    """

    leak_mul: int = 1
    leak_frac: int = 1
    fire: str = ">="
    reset: str = "subtract"

    def __post_init__(self):
        check_int("neuron", "leak_frac", self.leak_frac, 0, LEAK_FRAC_MAX)
        check_int("neuron", "leak_mul", self.leak_mul, 0, 1 << self.leak_frac)
        check_choice("neuron", "fire", self.fire, FIRE_RULES)
        check_choice("neuron", "reset", self.reset, RESETS)

    @classmethod
    def from_beta(cls, beta, frac_bits=8, fire=">=", reset="subtract"):
        """The neuron whose decay ``1 - a / 2^f`` is the nearest to ``beta`` (``a = rint((1 - beta) 2^f)``).
        ``beta = 1``: no leak."""
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
            raise ConfigError(f"neuron.beta = {beta!r} is outside the allowed range [0, 1]")
        check_int("neuron", "leak_frac", frac_bits, 0, LEAK_FRAC_MAX)
        a = int(round((1.0 - float(beta)) * (1 << frac_bits)))
        return cls(a, frac_bits if a else 0, fire, reset)

    @classmethod
    def of(cls, neuron):
        """Version 1's network-wide :class:`NeuronConfig` as a layer neuron (``k = 0``: no leak)."""
        if not neuron.is_v1:
            raise ConfigError(f"{neuron!r} is not a version-1 neuron (leak_shift, fire '>=', reset "
                              "'zero' or 'subtract'): give each spiking layer its own LayerNeuron")
        k = neuron.leak_shift
        return cls(1 if k else 0, k, ">=", neuron.reset)

    @property
    def has_flag(self) -> bool:
        """The neuron keeps a flag bit beside its membrane (:data:`FLAG_RESETS`)."""
        return self.reset in FLAG_RESETS

    @property
    def beta(self) -> float:
        """The decay factor ``1 - a / 2^f`` (exact as a float)."""
        return 1.0 - self.leak_mul / (1 << self.leak_frac)

    def leak_key(self):
        """``(a, f)`` in lowest terms: two neurons with equal keys leak identically on integers
        (``(u * 2a) >> (f + 1) == (u * a) >> f``)."""
        a, f = self.leak_mul, self.leak_frac
        if a == 0:
            return 0, 0
        while a % 2 == 0 and f > 0:
            a, f = a // 2, f - 1
        return a, f

    def same_as(self, other):
        """True when both neurons compute the same integer dynamics."""
        return (self.leak_key(), self.fire, self.reset) == (other.leak_key(), other.fire, other.reset)

    def as_dict(self):
        return {"leak": {"mul": self.leak_mul, "frac": self.leak_frac}, "fire": self.fire, "reset": self.reset}


@dataclass(frozen=True)
class QuantConfig:
    """Quantization of weights and inputs.

    Parameters
    ----------
    weight_bits : int
        Signed weight width (``[-2**(b-1)+1, 2**(b-1)-1]``, symmetric).
    input_bits : int
        Unsigned width of the analog input values (inputs in [0, 1] map to ``[0, 2**b - 1]``).
    per_channel : bool
        One weight scale per output neuron for hidden layers (the output layer always uses one
        scale, so that the accumulated outputs of all classes are comparable integers).
    """

    weight_bits: int = 8
    input_bits: int = 8
    per_channel: bool = True

    def __post_init__(self):
        check_int("quant", "weight_bits", self.weight_bits, *WIDTH_RANGES["weight_bits"])
        check_int("quant", "input_bits", self.input_bits, *WIDTH_RANGES["input_bits"])
        if not isinstance(self.per_channel, bool):
            raise ConfigError(f"quant.per_channel must be true or false, got {self.per_channel!r}")
