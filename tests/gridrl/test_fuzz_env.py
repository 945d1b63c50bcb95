"""Property-based hostile actions for env.step (issue 14): whatever the agents send, the
step returns, nothing non-finite enters the state, and every non-finite action is
flagged. Budget: 25 examples, times FUZZ_SCALE (tests/conftest.py) for a long run."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gridrl.env import make
from tests.conftest import fuzz_examples

EXAMPLES = fuzz_examples(25)
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, 1.0, -1.0, 1e30, -1e30, np.nan, np.inf]),
)


@functools.cache
def _env():
    env, params = make("ieee14", level=4, n_areas=2)
    _, state = env.reset(jax.random.key(0), params)
    return env, params, state, jax.jit(env.step)


def _actions():
    env, *_ = _env()
    return st.fixed_dictionaries(
        {a: arrays(np.float32, env.action_space(a).shape, elements=VALUES) for a in env.agents}
    )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(actions=_actions(), seed=st.integers(0, 2**31 - 1))
def test_any_action_gives_a_finite_state_and_a_flag(actions, seed):
    _, params, state, step = _env()
    _, new, reward, _, info = step(
        jax.random.key(seed), state, {a: jnp.asarray(v) for a, v in actions.items()}, params
    )
    bad = sum(not np.isfinite(v).all() for v in actions.values())
    assert int(info["invalid_actions"]) == bad
    for name in ("gen_mw", "offset_mw", "served_mw", "target_factor", "heat", "load_mw"):
        assert np.isfinite(np.asarray(getattr(new, name))).all(), name
    assert np.isfinite(float(reward["strategic"]))
