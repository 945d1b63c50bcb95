"""MAPPO for the grid-operation environment, end to end in JAX.

Decentralized actors (the strategic agent, one operational actor shared by every area
with the area's one-hot id in its observation, and the safety agent), a centralized
critic on the global state, tanh-squashed Gaussian actions, GAE, the clipped objective,
normalized advantages and normalized values (running return statistics).

``train = make_train(config); state, metrics = train(key)`` is a pure function: the
rollout and the update run inside ``lax.scan``. :class:`Trainer` exposes the same
pieces (``init``, ``run`` for a chunk of updates) for the command line, which does its
I/O between chunks.

Environments are split evenly over the devices of a ``jax.sharding.Mesh`` (all local
devices, or all devices of all processes after ``jax.distributed.initialize``);
parameters are replicated and gradients averaged across devices with ``pmean``. Every
environment has its own key and minibatches split the rollout along time (each holds
every environment), so the same global batch gives the same result on 1 or N devices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gridrl.config import TrainConfig
from gridrl.env import EnvParams, GridEnv, make

AXIS = "env"
N_LEVELS = 5
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
                d_op, config.hidden, config.init_log_std, (0.0,) * (d_op - 1) + (shed_bias,)
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


INFO_KEYS = (  # per-step environment info averaged into the metrics
    "total_cost",
    "generation_cost",
    "redispatch_cost",
    "shedding_cost",
    "overload_penalty",
    "ens_cost",
    "trip_penalty",
    "energy_not_served_mwh",
    "trips",
    "interventions",
)
METRICS = (
    "return",
    "episode_cost",
    "episodes",
    "reward",
    *INFO_KEYS[:-1],
    "overload_share",
    "violation_rate",
    "interventions",
    "level",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "learning_rate",
    "finite",
)


def _value_mean_std(stats):
    debias = jnp.maximum(stats[2], 1e-5)
    mean = stats[0] / debias
    var = jnp.maximum(stats[1] / debias - mean**2, 1e-4)
    return mean, jnp.sqrt(var)


class Trainer:
    """The pieces of :func:`make_train`: ``init(key) -> TrainState`` and
    ``run(state, n) -> (state, metrics)`` (``n`` updates, metrics stacked per update).

    Args:
        config: the training configuration (validated here, before anything compiles).
        env_params: optional environment parameters to train on instead of the
            defaults of ``config.case`` (for experiments and tests).
        devices: the devices to split environments over (default: ``config.devices``
            local devices, or every device of every process under ``jax.distributed``).
    """

    def __init__(self, config: TrainConfig, env_params: EnvParams | None = None, devices=None):
        if devices is None:
            devices = default_devices(config)
        config.validate(len(devices))
        self.config = config
        self.devices = list(devices)
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        self.env, params = make(
            config.case, n_areas=config.n_areas, method=config.method, level=config.start_level
        )
        if env_params is not None:
            params = env_params
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
        self.init = jax.jit(self._init, out_shardings=self.shardings)
        self._runners = {}

    _cache: ClassVar[dict] = {}

    @classmethod
    def cached(cls, config: TrainConfig, env_params: EnvParams | None = None, devices=None):
        """A trainer for ``config`` shared with earlier calls in this process (its
        compiled functions are reused); built fresh when ``env_params`` is given."""
        if env_params is not None:
            return cls(config, env_params, devices)
        devices = default_devices(config) if devices is None else devices
        key = (config, tuple(d.id for d in devices))
        if key not in cls._cache:
            cls._cache[key] = cls(config, None, devices)
        return cls._cache[key]

    # -- init --------------------------------------------------------------------------
    def _init(self, key) -> TrainState:
        c = self.config
        k_params, k_env, k_run = jax.random.split(key, 3)
        params = self.agents.init(k_params)
        env_keys = jax.random.split(k_env, c.num_envs)
        env_params = self._params_at(jnp.int32(c.start_level))
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

    def _params_at(self, level) -> EnvParams:
        return replace(self.env_params, level=jnp.asarray(level, jnp.int32))

    # -- one update, per device ----------------------------------------------------------
    def _update(self, shared: Shared, local: Local):
        c, agents, env = self.config, self.agents, self.env
        env_params = self._params_at(shared.level)
        mean_v, std_v = _value_mean_std(shared.value_stats)

        def env_step(local: Local, _):
            keys = jax.vmap(lambda k: jax.random.split(k, 3))(local.env_key)
            next_key, k_act, k_step = keys[:, 0], keys[:, 1], keys[:, 2]
            grouped = agents.group(local.obs)
            heads = agents.heads(shared.params, grouped)
            eps = jax.vmap(agents.noise)(k_act)  # per-environment keys: device-count invariant
            u = {g: heads[g][0] + jnp.exp(heads[g][1]) * eps[g] for g in GROUPS}
            logp = {g: agents.log_prob(g, heads[g], u[g]) for g in GROUPS}
            value = agents.value(shared.params, grouped, shared.level)
            actions = agents.ungroup_actions({g: jnp.tanh(u[g]) for g in GROUPS})
            obs, env_state, reward, done, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                k_step, local.env_state, actions, env_params
            )
            r = reward["strategic"].astype(jnp.float32)
            d = done["__all__"]
            ep_ret = local.episode_return + r
            ep_cost = local.episode_cost + info["total_cost"].astype(jnp.float32)
            record = {
                "obs": grouped,
                "u": u,
                "logp": logp,
                "value": value,
                "reward": r,
                "done": d,
                "finished_return": jnp.where(d, ep_ret, 0.0),
                "finished_cost": jnp.where(d, ep_cost, 0.0),
                "info": {k: info[k].astype(jnp.float32) for k in INFO_KEYS}
                | {
                    "overloaded": (info["overloaded_lines"] > 0).astype(jnp.float32),
                    "violation": ((info["overloaded_lines"] > 0) | (info["trips"] > 0)).astype(
                        jnp.float32
                    ),
                },
            }
            local = Local(
                env_state=env_state,
                obs=obs,
                env_key=next_key,
                episode_return=jnp.where(d, 0.0, ep_ret),
                episode_cost=jnp.where(d, 0.0, ep_cost),
            )
            return local, record

        local, batch = jax.lax.scan(env_step, local, None, c.rollout_steps)

        # GAE on denormalized values
        last_value = agents.value(shared.params, agents.group(local.obs), shared.level)
        values = batch["value"] * std_v + mean_v
        last = last_value * std_v + mean_v

        def gae_step(carry, x):
            gae, next_value = carry
            value, reward, done = x
            nonterminal = 1.0 - done.astype(jnp.float32)
            delta = reward + c.gamma * next_value * nonterminal - value
            gae = delta + c.gamma * c.gae_lambda * nonterminal * gae
            return (gae, value), gae

        _, adv = jax.lax.scan(
            gae_step,
            (jnp.zeros_like(last), last),
            (values, batch["reward"], batch["done"]),
            reverse=True,
        )
        targets = adv + values

        # running return statistics (global over devices)
        beta = c.value_norm_beta
        batch_mean = jax.lax.pmean(jnp.mean(targets), AXIS)
        batch_sq = jax.lax.pmean(jnp.mean(targets**2), AXIS)
        s = shared.value_stats
        value_stats = jnp.stack(
            [
                beta * s[0] + (1 - beta) * batch_mean,
                beta * s[1] + (1 - beta) * batch_sq,
                beta * s[2] + (1 - beta),
            ]
        )
        new_mean, new_std = _value_mean_std(value_stats)
        norm_targets = (targets - new_mean) / new_std

        data = {
            "obs": batch["obs"],
            "u": batch["u"],
            "logp": batch["logp"],
            "value": batch["value"],
            "adv": adv,
            "target": norm_targets,
        }
        level = shared.level

        def loss_fn(params, mb):
            heads = agents.heads(params, mb["obs"])
            adv = mb["adv"]
            a_mean = jax.lax.pmean(jnp.mean(adv), AXIS)
            a_sq = jax.lax.pmean(jnp.mean(adv**2), AXIS)
            adv = (adv - a_mean) / jnp.sqrt(jnp.maximum(a_sq - a_mean**2, 0.0) + 1e-8)
            pg, ent, kl, clipped = 0.0, 0.0, 0.0, 0.0
            for g in GROUPS:
                logp = agents.log_prob(g, heads[g], mb["u"][g])
                log_ratio = logp - mb["logp"][g]
                ratio = jnp.exp(log_ratio)
                a = adv if logp.ndim == adv.ndim else adv[..., None]
                surrogate = jnp.minimum(
                    ratio * a, jnp.clip(ratio, 1 - c.clip_eps, 1 + c.clip_eps) * a
                )
                pg = pg - jnp.mean(surrogate)
                ent = ent + agents.entropy(g, heads[g])
                kl = kl + jnp.mean((ratio - 1) - log_ratio)
                clipped = clipped + jnp.mean((jnp.abs(ratio - 1) > c.clip_eps).astype(jnp.float32))
            v = agents.value(params, mb["obs"], level)
            v_clip = mb["value"] + jnp.clip(v - mb["value"], -c.clip_eps, c.clip_eps)
            v_loss = 0.5 * jnp.mean(
                jnp.maximum((v - mb["target"]) ** 2, (v_clip - mb["target"]) ** 2)
            )
            loss = pg + c.vf_coef * v_loss - c.ent_coef * ent
            n = len(GROUPS)
            return loss, {
                "policy_loss": pg,
                "value_loss": v_loss,
                "entropy": ent,
                "approx_kl": kl / n,
                "clip_fraction": clipped / n,
            }

        T, M = c.rollout_steps, c.num_minibatches

        def epoch(carry, key):
            params, opt_state = carry
            perm = jax.random.permutation(key, T)
            shuffled = jax.tree.map(lambda x: x[perm].reshape(M, T // M, *x.shape[1:]), data)

            def minibatch(carry, mb):
                params, opt_state = carry
                (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
                grads = jax.lax.pmean(grads, AXIS)
                aux = jax.lax.pmean(aux, AXIS)
                updates, opt_state = self.optimizer.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), aux

            return jax.lax.scan(minibatch, (params, opt_state), shuffled)

        key, k_epochs = jax.random.split(shared.key)
        (params, opt_state), aux = jax.lax.scan(
            epoch, (shared.params, shared.opt_state), jax.random.split(k_epochs, c.update_epochs)
        )
        aux = jax.tree.map(jnp.mean, aux)

        # metrics (global means)
        def gmean(x):
            return jax.lax.pmean(jnp.mean(x), AXIS)

        finished = jax.lax.psum(jnp.sum(batch["done"].astype(jnp.float32)), AXIS)
        info = batch["info"]
        metrics = {
            "return": jax.lax.psum(jnp.sum(batch["finished_return"]), AXIS)
            / jnp.maximum(finished, 1.0),
            "episode_cost": jax.lax.psum(jnp.sum(batch["finished_cost"]), AXIS)
            / jnp.maximum(finished, 1.0),
            "episodes": finished,
            "reward": gmean(batch["reward"]),
            **{k: gmean(info[k]) for k in info if k not in ("overloaded", "violation")},
            "overload_share": gmean(info["overloaded"]),
            "violation_rate": gmean(info["violation"]),
            "level": level.astype(jnp.float32),
            **aux,
            "learning_rate": jnp.asarray(
                self._lr(shared.update * c.update_epochs * c.num_minibatches)
                if callable(self._lr)
                else self._lr,
                jnp.float32,
            ),
        }
        metrics["return"] = jnp.where(finished > 0, metrics["return"], jnp.nan)
        metrics["episode_cost"] = jnp.where(finished > 0, metrics["episode_cost"], jnp.nan)
        finite = jnp.isfinite(aux["policy_loss"]) & jnp.isfinite(aux["value_loss"])
        finite &= jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))
        metrics["finite"] = finite.astype(jnp.float32)

        # curriculum
        ema = jnp.where(
            shared.level_updates == 0,
            metrics["violation_rate"],
            0.8 * shared.violation_ema + 0.2 * metrics["violation_rate"],
        )
        level_updates = shared.level_updates + 1
        advance = (
            jnp.bool_(c.curriculum)
            & (ema < c.advance_below)
            & (level < c.max_level)
            & (level_updates >= c.min_updates_per_level)
        )
        shared = Shared(
            params=params,
            opt_state=opt_state,
            value_stats=value_stats,
            key=key,
            update=shared.update + 1,
            level=jnp.where(advance, level + 1, level).astype(jnp.int32),
            level_updates=jnp.where(advance, 0, level_updates).astype(jnp.int32),
            violation_ema=jnp.where(advance, 1.0, ema).astype(jnp.float32),
        )
        return shared, local, {k: metrics[k].astype(jnp.float32) for k in METRICS}

    # -- chunks of updates ---------------------------------------------------------------
    def _chunk(self, n: int):
        def per_device(shared, local):
            def body(carry, _):
                shared, local = carry
                shared, local, metrics = self._update(shared, local)
                return (shared, local), metrics

            (shared, local), metrics = jax.lax.scan(body, (shared, local), None, n)
            return shared, local, metrics

        mapped = jax.shard_map(
            per_device,
            mesh=self.mesh,
            in_specs=(P(), P(AXIS)),
            out_specs=(P(), P(AXIS), P()),
            check_vma=False,
        )

        def run(state: TrainState):
            shared, local, metrics = mapped(state.shared, state.local)
            return TrainState(shared, local), metrics

        return run

    def run(self, state: TrainState, n: int):
        """``n`` updates from ``state``: ``(state, metrics)`` with metrics of shape (n,)."""
        if n not in self._runners:
            self._runners[n] = jax.jit(
                self._chunk(n),
                in_shardings=(self.shardings,),
                out_shardings=(self.shardings, NamedSharding(self.mesh, P())),
            )
        return self._runners[n](state)


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
    ``config.num_updates`` updates (jit it, or call it: it is jitted inside)."""
    trainer = Trainer(config, env_params, devices)

    def train(key):
        state = trainer.init(key)
        return trainer.run(state, config.num_updates)

    train.trainer = trainer
    return train
