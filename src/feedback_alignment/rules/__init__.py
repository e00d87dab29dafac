"""Learning rules: backpropagation, the direct-feedback family (fixed feedback in ``direct``, learned
feedback in ``learned``) and the layer-wise family."""

from feedback_alignment.rules.backprop import BP
from feedback_alignment.rules.base import LossScaleWarning, Rule
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
    "LossScaleWarning",
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
