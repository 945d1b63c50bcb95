"""``python -m gridrl.grid2op_eval --checkpoint RUN --env <name>``: a gridrl policy run by
Grid2Op's own ``Runner`` on a Grid2Op environment's chronics, next to Grid2Op's
``DoNothingAgent`` (and gridrl's baselines through the same agent wrapper).

It reports, per policy and chronic, the steps survived out of the chronic's length,
Grid2Op's cumulative reward, the operational cost (the units' output at their marginal
cost, over the steps survived) and the actions Grid2Op declared illegal or ambiguous,
as a markdown table (``report.md``) and JSON (``grid2op_eval.json``) in ``--out``.
With ``--score`` (the default) it also computes Grid2Op's own L2RPN score of each agent
on the same chronics (:func:`l2rpn_score`: ``grid2op.utils.ScoreL2RPN2020``, or
``ScoreL2RPN2022`` on the WCCI 2022 environments), offline: Grid2Op runs its reference
agents (do-nothing, and line reconnection without overflow disconnections) itself, on a
private copy of the environment that holds only the chronics evaluated, so nothing is
written into the installed environment. Per chronic, Grid2Op interpolates an agent's
cost (losses and redispatch at marginal cost, and the load of the steps not survived at
the highest marginal cost): 0 is do-nothing's cost, 100 is 80 % of the losses, -100 is
the whole chronic's load lost, and where do-nothing fails, 80 is line reconnection
without overflow trips.

No agent of ``l2rpn-baselines`` runs next to them: of its newest release on PyPI
(0.8.0), the agents that need neither training nor downloads fail on the shipped
environments with today's libraries. ``OptimCVXPY`` imports
``lightsim2grid.gridmodel.init`` (gone in lightsim2grid 1.x), uses ``np.NaN`` (gone in
NumPy 2) and, with both patched, fails inside cvxpy 1.9's indexing;
``PandapowerOPFAgent`` asserts an ``ext_grid``, which none of the environments gridrl
reads has. The others need training or downloaded weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from gridrl.errors import EnvOptionError, GridRLError, writable_dir

#: Baselines run next to the policy: Grid2Op's own do-nothing agent and gridrl's.
GRIDRL_BASELINES = ("do_nothing", "greedy")


def _grid2op_env(name: str):
    import grid2op

    from gridrl.grid2op_data import find_env

    path = find_env(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return (
                grid2op.make(str(path), test=True)
                if path.parent.name == "data"
                else grid2op.make(str(path))
            )
    except Exception as exc:  # Grid2Op's own refusal (its config.py, its checks)
        raise EnvOptionError(
            f"Grid2Op cannot load {path} ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None


def run_agents(g2o_env, agents: dict, chronics: list[int], max_steps: int | None) -> dict:
    """``{name: [per-chronic record]}`` from Grid2Op's Runner for every agent."""
    from grid2op.Runner import Runner

    cost = np.asarray(type(g2o_env).gen_cost_per_MW, float)
    hours = g2o_env.delta_time_seconds / 3600
    out = {}
    for name, agent in agents.items():
        runner = Runner(**g2o_env.get_params_for_runner(), agentClass=None, agentInstance=agent)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = runner.run(
                nb_episode=len(chronics),
                episode_id=chronics,
                max_iter=max_steps,
                add_detailed_output=True,
            )
        records = []
        for _, chronic, reward, steps, total, data in results:
            gen = [
                np.asarray(o.gen_p, float)
                for o in data.observations[1 : steps + 1]
                if o is not None
            ]
            legal = np.asarray(data.legal[:steps], bool) if data.legal is not None else np.ones(0)
            ambiguous = (
                np.asarray(data.ambiguous[:steps], bool)
                if data.ambiguous is not None
                else np.ones(0)
            )
            records.append(
                {
                    "chronic": Path(str(chronic)).name,
                    "steps_survived": int(steps),
                    "steps_total": int(total),
                    "survived_all_steps": bool(steps == total),
                    "cumulative_reward": float(reward),
                    "operational_cost": float(sum((g * cost).sum() for g in gen) * hours),
                    "illegal_actions": int((~legal).sum()),
                    "ambiguous_actions": int(ambiguous.sum()),
                }
            )
        out[name] = {"chronics": records, "seconds": time.perf_counter() - start}
    return out


