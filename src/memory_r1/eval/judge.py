"""LLM-as-a-Judge as in the Mem0 / Memory-R1 harness: CORRECT or WRONG, returned as JSON.

The judge prompt is a recipe choice (``judge.prompt`` in ``recipes/*/eval.yaml``), because the same
answers score anywhere from 35% to 91% J depending on the prompt alone (a published re-scoring of
Mem0's answers): ``mem0`` (the default) keeps the Mem0 harness's generous criteria (same topic; same
date in any format), ``strict`` asks for the gold answer's specific facts. The summary names the one
that scored it, and the known-answer control pairs run with the same prompt.

Judgments are cached on disk (sqlite) by (judge model, prompt, question, gold, prediction), so a
resumed or repeated evaluation never asks twice and a judgment of one prompt is never reused for
another. A judge completion without a readable label is scored WRONG and counted (`unparsed`), never
guessed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from memory_r1.agents._text import find_json
from memory_r1.llm.base import LLM, SamplingParams
from memory_r1.recipes import JudgeSection

log = logging.getLogger(__name__)

#: Mem0's judge criteria: generous (the same topic, the same date in any format is CORRECT).
MEM0_PROMPT = """Label a generated answer to a question as CORRECT or WRONG, given the gold answer.
The gold answer is usually short. The generated answer may be longer; be generous: if it refers to the
same thing, person, event or fact as the gold answer, it is CORRECT. For questions about time, a
generated answer naming the same date or period in another format (e.g. "May 7th" vs "7 May") is CORRECT.
An answer that misses the point of the gold answer, or says it does not know, is WRONG.

Question: {question}
Gold answer: {gold}
Generated answer: {prediction}

Reply with JSON only: {{"label": "CORRECT"}} or {{"label": "WRONG"}}"""

#: Strict criteria: the gold answer's specific facts, no credit for the topic alone.
STRICT_PROMPT = """Label a generated answer to a question as CORRECT or WRONG, given the gold answer.
Be strict. The answer is CORRECT only if it states the specific fact of the gold answer: the same
person, thing, place, number, date or period, and every item when the gold answer lists several.
Other wording, or a date in another format (e.g. "May 7th" vs "7 May"), is fine. The answer is WRONG
if it is only about the same topic, vaguer or less specific than the gold answer, names a different
date or period, offers several options, contradicts the gold answer, or says it does not know.

Question: {question}
Gold answer: {gold}
Generated answer: {prediction}

