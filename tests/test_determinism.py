"""Training gives the same weights whatever the thread count and the CPU's vector instructions."""

import json
import os
import subprocess
import sys

from spikeloom.model.determinism import PINNED_ENV, one_thread

# trains the digits MLP and a VGG-style conv net briefly (the conv path runs oneDNN), then one QAT
# epoch of the MLP, and prints a hash of each float network's parameters and of the integer model
SCRIPT = r"""
import hashlib, json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from spikeloom.model.config import NeuronConfig, QuantConfig
from spikeloom.model.data import load_digits
from spikeloom.model.determinism import settings
from spikeloom.model.train import TrainConfig, train_float, train_qat
split = load_digits()
out = {"settings": settings()}
def digest(arrays):
    return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()
nets = {}
for arch, epochs in (("mlp", 3), ("vgg", 1)):
    nets[arch], _ = train_float(split, TrainConfig(arch=arch, epochs=epochs), NeuronConfig())
    out[arch] = digest(v.numpy() for v in nets[arch].state_dict().values())
# the integer network make sim writes: QAT of the MLP, exported
imodel, _ = train_qat(nets["mlp"], split, TrainConfig(qat_epochs=1), NeuronConfig(), QuantConfig(input_bits=4))
q = imodel.export("d", "digits", 10)
out["qat"] = digest(a for ly in q.layers for a in (ly.weight, ly.bias, ly.threshold) if a is not None)
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
    assert a["mlp"] == b["mlp"] and a["vgg"] == b["vgg"] and a["qat"] == b["qat"]
    assert a["settings"] == b["settings"] and a["settings"]["aten_cpu_capability"] == "DEFAULT"
    assert a["threads_after"] == 2  # the caller's thread count is restored after training


def test_pins_yield_to_the_environment_and_one_thread_restores():
    import torch

    probe = ("import json, os, spikeloom.model; from spikeloom.model.determinism import settings; "
             "print(json.dumps(settings()))")

    def pins(**env):
        full = {k: v for k, v in os.environ.items() if k not in PINNED_ENV}
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                           env={**full, **env})
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    assert {k: pins()[k] for k in PINNED_ENV} == PINNED_ENV  # set on import of spikeloom.model
    s = pins(ATEN_CPU_CAPABILITY="avx2")  # a user's choice wins
    assert s["ATEN_CPU_CAPABILITY"] == "avx2" and s["MKL_CBWR"] == PINNED_ENV["MKL_CBWR"]
    assert s["aten_cpu_capability"] != "DEFAULT"
    n = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n
