"""status.json: the record each Hydra job keeps of whether it is running, completed or failed."""

import json

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from advmed.utils.job_status import error_line, job_status, read_status, record_job_status
from tests.entrypoints.conftest import TINY, compose_config


def _status(run_dir):
    return json.loads((run_dir / "status.json").read_text())


def test_decorated_main_records_running_then_completed_with_the_returned_metric(tmp_path):
    cfg = compose_config("train", [*TINY, "attack.eps=0.05"], tmp_path)
    seen_while_running = {}

    @record_job_status
    def main(cfg):
        seen_while_running.update(_status(tmp_path))
        return 0.75

    assert main(cfg) == 0.75
    assert seen_while_running["status"] == "running"
    assert seen_while_running["overrides"] == [*TINY, "attack.eps=0.05"]
    assert seen_while_running["host"] and seen_while_running["pid"] > 0 and seen_while_running["started"]
    assert "ended" not in seen_while_running
    record = _status(tmp_path)
    assert record["status"] == "completed" and record["result"] == 0.75
    assert record["ended"] >= record["started"] and record["attempt"] == 1


def test_failed_job_records_the_error_line_and_traceback_and_still_raises(tmp_path):
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}})

    @record_job_status
    def main(cfg):
        raise ValueError("eps must be in [0, 1], got 1.5\n(did you mean 1.5/255?)")

    with pytest.raises(ValueError, match="got 1.5"):
        main(cfg)
    record = read_status(tmp_path)
    assert record["status"] == "failed" and record["ended"]
    assert record["error"] == "ValueError: eps must be in [0, 1], got 1.5 (did you mean 1.5/255?)"
    assert record["error_type"] == "ValueError"
    assert any("raise ValueError" in line for line in record["traceback"])


def test_a_requeued_job_overwrites_running_and_counts_the_attempt(tmp_path):
    with pytest.raises(KeyboardInterrupt):  # the first attempt is interrupted...
        with job_status(tmp_path, ["attack.eps=0.02"]):
            raise KeyboardInterrupt
    assert read_status(tmp_path)["status"] == "failed"
    (tmp_path / "status.json").write_text(json.dumps({"status": "running", "attempt": 2}))  # ...then killed
    with job_status(tmp_path, ["attack.eps=0.02"]) as status:
        assert read_status(tmp_path)["status"] == "running"
        status.result = {"test/acc": 0.5}
    record = read_status(tmp_path)
    assert record["status"] == "completed" and record["attempt"] == 3 and record["previous_status"] == "running"
    assert record["result"] == {"test/acc": 0.5}


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    with job_status(tmp_path):
        pass
    assert not (tmp_path / "status.json").exists()


def test_error_line_keeps_the_cause_a_wrapper_puts_on_the_next_line():
    wrapped = RuntimeError("Error in call to target 'advmed.attacks.fgsm.FGSM':\nValueError('got 1.5')\nfull_key: attack")
    assert error_line(wrapped) == "RuntimeError: Error in call to target 'advmed.attacks.fgsm.FGSM': ValueError('got 1.5') full_key: attack"
    assert error_line(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert len(error_line(ValueError("x" * 5000))) == 500


def test_a_broken_status_file_is_named(tmp_path):
    (tmp_path / "status.json").write_text("{not json")
    with pytest.raises(ValueError, match="status.json is not valid JSON"):
        read_status(tmp_path)
    (tmp_path / "status.json").write_text('{"status": "paused"}')
    with pytest.raises(ValueError, match="holds no job status"):
        read_status(tmp_path)


def test_no_run_directory_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)

    @record_job_status
    def main(cfg):
        return None

    with pytest.raises(ValueError, match="no paths.output_dir and no Hydra job"):
        main(OmegaConf.create({"seed": 1}))
