"""Pure jnp functions without parameters (DCT, colour, rounding, bounds)."""
