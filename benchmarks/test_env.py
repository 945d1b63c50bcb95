"""Environment steps per second: gridrl (do-nothing actions, all agents, batched, jitted)
against Grid2Op with the lightsim2grid backend on its 118-bus example.

Target (issue #5): >= 100x Grid2Op + lightsim2grid's steps/s for the DC environment.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import pytest

from benchmarks.conftest import OURS
from benchmarks.peers import grid2op_step_seconds
from gridrl.env import make

N_ENVS = 1000
STEPS = 20
GRID2OP_STEPS = 300


@pytest.mark.parametrize("level", [0, 2])
def test_env_steps_per_second_gridrl(record, level):
    """Level 0 (the default: flat load) and level 2 (daily profile, noise, renewables:
    do-nothing then meets overloads and trips, whose cascade re-solves cost time)."""
    env, params = make("ieee118", level=level)
    keys = jax.random.split(jax.random.key(0), N_ENVS)
    _, state = jax.vmap(env.reset, (0, None))(keys, params)
    zeros = {a: jnp.zeros((N_ENVS, *env.action_space(a).shape), env.dtype) for a in env.agents}

    @jax.jit
    def rollout(state, key):
        def body(state, k):
            _, state, reward, _, _ = jax.vmap(env.step, (0, 0, 0, None))(
                jax.random.split(k, N_ENVS), state, zeros, params
            )
            return state, reward["strategic"]

        return jax.lax.scan(body, state, jax.random.split(key, STEPS))

    state, _ = jax.block_until_ready(rollout(state, jax.random.key(1)))
    start = time.perf_counter()
    state, rewards = jax.block_until_ready(rollout(state, jax.random.key(2)))
    seconds = (time.perf_counter() - start) / (N_ENVS * STEPS)
    assert bool(jnp.isfinite(rewards).all())
    tool = OURS if level == 0 else f"{OURS} (level {level})"
    target = {"Grid2Op + lightsim2grid (rte_case118_example)": 100.0} if level == 0 else None
    record("Env step, 118 buses, do-nothing", tool, seconds, unit="env step", target=target)


def test_env_steps_per_second_grid2op(record):
    pytest.importorskip("grid2op")
    seconds = grid2op_step_seconds(GRID2OP_STEPS)
    record(
        "Env step, 118 buses, do-nothing",
        "Grid2Op + lightsim2grid (rte_case118_example)",
        seconds,
        unit="env step",
    )
