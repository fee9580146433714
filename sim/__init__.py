"""spikeloom.sim."""
