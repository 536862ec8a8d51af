"""A corpus of broken and hostile LoCoMo files through `memr1 data validate` and `memr1 data stats`.

Each file is the real ``locomo10.json`` with one seeded random edit: a value anywhere in the tree
replaced by a hostile one (ids that escape a folder, 5,000 characters, NUL, blank, NaN, Infinity,
integers over Python's digit limit, 100,000-deep nesting, wrong types, a duplicate or third speaker),
a key removed, the text truncated or its bytes corrupted; plus file-level cases (a folder, an empty
file, a missing file, and, run as uid 65534 when root, an unreadable file and an unsearchable folder).
The contract: every file either validates (the edit left it valid) or gets exactly one ``error:``
line and exit 2 from both commands; never a traceback, a usage box or another exit code.

    .venv/bin/python benchmarks/broken_files.py [--files 600] [--seed 0] [--subprocess 20] [--out PATH]

The files go through typer's in-process runner (fast); ``--subprocess N`` of them, and the permission
cases, through the real ``memr1`` entry point in a child process.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent

HOSTILE_STRINGS = ["x/../../../escaped", "/etc/passwd", "..", "a" * 5000, "nul\x00id", "", "   ", "new\nline",
                   "conv@26", "\u202eevil", "Caroline", "Melanie", "caroline", "D99:1", "\ud800"]
#: literals json.dumps cannot write; spliced into the text in place of a marker string
LITERALS = ["NaN", "Infinity", "-Infinity", "1e999", "7" * 5000, "[" * 100_000 + "]" * 100_000,
            '{"a": ' * 50_000 + "1" + "}" * 50_000, "-0", "1.5"]
OTHER_VALUES = [None, True, False, 0, -1, 7, 3.5, [], {}, ["x"], {"a": 1}, "text"]


def _nodes(raw, path=()):
    """Every (path, value) of the tree."""
    yield path, raw
    if isinstance(raw, dict):
        for k, v in raw.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            yield from _nodes(v, (*path, i))


def _parent(raw, path):
    obj = raw
    for key in path[:-1]:
        obj = obj[key]
    return obj


def tree_edit(rng: random.Random, base: list, paths: list) -> tuple[str, str]:
    """One random edit of the parsed file; the text written and a label of the edit."""
    raw = copy.deepcopy(base)
    # prefer the fields the loader reads: ids, speakers, turns, QA
    weighted = [p for p in paths if p and p[-1] in ("sample_id", "speaker_a", "speaker_b", "speaker", "dia_id",
                                                       "text", "answer", "category", "evidence", "question",
                                                       "adversarial_answer", "qa", "conversation")]
    path = rng.choice(weighted if rng.random() < 0.8 else paths[1:])
    parent = _parent(raw, path)
    kind = rng.choice(["string", "literal", "value", "remove"])
    marker = None
    if kind == "string":
        parent[path[-1]] = rng.choice(HOSTILE_STRINGS)
    elif kind == "literal":
        marker = rng.choice(LITERALS)
        parent[path[-1]] = "@@LITERAL@@"
    elif kind == "value":
        parent[path[-1]] = copy.deepcopy(rng.choice(OTHER_VALUES))
    elif isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent.pop(path[-1])
    text = json.dumps(raw, ensure_ascii=rng.random() < 0.5)
    if marker is not None:
        text = text.replace('"@@LITERAL@@"', marker)
    shown = parent[path[-1]] if kind in ("string", "value") else marker
    return text, f"{kind}:{path[-1] if path else 'top'}={str(shown)[:24]!r}"


def text_edit(rng: random.Random, text: str) -> tuple[bytes, str]:
    data = text.encode("utf-8")
    kind = rng.choice(["truncate", "flip", "invalid_utf8", "prefix", "empty", "garbage"])
    if kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind == "flip":
        data = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data)
    elif kind == "invalid_utf8":
        i = rng.randrange(len(data))
        data = data[:i] + b"\xff\xfe" + data[i:]
    elif kind == "prefix":
        data = rng.choice([b"[" * 200_000, b"\xef\xbb\xbf", b"//comment\n", b"{"]) + data
    elif kind == "empty":
        data = b""
    else:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5000)))
    return data, f"text:{kind}"


def classify(code: int, stdout: str, stderr: str, exception: BaseException | None) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    if exception is not None and not isinstance(exception, SystemExit):
        return f"exception:{type(exception).__name__}"
    if "Traceback" in stderr or "Usage:" in stderr or "╭" in stderr:
        return "traceback_or_usage_box"
    if code == 0 and not lines:
        return "valid"
    if code == 2 and len(lines) == 1 and lines[0].startswith("error: "):
        return "one_line"
    return f"other(exit {code}, {len(lines)} lines)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=600, help="randomly broken files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subprocess", type=int, default=20, help="of them also through the real entry point")
    ap.add_argument("--data", type=Path, default=None, help="the LoCoMo file to break (default: resolved)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "broken_files.json")
    args = ap.parse_args()

    from typer.testing import CliRunner

    from memory_r1.cli import app
    from memory_r1.paths import resolve_locomo_path

    source = resolve_locomo_path(args.data)
    base = json.loads(source.read_text())
    paths = [p for p, _ in _nodes(base)]
    rng = random.Random(args.seed)
    cli = CliRunner()
    work = Path(tempfile.mkdtemp(prefix="memr1-broken-"))
    work.chmod(0o755)
    outcomes: Counter = Counter()
    by_edit: dict[str, Counter] = {}
    failures: list[dict] = []
    started = time.perf_counter()

    valid_edits: Counter = Counter()

    def record(label: str, command: str, outcome: str, stderr: str) -> None:
        outcomes[outcome] += 1
        if outcome == "valid" and command == "validate":
            valid_edits[label] += 1
        by_edit.setdefault(label.split(":")[0], Counter())[outcome] += 1
        if outcome not in ("valid", "one_line") and len(failures) < 30:
            failures.append({"edit": label, "command": command, "outcome": outcome, "stderr": stderr[-400:]})

    def run_cli(path: Path, label: str) -> None:
        for command in ("validate", "stats"):
            res = cli.invoke(app, ["data", command, "--data", str(path)])
            record(label, command, classify(res.exit_code, res.stdout, res.stderr, res.exception), res.stderr)

    def run_real(path: Path, label: str, prefix: list[str]) -> None:
        for command in ("validate", "stats"):
            res = subprocess.run([*prefix, sys.executable, "-m", "memory_r1.cli", "data", command, "--data", str(path)],
                                 capture_output=True, text=True, timeout=300, cwd="/")
            record(f"{label} (subprocess)", command, classify(res.returncode, res.stdout, res.stderr, None), res.stderr)

    real_left = args.subprocess
    try:
        for i in range(args.files):
            f = work / f"f{i:05d}" / "locomo10.json"
            f.parent.mkdir()
            if rng.random() < 0.75:
                text, label = tree_edit(rng, base, paths)
                f.write_text(text, encoding="utf-8", errors="surrogatepass")
            else:
                data, label = text_edit(rng, json.dumps(base))
                f.write_bytes(data)
            run_cli(f, label)
            if real_left > 0 and rng.random() < 0.2:
                real_left -= 1
                run_real(f, label, [])
            shutil.rmtree(f.parent)
        # file-level cases
        folder = work / "a_folder"
        folder.mkdir()
        run_cli(folder, "file:folder")
        run_cli(work / "missing.json", "file:missing")
        empty = work / "empty.json"
        empty.write_bytes(b"")
        run_cli(empty, "file:empty")
        nobody = [] if os.geteuid() != 0 else (
            [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups"] if shutil.which("setpriv") else None)
        if nobody is not None:
            d = work / "perm"
            d.mkdir()
            d.chmod(0o755)
            unreadable = d / "locomo10.json"
            shutil.copy(source, unreadable)
            unreadable.chmod(0o000)
            run_real(unreadable, "file:unreadable", nobody)
            hidden = work / "hidden"
            hidden.mkdir()
            shutil.copy(source, hidden / "locomo10.json")
            hidden.chmod(0o000)
            run_real(hidden / "locomo10.json", "file:unsearchable_folder", nobody)
            hidden.chmod(0o755)
    finally:
        for p in work.rglob("*"):
            try:
                p.chmod(0o755)
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)
    tried = sum(outcomes.values())
    result = {
        "benchmark": "broken and hostile LoCoMo files through memr1 data validate / data stats",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "command_runs": tried,
        "outcomes": dict(outcomes),
        "refused_in_one_line": outcomes["one_line"],
        "still_valid": outcomes["valid"],
        "bad": tried - outcomes["one_line"] - outcomes["valid"],
        "by_edit_kind": {k: dict(v) for k, v in sorted(by_edit.items())},
        "edits_left_valid": dict(valid_edits.most_common()),
        "failures": failures,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("command_runs", "outcomes", "bad", "wall_s")}, indent=1))


if __name__ == "__main__":
    main()
