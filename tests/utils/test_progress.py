"""Progress outside Lightning: the terminal-vs-log decision, throttled plain lines (an injected
clock, no sleeps), the bar, and the reporting loops of the PGD study and the dataset writers."""

from __future__ import annotations

import io
import logging
import os
import struct

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advmed.utils.progress import (
    ENV_VAR,
    ProgressReporter,
    Throttle,
    check_every_s,
    emit,
    format_duration,
    format_metrics,
    is_interactive,
    resolve_mode,
)


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def progress_log(caplog):
    caplog.set_level(logging.INFO, logger="advmed.progress")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "advmed.progress"]


# --------------------------------------------------------------------------- the decision


def test_a_terminal_gets_a_bar_and_a_file_or_pipe_gets_lines():
    assert resolve_mode("auto", Terminal(), environ={}) == "bar"
    assert resolve_mode("auto", io.StringIO(), environ={}) == "lines"  # a SLURM log, a pipe
    assert resolve_mode("auto", Terminal(), environ={"TERM": "dumb"}) == "lines"


def test_a_terminal_of_zero_columns_gets_lines():
    fcntl, termios = pytest.importorskip("fcntl"), pytest.importorskip("termios")
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as terminal:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 0, 0, 0))  # nobody sized it
            assert not is_interactive(terminal, environ={})  # tqdm would draw an empty bar there
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            assert is_interactive(terminal, environ={})
    finally:
        os.close(master)
        os.close(slave)


def test_config_mode_wins_over_the_environment_which_wins_over_the_terminal():
    assert resolve_mode("auto", Terminal(), environ={ENV_VAR: "lines"}) == "lines"
    assert resolve_mode("auto", io.StringIO(), environ={ENV_VAR: "Bar"}) == "bar"
    assert resolve_mode("auto", io.StringIO(), environ={ENV_VAR: "auto"}) == "lines"
    assert resolve_mode("off", Terminal(), environ={ENV_VAR: "bar"}) == "off"
    assert resolve_mode("bar", io.StringIO(), environ={ENV_VAR: "lines"}) == "bar"


def test_bad_modes_and_intervals_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"callbacks\.progress\.mode='fancy'.*bar, lines, off"):
        resolve_mode("fancy", source="callbacks.progress.mode")
    with pytest.raises(ValueError, match=r"environment variable ADVMED_PROGRESS='tty'.*auto, bar, lines, off"):
        resolve_mode("auto", io.StringIO(), environ={ENV_VAR: "tty"})
    for bad in (-1, "soon", True, float("inf"), None):
        with pytest.raises(ValueError, match=r"progress_every_s=.*seconds >= 0"):
            check_every_s(bad, "progress_every_s")
    assert check_every_s("2.5") == 2.5


# --------------------------------------------------------------------------- line pieces


def test_throttle_says_yes_once_per_interval_and_when_forced():
    clock = FakeClock()
    throttle = Throttle(10, clock)
    answers = []
    for t in (1, 9.9, 10, 15, 19.9, 20.5, 21):
        clock.now = t
        answers.append(throttle.due())
    assert answers == [False, False, True, False, False, True, False]
    assert throttle.due(force=True)


def test_durations_and_metrics_read_well():
    assert [format_duration(s) for s in (4.4, 185, 3725, float("nan"))] == ["4s", "3m05s", "1h02m", "?"]
    metrics = {"train/loss": torch.tensor(0.53125), "train/acc": 0.8125, "v": "x", "grid": torch.zeros(2)}
    assert format_metrics(metrics, "train/") == "loss=0.5312 acc=0.8125"


def test_lines_go_to_stderr_where_logging_is_not_configured(capsys):
    emit("pgd study: 1/2 images", logging.Logger("unconfigured"))  # no handler on it or above it
    assert capsys.readouterr().err == "pgd study: 1/2 images\n"


# --------------------------------------------------------------------------- the reporter


def test_reporter_writes_throttled_plain_lines_with_rate_time_left_and_info(progress_log):
    clock = FakeClock()
    with ProgressReporter("pgd study", 10, unit="images", every_s=30, mode="lines", clock=clock) as progress:
        for step in range(5):
            clock.now += 20  # 2 images every 20 s
            progress.update(2, batch=f"{step + 1}/5")
    lines = progress_log()
    # due at 40 s and 80 s (30 s after 40), then the last update is flushed by close()
    assert lines == [
        "pgd study: 4/10 images (40.0 %), 0.1 images/s, ~1m00s left, batch=2/5",
        "pgd study: 8/10 images (80.0 %), 0.1 images/s, ~20s left, batch=4/5",
        "pgd study: 10/10 images (100.0 %), 0.1 images/s, ~0s left, batch=5/5",
    ]


