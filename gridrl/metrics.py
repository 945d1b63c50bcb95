"""Every name that training measures, in one table.

Two tables, each a tuple of frozen rows:

* :data:`ENV_INFO_FIELDS`: what the environment's per-step ``info`` dict holds, with
  units (:data:`ENV_INFO`: just the names, the keys ``GridEnv.step`` must return).
* :data:`METRICS`: every metric of a training run, in the order of a
  ``metrics.jsonl`` line. Each row names its TensorBoard group (``cost`` gives the tag
  ``cost/total_cost``), describes the metric with its unit, and says where it comes
  from: ``"info"`` (the trainer aggregates ``info`` fields over every step of an
  update's rollout: their mean, or the share of steps where one of them is > 0),
  ``"trainer"`` (the trainer computes it per update) or ``"log"`` (the command line
  adds it to each line of the log).

The trainer (:data:`TRAINER_METRICS`, :func:`step_values`), the command line's log,
TensorBoard tags and progress bar, the evaluation plots and the tests all read these
tables. Nothing here imports JAX.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from gridrl.scenarios import TOP_LEVEL

Source = Literal["info", "trainer", "log"]
Aggregate = Literal["mean", "share"]


@dataclass(frozen=True)
class InfoField:
    """One key of the environment's per-step ``info`` dict (one 15-minute step)."""

    name: str
    description: str
    unit: str


@dataclass(frozen=True)
class Metric:
    """One training metric.

    Attributes:
        name: its key in the trainer's metrics and in ``metrics.jsonl``.
        group: TensorBoard group (tag ``group/name``); None: not a TensorBoard scalar.
        description: what it measures, in a few words.
        unit: its unit ("" when dimensionless).
        source: ``"info"``, ``"trainer"`` or ``"log"`` (see the module docstring).
        info: for ``source="info"``, the ``info`` fields it is computed from.
        aggregate: for ``source="info"``: ``"mean"`` (the mean of its one field over
            every step of every environment) or ``"share"`` (the share of those steps
            where any of its fields is > 0).
        progress: format of its entry in the progress bar (``str.format`` of the last
            finite value in a chunk of updates); None: not shown there.
        logged: written to ``metrics.jsonl`` (False only for the divergence guard).
    """

    name: str
    group: str | None
    description: str
    unit: str
    source: Source
    info: tuple[str, ...] = ()
    aggregate: Aggregate | None = None
    progress: str | None = None
    logged: bool = True

    @property
    def tag(self) -> str | None:
        """The TensorBoard tag, ``group/name`` (None when not a TensorBoard scalar)."""
        return None if self.group is None else f"{self.group}/{self.name}"

    @property
    def label(self) -> str:
        """``description (unit)``, e.g. for a plot title."""
        return f"{self.description} ({self.unit})" if self.unit else self.description


