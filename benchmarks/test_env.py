"""Environment steps per second: gridrl (all agents, batched, jitted) against Grid2Op with
the lightsim2grid backend on its 118-bus example.

- Do-nothing actions, 1,000 environments, levels 0 and 2, with Grid2Op's do-nothing
  stepping in the same group. Target (issue #5): >= 100x Grid2Op + lightsim2grid's
  steps/s for the DC environment.
- Random actions (uniform in each agent's action space: the load an untrained policy
  creates, with redispatch, shedding, overloads, trips and cascades) at levels 0, 2 and
  4 with 256 and 4,096 environments, and at level 3 with 256 and 2,048. One group per
  level, a batch sweep: the summary prints the time per environment step against the
  batch size and the ratio largest / smallest batch (flat = 1.00: a fixed-shape step
  costs no more per environment in a bigger batch). Target: >= 100,000
  steps/s with random actions at level 3 and 2,048 environments on this CPU (a report,
  not an assertion).

The rollout (``benchmarks.workloads``) scans ``jax.vmap(env.step)`` over 20 steps and is
timed after a warm-up compile; levels share one compilation per batch size.
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import OURS
from benchmarks.peers import grid2op_step_seconds
from benchmarks.workloads import time_env_steps

N_ENVS = 1000
STEPS = 20
GRID2OP_STEPS = 300
GRID2OP = "Grid2Op + lightsim2grid (rte_case118_example)"
RANDOM_GROUP = "Env step, 118 buses, random actions, level {level}"
RANDOM_TARGET_RATE = 100_000  # steps/s, level 3, 2,048 environments, this CPU


def repeats_for(n_envs: int) -> int:
    """Timed rollouts: best of 3 for small batches (noisy), 1 for big ones (slow)."""
    return 3 if n_envs <= 1024 else 1


def batch_tool(n_envs: int) -> str:
    return f"{OURS} ({n_envs:,} envs)"


@pytest.mark.parametrize("level", [0, 2])
def test_env_steps_per_second_gridrl(record, level: int) -> None:
    """Level 0 (the default: flat load) and level 2 (daily profile, noise, renewables:
    do-nothing then meets overloads and trips, whose cascade re-solves cost time)."""
    timing = time_env_steps(level, N_ENVS, STEPS, "do-nothing")
    assert timing.finite
    tool = OURS if level == 0 else f"{OURS} (level {level})"
    target = {GRID2OP: 100.0} if level == 0 else None
    record(
        "Env step, 118 buses, do-nothing",
        tool,
        timing.seconds_per_step,
        unit="env step",
        target=target,
    )


@pytest.mark.parametrize(
    ("level", "n_envs"),
    [(0, 256), (0, 4096), (2, 256), (2, 4096), (3, 256), (3, 2048), (4, 256), (4, 4096)],
)
def test_env_steps_per_second_random_actions(record, level: int, n_envs: int) -> None:
    timing = time_env_steps(level, n_envs, STEPS, "random", repeats=repeats_for(n_envs))
    print(
        f"\nrandom actions, level {level}, {n_envs:,} envs: "
        f"{timing.steps_per_second:,.0f} steps/s "
        f"({timing.seconds_per_step * 1e6:.1f} us per env step; "
        f"warm-up incl. compile {timing.compile_seconds:.1f} s)"
    )
    record(
        RANDOM_GROUP.format(level=level),
        batch_tool(n_envs),
        timing.seconds_per_step,
        unit="env step",
        min_rate=RANDOM_TARGET_RATE if (level, n_envs) == (3, 2048) else None,
        batch=n_envs,
    )
    # recorded first, so the time prints even when the rewards are broken
    assert timing.finite, f"non-finite rewards with random actions at level {level}"


def test_env_steps_per_second_grid2op(record) -> None:
    pytest.importorskip("grid2op")
    seconds = grid2op_step_seconds(GRID2OP_STEPS)
    record("Env step, 118 buses, do-nothing", GRID2OP, seconds, unit="env step")
