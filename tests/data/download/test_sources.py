"""Every downloadable source, end to end from a local server: the folder its DataModule then reads."""

from __future__ import annotations

import json

import torch

from advmed.data.ct.ct_slices import CTSliceDataModule
from advmed.data.download.job import download
from advmed.data.download.manifest import MANIFEST_FILE, STAGING_DIR
from advmed.data.histology.nct_crc_he import NCTCRCHEDataModule
from advmed.data.lymph_node.pcam import PCamDataModule
from advmed.data.medmnist.medmnist import MedMNISTDataModule
from tests.data.download.conftest import (
    compose_download,
    medmnist_npz,
    msd_tar,
    nct_archives,
    pcam_files,
    run_download,
)


def manifest_of(root):
    return json.loads((root / MANIFEST_FILE).read_text())


def test_nct_crc_he_unzips_into_the_folders_the_datamodule_reads(server, tmp_path, capsys):
    archives = nct_archives()
    server.publish("nct_crc_he", archives)
    root = tmp_path / "nct"
    summary = run_download(server, "nct_crc_he", "nct_crc_he", root, archives)
    assert summary["installed"] == ["NCT-CRC-HE-100K.zip", "CRC-VAL-HE-7K.zip"]
    assert {p.name for p in root.iterdir()} == {"CRC-VAL-HE-7K", MANIFEST_FILE, "NCT-CRC-HE-100K"}
    assert sorted(p.name for p in (root / "NCT-CRC-HE-100K").iterdir()) == sorted(
        ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"])  # no __MACOSX
    manifest = manifest_of(root)
    assert manifest["source"] == "nct_crc_he" and manifest["advmed_version"]
    record = manifest["files"]["NCT-CRC-HE-100K.zip"]
    assert record["status"] == "installed" and record["target"] == "NCT-CRC-HE-100K"
    assert record["verified"]["md5"] == record["expected"]["md5"] and len(record["verified"]["sha256"]) == 64
    assert record["url"].startswith(server.url("nct_crc_he")) and record["downloaded"] and record["installed"]
    assert "data=nct_crc_he data.root=" in capsys.readouterr().out

    dm = NCTCRCHEDataModule(root=root / "NCT-CRC-HE-100K", test_root=root / "CRC-VAL-HE-7K", per_class=None,
                            val_fraction=0.25, image_size=16, batch_size=4)
    dm.setup()
    image, label = dm.train_set[0]
    assert image.shape == (3, 16, 16) and len(dm.test_set) == 18 and 0 <= int(label) < 9

    requests = len(server.requests)
    again = run_download(server, "nct_crc_he", "nct_crc_he", root, archives)
    assert again["installed"] == [] and len(again["skipped"]) == 2 and len(server.requests) == requests

    verified = download(compose_download(["action=verify", "source=nct_crc_he", f"root={root}",
                                          "sources.nct_crc_he.counts={NCT-CRC-HE-100K: 36, CRC-VAL-HE-7K: 18}"]))
    assert verified["ok"]


def test_pcam_gunzips_the_h5_files_the_datamodule_reads(server, tmp_path):
    files = pcam_files()
    server.publish("pcam", files)
    root = tmp_path / "pcam"
    run_download(server, "pcam", "pcam", root, files)
    names = sorted(p.name for p in root.iterdir() if p.name not in (MANIFEST_FILE,))
    assert names == sorted(n[:-3] if n.endswith(".gz") else n for n in files)
    assert not (root / STAGING_DIR).exists()
    dm = PCamDataModule(root=root, batch_size=2)
    dm.setup()
    image, label = dm.train_set[1]
    assert image.shape == (3, 96, 96) and int(label) == 1 and len(dm.val_set) == len(dm.test_set) == 2
    verified = download(compose_download(["action=verify", "source=pcam", f"root={root}",
                                          "sources.pcam.counts={train: 4, valid: 2, test: 2}"]))
    assert verified["ok"]


def test_pcam_files_selects_splits(server, tmp_path):
    files = pcam_files()
    server.publish("pcam", files)
    wanted = {name: data for name, data in files.items() if "_test_" in name}
    run_download(server, "pcam", "pcam", tmp_path, wanted, "files=[test]")
    assert {p.name for p in tmp_path.iterdir()} == {
        MANIFEST_FILE, "camelyonpatch_level_2_split_test_meta.csv", "camelyonpatch_level_2_split_test_x.h5",
        "camelyonpatch_level_2_split_test_y.h5"}


def test_medmnist_flags_and_sizes_share_a_folder_and_verify_by_md5(server, tmp_path):
    files = {"pathmnist_64.npz": medmnist_npz(64), "pneumoniamnist.npz": medmnist_npz(28, 1, 2)}
    server.publish("medmnist", files)
    run_download(server, "medmnist:pathmnist@64", "medmnist", tmp_path, {"pathmnist_64.npz": files["pathmnist_64.npz"]})
    run_download(server, "medmnist:pneumoniamnist", "medmnist", tmp_path,
                 {"pneumoniamnist.npz": files["pneumoniamnist.npz"]})
    assert set(manifest_of(tmp_path)["files"]) == set(files)
    dm = MedMNISTDataModule(path=tmp_path / "pathmnist_64.npz", image_size=64, batch_size=2)
    dm.setup()
    image, _ = dm.train_set[0]
    assert image.shape == (3, 64, 64)
    gray = MedMNISTDataModule(path=tmp_path / "pneumoniamnist.npz", num_classes=2, in_channels=1, batch_size=2)
    gray.setup()
    assert gray.train_set[0][0].shape == (1, 28, 28)


def test_msd_untars_a_task_folder_that_ct_slices_reads_with_the_printed_organ_map(server, tmp_path, capsys):
    files = {"Task09_Spleen.tar": msd_tar()}
    server.publish("msd", files)
    run_download(server, "msd:Task09_Spleen", "msd", tmp_path, files)
    task = tmp_path / "Task09_Spleen"
    assert sorted(p.name for p in task.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr"]
    out = capsys.readouterr().out
    assert "data.label_preset=null '~data.organs' '+data.organs={spleen:[1]}' data.num_classes=2" in out
    dm = CTSliceDataModule(root=task, label_preset=None, organs={"spleen": [1]}, num_classes=2,
                           class_names=["background", "spleen"], image_size=16, val_fraction=0.0,
                           test_fraction=0.0, batch_size=2)
    dm.setup("fit")
    image, mask = dm.train_set[0]
    assert image.shape == (1, 16, 16) and len(dm.train_set) == 9 and torch.any(
        torch.stack([dm.train_set[i][1] for i in range(9)]) == 1)
    assert download(compose_download(["action=verify", "source=msd:task09_spleen", f"root={tmp_path}"]))["ok"]
    # the named preset reads the same masks as the printed id map
    named = CTSliceDataModule(root=task, label_preset="msd_spleen", organs={"spleen": ["spleen"]}, num_classes=2,
                              class_names=["background", "spleen"], image_size=16, val_fraction=0.0,
                              test_fraction=0.0, batch_size=2)
    named.setup("fit")
    assert all(torch.equal(named.train_set[i][1], dm.train_set[i][1]) for i in range(9))
