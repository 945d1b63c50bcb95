"""The pieces of a MAPPO update, each against a reference written independently of it:
GAE against the forward sum of discounted TD errors, the clipped objectives against
their hand derivation, the whole loss against numpy and scipy on a stub environment,
the epoch loop against an optimizer whose result counts its steps, and the curriculum
rule case by case. Nothing here builds or compiles a grid environment.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from gridrl.config import TrainConfig
from gridrl.mappo import (
    GROUPS,
    Agents,
    PPOBatch,
    clipped_surrogate,
    clipped_value_loss,
    compute_gae,
    curriculum_step,
    ppo_loss,
    update_epochs,
)
from gridrl.spaces import Box


# -- GAE -------------------------------------------------------------------------------------
def _gae_reference(values, rewards, dones, last_value, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, up to and including the step where the
    episode ends; delta_t = r_t + gamma V_{t+1} - V_t with V after an ending step = 0."""
    T, E = values.shape
    adv = np.zeros((T, E))
    for e in range(E):
        for t in range(T):
            total, weight = 0.0, 1.0
            for s in range(t, T):
                next_v = values[s + 1, e] if s + 1 < T else last_value[e]
                if dones[s, e]:
                    next_v = 0.0
                total += weight * (rewards[s, e] + gamma * next_v - values[s, e])
                if dones[s, e]:
                    break
                weight *= gamma * lam
            adv[t, e] = total
    return adv


def test_gae_equals_the_discounted_sum_of_td_errors():
    rng = np.random.default_rng(0)
    T, E = 9, 4
    values = rng.normal(size=(T, E))
    rewards = rng.normal(size=(T, E))
    last_value = rng.normal(size=E)
    dones = np.zeros((T, E), bool)
    dones[3, 0] = dones[6, 0] = True  # two episodes end mid-rollout
    dones[0, 1] = True  # the first step ends one
    dones[T - 1, 2] = True  # the last step ends one: last_value is not bootstrapped
    gamma, lam = 0.97, 0.9
    adv, targets = compute_gae(
        jnp.asarray(values, jnp.float32),
        jnp.asarray(rewards, jnp.float32),
        jnp.asarray(dones),
        jnp.asarray(last_value, jnp.float32),
        gamma,
        lam,
    )
    expected = _gae_reference(values, rewards, dones, last_value, gamma, lam)
    assert adv.shape == targets.shape == (T, E)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, expected + values, rtol=1e-5, atol=1e-5)
    # a step that ends an episode is its own one-step TD error
    np.testing.assert_allclose(adv[3, 0], rewards[3, 0] - values[3, 0], rtol=1e-6)


# -- clipped objectives --------------------------------------------------------------------------
def _surrogate_grad(logp, old_logp, adv, eps):
    return jax.grad(lambda lp: clipped_surrogate(lp, old_logp, adv, eps)[0])(logp)


def test_surrogate_is_flat_where_the_ratio_is_clipped_in_the_advantage_direction():
    eps = 0.2
    ratio = np.array([1.5, 0.5, 1.1, 1.5, 0.5], np.float32)
    adv = np.array([2.0, -1.0, 3.0, -2.0, 1.0], np.float32)
    old = np.zeros(5, np.float32)
    logp = np.log(ratio)
    objective, kl, clip_fraction = clipped_surrogate(logp, old, adv, eps)
    # min(r A, clip(r) A) by hand, sample by sample:
    # r=1.5, A=2: min(3.0, 2.4) = 2.4 (clipped)    r=0.5, A=-1: min(-0.5, -0.8) = -0.8 (clipped)
    # r=1.1, A=3: 3.3 (inside the range)           r=1.5, A=-2: min(-3, -2.4) = -3 (unclipped)
    # r=0.5, A=1: min(0.5, 0.8) = 0.5 (unclipped)
    per_sample = np.array([2.4, -0.8, 3.3, -3.0, 0.5])
    np.testing.assert_allclose(objective, per_sample.mean(), rtol=1e-6)
    np.testing.assert_allclose(kl, np.mean(ratio - 1 - np.log(ratio)), rtol=1e-6)
    assert float(clip_fraction) == pytest.approx(4 / 5)
    # d/dlogp of r A = r A; zero where the clipped branch is the minimum
    grad = _surrogate_grad(jnp.asarray(logp), old, adv, eps)
    expected = np.array([0.0, 0.0, 1.1 * 3.0, 1.5 * -2.0, 0.5 * 1.0]) / 5
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)


