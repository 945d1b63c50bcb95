"""MAPPO training throughput on ieee118: environment steps per second, updates included.

The default training configuration (256 environments x 32 steps per update, 4 epochs x
4 minibatches) on all local devices, timed over 10 updates after compilation, at the
first curriculum level (where training starts) and at level 3 (outages, where the
default run spends most of its time). For scale, Grid2Op + lightsim2grid stepping its
118-bus example with do-nothing actions (no learning at all) is measured in the same run.
The policy at initialization acts like an untrained one: policy-like load on the
environment (redispatch, shedding, overloads, trips).

Batch sweeps, one group per level, as for the environment (``test_env.py``): levels 0,
2 and 4 with 256 and 4,096 environments, level 3 with 256 and 2,048. A big batch is
timed over one update after a warm-up one (4,096 environments hold 131,072 steps per
update). Each group's summary prints the cost per environment step at the largest
batch over that at the smallest (1.00 = flat).

Targets on this 2-core CPU: >= 20,000 environment steps per second at the default
configuration (issue #6); >= 25,000 at level 3 with 2,048 environments, and no fewer
steps/s there than with 256 (reports, not assertions).
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import OURS
from benchmarks.peers import grid2op_step_seconds
from benchmarks.workloads import time_training
from gridrl.config import TrainConfig

GROUP = "MAPPO training, 118 buses (env steps incl. updates)"
SWEEP_GROUP = "MAPPO training, 118 buses, level {level} (env steps incl. updates)"
UPDATES = 10
BIG_UPDATES = 1
#: (level, batch sizes of its sweep): the first is the default configuration's
SWEEPS = {0: (256, 4096), 2: (256, 4096), 3: (256, 2048), 4: (256, 4096)}
TARGET_LEVEL, TARGET_ENVS, TARGET_RATE = 3, 2048, 25_000
GRID2OP_STEPS = 300


def batch_tool(n_envs: int) -> str:
    return f"{OURS} ({n_envs:,} envs)"


@pytest.mark.parametrize(
    ("level", "n_envs"), [(lv, n) for lv, sizes in SWEEPS.items() for n in sizes]
)
def test_training_throughput_gridrl(record, level: int, n_envs: int) -> None:
    small = n_envs == SWEEPS[level][0]
    config = TrainConfig(start_level=level, curriculum=False, num_envs=n_envs)
    if small:
        timing = time_training(config, UPDATES, repeats=2)
    else:
        timing = time_training(config, BIG_UPDATES)
        print(
            f"\ntraining, level {level}, {n_envs:,} envs: {timing.steps_per_second:,.0f} env "
            f"steps/s (warm-up incl. compile {timing.compile_seconds:.1f} s)"
        )
    if small and level in (0, TARGET_LEVEL):
        tool = OURS if level == 0 else f"{OURS} (level {level})"
        record(GROUP, tool, timing.seconds_per_step, unit="env step", min_rate=20_000)
    target = TARGET_RATE if (level, n_envs) == (TARGET_LEVEL, TARGET_ENVS) else None
    record(
        SWEEP_GROUP.format(level=level),
        batch_tool(timing.n_envs),
        timing.seconds_per_step,
        unit="env step",
        min_rate=target,
        batch=timing.n_envs,
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
