"""`memr1` through typer's test runner, and the fast --help in a real subprocess."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time

from typer.testing import CliRunner

from memory_r1.cli import app

runner = CliRunner()


def test_help_lists_groups_fast():
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "memory_r1.cli", "--help"], capture_output=True, text=True, check=True
    )
    elapsed = time.perf_counter() - t0
    for group in ("data", "eval", "train", "bench"):
        assert f" {group} " in out.stdout
    # the heavy stack is not imported by --help (a regression would also make it slow)
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from memory_r1.cli import app; "
         "print(sorted(m for m in ('torch','transformers','qdrant_client','ray','verl','pandas') "
         "if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "[]"
    assert elapsed < 10  # generous bound for a loaded CI box; benchmarks measure the real number


def test_stats_json_numbers(locomo_path):
    res = runner.invoke(app, ["data", "stats", "--json", "--data", str(locomo_path)])
    assert res.exit_code == 0, res.output
    stats = json.loads(res.stdout)
    assert set(stats) == {"train", "val", "test"}
    assert stats["train"]["qa"] == 152
    assert stats["train"]["by_category"] == {"1": 32, "2": 37, "3": 13, "4": 70}
    assert stats["val"]["by_category"] == {"1": 11, "2": 26, "3": 0, "4": 44}
    assert stats["test"]["qa"] == 1307 and stats["test"]["turns"] == 5094
    assert stats["val"]["conversations"] == ["conv-30"]


def test_stats_table_and_split_filter(locomo_path):
    res = runner.invoke(
        app, ["data", "stats", "--split", "val", "--data", str(locomo_path)], env={"COLUMNS": "160"}
    )
    assert res.exit_code == 0
    assert "Open Domain" in res.stdout and "81" in res.stdout and "test" not in res.stdout.split("data:")[0]


def test_bad_data_one_line_exit_2(tmp_path, locomo_raw):
    raw = copy.deepcopy(locomo_raw)
    raw[0]["qa"][3]["category"] = 9
    bad = tmp_path / "locomo10.json"
    bad.write_text(json.dumps(raw))
    res = runner.invoke(app, ["data", "stats", "--data", str(bad)])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "conv-26.qa[3].category" in lines[0]
    assert "Traceback" not in res.output


def test_debug_shows_traceback(tmp_path):
    bad = tmp_path / "locomo10.json"
    bad.write_text('[{"sample_id": ')
    res = runner.invoke(app, ["--debug", "data", "validate", "--data", str(bad)])
    assert res.exit_code == 2
    assert "Traceback" in res.stderr and "invalid JSON" in res.stderr


def test_validate_real_file(locomo_path):
    res = runner.invoke(app, ["data", "validate", "--data", str(locomo_path)])
    assert res.exit_code == 0
    assert "10 conversations, 1986 QA, sha256 79fa87e90f04" in res.stdout


def test_download_refusal_is_one_line(tmp_path):
    src = tmp_path / "other.json"
    src.write_text("[]")
    res = runner.invoke(
        app, ["data", "download", "--dest", str(tmp_path / "c.json"), "--url", src.as_uri()]
    )
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "refused download" in res.stderr


def test_doctor_reports_the_machine_and_the_run_choices(tmp_path, monkeypatch):
    """`memr1 doctor` as CI runs it: a real measurement, one screen, and the same facts as JSON."""
    monkeypatch.setenv("MEMR1_CACHE", str(tmp_path / "cache"))
    t0 = time.perf_counter()
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    assert time.perf_counter() - t0 < 20
    for label in ("CPU", "flags", "matmul GFLOP/s", "dtype (auto)", "threads", "versions", "LoCoMo",
                  "smollm2-135m", "memory"):
        assert label in res.output
    res = runner.invoke(app, ["doctor", "--json", "--cached"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    from memory_r1 import hardware

    assert rep["run"]["dtype"] == hardware.resolve_cpu_dtype("auto")[0]
    assert rep["matmul_gflops"]["float32"] > 0 and rep["matmul_gflops"]["bfloat16"] > 0
    assert rep["cpu"]["flags"] == hardware.cpu_info()["flags"]
    assert rep["versions"]["torch"] and rep["data"]["locomo"].endswith("locomo10.json")
    assert rep["memory"]["total_gib"] > 0 and rep["disk"]["free_gib"] >= 0
