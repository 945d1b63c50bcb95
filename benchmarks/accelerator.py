"""One-command accelerator check: ``python -m benchmarks.accelerator [--quick] [--out FILE]``.

1. Correctness: the default backend (the accelerator, when there is one) against the CPU
   backend in the same process, on the same inputs: DC ``gridphysics.solve`` on ieee118
   (a batch of random load scenarios), AC ``solve(net, "ac")`` (one solve and a small
   batch), ``OutageFlows.build(net).flows`` on a batch with random outages (islands
   included), a few batched ``env.step`` with random actions (float32), and one MAPPO
   training update. Each check prints its max abs difference and PASS or FAIL.
2. Throughput at 4,096 and 16,384 environments: env steps/s with random actions at
   levels 0, 2 and 4 and with do-nothing at level 0; MAPPO training env steps/s at
   level 3 (two timed updates after a warm-up one).
3. A markdown table of every figure, with the device and the jax version, and the same
   as JSON in ``--out``.

About 5 minutes on one GPU (mostly compilation). ``--quick`` uses small sizes (256
environments) so that a CPU-only machine, where the CPU backend is compared with
itself, finishes in a few minutes. Each check and measurement runs on its own: one
failure is reported and the rest still run. Exit status: 1 when a correctness check
fails (or raises), 2 when only a throughput measurement raised, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gridphysics as gp
from benchmarks.workloads import Policy, env_runner, time_env_steps, time_training
from gridrl.config import TrainConfig
from gridrl.env import make
from gridrl.mappo import Trainer
from gridrl.metrics import TRAINER_METRICS

CASE = "ieee118"
ENV_TARGET = 10_000_000  # env steps/s, every level, one GPU
TRAIN_TARGET = 1_000_000  # training env steps/s at level 3, one GPU
TRAIN_LEVEL = 3
ENV_WORKLOADS: tuple[tuple[Policy, int], ...] = (
    ("do-nothing", 0),
    ("random", 0),
    ("random", 2),
    ("random", 4),
)


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of a run (``FULL`` on an accelerator, ``QUICK`` for a CPU smoke run)."""

    dc_scenarios: int
    ac_scenarios: int
    outage_scenarios: int
    check_envs: int
    check_steps: int
    check_train_envs: int
    env_batches: tuple[int, ...]
    env_steps: int
    env_repeats: int
    train_batches: tuple[int, ...]
    train_updates: int  # timed, one per call after a warm-up update


FULL = Sizes(
    dc_scenarios=64,
    ac_scenarios=16,
    outage_scenarios=1024,
    check_envs=1024,
    check_steps=4,
    check_train_envs=256,
    env_batches=(4096, 16384),
    env_steps=20,
    env_repeats=2,
    train_batches=(4096, 16384),
    train_updates=2,
)
QUICK = Sizes(
    dc_scenarios=64,
    ac_scenarios=4,
    outage_scenarios=256,
    check_envs=256,  # the throughput rollout's shape: one compilation for both
    check_steps=10,
    check_train_envs=64,
    env_batches=(256,),
    env_steps=10,
    env_repeats=2,
    train_batches=(256,),
    train_updates=1,
)


@dataclass
class Check:
    """One correctness check: default backend against the CPU backend."""

    name: str
    passed: bool
    max_abs_diff: float | None
    tolerance: str
    detail: str
    seconds: float


@dataclass
class Figure:
    """One throughput measurement (``steps_per_second`` None when it raised or was skipped)."""

    workload: str
    level: int
    n_envs: int
    steps_per_second: float | None
    target: float
    warmup_seconds: float | None
    note: str

    @property
    def met(self) -> bool | None:
        return None if self.steps_per_second is None else self.steps_per_second >= self.target


# -- helpers ------------------------------------------------------------------------------
def to_numpy(tree: Any) -> Any:
    """A pytree's leaves as numpy arrays (typed PRNG keys as their raw data)."""

    def leaf(x: Any) -> np.ndarray:
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return jax.tree.map(leaf, jax.device_get(tree))


