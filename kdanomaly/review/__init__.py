"""Human review of an inspection run: the decision log (:mod:`.decisions`) and a local review page
(:mod:`.server`, ``kdanomaly review RUN``)."""

from .decisions import DECISION_KINDS, DECISIONS_FILE, Decision, append_decision, read_decisions

__all__ = ["DECISIONS_FILE", "DECISION_KINDS", "Decision", "append_decision", "read_decisions"]
