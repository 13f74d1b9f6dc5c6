"""Exactly the library messages that say nothing to a user are silenced; everything else stays."""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch.loggers import WandbLogger

from advmed.utils.library_noise import drop_unset_wandb_anonymous, quiet_library_noise

TIP = "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](...)"
PYTREE = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()` instead."


def test_lightning_tips_are_dropped_and_other_info_lines_kept(caplog):
    quiet_library_noise()
    quiet_library_noise()  # idempotent: one filter, not two
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert sum(type(f).__name__ == "_DropLightningTips" for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        logger.info(TIP)
        logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


def test_only_the_pytree_future_warning_is_ignored():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_library_noise()
        warnings.warn(PYTREE, FutureWarning, stacklevel=1)
        warnings.warn("some other future change", FutureWarning, stacklevel=1)
        warnings.warn(PYTREE, UserWarning, stacklevel=1)  # same text, other category: not ours to hide
    assert [(w.category, str(w.message)) for w in caught] == [
        (FutureWarning, "some other future change"), (UserWarning, PYTREE)
    ]


def test_wandb_anonymous_is_dropped_only_when_unset(tmp_path):
    unset = WandbLogger(save_dir=str(tmp_path), offline=True)
    assert "anonymous" in unset._wandb_init  # Lightning passes anonymous=None to wandb.init: W&B warns
    drop_unset_wandb_anonymous(unset)
    assert "anonymous" not in unset._wandb_init
    chosen = WandbLogger(save_dir=str(tmp_path), offline=True, anonymous=True)
    drop_unset_wandb_anonymous(chosen)
    assert chosen._wandb_init["anonymous"] == "allow"
