"""``python -m gridrl.evaluate --checkpoint RUN_DIR``: the trained policy against every
baseline on the same held-out days, as a markdown report with PNG plots.

The report's table has cost, overload-step share, energy not served, trips, safety
interventions, survival, N-1 security and a normalized score (0 = do-nothing, 100 =
the day-ahead reference of :mod:`gridrl.reference`, higher is better). The plots: learning curves (from the run's
``logs/metrics.jsonl``), the baseline comparison, and a day of line loadings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import weakref
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gridrl import scenarios
from gridrl.baselines import (
    REFERENCE,
    EpisodeMetrics,
    add_day_flags,
    check_day_flags,
    make_policy,
    run_baseline,
    run_episodes,
)
from gridrl.env import MAX_SHED_STEPS, evaluation_params
from gridrl.errors import GridRLError, writable_dir
from gridrl.metrics import metric

#: The baselines of the report by default (``mpc`` and ``dc_opf`` plan every step outside
#: ``jit``: several seconds a day, so only on request).
REPORT_BASELINES = ("do_nothing", "greedy", "random", REFERENCE)


def normalized_score(cost: float, do_nothing: float, oracle: float) -> float:
    """100 * (do-nothing cost - cost) / (do-nothing cost - reference cost); NaN when the
    reference is not cheaper than do-nothing (the scale is then undefined)."""
    span = do_nothing - oracle
    if not np.isfinite(span) or span <= 1e-9 * max(abs(do_nothing), 1.0):
        return float("nan")
    return 100.0 * (do_nothing - cost) / span + 0.0


def score_intervals(
    results: dict[str, EpisodeMetrics], *, resamples: int = 2000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Paired bootstrap 95 % intervals of each normalized score: the days are resampled
    with replacement, the same days for every policy (their costs are paired), and the
    score is recomputed from the resampled mean costs. ``(nan, nan)`` where the score is
    undefined (no do-nothing or oracle, fewer than 2 days, or a resample where the oracle
    is not cheaper than do-nothing in more than 2.5 % of the resamples)."""
    nan = (float("nan"), float("nan"))
    if "do_nothing" not in results or REFERENCE not in results:
        return {k: nan for k in results}
    dn = np.asarray(results["do_nothing"].day_cost)
    opf = np.asarray(results[REFERENCE].day_cost)
    n = len(dn)
    if n < 2 or any(len(m.day_cost) != n for m in results.values()):
        return {k: nan for k in results}
    idx = np.random.default_rng(seed).integers(0, n, (resamples, n))
    dn_mean, opf_mean = dn[idx].mean(axis=1), opf[idx].mean(axis=1)
    span = dn_mean - opf_mean
    ok = span > 1e-9 * np.maximum(np.abs(dn_mean), 1.0)
    out = {}
    for name, m in results.items():
        if ok.mean() < 0.975:
            out[name] = nan
            continue
        cost = np.asarray(m.day_cost)[idx].mean(axis=1)
        s = 100.0 * (dn_mean[ok] - cost[ok]) / span[ok]
        lo, hi = np.percentile(s, [2.5, 97.5])
        out[name] = (float(lo) + 0.0, float(hi) + 0.0)
    return out


def evaluation_env(policy, corrective_rounds: int = 0, shed_steps: int = 0):
    """The environment a policy is evaluated in: its training environment, or with
    ``corrective_rounds`` or ``shed_steps`` > 0 the same grid and days with the safety
    filter's corrective redispatch and last-resort shedding
    (:attr:`gridrl.env.EnvConfig.corrective_rounds`, :attr:`~gridrl.env.EnvConfig.shed_steps`),
    for the policy and every baseline alike."""
    if not corrective_rounds and not shed_steps:
        return policy.env
    from gridrl.env import make

    c = policy.config
    env, _ = make(
        c.case,
        n_areas=c.n_areas,
        method=c.method,
        corrective_rounds=corrective_rounds,
        shed_steps=shed_steps,
    )
    return env


def evaluate(
    policy,
    *,
    episodes: int,
    seed: int,
    level: int,
    baselines=REPORT_BASELINES,
    corrective_rounds: int = 0,
    shed_steps: int = 0,
):
    """``{name: EpisodeMetrics}`` for the policy (``"policy"``) and the baselines, all on
    the same seeded days at ``level`` (in :func:`evaluation_env`)."""
    env = evaluation_env(policy, corrective_rounds, shed_steps)
    params = replace(policy.env_params, level=jnp.asarray(level, jnp.int32))
    results = {
        "policy": run_episodes(env, params, policy.as_policy(), episodes=episodes, seed=seed)
    }
    for name in baselines:
        results[name] = run_baseline(env, params, name, episodes=episodes, seed=seed)
    return results


