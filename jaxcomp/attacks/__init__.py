"""Adversarial attacks, jit-compiled through jax.grad."""
