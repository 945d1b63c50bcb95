"""The training configuration: a frozen dataclass, loadable from TOML and overridable by flags.

Every field has a default that trains a useful ieee118 policy on a 2-core CPU in under
15 minutes; :data:`HELP` documents each one (``python -m gridrl.train --help`` prints it).
The scale of a batch depends on the hardware: ``num_envs`` and ``num_minibatches``
default to None, which :meth:`TrainConfig.for_backend` (called by the command line and
by ``Trainer``) replaces by the backend's value in :data:`SCALE_DEFAULTS`; a value set
by a flag, a config file or in code is kept. :meth:`TrainConfig.validate` checks the
whole configuration before anything compiles, naming the offending flag.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from gridrl.errors import GridRLError
from gridrl.scenarios import TOP_LEVEL

#: A training configuration is a few hundred bytes; far more is no configuration.
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(GridRLError, ValueError):
    """An invalid training configuration; the message names the flag."""


#: The range of --init-log-std: the actions are tanh-squashed Gaussians, so a standard
#: deviation of e^2 (7.4) before tanh already saturates them, and e^-10 is no exploration.
MIN_INIT_LOG_STD, MAX_INIT_LOG_STD = -10.0, 2.0


@dataclass(frozen=True)
class ScaleDefaults:
    """The batch shape a backend trains with when the user sets none.

    Attributes:
        num_envs: parallel environments.
        num_minibatches: minibatches per epoch (each holds every environment and
            ``rollout_steps / num_minibatches`` steps of the rollout).
    """

    num_envs: int
    num_minibatches: int


# CPU: 256 x 32 = 8,192 steps per update, minibatches of 2,048 samples (the throughput
# benchmark's configuration). Accelerators: 4,096 environments keep the device busy
# (131,072 steps per update); 8 minibatches of 4 steps hold 16,384 samples each, still
# a big batch, with twice the CPU's gradient steps per update because the same
# --total-steps give 16 times fewer updates.
SCALE_DEFAULTS: dict[str, ScaleDefaults] = {
    "cpu": ScaleDefaults(num_envs=256, num_minibatches=4),
    "gpu": ScaleDefaults(num_envs=4096, num_minibatches=8),
    "tpu": ScaleDefaults(num_envs=4096, num_minibatches=8),
}
BACKEND_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ScaleDefaults))
"""The TrainConfig fields whose default (None) is the backend's :data:`SCALE_DEFAULTS`."""