def test_surrogate_credits_every_agent_of_a_shared_actor_with_the_team_advantage():
    eps = 0.2
    ratio = np.array([[1.0, 1.5], [0.9, 0.5]], np.float32)  # (N=2 samples, A=2 agents)
    adv = np.array([1.0, -2.0], np.float32)
    objective, _, clip_fraction = clipped_surrogate(np.log(ratio), np.zeros_like(ratio), adv, eps)
    # row 0 (A=1): min(1, 1) = 1, min(1.5, 1.2) = 1.2; row 1 (A=-2): -1.8, min(-1, -1.6) = -1.6
    np.testing.assert_allclose(objective, np.mean([1.0, 1.2, -1.8, -1.6]), rtol=1e-6)
    assert float(clip_fraction) == pytest.approx(2 / 4)


def test_value_loss_is_flat_where_the_clipped_value_is_worse():
    eps = 0.2
    old = np.zeros(3, np.float32)
    value = np.array([0.5, 0.5, 0.1], np.float32)
    target = np.array([1.0, 0.0, 0.3], np.float32)
    # sample 0: moved 0.5 towards a target 1.0 away: clipped error 0.8^2 > 0.5^2 -> the
    #   clipped branch, constant in the value: gradient 0
    # sample 1: moved 0.5 away from the target: 0.5^2 > 0.2^2 -> unclipped
    # sample 2: inside the range: both branches equal, 0.2^2
    loss = clipped_value_loss(jnp.asarray(value), old, target, eps)
    np.testing.assert_allclose(loss, 0.5 * np.mean([0.64, 0.25, 0.04]), rtol=1e-6)
    grad = jax.grad(lambda v: clipped_value_loss(v, old, target, eps))(jnp.asarray(value))
    # 0.5 * mean((v - t)^2) -> (v - t) / N on the unclipped branch
    np.testing.assert_allclose(grad, np.array([0.0, 0.5, -0.2]) / 3, rtol=1e-6, atol=1e-7)


# -- the whole loss on a stub environment -----------------------------------------------------
class _StubEnv:
    """The sizes Agents reads from an environment: 2 areas (the second with one unit
    fewer, masked), 3 generators, one load per area."""

    n_areas, n_gen, max_gens = 2, 3, 2
    _obs: ClassVar[dict[str, int]] = {"strategic": 5, "operational": 6, "safety": 7}

    def action_space(self, agent: str) -> Box:
        size = {"strategic": self.n_areas, "safety": self.n_gen}.get(agent, 3)
        return Box(-1.0, 1.0, (size,))

    def observation_space(self, agent: str) -> Box:
        return Box(-np.inf, np.inf, (self._obs[agent.split("_")[0]],))

    def action_mask(self, agent: str) -> np.ndarray:
        return np.array([True, agent != "operational_1", True])


def _masked_logpdf(u, mean, log_std, mask):
    return np.sum(np.where(mask, scipy.stats.norm.logpdf(u, mean, np.exp(log_std)), 0.0), -1)