ENV_INFO_FIELDS: tuple[InfoField, ...] = (
    InfoField("generation_cost", "fuel cost of the thermal units", "$ per step"),
    InfoField("redispatch_cost", "cost of moving units away from the base dispatch", "$ per step"),
    InfoField("shedding_cost", "cost of the load shed on purpose (deliberate)", "$ per step"),
    InfoField(
        "ens_cost",
        "cost of involuntary loss (cut-off load; after a blackout, the rest of the day)",
        "$ per step",
    ),
    InfoField(
        "overload_penalty",
        "price of the MWh above continuous ratings (and again above emergency ratings)",
        "$ per step",
    ),
    InfoField("trip_penalty", "penalty on the lines tripped by protections", "$ per step"),
    InfoField(
        "total_cost",
        "the six cost terms together (reward = -total_cost / normalizer)",
        "$ per step",
    ),
    InfoField(
        "energy_not_served_mwh",
        "load not served: shed, cut off, and after a blackout the rest of the day",
        "MWh per step",
    ),
    InfoField("deliberate_shed_mwh", "load shed on purpose by the agents", "MWh per step"),
    InfoField(
        "involuntary_ens_mwh",
        "load cut off by trips or splits, and after a blackout the rest of the day",
        "MWh per step",
    ),
    InfoField("trips", "lines tripped by protections, cascades included", "count per step"),
    InfoField(
        "overloaded_lines", "in-service lines above their continuous rating after the step", "count"
    ),
    InfoField(
        "emergency_lines", "in-service lines above their emergency rating after the step", "count"
    ),
    InfoField("max_loading_percent", "highest loading of an in-service line after the step", "%"),
    InfoField(
        "interventions", "generators the safety filter moved by more than 1 kW", "count per step"
    ),
    InfoField(
        "invalid_actions",
        "agents whose action had a non-finite entry (replaced by no change)",
        "count per step",
    ),
    InfoField(
        "invalid_state",
        "1 when the state passed to step held NaN or Inf or a step or day out of range (edited "
        "or damaged): the step started from a fresh day instead; or when the step's own "
        "result was not finite (absurd state or params): the day ended with a reward of 0",
        "0/1",
    ),
    InfoField(
        "invalid_params",
        "1 when params.level was outside the curriculum levels (under jit it cannot be "
        "refused): the nearest level's settings were used",
        "0/1",
    ),
    InfoField("lost_share", "share of the load not served in the step (shed or cut off)", "0..1"),
    InfoField("blackout", "more than half of the load lost: the episode ends", "bool"),
    InfoField("level", "curriculum level of the scenario", f"0..{TOP_LEVEL}"),
    InfoField("step", "steps of the day done, this one included", "1..96"),
)
ENV_INFO: tuple[str, ...] = tuple(f.name for f in ENV_INFO_FIELDS)


def _info(name: str, group: str, description: str, unit: str, **kw) -> Metric:
    """A metric that is the per-step mean of the ``info`` field of the same name."""
    return Metric(name, group, description, unit, "info", (name,), "mean", **kw)


