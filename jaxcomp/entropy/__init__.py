"""Entropy models (factorized, Gaussian conditional) and host-side bitstream coding."""
