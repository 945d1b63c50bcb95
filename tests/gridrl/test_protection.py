"""The thermal relay (gridrl.protection) against the closed-form trip time of a
first-order thermal replica (IEC 60255-149): from heat h0 at constant loading L (per
unit of the continuous rating), the heat reaches h_trip after
t = tau ln((L^2 - h0) / (L^2 - h_trip)).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from gridrl.protection import ThermalRelay


def _steps_to_trip(relay: ThermalRelay, loading_percent: float, heat0: float, limit: int = 50):
    heat = jnp.asarray([heat0])
    for step in range(1, limit + 1):
        heat = relay.heat(heat, jnp.asarray([loading_percent]))
        if bool(relay.trips(heat, jnp.asarray([loading_percent]), jnp.asarray([True]))[0]):
            return step
    return None


def test_default_settings_by_hand():
    relay = ThermalRelay()
    # E = 1.2, 15 min at E from the continuous rating, tau = 10 min
    assert relay.trip_heat == pytest.approx(1.44 - 0.44 * math.exp(-1.5), rel=1e-12)
    assert relay.decay == pytest.approx(math.exp(-1.5), rel=1e-12)
    # from the continuous rating, the emergency rating holds exactly one 15-minute step
    assert _steps_to_trip(relay, 120.0, 1.0) == 1
    # a line that ran at 80 % holds it one step longer
    assert _steps_to_trip(relay, 120.0, 0.64) == 2
    # steady loading below sqrt(trip_heat) (115.8 %) never trips, above it always does
    assert _steps_to_trip(relay, 115.0, 1.0) is None
    assert _steps_to_trip(relay, 117.0, 1.0) == 2


@pytest.mark.parametrize("tau", [5.0, 10.0, 30.0, 90.0])
@pytest.mark.parametrize("load", [116.0, 125.0, 140.0])
@pytest.mark.parametrize("heat0", [0.0, 0.5, 1.0])
def test_trip_step_matches_the_closed_form_trip_time(tau, load, heat0):
    relay = ThermalRelay(time_constant_minutes=tau, instant_trip_percent=200.0)
    l2 = (load / 100) ** 2
    if l2 <= relay.trip_heat:
        assert _steps_to_trip(relay, load, heat0) is None
        return
    t = tau * math.log((l2 - heat0) / (l2 - relay.trip_heat)) if heat0 < relay.trip_heat else 0
    expected = max(1, math.ceil(t / relay.step_minutes - 1e-9))
    assert _steps_to_trip(relay, load, heat0) == expected


def test_memory_adds_up_where_a_reset_counter_forgets():
    """A line alternating overloads with steps at 100 %: the heat it keeps between them
    trips it, where a counter reset at the first step under 100 % would not."""
    relay = ThermalRelay(time_constant_minutes=60.0)
    heat = jnp.asarray([1.0])
    tripped = None
    for step, load in enumerate([118, 100, 118, 100, 118, 100, 118, 100], start=1):
        heat = relay.heat(heat, jnp.asarray([float(load)]))
        if bool(relay.trips(heat, jnp.asarray([float(load)]), jnp.asarray([True]))[0]):
            tripped = step
            break
    # by hand: a = exp(-1/4); h = 1.3924 - 0.3924 a = 1.0868 ... rises by the kept heat
    a = math.exp(-0.25)
    h, by_hand = 1.0, None
    for step, load in enumerate([118, 100] * 4, start=1):
        h = (load / 100) ** 2 + (h - (load / 100) ** 2) * a
        if h >= relay.trip_heat:
            by_hand = step
            break
    assert tripped == by_hand is not None and tripped > 1


def test_undefined_loadings_neither_heat_nor_trip_and_instant_trips():
    relay = ThermalRelay()
    loading = jnp.asarray([np.nan, np.inf, 151.0, 149.0])
    heat = relay.heat(jnp.ones(4), loading)
    np.testing.assert_allclose(heat[:2], math.exp(-1.5), rtol=1e-6)  # cooling
    live = jnp.asarray([True, True, True, False])
    trips = relay.trips(jnp.zeros(4), loading, live)
    np.testing.assert_array_equal(trips, [False, False, True, False])
    with pytest.raises(ValueError, match="emergency_percent"):
        ThermalRelay(emergency_percent=95.0)
    with pytest.raises(ValueError, match="time_constant_minutes"):
        ThermalRelay(time_constant_minutes=0.0)
