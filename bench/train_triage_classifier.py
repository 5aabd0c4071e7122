"""Train triage's learned second opinion and write its weights as data.

    .venv/bin/pip install -e '.[train]'      # scikit-learn: for training only, never at run time
    .venv/bin/python bench/train_triage_classifier.py [--out templates/triage/engine/classifier.json]

A multinomial logistic regression over emergency / urgent / low (routine, none, keyword) on the features
of ``service.triage.classifier.features`` (character 3-5-grams and word 1-2-grams of the normalised reply,
binary, L2-normalised), trained on the labelled sets listed in TRAINING_SETS. It is never trained on
``tests/data/triage_set_b.jsonl`` (kept to measure it: docs/triage.md) nor on
``bench/data/triage_untouched.jsonl`` (the final honest measure, which nothing here opens).

The regularisation strength is chosen by stratified 5-fold cross-validation (log loss); the raise
thresholds from the out-of-fold probabilities: ``urgent`` is the lowest probability of emergency-or-urgent
at which at most URGENT_FALSE_RAISE of the low replies would be raised, ``emergency`` the lowest probability
of emergency at which at most EMERGENCY_FALSE_RAISE of the other replies would be. Everything the run
measured is written beside the weights ("training"), so the numbers in docs/triage.md can be checked.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from scipy.sparse import csr_matrix  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from bench.triage_eval import read_rows  # noqa: E402
from service.triage.classifier import CHAR_SIZES, features  # noqa: E402
from service.triage.evaluation import gold_label  # noqa: E402
from service.triage.loader import load_lexicon  # noqa: E402
from service.triage.schema import CLASSIFIER_CLASSES, CLASSIFIER_FORMAT  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TRAINING_SETS = [
    "triage_dev.jsonl",
    "triage_holdout.jsonl",
    "triage_holdout2.jsonl",
    "triage_holdout3.jsonl",
    "triage_set_a.jsonl",
]
# Never trained on: set B measures the classifier; the untouched set is the lead's final measure.
NEVER = ("triage_set_b.jsonl", "triage_untouched.jsonl")
MIN_DOCUMENTS = 2  # a feature seen in one reply only is noise, and weight to ship
C_GRID = (1.0, 4.0, 16.0, 32.0, 64.0, 128.0)
URGENT_FALSE_RAISE = 0.02
EMERGENCY_FALSE_RAISE = 0.01
SEED = 20261201


def _class(row: dict) -> int:
    label = gold_label(row)
    return (
        CLASSIFIER_CLASSES.index(label)
        if label in ("emergency", "urgent")
        else CLASSIFIER_CLASSES.index("low")
    )


def _number_words() -> frozenset[str]:
    """The words the normaliser puts for numbers ("hightemp" for a "39"), left out of the features."""
    normaliser = load_lexicon().normaliser
    words = (
        normaliser.high_temperature_word,
        normaliser.temperature_reading_word,
        normaliser.fast_pulse_word,
    )
    return frozenset(w for w in words if w)


def _documents(rows: list[dict]) -> list[set[str]]:
    lexicon = load_lexicon()
    ignore = _number_words()
    docs = []
    for row in rows:
        body = lexicon.strip_quoted(unicodedata.normalize("NFC", row["text"]))
        docs.append(features((t.norm for t in lexicon.tokenise(body)), ignore))
    return docs


def _matrix(docs: list[set[str]], vocabulary: dict[str, int]) -> csr_matrix:
    indptr, indices, values = [0], [], []
    for doc in docs:
        present = sorted(vocabulary[f] for f in doc if f in vocabulary)
        scale = 1.0 / np.sqrt(len(present)) if present else 0.0
        indices.extend(present)
        values.extend([scale] * len(present))
        indptr.append(len(indices))
    return csr_matrix((values, indices, indptr), shape=(len(docs), len(vocabulary)))


def _vocabulary(docs: list[set[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in docs:
        for feature in doc:
            counts[feature] = counts.get(feature, 0) + 1
    kept = sorted(f for f, n in counts.items() if n >= MIN_DOCUMENTS)
    return {f: i for i, f in enumerate(kept)}


def _out_of_fold(docs: list[set[str]], y: np.ndarray, c: float) -> np.ndarray:
    probabilities = np.zeros((len(docs), len(CLASSIFIER_CLASSES)))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    for train, test in folds.split(np.zeros(len(y)), y):
        vocabulary = _vocabulary([docs[i] for i in train])
        model = LogisticRegression(C=c, max_iter=5000)
        model.fit(_matrix([docs[i] for i in train], vocabulary), y[train])
        probabilities[test] = model.predict_proba(_matrix([docs[i] for i in test], vocabulary))
    return probabilities


def _threshold(scores: np.ndarray, negatives: np.ndarray, budget: float) -> float:
    """The lowest threshold (on a 0.01 grid) at which at most ``budget`` of the negatives score above."""
    for t in np.arange(0.30, 1.00, 0.01):
        if np.mean(scores[negatives] >= t) <= budget:
            return round(float(t), 2)
    return 0.99


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "templates" / "triage" / "engine" / "classifier.json"
    )
    args = parser.parse_args(argv)

    assert not set(TRAINING_SETS) & set(NEVER), "a measuring set is in the training sets"
    rows: list[dict] = []
    sources = []
    for name in TRAINING_SETS:
        path = DATA / name
        part = read_rows(path)
        rows.extend(part)
        sources.append(
            {
                "file": f"tests/data/{name}",
                "rows": len(part),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        )
    docs = _documents(rows)
    y = np.array([_class(r) for r in rows])

    chosen, best, by_c = C_GRID[0], float("inf"), {}
    for c in C_GRID:
        oof = _out_of_fold(docs, y, c)
        loss = log_loss(y, oof, labels=list(range(len(CLASSIFIER_CLASSES))))
        by_c[str(c)] = round(float(loss), 4)
        print(f"C={c:<5} out-of-fold log loss {loss:.4f}")
        if loss < best:
            chosen, best = c, loss
    oof = _out_of_fold(docs, y, chosen)
    emergency, urgent, low = (CLASSIFIER_CLASSES.index(k) for k in ("emergency", "urgent", "low"))
    raised = oof[:, emergency] + oof[:, urgent]
    urgent_at = _threshold(raised, y == low, URGENT_FALSE_RAISE)
    emergency_at = _threshold(oof[:, emergency], y != emergency, EMERGENCY_FALSE_RAISE)
    alarming = (y == emergency) | (y == urgent)
    cv = {
        "C": chosen,
        "log_loss_by_C": by_c,
        "accuracy": round(float(np.mean(oof.argmax(axis=1) == y)), 4),
        "low_raised_at_urgent_threshold": round(float(np.mean(raised[y == low] >= urgent_at)), 4),
        "alarming_caught_at_urgent_threshold": round(float(np.mean(raised[alarming] >= urgent_at)), 4),
        "emergency_caught_at_emergency_threshold": round(
            float(np.mean(oof[y == emergency, emergency] >= emergency_at)), 4
        ),
        "others_raised_to_emergency": round(
            float(np.mean(oof[y != emergency, emergency] >= emergency_at)), 4
        ),
    }
    print(
        f"chosen C={chosen}; thresholds urgent {urgent_at}, emergency {emergency_at}; cross-validation {cv}"
    )

    vocabulary = _vocabulary(docs)
    model = LogisticRegression(C=chosen, max_iter=5000)
    model.fit(_matrix(docs, vocabulary), y)
    assert list(model.classes_) == list(range(len(CLASSIFIER_CLASSES)))
    coef = model.coef_  # classes × features
    weights = {f: [round(float(v), 4) for v in coef[:, i]] for f, i in vocabulary.items()}
    document = {
        "format": CLASSIFIER_FORMAT,
        "classes": list(CLASSIFIER_CLASSES),
        "features": {
            "words": [1, 2],
            "chars": [min(CHAR_SIZES), max(CHAR_SIZES)],
            "binary": True,
            "norm": "l2",
            "ignore": sorted(_number_words()),
        },
        "bias": [round(float(v), 4) for v in model.intercept_],
        "thresholds": {"urgent": urgent_at, "emergency": emergency_at},
        "training": {
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "script": "bench/train_triage_classifier.py",
            "trained_on": sources,
            "never_trained_on": [f"tests/data/{NEVER[0]}", f"bench/data/{NEVER[1]}"],
            "rows": len(rows),
            "classes": {k: int(np.sum(y == i)) for i, k in enumerate(CLASSIFIER_CLASSES)},
            "features": len(vocabulary),
            "min_documents": MIN_DOCUMENTS,
            "cross_validation": cv,
            "budgets": {
                "urgent_false_raise": URGENT_FALSE_RAISE,
                "emergency_false_raise": EMERGENCY_FALSE_RAISE,
            },
        },
        "weights": weights,
    }
    args.out.write_text(
        json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    print(f"wrote {args.out} ({len(weights)} features, {args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
