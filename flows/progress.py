"""Progress and wall time of the pipeline's long steps, on a terminal and in a log.

Every long step runs inside :func:`step` (``with progress.step("train", ctx.timing, what) as p:``):

- on a terminal (standard output a TTY): a tqdm bar for counted work (training epochs: :meth:`Step.epochs`),
  else the step's activity with its elapsed time, redrawn every second;
- elsewhere (a log file, CI): plain lines such as ``[train] train (float): epoch 3/60 (loss 0.412,
  val 0.903), 41 s``, at most one and at least one every :func:`interval` seconds while the step runs
  (a background thread writes them), so that a log is never silent for longer than that;
- at the end one line with the step's wall time, which is added to ``timing[name]`` (the report's
  ``timing`` section, :data:`STEPS`).

:class:`Phases` times steps that follow each other inside one call, as the co-simulation's
``build`` and ``cosim`` inside :func:`spikeloom.sim.runner.cosim` (its ``phase`` argument).
The interval is the environment variable ``SPIKELOOM_PROGRESS_INTERVAL`` in seconds (default 5).
"""

import math
import os
import sys
import threading
import time
from contextlib import contextmanager

from spikeloom.model.errors import ConfigError

#: Seconds between two plain progress lines when standard output is not a terminal.
INTERVAL_ENV = "SPIKELOOM_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 5.0
#: The steps the report's ``timing`` section can name, in pipeline order; ``total`` is the whole command.
STEPS = ("train", "quantize", "import", "evaluate", "generate", "build", "cosim", "energy")


def interval():
    """Seconds between plain progress lines: ``SPIKELOOM_PROGRESS_INTERVAL``, default 5 (a bad value is
    a one-line error naming the variable)."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not 0 < v <= 3600:
        raise ConfigError(f"{INTERVAL_ENV}={text!r} must be a number of seconds in (0, 3600]")
    return v


def _seconds(t):
    return f"{t:.1f} s" if t < 10 else f"{t:.0f} s"


class Step:
    """One running step: what it does now, its count (epochs) and its display. Made by :func:`step`."""

    def __init__(self, name, activity, stream, every, tty):
        self.name, self.activity, self.stream, self.every, self.tty = name, activity, stream, every, tty
        self.total = self.done = None
        self.unit, self.info = "", ""
        self.t0 = self._last = time.perf_counter()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._bar = None
        self._thread = None

    @property
    def elapsed(self):
        return time.perf_counter() - self.t0

    # -- what the step does ----------------------------------------------------------------------
    def say(self, activity):
        """A new activity of the step: printed at once (a line that stays), and shown until the next."""
        with self._lock:
            self.activity = activity
            self.total = self.done = None
            self.info = ""
            self._write(f"[{self.name}] {activity}")
            if self.tty:
                self._new_bar()

    def count(self, total, unit, activity=None):
        """Counted work from here: ``total`` ``unit``\\ s, advanced by :meth:`update`."""
        with self._lock:
            if activity is not None:
                self.activity = activity
            self.total, self.done, self.unit, self.info = total, 0, unit, ""
            if self.tty:
                self._new_bar()

    def update(self, n=1, info=None):
        """``n`` more units done; ``info``: a short text shown beside the count (loss, accuracy)."""
        with self._lock:
            self.done = (self.done or 0) + n
            if info is not None:
                self.info = info
            if self.tty:
                self._bar.set_postfix_str(self.info, refresh=False)
                self._bar.update(n)
            elif time.perf_counter() - self._last >= self.every:
                self._write(self._status())

    def wrap(self, log):
        """``log`` (a ``print``-like function) made safe to call while the step shows its progress:
        on a terminal the bar is cleared and redrawn around the line; in a log the line counts as
        the step's latest output."""
        def out(*args, **kwargs):
            with self._lock:
                if self._bar is not None:
                    with self._bar.external_write_mode(file=self.stream):
                        log(*args, **kwargs)
                else:
                    log(*args, **kwargs)
                self._last = time.perf_counter()
        return out

    @contextmanager
    def epochs(self):
        """Training inside this block shows its epochs here (the hook of :mod:`spikeloom.model.train`)."""
        from spikeloom.model import train

        token = train.EPOCH_BAR.set(lambda n, desc: _Epochs(self, n, desc))
        try:
            yield self
        finally:
            train.EPOCH_BAR.reset(token)

    # -- display ---------------------------------------------------------------------------------
    def _status(self, periodic=False):
        # a periodic line of a step without a count does not repeat the activity (it was printed
        # when it began, often with a long log path): the step and its time so far
        line = f"[{self.name}] {'running' if periodic and self.total is None else self.activity}"
        if self.total is not None:
            line += f": {self.unit} {self.done}/{self.total}"
            if self.info:
                line += f" ({self.info})"
        return f"{line}, {_seconds(self.elapsed)}"

    def _write(self, line):
        self._last = time.perf_counter()
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _new_bar(self):
        from tqdm import tqdm

        if self._bar is not None:
            self._bar.close()
        desc = f"[{self.name}] {self.activity}"
        if self.total is None:
            # no count: the activity and the time it has taken so far
            self._bar = tqdm(total=None, desc=desc, bar_format="{desc} {elapsed}", file=self.stream, leave=False)
        else:
            self._bar = tqdm(total=self.total, desc=desc, unit=self.unit, file=self.stream, leave=False)

    def _tick(self):
        while not self._stop.wait(1.0 if self.tty else max(0.01, min(1.0, self.every / 4))):
            with self._lock:
                try:
                    if self.tty:
                        self._bar.refresh()
                    elif time.perf_counter() - self._last >= self.every:
                        self._write(self._status(periodic=True))
                except (OSError, ValueError):  # the reader went away (a closed pipe): the command's own
                    return                     # next write reports it

    def _start(self):
        with self._lock:
            if self.tty:
                self._new_bar()
            else:
                self._write(f"[{self.name}] {self.activity}")
        self._thread = threading.Thread(target=self._tick, name=f"progress-{self.name}", daemon=True)
        self._thread.start()

    def _end(self, ok):
        self._stop.set()
        self._thread.join()
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            t = self.elapsed
            self._write(f"[{self.name}] {'done in' if ok else 'stopped after'} {_seconds(t)}")
        return t


