"""The notebooks run top to bottom with a real kernel (nbclient), failing on any cell error:
01 in quick mode (real model and embedder, one session, three questions), 02 and 03 on the
committed results, and 02 once more on a small publication folder with rows in it. The committed
notebooks carry their outputs and stay small."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT = 300  # seconds per cell


def execute(name: str, monkeypatch, **env: str):
    """The notebook executed in a fresh kernel (environment ``env`` added), never saved."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def text_of(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o["text"])
            elif "data" in o:
                out.append(o["data"].get("text/markdown") or o["data"].get("text/plain", ""))
    return "\n".join(out)


def errors(nb) -> list:
    return [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.slow
def test_walkthrough_runs_in_quick_mode(monkeypatch):
    nb = execute("01_walkthrough.ipynb", monkeypatch, MEMR1_NB_QUICK="1")
    text = text_of(nb)
    assert not errors(nb)
    assert "quick mode: True; sessions ingested: 1; questions asked: 3" in text
    assert "=== call 1/" in text and "bank before (0 memories):" in text  # the manager's calls, with the banks
    assert "3 questions answered and judged" in text and '"retrieved_ids"' in text
    assert "temporary banks removed" in text


def test_ablations_notebook_runs_on_the_committed_results(monkeypatch):
    monkeypatch.delenv("MEMR1_NB_ABLATIONS", raising=False)
    nb = execute("02_ablations.ipynb", monkeypatch)
    assert not errors(nb)
    assert "Memory-R1-GRPO" in text_of(nb)


def _publish_rows(folder: Path, rows: dict[str, float]) -> None:
    """Eval folders as `memr1 ablate --publish` leaves them, with answers right on a share of the
    questions per row, and the compare table against memr1-untrained."""
    from memory_r1.eval.compare import BootstrapSettings, compare_folders
    from memory_r1.eval.report import summary_table
    from memory_r1.metrics import answer_scores

    for name, share in rows.items():
        out = folder / name / "val"
        out.mkdir(parents=True)
        rng = random.Random(name)
        records = []
        for i in range(40):
            gold = f"gold answer {i}"
            pred = gold if rng.random() < share else "something else"
            records.append({"qid": f"conv-30/q{i}", "question": f"q{i}?", "gold": gold, "category": 1 + i % 4,
                            "prediction": pred, **answer_scores(pred, gold), "judge": None})
        (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (out / "summary.json").write_text(json.dumps({"judge": "none", "rows": summary_table(records)}))
    others = [n for n in rows if n != "memr1-untrained"]
    compare_folders(folder / "memr1-untrained" / "val", [folder / n / "val" for n in others],
                    names=["memr1-untrained", *others], out=folder / "compare-val",
                    settings=BootstrapSettings(resamples=500))


def test_ablations_notebook_with_published_rows(monkeypatch, tmp_path):
    _publish_rows(tmp_path, {"memr1-untrained": 0.2, "answer-grpo": 0.9, "rag-turns": 0.2, "answer-ppo": 0.0})
    nb = execute("02_ablations.ipynb", monkeypatch, MEMR1_NB_ABLATIONS=str(tmp_path))
    text = text_of(nb)
    assert not errors(nb)
    assert "4 of " in text and "row-slices published" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    # computed verdicts: far above the base, below it, from the compare table and from predictions
    assert "answer-grpo vs memr1-untrained on val (40 questions)" in text
    assert "the paper: RL-trained agents beat the prompted / untrained ones. F1: same direction" in text
    assert "answer-ppo vs memr1-untrained on val (40 questions)" in text and "F1: opposite" in text
    assert "answer-grpo vs answer-ppo on val (40 questions)" in text  # neither is the base
    assert "full-context vs memr1-untrained" not in text and "memr1-untrained vs full-context on val: not run" in text
    assert "--rows full-context --slices val" in text


def test_training_notebook_runs(monkeypatch):
    nb = execute("03_training.ipynb", monkeypatch)
    text = text_of(nb)
    assert not errors(nb)
    assert "answer GRPO: held-out 0.138 -> 0.171" in text
    assert "hold no response length" in text  # the committed runs predate it; said so


@pytest.mark.parametrize("name", ["01_walkthrough.ipynb", "02_ablations.ipynb", "03_training.ipynb"])
def test_committed_notebooks_carry_their_outputs(name):
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), "execute it: python notebooks/run.py"
    assert not errors(nb)
    assert path.stat().st_size < 300_000
