"""Observation and action spaces (gymnax-style boxes)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Box:
    """A box of ``shape`` with bounds ``low`` and ``high`` (scalars)."""

    low: float
    high: float
    shape: tuple[int, ...]
    dtype: jnp.dtype = jnp.float32

    def sample(self, key: jax.Array) -> jax.Array:
        lo = -1.0 if self.low == -jnp.inf else self.low
        hi = 1.0 if self.high == jnp.inf else self.high
        return jax.random.uniform(key, self.shape, self.dtype, minval=lo, maxval=hi)

    def contains(self, x: jax.Array) -> jax.Array:
        return (jnp.shape(x) == self.shape) and bool(jnp.all((x >= self.low) & (x <= self.high)))
