"""Shared test helpers: pandapower network enumeration, quiet pandapower runs and the
fuzz budget."""

from __future__ import annotations

import copy
import inspect
import logging
import os
import warnings

import pytest

import gridphysics


def fuzz_examples(ci_budget: int) -> int:
    """Hypothesis examples for a fuzz test: its CI budget times ``FUZZ_SCALE`` (an
    environment variable, default 1). ``FUZZ_SCALE=50 pytest -k fuzz`` is the long run."""
    raw = os.environ.get("FUZZ_SCALE", "1")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"FUZZ_SCALE must be a number, got {raw!r}") from None
    if not scale > 0:
        raise ValueError(f"FUZZ_SCALE must be positive, got {raw!r}")
    return max(1, round(ci_budget * scale))


def pandapower_network_names() -> list[str]:
    """Every function in pandapower.networks that builds a net without arguments."""
    import pandapower as pp
    import pandapower.networks as pn

    names = []
    for name, fn in inspect.getmembers(pn, inspect.isfunction):
        if name.startswith("_"):
            continue
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            continue
        if all(
            p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            for p in params
        ):
            names.append(name)
    del pp
    return sorted(names)


def quiet_pandapower():
    logging.getLogger("pandapower").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module="pandapower")


def build_pandapower_net(name: str):
    """The named pandapower.networks net, or None if it is not a pandapowerNet."""
    import pandapower as pp
    import pandapower.networks as pn

    quiet_pandapower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = getattr(pn, name)()
    return net if isinstance(net, pp.pandapowerNet) else None


def run_rundcpp(net):
    """A copy of ``net`` after pandapower's rundcpp, or the exception it raised."""
    import pandapower as pp

    net = copy.deepcopy(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pp.rundcpp(net)
        except Exception as exc:  # pandapower raises many types; the test inspects it
            return exc
    return net


@pytest.fixture(scope="session")
def ieee14():
    return gridphysics.load_case("ieee14")


@pytest.fixture(scope="session")
def ieee118():
    return gridphysics.load_case("ieee118")


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist's ``--dist loadgroup`` (the README's test line), the physics
    tests and the RL tests run in two processes side by side: each package's tests keep
    one process, in file order, so their module fixtures are built once. Keeping the
    packages apart also keeps the RL suite off an XLA CPU compiler abort (SIGABRT while
    compiling a training update) seen only after the whole physics suite had compiled
    its programs in the same process."""
    for item in items:
        top = item.nodeid.split("/")[1] if item.nodeid.startswith("tests/") else ""
        group = "gridrl" if top == "gridrl" else "gridphysics"
        item.add_marker(pytest.mark.xdist_group(group))
