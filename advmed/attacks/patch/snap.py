"""SNAP: Sporadic and Naturalistic Adversarial Patches (Kumar, Sharma & Narayan, AAAI 2023
student abstract), per image or as one universal patch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from advmed.attacks.core.base import Attack
from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.result import AttackResult
from advmed.attacks.core.validation import as_float, check_seed, check_steps
from advmed.attacks.patch.cell_masks import PLACEMENTS, cell_masks, nucleus_density
from advmed.corruptions.colour_deconvolution import BACKENDS
from advmed.utils.files import atomic_write

OPTIMIZERS = ("sign", "adam")
INITS = ("median", "random")
PATCH_FORMAT = "advmed.snap.universal_patch/1"
_ADAM_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8


def _pair(name: str, value: Any, low: float, high: float, *, open_low: bool = True) -> tuple[float, float]:
    """A (min, max) pair inside (low, high] (or [low, high] when not ``open_low``), min <= max."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a pair [min, max], got {value!r}")
    a, b = (as_float(name, v) for v in value)
    above = (lambda v: v > low) if open_low else (lambda v: v >= low)
    if not (above(a) and above(b) and a <= high and b <= high and a <= b):
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be [min, max] with {bracket}{low:g} <= min <= max <= {high:g}], got {list(value)}")
    return a, b


