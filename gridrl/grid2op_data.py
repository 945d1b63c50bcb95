"""Grid2Op environments as gridrl cases: the grid, its characteristics and its chronics.

``gridrl.make("grid2op:<name or path>")`` reads a Grid2Op environment directory as data:
its ``grid.json`` (through ``gp.from_pandapower``), ``prods_charac.csv`` (limits, ramps,
marginal costs, unit types), the thermal limits of ``config.py`` and the chronics
(``load_p``, ``load_q``, ``prod_p`` and, where present, ``maintenance`` and ``hazards``).
Nothing in the directory is executed: ``config.py`` is read with :mod:`ast`, and only a
literal list (or a module-level name bound to one) counts as thermal limits. Grid2Op
itself is not needed; a bare name is looked up among the environments shipped inside
the installed ``grid2op`` package.

The chronics are cut into whole days from midnight (Grid2Op's first row is one step
after ``start_datetime.info``; a chronic whose first row is less than one env step past
midnight starts its first day there, any other skips to the next midnight) and averaged
to the environment's step (``scenarios.STEP_MINUTES``); a trailing part day is dropped. Days are
split into training and evaluation days by chronic (the last ``EVAL_SHARE`` of them);
an environment with a single chronic is split by day within it instead, and says so in
:attr:`Grid2OpCase.assumed`, like every other value that had to be assumed.

Element order: generators, lines (pandapower lines, then transformers) and buses follow
the Grid2Op order. gridphysics has one load per bus, so the Grid2Op loads of a bus are
summed (``load_map``).
"""

from __future__ import annotations

import ast
import bz2
import datetime as dt
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import gridphysics as gp
from gridrl import scenarios
from gridrl.errors import EnvOptionError

PREFIX = "grid2op:"
#: Share of the chronics (or, with one chronic, of its days) kept for evaluation.
EVAL_SHARE = 0.2
#: Unit types of ``prods_charac.csv`` whose output follows the weather (curtailable).
RENEWABLE_TYPES = ("wind", "solar")
#: The largest chronic file read (bytes, compressed): a year at 5 minutes of a 118-bus
#: grid is about 30 MB.
MAX_CHRONIC_BYTES = 512 * 2**20
#: The largest chronic text once decompressed (characters): a year at 5 minutes of a
#: 118-bus grid's loads is about 60 MB of text.
MAX_CHRONIC_CHARS = 512 * 2**20


@dataclass(frozen=True)
class Grid2OpCase:
    """A Grid2Op environment read as data (see the module docstring).

    Attributes:
        name: the environment's name (its directory's name).
        path: its directory.
        network: the grid; generators, branches and buses in Grid2Op's order, one load
            per bus that holds a Grid2Op load, with Grid2Op's limits, ramps and costs.
        load_mw, load_mvar: (n_days, steps, n_load) demand per gridphysics load.
        gen_mw: (n_days, steps, n_gen) Grid2Op's generator schedule (``prod_p``).
        line_out: (n_days, steps, n_branch) bool, out for maintenance or a hazard.
        renewable: (n_gen,) bool, wind and solar units.
        day_chronic: (n_days,) the chronic each day comes from.
        eval_days: (n_days,) bool, held out for evaluation.
        load_map: (n_grid2op_load,) the gridphysics load of each Grid2Op load.
        rating_source: where the thermal limits come from.
        assumed: what had to be assumed, one sentence each.
    """

    name: str
    path: Path
    network: gp.Network
    load_mw: np.ndarray
    load_mvar: np.ndarray
    gen_mw: np.ndarray
    line_out: np.ndarray
    renewable: np.ndarray
    day_chronic: tuple[str, ...]
    eval_days: np.ndarray
    load_map: np.ndarray
    rating_source: str
    assumed: tuple[str, ...] = field(default=())

    @property
    def n_days(self) -> int:
        return int(self.load_mw.shape[0])


def is_grid2op(case: str) -> bool:
    return isinstance(case, str) and case.startswith(PREFIX)


