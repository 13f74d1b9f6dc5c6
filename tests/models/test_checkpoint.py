"""load_module: any advmed module from its checkpoint alone, and clear refusals of the rest."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from advmed.models import AdvmedModule, ClassifierModule, load_module
from advmed.models.base import CLASS_KEY


def _save(tmp_path, module, name="m.ckpt", class_path="advmed.models.classifier.ClassifierModule"):
    path = tmp_path / name
    record = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    if class_path is not None:
        record[CLASS_KEY] = class_path
    torch.save(record, path)
    return path


def test_the_class_comes_from_the_checkpoint_and_the_weights_are_restored(tmp_path):
    module = ClassifierModule("resnet18", num_classes=2, class_names=["a", "b"])
    restored = load_module(_save(tmp_path, module))
    assert type(restored) is ClassifierModule and not restored.training
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(restored(x), module.eval()(x))


def test_checkpoints_written_before_class_paths_still_load_as_classifiers(tmp_path):
    module = ClassifierModule("resnet18", num_classes=3)
    assert isinstance(load_module(_save(tmp_path, module, class_path=None), ClassifierModule), ClassifierModule)


def test_a_class_outside_advmed_is_never_imported(tmp_path):
    path = _save(tmp_path, ClassifierModule("resnet18", num_classes=2), class_path="os.system")
    with pytest.raises(ValueError, match="names the module class 'os.system', which is not an advmed LightningModule"):
        load_module(path)


def test_a_checkpoint_of_another_module_class_is_refused(tmp_path):
    class Other(AdvmedModule):
        pass

    path = _save(tmp_path, ClassifierModule("resnet18", num_classes=2))
    with pytest.raises(ValueError, match="is not an advmed Other checkpoint: it holds a ClassifierModule"):
        load_module(path, Other)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"num_classes": 9}, "trained with num_classes=2 but the data config has num_classes=9"),
        ({"in_channels": 1}, "trained with in_channels=3 but the data config has in_channels=1"),
        ({"class_names": ["x", "y"]}, r"trained with class_names=\['a', 'b'\] but the data config has class_names=\['x', 'y'\]"),
    ],
)
def test_data_that_does_not_fit_is_refused_naming_the_file(tmp_path, data, match):
    path = _save(tmp_path, ClassifierModule("resnet18", num_classes=2, class_names=["a", "b"]))
    with pytest.raises(ValueError, match=f"checkpoint '.*m.ckpt': the model was {match}"):
        load_module(path, datamodule=SimpleNamespace(**data))
    load_module(path, datamodule=SimpleNamespace(num_classes=2, in_channels=3, class_names=("a", "b")))  # fits


def test_an_adversarially_trained_classifier_reloads_without_its_training_attack(tmp_path):
    import lightning as L

    from advmed.attacks import FGSM
    from advmed.models import ClassifierModule, load_module

    module = ClassifierModule("resnet18", num_classes=3, adv_fraction=0.5, train_attack=FGSM(eps=0.1))
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "adv.ckpt")
    restored = load_module(tmp_path / "adv.ckpt")
    assert restored.train_attack is None and restored.hparams.adv_fraction == 0.0
    for key, value in module.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key


def test_a_run_that_never_validates_still_keeps_its_final_weights_as_best(tmp_path):
    import lightning as L

    from advmed.callbacks import BestCheckpoint
    from tests.models.classifier_toy import data

    module = ClassifierModule("resnet18", num_classes=9, image_size=16, scheduler=None)
    best = BestCheckpoint(dirpath=str(tmp_path), filename="best", save_top_k=1)
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, accelerator="cpu", logger=False, callbacks=[best],
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.warns(UserWarning, match="val/acc was never computed"):
        trainer.fit(module, datamodule=data())
    assert best.best_model_path == str(tmp_path / "best.ckpt")
    restored = load_module(tmp_path / "best.ckpt")
    for key, value in module.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key
