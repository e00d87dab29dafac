"""Learning rules: backpropagation and the direct-feedback family."""

from feedback_alignment.rules.backprop import BP
from feedback_alignment.rules.base import Rule
from feedback_alignment.rules.direct import (
    DFA,
    DRTP,
    FEEDBACK_BUFFER,
    DirectFeedback,
    Shallow,
    SignDFA,
)

__all__ = ["BP", "DFA", "DRTP", "FEEDBACK_BUFFER", "DirectFeedback", "Rule", "Shallow", "SignDFA"]
