"""What a MedMNIST ``.npz`` holds, for the DataModule and for ``advmed.data.download``'s checks (which must
not import Lightning): the arrays ``{train,val,test}_{images,labels}``, and the modality of each flag."""

from __future__ import annotations

KEYS = tuple(f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("images", "labels"))

# MedMNIST flag (the file name's first part) -> modality of advmed.corruptions; PathMNIST is H&E.
FLAG_MODALITY = {"pathmnist": "histology", "chestmnist": "xray", "pneumoniamnist": "xray",
                 "organamnist": "ct", "organcmnist": "ct", "organsmnist": "ct"}
