"""Checkpoints and logs that survive damage: checksums, fallback, repair, restart."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from gridrl import checkpoint as ckpt
from gridrl.config import TrainConfig
from gridrl.train import _no_checkpoint_yet, _set_aside_stale_logs, read_jsonl


def _state(scale):
    return {"w": jnp.arange(4096, dtype=jnp.float32) * scale, "b": jnp.ones(3) * scale}


def _save_two(directory: Path):
    mgr = ckpt.manager(directory, keep=3)
    config = TrainConfig().to_dict()
    for update, scale in ((1, 1.0), (2, 2.0)):
        ckpt.save(mgr, update, _state(scale), {"config": config, "update": update})
    return directory


def _flip_a_byte(step_dir: Path):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    target = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def test_a_flipped_byte_is_caught_and_resume_falls_back(tmp_path):
    directory = _save_two(tmp_path / "checkpoints")
    target = _state(0.0)
    state, meta = ckpt.restore(directory, target)
    assert meta["update"] == 2 and float(state["b"][0]) == 2.0
    _flip_a_byte(directory / "2")
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoints/2"):
        ckpt.restore(directory, target, step=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state, meta = ckpt.restore(directory, target)
    assert meta["update"] == 1 and float(state["b"][0]) == 1.0
    np.testing.assert_array_equal(np.asarray(state["w"]), np.arange(4096, dtype=np.float32))
    assert any("using checkpoint" in str(w.message) for w in caught)


def test_no_fallback_to_a_checkpoint_of_other_options(tmp_path):
    """A newest checkpoint copied in from another run (other options) that fails to
    read made resume set it aside and restore an older one of this run's options under
    the other run's config.json, silently (hostile rerun 8). With the options given,
    a checkpoint saved with others is never the fallback; --total-steps may differ."""
    directory = _save_two(tmp_path / "checkpoints")
    other = TrainConfig(hidden=32, n_areas=2).to_dict()
    ckpt.save(ckpt.manager(directory, keep=3), 3, _state(3.0), {"config": other, "update": 3})
    _flip_a_byte(directory / "3")
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoints/3"):
        ckpt.restore(directory, _state(0.0), config=other)
    # the run's own options (and another --total-steps) fall back past the foreign one
    mine = TrainConfig(total_steps=10**6).to_dict()
    with pytest.warns(UserWarning, match="using checkpoint"):
        state, meta = ckpt.restore(directory, _state(0.0), config=mine)
    assert meta["update"] == 2 and float(state["b"][0]) == 2.0


@pytest.mark.parametrize("edit", ["removed", "null"])
def test_a_checksum_removed_from_the_metadata_is_refused(tmp_path, edit):
    """With its digest deleted or set to null the damaged state loaded unchecked
    (hostile rerun); only a state sharded over several hosts is saved without one."""
    directory = _save_two(tmp_path / "checkpoints")
    meta_file = directory / "2" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    assert len(meta["digest"]) == 64 and "digest_skipped" not in meta
    if edit == "removed":
        del meta["digest"]
    else:
        meta["digest"] = None
    meta_file.write_text(json.dumps(meta))
    _flip_a_byte(directory / "2")
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoints/2.*checksum"):
        ckpt.restore(directory, _state(0.0), step=2)
    with pytest.warns(UserWarning, match="checksum"):
        state, meta = ckpt.restore(directory, _state(0.0))  # falls back to the intact one
    assert meta["update"] == 1 and float(state["b"][0]) == 1.0


@pytest.mark.parametrize("edit", ["method", "skip"])
def test_edited_metadata_is_refused(tmp_path, edit):
    """The configuration edited (dc -> ac) loaded silently, and a digest_skipped added by
    hand with the digest removed disabled the state's check (hostile rerun 3)."""
    directory = _save_two(tmp_path / "checkpoints")
    meta_file = directory / "2" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    if edit == "method":
        meta["config"]["method"] = "ac"
    else:
        meta.pop("digest")
        meta["digest_skipped"] = "the state is sharded over 2 processes"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match="does not match the checksum"):
        ckpt.read_meta(directory, 2)
    del meta["meta_digest"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match="no checksum of its metadata"):
        ckpt.read_meta(directory, 2)
    assert ckpt.read_meta(directory, 1)[1]["update"] == 1  # the intact one reads


