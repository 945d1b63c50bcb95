"""Training checkpoints (orbax): the whole train state plus the configuration that made it.

A checkpoint directory holds one sub-directory per saved update (orbax's layout); orbax
writes each one under a temporary name and renames it when complete, so a run killed
mid-save never leaves a half-written checkpoint that :func:`latest_step` would pick.

Integrity: :func:`save` writes a SHA-256 digest of the saved state (every leaf's shape,
dtype and bytes, in tree order) into the checkpoint's metadata, and one of the metadata
itself (:func:`meta_digest`: the configuration, the level, the state's digest), which
every read verifies; :func:`restore` recomputes
it on what it read and raises :class:`CheckpointError` naming the step's files when they
differ or when the checksum is missing (a damaged or edited file; only a state sharded
over several hosts is saved without one, and says so). Restoring the latest checkpoint falls back to the
newest earlier one that is intact, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from gridrl.errors import GridRLError
from gridrl.scenarios import TOP_LEVEL

FORMAT = "gridrl-mappo-1"


#: Checkpoint metadata is a few kB; far more is no gridrl metadata.
MAX_META_BYTES = 16 * 2**20


class CheckpointError(GridRLError, RuntimeError):
    """A missing, unreadable or incompatible checkpoint."""


def checkpoint_dir(path: str | Path) -> Path:
    """``path`` itself, or ``path/checkpoints`` when ``path`` is a run directory."""
    path = Path(path).absolute()
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    return path


def manager(directory: str | Path, keep: int = 3, read_only: bool = False):
    directory = Path(directory).absolute()
    if read_only:
        options = ocp.CheckpointManagerOptions(
            read_only=True, create=False, save_interval_steps=0, enable_async_checkpointing=False
        )
    else:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # orbax warns about the read-only options it was given
    try:
        return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))
    finally:
        absl.setLevel(level)


def digest(state) -> str | None:
    """SHA-256 of the state's leaves (shape, dtype and bytes, in tree order); None when
    some leaf lives partly on other hosts (multi-host runs are not digested)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        if not getattr(leaf, "is_fully_addressable", True):
            return None
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        a = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
        h.update(f"{a.shape}{a.dtype.str};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def meta_digest(meta: dict) -> str:
    """SHA-256 of the metadata (canonical JSON) without its own ``meta_digest``: an
    edited configuration, or a ``digest_skipped`` added by hand, no longer matches."""
    core = {k: v for k, v in meta.items() if k != "meta_digest"}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def _is_empty(leaf) -> bool:
    return hasattr(leaf, "shape") and 0 in tuple(leaf.shape)


def _stored(state):
    """``state`` as orbax stores it: orbax cannot save an array with no elements (a
    grid without renewable units has an empty wind state; training crashed at its first
    checkpoint, hostile rerun 9), so each becomes a 1-element placeholder, and
    :func:`_restore_step` gives back an empty array of the target's shape."""
    return jax.tree.map(lambda x: jnp.zeros((1,), x.dtype) if _is_empty(x) else x, state)


def save(mgr, update: int, state, meta: dict) -> None:
    state = _stored(state)
    found = digest(state)
    meta = {"format": FORMAT, **meta, "digest": found}
    if found is None:  # restore accepts a missing checksum only with this reason
        meta["digest_skipped"] = f"the state is sharded over {jax.process_count()} processes"
    meta["meta_digest"] = meta_digest(meta)
    mgr.save(
        update,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True,
    )
    mgr.wait_until_finished()


def latest_step(path: str | Path) -> int:
    directory = checkpoint_dir(path)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint directory at {directory}")
    step = manager(directory, read_only=True).latest_step()
    if step is None:
        raise CheckpointError(
            f"{directory} holds no complete checkpoint (expected orbax step directories "
            f"written by `python -m gridrl.train`)"
        )
    return step


def read_meta(path: str | Path, step: int | None = None) -> tuple[int, dict]:
    """``(step, meta)`` of the latest (or the given) checkpoint under ``path``."""
    directory = checkpoint_dir(path)
    step = latest_step(directory) if step is None else step
    meta_file = directory / str(step) / "meta" / "metadata"
    try:
        info = os.stat(meta_file)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_META_BYTES:
            # a directory, a device (/dev/zero was read until memory ran out), a FIFO
            # (open() blocked for ever) or a file far beyond any metadata
            raise CheckpointError(
                f"checkpoint {directory / str(step)}: its metadata is not a file of at most "
                f"{MAX_META_BYTES:,} bytes"
            )
        with open(meta_file, "rb") as f:
            meta = json.loads(f.read(MAX_META_BYTES + 1).decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {directory / str(step)} has no metadata (incomplete or not a gridrl checkpoint)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {directory / str(step)}: corrupt metadata ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {directory / str(step)} has format "
            f"{meta.get('format') if isinstance(meta, dict) else None!r}; this gridrl reads {FORMAT!r}"
        )
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"checkpoint {meta_file}: no training configuration in its metadata")
    level = meta.get("level", 0)
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= TOP_LEVEL:
        raise CheckpointError(f"checkpoint {meta_file}: level {level!r} is no curriculum level")
    saved = meta.get("meta_digest")
    if not isinstance(saved, str):
        raise CheckpointError(
            f"checkpoint {meta_file}: no checksum of its metadata (a damaged or edited file, "
            "or a checkpoint from before checksums)"
        )
    if saved != meta_digest(meta):
        raise CheckpointError(
            f"checkpoint {meta_file}: the metadata does not match the checksum written when "
            "it was saved (an edited or damaged file)"
        )
    return step, meta


