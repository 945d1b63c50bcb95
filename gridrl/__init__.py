"""gridrl: multi-agent reinforcement learning for grid operation, on gridphysics.

``env, params = gridrl.make("ieee118")`` builds the functional, vmappable environment
(agents ``strategic``, ``operational_<k>`` per area and ``safety``);
:func:`evaluate_baselines` compares the baseline policies on it.
"""

from gridrl.baselines import evaluate_baselines
from gridrl.env import EnvConfig, EnvParams, EnvState, GridEnv, make

__all__ = ["EnvConfig", "EnvParams", "EnvState", "GridEnv", "evaluate_baselines", "make"]
