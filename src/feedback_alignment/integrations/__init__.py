"""Trainer integrations: callbacks that log each layer's alignment with BP during training.

* :mod:`feedback_alignment.integrations.huggingface`: ``AlignmentCallback`` for
  ``transformers.Trainer`` (needs ``transformers`` and ``accelerate``);
* :mod:`feedback_alignment.integrations.lightning`: ``AlignmentCallback`` for
  ``lightning.pytorch.Trainer`` (needs ``lightning``).

Each is imported on its own (``from feedback_alignment.integrations.huggingface import
AlignmentCallback``); this package imports neither trainer library, and neither does
``import feedback_alignment``. Both callbacks measure :func:`feedback_alignment.alignment` on a
fixed probe batch every N optimizer steps, without touching the training step's ``.grad``,
buffers or random state, and log the scalars of :func:`metrics`.
"""

from feedback_alignment.integrations._probe import metrics

__all__ = ["metrics"]
