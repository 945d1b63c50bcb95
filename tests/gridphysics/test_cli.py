"""The command line: python -m gridphysics CASE."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

import gridphysics as gp
from gridphysics.__main__ import main


def test_cli_summary_in_process(capsys):
    assert main(["ieee14", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "DC power flow of ieee14: 14 buses, 20 branches" in out
    assert "converged: yes" in out
    # The slack line reports the solved output of the reference unit.
    r = gp.solve(gp.load_case("ieee14"))
    assert f"generator 0 at bus 1: {float(r.gen_p_mw[0]):.2f} MW" in out
    va = np.rad2deg(np.asarray(r.va_rad))
    assert f"angle spread: {va.max() - va.min():.2f} deg" in out
    assert out.count("\n") >= 9


def test_cli_ratings_and_float32(capsys):
    assert main(["ieee30", "--top", "2", "--float32"]) == 0
    out = capsys.readouterr().out
    assert "float32" in out and "most loaded branches" in out


def test_cli_errors_are_one_line_and_exit_2(capsys, tmp_path):
    assert main(["no_such_case"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown case 'no_such_case'")
    bad = tmp_path / "bad.m"
    bad.write_text("function mpc = bad\nmpc.baseMVA = 100;\nmpc.bus = [1 3 0;\n")
    assert main([str(bad)]) == 2
    assert "line 3" in capsys.readouterr().err


def test_cli_as_a_module_with_help():
    out = subprocess.run(
        [sys.executable, "-m", "gridphysics", "--help"], capture_output=True, text=True, check=True
    )
    assert "Named cases:" in out.stdout and "ieee118" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "gridphysics", "ieee14", "--top", "-1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--top" in bad.stderr


def test_cli_ac_summary(capsys):
    assert main(["ieee14", "--method", "ac", "--top", "2"]) == 0
    out = capsys.readouterr().out
    r = gp.solve(gp.load_case("ieee14"), "ac")
    assert "AC power flow of ieee14" in out
    assert (
        f"losses {float(r.total_loss_mw):.2f} MW" in out
        and f"iterations {int(r.iterations)}" in out
    )
