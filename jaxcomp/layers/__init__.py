"""Flax modules that own parameters and call the pure functions of `jaxcomp.ops`."""
