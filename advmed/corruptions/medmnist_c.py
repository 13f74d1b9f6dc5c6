"""MedMNIST-C's corruptions as advmed natural shifts, per modality.

MedMNIST-C (Di Salvo et al., 2024, "MedMNIST-C: Comprehensive benchmark and improved classifier
robustness by simulating realistic image corruptions"; PyPI ``medmnistc``) corrupts each MedMNIST
dataset with the corruptions of its acquisition, at five severities. advmed uses the tables of
``pathmnist`` for ``histology``, ``organamnist`` for ``ct`` and ``pneumoniamnist`` for ``xray``
(:mod:`advmed.corruptions.medmnist_c_params`), with MedMNIST-C's parameters as published: they are
defined at 224 px and kept at every image size.

Each corruption of each modality is a :class:`~advmed.corruptions.base.Shift` subclass (e.g.
``CtGaussianBlur``, ``HistologyStainDeposit``); :func:`corruptions_for` gives a modality's.
A shift turns the float [0, 1] images into MedMNIST-C's uint8 ones (``round(255 x)``), corrupts
them and returns ``uint8 / 255`` in the images' dtype and device, with as many channels as it got:
a 1-channel image goes through the corruption as an RGB copy and comes back as PIL's luma, as
medmnistc does for its grey datasets.

Backends (``backend=``):

- ``medmnistc``: medmnistc's own class, one PIL image at a time
  (:mod:`advmed.corruptions.medmnist_c_reference`, which also gives the seeding scheme). Motion blur
  uses advmed's copy with medmnistc's numpy-2 and image-size bugs fixed
  (:mod:`advmed.corruptions.motion_blur`).
- ``torch``: the batched torch version (:mod:`advmed.corruptions.medmnist_c_torch`) on the images'
  device; only the corruptions that have one: brightness, contrast, gamma, saturation, pixelation,
  Gaussian and defocus blur, each giving medmnistc's uint8 pixels (tested for every severity on
  the CPU; on a GPU the element-wise ones are exact by construction, the two blurs unchecked).
- ``auto`` (default): of the versions that give medmnistc's pixels on the images' device, the
  faster one (:meth:`MedMNISTCCorruption.implementation`): on a CPU, the torch version of
  brightness, contrast, gamma, saturation and Gaussian blur (pixelation and defocus blur are faster
  in Pillow and OpenCV); on a GPU, the torch version of everything element-wise (pixelation
  included) on the GPU, and the Gaussian blur's on the CPU (a GPU convolution sums in another order,
  which is not checked against medmnistc); else medmnistc.

Images smaller than a corruption's pixel geometry allows (stain inks of 24-32 px, bubbles of
radius up to 17 px, a Gaussian kernel of 21 px) are refused with the smallest side that works
(:func:`~advmed.corruptions.medmnist_c_reference.min_side`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor

from advmed.corruptions.base import Shift
from advmed.corruptions.medmnist_c_params import MEDMNIST_C_TABLES, MODALITY_DATASETS, CorruptionSpec
from advmed.corruptions.medmnist_c_reference import (
    RANDOM_KINDS,
    Corruptor,
    corrupt_per_image,
    min_side,
    reference_corruptor,
)
from advmed.corruptions.medmnist_c_torch import TORCH_CORRUPTIONS, apply_torch

BACKENDS = ("auto", "medmnistc", "torch")


def to_levels(images: Tensor) -> Tensor:
    """Float [0, 1] images as MedMNIST-C's uint8 pixel values ``round(255 x)`` (half to even), held in
    a float32 tensor; computed in float32 at least (a float16 image times 255 would round first)."""
    work = images if images.dtype == torch.float64 else images.to(torch.float32)
    return torch.round(work * 255).to(torch.float32)


def to_uint8(images: Tensor) -> Tensor:
    """Float [0, 1] images as MedMNIST-C's uint8 pixels, ``round(255 x)``."""
    return to_levels(images).to(torch.uint8)