def colour_range(x: Tensor, quantiles: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Per image and channel, the ``quantiles`` of the image's own pixel values: ``(N, C, 1, 1)`` each."""
    q = torch.tensor(quantiles, device=x.device, dtype=torch.float32)
    lo, hi = torch.quantile(x.float().flatten(2), q, dim=2)  # (N, C) each
    return lo.to(x.dtype)[..., None, None], hi.to(x.dtype)[..., None, None]


def compose(x: Tensor, patch: Tensor, region: Tensor) -> Tensor:
    """Paper eq. (2), ``x' = (1 - m) * x + m * delta`` for a binary mask, computed as a selection
    so that patched pixels equal ``delta`` exactly (no rounding out of the colour range)."""
    return torch.where(region, patch, x)


class SNAP(Attack):
    """Sporadic and naturalistic adversarial patches (Kumar et al., SNAP): many small cell-shaped
    patches, trained jointly, whose colours stay inside the image's own colour range.

    The budget is the mask and the colour range, not an eps-ball: ``x' = (1 - m) * x + m * delta``
    (paper eq. 2) with ``m`` a union of cell-like blobs covering at most ``area_fraction`` of the
    image (:mod:`advmed.attacks.patch.cell_masks`), and after every step ``delta`` is projected into the
    per-channel ``colour_quantiles`` range of the attacked image itself. ``delta`` starts at the
    image's median colour (paper: "starting with a patch of specific color, based on the median
    pixel value of the image"), and a sample stops once the model's confidence in the attack's
    goal reaches ``confidence`` (paper: 95 %) or after ``steps`` steps.

    Per image by default; with ``patch_path`` the universal patch trained by
    :class:`advmed.models.universal_patch.UniversalPatchModule` is applied instead (no
    optimisation; its colours are projected into each image's own range).

    Args:
        area_fraction: patch budget, the covered fraction of the image, in (0, 0.5].
        steps: maximum optimisation steps per image.
        step_size: the step of ``optimizer`` (sign: the L-inf step per iteration; adam: the lr).
        optimizer: ``"sign"`` (signed gradient, as PGD) or ``"adam"``.
        num_blobs: at most this many blobs; None: as many as ``area_fraction`` allows.
        blob_radius: (min, max) blob radius as a fraction of the image side (nucleus size:
            0.03-0.06 of a 96 px PCam tile is 3-6 px).
        blob_aspect: (min, max) short/long axis ratio of the blobs, in (0, 1].
        blob_irregularity: outline harmonics amplitude in [0, 0.5): 0 gives plain ellipses.
        placement: ``"random"`` (uniform centres) or ``"nuclei"`` (centres drawn where the
            haematoxylin channel of colour deconvolution is dense).
        stain_backend: colour deconvolution of ``"nuclei"``: ``"torch"`` (on the device) or
            ``"skimage"`` (``skimage.color.rgb2hed``, on the CPU).
        density_power: sharpness of the nuclei placement (probability ~ density ** power).
        colour_quantiles: [low, high] per-channel quantiles of the image bounding ``delta``;
            [0, 1] is the image's min/max colour.
        init: ``"median"`` (the image's median colour) or ``"random"`` (uniform in the range).
        confidence: stop a sample once the goal's probability reaches this; None: run all steps.
        patch_path: a universal patch file to apply (``universal_patch.pt`` of a patch run).
        seed: seeds a private generator for masks and random init (repeatable calls); None: the
            global RNG.
        targeted, target_class: default targeted toward class 0 (no metastasis), as the paper;
            untargeted: ``targeted=False, target_class=None``.
        Other keyword args: see :class:`Attack` (loss, loss_classes, amp_dtype, channels_last).

    The result's ``region`` is the mask and ``stats`` hold ``area_fraction`` and ``steps`` per image.
    """

    norm = "patch"

    def __init__(
        self,
        area_fraction: float = 0.05,
        steps: int = 100,
        step_size: float = 0.01,
        optimizer: str = "sign",
        num_blobs: int | None = None,
        blob_radius: Sequence[float] = (0.03, 0.06),
        blob_aspect: Sequence[float] = (0.6, 1.0),
        blob_irregularity: float = 0.15,
        placement: str = "random",
        stain_backend: str = "torch",
        density_power: float = 4.0,
        colour_quantiles: Sequence[float] = (0.02, 0.98),
        init: str = "median",
        confidence: float | None = 0.95,
        patch_path: str | None = None,
        seed: int | None = None,
        *,
        targeted: bool = True,
        target_class: int | None = 0,
        **common,
    ):
        # eps=1: inside the mask any colour of the range is allowed; the mask is the budget.
        super().__init__(1.0, targeted=targeted, target_class=target_class, **common)
        self.area_fraction = as_float("area_fraction", area_fraction)
        if not 0 < self.area_fraction <= 0.5:
            raise ValueError(
                f"area_fraction must be in (0, 0.5] (the share of the image the patches cover), got {self.area_fraction:g}"
            )
        self.steps = check_steps(steps)
        self.step_size = as_float("step_size", step_size)
        if self.step_size <= 0:
            raise ValueError(f"step_size must be > 0, got {self.step_size:g}")
        self.optimizer = _choice("optimizer", optimizer, OPTIMIZERS)
        if num_blobs is not None and (isinstance(num_blobs, bool) or not isinstance(num_blobs, int) or num_blobs < 1):
            raise ValueError(f"num_blobs must be an integer >= 1 or null, got {num_blobs!r}")
        self.num_blobs = num_blobs
        self.blob_radius = _pair("blob_radius", blob_radius, 0.0, 0.5)
        self.blob_aspect = _pair("blob_aspect", blob_aspect, 0.0, 1.0)
        self.blob_irregularity = as_float("blob_irregularity", blob_irregularity)
        if not 0 <= self.blob_irregularity < 0.5:
            raise ValueError(f"blob_irregularity must be in [0, 0.5), got {self.blob_irregularity:g}")
        self.placement = _choice("placement", placement, PLACEMENTS)
        self.stain_backend = _choice("stain_backend", stain_backend, BACKENDS)
        self.density_power = as_float("density_power", density_power)
        self.colour_quantiles = _check_quantiles(colour_quantiles)
        self.init = _choice("init", init, INITS)
        if confidence is not None:
            confidence = as_float("confidence", confidence)
            if not 0 < confidence <= 1:
                raise ValueError(f"confidence must be in (0, 1] or null (run every step), got {confidence:g}")
        self.confidence = confidence
        self.seed = check_seed(seed)
        self.patch_path = None if patch_path is None else str(patch_path)
        self._patch = None if patch_path is None else load_universal_patch(patch_path)

    # ------------------------------------------------------------------ call

    def _perturb(self, batch: AttackBatch) -> AttackResult:
        x = batch.x
        if self._patch is not None:
            return self._apply_universal(x)
        generator = None if self.seed is None else torch.Generator(device=x.device).manual_seed(self.seed)
        region = self.masks(x, generator)
        lo, hi = colour_range(x, self.colour_quantiles)
        patch = self._initial_patch(x, lo, hi, generator)
        steps_taken = torch.zeros(x.shape[0], device=x.device)
        moments = (torch.zeros_like(patch), torch.zeros_like(patch)) if self.optimizer == "adam" else None
        active: Tensor | None = None  # samples still optimised; None = all (no gathers)
        for step in range(self.steps):
            sel = slice(None) if active is None else active
            mask = region[sel]
            logits, grad = batch.gradient(compose(x[sel], patch[sel], mask), active)
            if self.confidence is not None:
                done = batch.goal_confidence(logits, active) >= self.confidence
                if bool(done.any()):
                    keep = ~done
                    active = (torch.arange(x.shape[0], device=x.device) if active is None else active)[keep]
                    if active.numel() == 0:
                        break
                    sel, mask, grad = active, mask[keep], grad[keep]
            # d x' / d delta = m: only the patch pixels move.
            update = self._ascent_direction(grad.mul_(mask), moments, sel, step + 1)
            stepped = torch.maximum(torch.minimum(patch[sel] + self.step_size * update, hi[sel]), lo[sel])
            if active is None:
                patch = stepped
            else:
                patch = patch.index_copy(0, active, stepped)
            steps_taken[sel] += 1
        x_adv = compose(x, patch, region)
        return AttackResult(x_adv, region=region, stats={"area_fraction": _area(region), "steps": steps_taken})

    def masks(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The patch masks ``(N, 1, H, W)`` (bool) this attack places on images ``x``."""
        n, _, h, w = x.shape
        density = None
        if self.placement == "nuclei":
            mean_radius = sum(self.blob_radius) / 2 * min(h, w)
            density = nucleus_density(x.detach(), mean_radius, self.stain_backend)
        return cell_masks(
            n, h, w, self.area_fraction, self.blob_radius, self.blob_aspect, self.blob_irregularity,
            self.num_blobs, density, self.density_power, generator, x.device,
        )

    def _initial_patch(self, x: Tensor, lo: Tensor, hi: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.init == "median":
            start = x.flatten(2).median(dim=2).values[..., None, None].expand_as(x)
        else:
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            start = lo + (hi - lo) * noise
        return torch.maximum(torch.minimum(start, hi), lo)

    def _ascent_direction(self, grad: Tensor, moments: tuple[Tensor, Tensor] | None, sel, t: int) -> Tensor:
        """Signed gradient, or Adam's bias-corrected step (moments of the selected samples updated)."""
        if moments is None:
            return grad.sign_()
        (beta1, beta2), (m, v) = _ADAM_BETAS, moments
        m_sel = m[sel].mul_(beta1).add_(grad, alpha=1 - beta1)
        v_sel = v[sel].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        m[sel], v[sel] = m_sel, v_sel
        return (m_sel / (1 - beta1**t)) / ((v_sel / (1 - beta2**t)).sqrt_().add_(_ADAM_EPS))

    def _apply_universal(self, x: Tensor) -> AttackResult:
        patch, region = self._patch["delta"], self._patch["mask"]
        if tuple(patch.shape) != tuple(x.shape[1:]):
            raise ValueError(
                f"the universal patch {self.patch_path} was trained for images of shape {tuple(patch.shape)} "
                f"(C, H, W) but the batch has {tuple(x.shape[1:])}: set data.image_size={patch.shape[-1]} "
                "or train a patch for this size (experiment=snap/universal)"
            )
        return apply_universal_patch(x, patch.to(x), region.to(x.device), self.colour_quantiles)


def apply_universal_patch(x: Tensor, patch: Tensor, mask: Tensor, quantiles: tuple[float, float]) -> AttackResult:
    """One patch ``(C, H, W)`` with one mask ``(1, H, W)`` on every image of ``x``; the patch colours
    are projected into each image's own ``quantiles`` colour range first, so the result stays
    naturalistic on every image. Differentiable w.r.t. ``patch`` (where it is not clipped)."""
    lo, hi = colour_range(x, quantiles)
    region = mask.expand(x.shape[0], 1, *x.shape[2:])
    x_adv = compose(x, torch.maximum(torch.minimum(patch.expand_as(x), hi), lo), region)
    return AttackResult(x_adv, region=region, stats={"area_fraction": _area(region)})


def _choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def _check_quantiles(value: Any) -> tuple[float, float]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"colour_quantiles must be a pair [low, high], got {value!r}")
    lo, hi = (as_float("colour_quantiles", v) for v in value)
    if not (0 <= lo < hi <= 1):
        raise ValueError(
            f"colour_quantiles must satisfy 0 <= low < high <= 1 (quantiles of the image's own colours), got {list(value)}"
        )
    return lo, hi


def _area(region: Tensor) -> Tensor:
    return region.flatten(1).float().mean(1)


# --------------------------------------------------------------------------- universal patch files


def save_universal_patch(path: str | Path, delta: Tensor, mask: Tensor, provenance: dict[str, Any]) -> Path:
    """Write a universal patch atomically: ``delta`` (C, H, W) in [0, 1], ``mask`` (1, H, W) bool,
    and what produced it (classifier checkpoint and its hash, target, config)."""
    if delta.ndim != 3 or mask.shape != (1, *delta.shape[1:]) or mask.dtype != torch.bool:
        raise ValueError(f"a universal patch needs delta (C, H, W) and a bool mask (1, H, W), got {tuple(delta.shape)} / {tuple(mask.shape)}")
    record = {
        "format": PATCH_FORMAT,
        "delta": delta.detach().float().cpu().contiguous(),
        "mask": mask.detach().cpu().contiguous(),
        "area_fraction": float(mask.float().mean()),
        "provenance": provenance,
    }
    return atomic_write(path, lambda tmp: torch.save(record, tmp))


def load_universal_patch(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`save_universal_patch` (``weights_only``), with clear errors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"universal patch '{path}' does not exist: train one with `python -m advmed.train "
            "experiment=snap/universal model.classifier_ckpt=...` and pass its <run dir>/universal_patch.pt"
        )
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # every unpickling failure means the same to the user
        raise ValueError(f"'{path}' is not a readable universal patch file ({type(err).__name__}: {err})") from err
    if not isinstance(record, dict) or record.get("format") != PATCH_FORMAT:
        raise ValueError(f"'{path}' is not an advmed universal patch (written by experiment=snap/universal)")
    if not math.isclose(float(record["mask"].float().mean()), record["area_fraction"], rel_tol=1e-6):
        raise ValueError(f"'{path}' is inconsistent (mask area differs from its record): re-export the patch")
    return record
