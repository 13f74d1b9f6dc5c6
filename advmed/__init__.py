"""advmed: adversarial attacks and adversarial data augmentation for medical imaging.

Contracts (see DESIGN.md): images are float tensors in [0, 1] of shape (N, C, H, W);
attacks take the model when called; configuration is the interface.
"""

__version__ = "0.1.0"
