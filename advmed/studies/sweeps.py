"""Reading the jobs of a Hydra multirun back, for scripts that aggregate a sweep into one table."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def find_jobs(sweep_dir: Path) -> list[Path]:
    """Job directories of a Hydra multirun: those with ``.hydra/overrides.yaml`` (at any depth,
    since an override value holding '/' nests the job's subdirectory)."""
    return sorted(p.parent.parent for p in Path(sweep_dir).rglob("overrides.yaml") if p.parent.name == ".hydra")


def job_override(job_dir: Path, key: str) -> str:
    """The value ``key`` was given in the job's overrides (``key=value``, ``+key=value``, ...)."""
    for override in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"):
        name, _, value = str(override).partition("=")
        if name.lstrip("+~") == key:
            return value
    raise ValueError(f"job {job_dir} has no override of {key}: was it swept (e.g. -m {key}=0.1,0.5,1.0)?")


def sort_key(value: str) -> tuple:
    """Numbers in numeric order, then other values alphabetically."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)
