"""DC power flow: single solves and batched throughput against the peers.

Targets (issue #2): single jitted ieee118 solve >= 100x pandapower rundcpp; batched
DC >= 3x lightsim2grid InjectionSweep (DC_KLU, 2 threads) on ieee118 and >= 1x on
pegase1354.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

import gridphysics as gp
from benchmarks.conftest import OURS, median_seconds
from benchmarks.peers import (
    lightsim_sweep_runner,
    pandapower_net,
    single_solve_peers,
)

CASES = {"ieee118": "case118", "pegase1354": "case1354pegase"}
SCENARIOS = {"ieee118": 10_000, "pegase1354": 1_000}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    name = request.param
    return name, gp.load_case(name), pandapower_net(CASES[name])


def test_dc_single(benchmark, record, case):
    name, network, _ = case
    group = f"DC single solve, {name}"
    gp.solve(network)  # compile outside the timing
    benchmark.group = group
    benchmark(lambda: jax.block_until_ready(gp.solve(network)))
    record(
        group,
        OURS,
        median_seconds(benchmark),
        target={"pandapower rundcpp": 100.0} if name == "ieee118" else None,
    )


SYNC_SCRIPT = """
import time, jax, gridphysics as gp
net = gp.load_case({name!r})
for _ in range(50):
    jax.block_until_ready(gp.solve(net))
times = []
for _ in range(2000):
    t = time.perf_counter(); jax.block_until_ready(gp.solve(net)); times.append(time.perf_counter() - t)
times.sort()
print(times[len(times) // 2])
"""


def test_dc_single_sync_dispatch(record, case):
    """The same solve in a process started with GRIDPHYSICS_CPU_SYNC_DISPATCH=1 (median of 2000)."""
    import os
    import subprocess
    import sys

    name = case[0]
    env = {**os.environ, "GRIDPHYSICS_CPU_SYNC_DISPATCH": "1"}
    out = subprocess.run(
        [sys.executable, "-c", SYNC_SCRIPT.format(name=name)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    record(
        f"DC single solve, {name}",
        f"{OURS} (GRIDPHYSICS_CPU_SYNC_DISPATCH=1)",
        float(out.stdout.split()[-1]),
    )


@pytest.mark.parametrize("tool", ["pandapower", "PYPOWER", "lightsim2grid"])
def test_dc_single_peer(benchmark, record, case, tool):
    name, _, net = case
    ((label, run),) = [
        (k, v) for k, v in single_solve_peers("dc", name, net).items() if k.startswith(tool)
    ]
    group = f"DC single solve, {name}"
    benchmark.group = group
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        benchmark(run)
    record(group, label, median_seconds(benchmark))


@pytest.mark.parametrize("outputs", ["angles+flows", "full result", "float32"])
def test_dc_batched(benchmark, record, case, outputs):
    """The same job as lightsim2grid's sweep: angles and branch flows per scenario
    (``"angles+flows"``); ``"full result"`` returns every field of the result;
    ``"float32"`` is angles and flows on ``network.astype(float32)`` (as the RL layer uses)."""
    name, network, _ = case
    if outputs == "float32":
        network = network.astype(jax.numpy.float32)
    n = SCENARIOS[name]
    rng = np.random.default_rng(0)
    scale = jax.numpy.asarray(1.0 + 0.1 * rng.standard_normal((n, network.n_load)), network.dtype)

    def one(s):
        r = gp.solve(network.with_loads(p_mw=network.load.p_mw * s))
        return r if outputs == "full result" else (r.va_rad, r.p_from_mw, r.converged)

    solve_batch = jax.jit(jax.vmap(one))
    res = jax.block_until_ready(solve_batch(scale))
    assert bool((res.converged if outputs == "full result" else res[2]).all())
    group = f"DC batched, {name} ({n} scenarios)"
    benchmark.group = group
    benchmark(lambda: jax.block_until_ready(solve_batch(scale)))
    tool = OURS if outputs == "angles+flows" else f"{OURS} ({outputs})"
    target = {"lightsim2grid InjectionSweep DC_KLU 2 threads": 3.0 if name == "ieee118" else 1.0}
    record(
        group,
        tool,
        median_seconds(benchmark) / n,
        unit="scenario",
        target=target if tool == OURS else None,
    )


def test_dc_batched_lightsim2grid(benchmark, record, case):
    name, _, net = case
    n = SCENARIOS[name]
    run = lightsim_sweep_runner(net, "DC_KLU", n)

    group = f"DC batched, {name} ({n} scenarios)"
    benchmark.group = group
    benchmark(run)
    record(
        group,
        "lightsim2grid InjectionSweep DC_KLU 2 threads",
        median_seconds(benchmark) / n,
        unit="scenario",
    )
