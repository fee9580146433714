"""Helpers every command-line flow shares: the error guard, option checks and plain-text tables.

A module of its own so that the flows (``cli``, ``export``, ``synth``, ``prune``, ``bench``,
``ablation``) import it instead of each other (no import cycles, see ``flows/sources.py``).
"""

import argparse
import math
import os
import re
import sys
from pathlib import Path

from spikeloom.hw.plan import PES_RANGE, SPARSE_FORMS, STORAGE_CHOICES
from spikeloom.model.config import check_int, check_seed
from spikeloom.model.data import MAX_IMAGE_SIZE
from spikeloom.model.errors import ConfigError, InputError, SpikeloomError


#: Exit status when the reader of our output went away (``spikeloom inspect M | head``): 128 + SIGPIPE,
#: what a shell reports for a program the closed pipe stopped.
EXIT_CLOSED_PIPE = 141


def guarded(fn, *args):
    """Run ``fn(*args)`` for a command-line entry point: a user-facing error (SpikeloomError) is
    printed as one line, exit status 2, never a traceback; a closed output pipe ends quietly with
    :data:`EXIT_CLOSED_PIPE`. Returns the exit status."""
    try:
        fn(*args)
        sys.stdout.flush()  # inside the try: a closed pipe shows at the last flush
    except BrokenPipeError:
        # nothing more can be written to stdout, and Python's flush at exit would fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_CLOSED_PIPE
    except SpikeloomError as e:
        print(f"spikeloom: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spikeloom: interrupted", file=sys.stderr)
        return 130
    return 0


def int_option(name, text, lo, hi=None):
    """An integer option given as text (argparse ``type=str``, so a bad value is one line, not a
    usage dump), checked to lie in ``[lo, hi]``."""
    from spikeloom.model.config import check_int

    try:
        v = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} = {text!r} must be an integer") from None
    return check_int(None, name, v, lo, hi)


def check_pes(pes, option="--pes"):
    lo, hi = PES_RANGE
    if not lo <= pes <= hi:
        raise ConfigError(f"{option} = {pes} is outside the allowed range [{lo}, {hi}]")


#: ``--storage``'s help (generate, export, run, evaluate, cosim).
STORAGE_HELP = ("weight storage per layer: auto (default: fewer bits), fast (fewer cycles per input event, every "
                "input channel and position counted as equally active), dense, "
                "sparse (zero-skipping; its rows cut as auto picks), " + ", ".join(SPARSE_FORMS) + " "
                "(zero-skipping, rows cut so: a burst per landing kernel row or tap), or LAYER=S[,LAYER=S...] "
                "(the layers not named: auto)")


def add_design_arguments(p):
    """The options of a command that writes a design for a model file: the model, ``--pes``,
    ``--storage``, and the output folder (``-o``, ``--force``); ``spikeloom generate`` and
    ``spikeloom export`` (each adds its own)."""
    p.add_argument("model", type=Path, help="the model file (.slm)")
    p.add_argument("--pes", type=int, default=8, help="processing elements N (default 8)")
    p.add_argument("--storage", default="auto", metavar="RULE", help=STORAGE_HELP)
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="output folder: new, empty, or one spikeloom wrote (its .spikeloom-output.json)")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty folder spikeloom did not write (a file it did not write is never "
                        "replaced or removed)")


def check_storage(storage, option="--storage"):
    """``--storage`` as the plan takes it (``hw/plan.py`` ``Plan``): ``"auto"``, ``"fast"``,
    ``"dense"``, ``"sparse"``, or ``"NAME=S,..."`` -> ``{NAME: S}`` (a dict is checked as it is).
    The layer names are checked against the model by :func:`spikeloom.flows.steps.check_hardware`."""
    allowed = ", ".join(STORAGE_CHOICES)
    if isinstance(storage, dict):
        items = list(storage.items())
    elif isinstance(storage, str) and "=" not in storage:
        if storage not in STORAGE_CHOICES:
            raise ConfigError(f"{option} = {storage!r}; allowed: {allowed}, or LAYER=S[,LAYER=S...]")
        return storage
    elif isinstance(storage, str):
        items = []
        for part in storage.split(","):
            name, eq, value = part.partition("=")
            if not eq or not name.strip():
                raise ConfigError(f"{option} = {storage!r}: {part!r} is not LAYER=S (S one of {allowed})")
            items.append((name.strip(), value.strip()))
    else:
        raise ConfigError(f"{option} must be a string or a dict, got {storage!r}")
    out = {}
    for name, value in items:
        if value not in STORAGE_CHOICES:
            raise ConfigError(f"{option}: layer {name!r} = {value!r}; allowed: {allowed}")
        if name in out:
            raise ConfigError(f"{option}: layer {name!r} is given twice")
        out[name] = value
    return out


def storage_text(storage):
    """``--storage``'s text for a checked value (:func:`check_storage`)."""
    return storage if isinstance(storage, str) else ",".join(f"{k}={v}" for k, v in storage.items())


