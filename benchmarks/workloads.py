"""The timed workloads, shared by the pytest benchmarks and ``python -m benchmarks.accelerator``.

- :func:`time_env_steps`: batched environment steps (``jax.vmap(env.step)`` inside a
  ``lax.scan``, jitted) with do-nothing or random actions, timed after a warm-up compile;
- :func:`time_training`: MAPPO training updates (``Trainer.run``), rollout and
  update included, timed after a warm-up compile.

Random actions are uniform in each agent's ``env.action_space(agent)`` bounds, drawn
inside the jitted rollout: what an untrained policy does, so the load of a learning
policy (redispatch, shedding, overloads, trips, cascades), not of do-nothing.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

from gridrl.config import TrainConfig
from gridrl.env import EnvParams, EnvState, GridEnv, make
from gridrl.mappo import Trainer

Policy = Literal["do-nothing", "random"]
POLICIES: tuple[Policy, ...] = ("do-nothing", "random")


def batch_actions(env: GridEnv, policy: Policy, key: jax.Array, n_envs: int) -> dict:
    """Actions of ``n_envs`` environments, ``{agent: (n_envs, *action_shape)}``: zeros
    (do-nothing) or uniform in each agent's action-space bounds (random)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    keys = jax.random.split(key, len(env.agents))
    out = {}
    for agent, k in zip(env.agents, keys, strict=True):
        space = env.action_space(agent)
        shape = (n_envs, *space.shape)
        if policy == "do-nothing":
            out[agent] = jnp.zeros(shape, env.dtype)
        else:
            out[agent] = jax.random.uniform(k, shape, env.dtype, space.low, space.high)
    return out


def env_rollout(
    env: GridEnv, n_envs: int, steps: int, policy: Policy
) -> Callable[[EnvParams, EnvState, jax.Array], tuple[EnvState, jax.Array]]:
    """A jitted ``rollout(params, state, key) -> (state, rewards)``: ``steps`` batched
    steps of ``n_envs`` environments (``state`` batched, ``params`` shared);
    ``rewards``: (steps, n_envs) team rewards. ``params`` is an argument, so every
    curriculum level runs the same compiled rollout."""
    batched_step = jax.vmap(env.step, (0, 0, 0, None))

    def rollout(params: EnvParams, state: EnvState, key: jax.Array):
        def body(state: EnvState, k: jax.Array):
            k_act, k_step = jax.random.split(k)
            actions = batch_actions(env, policy, k_act, n_envs)
            _, state, reward, _, _ = batched_step(
                jax.random.split(k_step, n_envs), state, actions, params
            )
            return state, reward["strategic"]

        return jax.lax.scan(body, state, jax.random.split(key, steps))

    return jax.jit(rollout)


@dataclass(frozen=True)
class EnvRunner:
    """An environment with its jitted batched ``reset(keys, params)`` and
    :func:`env_rollout`."""

    env: GridEnv
    reset: Callable[[jax.Array, EnvParams], tuple[dict, EnvState]]
    rollout: Callable[[EnvParams, EnvState, jax.Array], tuple[EnvState, jax.Array]]


@functools.cache
def env_runner(case: str, n_envs: int, steps: int, policy: Policy) -> EnvRunner:
    """The :class:`EnvRunner` of ``case``, built once per process and batch shape: the
    curriculum level lives in ``params``, so one compilation serves every level."""
    env, _ = make(case)
    reset = jax.jit(jax.vmap(env.reset, (0, None)))
    return EnvRunner(env, reset, env_rollout(env, n_envs, steps, policy))


@dataclass(frozen=True)
class Timing:
    """A timed workload.

    Attributes:
        seconds_per_step: best time over the repeats per environment step (all
            environments of the batch count; for training, updates included).
        compile_seconds: the warm-up call (compile + one run).
        finite: every reward (env) or loss and parameter (training) was finite.
        n_envs: environments in the batch.
    """

    seconds_per_step: float
    compile_seconds: float
    finite: bool
    n_envs: int

    @property
    def steps_per_second(self) -> float:
        return 1.0 / self.seconds_per_step


def time_env_steps(
    level: int,
    n_envs: int,
    steps: int,
    policy: Policy,
    repeats: int = 1,
    case: str = "ieee118",
    seed: int = 0,
    device: jax.Device | None = None,
) -> Timing:
    """Environment steps of ``n_envs`` environments of ``case`` at curriculum ``level``
    (``gridrl.make(case, level=level)``) under ``policy``, ``steps`` per rollout; the
    best of ``repeats`` timed rollouts after a warm-up one (which compiles the first
    time a batch shape is seen in this process).

    Runs on ``device`` (default: the first default-backend device), with the inputs
    placed there and ``device`` the default device, as ``benchmarks.accelerator`` runs
    its checks: jit's cache tells those apart, so the compiled rollout is shared."""
    device = device or jax.devices()[0]
    runner = env_runner(case, n_envs, steps, policy)
    with jax.default_device(device):
        params = jax.device_put(make(case, level=level)[1], device)
        keys = jax.device_put(jax.random.split(jax.random.key(seed), n_envs), device)
        _, state = runner.reset(keys, params)
        start = time.perf_counter()
        key = jax.device_put(jax.random.key(seed + 1), device)
        state, rewards = jax.block_until_ready(runner.rollout(params, state, key))
        compile_seconds = time.perf_counter() - start
        finite = bool(jnp.isfinite(rewards).all())
        best = float("inf")
        for r in range(repeats):
            key = jax.device_put(jax.random.key(seed + 2 + r), device)
            start = time.perf_counter()
            state, rewards = jax.block_until_ready(runner.rollout(params, state, key))
            best = min(best, time.perf_counter() - start)
            finite &= bool(jnp.isfinite(rewards).all())
    return Timing(best / (n_envs * steps), compile_seconds, finite, n_envs)


def time_training(
    config: TrainConfig, updates: int, repeats: int = 1, devices: list | None = None
) -> Timing:
    """``Trainer(config).run`` of ``updates`` updates: the best of ``repeats`` timed
    chunks after a warm-up chunk of the same size (which compiles); the time per
    environment step includes the updates."""
    trainer = Trainer(config, devices=devices)
    state = trainer.init(jax.random.PRNGKey(config.seed))
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(trainer.run(state, updates))
    compile_seconds = time.perf_counter() - start
    finite = float(metrics["finite"].min()) == 1.0
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(trainer.run(state, updates))
        best = min(best, time.perf_counter() - start)
        finite &= float(metrics["finite"].min()) == 1.0
    c = trainer.config
    return Timing(best / (updates * c.batch_steps), compile_seconds, finite, c.num_envs)