def run_on(device: jax.Device, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with ``args`` placed on ``device`` and ``device`` the default for
    arrays created inside; the result as numpy."""
    with jax.default_device(device):
        placed = jax.device_put(args, device)
        return to_numpy(fn(*placed))


def abs_diff(a: Any, b: Any) -> np.ndarray:
    """Elementwise |a - b| as float64; equal values (infinities, NaN against NaN) give 0
    and a non-finite value against a different one gives inf."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):
        d = np.where(same, 0.0, np.abs(a - b))
    return np.where(np.isnan(d), np.inf, d)


def max_abs_diff(a: Any, b: Any) -> float:
    return float(abs_diff(a, b).max(initial=0.0))


def field_diffs(ref: Any, out: Any, names: tuple[str, ...]) -> dict[str, float]:
    return {name: max_abs_diff(getattr(ref, name), getattr(out, name)) for name in names}


def diff_text(diffs: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())


def fields_check(name: str, ref: Any, out: Any, fields: tuple[str, ...], tol: float) -> Check:
    """Every field's max abs difference within ``tol``, and equal ``converged`` flags."""
    diffs = field_diffs(ref, out, fields)
    worst = max(diffs.values())
    same_flags = bool(np.array_equal(ref.converged, out.converged))
    converged = bool(np.all(ref.converged))
    detail = diff_text(diffs) + f"; converged: cpu {converged}, flags equal {same_flags}"
    passed = worst <= tol and same_flags and converged
    return Check(name, passed, worst, f"{tol:g}", detail, 0.0)


# -- correctness checks --------------------------------------------------------------------
def check_dc(ref: jax.Device, dev: jax.Device, sizes: Sizes) -> Check:
    net = gp.load_case(CASE)
    scales = np.random.default_rng(0).normal(1.0, 0.1, (sizes.dc_scenarios, net.n_load))
    solve = jax.jit(
        jax.vmap(lambda n, s: gp.solve(n.with_loads(p_mw=n.load.p_mw * s)), in_axes=(None, 0))
    )
    a, b = run_on(ref, solve, net, scales), run_on(dev, solve, net, scales)
    name = f"DC solve {CASE}, {sizes.dc_scenarios} load scenarios (float64)"
    return fields_check(name, a, b, ("va_rad", "p_from_mw", "gen_p_mw"), 1e-6)


def check_ac_single(ref: jax.Device, dev: jax.Device, sizes: Sizes) -> Check:
    net = gp.load_case(CASE)

    def solve(n: gp.Network) -> gp.PowerFlowResult:
        return gp.solve(n, "ac")

    a, b = run_on(ref, solve, net), run_on(dev, solve, net)
    fields = ("vm_pu", "va_rad", "p_from_mw", "q_from_mvar")
    return fields_check(f"AC solve {CASE}, one (float64)", a, b, fields, 1e-5)


def check_ac_batch(ref: jax.Device, dev: jax.Device, sizes: Sizes) -> Check:
    net = gp.load_case(CASE)
    scales = np.random.default_rng(1).normal(1.0, 0.05, (sizes.ac_scenarios, net.n_load))
    solve = jax.jit(
        jax.vmap(lambda n, s: gp.solve(n.with_loads(p_mw=n.load.p_mw * s), "ac"), in_axes=(None, 0))
    )
    a, b = run_on(ref, solve, net, scales), run_on(dev, solve, net, scales)
    fields = ("vm_pu", "va_rad", "p_from_mw", "q_from_mvar")
    name = f"AC solve {CASE}, {sizes.ac_scenarios} load scenarios (float64)"
    return fields_check(name, a, b, fields, 1e-5)


def check_outage_flows(ref: jax.Device, dev: jax.Device, sizes: Sizes) -> Check:
    net = gp.load_case(CASE)
    base = np.asarray(gp.solve(net).p_bus_mw)
    rng = np.random.default_rng(2)
    n = sizes.outage_scenarios
    injection = base[None, :] * rng.normal(1.0, 0.1, (n, net.n_bus))
    status = np.ones((n, net.n_branch))
    for i, k in enumerate(rng.integers(0, 9, n)):  # 0..8 outages, bridges included
        status[i, rng.choice(net.n_branch, k, replace=False)] = 0.0
    flows = jax.jit(jax.vmap(lambda e, p, s: e.flows(p, s), in_axes=(None, 0, 0)))

    def run(network: gp.Network, p: jax.Array, s: jax.Array) -> gp.OutageFlowResult:
        return flows(gp.OutageFlows.build(network), p, s)

    a, b = run_on(ref, run, net, injection, status), run_on(dev, run, net, injection, status)
    tol = 1e-6
    diff = max_abs_diff(a.p_from_mw, b.p_from_mw)
    islands = int(np.sum(a.bus_isolated.any(axis=1)))
    same = bool(np.array_equal(a.bus_isolated, b.bus_isolated)) and bool(
        np.array_equal(a.exact, b.exact)
    )
    detail = (
        f"p_from_mw {diff:.2e}; isolated buses and exact flags equal: {same}; "
        f"{islands} of {n} scenarios island buses"
    )
    name = f"OutageFlows {CASE}, {n} scenarios with 0-8 outages (float64)"
    return Check(name, diff <= tol and same, diff, f"{tol:g}", detail, 0.0)


def check_env_step(ref: jax.Device, dev: jax.Device, sizes: Sizes) -> Check:
    """Float32: an environment counts as diverged when its branch statuses, overload
    counters or clock differ after the rollout (a trip or an episode end decided within
    rounding of a threshold); at most 1 % may, and the others' rewards, first
    observations and final states must agree to 1e-3 relative. The rollout is the
    throughput benchmark's (``benchmarks.workloads``)."""
    _, params = make(CASE, level=4)
    n = sizes.check_envs
    runner = env_runner(CASE, n, sizes.check_steps, "random")

    def run(params: Any, key: jax.Array) -> Any:
        k_reset, k_run = jax.random.split(key)
        obs, state = runner.reset(jax.random.split(k_reset, n), params)
        final, rewards = runner.rollout(params, state, k_run)
        return obs, final, rewards

    key = jax.random.key(3)
    obs_a, final_a, rew_a = run_on(ref, run, params, key)
    obs_b, final_b, rew_b = run_on(dev, run, params, key)
    diverged = np.zeros(n, bool)
    for name in ("branch_on", "repair", "t"):
        a, b = getattr(final_a, name), getattr(final_b, name)
        diverged |= (a != b).reshape(n, -1).any(axis=1)
    keep = ~diverged

    def rel(a: np.ndarray, b: np.ndarray, env_axis: int = 0) -> float:
        """Max relative difference over the environments that did not diverge."""
        d = abs_diff(a, b) / np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
        d = np.where(np.isfinite(a) & np.isfinite(b), d, abs_diff(a, b))
        return float(np.moveaxis(d, env_axis, 0)[keep].max(initial=0.0))

    floats = [
        (a, b)
        for a, b in zip(jax.tree.leaves(final_a), jax.tree.leaves(final_b), strict=True)
        if np.issubdtype(a.dtype, np.floating) and a.ndim >= 1 and a.shape[0] == n
    ]
    rel_worst = max(
        rel(rew_a, rew_b, env_axis=1),
        *(rel(obs_a[k], obs_b[k]) for k in obs_a),
        *(rel(a, b) for a, b in floats),
    )
    reward_abs = float(np.moveaxis(abs_diff(rew_a, rew_b), 1, 0)[keep].max(initial=0.0))
    share = float(diverged.mean())
    non_finite = int(np.sum(~np.isfinite(rew_a)))
    tol = 1e-3
    detail = (
        f"max rel diff {rel_worst:.2e} (rewards, first observations, final states); "
        f"diverged envs {int(diverged.sum())} of {n} ({share:.1%}, <= 1% allowed); "
        f"non-finite rewards on cpu: {non_finite}"
    )
    name = (
        f"env.step {CASE} level 4, {n} envs x {sizes.check_steps} steps, random actions (float32)"
    )
    return Check(name, rel_worst <= tol and share <= 0.01, reward_abs, f"{tol:g} rel", detail, 0.0)


_TRAINERS: dict[tuple[int, ...], Trainer] = {}


def check_training(ref: jax.Device, dev: jax.Device, sizes: Sizes) -> Check:
    """One update at level 0 (few threshold effects: differences are rounding, not a
    flipped trip). Metrics must agree to 5 % relative + 1e-3, parameters to 0.05 (Adam
    moves each by about the learning rate per step, whatever its gradient's size)."""
    config = TrainConfig(
        start_level=0,
        curriculum=False,
        num_envs=sizes.check_train_envs,
        num_minibatches=4,
        seed=0,
    )

    def one_update(device: jax.Device) -> tuple[dict, dict]:
        trainer = _TRAINERS.get((device.id,))
        if trainer is None:  # one trainer (one compilation) per device
            trainer = _TRAINERS[(device.id,)] = Trainer(config, devices=[device])
        state = trainer.init(jax.random.PRNGKey(config.seed))
        state, metrics = trainer.run(state, 1)
        return to_numpy(metrics), to_numpy(state.shared.params)

    (m_a, p_a), (m_b, p_b) = one_update(ref), one_update(dev)
    bad = []
    for k in TRAINER_METRICS:
        a, b = float(m_a[k][0]), float(m_b[k][0])
        if not abs_diff(a, b) <= 0.05 * max(abs(a), abs(b)) + 1e-3:
            bad.append(f"{k} {a:.4g} vs {b:.4g}")
    metric_diff = max(max_abs_diff(m_a[k], m_b[k]) for k in TRAINER_METRICS)
    param_diff = max(
        (
            max_abs_diff(a, b)
            for a, b in zip(jax.tree.leaves(p_a), jax.tree.leaves(p_b), strict=True)
        ),
        default=0.0,
    )
    finite = float(m_a["finite"][0]) == 1.0 and float(m_b["finite"][0]) == 1.0
    detail = (
        f"policy_loss {float(m_a['policy_loss'][0]):.4g} vs {float(m_b['policy_loss'][0]):.4g}, "
        f"value_loss {float(m_a['value_loss'][0]):.4g} vs {float(m_b['value_loss'][0]):.4g}; "
        f"params max abs diff {param_diff:.2e}; finite {finite}"
        + (f"; outside tolerance: {', '.join(bad)}" if bad else "")
    )
    name = f"MAPPO update {CASE} level 0, {sizes.check_train_envs} envs x 32 steps"
    passed = not bad and param_diff <= 0.05 and finite
    return Check(name, passed, metric_diff, "5% rel + 1e-3; params 0.05", detail, 0.0)


CHECKS: tuple[Callable[[jax.Device, jax.Device, Sizes], Check], ...] = (
    check_dc,
    check_ac_single,
    check_ac_batch,
    check_outage_flows,
    check_env_step,
    check_training,
)


def run_checks(sizes: Sizes) -> list[Check]:
    ref, dev = jax.devices("cpu")[0], jax.devices()[0]
    results = []
    for check in CHECKS:
        start = time.perf_counter()
        try:
            result = check(ref, dev, sizes)
        except Exception as exc:  # one failure must not hide the rest
            traceback.print_exc()
            name = check.__name__.removeprefix("check_")
            result = Check(name, False, None, "-", f"raised {type(exc).__name__}: {exc}", 0.0)
        result.seconds = time.perf_counter() - start
        print(
            f"[{'PASS' if result.passed else 'FAIL'}] {result.name}: max abs diff "
            f"{_num(result.max_abs_diff)} (tol {result.tolerance}); {result.detail} "
            f"[{result.seconds:.1f} s]",
            flush=True,
        )
        results.append(result)
    return results


# -- throughput ------------------------------------------------------------------------------
def run_throughput(sizes: Sizes, deadline: float) -> list[Figure]:
    jobs: list[tuple[str, int, int, Callable[[], Any]]] = []
    for n in sizes.env_batches:
        for policy, level in ENV_WORKLOADS:
            jobs.append(
                (
                    f"env step, {policy} actions",
                    level,
                    n,
                    lambda p=policy, lv=level, n=n: time_env_steps(
                        lv, n, sizes.env_steps, p, repeats=sizes.env_repeats, case=CASE
                    ),
                )
            )
    for n in sizes.train_batches:
        config = TrainConfig(start_level=TRAIN_LEVEL, curriculum=False, num_envs=n, case=CASE)
        jobs.append(
            (
                "MAPPO training (env steps incl. updates)",
                TRAIN_LEVEL,
                n,
                lambda c=config: time_training(c, 1, repeats=sizes.train_updates),
            )
        )
    figures = []
    for workload, level, n, job in jobs:
        target = TRAIN_TARGET if workload.startswith("MAPPO") else ENV_TARGET
        figure = Figure(workload, level, n, None, target, None, "")
        if time.perf_counter() > deadline:
            figure.note = "skipped: --budget spent"
        else:
            try:
                timing = job()
                figure.steps_per_second = timing.steps_per_second
                figure.warmup_seconds = timing.compile_seconds
                if not timing.finite:
                    figure.note = "non-finite rewards or losses"
            except Exception as exc:  # one failure must not hide the rest
                traceback.print_exc()
                figure.note = f"raised {type(exc).__name__}: {exc}"
        print(
            f"{workload}, level {level}, {n:,} envs: {_rate(figure.steps_per_second)} steps/s "
            f"(warm-up {_num(figure.warmup_seconds, '.1f')} s) {figure.note}",
            flush=True,
        )
        figures.append(figure)
    return figures


# -- report -----------------------------------------------------------------------------------
def _num(x: float | None, fmt: str = ".2e") -> str:
    return "-" if x is None else format(x, fmt)


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def markdown(info: dict, checks: list[Check], figures: list[Figure]) -> str:
    lines = [
        f"# Accelerator check: {info['device_kind']} ({info['platform']}), "
        f"jax {info['jax_version']}{', --quick' if info['quick'] else ''}",
        "",
        f"Reference: {info['reference']}. Wall time {info['seconds']:.0f} s.",
        "",
        "| check | max abs diff | tolerance | result | detail |",
        "|---|---:|---|---|---|",
    ]
    for c in checks:
        lines.append(
            f"| {c.name} | {_num(c.max_abs_diff)} | {c.tolerance} | "
            f"{'PASS' if c.passed else 'FAIL'} | {c.detail} |"
        )
    lines += [
        "",
        "| workload | level | envs | steps/s | warm-up s | target (one GPU) | |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for f in figures:
        met = {None: "-", True: "met", False: "NOT met"}[f.met]
        status = f"{met} {f.note}".strip()
        lines.append(
            f"| {f.workload} | {f.level} | {f.n_envs:,} | {_rate(f.steps_per_second)} | "
            f"{_num(f.warmup_seconds, '.1f')} | >= {f.target:,.0f} | {status} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accelerator",
        description=(
            "Check gridphysics/gridrl on the default JAX backend against the CPU backend "
            "(DC and AC solves, outage flows, env steps, one training update), then measure "
            "env-step and training throughput at 4,096 and 16,384 environments. Prints a "
            "markdown table and writes it as JSON. Exit status 1 when a correctness check "
            "fails, 2 when only a throughput measurement raised."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (256 environments) for a CPU smoke run of a few minutes",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("accelerator.json"),
        help="where to write the JSON report (default: accelerator.json)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds after the start past which throughput measurements not yet begun "
        "are skipped (default: 270, or none with --quick)",
    )
    parser.add_argument(
        "--no-throughput", action="store_true", help="run the correctness checks only"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    budget = args.budget if args.budget is not None else (None if args.quick else 270.0)
    device = jax.devices()[0]
    info = {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "devices": jax.device_count(),
        "jax_version": jax.__version__,
        "reference": f"CPU backend ({jax.devices('cpu')[0].device_kind}) in the same process",
        "quick": args.quick,
        "sizes": asdict(sizes),
    }
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}", flush=True)
    if device.platform == "cpu":
        print("no accelerator: the CPU backend is compared with itself", flush=True)
    checks = run_checks(sizes)
    deadline = start + budget if budget is not None else float("inf")
    figures = [] if args.no_throughput else run_throughput(sizes, deadline)
    info["seconds"] = time.perf_counter() - start
    print()
    print(markdown(info, checks, figures))
    report = {
        **info,
        "checks": [asdict(c) for c in checks],
        "throughput": [asdict(f) | {"met": f.met} for f in figures],
    }
    args.out.write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    print(f"\nwrote {args.out}")
    if not all(c.passed for c in checks):
        return 1
    if any(f.note.startswith("raised") for f in figures):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
