"""spikeloom.hw."""
