"""Files that parse but could not be used, or would distort an evaluation, and files Python cannot
decode: each is refused with one line naming the place, by the loader and by `memr1 data validate`
/ `data stats` (exit 2, no traceback, no usage box)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memory_r1.cli import app
from memory_r1.data import LocomoDataError, load_locomo
from memory_r1.data.locomo import MAX_LABEL_CHARS

cli = CliRunner()


def _set(path: tuple, value):
    def edit(raw):
        obj = raw
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
    return edit


def _speaker_of_turn(value):
    return _set((0, "conversation", "session_1", 0, "speaker"), value)


# (case, edit of the real file, place, part of the message)
EDITS = [
    ("escaping_id", _set((0, "sample_id"), "x/../../../escaped"), "[0].sample_id", "holds '/'"),
    ("long_id", _set((0, "sample_id"), "c" * 5000), "[0].sample_id", "5000 characters long"),
    ("nul_id", _set((0, "sample_id"), "conv\x0026"), "[0].sample_id", "holds '\\x00'"),
    ("blank_id", _set((1, "sample_id"), "   "), "[1].sample_id", "blank sample_id"),
    ("empty_id", _set((1, "sample_id"), ""), "[1].sample_id", "blank sample_id"),
    ("padded_id", _set((1, "sample_id"), "conv-30 "), "[1].sample_id", "starts or ends with blanks"),
    ("at_id", _set((1, "sample_id"), "conv@30"), "[1].sample_id", "holds '@'"),
    ("newline_id", _set((1, "sample_id"), "conv\n30"), "[1].sample_id", "holds '\\n'"),
    ("same_speakers", _set((0, "conversation", "speaker_b"), "Caroline"),
     "conv-26.conversation.speaker_b", "same name as speaker_a"),
    ("same_speakers_case", _set((0, "conversation", "speaker_b"), "caroline"),
     "conv-26.conversation.speaker_b", "same name as speaker_a"),
    ("blank_speaker", _set((0, "conversation", "speaker_a"), " "), "conv-26.conversation.speaker_a",
     "blank speaker name"),
    ("control_speaker", _set((0, "conversation", "speaker_a"), "Caro\nline"), "conv-26.conversation.speaker_a",
     "holds '\\n'"),
    ("long_speaker", _set((0, "conversation", "speaker_a"), "C" * (MAX_LABEL_CHARS + 1)),
     "conv-26.conversation.speaker_a", "characters long"),
    ("third_speaker", _speaker_of_turn("Mallory"), "conv-26.conversation.session_1[0].speaker",
     "'Mallory' is neither speaker_a ('Caroline') nor speaker_b ('Melanie')"),
    ("blank_turn_speaker", _speaker_of_turn(""), "conv-26.conversation.session_1[0].speaker", "is neither"),
    ("blank_dia_id", _set((0, "conversation", "session_2", 1, "dia_id"), " "),
     "conv-26.conversation.session_2[1].dia_id", "blank dialogue id"),
    ("blank_question", _set((0, "qa", 2, "question"), "  "), "conv-26.qa[2].question", "blank question"),
    ("blank_gold", _set((0, "qa", 2, "answer"), ""), "conv-26.qa[2].answer", "blank gold answer"),
    ("newline_dia_id", _set((0, "conversation", "session_2", 1, "dia_id"), "D2:\n2"),
     "conv-26.conversation.session_2[1].dia_id", "holds '\\n'"),
]
#: raw texts: (case, text, place, part of the message)
TEXTS = [
    ("nan_answer", '[{"sample_id": "c", "conversation": {"speaker_a": "A", "speaker_b": "B", "session_1_date_time": '
     '"d", "session_1": []}, "qa": [{"question": "q", "answer": NaN, "category": 1, "evidence": []}]}]',
     "c.qa[0].answer", "NaN or Infinity"),
    ("infinity_answer", '[{"sample_id": "c", "conversation": {"speaker_a": "A", "speaker_b": "B", "session_1_date_time": '
     '"d", "session_1": []}, "qa": [{"question": "q", "answer": -Infinity, "category": 1, "evidence": []}]}]',
     "c.qa[0].answer", "NaN or Infinity"),
    ("overflow_answer", '[{"sample_id": "c", "conversation": {"speaker_a": "A", "speaker_b": "B", "session_1_date_time": '
     '"d", "session_1": []}, "qa": [{"question": "q", "answer": 1e999, "category": 1, "evidence": []}]}]',
     "c.qa[0].answer", "too large"),
    ("huge_int_category", '[{"sample_id": "c", "conversation": {"speaker_a": "A", "speaker_b": "B", "session_1_date_time":'
     ' "d", "session_1": []}, "qa": [{"question": "q", "answer": "a", "category": ' + "7" * 5000 + ', "evidence": []}]}]',
     "c.qa[0].category", "integer literal of 5000 digits"),
    ("lone_surrogate", '[{"sample_id": "c", "conversation": {"speaker_a": "A", "speaker_b": "B", "session_1_date_time":'
     ' "d", "session_1": [{"speaker": "A", "dia_id": "D1:1", "text": "hi \\ud800 there"}]}, "qa": []}]',
     "c.conversation.session_1[0].text", "unpaired surrogate \\ud800 at character 3"),
    ("huge_int_anywhere", "[" + "1" * 5000 + "]", "[0]", "integer literal of 5000 digits"),
    ("deep_nesting", "[" * 100_000 + "]" * 100_000, "line 1 column", "nested 100000 levels deep"),
    ("deep_nesting_inside", '[{"sample_id": "c", "x": ' + '{"a": [' * 50_000, "line 1 column", "nested"),
]


def _write(folder: Path, raw) -> Path:
    p = folder / "locomo10.json"
    p.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return p


def _cases(locomo_raw):
    for case, edit, place, message in EDITS:
        raw = copy.deepcopy(locomo_raw)
        edit(raw)
        yield case, raw, place, message
    yield from TEXTS


CASES = [c[0] for c in EDITS] + [t[0] for t in TEXTS]


@pytest.mark.parametrize("case", CASES)
def test_refused_with_the_place(tmp_path, locomo_raw, case):
    _, raw, place, message = next(c for c in _cases(locomo_raw) if c[0] == case)
    path = _write(tmp_path, raw)
    with pytest.raises(LocomoDataError) as info:
        load_locomo(path)
    err = info.value
    assert err.place.startswith(place) and message in err.message, str(err)
    assert "\n" not in str(err) and len(str(err)) < 300
    for command in ("validate", "stats"):
        res = cli.invoke(app, ["data", command, "--data", str(path)])
        assert res.exit_code == 2 and res.exception is None or isinstance(res.exception, SystemExit)
        assert res.stderr.strip().splitlines() == [f"error: {err}"]


def test_published_names_pass(conversations):
    assert all(c.speaker_a != c.speaker_b for c in conversations)


def _as_nobody() -> list[str] | None:
    """A command prefix that drops root (file modes do not stop root), or [] when not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"] if setpriv else None


