"""The one executor of spikeloom's many-task flows: Dask distributed.

``spikeloom sweep`` (its points), ``spikeloom fuzz`` (its random networks) and ``make synth`` (its
targets and N) submit their tasks through :func:`connect`: an embedded ``LocalCluster`` of
single-threaded worker processes sized to the machine by default (nothing to start), or
``--scheduler tcp://HOST:PORT`` for a cluster someone started (``dask scheduler`` and
``dask worker`` on any number of machines, or ``dask-jobqueue`` on Slurm/PBS/LSF: README, "Sweeps").
A task's worker that dies (a killed process, a lost node) loses nothing: the scheduler runs the
task again on another worker; one that kills its worker every time ends as
:func:`task_error`'s one line, and the flow goes on.

Paths are the client's: on several machines, the build folder (and a model file given by path)
must be where every worker sees them at the same path, e.g. a shared file system.
"""

import contextlib
import logging
import os
import time

from spikeloom.model.config import check_int
from spikeloom.model.errors import ConfigError

__all__ = ["connect", "add_arguments", "check_args", "completed", "executing", "task_error", "SCHEMES"]

#: The address schemes of a Dask scheduler that ``--scheduler`` takes.
SCHEMES = ("tcp://", "tls://", "ws://", "wss://")
#: The most worker processes an embedded LocalCluster starts (``--workers``, ``--jobs``).
MAX_WORKERS = 256
#: Seconds ``--scheduler`` tries to connect, then waits for its cluster's first worker.
CONNECT_S = 20
WAIT_FOR_WORKER_S = 60


def one_line(e):
    """An exception as the one line a flow records: a spikeloom error's first line, any other
    error's type and first line."""
    from spikeloom.model.errors import SpikeloomError

    text = str(e).strip().splitlines()
    text = text[0] if text else ""
    return text if isinstance(e, SpikeloomError) else f"{type(e).__name__}: {text}".rstrip(": ")


def task_error(e):
    """The one line recorded for a task that raised ``e`` on its worker, or whose workers died."""
    from distributed import KilledWorker

    if isinstance(e, KilledWorker):
        tries = getattr(e, "allowed_failures", None)
        return ("every worker that ran it died (a killed process, out of memory, a crash of the process); "
                f"Dask gave up after {'' if tries is None else f'{tries + 1} '}tries "
                "(distributed.scheduler.allowed-failures)")
    return one_line(e)


@contextlib.contextmanager
def connect(scheduler=None, workers=None):
    """Yields ``(client, where)``: a Dask client of the scheduler at ``scheduler``
    (``tcp://HOST:PORT``), else of an embedded ``LocalCluster`` with ``workers`` single-threaded
    worker processes (default: one per CPU); ``where`` says which, for a log line."""
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_S}s")
        except (OSError, TimeoutError, ValueError) as e:
            raise ConfigError(f"--scheduler {scheduler}: cannot connect ({one_line(e)})") from None
        with client, _sigterm_interrupts():
            try:
                client.wait_for_workers(1, timeout=WAIT_FOR_WORKER_S)
            except (TimeoutError, OSError) as e:
                raise ConfigError(f"--scheduler {scheduler}: no worker joined the cluster within "
                                  f"{WAIT_FOR_WORKER_S} s (start one: dask worker {scheduler} --nthreads 1)") from e
            yield client, f"scheduler {scheduler}"
        return
    import warnings

    n = workers or os.cpu_count() or 1
    with warnings.catch_warnings(), _no_sigint():
        # no dashboard, but the scheduler's HTTP endpoint still asks for its port, which another
        # cluster on this machine may hold: it takes another, and says so
        warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
        # a task's own error comes back with its result: the workers' log of it ("Compute Failed",
        # with a traceback) would only repeat it
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.CRITICAL, preload=[__name__])
    left = []
    try:
        with cluster, Client(cluster) as client, _sigterm_interrupts():
            try:
                yield client, f"LocalCluster, {n} worker process{'es' if n > 1 else ''}"
            finally:
                left = _started_by_workers(client)
    finally:
        _kill(left)


