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
