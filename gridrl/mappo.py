"""MAPPO for the grid-operation environment, end to end in JAX.

Decentralized actors (the strategic agent, one operational actor shared by every area
with the area's one-hot id in its observation, and the safety agent), a centralized
critic on the global state, tanh-squashed Gaussian actions, GAE, the clipped objective,
normalized advantages and normalized values (running return statistics).

``train = make_train(config); state, metrics = train(key)`` is a pure function: the
rollout and the update run inside ``lax.scan``. :class:`Trainer` exposes the same
pieces (``init``, ``run`` for a chunk of updates) for the command line, which does its
I/O between chunks.

One update is a chain of pure functions, each usable (and tested) on its own:
:func:`rollout` (T steps of every environment) -> :func:`compute_gae` ->
:func:`update_value_stats` -> :func:`update_epochs` (minibatch optimizer steps on
:func:`ppo_loss`: :func:`clipped_surrogate` per agent group, :func:`clipped_value_loss`)
-> :func:`update_metrics` (named in :mod:`gridrl.metrics`) -> :func:`curriculum_step`.
``Trainer._update`` only wires them.

Environments are split evenly over the devices of a ``jax.sharding.Mesh`` (all local
devices, or all devices of all processes after ``jax.distributed.initialize``);
parameters are replicated and gradients averaged across devices with ``pmean``. Every
environment has its own key and minibatches split the rollout along time (each holds
every environment), so the same global batch gives the same result on 1 or N devices.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gridrl import scenarios
from gridrl.config import TrainConfig
from gridrl.env import EnvParams, GridEnv, make
from gridrl.metrics import TRAINER_METRICS, step_values

AXIS = "env"
N_LEVELS = scenarios.N_LEVELS
GROUPS = ("strategic", "operational", "safety")


class Actor(nn.Module):
    """MLP -> mean of a Gaussian over pre-tanh actions, plus a state-free log std."""

    action_dim: int
    hidden: int
    init_log_std: float
    mean_bias: tuple[float, ...]

    @nn.compact
    def __call__(self, x):
        ortho = nn.initializers.orthogonal
        h = nn.tanh(nn.Dense(self.hidden, kernel_init=ortho(np.sqrt(2)))(x))
        h = nn.tanh(nn.Dense(self.hidden, kernel_init=ortho(np.sqrt(2)))(h))
        bias = np.asarray(self.mean_bias, np.float32)
        mean = nn.Dense(
            self.action_dim,
            kernel_init=ortho(0.01),
            bias_init=lambda key, shape, dtype: jnp.asarray(bias, dtype),
        )(h)
        log_std = self.param(
            "log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,)
        )
        return mean, log_std


class Critic(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        ortho = nn.initializers.orthogonal
        h = nn.tanh(nn.Dense(self.hidden, kernel_init=ortho(np.sqrt(2)))(x))
        h = nn.tanh(nn.Dense(self.hidden, kernel_init=ortho(np.sqrt(2)))(h))
        return nn.Dense(1, kernel_init=ortho(1.0))(h)[..., 0]


class Agents:
    """The actors and the critic of one environment, sized from it."""

    def __init__(self, env: GridEnv, config: TrainConfig):
        self.env = env
        A = env.n_areas
        self.n_areas = A
        d_op = env.action_space("operational_0").shape[0]
        shed_bias = -2.0  # tanh(-2) < 0: no load shedding until the agent learns it pays
        self.actors = {
            "strategic": Actor(
                env.n_areas, config.hidden, config.init_log_std, (0.0,) * env.n_areas
            ),
            "operational": Actor(
                d_op,
                config.hidden,
                config.init_log_std,
                # redispatch entries first, then one shedding entry per load of the area
                (0.0,) * env.max_gens + (shed_bias,) * (d_op - env.max_gens),
            ),
            "safety": Actor(env.n_gen, config.hidden, config.init_log_std, (0.0,) * env.n_gen),
        }
        self.critic = Critic(config.critic_hidden)
        self.masks = {
            "strategic": np.ones(env.n_areas, bool),
            "operational": np.stack([env.action_mask(f"operational_{a}") for a in range(A)]),
            "safety": np.ones(env.n_gen, bool),
        }
        self.obs_size = {
            "strategic": env.observation_space("strategic").shape[0],
            "operational": env.observation_space("operational_0").shape[0],
            "safety": env.observation_space("safety").shape[0],
        }

    # observations arrive as the environment's dict; groups stack the operational agents
    def group(self, obs: dict) -> dict:
        return {
            "strategic": obs["strategic"],
            "operational": jnp.stack(
                [obs[f"operational_{a}"] for a in range(self.n_areas)], axis=-2
            ),
            "safety": obs["safety"],
        }

    def ungroup_actions(self, actions: dict) -> dict:
        out = {"strategic": actions["strategic"], "safety": actions["safety"]}
        for a in range(self.n_areas):
            out[f"operational_{a}"] = actions["operational"][..., a, :]
        return out

    def global_state(self, grouped: dict, level) -> jax.Array:
        s = grouped["strategic"]
        onehot = jax.nn.one_hot(level, N_LEVELS, dtype=s.dtype)
        onehot = jnp.broadcast_to(onehot, (*s.shape[:-1], N_LEVELS))
        return jnp.concatenate([s, grouped["safety"], onehot], axis=-1)

    def init(self, key) -> dict:
        keys = jax.random.split(key, 4)
        params = {
            g: self.actors[g].init(k, jnp.zeros(self.obs_size[g], jnp.float32))
            for g, k in zip(GROUPS, keys[:3], strict=True)
        }
        width = self.obs_size["strategic"] + self.obs_size["safety"] + N_LEVELS
        params["critic"] = self.critic.init(keys[3], jnp.zeros(width, jnp.float32))
        return params

    def heads(self, params, grouped) -> dict:
        return {g: self.actors[g].apply(params[g], grouped[g].astype(jnp.float32)) for g in GROUPS}

    def value(self, params, grouped, level) -> jax.Array:
        x = self.global_state(grouped, level).astype(jnp.float32)
        return self.critic.apply(params["critic"], x)

    def log_prob(self, group, head, u) -> jax.Array:
        mean, log_std = head
        z = (u - mean) * jnp.exp(-log_std)
        lp = -0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
        return jnp.sum(jnp.where(self.masks[group], lp, 0.0), axis=-1)

    def entropy(self, group, head) -> jax.Array:
        _, log_std = head
        ent = jnp.where(self.masks[group], log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e), 0.0)
        return jnp.mean(jnp.sum(ent, axis=-1))

    def noise(self, key) -> dict:
        """Standard normal draws shaped like one environment's pre-tanh actions."""
        shapes = {
            "strategic": (self.env.n_areas,),
            "operational": self.masks["operational"].shape,
            "safety": (self.env.n_gen,),
        }
        keys = jax.random.split(key, len(GROUPS))
        return {
            g: jax.random.normal(k, shapes[g], jnp.float32)
            for g, k in zip(GROUPS, keys, strict=True)
        }

    def act_deterministic(self, params, obs: dict) -> dict:
        """Environment actions (dict keyed by agent) at the mean of each Gaussian."""
        grouped = self.group(obs)
        heads = self.heads(params, grouped)
        actions = {g: jnp.tanh(heads[g][0]) for g in GROUPS}
        return self.ungroup_actions(actions)


