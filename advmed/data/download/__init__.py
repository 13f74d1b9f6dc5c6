"""``python -m advmed.data.download <source> root=<folder>``: fetch a public dataset into the layout its
data config reads, verified before it is unpacked, resumable, with a manifest (docs/data/download.md).

    python -m advmed.data.download nct_crc_he root=/data/nct          # then data.root=/data/nct/NCT-CRC-HE-100K
    python -m advmed.data.download medmnist:pathmnist@64 root=/data/medmnist
    python -m advmed.data.download msd:Task09_Spleen root=/data/msd
    python -m advmed.data.download kaggle_hcd root=/data/hcd          # prints what to fetch (Kaggle account)
    python -m advmed.data.download verify kaggle_hcd root=/data/hcd   # checks a folder filled by hand
    python -m advmed.data.download list

Modules, one job each: :mod:`.cli` (the command line), :mod:`.job` (download / verify / list),
:mod:`.registry` (source names), :mod:`.source` (what a source provides), ``sources/`` (one module
per dataset: URLs, checksums and where they come from, layout checks), :mod:`.install` (the steps
per file), :mod:`.fetch` (HTTP with Range resume), :mod:`.checksums`, :mod:`.unpack`,
:mod:`.manifest` (provenance and folder ownership), :mod:`.space` (free disk space), :mod:`.remote`
(published files and their expected checksums), :mod:`.errors`.

Nothing here touches the network on import; only ``download`` of a downloadable source does.
"""
