"""Triage of patient replies: the hard cases from the issue and CLINICAL_NOTES.md, one sentence each."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.triage import COMPLIANCE_KEYWORDS, Finding, TriageResult, compliance_keyword, triage
from service.triage_rules import DEFAULT_TRIAGE_DIR, clear_lexicon_cache, load_lexicon


@pytest.fixture(scope="module")
def lexicon():
    return load_lexicon()


@pytest.fixture
def check(lexicon):
    def run(text: str, day: int | None = None, treatment: str | None = None) -> TriageResult:
        return triage(text, day=day, lexicon=lexicon, treatment=treatment)

    return run


def concepts(result: TriageResult, *, present: bool | None = None) -> set[str]:
    return {f.concept for f in result.findings if present is None or f.present == present}


def finding(result: TriageResult, concept: str) -> Finding:
    return next(f for f in result.findings if f.concept == concept)


# --- compliance keywords ------------------------------------------------------------------------------


@pytest.mark.parametrize("word", sorted(COMPLIANCE_KEYWORDS))
def test_each_carrier_keyword_alone_is_recognised_in_any_case_and_punctuation(word, check):
    expected = COMPLIANCE_KEYWORDS[word]
    for text in (word, word.lower(), word.title(), f"  {word}. ", f"{word}!!", f'"{word}"'):
        assert compliance_keyword(text) == expected
        result = check(text)
        assert result.keyword == expected
        assert result.severity == "none"


def test_please_stop_the_burning_is_a_symptom_not_a_keyword(check):
    result = check("please stop the burning", day=1)
    assert result.keyword is None
    assert "burning" in concepts(result, present=True)


def test_cancel_my_appointment_is_rescheduling_with_no_keyword(check):
    result = check("CANCEL my appointment")
    assert result.keyword is None
    assert result.severity == "routine"
    assert "rescheduling" in concepts(result)


def test_a_keyword_inside_a_sentence_is_not_a_carrier_keyword():
    for text in ("stop it hurts", "yes I have a fever", "help my lip is swelling", "end of day 2, all fine"):
        assert compliance_keyword(text) is None


def test_yes_with_a_symptom_is_the_symptom(check):
    result = check("yes I have a fever", day=2)
    assert result.keyword is None
    assert result.severity == "urgent"


@pytest.mark.parametrize(
    "text",
    [
        "stop texting me",
        "unsubscribe me please",
        "please take me off this list",
        "no more texts please",
        "dejen de enviarme mensajes",
        "Stop please",
        "opt out",
    ],
)
def test_a_plain_language_opt_out_is_honoured(text, check):
    result = check(text)
    assert result.keyword == "stop"
    assert result.severity in ("none", "routine")


def test_a_plain_language_opt_out_with_symptoms_does_both(check):
    result = check("stop texting me, my face is oozing pus and I have a fever", day=3)
    assert result.keyword == "stop"
    assert result.severity == "urgent"


def test_a_negated_opt_out_is_not_one(check):
    assert check("don't stop texting me, these are helpful").keyword is None


def test_no_symptom_report_is_ever_taken_as_stop(check):
    for text in (
        "stop the itching please",
        "the bleeding won't stop",
        "can't stop scratching",
        "I stopped the retinol",
    ):
        assert check(text, day=2).keyword is None


# --- the examples ----------------------------------------------------------------------------


def test_oozing_yellow_stuff_is_urgent(check):
    result = check("its kinda oozing yellow stuff", day=2)
    assert result.severity == "urgent"
    assert {"weeping", "pus"} <= concepts(result, present=True)


def test_no_pus_no_fever_just_red_on_day_one_is_routine(check):
    result = check("no pus no fever just red", day=1)
    assert result.severity == "routine"
    assert finding(result, "pus").negated and finding(result, "fever").negated
    assert finding(result, "redness").present


def test_tengo_fiebre_is_urgent(check):
    result = check("tengo fiebre")
    assert result.severity == "urgent"
    assert finding(result, "fever").words == "fiebre"


def test_help_my_lip_is_swelling_is_an_emergency(check):
    result = check("help my lip is swelling", day=1)
    assert result.severity == "emergency"
    assert result.keyword is None


def test_thanks_with_a_fever_is_urgent(check):
    result = check("thanks! also I have a fever", day=3)
    assert result.severity == "urgent"
    assert {"thanks", "fever"} <= concepts(result, present=True)


# --- negation, resolution, double negatives ----------------------------------------------------------


def test_not_swollen_anymore_is_resolved(check):
    result = check("not swollen anymore", day=4)
    swelling = finding(result, "swelling")
    assert swelling.negated and swelling.historical
    assert result.severity == "routine"


def test_ya_no_is_resolved_in_spanish(check):
    result = check("ya no me duele", day=5)
    assert not finding(result, "pain").present
    assert result.severity == "routine"


def test_a_negation_stops_at_but(check):
    result = check("no pus but it's really swollen and hot", day=4)
    assert finding(result, "pus").negated
    assert result.severity == "urgent"


def test_a_negation_covers_a_bare_list_of_findings(check):
    result = check("no redness, swelling or pain", day=4)
    assert all(f.negated for f in result.findings)
    assert result.severity == "routine"


def test_a_negation_never_runs_into_a_new_clause(check):
    result = check("no fever, my lip is swelling", day=1)
    assert finding(result, "fever").negated
    assert result.severity == "emergency"


def test_double_negatives_affirm(check):
    assert check("I can't say there's no pus", day=3).severity == "urgent"
    assert check("it's not that it isn't swollen, it's huge", day=5).severity == "urgent"
    assert check("not without pain, it's throbbing", day=4).severity == "urgent"


def test_uncertainty_is_not_negation(check):
    result = check("not sure if this is pus", day=3)
    assert finding(result, "pus").present
    assert result.severity == "urgent"


def test_sin_and_ni_negate_in_spanish(check):
    result = check("sin pus ni fiebre, solo un poco roja", day=1)
    assert finding(result, "pus").negated and finding(result, "fever").negated
    assert result.severity == "routine"


# --- hypotheticals and history -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "what if it gets infected?",
        "how do I know if it's infected?",
        "what are the signs of infection?",
        "¿y si me da fiebre?",
        "en caso de infección, qué hago?",
        "should I worry if I get blisters?",
    ],
)
def test_questions_about_infection_are_hypothetical_and_routine(text, check):
    result = check(text, day=2)
    assert result.severity == "routine"
    assert result.findings and all(f.hypothetical for f in result.findings if f.severity != "routine")


def test_a_hypothetical_does_not_hide_a_real_symptom_in_the_next_sentence(check):
    result = check("what if it gets infected? there's already yellow crust on my cheek", day=3)
    assert result.severity == "urgent"


def test_past_cold_sores_are_historical(check):
    result = check("I used to get cold sores, can I still do microneedling?", day=None)
    assert finding(result, "herpes").historical
    assert result.severity == "routine"


def test_el_ano_pasado_is_historical(check):
    result = check("tuve herpes el año pasado", day=2)
    assert finding(result, "herpes").historical


def test_a_cold_sore_now_is_urgent(check):
    assert check("I think I'm getting a cold sore on my lip", day=2).severity == "urgent"
    assert check("my lip is tingling and there are tiny blisters", day=2).severity == "urgent"


# --- day rules ---------------------------------------------------------------------------------------


def test_redness_on_day_one_is_expected(check):
    assert check("my face is really red like a sunburn", day=1).severity == "routine"


def test_redness_still_there_on_day_five_is_urgent(check):
    assert check("my face is still red", day=5).severity == "urgent"


def test_spreading_or_returning_redness_is_urgent_any_day(check):
    assert check("the redness is spreading to my neck", day=1).severity == "urgent"
    assert check("it was fading but now the redness came back", day=4).severity == "urgent"
    assert check("red again today", day=6).severity == "urgent"


def test_redness_that_is_getting_better_is_routine(check):
    assert check("still a little red but much better", day=3).severity == "routine"


def test_swelling_follows_the_same_days(check):
    assert check("a bit swollen", day=1).severity == "routine"
    assert check("still swollen", day=4).severity == "urgent"
    assert check("swelling is getting worse", day=1).severity == "urgent"


def test_flaking_is_routine_through_day_ten(check):
    for day in (1, 3, 5, 10):
        assert check("my skin is flaking and peeling a lot", day=day).severity == "routine"


def test_the_patients_own_day_count_is_used_when_the_day_is_unknown(check):
    assert check("it's day 5 and my face is still red").severity == "urgent"
    assert check("día 1, un poco roja").severity == "routine"


def test_unknown_day_with_persistence_is_conservative(check):
    assert check("redness won't go away").severity == "urgent"


def test_numbness_on_treatment_day_is_the_cream_but_later_is_urgent(check):
    assert check("still numb from the cream", day=0).severity == "routine"
    assert check("my cheek is still numb", day=3).severity == "urgent"


# --- infection, sepsis, anaphylaxis, colour, lumps ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "there's pus coming out",
        "yellow crust on my chin",
        "it smells bad",
        "red streaks going down my neck",
        "I have chills",
        "temp is 101.2",
        "tengo 38.5 de temperatura",
        "hay pus",
        "costras amarillas",
        "my skin is turning grey",
        "dark patches appeared",
        "new hard lumps under the skin",
        "hives on my neck",
        "I think it's infected",
        "🤒",
    ],
)
def test_infection_and_other_signs_are_urgent(text, check):
    assert check(text, day=4).severity in ("urgent", "emergency")


@pytest.mark.parametrize(
    "text",
    [
        "I can't breathe",
        "my throat feels tight",
        "my tongue is swelling",
        "swollen lips and hard to swallow",
        "I fainted",
        "I passed out after washing my face",
        "no puedo respirar",
        "se me hinchan los labios",
        "I have a fever and I'm really confused",
        "fever and my heart is racing",
        "fever 102 and throwing up",
        "hives everywhere and I feel dizzy",
        "wheezing",
        "me desmayé",
    ],
)
def test_airway_breathing_fainting_and_sepsis_signs_are_emergencies(text, check):
    assert check(text, day=1).severity == "emergency"


def test_a_swollen_face_beside_dry_lips_is_not_airway_swelling(check):
    assert check("my face is swollen and my lips are dry", day=1).severity == "routine"


def test_confused_about_instructions_is_not_confusion(check):
    assert check("I'm confused about when to use sunscreen", day=1).severity == "routine"


# --- misspellings, shorthand, emoji, mixed messages ---------------------------------------------------


def test_misspellings_and_repeated_letters_are_understood(check):
    assert check("sooo swolllen and feaver", day=4).severity == "urgent"
    assert check("its infectd i think, theres puss", day=3).severity == "urgent"
    assert check("cant breath", day=1).severity == "emergency"


def test_texting_shorthand_is_expanded(check):
    result = check("idk if its pus tbh but its oozing rn", day=3)
    assert result.severity == "urgent"


def test_matched_words_are_cut_from_the_original_text(check):
    result = check("Tengo FIÈBRE y mucho dolor", day=2)
    assert finding(result, "fever").words == "FIÈBRE"


def test_positive_emoji_and_thanks_are_none(check):
    for text in ("thank you!! 🙏", "👍", "ok thx", "gracias 😊", "hi!", "all good, no issues"):
        assert check(text, day=2).severity == "none", text


def test_unknown_free_text_is_routine_so_staff_read_it(check):
    result = check("I'll be there around 3")
    assert result.severity == "routine"


def test_aftercare_questions_and_rescheduling_are_routine(check):
    for text in (
        "can I wear makeup tomorrow?",
        "when can I go back to the gym?",
        "need to reschedule my next session",
        "¿puedo usar protector solar?",
        "is it normal to be peeling on day 3?",
    ):
        assert check(text, day=1).severity == "routine", text


def test_quoted_footer_in_a_reply_raises_no_alarm(check):
    reply = "Thanks, all good!\n\n> Pus, fever, spreading redness or blisters? Call us today."
    assert check(reply, day=2).severity == "none"


# --- the result and the data -------------------------------------------------------------------------


def test_to_json_has_exactly_the_documented_shape(check):
    data = check("no pus, just a bit red", day=1).to_json()
    assert set(data) == {"severity", "keyword", "findings"}
    assert data["findings"]
    for item in data["findings"]:
        assert set(item) == {"concept", "words", "severity", "negated", "hypothetical", "historical"}


def test_a_broken_data_file_is_reported_with_its_name_and_entry(tmp_path: Path):
    directory = tmp_path / "triage"
    shutil.copytree(DEFAULT_TRIAGE_DIR, directory)
    concepts_file = directory / "concepts.toml"
    concepts_file.write_text(
        concepts_file.read_text().replace(
            'severity = "urgent"  # §2: yellow/green pus', 'severity = "bad"  #', 1
        )
    )
    clear_lexicon_cache()
    with pytest.raises(ValueError, match=r"concepts\.toml: \[concepts\.pus\]: severity"):
        load_lexicon(directory)


def test_an_unknown_key_is_refused(tmp_path: Path):
    directory = tmp_path / "triage"
    shutil.copytree(DEFAULT_TRIAGE_DIR, directory)
    path = directory / "concepts.toml"
    path.write_text(path.read_text().replace("[concepts.fever]\n", "[concepts.fever]\nday_rule = []\n", 1))
    with pytest.raises(ValueError, match=r"concepts\.toml: \[concepts\.fever\]: unknown key"):
        load_lexicon(directory)


def test_the_lexicon_is_loaded_once():
    assert load_lexicon() is load_lexicon()


# --- new behaviours ---------------------------------------------------------------------------------


def test_a_plain_language_opt_in_is_start(check):
    for text in (
        "please start sending me the texts again",
        "I want the reminders back",
        "quiero volver a recibir los mensajes",
    ):
        assert check(text).keyword == "start", text


def test_words_that_merely_contain_keywords_are_not_opt_ins_or_outs(check):
    for text in (
        "when can I resume my retinol?",
        "take me off the schedule for Friday",
        "yes please",
        "can you text me again tomorrow",
    ):
        assert check(text, day=3).keyword is None, text


def test_two_negations_in_a_row_cancel(check):
    assert check("I don't think it's not infected", day=4).severity == "urgent"
    assert check("no es que no me duela, me duele más que ayer", day=4).severity == "urgent"


def test_a_negation_repeated_after_a_comma_still_negates(check):
    result = check("no, no fever", day=3)
    assert finding(result, "fever").negated


def test_a_confirmed_hypothetical_is_present(check):
    assert check("you said to call if there's pus, well there is", day=3).severity == "urgent"


def test_worry_about_the_future_is_hypothetical_but_about_the_present_is_not(check):
    assert (
        check("should I be worried about dark spots since I have darker skin?", day=7).severity == "routine"
    )
    assert check("should I be worried about the pus?", day=3).severity == "urgent"


def test_a_worried_patient_with_an_expected_finding_gets_the_findings_severity(check):
    assert check("I'm a bit worried, it's really red", day=1).severity == "routine"
    assert check("I'm worried, something doesn't look right", day=3).severity == "urgent"


def test_someone_elses_story_is_not_the_patients_symptom(check):
    result = check("mi prima tuvo una infección con esto, a mí solo se me está pelando", day=3)
    assert result.severity == "routine"


def test_history_with_all_good_needs_reading_but_a_denial_with_all_good_does_not(check):
    assert check("I had a cold sore back in march but nothing now", day=25).severity == "routine"
    assert check("no pain no redness nothing, all healed", day=8).severity == "none"


def test_a_question_with_nothing_clinical_is_routine(check):
    assert check("hola, ¿cuánto cuesta la siguiente sesión?").severity == "routine"


def test_rapidly_spreading_redness_is_an_emergency(check):
    assert check("the redness has doubled in size since lunch", day=4).severity == "emergency"
    assert check("the redness is spreading and I have a fever", day=3).severity == "emergency"


def test_lip_tingling_waits_for_the_day_after(check):
    assert check("my lips are tingling from the numbing cream", day=0).severity == "routine"
    assert check("my lip is tingling", day=2).severity == "urgent"


def test_a_reaction_right_after_a_product_is_urgent(check):
    assert (
        check("my cheek went all blotchy and itchy after I put on vitamin C serum", day=2).severity
        == "urgent"
    )


def test_tram_track_lines_follow_their_day_rules(check):
    assert check("lines where the roller went are raised", day=2).severity == "routine"
    assert check("lines where the roller went are raised", day=21).severity == "urgent"


# Paraphrases written for this suite (not from the labelled sets), so that a lexicon edit that fixes one
# reply cannot quietly break the family around it.
EMERGENCIES = [
    ("my throat feels like it's closing", 0),
    ("I feel like my throat is swelling shut", 0),
    ("my tongue is swollen", 0),
    ("tongue swelling up", 0),
    ("lips are really puffy and swollen", 0),
    ("both my lips blew up like balloons", 0),
    ("my mouth is swelling", 0),
    ("my lip is getting bigger and bigger", 0),
    ("I'm having a hard time breathing", 0),
    ("struggling to get air in", 0),
    ("I can't get enough air", 0),
    ("feel like I can't breathe properly", 0),
    ("it's hard to breathe and my chest feels tight", 0),
    ("my breathing is weird and shallow", 0),
    ("I feel short of breath", 0),
    ("I'm wheezy", 0),
    ("I can't swallow properly", 0),
    ("it hurts to swallow and my throat is swelling", 0),
    ("my voice sounds funny and raspy", 0),
    ("I almost fainted", 0),
    ("I nearly passed out", 0),
    ("I feel like I'm going to pass out", 0),
    ("I collapsed in the kitchen", 1),
    ("my vision went blurry", 2),
    ("I can't see out of my left eye", 3),
    ("everything is blurry in one eye", 3),
    ("hives all over my body and I'm dizzy", 0),
    ("broke out in hives everywhere and feel faint", 0),
    ("I have welts all over and my heart is racing", 0),
    ("my face is swollen and I feel really dizzy and lightheaded", 0),
    ("fever of 102 and I'm shaking uncontrollably", 3),
    ("I have a fever and keep throwing up", 3),
    ("temperature 39 and I'm vomiting", 3),
    ("I have a high fever and I feel confused", 3),
    ("fever and heart racing", 3),
    ("I'm burning up and feel confused and dizzy", 4),
    ("the redness is spreading really fast and I have a fever", 4),
    ("red area is growing by the hour", 4),
    ("called 911 my lips are huge", 0),
    ("no puedo respirar bien y tengo la cara hinchada", 0),
    ("se me cierra la garganta", 0),
    ("me cuesta mucho respirar", 0),
    ("tengo la boca hinchada", 0),
    ("se me hinchó la lengua", 0),
    ("los labios se me están hinchando", 0),
    ("me siento muy mareada y tengo ronchas en todo el cuerpo", 0),
    ("casi me desmayo en el baño", 1),
    ("tengo fiebre y vomito mucho", 3),
    ("tengo fiebre de 39 y estoy muy confundida", 3),
    ("fiebre alta y el corazón muy acelerado", 3),
    ("no veo bien de un ojo", 3),
    ("tengo la vista borrosa", 3),
    ("help!!! throat swelling", 0),
    ("used my epipen", 0),
    ("lips swelling, hard to breathe", 0),
    ("my tongue feels weird and heavy and thick", 0),
    ("my face is swelling up fast and my lips too", 0),
    ("the swelling is spreading to my throat", 0),
    ("throat is getting tighter", 0),
    ("breathless", 0),
    ("gasping for air", 0),
    ("I blacked out for a few seconds", 1),
    ("everything went dark and I hit the floor", 0),
    ("lower lip swollen to twice its size", 0),
    ("swollen tongue", 0),
    ("itchy welts everywhere and my chest is tight", 0),
    ("fever 38.9, vomited twice", 3),
    ("me desmayé en la ducha", 0),
    ("tengo los labios muy hinchados y me cuesta tragar", 0),
    ("tengo 39 de fiebre y vomité", 3),
    ("I'm having an allergic reaction and my throat feels weird", 0),
    ("my son got it done and now he's having trouble breathing", 0),
    ("do I need an ambulance? my mouth is swelling up", 0),
    ("feels like there's a lump in my throat and my voice changed", 0),
    ("I sound hoarse and my throat feels thick", 0),
    ("my eye is swollen and my vision is going", 4),
    ("my throat is scratchy and getting tighter by the minute", 0),
    ("i have a 103 fever and i'm shaking so bad", 4),
    ("I took benadryl but my lips are still swelling", 0),
    ("tongue tingling and swelling", 0),
    ("my lips went numb and now they're puffing up", 0),
    ("the red is racing up my neck and I have chills and fever", 3),
    ("me siento desmayar", 0),
    ("tengo el labio muy hinchado y me cuesta respirar", 0),
]

LOW = [
    ("can I put on makeup tomorrow?", 1),
    ("my skin feels tight and a little dry", 1),
    ("peeling a lot today, normal?", 4),
    ("it's pretty red but it's only been a few hours", 0),
    ("looks like a bad sunburn but I was told that's normal", 0),
    ("a few tiny pinpoint scabs", 2),
    ("small breakout on my chin, a couple of whiteheads", 3),
    ("I need to move my appointment to next week", 10),
    ("cancel my next appointment please", 12),
    ("my face is a bit pink still but way better", 4),
    ("red like a sunburn, a bit swollen, feels warm", 1),
    ("slight bruising under my eye", 2),
    ("the redness is gone and the swelling is down", 4),
    ("no swelling, no pain, no redness", 5),
    ("I don't have a fever", 3),
    ("thanks so much, I'm healing great!", 5),
    ("ok cool", 2),
    ("todo bien, gracias", 3),
    ("está un poco roja pero mejor", 3),
    ("what if I get a cold sore?", 1),
    ("should I be worried about infection?", 2),
    ("my friend said she got an infection from microneedling, is that common?", 1),
    ("I had hives once as a kid, is that a problem?", None),
    ("I get cold sores sometimes, should I take something before?", None),
    ("it feels like I got burned but the nurse said that's normal", 0),
    ("peeling like crazy lol", 4),
    ("tiny bit swollen under my eyes still", 1),
    ("not red at all anymore", 5),
    ("I think I'm allergic to the sunscreen you gave me, can I use a different one?", 3),
    ("my face is swollen and my lips are dry", 1),
    ("my lips are dry and my face is a bit swollen", 1),
    ("my lips are tingling from the numbing cream and my face is a bit puffy", 0),
    ("lip balm helps, the swelling is going down", 2),
    ("I put lip balm on and the swelling went down", 2),
    ("my face is burning a little and my lips are chapped", 0),
    ("throat is a bit sore from a cold, face is healing", 4),
    ("my lips feel dry since the swelling started", 1),
    ("can I use lip balm?", 1),
    ("face feels tight, lips fine", 1),
    ("my mouth area is red like the rest", 1),
    ("I'm fine, just some swelling around my eyes", 1),
]


@pytest.mark.parametrize(("text", "day"), EMERGENCIES)
def test_emergency_paraphrases_are_emergencies(text, day, check):
    assert check(text, day=day).severity == "emergency"


@pytest.mark.parametrize(("text", "day"), LOW)
def test_routine_paraphrases_are_not_raised(text, day, check):
    result = check(text, day=day)
    assert result.severity in ("routine", "none")
    assert result.keyword is None


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200), day=st.one_of(st.none(), st.integers(0, 60)))
def test_any_text_gets_a_valid_result(text, day, lexicon):
    result = triage(text, day=day, lexicon=lexicon)
    assert result.severity in ("emergency", "urgent", "routine", "none")
    assert result.keyword in (None, "stop", "start", "help")
    assert all(f.words for f in result.findings)


def test_anymore_never_undoes_an_opt_out(check):
    assert check("please don't text me anymore").keyword == "stop"
    assert check("I don't want texts anymore").keyword == "stop"
