"""The stored area partitions in cases/areas.toml are what the code computes."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

import gridphysics as gp
from gridphysics.cases import cases_dir
from gridrl.areas import area_source, partition

with open(cases_dir() / "areas.toml", "rb") as fh:
    CATALOGUE = tomllib.load(fh)


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_stored_partition_matches(case):
    net = gp.load_case(case)
    areas = partition(net, 4)
    entry = CATALOGUE[case]
    assert entry["source"] == area_source(net, 4)
    for a in range(4):
        assert sorted(net.topology.bus_ids[areas == a].tolist()) == sorted(entry[f"area_{a}"])
    stored = np.concatenate([entry[f"area_{a}"] for a in range(4)])
    assert sorted(stored.tolist()) == sorted(net.topology.bus_ids.tolist())
