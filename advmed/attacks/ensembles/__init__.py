"""Ensembles of attacks that report the worst case per image: AutoAttack for classifiers
(``autoattack``: APGD-CE, APGD-T, FAB-T, Square; Croce & Hein, ICML 2020) and SEA for
segmenters (``sea``: APGD with three per-pixel losses; Croce, Singh & Hein, ECCV 2024)."""
