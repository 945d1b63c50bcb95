"""gridrl policies inside Grid2Op: :class:`Grid2OpAgent`, a Grid2Op ``BaseAgent``.

Each Grid2Op step the agent turns the observation into a gridrl state (loads summed
per bus as :mod:`gridrl.grid2op_data` does, dispatch, line status, loadings, the
agents' own schedule and redispatch from the previous step), runs the gridrl policy and
the environment's decision pipeline (schedules, redispatch, the safety filter with the
post-outage sensitivities of the grid as Grid2Op reports it) on Grid2Op's forecast of
the next step, and returns a legal Grid2Op action:

* **redispatch** of the redispatchable units towards the filtered dispatch: the change
  of each unit's target is within Grid2Op's ramps (MW per Grid2Op step) and keeps the
  target inside ``[pmin, pmax]`` of the unit's forecast setpoint; the changes sum to
  zero where the units' room allows (Grid2Op compensates the rest);
* **curtailment** of wind and solar units (where the action space has it) to the
  filtered output when it is below what they could produce, lifted (ratio 1) otherwise.

Grid2Op cannot shed load: what the gridrl policy sheds is counted in
:attr:`Grid2OpAgent.unserved_requests_mw`, not applied. Storage units stay idle.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
from grid2op.Agent import BaseAgent

from gridrl import decisions, physics, scenarios
from gridrl.env import EnvParams, EnvState, Exogenous, GridEnv
from gridrl.errors import ActionError, EnvInputError, EnvOptionError, GridRLError

#: A curtailment is lifted when the filtered output is within this of what the unit
#: could produce (MW).
CURTAIL_TOLERANCE_MW = 0.5


class Grid2OpAgent(BaseAgent):
    """A gridrl policy acting in a Grid2Op environment (see the module docstring).

    Args:
        policy: a trained policy (``gridrl.load_policy(run)``; its environment is used)
            or a ``(key, obs, state, params) -> actions`` function such as
            ``gridrl.baselines.make_policy("greedy", env)``, with ``env`` and ``params``.
        action_space: the Grid2Op environment's action space.
        env, params: the gridrl environment of the same Grid2Op environment
            (``gridrl.make("grid2op:<name>")``); taken from ``policy`` when it has them.
        seed: seed of the policy's keys (the trained policy is deterministic).
        simulate: check each action with Grid2Op's simulator (``obs.simulate``) and do
            nothing instead when it would end the episode or overload more than doing
            nothing (:attr:`held_back` counts them).
    """

    def __init__(
        self,
        policy,
        action_space,
        env: GridEnv | None = None,
        params: EnvParams | None = None,
        *,
        seed: int = 0,
        simulate: bool = True,
    ):
        from grid2op.Action import ActionSpace

        if not isinstance(action_space, ActionSpace):
            raise EnvOptionError(
                f"action_space must be a Grid2Op environment's action space "
                f"(env.action_space), got {type(action_space).__name__}"
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise EnvOptionError(f"seed must be an integer >= 0, got {seed!r:.40}")
        super().__init__(action_space)
        if env is None and hasattr(policy, "env"):
            env, params = policy.env, policy.env_params
            policy = policy.as_policy()
        if env is None or params is None:
            raise EnvOptionError(
                "Grid2OpAgent needs the gridrl env and params of the Grid2Op environment "
                "(gridrl.make('grid2op:<name>')) or a policy loaded with gridrl.load_policy"
            )
        if not callable(policy):
            raise EnvOptionError(
                f"policy must be a loaded policy or a (key, obs, state, params) -> actions "
                f"function, got {type(policy).__name__}"
            )
        if not isinstance(params, EnvParams) or (
            params.network.n_gen,
            params.network.n_branch,
            params.network.n_load,
        ) != (env.n_gen, env.n_branch, env.n_load):
            raise EnvOptionError(
                "params must be the params that gridrl.make returned with env (the same "
                "grid), got params of another grid or another kind"
            )
        if env.recorded is None:
            raise EnvOptionError(
                f"Grid2OpAgent needs an environment made from a Grid2Op case "
                f"(grid2op:<name>), got {env.config.case!r}"
            )
        cls = type(action_space)
        if int(cls.n_gen) != env.n_gen or int(cls.n_line) != env.n_branch:
            raise EnvOptionError(
                f"the Grid2Op action space has {cls.n_gen} generators and {cls.n_line} lines, "
                f"the gridrl environment {env.n_gen} and {env.n_branch}: not the same grid"
            )
        for kind, theirs in (
            ("loads", cls.name_load),
            ("prods", cls.name_gen),
            ("lines", cls.name_line),
        ):  # same counts but other elements, or the same in another order
            ours = env.recorded.names.get(kind)
            theirs = [str(n) for n in theirs]
            if ours is not None and list(ours) != theirs:
                pairs = enumerate(zip(ours, theirs, strict=False))
                i = next((i for i, (a, b) in pairs if a != b), min(len(ours), len(theirs)))
                raise EnvOptionError(
                    f"the Grid2Op environment's {kind} are not the gridrl environment's: "
                    f"{len(theirs)} against {len(ours)}, first difference at {i} "
                    f"({theirs[i] if i < len(theirs) else None!r} against "
                    f"{ours[i] if i < len(ours) else None!r}); not the same grid"
                )
        self.env = env
        # Grid2Op's own thermal limits: the curriculum's rating scale stays at 1
        self.params = replace(params, level=jnp.int32(0))
        self.load_map = np.asarray(env.recorded.load_map)
        self.redispatchable = np.asarray(cls.gen_redispatchable, bool)
        self.renewable = np.asarray(cls.gen_renewable, bool)
        self.ramp_up = np.asarray(cls.gen_max_ramp_up, float)
        self.ramp_down = np.asarray(cls.gen_max_ramp_down, float)
        self.p_min = np.asarray(cls.gen_pmin, float)
        self.p_max = np.asarray(cls.gen_pmax, float)
        self.can_curtail = action_space.supports_type("curtail") and self.renewable.any()
        self.can_redispatch = action_space.supports_type("redispatch") and self.redispatchable.any()
        self.gen_kv = None
        self._key = jax.random.key(seed)
        self.simulate = simulate
        self._decide = jax.jit(_decider(env, policy))
        self.unserved_requests_mw = 0.0
        self.held_back = 0  # actions not sent: they would overload more than doing nothing
        self.invalid_actions = 0  # agents' actions that were not finite (no change instead)
        self.reset(None)

    def reset(self, obs) -> None:
        """A new episode: the agents' schedule and redispatch start afresh."""
        self._target = jnp.ones(self.env.n_areas, self.env.dtype)
        self._offset = jnp.zeros(self.env.n_gen, self.env.dtype)

    # -- observation -> gridrl ------------------------------------------------------
    def _per_bus(self, per_load) -> np.ndarray:
        out = np.zeros(self.env.n_load)
        np.add.at(out, self.load_map, np.asarray(per_load, float))
        return out

    def _forecast(self, obs):
        """Grid2Op's forecast of the next step (prod_p, load_p), else persistence."""
        try:
            prod_p, _, load_p, _ = obs.get_forecasted_inj()
            prod_p, load_p = np.asarray(prod_p, float), np.asarray(load_p, float)
            if prod_p.shape == obs.gen_p.shape and np.isfinite(prod_p).all():
                return prod_p, load_p
        except Exception:
            pass
        return np.asarray(obs.gen_p, float) - np.asarray(obs.actual_dispatch, float), np.asarray(
            obs.load_p, float
        )

    def _check_observation(self, obs) -> None:
        """``obs`` is an observation of this grid (an :class:`EnvInputError` if not)."""
        sizes = {"gen_p": self.env.n_gen, "load_p": len(self.load_map), "rho": self.env.n_branch}
        for name, size in sizes.items():
            try:
                got = np.shape(getattr(obs, name))
            except Exception:
                got = None
            if got != (size,):
                raise EnvInputError(
                    f"expected a Grid2Op observation of this grid ({name} of shape ({size},)), "
                    f"got {type(obs).__name__}" + (f" with {name} of shape {got}" if got else "")
                )

    def gridrl_inputs(self, obs) -> tuple[EnvState, Exogenous, np.ndarray]:
        """The gridrl state of ``obs``, the conditions of the next step and Grid2Op's
        planned setpoints for it (before redispatch)."""
        self._check_observation(obs)
        env, dtype = self.env, self.env.dtype
        steps_per_day = scenarios.STEPS_PER_DAY
        clock = []
        for name in ("hour_of_day", "minute_of_hour"):
            try:
                clock.append(int(getattr(obs, name)))
            except (TypeError, ValueError, OverflowError):  # NaN was a bare ValueError
                raise EnvInputError(
                    f"the observation's {name} must be a whole number, got "
                    f"{getattr(obs, name, None)!r}"
                ) from None
        t = (clock[0] * 60 + clock[1]) // scenarios.STEP_MINUTES
        cap = self.p_max
        before = getattr(obs, "gen_p_before_curtail", None)
        produced = np.asarray(obs.gen_p, float)
        possible = np.where(
            self.renewable, np.asarray(before, float) if before is not None else produced, cap
        )
        load = self._per_bus(obs.load_p)
        on = np.asarray(obs.line_status, bool)
        cooldown = np.asarray(getattr(obs, "time_before_cooldown_line", np.zeros(env.n_branch)))
        state = EnvState(
            t=jnp.int32(t % steps_per_day),
            day=jnp.int32(self.recorded_day(load, t % steps_per_day)),
            draw=scenarios.EpisodeDraw(
                scale=jnp.asarray(1.0, dtype), cloud=jnp.asarray(1.0, dtype)
            ),
            noise=jnp.zeros(env.n_load, dtype),
            wind=jnp.zeros(len(env.renewable_index), dtype),
            offset_mw=self._offset,
            gen_mw=jnp.asarray(produced, dtype),
            branch_on=jnp.asarray(on, dtype),
            heat=jnp.zeros(env.n_branch, dtype),
            repair=jnp.asarray(np.where(on, 0, np.maximum(cooldown, 1)), jnp.int32),
            target_factor=self._target,
            loading=jnp.asarray(np.nan_to_num(100.0 * np.asarray(obs.rho, float)), dtype),
            load_mw=jnp.asarray(load, dtype),
            served_mw=jnp.asarray(load, dtype),
            avail_mw=jnp.asarray(possible, dtype),
            lost_share=jnp.zeros((), dtype),
        )
        planned, load_next = self._forecast(obs)
        avail_next = np.where(self.renewable, np.clip(planned, 0, self.p_max), cap)
        rate = self.effective_rating(obs)
        x = Exogenous(
            t=jnp.int32((t + 1) % steps_per_day),
            noise=state.noise,
            wind=state.wind,
            load_mw=jnp.asarray(self._per_bus(load_next), dtype),
            avail_mw=jnp.asarray(avail_next, dtype),
            branch_on=state.branch_on,
            repair=state.repair,
            rate_mva=jnp.asarray(rate, dtype),
            base_mw=jnp.zeros(env.n_gen, dtype),  # set by the decider from the schedule
        )
        return state, x, planned

    def recorded_day(self, load: np.ndarray, t: int) -> int:
        """The recorded day whose demand at step ``t`` is nearest ``load`` (per bus): the
        day Grid2Op is replaying when it is one gridrl read, so that the observation's
        next-hour demand feature comes from the same day."""
        days = np.asarray(self.env.recorded.load_mw[:, t], float)
        return int(np.argmin(np.abs(days - load).sum(axis=1)))

    def effective_rating(self, obs) -> np.ndarray:
        """(n_branch,) MW ratings that make the DC loading |P| / rating equal Grid2Op's
        rho (current over its thermal limit, which reactive flow and voltage also
        load), so the filter relieves what Grid2Op's protections see; the case's rating
        where a line carries too little to tell."""
        rate = np.asarray(self.params.network.branch.rate_a_mva, float)
        rho = np.asarray(obs.rho, float)
        p_or = np.abs(np.asarray(obs.p_or, float))
        known = np.asarray(obs.line_status, bool) & (rho > 0.05) & (p_or > 1e-3)
        return np.where(known, p_or / np.where(known, rho, 1.0), rate)

    # -- gridrl -> action ------------------------------------------------------------
    def act(self, observation, reward=0.0, done=False):
        state, x, planned = self.gridrl_inputs(observation)
        self._key, key = jax.random.split(self._key)
        # doing nothing in Grid2Op: the planned setpoints plus the redispatch already asked
        idle = np.clip(planned + np.asarray(observation.target_dispatch, float), 0, self.p_max)
        dtype = self.env.dtype
        try:
            target, offset, served, gen, worst, worst_idle, invalid = self._decide(
                key, state, x, jnp.asarray(planned, dtype), jnp.asarray(idle, dtype), self.params
            )
        except (KeyError, TypeError, ValueError) as exc:  # traced at the first call
            if isinstance(exc, GridRLError):
                raise
            raise ActionError(
                f"the policy's actions do not fit this environment's action spaces "
                f"({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        self.invalid_actions += int(invalid)
        if float(worst) > 100.0 and float(worst) > float(worst_idle):
            # do no harm: an action that would leave a line more overloaded than doing
            # nothing is not sent (the policy learned on another grid's limits)
            self.held_back += 1
            return self.action_space({})
        action = self.to_action(observation, np.asarray(gen, float), planned)
        if self.simulate and not self._safe(observation, action):
            self.held_back += 1
            return self.action_space({})
        self._target, self._offset = target, offset
        self.unserved_requests_mw += float(jnp.sum(x.load_mw - served))
        return action

    def _safe(self, obs, action) -> bool:
        """Grid2Op's own simulator (``obs.simulate``, AC, on its forecast) says the action
        neither ends the episode nor overloads more than doing nothing would."""
        try:
            sim, _, done, info = obs.simulate(action)
        except Exception:
            return True
        if not done and not info.get("exception") and float(np.max(sim.rho)) <= 1.0:
            return True
        idle, _, idle_done, idle_info = obs.simulate(self.action_space({}))
        if done or info.get("exception"):
            return bool(idle_done or idle_info.get("exception"))  # both fail: act anyway
        return idle_done or float(np.max(sim.rho)) <= float(np.max(idle.rho))

    def to_action(self, obs, gen: np.ndarray, planned: np.ndarray):
        """The legal Grid2Op action that moves the units towards ``gen`` (MW) from
        their planned setpoints ``planned`` (see the module docstring)."""
        action = {}
        if self.can_redispatch:
            action["redispatch"] = self._redispatch(obs, gen, planned)
        if self.can_curtail:
            possible = np.clip(planned, 0.0, self.p_max)
            ratio = np.where(
                gen < possible - CURTAIL_TOLERANCE_MW,
                np.clip(gen / np.maximum(self.p_max, 1e-9), 0.0, 1.0),
                1.0,
            )
            action["curtail"] = np.where(self.renewable, ratio, -1.0)
        return self.action_space(action)

    def _redispatch(self, obs, gen, planned) -> np.ndarray:
        target = np.asarray(obs.target_dispatch, float)
        # the cumulated target keeps the forecast setpoint within the unit's limits
        low = np.maximum(self.p_min - planned, -self.ramp_down + target)
        high = np.minimum(self.p_max - planned, self.ramp_up + target)
        wanted = np.clip(gen - planned, low, high)
        delta = np.where(self.redispatchable, wanted - target, 0.0)
        # balance: move the sum to zero within each unit's remaining room
        room_up = np.where(self.redispatchable, np.maximum(high - target - delta, 0.0), 0.0)
        room_down = np.where(self.redispatchable, np.maximum(delta - (low - target), 0.0), 0.0)
        excess = delta.sum()
        if excess > 0 and room_down.sum() > 0:
            delta -= room_down * min(1.0, excess / room_down.sum())
        elif excess < 0 and room_up.sum() > 0:
            delta += room_up * min(1.0, -excess / room_up.sum())
        # Grid2Op's ramps per step, with a margin for float32 round-off
        margin = 1e-4
        delta = np.clip(delta, -(self.ramp_down - margin), self.ramp_up - margin)
        delta[np.abs(delta) < 1e-3] = 0.0
        return np.where(self.redispatchable, delta, 0.0)


def _decider(env: GridEnv, policy):
    """``(key, state, x, planned, idle, params) -> (targets, offset, served, gen, worst,
    worst_idle, invalid)``: the policy's actions on ``state``, the env's decisions on ``x``, and
    the highest DC loading (percent, at ``x``'s ratings) that ``gen`` and the idle
    dispatch ``idle`` would give on the grid as it is (jittable)."""
    from gridrl.observation import observe

    def worst(gen, served, params, x, system):
        loading, _ = physics.flows(env, params, gen, served, x.branch_on, x.rate_mva, system)
        live = (x.branch_on > 0) & jnp.isfinite(loading)
        return jnp.max(jnp.where(live, loading, 0.0), initial=0.0)

    def run(key, state, x, planned, idle, params):
        x = replace(x, base_mw=env._base_dispatch(x.load_mw, x.avail_mw, params, planned))
        system = params.grid.system(x.branch_on)  # factored once: the filter and both checks
        obs = observe(env, state, params)
        # checked as env.step checks them: wrong shapes are ActionErrors, NaN is no change
        actions, invalid = env.checked_actions(policy(key, obs, state, params))
        targets, offset, served, gen, _ = decisions.decide(env, state, actions, params, x, system)
        return (
            targets,
            offset,
            served,
            gen,
            worst(gen, served, params, x, system),
            worst(idle, x.load_mw, params, x, system),
            invalid,
        )

    return run
