"""spikeloom.model."""

from .determinism import pin_environment

# before any PyTorch kernel runs: the same training results on any machine (model/determinism.py)
pin_environment()
