"""A day of grid operation as a functional, vmappable multi-agent environment.

``env, params = gridrl.make("ieee118")``; ``obs, state = env.reset(key, params)``;
``obs, state, reward, done, info = env.step(key, state, actions, params)``. Dicts are
keyed by agent: ``"strategic"``, ``"operational_0"`` .. ``"operational_{A-1}"`` and
``"safety"``. Everything numeric is in ``params`` (a pytree: network, curriculum level,
reward weights) or ``state``; the static structure (sizes, the area partition) is on
the env object. Every size comes from the network and the partition.

One step (15 minutes):

1. the scenario moves on: loads, renewable availability, repairs, random outages;
2. the strategic agent (every ``strategic_period`` steps) sets each area's schedule (its
   generation as a factor of its base generation; it binds: the area's units move to
   it); each operational agent redispatches its area's generators around the schedule
   (within ramp limits) and may shed each of its area's loads; the safety filter turns the joint proposal into a
   feasible dispatch (limits, ramps, balance, overload relief with the post-outage
   sensitivities of the grid as it is);
3. DC flows after outages (``gridphysics.OutageFlows``; AC: ``gridphysics.solve``);
   the thermal relays (:mod:`gridrl.protection`: continuous and emergency ratings,
   thermal memory) trip lines, and trips above the instant-trip loading cascade within
   the step; buses cut off lose their load (involuntary, apart from deliberate shedding);
4. the team reward is minus the normalized sum of the priced terms of
   :mod:`gridrl.reward`; the episode ends after a day or on a blackout (more than half
   the load lost; the rest of the day's load then counts as energy not served), and
   resets itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

import gridphysics as gp
from gridrl import decisions, grid2op_data, observation, physics, safety, scenarios
from gridrl import reward as rewards
from gridrl.areas import partition, tie_lines
from gridrl.errors import ActionError, EnvInputError, EnvOptionError, UnknownAgentError
from gridrl.metrics import ENV_INFO
from gridrl.protection import ThermalRelay, overloaded
from gridrl.spaces import Box

DT_HOURS = scenarios.STEP_MINUTES / 60
FAST_DC_MAX_BRANCHES = 3000  # above this, no dense outage engine: gridphysics.solve every step
RATING_RULE = "operation-v1"  # cases/ratings.toml: ratings of branches the case leaves unrated
#: The most corrective-redispatch rounds the safety filter may run per step (each round
#: is unrolled in the compiled step, so the bound keeps compilation finite).
MAX_CORRECTIVE_ROUNDS = 8
#: The most last-resort shedding steps the safety filter may take per step (each one
#: is a sensitivity row and a flow update in every environment step).
MAX_SHED_STEPS = 64
#: The largest EnvConfig.replay_noise: ten times the top level's 4 % noise already moves
#: a recorded load by 40 % (one standard deviation) from its record.
MAX_REPLAY_NOISE = 10.0


@dataclass(frozen=True)
class EnvConfig:
    """Static options of the environment (changing one builds a new env).

    Attributes:
        case: a gridphysics case name or .m path.
        n_areas: operational areas (one agent each).
        strategic_period: steps between strategic decisions (default: hourly).
        emergency_percent: short-term emergency rating, % of the continuous rating.
        emergency_minutes: how long a line that ran at its continuous rating may carry
            its emergency rating before its thermal relay trips it.
        thermal_time_constant_minutes: the lines' thermal time constant.
        instant_trip_percent: loading that trips a line at once.
            (The four are :class:`gridrl.protection.ThermalRelay`'s settings.)
        episode_steps: steps per episode (96 = one day, the most; fewer compress the
            day's load and solar profiles into fewer steps).
        renewable_share: share of generators turned into wind/solar units.
        repair_steps: steps until a tripped or failed branch is back (default: 4 hours).
        max_cascade: re-solves per step while trips cascade.
        max_outages: branches that may be out at once (the outage engine's slots, see
            :class:`gridphysics.OutageFlows`; capped at the number of branches). A state
            with more is a collapse: every bus counts as cut off (a blackout).
        max_shed_share: largest share of each load its area's agent may shed in a step.
        schedule_range: the strategic agent moves each area's schedule by up to this
            share of its base generation.
        corrective_rounds: rounds of the safety filter's corrective redispatch
            (:func:`gridrl.safety.corrective`: every unit moved at once, the most loaded
            lines held at 98 % of their rating) before its greedy relief steps. 0
            (default) runs the relief steps only; at most MAX_CORRECTIVE_ROUNDS. Each
            round costs about as much as the rest of a step; evaluate a trained policy with 2 to see its dispatch
            made secure where redispatch within the ramps can do it.
        shed_steps: last-resort load-shedding steps of the safety filter, after its
            redispatch (:mod:`gridrl.safety`, step 5): each sheds the load that relieves
            the most overloaded line most per MW (and takes the same power off the unit
            that relieves it most), keeping every load's shedding, the agents' included,
            within ``max_shed_share``; counted as deliberate shedding. 0 (default): none;
            at most MAX_SHED_STEPS.
        replay_noise: recorded (``grid2op:``) days only: the training days' loads are
            multiplied by ``1 + replay_noise * noise``, ``noise`` being the curriculum
            level's AR(1) load noise (standard deviation 0 at levels 0-1, 3-4 % above).
            0 (default) replays the days exactly; evaluation always does. At most
            MAX_REPLAY_NOISE.
        method: physics: "dc" (default) or "ac".
        dtype: "float32" (default, fast) or "float64".
    """

    case: str = "ieee118"
    n_areas: int = 4
    strategic_period: int = scenarios.STEPS_PER_HOUR
    emergency_percent: float = 120.0
    emergency_minutes: float = 15.0
    thermal_time_constant_minutes: float = 10.0
    instant_trip_percent: float = 150.0
    episode_steps: int = scenarios.STEPS_PER_DAY
    renewable_share: float = 0.2
    repair_steps: int = 4 * scenarios.STEPS_PER_HOUR
    max_cascade: int = 5
    max_outages: int = 16
    max_shed_share: float = 0.2
    schedule_range: float = 0.1
    corrective_rounds: int = 0
    shed_steps: int = 0
    replay_noise: float = 0.0
    method: Literal["dc", "ac"] = "dc"
    dtype: Literal["float32", "float64"] = "float32"

    def __post_init__(self):
        def bad(name, why):
            raise EnvOptionError(f"{name} {why}, got {getattr(self, name)!r}")

        if not isinstance(self.case, str) or not self.case:
            bad("case", "must be a case name or a path")
        for name, low in (
            ("n_areas", 1),
            ("strategic_period", 1),
            ("episode_steps", 1),
            ("repair_steps", 1),
            ("max_cascade", 0),
            ("max_outages", 0),
            ("corrective_rounds", 0),
            ("shed_steps", 0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                bad(name, f"must be an integer >= {low}")
            if v > np.iinfo(np.int32).max:  # step counters are int32 (10**30 overflowed)
                bad(name, f"must be an integer in {low}..{np.iinfo(np.int32).max}")
        if self.corrective_rounds > MAX_CORRECTIVE_ROUNDS:  # each round is traced anew
            bad("corrective_rounds", f"must be at most {MAX_CORRECTIVE_ROUNDS}")
        if self.shed_steps > MAX_SHED_STEPS:  # each step runs in every env step
            bad("shed_steps", f"must be at most {MAX_SHED_STEPS}")
        if self.episode_steps > scenarios.STEPS_PER_DAY:  # one day's profiles, 15-min steps
            bad("episode_steps", f"must be at most {scenarios.STEPS_PER_DAY} (one day)")
        # (name, low, high, low excluded): the relay's settings need a rating above the
        # continuous one and times above 0 (100 % raised a bare ValueError in
        # protection.py after the message here said "[100, inf]"; hostile rerun 8)
        for name, low, high, open_low in (
            ("emergency_percent", 100.0, np.inf, True),
            ("emergency_minutes", 0.0, np.inf, True),
            ("thermal_time_constant_minutes", 0.0, np.inf, True),
            ("instant_trip_percent", 100.0, np.inf, True),
            ("renewable_share", 0.0, 1.0, False),
            ("max_shed_share", 0.0, 1.0, False),
            ("schedule_range", 0.0, 1.0, False),
            ("replay_noise", 0.0, MAX_REPLAY_NOISE, False),
        ):
            span = f"{'(' if open_low else '['}{low:g}, {high:g}]".replace("inf]", "inf)")
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float, np.integer, np.floating))
                or np.iscomplexobj(v)
            ):
                bad(name, "must be a real number")
            try:
                v = float(v)
            except OverflowError:  # an int beyond float range (10**400)
                bad(name, f"must be finite, in {span}")
            if not (np.isfinite(v) and (low < v if open_low else low <= v) and v <= high):
                bad(name, f"must be finite, in {span}")
        if self.instant_trip_percent <= self.emergency_percent:
            bad(
                "instant_trip_percent",
                f"must be above emergency_percent ({self.emergency_percent:g})",
            )
        if self.method not in ("dc", "ac"):
            bad("method", 'must be "dc" or "ac"')
        if self.dtype not in ("float32", "float64"):
            bad("dtype", 'must be "float32" or "float64"')


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Replay:
    """Recorded days replayed instead of the synthetic scenario (``grid2op:`` cases,
    :mod:`gridrl.grid2op_data`): demand and the generators' schedules at every step,
    lines out for maintenance, and which days an episode may draw (``day_weight``:
    the training days in :func:`make`'s params, the held-out days in
    :func:`evaluation_params`'). The curriculum level still sets random outages and
    ratings; loads and renewable output come from the record."""

    load_mw: jax.Array  # (n_days, steps, n_load)
    gen_mw: jax.Array  # (n_days, steps, n_gen) schedule; renewables: what is available
    line_out: jax.Array  # (n_days, steps, n_branch) 0/1
    day_weight: jax.Array  # (n_days,) 1: an episode may draw this day
    eval_days: jax.Array  # (n_days,) 1: held out for evaluation
    noise_scale: jax.Array  # () EnvConfig.replay_noise; 0 in evaluation_params


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class EnvParams:
    network: gp.Network
    level: jax.Array  # () int32 curriculum level 0..scenarios.TOP_LEVEL
    levels: scenarios.LevelSettings
    reward: rewards.Prices  # the prices of the reward terms (gridrl.reward)
    grid: gp.OutageFlows  # DC flows and sensitivities after outages (env and safety filter)
    base_gen_mw: jax.Array  # (n_gen,) the case's own dispatch
    ramp_mw: jax.Array  # (n_gen,) ramp per step
    capacity_mw: jax.Array  # (n_gen,) installed capacity (renewables: twice the case output)
    learned_safety: jax.Array  # () 0/1: apply the safety agent's residual action
    replay: Replay | None = None  # recorded days (Grid2Op chronics); None: synthetic days


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class EnvState:
    t: jax.Array
    day: jax.Array  # () int32 the recorded day replayed (0 for synthetic days)
    draw: scenarios.EpisodeDraw
    noise: jax.Array  # (n_load,)
    wind: jax.Array  # (n_ren,)
    offset_mw: jax.Array  # (n_gen,) redispatch accumulated by the operational agents
    gen_mw: jax.Array  # (n_gen,) dispatch of the last step
    branch_on: jax.Array  # (n_branch,) 0/1
    heat: jax.Array  # (n_branch,) thermal-relay state, 1 = steady at the continuous rating
    repair: jax.Array  # (n_branch,) int32 steps until back in service
    target_factor: jax.Array  # (n_areas,) the strategic schedule: area generation / base
    loading: jax.Array  # (n_branch,) percent, last step
    load_mw: jax.Array  # (n_load,) demand, last step
    served_mw: jax.Array  # (n_load,) demand served, last step
    avail_mw: jax.Array  # (n_gen,) available capacity, last step
    lost_share: jax.Array  # () share of load lost, last step


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Exogenous:
    """The next step's conditions, before any decision (see :meth:`GridEnv.exogenous`)."""

    t: jax.Array
    noise: jax.Array
    wind: jax.Array
    load_mw: jax.Array  # (n_load,)
    avail_mw: jax.Array  # (n_gen,)
    branch_on: jax.Array  # (n_branch,)
    repair: jax.Array  # (n_branch,)
    rate_mva: jax.Array  # (n_branch,) ratings at this level
    base_mw: jax.Array  # (n_gen,) the do-nothing dispatch


class GridEnv:
    """The multi-agent grid-operation environment (see the module docstring)."""

    def __init__(self, config: EnvConfig, network: gp.Network, renewable: np.ndarray | None = None):
        self.config = config
        t = network.topology
        self.n_bus, self.n_branch, self.n_gen, self.n_load = t.n_bus, t.n_branch, t.n_gen, t.n_load
        self.areas = partition(network, config.n_areas)
        self.n_areas = config.n_areas
        A = self.n_areas
        self.tie_lines = tie_lines(network, self.areas)
        gen_area = self.areas[t.gen_bus]
        load_area = self.areas[t.load_bus]
        branch_areas = [set() for _ in range(t.n_branch)]
        for k in range(t.n_branch):
            branch_areas[k] = {int(self.areas[t.branch_from[k]]), int(self.areas[t.branch_to[k]])}
        self.area_gens = _padded([np.flatnonzero(gen_area == a) for a in range(A)], t.n_gen)
        self.area_loads = _padded([np.flatnonzero(load_area == a) for a in range(A)], t.n_load)
        self.area_lines = _padded(
            [
                np.array([k for k in range(t.n_branch) if a in branch_areas[k]], np.int64)
                for a in range(A)
            ],
            t.n_branch,
        )
        self.gen_area, self.load_area = gen_area, load_area
        self.max_gens = self.area_gens.shape[1]
        self.max_loads = self.area_loads.shape[1]
        # Renewable units: a deterministic spread over the generators (not the slack).
        candidates = np.flatnonzero(np.asarray(network.gen.slack_weight) <= 0)
        n_ren = round(config.renewable_share * len(candidates))
        picks = (
            candidates[np.linspace(0, len(candidates) - 1, n_ren).round().astype(int)]
            if n_ren
            else np.zeros(0, int)
        )
        self.renewable = np.zeros(t.n_gen, bool)
        self.renewable[np.unique(picks)] = True
        if renewable is not None:  # the case says which units are wind and solar
            self.renewable = np.asarray(renewable, bool).copy()
        self.renewable_index = np.flatnonzero(self.renewable)
        self.is_solar = np.arange(len(self.renewable_index)) % 2 == 0  # alternate solar / wind
        bridges = set(gp.bridges(network).tolist())
        self.can_fail = np.array([k not in bridges for k in range(t.n_branch)])
        self._engine = network.n_branch <= FAST_DC_MAX_BRANCHES
        self.recorded = None  # the Grid2Op case read by make() (gridrl.grid2op_data)
        self.agents = ["strategic", *[f"operational_{a}" for a in range(A)], "safety"]
        self.dtype = jnp.dtype(config.dtype)
        self.relay = ThermalRelay(
            emergency_percent=config.emergency_percent,
            emergency_minutes=config.emergency_minutes,
            time_constant_minutes=config.thermal_time_constant_minutes,
            instant_trip_percent=config.instant_trip_percent,
            step_minutes=scenarios.STEP_MINUTES,
        )
        self._shape = jnp.asarray(scenarios.daily_load_shape(config.episode_steps), self.dtype)
        self._solar = jnp.asarray(scenarios.solar_shape(config.episode_steps), self.dtype)
        self._obs_sizes: dict[str, int] | None = None  # set by make() (see bind_shapes)
        self._state_shapes = None  # leaf shapes of a state and of params (bind_shapes)
        self._param_shapes = None

    # -- spaces ----------------------------------------------------------------------
    def bind_shapes(self, params: EnvParams) -> None:
        """Derive the observation sizes from the observation function itself
        (``jax.eval_shape`` of :meth:`reset`; nothing is computed)."""
        obs, state = jax.eval_shape(self.reset, jax.random.key(0), params)
        self._obs_sizes = {agent: int(o.shape[0]) for agent, o in obs.items()}
        self._state_shapes = _leaf_shapes(state)
        self._param_shapes = _leaf_shapes(params)

    def _check_agent(self, agent: str) -> None:
        if agent not in self.agents:
            raise UnknownAgentError(f"unknown agent {agent!r}; agents are {self.agents}")

    def observation_space(self, agent: str) -> Box:
        self._check_agent(agent)
        if self._obs_sizes is None:
            raise RuntimeError("observation sizes are unknown: build the env with gridrl.make")
        return Box(-jnp.inf, jnp.inf, (self._obs_sizes[agent],), self.dtype)

    def action_space(self, agent: str) -> Box:
        self._check_agent(agent)
        if agent == "strategic":
            return Box(-1.0, 1.0, (self.n_areas,), self.dtype)
        if agent == "safety":
            return Box(-1.0, 1.0, (self.n_gen,), self.dtype)
        return Box(-1.0, 1.0, (self.max_gens + self.max_loads,), self.dtype)

    def action_mask(self, agent: str) -> np.ndarray:
        """Which action entries act (operational agents: their area's units, then the
        shedding of each of their area's loads)."""
        self._check_agent(agent)
        if agent.startswith("operational_"):
            a = int(agent.split("_")[1])
            return np.concatenate(
                [self.area_gens[a] < self.n_gen, self.area_loads[a] < self.n_load]
            )
        return np.ones(self.action_space(agent).shape, bool)

    # -- API ---------------------------------------------------------------------------
    @staticmethod
    def _check_key(key) -> None:
        """Keys are one JAX PRNG key (``jax.random.key``) or one legacy uint32 key pair
        (a batch of keys goes through ``jax.vmap``, which hands each call one)."""
        ok = isinstance(key, jax.Array) and (
            jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
            or (key.dtype == jnp.uint32 and key.shape[-1:] == (2,))
        )
        if not ok:
            raise EnvInputError(
                f"key must be a JAX PRNG key (jax.random.key(seed)), got {type(key).__name__}"
                + (f" of dtype {key.dtype}" if hasattr(key, "dtype") else "")
            )
        single = () if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else (2,)
        if key.shape != single:
            raise EnvInputError(
                f"key must be a single PRNG key, got a batch of shape {key.shape}; step and "
                "reset one environment per call and batch them with jax.vmap"
            )

    def _check_fits(self, name, value, kind, source, shapes) -> None:
        """``value`` is a ``kind`` with this grid's sizes (``shapes``, see
        :func:`_leaf_shapes`; shapes are static, so this holds under jit too)."""
        if not isinstance(value, kind):
            raise EnvInputError(
                f"{name} must be an {kind.__name__} from {source}, got {type(value).__name__}"
            )
        if shapes is not None and _leaf_shapes(value) != shapes:
            raise EnvInputError(
                f"{name} of another grid or configuration: its sizes or number types differ from this "
                f"environment's ({self.config.case!r}, {self.n_bus} buses)"
            )

    def _check_params(self, params) -> None:
        """``params`` of this environment: an EnvParams with this grid's sizes (params
        of another case have other shapes). Shapes are static: checked under jit too."""
        self._check_fits("params", params, EnvParams, "make()", self._param_shapes)
        for name in ("base_gen_mw", "ramp_mw", "capacity_mw", "learned_safety"):
            value = getattr(params, name)
            # numpy: under an outer jit, jnp on a closed-over constant is traced
            if not isinstance(value, jax.core.Tracer) and not np.isfinite(np.asarray(value)).all():
                raise EnvInputError(  # a NaN capacity gave a NaN reward
                    f"params.{name} holds NaN or Inf; params come from make()"
                )
            if (
                name in ("ramp_mw", "capacity_mw")
                and not isinstance(value, jax.core.Tracer)
                and (np.asarray(value) < 0).any()
            ):  # a ramp of -1e30 MW gave a reward of -inf
                raise EnvInputError(
                    f"params.{name} holds a negative value; params come from make()"
                )
        branch = params.network.branch
        if not isinstance(branch.x_pu, jax.core.Tracer) and not params.grid.built_from(
            params.network
        ):  # the DC flows and the filter kept the old branches' (hostile rerun 10)
            raise EnvInputError(
                "params.network's branches (reactances, taps, shifts or statuses) differ "
                "from those params.grid was built from, and the flows come from params.grid; "
                "rebuild it with the network: dataclasses.replace(params, network=net, "
                "grid=gridphysics.OutageFlows.build(net, max_outages, dtype)) with "
                "params.grid.max_outages and the env's dtype"
            )
        load = params.network.load
        if params.replay is None and not isinstance(load.p_mw, jax.core.Tracer):
            demand = float(np.sum(np.asarray(load.p_mw) * np.asarray(load.status)))
            if not demand > 0:  # NaN observations (make() refuses such a case too)
                raise EnvInputError(
                    f"params.network's loads sum to {demand:g} MW; the environment needs a "
                    "demand > 0 (params come from make())"
                )
        level = params.level
        if not isinstance(level, jax.core.Tracer):  # under jit its value is not known here
            lv = np.asarray(level)
            if not (
                np.issubdtype(lv.dtype, np.integer)
                and lv.min() >= 0
                and lv.max() <= scenarios.TOP_LEVEL
            ):
                raise EnvInputError(
                    f"params.level must be a curriculum level 0..{scenarios.TOP_LEVEL}, got {level}"
                )

    def _check_state(self, state) -> None:
        """A state passed in by hand: of the right kind and shapes (also under ``jit``)
        and, outside ``jit``, finite (every state ``reset`` and ``step`` make is; under
        ``jit`` its values are not known here and :func:`_finite_state` flags it)."""
        self._check_fits("state", state, EnvState, "reset() or step()", self._state_shapes)
        bad = []
        for path, leaf in jax.tree_util.tree_leaves_with_path(state):
            if isinstance(leaf, jax.core.Tracer) or not jnp.issubdtype(
                jnp.result_type(leaf), jnp.floating
            ):
                continue
            if not np.isfinite(np.asarray(leaf)).all():  # numpy: jnp would be traced under a jit
                bad.append(jax.tree_util.keystr(path).lstrip("."))
        if bad:
            raise EnvInputError(
                f"state has NaN or Inf in {', '.join(bad)}; states come from reset() or step() "
                "(a state changed by hand, or loaded damaged?)"
            )
        t = state.t
        steps = None if isinstance(t, jax.core.Tracer) else np.asarray(t)  # numpy: not traced
        if steps is not None and not (
            steps.min() >= 0 and steps.max() <= self.config.episode_steps
        ):
            raise EnvInputError(
                f"state.t must be a step of the day, 0..{self.config.episode_steps}, got {t}; "
                "states come from reset() or step()"
            )
        on = state.branch_on
        if not isinstance(on, jax.core.Tracer) and not np.isin(np.asarray(on), (0, 1)).all():
            raise EnvInputError(
                "state.branch_on must be 0 (out) or 1 (in service) for every branch; states "
                "come from reset() or step()"
            )

    def checked_actions(self, actions) -> tuple[dict, jax.Array]:
        """``actions`` checked as :meth:`step` takes them: a dict with one real array of
        the action space's shape per agent (else an :class:`ActionError` or
        :class:`EnvInputError`; shapes are static, so this holds under jit and vmap);
        returns them in the env's dtype with a non-finite action replaced by no change
        (zeros: keep the schedule and the redispatch, shed nothing), and how many were
        replaced (``info["invalid_actions"]``)."""
        if not isinstance(actions, Mapping):
            raise EnvInputError(
                f"actions must be a dict of arrays, one per agent {self.agents}, got "
                f"{type(actions).__name__}"
            )
        missing = set(self.agents) - set(actions)
        if missing:
            raise ActionError(
                f"actions missing for agent(s) {sorted(missing)}; agents are {self.agents}"
            )
        extra = set(actions) - set(self.agents)
        if extra:  # a misspelt agent's action was silently dropped
            raise ActionError(
                f"actions for unknown agent(s) {sorted(map(str, extra))}; agents are {self.agents}"
            )
        for agent in self.agents:  # shapes are static: this holds under jit and vmap too
            value = actions[agent]
            if value is None or isinstance(value, str | bytes | Mapping):  # not a shape issue
                raise ActionError(
                    f"action of agent {agent!r} must be an array of real numbers, got "
                    f"{type(value).__name__}"
                )
            try:  # lists too (jnp.shape of a list is deprecated in JAX)
                shape = tuple(value.shape if hasattr(value, "shape") else np.shape(value))
            except ValueError as exc:  # ragged nesting
                raise ActionError(f"action of agent {agent!r} is not an array ({exc})") from None
            expected = self.action_space(agent).shape
            if shape != expected:
                raise ActionError(
                    f"action of agent {agent!r} has shape {shape}, its action space {expected}"
                )
        for agent in self.agents:
            value = actions[agent]
            try:
                kind = value.dtype if isinstance(value, jax.Array) else np.asarray(value).dtype
            except (TypeError, ValueError) as exc:  # ragged nesting and the like
                raise ActionError(f"action of agent {agent!r} is not an array ({exc})") from None
            if not (np.issubdtype(kind, np.floating) or np.issubdtype(kind, np.integer)):
                # strings raised a bare ValueError; complex lost its imaginary part
                raise ActionError(f"action of agent {agent!r} must be real numbers, got {kind}")
        actions = {a: jnp.asarray(actions[a], self.dtype) for a in self.agents}
        # A non-finite action is replaced by no change (zeros: keep the schedule and the
        # redispatch, shed nothing) and counted in info["invalid_actions"].
        finite = {a: jnp.all(jnp.isfinite(v)) for a, v in actions.items()}
        actions = {a: jnp.where(finite[a], v, 0.0) for a, v in actions.items()}
        invalid = sum(jnp.int32(1) - f.astype(jnp.int32) for f in finite.values())
        return actions, invalid

    def reset(self, key: jax.Array, params: EnvParams):
        self._check_key(key)
        self._check_params(params)
        state = self._initial_state(key, params)
        return self._observe(state, params), state

    def step(self, key: jax.Array, state: EnvState, actions: dict, params: EnvParams):
        self._check_key(key)
        self._check_params(params)
        self._check_state(state)
        actions, invalid = self.checked_actions(actions)
        k_step, k_reset = jax.random.split(key)
        reset_state = self._initial_state(k_reset, params)
        # A state with NaN or Inf (edited or damaged; under jit it cannot be refused) is
        # replaced by a fresh day, flagged in info["invalid_state"]: it never enters a step.
        sound = _sound_state(self, state, params)
        state = jax.tree.map(lambda a, b: jnp.where(sound, a, b), state, reset_state)
        # params.level outside the levels (under jit it cannot be refused): the arrays
        # of the nearest level are read (JAX clamps the index), flagged
        level_ok = (params.level >= 0) & (params.level <= scenarios.TOP_LEVEL)
        next_state, reward, done, info = self._step(k_step, state, actions, params)
        # A finite but absurd state or params (gen_mw = -1e30, noise = 3e38, edited by
        # hand) can still overflow in the step: its result never enters the state; the
        # day ends, the reward is 0 and the step is flagged as an invalid state.
        kept = _finite_state(next_state) & jnp.isfinite(reward)
        reward = jnp.where(kept, reward, jnp.zeros_like(reward))
        done = done | ~kept
        info = dict(
            info,
            invalid_actions=invalid,
            invalid_state=(~(sound & kept)).astype(jnp.int32),
            invalid_params=(~level_ok).astype(jnp.int32),
        )
        state = jax.tree.map(lambda a, b: jnp.where(done, a, b), reset_state, next_state)
        obs = self._observe(state, params)
        rewards = {agent: reward for agent in self.agents}
        dones = {agent: done for agent in self.agents} | {"__all__": done}
        return obs, state, rewards, dones, info

    # -- internals ----------------------------------------------------------------------
    def _initial_state(self, key, params: EnvParams) -> EnvState:
        settings = params.levels.at(params.level)
        k_draw, k_wind = jax.random.split(key)
        k_day = jax.random.fold_in(key, 1)  # synthetic days keep their draws
        draw = scenarios.draw_episode(k_draw, settings)
        day = jnp.int32(0)
        if params.replay is not None:
            weight = params.replay.day_weight
            day = jax.random.categorical(k_day, jnp.log(weight / jnp.sum(weight))).astype(jnp.int32)
        net = params.network
        wind = jnp.full(len(self.renewable_index), 0.45, self.dtype) + 0.2 * jax.random.uniform(
            k_wind, (len(self.renewable_index),), self.dtype, -1, 1
        )
        noise = jnp.zeros(self.n_load, self.dtype)
        t0 = jnp.int32(0)
        load = self.demand(t0, day, draw, noise, settings, params)
        avail = self._available(t0, draw, wind, settings, params, day)
        base = self._base_dispatch(load, avail, params, self.planned(t0, day, params))
        on = net.branch.status > 0
        if params.replay is not None:
            on = on & (params.replay.line_out[day, 0] == 0)
        return EnvState(
            t=t0,
            day=day,
            draw=draw,
            noise=noise,
            wind=wind,
            offset_mw=jnp.zeros(self.n_gen, self.dtype),
            gen_mw=base,
            branch_on=on.astype(self.dtype),
            heat=jnp.zeros(self.n_branch, self.dtype),
            repair=jnp.zeros(self.n_branch, jnp.int32),
            target_factor=jnp.ones(self.n_areas, self.dtype),
            loading=jnp.zeros(self.n_branch, self.dtype),
            load_mw=load,
            served_mw=load,
            avail_mw=avail,
            lost_share=jnp.zeros((), self.dtype),
        )

    def demand(self, t, day, draw, noise, settings, params) -> jax.Array:
        """(n_load,) demand at step ``t``: the recorded day's, or the case's loads times
        the synthetic profile, scale and noise."""
        if params.replay is not None:
            r = params.replay
            # the level's noise as an option (training only): a multiplier that never
            # turns a load's sign (recorded loads may be negative: embedded generation)
            factor = jnp.maximum(1.0 + r.noise_scale * noise, 0.0)
            return r.load_mw[day, t % r.load_mw.shape[1]] * factor
        net = params.network
        return (
            net.load.p_mw
            * net.load.status
            * scenarios.load_factor(t, draw, noise, settings, self._shape)
        )

    def next_hour_ratio(self, state: EnvState, params) -> jax.Array:
        """() the demand an hour ahead over the demand now, as the day's profile (or
        the recorded day: Grid2Op gives forecasts) foresees it."""
        ahead = state.t + scenarios.STEPS_PER_HOUR
        if params.replay is not None:
            load = params.replay.load_mw[state.day]
            now = jnp.sum(load[state.t % load.shape[0]])
            return jnp.sum(load[ahead % load.shape[0]]) / jnp.maximum(now, 1e-6)
        shape = self._shape
        return shape[ahead % shape.shape[0]] / shape[state.t % shape.shape[0]]

    def planned(self, t, day, params) -> jax.Array:
        """(n_gen,) the units' planned output before balancing: the recorded day's
        schedule, or the case's own dispatch."""
        if params.replay is not None:
            return params.replay.gen_mw[day, t % params.replay.gen_mw.shape[1]]
        return params.base_gen_mw

    def _available(self, t, draw, wind, settings, params, day=0) -> jax.Array:
        """(n_gen,) available capacity: thermal units their p_max; renewable units their
        capacity times the weather (half of it below level 2, i.e. the case's output),
        or, replaying recorded days, what they produced (curtailment can only lower it)."""
        gen = params.network.gen
        cap = jnp.where(jnp.asarray(self.renewable), params.capacity_mw, gen.p_max_mw) * gen.status
        if not len(self.renewable_index):
            return cap
        if params.replay is not None:
            recorded = jnp.clip(self.planned(t, day, params), 0.0, cap)
            return jnp.where(jnp.asarray(self.renewable), recorded, cap)
        share = scenarios.renewable_availability(
            t, draw, wind, settings, jnp.asarray(self.is_solar), self._solar
        )
        share = jnp.where(settings.renewables > 0, share, 0.5)
        return cap.at[self.renewable_index].multiply(share)

    def _demand(self, served, params: EnvParams) -> jax.Array:
        net = params.network
        return jnp.sum(served) + jnp.sum(net.shunt.g_mw * net.shunt.status)

    def _base_dispatch(self, load, avail, params: EnvParams, schedule=None) -> jax.Array:
        """Economic dispatch scaled with load (the do-nothing reference): renewables at
        their availability, thermal units at their schedule (default: the case's
        dispatch) scaled to cover the rest, then balanced within limits."""
        net = params.network
        renewable = jnp.asarray(self.renewable)
        lo = jnp.minimum(net.gen.p_min_mw * net.gen.status, avail)
        schedule = params.base_gen_mw if schedule is None else schedule
        thermal = jnp.where(renewable, 0.0, schedule)
        residual = self._demand(load, params) - jnp.sum(jnp.where(renewable, avail, 0.0))
        p = jnp.where(renewable, avail, thermal * residual / jnp.maximum(jnp.sum(thermal), 1e-6))
        return safety.balance(jnp.clip(p, lo, avail), lo, avail, self._demand(load, params))

    def exogenous(self, key, state: EnvState, params: EnvParams) -> Exogenous:
        """What the next step brings before anyone acts (loads, availability, repairs,
        outages), from the same key as :meth:`step`'s: the DC-OPF oracle uses it for its
        perfect knowledge of the step."""
        k_step, _ = jax.random.split(key)
        return self._exogenous(k_step, state, params)

    def _exogenous(self, key, state: EnvState, params: EnvParams) -> Exogenous:
        cfg = self.config
        settings = params.levels.at(params.level)
        net = params.network
        k_noise, k_wind, k_out = jax.random.split(key, 3)
        t = state.t + 1
        noise = scenarios.step_noise(k_noise, state.noise, settings)
        wind = scenarios.step_wind(k_wind, state.wind)
        load = self.demand(t, state.day, state.draw, noise, settings, params)
        avail = self._available(t, state.draw, wind, settings, params, state.day)
        repair = jnp.maximum(state.repair - 1, 0)
        back = (state.repair == 1) & (net.branch.status > 0)
        branch_on = jnp.where(back, 1.0, state.branch_on)
        fail = scenarios.draw_outages(
            k_out, branch_on > 0, jnp.asarray(self.can_fail), settings, cfg.episode_steps
        )
        if params.replay is not None:  # maintenance: out this step, back when it ends
            steps = params.replay.line_out.shape[1]
            maintained = (params.replay.line_out[state.day, t % steps] > 0) & (branch_on > 0)
            branch_on = jnp.where(maintained, 0.0, branch_on)
            repair = jnp.where(maintained, jnp.maximum(repair, 1), repair)
        return Exogenous(
            t=t,
            noise=noise,
            wind=wind,
            load_mw=load,
            avail_mw=avail,
            branch_on=jnp.where(fail, 0.0, branch_on),
            repair=jnp.where(fail, cfg.repair_steps, repair),
            rate_mva=net.branch.rate_a_mva * settings.rating_scale,
            base_mw=self._base_dispatch(load, avail, params, self.planned(t, state.day, params)),
        )

    def _step(self, key, state: EnvState, actions: dict, params: EnvParams):
        cfg = self.config
        net = params.network
        x = self._exogenous(key, state, params)
        t, noise, wind, load, avail = x.t, x.noise, x.wind, x.load_mw, x.avail_mw
        branch_on, repair, rate = x.branch_on, x.repair, x.rate_mva

        # 2. Decisions.
        base = x.base_mw
        system = params.grid.system(branch_on)  # factored once: the filter and the physics
        targets, offset, served, gen, interventions, flow = decisions.decide(
            self, state, actions, params, x, system, return_flow=True
        )

        # 3. Physics and protections (the DC flows of gen are the filter's own).
        loading, isolated, trips, branch_on, heat, repair = physics.protect(
            self, params, gen, served, branch_on, state.heat, repair, rate, system, flow
        )
        ens = gp.lost_load_mw(net.topology, served, isolated)
        total = jnp.maximum(jnp.sum(load), 1e-6)
        shed_mw = jnp.maximum(jnp.sum(load - served), 0.0)
        lost_share = (ens + shed_mw) / total
        blackout = lost_share > 0.5
        done = (t >= cfg.episode_steps) | blackout
        # A blackout ends the day: the rest of it counts as energy not served (otherwise
        # an early blackout would look cheaper than operating the whole day).
        rest_mwh = jnp.where(
            blackout & (t < cfg.episode_steps),
            (cfg.episode_steps - t) * jnp.sum(load) * DT_HOURS,
            0.0,
        )

        # 4. Reward (gridrl.reward: the terms and their prices).
        thermal = ~jnp.asarray(self.renewable)
        gen_cost = (
            jnp.sum(
                jnp.where(
                    thermal,
                    net.gen.cost_c2 * gen**2 + net.gen.cost_c1 * gen + net.gen.cost_c0 * (gen > 0),
                    0.0,
                )
            )
            * DT_HOURS
        )
        live = branch_on > 0
        shed_mwh = shed_mw * DT_HOURS
        involuntary_mwh = ens * DT_HOURS + rest_mwh
        terms = rewards.costs(
            params.reward,
            generation_cost=gen_cost,
            redispatch_mwh=jnp.sum(jnp.abs(gen - base)) * DT_HOURS,
            shed_mwh=shed_mwh,
            involuntary_mwh=involuntary_mwh,
            overload_mwh=rewards.overload_mw(loading, rate, live, 100.0) * DT_HOURS,
            emergency_mwh=rewards.overload_mw(loading, rate, live, cfg.emergency_percent)
            * DT_HOURS,
            trips=jnp.sum(trips),
        )
        reward = -terms["total_cost"] / params.reward.normalizer

        next_state = EnvState(
            t=t,
            day=state.day,
            draw=state.draw,
            noise=noise,
            wind=wind,
            offset_mw=offset,
            gen_mw=gen,
            branch_on=branch_on,
            heat=heat,
            repair=repair,
            target_factor=targets,
            loading=loading,
            load_mw=load,
            served_mw=served,
            avail_mw=avail,
            lost_share=lost_share,
        )
        defined = live & jnp.isfinite(loading)
        values = {
            **terms,
            "energy_not_served_mwh": shed_mwh + involuntary_mwh,
            "deliberate_shed_mwh": shed_mwh,
            "involuntary_ens_mwh": involuntary_mwh,
            "trips": jnp.sum(trips),
            "overloaded_lines": jnp.sum(live & overloaded(loading, 100.0)),
            "emergency_lines": jnp.sum(live & overloaded(loading, cfg.emergency_percent)),
            "max_loading_percent": jnp.max(jnp.where(defined, loading, 0.0), initial=0.0),
            "interventions": interventions,
            "invalid_actions": jnp.int32(0),  # set by step(), which checks the actions
            "invalid_state": jnp.int32(0),  # set by step(), which checks the state
            "invalid_params": jnp.int32(0),  # set by step(), which checks the level
            "lost_share": lost_share,
            "blackout": blackout,
            "level": params.level,
            "step": t,
        }
        if set(values) != set(ENV_INFO):  # the table in gridrl.metrics names every field
            raise AssertionError(f"info fields {sorted(values)} differ from {ENV_INFO}")
        info = {}
        for k in ENV_INFO:
            v = jnp.asarray(values[k])
            info[k] = v.astype(self.dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v
        return next_state, reward.astype(self.dtype), done, info

    def _decide(self, state, actions, params, x, system=None):
        return decisions.decide(self, state, actions, params, x, system)

    def schedule(self, base: jax.Array, avail: jax.Array, factor: jax.Array) -> jax.Array:
        """:func:`gridrl.decisions.schedule` of this environment."""
        return decisions.schedule(self, base, avail, factor)

    def _injection(self, net, served) -> jax.Array:
        return physics.injection(self, net, served)

    def _flows(self, params, gen, served, branch_on, rate, system=None):
        return physics.flows(self, params, gen, served, branch_on, rate, system)

    def _protect(self, params, gen, served, branch_on, heat, repair, rate, system=None):
        return physics.protect(self, params, gen, served, branch_on, heat, repair, rate, system)

    def _observe(self, state: EnvState, params: EnvParams) -> dict:
        return observation.observe(self, state, params)


def _leaf_shapes(tree) -> list:
    """The tree's structure and every leaf's shape and kind of number (sizes come from
    the grid; a float step counter was a TypeError deep in the step)."""
    leaves, structure = jax.tree.flatten(tree)
    return [structure, *((jnp.shape(x), jnp.result_type(x).kind) for x in leaves)]


def _sound_state(env: GridEnv, state: EnvState, params: EnvParams) -> jax.Array:
    """() bool: ``state`` is finite, its step within the day and its recorded day one
    of ``params``' (what step() needs; under jit a state is checked only by this)."""
    ok = _finite_state(state) & (state.t >= 0) & (state.t <= env.config.episode_steps)
    if params.replay is not None:
        ok = ok & (state.day >= 0) & (state.day < params.replay.load_mw.shape[0])
    return ok


def _finite_state(state: EnvState) -> jax.Array:
    """() bool: every floating field of ``state`` is finite."""
    leaves = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(state)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _padded(groups: list[np.ndarray], pad: int) -> np.ndarray:
    width = max(1, max(len(g) for g in groups))
    out = np.full((len(groups), width), pad, dtype=np.int64)
    for i, g in enumerate(groups):
        out[i, : len(g)] = g
    return out


def _check_units(network: gp.Network) -> None:
    """The environment dispatches every in-service unit between its limits: they must
    be finite, with p_min <= p_max (a case may say Pmax = Inf; the env cannot)."""
    gen = network.gen
    p_min, p_max = np.asarray(gen.p_min_mw), np.asarray(gen.p_max_mw)
    on = np.asarray(gen.status) > 0
    bad = np.flatnonzero(on & ~(np.isfinite(p_min) & np.isfinite(p_max) & (p_min <= p_max)))
    if bad.size:
        i = int(bad[0])
        raise EnvOptionError(
            f"case {network.name!r}: {network.element_name('gen', i)} has p_min_mw = {p_min[i]} "
            f"and p_max_mw = {p_max[i]}; the environment needs finite limits with "
            "p_min <= p_max for every in-service unit"
        )


def make(case: str = "ieee118", **options) -> tuple[GridEnv, EnvParams]:
    """An environment and its default parameters for ``case``.

    Keyword options are the fields of :class:`EnvConfig` (``n_areas``, ``method``,
    ``dtype``, ...) plus ``level`` (initial curriculum level, default 0).
    """
    level = options.pop("level", 0)
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise EnvOptionError(f"level must be an integer 0..{scenarios.TOP_LEVEL}, got {level!r}")
    level = int(level)
    unknown = set(options) - set(EnvConfig.__dataclass_fields__)
    if unknown:
        raise EnvOptionError(
            f"unknown option(s) {sorted(unknown)}; options are {sorted(EnvConfig.__dataclass_fields__)} and level"
        )
    config = EnvConfig(case=case, **options)
    if not 0 <= level <= scenarios.TOP_LEVEL:
        raise EnvOptionError(f"level must be 0..{scenarios.TOP_LEVEL}, got {level}")
    recorded = None
    if config.replay_noise and not grid2op_data.is_grid2op(case):
        raise EnvOptionError(
            f"replay_noise applies to recorded days (grid2op: cases); {case!r} draws its "
            "days with the curriculum's own noise"
        )
    if grid2op_data.is_grid2op(case):
        recorded = grid2op_data.load_case(case)
        network = recorded.network
    else:
        network, _ = gp.fill_missing_ratings(gp.load_case(case), RATING_RULE)
    _check_units(network)
    demand = float(np.sum(np.asarray(network.load.p_mw) * np.asarray(network.load.status)))
    if not demand > 0:  # NaN observations (Pd = 0) or a broken balance (Pd < 0)
        raise EnvOptionError(
            f"case {case!r}: its loads sum to {demand:g} MW; the environment needs a demand > 0"
        )
    dtype = jnp.dtype(config.dtype)
    if config.method == "ac":  # the env's AC runs in its dtype: it must converge there
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gp.ConvergenceWarning)
            ac = gp.solve(network.astype(dtype), "ac")
        if not bool(ac.converged):
            raise EnvOptionError(
                f"case {case!r}: its AC power flow does not converge in {config.dtype} (a "
                "small base MVA, such as Grid2Op's 1 MVA, leaves float32 too few digits); "
                "use dtype='float64' or method='dc'"
            )
    env = GridEnv(config, network, None if recorded is None else recorded.renewable)
    if recorded is None:
        solved = gp.solve(network)
        if not bool(solved.converged):
            raise EnvOptionError(f"case {case!r}: its DC power flow does not converge")
        base = np.asarray(solved.gen_p_mw)
    else:  # the recorded schedule's mean stands for the case's dispatch
        base = recorded.gen_mw.mean(axis=(0, 1))
    gen = network.gen
    ramp = np.asarray(gen.ramp_mw_per_min) * scenarios.STEP_MINUTES
    ramp = np.where(ramp > 0, ramp, 0.1 * np.asarray(gen.p_max_mw))
    cost = (
        np.asarray(gen.cost_c2) * base**2
        + np.asarray(gen.cost_c1) * base
        + np.asarray(gen.cost_c0) * (base > 0)
    )
    # the size of a step's cost: negative marginal costs (market bids) must neither flip
    # the reward's sign nor drop its scale to the $1 floor
    normalizer = float(np.sum(np.abs(cost[~env.renewable]))) * DT_HOURS
    if not normalizer > 0:  # no fuel costs: the dispatch's energy at a reference price
        energy = float(np.sum(np.abs(base))) * DT_HOURS
        normalizer = energy * rewards.REFERENCE_ENERGY_PER_MWH
    normalizer = max(normalizer, 1.0)
    p_max = np.asarray(gen.p_max_mw)
    capacity = np.where(env.renewable, np.minimum(p_max, 2 * np.maximum(base, 0.05 * p_max)), p_max)
    replay = None
    if recorded is not None:  # renewables may produce up to their rated power
        capacity = p_max
        replay = Replay(
            load_mw=jnp.asarray(recorded.load_mw, dtype),
            gen_mw=jnp.asarray(recorded.gen_mw, dtype),
            line_out=jnp.asarray(recorded.line_out, dtype),
            day_weight=jnp.asarray(~recorded.eval_days | recorded.eval_days.all(), dtype),
            eval_days=jnp.asarray(recorded.eval_days, dtype),
            noise_scale=jnp.asarray(config.replay_noise, dtype),
        )
    params = EnvParams(
        network=network.astype(dtype),
        level=jnp.int32(level),
        levels=jax.tree.map(lambda a: jnp.asarray(a, dtype), scenarios.LevelSettings.default()),
        reward=rewards.Prices.default(normalizer, dtype),
        grid=gp.OutageFlows.build(network, config.max_outages if env._engine else 0, dtype),
        base_gen_mw=jnp.asarray(base, dtype),
        ramp_mw=jnp.asarray(ramp, dtype),
        capacity_mw=jnp.asarray(capacity, dtype),
        learned_safety=jnp.asarray(0.0, dtype),
        replay=replay,
    )
    env.bind_shapes(params)
    env.recorded = recorded
    return env, params


def evaluation_params(params: EnvParams) -> EnvParams:
    """``params`` whose episodes draw only the held-out recorded days (Grid2Op cases:
    the evaluation chronics); synthetic days are already held out by their seeds."""
    if not isinstance(params, EnvParams):  # None was a raw AttributeError
        raise EnvInputError(
            f"evaluation_params needs the EnvParams of gridrl.make(), got {type(params).__name__}"
        )
    if params.replay is None:
        return params
    r = params.replay
    return replace(
        params, replay=replace(r, day_weight=r.eval_days, noise_scale=jnp.zeros_like(r.noise_scale))
    )