def check_cosim(simulator, n_images):
    """The co-simulation options (``--sim``, ``--cosim-images``), checked before any work."""
    from spikeloom.model.config import check_int
    from spikeloom.sim.runner import ICARUS_MISSING, SIMULATORS, icarus_available

    if simulator not in SIMULATORS:
        raise ConfigError(f"--sim = {simulator!r}; allowed: {', '.join(SIMULATORS)}")
    if simulator == "icarus" and not icarus_available():
        raise ConfigError(f"--sim icarus: {ICARUS_MISSING}")
    if n_images is not None:
        check_int(None, "--cosim-images", n_images, 1)


def table(rows, headers):
    """Left-aligned columns with a dashed rule under the headers."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


class HelpFormatter(argparse.HelpFormatter):
    """Help that states every option's default: one the help text does not already give is added as
    ``(default: X)``; flags (``store_true``) and ``None`` defaults state none."""

    def _get_help_string(self, action):
        h = action.help or ""
        d = action.default
        if (d is not None and d is not False and d != argparse.SUPPRESS and action.option_strings
                and "default" not in h and action.nargs != 0):
            h += f" (default: {d})"
        return h


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are the one line every spikeloom error is (exit 2, no usage
    dump): ``spikeloom: error: COMMAND: message``; an option of another subcommand names the
    subcommands that take it. The error is raised (a :class:`SpikeloomError`), and
    :func:`parse_and_run` prints it like any other."""

    #: option string -> the subcommands that take it (``flows/cli.py`` ``build_parser`` sets its own)
    owners: dict = {}

    def __init__(self, *args, **kw):
        kw.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kw)

    def _get_value(self, action, arg_string):
        # a path given as "" would be Path(""), the current folder: refused, as a value
        if action.type is Path and not arg_string.strip():
            raise argparse.ArgumentError(action, f"{arg_string!r} is an empty path")
        return super()._get_value(action, arg_string)

    def error(self, message, prog=None):
        hint = ""
        m = re.match(r"unrecognized arguments: (.*)", message)
        if m:
            known = [(o, self.owners[o]) for o in m.group(1).split() if o in self.owners]
            if known:
                o, cmds = known[0]
                hint = f" ({o} is an option of {', '.join(f'`spikeloom {c}`' for c in cmds)})"
        prog = prog or self.prog
        where = prog.removeprefix("spikeloom ") if prog.startswith("spikeloom ") else "" if prog == "spikeloom" else prog
        raise SpikeloomError(f"{where + ': ' if where else ''}{message}{hint}; see `{prog} --help`")


def parse_and_run(parser, argv, fn, subcommand=None):
    """A command-line entry point: parse ``argv`` with ``parser`` (a :class:`Parser`) and run
    ``fn(args)``, both :func:`guarded` (a bad option is the same one line, exit 2, as any bad
    input). ``subcommand``: the ``dest`` of the parser's subcommands, so that an unknown argument is
    named with the subcommand it was given to. Returns the exit status."""
    parsed = []

    def parse():
        args, extra = parser.parse_known_args(argv)
        if extra:
            cmd = f"{parser.prog} {getattr(args, subcommand)}" if subcommand else parser.prog
            parser.error(f"unrecognized arguments: {' '.join(extra)}", prog=cmd)
        parsed.append(args)

    return guarded(parse) or guarded(fn, parsed[0])


def check_dataset_images(model, dataset, shape):
    """Refuse ``--dataset``'s images of per-image ``shape`` when the model reads another number of
    input values (one line naming the dataset, both sizes and the model's input shape)."""
    n = math.prod(shape)
    if n != model.input_size:
        raise InputError(f"--dataset {dataset}: images of shape {tuple(shape)} ({n} values); the model reads "
                         f"{model.input_size} (input shape {tuple(model.input_shape)})")


def dataset_options(model, dataset, data_seed=None):
    """How to load ``dataset`` the way ``model`` was trained on it: ``(split seed, image size,
    channels)``. The seed: ``data_seed``, else the model file's (``extra.data_seed``), else 0; for an
    image folder (``folder:PATH``) the side and channels of the model's input (its ``extra``, else
    its input shape), else ``None`` (digits and CIFAR have fixed sizes)."""
    extra = model.extra or {}
    # (the model file's extra is free-form: its seed is checked here, named as the file's field)
    seed = data_seed if data_seed is not None else check_seed(extra.get("data_seed", 0),
                                                              "the model file's extra.data_seed (or give --data-seed)")
    size = channels = None
    if str(dataset).startswith("folder:"):
        shape = tuple(model.input_shape)
        size = extra.get("image_size") or (shape[-1] if len(shape) == 3 else None)
        channels = extra.get("channels") or (shape[0] if len(shape) == 3 else None)
        # (checked as the file's fields: load_dataset would name them as --image-size / --channels)
        if extra.get("image_size"):
            check_int(None, "the model file's extra.image_size", size, 1, MAX_IMAGE_SIZE)
        if extra.get("channels") and (type(channels) is not int or channels not in (1, 3)):
            raise ConfigError(f"the model file's extra.channels = {channels!r}; allowed: 1 (grey levels), 3 (RGB)")
    return seed, size, channels
