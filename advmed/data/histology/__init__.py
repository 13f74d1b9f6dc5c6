"""Colorectal histology (H&E tiles, 9 tissue classes): NCT-CRC-HE-100K (:mod:`.nct_crc_he`) and
the procedural stand-in :mod:`.synthetic_histology`."""