def same_options(a: dict, b: dict) -> bool:
    """Two runs' options agree but for --total-steps (the one that may change)."""
    return {**a, "total_steps": 0} == {**b, "total_steps": 0}


def restore(path: str | Path, target, step: int | None = None, config: dict | None = None):
    """The train state saved at ``step`` (default: the latest intact one), shaped and
    sharded like ``target`` (a pytree of arrays or ``jax.ShapeDtypeStruct``), and its
    metadata. Without ``step``, a damaged latest checkpoint falls back to the newest
    earlier one that is intact (with a warning); with ``step``, it raises. With
    ``config`` (the options ``target`` was built with, ``TrainConfig.to_dict()``), a
    checkpoint saved with other options is no fallback: one copied in from another run
    was set aside and a checkpoint of other options restored in its place (hostile
    rerun 8)."""
    if step is not None:
        return _restore_step(path, target, step)
    directory = checkpoint_dir(path)
    latest = latest_step(directory)
    steps = sorted(manager(directory, read_only=True).all_steps(), reverse=True)
    first_error = None
    for s in [latest, *[s for s in steps if s != latest]]:
        try:
            if config is not None:
                _, meta = read_meta(directory, s)
                if not same_options(meta.get("config") or {}, config):
                    raise CheckpointError(
                        f"checkpoint {directory / str(s)} was saved with other options than "
                        "the run's (checkpoints of two runs in one directory?)"
                    )
            out = _restore_step(directory, target, s)
        except CheckpointError as exc:
            first_error = first_error or exc
            continue
        if first_error is not None:
            warnings.warn(
                f"{first_error}; using checkpoint {directory / str(s)} instead", stacklevel=2
            )
        return out
    raise first_error


def _restore_step(path: str | Path, target, step: int):
    directory = checkpoint_dir(path)
    step, meta = read_meta(directory, step)
    abstract = jax.tree.map(
        lambda x: (
            jax.ShapeDtypeStruct((1,), x.dtype)
            if _is_empty(x)
            else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
        ),
        target,
    )
    try:
        restored = manager(directory, read_only=True).restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )
    except Exception as exc:  # orbax/tensorstore raise many kinds; name the checkpoint
        raise CheckpointError(
            f"checkpoint {directory / str(step)} could not be read: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    saved = meta.get("digest")
    if saved is None and not meta.get("digest_skipped"):
        # a damaged or edited metadata file: without the checksum nothing is verified
        raise CheckpointError(
            f"checkpoint {directory / str(step)}: its metadata {directory / str(step) / 'meta'} "
            "holds no checksum of the state (a damaged or edited file, or a checkpoint from "
            "before checksums), so the state cannot be verified"
        )
    if saved is not None:
        found = digest(restored["state"])
        if found is not None and found != saved:
            raise CheckpointError(
                f"checkpoint {directory / str(step)}: the state read from {directory / str(step) / 'state'} "
                "does not match the checksum written when it was saved (a damaged or changed file)"
            )
    state = jax.tree.map(
        lambda r, t: jnp.zeros(t.shape, t.dtype) if _is_empty(t) else r, restored["state"], target
    )
    return state, meta
