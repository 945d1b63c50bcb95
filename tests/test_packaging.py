"""The built wheel carries the named cases and works outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    try:
        import hatchling.build  # noqa: F401

        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ]
    except ImportError:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    (found,) = out.glob("gridphysics-*.whl")
    return found


def test_wheel_contains_cases(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "gridphysics/_cases/catalogue.toml" in names
    for case in ("case14", "case118", "case9241pegase"):
        assert f"gridphysics/_cases/matpower/{case}.m" in names
    assert "gridrl/__init__.py" in names


def test_installed_wheel_loads_named_cases_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import gridphysics as gp, pathlib; "
        f"assert pathlib.Path(gp.__file__).is_relative_to(pathlib.Path(r'{target}')), gp.__file__; "
        "r = gp.solve(gp.load_case('ieee118')); print(bool(r.converged), gp.cases.cases_dir().name)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "_cases"]
