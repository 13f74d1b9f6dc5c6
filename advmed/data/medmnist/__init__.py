"""MedMNIST (Yang et al. 2023): 2D images of any modality in one ``.npz`` per set and size.

:mod:`.medmnist` is the DataModule (``data=medmnist``); :mod:`.medmnist_layout` what a file holds, shared
with ``advmed.data.download`` (which must not import Lightning: this ``__init__`` imports nothing).
"""
