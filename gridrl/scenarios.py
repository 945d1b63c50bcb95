"""Seeded daily scenarios: load profiles, noise, renewable availability, random outages.

An episode is one day at 15-minute steps. What varies with the curriculum level is in
:class:`LevelSettings` (one row per level, stacked into arrays so that the level is a
runtime value and switching it never recompiles):

====== =========================================================
level  what is added
====== =========================================================
0      flat load at the case's values
1      daily load profile
2      per-episode scale, correlated load noise, renewables
3      random branch outages (never on bridges) with repairs
4      stressed ratings and peak days
====== =========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import jax
import jax.numpy as jnp
import numpy as np

STEP_MINUTES = 15  # one environment step
STEPS_PER_HOUR = 60 // STEP_MINUTES
STEPS_PER_DAY = 24 * STEPS_PER_HOUR
#: Curriculum levels 0 .. TOP_LEVEL (the columns of :meth:`LevelSettings.default`).
N_LEVELS = 5
TOP_LEVEL = N_LEVELS - 1


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class LevelSettings:
    """Per-level scenario settings; every field is an array indexed by level (5,)."""

    daily_profile: jax.Array  # 0/1: follow the daily shape
    scale_low: jax.Array  # per-episode load scale ~ U(low, high)
    scale_high: jax.Array
    noise_std: jax.Array  # std of the AR(1) load noise (relative)
    renewables: jax.Array  # 0/1: renewable units follow weather
    outage_rate: jax.Array  # expected outages per day over the whole grid
    rating_scale: jax.Array  # multiplier on every rating

    @staticmethod
    def default() -> LevelSettings:
        settings = LevelSettings(
            daily_profile=jnp.array([0.0, 1, 1, 1, 1]),
            scale_low=jnp.array([1.0, 1.0, 0.9, 0.9, 1.05]),
            scale_high=jnp.array([1.0, 1.0, 1.1, 1.1, 1.2]),
            noise_std=jnp.array([0.0, 0.0, 0.03, 0.03, 0.04]),
            renewables=jnp.array([0.0, 0, 1, 1, 1]),
            outage_rate=jnp.array([0.0, 0, 0, 2.0, 3.0]),
            rating_scale=jnp.array([1.0, 1.0, 1.0, 1.0, 0.85]),
        )
        for f in fields(settings):
            if getattr(settings, f.name).shape != (N_LEVELS,):
                raise AssertionError(
                    f"LevelSettings.{f.name} must have N_LEVELS = {N_LEVELS} entries"
                )
        return settings

    def at(self, level: jax.Array) -> LevelSettings:
        """The settings of one level (a traced integer is fine). A level outside the
        levels reads the nearest one (indexing wrapped -1 to the top level and -3 to
        level 2; hostile rerun 10); env.step flags it in ``info["invalid_params"]``."""
        top = getattr(self, fields(self)[0].name).shape[0] - 1
        level = jnp.clip(level, 0, top)
        return LevelSettings(**{f.name: getattr(self, f.name)[level] for f in fields(self)})


def daily_load_shape(steps: int = STEPS_PER_DAY) -> np.ndarray:
    """(steps,) relative load over a day: night trough, morning and evening peaks; mean 1."""
    hour = np.arange(steps) * 24.0 / steps
    shape = (
        0.78
        + 0.16 * np.exp(-0.5 * ((hour - 9.0) / 2.5) ** 2)
        + 0.24 * np.exp(-0.5 * ((hour - 19.0) / 2.2) ** 2)
        + 0.06 * np.sin(2 * np.pi * (hour - 6) / 24)
    )
    return shape / shape.mean()


def solar_shape(steps: int = STEPS_PER_DAY) -> np.ndarray:
    """(steps,) clear-sky solar availability in [0, 1]: zero at night, peak at noon."""
    hour = np.arange(steps) * 24.0 / steps
    return np.clip(np.sin(np.pi * (hour - 6.0) / 12.0), 0.0, None)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class EpisodeDraw:
    """The random part of an episode, drawn at reset."""

    scale: jax.Array  # () load scale
    cloud: jax.Array  # () solar derating of the day in [0.3, 1]


def draw_episode(key: jax.Array, settings: LevelSettings) -> EpisodeDraw:
    k1, k2 = jax.random.split(key)
    dtype = settings.scale_low.dtype
    scale = jax.random.uniform(k1, (), dtype, minval=settings.scale_low, maxval=settings.scale_high)
    cloud = jax.random.uniform(k2, (), dtype, minval=0.3, maxval=1.0)
    return EpisodeDraw(scale=scale, cloud=cloud)


def load_factor(
    t: jax.Array, draw: EpisodeDraw, noise: jax.Array, settings: LevelSettings, shape: jax.Array
) -> jax.Array:
    """(n_load,) multiplier on each load's case value at step ``t``."""
    profile = jnp.where(settings.daily_profile > 0, shape[t % shape.shape[0]], 1.0)
    return jnp.maximum(profile * draw.scale * (1.0 + noise), 0.0)


def step_noise(
    key: jax.Array, noise: jax.Array, settings: LevelSettings, rho: float = 0.9
) -> jax.Array:
    """AR(1) load noise with stationary std ``settings.noise_std``."""
    eps = jax.random.normal(key, noise.shape, noise.dtype)
    return rho * noise + jnp.sqrt(1 - rho**2) * settings.noise_std * eps


def renewable_availability(
    t: jax.Array,
    draw: EpisodeDraw,
    wind: jax.Array,
    settings: LevelSettings,
    is_solar: jax.Array,
    solar: jax.Array,
) -> jax.Array:
    """(n_ren,) available share of capacity: solar follows the sun times the day's
    cloudiness, wind its AR(1) state; 1 (fully available) below level 2."""
    sun = solar[t % solar.shape[0]] * draw.cloud
    weather = jnp.where(is_solar, sun, jnp.clip(wind, 0.0, 1.0))
    return jnp.where(settings.renewables > 0, weather, 1.0)


def step_wind(key: jax.Array, wind: jax.Array, rho: float = 0.95) -> jax.Array:
    """AR(1) wind availability around 0.45."""
    eps = jax.random.normal(key, wind.shape, wind.dtype)
    return 0.45 + rho * (wind - 0.45) + jnp.sqrt(1 - rho**2) * 0.25 * eps


def draw_outages(
    key: jax.Array, in_service: jax.Array, can_fail: jax.Array, settings: LevelSettings, steps: int
) -> jax.Array:
    """(n_branch,) bool: branches that fail this step (Bernoulli, ``outage_rate`` per day
    over the candidates; never a bridge)."""
    n = jnp.maximum(jnp.sum(can_fail), 1)
    p = settings.outage_rate / (steps * n)
    return (jax.random.uniform(key, in_service.shape) < p) & in_service & can_fail