@pytest.mark.parametrize("kind", ["unreadable_file", "unsearchable_folder"])
def test_permission_problems_are_one_line(kind, locomo_path):
    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("running as root without setpriv: file modes cannot be tested")
    root = Path(tempfile.mkdtemp(prefix="memr1-perm-"))
    try:
        root.chmod(0o755)
        folder = root / "data"
        folder.mkdir()
        data = folder / "locomo10.json"
        shutil.copy(locomo_path, data)
        if kind == "unreadable_file":
            folder.chmod(0o755)
            data.chmod(0o000)
            want = "locomo10.json: file: cannot be read: Permission denied"
        else:
            folder.chmod(0o000)
            want = f"LoCoMo file given by --data cannot be looked at: {data}: Permission denied"
        for command in ("validate", "stats"):
            res = subprocess.run([*prefix, sys.executable, "-m", "memory_r1.cli", "data", command, "--data", str(data)],
                                 capture_output=True, text=True, timeout=120, cwd="/")
            assert res.returncode == 2, res.stderr
            assert res.stderr.strip().splitlines() == [f"error: {want}"]
    finally:
        for p in (root / "data", root / "data" / "locomo10.json"):
            try:
                p.chmod(0o755)
            except OSError:
                pass
        shutil.rmtree(root, ignore_errors=True)


def test_a_folder_or_a_vanished_file_is_one_line(tmp_path):
    res = cli.invoke(app, ["data", "validate", "--data", str(tmp_path)])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    with pytest.raises(LocomoDataError, match="file: cannot be read"):
        load_locomo(tmp_path / "gone.json")