@dataclass(frozen=True)
class TrainConfig:
    # problem
    case: str = "ieee118"
    method: str = "dc"
    n_areas: int = 4
    replay_noise: float = 0.0
    # scale
    total_steps: int = 8_000_000
    num_envs: int | None = None  # None: SCALE_DEFAULTS[backend].num_envs
    rollout_steps: int = 32
    devices: int = 0
    # PPO
    update_epochs: int = 4
    num_minibatches: int | None = None  # None: SCALE_DEFAULTS[backend].num_minibatches
    learning_rate: float = 1e-3
    anneal_lr: bool = True
    gamma: float = 0.98
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64
    critic_hidden: int = 64
    init_log_std: float = -1.0
    value_norm_beta: float = 0.99
    learned_safety: bool = True
    # curriculum
    curriculum: bool = True
    start_level: int = 0
    max_level: int = TOP_LEVEL
    advance_below: float = 0.05
    min_updates_per_level: int = 20
    # run
    seed: int = 0
    updates_per_chunk: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    eval_episodes: int = 100
    eval_seed: int = 1_000_000
    eval_level: int = TOP_LEVEL

    # -- derived ---------------------------------------------------------------------
    @property
    def batch_steps(self) -> int:
        """Environment steps per update (all environments, all devices)."""
        if self.num_envs is None:
            raise ConfigError(
                "--num-envs: left to the backend (None); resolve the configuration with "
                "config.for_backend(platform) first (a Trainer's .config is resolved)"
            )
        return self.num_envs * self.rollout_steps

    @property
    def num_updates(self) -> int:
        return max(1, self.total_steps // self.batch_steps)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> TrainConfig:
        if not isinstance(values, dict):  # a list or a number raised AttributeError
            raise ConfigError(
                f"{source}: options must be a table of names and values, got "
                f"{type(values).__name__}"
            )
        known = {f.name: f for f in fields(cls)}
        out = {}
        for name, value in values.items():
            if not isinstance(name, str):  # YAML '1: 2' raised AttributeError
                raise ConfigError(f"{source}: option names must be strings, got {name!r}")
            key = name.replace("-", "_")
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown option {name!r}; options are {', '.join(sorted(known))}"
                )
            out[key] = _coerce(key, value, known[key].type, source)
        return cls(**out)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Options from a TOML file (or YAML: ``.yaml``/``.yml``), at the top level or
        under a ``train`` table."""
        path = Path(path)
        try:
            info = os.stat(path)
            # a FIFO blocked open() for ever and /dev/zero was read until memory ran out
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"--config: {path} is not a regular file of at most {MAX_CONFIG_BYTES:,} bytes"
                )
            with open(path, encoding="utf-8") as f:
                text = f.read(MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:
            raise ConfigError(f"--config: no such file {path}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"--config: {path} is not UTF-8 text ({exc})") from None
        except OSError as exc:
            raise ConfigError(f"--config: {path} cannot be read ({exc})") from None
        if path.suffix in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"--config: {path} is not valid YAML: {exc}") from None
        else:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--config: {path} must hold a table of options")
        data = data.get("train", data)
        if not isinstance(data, dict):  # 'train = 5' raised AttributeError
            raise ConfigError(f"--config: {path}: 'train' must be a table of options")
        return cls.from_dict(data, source=str(path))

    from_toml = from_file

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def for_backend(self, platform: str) -> TrainConfig:
        """This configuration with the fields left to the backend (None) set from
        ``SCALE_DEFAULTS[platform]`` (``platform``: ``jax.default_backend()`` or a
        device's ``.platform``: ``"cpu"``, ``"gpu"`` or ``"tpu"``). Fields already set
        are kept, so a flag or a config-file value always wins; a resolved
        configuration comes back unchanged."""
        unset = [name for name in BACKEND_FIELDS if getattr(self, name) is None]
        if not unset:
            return self
        if platform not in SCALE_DEFAULTS:
            flags = " and ".join("--" + name.replace("_", "-") for name in unset)
            raise ConfigError(
                f"{flags}: no default for the {platform!r} backend (defaults exist for "
                f"{', '.join(SCALE_DEFAULTS)}); set {flags}"
            )
        defaults = SCALE_DEFAULTS[platform]
        resolved = self.replace(**{name: getattr(defaults, name) for name in unset})
        if "num_minibatches" in unset and self.rollout_steps % resolved.num_minibatches:
            raise ConfigError(
                f"--num-minibatches: the {platform} default ({resolved.num_minibatches}) does "
                f"not divide --rollout-steps ({self.rollout_steps}); set --num-minibatches"
            )
        return resolved

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # -- validation -------------------------------------------------------------------
    def validate(self, n_devices: int | None = None) -> TrainConfig:
        """Check every field (and the batch against ``n_devices``, all processes together);
        raise :class:`ConfigError` naming the flag. Checks that need a field left to the
        backend (None) wait until the configuration is resolved (:meth:`for_backend`)."""

        def need(ok, flag, message):
            if not ok:
                raise ConfigError(f"--{flag.replace('_', '-')}: {message}")

        for name in (
            "total_steps",
            "num_envs",
            "rollout_steps",
            "update_epochs",
            "num_minibatches",
            "hidden",
            "critic_hidden",
            "n_areas",
            "updates_per_chunk",
            "checkpoint_every",
            "keep_checkpoints",
            "eval_episodes",
            "min_updates_per_level",
        ):
            v = getattr(self, name)
            need(v is None or v >= 1, name, f"must be >= 1, got {v}")
            # sizes and counts are int32 on the device (10**30 overflowed building arrays)
            need(v is None or v < 2**31, name, f"must be below 2**31, got {v}")
        need(self.devices >= 0, "devices", f"must be >= 0 (0 = all), got {self.devices}")
        for name in ("seed", "eval_seed"):  # a JAX key takes an unsigned 32-bit seed
            v = getattr(self, name)
            need(0 <= v < 2**32, name, f"must be an integer in 0..{2**32 - 1}, got {v}")
        need(self.method in ("dc", "ac"), "method", f"must be 'dc' or 'ac', got {self.method!r}")
        need(
            0 < self.learning_rate < math.inf,  # inf trained an update, then diverged
            "learning_rate",
            f"must be a finite number > 0, got {self.learning_rate}",
        )
        for name in ("gamma", "gae_lambda", "value_norm_beta"):
            v = getattr(self, name)
            need(0 < v <= 1, name, f"must be in (0, 1], got {v}")
        need(0 < self.clip_eps < 1, "clip_eps", f"must be in (0, 1), got {self.clip_eps}")
        for name in ("ent_coef", "vf_coef"):
            v = getattr(self, name)
            need(0 <= v < math.inf, name, f"must be a finite number >= 0, got {v}")
        need(  # inf: no clipping
            self.max_grad_norm >= 0, "max_grad_norm", f"must be >= 0, got {self.max_grad_norm}"
        )
        need(  # NaN or 1e10 trained, then diverged with a message about the learning rate
            MIN_INIT_LOG_STD <= self.init_log_std <= MAX_INIT_LOG_STD,
            "init_log_std",
            f"must be a number in {MIN_INIT_LOG_STD:g}..{MAX_INIT_LOG_STD:g}, got "
            f"{self.init_log_std}",
        )
        from gridrl.env import MAX_REPLAY_NOISE

        need(
            0 <= self.replay_noise <= MAX_REPLAY_NOISE,  # NaN fails both comparisons
            "replay_noise",
            f"must be a number in 0..{MAX_REPLAY_NOISE:g}, got {self.replay_noise}",
        )
        need(
            not self.replay_noise or self.case.startswith("grid2op:"),
            "replay_noise",
            f"applies to recorded days (--case grid2op:...), not to {self.case!r}",
        )
        for name in ("start_level", "max_level", "eval_level"):
            v = getattr(self, name)
            need(0 <= v <= TOP_LEVEL, name, f"must be a curriculum level 0..{TOP_LEVEL}, got {v}")
        need(
            self.start_level <= self.max_level,
            "start_level",
            f"{self.start_level} is above --max-level {self.max_level}",
        )
        need(
            0 <= self.advance_below <= 1,
            "advance_below",
            f"is a violation rate in [0, 1], got {self.advance_below}",
        )
        need(
            self.num_minibatches is None or self.rollout_steps % self.num_minibatches == 0,
            "num_minibatches",
            f"must divide --rollout-steps ({self.rollout_steps}); minibatches split the "
            f"rollout along time, every environment in each",
        )
        if self.num_envs is None:
            return self
        need(
            self.total_steps >= self.batch_steps,
            "total_steps",
            f"{self.total_steps} is less than one update "
            f"(--num-envs {self.num_envs} x --rollout-steps {self.rollout_steps} = {self.batch_steps})",
        )
        if n_devices is not None:
            need(
                self.num_envs % n_devices == 0,
                "num_envs",
                f"{self.num_envs} environments cannot be split evenly over {n_devices} "
                f"device(s); use a multiple of {n_devices}",
            )
        return self


HELP = {
    "case": "grid to operate: a gridphysics case name (ieee14, ieee118, ...), a MATPOWER .m "
    "path, or grid2op:<environment name or directory> (its grid and recorded days; names of "
    "environments shipped with grid2op need the [grid2op] extra)",
    "method": "physics of the environment: dc (fast) or ac",
    "n_areas": "operational areas, one operational agent each",
    "replay_noise": "grid2op: cases: multiply the training days' recorded loads by 1 + this "
    "times the curriculum level's AR(1) load noise (3-4 %% std at levels 2-4); 0 replays them "
    "exactly; evaluation never adds noise",
    "total_steps": "environment steps to train for (all environments together)",
    "num_envs": "parallel environments (all devices and processes together); the default "
    "depends on the backend",
    "rollout_steps": "steps per environment between updates",
    "devices": "local devices to use (0 = all); environments are split evenly over them",
    "update_epochs": "PPO epochs over each rollout",
    "num_minibatches": "minibatches per epoch (must divide --rollout-steps; each holds every "
    "environment); the default depends on the backend",
    "learning_rate": "Adam learning rate",
    "anneal_lr": "decay the learning rate linearly to 0",
    "gamma": "discount factor",
    "gae_lambda": "GAE lambda",
    "clip_eps": "PPO clipping range",
    "ent_coef": "entropy bonus",
    "vf_coef": "value-loss weight",
    "max_grad_norm": "global gradient-norm clip",
    "hidden": "width of the actors' two hidden layers",
    "critic_hidden": "width of the centralized critic's two hidden layers",
    "init_log_std": "initial log standard deviation of the actions (before tanh)",
    "value_norm_beta": "decay of the running return statistics used to normalize values",
    "learned_safety": "let the safety agent add a learned residual to the filtered dispatch",
    "curriculum": "advance the scenario level when the violation rate is low",
    "start_level": f"first curriculum level (0 = flat load ... {TOP_LEVEL} = stressed peak days)",
    "max_level": "last curriculum level",
    "advance_below": "violation rate (share of steps with an overloaded line or a trip) under which the level advances",
    "min_updates_per_level": "updates spent at a level before it may advance",
    "seed": "random seed",
    "updates_per_chunk": "updates per compiled call between progress/log/checkpoint I/O",
    "checkpoint_every": "updates between checkpoints",
    "keep_checkpoints": "checkpoints kept (the newest)",
    "eval_episodes": "held-out days in the final evaluation report",
    "eval_seed": "seed of the held-out evaluation days (training never uses it)",
    "eval_level": "curriculum level of the evaluation days",
}


def backend_default_text(name: str) -> str:
    """``"256 on cpu, 4096 on gpu, 4096 on tpu"``: the backend defaults of a field."""
    return ", ".join(f"{getattr(d, name)} on {p}" for p, d in SCALE_DEFAULTS.items())


def type_name(annotation) -> str:
    """``"int"`` for ``int``, ``"int"`` and ``"int | None"`` (a field's base type)."""
    text = annotation if isinstance(annotation, str) else annotation.__name__
    return text.removesuffix(" | None")


def _coerce(name, value, annotation, source):
    if value is None and str(annotation).endswith("| None"):
        return None
    kind = {"str": str, "int": int, "float": float, "bool": bool}[type_name(annotation)]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    try:  # OverflowError: a float from a 400-digit int, an int from '1e400'
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, str) and kind is not str:
            value = kind(float(value)) if kind is int and "e" in value.lower() else kind(value)
    except (ValueError, OverflowError):
        shown = value if len(str(value)) <= 40 else f"{str(value)[:37]}..."
        raise ConfigError(
            f"{source}: {name} must be a finite {kind.__name__}, got {shown!r}"
        ) from None
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise ConfigError(f"{source}: {name} must be {kind.__name__}, got {value!r}")
    return value