class MedMNISTCCorruption(Shift):
    """A MedMNIST-C corruption of one modality (Di Salvo et al., 2024). Concrete classes, one per
    modality and corruption, are made from :data:`MEDMNIST_C_TABLES`; ``spec`` holds medmnistc's class
    name and its five severity parameters. ``backend``: ``auto``, ``medmnistc`` or ``torch`` (module
    docstring). Deterministic given ``(images, severity, seed)``; the global numpy and Python RNGs
    are left as they were."""

    spec: ClassVar[CorruptionSpec]
    modality: ClassVar[str]
    dataset: ClassVar[str]

    def __init__(self, backend: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} for corruption '{self.name}': use one of {BACKENDS}")
        if backend == "torch" and self.spec.kind not in TORCH_CORRUPTIONS:
            with_torch = [n for n, s in MEDMNIST_C_TABLES[self.modality].items() if s.kind in TORCH_CORRUPTIONS]
            raise ValueError(f"corruption '{self.name}' ({self.modality}) has no torch version (medmnistc's "
                             f"{self.spec.kind} only): use backend='medmnistc' or 'auto'. Those with one: {with_torch}")
        self.backend = backend
        self._reference: Corruptor | None = None  # medmnistc's corruptor, built on first use

    def implementation(self, device: torch.device | str = "cpu") -> str:
        """What corrupts images that lie on ``device``: ``torch`` (the torch version, on that device),
        ``torch-cpu`` (the torch version, on the CPU) or ``medmnistc`` (its class, image by image).
        ``auto`` picks, among the versions that give medmnistc's pixels there, the faster: on a CPU the
        torch version where it beats medmnistc's loop; on a GPU the torch version where it is exact on
        any device, else the torch version on the CPU where that is faster, else medmnistc."""
        op = TORCH_CORRUPTIONS.get(self.spec.kind)
        if op is None or self.backend == "medmnistc":
            return "medmnistc"
        if self.backend == "torch":
            return "torch"
        if torch.device(device).type == "cpu":
            return "torch" if op.faster_on_cpu else "medmnistc"
        if op.any_device:
            return "torch"
        return "torch-cpu" if op.faster_on_cpu else "medmnistc"

    def apply(self, images: Tensor, severity: int, seed: int) -> Tensor:
        self._check_images(images, severity)
        if images.shape[0] == 0:
            return images.clone()
        implementation = self.implementation(images.device)
        if implementation == "medmnistc":
            out = self._apply_reference(to_uint8(images), severity, seed)
        else:
            levels = to_levels(images)
            if implementation == "torch-cpu":
                levels = levels.cpu()
            out = apply_torch(self.spec.kind, levels, self.spec.params[severity - 1])
        # levels / 255 in float64 for float64 images (their exact grey levels), else in float32
        return out.to(images.device, torch.float64 if images.dtype == torch.float64 else torch.float32) / 255.0

    def _apply_reference(self, pixels: Tensor, severity: int, seed: int) -> Tensor:
        if self._reference is None:
            self._reference = reference_corruptor(self.spec)
        batch = pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # contiguous: PIL would copy each image
        out = corrupt_per_image(self._reference, batch, severity, seed, seeded=self.spec.kind in RANDOM_KINDS)
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    def min_side(self, severity: int) -> int:
        return min_side(self.spec, severity)

    def _check_images(self, images: Tensor, severity: int) -> None:
        channels, height, width = images.shape[1:]
        if channels not in (1, 3):
            raise ValueError(f"shift '{self.name}' takes RGB (3-channel) or grey (1-channel) images, got {channels} "
                             f"channels {tuple(images.shape)}")
        if images.numel():
            low, high = torch.aminmax(images.detach())
            if not (bool(low >= 0) and bool(high <= 1)):  # NaN fails both
                raise ValueError(f"shift '{self.name}' takes images in [0, 1] (pixel space), got values in "
                                 f"[{low.item():.4g}, {high.item():.4g}]: undo any normalisation first")
        need = min_side(self.spec, severity)
        if min(height, width) < need:
            raise ValueError(f"corruption '{self.name}' ({self.modality}) at severity {severity} needs images of at "
                             f"least {need} px a side (MedMNIST-C's geometry, in pixels of its 224 px images), got "
                             f"{height}x{width}: resize the images up or leave '{self.name}' out")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, modality={self.modality!r}, backend={self.backend!r})"


def _class_name(modality: str, name: str) -> str:
    return "".join(part.capitalize() for part in (modality, *name.split("_")))


def _corruption_class(modality: str, spec: CorruptionSpec) -> type[MedMNISTCCorruption]:
    dataset = MODALITY_DATASETS[modality]
    name = _class_name(modality, spec.name)
    doc = (f"MedMNIST-C's ``{spec.name}`` for {modality} images (Di Salvo et al., 2024): medmnistc's "
           f"``{spec.kind}`` with the parameters of its ``{dataset}`` table, severities 1..5: {spec.params}.")
    return type(name, (MedMNISTCCorruption,), {
        "__module__": __name__, "__qualname__": name, "__doc__": doc,
        "name": spec.name, "modalities": frozenset({modality}), "modality": modality, "dataset": dataset, "spec": spec,
    })


# modality -> corruption name -> its Shift class, in MedMNIST-C's order.
CORRUPTION_CLASSES: dict[str, dict[str, type[MedMNISTCCorruption]]] = {
    modality: {name: _corruption_class(modality, spec) for name, spec in table.items()}
    for modality, table in MEDMNIST_C_TABLES.items()
}
# Module attributes under their own names, so that pickle (DataLoader workers, spawned processes)
# finds the classes by reference.
globals().update({cls.__name__: cls for table in CORRUPTION_CLASSES.values() for cls in table.values()})


def corruptions_for(modality: str, names: str | Iterable[str] | None = None,
                    backend: str = "auto") -> dict[str, MedMNISTCCorruption]:
    """MedMNIST-C's corruptions of ``modality`` (``histology``, ``ct``, ``xray``) as name -> Shift:
    every one in MedMNIST-C's order when ``names`` is None, else those named, in the order given.
    A modality or a name MedMNIST-C does not define for it is a ValueError listing the valid ones."""
    if modality not in CORRUPTION_CLASSES:
        raise ValueError(f"unknown modality {modality!r}: MedMNIST-C corruptions are defined for "
                         f"{sorted(CORRUPTION_CLASSES)}")
    table = CORRUPTION_CLASSES[modality]
    if names is None:
        chosen = list(table)
    else:
        chosen = list(dict.fromkeys([names] if isinstance(names, str) else [str(n) for n in names]))
        unknown = [n for n in chosen if n not in table]
        if unknown:
            elsewhere = {n: [m for m, t in CORRUPTION_CLASSES.items() if n in t] for n in unknown}
            notes = "; ".join(f"'{n}' is defined for {ms}" for n, ms in elsewhere.items() if ms)
            raise ValueError(f"corruption(s) {unknown} not defined for modality {modality!r} (MedMNIST-C's "
                             f"{MODALITY_DATASETS[modality]} set){': ' + notes if notes else ''}. "
                             f"Valid names for {modality!r}: {list(table)}")
    return {name: table[name](backend=backend) for name in chosen}
