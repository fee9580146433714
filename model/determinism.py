"""Training that gives the same figures on any machine: the one home of the reproducibility settings.

Floating-point sums depend on their order, and PyTorch's CPU kernels pick that order by the machine:
the number of threads splits reductions and matrix products differently, and the instruction set
(AVX-512, AVX2, SSE) picks different vector kernels in ATen, MKL and oneDNN. Measured on the digits
MLP (4 epochs): 1 vs 2 threads, and AVX-512 vs AVX2 kernels, each gave different weights.

So spikeloom pins both, for every x86-64 machine:

* :data:`PINNED_ENV`: ATen's portable (non-vectorised) kernels, MKL's conditional numerical
  reproducibility in its ``COMPATIBLE`` mode, oneDNN limited to SSE4.1. These are read once, when
  each library first runs a kernel, so ``spikeloom.model``'s ``__init__`` sets them when it
  is imported (a value already in the environment wins: set e.g. ``ATEN_CPU_CAPABILITY=avx2`` to
  trade reproducibility for speed). A program that ran PyTorch kernels before importing
  spikeloom keeps its own choice; :func:`settings` reports what is in force.
* :func:`one_thread`: training and float evaluation run on one intra-op thread. On the small
  networks spikeloom trains this is also faster on a shared machine (the digits MLP's epochs took
  about a quarter of the time of two threads on a loaded 2-core machine).

Seeds are the callers' (``torch.manual_seed`` and a ``torch.Generator`` per fit in
:mod:`spikeloom.model.train`). CUDA training (``--device cuda``) is not covered.
"""

import functools
import os
from contextlib import contextmanager

from . import PINNED_ENV

__all__ = ["PINNED_ENV", "TRAINING_THREADS", "one_thread", "settings", "single_threaded"]

#: PyTorch intra-op threads while training and evaluating the float network
TRAINING_THREADS = 1


@contextmanager
def one_thread():
    """PyTorch's intra-op threads set to :data:`TRAINING_THREADS` inside, restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(TRAINING_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def single_threaded(fn):
    """Decorator: ``fn`` runs inside :func:`one_thread`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)
    return wrapper


def settings():
    """What is in force, for reports: the pinned variables' values and ATen's kernel level."""
    import torch

    return {**{k: os.environ.get(k) for k in PINNED_ENV}, "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "training_threads": TRAINING_THREADS}