def _same_case(given: str, trained: str) -> bool:
    """Whether ``--case given`` is the grid the policy was trained on: the same
    catalogued case under any of its names (``case14`` is ``ieee14``), the same Grid2Op
    environment, or a file whose grid equals it (buses, branches, impedances). The file
    name alone decided before: ``case14`` was refused and another grid in a file named
    ``ieee14.m`` accepted (hostile rerun 9)."""
    import gridphysics as gp
    from gridphysics.cases import _resolve_name
    from gridrl import grid2op_data

    if grid2op_data.is_grid2op(given) or grid2op_data.is_grid2op(trained):
        try:
            return grid2op_data.find_env(given) == grid2op_data.find_env(trained)
        except GridRLError:
            return False
    a, b = _resolve_name(given), _resolve_name(trained)
    if a is not None and b is not None:
        return a == b
    try:
        x, y = gp.load_case(given), gp.load_case(trained)
    except gp.GridPhysicsError:
        return False
    tx, ty = x.topology, y.topology
    return (
        (tx.n_bus, tx.n_branch, tx.n_gen, tx.n_load) == (ty.n_bus, ty.n_branch, ty.n_gen, ty.n_load)
        and np.array_equal(tx.bus_ids, ty.bus_ids)
        and np.array_equal(tx.branch_from, ty.branch_from)
        and np.array_equal(tx.branch_to, ty.branch_to)
        and np.allclose(np.asarray(x.branch.x_pu), np.asarray(y.branch.x_pu), rtol=1e-9)
    )


def scores(results: dict[str, EpisodeMetrics]) -> dict[str, float]:
    if "do_nothing" not in results or REFERENCE not in results:
        return {k: float("nan") for k in results}
    dn, opf = results["do_nothing"].cost, results[REFERENCE].cost
    return {k: normalized_score(m.cost, dn, opf) for k, m in results.items()}


def _recorded_note(env) -> str:
    """What the held-out days are when the environment replays recorded (Grid2Op) days."""
    rec = env.recorded
    if rec is None:
        return ""
    held = sorted({rec.day_chronic[d] for d in np.flatnonzero(rec.eval_days)})
    text = (
        f" The days are drawn from {int(rec.eval_days.sum())} recorded held-out day(s) of "
        f"{rec.name} (chronic(s) {', '.join(held)}); the seed draws random outages on them"
    )
    assumed = "; ".join(rec.assumed)
    return text + (f". Assumed: {assumed}." if assumed else ".")


#: One jitted ``env.step`` per environment, shared by the policies whose day is drawn
#: (it compiled once per policy: 5 s each for a one-day report on ieee14).
_JITTED_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def day_loadings(env, params, policy_fn, seed: int, jit: bool = True) -> np.ndarray:
    """(steps, n_branch) line loadings (percent) over the first held-out day."""
    params = evaluation_params(params)
    if env not in _JITTED_STEPS:
        _JITTED_STEPS[env] = jax.jit(env.step)
    step = _JITTED_STEPS[env]
    act = jax.jit(policy_fn) if jit else policy_fn
    key = jax.random.fold_in(jax.random.key(seed), 0)
    key, k_reset = jax.random.split(key)
    obs, state = env.reset(k_reset, params)
    rows = []
    for i in range(env.config.episode_steps):
        k_scen = jax.random.fold_in(key, i)
        k_pol = (
            k_scen
            if getattr(policy_fn, "foresees_step", False)
            else jax.random.fold_in(k_scen, 1_000_003)
        )
        obs, new_state, _, done, _ = step(k_scen, state, act(k_pol, obs, state, params), params)
        if bool(done["__all__"]):
            break
        state = new_state
        rows.append(np.asarray(state.loading))
    return np.array(rows) if rows else np.zeros((0, env.n_branch))


