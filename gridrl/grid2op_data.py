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
summed (``load_map``). The chronics' columns (maintenance and hazards included) are
matched by the names Grid2Op's pandapower backend gives the elements, after
``config.py``'s ``names_chronics_to_grid``; ``config.py`` is read as Python would bind
its statements one after the other, and an entry that only running it would give is
said in :attr:`Grid2OpCase.assumed`. Every number is checked: a value that is not a
finite number, a power beyond :data:`MAX_MW` (or a load beyond the whole generation
fleet), a cost beyond :data:`MAX_COST`, a rating that is not positive, an element out
of service or a unit type Grid2Op does not know is an :class:`EnvOptionError` that
names the file, the element and the value.
"""

from __future__ import annotations

import ast
import bz2
import contextlib
import datetime as dt
import gzip
import io
import lzma
import math
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import gridphysics as gp
from gridphysics.ppc import MAX_POWER_MW
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
MAX_CHRONIC_CHARS = 128 * 2**20
#: The most rows a chronic file may have: ten years at Grid2Op's 5-minute step (a 20 KB
#: bz2 file of 19 million short rows grew the process to 6.5 GB).
MAX_CHRONIC_ROWS = 10 * 366 * 24 * 12
#: The smallest rating (MVA) a line may have: below a kilovolt-ampere the loadings of
#: ordinary flows overflow float32 (a thermal limit of 1e-300 A made them NaN).
MIN_RATING_MVA = 1e-3
#: The largest ``config.py``, ``prods_charac.csv`` or ``*.info`` file read (bytes).
MAX_INFO_BYTES = 16 * 2**20
#: The largest magnitude of a power (MW) in the chronics and ``prods_charac.csv``: the
#: same bound as a case file's powers (gridphysics), which overflow costs and normalisers
#: downstream beyond it.
MAX_MW = MAX_POWER_MW
#: The largest marginal cost accepted ($/MWh): two orders above the highest price caps
#: of electricity markets (about 10,000 EUR/MWh), so a larger one is corrupt.
MAX_COST = 1e6
#: pandapower tables a Grid2Op grid may hold that the replayed days cannot carry (their
#: injections are not in the chronics): refused when in service (an open switch too).
UNMODELLED_TABLES = (
    "sgen",
    "ward",
    "xward",
    "dcline",
    "trafo3w",
    "impedance",
    "switch",
    "motor",
    "asymmetric_load",
    "asymmetric_sgen",
)
#: Chronic file endings in Grid2Op's order of preference, and how each is opened.
CHRONIC_SUFFIXES = (".csv", ".csv.bz2", ".csv.gzip", ".csv.xz")
_OPENERS = {"bz2": bz2.open, "gzip": gzip.open, "xz": lzma.open}
#: Unit types Grid2Op knows (``prods_charac.csv`` column ``type``).
UNIT_TYPES = ("thermal", "nuclear", "hydro", "wind", "solar")


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
        names: Grid2Op's names of the ``"loads"``, ``"prods"`` and ``"lines"``, in
            Grid2Op's order (the order of ``load_map``, the generators and branches).
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
    names: dict = field(default_factory=dict)
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
    try:
        path = Path(spec).expanduser()
        if path.is_dir():
            return _check_env_dir(path)
        shipped = _shipped_dir()
        if shipped is not None and "/" not in spec and (shipped / spec).is_dir():
            return _check_env_dir(shipped / spec)
    except (OSError, ValueError, RuntimeError) as exc:  # too long, NUL, ~nosuchuser
        raise EnvOptionError(f"no Grid2Op environment {spec[:200]!r}: {exc}") from None
    names = (
        sorted(p.name for p in shipped.iterdir() if (p / "grid.json").is_file()) if shipped else []
    )
    where = (
        f"environments shipped with grid2op: {', '.join(names)}"
        if names
        else "grid2op is not installed (pip install '.[grid2op]'), so only directories work"
    )
    raise EnvOptionError(f"no Grid2Op environment {spec[:200]!r}: not a directory; {where}")


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
    if not (path / "chronics").is_dir():
        raise EnvOptionError(f"{path / 'chronics'} is not a directory of chronic folders")
    if not (path / "grid.json").is_file():
        raise EnvOptionError(f"{path / 'grid.json'} is not a file")
    return path.resolve()


# -- reading ------------------------------------------------------------------------
def _read_text(path: Path, max_bytes: int, max_chars: int | None = None) -> str:
    """The UTF-8 text of ``path`` (bz2-compressed if it ends in .bz2), bounded in size
    on disk and once decompressed; any failure is an :class:`EnvOptionError`."""
    what = "a Grid2Op chronic" if path.name.endswith((".csv", ".csv.bz2")) else "UTF-8 text"
    try:
        if not path.is_file():
            raise EnvOptionError(f"{path}: not a file")
        if path.stat().st_size > max_bytes:
            raise EnvOptionError(f"{path}: larger than {max_bytes:,} bytes")
        max_chars = max_bytes if max_chars is None else max_chars
        opener = _OPENERS.get(path.name.rsplit(".", 1)[-1], open)
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read(max_chars + 1)  # 8 KB of bz2 expanded to 160 MB
    except (
        OSError,
        EOFError,
        UnicodeDecodeError,
        ValueError,
        MemoryError,
        lzma.LZMAError,
        zlib.error,  # a corrupt gzip stream (bz2 and lzma raise OSError or LZMAError)
    ) as exc:
        raise EnvOptionError(f"{path}: cannot read it as {what} ({exc})") from None
    if len(text) > max_chars:
        raise EnvOptionError(f"{path}: more than {max_chars:,} characters once decompressed")
    return text


def _read_csv(path: Path, sep: str = ";", names: list[str] | None = None, rename=None):
    """The table of a chronic file. With ``names`` (the grid's elements) its header is
    checked first, as Grid2Op does: a column for an element the grid lacks is an error,
    before the body is parsed (600,000 columns of 100 rows grew to 4.4 GB)."""
    import pandas as pd

    text = _read_text(path, MAX_CHRONIC_BYTES, MAX_CHRONIC_CHARS)
    if text.count("\n") > MAX_CHRONIC_ROWS:
        raise EnvOptionError(f"{path}: more than {MAX_CHRONIC_ROWS:,} rows")
    if names is not None:
        header = text[: text.find("\n") if "\n" in text else len(text)]
        try:
            columns = [str(c) for c in pd.read_csv(io.StringIO(header), sep=sep, nrows=0).columns]
        except (ValueError, MemoryError) as exc:
            raise EnvOptionError(f"{path}: cannot read its header ({exc})") from None
        columns = [(rename or {}).get(c, c) for c in columns]
        extra = sorted(set(columns) - set(names))
        if extra:
            raise EnvOptionError(
                f"{path}: {len(extra)} column(s) for elements the grid lacks, e.g. "
                f"{[c[:40] for c in extra[:3]]} (Grid2Op refuses them too)"
            )
    try:
        return pd.read_csv(io.StringIO(text), sep=sep)
    except (ValueError, MemoryError) as exc:  # pandas' parser and empty-data errors
        raise EnvOptionError(f"{path}: cannot read it as a Grid2Op table ({exc})") from None


def _read_info(path: Path) -> str | None:
    """The stripped text of a small ``*.info`` file, None where there is none."""
    if not path.exists() and not path.is_symlink():
        return None
    return _read_text(path, MAX_INFO_BYTES).strip()


def _chronic_file(folder: Path, stem: str) -> Path | None:
    """The file of ``stem`` in Grid2Op's order of preference (``.csv`` first, then the
    compressed forms), None where there is none."""
    for suffix in CHRONIC_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.exists() or path.is_symlink():
            return path
    if (folder / f"{stem}.zip").exists():
        raise EnvOptionError(f"{folder / stem}.zip: zipped chronics are not read; unzip it")
    return None


def _interval_minutes(folder: Path) -> int:
    info = folder / "time_interval.info"
    text = _read_info(info)
    if text is None:
        return 5  # Grid2Op's default
    # Grid2Op reads it with strptime("%H:%M"); seconds other than :00 would not divide
    # the environment's step
    match = re.fullmatch(r"([0-9]{1,2}):([0-9]{2})(?::00)?", text)
    if match is None:
        raise EnvOptionError(f"{info}: expected HH:MM, got {text[:40]!r}")
    step = 60 * int(match[1]) + int(match[2])
    if step <= 0:  # it got the "does not divide" message
        raise EnvOptionError(f"{info}: a step of {text!r} is no time; a step must be positive")
    if scenarios.STEP_MINUTES % step:
        raise EnvOptionError(
            f"{info}: a step of {step} min does not divide the environment's "
            f"{scenarios.STEP_MINUTES} min step"
        )
    return step


def _start(folder: Path) -> dt.datetime:
    info = folder / "start_datetime.info"
    text = _read_info(info)
    if text is None:
        return dt.datetime(2000, 1, 1)
    why = ""
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%d"):  # Grid2Op's two formats
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError as exc:
            # the right format but no such date (2019-02-29) says so
            why = why or (str(exc) if "out of range" in str(exc) else "")
    if why:
        raise EnvOptionError(f"{info}: {text[:40]!r} is no date ({why})")
    raise EnvOptionError(f"{info}: expected 'YYYY-MM-DD HH:MM', got {text[:40]!r}")


def _days(values: np.ndarray, first: int, per_step: int) -> np.ndarray:
    """(rows, cols) at the chronic's step -> (days, STEPS_PER_DAY, cols) at the env's."""
    rows_per_day = scenarios.STEPS_PER_DAY * per_step
    n_days = max((values.shape[0] - first) // rows_per_day, 0)
    if n_days == 0:  # a reshape of nothing into days raised a bare ValueError
        return np.zeros((0, scenarios.STEPS_PER_DAY, values.shape[1]))
    cut = values[first : first + n_days * rows_per_day]
    return cut.reshape(n_days, scenarios.STEPS_PER_DAY, per_step, -1).mean(axis=2)


#: A ``config.py`` entry that only running the file would give.
UNREADABLE = object()
#: The entries of ``config.py``'s ``config`` dict that are read.
CONFIG_KEYS = ("thermal_limits", "names_chronics_to_grid")


def _config(path: Path) -> tuple[dict, str]:
    """The literal values of the :data:`CONFIG_KEYS` of ``config.py``'s ``config`` dict
    (read with ast, never run), as Python would bind them statement by statement: a key
    that is absent is missing from the result, one that only running the file would
    give is :data:`UNREADABLE`. Also why the file could not be read at all ("" if it
    could)."""
    config = path / "config.py"
    if not config.exists():
        return {}, "there is no config.py"
    text = _read_text(config, MAX_INFO_BYTES)
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return {}, f"config.py cannot be parsed ({type(exc).__name__})"
    unknown = dict.fromkeys(CONFIG_KEYS, UNREADABLE)
    bindings: dict[str, ast.expr] = {}  # module-level names bound to an expression
    entries: dict = {}

    def literal(node: ast.expr):
        if isinstance(node, ast.Name):  # a name bound earlier in the file
            node = bindings.get(node.id)
            if node is None:
                return UNREADABLE
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            return UNREADABLE

    if any(isinstance(n, ast.Name) and n.id in _REFLECTIVE for n in ast.walk(tree)):
        return dict(unknown), ""  # globals()["config"] = ...: only running tells
    built = False  # config has been assigned: a later mutation changes what Grid2Op reads
    for stmt in tree.body:
        calls = any(isinstance(n, ast.Call) for n in ast.walk(stmt))
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                bound = (alias.asname or alias.name).split(".")[0]
                bindings.pop(bound, None)
                if bound in ("config", "*"):  # from elsewhere import config: unknown
                    entries, built = dict(unknown), True
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        if isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            stmt = ast.Assign(targets=[stmt.target], value=stmt.value)  # config: dict = {...}
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name) and target.id == "config":
                    # a call in the same statement may change a name the dict reads
                    read = literal if not calls else _inline_only(literal)
                    entries, built = _config_dict(stmt.value, read, unknown), True
                elif isinstance(target, ast.Name):
                    if calls:
                        bindings.pop(target.id, None)
                    else:
                        bindings[target.id] = stmt.value  # c2 = config aliases it: see below
                elif (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "config"
                    and isinstance(target.slice, ast.Constant)
                ):  # config["thermal_limits"] = ...
                    if target.slice.value in CONFIG_KEYS:
                        entries[target.slice.value] = literal(stmt.value)
                elif _stores_config(target):  # config, x = ...: only running tells
                    entries, built = dict(unknown), True
                elif built:  # TL[0] = ..., c2["x"] = ..., config["a"][0] = ...: a
                    entries = dict(unknown)  # mutation of what config may hold
                else:
                    for node in ast.walk(target):
                        if isinstance(node, ast.Name):
                            bindings.pop(node.id, None)
            if (
                calls
                and built
                and not any(isinstance(t, ast.Name) and t.id == "config" for t in stmt.targets)
            ):  # x = f(): the call may change what config holds
                entries = dict(unknown)
            continue
        # anything else may bind or change config (if/try/with/for around it, a walrus,
        # a call such as TL.sort() or config.update(), an augmented assignment, a class
        # body): only running tells; before config, the names it touches are no longer
        # literal
        if _stores_config(stmt):
            entries, built = dict(unknown), True
        elif built and not (isinstance(stmt, ast.FunctionDef) and not calls):
            entries = dict(unknown)
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name):
                bindings.pop(node.id, None)
        if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            bindings.pop(stmt.name, None)
    return entries, ""


#: Names through which a file can bind or run anything: a config.py that uses one is
#: read as unknown.
_REFLECTIVE = frozenset(
    {"globals", "locals", "vars", "exec", "eval", "setattr", "__import__", "__dict__"}
)


def _stores_config(node: ast.AST) -> bool:
    """``node`` binds the name ``config`` somewhere (a tuple target, a walrus, a loop
    variable, a with ... as, an assignment inside if/try/with/for)."""
    return any(
        isinstance(n, ast.Name) and n.id == "config" and isinstance(n.ctx, ast.Store)
        for n in ast.walk(node)
    )


def _inline_only(literal):
    """``literal`` for values written inline; a name (which a call in the same statement
    might change first) is unreadable."""

    def read(node: ast.expr):
        return UNREADABLE if isinstance(node, ast.Name) else literal(node)

    return read


def _config_dict(value: ast.expr, literal, unknown: dict) -> dict:
    """The :data:`CONFIG_KEYS` entries of ``config = <value>``."""
    if not isinstance(value, ast.Dict) or None in value.keys:
        return dict(unknown)  # dict(...), a comprehension, ** unpacking
    entries = {}
    for key, item in zip(value.keys, value.values, strict=True):
        if not isinstance(key, ast.Constant):
            return dict(unknown)
        if key.value in CONFIG_KEYS:
            entries[key.value] = literal(item)
    return entries


def _grid2op_names(table, prefix: str) -> list[str]:
    """Grid2Op's names of a pandapower table's elements, as its pandapower backend gives
    them: the table's ``name`` column when no name is missing, else
    ``<prefix>_<bus>_<i>``."""
    if "name" in table.columns and not table["name"].isnull().any():
        return [str(n) for n in table["name"]]
    return [f"{prefix}_{row['bus']}_{i}" for i, (_, row) in enumerate(table.iterrows())]


def _line_names(net) -> list[str]:
    """Grid2Op's names of the lines then the transformers (``<from>_<to>_<i>``; a
    transformer's two buses in string order), as its pandapower backend gives them."""
    if "name" in net.line.columns and not net.line["name"].isnull().any():
        names = [str(n) for n in net.line["name"]]
    else:
        names = [
            f"{row['from_bus']}_{row['to_bus']}_{i}"
            for i, (_, row) in enumerate(net.line.iterrows())
        ]
    if "name" in net.trafo.columns and not net.trafo["name"].isnull().any():
        return names + [str(n) for n in net.trafo["name"]]
    n_line = len(net.line)
    for i, (_, row) in enumerate(net.trafo.iterrows()):
        ends = sorted((f"{row['hv_bus']}", f"{row['lv_bus']}"))
        names.append(f"{ends[0]}_{ends[1]}_{i + n_line}")
    return names


