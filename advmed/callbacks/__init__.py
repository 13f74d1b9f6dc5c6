"""Lightning callbacks that work with any logger."""

from advmed.callbacks.adversarial_examples import AdversarialExamplesCallback
from advmed.callbacks.robustness_table import RobustnessTableCallback

__all__ = ["AdversarialExamplesCallback", "RobustnessTableCallback"]
