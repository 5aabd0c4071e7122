"""The red-flag screen, the patient's risk flags, languages we do not read, tapbacks, keywords said loudly,
and the learned second opinion (docs/triage.md "Round five"). Each sentence is written for the test, from
the families of the issue, never copied from a labelled set."""

from __future__ import annotations

import ast
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from service.core.enums import RiskFlag, Severity
from service.triage import TriageResult, triage
from service.triage.loader import DEFAULT_TRIAGE_DIR, clear_lexicon_cache, load_lexicon
from service.triage.red_flags import compile_red_flags
from service.triage.schema import LexiconError

DATA = Path(__file__).resolve().parent / "data"
TRIAGE_PACKAGE = Path(__file__).resolve().parent.parent / "service" / "triage"


@pytest.fixture(scope="module")
def lexicon():
    return load_lexicon()


@pytest.fixture
def check(lexicon):
    def run(text: str, day: int | None = 1, risk_flags: tuple[str, ...] = ()) -> TriageResult:
        return triage(text, day=day, lexicon=lexicon, risk_flags=risk_flags)

    return run


def concepts(result: TriageResult, *, present: bool | None = None) -> set[str]:
    return {f.concept for f in result.findings if present is None or f.present == present}


def rank(severity: str) -> int:
    return Severity(severity).rank


def dev_rows() -> list[dict]:
    path = DATA / "triage_dev.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the screen: emergencies however they are said ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        # consciousness and collapse, in Spanish and Portuguese, with their forms
        ("mi mamá se desmayó en el estacionamiento después de la cita", "collapse"),
        ("me desmayé dos veces en el baño", "collapse"),
        ("quase desmaiei agora há pouco, tive que sentar no chão", "collapse"),
        ("ela desmaiou na sala de espera", "collapse"),
        ("I keeled over in the kitchen an hour after", "collapse"),
        ("so dizzy I can't stand up", "collapse"),
        # typos, through rapidfuzz
        ("me desmalle en la cocina", "collapse"),
        ("I think I fianted for a second in the shower", "collapse"),
        # breathing and airway
        ("não consigo respirar direito desde a tarde", "breathing"),
        ("there's a whistling sound every time I breathe in", "breathing"),
        ("my throat feels like it's tightening up", "airway"),
        ("se me está hinchando la lengua", "airway"),
        # colour of lips and skin
        ("my lips look kind of blue and I'm breathing really fast", "colour"),
        ("she's gone grey and is panting", "colour"),
        ("estou pálida e suando frio", "colour"),
        # stroke signs blamed on the numbing cream
        ("the left side of my mouth is drooping, must be the numbing cream still", "stroke"),
        ("my right arm feels weak and heavy since this morning", "stroke"),
        ("my words are coming out slurred, is that the lidocaine?", "stroke"),
        ("tengo la boca chueca de un lado", "stroke"),
        # sudden loss of vision: an emergency, not urgent
        ("suddenly I can't see anything out of my right eye", "vision"),
        ("se me fue la vista del ojo izquierdo de golpe", "vision"),
        ("fiquei cega de um olho de repente", "vision"),
        # hives with systemic signs
        ("hives on my arms and chest and now I feel lightheaded", "hives_systemic"),
        ("ronchas por todo el cuerpo y estoy pálida", "hives_systemic"),
        # sepsis signs
        ("fever of 39 and my husband says I'm confused", "sepsis"),
        ("febre alta e estou vomitando sem parar", "sepsis"),
        # bleeding that will not stop
        ("the cut keeps bleeding even though I've pressed on it for ages", "bleeding"),
        ("it bled straight through the bandage twice", "bleeding"),
        ("I take warfarin and the bleeding won't stop", "bleeding"),
    ],
)
def test_each_red_flag_is_an_emergency_and_says_why(text, flag, check):
    result = check(text)
    assert result.severity == "emergency", result.findings
    assert f"red_flag.{flag}" in concepts(result, present=True), result.findings