def test_metadata_without_config_is_a_checkpoint_error(tmp_path):
    directory = _save_two(tmp_path / "checkpoints")
    meta_file = directory / "2" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    del meta["config"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match="no training configuration"):
        ckpt.read_meta(directory, 2)


def test_damaged_metrics_lines_are_reported_not_raised(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"update": 1}\n{"update": 2, "return": null}\n{"upda\n[1, 2]\n{"update": "a"}\nnull\n'
        + "[" * 100_000
        + "]" * 100_000
        + "\n"
    )
    records, damaged = read_jsonl(path)  # "a" and the deep line crashed resume
    # a record's fields other than its counters may be null (no episode finished yet)
    assert records == [{"update": 1}, {"update": 2, "return": None}]
    assert damaged == [3, 4, 5, 6, 7]


def test_a_run_that_died_before_its_first_checkpoint_restarts_in_place(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "checkpoints" / "1.orbax-checkpoint-tmp-123").mkdir(parents=True)  # a cut save
    config = TrainConfig(case="ieee14", seed=5)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / "logs" / "metrics.jsonl").write_text('{"update": 1}\n')
    restored = _no_checkpoint_yet(None, run)
    assert restored is not None and restored.to_dict() == config.to_dict()
    _set_aside_stale_logs(run / "logs", run / "checkpoints")
    assert not (run / "logs" / "metrics.jsonl").exists()
    kept = list((run / "logs").glob("metrics.jsonl.before-*"))
    assert len(kept) == 1 and kept[0].read_text() == '{"update": 1}\n'  # nothing lost
    # with a complete checkpoint, the run is resumed instead
    _save_two(run / "checkpoints")
    assert _no_checkpoint_yet(None, run) is None


@pytest.mark.parametrize("kind", ["directory", "device", "fifo", "level"])
def test_metadata_that_is_no_file_or_names_no_level_is_a_checkpoint_error(tmp_path, kind):
    """Metadata as a directory was an IsADirectoryError, a link to /dev/zero was read
    until memory ran out, a FIFO blocked for ever and a level of "x" was a ValueError in
    load_policy (hostile rerun)."""
    directory = _save_two(tmp_path / "checkpoints")
    meta_file = directory / "2" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta_file.unlink()
    if kind == "directory":
        meta_file.mkdir()
    elif kind == "device":
        meta_file.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(meta_file)
    else:
        meta_file.write_text(json.dumps({**meta, "level": "x"}))
    with pytest.raises(ckpt.CheckpointError, match="checkpoints/2"):
        ckpt.read_meta(directory, 2)


def test_a_state_with_empty_arrays_saves_and_restores(tmp_path):
    """A grid without renewable units has an empty wind state: orbax refused to save it
    and training died at its first checkpoint (hostile rerun 9)."""
    state = {"w": jnp.arange(6.0), "wind": jnp.zeros((16, 0), jnp.float32)}
    ckpt.save(ckpt.manager(tmp_path / "c", keep=2), 1, state, {"config": {}, "update": 1})
    back, meta = ckpt.restore(
        tmp_path / "c", {"w": jnp.zeros(6), "wind": jnp.ones((16, 0), jnp.float32)}
    )
    assert meta["update"] == 1 and back["wind"].shape == (16, 0)
    np.testing.assert_array_equal(np.asarray(back["w"]), np.arange(6.0))


def test_a_damaged_config_json_of_a_run_without_checkpoint_is_a_config_error(tmp_path):
    """Hostile rerun 10: restarting a run that died before its first checkpoint read
    any JSON value as options (a list or a number raised AttributeError) and let
    UnicodeDecodeError and IsADirectoryError through."""
    from gridrl.config import ConfigError

    run = tmp_path / "run"
    run.mkdir()
    for content, message in (
        (b"[]", "table of names and values, got list"),
        (b"5", "got int"),
        (b"null", "got NoneType"),
        (b"\xff", "not readable JSON"),
        (b'{"case": "ieee14", "seed": 1e400}', "seed must be int, got inf"),
    ):
        (run / "config.json").write_bytes(content)
        with pytest.raises(ConfigError, match=message):
            _no_checkpoint_yet(None, run)
    (run / "config.json").unlink()
    (run / "config.json").mkdir()
    with pytest.raises(ConfigError, match="not readable JSON"):
        _no_checkpoint_yet(None, run)


