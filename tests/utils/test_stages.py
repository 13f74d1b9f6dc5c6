"""advmed.utils.stages: a pipeline of commands that records what produced what, skips finished
stages, reruns what a changed input or command makes stale, and names the missing input's stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from advmed.data.copy_layouts import ClassFolderLayout
from advmed.data.writers import DatasetWriter, verify_copy
from advmed.utils.stages import Pipeline, Stage, StageInputError


def copy_stage(name: str, out: Path, source: Path | None, text: str, runs: Path) -> Stage:
    """A stage that writes ``<out>/<name>/result.txt`` = text + the source's content, and counts its runs."""
    result = out / name / "result.txt"
    code = (f"import pathlib; r = pathlib.Path({str(result)!r}); r.parent.mkdir(parents=True, exist_ok=True); "
            f"src = {str(source) if source else ''!r}; "
            f"r.write_text({text!r} + (pathlib.Path(src).read_text() if src else '')); "
            f"c = pathlib.Path({str(runs)!r}); c.write_text(c.read_text() + {name!r} + ' ' if c.exists() else {name!r} + ' ')")
    return Stage(name, ["-c", code], out / name, {"source": source} if source else {}, {"result": result})


def two_stages(out: Path, runs: Path, first_text: str = "a", second_text: str = "b") -> list[Stage]:
    first = copy_stage("first", out, None, first_text, runs)
    return [first, copy_stage("second", out, first.outputs["result"], second_text, runs)]


