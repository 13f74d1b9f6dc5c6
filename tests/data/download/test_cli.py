"""The command line: positional words become overrides, errors are messages, and a real
``python -m advmed.data.download <source> root=...`` run against the local server."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from advmed.data.download.cli import clean_errors, rewrite_argv
from advmed.data.download.errors import ChecksumMismatch
from tests.conftest import REPO_ROOT
from tests.data.download.conftest import checksum_override, medmnist_npz


@pytest.mark.parametrize("argv, expected", [
    (["nct_crc_he", "root=/d"], ["source=nct_crc_he", "root=/d"]),
    (["medmnist:pathmnist@64", "root=/d"], ["source=medmnist:pathmnist@64", "root=/d"]),
    (["verify", "btcv", "root=/d"], ["action=verify", "source=btcv", "root=/d"]),
    (["list"], ["action=list"]),
    (["source=pcam", "root=/d"], ["source=pcam", "root=/d"]),  # already overrides: unchanged
    (["--cfg", "job", "pcam"], ["--cfg", "job", "pcam"]),  # Hydra flags first: left alone
    (["pcam", "root=/d", "extra"], ["source=pcam", "root=/d", "extra"]),  # only leading words
    ([], []),
])
def test_leading_words_become_action_and_source(argv, expected):
    assert rewrite_argv(argv) == expected


def test_a_download_error_is_logged_alone_and_exits_with_1(caplog):
    @clean_errors
    def failing():
        raise ChecksumMismatch("x.zip is not the published file")

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        failing()
    assert exit_info.value.code == 1 and caplog.messages == ["x.zip is not the published file"]


@pytest.mark.e2e  # a fresh interpreter imports advmed.data (torch, Lightning): ~10 s on a busy CPU
def test_python_m_downloads_from_the_positional_source_name(server, tmp_path):
    files = {"pathmnist_64.npz": medmnist_npz(64)}
    server.publish("medmnist", files)
    root = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "ADVMED_LOG_DIR": str(tmp_path / "outputs"),
           "ADVMED_PROGRESS": "lines"}
    command = [sys.executable, "-m", "advmed.data.download", "medmnist:pathmnist@64", f"root={root}",
               f"sources.medmnist.base_url={server.url('medmnist')}", checksum_override("medmnist", files)]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "pathmnist_64.npz").read_bytes() == files["pathmnist_64.npz"]
    assert f"data=medmnist data.path={root / 'pathmnist_64.npz'} data.num_classes=9" in proc.stdout
    (status,) = (tmp_path / "outputs" / "download" / "runs").glob("*/status.json")
    assert json.loads(status.read_text())["status"] == "completed"



def test_the_download_command_does_not_import_lightning():
    """``advmed.data.download`` checks and fetches files: it must start in a second or two, not after
    Lightning's import (the DataModules are imported by ``advmed.data`` only on first use)."""
    code = ("import sys, advmed.data, advmed.data.download.job, advmed.data.download.cli\n"
            "print(sorted(m for m in ('lightning', 'pytorch_lightning') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"imported by advmed.data.download: {proc.stdout}"


def test_advmed_data_still_offers_every_datamodule():
    import advmed.data

    assert set(advmed.data.__all__) == set(advmed.data._MODULES)  # the public names are the lazily loaded ones
    for name in advmed.data.__all__:
        assert getattr(advmed.data, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        advmed.data.Nope  # noqa: B018 -- the access is the test
