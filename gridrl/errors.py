"""gridrl's typed errors: every bad input a user can give raises one of these (or a
subclass of a builtin it also derives from, so existing ``except ValueError`` keeps
working), with a message that names the element, the index and the value."""

from __future__ import annotations


class GridRLError(Exception):
    """Base class of gridrl's errors."""


class ActionError(GridRLError, ValueError):
    """Actions that do not fit the action spaces (a missing agent, a wrong shape)."""


class EnvOptionError(GridRLError, ValueError):
    """An invalid option of :func:`gridrl.make` (unknown name, wrong type or range)."""
