"""Named cases and file loading: :func:`load_case`, :func:`load_matpower`, :func:`save_matpower`."""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path
from typing import Any

from gridphysics.errors import InputTypeError, UnknownCaseError
from gridphysics.matpower import load_matpower_dict, write_matpower
from gridphysics.network import Network
from gridphysics.ppc import from_ppc, to_ppc


def cases_dir() -> Path:
    """The case folder: ``gridphysics/_cases`` in a wheel, ``cases/`` in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_cases", here.parent / "cases"):
        if (candidate / "catalogue.toml").is_file():
            return candidate
    raise UnknownCaseError(  # pragma: no cover - only a broken install gets here
        f"the case catalogue is missing (looked in {here / '_cases'} and {here.parent / 'cases'})"
    )


@functools.lru_cache(maxsize=1)
def catalogue() -> dict[str, dict[str, Any]]:
    """The named cases: ``{name: {"file", "source", "aliases"}}``."""
    with open(cases_dir() / "catalogue.toml", "rb") as fh:
        return tomllib.load(fh)["cases"]


def case_names() -> list[str]:
    """Names accepted by :func:`load_case` (aliases not included)."""
    return sorted(catalogue())


def _resolve_name(name: str) -> str | None:
    key = name.strip().lower()
    for case, entry in catalogue().items():
        if key == case or key in entry.get("aliases", []):
            return case
    return None


def load_matpower(path: str | os.PathLike, *, name: str | None = None) -> Network:
    """Parse a MATPOWER ``.m`` case file into a :class:`~gridphysics.Network`.

    Raises:
        MatpowerParseError: the file is malformed (the message names the line).
        NetworkError: the data is inconsistent (duplicate bus ids, unknown buses, no slack).
        CaseFileError: the file does not exist or cannot be read.
        InputTypeError: ``path`` is not a path.
    """
    if not isinstance(path, str | os.PathLike):
        raise InputTypeError(f"a case file path must be a str or a path, got {path!r}")
    path = Path(path)
    case = load_matpower_dict(path)
    return from_ppc(case, name=name or path.stem)


def save_matpower(network: Network, path: str | os.PathLike) -> None:
    """Write ``network`` as a MATPOWER version-2 ``.m`` file.

    The text is read back (as :func:`load_matpower` reads it) before anything is
    written: a network the readers would refuse (NaN voltage angles after writing a
    failed AC solve into it, say) is a :class:`~gridphysics.errors.CaseFormatError`
    naming the value, and a good file at ``path`` is not overwritten by it."""
    from gridphysics.errors import CaseFormatError
    from gridphysics.matpower import parse_matpower

    path = Path(path)

    def reads_back(text: str) -> None:
        try:
            from_ppc(parse_matpower(text), name="case")
        except CaseFormatError as exc:
            raise CaseFormatError(
                f"save_matpower: nothing written to {path}; the case would not read back: {exc}"
            ) from None

    write_matpower(to_ppc(network), path, check=reads_back)


@functools.lru_cache(maxsize=16)
def _load_named(case: str) -> Network:
    entry = catalogue()[case]
    return load_matpower(cases_dir() / entry["file"], name=case)


def load_case(name_or_path: str | os.PathLike) -> Network:
    """A named case (``"ieee118"``, ``"pegase1354"``, MATPOWER names like ``"case118"``)
    or a path to a MATPOWER ``.m`` file.

    Raises:
        UnknownCaseError: neither a catalogued name nor an existing file; the message
            lists the names.
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise InputTypeError(
            f"load_case expects a case name or a path, got {type(name_or_path).__name__}"
        )
    text = os.fspath(name_or_path)
    if not text.strip():  # Path('') is '.', reported as a directory (hostile rerun 9)
        raise UnknownCaseError(
            f"load_case needs a case name or a path, got {text!r}. Named cases: "
            f"{', '.join(case_names())}"
        )
    case = _resolve_name(text)
    if case is not None:
        return _load_named(case)
    try:
        path = Path(text).expanduser()
        exists = path.exists()
    except (OSError, ValueError):  # a name too long for a path, a NUL in it
        exists = False
    if exists:
        return load_matpower(path)  # a directory or a device is a CaseFileError there
    raise UnknownCaseError(
        f"unknown case {text!r}: not a catalogued name and no such file. Named cases: "
        + ", ".join(case_names())
        + " (MATPOWER names like 'case118' work too), or pass a path to a .m file"
    )
