"""OmegaConf resolvers used by the config tree (registered once, on import of an entry point)."""

from __future__ import annotations

import hashlib
import os

from omegaconf import OmegaConf

# File names are limited to 255 bytes; a sweep directory name stays well below, leaving room for
# what tools append (".tmp" files, W&B's run suffixes) and for a readable listing.
JOB_DIRNAME_MAX_BYTES = 150
_HASH_CHARS = 10


def wandb_offline() -> bool:
    """W&B runs offline unless the user has credentials or asked for online mode explicitly."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return True
    return not (mode == "online" or os.environ.get("WANDB_API_KEY"))


def job_dirname(override_dirname: str, max_bytes: int = JOB_DIRNAME_MAX_BYTES) -> str:
    """A multirun job's directory name from Hydra's ``override_dirname``: unchanged when it fits in
    ``max_bytes`` (UTF-8), otherwise cut to fit, with '/' made '_' (one directory, not a nest of them),
    and ending in ``_`` + a hash of the full name, so that two jobs whose names share the kept prefix
    stay apart. The full overrides stay in the job's ``.hydra/overrides.yaml``.

    ``conf/hydra/default.yaml``: ``sweep.subdir: ${advmed.job_dirname:${hydra.job.override_dirname}}``.
    """
    name = str(override_dirname)
    if max_bytes <= _HASH_CHARS + 1:
        raise ValueError(f"advmed.job_dirname: max_bytes must exceed {_HASH_CHARS + 1}, got {max_bytes}")
    if len(name.encode()) <= max_bytes:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_CHARS]
    # errors="ignore" drops a multi-byte character cut in half at the boundary
    prefix = name.replace("/", "_").encode()[: max_bytes - _HASH_CHARS - 1].decode(errors="ignore")
    return f"{prefix}_{digest}"


def cuda_available() -> bool:
    """Whether this process sees a CUDA device (e.g. SyncBatchNorm, which only runs on GPUs)."""
    import torch

    return torch.cuda.is_available()


def if_gpu(accelerator: str, on_gpu, otherwise):
    """``on_gpu`` when ``accelerator`` (``trainer.accelerator``) runs on a CUDA device, else
    ``otherwise``: speed options (bf16, channels_last, cudnn benchmark) are on by default on a GPU
    and off on a CPU, where they would cost time or determinism."""
    import torch

    gpu = str(accelerator) in ("gpu", "cuda") or (str(accelerator) == "auto" and torch.cuda.is_available())
    return on_gpu if gpu else otherwise


def gpu_precision(accelerator: str) -> str:
    """``bf16-mixed`` on a GPU that has bf16 (Ampere and later), ``16-mixed`` on an older one,
    ``32-true`` on a CPU."""
    import torch

    if if_gpu(accelerator, True, False) is not True or not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("advmed.wandb_offline"):
        OmegaConf.register_new_resolver("advmed.wandb_offline", wandb_offline)
    if not OmegaConf.has_resolver("advmed.job_dirname"):
        OmegaConf.register_new_resolver("advmed.job_dirname", job_dirname)
    if not OmegaConf.has_resolver("advmed.cuda_available"):
        OmegaConf.register_new_resolver("advmed.cuda_available", cuda_available)
    if not OmegaConf.has_resolver("advmed.if_gpu"):
        OmegaConf.register_new_resolver("advmed.if_gpu", if_gpu)
    if not OmegaConf.has_resolver("advmed.gpu_precision"):
        OmegaConf.register_new_resolver("advmed.gpu_precision", gpu_precision)
