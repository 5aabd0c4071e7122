"""Our negation/hypothetical/historical rules (A) against medspaCy's ConText (B), on the labelled dev set.

medspaCy is NOT a dependency of the service; it lives in a venv of its own:

    python3 -m venv /tmp/medspacy-venv
    /tmp/medspacy-venv/bin/pip install medspacy==1.3.1 pydantic-settings
    PYTHONPATH=. /tmp/medspacy-venv/bin/python bench/medspacy_compare.py [--data tests/data/triage_dev.jsonl]
        [--examples 12] [--repeat 5] [--service-venv .venv] [--matrices] [--as-shipped]
    PYTHONPATH=. /tmp/medspacy-venv/bin/python bench/medspacy_compare.py --explain "no pus, but it's red"

What differs between A and B is only the modifier step of ``service.core.triage.triage``:
normalisation, concept matching (the trie), clause/sentence segmentation, the day rules, combinations
and the severity decision are the engine's own in every variant. B replaces ``_apply_modifiers`` (which
findings are negated / hypothetical / historical) with medspaCy's ConText, given the engine's findings as
its targets and the engine's sentence boundaries. Variants:

- ``A``  the engine as it is (``templates/triage/modifiers.toml``).
- ``B-default``  ConText with medspaCy's default English rules, run the way medspaCy is meant to be run:
  on the original text, tokenised by medspaCy's tokenizer (contractions split, so its "n't" rules work);
  the engine's findings are mapped onto those tokens by character offsets.
- ``B-ours``  ConText with the default English rules plus every trigger of ``modifiers.toml`` (English,
  Spanish, texting), its terminators (per category, through ``terminated_by``) and its pseudo-triggers,
  on the engine's normalised tokens (accents folded, shorthand expanded: the space the engine's own
  triggers are written in). Scope: ConText's own (the sentence).
- ``B-ours+scope``  the same, each of our triggers limited to its category's ``max_scope`` as well.
- ``B-ours+scope+comma``  and a comma ends the categories whose ``commas_end_scope`` is set: what is left
  of the engine's scoping that ConText cannot say is the bare-list exception and double negatives.
- ``B-ours, FAMILY = not present``  B-ours with medspaCy's usual reading of FAMILY (not the patient's).

ConText categories map onto the engine's flags: NEGATED_EXISTENCE → negated, HYPOTHETICAL → hypothetical,
HISTORICAL → historical; a category of ours with other flags ("resolved": negated + historical) becomes a
ConText category of its own. POSSIBLE_EXISTENCE and FAMILY leave the finding present (the engine has no
such flags, and its policy is that uncertainty counts as present), except in the FAMILY row. Modifiers
that overlap a finding are dropped (``prune_on_target_overlap``), as in the engine, where "can't breathe"
is one phrase whose "can't" is not a negation. medspaCy 1.3.1's span-overlap test is fixed first
(``fix_overlap``); ``--as-shipped`` keeps the bug.

Prints: A's 5×5 confusion matrix (every variant's with ``--matrices``), a Markdown table of the five
metrics of ``service.triage_eval`` with replies per second on one core and the number of lines whose label
differs from A's, examples of those lines, and the cost (venv sizes, what medspaCy adds, start-up time).
It refuses the hold-out file unless ``--holdout`` says the lead is running it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.triage import decide as engine  # noqa: E402
from service.triage.evaluation import LABELS, evaluate, format_report, gold_label, predicted_label  # noqa: E402
from service.triage.loader import load_lexicon  # noqa: E402
from service.triage.match import END  # noqa: E402
from service.triage.schema import FLAGS, SLOT  # noqa: E402

# ConText's own categories and the engine flag each stands for. Each category of modifiers.toml joins the
# one with the same flags (so the same-category rules of ConText apply between ours and the defaults), or,
# when its flags are not one of these (our "resolved": negated + historical), becomes a category of its own.
STANDARD: dict[str, tuple[str, ...]] = {
    "NEGATED_EXISTENCE": ("negated",),
    "HYPOTHETICAL": ("hypothetical",),
    "HISTORICAL": ("historical",),
}
# Whose terminators end ConText's default rules of that category (in the variants with our triggers).
DEFAULT_PEER = {"NEGATED_EXISTENCE": "negation", "HYPOTHETICAL": "hypothetical", "HISTORICAL": "historical"}


def context_category(category: engine.ModifierCategory) -> str:
    for name, flags in STANDARD.items():
        if set(flags) == set(category.flags):
            return name
    return f"OURS_{category.name.upper()}"


def category_flags(lexicon: engine.Lexicon) -> dict[str, tuple[str, ...]]:
    """What a ConText category means to the engine. Anything else (POSSIBLE_EXISTENCE, FAMILY) leaves the
    finding present."""
    ours = {context_category(c): tuple(c.flags) for c in lexicon.categories.values()}
    return {**STANDARD, **ours}


def quiet() -> None:
    """medspaCy (and PyRuSH through loguru) log at DEBUG by default."""
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("medspacy", "PyRuSH", "spacy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, level="WARNING")
    except ImportError:
        pass


def fix_overlap() -> None:
    """medspaCy 1.3.1's ``tuple_overlaps(a, b)`` is false when ``b`` contains ``a``, so a terminator (whose
    own scope is the whole sentence) never cuts a trigger whose scope ``max_scope`` has made shorter than
    the sentence: in "no fever, but the redness is spreading" the redness stays negated. Only scopes
    limited by ``max_scope`` are affected; ``--as-shipped`` leaves the bug in."""
    from medspacy.context import context_graph, context_modifier

    def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
        return a[0] < b[1] and b[0] < a[1]

    context_modifier.tuple_overlaps = overlaps
    context_graph.tuple_overlaps = overlaps


# --------------------------------------------------------------------------------------------------
# The engine's trigger data, read back from its compiled trie (already normalised)
# --------------------------------------------------------------------------------------------------


def trie_phrases(trie: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], tuple[str, str]]]:
    stack: list[tuple[dict[str, Any], tuple[str, ...]]] = [(trie, ())]
    while stack:
        node, words = stack.pop()
        for key, child in node.items():
            if key == END:
                # The payloads, or (priority, payloads) where the engine ranks them at build time.
                payloads = child[1] if child and isinstance(child[0], int) else child
                for payload in payloads:
                    yield words, payload
            else:
                stack.append((child, (*words, key)))


def token_pattern(words: Sequence[str], lexicon: engine.Lexicon) -> list[dict[str, Any]]:
    """A spaCy Matcher pattern for a normalised phrase; "{n}" matches any number, as in the engine."""
    number = rf"^(\d+([.,]\d+)?|{lexicon.normaliser.high_temperature_word})$"
    return [{"LOWER": {"REGEX": number}} if w == SLOT else {"LOWER": w} for w in words]


def our_rules(lexicon: engine.Lexicon, *, with_scope: bool, with_commas: bool) -> list[Any]:
    """Every trigger, terminator and pseudo-trigger of modifiers.toml as ConTextRules.

    with_scope: each trigger keeps its category's ``max_scope`` (otherwise ConText's sentence scope).
    with_commas: a comma ends the categories whose ``commas_end_scope`` is set (the engine's exception for
    a bare list of findings, "no redness, swelling or pain", cannot be said in ConText).
    """
    from medspacy.context import ConTextRule

    rules: list[Any] = []
    # A phrase that is both a forward and a backward trigger of one category ("years ago", "ya no") is
    # one BIDIRECTIONAL rule: ConText keeps one modifier per span, so two rules would lose a direction.
    triggers: dict[tuple[tuple[str, ...], str], set[str]] = {}
    pseudo: list[tuple[str, ...]] = []
    for words, (kind, ident) in sorted(trie_phrases(lexicon.trie.root)):
        if kind == "trigger":
            name, direction = ident.split(":")
            triggers.setdefault((words, name), set()).add(direction)
        elif kind == "terminator":
            # A terminator ends only the categories that name its group, so it is a PSEUDO modifier of its
            # own category that the others list in ``terminated_by`` (a TERMINATE rule would end them all).
            rules.append(
                ConTextRule(
                    " ".join(words),
                    f"TERM_{ident.upper()}",
                    pattern=token_pattern(words, lexicon),
                    direction="PSEUDO",
                )
            )
        elif kind == "pseudo":
            pseudo.append(words)
    # medspaCy's convention: a pseudo-trigger carries the category it is a false alarm of ("not sure" is a
    # NEGATED_EXISTENCE pseudo), so it also ends the scope of an earlier trigger of that category.
    inside = {words: context_category(lexicon.categories[name]) for words, name in triggers}
    for words in pseudo:
        found = [
            inside[words[i:j]]
            for i in range(len(words))
            for j in range(i + 1, len(words) + 1)
            if words[i:j] in inside
        ]
        rules.append(
            ConTextRule(
                " ".join(words),
                found[0] if found else "PSEUDO",
                pattern=token_pattern(words, lexicon),
                direction="PSEUDO",
            )
        )
    for (words, name), directions in triggers.items():
        category = lexicon.categories[name]
        ended_by = {f"TERM_{group.upper()}" for group in category.terminator_ids}
        if with_commas and getattr(category, "commas_end_scope", True):
            ended_by.add("TERM_COMMA")
        rules.append(
            ConTextRule(
                " ".join(words),
                context_category(category),
                pattern=token_pattern(words, lexicon),
                direction="BIDIRECTIONAL" if len(directions) == 2 else directions.pop().upper(),
                terminated_by=ended_by,
                max_scope=category.max_scope if with_scope else None,
            )
        )
    if with_commas:
        for comma in sorted(lexicon.list_separators):
            rules.append(ConTextRule(comma, "TERM_COMMA", pattern=[{"ORTH": comma}], direction="PSEUDO"))
    return rules


# --------------------------------------------------------------------------------------------------
# The glue: ConText in place of engine._apply_modifiers
# --------------------------------------------------------------------------------------------------


class ConTextModifiers:
    """A drop-in for ``engine._apply_modifiers`` that asks medspaCy's ConText instead."""

    def __init__(self, lexicon: engine.Lexicon, *, mode: str, family_absent: bool = False) -> None:
        import medspacy
        from medspacy.context import ConText

        self.mode = mode
        self.lexicon = lexicon
        # medspaCy's usual reading of FAMILY ("my mom's lips are swelling") is "not the patient's": as a
        # sensitivity check it can be made to hide the finding (shown as historical).
        self.flags = {**category_flags(lexicon), **({"FAMILY": ("historical",)} if family_absent else {})}
        if mode == "default":
            # medspaCy's own tokenizer (load() installs it), on the original text.
            self.nlp = medspacy.load(medspacy_enable=["medspacy_tokenizer"])
        else:
            import spacy

            self.nlp = spacy.blank("en")
        self.context = ConText(
            self.nlp,
            rules="default",
            input_span_type="group",
            span_group_name="findings",
            prune_on_target_overlap=True,
            span_attrs=None,
        )
        if mode != "default":
            # Our terminators end the default rules of the same category too ("negation"'s end the default
            # NEGATED_EXISTENCE rules), and so does a comma where it ends that category.
            commas = "+comma" in mode
            extra = our_rules(lexicon, with_scope="+scope" in mode, with_commas=commas)
            term_of: dict[str, set[str]] = {}
            for standard, name in DEFAULT_PEER.items():
                peer = lexicon.categories.get(name)
                if peer is not None:
                    term_of[standard] = {f"TERM_{group.upper()}" for group in peer.terminator_ids}
                    if commas and getattr(peer, "commas_end_scope", True):
                        term_of[standard].add("TERM_COMMA")
            for rule in self.context.rules:
                rule.terminated_by |= term_of.get(rule.category.upper(), set())
            self.context.add(extra)
        self.text = ""
        self.last: list[tuple[str, str, tuple[int, int]]] = []
        self.last_doc: list[str] = []

    def __call__(
        self,
        tokens: Sequence[Any],
        matches: Sequence[Any],
        hits: list[Any],
        optouts: list[Any],
        lexicon: engine.Lexicon,
    ) -> None:
        from spacy.tokens import Doc, Span

        targets = hits + optouts
        if not targets or not tokens:
            return
        # Sentence starts exactly as the engine's _segment draws them.
        starts = [0] + [i + 1 for i, t in enumerate(tokens[:-1]) if t.norm in lexicon.sentence_ends]
        if self.mode == "default":
            body = lexicon.strip_quoted(unicodedata.normalize("NFC", self.text))
            doc = self.nlp.make_doc(body)
            if len(doc) == 0:
                return
            first = {tokens[i].start for i in starts}
            for tok in doc:
                tok.is_sent_start = tok.i == 0 or any(tok.idx <= c < tok.idx + len(tok) for c in first)
            spans = []
            for hit in targets:
                span = doc.char_span(
                    tokens[hit.start].start, tokens[hit.end - 1].end, alignment_mode="expand"
                )
                spans.append(span)
        else:
            words = [t.norm for t in tokens]
            doc = Doc(self.nlp.vocab, words=words, sent_starts=[i in set(starts) for i in range(len(words))])
            spans = [Span(doc, hit.start, hit.end, label=hit.kind) for hit in targets]
        keep = [(hit, span) for hit, span in zip(targets, spans, strict=True) if span is not None]
        doc.spans["findings"] = [span for _, span in keep]
        self.context(doc)
        self.last = [
            (m.category, doc[m.modifier_span[0] : m.modifier_span[1]].text, m.scope_span)
            for m in doc._.context_graph.modifiers
        ]
        self.last_doc = [t.text for t in doc]
        for hit, span in zip((h for h, _ in keep), doc.spans["findings"], strict=True):
            for modifier in span._.modifiers:
                category = modifier.category.upper()
                hit.flags.update(self.flags.get(category, ()))


