"""Lightning callbacks that work with any logger."""

from advmed.callbacks.adversarial_examples import AdversarialExamplesCallback
from advmed.callbacks.best_checkpoint import BestCheckpoint
from advmed.callbacks.class_samples import ClassSamplesCallback
from advmed.callbacks.fid_history import FidHistoryCallback
from advmed.callbacks.last_checkpoint import LastCheckpoint
from advmed.callbacks.metric_history import MetricHistoryCallback
from advmed.callbacks.overfitting_guard import CatastrophicOverfittingGuard
from advmed.callbacks.pgd_study import PGDStudyCallback
from advmed.callbacks.random_state import RandomStateCallback
from advmed.callbacks.robustness_table import RobustnessTableCallback

__all__ = ["AdversarialExamplesCallback", "BestCheckpoint", "CatastrophicOverfittingGuard", "ClassSamplesCallback",
           "FidHistoryCallback", "LastCheckpoint", "MetricHistoryCallback", "PGDStudyCallback", "RandomStateCallback",
           "RobustnessTableCallback"]