def find_env(spec: str) -> Path:
    """The directory of ``spec`` (``grid2op:`` prefix optional): a path to a Grid2Op
    environment directory, or the name of one shipped inside the ``grid2op`` package."""
    spec = spec.removeprefix(PREFIX)
    if not spec:
        raise EnvOptionError('a Grid2Op case is "grid2op:<environment name or directory>"')
    path = Path(spec).expanduser()
    if path.is_dir():
        return _check_env_dir(path)
    shipped = _shipped_dir()
    if shipped is not None and "/" not in spec and (shipped / spec).is_dir():
        return _check_env_dir(shipped / spec)
    names = (
        sorted(p.name for p in shipped.iterdir() if (p / "grid.json").is_file()) if shipped else []
    )
    where = (
        f"environments shipped with grid2op: {', '.join(names)}"
        if names
        else "grid2op is not installed (pip install '.[grid2op]'), so only directories work"
    )
    raise EnvOptionError(f"no Grid2Op environment {spec!r}: not a directory; {where}")


def _shipped_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("grid2op")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _check_env_dir(path: Path) -> Path:
    missing = [f for f in ("grid.json", "chronics") if not (path / f).exists()]
    if missing:
        raise EnvOptionError(
            f"{path} is not a Grid2Op environment: it has no {' or '.join(missing)}"
        )
    return path.resolve()


# -- reading ------------------------------------------------------------------------
def _read_csv(path: Path):
    import pandas as pd

    if path.stat().st_size > MAX_CHRONIC_BYTES:
        raise EnvOptionError(f"{path}: larger than {MAX_CHRONIC_BYTES:,} bytes")
    try:
        opener = bz2.open if path.suffix == ".bz2" else open
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read(MAX_CHRONIC_CHARS + 1)  # 8 KB of bz2 expanded to 160 MB
        if len(text) > MAX_CHRONIC_CHARS:
            raise EnvOptionError(
                f"{path}: more than {MAX_CHRONIC_CHARS:,} characters once decompressed"
            )
        return pd.read_csv(io.StringIO(text), sep=";")
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise EnvOptionError(f"{path}: cannot read it as a Grid2Op chronic ({exc})") from None