@contextmanager
def modifiers_from(replacement: Callable[..., None] | None) -> Iterator[None]:
    original = engine._apply_modifiers
    if replacement is not None:
        engine._apply_modifiers = replacement
    try:
        yield
    finally:
        engine._apply_modifiers = original


class TextAware:
    """Hands the current reply's text to the glue (the engine passes it tokens only)."""

    def __init__(self, glue: ConTextModifiers | None) -> None:
        self.glue = glue

    def triage(self, row: dict[str, Any], lexicon: engine.Lexicon) -> engine.TriageResult:
        if self.glue is not None:
            self.glue.text = row["text"]
        return engine.triage(row["text"], day=row.get("day"), lexicon=lexicon, treatment=row.get("treatment"))


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------


def run_variant(
    name: str, glue: ConTextModifiers | None, rows: list[dict[str, Any]], lexicon: engine.Lexicon, repeat: int
) -> dict[str, Any]:
    runner = TextAware(glue)
    with modifiers_from(glue):
        # service.triage_eval.evaluate calls engine.triage; the text for the glue is set row by row.
        results = [runner.triage(row, lexicon) for row in rows]
        report = evaluate(_feeding(rows, glue), lexicon)
        best = float("inf")
        for _ in range(repeat):
            began = time.perf_counter()
            for row in rows:
                runner.triage(row, lexicon)
            best = min(best, time.perf_counter() - began)
    return {"name": name, "report": report, "results": results, "per_second": len(rows) / best}


