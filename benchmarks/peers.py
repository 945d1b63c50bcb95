"""How the peers are called: pandapower, PYPOWER and lightsim2grid on the same case."""

from __future__ import annotations

import copy
import time
import warnings

import numpy as np


def pandapower_net(name: str):
    import pandapower as pp
    import pandapower.networks as pn

    net = getattr(pn, name)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net)  # lightsim2grid builds from a net that has been run
    return net


def pypower_case(name: str) -> dict:
    """The MATPOWER case dict of a named gridphysics case, for PYPOWER."""
    from gridphysics.cases import cases_dir, catalogue
    from gridphysics.matpower import load_matpower_dict

    return load_matpower_dict(cases_dir() / catalogue()[name]["file"])


def pypower_options():
    from pypower.api import ppoption

    return ppoption(VERBOSE=0, OUT_ALL=0)


def lightsim_grid(net):
    from lightsim2grid.network import init_from_pandapower

    return init_from_pandapower(net)


def lightsim_sweep(grid, algorithm: str, load_p: np.ndarray, gen_p: np.ndarray, threads: int = 2):
    """lightsim2grid's batched InjectionSweep, configured as PEERS.md describes."""
    from lightsim2grid.lightsim2grid_cpp import InjectionSweepCPP

    sweep = InjectionSweepCPP(grid)
    sweep.nb_thread = threads
    sweep.change_algorithm(algorithm)
    sweep.modify_load_p(load_p)
    sweep.modify_gen_p(gen_p)
    return sweep


def lightsim_gen_p(grid) -> np.ndarray:
    return np.array([g.target_p_mw for g in grid.get_generators()])


def lightsim_n1(grid, algorithm: str, threads: int = 2):
    """lightsim2grid's ContingencyAnalysis with every single branch outage."""
    from lightsim2grid.lightsim2grid_cpp import ContingencyAnalysisCPP

    analysis = ContingencyAnalysisCPP(grid)
    analysis.add_all_n1()
    analysis.nb_thread = threads
    analysis.change_algorithm(algorithm)
    return analysis


def single_solve_peers(method: str, name: str, net) -> dict:
    """Callables running one power flow of the case with each peer: ``{tool: fn}``."""
    import pandapower as pp
    from pypower.api import rundcpf, runpf

    pp_net = copy.deepcopy(net)
    ppc, opts = pypower_case(name), pypower_options()
    grid = lightsim_grid(net)
    v0 = np.ones(grid.get_bus_vn_kv().shape[0], dtype=complex)
    if method == "dc":
        return {
            "pandapower rundcpp": lambda: pp.rundcpp(pp_net),
            "PYPOWER rundcpf": lambda: rundcpf(ppc, opts),
            "lightsim2grid dc_pf": lambda: grid.dc_pf(v0.copy(), 10, 1e-8),
        }
    return {
        "pandapower runpp": lambda: pp.runpp(pp_net),
        "PYPOWER runpf": lambda: runpf(ppc, opts),
        "lightsim2grid ac_pf": lambda: grid.ac_pf(v0.copy(), 10, 1e-8),
    }


def lightsim_sweep_runner(net, algorithm: str, n: int, threads: int = 2):
    """A callable running lightsim2grid's InjectionSweep on ``n`` random load scenarios
    (same distribution as the gridphysics batch: loads times 1 + 0.1 N(0, 1))."""
    grid = lightsim_grid(net)
    rng = np.random.default_rng(0)
    scale = 1.0 + 0.1 * rng.standard_normal((n, len(net.load)))
    load_p = net.load.p_mw.to_numpy()[None, :] * scale
    gen_p = np.tile(lightsim_gen_p(grid), (n, 1))
    sweep = lightsim_sweep(grid, algorithm, load_p, gen_p, threads=threads)
    v0 = np.ones(grid.get_bus_vn_kv().shape[0], dtype=complex)

    def run():
        sweep.compute(v0, 10, 1e-8)
        sweep.compute_power_flows()

    return run


def grid2op_step_seconds(steps: int = 300) -> float:
    """Seconds per do-nothing step of Grid2Op + lightsim2grid on rte_case118_example."""
    import grid2op
    from lightsim2grid import LightSimBackend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = grid2op.make("rte_case118_example", test=True, backend=LightSimBackend())
    env.reset()
    action = env.action_space({})
    start = time.perf_counter()
    for _ in range(steps):
        _, _, done, _ = env.step(action)
        if done:
            env.reset()
    return (time.perf_counter() - start) / steps