# -- train state ---------------------------------------------------------------------------
@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Shared:
    """Replicated over devices."""

    params: dict
    opt_state: tuple
    value_stats: jax.Array  # (3,) running mean, mean of squares, debiasing weight
    key: jax.Array  # (2,) uint32
    update: jax.Array  # () int32 updates done
    level: jax.Array  # () int32 curriculum level
    level_updates: jax.Array  # () int32 updates at this level
    violation_ema: jax.Array  # () float32 running violation rate at this level


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Local:
    """Split over devices along the environment axis."""

    env_state: object
    obs: dict
    env_key: jax.Array  # (E, 2) uint32
    episode_return: jax.Array  # (E,)
    episode_cost: jax.Array  # (E,)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class TrainState:
    shared: Shared
    local: Local


# -- the steps of an update: pure functions --------------------------------------------
class Transition(NamedTuple):
    """A rollout on one device, stacked along time: leading axes ``(T, E)`` (rollout
    steps, this device's environments); ``A`` areas, ``d_*`` observation sizes.

    Attributes:
        obs: grouped observations: strategic (T, E, d_s), operational (T, E, A, d_o),
            safety (T, E, d_f).
        u: pre-tanh actions: strategic (T, E, A), operational (T, E, A, d_op), safety
            (T, E, n_gen).
        logp: their log-probabilities under the rollout policy: (T, E), operational
            (T, E, A).
        value: (T, E) critic values (normalized).
        reward: (T, E) team reward.
        done: (T, E) bool: the episode ended at this step (the environment reset itself).
        finished_return: (T, E) return of the episode that ended here, else 0.
        finished_cost: (T, E) its total cost in $, else 0.
        info: ``{name: (T, E) float32}``: :func:`gridrl.metrics.step_values` of the
            environment's info.
    """

    obs: dict
    u: dict
    logp: dict
    value: jax.Array
    reward: jax.Array
    done: jax.Array
    finished_return: jax.Array
    finished_cost: jax.Array
    info: dict