@pytest.mark.parametrize(
    "text",
    [
        "no trouble breathing, no fever",
        "what if I pass out at the gym?",
        "I fainted once as a kid, nothing like that now",
        "you said to watch for blue lips or fainting — none of that",
        "would my lips turn blue if I had a reaction?",
        "my lips aren't blue and I'm breathing fine",
    ],
)
def test_a_red_flag_denied_supposed_or_past_does_not_raise(text, check):
    result = check(text)
    assert result.severity != "emergency", result.findings
    assert not any(f.concept.startswith("red_flag.") and f.present for f in result.findings)


@pytest.mark.parametrize(
    "text",
    [
        "big pimple on my lip",  # the size of a spot, not a swelling lip (the rules decide that one)
        "I'm drooling a bit from the numbing, lol",
        "dropping my kids at school then heading in",
        "the skin under my eye went dark",
        "my hand fell asleep while I slept on it",
        "the swelling by my eye is gone",
        "the bleeding stopped after I held pressure for ten minutes",
    ],
)
def test_words_only_near_a_red_flag_are_not_one(text, check):
    result = check(text)
    assert not any(f.concept.startswith("red_flag.") and f.present for f in result.findings), result.findings


def test_the_screen_can_only_raise(lexicon):
    """Over every dev reply, the engine with the screen is never lower than without it."""
    normaliser = lexicon.normaliser
    empty = compile_red_flags({}, normaliser.word_map, normaliser.vocabulary)
    without = dataclasses.replace(lexicon, red_flags=empty)
    for row in dev_rows():
        kwargs = {"day": row.get("day"), "treatment": row.get("treatment")}
        screened = triage(row["text"], lexicon=lexicon, **kwargs).severity
        assert rank(screened) >= rank(triage(row["text"], lexicon=without, **kwargs).severity), row["text"]


def test_a_trigger_word_inside_a_red_flag_phrase_is_part_of_it(check):
    # "não" and "no" are negations; inside the phrase they are what the patient cannot do.
    assert check("não consigo respirar").severity == "emergency"
    assert check("no puedo levantar el brazo derecho, lo siento pesado").severity == "emergency"


def test_the_typo_tolerance_uses_rapidfuzz_and_never_corrects_a_known_word():
    source = (TRIAGE_PACKAGE / "red_flags.py").read_text()
    assert "from rapidfuzz" in source
    screen = load_lexicon().red_flags
    assert "*desmay" in screen._keys("desmalle")  # one slip from the stem "desmay"
    assert screen._keys("fianted") == ("fainted",)  # two letters swapped
    assert "*droop" not in screen._keys("drooling")  # a real word, never "corrected"
    assert "*slurr" not in screen._keys("slurped")  # protected in red_flags.toml [typos]
    assert screen._typo_keys("peeling") == []  # a word of the lexicons is what it says


# --- the patient's history ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "day", "flag"),
    [
        ("my face feels hot", 1, RiskFlag.DIABETES),
        ("my face feels hot", 1, RiskFlag.IMMUNOSUPPRESSION),
        ("my lip is tingling a bit", 0, RiskFlag.COLD_SORE_HISTORY),
        ("it's still bleeding a little from one spot", 0, RiskFlag.BLOOD_THINNERS),
    ],
)
def test_a_risk_flag_makes_a_routine_sign_urgent(text, day, flag, check):
    assert check(text, day=day).severity == "routine"
    raised = check(text, day=day, risk_flags=(flag,))
    assert raised.severity == "urgent"
    assert any(flag.value in f.words for f in raised.findings), raised.findings


def test_eczema_and_new_blisters_is_urgent_and_says_so(check):
    result = check("a few tiny new blisters by my nose", day=1, risk_flags=(RiskFlag.ECZEMA,))
    assert result.severity == "urgent"
    assert "eczema_blisters" in concepts(result, present=True)


def test_immunosuppression_and_fever_is_urgent_at_least(check):
    for flags in ((), (RiskFlag.IMMUNOSUPPRESSION,), (RiskFlag.DIABETES,)):
        assert rank(check("I have a fever tonight", day=2, risk_flags=flags).severity) >= rank("urgent")


def test_a_risk_flag_without_its_sign_changes_nothing(check):
    for flag in RiskFlag:
        assert check("all good, thanks!", day=3, risk_flags=(flag,)).severity == "none"


