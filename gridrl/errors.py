"""gridrl's typed errors: every bad input a user can give raises one of these (or a
subclass of a builtin it also derives from, so existing ``except ValueError`` keeps
working), with a message that names the element, the index and the value."""

from __future__ import annotations


class GridRLError(Exception):
    """Base class of gridrl's errors."""


class ActionError(GridRLError, ValueError):
    """Actions that do not fit the action spaces (a missing agent, a wrong shape)."""


class UnknownAgentError(GridRLError, KeyError):
    """An agent name the environment does not have; the message lists its agents."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class EnvInputError(GridRLError, TypeError):
    """A reset or step argument of the wrong kind: a key that is not a JAX PRNG key,
    actions that are not a dict of arrays."""


class EnvOptionError(GridRLError, ValueError):
    """An invalid option of :func:`gridrl.make` (unknown name, wrong type or range)."""
