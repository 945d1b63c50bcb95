"""Inference: ``policy = gridrl.load_policy("runs/ieee118-.../")``; ``policy(obs) -> actions``.

The policy acts at the mean of each Gaussian (deterministic). ``policy.env`` and
``policy.env_params`` are the environment it was trained for (with the safety agent's
learned residual switched on when it was trained with one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import jax
import jax.numpy as jnp

from gridrl.config import TrainConfig
from gridrl.env import EnvParams, GridEnv


@dataclass
class Policy:
    """A trained policy: call it with one environment's observation dict (or a batch of
    them under ``jax.vmap``) to get the action dict."""

    config: TrainConfig
    env: GridEnv
    env_params: EnvParams
    params: dict
    act: object  # jitted obs -> actions
    checkpoint: Path
    update: int

    def __call__(self, obs: dict) -> dict:
        return self.act(obs)

    def as_policy(self):
        """The ``(key, obs, state, params) -> actions`` form used by
        :func:`gridrl.baselines.run_episodes`."""
        act = self.act

        def run(key, obs, state, params):
            return act(obs)

        return run


def load_policy(checkpoint: str | Path, step: int | None = None) -> Policy:
    """The policy saved in ``checkpoint`` (a run directory or its ``checkpoints/``),
    at its latest (or the given) update.

    Raises :class:`gridrl.checkpoint.CheckpointError` for a missing, corrupt or
    incompatible checkpoint.
    """
    import os

    from gridrl import checkpoint as ckpt
    from gridrl.mappo import Trainer

    if not isinstance(checkpoint, (str, os.PathLike)):
        raise ckpt.CheckpointError(
            f"checkpoint must be a run directory or its checkpoints/ (a path), got {checkpoint!r:.80}"
        )
    directory = ckpt.checkpoint_dir(checkpoint)
    step, meta = ckpt.read_meta(directory, step)
    try:
        config = TrainConfig.from_dict(meta["config"], source=f"{directory}/{step}")
    except (KeyError, ValueError) as exc:
        raise ckpt.CheckpointError(
            f"checkpoint {directory / str(step)}: bad configuration ({exc})"
        ) from None
    trainer = Trainer(config, devices=[jax.local_devices()[0]])
    target = jax.eval_shape(trainer.init, jax.random.PRNGKey(0))
    target = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        target,
        _expand(trainer.shardings, target),
    )
    state, _ = ckpt.restore(directory, target, step)
    params = state.shared.params
    agents = trainer.agents
    act = jax.jit(lambda obs: agents.act_deterministic(params, obs))
    env_params = replace(
        trainer.env_params, level=jnp.asarray(int(meta.get("level", 0)), jnp.int32)
    )
    return Policy(
        config=config,
        env=trainer.env,
        env_params=env_params,
        params=params,
        act=act,
        checkpoint=directory,
        update=step,
    )


def _expand(shardings, target):
    """Per-leaf shardings from the TrainState-shaped prefix."""
    return type(target)(
        shared=jax.tree.map(lambda _: shardings.shared, target.shared),
        local=jax.tree.map(lambda _: shardings.local, target.local),
    )
