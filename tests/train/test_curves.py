"""reward_curve.json: the rewards and the rollouts' response length per step, over resumed runs."""

from __future__ import annotations

import json

import pytest

from memory_r1.train.curves import write_curves


def _record(step: int, **data) -> str:
    return json.dumps({"step": step, "data": data}) + "\n"


def test_curves_keep_response_length_across_resumed_runs(tmp_path):
    # the first process logged steps 0-2 (metrics.1.jsonl after the resume), the second 2-3
    (tmp_path / "metrics.1.jsonl").write_text(
        _record(0, **{"val-core/locomo/reward/mean@1": 0.138})
        + _record(1, **{"critic/score/mean": 0.01, "response_length/mean": 33.0, "response_length/clip_ratio": 0.5})
        + _record(2, **{"critic/score/mean": 0.02, "response_length/mean": 30.0, "response_length/clip_ratio": 0.4}))
    (tmp_path / "metrics.jsonl").write_text(
        "not json\n"
        + _record(2, **{"critic/score/mean": 0.05, "response_length/mean": 20.0, "response_length/clip_ratio": 0.1})
        + _record(3, **{"critic/score/mean": 0.07, "response_length/mean": 14.0, "response_length/clip_ratio": 0.0,
                        "val-core/locomo/reward/mean@1": 0.171}))
    write_curves(tmp_path, "t", "answer_f1")
    got = json.loads((tmp_path / "reward_curve.json").read_text())
    assert got == {
        "reward": "answer_f1",
        "train": [[1, 0.01], [2, 0.05], [3, 0.07]],
        "val": [[0, 0.138], [3, 0.171]],
        "response_length": [[1, 33.0], [2, 20.0], [3, 14.0]],
        "response_clip_ratio": [[1, 0.5], [2, 0.1], [3, 0.0]],
    }
    pytest.importorskip("matplotlib")
    assert (tmp_path / "reward_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_without_length_records_get_empty_length_curves(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(_record(1, **{"critic/score/mean": 0.1}))
    write_curves(tmp_path, "t", "manager_f1")
    got = json.loads((tmp_path / "reward_curve.json").read_text())
    assert got["train"] == [[1, 0.1]] and got["response_length"] == [] and got["response_clip_ratio"] == []
