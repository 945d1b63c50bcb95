"""Snapshots are data: recommend never imports a module a snapshot names (issue 14)."""

from __future__ import annotations

import json
import sys

import pytest

from gridrl.recommend import SnapshotError, check_snapshot_modules


def test_a_real_pandapower_snapshot_passes(tmp_path):
    import pandapower as pp
    import pandapower.networks as pn

    path = tmp_path / "net.json"
    pp.to_json(pn.case14(), str(path))
    check_snapshot_modules(path)  # no error
    assert pp.from_json(str(path)).bus.shape[0] == 14


def test_a_snapshot_naming_another_module_is_refused_before_any_import(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_snapshot_module.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nclass Boom: pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    inner = json.dumps({"_module": "evil_snapshot_module", "_class": "Boom", "_object": "{}"})
    snapshot = {
        "_module": "pandapower.auxiliary",
        "_class": "pandapowerNet",
        "_object": {"bus": inner},  # hidden one level down, inside a JSON string
    }
    path = tmp_path / "net.json"
    path.write_text(json.dumps(snapshot))
    with pytest.raises(SnapshotError, match="evil_snapshot_module"):
        check_snapshot_modules(path)
    assert not marker.exists() and "evil_snapshot_module" not in sys.modules
    from gridrl.recommend import main

    assert main(["--checkpoint", str(tmp_path), "--net", str(path)]) == 1
    assert not marker.exists()


@pytest.mark.parametrize("content", ["not json", '{"a": 1'])
def test_a_snapshot_that_is_not_json_is_a_snapshot_error(tmp_path, content):
    path = tmp_path / "net.json"
    path.write_text(content)
    with pytest.raises(SnapshotError, match="not JSON"):
        check_snapshot_modules(path)


def _evil_module(tmp_path, monkeypatch, name):
    """A module ``name`` on sys.path that leaves a marker file when imported."""
    marker = tmp_path / f"{name}.ran"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nclass X: pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


def _snapshot_with_table(tmp_path, table_object: str):
    """pandapower's case14 snapshot with one more DataFrame whose ``_object`` (the JSON
    pandas reads) is ``table_object``."""
    import pandapower as pp
    import pandapower.networks as pn

    snap = json.loads(pp.to_json(pn.case14()))
    snap["_object"]["extra"] = {
        "_module": "pandas.core.frame",
        "_class": "DataFrame",
        "_object": table_object,
        "orient": "split",
        "dtype": {"a": "object"},
        "is_multiindex": False,
        "is_multicolumn": False,
    }
    path = tmp_path / "net.json"
    path.write_text(json.dumps(snap))
    return path


def _cell(module: str) -> dict:
    return {
        "columns": ["a"],
        "index": [0],
        "data": [[{"_module": module, "_class": "X", "_object": "{}"}]],
    }


def test_json_in_a_string_after_blanks_is_checked_too(tmp_path, monkeypatch):
    """A table whose JSON string starts with a blank (pandas reads it; the check used
    to look only at strings starting with '{' or '[') naming another module is refused
    before pandapower imports it (hostile rerun: the module ran)."""
    from gridrl.recommend import main

    marker = _evil_module(tmp_path, monkeypatch, "evil_blank_module")
    path = _snapshot_with_table(tmp_path, " \n" + json.dumps(_cell("evil_blank_module")))
    with pytest.raises(SnapshotError, match="evil_blank_module"):
        check_snapshot_modules(path)
    assert main(["--checkpoint", str(tmp_path), "--net", str(path)]) == 1
    assert not marker.exists() and "evil_blank_module" not in sys.modules


def test_a_table_read_from_another_file_cannot_import_a_module(tmp_path, monkeypatch, capsys):
    """pandapower reads a table's ``_object`` that is an absolute path ending in .json
    from that file, which no check of the snapshot's own text sees: while recommend reads
    the snapshot, every import pandapower attempts must be of an allowed module, so the
    module named in the other file is refused and never runs."""
    from gridrl.recommend import main, read_snapshot

    marker = _evil_module(tmp_path, monkeypatch, "evil_file_module")
    other = tmp_path / "table.json"
    other.write_text(json.dumps(_cell("evil_file_module")))
    path = _snapshot_with_table(tmp_path, str(other))
    check_snapshot_modules(path)  # the snapshot's own text names no other module
    with pytest.raises(SnapshotError, match="evil_file_module"):
        read_snapshot(path)
    assert main(["--checkpoint", str(tmp_path), "--net", str(path)]) == 1
    assert "evil_file_module" in capsys.readouterr().err
    assert not marker.exists() and "evil_file_module" not in sys.modules


@pytest.mark.parametrize("kind", ["device", "deep", "deep in a string"])
def test_unreadable_snapshots_are_snapshot_errors(tmp_path, kind):
    """/dev/urandom (or a link to it) was read until memory ran out, and deeply nested
    JSON, also inside a string, was a RecursionError (hostile rerun)."""
    path = tmp_path / "net.json"
    if kind == "device":
        path.symlink_to("/dev/urandom")
    elif kind == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        path.write_text(json.dumps({"a": "[" * 100_000 + "]" * 100_000}))
    with pytest.raises(SnapshotError):
        check_snapshot_modules(path)


def test_reads_in_several_threads_leave_pandapower_s_importer_as_it_was(tmp_path):
    """The import guard is patched in while a snapshot is read; without a lock, threads
    reading at once restored each other's guard and could leave it installed for good."""
    import importlib
    from concurrent.futures import ThreadPoolExecutor

    import pandapower as pp
    import pandapower.networks as pn
    from pandapower import io_utils

    from gridrl.recommend import read_snapshot

    path = tmp_path / "net.json"
    pp.to_json(pn.case14(), str(path))
    with ThreadPoolExecutor(8) as pool:
        nets = list(pool.map(lambda _: read_snapshot(path), range(16)))
    assert all(net.bus.shape[0] == 14 for net in nets)
    assert io_utils.importlib is importlib


def test_a_snapshot_saved_on_another_base_mva_is_the_same_grid():
    """pandapower case14 with sn_mva = 1 instead of 100: DC flows equal to 1e-13, but
    recommend refused it because per-unit reactances were compared unrebased (hostile
    rerun 7). A line whose reactance really changed is still refused."""
    import warnings

    import pandapower.networks as pn

    import gridphysics as gp
    from gridrl.recommend import SnapshotError, check_impedances, match

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = gp.from_pandapower(pn.case14())
        net = pn.case14()
        net.sn_mva = 1.0
        snap = gp.from_pandapower(net)
        check_impedances(train, snap, match(train, snap))  # no error
        net.line.loc[0, "x_ohm_per_km"] *= 10
        changed = gp.from_pandapower(net)
    with pytest.raises(SnapshotError, match="x_pu"):
        check_impedances(train, changed, match(train, changed))


def test_a_bus_count_changed_by_pandapower_s_conversion_is_explained():
    """A 14-bus snapshot with an open line switch converts to 15 buses (pandapower adds
    one at the open end); recommend said "the snapshot has 15 buses" of a 14-bus table
    (hostile rerun 9). The message now says the conversion added it and what to do. A
    grid that really has other buses keeps the plain message."""
    import warnings

    import pandapower as pp
    import pandapower.networks as pn

    import gridphysics as gp
    from gridrl.recommend import check_bus_count

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = gp.from_pandapower(pn.case14())
        net = pn.case14()
        pp.create_switch(net, bus=1, element=0, et="l", closed=False)
        opened = gp.from_pandapower(net)
        other = gp.from_pandapower(pn.case30())
    check_bus_count(train, train, 14)  # no error
    assert opened.topology.n_bus == 15  # the premise: the conversion adds a bus
    with pytest.raises(SnapshotError, match=r"bus table has 14 buses.* gives 15.*open line"):
        check_bus_count(train, opened, 14)
    with pytest.raises(SnapshotError, match=r"has 30 buses \(30 in its bus table\).*with 14"):
        check_bus_count(train, other, 30)