def _check_unique(names: list[str], what: str, where: Path) -> None:
    seen: set[str] = set()
    twice = [n for n in names if n in seen or seen.add(n)]
    if twice:
        raise EnvOptionError(
            f"{where}: {what} names {sorted(set(twice))[:3]} occur twice; Grid2Op matches "
            "the chronics' columns by name"
        )


def _columns(frame, names: list[str], file: Path, rename: dict) -> np.ndarray:
    """The columns ``names`` of a chronic table (after Grid2Op's renaming of
    ``names_chronics_to_grid``) as finite float64 within :data:`MAX_MW`."""
    if rename:
        frame = frame.rename(columns=rename)
    if frame.columns.duplicated().any():
        twice = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise EnvOptionError(f"{file}: columns {twice[:3]} occur twice")
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise EnvOptionError(
            f"{file}: no column for {missing[:3]} ({len(missing)} of the grid's "
            f"elements); its columns are named {[str(c) for c in frame.columns[:3]]}, ..."
        )
    try:
        values = frame[names].to_numpy(np.float64)
    except (TypeError, ValueError) as exc:  # a cell that is not a number
        raise EnvOptionError(f"{file}: a value is not a number ({exc})") from None
    bad = ~np.isfinite(values) | (np.abs(np.nan_to_num(values)) > MAX_MW)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise EnvOptionError(
            f"{file}: row {row + 1}, column {names[col]!r} is {float(values[row, col])}, not a "
            f"finite number within {MAX_MW:g}"
        )
    return values


