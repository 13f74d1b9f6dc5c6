"""The nine tissue classes of NCT-CRC-HE-100K / CRC-VAL-HE-7K, one folder each (``<root>/ADI/*.tif``, ...),
in the order of their labels: shared by the DataModule and ``advmed.data.download``'s checks (which must
not import Lightning)."""

CLASS_NAMES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
