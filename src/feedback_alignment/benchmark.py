"""Deprecated location of :mod:`feedback_alignment.bench` (moved out of the package root; this
alias goes in the next release). ``import feedback_alignment.benchmark`` gives the
``feedback_alignment.bench`` package, with a ``FutureWarning``."""

import sys
import warnings

from feedback_alignment import bench

warnings.warn(
    "feedback_alignment.benchmark moved to feedback_alignment.bench; the old name goes in the "
    "next release",
    FutureWarning,
    stacklevel=2,
)
sys.modules[__name__] = bench
