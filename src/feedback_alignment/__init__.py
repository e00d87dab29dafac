"""feedback-alignment: train PyTorch models without weight transport.

import feedback_alignment as fa
rule = fa.DFA(seed=0)        # or fa.FA(), fa.uSF(), fa.KolenPollack(), fa.BP(), ...
rule.apply(model)            # direct rules: feedback points, cut graph, one projection per step
loss.backward(); opt.step()  # a plain PyTorch loop
fa.alignment(model, rule, (x, y), F.cross_entropy)
rule.remove(model)
"""

from feedback_alignment import models
from feedback_alignment.alignment import (
    AlignmentMonitor,
    AlignmentReport,
    WeightAlignment,
    alignment,
    weight_alignment,
)
from feedback_alignment.checkpoints import feedback_keys, plain_state_dict
from feedback_alignment.optim import (
    batch_manhattan,
    constrain_weight_norm,
    remove_weight_norm_constraint,
)
from feedback_alignment.points import FeedbackPoint, PlacementError, find_points
from feedback_alignment.rules import (
    BP,
    DFA,
    DKP,
    DRTP,
    FA,
    FDFA,
    FEEDBACK_BUFFER,
    RULES,
    DirectFeedback,
    KolenPollack,
    LayerwiseFeedback,
    Rule,
    Shallow,
    SignDFA,
    SignSymmetry,
    UnsupportedLayerError,
    WeightMirror,
    brSF,
    frSF,
    make_rule,
    rule_class,
    uSF,
)
from feedback_alignment.rules.base import (
    BottleneckWarning,
    FeedbackResetWarning,
    LossScaleWarning,
    applied_rules,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    """``fa.data`` (the data registry) and ``fa.integrations`` (the trainer callbacks) are
    imported on first use: training needs neither."""
    if name in ("data", "integrations"):
        import importlib

        return importlib.import_module(f"feedback_alignment.{name}")
    raise AttributeError(f"module 'feedback_alignment' has no attribute {name!r}")


__all__ = [
    "BP",
    "DFA",
    "DKP",
    "DRTP",
    "FA",
    "FDFA",
    "FEEDBACK_BUFFER",
    "RULES",
    "AlignmentMonitor",
    "AlignmentReport",
    "BottleneckWarning",
    "DirectFeedback",
    "FeedbackPoint",
    "FeedbackResetWarning",
    "KolenPollack",
    "LayerwiseFeedback",
    "LossScaleWarning",
    "PlacementError",
    "Rule",
    "Shallow",
    "SignDFA",
    "SignSymmetry",
    "UnsupportedLayerError",
    "WeightAlignment",
    "WeightMirror",
    "alignment",
    "applied_rules",
    "batch_manhattan",
    "brSF",
    "constrain_weight_norm",
    "data",
    "feedback_keys",
    "find_points",
    "frSF",
    "make_rule",
    "models",
    "plain_state_dict",
    "remove_weight_norm_constraint",
    "rule_class",
    "uSF",
    "weight_alignment",
]
