"""The paired bootstrap interval of the normalized score (gridrl.evaluate)."""

from __future__ import annotations

import numpy as np

from gridrl.baselines import EpisodeMetrics
from gridrl.evaluate import score_intervals, scores, training_summary


def _metrics(day_cost) -> EpisodeMetrics:
    day_cost = np.asarray(day_cost, float)
    return EpisodeMetrics(
        cost=float(day_cost.mean()),
        overload_step_share=0.0,
        energy_not_served_mwh=0.0,
        trips=0.0,
        interventions=0.0,
        survival=1.0,
        reward=0.0,
        day_cost=tuple(day_cost),
    )


def test_interval_matches_the_normal_interval_of_a_mean_difference():
    """With the oracle exactly 100 $ below do-nothing every day, the score is the mean
    daily saving; its 95 % interval is then mean +- 1.96 sd / sqrt(n) (large n)."""
    rng = np.random.default_rng(0)
    n = 400
    dn = rng.normal(1000.0, 50.0, n)
    saving = rng.normal(60.0, 30.0, n)
    results = {
        "do_nothing": _metrics(dn),
        "day_ahead": _metrics(dn - 100.0),
        "policy": _metrics(dn - saving),
    }
    lo, hi = score_intervals(results, resamples=4000, seed=1)["policy"]
    half = 1.96 * saving.std(ddof=1) / np.sqrt(n)
    assert abs((lo + hi) / 2 - saving.mean()) < 0.15 * half
    assert abs((hi - lo) / 2 - half) < 0.1 * half
    assert lo < scores(results)["policy"] < hi


def test_pairing_removes_the_common_day_to_day_spread():
    """Days differ a lot, but the policy saves exactly 40 % of the span every day: a
    paired interval is a point; an unpaired one would be wide."""
    dn = np.linspace(500.0, 5000.0, 30)
    results = {
        "do_nothing": _metrics(dn),
        "day_ahead": _metrics(dn * 0.9),
        "policy": _metrics(dn - 0.4 * dn * 0.1),
    }
    lo, hi = score_intervals(results, seed=2)["policy"]
    assert abs(lo - 40.0) < 1e-9 and abs(hi - 40.0) < 1e-9
    assert score_intervals(results)["do_nothing"] == (0.0, 0.0)


def test_undefined_without_references_or_days():
    one = {"do_nothing": _metrics([1.0]), "day_ahead": _metrics([0.5]), "policy": _metrics([0.7])}
    assert all(np.isnan(v).all() for v in score_intervals(one).values())
    no_oracle = {"do_nothing": _metrics([1.0, 2.0]), "policy": _metrics([0.7, 1.0])}
    assert all(np.isnan(v).all() for v in score_intervals(no_oracle).values())
    # the oracle costs more than do-nothing: no scale, no interval
    flipped = {"do_nothing": _metrics([1.0, 2.0]), "day_ahead": _metrics([3.0, 4.0])}
    assert all(np.isnan(v).all() for v in score_intervals(flipped).values())


def _log(levels) -> list[dict]:
    return [
        {"update": i + 1, "env_steps": 8192 * (i + 1), "time": 60.0 * i, "steps_per_s": 5000.0}
        | {"level": float(lv)}
        for i, lv in enumerate(levels)
    ]


def test_training_summary_says_when_the_curriculum_stalled():
    stalled = training_summary(_log([0, 1, 2, 3, 3]), max_level=4, eval_level=4)
    assert stalled["stalled"] and stalled["final_level"] == 3
    assert "stalled at level 3" in stalled["text"]
    assert "evaluated at level 4 without having trained there" in stalled["text"]
    assert stalled["minutes"] == 4.0 and stalled["env_steps"] == 5 * 8192

    done = training_summary(_log([0, 2, 4]), max_level=4, eval_level=4)
    assert not done["stalled"] and "stalled" not in done["text"]
    # a run told to stop at level 2 did not stall there
    capped = training_summary(_log([0, 1, 2]), max_level=2, eval_level=2)
    assert not capped["stalled"]
    assert training_summary([], max_level=4, eval_level=4) is None
    # why it stalled: too few updates at the last level, or violations too high
    short = training_summary(_log([0, 0, 1, 1, 2]), max_level=4, eval_level=4, min_updates=2)
    assert "after 1 update(s) at that level, before the 2" in short["text"]
    assert "violation rate" not in short["text"]
    log = _log([0, 0, 1, 1, 1])
    log[-1]["violation_rate"] = 0.25
    high = training_summary(log, max_level=4, eval_level=4, min_updates=2)
    assert (
        "the violation rate never fell far enough to advance (last update: 25.0 %" in high["text"]
    )


def test_the_verdict_names_only_the_baselines_that_were_not_run():
    """Hostile rerun 10: with --baselines do_nothing the report said it needs
    do_nothing and day_ahead, 'which were not run', though do_nothing ran."""
    from gridrl.evaluate import _verdict

    one = _verdict({"policy": 0, "do_nothing": 0}, {"policy": np.nan, "do_nothing": 0.0})
    assert "day_ahead was not run" in one and "do_nothing was" not in one
    both = _verdict({"policy": 0}, {"policy": np.nan})
    assert "do_nothing and day_ahead were not run" in both
    ran = _verdict(
        {"policy": 0, "do_nothing": 0, "greedy": 0, "day_ahead": 0},
        {"policy": 50.0, "do_nothing": 0.0, "greedy": 60.0, "day_ahead": 100.0},
    )
    assert ran == "The trained policy beats: do_nothing (on the normalized score)."


def test_a_verdict_of_no_win_names_only_the_baselines_that_ran():
    """Hostile rerun 11: with --baselines do_nothing,day_ahead a losing policy was told
    it beat 'none of do_nothing, greedy', though greedy never ran."""
    from gridrl.evaluate import _verdict

    results = {"policy": 0, "do_nothing": 0, "day_ahead": 0}
    got = _verdict(results, {"policy": -5.0, "do_nothing": 0.0, "day_ahead": 100.0})
    assert got == "The trained policy beats: none of do_nothing (on the normalized score)."
