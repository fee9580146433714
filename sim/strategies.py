"""Hypothesis strategies for random networks the hardware supports (shared by the Amaranth-sim and
the co-simulation tests; needs the ``dev`` extra)."""

from hypothesis import strategies as st

from spikeloom.model.randnet import random_conv_model


@st.composite
def conv_nets(draw, max_convs=3, max_hw=6):
    """A random conv/pool/residual QuantModel: 1-3 conv layers (kernel 1-3, stride 1-2, padding
    < kernel, 1-5 channels, 2x2 OR-pooling where the map divides evenly, residual 1x1 shortcuts)
    and a dense output layer, with random integer weights (30% or 80% nonzero)."""
    c_in, hw = draw(st.integers(1, 2), label="c_in"), draw(st.integers(3, max_hw), label="hw")
    convs, shape = [], (c_in, hw, hw)
    for i in range(draw(st.integers(1, max_convs), label="n_conv")):
        k = draw(st.sampled_from([1, 2, 3]), label="k")
        s = draw(st.sampled_from([1, 2]), label="stride")
        p = draw(st.integers(0, k - 1), label="pad")
        ho = (shape[1] + 2 * p - k) // s + 1
        if ho < 1:
            break
        q = 2 if ho % 2 == 0 and draw(st.booleans(), label="pool") else 1
        c = draw(st.integers(1, 5), label="c_out")
        convs.append((c, k, s, p, q, i > 0 and draw(st.booleans(), label="shortcut")))
        shape = (c, ho // q, ho // q)
    if not convs:
        convs = [(2, 3, 1, 1, 1, False)]
    return random_conv_model(seed=draw(st.integers(0, 2**16), label="seed"), in_shape=(c_in, hw, hw),
                             convs=convs, t_max=draw(st.integers(1, 3), label="t_max"),
                             reset=draw(st.sampled_from(["zero", "subtract"]), label="reset"),
                             density=draw(st.sampled_from([0.3, 0.8]), label="density"))
