"""The metric tables: the environment's info matches ENV_INFO, the per-step values
aggregate as the table says, and the log, TensorBoard and progress bar use its names."""

from __future__ import annotations

import json
import struct

import jax
import numpy as np
import pytest

import gridrl
from gridrl.metrics import (
    BY_NAME,
    ENV_INFO,
    ENV_INFO_FIELDS,
    INFO_METRICS,
    LOG_FIELDS,
    METRICS,
    TRAINER_METRICS,
    metric,
    step_values,
)


def test_env_info_holds_exactly_env_info_on_ieee14():
    env, params = gridrl.make("ieee14")
    key = jax.random.PRNGKey(0)
    actions = {a: np.zeros(env.action_space(a).shape, np.float32) for a in env.agents}
    # one reset and one step, traced for their shapes without compiling them
    _, state = jax.eval_shape(env.reset, key, params)
    _, _, _, _, info = jax.eval_shape(env.step, key, state, actions, params)
    assert set(info) == set(ENV_INFO)
    assert all(info[k].shape == () for k in info)  # one number per step and environment


def test_every_env_info_field_and_metric_is_described_with_a_unit():
    for row in (*ENV_INFO_FIELDS, *METRICS):
        assert row.description and row.unit is not None, row
    for m in METRICS:
        assert m.source in ("info", "trainer", "log")
        assert set(m.info) <= set(ENV_INFO)
        assert (m.tag is None) == (m.group is None)
    assert len(BY_NAME) == len(METRICS)


def test_step_values_take_means_and_shares_as_the_table_says():
    rng = np.random.default_rng(0)
    info = {k: rng.normal(size=6).astype(np.float32) for k in ENV_INFO}
    info["overloaded_lines"] = np.array([0, 2, 0, 0, 1, 0])
    info["trips"] = np.array([0, 0, 1, 0, 3, 0])
    values = step_values(info)
    assert list(values) == [m.name for m in INFO_METRICS]
    assert all(v.dtype == np.float32 for v in values.values())
    np.testing.assert_array_equal(values["total_cost"], info["total_cost"])
    np.testing.assert_array_equal(values["overload_share"], [0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(values["violation_rate"], [0, 1, 1, 0, 1, 0])


def test_names_derive_from_the_table():
    assert LOG_FIELDS[:4] == ("update", "env_steps", "time", "steps_per_s")
    assert "finite" in TRAINER_METRICS and "finite" not in LOG_FIELDS
    assert not {"update", "env_steps", "time", "steps_per_s"} & set(TRAINER_METRICS)
    assert metric("total_cost").tag == "cost/total_cost"
    assert metric("violation_rate").label == "violation rate, overload or trip (share of steps)"
    with pytest.raises(KeyError, match=r"no metric 'reward_total'.*total_cost"):
        metric("reward_total")


def _event_tags(path) -> set[str]:
    """Scalar tags in a TensorBoard event file (TFRecord framing: length, its CRC,
    the Event proto, its CRC)."""
    from tensorboardX.proto import event_pb2

    data, tags, pos = path.read_bytes(), set(), 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos : pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
        tags |= {v.tag for v in event.summary.value}
        pos += 12 + n + 4
    return tags


def test_the_log_writes_the_table_fields_and_tensorboard_tags(tmp_path):
    from gridrl.train import MetricsLog, _postfix

    record = {k: 1.5 for k in LOG_FIELDS} | {"update": 1, "env_steps": 64}
    record["return"] = float("nan")
    log = MetricsLog(tmp_path)
    log.write(record)
    log.close()
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert list(line) == list(LOG_FIELDS)
    assert line["return"] is None
    (events,) = tmp_path.glob("events.out.tfevents.*")
    expected = {m.tag for m in METRICS if m.logged and m.tag and m.name != "return"}
    assert _event_tags(events) == expected
    # the progress bar: the last finite value of each metric with a format
    chunk = {k: np.array([1.0, 2.0]) for k in TRAINER_METRICS} | {"steps_per_s": np.ones(2)}
    chunk["return"] = np.array([3.25, np.nan])
    text = _postfix(chunk)
    assert text == "1 steps/s | return 3.2 | cost/step 2$ | viol 200.0% | level 2"
