"""Fuzz the parsers of LLM output: `parse_operations`, `parse_facts`, `parse_answer`, `parse_judgment`.

Each fuzzed output goes through all four parsers; the script counts exceptions that escape (0 is the
contract: a parser returns a result or a counted "unparseable" for any string), unparseable results,
and the slowest parse per character (the parsers must be roughly linear in the length). Outputs come
from seeded generators: valid completions with random edits, random text, random bytes decoded as
text, bracket bombs up to the GPU recipes' token limits, and long repeats of the parsers' own syntax.

    .venv/bin/python benchmarks/fuzz_parsers.py [--outputs 40000] [--seed 0] [--out PATH]

``--src DIR`` puts another checkout's ``src`` first on the path (e.g. to count the exceptions of an
older commit: ``git archive COMMIT src | tar -x -C /tmp/old``, then ``--src /tmp/old/src``).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent

VALID = [
    "ADD: Caroline adopted a dog\nUPDATE 1: Caroline lives in Oslo\nDELETE 2\nNONE",
    "Sure! Here are the operations:\n```\nADD: likes tea\nUPDATE 0: moved in 2023\n```\nHope this helps.",
    '```json\n{"memory": [{"id": "0", "text": "Caroline is 30", "event": "UPDATE"},'
    ' {"id": "1", "event": "DELETE"}, {"text": "x", "event": "ADD"}]}\n```',
    '[{"id": "2", "text": "Caroline moved", "event": "UPDATE"}, {"id": 1, "text": null, "event": "ADD"}]',
    "- Caroline went to a support group on 7 May 2023.\n- Caroline is studying counseling.",
    '{"facts": ["Caroline moved from Sweden", {"text": "Caroline likes tea"}]}',
    "Here are the facts:\n1. Caroline likes hiking\n2) She has a dog",
    "Relevant:\n- 8 May 2023: Caroline went to a support group.\nAnswer: 7 May 2023",
    '{"label": "CORRECT"}',
    'The answer is wrong. {"label": "WRONG"}',
    "NONE",
]
PIECES = ["[", "]", "{", "}", '"', "'", ":", ",", "\\", "\\u", "\\ud800", "```", "```json", "\n", "\r", "\t",
          "Answer:", "ADD", "ADD:", "UPDATE 1:", "DELETE 7", "NOOP", "null", "true", "NaN", "Infinity",
          "1e999", "-", "0", "\x00", "\u2028", "\ud83d\ude00", " " * 64, "9" * 5000, "label", "CORRECT"]
BOMBS = ["[", "{", '{"a":', '["', "[1,", '"[', "[[]", '{"memory": [', "```", "```json\n["]
SPEAKERS = ["Caroline", "Melanie Smith", "", " ", "\t", "\x00", "Jo" * 300]
IDS = {0: "id-a", 1: "id-b", 2: "id-c"}
MAX_CHARS = 50_000  # ~8,192 tokens of text, the longest response the GPU recipes allow


def random_text(rng: random.Random, n: int) -> str:
    pools = [
        lambda: chr(rng.randrange(32, 127)),
        lambda: chr(rng.randrange(0, 0x3000)),
        lambda: chr(rng.choice([rng.randrange(0, 0xD800), rng.randrange(0xE000, 0x110000)])),
        lambda: rng.choice(PIECES),
    ]
    pick = rng.choice(pools)
    return "".join(pick() for _ in range(n))


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 8)):
        i = rng.randint(0, len(text))
        kind = rng.choice(["piece", "text", "delete", "dup", "bomb", "cut", "swap"])
        if kind == "piece":
            text = text[:i] + rng.choice(PIECES) + text[i:]
        elif kind == "text":
            text = text[:i] + random_text(rng, rng.randint(1, 30)) + text[i:]
        elif kind == "delete":
            text = text[:i] + text[i + rng.randint(1, 30):]
        elif kind == "dup":
            j = min(len(text), i + rng.randint(1, 60))
            text = text[:j] + text[i:j] * rng.randint(2, 100) + text[j:]
        elif kind == "bomb":
            text = text[:i] + rng.choice(BOMBS) * rng.randint(100, 4000) + text[i:]
        elif kind == "cut":
            text = text[:i]
        elif len(text) > 1:
            j = rng.randrange(len(text))
            chars = list(text)
            chars[i % len(text)], chars[j] = chars[j], chars[i % len(text)]
            text = "".join(chars)
    return text


def generate(rng: random.Random) -> tuple[str, str]:
    family = rng.choices(["mutated", "random", "bytes", "bomb", "repeat"], weights=[50, 15, 10, 15, 10])[0]
    if family == "mutated":
        return family, mutate(rng, rng.choice(VALID))
    if family == "random":
        return family, random_text(rng, rng.randint(0, 2000))
    if family == "bytes":
        return family, bytes(rng.randrange(256) for _ in range(rng.randint(0, 2000))).decode("utf-8", "replace")
    if family == "bomb":  # up to 8,192 tokens of brackets (the GPU recipes' longest responses)
        return family, rng.choice(["", rng.choice(VALID)]) + rng.choice(BOMBS) * rng.randint(500, 8192) + rng.choice(["", rng.choice(VALID)])
    piece = rng.choice(PIECES + VALID)
    return family, piece * rng.randint(10, max(10, MAX_CHARS // len(piece)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outputs", type=int, default=40_000, help="fuzzed outputs (each through all four parsers)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--src", type=Path, default=None, help="a checkout's src folder to test instead of this one")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "fuzz_parsers.json")
    args = ap.parse_args()
    if args.src is not None:
        sys.path.insert(0, str(args.src.resolve()))

    import memory_r1
    from memory_r1.agents.answerer import parse_answer
    from memory_r1.agents.extractor import parse_facts
    from memory_r1.agents.manager import parse_operations
    from memory_r1.eval.judge import parse_judgment

    parsers = {
        "parse_operations": lambda t, sp: parse_operations(t, IDS).parsed,
        "parse_facts": lambda t, sp: parse_facts(t, sp).ok,
        "parse_answer": lambda t, sp: parse_answer(t).ok,
        "parse_judgment": lambda t, sp: parse_judgment(t) is not None,
    }
    rng = random.Random(args.seed)
    exceptions: Counter = Counter()
    unparsed: Counter = Counter()
    families: Counter = Counter()
    examples: dict[str, str] = {}
    slowest = {name: {"seconds": 0.0, "chars": 0, "us_per_char": 0.0} for name in parsers}
    per_char = {name: {"seconds": 0.0, "chars": 0, "us_per_char": 0.0} for name in parsers}
    seconds = Counter()
    chars = 0
    started = time.perf_counter()
    for _ in range(args.outputs):
        family, text = generate(rng)
        text = text[:MAX_CHARS]
        families[family] += 1
        chars += len(text)
        speaker = rng.choice(SPEAKERS)
        for name, parse in parsers.items():
            t = time.perf_counter()
            try:
                ok = parse(text, speaker)
            except Exception as exc:  # noqa: BLE001 - counting what escapes is the point
                key = f"{name}: {type(exc).__name__}"
                exceptions[key] += 1
                examples.setdefault(key, f"{text[:80]!r} ({len(text)} chars): "
                                    + traceback.format_exception_only(exc)[-1].strip()[:200])
                ok = None
            dt = time.perf_counter() - t
            seconds[name] += dt
            if ok is False:
                unparsed[name] += 1
            row = {"seconds": round(dt, 4), "chars": len(text), "us_per_char": round(1e6 * dt / max(len(text), 1), 3)}
            if dt > slowest[name]["seconds"]:
                slowest[name] = row
            if len(text) >= 1000 and row["us_per_char"] > per_char[name]["us_per_char"]:
                per_char[name] = row
    result = {
        "benchmark": "fuzzed LLM outputs through the four parsers",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "code": str(Path(memory_r1.__file__).resolve().parents[1]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "outputs": args.outputs,
        "chars": chars,
        "families": dict(families),
        "exceptions": sum(exceptions.values()),
        "exceptions_by_parser": dict(sorted(exceptions.items())),
        "exception_examples": examples,
        "unparseable": dict(unparsed),
        "seconds_per_parser": {k: round(v, 2) for k, v in seconds.items()},
        "slowest": slowest,
        "highest_us_per_char_over_1000_chars": per_char,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=True) + "\n")
    print(json.dumps({k: result[k] for k in ("outputs", "chars", "exceptions", "exceptions_by_parser",
                                             "unparseable", "slowest",
                                             "highest_us_per_char_over_1000_chars", "wall_s")}, indent=1))


if __name__ == "__main__":
    main()
