"""Attacks whose budget is a region rather than a norm ball: SNAP's sporadic patches
(``snap``) on the cell masks it derives from H&E stains (``cell_masks``)."""
