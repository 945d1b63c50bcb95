"""Floating-point precision policy.

gridphysics computes in float64 by default, because power-flow results are compared
against pandapower and MATPOWER to 1e-8 and float32 carries only ~7 significant
digits. JAX starts in float32 mode and would silently turn float64 arrays into
float32, so ``import gridphysics`` switches on JAX's float64 mode
(``jax_enable_x64``) — the README example then gives float64 results in a fresh
interpreter with no setting touched. float32 stays available per network
(``network.astype(jnp.float32)``); enabling x64 does not slow float32 arrays.

To keep JAX's global setting untouched, set the environment variable
``GRIDPHYSICS_ENABLE_X64=0`` before the import. Then float64 work raises
:class:`~gridphysics.errors.PrecisionError` with the one line to add, and never
silently downcasts.
"""

from __future__ import annotations

import os

import jax

from gridphysics.errors import PrecisionError

ENV_FLAG = "GRIDPHYSICS_ENABLE_X64"


def configure_on_import() -> bool:
    """Enable JAX float64 mode unless the user opted out; return whether x64 is on."""
    if os.environ.get(ENV_FLAG, "1").strip().lower() not in ("0", "false", "no", "off"):
        jax.config.update("jax_enable_x64", True)
    return bool(jax.config.jax_enable_x64)


def x64_enabled() -> bool:
    return bool(jax.config.jax_enable_x64)


def require_x64() -> None:
    """Raise a one-line actionable error if JAX's float64 mode is off."""
    if not x64_enabled():
        raise PrecisionError(
            "float64 needs JAX's float64 mode, which is off: call "
            "jax.config.update('jax_enable_x64', True) before building the network "
            f"(or unset {ENV_FLAG}=0), or use network.astype(jnp.float32) for float32"
        )


def default_float_dtype():
    """float64 when JAX's float64 mode is on, else raises PrecisionError."""
    require_x64()
    return jax.numpy.float64


SYNC_DISPATCH_FLAG = "GRIDPHYSICS_CPU_SYNC_DISPATCH"


def configure_dispatch_on_import() -> None:
    """Opt-in: run CPU computations on the calling thread (``GRIDPHYSICS_CPU_SYNC_DISPATCH=1``).

    JAX dispatches CPU work asynchronously to a thread pool. That overlaps Python with
    long computations, but adds ~40 us of hand-off latency to every small call: a
    single ieee118 DC solve takes ~95 us with it and ~50 us without. The switch only
    takes effect before JAX creates its CPU client, hence an environment variable read
    at import. Off by default, because it changes JAX's behaviour for the whole process.
    """
    if os.environ.get(SYNC_DISPATCH_FLAG, "0").strip().lower() in ("1", "true", "yes", "on"):
        jax.config.update("jax_cpu_enable_async_dispatch", False)