def _read_chronic(folder: Path, names: dict, n_lines: int, rename: dict, assumed: list[str]):
    """``({"load_p", "load_q", "prod_p": (days, steps, n)}, line_out (days, steps,
    n_lines))`` of one chronic folder, in whole days at the env's step. ``names`` holds
    the Grid2Op names of the loads, generators and lines; ``rename`` maps the chronics'
    column names to them (``names_chronics_to_grid``)."""
    step = _interval_minutes(folder)
    per_step = scenarios.STEP_MINUTES // step
    # Grid2Op's first row is one step after start_datetime (23:55 -> 00:00); a day
    # starts at the first row less than one env step past midnight
    try:
        first_row = _start(folder) + dt.timedelta(minutes=step)
    except OverflowError:
        raise EnvOptionError(
            f"{folder}: its start_datetime.info is the last date there is"
        ) from None
    past = first_row.hour * 60 + first_row.minute
    first = 0 if past < scenarios.STEP_MINUTES else math.ceil((24 * 60 - past) / step)
    tables = {}
    rows = None
    for stem, kind in (("load_p", "loads"), ("load_q", "loads"), ("prod_p", "prods")):
        file = _chronic_file(folder, stem)
        if file is None:
            raise EnvOptionError(f"{folder}: no {stem}.csv(.bz2)")
        table = _read_csv(file, names=names[kind], rename=rename.get(kind))
        values = _columns(table, names[kind], file, rename.get(kind, {}))
        rows = _same_rows(file, values, rows)
        tables[stem] = _days(values, first, per_step)
    if tables["load_p"].shape[0] == 0:
        raise EnvOptionError(f"{folder}: shorter than one whole day from midnight")
    out = np.zeros((*tables["load_p"].shape[:2], n_lines), bool)
    for stem in ("maintenance", "hazards"):
        file = _chronic_file(folder, stem)
        if file is None:
            continue
        table = _read_csv(file, names=names["lines"], rename=rename.get("lines"))
        flags = _columns(table, names["lines"], file, rename.get("lines", {}))
        _same_rows(file, flags, rows)
        # Grid2Op: any value other than 0 is an outage (a negative one too); a step is
        # out where any of its rows is
        flags = _days((np.abs(flags) >= 1e-7).astype(float), first, per_step) > 0
        out |= flags
    if (folder / "maintenance_meta.json").is_file() and _chronic_file(
        folder, "maintenance"
    ) is None:
        assumed.append(
            f"{folder.name}: maintenance that Grid2Op draws at run time "
            "(maintenance_meta.json) is not replayed"
        )
    return tables, out


