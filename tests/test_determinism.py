"""Training gives the same weights whatever the thread count and the CPU's vector instructions."""

import json
import os
import subprocess
import sys

from spikeloom.model.determinism import PINNED_ENV, one_thread, settings

# trains the digits MLP and a VGG-style conv net briefly (the conv path runs oneDNN) and prints a
# hash of each float network's parameters
SCRIPT = r"""
import hashlib, json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from spikeloom.model.config import NeuronConfig
from spikeloom.model.data import load_digits
from spikeloom.model.determinism import settings
from spikeloom.model.train import TrainConfig, train_float
split = load_digits()
out = {"settings": settings()}
for arch, epochs in (("mlp", 3), ("vgg", 1)):
    m, _ = train_float(split, TrainConfig(arch=arch, epochs=epochs), NeuronConfig())
    out[arch] = hashlib.sha256(b"".join(v.numpy().tobytes() for v in m.state_dict().values())).hexdigest()
out["threads_after"] = torch.get_num_threads()
print(json.dumps(out))
"""


def _train(threads, **env):
    full = {k: v for k, v in os.environ.items() if k not in PINNED_ENV and not k.startswith(("OMP_", "MKL_"))}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(threads)], capture_output=True, text=True, timeout=600,
                       env={**full, **env})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_training_is_the_same_on_other_thread_counts_and_instruction_sets():
    a = _train(2)
    # another machine: one OpenMP thread, and MKL restricted to AVX2 (as on a CPU without AVX-512)
    b = _train(1, OMP_NUM_THREADS="1", MKL_ENABLE_INSTRUCTIONS="AVX2")
    assert a["mlp"] == b["mlp"] and a["vgg"] == b["vgg"]
    assert a["settings"] == b["settings"] and a["settings"]["aten_cpu_capability"] == "DEFAULT"
    assert a["threads_after"] == 2  # the caller's thread count is restored after training


def test_pins_yield_to_the_environment_and_one_thread_restores():
    import torch

    s = settings()
    assert all(s[k] == os.environ[k] for k in PINNED_ENV)
    n = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n