def test_an_unknown_risk_flag_is_refused_naming_the_allowed_ones(lexicon):
    with pytest.raises(ValueError, match="allowed: eczema, psoriasis"):
        triage("hi", day=1, lexicon=lexicon, risk_flags=("asthma",))
    with pytest.raises(ValueError, match="list"):
        triage("hi", day=1, lexicon=lexicon, risk_flags="eczema")


def test_risk_flags_reach_the_combinations_as_data():
    text = (DEFAULT_TRIAGE_DIR / "vocabulary" / "concepts.toml").read_text()
    for flag in ("eczema", "immunosuppression", "diabetes", "cold_sore_history", "blood_thinners"):
        assert f'"risk:{flag}"' in text


def test_a_combination_naming_an_unknown_risk_flag_is_refused(tmp_path: Path):
    directory = tmp_path / "triage"
    shutil.copytree(DEFAULT_TRIAGE_DIR, directory)
    path = directory / "vocabulary" / "concepts.toml"
    path.write_text(path.read_text().replace('"risk:eczema"', '"risk:eczma"', 1))
    clear_lexicon_cache()
    with pytest.raises(ValueError, match=r"concepts\.toml.*'risk:eczma' is not a risk flag"):
        load_lexicon(directory)


# --- languages we do not read, thanks and tapbacks ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "J'ai très mal et ma joue est toute gonflée depuis hier",
        "Tôi bị sưng và rất đau ở má",
        "我的脸很肿而且很痛",
        "У меня сильно опухло лицо",
        "Mukha ko ay namamaga at masakit",
    ],
)
def test_a_message_in_a_language_we_do_not_read_is_routine_never_none(text, check):
    result = check(text)
    assert result.severity == "routine"
    assert "language_not_understood" in concepts(result)


@pytest.mark.parametrize(
    "text",
    [
        "merci beaucoup docteur",
        "salamat po",
        "cảm ơn bác sĩ",
        "谢谢",
        "감사합니다",
        "спасибо большое",
        "شكرا جزيلا",
        "vielen Dank",
        "mèsi anpil",
        "grazie mille",
    ],
)
def test_thanks_in_the_languages_of_us_clinics_patients_is_none(text, check):
    result = check(text)
    assert result.severity == "none", result.findings
    assert "language_not_understood" not in concepts(result)


def test_english_we_read_is_never_said_to_be_foreign(check):
    for text in ("I'll be 10 min late, sorry!", "thx hun, see u next wk", "can I wear makeup tmrw?"):
        assert "language_not_understood" not in concepts(check(text)), text


@pytest.mark.parametrize(
    "text",
    [
        "Liked “Watch for pus, fever or spreading redness”",
        "Loved “Call 911 if your lips or tongue swell”",
        "Disliked “How is your skin today?”",
        "Reacted 👍 to “Any fever or blisters?”",
        "👍 to “Reply if anything worries you”",
        "Le gustó “¿Tiene fiebre o pus?”",
        "Curtiu “Febre ou pus? Ligue para nós”",
        "A aimé « Fièvre, pus ? Appelez-nous »",
        "Hat mit 👍 auf „Fieber oder Eiter? Rufen Sie uns an.“ reagiert",
        "💀💀💀",
        "Automatic reply: I'm out of the office until Monday with limited access to email.",
    ],
)
def test_tapbacks_emoji_and_auto_replies_are_none(text, check):
    result = check(text)
    assert result.severity == "none", result.findings


def test_a_tapback_does_not_hide_what_the_patient_wrote_after_it(check):
    result = check("Liked “Watch for pus or fever”\nactually I do have a fever now", day=3)
    assert result.severity == "urgent"


# --- keywords said loudly -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "STOP STOP STOP 🛑",
        "Stop 🛑🛑",
        "STOP\n- Maria 555-123-4567",
        "STOP. Sent from my iPhone",
        "pls stop 🙏",
        "remove me from your text list",
        "take me off the sms list please",
        "arrêtez de m'envoyer des textos svp",
        "para de me mandar mensagem",
        "cancelen los mensajes por favor",
    ],
)
def test_an_opt_out_with_emoji_signature_or_courtesy_is_stop(text, check):
    assert check(text).keyword == "stop", text