class _Epochs:
    """What :func:`spikeloom.model.train._fit` iterates over: the epochs, counted on a :class:`Step`."""

    def __init__(self, step, n, desc):
        self.step, self.n, self.desc = step, n, desc
        self.info = None

    def __iter__(self):
        self.step.count(self.n, "epoch", self.desc)
        for i in range(self.n):
            yield i
            self.step.update(1, self.info)

    def set_postfix(self, **values):
        self.info = ", ".join(f"{k} {v}" for k, v in values.items())


def _is_tty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def step(name, timing=None, activity="", stream=None, every=None, tty=None):
    """Run a step with its progress shown (see the module's docstring); its wall time is added to
    ``timing[name]`` (a dict) when it ends without an error. ``stream``: where to write (default:
    standard output); ``every``: the interval (default :func:`interval`); ``tty``: force the terminal
    display on or off (default: whether ``stream`` is a terminal)."""
    stream = sys.stdout if stream is None else stream
    s = Step(name, activity or name, stream, interval() if every is None else every,
             _is_tty(stream) if tty is None else tty)
    s._start()
    ok = False
    try:
        yield s
        ok = True
    finally:
        t = s._end(ok)
        if ok and timing is not None:
            timing[name] = round(timing.get(name, 0.0) + t, 3)


class Phases:
    """Steps that follow each other inside one call: ``phase(name, activity)`` ends the running step
    (its time into ``timing``) and starts ``name``; leaving the ``with`` block ends the last one.
    :func:`spikeloom.sim.runner.cosim` calls it with ``"build"`` and ``"cosim"``."""

    def __init__(self, timing=None, **options):
        self.timing, self.options = timing, options
        self._current = None

    def __call__(self, name, activity):
        self._close(None, None, None)
        self._current = step(name, self.timing, activity, **self.options)
        self._current.__enter__()

    def _close(self, *exc):
        cur, self._current = self._current, None
        if cur is not None:
            cur.__exit__(*exc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close(*exc)
        return False


def table(timing, total=None):
    """The steps' wall times as a small text table, in pipeline order (``total`` last)."""
    from .common import table as text_table

    rows = [[k, f"{timing[k]:.1f}"] for k in STEPS if k in timing]
    if total is not None:
        rows.append(["total", f"{total:.1f}"])
    return text_table(rows, ["step", "wall time (s)"])