class PPOBatch(NamedTuple):
    """What the PPO update learns from, leading axes ``(T, E)`` (a minibatch: ``(T/M, E)``)."""

    obs: dict  # grouped observations, as Transition.obs
    u: dict  # pre-tanh actions, as Transition.u
    logp: dict  # their log-probabilities under the rollout policy, as Transition.logp
    value: jax.Array  # (T, E) critic values at the rollout (normalized)
    adv: jax.Array  # (T, E) GAE advantages (not normalized)
    target: jax.Array  # (T, E) value targets, normalized with the updated return statistics


def _pmean(x: jax.Array, axis_name: str | None) -> jax.Array:
    return x if axis_name is None else jax.lax.pmean(x, axis_name)


def _psum(x: jax.Array, axis_name: str | None) -> jax.Array:
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def rollout(
    agents: Agents,
    env: GridEnv,
    env_params: EnvParams,
    params: dict,
    level: jax.Array,
    local: Local,
    num_steps: int,
) -> tuple[Local, Transition]:
    """``num_steps`` steps of every environment in ``local`` with the stochastic policy
    (a ``lax.scan``).

    Each environment draws its action noise and its step from its own key, so the
    trajectory does not depend on how environments are split over devices.

    Args:
        agents: the networks.
        env, env_params: the environment and its parameters at the current level.
        params: network parameters (``Agents.init``).
        level: () int32 curriculum level (one-hot input of the critic).
        local: this device's environments, E of them.
        num_steps: T.

    Returns:
        ``(local, transition)``: the environments after T steps and the
        :class:`Transition` with leading axes (T, E).
    """

    def env_step(local: Local, _) -> tuple[Local, Transition]:
        keys = jax.vmap(lambda k: jax.random.split(k, 3))(local.env_key)
        next_key, k_act, k_step = keys[:, 0], keys[:, 1], keys[:, 2]
        grouped = agents.group(local.obs)
        heads = agents.heads(params, grouped)
        eps = jax.vmap(agents.noise)(k_act)  # per-environment keys: device-count invariant
        u = {g: heads[g][0] + jnp.exp(heads[g][1]) * eps[g] for g in GROUPS}
        logp = {g: agents.log_prob(g, heads[g], u[g]) for g in GROUPS}
        value = agents.value(params, grouped, level)
        actions = agents.ungroup_actions({g: jnp.tanh(u[g]) for g in GROUPS})
        obs, env_state, reward, done, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            k_step, local.env_state, actions, env_params
        )
        r = reward["strategic"].astype(jnp.float32)
        # a step the env had to replace (its result was not finite: NaN params) is
        # divergence for training, not a reward of 0 to learn from: NaN, so the loss and
        # the trainer's guard see it
        r = jnp.where(info["invalid_state"] > 0, jnp.nan, r)
        d = done["__all__"]
        ep_ret = local.episode_return + r
        ep_cost = local.episode_cost + info["total_cost"].astype(jnp.float32)
        record = Transition(
            obs=grouped,
            u=u,
            logp=logp,
            value=value,
            reward=r,
            done=d,
            finished_return=jnp.where(d, ep_ret, 0.0),
            finished_cost=jnp.where(d, ep_cost, 0.0),
            info=step_values(info),
        )
        local = Local(
            env_state=env_state,
            obs=obs,
            env_key=next_key,
            episode_return=jnp.where(d, 0.0, ep_ret),
            episode_cost=jnp.where(d, 0.0, ep_cost),
        )
        return local, record

    return jax.lax.scan(env_step, local, None, num_steps)