def _feeding(rows: list[dict[str, Any]], glue: ConTextModifiers | None) -> Iterator[dict[str, Any]]:
    for row in rows:
        if glue is not None:
            glue.text = row["text"]
        yield row


def startup_seconds(code: str, python: str, repeat: int = 3) -> float:
    best = float("inf")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(repeat):
        began = time.perf_counter()
        subprocess.run([python, "-c", code], check=True, env=env, cwd=ROOT, capture_output=True)
        best = min(best, time.perf_counter() - began)
    return best


def size_mb(path: Path) -> float | None:
    if not path.exists():
        return None
    total = 0
    for folder, _, files in os.walk(path):
        for file in files:
            full = os.path.join(folder, file)
            if not os.path.islink(full):
                total += os.path.getsize(full)
    return total / 1e6


def flags_of(result: engine.TriageResult) -> list[str]:
    out = []
    for f in result.findings:
        marks = "".join(f"/{flag[:4]}" for flag in FLAGS if getattr(f, flag))
        out.append(f"{f.concept}{marks}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "triage_dev.jsonl")
    parser.add_argument("--examples", type=int, default=12, help="disagreements shown per variant")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes over the set (best one counts)")
    parser.add_argument("--service-venv", type=Path, default=ROOT / ".venv")
    parser.add_argument("--matrices", action="store_true", help="every variant's full matrix, not only A's")
    parser.add_argument("--holdout", action="store_true", help="allow the hold-out set (the lead only)")
    parser.add_argument("--as-shipped", action="store_true", help="keep medspaCy's span-overlap bug")
    parser.add_argument(
        "--explain", metavar="TEXT", help="show each variant's findings and ConText's modifiers"
    )
    args = parser.parse_args(argv)
    if "holdout" in args.data.name and not args.holdout:
        parser.error("the hold-out set is the lead's to run: pass --holdout to say you are the lead")
    quiet()
    if not args.as_shipped:
        fix_overlap()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    lexicon = load_lexicon()
    if args.explain:
        return explain(args.explain, lexicon)

    import medspacy

    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    print(f"{len(rows)} replies from {args.data.name}; medspaCy {medspacy.__version__}; one core\n")
    glues = {
        "B-default: ConText, default rules": ConTextModifiers(lexicon, mode="default"),
        "B-ours: ConText + our triggers": ConTextModifiers(lexicon, mode="ours"),
        "B-ours+scope: … + our max_scope": ConTextModifiers(lexicon, mode="ours+scope"),
        "B-ours+scope+comma: … + commas end scope": ConTextModifiers(lexicon, mode="ours+scope+comma"),
        "B-ours, FAMILY = not present": ConTextModifiers(lexicon, mode="ours", family_absent=True),
    }
    variants = [run_variant("A: our rules", None, rows, lexicon, args.repeat)]
    variants += [run_variant(name, glue, rows, lexicon, args.repeat) for name, glue in glues.items()]

    # The harness must not change anything by itself: the engine's own modifier step, swapped in the same
    # way, reproduces A exactly.
    check = run_variant("A via the harness", engine._apply_modifiers, rows, lexicon, 1)  # type: ignore[arg-type]
    assert [r.to_json() for r in check["results"]] == [r.to_json() for r in variants[0]["results"]]

    for variant in variants:
        if args.matrices or variant is variants[0]:
            print(f"== {variant['name']}\n{format_report(variant['report'])}\n")
    print(summary_table(variants))
    print()
    gold = [gold_label(row) for row in rows]
    for variant in variants[1:]:
        print(disagreements(variants[0], variant, rows, gold, args.examples))
    print(cost(args.service_venv))
    return 0


def summary_table(variants: Sequence[dict[str, Any]]) -> str:
    """A Markdown table: the five metrics, speed, and how many lines' labels differ from A's."""
    names = list(variants[0]["report"]["metrics"])
    lines = [
        "| variant | " + " | ".join(names) + " | replies/s | lines ≠ A |",
        "|---" * (len(names) + 3) + "|",
    ]
    a_labels = [predicted_label(r) for r in variants[0]["results"]]
    for variant in variants:
        labels = [predicted_label(r) for r in variant["results"]]
        differ = sum(x != y for x, y in zip(a_labels, labels, strict=True))
        cells = " | ".join(f"{variant['report']['metrics'][n]:.4f}" for n in names)
        lines.append(f"| {variant['name']} | {cells} | {variant['per_second']:.0f} | {differ} |")
    return "\n".join(lines)


def disagreements(
    a: dict[str, Any], b: dict[str, Any], rows: Sequence[dict[str, Any]], gold: Sequence[str], examples: int
) -> str:
    a_labels = [predicted_label(r) for r in a["results"]]
    b_labels = [predicted_label(r) for r in b["results"]]
    diffs = [i for i, (x, y) in enumerate(zip(a_labels, b_labels, strict=True)) if x != y]
    a_right = sum(a_labels[i] == gold[i] for i in diffs)
    b_right = sum(b_labels[i] == gold[i] for i in diffs)
    out = [f"== A vs {b['name']}: {len(diffs)} lines differ; A right on {a_right}, B right on {b_right}"]
    for i in diffs[:examples]:
        out.append(
            f"  line {i + 1:>4} gold {gold[i]:<9} A {a_labels[i]:<9} B {b_labels[i]:<9} {rows[i]['text']!r}"
        )
        out.append(f"{'':>12}A: {' '.join(flags_of(a['results'][i])) or '-'}")
        out.append(f"{'':>12}B: {' '.join(flags_of(b['results'][i])) or '-'}")
    return "\n".join(out) + "\n"


def added_by_medspacy(service_venv: Path) -> tuple[float, list[str]]:
    """MB and names of the distributions in this (medspaCy) venv that the service venv does not have: what
    adopting ConText would add to the service's install."""
    from importlib import metadata

    def key(name: str) -> str:
        return name.lower().replace("-", "_").replace(".", "_")

    have = {
        key(folder.name.split("-")[0])
        for folder in service_venv.glob("lib/python*/site-packages/*.dist-info")
    }
    total, names = 0, []
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if key(name) in have or key(name) in {"pip", "setuptools", "pydantic_settings", "python_dotenv"}:
            continue
        names.append(name)
        for file in dist.files or ():
            located = Path(str(dist.locate_file(file)))
            if located.is_file():
                total += located.stat().st_size
    return total / 1e6, sorted(names, key=str.lower)


def du(path: Path) -> str:
    try:
        found = subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True, check=True)
        return found.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError):
        return f"{size_mb(path) or 0:.0f}M"


