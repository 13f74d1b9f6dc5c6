import pytest
import torch

from advmed.models import ClassifierModule
from tests.entrypoints.conftest import TINY, compose_config

DATA = TINY  # the data the session checkpoint was trained on


def test_pgd_evaluation_report(trained_run, tmp_path):
    from advmed.evaluate import evaluate

    ckpt = trained_run / "checkpoints" / "best.ckpt"
    cfg = compose_config("evaluate", [*DATA, f"ckpt_path={ckpt}", "attack=pgd", "attack.eps=0.05", "attack.steps=5"], tmp_path)
    metrics = evaluate(cfg)
    assert metrics["test/adv_acc"] < metrics["test/acc"]
    assert metrics["test/linf"] <= 0.05 + 1e-6
    report = (tmp_path / "report.md").read_text()
    assert "PGD(" in report and "eps=0.05" in report and "adversarial_examples.png" in report
    assert (tmp_path / "adversarial_examples.png").is_file()


def test_autoattack_reports_each_attack_and_the_worst_case(trained_run, tmp_path):
    """`attack=autoattack` (iterations and queries cut for the test): the robust accuracy after
    each attack of the ensemble, never rising, the last one the report's adversarial accuracy,
    and the notes on the attack in report.md and metrics.json."""
    import json

    from advmed.evaluate import evaluate

    ckpt = trained_run / "checkpoints" / "best.ckpt"
    cfg = compose_config("evaluate", [*DATA, f"ckpt_path={ckpt}", "attack=autoattack", "attack.eps=0.05",
                                      "attack.steps=3", "attack.n_queries=20"], tmp_path)
    metrics = evaluate(cfg)
    after = [metrics[f"test/acc_after_{name}"] for name in ("apgd_ce", "apgd_t", "fab_t", "square")]
    assert metrics["test/acc"] >= after[0] and after == sorted(after, reverse=True)
    assert after[-1] == pytest.approx(metrics["test/adv_acc"])
    report = (tmp_path / "report.md").read_text()
    assert "AutoAttack(" in report and "test/acc_after_fab_t" in report
    notes = json.loads((tmp_path / "metrics.json").read_text())["notes"]
    assert notes and "target class(es) per image" in notes[0] and notes[0] in report


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from advmed.evaluate import evaluate

    cfg = compose_config("evaluate", [*DATA, f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.ckpt' does not exist"):
        evaluate(cfg)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    from advmed.evaluate import evaluate

    path = tmp_path / "gan.ckpt"
    torch.save({"state_dict": {"generator.w": torch.zeros(1)}, "hyper_parameters": {"latent_dim": 512}}, path)
    cfg = compose_config("evaluate", [*DATA, f"ckpt_path={path}"], tmp_path)
    with pytest.raises(ValueError, match="gan.ckpt' is not an advmed LightningModule checkpoint"):
        evaluate(cfg)


def test_checkpoint_holding_a_bare_tensor_is_refused(tmp_path):
    from advmed.models import load_classifier

    path = tmp_path / "weights.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match="not an advmed ClassifierModule checkpoint"):
        load_classifier(path)


def test_corrupt_checkpoint_is_refused(tmp_path):
    from advmed.models import read_checkpoint

    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(path)


def test_num_classes_mismatch_is_refused(tmp_path):
    from advmed.models import load_classifier

    module = ClassifierModule("resnet18", num_classes=3)
    path = tmp_path / "three.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    with pytest.raises(ValueError, match="num_classes=3 but the data config has num_classes=9"):
        load_classifier(path, num_classes=9)
