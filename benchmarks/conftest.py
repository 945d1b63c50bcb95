"""Benchmark harness: ``pytest benchmarks/ --benchmark``.

Without ``--benchmark`` every test here is skipped, so a plain ``pytest benchmarks/``
stays quick. Each benchmark records its time per unit of work (one solve, one
scenario) with the ``record`` fixture; at the end of the run a table per group
prints every tool's time and gridphysics's speed-up over each peer measured in the
same run, next to the target where the project has one. A group whose gridphysics rows
all carry a batch size (``record(..., batch=n)``) is a batch sweep: its rows print by
batch size, followed by the ratio of the cost per unit at the largest batch to that at
the smallest (1.00 = flat: a bigger batch costs no more per environment step).
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict

import pytest

_RESULTS: dict[str, dict[str, float]] = defaultdict(dict)
_UNITS: dict[str, str] = {}
_TARGETS: dict[str, dict[str, float]] = defaultdict(dict)
_RATE_TARGETS: dict[str, dict[str, float]] = defaultdict(dict)
_BATCHES: dict[str, dict[str, int]] = defaultdict(dict)

OURS = "gridphysics"


def pytest_addoption(parser):
    parser.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="run the benchmarks in benchmarks/ (skipped otherwise) and print speed-up ratios",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--benchmark"):
        return
    skip = pytest.mark.skip(reason="benchmarks run only with --benchmark")
    for item in items:
        if "benchmarks" in item.nodeid.split("/")[0] or item.nodeid.startswith("benchmarks"):
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _quiet():
    logging.getLogger("pandapower").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore")


@pytest.fixture
def record():
    """``record(group, tool, seconds_per_unit, unit="solve", target=None, min_rate=None,
    batch=None)``.

    ``target`` (for gridphysics rows) is the required speed-up over a named peer,
    given as ``{"peer": ratio}``; ``min_rate`` an absolute target in units per second;
    ``batch`` the batch size of a row of a batch sweep (see the module docstring).
    """

    def _record(
        group: str,
        tool: str,
        seconds: float,
        unit: str = "solve",
        target: dict[str, float] | None = None,
        min_rate: float | None = None,
        batch: int | None = None,
    ) -> None:
        _RESULTS[group][tool] = seconds
        _UNITS[group] = unit
        if target:
            _TARGETS[group].update(target)
        if min_rate:
            _RATE_TARGETS[group][tool] = min_rate
        if batch is not None:
            _BATCHES[group][tool] = batch

    return _record


def median_seconds(benchmark) -> float:
    return float(benchmark.stats.stats.median)


def _fmt(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:9.3f} ms"
    return f"{seconds * 1e6:9.2f} us"


def _is_sweep(group: str) -> bool:
    ours = [tool for tool in _RESULTS[group] if tool.startswith(OURS)]
    return bool(ours) and all(tool in _BATCHES[group] for tool in ours)


def _sweep_line(group: str) -> str | None:
    """How the cost per unit changes from the smallest batch of a sweep to the largest."""
    batches = _BATCHES[group]
    rows = sorted((batches[tool], _RESULTS[group][tool]) for tool in batches)
    if len(rows) < 2:
        return None
    (small, t_small), (large, t_large) = rows[0], rows[-1]
    ratio = t_large / t_small
    verdict = "flat or better" if ratio <= 1.0 else "costlier per step at the larger batch"
    return (
        f"    cost per {_UNITS[group]}, {large:,} vs {small:,}: {ratio:.2f}x ({verdict}; "
        f"{1 / t_large:,.0f} vs {1 / t_small:,.0f} {_UNITS[group]}s/s)"
    )


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("gridphysics speed-up over peers (same run; ratio = peer time / gridphysics time)")
    for group in sorted(_RESULTS):
        rows = _RESULTS[group]
        sweep = _is_sweep(group)
        tr.write_line(f"{group}  [time per {_UNITS[group]}{', by batch size' if sweep else ''}]")
        if sweep:  # by batch size, the peers after
            batches = _BATCHES[group]
            order = sorted(rows.items(), key=lambda kv: (batches.get(kv[0], float("inf")), kv[1]))
        else:
            order = sorted(rows.items(), key=lambda kv: kv[1])
        for tool, seconds in order:
            line = f"    {tool:48s} {_fmt(seconds)}   {1 / seconds:12,.0f} {_UNITS[group]}s/s"
            goal = _RATE_TARGETS[group].get(tool)
            if goal:
                line += (
                    f"   (target >= {goal:,.0f}/s: {'met' if 1 / seconds >= goal else 'NOT met'})"
                )
            tr.write_line(line)
        ours = {k: v for k, v in rows.items() if k.startswith(OURS)}
        peers = {k: v for k, v in rows.items() if not k.startswith(OURS)}
        for mine, my_time in ours.items():
            for peer, seconds in peers.items():
                ratio = seconds / my_time
                line = f"    {mine} vs {peer}: {ratio:.2f}x"
                target = _TARGETS[group].get(peer) if mine == OURS else None
                if target is not None:
                    line += f"   (target >= {target:g}x: {'met' if ratio >= target else 'NOT met'})"
                tr.write_line(line)
        if sweep and (line := _sweep_line(group)):
            tr.write_line(line)
