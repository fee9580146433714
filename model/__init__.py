"""spikeloom.model.

Importing it pins the CPU kernels PyTorch's libraries choose, before any PyTorch kernel runs, so
that training gives the same figures on any machine (:mod:`spikeloom.model.determinism` explains
the settings; a value already in the environment wins).
"""

import os

#: variable -> value: the most portable kernels of ATen, MKL and oneDNN (read when each first runs)
PINNED_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"}

for _k, _v in PINNED_ENV.items():
    os.environ.setdefault(_k, _v)
