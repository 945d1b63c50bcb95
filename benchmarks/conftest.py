"""Benchmark harness: ``pytest benchmarks/ --benchmark``.

Without ``--benchmark`` every test here is skipped, so a plain ``pytest benchmarks/``
stays quick. Each benchmark records its time per unit of work (one solve, one
scenario) with the ``record`` fixture; at the end of the run a table per group
prints every tool's time and gridphysics's speed-up over each peer measured in the
same run, next to the target where the project has one.
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
    """``record(group, tool, seconds_per_unit, unit="solve", target=None)``.

    ``target`` (for gridphysics rows) is the required speed-up over a named peer,
    given as ``{"peer": ratio}``; ``min_rate`` an absolute target in units per second.
    """

    def _record(
        group: str, tool: str, seconds: float, unit: str = "solve", target=None, min_rate=None
    ):
        _RESULTS[group][tool] = seconds
        _UNITS[group] = unit
        if target:
            _TARGETS[group].update(target)
        if min_rate:
            _RATE_TARGETS[group][tool] = min_rate

    return _record


def median_seconds(benchmark) -> float:
    return float(benchmark.stats.stats.median)


def _fmt(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:9.3f} ms"
    return f"{seconds * 1e6:9.2f} us"


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("gridphysics speed-up over peers (same run; ratio = peer time / gridphysics time)")
    for group in sorted(_RESULTS):
        rows = _RESULTS[group]
        tr.write_line(f"{group}  [time per {_UNITS[group]}]")
        for tool, seconds in sorted(rows.items(), key=lambda kv: kv[1]):
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