def _same_rows(file: Path, values: np.ndarray, rows: int | None) -> int:
    """``values``' row count, which must be ``rows`` (the folder's first file's), as
    Grid2Op requires: a short prod_p gave every later day the next day's schedule."""
    if rows is not None and values.shape[0] != rows:
        raise EnvOptionError(
            f"{file}: {values.shape[0]} rows where the chronic's load_p has {rows}; every "
            "file of a chronic has one row per step"
        )
    return values.shape[0]


def _ratings(net, path: Path, names: list[str], entry, why: str, assumed: list[str]):
    """(n_branch,) MVA ratings: Grid2Op's thermal limits (A) of ``config.py`` (a list in
    line order or a dict by line name) at the origin bus's nominal voltage, else the
    grid's own limits as Grid2Op's pandapower backend reads them; and where they come
    from."""
    kv = net.bus.loc[net.line.from_bus, "vn_kv"].to_numpy(float)
    kv_t = net.bus.loc[net.trafo.hv_bus, "vn_kv"].to_numpy(float)
    config = path / "config.py"
    if isinstance(entry, dict):
        unknown = sorted(set(map(str, entry)) - set(names))
        missing = [n for n in names if n not in entry]
        if unknown or missing:
            raise EnvOptionError(
                f"{config}: thermal_limits names lines the grid lacks ({unknown[:3]}) or "
                f"misses some of its lines ({missing[:3]})"
            )
        entry = [entry[n] for n in names]
    if isinstance(entry, (list, tuple)):
        if len(entry) != len(names):
            raise EnvOptionError(
                f"{config}: {len(entry)} thermal limits for the grid's {len(names)} lines"
            )
        amps = np.full(len(names), np.nan)
        for i, x in enumerate(entry):
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                with contextlib.suppress(OverflowError):  # a 400-digit integer stays NaN
                    amps[i] = float(x)
        source = "the thermal limits of config.py (A), at the origin bus's nominal voltage"
        where = f"{config}: thermal_limits"
    else:
        if entry is UNREADABLE:
            why = "config.py sets thermal_limits in a way only running it would show"
        elif entry is not None and not why:
            why = f"config.py's thermal_limits is a {type(entry).__name__}"
        amps = np.concatenate(
            [
                net.line["max_i_ka"].to_numpy(float) * 1000 * net.line["parallel"].to_numpy(float),
                net.trafo["sn_mva"].to_numpy(float) / (math.sqrt(3) * kv_t) * 1000,
            ]
        )
        source = "the grid's own limits (lines max_i_ka, transformers sn_mva)"
        where = f"{path / 'grid.json'}: the limit (max_i_ka, sn_mva)"
        assumed.append(
            f"{why or 'config.py gives no thermal limits'}: {source}, as Grid2Op's "
            "pandapower backend"
        )
    rate = math.sqrt(3) * np.concatenate([kv, kv_t]) * amps / 1000
    # a 0 rating reads as unlimited downstream and Grid2Op divides by it; a huge one is
    # pandapower's way of saying unlimited (rte_case118_example's lines: 99,999 kA)
    bad = ~np.isfinite(rate) | (rate < MIN_RATING_MVA)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EnvOptionError(
            f"{where} of line {names[i]!r} gives {float(rate[i])!r} MVA, not a finite "
            f"rating of at least {MIN_RATING_MVA:g} MVA ({int(bad.sum())} such lines)"
        )
    return rate, source


