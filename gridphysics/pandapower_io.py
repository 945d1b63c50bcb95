"""Import from pandapower through pandapower's own conversion to its internal case.

Using pandapower's ``_pd2ppc`` (the conversion ``rundcpp`` runs) means every element
model — transformers (T model), three-winding transformers, switches, wards,
static generators, storage, impedances — is exactly pandapower's. The resulting
network is indexed like pandapower's internal ``net._ppc``: bus ``i`` of the
network is row ``i`` of ``net._ppc["bus"]``; map pandapower element indices with
``net._pd2ppc_lookups`` after the import.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Literal

import numpy as np

from gridphysics.errors import CaseFormatError, NoSlackError, UnsupportedError
from gridphysics.network import Network
from gridphysics.ppc import MAX_BASE_MVA, MIN_BASE_MVA, from_ppc

Model = Literal["runpp", "rundcpp"]


def _init_options(net: Any, model: Model) -> None:
    from pandapower.auxiliary import _init_rundcpp_options, _init_runpp_options

    common = dict(trafo_model="t", trafo_loading="current", check_connectivity=True)
    if model == "rundcpp":
        _init_rundcpp_options(net, recycle=None, switch_rx_ratio=2, trafo3w_losses="hv", **common)
    else:
        _init_runpp_options(
            net,
            algorithm="nr",
            calculate_voltage_angles=True,  # runpp's default
            init="auto",
            max_iteration="auto",
            tolerance_mva=1e-8,
            enforce_p_lims=False,
            enforce_q_lims=False,
            voltage_depend_loads=True,
            **common,
        )


def _check_in_service(net: Any) -> None:
    """Every element's ``in_service`` is True/False (or 0/1): pandapower read a NaN as
    neither and failed deep inside with a KeyError."""
    for name in ("bus", "line", "trafo", "trafo3w", "gen", "sgen", "load", "ext_grid", "shunt"):
        table = getattr(net, name, None)
        if not hasattr(table, "columns") or "in_service" not in table.columns or not len(table):
            continue  # a table that is not a DataFrame is pandapower's to refuse
        values = table["in_service"].to_numpy()
        ok = np.array([v is True or v is False or v in (0, 1) for v in values.tolist()])
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise CaseFormatError(
                f"pandapower {name} {table.index[i]}: in_service = {values[i]!r}; it must be "
                "True or False"
            )


def _check_base(net: Any) -> None:
    """``net.sn_mva`` is the system base: a number within the range :func:`from_ppc`
    accepts, named as pandapower names it (1e-9 was blamed on a branch's reactance)."""
    sn = getattr(net, "sn_mva", 1.0)
    try:
        ok = not isinstance(sn, bool | str | bytes) and MIN_BASE_MVA <= float(sn) <= MAX_BASE_MVA
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise CaseFormatError(
            f"the pandapower net's sn_mva is {sn!r}; the system base must be a number from "
            f"{MIN_BASE_MVA:g} to {MAX_BASE_MVA:g} MVA (pandapower's default is 1)"
        )


def pandapower_ppc(net: Any, model: Model = "runpp") -> tuple[dict, dict]:
    """pandapower's internal ``(ppc, ppci)`` for ``net`` with ``runpp``'s or ``rundcpp``'s
    default options. Works on a copy: ``net`` itself is not modified."""
    try:
        from pandapower.pd2ppc import _pd2ppc
    except ImportError as exc:  # pragma: no cover - pandapower is a dependency
        raise UnsupportedError(f"from_pandapower needs pandapower: {exc}") from None
    if model not in ("runpp", "rundcpp"):
        raise UnsupportedError(f"model must be 'runpp' or 'rundcpp', got {model!r}")
    _check_base(net)
    net = copy.deepcopy(net)
    _check_in_service(net)
    level = logging.getLogger("pandapower").level
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    try:
        _init_options(net, model)  # it reads the tables too (a NaN in_service: KeyError)
        ppc, ppci = _pd2ppc(net)
    except UserWarning as exc:  # pandapower signals a missing slack this way
        if "reference bus" in str(exc).lower():
            raise NoSlackError(
                "the pandapower net has no reference bus: add an ext_grid or a gen with slack=True"
            ) from None
        raise CaseFormatError(f"pandapower could not convert the net: {exc}") from None
    except (KeyError, ValueError, IndexError, TypeError, AttributeError, ArithmeticError) as exc:
        raise CaseFormatError(
            f"pandapower could not convert the net ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        logging.getLogger("pandapower").setLevel(level)
    return ppc, ppci


def from_pandapower(net: Any, *, name: str | None = None, model: Model = "runpp") -> Network:
    """Build a :class:`~gridphysics.Network` from a pandapower network.

    Element models and the slack generators (external grids and ``gen`` with
    ``slack=True``, sharing a bus's balancing power equally, as pandapower does)
    are taken from pandapower's internal case. Isolated buses stay in the network as
    type-4 buses and are reported as isolated by the solvers.

    Args:
        net: a pandapower net (not modified).
        name: network name (default: the net's name).
        model: which pandapower conversion to reproduce. ``"runpp"`` (default) is
            the full model of pandapower's AC power flow and serves both methods;
            ``"rundcpp"`` is exactly what pandapower's DC power flow solves, which
            differs only in leaving out asymmetric loads and static generators.

    Raises:
        UnsupportedError: the net has elements gridphysics does not model yet
            (DC buses and lines, VSC, SVC, TCSC, SSC, voltage-dependent loads).
    """
    ppc, ppci = pandapower_ppc(net, model)
    bus = np.asarray(ppc["bus"])
    zip_columns = [13, 14, 16, 17]  # pandapower's CID_P, CZD_P, CID_Q, CZD_Q
    if bus.shape[1] > 17 and np.any(np.real(bus[:, zip_columns]) != 0):
        _reject_zip_loads(net)
    dcline = getattr(net, "dcline", None)
    if hasattr(dcline, "columns") and len(dcline) and dcline.get("in_service", True).any():
        # pandapower turns a DC line into a pair of generators with their own losses and
        # voltage setpoints; read as plain generators its flows were 15 MW off
        raise UnsupportedError(
            "this pandapower net has dcline elements in service, which gridphysics does not "
            "model yet"
        )
    for key in ("bus_dc", "branch_dc", "vsc", "svc", "tcsc", "ssc"):
        if np.shape(ppc.get(key, np.zeros((0, 1))))[0] > 0:
            raise UnsupportedError(
                f"this pandapower net has {key} elements, which gridphysics does not model yet"
            )
    ref_gens = np.asarray(ppci["internal"]["ref_gens"], dtype=np.int64)
    gen = np.asarray(ppc["gen"])
    if gen.shape[0] != ppci["gen"].shape[0]:
        # ppci keeps the in-service rows of ppc in order.
        on = np.flatnonzero(gen[:, 7] > 0)
        ref_gens = on[ref_gens]
    case = {"baseMVA": ppc["baseMVA"], "bus": ppc["bus"], "gen": gen, "branch": ppc["branch"]}
    label = name or str(getattr(net, "name", "") or "pandapower")
    return from_ppc(case, name=label, slack_gens=ref_gens)


def _reject_zip_loads(net: Any) -> None:
    load = getattr(net, "load", None)
    if load is None or not len(load):
        return
    cols = [c for c in load.columns if c.startswith(("const_z", "const_i"))]
    bad = load[(load[cols] != 0).any(axis=1)] if cols else load.iloc[:0]
    if len(bad):
        raise UnsupportedError(
            f"load {bad.index[0]} is voltage dependent ({', '.join(cols)} not zero); gridphysics "
            "models constant-power loads only: set those columns to 0"
        )
