"""spikeloom.model."""
