"""BTCV / Synapse multi-organ abdominal CT (MICCAI 2015 "Multi-Atlas Labeling Beyond the Cranial Vault").

The data lie on Synapse (project syn3193805) behind a Synapse account that has joined the challenge,
so ``download`` says what to fetch and ``verify`` checks the folder afterwards. No checksum or
size is published for its files (no published checksum): ``verify`` checks the layout
``data=ct_slices`` reads by default (``img/imgNNNN.nii.gz`` paired with ``label/labelNNNN.nii.gz``),
the 30 labelled training volumes of the release, that every file is a readable NIfTI whose label
volume has its image's shape (headers only, via nibabel), and that none is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib

from advmed.data.ct.sources import volume_pairs
from advmed.data.download.source import Check, Source

SYNAPSE = "https://www.synapse.org/#!Synapse:syn3193805"
VOLUMES = {"volumes": 30}  # labelled training volumes: img0001-0010 and img0021-0040


class BTCV(Source):
    """BTCV's ``RawData/Training`` folder (``img/``, ``label/``), fetched by hand from Synapse."""

    family = "btcv"
    title = "BTCV / Synapse multi-organ abdominal CT, 30 labelled NIfTI volumes (Synapse account needed)"
    manual = True

    def instructions(self, root: Path) -> str:
        return "\n".join([
            "BTCV (Synapse multi-organ CT) needs a Synapse account (no published checksum):",
            f"  1. sign in at {SYNAPSE} and join the challenge (Files tab, accept the data terms)",
            "  2. in Files > Abdomen, download RawData.zip",
            f"  3. unzip it and move the contents of RawData/Training/ to {root}",
            f"so that {root / 'img'}/img0001.nii.gz ... and {root / 'label'}/label0001.nii.gz ... exist "
            f"({VOLUMES['volumes']} pairs). Then check it:",
            f"  python -m advmed.data.download verify btcv root={root}",
        ])

    def verify(self, root: Path, selected: Sequence[str] | None = None) -> Check:
        check = Check()
        expected = int(self.counts(VOLUMES)["volumes"])
        try:
            pairs = volume_pairs(root, "img", "label", None)
        except (OSError, ValueError) as exc:
            check.problems.append(str(exc))
            return check
        bad = []
        for image, label in pairs:
            try:
                if image.stat().st_size == 0 or label.stat().st_size == 0:
                    raise ValueError("empty file")
                image_shape, label_shape = nib.load(image).shape, nib.load(label).shape
            except Exception as exc:  # nibabel raises several types for a broken file
                bad.append(f"{image.name}/{label.name}: {exc}")
                continue
            if image_shape[:3] != label_shape[:3]:
                bad.append(f"{label.name} is {label_shape} but {image.name} is {image_shape}")
        if bad:
            check.problems.append(f"{len(bad)} unreadable or mismatched pair(s): {'; '.join(bad[:5])}")
        if len(pairs) != expected:
            check.problems.append(f"{root}: {len(pairs)} image/label pairs, expected {expected}")
        if not bad and len(pairs) == expected:
            check.checked.append(f"{root}: {len(pairs)} img/label NIfTI pairs with matching shapes")
        check.notes.append("Synapse publishes no checksum: pairing, NIfTI headers and counts are checked")
        return check

    def usage(self, root: Path) -> str:
        return f"data=ct_slices data.root={root}"
