"""``python -m gridrl.grid2op_eval --checkpoint RUN --env <name>``: a gridrl policy run by
Grid2Op's own ``Runner`` on a Grid2Op environment's chronics, next to Grid2Op's
``DoNothingAgent`` (and gridrl's baselines through the same agent wrapper).

It reports, per policy and chronic, the steps survived out of the chronic's length,
Grid2Op's cumulative reward, the operational cost (the units' output at their marginal
cost, over the steps survived) and the actions Grid2Op declared illegal or ambiguous,
as a markdown table (``report.md``) and JSON (``grid2op_eval.json``) in ``--out``.
Grid2Op's L2RPN score is not computed (it needs the competition's reference runs).

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


def format_report(env_name: str, results: dict, note: str) -> str:
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
    agents = {"grid2op DoNothingAgent": DoNothingAgent(g2o.action_space)}
    if policy is not None:
        agents = {"policy": Grid2OpAgent(policy, g2o.action_space), **agents}
    for name in [b for b in args.baselines.split(",") if b]:
        try:
            fn = make_policy(name, env)
        except ValueError as exc:
            parser.error(f"--baselines: {exc}")
        agents[f"gridrl {name}"] = Grid2OpAgent(fn, g2o.action_space, env, params)
    print(f"running {len(agents)} agent(s) on {len(chronics)} chronic(s) of {spec} ...", flush=True)
    results = run_agents(g2o, agents, chronics, args.max_steps)
    note = (
        f"Grid2Op's Runner on chronic(s) {', '.join(names[c] for c in chronics)} "
        f"({args.chronics}); {g2o.delta_time_seconds / 60:g}-minute steps. Operational "
        "cost: the units' output at their marginal cost (prods_charac.csv) over the steps "
        "survived. Illegal/ambiguous: actions Grid2Op refused. "
        + ("Assumed: " + "; ".join(rec.assumed) + "." if rec.assumed else "")
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid2op_eval.json").write_text(
        json.dumps({"env": spec, "chronics": chronics, "results": results}, indent=2)
    )
    report = format_report(spec, results, note)
    (out / "report.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
