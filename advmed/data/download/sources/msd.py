"""Medical Segmentation Decathlon CT tasks (Antonelli et al. 2022): liver, pancreas, spleen.

``msd:<task>`` fetches ``<task>.tar`` from the mirror MONAI's ``DecathlonDataset`` uses and untars it
into ``<root>/<task>/`` (``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``): the
``imagesTr/`` + ``labelsTr/`` volume layout ``data=ct_slices`` reads. URLs and md5 values: MONAI 1.6.1,
``monai/apps/datasets.py`` (``DecathlonDataset.resource`` and ``DecathlonDataset.md5``); no sizes are
published. The official release (medicaldecathlon.com, Google Drive) publishes no checksums.

======================  ================================================================  ================================
task                    URL                                                               md5
======================  ================================================================  ================================
``Task03_Liver``        https://msd-for-monai.s3-us-west-2.amazonaws.com/Task03_Liver.tar ``a90ec6c4aa7f6a3d087205e23d4e6397``
``Task07_Pancreas``     .../Task07_Pancreas.tar                                           ``4f7080cfca169fa8066d17ce6eb061e4``
``Task09_Spleen``       .../Task09_Spleen.tar                                             ``410d4a301da4e5b2f6f86ec3ddba524e``
======================  ================================================================  ================================

Labels are per task (``dataset.json``: Liver 1 liver, 2 cancer; Pancreas 1 pancreas, 2 cancer; Spleen
1 spleen), not BTCV's ids, so ``data.label_preset`` must not stay ``btcv``: :meth:`MSD.usage` prints
the organ map that merges a task's labels into its organ (a tumour lies inside it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from advmed.data.download.errors import UnknownSource, UnpackError
from advmed.data.download.remote import Expected, RemoteFile, apply_options, select
from advmed.data.download.source import Check, Source

MIRROR = "https://msd-for-monai.s3-us-west-2.amazonaws.com"
ORIGIN = "md5 of MONAI 1.6.1 DecathlonDataset.md5 (monai/apps/datasets.py)"
TASKS = {  # task -> (md5, the organ its labels belong to)
    "Task03_Liver": ("a90ec6c4aa7f6a3d087205e23d4e6397", "liver"),
    "Task07_Pancreas": ("4f7080cfca169fa8066d17ce6eb061e4", "pancreas"),
    "Task09_Spleen": ("410d4a301da4e5b2f6f86ec3ddba524e", "spleen"),
}


class MSD(Source):
    """One CT task of the Medical Segmentation Decathlon, untarred into ``<root>/<task>``."""

    family = "msd"
    title = "Medical Segmentation Decathlon CT tasks, NIfTI volumes + labels (MONAI's mirror)"
    syntax = "<task>"

    def __init__(self, argument: str | None, options: Mapping[str, Any] | None) -> None:
        super().__init__(argument, options)
        task = {name.lower(): name for name in TASKS}.get((argument or "").strip().lower())
        if task is None:
            raise UnknownSource(f"msd needs one of its CT tasks: msd:<task> with <task> in {', '.join(TASKS)}"
                                + (f" (got {argument!r})" if argument else ""))
        self.task = task

    def remote_files(self) -> list[RemoteFile]:
        md5, _ = TASKS[self.task]
        remote = RemoteFile(f"{self.task}.tar", f"{MIRROR}/{self.task}.tar", Expected(md5=md5, origin=ORIGIN),
                            "tar", self.task)
        return apply_options([remote], self.options, self.family)

    def check_unpacked(self, path: Path, remote: RemoteFile) -> None:
        problems = _check_task_folder(path, Check()).problems
        if problems:
            raise UnpackError(f"{remote.name} did not untar to an MSD task folder: {'; '.join(problems)}")

    def verify(self, root: Path, selected: Sequence[str] | None = None) -> Check:
        check = Check()
        for remote in select(self.remote_files(), selected, self.family):
            _check_task_folder(root / remote.target, check)
        return check

    def usage(self, root: Path) -> str:
        _, organ = TASKS[self.task]
        ids = _label_ids(root / self.task) or [1]
        return (f"data=ct_slices data.root={root / self.task} data.label_preset=null '~data.organs' "
                f"'+data.organs={{{organ}:[{','.join(map(str, ids))}]}}' data.num_classes=2 "
                f"'data.class_names=[background,{organ}]'")


def _read_description(folder: Path) -> dict[str, Any]:
    path = folder / "dataset.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnpackError(f"{path} is missing or unreadable ({exc})") from exc


def _label_ids(folder: Path) -> list[int]:
    """The non-background label ids ``dataset.json`` names (empty when it cannot be read)."""
    try:
        labels = _read_description(folder).get("labels", {})
    except UnpackError:
        return []
    return sorted(int(k) for k in labels if str(k).isdigit() and int(k) > 0)


def _check_task_folder(folder: Path, check: Check) -> Check:
    """Every volume ``dataset.json`` lists exists and is not empty; adds to ``check``."""
    try:
        description = _read_description(folder)
    except UnpackError as exc:
        check.problems.append(str(exc))
        return check
    training = description.get("training") or []
    testing = description.get("test") or []
    listed = [folder / entry[key] for entry in training for key in ("image", "label")] + [folder / e for e in testing]
    missing = [str(p.relative_to(folder)) for p in listed if not p.is_file() or p.stat().st_size == 0]
    expected = (description.get("numTraining"), description.get("numTest"))
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        check.problems.append(f"{folder}: {len(missing)} file(s) listed in dataset.json are missing or empty ({shown})")
    elif expected[0] not in (None, len(training)) or expected[1] not in (None, len(testing)):
        check.problems.append(f"{folder}/dataset.json lists {len(training)} training and {len(testing)} test volumes "
                              f"but announces {expected[0]} and {expected[1]}")
    else:
        check.checked.append(f"{folder}: {len(training)} labelled volumes (imagesTr/ + labelsTr/) and "
                             f"{len(testing)} test volumes, as dataset.json lists")
    return check