def _read_prods(path: Path, gen_names: list[str], assumed: list[str]):
    """``prods_charac.csv``'s rows of the grid's generators, in the grid's order, with
    the numbers checked: Pmax, Pmin finite and ordered, ramps non-negative or blank,
    marginal costs finite within :data:`MAX_COST` or blank, types Grid2Op knows."""
    import pandas as pd

    charac = path / "prods_charac.csv"
    if not charac.exists():
        raise EnvOptionError(f"{path}: no prods_charac.csv (generator limits and types)")
    text = _read_text(charac, MAX_INFO_BYTES)
    try:
        prods = pd.read_csv(io.StringIO(text), sep=",", dtype={"name": str, "type": str})
    except (ValueError, MemoryError) as exc:
        raise EnvOptionError(
            f"{charac}: cannot read it as a comma-separated table ({exc})"
        ) from None
    required = ("name", "Pmax", "Pmin", "type")
    missing = [c for c in required if c not in prods.columns]
    if missing:
        raise EnvOptionError(
            f"{charac}: no column {missing} (it needs {', '.join(required)}, comma-separated; "
            f"its first columns are {[str(c) for c in prods.columns[:4]]})"
        )
    _check_unique(prods["name"].astype(str).tolist(), "generator", charac)
    prods = prods.set_index(prods["name"].astype(str))
    absent = [n for n in gen_names if n not in prods.index]
    if absent:
        raise EnvOptionError(f"{charac}: no row for generator(s) {absent[:3]}")
    extra = sorted(set(prods.index) - set(gen_names))
    if extra:  # Grid2Op refuses them too
        raise EnvOptionError(f"{charac}: rows for generator(s) the grid lacks: {extra[:3]}")
    prods = prods.loc[gen_names].copy()
    for column in ("Pmax", "Pmin", "max_ramp_up", "marginal_cost"):
        if column not in prods.columns:
            continue
        raw = prods[column]
        values = pd.to_numeric(raw, errors="coerce")
        wrong = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if wrong.any():
            name = wrong.index[np.flatnonzero(wrong.to_numpy())[0]]
            raise EnvOptionError(f"{charac}: {column} of {name!r} is {raw[name]!r}, not a number")
        prods[column] = values.astype(float)
    p_max, p_min = prods["Pmax"].to_numpy(), prods["Pmin"].to_numpy()
    bad = ~np.isfinite(p_max) | ~np.isfinite(p_min) | (p_max < p_min) | (p_min < 0)
    bad |= (np.abs(np.nan_to_num(p_max)) > MAX_MW) | (np.abs(np.nan_to_num(p_min)) > MAX_MW)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EnvOptionError(
            f"{charac}: {gen_names[i]!r} has Pmin {float(p_min[i])}, Pmax {float(p_max[i])}: "
            f"they must be finite, within {MAX_MW:g} MW, with 0 <= Pmin <= Pmax (Grid2Op "
            "refuses a negative Pmin)"
        )
    if "max_ramp_up" not in prods.columns:  # D10: the column itself may be missing
        prods["max_ramp_up"] = np.nan
        assumed.append("prods_charac.csv has no max_ramp_up column: every unit ramps freely")
    ramps = prods["max_ramp_up"].to_numpy()
    bad = (ramps < 0) | np.isinf(ramps) | (np.nan_to_num(ramps) > MAX_MW)
    if bad.any():
        name = prods.index[np.flatnonzero(bad)[0]]
        raise EnvOptionError(
            f"{charac}: max_ramp_up of {name!r} is {float(prods.loc[name, 'max_ramp_up'])}, "
            f"not a ramp in 0..{MAX_MW:g} MW per step (blank: none)"
        )
    if "marginal_cost" in prods.columns:
        cost = prods["marginal_cost"].to_numpy()
        bad = np.isinf(cost) | (np.abs(np.nan_to_num(cost)) > MAX_COST)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise EnvOptionError(
                f"{charac}: marginal_cost of {gen_names[i]!r} is {float(cost[i])}, not a finite "
                f"cost within {MAX_COST:g} $/MWh"
            )
    kinds = prods["type"].astype(str)
    unknown = sorted(set(kinds) - set(UNIT_TYPES))
    if unknown:  # exactly as Grid2Op reads them (it refuses " WIND " too)
        raise EnvOptionError(
            f"{charac}: unit type(s) {unknown[:3]}; Grid2Op knows {', '.join(UNIT_TYPES)} "
            "(lower case, no spaces)"
        )
    return prods


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
    for table in UNMODELLED_TABLES:  # replayed days would leave their injections out
        frame = getattr(net, table, None)
        if hasattr(frame, "columns") and len(frame):
            if table == "switch":  # an open switch
                on = ~frame["closed"].fillna(True).astype(bool)
            elif "in_service" in frame:
                on = frame["in_service"].fillna(True).astype(bool)
            else:  # a table without the column: every element counts
                on = np.ones(len(frame), bool)
            if on.any():
                raise EnvOptionError(
                    f"{path / 'grid.json'}: {int(on.sum())} {table} element(s); gridrl replays "
                    "Grid2Op days on lines, transformers, loads, generators, shunts and storage "
                    f"only ({', '.join(UNMODELLED_TABLES)} are not read)"
                )
    for table, what in ((net.load, "load"), (net.gen, "generator")):
        if not len(table):
            raise EnvOptionError(f"{path / 'grid.json'}: the grid has no {what}")
        off = ~table["in_service"].fillna(False).astype(bool).to_numpy()
        if off.any():  # Grid2Op ends an episode whose load or generator is disconnected
            raise EnvOptionError(
                f"{path / 'grid.json'}: {int(off.sum())} {what}(s) out of service, e.g. "
                f"index {table.index[np.flatnonzero(off)[0]]}; a Grid2Op environment starts "
                "with every load and generator connected"
            )
    bus_pos = {int(b): i for i, b in enumerate(net.bus.index)}
    names = {
        "loads": _grid2op_names(net.load, "load"),
        "prods": _grid2op_names(net.gen, "gen"),
        "lines": _line_names(net),
    }
    for kind, what in (("loads", "load"), ("prods", "generator"), ("lines", "line")):
        _check_unique(names[kind], what, path / "grid.json")
    load_names, gen_names = names["loads"], names["prods"]
    entries, why = _config(path)
    rename = entries.get("names_chronics_to_grid") or {}
    if rename is UNREADABLE:
        rename = {}
        assumed.append(
            "config.py sets names_chronics_to_grid in a way only running it would show: "
            "the chronics' columns are taken to carry the grid's names"
        )
    if not (
        isinstance(rename, dict)
        and all(isinstance(v, dict) for v in rename.values())
        and all(
            isinstance(k, str) and isinstance(x, str) for v in rename.values() for k, x in v.items()
        )
    ):
        raise EnvOptionError(
            f"{path / 'config.py'}: names_chronics_to_grid is not a literal dict of "
            "{'loads'|'prods'|'lines': {chronic column: grid name}}"
        )
    for kind, mapping in rename.items():  # was blamed on the CSV's columns (rerun 8)
        targets = list(mapping.values())
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            sources = [k for k, t in mapping.items() if t == twice[0]]
            raise EnvOptionError(
                f"{path / 'config.py'}: names_chronics_to_grid[{kind!r}] maps {sources} to "
                f"one element, {twice[0]!r}; each element takes one chronic column"
            )

    # the chronics (read before the grid is converted: they decide which buses carry load)
    folders = sorted(p for p in (path / "chronics").iterdir() if p.is_dir())
    if not folders:
        raise EnvOptionError(f"{path / 'chronics'} holds no chronic folder")
    step_minutes = {f.name: _interval_minutes(f) for f in folders}
    if len(set(step_minutes.values())) > 1:
        raise EnvOptionError(
            f"{path / 'chronics'}: the chronics' steps differ ({step_minutes}); Grid2Op's "
            "ramps are per step, so they must be one"
        )
    n_lines = len(net.line) + len(net.trafo)
    per_chronic = [
        (folder.name, *_read_chronic(folder, names, n_lines, rename, assumed)) for folder in folders
    ]

    # the grid: every Grid2Op load's bus gets a gridphysics load; storage is idle
    recorded = np.concatenate([t["load_p"].reshape(-1, len(load_names)) for _, t, _ in per_chronic])
    net.load["p_mw"] = np.where(np.abs(recorded).max(axis=0) > 0, recorded.mean(axis=0), 1.0)
    net.load["q_mvar"] = 0.0
    assumed.append(
        "load_q is read and checked but not replayed: the environment's loads draw no "
        "reactive power (its AC physics too)"
    )
    for column in ("p_mw", "q_mvar"):  # a 1e9 MVAr shunt tripped every line at each step
        values = net.shunt[column].to_numpy(float) if column in net.shunt else np.zeros(0)
        bad = ~np.isfinite(values) | (np.abs(np.nan_to_num(values)) > MAX_MW)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise EnvOptionError(
                f"{path / 'grid.json'}: shunt {net.shunt.index[i]} has {column} = "
                f"{float(values[i]):g}, not a finite power within {MAX_MW:g}"
            )
    if len(net.storage):
        net.storage["p_mw"] = 0.0
        assumed.append(
            f"{len(net.storage)} storage units are held at 0 MW (not yet modelled as controllable)"
        )
    prods = _read_prods(path, gen_names, assumed)
    fleet = float(prods["Pmax"].sum())
    worst = np.abs(recorded).max(axis=0)
    if (worst > fleet).any():  # no dispatch can serve or absorb it: a corrupt number
        i = int(np.argmax(worst))
        raise EnvOptionError(
            f"{path / 'chronics'}: load {load_names[i]!r} reaches {float(worst[i]):g} MW in "
            f"load_p, beyond the {fleet:g} MW of all the grid's generators together"
        )
    total = recorded.sum(axis=1)
    if (total <= 0).any():  # Grid2Op's power flow diverges; gridrl's ENS turned negative
        row = int(np.flatnonzero(total <= 0)[0])
        raise EnvOptionError(
            f"{path / 'chronics'}: the loads sum to {float(total[row]):g} MW at step {row} "
            "(counted over every chronic, at the environment's step); a grid's demand is > 0"
        )
    net.gen["max_p_mw"] = prods["Pmax"].to_numpy(float)
    net.gen["min_p_mw"] = prods["Pmin"].to_numpy(float)
    try:
        network = gp.from_pandapower(net, name=path.name)
    except gp.GridPhysicsError as exc:  # rows are pandapower's internal (ppc) order
        raise EnvOptionError(
            f"{path / 'grid.json'}: pandapower's conversion of the grid fails ({exc}; branch "
            "rows count the lines, then the transformers)"
        ) from None
    if network.n_gen != len(net.gen) or network.n_bus != len(net.bus):
        raise EnvOptionError(f"{path}: the grid's generators or buses could not be kept in order")
    gen_bus = np.asarray(network.topology.gen_bus)
    expected_bus = np.array([bus_pos[int(b)] for b in net.gen.bus])
    if not np.array_equal(gen_bus, expected_bus):
        raise EnvOptionError(f"{path}: the converted generators are not in Grid2Op's order")

    # loads: the gridphysics load at the bus of each Grid2Op load
    load_bus = np.asarray(network.topology.load_bus)
    at_bus = {int(b): i for i, b in enumerate(load_bus)}
    lost = [
        n for n, b in zip(load_names, net.load.bus, strict=True) if bus_pos[int(b)] not in at_bus
    ]
    if lost:
        raise EnvOptionError(
            f"{path}: load(s) {lost[:3]} could not be placed on the converted grid"
        )
    load_map = np.array([at_bus[bus_pos[int(b)]] for b in net.load.bus], np.int64)

    def per_bus(values: np.ndarray) -> np.ndarray:
        out = np.zeros((*values.shape[:-1], network.n_load))
        np.add.at(out, (..., load_map), values)
        return out

    # limits, ramps and costs of prods_charac; ratings from the thermal limits (amps)
    ramp = prods["max_ramp_up"].to_numpy(float) / step_minutes[folders[0].name]
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
    rate, source = _ratings(net, path, names["lines"], entries.get("thermal_limits"), why, assumed)
    gen = network.gen.replace(
        ramp_mw_per_min=np.asarray(ramp, network.dtype),
        cost_c2=np.zeros(network.n_gen, network.dtype),
        cost_c1=np.asarray(cost, network.dtype),
        cost_c0=np.zeros(network.n_gen, network.dtype),
    )
    branch = network.branch.replace(rate_a_mva=np.asarray(rate, network.dtype))
    network = network.replace(gen=gen, branch=branch)
    try:  # the grid must solve as it stands (a zero impedance, a shift of 1e300)
        solved = gp.solve(network)
        ok = bool(solved.converged)
    except gp.GridPhysicsError as exc:
        raise EnvOptionError(f"{path / 'grid.json'}: the grid cannot be solved ({exc})") from None
    if not ok:
        raise EnvOptionError(f"{path / 'grid.json'}: its DC power flow does not converge")

    # the recorded schedules within the units' limits, as the environment runs them
    gen_mw = np.concatenate([t["prod_p"] for _, t, _ in per_chronic])
    absurd = (gen_mw > 2 * p_max + 1.0) | (gen_mw < -(0.5 * p_max + 1.0))
    if absurd.any():
        day, step, i = np.argwhere(absurd)[0]
        raise EnvOptionError(
            f"{path / 'chronics'}: prod_p of {gen_names[i]!r} reaches "
            f"{float(gen_mw[day, step, i]):g} MW (its Pmax is {float(p_max[i]):g} MW)"
        )
    outside = (gen_mw > p_max + 1e-6) | (gen_mw < -1e-6)
    if outside.any():
        units = sorted({gen_names[i] for i in np.argwhere(outside)[:, 2]})
        assumed.append(
            f"prod_p leaves [0, Pmax] for {len(units)} unit(s) ({', '.join(units[:3])}; by up "
            f"to {float(np.max(np.maximum(gen_mw - p_max, -gen_mw))):.3g} MW): the schedules "
            "are held within it"
        )
        gen_mw = np.clip(gen_mw, 0.0, p_max)

    day_chronic, eval_days = _split_days(per_chronic, assumed)
    renewable = prods["type"].isin(RENEWABLE_TYPES).to_numpy()
    return Grid2OpCase(
        name=path.name,
        path=path,
        network=network,
        load_mw=np.concatenate([per_bus(t["load_p"]) for _, t, _ in per_chronic]),
        load_mvar=np.concatenate([per_bus(t["load_q"]) for _, t, _ in per_chronic]),
        gen_mw=gen_mw,
        line_out=np.concatenate([o for _, _, o in per_chronic]),
        renewable=renewable,
        day_chronic=day_chronic,
        eval_days=eval_days,
        load_map=load_map,
        rating_source=source,
        names={kind: tuple(v) for kind, v in names.items()},
        assumed=tuple(assumed),
    )
