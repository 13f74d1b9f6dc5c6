"""Train any advmed LightningModule, then test its best checkpoint.

    python -m advmed.train experiment=demo
    python -m advmed.train -m experiment=demo attack.eps=0.02,0.05
    python -m advmed.train experiment=snap/universal model.classifier_ckpt=<run>/checkpoints/best.ckpt
    python -m advmed.train experiment=demo objective=trades objective.beta=6

Nothing here knows which model it fits (DESIGN contract 8): the model's own hooks do its
family's work (its test step reports clean and attacked metrics) and callbacks chosen in config
do the rest (image grids, tables, the PGD study of ``experiment=pgd_study/*``).
"""

from __future__ import annotations

import inspect

import hydra
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from advmed.attacks import build_attack
from advmed.objectives import Standard, build_objective
from advmed.studies.robustness_report import write_report
from advmed.utils.files import write_json
from advmed.utils.job_status import record_job_status
from advmed.utils.library_noise import quiet_library_noise
from advmed.utils.resolvers import register_resolvers
from advmed.utils.resume import resolve_ckpt_path
from advmed.utils.run import (
    build_trainer,
    check_required,
    data_name,
    finish_loggers,
    output_dir,
    plain,
    run_metrics,
    seed_run,
)

register_resolvers()
quiet_library_noise()


def build_model(cfg: DictConfig):
    """The model of ``cfg.model``, given the configured attacks (only those that are set) and the
    training objective (``cfg.objective``) when its constructor takes one."""
    attacks = {name: build_attack(cfg.get(key)) for name, key in (("train_attack", "train_attack"), ("test_attack", "attack"))}
    kwargs = {name: attack for name, attack in attacks.items() if attack is not None}
    objective = build_objective(cfg.get("objective"))
    if objective is not None:
        # A module that trains with an objective says so by taking one (the classifier, the segmenter);
        # the others (GANs, attackers) train with their own losses and are left alone under the default.
        if "objective" in inspect.signature(get_object(cfg.model._target_)).parameters:
            kwargs["objective"] = objective
        elif not isinstance(objective, Standard):
            raise ValueError(
                f"objective={objective.name}: {cfg.model._target_} trains with its own losses and takes no objective; "
                "drop the objective override (objectives train the classifier and the segmenter: model=resnet34, unet, ...)"
            )
    return instantiate(cfg.model, **kwargs, _recursive_=False)  # optimizer/scheduler stay configs; the module builds them


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test the best checkpoint, write metrics.json and report.md; return the metrics."""
    # Build everything the config describes before training, so that a typo costs no fit and
    # a failed run leaves no logger files behind.
    check_required(cfg)
    seed_run(cfg)
    datamodule = instantiate(cfg.data)
    model = build_model(cfg)
    model.check_datamodule(datamodule)
    model.set_nonfinite_loss(cfg.get("nonfinite_loss", "stop"))
    if cfg.get("compile"):
        # In place: the forward is compiled and the state_dict keys stay as they are.
        model.compile(**({} if cfg.compile is True else plain(cfg.compile)))
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir(cfg))
    trainer = build_trainer(cfg)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        metrics = run_metrics(trainer)
        if cfg.get("test"):
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
            metrics = run_metrics(trainer, metrics)
        # Every DDP rank runs this function; reports are written once.
        if trainer.is_global_zero:
            if cfg.get("test"):
                attack = model.test_attack
                notes = attack.report_notes(metrics) if attack is not None else []
                write_report(output_dir(cfg), metrics, plain(cfg.get("attack")), best, data_name(cfg), notes=notes)
            else:
                write_json(output_dir(cfg) / "metrics.json", {"metrics": metrics, "ckpt_path": best})
            print(f"best checkpoint: {best}")
        return metrics
    finally:
        finish_loggers(trainer.loggers)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@record_job_status
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