def test_ppo_loss_equals_a_numpy_derivation():
    config = TrainConfig(case="stub", num_envs=3, num_minibatches=1, ent_coef=0.01, vf_coef=0.5)
    agents = Agents(_StubEnv(), config)
    params = jax.jit(agents.init)(jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    N, E, A = 4, 3, 2
    obs = {
        "strategic": rng.normal(size=(N, E, 5)),
        "operational": rng.normal(size=(N, E, A, 6)),
        "safety": rng.normal(size=(N, E, 7)),
    }
    obs = {g: jnp.asarray(x, jnp.float32) for g, x in obs.items()}
    u = {
        "strategic": rng.normal(size=(N, E, A)),
        "operational": rng.normal(size=(N, E, A, 3)),
        "safety": rng.normal(size=(N, E, 3)),
    }
    level = jnp.int32(2)
    heads = jax.jit(agents.heads)(params, obs)  # the networks' outputs: means and log stds
    v = np.asarray(jax.jit(agents.value)(params, obs, level), float)
    new_logp = {
        g: _masked_logpdf(u[g], np.asarray(heads[g][0]), np.asarray(heads[g][1]), agents.masks[g])
        for g in GROUPS
    }
    old_logp = {g: lp + rng.normal(0, 0.3, lp.shape) for g, lp in new_logp.items()}
    old_value = v + rng.normal(0, 0.3, v.shape)
    adv = rng.normal(1.0, 2.0, (N, E))
    target = rng.normal(size=(N, E))
    batch = PPOBatch(
        obs=obs,
        u={g: jnp.asarray(x, jnp.float32) for g, x in u.items()},
        logp={g: jnp.asarray(x, jnp.float32) for g, x in old_logp.items()},
        value=jnp.asarray(old_value, jnp.float32),
        adv=jnp.asarray(adv, jnp.float32),
        target=jnp.asarray(target, jnp.float32),
    )
    loss, aux = jax.jit(partial(ppo_loss, agents, config=config, axis_name=None))(
        params, batch, level=level
    )

    eps = config.clip_eps
    norm_adv = (adv - adv.mean()) / np.sqrt(adv.var() + 1e-8)
    policy_loss = entropy = kl = clip_fraction = 0.0
    for g in GROUPS:
        ratio = np.exp(new_logp[g] - old_logp[g])
        a = norm_adv if ratio.ndim == 2 else norm_adv[..., None]
        policy_loss -= np.mean(np.minimum(ratio * a, np.clip(ratio, 1 - eps, 1 + eps) * a))
        kl += np.mean(ratio - 1 - np.log(ratio)) / len(GROUPS)
        clip_fraction += np.mean(np.abs(ratio - 1) > eps) / len(GROUPS)
        std = np.exp(np.asarray(params[g]["params"]["log_std"], float))
        per_dim = scipy.stats.norm(scale=std).entropy()
        mask = np.broadcast_to(
            agents.masks[g], np.broadcast_shapes(agents.masks[g].shape, std.shape)
        )
        entropy += np.mean(np.sum(np.where(mask, per_dim, 0.0), -1))
    v_clip = old_value + np.clip(v - old_value, -eps, eps)
    value_loss = 0.5 * np.mean(np.maximum((v - target) ** 2, (v_clip - target) ** 2))
    expected = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": kl,
        "clip_fraction": clip_fraction,
    }
    assert 0 < clip_fraction < 1  # both branches of the clip are exercised
    for k, want in expected.items():
        np.testing.assert_allclose(aux[k], want, rtol=2e-5, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(
        loss, policy_loss + 0.5 * value_loss - 0.01 * entropy, rtol=2e-5, atol=1e-6
    )


# -- the epoch loop ------------------------------------------------------------------------------
def test_update_epochs_takes_one_step_per_minibatch_and_sees_every_sample_once_per_epoch():
    T, M, epochs = 8, 4, 3
    x = jnp.arange(1.0, T + 1.0)

    def loss_fn(params, mb):
        # gradient -sum(minibatch) for w and -1 for n: plain SGD with rate 1 adds them up
        loss = -params["w"] * jnp.sum(mb["x"]) - params["n"]
        return loss, {"size": jnp.float32(mb["x"].shape[0]), "mean": jnp.mean(mb["x"])}

    params = {"w": jnp.float32(0.0), "n": jnp.float32(0.0)}
    optimizer = optax.sgd(1.0)
    params, _, aux = update_epochs(
        loss_fn,
        optimizer,
        params,
        optimizer.init(params),
        {"x": x},
        jax.random.PRNGKey(0),
        epochs,
        M,
        None,
    )
    assert float(params["n"]) == epochs * M  # optimizer steps
    assert float(params["w"]) == epochs * float(jnp.sum(x))  # every sample, every epoch
    assert float(aux["size"]) == T // M
    assert float(aux["mean"]) == pytest.approx(float(jnp.mean(x)))


# -- curriculum ----------------------------------------------------------------------------------
CURRICULUM = TrainConfig(advance_below=0.25, max_level=3, min_updates_per_level=3)


def _curriculum(level, level_updates, ema, rate, config=CURRICULUM):
    out = curriculum_step(
        jnp.int32(level), jnp.int32(level_updates), jnp.float32(ema), jnp.float32(rate), config
    )
    assert [x.dtype for x in out] == [jnp.int32, jnp.int32, jnp.float32]
    return int(out[0]), int(out[1]), float(out[2])


@pytest.mark.parametrize(
    ("state", "rate", "expected"),
    [
        # (level, updates at this level, EMA) -> the same after the update
        # the first update at a level starts the EMA at its rate (the old 1.0 is
        # ignored); too early to advance
        ((1, 0, 1.0), 0.0, (1, 1, 0.0)),
        # EMA 0.8 * 0.25 + 0.2 * 0.125 = 0.225 < 0.25 at the 3rd update: advance, reset
        ((1, 2, 0.25), 0.125, (2, 0, 1.0)),
        # EMA 0.8 * 0.5 + 0.2 * 0.125 = 0.425 >= 0.25: stay, the EMA moves
        ((1, 2, 0.5), 0.125, (1, 3, 0.425)),
        # only the 2nd update at this level: too early
        ((1, 1, 0.0), 0.0, (1, 2, 0.0)),
        # the last level: never beyond it
        ((3, 10, 0.0), 0.0, (3, 11, 0.0)),
    ],
)
def test_curriculum_step(state, rate, expected):
    level, count, ema = _curriculum(*state, rate)
    assert (level, count) == expected[:2]
    assert ema == pytest.approx(expected[2], rel=1e-6)


def test_curriculum_needs_the_ema_strictly_under_the_threshold():
    eager = CURRICULUM.replace(min_updates_per_level=1)
    assert _curriculum(1, 0, 1.0, 0.25, eager) == (1, 1, 0.25)  # EMA = 0.25 exactly
    assert _curriculum(1, 0, 1.0, 0.24, eager) == (2, 0, 1.0)


def test_curriculum_step_does_nothing_but_track_when_switched_off():
    off = CURRICULUM.replace(curriculum=False)
    assert _curriculum(1, 5, 0.0, 0.0, off) == (1, 6, 0.0)


def test_a_trainer_checks_the_env_params_it_is_given():
    """Hostile rerun 11: the trainer takes env params as an argument of its compiled
    program, where nothing concrete is checked; params whose network was edited without
    its outage engine trained on the old flows, and a string or a dict raised a bare
    TypeError. They are checked as env.reset checks them; the level is the trainer's."""
    from dataclasses import replace

    from gridrl.env import make
    from gridrl.errors import EnvInputError
    from gridrl.mappo import Trainer

    config = TrainConfig(case="ieee14", num_envs=4, rollout_steps=8, num_minibatches=1)
    _, params = make("ieee14")
    branch = params.network.branch
    edited = replace(
        params,
        network=params.network.replace(branch=branch.replace(x_pu=branch.x_pu * 2)),
    )
    for bad, message in (
        (edited, r"differ from those params\.grid was built from"),
        ("garbage", "must be the EnvParams of gridrl.make"),
        ({}, "must be the EnvParams of gridrl.make"),
    ):
        with pytest.raises(EnvInputError, match=message):
            Trainer(config, env_params=bad)
        with pytest.raises(EnvInputError, match=message):
            Trainer.cached(config, env_params=bad)
    shared = Trainer.cached(config, env_params=replace(params, level=jnp.int32(99)))
    assert shared._runners is Trainer.cached(config)._runners  # one compiled trainer