def compute_gae(
    values: jax.Array,
    rewards: jax.Array,
    dones: jax.Array,
    last_value: jax.Array,
    gamma: float,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation, backwards over time (a reverse ``lax.scan``).

    ``dones[t]`` means the episode ended at step t and the environment reset itself, so
    the value after it (``values[t + 1]``, or ``last_value``) belongs to another episode
    and is not bootstrapped from.

    Args:
        values: (T, E) value of the state each step started from.
        rewards: (T, E) reward of each step.
        dones: (T, E) bool, the episode ended at this step.
        last_value: (E,) value of the state after the last step.
        gamma: discount factor.
        lam: GAE lambda.

    Returns:
        ``(advantages, targets)``, both (T, E); ``targets = advantages + values``.
    """

    def step(carry, x):
        gae, next_value = carry
        value, reward, done = x
        nonterminal = 1.0 - done.astype(jnp.float32)
        delta = reward + gamma * next_value * nonterminal - value
        gae = delta + gamma * lam * nonterminal * gae
        return (gae, value), gae

    _, advantages = jax.lax.scan(
        step, (jnp.zeros_like(last_value), last_value), (values, rewards, dones), reverse=True
    )
    return advantages, advantages + values


def value_mean_std(stats: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and standard deviation of returns from the running statistics ``stats``
    (3,): mean, mean of squares, debiasing weight."""
    debias = jnp.maximum(stats[2], 1e-5)
    mean = stats[0] / debias
    var = jnp.maximum(stats[1] / debias - mean**2, 1e-4)
    return mean, jnp.sqrt(var)


def update_value_stats(
    stats: jax.Array, targets: jax.Array, beta: float, axis_name: str | None
) -> jax.Array:
    """Running return statistics (3,) after a batch of value ``targets`` (T, E),
    averaged over the devices of ``axis_name``; ``beta``: decay."""
    batch_mean = _pmean(jnp.mean(targets), axis_name)
    batch_sq = _pmean(jnp.mean(targets**2), axis_name)
    return jnp.stack(
        [
            beta * stats[0] + (1 - beta) * batch_mean,
            beta * stats[1] + (1 - beta) * batch_sq,
            beta * stats[2] + (1 - beta),
        ]
    )


def normalize_advantages(adv: jax.Array, axis_name: str | None) -> jax.Array:
    """``adv`` (any shape) less its mean, over its standard deviation (both over every
    device of ``axis_name``)."""
    a_mean = _pmean(jnp.mean(adv), axis_name)
    a_sq = _pmean(jnp.mean(adv**2), axis_name)
    return (adv - a_mean) / jnp.sqrt(jnp.maximum(a_sq - a_mean**2, 0.0) + 1e-8)


def clipped_surrogate(
    logp: jax.Array, old_logp: jax.Array, adv: jax.Array, clip_eps: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """PPO's clipped surrogate objective of one agent group (to maximize).

    Args:
        logp: (N,) or (N, A) log-probabilities of the actions under the current policy
            (A: agents sharing one actor, each credited with the team advantage).
        old_logp: the same under the rollout policy.
        adv: (N,) advantages.
        clip_eps: the ratio is clipped to ``[1 - clip_eps, 1 + clip_eps]``.

    Returns:
        ``(objective, approx_kl, clip_fraction)``, scalars: the mean of
        ``min(ratio * adv, clip(ratio) * adv)``, the mean of ``ratio - 1 - log ratio``
        and the share of samples with ``|ratio - 1| > clip_eps``.
    """
    log_ratio = logp - old_logp
    ratio = jnp.exp(log_ratio)
    a = adv if logp.ndim == adv.ndim else adv[..., None]
    surrogate = jnp.minimum(ratio * a, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    approx_kl = jnp.mean((ratio - 1) - log_ratio)
    clip_fraction = jnp.mean((jnp.abs(ratio - 1) > clip_eps).astype(jnp.float32))
    return jnp.mean(surrogate), approx_kl, clip_fraction


def clipped_value_loss(
    value: jax.Array, old_value: jax.Array, target: jax.Array, clip_eps: float
) -> jax.Array:
    """PPO's clipped value loss, a scalar: half the mean of the larger of the squared
    errors of ``value`` and of ``value`` kept within ``clip_eps`` of ``old_value``.
    All arguments are (N,) (normalized values)."""
    v_clip = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
    return 0.5 * jnp.mean(jnp.maximum((value - target) ** 2, (v_clip - target) ** 2))


def ppo_loss(
    agents: Agents,
    params: dict,
    batch: PPOBatch,
    *,
    level: jax.Array,
    config: TrainConfig,
    axis_name: str | None,
) -> tuple[jax.Array, dict]:
    """The MAPPO loss of a minibatch and its parts.

    Advantages are normalized over the minibatch (every device of ``axis_name``). Each
    agent group (strategic, operational, safety) adds its clipped surrogate and its
    entropy; the centralized critic adds the clipped value loss:
    ``loss = policy_loss + vf_coef * value_loss - ent_coef * entropy``.

    Args:
        agents: the networks.
        params: network parameters (differentiated).
        batch: a :class:`PPOBatch` minibatch, leading axes (N, E).
        level: () int32 curriculum level (critic input).
        config: ``clip_eps``, ``vf_coef``, ``ent_coef``.
        axis_name: the device axis (None outside ``shard_map``).

    Returns:
        ``(loss, aux)``: aux holds ``policy_loss``, ``value_loss`` and ``entropy``
        (summed over groups), ``approx_kl`` and ``clip_fraction`` (group means).
    """
    heads = agents.heads(params, batch.obs)
    adv = normalize_advantages(batch.adv, axis_name)
    pg, ent, kl, clipped = 0.0, 0.0, 0.0, 0.0
    for g in GROUPS:
        logp = agents.log_prob(g, heads[g], batch.u[g])
        objective, kl_g, clipped_g = clipped_surrogate(logp, batch.logp[g], adv, config.clip_eps)
        pg = pg - objective
        ent = ent + agents.entropy(g, heads[g])
        kl = kl + kl_g
        clipped = clipped + clipped_g
    v = agents.value(params, batch.obs, level)
    v_loss = clipped_value_loss(v, batch.value, batch.target, config.clip_eps)
    loss = pg + config.vf_coef * v_loss - config.ent_coef * ent
    n = len(GROUPS)
    return loss, {
        "policy_loss": pg,
        "value_loss": v_loss,
        "entropy": ent,
        "approx_kl": kl / n,
        "clip_fraction": clipped / n,
    }


def update_epochs(
    loss_fn: Callable[[dict, PPOBatch], tuple[jax.Array, dict]],
    optimizer: optax.GradientTransformation,
    params: dict,
    opt_state: optax.OptState,
    batch: PPOBatch,
    key: jax.Array,
    num_epochs: int,
    num_minibatches: int,
    axis_name: str | None,
) -> tuple[dict, optax.OptState, dict]:
    """PPO epochs over a rollout: each epoch shuffles the T time steps and splits them
    into ``num_minibatches`` minibatches of T / M steps (every environment in each);
    one optimizer step per minibatch, gradients averaged over ``axis_name``.

    Args:
        loss_fn: ``(params, minibatch) -> (loss, aux)``.
        optimizer: the optax transformation.
        params, opt_state: before the update.
        batch: leading axis T (any pytree of arrays, e.g. :class:`PPOBatch`).
        key: shuffling key.
        num_epochs, num_minibatches: M must divide T.
        axis_name: the device axis (None outside ``shard_map``).

    Returns:
        ``(params, opt_state, aux)``: aux is ``loss_fn``'s, averaged over every
        minibatch of every epoch (and over devices).
    """
    T = jax.tree.leaves(batch)[0].shape[0]
    M = num_minibatches

    def epoch(carry, key):
        params, opt_state = carry
        # each minibatch gathers its own T / M time steps of the rollout (gathering the
        # whole shuffled rollout first, then slicing it, moved every byte twice)
        order = jax.random.permutation(key, T).reshape(M, T // M)

        def minibatch(carry, rows):
            params, opt_state = carry
            mb = jax.tree.map(lambda x: x[rows], batch)
            (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
            grads = _pmean(grads, axis_name)
            aux = _pmean(aux, axis_name)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), aux

        return jax.lax.scan(minibatch, (params, opt_state), order)

    (params, opt_state), aux = jax.lax.scan(
        epoch, (params, opt_state), jax.random.split(key, num_epochs)
    )
    return params, opt_state, jax.tree.map(jnp.mean, aux)


def update_metrics(
    transition: Transition,
    aux: dict,
    params: dict,
    level: jax.Array,
    learning_rate: jax.Array | float,
    axis_name: str | None,
) -> dict[str, jax.Array]:
    """The metrics of one update (``gridrl.metrics.TRAINER_METRICS``, float32 scalars,
    global over the devices of ``axis_name``).

    Args:
        transition: the rollout, leading axes (T, E).
        aux: the losses from :func:`update_epochs`.
        params: the parameters after the update (checked for finiteness).
        level: () int32 curriculum level of the rollout.
        learning_rate: the learning rate of the update.
        axis_name: the device axis (None outside ``shard_map``).
    """

    def gmean(x):
        return _pmean(jnp.mean(x), axis_name)

    finished = _psum(jnp.sum(transition.done.astype(jnp.float32)), axis_name)
    metrics = {
        "return": _psum(jnp.sum(transition.finished_return), axis_name)
        / jnp.maximum(finished, 1.0),
        "episode_cost": _psum(jnp.sum(transition.finished_cost), axis_name)
        / jnp.maximum(finished, 1.0),
        "episodes": finished,
        "reward": gmean(transition.reward),
        **{k: gmean(v) for k, v in transition.info.items()},
        "level": level.astype(jnp.float32),
        **aux,
        "learning_rate": jnp.asarray(learning_rate, jnp.float32),
    }
    metrics["return"] = jnp.where(finished > 0, metrics["return"], jnp.nan)
    metrics["episode_cost"] = jnp.where(finished > 0, metrics["episode_cost"], jnp.nan)
    finite = jnp.isfinite(aux["policy_loss"]) & jnp.isfinite(aux["value_loss"])
    finite &= jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))
    metrics["finite"] = finite.astype(jnp.float32)
    return {k: metrics[k].astype(jnp.float32) for k in TRAINER_METRICS}


def curriculum_step(
    level: jax.Array,
    level_updates: jax.Array,
    violation_ema: jax.Array,
    violation_rate: jax.Array,
    config: TrainConfig,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The curriculum after one update.

    The violation rate's running average (EMA, weight 0.2 on the new update; the first
    update at a level starts it) moves the level up by one when the curriculum is on,
    the EMA is under ``config.advance_below``, the level is under ``config.max_level``
    and ``config.min_updates_per_level`` updates were done at this level. Advancing
    resets the count and sets the EMA to 1.

    Args:
        level: () int32 current level.
        level_updates: () int32 updates done at this level before this one.
        violation_ema: () float32 EMA before this update.
        violation_rate: () float32 this update's violation rate.
        config: ``curriculum``, ``advance_below``, ``max_level``, ``min_updates_per_level``.

    Returns:
        ``(level, level_updates, violation_ema)``: int32, int32, float32 scalars.
    """
    ema = jnp.where(level_updates == 0, violation_rate, 0.8 * violation_ema + 0.2 * violation_rate)
    level_updates = level_updates + 1
    advance = (
        jnp.bool_(config.curriculum)
        & (ema < config.advance_below)
        & (level < config.max_level)
        & (level_updates >= config.min_updates_per_level)
    )
    return (
        jnp.where(advance, level + 1, level).astype(jnp.int32),
        jnp.where(advance, 0, level_updates).astype(jnp.int32),
        jnp.where(advance, 1.0, ema).astype(jnp.float32),
    )


class Trainer:
    """The pieces of :func:`make_train`: ``init(key) -> TrainState`` and
    ``run(state, n) -> (state, metrics)`` (``n`` updates, metrics stacked per update).

    Args:
        config: the training configuration, resolved for the devices' backend
            (:meth:`TrainConfig.for_backend`) and validated here, before anything
            compiles; ``self.config`` is the resolved one.
        env_params: optional environment parameters to train on instead of the
            defaults of ``config.case`` (for experiments and tests).
        devices: the devices to split environments over (default: ``config.devices``
            local devices, or every device of every process under ``jax.distributed``).
    """

    def __init__(self, config: TrainConfig, env_params: EnvParams | None = None, devices=None):
        if devices is None:
            devices = default_devices(config)
        config = config.for_backend(devices[0].platform).validate(len(devices))
        self.config = config
        self.devices = list(devices)
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        self.env, params = make(
            config.case,
            n_areas=config.n_areas,
            method=config.method,
            level=config.start_level,
            replay_noise=config.replay_noise,
        )
        if env_params is not None:
            params = _checked_params(self.env, env_params, config.start_level)
        self.env_params = replace(
            params,
            learned_safety=jnp.asarray(1.0 if config.learned_safety else 0.0, self.env.dtype),
        )
        self.agents = Agents(self.env, config)
        c = config
        steps_per_update = c.update_epochs * c.num_minibatches
        lr = (
            optax.linear_schedule(c.learning_rate, 0.0, c.num_updates * steps_per_update)
            if c.anneal_lr
            else c.learning_rate
        )
        self._lr = lr
        self.optimizer = optax.chain(
            optax.clip_by_global_norm(c.max_grad_norm), optax.adam(lr, eps=1e-5)
        )
        self.shardings = TrainState(
            shared=NamedSharding(self.mesh, P()), local=NamedSharding(self.mesh, P(AXIS))
        )
        # The environment's parameters are an argument of the compiled functions, not
        # constants baked into them: a trainer on other parameters of the same shapes
        # (on_params, Trainer.cached) calls the same jitted functions without compiling.
        # They go in as host (numpy) arrays, which jit places replicated on the mesh,
        # under jax.distributed too.
        self._host_params = jax.tree.map(np.asarray, self.env_params)
        replicated = NamedSharding(self.mesh, P())
        self._init_jit = jax.jit(
            self._init, in_shardings=(replicated, replicated), out_shardings=self.shardings
        )
        self._runners = {}

    _cache: ClassVar[dict] = {}

    @classmethod
    def cached(cls, config: TrainConfig, env_params: EnvParams | None = None, devices=None):
        """A trainer for ``config`` whose compiled functions are shared with earlier
        calls in this process; with ``env_params``, a trainer on them that shares the
        compiled functions too (the parameters are an argument of the compiled
        program; parameters of other shapes compile anew)."""
        devices = default_devices(config) if devices is None else devices
        config = config.for_backend(devices[0].platform)
        key = (config, tuple(d.id for d in devices))
        if key not in cls._cache:
            cls._cache[key] = cls(config, None, devices)
        base = cls._cache[key]
        return base if env_params is None else base.on_params(env_params)

    def on_params(self, env_params: EnvParams) -> Trainer:
        """This trainer on other environment parameters (of this trainer's environment),
        sharing its compiled functions."""
        env_params = _checked_params(self.env, env_params, self.config.start_level)
        other = copy.copy(self)  # the compiled functions and their cache are shared
        other.env_params = replace(env_params, learned_safety=self.env_params.learned_safety)
        other._host_params = jax.tree.map(np.asarray, other.env_params)
        return other

    # -- init --------------------------------------------------------------------------
    def init(self, key) -> TrainState:
        """The training state before the first update: fresh agents and environments at
        ``config.start_level``, from ``key``."""
        return self._init_jit(key, self._host_params)

    def _init(self, key, env_params: EnvParams) -> TrainState:
        c = self.config
        k_params, k_env, k_run = jax.random.split(key, 3)
        params = self.agents.init(k_params)
        env_keys = jax.random.split(k_env, c.num_envs)
        env_params = _at_level(env_params, jnp.int32(c.start_level))
        reset_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(env_keys)
        obs, env_state = jax.vmap(self.env.reset, in_axes=(0, None))(reset_keys, env_params)
        zeros = jnp.zeros(c.num_envs, jnp.float32)
        shared = Shared(
            params=params,
            opt_state=self.optimizer.init(params),
            value_stats=jnp.zeros(3, jnp.float32),
            key=k_run,
            update=jnp.int32(0),
            level=jnp.int32(c.start_level),
            level_updates=jnp.int32(0),
            violation_ema=jnp.float32(1.0),
        )
        local = Local(
            env_state=env_state,
            obs=obs,
            env_key=env_keys,
            episode_return=zeros,
            episode_cost=zeros,
        )
        return TrainState(shared, local)

    # -- one update, per device ----------------------------------------------------------
    def _update(
        self, shared: Shared, local: Local, env_params: EnvParams
    ) -> tuple[Shared, Local, dict]:
        """Rollout, GAE, PPO epochs, metrics and curriculum: the module's functions,
        wired (inside ``shard_map``: ``local`` holds this device's environments)."""
        c, agents = self.config, self.agents
        mean_v, std_v = value_mean_std(shared.value_stats)
        local, transition = rollout(
            agents,
            self.env,
            _at_level(env_params, shared.level),
            shared.params,
            shared.level,
            local,
            c.rollout_steps,
        )
        # GAE on denormalized values
        last_value = agents.value(shared.params, agents.group(local.obs), shared.level)
        adv, targets = compute_gae(
            transition.value * std_v + mean_v,
            transition.reward,
            transition.done,
            last_value * std_v + mean_v,
            c.gamma,
            c.gae_lambda,
        )
        value_stats = update_value_stats(shared.value_stats, targets, c.value_norm_beta, AXIS)
        new_mean, new_std = value_mean_std(value_stats)
        batch = PPOBatch(
            obs=transition.obs,
            u=transition.u,
            logp=transition.logp,
            value=transition.value,
            adv=adv,
            target=(targets - new_mean) / new_std,
        )
        key, k_epochs = jax.random.split(shared.key)
        loss_fn = partial(ppo_loss, agents, level=shared.level, config=c, axis_name=AXIS)
        params, opt_state, aux = update_epochs(
            loss_fn,
            self.optimizer,
            shared.params,
            shared.opt_state,
            batch,
            k_epochs,
            c.update_epochs,
            c.num_minibatches,
            AXIS,
        )
        steps_done = shared.update * c.update_epochs * c.num_minibatches
        lr = self._lr(steps_done) if callable(self._lr) else self._lr
        metrics = update_metrics(transition, aux, params, shared.level, lr, AXIS)
        level, level_updates, violation_ema = curriculum_step(
            shared.level,
            shared.level_updates,
            shared.violation_ema,
            metrics["violation_rate"],
            c,
        )
        shared = Shared(
            params=params,
            opt_state=opt_state,
            value_stats=value_stats,
            key=key,
            update=shared.update + 1,
            level=level,
            level_updates=level_updates,
            violation_ema=violation_ema,
        )
        return shared, local, metrics

    # -- chunks of updates ---------------------------------------------------------------
    def _chunk(self, n: int):
        def per_device(shared, local, env_params):
            def body(carry, _):
                shared, local = carry
                shared, local, metrics = self._update(shared, local, env_params)
                return (shared, local), metrics

            (shared, local), metrics = jax.lax.scan(body, (shared, local), None, n)
            return shared, local, metrics

        mapped = jax.shard_map(
            per_device,
            mesh=self.mesh,
            in_specs=(P(), P(AXIS), P()),
            out_specs=(P(), P(AXIS), P()),
            check_vma=False,
        )

        def run(state: TrainState, env_params: EnvParams):
            shared, local, metrics = mapped(state.shared, state.local, env_params)
            return TrainState(shared, local), metrics

        return run

    def run(self, state: TrainState, n: int):
        """``n`` updates from ``state``: ``(state, metrics)`` with metrics of shape (n,)."""
        if n not in self._runners:
            self._runners[n] = jax.jit(
                self._chunk(n),
                in_shardings=(self.shardings, NamedSharding(self.mesh, P())),
                out_shardings=(self.shardings, NamedSharding(self.mesh, P())),
            )
        return self._runners[n](state, self._host_params)


def _checked_params(env: GridEnv, env_params, level: int) -> EnvParams:
    """``env_params`` checked as ``env.reset`` checks them (the compiled trainer takes
    them as an argument, where nothing concrete can be checked: params whose network was
    edited without its outage engine trained on the old flows; hostile rerun 11). Their
    level is the trainer's to set."""
    if not isinstance(env_params, EnvParams):
        from gridrl.errors import EnvInputError

        raise EnvInputError(
            f"env_params must be the EnvParams of gridrl.make(), got {type(env_params).__name__}"
        )
    env._check_params(replace(env_params, level=jnp.asarray(level, jnp.int32)))
    return env_params


def _at_level(env_params: EnvParams, level) -> EnvParams:
    return replace(env_params, level=jnp.asarray(level, jnp.int32))


def default_devices(config: TrainConfig):
    """``config.devices`` devices of this process (0 = all); every process's devices
    under ``jax.distributed``."""
    local = jax.local_devices()
    if config.devices > len(local):
        from gridrl.config import ConfigError

        raise ConfigError(
            f"--devices: {config.devices} requested but only {len(local)} "
            f"{local[0].platform.upper()} device(s) are visible"
        )
    if jax.process_count() > 1:
        # every process contributes the same number of its own devices
        per = config.devices or len(local)
        return [
            d
            for p in range(jax.process_count())
            for d in [x for x in jax.devices() if x.process_index == p][:per]
        ]
    return local[: config.devices] if config.devices else local


def make_train(config: TrainConfig, env_params: EnvParams | None = None, devices=None):
    """``train(key) -> (TrainState, metrics)``: a pure function running
    ``config.num_updates`` updates (jit it, or call it: it is jitted inside); the
    configuration is resolved for the backend first (``train.trainer.config``)."""
    trainer = Trainer(config, env_params, devices)

    def train(key):
        state = trainer.init(key)
        return trainer.run(state, trainer.config.num_updates)

    train.trainer = trainer
    return train