METRICS: tuple[Metric, ...] = (
    # added by the command line to each line of metrics.jsonl
    Metric("update", None, "updates done", "count", "log"),
    Metric("env_steps", None, "environment steps done, all environments together", "steps", "log"),
    Metric("time", None, "wall-clock time the line was written", "s since 1970", "log"),
    Metric(
        "steps_per_s",
        "perf",
        "training throughput, updates included",
        "env steps/s",
        "log",
        progress="{:,.0f} steps/s",
    ),
    # computed by the trainer, one value per update
    Metric(
        "return",
        "episode",
        "return of the episodes ended in the rollout, NaN if none",
        "sum of rewards",
        "trainer",
        progress="return {:.1f}",
    ),
    Metric(
        "episode_cost",
        "episode",
        "cost of the episodes ended in the rollout, NaN if none",
        "$ per episode",
        "trainer",
    ),
    Metric(
        "episodes", "episode", "episodes that ended in the update's rollout", "count", "trainer"
    ),
    Metric("reward", "reward", "team reward per step (-total cost / normalizer)", "", "trainer"),
    _info("total_cost", "cost", "total cost", "$ per step", progress="cost/step {:,.0f}$"),
    _info("generation_cost", "cost", "generation cost", "$ per step"),
    _info("redispatch_cost", "cost", "redispatch cost", "$ per step"),
    _info("shedding_cost", "cost", "cost of deliberate load shedding", "$ per step"),
    _info("overload_penalty", "cost", "overload penalty", "$ per step"),
    _info("ens_cost", "cost", "cost of energy not served", "$ per step"),
    _info("trip_penalty", "cost", "line-trip penalty", "$ per step"),
    _info("energy_not_served_mwh", "safety", "energy not served", "MWh per step"),
    _info("deliberate_shed_mwh", "safety", "load shed on purpose", "MWh per step"),
    _info("involuntary_ens_mwh", "safety", "involuntary energy not served", "MWh per step"),
    _info("max_loading_percent", "safety", "highest line loading", "%"),
    _info("trips", "safety", "line trips", "count per step"),
    Metric(
        "overload_share",
        "safety",
        "overloaded line",
        "share of steps",
        "info",
        ("overloaded_lines",),
        "share",
    ),
    Metric(
        "emergency_share",
        "safety",
        "line above its emergency rating",
        "share of steps",
        "info",
        ("emergency_lines",),
        "share",
    ),
    Metric(
        "violation_rate",
        "safety",
        "violation rate, overload or trip",
        "share of steps",
        "info",
        ("overloaded_lines", "trips"),
        "share",
        progress="viol {:.1%}",
    ),
    _info("interventions", "safety", "safety-filter interventions", "count per step"),
    Metric(
        "level",
        "curriculum",
        "curriculum level",
        "0..4",
        "trainer",
        progress="level {:.0f}",
    ),
    Metric("policy_loss", "loss", "clipped surrogate loss, agent groups summed", "", "trainer"),
    Metric("value_loss", "loss", "clipped value loss on normalized returns", "", "trainer"),
    Metric("entropy", "loss", "entropy of the pre-tanh actions, groups summed", "nats", "trainer"),
    Metric("approx_kl", "loss", "approximate KL(old || new policy), group mean", "nats", "trainer"),
    Metric(
        "clip_fraction",
        "loss",
        "share of samples whose probability ratio left the clip range, group mean",
        "0..1",
        "trainer",
    ),
    Metric("learning_rate", "loss", "Adam learning rate of the update", "", "trainer"),
    Metric(
        "finite",
        None,
        "1 when the losses and parameters are finite (the divergence guard)",
        "0/1",
        "trainer",
        logged=False,
    ),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
INFO_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS if m.source == "info")
TRAINER_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.source != "log")
"""What ``Trainer.run`` returns, one value per update each."""
LOG_FIELDS: tuple[str, ...] = tuple(m.name for m in METRICS if m.logged)
"""The fields of a ``metrics.jsonl`` line, in order."""


def metric(name: str) -> Metric:
    """The row of ``name``; a KeyError lists the known names."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no metric {name!r}; metrics are {', '.join(BY_NAME)}") from None


def step_values(info: dict) -> dict:
    """Per-step values of the ``"info"`` metrics, as float32.

    Args:
        info: the environment's info dict; each field of any shape ``S`` (e.g. ``(E,)``
            under ``vmap``).

    Returns:
        ``{name: (S,) float32}`` for each of :data:`INFO_METRICS`: the field itself
        (``"mean"``), or 1.0 where any of its fields is > 0 (``"share"``). Their means
        over steps and environments are the metrics.
    """
    out = {}
    for m in INFO_METRICS:
        if m.aggregate == "mean":
            out[m.name] = info[m.info[0]].astype(np.float32)
        else:
            hit = info[m.info[0]] > 0
            for key in m.info[1:]:
                hit = hit | (info[key] > 0)
            out[m.name] = hit.astype(np.float32)
    return out


def _check() -> None:
    """The tables are consistent: unique names, info metrics built from real fields."""
    for names, what in ((ENV_INFO, "ENV_INFO"), ([m.name for m in METRICS], "METRICS")):
        if len(set(names)) != len(names):
            raise ValueError(f"gridrl.metrics: {what} repeats a name")
    for m in METRICS:
        if (m.source == "info") != (m.aggregate is not None and bool(m.info)):
            raise ValueError(f"gridrl.metrics: {m.name}: only info metrics have info fields")
        if m.aggregate == "mean" and len(m.info) != 1:
            raise ValueError(f"gridrl.metrics: {m.name}: a mean reads one info field")
        missing = set(m.info) - set(ENV_INFO)
        if missing:
            raise ValueError(f"gridrl.metrics: {m.name} reads {missing}, not in ENV_INFO")


_check()
