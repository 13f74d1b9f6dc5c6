"""Multi-stage experiment pipelines that record what produced what and resume after a kill.

A paper pipeline such as Lockshin et al.'s (train a GAN, generate, train an attacker, write
adversarial copies, train and evaluate three classifiers) is a list of :class:`Stage` s, each one
command of the advmed entry points with the artefacts it reads and writes. :class:`Pipeline` runs
them in order and keeps ``<out>/stages/<name>.json`` for each: the command, the digest of every
input (a checkpoint's sha256; a dataset folder's manifest digest, after checking that every file it
lists is there) and of every output, and the seconds it took. On a rerun a stage whose record
matches its command, inputs and outputs is skipped; any other is run again, so after a kill the
same command finishes the work (dataset writers resume where they stopped; training restarts), and
a changed upstream artefact reruns everything downstream of it.

A dataset folder's completeness is checked by the ``verify`` callable the caller hands the
:class:`Pipeline` (the Lockshin pipeline passes :func:`advmed.data.writers.verify_copy`): the
runner sits below the datasets and does not know how they are written.

Hand-written: workflow engines (Snakemake, DVC, Luigi) would do this, but would add a dependency
and a second configuration language for a dozen commands that Hydra already configures.
"""

from __future__ import annotations

import json
import os
import runpy
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from advmed.utils.files import file_sha256, write_json, write_text

RECORD_FORMAT = "advmed.stage/1"
DEFAULT_HINT = "rerun the command that wrote it (it resumes)"

# ``verify(folder, hint)``: the digest of a finished dataset folder (at least ``manifest_sha256`` and
# ``num_items``), or an OSError / ValueError naming what is missing and ending with ``hint``.
FolderVerifier = Callable[[Path, str], Mapping[str, Any]]


class StageInputError(FileNotFoundError):
    """A stage's input is missing or incomplete: it names the artefact and the stage that writes it."""


@dataclass
class Stage:
    """One command of a pipeline.

    Args:
        name: short identifier (``classifier_real``); its record is ``<out>/stages/<name>.json``.
        argv: the command after the Python interpreter, e.g. ``["-m", "advmed.train", "experiment=..."]``.
        inputs / outputs: label -> path of a file (digest: sha256) or of a dataset folder written by
            :class:`~advmed.data.writers.DatasetWriter` (digest: its manifest, checked by the
            pipeline's ``verify``).
        workdir: the folder the command writes (a Hydra run dir or a dataset folder), inside the
            pipeline's output folder; None for a command that writes only its outputs, atomically.
        resumable: the command completes a killed run of itself in ``workdir`` (the dataset writers);
            otherwise ``workdir`` is cleared before the stage runs again.
    """

    name: str
    argv: list[str]
    workdir: Path | None
    inputs: dict[str, Path] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    resumable: bool = False

    @property
    def command(self) -> str:
        return shlex.join(["python", *self.argv])


def digest(path: Path, hint: str = DEFAULT_HINT, verify: FolderVerifier | None = None) -> dict[str, Any]:
    """A file's sha256, or a dataset folder's manifest digest and item count (checked complete by
    ``verify``; else its error, ending with ``hint``, how to complete it)."""
    if path.is_dir():
        if verify is None:  # a wiring mistake, not an incomplete artefact: not an OSError / ValueError
            raise TypeError(f"{path} is a folder: digesting a dataset folder needs a verify callable "
                            "(Pipeline(..., verify=advmed.data.writers.verify_copy))")
        found = verify(path, hint)
        return {"manifest_sha256": found["manifest_sha256"], "num_items": found["num_items"]}
    return {"sha256": file_sha256(path)}


def run_in_process(argv: Sequence[str]) -> int:
    """Run ``["-m", module, *args]`` or ``[script, *args]`` in this interpreter as ``python`` would
    (``__main__``, ``sys.argv`` set); return its exit code (exceptions propagate)."""
    module = argv[1] if argv[0] == "-m" else None
    args = list(argv[2:] if module else argv[1:])
    saved = sys.argv
    sys.argv = [module or argv[0], *args]
    try:
        if module:
            with warnings.catch_warnings():  # an entry point imported earlier (by the package) runs again as __main__, as intended
                warnings.filterwarnings("ignore", message=r".* found in sys\.modules after import of package", category=RuntimeWarning)
                runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved
    return 0


