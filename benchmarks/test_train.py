"""MAPPO training throughput on ieee118: environment steps per second, updates included.

The default training configuration (256 environments x 32 steps per update, 4 epochs x
4 minibatches) on all local devices, timed over 10 updates after compilation, at the
first curriculum level (where training starts) and at level 3 (outages, where the
default run spends most of its time). For scale, Grid2Op + lightsim2grid stepping its
118-bus example with do-nothing actions (no learning at all) is measured in the same run.

Target (issue #6): >= 20,000 environment steps per second on this 2-core CPU.
"""

from __future__ import annotations

import time

import jax
import pytest

from benchmarks.conftest import OURS
from benchmarks.peers import grid2op_step_seconds
from gridrl.config import TrainConfig
from gridrl.mappo import Trainer

GROUP = "MAPPO training, 118 buses (env steps incl. updates)"
UPDATES = 10
GRID2OP_STEPS = 300


@pytest.mark.parametrize("level", [0, 3])
def test_training_throughput_gridrl(record, level):
    config = TrainConfig(start_level=level, curriculum=False)
    trainer = Trainer(config)
    state = trainer.init(jax.random.PRNGKey(0))
    state, _ = jax.block_until_ready(trainer.run(state, UPDATES))  # compile + warm up
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(trainer.run(state, UPDATES))
        best = min(best, time.perf_counter() - start)
    assert float(metrics["finite"].min()) == 1.0
    seconds = best / (UPDATES * config.batch_steps)
    tool = OURS if level == 0 else f"{OURS} (level {level})"
    record(GROUP, tool, seconds, unit="env step", min_rate=20_000)


def test_training_throughput_grid2op_stepping_only(record):
    pytest.importorskip("grid2op")
    seconds = grid2op_step_seconds(GRID2OP_STEPS)
    record(
        GROUP,
        "Grid2Op + lightsim2grid, stepping only",
        seconds,
        unit="env step",
    )
