"""Baselines on the same seeded days: the oracle is cheapest, do-nothing meets overloads."""

from __future__ import annotations

import pytest

from gridrl.baselines import evaluate_baselines, format_table, main


@pytest.fixture(scope="module")
def level4():
    return evaluate_baselines("ieee118", episodes=1, seed=0, level=4)


def test_dc_opf_oracle_is_best_on_cost_and_do_nothing_overloads(level4):
    costs = {name: m.cost for name, m in level4.items()}
    assert min(costs, key=costs.get) == "dc_opf", costs
    assert level4["do_nothing"].overload_step_share > 0.05
    assert level4["dc_opf"].survival >= level4["do_nothing"].survival
    for m in level4.values():
        assert 0 <= m.overload_step_share <= 1 and 0 < m.survival <= 1
        assert m.energy_not_served_mwh >= 0 and m.trips >= 0 and m.interventions >= 0


def test_table_and_cli(level4, capsys):
    table = format_table(level4)
    for name in ("do_nothing", "greedy", "random", "dc_opf"):
        assert name in table
    assert (
        main(
            [
                "--case",
                "ieee14",
                "--episodes",
                "1",
                "--level",
                "1",
                "--baselines",
                "do_nothing,greedy",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ieee14, level 1" in out and "greedy" in out and "dc_opf" not in out
    with pytest.raises(SystemExit):
        main(["--baselines", "magic"])
