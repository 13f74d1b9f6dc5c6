"""Natural shifts: image corruptions and stain changes at a severity from 1 to 5, each a
:class:`~advmed.corruptions.base.Shift` on float [0, 1] ``(N, C, H, W)`` images.

- :mod:`.base`: the ``Shift`` interface and the severity scale.
- :mod:`.medmnist_c`: MedMNIST-C's corruptions (Di Salvo et al., 2024) per modality;
  :func:`corruptions_for` gives those of ``histology``, ``ct`` or ``xray``. Parameter tables in
  :mod:`.medmnist_c_params`, medmnistc's own classes in :mod:`.medmnist_c_reference`, the exact
  batched torch versions in :mod:`.medmnist_c_torch`, the fixed motion blur in :mod:`.motion_blur`,
  and the messages for missing medmnistc / ImageMagick in :mod:`.optional_deps`.
- :mod:`.stain`: the H&E stain shifts (HED jitter, Macenko and Reinhard normalisation) and the
  stain-jitter training augmentation; HED deconvolution in :mod:`.colour_deconvolution`.

Importing this package needs neither medmnistc nor ImageMagick: they are loaded when a corruption
that needs them first runs.
"""

from advmed.corruptions.base import SEVERITIES, Shift, check_severity
from advmed.corruptions.medmnist_c import MedMNISTCCorruption, corruptions_for
from advmed.corruptions.stain import STAIN_SHIFT_NAMES, RandomStainShift, stain_shifts

__all__ = [
    "SEVERITIES",
    "STAIN_SHIFT_NAMES",
    "MedMNISTCCorruption",
    "RandomStainShift",
    "Shift",
    "check_severity",
    "corruptions_for",
    "stain_shifts",
]
