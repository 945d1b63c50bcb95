"""gridrl's typed errors: every bad input a user can give raises one of these (or a
subclass of a builtin it also derives from, so existing ``except ValueError`` keeps
working), with a message that names the element, the index and the value."""

from __future__ import annotations

import os
import tempfile


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


class OutputPathError(GridRLError, ValueError):
    """An output file or directory that cannot be written; raised before any work."""


def writable_dir(path, flag: str):
    """``path`` as a directory that can be made and takes a file, checked before a long
    job writes there, so that it fails at once and not after the work. Directories the
    check makes are removed again."""
    from pathlib import Path

    path = Path(path)
    made = []  # the directories this check creates: removed again, the job makes them
    try:
        for parent in (path, *path.parents):
            if parent.exists() or parent.is_symlink():
                break
            made.append(parent)
        path.mkdir(parents=True, exist_ok=True)
        # a name of its own: a user's file is never overwritten or removed
        handle, probe = tempfile.mkstemp(prefix=".gridrl-write-test-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise OutputPathError(f"{flag} {path}: cannot write there ({exc})") from None
    finally:
        for directory in made:  # deepest first; only if still empty
            try:
                directory.rmdir()
            except OSError:
                break
    return path


def writable_file(path, flag: str):
    """``path`` as a file that can be written (its directory exists and takes a file,
    and it is not itself a directory); checked before the work that produces it."""
    from pathlib import Path

    path = Path(path)
    try:
        if path.is_dir():
            raise OutputPathError(f"{flag} {path}: is a directory, not a file")
        if path.is_symlink() and not path.exists():
            raise OutputPathError(f"{flag} {path}: a symbolic link to nothing")
        if path.exists() and not path.is_file():  # a FIFO waits for a reader for ever
            raise OutputPathError(f"{flag} {path}: exists and is not a regular file")
    except OutputPathError:
        raise
    except (OSError, ValueError) as exc:
        raise OutputPathError(f"{flag} {path}: cannot write there ({exc})") from None
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"{flag} {path}: its directory {parent} does not exist")
    writable_dir(parent, flag)
    return path
