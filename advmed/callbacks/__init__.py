"""Lightning callbacks that work with any logger."""

from advmed.callbacks.adversarial_examples import AdversarialExamplesCallback

__all__ = ["AdversarialExamplesCallback"]
