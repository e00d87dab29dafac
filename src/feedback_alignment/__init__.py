"""feedback-alignment: train PyTorch models without weight transport.

import feedback_alignment as fa
rule = fa.DFA(seed=0)
rule.apply(model)            # feedback points, cut graph, one projection of the error per step
loss.backward(); opt.step()  # a plain PyTorch loop
fa.alignment(model, rule, (x, y), F.cross_entropy)
"""

from feedback_alignment import models
from feedback_alignment.alignment import AlignmentMonitor, AlignmentReport, alignment
from feedback_alignment.points import FeedbackPoint, PlacementError, find_points
from feedback_alignment.rules import (
    BP,
    DFA,
    DRTP,
    FEEDBACK_BUFFER,
    DirectFeedback,
    Rule,
    Shallow,
    SignDFA,
)

__version__ = "0.1.0"

RULES: dict[str, type[Rule]] = {
    "bp": BP,
    "dfa": DFA,
    "sign-dfa": SignDFA,
    "drtp": DRTP,
    "shallow": Shallow,
}
"""Rules by their command-line name."""

__all__ = [
    "BP",
    "DFA",
    "DRTP",
    "FEEDBACK_BUFFER",
    "RULES",
    "AlignmentMonitor",
    "AlignmentReport",
    "DirectFeedback",
    "FeedbackPoint",
    "PlacementError",
    "Rule",
    "Shallow",
    "SignDFA",
    "alignment",
    "find_points",
    "models",
]
