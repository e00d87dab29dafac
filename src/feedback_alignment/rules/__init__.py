"""Learning rules: backpropagation, the direct-feedback family (fixed feedback in ``direct``, learned
feedback in ``learned``) and the layer-wise family."""

from feedback_alignment.rules.backprop import BP
from feedback_alignment.rules.base import LossScaleWarning, Rule  # noqa: F401 (see below)
from feedback_alignment.rules.direct import (
    DFA,
    DRTP,
    FEEDBACK_BUFFER,
    DirectFeedback,
    Shallow,
    SignDFA,
)
from feedback_alignment.rules.layerwise import (
    FA,
    KolenPollack,
    LayerwiseFeedback,
    SignSymmetry,
    UnsupportedLayerError,
    WeightMirror,
    brSF,
    frSF,
    uSF,
)
from feedback_alignment.rules.learned import DKP, FDFA
from feedback_alignment.rules.registry import RULES, make_rule, rule_class

# LossScaleWarning is importable as fa.rules.LossScaleWarning, to filter it; it is not in __all__,
# since the API pages document the rules' names under fa, which does not export it yet.
__all__ = [
    "BP",
    "DFA",
    "DKP",
    "DRTP",
    "FA",
    "FDFA",
    "FEEDBACK_BUFFER",
    "RULES",
    "DirectFeedback",
    "KolenPollack",
    "LayerwiseFeedback",
    "Rule",
    "Shallow",
    "SignDFA",
    "SignSymmetry",
    "UnsupportedLayerError",
    "WeightMirror",
    "brSF",
    "frSF",
    "make_rule",
    "rule_class",
    "uSF",
]
