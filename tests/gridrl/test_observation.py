"""What the agents observe (gridrl.observation)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from gridrl import scenarios
from gridrl.env import make
from gridrl.observation import observe


def test_observation_sizes_and_the_hour_ahead_load():
    env, params = make("ieee14", level=2, n_areas=2)
    _, state = env.reset(jax.random.key(0), params)
    obs = observe(env, state, params)
    for agent in env.agents:
        assert obs[agent].shape == env.observation_space(agent).shape
        assert np.isfinite(np.asarray(obs[agent])).all()
    # strategic entries 0 and 1: the load now and in an hour (the day's profile), both
    # per unit of the case's total load
    shape = scenarios.daily_load_shape(env.config.episode_steps)
    ref = float(np.sum(np.asarray(params.network.load.p_mw * params.network.load.status)))
    now = float(np.sum(np.asarray(state.load_mw))) / ref
    t = int(state.t)
    ahead = now * shape[(t + scenarios.STEPS_PER_HOUR) % len(shape)] / shape[t % len(shape)]
    strategic = np.asarray(obs["strategic"])
    assert strategic[0] == pytest.approx(now, rel=1e-5)
    assert strategic[1] == pytest.approx(ahead, rel=1e-5)