def test_reporter_counts_items_done_earlier_but_not_in_the_rate(progress_log):
    clock = FakeClock()
    progress = ProgressReporter(None, 100, unit="items", done=60, every_s=0, mode="lines", clock=clock)
    clock.now = 10
    progress.update(20)
    assert progress_log() == ["80/100 items (80.0 %), 2.0 items/s, ~10s left"]


def test_reporter_draws_a_bar_on_a_terminal_and_writes_no_lines(progress_log, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    terminal = Terminal()
    with ProgressReporter("writing", 4, unit="items", every_s=0, stream=terminal) as progress:
        assert progress.mode == "bar"
        for _ in range(3):
            progress.update(4 / 3, eps=0.1)  # a third of a batch per eps, as the PGD study counts
    assert "writing" in terminal.getvalue() and "4/4" in terminal.getvalue() and "1.33" not in terminal.getvalue()
    assert progress_log() == []


def test_reporter_off_and_other_ranks_are_silent(progress_log):
    with ProgressReporter("x", 3, every_s=0, mode="off") as progress:
        progress.update(3)
    with ProgressReporter("x", 3, every_s=0, mode="lines", rank=1) as progress:  # a second DDP process
        progress.update(3)
    assert progress_log() == []
    with ProgressReporter("x", 3, every_s=0, mode="lines", rank=0) as progress:
        progress.update(3)
    assert len(progress_log()) == 1


# --------------------------------------------------------------------------- loops that report


def test_pgd_study_reports_each_batch_and_eps(progress_log, monkeypatch):
    from advmed.studies.pgd_study_records import attack_records
    from advmed.studies.pgd_study_settings import StudySettings

    monkeypatch.delenv(ENV_VAR, raising=False)  # pytest's stderr is no terminal: lines
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).eval()
    data = TensorDataset(torch.rand(10, 3, 4, 4), torch.arange(10) % 3)
    settings = StudySettings(eps=(0.02, 0.04), max_iter=2, seed=0)
    records = attack_records(model, DataLoader(data, batch_size=4), settings, progress_every_s=0)
    assert records.fooled.shape == (2, 2, 10)
    lines = progress_log()
    assert "\r" not in "".join(lines)
    assert any(line.startswith("pgd study: 0/10 images (0.0 %)") and "batch=1/3, attack=PGD, eps=0.02" in line
               for line in lines)
    # PGD, then APGD-CE beside it (study.apgd, on by default), for each eps of each batch
    assert any("batch=2/3, attack=PGD, eps=0.04" in line for line in lines)
    assert any("batch=2/3, attack=APGD-CE, eps=0.04" in line for line in lines)
    assert lines[-1].startswith("pgd study: 10/10 images (100.0 %), ") and "images/s" in lines[-1]
    assert lines[-1].endswith("batch=3/3, attack=APGD-CE, eps=0.04")


def test_pgd_study_plans_only_max_images(progress_log, monkeypatch):
    from advmed.studies.pgd_study_records import attack_records
    from advmed.studies.pgd_study_settings import StudySettings

    monkeypatch.setenv(ENV_VAR, "lines")
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).eval()
    data = TensorDataset(torch.rand(10, 3, 4, 4), torch.arange(10) % 3)
    settings = StudySettings(eps=(0.02,), max_iter=1, seed=0, max_images=5)
    attack_records(model, DataLoader(data, batch_size=4), settings, progress_every_s=0)
    assert progress_log()[-1].startswith("pgd study: 5/5 images (100.0 %)")
    assert progress_log()[-1].endswith("batch=2/2, attack=APGD-CE, eps=0.02")


def test_dataset_writer_draws_a_bar_in_a_terminal(tmp_path, monkeypatch, capsys, caplog):
    from tests.data.test_writers import TinyClassDataModule, write

    caplog.set_level(logging.INFO, logger="advmed.data.writers")
    monkeypatch.setenv(ENV_VAR, "bar")
    assert write(TinyClassDataModule(), tmp_path / "copy", progress_every_s=0) == 11
    assert "11/11" in capsys.readouterr().err  # tqdm's last frame
    assert not [r for r in caplog.records if "items/s" in r.getMessage()]  # no plain lines beside the bar


def test_dataset_writer_refuses_a_negative_interval(tmp_path):
    from advmed.data.copy_layouts import ClassFolderLayout
    from advmed.data.writers import DatasetWriter

    with pytest.raises(ValueError, match=r"progress_every_s=-1 must be a number of seconds >= 0"):
        DatasetWriter(tmp_path, ClassFolderLayout(["a"]), {}, progress_every_s=-1)