def test_repeated_stop_before_a_symptom_is_both(check):
    result = check("stop stop stop and my left eye is swollen and red", day=1)
    assert result.keyword == "stop"
    assert result.severity == "urgent"


def test_a_single_stop_in_a_sentence_about_pain_is_no_keyword(check):
    assert check("stop it hurts").keyword is None
    assert check("Stop, it really hurts now", day=4).keyword is None


# --- the learned second opinion -----------------------------------------------------------------------


def test_the_classifier_runs_without_scikit_learn_or_numpy():
    for path in TRIAGE_PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("sklearn", "numpy", "scipy") for n in names), path.name


def test_the_classifier_only_raises(lexicon):
    off = dataclasses.replace(lexicon, classifier=dataclasses.replace(lexicon.classifier, enabled=False))
    on = dataclasses.replace(lexicon, classifier=dataclasses.replace(lexicon.classifier, enabled=True))
    for row in dev_rows():
        kwargs = {"day": row.get("day"), "treatment": row.get("treatment")}
        assert rank(triage(row["text"], lexicon=on, **kwargs).severity) >= rank(
            triage(row["text"], lexicon=off, **kwargs).severity
        ), row["text"]


def test_the_classifier_is_silent_when_the_rules_read_a_finding(lexicon):
    eager = dataclasses.replace(
        lexicon,
        classifier=dataclasses.replace(lexicon.classifier, enabled=True, urgent_at=0.01, emergency_at=0.01),
    )
    result = triage("my face is swollen and my lips are dry", day=1, lexicon=eager)
    assert result.severity == "routine"
    assert "second_opinion" not in concepts(result)


def test_the_classifier_speaks_for_wording_the_lexicons_lack(lexicon):
    eager = dataclasses.replace(
        lexicon,
        classifier=dataclasses.replace(lexicon.classifier, enabled=True, urgent_at=0.01, emergency_at=0.01),
    )
    result = triage("something odd going on with my cheek", day=3, lexicon=eager)
    assert (
        result.severity == "urgent"
    )  # never beyond urgent by default: nobody is told to call 911 on n-grams
    second = next(f for f in result.findings if f.concept == "second_opinion")
    assert "p=" in second.words


def test_the_classifier_weights_are_data_trained_without_set_b():
    weights = json.loads((DEFAULT_TRIAGE_DIR / "engine" / "classifier.json").read_text())
    trained = [source["file"] for source in weights["training"]["trained_on"]]
    assert not any("set_b" in name or "untouched" in name for name in trained)
    assert weights["classes"] == ["emergency", "urgent", "low"]


def test_broken_classifier_weights_are_reported_with_the_file(tmp_path: Path):
    directory = tmp_path / "triage"
    shutil.copytree(DEFAULT_TRIAGE_DIR, directory)
    path = directory / "engine" / "classifier.json"
    data = json.loads(path.read_text())
    data["bias"] = [0.0]
    path.write_text(json.dumps(data))
    clear_lexicon_cache()
    with pytest.raises(ValueError, match=r"classifier\.json: bias"):
        load_lexicon(directory)


# --- the screen's data --------------------------------------------------------------------------------


def test_a_red_flag_rule_naming_an_unknown_group_is_refused(tmp_path: Path):
    directory = tmp_path / "triage"
    shutil.copytree(DEFAULT_TRIAGE_DIR, directory)
    path = directory / "vocabulary" / "red_flags.toml"
    path.write_text(path.read_text().replace('all_of = ["face", "droop"]', 'all_of = ["face", "drop"]', 1))
    clear_lexicon_cache()
    with pytest.raises(
        ValueError, match=r"red_flags\.toml: \[flags\.stroke\] when #1: 'drop' is not under \[groups\]"
    ):
        load_lexicon(directory)


def test_a_malformed_stem_is_refused():
    with pytest.raises(LexiconError, match="stem"):
        compile_red_flags(
            {"flags": {"x": {"concept": "red_flag.x", "basis": "test", "en": ["de*"]}}}, {}, frozenset()
        )