def test_a_finished_pipeline_is_skipped_and_its_records_name_the_digests(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs.txt"
    pipeline = Pipeline(out, two_stages(out, runs))
    rows = pipeline.run()
    assert [r["status"] for r in rows] == ["ran", "ran"] and (out / "second" / "result.txt").read_text() == "ba"
    record = json.loads((out / "stages" / "second.json").read_text())
    first = json.loads((out / "stages" / "first.json").read_text())
    assert record["complete"] and record["inputs"]["source"] == first["outputs"]["result"]  # what first wrote, second read
    assert len(record["inputs"]["source"]["sha256"]) == 64 and record["seconds"] >= 0
    assert (out / "stages.csv").read_text().splitlines()[0] == "stage,status,seconds"
    rows = Pipeline(out, two_stages(out, runs)).run()
    assert [r["status"] for r in rows] == ["skipped", "skipped"] and runs.read_text().split() == ["first", "second"]


def test_a_changed_command_reruns_its_stage_and_everything_downstream(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs.txt"
    Pipeline(out, two_stages(out, runs)).run()
    rows = Pipeline(out, two_stages(out, runs, first_text="A")).run()
    assert [r["status"] for r in rows] == ["ran", "ran"]  # second: its input's digest changed
    assert (out / "second" / "result.txt").read_text() == "bA"
    rows = Pipeline(out, two_stages(out, runs, first_text="A", second_text="B")).run()
    assert [r["status"] for r in rows] == ["skipped", "ran"]


def test_a_deleted_or_edited_output_reruns_the_stage(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs.txt"
    Pipeline(out, two_stages(out, runs)).run()
    (out / "second" / "result.txt").write_text("tampered")
    assert Pipeline(out, two_stages(out, runs)).status(two_stages(out, runs)[1]) == "outputs missing or changed"
    rows = Pipeline(out, two_stages(out, runs)).run()
    assert [r["status"] for r in rows] == ["skipped", "ran"] and (out / "second" / "result.txt").read_text() == "ba"


def test_running_one_stage_without_its_input_names_the_stage_that_writes_it(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs.txt"
    pipeline = Pipeline(out, two_stages(out, runs), cli="python pipeline.py")
    with pytest.raises(StageInputError, match=r"stage second needs source at .*first/result\.txt, which does not exist: "
                                              r"run stage first first \(python pipeline\.py --stages first"):
        pipeline.run(["second"])
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['third'\]: the stages are \['first', 'second'\]"):
        pipeline.run(["third"])


def test_a_failing_command_stops_the_pipeline_with_its_log_and_leaves_an_unfinished_record(tmp_path):
    out = tmp_path / "out"
    stage = Stage("broken", ["-c", "import sys; print('bad things'); sys.exit(3)"], out / "broken", {},
                  {"result": out / "broken" / "x"})
    pipeline = Pipeline(out, [stage])
    with pytest.raises(RuntimeError, match=r"stage broken failed \(exit code 3\); its output is in .*logs/broken\.log"):
        pipeline.run()
    assert "bad things" in (out / "logs" / "broken.log").read_text()
    assert pipeline.status(stage) == "interrupted"
    silent = Stage("silent", ["-c", "pass"], out / "silent", {}, {"result": out / "silent" / "x"})
    with pytest.raises(RuntimeError, match=r"stage silent exited cleanly but did not write all its outputs"):
        Pipeline(out, [silent]).run()


def _dataset_copy(root: Path, n: int = 6) -> Path:
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(n, 3, 8, 8), torch.arange(n) % 2)
    data.targets = torch.arange(n) % 2  # what the class-folder layout files items by
    writer = DatasetWriter(root, ClassFolderLayout(["a", "b"]), {"test": 1})
    writer.write(data, lambda x, y: x, names=[f"item_{i}" for i in range(n)], batch_size=2, seed=0)
    return root


def test_a_dataset_input_with_files_missing_from_its_manifest_is_refused_with_the_fix(tmp_path):
    out = tmp_path / "out"
    dataset = _dataset_copy(out / "copy")
    reader = Stage("reader", ["-c", f"open({str(out / 'r.txt')!r}, 'w').write('ok')"], None, {"copy": dataset},
                   {"result": out / "r.txt"})
    pipeline = Pipeline(out, [reader], verify=verify_copy)
    pipeline.run()
    record = json.loads((out / "stages" / "reader.json").read_text())
    assert record["inputs"]["copy"]["num_items"] == 6 and len(record["inputs"]["copy"]["manifest_sha256"]) == 64
    (dataset / "b" / "item_3.png").unlink()
    assert pipeline.status(reader) == "inputs missing"
    with pytest.raises(StageInputError, match=r"stage reader: its input copy .* is incomplete: .*manifest\.csv lists 6 "
                                              r"files but 1 are missing or empty \(first: \['b/item_3\.png'\]\): point the stage at "
                                              r"an existing, finished artefact"):
        pipeline.run(force=True)


def test_a_resumable_stage_keeps_the_work_of_its_killed_run_and_another_starts_afresh(tmp_path):
    out, flag = tmp_path / "out", tmp_path / "fail"

    def stage(name: str, resumable: bool) -> Stage:
        code = (f"import pathlib, sys; d = pathlib.Path({str(out / name)!r}); d.mkdir(parents=True, exist_ok=True); "
                "(d / ('run_' + str(len(list(d.glob('run_*')))))).write_text('work'); "
                f"sys.exit(1) if pathlib.Path({str(flag)!r}).exists() else None; "
                "(d / 'done').write_text(' '.join(sorted(p.name for p in d.glob('run_*'))))")
        return Stage(name, ["-c", code], out / name, {}, {"done": out / name / "done"}, resumable=resumable)

    for name, resumable in (("keep", True), ("clear", False)):
        flag.write_text("die")
        with pytest.raises(RuntimeError, match=f"stage {name} failed"):
            Pipeline(out, [stage(name, resumable)]).run()  # the killed run left run_0
        flag.unlink()
        Pipeline(out, [stage(name, resumable)]).run()
    assert (out / "keep" / "done").read_text() == "run_0 run_1" and (out / "clear" / "done").read_text() == "run_0"
    with pytest.raises(ValueError, match="outside the pipeline's folder"):
        Pipeline(out, [Stage("away", ["-c", "pass"], tmp_path / "elsewhere")])


def test_a_dataset_folder_without_a_verifier_is_a_wiring_error_that_names_the_fix(tmp_path):
    out = tmp_path / "out"
    dataset = _dataset_copy(out / "copy")
    reader = Stage("reader", ["-c", "pass"], None, {"copy": dataset}, {})
    with pytest.raises(TypeError, match=r"copy is a folder: digesting a dataset folder needs a verify callable"):
        Pipeline(out, [reader]).run()
