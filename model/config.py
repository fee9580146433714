"""Frozen configuration dataclasses shared by model/ and hw/.

Every value is validated in ``__post_init__``; a bad value raises :class:`ConfigError` naming the
field, the value and the allowed range.
"""

from dataclasses import dataclass

from .errors import ConfigError

RESET_MODES = ("zero", "subtract")
EXIT_CRITERIA = ("margin", "entropy", "max_softmax")


def check_int(owner, field, value, lo, hi=None):
    """Raise ConfigError unless ``lo <= value <= hi`` and value is an int (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner}.{field} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ConfigError(f"{owner}.{field} = {value!r} is outside the allowed range {rng}")
    return value


def check_choice(owner, field, value, choices):
    if value not in choices:
        raise ConfigError(f"{owner}.{field} = {value!r}; allowed: {', '.join(map(repr, choices))}")
    return value


@dataclass(frozen=True)
class NeuronConfig:
    """Integer LIF neuron shared by every spiking layer.

    Parameters
    ----------
    leak_shift : int
        ``k`` in the leak ``u <- u - (u >>> k)`` (decay factor ``1 - 2**-k``); ``0`` means no leak
        (integrate-and-fire).
    reset : str
        ``"zero"`` (``u <- 0`` after a spike) or ``"subtract"`` (``u <- u - theta``).
    membrane_bits : int
        Signed width of membrane potentials and of the output integrator; updates saturate to it.
    """

    leak_shift: int = 1
    reset: str = "subtract"
    membrane_bits: int = 16

    def __post_init__(self):
        check_int("neuron", "leak_shift", self.leak_shift, 0, 8)
        check_choice("neuron", "reset", self.reset, RESET_MODES)
        check_int("neuron", "membrane_bits", self.membrane_bits, 4, 32)

    @property
    def leak(self) -> float:
        """The decay factor lambda as a float (for float training)."""
        return 1.0 if self.leak_shift == 0 else 1.0 - 2.0 ** -self.leak_shift


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
        check_int("quant", "weight_bits", self.weight_bits, 2, 16)
        check_int("quant", "input_bits", self.input_bits, 1, 16)
        if not isinstance(self.per_channel, bool):
            raise ConfigError(f"quant.per_channel must be true or false, got {self.per_channel!r}")
