"""Checkpoints are written atomically: a kill during a save leaves the previous file whole, and a
truncated or corrupt checkpoint is refused with a message naming the file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from advmed.utils.checkpoint_io import AtomicCheckpointIO
from tests.conftest import REPO_ROOT

# Saves ~40 MB checkpoints in a loop, each holding its own number everywhere, and says when one is done.
SAVER = """
import sys, torch
from advmed.utils.checkpoint_io import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
for i in range(10_000):
    io.save_checkpoint({"i": i, "w": torch.full((10_000_000,), float(i))}, path)
    print(i, flush=True)
"""


def test_a_kill_during_saves_leaves_a_whole_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.stdout.readline().strip() == "0"  # one save is complete
    time.sleep(0.3)  # the next ones are under way
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = AtomicCheckpointIO().load_checkpoint(path)
    assert state["w"].numel() == 10_000_000 and bool((state["w"] == state["i"]).all())


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_partial_file(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"i": 1}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"i": 2}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["i"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, damage):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 64 + data[64:])
    with pytest.raises(ValueError, match=f"'{path}' is not a readable PyTorch checkpoint"):
        AtomicCheckpointIO().load_checkpoint(path)
