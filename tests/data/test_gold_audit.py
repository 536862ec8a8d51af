"""The gold-answer audit: found as the data file is, checked against the data, and the recipe option
that keeps the audited-wrong train questions out of the RL rows."""

from __future__ import annotations

import json
import shutil

import pytest

from memory_r1 import paths as data_paths
from memory_r1.data import load_split
from memory_r1.data.audit import GoldAuditError, find_gold_audit, load_gold_audit
from memory_r1.paths import DataNotFoundError, resolve_gold_audit_path

SHARED_AUDIT = data_paths.repo_root().parent / "shared" / "data" / "locomo" / "gold_audit.json"
pytestmark = pytest.mark.skipif(not SHARED_AUDIT.is_file(), reason="no gold_audit.json in ../shared")


@pytest.fixture(scope="module")
def audit(locomo_path):
    return find_gold_audit(data=locomo_path)


def test_audit_counts_per_split(audit, locomo_path):
    assert audit is not None and len(audit.entries) == 99 and audit.mismatched == ()
    counts = {s: len(audit.wrong_among(q.qid for q in load_split(s, locomo_path).questions()))
              for s in ("train", "val", "test")}
    assert counts == {"train": 15, "val": 4, "test": 80}  # as SOURCE.md states


def test_audit_is_found_beside_the_data_file(tmp_path, monkeypatch, locomo_path):
    monkeypatch.delenv("MEMR1_GOLD_AUDIT", raising=False)
    data = tmp_path / "elsewhere" / "locomo10.json"
    data.parent.mkdir()
    shutil.copyfile(locomo_path, data)
    beside = data.parent / "gold_audit.json"
    raw = json.loads(SHARED_AUDIT.read_text())
    beside.write_text(json.dumps({"entries": raw["entries"][:3]}))
    assert resolve_gold_audit_path(data=data) == beside
    assert len(find_gold_audit(data=data).entries) == 3
    # explicit and environment paths that do not exist are errors, never skipped
    with pytest.raises(DataNotFoundError, match="--gold-audit"):
        resolve_gold_audit_path(tmp_path / "nope.json")
    monkeypatch.setenv("MEMR1_GOLD_AUDIT", str(tmp_path / "nope.json"))
    with pytest.raises(DataNotFoundError, match="MEMR1_GOLD_AUDIT"):
        resolve_gold_audit_path(data=data)


def test_no_audit_anywhere_is_none(tmp_path, monkeypatch, locomo_path):
    monkeypatch.delenv("MEMR1_GOLD_AUDIT", raising=False)
    monkeypatch.setattr(data_paths, "repo_root", lambda: tmp_path / "repo")  # no ../shared there
    monkeypatch.setenv("MEMR1_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "d" / "locomo10.json"
    data.parent.mkdir()
    shutil.copyfile(locomo_path, data)
    assert resolve_gold_audit_path(data=data) is None
    assert find_gold_audit(data=data) is None


def test_an_entry_naming_another_question_is_left_out(tmp_path, conversations):
    raw = json.loads(SHARED_AUDIT.read_text())
    raw["entries"][0]["question"] = "A question that is not in the data?"
    p = tmp_path / "gold_audit.json"
    p.write_text(json.dumps(raw))
    a = load_gold_audit(p, [q for c in conversations for q in c.qa])
    first = f"{raw['entries'][0]['sample_id']}/q{raw['entries'][0]['qa_index']}"
    assert a.mismatched == (first,) and first not in a.wrong_qids and len(a.entries) == 98
    p.write_text('{"entries": [{"sample_id": "conv-26"}]}')
    with pytest.raises(GoldAuditError, match="entries\\[0\\]"):
        load_gold_audit(p)


def _episodes(stage: str, drop: bool, tmp_path, locomo_path, **extra):
    from memory_r1.train.stages import build_episodes

    eps = {"source": "observations", "val_split": None, "drop_wrong_golds": drop, **extra}
    return build_episodes(stage, eps, backbone="smollm2-135m", out_dir=tmp_path, data=locomo_path)


def test_answer_rows_drop_exactly_the_audited_train_questions(tmp_path, locomo_path, audit):
    train_qids = [q.qid for q in load_split("train", locomo_path).questions()]
    wrong = set(audit.wrong_among(train_qids))
    kept = _episodes("answer", False, tmp_path, locomo_path, top_k=1)
    dropped = _episodes("answer", True, tmp_path, locomo_path, top_k=1)
    assert [r["extra_info"]["qid"] for r in kept.train] == train_qids  # default: every question
    assert [r["extra_info"]["qid"] for r in dropped.train] == [q for q in train_qids if q not in wrong]
    assert len(dropped.train) == 152 - 15 and dropped.info["dropped_wrong_golds"] == sorted(
        wrong, key=train_qids.index)
    assert kept.info["dropped_wrong_golds"] == []


def test_manager_rows_never_carry_an_audited_gold(tmp_path, locomo_path, audit):
    kw = {"top_k": 1, "related_k": 1, "max_related": 2}
    kept = _episodes("manager", False, tmp_path, locomo_path, **kw)
    dropped = _episodes("manager", True, tmp_path, locomo_path, **kw)
    wrong = set(dropped.info["dropped_wrong_golds"])
    assert len(wrong) == 15
    linked = {q for r in kept.train for q in r["extra_info"]["qids"]}
    linked_after = {q for r in dropped.train for q in r["extra_info"]["qids"]}
    assert wrong & linked  # some of them are linked to evidence turns by default ...
    assert linked_after == linked - wrong  # ... and only they are gone
    for r in dropped.train:
        golds = json.loads(r["reward_model"]["ground_truth"])
        assert golds == [q["answer"] for q in r["extra_info"]["questions"]] and golds
    assert len(dropped.train) < len(kept.train)  # turns cited only by wrong-gold questions have no row


def test_drop_without_an_audit_fails(tmp_path, monkeypatch, locomo_path):
    from memory_r1.train.stages import EpisodeError

    monkeypatch.delenv("MEMR1_GOLD_AUDIT", raising=False)
    monkeypatch.setattr(data_paths, "repo_root", lambda: tmp_path / "repo")
    monkeypatch.setenv("MEMR1_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "d" / "locomo10.json"
    data.parent.mkdir()
    shutil.copyfile(locomo_path, data)
    with pytest.raises(EpisodeError, match="drop_wrong_golds"):
        _episodes("answer", True, tmp_path, data, top_k=1)


def test_every_train_recipe_names_the_option_off_by_default():
    from memory_r1.config import load_recipe, recipes_dir

    paths = sorted(recipes_dir().glob("*/answer/*.yaml")) + sorted(recipes_dir().glob("*/manager/*.yaml"))
    assert len(paths) == 12
    for p in paths:
        recipe = load_recipe(p)
        assert recipe["episodes"]["drop_wrong_golds"] is False, p
        assert "drop_wrong_golds" not in (recipe.get("reward") or {}), p
