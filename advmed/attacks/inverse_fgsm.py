"""Inverse Fast Gradient Sign Method."""

from __future__ import annotations

from advmed.attacks.fgsm import FGSM


class InverseFGSM(FGSM):
    """Inverse FGSM: FGSM that descends the loss, ``x_adv = clip_[0,1](x - eps * sign(grad_x loss))``.

    It makes the input *easier* for the model; Pervin et al. use it as data augmentation for
    segmentation (U-Net on CT), where it beat FGSM augmentation (IoU 0.84 -> 0.90).
    Same arguments as :class:`FGSM`; with ``targeted=True`` it moves away from the target.
    """

    _direction = -1.0
