"""``python -m gridrl.recommend --checkpoint RUN_DIR --net snapshot.json``: setpoints for a
pandapower network snapshot, with the post-action flows computed by gridphysics.

The snapshot (``pandapower.to_json``) must be the grid the policy was trained on (for
ieee118: ``pandapower.networks.case118()`` with its loads, dispatch and switching
changed). Elements are matched to the training grid by bus position (generators and
loads by bus, branches by their two buses), so pandapower's own element order is fine.
Ratings are those the policy was trained with. The policy sees the snapshot as the
state of the hour given by ``--hour``; its operational redispatch, load shedding and
the safety filter give the recommended dispatch, which is then solved (DC, and AC with
``--ac``) and compared with the snapshot's own flows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
from collections import defaultdict
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

import gridphysics as gp
from gridrl import scenarios
from gridrl.errors import GridRLError, writable_file


class SnapshotError(GridRLError, ValueError):
    """The snapshot cannot be read or is not the grid the policy was trained on."""


#: Modules a pandapower snapshot may name (``_module`` keys): pandapower's own types and
#: the pandas / numpy containers it serializes. Anything else is refused unread.
SNAPSHOT_MODULES = ("pandapower", "pandas", "numpy", "builtins")
#: The largest snapshot recommend reads (pandapower's JSON of a 10,000-bus grid is a few
#: MB).
MAX_SNAPSHOT_BYTES = 512 * 2**20


def check_snapshot_modules(path) -> None:
    """Refuse a snapshot whose JSON names a module outside :data:`SNAPSHOT_MODULES`:
    ``pandapower.from_json`` would import it (running its code) before refusing the
    class. Every object is checked, also in JSON nested in strings."""
    import json
    import os
    import stat

    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SNAPSHOT_BYTES:
            # /dev/urandom was read until memory ran out; a FIFO blocks open()
            raise SnapshotError(
                f"--net: {path} is not a file of at most {MAX_SNAPSHOT_BYTES:,} bytes"
            )
        with open(path, "rb") as f:
            text = f.read(MAX_SNAPSHOT_BYTES + 1).decode("utf-8")
    except FileNotFoundError:
        raise SnapshotError(f"--net: no such file {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SnapshotError(f"--net: {path} cannot be read ({exc})") from None
    try:
        stack = [json.loads(text)]
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: deep nesting
        raise SnapshotError(f"--net: {path} is not JSON that can be read ({exc})") from None
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            module = item.get("_module")
            if module is not None:
                root = str(module).split(".")[0]
                if root not in SNAPSHOT_MODULES:
                    raise SnapshotError(
                        f"--net: {path} names module {module!r} (class {item.get('_class')!r}); "
                        f"a snapshot may only use {', '.join(SNAPSHOT_MODULES)} types"
                    )
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and item.lstrip(" \t\r\n\ufeff")[:1] in ("{", "["):
            # JSON in a string, blanks or a byte-order mark before it included (pandas
            # reads those too)
            try:
                stack.append(json.loads(item.lstrip(" \t\r\n\ufeff")))
            except json.JSONDecodeError:  # a plain string
                pass
            except RecursionError:
                raise SnapshotError(f"--net: {path} nests JSON too deeply to check") from None


_GUARD_LOCK = threading.Lock()


class _ImportGuard:
    """``importlib`` as pandapower's JSON reader sees it while :func:`read_snapshot`
    runs: ``import_module`` refuses every module outside :data:`SNAPSHOT_MODULES`."""

    def __getattr__(self, name):
        import importlib

        return getattr(importlib, name)

    @staticmethod
    def import_module(name, package=None):
        import importlib

        if str(name).split(".")[0] not in SNAPSHOT_MODULES:
            raise SnapshotError(
                f"the snapshot names module {name!r}; a snapshot may only use "
                f"{', '.join(SNAPSHOT_MODULES)} types"
            )
        return importlib.import_module(name, package)


def read_snapshot(path):
    """The pandapower network in the snapshot ``path`` (``pandapower.from_json``), read
    as data: :func:`check_snapshot_modules` first, and while pandapower reads it, any
    module it would import (named anywhere, also in a table it loads from another file)
    must be in :data:`SNAPSHOT_MODULES`, or the read stops with a :class:`SnapshotError`
    before the import."""
    from unittest import mock

    import pandapower as pp
    from pandapower import io_utils

    check_snapshot_modules(path)
    try:
        # one read at a time: two threads patching and restoring in turn could leave the
        # guard installed for good, or take it away while the other thread still reads
        with _GUARD_LOCK, mock.patch.object(io_utils, "importlib", _ImportGuard()):
            return pp.from_json(str(path))
    except SnapshotError as exc:
        raise SnapshotError(f"--net: {path}: {exc}") from None
    except FileNotFoundError:
        raise SnapshotError(f"--net: no such file {path}") from None
    except Exception as exc:  # pandapower raises many types for a malformed network
        raise SnapshotError(
            f"--net: {path} is not a pandapower JSON network ({type(exc).__name__}: {exc})"
        ) from None


def _keys(pairs):
    seen = defaultdict(int)
    out = []
    for p in pairs:
        out.append((*p, seen[p]))
        seen[p] += 1
    return out


def check_bus_count(train: gp.Network, snap: gp.Network, table_buses: int) -> None:
    """Refuse a snapshot whose converted grid has another number of buses than the
    training grid, saying when pandapower's conversion made the difference: its bus
    table has ``table_buses`` (the count of a 14-bus snapshot with an open line switch
    read "15 buses", with no word of where the 15th came from)."""
    n_train, n_snap = train.topology.n_bus, snap.topology.n_bus
    if n_snap == n_train:
        return
    if table_buses == n_train:
        raise SnapshotError(
            f"the snapshot's bus table has {table_buses} buses, as the training grid, but "
            f"pandapower's conversion of it gives {n_snap}: it adds a bus at each open line "
            "or transformer switch and at branches that end on an out-of-service bus. "
            "Take such a line out of service (in_service=False) instead of opening its "
            "switch, and keep every bus in service"
        )
    raise SnapshotError(
        f"the snapshot has {n_snap} buses ({table_buses} in its bus table); the policy was "
        f"trained on a grid with {n_train}"
    )


def match(train: gp.Network, snap: gp.Network) -> dict[str, np.ndarray]:
    """Index arrays mapping the training grid's elements to the snapshot's
    (``snap_values[idx]`` is in training order)."""
    tt, ts = train.topology, snap.topology
    if tt.n_bus != ts.n_bus:
        raise SnapshotError(
            f"the snapshot has {ts.n_bus} buses; the policy was trained on a grid with {tt.n_bus}"
        )
    out = {}
    for name, kt, ks in [
        ("gen", [(int(b),) for b in tt.gen_bus], [(int(b),) for b in ts.gen_bus]),
        ("load", [(int(b),) for b in tt.load_bus], [(int(b),) for b in ts.load_bus]),
        (
            "branch",
            [
                tuple(sorted((int(f), int(t))))
                for f, t in zip(tt.branch_from, tt.branch_to, strict=True)
            ],
            [
                tuple(sorted((int(f), int(t))))
                for f, t in zip(ts.branch_from, ts.branch_to, strict=True)
            ],
        ),
    ]:
        kt, ks = _keys(kt), _keys(ks)
        where = {k: i for i, k in enumerate(ks)}
        missing = [k for k in kt if k not in where]
        if missing or len(ks) != len(kt):
            what = {"branch": "branches"}.get(name, name + "s")
            extra = [k for k in ks if k not in set(kt)]
            detail = (
                f"first missing (bus positions): {missing[:3]}"
                if missing
                else f"first extra (bus positions): {extra[:3]}"
            )
            raise SnapshotError(
                f"the snapshot's {what} do not match the training grid's ({len(ks)} vs "
                f"{len(kt)}; {detail})"
            )
        out[name] = np.array([where[k] for k in kt])
    return out


#: How far (relative) a snapshot's branch impedances may differ from the training grid's:
#: the policy's physics is the training grid's, so a rebuilt line is refused.
IMPEDANCE_RTOL = 1e-3


#: A snapshot rating this many times the training grid's stands for "no limit" (pandapower
#: cases carry max_i_ka = 9999), so the training grid's rating is used instead.
PLACEHOLDER_FACTOR = 10.0


#: How far a snapshot's phase shifts may differ from the training grid's (radians).
SHIFT_ATOL_RAD = 1e-3


def check_impedances(train: gp.Network, snap: gp.Network, idx: dict) -> None:
    """Refuse a snapshot whose branch reactances, resistances, line charging, taps or
    phase shifts, or whose shunts, differ from the training grid's by more than
    :data:`IMPEDANCE_RTOL` (shifts: :data:`SHIFT_ATOL_RAD`), naming the first such
    branch (a 20 degree phase shift was accepted and ignored)."""
    ids = np.asarray(train.topology.bus_ids)
    f, t = np.asarray(train.topology.branch_from), np.asarray(train.topology.branch_to)
    train_shunts = _shunts_per_bus(train)
    snap_shunts = _shunts_per_bus(snap)
    for name, quantity in (("g_mw", "conductance"), ("b_mvar", "susceptance")):
        a, b = train_shunts[name], snap_shunts[name]
        off = np.abs(b - a) > IMPEDANCE_RTOL * np.maximum(np.abs(a), 1.0)
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise SnapshotError(
                f"bus {ids[i]}: the snapshot's shunt {quantity} {b[i]:.6g} differs from the "
                f"training grid's {a[i]:.6g}; the policy's physics is the training grid's"
            )
    # per-unit impedances on the training grid's base: a snapshot saved with another
    # base MVA (pandapower's sn_mva) is the same grid (it was refused; hostile rerun 7)
    to_train_base = {"x_pu": train.base_mva / snap.base_mva, "r_pu": train.base_mva / snap.base_mva}
    to_train_base["b_pu"] = snap.base_mva / train.base_mva
    for field in ("x_pu", "r_pu", "b_pu", "tap", "shift_rad"):
        a = np.asarray(getattr(train.branch, field), np.float64)
        b = np.asarray(getattr(snap.branch, field), np.float64)[idx["branch"]]
        b = b * to_train_base.get(field, 1.0)
        if field == "shift_rad":
            off = np.abs(b - a) > SHIFT_ATOL_RAD
        else:
            off = np.abs(b - a) > IMPEDANCE_RTOL * np.maximum(np.abs(a), 1e-6)
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise SnapshotError(
                f"branch {i} ({ids[f[i]]}-{ids[t[i]]}): the snapshot's {field} = {b[i]:.6g} differs "
                f"from the training grid's {a[i]:.6g} (tolerance {IMPEDANCE_RTOL:g} relative); "
                f"the policy's physics is the training grid's ({int(off.sum())} such branches)"
            )


def _shunts_per_bus(net: gp.Network) -> dict[str, np.ndarray]:
    """Shunt conductance and susceptance summed per bus (in service only)."""
    t, sh = net.topology, net.shunt
    on = np.asarray(sh.status, np.float64)
    return {
        k: np.bincount(
            np.asarray(t.shunt_bus), np.asarray(getattr(sh, k), np.float64) * on, t.n_bus
        )
        for k in ("g_mw", "b_mvar")
    }


def recommend(policy, snapshot: gp.Network, hour: float = 12.0, ac: bool = False) -> dict:
    """The recommended dispatch for ``snapshot`` and the flows before and after it, with
    the snapshot's own ratings (where it has them), unit limits, statuses and voltage
    setpoints."""
    if isinstance(hour, bool) or not isinstance(hour, int | float) or not math.isfinite(hour):
        raise SnapshotError(f"hour must be a finite number of hours, got {hour!r}")
    env, params = policy.env, policy.env_params
    train = params.network
    idx = match(train, snapshot)
    check_impedances(train, snapshot, idx)
    dtype = env.dtype
    load = np.asarray(snapshot.load.p_mw * snapshot.load.status)[idx["load"]]
    status = np.asarray(snapshot.branch.status)[idx["branch"]]
    gen_status = np.asarray(snapshot.gen.status)[idx["gen"]]
    p_set = np.asarray(snapshot.gen.p_mw)[idx["gen"]]
    # the snapshot's ratings where it has them (a halved rating was ignored), else the
    # training grid's; they go into the network so DC and AC loadings use the same ones.
    # A rating PLACEHOLDER_FACTOR times the training grid's is a placeholder for "no
    # limit" (pandapower's case14 rates every line 9,900 MVA), not a limit to judge by.
    own = np.asarray(snapshot.branch.rate_a_mva, np.float64)[idx["branch"]]
    trained = np.asarray(train.branch.rate_a_mva, np.float64)
    placeholder = np.isfinite(own) & (own > PLACEHOLDER_FACTOR * trained)
    rate = np.where(np.isfinite(own) & (own > 0) & ~placeholder, own, trained)
    net = (
        train.astype(jnp.float64)
        .with_loads(
            p_mw=jnp.asarray(np.asarray(snapshot.load.p_mw)[idx["load"]]),
            status=jnp.asarray(np.asarray(snapshot.load.status)[idx["load"]]),
        )
        .with_gens(
            p_mw=jnp.asarray(p_set),
            status=jnp.asarray(gen_status),
            vm_pu=jnp.asarray(np.asarray(snapshot.gen.vm_pu, np.float64)[idx["gen"]]),
        )
        .with_branches(status=jnp.asarray(status), rate_a_mva=jnp.asarray(rate))
    )
    before = gp.solve(net)
    if not bool(before.converged):
        raise SnapshotError("the snapshot's own DC power flow does not solve (islanded slack?)")
    gen_now = np.asarray(before.gen_p_mw)
    t = round(hour * scenarios.STEPS_PER_HOUR) % env.config.episode_steps
    key = jax.random.PRNGKey(0)
    _, state = env.reset(key, params)
    p_max = np.asarray(snapshot.gen.p_max_mw, np.float64)[idx["gen"]]  # the snapshot's limits
    p_min = np.asarray(snapshot.gen.p_min_mw, np.float64)[idx["gen"]]
    avail = np.where(np.isfinite(p_max), p_max, np.asarray(train.gen.p_max_mw)) * gen_status
    base = np.asarray(
        env._base_dispatch(jnp.asarray(load, dtype), jnp.asarray(avail, dtype), params)
    )
    loading_now = np.abs(np.asarray(before.p_from_mw)) / rate * 100 * (status > 0)
    area_gen = np.bincount(env.gen_area, gen_now, env.n_areas)
    f = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    state = replace(
        state,
        t=jnp.int32(t),
        offset_mw=f(gen_now - base),
        gen_mw=f(gen_now),
        branch_on=f(status > 0),
        loading=f(loading_now),
        load_mw=f(load),
        served_mw=f(load),
        avail_mw=f(avail),
        target_factor=f(area_gen / np.maximum(np.bincount(env.gen_area, base, env.n_areas), 1e-6)),
    )
    obs = env._observe(state, params)
    actions = policy(obs)
    from gridrl.env import Exogenous

    x = Exogenous(
        t=jnp.int32(t),
        noise=state.noise,
        wind=state.wind,
        load_mw=f(load),
        avail_mw=f(avail),
        branch_on=f(status > 0),
        repair=state.repair,
        rate_mva=f(rate),
        base_mw=f(base),
    )
    _, _, served, gen, _ = env._decide(state, actions, params, x)
    served, gen = np.asarray(served, np.float64), np.asarray(gen, np.float64)
    after_net = net.with_loads(p_mw=jnp.asarray(served), status=jnp.ones(len(served))).with_gens(
        p_mw=jnp.asarray(gen)
    )
    after = gp.solve(after_net)
    loading_after = np.abs(np.asarray(after.p_from_mw)) / rate * 100 * (status > 0)
    bus_ids = np.asarray(train.topology.bus_ids)[np.asarray(train.topology.gen_bus)]
    warnings_out = [
        f"generator {i} at bus {bus_ids[i]}: the snapshot's setpoint {p_set[i]:.1f} MW is "
        + (
            f"above its Pmax {p_max[i]:.1f} MW"
            if p_set[i] > p_max[i]
            else f"below its Pmin {p_min[i]:.1f} MW"
        )
        for i in np.flatnonzero(
            (gen_status > 0) & ((p_set > p_max + 1e-6) | (p_set < p_min - 1e-6))
        )
    ]
    if placeholder.any():
        warnings_out.append(
            f"{int(placeholder.sum())} of the snapshot's branch ratings are more than "
            f"{PLACEHOLDER_FACTOR:g} times the training grid's (placeholders for no limit, "
            "e.g. pandapower's max_i_ka = 9999): the training grid's ratings are used for them"
        )
    out = {
        "warnings": warnings_out,
        "gen_before_mw": gen_now,
        "gen_after_mw": np.asarray(after.gen_p_mw),
        "load_mw": load,
        "served_mw": served,
        "loading_before": loading_now,
        "loading_after": loading_after,
        "converged": bool(after.converged),
    }
    if ac:
        ac_res = gp.solve(after_net, "ac")
        out["ac_converged"] = bool(ac_res.converged)
        out["ac_loading_after"] = np.asarray(ac_res.loading_percent) * (status > 0)
        out["ac_vm_pu"] = np.asarray(ac_res.vm_pu)
    out["gen_ids"] = np.asarray(train.topology.bus_ids)[np.asarray(train.topology.gen_bus)]
    out["branch_ids"] = np.stack(
        [
            np.asarray(train.topology.bus_ids)[np.asarray(train.topology.branch_from)],
            np.asarray(train.topology.bus_ids)[np.asarray(train.topology.branch_to)],
        ],
        axis=1,
    )
    return out


def format_recommendation(r: dict, top: int = 10) -> str:
    lines = [f"warning: {w}" for w in r.get("warnings", [])]
    change = r["gen_after_mw"] - r["gen_before_mw"]
    order = np.argsort(-np.abs(change))
    lines.append("Recommended setpoints (largest changes; buses are the training case's ids):")
    lines.append(f"{'gen':>4s} {'bus':>5s} {'now MW':>9s} {'set MW':>9s} {'change':>8s}")
    for i in order[:top]:
        if abs(change[i]) < 0.05:
            break
        lines.append(
            f"{i:4d} {int(r['gen_ids'][i]):5d} {r['gen_before_mw'][i]:9.1f} {r['gen_after_mw'][i]:9.1f} {change[i]:+8.1f}"
        )
    shed = float(np.sum(r["load_mw"] - r["served_mw"]))
    lines.append(f"Load shed: {shed:.1f} MW of {float(np.sum(r['load_mw'])):.1f} MW")
    lb, la = r["loading_before"], r["loading_after"]
    lines.append(
        f"Post-action flows (DC, gridphysics): highest loading {lb.max():.1f}% -> {la.max():.1f}%, "
        f"lines above 100%: {int((lb > 100).sum())} -> {int((la > 100).sum())}"
    )
    if "ac_loading_after" in r:
        lines.append(
            f"AC check: {'converged' if r['ac_converged'] else 'NOT converged'}, highest loading "
            f"{np.nanmax(r['ac_loading_after']):.1f}%, voltages {np.nanmin(r['ac_vm_pu']):.3f}-{np.nanmax(r['ac_vm_pu']):.3f} p.u."
        )
    lines.append(f"{'branch':>7s} {'from':>5s} {'to':>5s} {'now %':>7s} {'after %':>8s}")
    for k in np.argsort(-np.maximum(lb, la))[:top]:
        f, t = r["branch_ids"][k]
        lines.append(f"{k:7d} {int(f):5d} {int(t):5d} {lb[k]:7.1f} {la[k]:8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gridrl.recommend",
        description="Recommend generator setpoints (and any load shedding) for a pandapower network "
        "snapshot with a trained policy, and show the post-action flows computed by gridphysics.",
    )
    parser.add_argument("--checkpoint", required=True, help="run directory or its checkpoints/")
    parser.add_argument(
        "--net", required=True, help="pandapower network snapshot (pandapower.to_json)"
    )
    parser.add_argument(
        "--hour", type=float, default=12.0, help="hour of the day the snapshot is at (default: 12)"
    )
    parser.add_argument(
        "--ac", action="store_true", help="also check the recommendation with an AC power flow"
    )
    parser.add_argument(
        "--json",
        dest="json_out",
        help="also write the numbers to this JSON file ('-': to standard output, after the text)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.hour < 24:
        parser.error("--hour must be in [0, 24)")
    if args.json_out and args.json_out != "-":
        try:  # before the work, not after it
            writable_file(args.json_out, "--json")
        except GridRLError as exc:
            parser.error(str(exc))
    from gridrl.checkpoint import CheckpointError
    from gridrl.policy import load_policy

    try:
        table = read_snapshot(args.net)
        snapshot = gp.from_pandapower(table)
        policy = load_policy(args.checkpoint)
        check_bus_count(policy.env_params.network, snapshot, len(table.bus))
        result = recommend(policy, snapshot, hour=args.hour, ac=args.ac)
    except (CheckpointError, SnapshotError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (gp.GridPhysicsError, GridRLError) as exc:  # a snapshot gridphysics refuses
        print(f"error: --net {args.net}: {exc}", file=sys.stderr)
        return 1
    print(format_recommendation(result))
    if args.json_out:
        numbers = {k: v if k == "warnings" else np.asarray(v).tolist() for k, v in result.items()}
        if args.json_out == "-":  # a file named '-' was written (hostile rerun 8)
            json.dump(numbers, sys.stdout)
            print()
        else:
            with open(args.json_out, "w") as fh:
                json.dump(numbers, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
