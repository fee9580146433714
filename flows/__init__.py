"""spikeloom.flows."""
