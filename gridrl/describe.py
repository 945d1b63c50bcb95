"""``python -m gridrl.describe --case ieee118``: agents, sizes, areas and ratings of an environment."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def describe(case: str, n_areas: int = 4) -> str:
    import gridphysics as gp
    from gridrl.areas import area_source, describe_areas
    from gridrl.env import RATING_RULE, make

    env, params = make(case, n_areas=n_areas)
    if env.recorded is not None:  # a Grid2Op environment: its own limits and assumptions
        source = env.recorded.rating_source
        notes = [
            f"recorded days: {env.recorded.n_days} ({int(env.recorded.eval_days.sum())} held out)"
        ]
        notes += [f"assumed: {a}" for a in env.recorded.assumed]
    else:
        source = gp.fill_missing_ratings(gp.load_case(case), RATING_RULE)[1].source
        notes = []
    lines = [
        f"gridrl environment on {case}: {env.n_bus} buses, {env.n_branch} branches, {env.n_gen} generators "
        f"({int(env.renewable.sum())} renewable), {env.n_load} loads; {env.config.episode_steps} steps of 15 min",
        "",
        f"{'agent':16s} {'observation':>12s} {'action':>8s} {'acting entries':>15s}",
    ]
    for agent in env.agents:
        mask = env.action_mask(agent)
        lines.append(
            f"{agent:16s} {env.observation_space(agent).shape[0]:12d} {env.action_space(agent).shape[0]:8d} "
            f"{int(np.sum(mask)):15d}"
        )
    lines += [
        "",
        f"areas ({area_source(params.network, n_areas)}):",
        describe_areas(params.network, env.areas),
    ]
    lines += ["", f"ratings: {source}", *notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gridrl.describe",
        description="Print the agents of a gridrl environment with their observation and action sizes, "
        "the area partition and where the branch ratings come from.",
    )
    parser.add_argument(
        "--case",
        default="ieee118",
        help="gridphysics case name, .m path or grid2op:<environment> (default: ieee118)",
    )
    parser.add_argument(
        "--areas", type=int, default=4, help="number of operational areas (default: 4)"
    )
    args = parser.parse_args(argv)
    import gridphysics as gp

    try:
        print(describe(args.case, args.areas))
    except (gp.GridPhysicsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
