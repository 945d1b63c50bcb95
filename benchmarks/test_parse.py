"""MATPOWER case files: parse throughput and peak memory (issue 14).

Targets: at least 20 MB/s, and peak memory at most 10x the file size, on the largest
bundled case (pegase13659, 2.3 MB), on a 20 MB file made of its rows (the size of
the largest published grids, twice over), and on two harder shapes: a 20 MB file as
``save_matpower`` writes it (every number in 17-digit ``repr``) and pegase13659 with
a cell array of 13,659 bus names.
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


def _repr_file(tmp_path, megabytes: float):
    """pegase13659's branch table, perturbed in the 9th digit so that every number needs
    17 digits, repeated to ``megabytes`` and written by ``write_matpower``."""
    import numpy as np

    from gridphysics.matpower import write_matpower

    case = load_matpower_dict(cases_dir() / "matpower/case13659pegase.m")
    rng = np.random.default_rng(0)
    branch = case["branch"] * (1 + 1e-9 * rng.random(case["branch"].shape))
    copies = max(1, int(megabytes / 3.2))  # one copy writes about 3.2 MB
    case["branch"] = np.tile(branch, (copies, 1))
    path = tmp_path / "repr.m"
    write_matpower(case, path)
    return path


def _named_file(tmp_path):
    """pegase13659 with one quoted name per bus, one per line."""
    text = (cases_dir() / "matpower/case13659pegase.m").read_text()
    n_bus = len(load_matpower_dict(cases_dir() / "matpower/case13659pegase.m")["bus"])
    names = "".join(f"\t'Bus {i} of the grid';\n" for i in range(n_bus))
    path = tmp_path / "named.m"
    path.write_text(text + "mpc.bus_name = {\n" + names + "};\n")
    return path


@pytest.fixture(
    scope="module", params=["pegase13659", "20 MB", "20 MB of 17-digit numbers", "bus names"]
)
def case_file(request, tmp_path_factory):
    name = request.param
    if name == "pegase13659":
        return name, cases_dir() / "matpower/case13659pegase.m"
    tmp = tmp_path_factory.mktemp("parse")
    if name == "20 MB":
        return name, _big_file(tmp, 20)
    if name == "bus names":
        return name, _named_file(tmp)
    return name, _repr_file(tmp, 20)


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
