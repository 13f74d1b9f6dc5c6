"""``python -m advmed.data.download [verify|list] <source> root=<folder> [key=value ...]``.

The Hydra task function lives here, in the module run as ``__main__``, so that Hydra finds
``conf/`` relative to this file (``config_path``), as for the other entry points.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from advmed.data.download.cli import clean_errors, rewrite_argv
from advmed.data.download.job import download
from advmed.utils.job_status import record_job_status
from advmed.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="download")
@clean_errors
@record_job_status
def main(cfg: DictConfig) -> dict[str, Any]:
    return download(cfg)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *rewrite_argv(sys.argv[1:])]
    main()
