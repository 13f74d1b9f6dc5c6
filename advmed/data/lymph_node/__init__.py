"""Lymph-node metastasis tiles (two classes): PCam's HDF5 files (:mod:`.pcam`), Kaggle's
Histopathologic Cancer Detection TIFF folder (:mod:`.hcd`) and the procedural stand-in
:mod:`.synthetic_lymph_node`."""
