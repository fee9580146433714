"""One exception family for every user-facing error.

The command line catches :class:`SpikeloomError` and prints its message (no traceback) with a
non-zero exit status, so each message must name the problem: the file, the field, the value and
the allowed range.
"""


class SpikeloomError(Exception):
    """Base class: a problem with what the user gave us (a file, a path, an option)."""


class ModelFileError(SpikeloomError):
    """A model file that is missing, truncated, of another version or inconsistent."""


class DatasetError(SpikeloomError):
    """A dataset path that does not exist or is not laid out as expected."""


class ConfigError(SpikeloomError, ValueError):
    """A configuration value outside its allowed range."""


class InputError(SpikeloomError, ValueError):
    """An input array of the wrong shape, type or range."""


def as_options(make, section, is_option):
    """``make()``, a config of ``section`` (``train``, ``quant``, ``neuron``); its error about a field
    for which ``is_option(field)`` holds names the command-line option the user typed instead:
    "train.t_max = 0 ..." -> "--t-max = 0 ..." (a field that is no option keeps its name)."""
    import re

    try:
        return make()
    except ConfigError as e:
        def option(m):
            return "--" + m.group(1).replace("_", "-") if is_option(m.group(1)) else m.group(0)

        raise ConfigError(re.sub(rf"\b{section}\.(\w+)", option, str(e))) from None
