"""Digits networks trained in snnTorch 1.0 and exported with snnTorch's own NIR export.

``python tests/snntorch_nets.py`` trains both (seeded, one thread) and writes
``tests/data/snntorch_{mlp,conv}.nir``, the graphs tests/test_nir_snntorch.py imports (committed, so
that `make test` does not spend a minute training; the slow test retrains and re-checks). Both use
snnTorch's ``Leaky`` with ``beta = 0.9`` and its default reset (subtraction, applied at the next
step: spikeloom's ``subtract_next``), threshold 1, the image as a constant input current at each of
``T`` steps, and the spike count of the last layer as the class score (cross-entropy on counts).
snnTorch's export needs ``beta`` and ``threshold`` as per-neuron tensors (its scalar form fails
NIR's type inference) and a batch dimension it is told to ignore.
"""

import sys
from pathlib import Path

import numpy as np
import torch

T = 8
BETA = 0.9
DATA = Path(__file__).parent / "data"


def _leaky(shape, output=False):
    import snntorch as snn

    return snn.Leaky(beta=torch.full(shape, BETA), threshold=torch.ones(shape), init_hidden=True, output=output)


def build(kind):
    """The snnTorch network: ``"mlp"`` 64-128-10 or ``"conv"`` (conv 16 + avg pool 2, conv 32 + avg
    pool 2, dense 10) on 1x8x8 images."""
    nn = torch.nn
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), _leaky((128,)), nn.Linear(128, 10), _leaky((10,), True))
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), _leaky((16, 8, 8)), nn.AvgPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), _leaky((32, 4, 4)), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(128, 10), _leaky((10,), True))


def counts(net, x):
    """(B, 10) spike counts of the last layer over ``T`` steps of the constant input ``x``."""
    from snntorch import utils

    utils.reset(net)
    c = 0
    for _ in range(T):
        spk, _mem = net(x)
        c = c + spk
    return c


def images(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float32).reshape(-1, 1, 8, 8)


def accuracy(net, split):
    """snnTorch's float accuracy on the test split and its predictions (first of equal counts)."""
    with torch.no_grad():
        pred = counts(net, images(split.test.x)).argmax(1).numpy()
    return float((pred == split.test.y).mean()), pred


def train(kind, split, epochs=None, seed=0):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        net = build(kind)
        x, y = images(split.train.x), torch.as_tensor(split.train.y)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs or (15 if kind == "mlp" else 20)):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 64):
                idx = perm[i:i + 64]
                loss = torch.nn.functional.cross_entropy(counts(net, x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return net
    finally:
        torch.set_num_threads(threads)


def export(net, path):
    """snnTorch's own NIR export of ``net``, written to ``path``."""
    import nir
    from snntorch.export_nir import export_to_nir

    graph = export_to_nir(net, torch.zeros(1, 1, 8, 8), ignore_dims=[0])
    nir.write(path, graph)
    return graph


def load(kind, path=None):
    """The snnTorch network with the weights of a graph written by :func:`export`."""
    import nir

    graph = nir.read(path or DATA / f"snntorch_{kind}.nir")
    net = build(kind)
    syn = [m for m in net if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    nodes = [graph.nodes[n] for n in sorted((n for n in graph.nodes if n.isdigit()), key=int)]
    params = [nd for nd in nodes if type(nd).__name__ in ("Affine", "Conv2d")]
    assert len(params) == len(syn), (len(params), len(syn))
    with torch.no_grad():
        for m, nd in zip(syn, params):
            m.weight.copy_(torch.as_tensor(np.asarray(nd.weight), dtype=torch.float32))
            m.bias.copy_(torch.as_tensor(np.asarray(nd.bias), dtype=torch.float32))
    return net


def main(argv=None):
    from spikeloom.model.data import load_dataset

    split = load_dataset("digits")
    DATA.mkdir(exist_ok=True)
    for kind in sys.argv[1:] or ("mlp", "conv"):
        net = train(kind, split)
        export(net, DATA / f"snntorch_{kind}.nir")
        print(kind, f"snnTorch float accuracy {100 * accuracy(net, split)[0]:.2f}%")


if __name__ == "__main__":
    main()
