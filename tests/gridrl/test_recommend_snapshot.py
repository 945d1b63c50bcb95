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
