"""Exceptions raised by gridphysics.

Every error derives from :class:`GridPhysicsError`, so ``except GridPhysicsError``
catches all of them. Messages name the element (bus, branch, generator, load,
shunt) and its index or original id, and say what to do about it.
"""

from __future__ import annotations


class GridPhysicsError(Exception):
    """Base class of all gridphysics errors."""


class CaseFormatError(GridPhysicsError, ValueError):
    """A case file or case dict is malformed (wrong shape, missing table, bad number)."""


class MatpowerParseError(CaseFormatError):
    """A MATPOWER ``.m`` file cannot be parsed; the message names the line."""

    def __init__(self, message: str, *, line: int | None = None, path: str | None = None):
        where = ""
        if path is not None:
            where += f"{path}:"
        if line is not None:
            where += f"line {line}: "
        elif where:
            where += " "
        super().__init__(where + message)
        self.line = line
        self.path = path


class UnknownCaseError(GridPhysicsError, KeyError):
    """``load_case`` got a name that is neither a catalogued case nor a file."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NetworkError(GridPhysicsError, ValueError):
    """The network's data is inconsistent."""


class DuplicateBusError(NetworkError):
    """Two buses share an id."""


class UnknownBusError(NetworkError):
    """An element refers to a bus id that does not exist."""


class NoSlackError(NetworkError):
    """No reference (slack) bus exists in the network."""


class ZeroImpedanceError(NetworkError):
    """An in-service branch has zero series reactance, which the DC model cannot represent."""


class InvalidValueError(NetworkError):
    """A NaN or infinite value where a finite number is required (injections, impedances)."""


class InputTypeError(GridPhysicsError, TypeError):
    """An argument of the wrong kind: not a network, not a case dict, not a path, not
    numbers, not an options object."""


class CaseFileError(GridPhysicsError, OSError):
    """A case file cannot be read: it does not exist, is a directory or is not
    readable. The message names the path."""


class PrecisionError(GridPhysicsError, RuntimeError):
    """float64 was asked for but JAX's float64 mode is off."""


class UnsupportedError(GridPhysicsError, NotImplementedError):
    """A method, element or option that gridphysics does not (yet) support."""


class ConvergenceWarning(UserWarning):
    """A power flow outside ``jit`` did not converge; its result has ``converged=False``."""


class ReferenceMovedWarning(UserWarning):
    """The case's reference bus had no in-service generator: the reference moved to the
    first PV bus with one (MATPOWER's and PYPOWER's rule)."""
