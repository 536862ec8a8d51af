"""`memr1 train loop` (memory_r1.train.loop) with the heavy steps replaced: the wiring of its rounds."""

from __future__ import annotations

import json


def test_loop_chains_the_stages_and_reuses_finished_steps(tmp_path, monkeypatch):
    """The loop's wiring with the heavy steps replaced: each round trains the manager from the
    previous one, rebuilds the banks with it, trains the answer agent on those banks, evaluates
    both; a rerun reuses what is finished."""
    from memory_r1.train import loop
    from memory_r1.train.runner import TrainResult

    calls = []

    def fake_training(req):
        calls.append(("train", req.stage, req.init, str(req.banks) if req.banks else None, req.manager))
        out = req.out.resolve()
        hf = out / "checkpoints" / "global_step_1" / "actor" / "huggingface"
        hf.mkdir(parents=True)
        (out / "result.json").write_text(json.dumps({"hf_checkpoint": str(hf), "dry_run": False}))
        return TrainResult(out=out, hf_checkpoint=hf, steps=1)

    def fake_banks(backbone, manager, convs, folder):
        calls.append(("banks", manager, [c.conversation_id for c in convs]))
        return {"turns": 1}

    def fake_eval(req):
        calls.append(("eval", req.split, req.manager, req.answer))
        req.out.mkdir(parents=True, exist_ok=True)
        rows = [{"category": 2, "label": "Temporal", "count": 3, "f1": 2.0, "bleu1": 1.0, "judge": None},
                {"category": None, "label": "Overall", "count": 3, "f1": 2.0, "bleu1": 1.0, "judge": None}]
        (req.out / "summary.json").write_text(json.dumps({"rows": rows}))
        return req.out

    monkeypatch.setattr(loop, "run_training", fake_training)
    monkeypatch.setattr("memory_r1.train.stages.banks.rebuild_banks", fake_banks)
    monkeypatch.setattr("memory_r1.eval.runner.run_eval", fake_eval)
    out = tmp_path / "loop"
    records = loop.run_loop(loop.LoopRequest(rounds=2, out=out))
    r1, r2 = (out / "round-1").resolve(), (out / "round-2").resolve()
    m1 = r1 / "manager" / "checkpoints" / "global_step_1" / "actor" / "huggingface"
    a1 = r1 / "answer" / "checkpoints" / "global_step_1" / "actor" / "huggingface"
    assert calls[:4] == [
        ("train", "manager", None, None, None),
        ("banks", str(m1), ["conv-26", "conv-30"]),
        ("train", "answer", None, str(r1 / "banks"), None),
        ("eval", "val", str(m1), str(a1)),
    ]
    assert calls[4][:3] == ("train", "manager", str(m1))  # round 2 starts from round 1's manager
    assert calls[6][:4] == ("train", "answer", str(a1), str(r2 / "banks"))
    assert [r["round"] for r in records] == [1, 2] and (r2 / "round.json").exists()
    table = (out / "summary.md").read_text().splitlines()
    assert "| Round | Questions | F1 | BLEU-1 | J | F1 2 Temporal | seconds |" in table
    assert [ln.split(" | ")[:5] for ln in table if ln.startswith("| 1 ") or ln.startswith("| 2 ")] == [
        ["| 1", "3", "2.00", "1.00", "n/a"], ["| 2", "3", "2.00", "1.00", "n/a"]]
    calls.clear()
    loop.run_loop(loop.LoopRequest(rounds=2, out=out))  # everything finished: only the evals run again
    assert [c[0] for c in calls] == ["eval", "eval"]
