"""MATPOWER case files: parse throughput and peak memory (issue 14).

Targets: at least 20 MB/s, and peak memory at most 10x the file size, on the largest
bundled case (pegase13659, 2.3 MB) and on a 20 MB file made of its rows (the size of
the largest published grids, twice over).
"""

from __future__ import annotations

import os
import tracemalloc

import pytest

from benchmarks.conftest import OURS, median_seconds
from gridphysics.cases import cases_dir
from gridphysics.matpower import load_matpower_dict

MIN_MB_PER_S = 20.0
MAX_MEMORY_RATIO = 10.0


def _big_file(tmp_path, megabytes: float):
    """pegase13659 with its branch table repeated until the file holds ``megabytes``."""
    text = (cases_dir() / "matpower/case13659pegase.m").read_text()
    start = text.index("\n", text.index("mpc.branch = [")) + 1
    end = text.index("];", start)
    rows = text[start:end]
    copies = max(1, int(megabytes * 1e6 / len(rows)))
    path = tmp_path / "big.m"
    path.write_text(text[:end] + rows * copies + text[end:])
    return path


@pytest.fixture(scope="module", params=["pegase13659", "20 MB"])
def case_file(request, tmp_path_factory):
    if request.param == "pegase13659":
        return request.param, cases_dir() / "matpower/case13659pegase.m"
    return request.param, _big_file(tmp_path_factory.mktemp("parse"), 20)


def test_parse_throughput_and_memory(benchmark, record, case_file):
    name, path = case_file
    megabytes = os.path.getsize(path) / 1e6
    benchmark.group = f"MATPOWER parse, {name}"
    benchmark.pedantic(load_matpower_dict, args=(path,), rounds=5, iterations=1)
    record(
        benchmark.group,
        OURS,
        median_seconds(benchmark) / megabytes,
        unit="MB",
        min_rate=MIN_MB_PER_S,
    )
    tracemalloc.start()
    try:
        load_matpower_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    ratio = peak / (megabytes * 1e6)
    print(f"\n{name}: {megabytes:.1f} MB, peak traced memory {ratio:.1f}x the file")
    assert ratio <= MAX_MEMORY_RATIO, ratio