@contextlib.contextmanager
def _no_sigint():
    """SIGINT ignored meanwhile (in the main thread): the worker processes started then inherit it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM to the client meanwhile is Ctrl-C: the flow reports what finished and the embedded
    cluster closes (its workers, and what they started, end with it)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def dask_setup(worker):
    """Run in every worker process of the embedded LocalCluster at its start (Dask's ``preload``):
    Ctrl-C, which reaches every process of the terminal's process group, is the client's to handle
    (it reports what finished and closes the cluster). The worker and what it starts (simulators,
    synthesis tools) ignore it, so a task is never cut short by it into a false failure."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _started_by_workers(client):
    """The worker processes and the processes they started that run now (a simulator or a
    synthesis tool): what must be gone once the cluster is closed."""
    import psutil

    try:
        pids = client.run(os.getpid, wait=True).values()
    except Exception:  # noqa: BLE001 - a cluster that is already going: nothing to ask
        return []
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            worker = psutil.Process(pid)
            out += [worker, *worker.children(recursive=True)]
    return out


def _kill(procs):
    """Kill what the closed LocalCluster left running (a worker slow to close, the processes of a
    task that Ctrl-C cut short, which would otherwise run on, orphaned)."""
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    with contextlib.suppress(psutil.Error):
        psutil.wait_procs(procs, timeout=10)


def add_arguments(p, workers="--workers", workers_help=None):
    """``--scheduler`` and the LocalCluster's size option (``workers``: its name; None: none)."""
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run the tasks on the Dask cluster of this scheduler (default: an embedded LocalCluster)")
    if workers:
        p.add_argument(workers, default=None, metavar="N", dest="workers",
                       help=workers_help or "worker processes of the embedded LocalCluster (default: one per CPU)")
    return p


def check_args(scheduler, workers, option="--workers", most=None):
    """``(scheduler, workers)`` checked: ``workers`` (text or int) a whole number in ``[1, most]``
    (default :data:`MAX_WORKERS`) or None, and not given with ``scheduler``, a Dask address
    (``tcp://HOST[:PORT]``, default port 8786). One line, exit 2."""
    from .common import int_option

    most = MAX_WORKERS if most is None else most
    if workers is not None:
        workers = int_option(option, workers, 1, most) if isinstance(workers, str) else workers
        check_int(None, option, workers, 1, most)
    if scheduler is not None:
        from distributed.comm.addressing import parse_address, parse_host_port

        if workers is not None:
            raise ConfigError(f"{option} sizes the embedded LocalCluster; with --scheduler the cluster has its own")
        usage = f"--scheduler {scheduler!r}: give the scheduler's address, e.g. tcp://HOST:8786"
        if not str(scheduler).startswith(SCHEMES):
            raise ConfigError(f"{usage} (schemes: {', '.join(SCHEMES)})")
        try:
            host, _ = parse_host_port(parse_address(str(scheduler), strict=True)[1], 8786)
        except ValueError as e:
            raise ConfigError(f"{usage} ({one_line(e)})") from None
        if not host:
            raise ConfigError(f"{usage} (no host)")
    return scheduler, workers


def completed(futures, tick=None, every=2.0):
    """The futures in the order they finish (Dask's ``as_completed``), calling ``tick()`` about
    every ``every`` seconds while none finishes (a progress line's refresh)."""
    from distributed import as_completed

    ac = as_completed(futures)
    asked = time.perf_counter()
    while not ac.is_empty():
        batch = ac.next_batch(block=False)
        if not batch:
            time.sleep(0.2)
            if tick is not None and time.perf_counter() - asked > every:
                tick()
                asked = time.perf_counter()
            continue
        yield from batch


def _executing(dask_worker, prefix):
    return [str(ts.key) for ts in dask_worker.state.executing if str(ts.key).startswith(prefix)]


def executing(client, prefix):
    """``{worker address: keys}`` of the tasks whose key starts with ``prefix`` that each worker
    is running now (the scheduler's ``processing`` also counts the tasks queued on a worker)."""
    return client.run(_executing, prefix=prefix)


def _still_processing(dask_scheduler, worker, keys):
    ws = dask_scheduler.workers.get(worker)
    return [] if ws is None else [str(ts.key) for ts in ws.processing if str(ts.key) in keys]


def still_processing(client, worker, keys):
    """Of ``keys``, those the scheduler counts as processing on ``worker``: no result from it yet."""
    return client.run_on_scheduler(_still_processing, worker=worker, keys=set(keys))


def running(client, prefix):
    """How many tasks with that key prefix run now, or ``"?"`` when a worker went away while asked."""
    try:
        return sum(len(v) for v in executing(client, prefix).values())
    except Exception:  # noqa: BLE001 - a worker that went away while asked: counted next time
        return "?"