class Pipeline:
    """Run ``stages`` (in order) with their records in ``out_dir / "stages"``.

    Args:
        out_dir: the pipeline's output folder; every stage's ``workdir`` must lie inside it.
        stages: the stages, each after those whose outputs it reads.
        python: the interpreter of the stage commands (default: this one).
        env: extra environment variables of the stage commands.
        cli: how the user runs the pipeline (messages say ``<cli> --stages <name>``).
        in_process: run ``-m module`` and script stages in this interpreter (:mod:`runpy`) instead of
            a child process: the same code without a fresh interpreter's start-up (seconds per stage),
            for smoke tests. Their output is not copied to the stage log, and ``env`` is not applied.
        verify: checks a dataset folder input or output and returns its digest (see
            :data:`FolderVerifier`; advmed's datasets: :func:`advmed.data.writers.verify_copy`); None:
            the stages read and write files only.
    """

    def __init__(self, out_dir: str | Path, stages: Sequence[Stage], python: str = sys.executable,
                 env: Mapping[str, str] | None = None, cli: str = "the pipeline", in_process: bool = False,
                 verify: FolderVerifier | None = None) -> None:
        self.cli = cli
        self.in_process = in_process
        self.verify = verify
        self._file_digests: dict[tuple[str, int, int], dict[str, Any]] = {}
        self.out_dir = Path(out_dir).expanduser().resolve()
        self.stages = list(stages)
        self.python = python
        self.env = dict(env or {})
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        self.producer = {str(path): s.name for s in self.stages for path in s.outputs.values()}
        for stage in self.stages:
            if stage.workdir is not None and not stage.workdir.resolve().is_relative_to(self.out_dir):
                raise ValueError(f"stage {stage.name} writes {stage.workdir}, outside the pipeline's folder {self.out_dir}")

    # ------------------------------------------------------------------ records

    def record_path(self, stage: Stage) -> Path:
        return self.out_dir / "stages" / f"{stage.name}.json"

    def _record(self, stage: Stage) -> dict[str, Any] | None:
        try:
            record = json.loads(self.record_path(stage).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("format") == RECORD_FORMAT else None

    def input_digests(self, stage: Stage) -> dict[str, dict[str, Any]]:
        """The digests of the stage's inputs; a :class:`StageInputError` naming the missing or
        incomplete artefact and the stage that writes it."""
        digests = {}
        for label, path in stage.inputs.items():
            writer = self.producer.get(str(path))
            hint = (f"run stage {writer} first ({self.cli} --stages {writer}, or the whole pipeline)"
                    if writer else "point the stage at an existing, finished artefact")
            if not path.exists():
                raise StageInputError(f"stage {stage.name} needs {label} at {path}, which does not exist: {hint}")
            try:
                digests[label] = self._digest(path, hint)
            except (OSError, ValueError) as err:
                raise StageInputError(f"stage {stage.name}: its input {label} ({path}) is incomplete: {err}") from err
        return digests

    def output_digests(self, stage: Stage) -> dict[str, dict[str, Any]] | None:
        """The digests of the stage's outputs, or None when one is missing or incomplete."""
        try:
            return {label: self._digest(path) for label, path in stage.outputs.items()}
        except (OSError, ValueError):
            return None

    def _digest(self, path: Path, hint: str | None = None) -> dict[str, Any]:
        """:func:`digest`, remembered for a file of unchanged size and modification time: a checkpoint
        is one stage's output and later stages' input, and is hashed once per pipeline run."""
        if path.is_dir():
            return digest(path, hint or DEFAULT_HINT, self.verify)
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in self._file_digests:
            self._file_digests[key] = digest(path)
        return self._file_digests[key]

    def status(self, stage: Stage) -> str:
        """``done`` (the record matches), or why the stage must run."""
        record = self._record(stage)
        if record is None or not record.get("complete"):
            return "not run" if record is None else "interrupted"
        if record["command"] != stage.command:
            return "command changed"
        try:
            if record["inputs"] != self.input_digests(stage):
                return "inputs changed"
        except StageInputError:
            return "inputs missing"
        if record["outputs"] != self.output_digests(stage):
            return "outputs missing or changed"
        return "done"

    # ------------------------------------------------------------------ running

    def select(self, names: Iterable[str] | None) -> list[Stage]:
        """The stages called ``names`` in pipeline order (None or ``all``: every stage)."""
        wanted = None if names is None else [n for n in names if n != "all"] or None
        if wanted is None:
            return self.stages
        known = {s.name for s in self.stages}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}: the stages are {[s.name for s in self.stages]}")
        return [s for s in self.stages if s.name in wanted]

    def run(self, names: Iterable[str] | None = None, force: bool = False, dry_run: bool = False) -> list[dict[str, Any]]:
        """Run the selected stages that are not done (all of them with ``force``); with ``dry_run``
        only print each command and its status. Returns one summary row per stage and writes
        ``<out>/stages.csv`` (stage, status, seconds)."""
        rows = []
        for stage in self.select(names):
            status = self.status(stage)
            if dry_run:
                print(f"# {stage.name}: {status}\n{stage.command}\n", flush=True)
                rows.append({"stage": stage.name, "status": status, "seconds": None})
                continue
            if status == "done" and not force:
                print(f"[{stage.name}] done, skipped (record {self.record_path(stage)})", flush=True)
                record = self._record(stage) or {}
                rows.append({"stage": stage.name, "status": "skipped", "seconds": record.get("seconds")})
                continue
            print(f"[{stage.name}] running ({status}): {stage.command}", flush=True)
            seconds = self._run(stage)
            rows.append({"stage": stage.name, "status": "ran", "seconds": round(seconds, 1)})
            print(f"[{stage.name}] finished in {seconds:.0f} s", flush=True)
        if not dry_run:
            self._write_summary(rows)
        return rows

    def _run(self, stage: Stage) -> float:
        inputs = self.input_digests(stage)
        earlier = self._record(stage)
        same_command = earlier is not None and earlier["command"] == stage.command and earlier["inputs"] == inputs
        if stage.workdir is not None and stage.workdir.exists() and not (stage.resumable and same_command):
            shutil.rmtree(stage.workdir)  # another command's partial or stale work; inside out_dir (checked)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = {"format": RECORD_FORMAT, "stage": stage.name, "command": stage.command, "inputs": inputs,
                  "complete": False, "started": started}
        write_json(self.record_path(stage), record)
        log_path = self.out_dir / "logs" / f"{stage.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"\n# {started} {stage.command}\n")
            if self.in_process:
                log.write("(run in-process: the output went to the caller's stdout)\n")
                code = run_in_process(stage.argv)
            else:
                proc = subprocess.Popen([self.python, *stage.argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env={**os.environ, **self.env}, bufsize=1)
                for line in proc.stdout:
                    log.write(line)
                    sys.stdout.write(f"  {line}")
                code = proc.wait()
        seconds = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"stage {stage.name} failed (exit code {code}); its output is in {log_path}. "
                               f"Command: {stage.command}")
        outputs = self.output_digests(stage)
        if outputs is None:
            missing = [str(p) for p in stage.outputs.values() if not p.exists()]
            raise RuntimeError(f"stage {stage.name} exited cleanly but did not write all its outputs "
                               f"(missing or incomplete: {missing or list(map(str, stage.outputs.values()))}); see {log_path}")
        write_json(self.record_path(stage), {**record, "complete": True, "outputs": outputs,
                                             "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                             "seconds": round(seconds, 1)})
        return seconds

    def _write_summary(self, rows: list[dict[str, Any]]) -> None:
        lines = ["stage,status,seconds"] + [f"{r['stage']},{r['status']},{'' if r['seconds'] is None else r['seconds']}"
                                            for r in rows]
        write_text(self.out_dir / "stages.csv", "\n".join(lines) + "\n")

    def records(self) -> dict[str, dict[str, Any]]:
        """Every stage's record (stages never run are absent): the provenance of a final report."""
        return {s.name: r for s in self.stages if (r := self._record(s)) is not None}
