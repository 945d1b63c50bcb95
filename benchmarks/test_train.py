"""MAPPO training throughput on ieee118: environment steps per second, updates included.

The default training configuration (256 environments x 32 steps per update, 4 epochs x
4 minibatches) on all local devices, timed over 10 updates after compilation, at the
first curriculum level (where training starts) and at level 3 (outages, where the
default run spends most of its time). For scale, Grid2Op + lightsim2grid stepping its
118-bus example with do-nothing actions (no learning at all) is measured in the same run.
The policy at initialization acts like an untrained one: policy-like load on the
environment (redispatch, shedding, overloads, trips).

Level 3 also runs with 2,048 environments (one timed update: it holds 65,536 steps);
the level-3 group is a batch sweep with the 256-environment row, so the summary shows
whether the bigger batch trains at least as fast per step.

Targets on this 2-core CPU: >= 20,000 environment steps per second at the default
configuration (issue #6); >= 25,000 at level 3 with 2,048 environments, and no fewer
steps/s there than with 256.
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import OURS
from benchmarks.peers import grid2op_step_seconds
from benchmarks.workloads import time_training
from gridrl.config import TrainConfig

GROUP = "MAPPO training, 118 buses (env steps incl. updates)"
SWEEP_GROUP = "MAPPO training, 118 buses, level 3 (env steps incl. updates)"
UPDATES = 10
BIG_ENVS = 2048
BIG_UPDATES = 1
GRID2OP_STEPS = 300


def batch_tool(n_envs: int) -> str:
    return f"{OURS} ({n_envs:,} envs)"


@pytest.mark.parametrize("level", [0, 3])
def test_training_throughput_gridrl(record, level: int) -> None:
    timing = time_training(TrainConfig(start_level=level, curriculum=False), UPDATES, repeats=2)
    tool = OURS if level == 0 else f"{OURS} (level {level})"
    record(GROUP, tool, timing.seconds_per_step, unit="env step", min_rate=20_000)
    if level == 3:
        record(
            SWEEP_GROUP,
            batch_tool(timing.n_envs),
            timing.seconds_per_step,
            unit="env step",
            batch=timing.n_envs,
        )
    assert timing.finite


def test_training_throughput_gridrl_big_batch(record) -> None:
    config = TrainConfig(start_level=3, curriculum=False, num_envs=BIG_ENVS)
    timing = time_training(config, BIG_UPDATES)
    print(
        f"\ntraining, level 3, {BIG_ENVS:,} envs: {timing.steps_per_second:,.0f} env steps/s "
        f"(warm-up incl. compile {timing.compile_seconds:.1f} s)"
    )
    record(
        SWEEP_GROUP,
        batch_tool(BIG_ENVS),
        timing.seconds_per_step,
        unit="env step",
        min_rate=25_000,
        batch=BIG_ENVS,
    )
    assert timing.finite


def test_training_throughput_grid2op_stepping_only(record) -> None:
    pytest.importorskip("grid2op")
    seconds = grid2op_step_seconds(GRID2OP_STEPS)
    record(
        GROUP,
        "Grid2Op + lightsim2grid, stepping only",
        seconds,
        unit="env step",
    )
