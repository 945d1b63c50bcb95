"""Command line: ``python -m gridphysics CASE`` solves a case and prints a summary."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _parser() -> argparse.ArgumentParser:
    from gridphysics.cases import case_names

    parser = argparse.ArgumentParser(
        prog="python -m gridphysics",
        description=(
            "Solve the power flow of a named case or a MATPOWER .m file and print a summary: "
            "balance, slack generation, angle spread and the most loaded branches."
        ),
        epilog="Named cases: "
        + ", ".join(case_names())
        + ". MATPOWER names such as case118 work too.",
    )
    parser.add_argument("case", help="a named case (e.g. ieee118) or a path to a MATPOWER .m file")
    parser.add_argument(
        "--method",
        choices=("dc", "ac"),
        default="dc",
        help="power-flow model: dc (default) or ac (Newton-Raphson)",
    )
    parser.add_argument(
        "--top", type=int, default=10, metavar="N", help="how many branches to list (default: 10)"
    )
    parser.add_argument(
        "--float32", action="store_true", help="solve in float32 instead of float64"
    )
    parser.add_argument(
        "--linear-solver",
        choices=("dense", "klu"),
        default=None,
        help="force the linear solver (default: KLU on CPU where available, dense otherwise)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.top < 0:
        parser.error("--top must be >= 0")

    import jax
    import jax.numpy as jnp

    import gridphysics as gp

    try:
        network = gp.load_case(args.case)
        if args.float32:
            network = network.astype(jnp.float32)
        options = gp.SolveOptions(linear_solver=args.linear_solver)
        t0 = time.perf_counter()
        result = gp.solve(network, args.method, options=options)
        jax.block_until_ready(result)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = gp.solve(network, args.method, options=options)
        jax.block_until_ready(result)
        again = time.perf_counter() - t0
    except gp.GridPhysicsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(network, result, first_s=first, again_s=again, top=args.top))
    return 0 if bool(result.converged) else 1


def _start_name(result) -> str:
    from gridphysics.ac import STARTS

    i = int(result.start)
    return STARTS[i] if i >= 0 else "none converged"


def summary(network, result, *, first_s: float, again_s: float, top: int = 10) -> str:
    """A readable text summary of a solved network."""
    t = network.topology
    ids = t.bus_ids
    lines = []
    lines.append(
        f"{result.method.upper()} power flow of {t.name}: {t.n_bus} buses, {t.n_branch} branches, "
        f"{t.n_gen} generators, {t.n_load} loads ({network.dtype})"
    )
    conv = bool(result.converged)
    lines.append(
        f"converged: {'yes' if conv else 'NO'}    first solve (with compilation): {first_s:.2f} s    "
        f"solve: {again_s * 1e3:.3f} ms"
    )
    if not conv:
        lines.append("the solve failed: every result is NaN")
        return "\n".join(lines)

    load = np.asarray(network.load.p_mw * network.load.status)
    gen_p = np.asarray(result.gen_p_mw)
    shunt = np.asarray(network.shunt.g_mw * network.shunt.status)
    lines.append(
        f"load {load.sum():.2f} MW    generation {np.nansum(gen_p):.2f} MW    "
        f"shunt {shunt.sum():.2f} MW"
    )
    slack = np.flatnonzero(np.asarray(network.gen.slack_weight) > 0)
    lines.append("slack generation:")
    for g in slack:
        lines.append(
            f"  generator {g} at bus {ids[t.gen_bus[g]]}: {gen_p[g]:.2f} MW "
            f"(scheduled {float(network.gen.p_mw[g]):.2f} MW)"
        )
    if result.method == "ac":
        vm = np.asarray(result.vm_pu)
        lines.append(
            f"losses {float(result.total_loss_mw):.2f} MW    iterations {int(result.iterations)} "
            f"(start: {_start_name(result)})    "
            f"voltage {np.nanmin(vm):.4f} to {np.nanmax(vm):.4f} p.u. "
            f"(bus {ids[np.nanargmin(vm)]} to bus {ids[np.nanargmax(vm)]})"
        )
    va = np.rad2deg(np.asarray(result.va_rad))
    iso = np.asarray(result.bus_isolated)
    if (~iso).any():
        lo, hi = np.nanargmin(va), np.nanargmax(va)
        lines.append(
            f"angle spread: {va[hi] - va[lo]:.2f} deg (bus {ids[lo]}: {va[lo]:.2f} deg to "
            f"bus {ids[hi]}: {va[hi]:.2f} deg)"
        )
    if iso.any():
        lines.append(f"isolated buses (excluded): {iso.sum()} — {list(ids[iso][:10])}")
    if top:
        p = np.asarray(result.p_from_mw)
        loading = np.asarray(result.loading_percent)
        rate = np.asarray(network.branch.rate_a_mva)
        rated = ~np.isnan(rate)
        if rated.any():
            key = np.where(rated, loading, -1.0)
            title = f"most loaded branches (loading = |P| / rate_a; {rated.sum()} of {t.n_branch} rated):"
        else:
            key = np.abs(p)
            title = "branches with the largest flows (the case has no branch ratings):"
        order = np.argsort(-key, kind="stable")[:top]
        lines.append(title)
        lines.append(
            f"  {'branch':>6} {'from':>7} {'to':>7} {'P_from MW':>11} {'rate MVA':>9} {'loading %':>10}"
        )
        for k in order:
            r = f"{rate[k]:9.1f}" if rated[k] else f"{'-':>9}"
            ld = f"{loading[k]:10.1f}" if rated[k] else f"{'-':>10}"
            lines.append(
                f"  {k:6d} {ids[t.branch_from[k]]:7d} {ids[t.branch_to[k]]:7d} {p[k]:11.2f} {r} {ld}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