Reply with JSON only: {{"label": "CORRECT"}} or {{"label": "WRONG"}}"""

#: ``judge.prompt`` choices of an eval recipe
JUDGE_PROMPTS: dict[str, str] = {"mem0": MEM0_PROMPT, "strict": STRICT_PROMPT}
DEFAULT_JUDGE_PROMPT: str = JudgeSection.model_fields["prompt"].default  # "mem0", written once in recipes.py
JUDGE_PROMPT = MEM0_PROMPT  # the default's text, under its earlier name


def judge_prompt_name(jcfg: dict | None) -> str:
    """The judge prompt a recipe's ``judge`` section names (the default when it names none); an
    unknown name is an error.

    >>> judge_prompt_name({"backend": "self"}), judge_prompt_name({"prompt": "strict"})
    ('mem0', 'strict')
    >>> judge_prompt_name({"prompt": "lenient"})
    Traceback (most recent call last):
    ...
    ValueError: unknown judge.prompt 'lenient'; choose from mem0, strict
    """
    name = str((jcfg or {}).get("prompt") or DEFAULT_JUDGE_PROMPT)
    if name not in JUDGE_PROMPTS:
        raise ValueError(f"unknown judge.prompt {name!r}; choose from {', '.join(JUDGE_PROMPTS)}")
    return name


def build_judge_messages(question: str, gold: str, prediction: str, prompt: str = DEFAULT_JUDGE_PROMPT) -> list[dict]:
    """The judge's chat messages under the named prompt.

    >>> m = build_judge_messages("Where?", "Paris", "in Paris", prompt="strict")
    >>> "Be strict" in m[0]["content"] and "Generated answer: in Paris" in m[0]["content"]
    True
    """
    text = JUDGE_PROMPTS[prompt].format(question=question, gold=gold, prediction=prediction)
    return [{"role": "user", "content": text}]


_LABEL = re.compile(r"\b(CORRECT|WRONG)\b", re.I)


def parse_judgment(text: str) -> bool | None:
    """True for CORRECT, False for WRONG, None when no label can be read.

    >>> parse_judgment('{"label": "CORRECT"}')
    True
    >>> parse_judgment('The answer is wrong. {"label": "WRONG"}')
    False
    >>> parse_judgment("label: correct")
    True
    >>> parse_judgment("I am not sure") is None
    True
    """
    data = find_json(text)
    if isinstance(data, dict) and isinstance(data.get("label"), str):
        label = data["label"].strip().upper()
        if label in ("CORRECT", "WRONG"):
            return label == "CORRECT"
    m = _LABEL.search(text)
    return None if m is None else m.group(1).upper() == "CORRECT"


def cache_key(model: str, question: str, gold: str, prediction: str, prompt: str = DEFAULT_JUDGE_PROMPT) -> str:
    """The cache key of a judgment: the judge model, the prompt's text (so an edited or another prompt
    is never answered from the cache), question, gold and prediction.

    >>> cache_key("m", "q", "g", "p") == cache_key("m", "q", "g", "p", "mem0") != cache_key("m", "q", "g", "p", "strict")
    True
    """
    payload = json.dumps([model, JUDGE_PROMPTS[prompt], question, gold, prediction], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class JudgeCache:
    """sqlite table key -> (label, raw completion); safe against a killed process (transactions)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path))
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, label INTEGER, raw TEXT)"
        )
        self.db.commit()

    def get(self, key: str) -> tuple[bool | None, str] | None:
        row = self.db.execute("SELECT label, raw FROM judgments WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return (None if row[0] is None else bool(row[0]), row[1])

    def put_many(self, rows: list[tuple[str, bool | None, str]]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO judgments (key, label, raw) VALUES (?, ?, ?)",
                [(k, None if v is None else int(v), raw) for k, v, raw in rows],
            )

    def close(self) -> None:
        self.db.close()


@dataclass
class Judgment:
    correct: bool  # unparsed judge output counts as WRONG
    parsed: bool
    raw: str
    cached: bool


class Judge:
    """Judges (question, gold, prediction) triples with any LLM backend, through the cache."""

    def __init__(self, llm: LLM, params: SamplingParams, cache: JudgeCache, model_name: str | None = None,
                 prompt: str = DEFAULT_JUDGE_PROMPT):
        if prompt not in JUDGE_PROMPTS:
            raise ValueError(f"unknown judge prompt {prompt!r}; choose from {', '.join(JUDGE_PROMPTS)}")
        self.llm = llm
        self.params = params
        self.cache = cache
        self.model = model_name or llm.name
        self.prompt = prompt
        self.calls = 0
        self.unparsed = 0

    def judge(self, items: list[tuple[str, str, str]]) -> list[Judgment]:
        keys = [cache_key(self.model, *it, prompt=self.prompt) for it in items]
        out: list[Judgment | None] = []
        missing = []
        for i, k in enumerate(keys):
            hit = self.cache.get(k)
            if hit is None:
                out.append(None)
                missing.append(i)
            else:
                out.append(Judgment(bool(hit[0]), hit[0] is not None, hit[1], cached=True))
        if missing:
            gens = self.llm.generate([build_judge_messages(*items[i], prompt=self.prompt) for i in missing],
                                     self.params)
            self.calls += len(gens)
            rows = []
            for i, g in zip(missing, gens):
                label = parse_judgment(g.text)
                if label is None:
                    self.unparsed += 1
                    log.info("judge output without a label, scored WRONG: %r", g.text[:120])
                rows.append((keys[i], label, g.text))
                out[i] = Judgment(bool(label), label is not None, g.text, cached=False)
            self.cache.put_many(rows)
        return out  # type: ignore[return-value]


def control_pairs(records: list[dict], n: int) -> list[tuple[tuple[str, str, str], bool]]:
    """Known-answer checks for a judge: (question, gold, gold) must be CORRECT and (question, gold,
    the gold answer of another question) WRONG. Deterministic; at most `n` of each.

    >>> recs = [{"question": "q1", "gold": "Paris"}, {"question": "q2", "gold": "7 May"}]
    >>> control_pairs(recs, 5)
    [(('q1', 'Paris', 'Paris'), True), (('q2', '7 May', '7 May'), True), (('q1', 'Paris', '7 May'), False), (('q2', '7 May', 'Paris'), False)]
    """
    recs = [r for r in records if str(r.get("gold", "")).strip()][:n]
    if len(recs) < 2:
        return []
    same = [((r["question"], r["gold"], r["gold"]), True) for r in recs]
    other = [((r["question"], r["gold"], recs[(i + 1) % len(recs)]["gold"]), False) for i, r in enumerate(recs)]
    other = [(t, want) for t, want in other if t[1].strip().lower() != t[2].strip().lower()]
    return same + other


def control_accuracy(judge: "Judge", records: list[dict], n: int) -> dict | None:
    """How often the judge gets the known-answer pairs right (chance is 50%)."""
    pairs = control_pairs(records, n)
    if not pairs:
        return None
    got = judge.judge([t for t, _ in pairs])
    right = sum(1 for j, (_, want) in zip(got, pairs) if j.correct == want)
    same_ok = sum(1 for j, (_, want) in zip(got, pairs) if want and j.correct)
    other_ok = sum(1 for j, (_, want) in zip(got, pairs) if not want and not j.correct)
    n_same = sum(1 for _, w in pairs if w)
    return {
        "pairs": len(pairs),
        "accuracy": 100.0 * right / len(pairs),
        "identical_judged_correct": 100.0 * same_ok / n_same,
        "mismatched_judged_wrong": 100.0 * other_ok / (len(pairs) - n_same),
    }