def cost(service_venv: Path) -> str:
    load = "from service.triage.loader import load_lexicon; load_lexicon()"
    with_context = load + (
        "; import spacy, medspacy; from medspacy.context import ConText"
        "; ConText(spacy.blank('en'), rules='default')"
    )
    a_start, b_start = startup_seconds(load, sys.executable), startup_seconds(with_context, sys.executable)
    added, names = added_by_medspacy(service_venv)
    return "\n".join(
        [
            "== cost",
            f"du -sh {service_venv}: {du(service_venv)}",
            f"du -sh {sys.prefix}: {du(Path(sys.prefix))}",
            f"added to the service venv by medspaCy: {added:.0f} MB in {len(names)} distributions",
            f"  {', '.join(names)}",
            f"start-up, fresh interpreter: lexicon {a_start:.2f} s",
            f"start-up, fresh interpreter: lexicon + medspaCy ConText {b_start:.2f} s",
        ]
    )


def explain(text: str, lexicon: engine.Lexicon) -> int:
    row = {"text": text, "day": None, "treatment": None}
    print(f"A: {' '.join(flags_of(TextAware(None).triage(row, lexicon))) or '-'}")
    for mode in ("default", "ours", "ours+scope", "ours+scope+comma"):
        glue = ConTextModifiers(lexicon, mode=mode)
        with modifiers_from(glue):
            result = TextAware(glue).triage(row, lexicon)
        print(f"B-{mode}: {' '.join(flags_of(result)) or '-'}")
        print(f"    tokens: {glue.last_doc}")
        for category, words, scope in glue.last:
            print(f"    {category:<18} {words!r:<20} scope {scope}")
    return 0


def _matrix(variant: dict[str, Any]) -> str:
    report = variant["report"]
    lines = format_report(report).splitlines()
    return "\n".join(lines[: 3 + len(LABELS)])


if __name__ == "__main__":
    raise SystemExit(main())
