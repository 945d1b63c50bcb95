"""``python -m gridrl.train --case ieee118``: train the agents with MAPPO.

The run directory (``--run-dir``, default ``runs/<case>-<date>-<time>``) receives:

* ``logs/``: TensorBoard event files and ``metrics.jsonl`` (one line per update: losses,
  entropy, returns, every reward component, violations, interventions, curriculum
  level, steps/s);
* ``checkpoints/``: orbax checkpoints every ``--checkpoint-every`` updates and on
  Ctrl-C, the newest ``--keep-checkpoints`` kept; ``--resume RUN_DIR`` continues one;
* ``report.md`` and ``*.png``: the evaluation against the baselines on held-out days
  (``python -m gridrl.evaluate`` writes the same for any checkpoint).

Multi-host: start the same command on every host with ``--coordinator-address``,
``--num-processes`` and ``--process-id`` (or the ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` environment variables); environments are then
split over every device of every process.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import math
import os
import signal
import socket
import stat
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path

from gridrl.config import (
    BACKEND_FIELDS,
    HELP,
    ConfigError,
    TrainConfig,
    backend_default_text,
    type_name,
)
from gridrl.errors import EnvOptionError, GridRLError, OutputPathError, writable_dir
from gridrl.metrics import BY_NAME, LOG_FIELDS, METRICS


class TrainingDiverged(RuntimeError):
    """Non-finite losses or parameters; the last good checkpoint is kept."""


def _host(x):
    import numpy as np

    return np.asarray(x.addressable_data(0)) if hasattr(x, "addressable_data") else np.asarray(x)


#: The fields of a metrics record that resume and the report compare and count with.
_COUNTERS = ("update", "env_steps", "level")


def read_jsonl(path: Path) -> tuple[list[dict], list[int]]:
    """The JSON objects of a JSON-lines file and the numbers (1-based) of the lines that
    are not one (damaged or cut)."""
    records, damaged = [], []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: deep nesting
            damaged.append(i)
            continue
        # a record is an object whose counters are numbers ([1, 2], null or
        # {"update": "a"} crashed resume and the report with a TypeError); its other
        # fields may be null (no episode finished yet)
        if isinstance(record, dict) and all(
            isinstance(record[k], int | float) and not isinstance(record[k], bool)
            for k in _COUNTERS
            if k in record
        ):
            records.append(record)
        else:
            damaged.append(i)
    return records, damaged


class MetricsLog:
    """TensorBoard events and a JSONL file with the same scalars (process 0 only): a
    record holds :data:`gridrl.metrics.LOG_FIELDS`; those with a TensorBoard group are
    written as ``group/name`` scalars."""

    def __init__(self, log_dir: Path, resume_update: int | None = None):
        from tensorboardX import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / "metrics.jsonl"
        if resume_update is not None and self.path.exists():
            # drop lines past the checkpoint: they are about to be recomputed; a damaged
            # line (e.g. cut by a kill) is dropped and reported
            records, damaged = read_jsonl(self.path)
            if damaged:
                print(
                    f"{self.path}: dropped {len(damaged)} damaged line(s) (line "
                    f"{', '.join(map(str, damaged[:5]))}{' ...' if len(damaged) > 5 else ''})",
                    file=sys.stderr,
                )
            kept = [r for r in records if r.get("update", 0) <= resume_update]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.file = self.path.open("a")
        self.writer = SummaryWriter(str(log_dir), purge_step=None)

    def write(self, record: dict) -> None:
        step = record["env_steps"]
        for k, v in record.items():
            tag = BY_NAME[k].tag
            if tag is not None and math.isfinite(v):
                self.writer.add_scalar(tag, v, step)
        clean = {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in record.items()
        }
        self.file.write(json.dumps(clean) + "\n")

    def flush(self):
        self.file.flush()
        self.writer.flush()

    def close(self):
        self.file.close()
        self.writer.close()


#: The file a training holds locked in each of its directories while it runs.
LOCK_NAME = ".training.lock"

#: The directories this process holds: real path -> [lock file, holders].
_HELD: dict[str, list] = {}


def lock_run_dir(directory, flag: str = "--run-dir"):
    """Hold ``directory`` for one training: an exclusive lock on its :data:`LOCK_NAME`
    file, released when the returned file is closed or the process ends (however it
    ends: a killed run leaves no stale lock). Two trainings started on one directory
    both ran and mixed their logs and checkpoints; the second is now an
    :class:`OutputPathError` naming the process that holds it. The lock file is opened
    without following links and must be a file of its own (a link to a user's file was
    truncated). None where the system has no ``fcntl`` (no lock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    try:
        path = Path(directory) / LOCK_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte; ELOOP: a link
        raise OutputPathError(
            f"{flag} {directory}: cannot hold its lock file {LOCK_NAME} ({exc})"
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise OutputPathError(
            f"{flag} {directory}: {LOCK_NAME} is not a file of its own (a hard link or "
            "a special file); remove it"
        )
    handle = os.fdopen(fd, "r+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = handle.read(200).strip() or "another process"
        handle.close()
        raise OutputPathError(
            f"{flag} {directory} is in use by another training ({holder}); wait for it to "
            "end, or choose another directory"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


@contextlib.contextmanager
def holding(*directories):
    """Hold each of ``directories`` (``(path, flag)`` pairs; the same directory once,
    in a fixed order) for as long as the block runs, by the first process only:
    :func:`lock_run_dir`, re-entrant within this process (the CLI holds them before
    it touches a log; :func:`run_training` then holds them again)."""
    import jax

    if jax.process_index() != 0:
        yield
        return
    wanted = {}
    for directory, flag in directories:
        try:  # nothing is made before the first lock is held (sorted: parents first)
            key = os.path.realpath(directory)
        except (OSError, ValueError) as exc:
            raise OutputPathError(f"{flag} {directory}: cannot write there ({exc})") from None
        wanted.setdefault(key, (directory, flag))
    taken, made = [], set()
    try:
        for key in sorted(wanted):
            if key in _HELD:
                _HELD[key][1] += 1
            else:
                if not os.path.exists(key):
                    made.add(key)
                _HELD[key] = [lock_run_dir(*wanted[key]), 1]
            taken.append(key)
        yield
    finally:
        for key in reversed(taken):  # children first
            _HELD[key][1] -= 1
            if _HELD[key][1] == 0:
                handle = _HELD.pop(key)[0]
                if handle is not None:
                    handle.close()
                if key in made:  # a run refused before writing leaves no directory behind
                    _remove_if_only_lock(Path(key))


def _remove_if_only_lock(directory: Path) -> None:
    """Remove ``directory`` (made for a lock) when it holds nothing but its lock file."""
    try:
        if [p.name for p in directory.iterdir()] == [LOCK_NAME]:
            (directory / LOCK_NAME).unlink()
            directory.rmdir()
    except OSError:  # another process wrote there meanwhile: keep it
        pass


def _directories(run_dir, log_dir, checkpoint_dir) -> tuple:
    """The directories a training writes, with the flag that names each."""
    run_dir = Path(run_dir)
    return (
        (run_dir, "--run-dir"),
        (Path(checkpoint_dir) if checkpoint_dir else run_dir / "checkpoints", "--checkpoint-dir"),
        (Path(log_dir) if log_dir else run_dir / "logs", "--log-dir"),
    )


def _holds_run_dir(train):
    """``train`` (:func:`run_training`) run while its run, checkpoint and log directories
    are held (:func:`holding`), after refusing a fresh start in a checkpoint directory
    that another run filled since the caller looked."""
    signature = inspect.signature(train)

    @functools.wraps(train)
    def held(*args, **kwargs):
        import jax

        given = signature.bind(*args, **kwargs)
        given.apply_defaults()
        a = given.arguments
        dirs = _directories(a["run_dir"], a["log_dir"], a["checkpoint_dir"])
        with holding(*dirs):
            # one process (several would each open an orbax manager, which synchronizes
            # all processes: a collective that only some of them reach)
            if jax.process_count() == 1 and not a["resume"] and _has_checkpoint(dirs[1][0]):
                raise OutputPathError(
                    f"{dirs[1][0]} already holds a run's checkpoints; resume it or choose "
                    "another directory"
                )
            return train(*args, **kwargs)

    return held


@_holds_run_dir
def run_training(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    log_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    report: bool = True,
    env_params=None,
    max_updates: int | None = None,
):
    """Train with I/O between compiled chunks; returns ``(trainer, state)``.

    ``max_updates`` stops this session after that many updates (a checkpoint is saved
    there; ``resume=True`` continues exactly as if it had not stopped).

    The run directory is held for this training (:func:`lock_run_dir`): another
    training on it, started or resumed, is an :class:`OutputPathError`, and so is a
    fresh start (``resume=False``) in a directory whose checkpoints another run wrote.

    Raises :class:`TrainingDiverged` (after keeping the last good checkpoint) when a
    loss or parameter turns non-finite.
    """
    import jax
    import numpy as np
    from tqdm.auto import tqdm

    from gridrl import checkpoint as ckpt
    from gridrl.mappo import Trainer

    run_dir = Path(run_dir)
    log_dir = Path(log_dir) if log_dir else run_dir / "logs"
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else run_dir / "checkpoints"
    main_process = jax.process_index() == 0

    trainer = Trainer.cached(config, env_params=env_params)
    c = trainer.config
    state = trainer.init(jax.random.PRNGKey(c.seed))
    start = 0
    if resume:
        _, meta = ckpt.read_meta(checkpoint_dir)
        saved = TrainConfig.from_dict(meta["config"])
        if not ckpt.same_options(saved.to_dict(), c.to_dict()):
            diff = {
                k: (v, c.to_dict()[k])
                for k, v in saved.to_dict().items()
                if k != "total_steps" and c.to_dict()[k] != v
            }
            raise ConfigError(
                f"--resume: the checkpoint was trained with other options {diff} "
                f"(saved, given); only --total-steps may change on resume"
            )
        with warnings.catch_warnings(record=True) as caught:  # shown, not filtered away
            warnings.simplefilter("always")
            # falls back past damaged ones, never to one saved with other options
            state, meta = ckpt.restore(checkpoint_dir, state, config=saved.to_dict())
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        start = int(_host(state.shared.update))
        if main_process:  # damaged newer checkpoints are set aside, never deleted
            cdir = ckpt.checkpoint_dir(checkpoint_dir)
            for s in ckpt.manager(cdir, read_only=True).all_steps():
                if s > int(meta["update"]):
                    aside = cdir / f"{s}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
                    (cdir / str(s)).rename(aside)
                    print(f"checkpoint {cdir / str(s)} set aside as {aside}", file=sys.stderr)
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(c.to_dict(), indent=2) + "\n")
    mgr = ckpt.manager(checkpoint_dir, keep=c.keep_checkpoints)
    log = MetricsLog(log_dir, resume_update=start if resume else None) if main_process else None

    def save(state, update):
        ckpt.save(
            mgr,
            update,
            state,
            {
                "config": c.to_dict(),
                "update": update,
                "env_steps": update * c.batch_steps,
                "level": int(_host(state.shared.level)),
            },
        )

    total = c.num_updates
    end = total if max_updates is None else min(total, start + max_updates)
    stop = {"flag": False}

    def on_sigint(signum, frame):
        stop["flag"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C aborts

    previous = None
    if _is_main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    bar = tqdm(
        total=total * c.batch_steps,
        initial=start * c.batch_steps,
        unit="step",
        unit_scale=True,
        disable=not (progress and main_process),
        desc=f"{c.case}",
        dynamic_ncols=True,
        miniters=1,
        mininterval=0.5,
    )
    update = start
    last_saved = start if resume else None
    try:
        while update < end and not stop["flag"]:
            to_ckpt = c.checkpoint_every - update % c.checkpoint_every
            n = c.updates_per_chunk if min(end - update, to_ckpt) >= c.updates_per_chunk else 1
            t0 = time.perf_counter()
            new_state, metrics = trainer.run(state, n)
            metrics = {k: _host(v) for k, v in metrics.items()}
            dt = time.perf_counter() - t0
            bad = np.flatnonzero(metrics["finite"] < 1)
            if bad.size:
                where = (
                    f"last good checkpoint: update {last_saved} in {checkpoint_dir}"
                    if last_saved is not None
                    else "no checkpoint was saved before it"
                )
                raise TrainingDiverged(
                    f"training diverged at update {update + int(bad[0]) + 1}: non-finite loss, "
                    "parameters or environment steps (info['invalid_state']; policy loss "
                    f"{metrics['policy_loss'][bad[0]]}, value loss "
                    f"{metrics['value_loss'][bad[0]]}); nothing after update {update} was kept; "
                    f"{where}. Try a lower --learning-rate or check the case data."
                )
            state = new_state
            rate = n * c.batch_steps / dt
            metrics["steps_per_s"] = np.full(n, rate)
            for i in range(n):
                values = {
                    "update": update + i + 1,
                    "env_steps": (update + i + 1) * c.batch_steps,
                    "time": time.time(),
                } | {k: float(v[i]) for k, v in metrics.items()}
                if log:
                    log.write({k: values[k] for k in LOG_FIELDS})
            update += n
            if log:
                log.flush()
            bar.update(n * c.batch_steps)
            bar.set_postfix_str(_postfix(metrics), refresh=False)
            if update % c.checkpoint_every == 0 or update in (total, end):
                save(state, update)
                last_saved = update
        if stop["flag"] and update < total:
            save(state, update)
            bar.write(
                f"interrupted: checkpoint saved at update {update} in {checkpoint_dir}; continue with --resume {run_dir}"
            )
    finally:
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if log:
            log.close()
    if stop["flag"]:
        raise KeyboardInterrupt
    if report and main_process and update == total:
        from gridrl.evaluate import write_report

        print("evaluating the policy and the baselines on held-out days ...", flush=True)
        path = write_report(
            checkpoint_dir,
            out_dir=run_dir,
            episodes=c.eval_episodes,
            seed=c.eval_seed,
            level=c.eval_level,
            log_dir=log_dir,
        )
        print(f"report: {path}")
    return trainer, state


def _postfix(values: dict) -> str:
    """The progress bar's text: each metric with a ``progress`` format, at its last
    finite value in ``values`` (``{name: (n,) array}`` for a chunk of n updates)."""
    import numpy as np

    parts = []
    for m in METRICS:
        if m.progress is None or m.name not in values:
            continue
        v = np.asarray(values[m.name], float)
        v = v[np.isfinite(v)]
        if v.size:
            parts.append(m.progress.format(v[-1]))
    return " | ".join(parts)


def _is_main_thread():
    import threading

    return threading.current_thread() is threading.main_thread()


# -- command line ------------------------------------------------------------------------
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends each option's default, except None: a training option's default (None:
    not set, the configuration's default applies) is in its help text already."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gridrl.train",
        description="Train the strategic, operational and safety agents with MAPPO on a day of grid "
        "operation, then evaluate the policy against the baselines (do-nothing, greedy, random, "
        "DC-OPF oracle) on held-out days. Options come from the defaults, then --config, then flags.",
        formatter_class=_HelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--config",
        help="TOML (or .yaml) file of options, keys as the flags with underscores, at the top "
        "level or under [train]",
    )
    run.add_argument("--run-dir", help="output directory (default: runs/<case>-<date>-<time>)")
    run.add_argument("--log-dir", help="TensorBoard/JSONL directory (default: RUN_DIR/logs)")
    run.add_argument("--checkpoint-dir", help="checkpoint directory (default: RUN_DIR/checkpoints)")
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its latest checkpoint (its saved options are "
        "used; only --total-steps may be raised)",
    )
    run.add_argument("--no-report", action="store_true", help="skip the final evaluation report")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    dist = parser.add_argument_group("multi-host (jax.distributed)")
    dist.add_argument(
        "--coordinator-address",
        default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
        help="host:port of process 0 (env JAX_COORDINATOR_ADDRESS)",
    )
    dist.add_argument(
        "--num-processes",
        type=int,
        default=_env_int("JAX_NUM_PROCESSES"),
        help="number of processes (env JAX_NUM_PROCESSES)",
    )
    dist.add_argument(
        "--process-id",
        type=int,
        default=_env_int("JAX_PROCESS_ID"),
        help="this process's id, 0..N-1 (env JAX_PROCESS_ID)",
    )
    opts = parser.add_argument_group("training options (TrainConfig)")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = type_name(f.type)
        default = (
            backend_default_text(f.name) if f.name in BACKEND_FIELDS else getattr(defaults, f.name)
        )
        if kind == "bool":
            opts.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{HELP[f.name]} (default: {default})",
            )
        else:
            opts.add_argument(
                flag,
                dest=f.name,
                default=None,
                metavar=kind.upper(),
                help=f"{HELP[f.name]} (default: {default})",
            )
    return parser


def _env_int(name):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else None


def config_from_args(args) -> TrainConfig:
    """Defaults, then ``--config``, then flags; a bad value names its flag. Fields that
    none of them set stay None where the backend decides (:meth:`TrainConfig.for_backend`)."""
    from gridrl.config import _coerce

    base = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    # the options the file set (it can only set a default value to no effect), so that an
    # error about one of them names the file, not a flag the user never gave
    args.config_fields = {f.name for f in fields(TrainConfig) if getattr(base, f.name) != f.default}
    changes = {}
    for f in fields(TrainConfig):
        value = getattr(args, f.name)
        if value is not None:
            changes[f.name] = _coerce(f.name, value, f.type, "--" + f.name.replace("_", "-"))
    return base.replace(**changes)


def _blame(message: str, args) -> str:
    """A ``--flag: ...`` message about an option that came from ``--config`` (and not
    from that flag) names the file and the option as the file spells it."""
    flag, sep, rest = message.partition(":")
    name = flag.removeprefix("--").replace("-", "_")
    from_file = getattr(args, "config_fields", set())
    if sep and flag.startswith("--") and name in from_file and getattr(args, name, None) is None:
        return f"--config {args.config}: {name}{sep}{rest}"
    return message


def init_distributed(args) -> None:
    import jax

    if not args.coordinator_address:
        if args.num_processes not in (None, 1):
            raise ConfigError(
                "--num-processes: needs --coordinator-address (host:port of process 0)"
            )
        if args.process_id not in (None, 0):  # one process is process 0
            raise ConfigError(
                f"--process-id: a single process is process 0, got {args.process_id}; "
                "several need --coordinator-address and --num-processes"
            )
        return
    if args.num_processes is None or args.process_id is None:
        raise ConfigError(
            "--coordinator-address: multi-host needs --num-processes and --process-id too"
        )
    if not 0 <= args.process_id < args.num_processes:
        raise ConfigError(
            f"--process-id: must be in 0..{args.num_processes - 1}, got {args.process_id}"
        )
    # CPU devices talk through gloo (no effect on GPU/TPU collectives); must be set
    # before anything initializes a backend
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )


def _has_checkpoint(cdir: Path) -> bool:
    """Whether ``cdir`` holds a complete checkpoint."""
    from gridrl import checkpoint as ckpt

    if not cdir.is_dir():
        return False
    try:
        ckpt.latest_step(cdir)
    except ckpt.CheckpointError:
        return False
    return True


def _no_checkpoint_yet(checkpoint_dir, run_dir: Path) -> TrainConfig | None:
    """The saved options of a run that died before its first checkpoint (its
    ``config.json``), or None when it has a checkpoint to resume from."""
    cdir = Path(checkpoint_dir) if checkpoint_dir else run_dir / "checkpoints"
    saved = run_dir / "config.json"
    if _has_checkpoint(cdir) or not saved.exists():
        return None
    try:
        data = json.loads(saved.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        # a directory, a stray byte or a cut file raised raw errors (hostile rerun 10)
        raise ConfigError(f"{saved}: not readable JSON ({exc})") from None
    return TrainConfig.from_dict(data, str(saved))  # a list or a number: a ConfigError


def _warn_if_config_file_differs(saved: Path, config: TrainConfig) -> None:
    """On resume the checkpoint's options rule; a ``config.json`` that is unreadable or
    says otherwise (edited by hand, damaged) is named, then rewritten from them."""
    if not saved.exists():
        return
    try:
        on_disk = json.loads(saved.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = f"is not readable JSON ({exc})"
    else:
        want = config.to_dict()
        if on_disk == want:
            return
        keys = sorted(set(want) | set(on_disk if isinstance(on_disk, dict) else {}))
        differ = [k for k in keys if not isinstance(on_disk, dict) or on_disk.get(k) != want.get(k)]
        why = f"differs from the checkpoint's options ({', '.join(differ[:8]) or 'its form'})"
    print(
        f"warning: {saved} {why}; resuming with the options saved in the checkpoint and "
        "rewriting it from them",
        file=sys.stderr,
    )


def _set_aside_stale_logs(log_dir: Path, cdir: Path) -> None:
    """A fresh start in a directory where a run died before its first checkpoint: its
    metrics log is kept under another name (nothing is deleted)."""
    stale = log_dir / "metrics.jsonl"
    if stale.exists() and not _has_checkpoint(cdir):
        aside = stale.with_name(f"metrics.jsonl.before-{time.strftime('%Y%m%d-%H%M%S')}")
        stale.rename(aside)
        print(
            f"{stale} is from a run that never reached a checkpoint: kept as {aside}",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.resume:
            from gridrl import checkpoint as ckpt

            run_dir = Path(args.resume)
            checkpoint_dir = (
                Path(args.checkpoint_dir) if args.checkpoint_dir else run_dir / "checkpoints"
            )
            restart = _no_checkpoint_yet(checkpoint_dir, run_dir)
            if restart is None:
                _, meta = ckpt.read_meta(checkpoint_dir)
                config = TrainConfig.from_dict(meta["config"])
                _warn_if_config_file_differs(run_dir / "config.json", config)
            else:  # it died before its first checkpoint: start it again, same options
                config = restart
                print(
                    f"{run_dir} has no complete checkpoint yet: restarting it from update 0 "
                    "with its saved options (config.json)",
                    file=sys.stderr,
                )
            if args.total_steps is not None:
                config = config.replace(
                    total_steps=TrainConfig.from_dict(
                        {"total_steps": args.total_steps}, "--total-steps"
                    ).total_steps
                )
            others = [
                "--" + f.name.replace("_", "-")
                for f in fields(TrainConfig)
                if f.name != "total_steps" and getattr(args, f.name) is not None
            ]
            if others or args.config:
                parser.error(
                    f"--resume continues with the checkpoint's own options; drop {', '.join(others) or '--config'} "
                    "(only --total-steps may change)"
                )
        else:
            config = config_from_args(args)
            run_dir = Path(
                args.run_dir or f"runs/{Path(config.case).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
            )
            checkpoint_dir = args.checkpoint_dir
            cdir = Path(checkpoint_dir) if checkpoint_dir else run_dir / "checkpoints"
            if _has_checkpoint(cdir):
                parser.error(
                    f"{run_dir} already holds a run with checkpoints; use --resume {run_dir} "
                    "to continue it or choose another --run-dir"
                )
            restart = None
        config.validate()
        from gridphysics.cases import _resolve_name, case_names
        from gridrl import grid2op_data

        is_file = Path(config.case).suffix == ".m" and Path(config.case).exists()
        if grid2op_data.is_grid2op(config.case):
            try:
                grid2op_data.find_env(config.case)
            except GridRLError as exc:
                parser.error(_blame(f"--case: {exc}", args))
        elif not is_file and _resolve_name(config.case) is None:
            parser.error(
                _blame(
                    f"--case: unknown case {config.case!r}; named cases: "
                    f"{', '.join(case_names())} (or a MATPOWER .m file, or grid2op:<environment>)",
                    args,
                )
            )
        # the output directories take files: checked before training, not after it
        for directory, flag in (
            (run_dir, "--run-dir"),
            (checkpoint_dir, "--checkpoint-dir"),
            (args.log_dir, "--log-dir"),
        ):
            if directory:
                writable_dir(directory, flag)
        init_distributed(args)
        import jax

        # the backend exists only now (jax.distributed must come before it)
        config = config.for_backend(jax.default_backend()).validate()
        # held before a log is set aside: a second command refused by the lock renamed
        # the running training's metrics.jsonl first (hostile rerun 11)
        dirs = _directories(run_dir, args.log_dir, checkpoint_dir)
        with holding(*dirs):
            if (restart is not None or not args.resume) and jax.process_index() == 0:
                _set_aside_stale_logs(dirs[2][0], dirs[1][0])
            run_training(
                config,
                run_dir,
                resume=bool(args.resume) and restart is None,
                log_dir=args.log_dir,
                checkpoint_dir=checkpoint_dir,
                progress=not args.no_progress,
                report=not args.no_report,
            )
    except (ConfigError, EnvOptionError, OutputPathError) as exc:
        parser.error(_blame(str(exc), args))
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from gridrl.checkpoint import CheckpointError

        if isinstance(exc, CheckpointError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
