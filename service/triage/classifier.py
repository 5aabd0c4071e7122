"""The learned second opinion — pure: no I/O, no scikit-learn at run time.

A small statistical classifier (character 3–5-grams and word 1–2-grams of the normalised reply, a
multinomial logistic regression over emergency / urgent / low) trained by
``bench/train_triage_classifier.py`` with scikit-learn on the labelled sets except the ones kept for
measuring it. Its weights are data (``templates/triage/engine/classifier.json``); here they are only
read, in pure Python: a reply has a few hundred features, so a dictionary lookup each beats any matrix.

It may only RAISE a severity, and only when confident: the probability of emergency-or-urgent at or
above ``urgent_at`` lifts routine or none to urgent; if ``highest`` allows it, that of emergency at or
above ``emergency_at`` lifts anything to emergency (by default it stops at urgent: a clinician calls the
patient today, nobody is told to call 911 on the strength of n-grams). It never lowers what the rules or
the red-flag screen decided. By default (``only_when_nothing_recognised``) it speaks only when they
recognised no clinical finding at all: where they read one ("my face is swollen and my lips are dry",
"I don't have a fever") they also read its context, which n-grams cannot; its use is the wording the
lexicons lack. It is switched on (``engine/classifier.toml``) only if it was measured to help on a set it
had not seen (docs/triage.md).

``features`` is the one definition of the features, used by the training script too, so training and
run time cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.triage.schema import CLASSIFIER_CLASSES, validate_classifier

CHAR_SIZES = (3, 4, 5)


def features(norms: Iterable[str], ignore: frozenset[str] = frozenset()) -> set[str]:
    """The features of a reply, from its normalised tokens (``Normaliser.tokenise``): words and pairs of
    words ("w:", "b:"), and character 3–5-grams of the words joined by spaces ("c:"). Numbers, and the
    words the normaliser puts for them (``ignore``: "hightemp" for a "39"), are left out: beside no word of
    the lexicons they are a price or an age far more often than a fever."""
    words = [n for n in norms if n and n[0].isalpha() and n not in ignore]
    out = {"w:" + w for w in words}
    out.update("b:" + a + " " + b for a, b in zip(words, words[1:], strict=False))
    text = " " + " ".join(words) + " "
    for size in CHAR_SIZES:
        out.update("c:" + text[i : i + size] for i in range(len(text) - size + 1))
    return out


@dataclass(frozen=True, eq=False)
class Classifier:
    weights: Mapping[str, tuple[float, float, float]]
    bias: tuple[float, float, float]
    urgent_at: float
    emergency_at: float
    concept: str
    enabled: bool
    only_when_nothing_recognised: bool = True
    highest: str = "urgent"
    ignore: frozenset[str] = frozenset()

    def probabilities(self, norms: Sequence[str]) -> dict[str, float]:
        """P(emergency), P(urgent), P(low) for the reply's tokens."""
        rows = [row for f in features(norms, self.ignore) if (row := self.weights.get(f)) is not None]
        scale = 1.0 / math.sqrt(len(rows)) if rows else 0.0  # binary features, L2-normalised
        scores = [b + scale * sum(row[k] for row in rows) for k, b in enumerate(self.bias)]
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        total = sum(exps)
        return {name: e / total for name, e in zip(CLASSIFIER_CLASSES, exps, strict=True)}

    def opinion(self, norms: Sequence[str]) -> tuple[str, float] | None:
        """The severity it is confident of, if emergency or urgent, with the probability behind it."""
        p = self.probabilities(norms)
        if self.highest == "emergency" and p["emergency"] >= self.emergency_at:
            return "emergency", p["emergency"]
        raised = p["emergency"] + p["urgent"]
        if raised >= self.urgent_at:
            return "urgent", raised
        return None


def compile_classifier(settings: Mapping[str, Any], weights: Mapping[str, Any]) -> Classifier:
    """Validate (``schema``) the settings and the weights, and build the run-time model."""
    parsed = validate_classifier(settings, weights)
    thresholds = weights["thresholds"]
    return Classifier(
        weights={f: (float(r[0]), float(r[1]), float(r[2])) for f, r in weights["weights"].items()},
        bias=(float(weights["bias"][0]), float(weights["bias"][1]), float(weights["bias"][2])),
        urgent_at=parsed.urgent_at if parsed.urgent_at is not None else float(thresholds["urgent"]),
        emergency_at=parsed.emergency_at
        if parsed.emergency_at is not None
        else float(thresholds["emergency"]),
        concept=parsed.concept,
        enabled=parsed.enabled,
        only_when_nothing_recognised=parsed.only_when_nothing_recognised,
        highest=parsed.highest,
        ignore=frozenset(weights["features"].get("ignore", [])),
    )