def test_one_training_at_a_time_holds_a_run_directory(tmp_path):
    """Hostile rerun 10: two trainings started on one --run-dir both ran, interleaved
    their metrics logs and kept the second one's checkpoints. A training holds the
    directory locked; another is refused with the holder's process id, before anything
    is compiled or written; the lock goes with its holder, also when the holder is
    killed; and a fresh start refuses a directory whose checkpoints another run wrote."""
    import signal
    import subprocess
    import sys

    from gridrl.errors import OutputPathError
    from gridrl.train import LOCK_NAME, lock_run_dir, run_training

    run = tmp_path / "run"
    held = lock_run_dir(run)
    try:
        with pytest.raises(
            OutputPathError, match=rf"in use by another training \(process {os.getpid()}"
        ):
            lock_run_dir(run)
        with pytest.raises(OutputPathError, match="in use by another training"):
            run_training(TrainConfig(case="ieee14"), run, progress=False, report=False)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        held.close()
    lock_run_dir(run).close()  # free again

    code = (
        "import sys, time; from gridrl.train import lock_run_dir; "
        f"h = lock_run_dir({str(run)!r}); print('held', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(OutputPathError, match=f"process {child.pid}"):
            lock_run_dir(run)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    lock_run_dir(run).close()  # a killed holder leaves no stale lock

    _save_two(run / "checkpoints")
    with pytest.raises(OutputPathError, match=r"already holds a run.s checkpoints"):
        run_training(TrainConfig(case="ieee14"), run, progress=False, report=False)


def test_a_refused_training_touches_nothing_and_the_lock_follows_no_link(tmp_path, capsys):
    """Hostile rerun 11: a second command on a held run directory renamed the running
    training's metrics.jsonl before the lock refused it; a checkpoint or log directory
    shared by two runs was not held at all; a .training.lock linked to a user's file
    truncated that file; a NUL byte in the path was a bare ValueError."""
    from gridrl.errors import OutputPathError
    from gridrl.train import LOCK_NAME, lock_run_dir, main, run_training

    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "metrics.jsonl").write_text('{"update": 1}\n')
    held = lock_run_dir(run)
    try:
        for argv in (["--case", "ieee14", "--run-dir", str(run)], ["--resume", str(run)]):
            (run / "config.json").write_text(json.dumps(TrainConfig(case="ieee14").to_dict()))
            with pytest.raises(SystemExit):
                main([*argv, "--no-progress"] if argv[0] == "--case" else argv)
            assert "in use by another training" in capsys.readouterr().err
            assert (run / "logs" / "metrics.jsonl").read_text() == '{"update": 1}\n'
    finally:
        held.close()

    shared = tmp_path / "shared-checkpoints"
    held = lock_run_dir(shared, "--checkpoint-dir")
    try:
        with pytest.raises(OutputPathError, match=r"--checkpoint-dir .* in use by another"):
            run_training(
                TrainConfig(case="ieee14"),
                tmp_path / "other",
                checkpoint_dir=shared,
                progress=False,
                report=False,
            )
    finally:
        held.close()

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / LOCK_NAME).symlink_to(victim)
    with pytest.raises(OutputPathError, match="cannot hold its lock file"):
        lock_run_dir(linked)
    hard = tmp_path / "hard"
    hard.mkdir()
    os.link(victim, hard / LOCK_NAME)
    with pytest.raises(OutputPathError, match="not a file of its own"):
        lock_run_dir(hard)
    assert victim.read_text() == "precious\n"
    with pytest.raises(OutputPathError, match="cannot hold its lock file"):
        lock_run_dir(str(tmp_path / "a\x00b"))
