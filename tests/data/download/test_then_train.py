"""After a download, the line it prints ("use it with: data=... data.root=...") is the whole data part of a
training command: ``python -m advmed.train <that line>`` fits and tests on the downloaded folder, at smoke
size (``debug=tiny``), with no other data override than the ones a folder this small needs.

The datasets are those of test_sources.py (each source's exact layout, served from 127.0.0.1); the
training runs in-process like tests/entrypoints/test_debug_tiny.py.
"""

from __future__ import annotations

import math
import re
import shlex

import pytest
import torch

from tests.data.download.conftest import medmnist_npz, msd_tar, nct_archives, pcam_files, run_download
from tests.entrypoints.conftest import TINY, compose_config, read_metrics

# What the served folders need on top of the printed line, and why: NCT-CRC-HE's default draws 2,500 tiles
# per class (the served archive has 4), and a CT folder trains the segmentation model (the printed line
# says which data, not which model). Nothing else.
CASES = {
    "nct_crc_he": ("nct_crc_he", nct_archives, ["data.per_class=null"]),
    "pcam": ("pcam", pcam_files, []),
    "medmnist:pathmnist": ("medmnist", lambda: {"pathmnist.npz": medmnist_npz(28)}, []),
    "medmnist:pneumoniamnist@64": ("medmnist", lambda: {"pneumoniamnist_64.npz": medmnist_npz(64, 1, 2)}, []),
    "msd:Task09_Spleen": ("msd", lambda: {"Task09_Spleen.tar": msd_tar()}, ["model=unet"]),
}


def printed_overrides(output: str) -> list[str]:
    """The words of the download's "use it with:" line, as a shell would split them."""
    (line,) = re.findall(r"^use it with: (.+)$", output, re.M)
    return shlex.split(line)


@pytest.mark.e2e
@pytest.mark.parametrize("source", sorted(CASES))
def test_the_printed_data_overrides_train_on_the_downloaded_folder(source, server, tmp_path, capsys):
    from advmed.train import train

    family, build, smoke = CASES[source]
    files = build()
    server.publish(family, files)
    root = tmp_path / "data"
    run_download(server, source, family, root, files)
    overrides = printed_overrides(capsys.readouterr().out)
    assert any(str(root) in word for word in overrides), overrides  # the line names the downloaded folder

    run_dir = tmp_path / "run"
    cfg = compose_config("train", [*overrides, *TINY, *smoke, "trainer.enable_progress_bar=false"], run_dir)
    assert str(root) in str(cfg.data.get("root") or cfg.data.get("path"))
    train(cfg)

    metrics = read_metrics(run_dir)
    tested = {k: v for k, v in metrics.items() if k.startswith("test/") and k.endswith(("acc", "dice"))}
    assert tested and all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in tested.values()), metrics
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["num_classes"] == cfg.data.num_classes