def _chronic_file(folder: Path, stem: str) -> Path | None:
    for suffix in (".csv.bz2", ".csv"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _interval_minutes(folder: Path) -> int:
    info = folder / "time_interval.info"
    if not info.is_file():
        return 5  # Grid2Op's default
    text = info.read_text().strip()
    try:
        hours, minutes = (int(x) for x in text.split(":")[:2])
    except ValueError:
        raise EnvOptionError(f"{info}: expected HH:MM, got {text!r}") from None
    step = 60 * hours + minutes
    if step <= 0 or scenarios.STEP_MINUTES % step:
        raise EnvOptionError(
            f"{info}: a step of {step} min does not divide the environment's "
            f"{scenarios.STEP_MINUTES} min step"
        )
    return step


def _start(folder: Path) -> dt.datetime:
    info = folder / "start_datetime.info"
    if not info.is_file():
        return dt.datetime(2000, 1, 1)
    text = info.read_text().strip()
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise EnvOptionError(f"{info}: expected 'YYYY-MM-DD HH:MM', got {text!r}")


def _days(values: np.ndarray, first: int, per_step: int) -> np.ndarray:
    """(rows, cols) at the chronic's step -> (days, STEPS_PER_DAY, cols) at the env's."""
    rows_per_day = scenarios.STEPS_PER_DAY * per_step
    n_days = max((values.shape[0] - first) // rows_per_day, 0)
    if n_days == 0:  # a reshape of nothing into days raised a bare ValueError
        return np.zeros((0, scenarios.STEPS_PER_DAY, values.shape[1]))
    cut = values[first : first + n_days * rows_per_day]
    return cut.reshape(n_days, scenarios.STEPS_PER_DAY, per_step, -1).mean(axis=2)


def _thermal_limits(path: Path) -> list[float] | None:
    """The literal ``thermal_limits`` of ``config.py`` (read with ast, never run)."""
    config = path / "config.py"
    if not config.is_file():
        return None
    try:
        tree = ast.parse(config.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None
    names: dict[str, ast.expr] = {}
    value = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                names[target.id] = node.value
                if target.id == "config" and isinstance(node.value, ast.Dict):
                    for k, v in zip(node.value.keys, node.value.values, strict=True):
                        if isinstance(k, ast.Constant) and k.value == "thermal_limits":
                            value = v
    if isinstance(value, ast.Name):
        value = names.get(value.id)
    if value is None:
        return None
    try:
        limits = ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return None
    if not isinstance(limits, (list, tuple)) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in limits
    ):
        return None
    return [float(x) for x in limits]


def _names(table, prefix: str) -> list[str]:
    """Grid2Op's element names: the table's own, else ``<prefix>_<bus>_<i>`` as the
    pandapower backend names them."""
    names = table["name"].tolist() if "name" in table else [None] * len(table)
    buses = table["bus"].tolist()
    return [
        str(n) if isinstance(n, str) and n else f"{prefix}_{b}_{i}"
        for i, (n, b) in enumerate(zip(names, buses, strict=True))
    ]


def _read_chronic(folder: Path, load_names, gen_names, n_lines: int, assumed: list[str]):
    """``({"load_p", "load_q", "prod_p": (days, steps, n)}, line_out (days, steps,
    n_lines))`` of one chronic folder, in whole days at the env's step."""
    step = _interval_minutes(folder)
    per_step = scenarios.STEP_MINUTES // step
    # Grid2Op's first row is one step after start_datetime (23:55 -> 00:00); a day
    # starts at the first row less than one env step past midnight
    first_row = _start(folder) + dt.timedelta(minutes=step)
    past = first_row.hour * 60 + first_row.minute
    first = 0 if past < scenarios.STEP_MINUTES else math.ceil((24 * 60 - past) / step)
    tables = {}
    for stem, names in (("load_p", load_names), ("load_q", load_names), ("prod_p", gen_names)):
        file = _chronic_file(folder, stem)
        if file is None:
            raise EnvOptionError(f"{folder}: no {stem}.csv(.bz2)")
        frame = _read_csv(file)
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise EnvOptionError(
                f"{file}: no column for {missing[:3]} ({len(missing)} of the grid's "
                f"elements); its columns are named {list(frame.columns[:3])}, ..."
            )
        try:
            values = frame[names].to_numpy(np.float64)
        except (TypeError, ValueError) as exc:  # a cell that is not a number
            raise EnvOptionError(f"{file}: a value is not a number ({exc})") from None
        if not np.isfinite(values).all():
            bad = np.argwhere(~np.isfinite(values))[0]
            raise EnvOptionError(
                f"{file}: row {bad[0] + 1}, column {names[bad[1]]!r} is not a finite number"
            )
        tables[stem] = _days(values, first, per_step)
    if tables["load_p"].shape[0] == 0:
        raise EnvOptionError(f"{folder}: shorter than one whole day from midnight")
    out = np.zeros((*tables["load_p"].shape[:2], n_lines), bool)
    for stem in ("maintenance", "hazards"):
        file = _chronic_file(folder, stem)
        if file is None:
            continue
        frame = _read_csv(file)
        if frame.shape[1] != n_lines:
            raise EnvOptionError(f"{file}: {frame.shape[1]} columns for {n_lines} lines")
        try:
            flags = frame.to_numpy(np.float64)
        except (TypeError, ValueError) as exc:
            raise EnvOptionError(f"{file}: a value is not a number ({exc})") from None
        flags = _days(flags, first, per_step) > 0
        if flags.shape[0] < out.shape[0]:  # broadcasting copied a short file over the days
            raise EnvOptionError(f"{file}: shorter than the chronic's {out.shape[0]} day(s)")
        out |= flags[: out.shape[0]]
    if (folder / "maintenance_meta.json").is_file() and _chronic_file(
        folder, "maintenance"
    ) is None:
        assumed.append(
            f"{folder.name}: maintenance that Grid2Op draws at run time "
            "(maintenance_meta.json) is not replayed"
        )
    return tables, out


def _ratings(net, path: Path, assumed: list[str]) -> tuple[np.ndarray, str]:
    """(n_branch,) MVA ratings: Grid2Op's thermal limits (A) of ``config.py`` at the
    origin bus's nominal voltage, else the grid's own limits as Grid2Op's pandapower
    backend reads them; and where they come from."""
    kv = net.bus.loc[net.line.from_bus, "vn_kv"].to_numpy(float)
    kv_t = net.bus.loc[net.trafo.hv_bus, "vn_kv"].to_numpy(float)
    limits = _thermal_limits(path)
    if limits is not None and len(limits) == len(net.line) + len(net.trafo):
        amps = np.asarray(limits)
        source = "the thermal limits of config.py (A), at the origin bus's nominal voltage"
    else:
        amps = np.concatenate(
            [
                net.line["max_i_ka"].to_numpy(float) * 1000 * net.line["parallel"].to_numpy(float),
                net.trafo["sn_mva"].to_numpy(float) / (math.sqrt(3) * kv_t) * 1000,
            ]
        )
        source = "the grid's own limits (lines max_i_ka, transformers sn_mva)"
        assumed.append(
            "config.py gives no thermal limits: " + source + ", as Grid2Op's pandapower backend"
        )
    rate = math.sqrt(3) * np.concatenate([kv, kv_t]) * amps / 1000
    return rate, source


def _split_days(per_chronic, assumed: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """The chronic of each day, and which days are held out for evaluation: the last
    :data:`EVAL_SHARE` of the chronics (one chronic: of its days)."""
    days_per = [t["load_p"].shape[0] for _, t, _ in per_chronic]
    day_chronic = tuple(
        name for (name, _, _), n in zip(per_chronic, days_per, strict=True) for _ in range(n)
    )
    n_days = len(day_chronic)
    eval_days = np.zeros(n_days, bool)
    if len(per_chronic) >= 2:
        held = max(1, round(EVAL_SHARE * len(per_chronic)))
        held_names = {name for name, _, _ in per_chronic[-held:]}
        eval_days = np.array([c in held_names for c in day_chronic])
    elif n_days >= 2:
        eval_days[n_days - max(1, round(EVAL_SHARE * n_days)) :] = True
        assumed.append(
            "one chronic: its last days are held out for evaluation (split by day, not by chronic)"
        )
    else:
        eval_days[:] = True
        assumed.append("one chronic of one day: training and evaluation use the same day")
    return day_chronic, eval_days


def load_case(spec: str) -> Grid2OpCase:
    """Read the Grid2Op environment ``spec`` (see :func:`find_env`)."""
    path = find_env(spec)
    assumed: list[str] = []
    from gridrl.recommend import SnapshotError, read_snapshot

    try:
        # read as recommend reads snapshots: pandapower imports any module a _module key
        # names (its top-level code ran) unless it is one of pandapower's own types
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = read_snapshot(path / "grid.json")
    except SnapshotError as exc:
        raise EnvOptionError(f"{path / 'grid.json'}: {str(exc).removeprefix('--net: ')}") from None
    if len(net.ext_grid):
        raise EnvOptionError(
            f"{path}: the grid has an ext_grid; Grid2Op's generators are the pandapower "
            "gen table only, so the orders would not match"
        )
    bus_pos = {int(b): i for i, b in enumerate(net.bus.index)}
    load_names = _names(net.load, "load")
    gen_names = _names(net.gen, "gen")

    # the chronics (read before the grid is converted: they decide which buses carry load)
    folders = sorted(p for p in (path / "chronics").iterdir() if p.is_dir())
    if not folders:
        raise EnvOptionError(f"{path / 'chronics'} holds no chronic folder")
    n_lines = len(net.line) + len(net.trafo)
    per_chronic = [
        (folder.name, *_read_chronic(folder, load_names, gen_names, n_lines, assumed))
        for folder in folders
    ]

    # the grid: every Grid2Op load's bus gets a gridphysics load; storage is idle
    recorded = np.concatenate([t["load_p"].reshape(-1, len(load_names)) for _, t, _ in per_chronic])
    net.load["p_mw"] = np.where(np.abs(recorded).max(axis=0) > 0, recorded.mean(axis=0), 1.0)
    net.load["q_mvar"] = 0.0
    if len(net.storage):
        net.storage["p_mw"] = 0.0
        assumed.append(
            f"{len(net.storage)} storage units are held at 0 MW (not yet modelled as controllable)"
        )
    charac = path / "prods_charac.csv"
    if not charac.is_file():
        raise EnvOptionError(f"{path}: no prods_charac.csv (generator limits and types)")
    import pandas as pd

    prods = pd.read_csv(charac).set_index("name")
    missing = [n for n in gen_names if n not in prods.index]
    if missing:
        raise EnvOptionError(f"{charac}: no row for generator(s) {missing[:3]}")
    prods = prods.loc[gen_names]
    net.gen["max_p_mw"] = prods["Pmax"].to_numpy(float)
    net.gen["min_p_mw"] = prods["Pmin"].to_numpy(float)
    network = gp.from_pandapower(net, name=path.name)
    if network.n_gen != len(net.gen) or network.n_bus != len(net.bus):
        raise EnvOptionError(f"{path}: the grid's generators or buses could not be kept in order")
    gen_bus = np.asarray(network.topology.gen_bus)
    expected_bus = np.array([bus_pos[int(b)] for b in net.gen.bus])
    if not np.array_equal(gen_bus, expected_bus):
        raise EnvOptionError(f"{path}: the converted generators are not in Grid2Op's order")

    # loads: the gridphysics load at the bus of each Grid2Op load
    load_bus = np.asarray(network.topology.load_bus)
    at_bus = {int(b): i for i, b in enumerate(load_bus)}
    load_map = np.array([at_bus[bus_pos[int(b)]] for b in net.load.bus], np.int64)

    def per_bus(values: np.ndarray) -> np.ndarray:
        out = np.zeros((*values.shape[:-1], network.n_load))
        np.add.at(out, (..., load_map), values * net.load["in_service"].to_numpy(float))
        return out

    # limits, ramps and costs of prods_charac; ratings from the thermal limits (amps)
    step_minutes = _interval_minutes(folders[0])
    ramp = prods["max_ramp_up"].to_numpy(float) / step_minutes
    no_ramp = ~np.isfinite(ramp) | (ramp <= 0)
    if no_ramp.any():
        assumed.append(
            f"{int(no_ramp.sum())} units without a ramp in prods_charac.csv ramp freely "
            "(their Pmax per step)"
        )
    p_max = prods["Pmax"].to_numpy(float)
    ramp = np.where(no_ramp, p_max / scenarios.STEP_MINUTES, ramp)
    cost = prods["marginal_cost"].to_numpy(float) if "marginal_cost" in prods else None
    if cost is None or not np.isfinite(cost).all():
        assumed.append("marginal costs missing in prods_charac.csv: 0 $/MWh")
        cost = np.nan_to_num(cost if cost is not None else np.zeros(len(p_max)))
    rate, source = _ratings(net, path, assumed)
    gen = network.gen.replace(
        ramp_mw_per_min=np.asarray(ramp, network.dtype),
        cost_c2=np.zeros(network.n_gen, network.dtype),
        cost_c1=np.asarray(cost, network.dtype),
        cost_c0=np.zeros(network.n_gen, network.dtype),
    )
    branch = network.branch.replace(rate_a_mva=np.asarray(rate, network.dtype))
    network = network.replace(gen=gen, branch=branch)

    day_chronic, eval_days = _split_days(per_chronic, assumed)
    renewable = prods["type"].isin(RENEWABLE_TYPES).to_numpy()
    return Grid2OpCase(
        name=path.name,
        path=path,
        network=network,
        load_mw=np.concatenate([per_bus(t["load_p"]) for _, t, _ in per_chronic]),
        load_mvar=np.concatenate([per_bus(t["load_q"]) for _, t, _ in per_chronic]),
        gen_mw=np.concatenate([t["prod_p"] for _, t, _ in per_chronic]),
        line_out=np.concatenate([o for _, _, o in per_chronic]),
        renewable=renewable,
        day_chronic=day_chronic,
        eval_days=eval_days,
        load_map=load_map,
        rating_source=source,
        assumed=tuple(assumed),
    )