def read_log(log_dir: Path) -> list[dict]:
    path = Path(log_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    from gridrl.train import read_jsonl

    records, damaged = read_jsonl(path)
    if damaged:
        print(f"{path}: skipped {len(damaged)} damaged line(s)", file=sys.stderr)
    return [r for r in records if "update" in r and "env_steps" in r and "time" in r]


def _plots(out_dir: Path, log: list[dict], results, score, loadings: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    if log:
        steps = np.array([r["env_steps"] for r in log], float)
        fig, axes = plt.subplots(2, 2, figsize=(10, 7))
        for ax, key in zip(
            axes.flat, ("return", "total_cost", "violation_rate", "level"), strict=True
        ):
            y = np.array([np.nan if r.get(key) is None else r[key] for r in log], float)
            ax.plot(steps, y, lw=1)
            ax.set_title(metric(key).label)
            ax.set_xlabel("environment steps")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "learning_curves.png", dpi=110)
        plt.close(fig)
        files.append("learning_curves.png")

    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].bar(names, [results[n].cost / 1e6 for n in names], color="tab:blue")
    axes[0].set_ylabel("cost per day (M$)")
    axes[0].set_title("cost")
    axes[1].bar(names, [score[n] for n in names], color="tab:green")
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].axhline(100, color="k", lw=0.8, ls="--")
    axes[1].set_title("normalized score (0 = do-nothing, 100 = DC-OPF)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out_dir / "baselines.png", dpi=110)
    plt.close(fig)
    files.append("baselines.png")

    if loadings:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for name, rows in loadings.items():
            if rows.size:
                axes[0].plot(
                    np.arange(1, len(rows) + 1) / scenarios.STEPS_PER_HOUR,
                    rows.max(axis=1),
                    label=name,
                )
        axes[0].axhline(100, color="k", lw=0.8, ls="--")
        axes[0].set_xlabel("hour")
        axes[0].set_ylabel("highest line loading (%)")
        axes[0].set_title("a held-out day: worst line")
        axes[0].legend()
        rows = loadings.get("policy")
        if rows is not None and rows.size:
            im = axes[1].imshow(
                rows.T,
                aspect="auto",
                cmap="magma",
                vmin=0,
                vmax=120,
                extent=(0, len(rows) / scenarios.STEPS_PER_HOUR, rows.shape[1], 0),
            )
            axes[1].set_xlabel("hour")
            axes[1].set_ylabel("branch")
            axes[1].set_title("trained policy: every line's loading (%)")
            fig.colorbar(im, ax=axes[1])
        fig.tight_layout()
        fig.savefig(out_dir / "day_loadings.png", dpi=110)
        plt.close(fig)
        files.append("day_loadings.png")
    return files


def training_summary(
    log: list[dict], max_level: int, eval_level: int, min_updates: int = 1
) -> dict | None:
    """What the report says about training, from the run's metrics log (None without
    one): ``updates``, ``env_steps``, ``minutes``, ``final_level``, ``stalled`` (the
    curriculum ended below ``max_level``) and ``text``. A stalled curriculum, or an
    evaluation above the last level trained on, is said in words, with why it stalled:
    training ended before ``min_updates`` (``--min-updates-per-level``) at its last
    level, or the violation rate stayed too high."""
    if not log:
        return None
    last = log[-1]
    final = int(last["level"])
    stalled = final < max_level
    minutes = (last["time"] - log[0]["time"]) / 60
    text = (
        f"{last['update']} updates, {last['env_steps']:,} environment steps, {minutes:.1f} min "
        f"between the first and last update logged, final curriculum level {final}, last "
        f"throughput {last['steps_per_s']:,.0f} steps/s."
    )
    if stalled:
        at_final = 0  # updates logged at the last level, counted from the end
        for row in reversed(log):
            if int(row["level"]) != final:
                break
            at_final += 1
        if at_final < min_updates:
            why = (
                f"training ended after {at_final} update(s) at that level, before the "
                f"{min_updates} a level takes before it may advance (--min-updates-per-level; "
                "train longer with --total-steps)"
            )
        else:
            rate = last.get("violation_rate")
            why = "the violation rate never fell far enough to advance" + (
                f" (last update: {100 * rate:.1f} % of steps)" if rate is not None else ""
            )
        text += (
            f" **The curriculum stalled at level {final}**, below its last level "
            f"({max_level}): {why}"
        )
        text += (
            f", so the policy is evaluated at level {eval_level} without having trained there."
            if eval_level > final
            else "."
        )
    return {
        "updates": int(last["update"]),
        "env_steps": int(last["env_steps"]),
        "minutes": minutes,
        "final_level": final,
        "max_level": int(max_level),
        "stalled": stalled,
        "text": text,
    }


def _verdict(results: dict, score: dict) -> str:
    """The report's one-line verdict on the policy's normalized score."""
    beaten = [b for b in ("do_nothing", "greedy") if b in score and score["policy"] > score[b]]
    missing = [b for b in ("do_nothing", REFERENCE) if b not in results]
    if missing:  # --baselines left them out; name only those (it named a baseline that ran)
        verdict = (
            f"No normalized score: it needs do_nothing and {REFERENCE}; "
            f"{' and '.join(missing)} {'was' if len(missing) == 1 else 'were'} not run "
            "(--baselines); compare costs instead."
        )
    elif np.isnan(score["policy"]):
        verdict = (
            "Normalized scores are undefined here: the day-ahead reference was not cheaper than "
            "do-nothing on these days (compare costs instead)."
        )
    else:  # name only the baselines that ran (greedy was named when it had not)
        ran = [b for b in ("do_nothing", "greedy") if b in score]
        verdict = (
            f"The trained policy beats: {', '.join(beaten) if beaten else 'none of ' + ', '.join(ran)} "
            "(on the normalized score)."
        )
    return verdict


def write_report(
    checkpoint,
    *,
    out_dir=None,
    episodes: int = 100,
    seed: int = 1_000_000,
    level: int = scenarios.TOP_LEVEL,
    log_dir=None,
    baselines=REPORT_BASELINES,
    case: str | None = None,
    corrective_rounds: int = 0,
    shed_steps: int = 0,
) -> Path:
    """Evaluate the checkpoint's policy and the baselines; write ``report.md`` and the
    plots into ``out_dir`` (default: the run directory). Returns the report's path."""
    from gridrl.policy import load_policy

    t0 = time.time()
    policy = load_policy(checkpoint)
    if case is not None and not _same_case(case, policy.config.case):
        raise ValueError(
            f"--case {case!r}: the checkpoint's policy was trained on {policy.config.case!r}; "
            "its observation and action sizes belong to that grid"
        )
    run_dir = policy.checkpoint.parent
    out_dir = Path(out_dir) if out_dir else run_dir
    # before the evaluation, not after it (a file there was a traceback at the end)
    writable_dir(out_dir, "--out").mkdir(parents=True, exist_ok=True)
    log_dir = Path(log_dir) if log_dir else run_dir / "logs"
    baselines = tuple(b for b in baselines if b != "policy")
    results = evaluate(
        policy,
        episodes=episodes,
        seed=seed,
        level=level,
        baselines=baselines,
        corrective_rounds=corrective_rounds,
        shed_steps=shed_steps,
    )
    env = evaluation_env(policy, corrective_rounds, shed_steps)
    score = scores(results)
    interval = score_intervals(results, seed=seed)
    params = replace(policy.env_params, level=jnp.asarray(level, jnp.int32))
    loadings = {"policy": day_loadings(env, params, policy.as_policy(), seed)}
    for name in ("do_nothing", "greedy"):
        if name in baselines:
            loadings[name] = day_loadings(env, params, make_policy(name, env), seed)
    log = read_log(log_dir)
    files = _plots(out_dir, log, results, score, loadings)

    c = policy.config
    lines = [
        f"# gridrl evaluation: {c.case}",
        "",
        f"Checkpoint `{policy.checkpoint}` (update {policy.update}, "
        f"{policy.update * c.batch_steps:,} environment steps). "
        f"{episodes} held-out day(s) at curriculum level {level}, seed {seed}; every policy "
        "sees the same days. Costs per day in $. Score: 0 = do-nothing, 100 = the day-ahead "
        "reference, higher is better; in brackets its paired bootstrap 95 % interval over "
        "the days."
        + (
            f" Safety filter: {corrective_rounds} round(s) of corrective redispatch before the "
            "relief steps, for every policy (the trained policy learned without them)."
            if corrective_rounds
            else ""
        )
        + (
            f" Safety filter: up to {shed_steps} step(s) of last-resort load shedding after "
            "its redispatch (deliberate shedding), for every policy (the trained policy "
            "learned without it)."
            if shed_steps
            else ""
        )
        + _recorded_note(env),
        "",
        "References: `day_ahead` knows the whole day before it starts (loads, renewable "
        "output and outages as the environment draws them) and plans it in one multi-period "
        "DC-OPF (HiGHS) with the environment's ramps, limits and shedding, in the agents' "
        "action space, then replays the plan through the environment. `mpc` (when run) "
        "re-plans every half hour over two hours on a persistence forecast, without "
        "foresight of outages. `greedy` relieves the most loaded line by PTDF-guided "
        "redispatch; `do_nothing` keeps the economic dispatch scaled with load.",
        "",
        "Overload steps: share of operated steps with an in-service line above its "
        "continuous rating (emergency: above its emergency rating). Shed: load shed on "
        "purpose; lost: load cut off by trips or splits, and after a blackout the rest of "
        "the day. N-1 secure: share of operated steps after which the loss of any single "
        "line that splits nothing leaves every other line within its emergency rating.",
        "",
        "| policy | score | cost $ | overload steps | emergency steps | max loading | N-1 secure "
        "| shed MWh | lost MWh | trips | interventions | survival | blackout-free days |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in results.items():
        lines.append(
            f"| {name} | {score[name]:.1f} [{interval[name][0]:.1f}, {interval[name][1]:.1f}] "
            f"| {m.cost:,.0f} | {m.overload_step_share:.1%} | "
            f"{m.emergency_step_share:.1%} | {m.max_loading_percent:.0f} % | "
            f"{m.n1_secure_step_share:.1%} | "
            f"{m.deliberate_shed_mwh + 0.0:.1f} | {m.involuntary_ens_mwh + 0.0:.1f} | "
            f"{m.trips:.2f} | "
            f"{m.interventions:.1f} | {m.survival:.1%} | {m.blackout_free_days:.0%} |"
        )
    verdict = _verdict(results, score)
    if any(np.isnan(interval[k]).any() for k in results if not np.isnan(score[k])):
        verdict += (
            " Some score intervals are undefined: in more than 2.5 % of the bootstrap "
            "resamples of these days the reference was not cheaper than do-nothing, so the "
            "score has no scale there (evaluate more days, `--episodes`)."
        )
    lines += ["", verdict, ""]
    # without a curriculum the run stays at its start level: nothing to stall
    training = training_summary(
        log, c.max_level if c.curriculum else c.start_level, level, c.min_updates_per_level
    )
    if training is not None:
        lines += ["## Training", "", training["text"], ""]
    lines += [f"![{f}]({f})" for f in files]
    lines += [
        "",
        f"Options: `{json.dumps(c.to_dict())}`",
        f"Evaluated in {time.time() - t0:.0f} s.",
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    (out_dir / "evaluation.json").write_text(
        json.dumps(
            {
                "episodes": episodes,
                "seed": seed,
                "level": level,
                "safety_filter": {"corrective_rounds": corrective_rounds, "shed_steps": shed_steps},
                "training": None
                if training is None
                else {k: v for k, v in training.items() if k != "text"},
                "results": {
                    k: m.as_dict() | {"score": score[k], "score_ci95": list(interval[k])}
                    for k, m in results.items()
                },
            },
            indent=2,
        )
        + "\n"
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gridrl.evaluate",
        description="Run a trained policy and every baseline on the same held-out days and write "
        "a markdown report (table with a normalized score: 0 = do-nothing, 100 = the day-ahead "
        "reference, a perfect-foresight multi-period DC-OPF replayed through the environment) "
        "with PNG plots.",
    )
    parser.add_argument("--checkpoint", required=True, help="run directory or its checkpoints/")
    parser.add_argument(
        "--case", help="case the policy was trained on (checked against the checkpoint)"
    )
    add_day_flags(parser, episodes=100, seed=1_000_000, baselines=REPORT_BASELINES)
    parser.add_argument("--out", help="output directory (default: the run directory)")
    parser.add_argument(
        "--corrective-rounds",
        type=int,
        default=0,
        metavar="N",
        help="evaluate with N rounds of the safety filter's corrective redispatch (every unit "
        "moved at once to hold the most loaded lines under their rating), for the policy and "
        "the baselines alike; 0 (default): the filter the policy trained with. Each round "
        "costs about as much as the rest of a step",
    )
    parser.add_argument(
        "--shed-steps",
        type=int,
        default=0,
        metavar="N",
        help="evaluate with up to N steps of the safety filter's last-resort load shedding "
        "after its redispatch (the load that relieves the most overloaded line most, within "
        "each load's shedding limit; counted as deliberate shedding), for the policy and the "
        f"baselines alike; 0 (default): none; at most {MAX_SHED_STEPS}",
    )
    args = parser.parse_args(argv)
    names = check_day_flags(parser, args)
    if args.corrective_rounds < 0:
        parser.error(f"--corrective-rounds must be >= 0, got {args.corrective_rounds}")
    if not 0 <= args.shed_steps <= MAX_SHED_STEPS:
        parser.error(f"--shed-steps must be 0..{MAX_SHED_STEPS}, got {args.shed_steps}")
    from gridrl.checkpoint import CheckpointError

    try:
        path = write_report(
            args.checkpoint,
            out_dir=args.out,
            episodes=args.episodes,
            seed=args.seed,
            level=args.level,
            baselines=names,
            case=args.case,
            corrective_rounds=args.corrective_rounds,
            shed_steps=args.shed_steps,
        )
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        parser.error(str(exc))
    print(path.read_text().split("\n## Training")[0])
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
