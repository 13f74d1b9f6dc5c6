"""Abdominal CT slices for segmentation.

:mod:`.ct_slices` (``data=ct_slices``) reads real data through :mod:`.sources` (which files form a
volume; SA-Med2D's per-organ masks in :mod:`.sa_med2d`), :mod:`.readers` (NIfTI / DICOM / ``.npz``
with MONAI's readers, reoriented to RAS), :mod:`.labels` (organ names -> each dataset's label ids)
and :mod:`.hu_window` (HU -> [0, 1]). :mod:`.synthetic_ct` (``data=synthetic_ct``) is the procedural
phantom of :mod:`.phantom` and :mod:`.phantom_geometry`.
"""
