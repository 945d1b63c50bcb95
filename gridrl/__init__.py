"""gridrl: multi-agent reinforcement learning for grid operation, on gridphysics.

``env, params = gridrl.make("ieee118")`` builds the functional, vmappable environment
(agents ``strategic``, ``operational_<k>`` per area and ``safety``);
:func:`evaluate_baselines` compares the baseline policies on it;
``python -m gridrl.train`` (or :func:`make_train`) trains them with MAPPO and
:func:`load_policy` loads a trained policy for inference.
"""

from gridrl.config import TrainConfig
from gridrl.env import EnvConfig, EnvParams, EnvState, GridEnv, evaluation_params, make
from gridrl.mappo import make_train
from gridrl.policy import load_policy

__all__ = [
    "EnvConfig",
    "EnvParams",
    "EnvState",
    "GridEnv",
    "TrainConfig",
    "evaluate_baselines",
    "evaluation_params",
    "load_policy",
    "make",
    "make_train",
]


def __getattr__(name: str):
    # imported on first use, so that ``python -m gridrl.baselines`` runs the module once
    if name == "evaluate_baselines":
        from gridrl.baselines import evaluate_baselines

        return evaluate_baselines
    raise AttributeError(f"module 'gridrl' has no attribute {name!r}")