def l2rpn_score(
    path: Path, chronic_names: list[str], make_agents, max_steps: int | None, seed: int = 0
) -> tuple[str, dict[str, dict[str, float]]]:
    """Grid2Op's L2RPN score of each agent on the chronics ``chronic_names`` of the
    environment folder ``path``: ``(score name, {agent: {chronic: score}})``.
    ``make_agents(action_space)`` gives fresh agents
    for the scoring runs. Grid2Op caches its reference runs in the environment's folder,
    so they run on a temporary copy holding only these chronics (it is removed after)."""
    import shutil
    import tempfile

    import grid2op
    from grid2op.utils import ScoreL2RPN2020, ScoreL2RPN2022

    wcci = "wcci_2022" in path.name
    score_class, label = (
        (ScoreL2RPN2022, "L2RPN 2022 (WCCI) score")
        if wcci
        else (ScoreL2RPN2020, "L2RPN 2020 score")
    )
    with tempfile.TemporaryDirectory(prefix="gridrl-score-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copytree(path, copy, ignore=shutil.ignore_patterns("chronics", "_statistics_*"))
        source = path / "chronics"
        for name in chronic_names:
            if not (source / name).is_dir():
                raise EnvOptionError(
                    f"the L2RPN score needs one folder per chronic; {source / name} is not one "
                    "(use --no-score)"
                )
            shutil.copytree(source / name, copy / "chronics" / name)
        n = len(chronic_names)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                g2o = grid2op.make(str(copy))
                score = score_class(
                    g2o,
                    nb_scenario=n,
                    env_seeds=[seed] * n,
                    agent_seeds=[seed] * n,
                    max_step=max_steps if max_steps is not None else -1,
                )
                meta = score.stat_dn.get_metadata()
                order = [Path(meta[str(i)]["scenario_name"]).name for i in range(n)]
                out = {
                    name: dict(zip(order, map(float, score.get(agent)[0]), strict=True))
                    for name, agent in make_agents(g2o.action_space).items()
                }
        except GridRLError:
            raise
        except Exception as exc:  # Grid2Op's own refusal of the copy or of the runs
            raise EnvOptionError(
                f"Grid2Op could not compute the {label} ({type(exc).__name__}: "
                f"{str(exc)[:300]}); use --no-score"
            ) from None
    return label, out


def format_report(env_name: str, results: dict, note: str, score=None) -> str:
    lines = [
        f"# gridrl in Grid2Op: {env_name}",
        "",
        note,
        "",
        "| policy | chronic | steps survived / run | whole run | cumulative reward | operational cost $ | illegal | ambiguous |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        for r in res["chronics"]:
            lines.append(
                f"| {name} | {r['chronic']} | {r['steps_survived']} / {r['steps_total']} | "
                f"{'yes' if r['survived_all_steps'] else 'no'} | {r['cumulative_reward']:,.1f} | "
                f"{r['operational_cost']:,.0f} | {r['illegal_actions']} | {r['ambiguous_actions']} |"
            )
    if score is not None:
        label, per_agent = score
        lines += [
            "",
            f"## Grid2Op's {label}",
            "",
            "Computed by grid2op.utils on the same chronics and steps: per chronic, 0 = "
            "do-nothing's cost, 100 = 80 % of the losses, -100 = the whole load lost (steps "
            "not survived count their load at the highest marginal cost); where do-nothing "
            "fails, 80 = line reconnection without overflow trips.",
            "",
            "| policy | mean score | per chronic |",
            "|---|---:|---|",
        ]
        for name, values in per_agent.items():
            each = ", ".join(f"{c}: {v:.2f}" for c, v in values.items())
            lines.append(f"| {name} | {np.mean(list(values.values())):.2f} | {each} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gridrl.grid2op_eval",
        description="Run a trained gridrl policy inside Grid2Op with Grid2Op's own Runner, on "
        "the environment's held-out chronics, next to Grid2Op's DoNothingAgent and gridrl's "
        "baselines; report steps survived, cost and illegal/ambiguous actions.",
    )
    parser.add_argument(
        "--checkpoint",
        help="run directory (or its checkpoints/) of a policy "
        "trained on a grid2op: case; without it only the baselines run",
    )
    parser.add_argument(
        "--env",
        help="Grid2Op environment (name shipped with grid2op, or a "
        "directory); default: the checkpoint's case. Grid2Op itself loads it, and "
        "grid2op.make imports the directory's config.py (runs its code): use only "
        "environments you trust (gridrl.make reads them without running anything)",
    )
    parser.add_argument(
        "--chronics",
        default="held-out",
        help="'held-out' (default: the "
        "chronics gridrl never trained on), 'all', or comma-separated indices",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop each chronic after this many Grid2Op steps (default: its end)",
    )
    parser.add_argument(
        "--baselines",
        default=",".join(GRIDRL_BASELINES),
        help=f"gridrl baselines to run too (default: {','.join(GRIDRL_BASELINES)}; "
        "'' for none); Grid2Op's DoNothingAgent always runs",
    )
    parser.add_argument(
        "--score",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also compute Grid2Op's L2RPN score of every agent on the same chronics "
        "(default; Grid2Op runs its two reference agents on each chronic first, on a "
        "temporary copy of the environment); --no-score skips it",
    )
    parser.add_argument("--out", default=".", help="directory for report.md and grid2op_eval.json")
    args = parser.parse_args(argv)
    if args.max_steps is not None and args.max_steps < 1:
        parser.error(f"--max-steps must be >= 1, got {args.max_steps}")
    try:
        import grid2op  # noqa: F401
    except ImportError:
        parser.error("grid2op is not installed: pip install '.[grid2op]'")
    out = Path(args.out)
    try:  # before the runs, not after them
        writable_dir(out, "--out")
    except GridRLError as exc:
        parser.error(str(exc))
    try:
        return _run(args, parser, out)
    except GridRLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args, parser, out: Path) -> int:
    from grid2op.Agent import DoNothingAgent

    from gridrl.baselines import make_policy
    from gridrl.env import make
    from gridrl.grid2op import Grid2OpAgent
    from gridrl.grid2op_data import is_grid2op

    policy = None
    if args.checkpoint:
        from gridrl.policy import load_policy

        policy = load_policy(args.checkpoint)
        case = policy.config.case
        if not is_grid2op(case):
            parser.error(f"the checkpoint was trained on {case!r}, not on a grid2op: case")
        env_name = args.env or case
    elif args.env:
        env_name = args.env
    else:
        parser.error("give --checkpoint, --env or both")
    spec = env_name if is_grid2op(env_name) else f"grid2op:{env_name}"
    if (
        policy is not None
        and policy.env.recorded.path.name != spec.split(":", 1)[1].rstrip("/").split("/")[-1]
    ):
        print(f"note: the policy was trained on {policy.config.case}, evaluated on {spec}")
    env, params = (policy.env, policy.env_params) if policy is not None else make(spec)
    g2o = _grid2op_env(spec)
    names = [Path(p).name for p in g2o.chronics_handler.real_data.available_chronics()]
    rec = env.recorded
    if args.chronics == "held-out":
        held = {rec.day_chronic[d] for d in np.flatnonzero(rec.eval_days)}
        chronics = [i for i, n in enumerate(names) if n in held] or list(range(len(names)))
    elif args.chronics == "all":
        chronics = list(range(len(names)))
    else:
        try:
            chronics = [int(c) for c in args.chronics.split(",")]
        except ValueError:
            parser.error(f"--chronics: 'held-out', 'all' or indices, got {args.chronics!r}")
        bad = [c for c in chronics if not 0 <= c < len(names)]
        if bad:
            parser.error(f"--chronics: {bad} out of range 0..{len(names) - 1}")
        twice = sorted({c for c in chronics if chronics.count(c) > 1})
        if twice:  # '0,0' ran chronic 0 twice and counted it twice in the averages
            parser.error(f"--chronics: {twice} given more than once")
    baselines = {}
    wanted = [b for b in args.baselines.split(",") if b]
    twice = sorted({n for n in wanted if wanted.count(n) > 1})
    if twice:  # ran the baseline twice, shown as one row
        parser.error(f"--baselines: {', '.join(twice)} given more than once")
    for name in wanted:
        try:
            baselines[f"gridrl {name}"] = make_policy(name, env)
        except ValueError as exc:
            parser.error(f"--baselines: {exc}")

    def make_agents(action_space) -> dict:
        agents = {"grid2op DoNothingAgent": DoNothingAgent(action_space)}
        if policy is not None:
            agents = {"policy": Grid2OpAgent(policy, action_space), **agents}
        for name, fn in baselines.items():
            agents[name] = Grid2OpAgent(fn, action_space, env, params)
        return agents

    agents = make_agents(g2o.action_space)
    print(f"running {len(agents)} agent(s) on {len(chronics)} chronic(s) of {spec} ...", flush=True)
    results = run_agents(g2o, agents, chronics, args.max_steps)
    score = None
    if args.score:
        print("computing Grid2Op's L2RPN score (its reference runs first) ...", flush=True)
        score = l2rpn_score(
            Path(g2o.get_path_env()), [names[c] for c in chronics], make_agents, args.max_steps
        )
    # a chronic split by day (an environment with one chronic) holds training days too:
    # Grid2Op replays it from its start, so the run is not all held out (it was labelled
    # so; hostile rerun 9)
    mixed = {
        name: int(
            sum(
                1
                for c, e in zip(rec.day_chronic, rec.eval_days, strict=True)
                if c == name and not e
            )
        )
        for name in (names[c] for c in chronics)
    }
    mixed = {name: n for name, n in mixed.items() if n}
    label = args.chronics
    if mixed:
        label += "; " + ", ".join(
            f"chronic {name} also holds {n} training day(s), which Grid2Op replays first"
            for name, n in mixed.items()
        )
    note = (
        f"Grid2Op's Runner on chronic(s) {', '.join(names[c] for c in chronics)} "
        f"({label}); {g2o.delta_time_seconds / 60:g}-minute steps. Operational "
        "cost: the units' output at their marginal cost (prods_charac.csv) over the steps "
        "survived. Illegal/ambiguous: actions Grid2Op refused. "
        + ("Assumed: " + "; ".join(rec.assumed) + "." if rec.assumed else "")
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid2op_eval.json").write_text(
        json.dumps(
            {
                "env": spec,
                "chronics": chronics,
                "training_days_in_chronics": mixed,
                "results": results,
                "score": None if score is None else {"name": score[0], "per_agent": score[1]},
            },
            indent=2,
        )
    )
    report = format_report(spec, results, note, score)
    (out / "report.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
