"""Run folders (memory_r1.runs): the manifest every run writes and keeps across resumes, the resume
fingerprint, seeding."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest

from memory_r1 import runs


def test_new_manifest_records_the_run(tmp_path):
    data = tmp_path / "locomo10.json"
    data.write_text("[]")
    m = runs.new_manifest({"config": {"a": 1}}, seed=3, data_path=data, measure_host=False)
    assert m["config"] == {"a": 1} and m["seed"] == 3 and m["data_path"] == str(data)
    assert m["data_sha256"] == hashlib.sha256(b"[]").hexdigest()
    assert {"python"} <= set(m["versions"]) and set(m["host"]) == {"cpus", "platform"}
    assert m["started"] and "git_commit" in m
    assert runs.new_manifest({}, seed=0, data_path=data, data_sha256="given", measure_host=False)["data_sha256"] == "given"


def test_write_manifest_keeps_started_and_counts_resumes(tmp_path):
    first = runs.write_manifest(tmp_path, {"config": {"a": 1}, "started": "t0"})
    assert first == {"config": {"a": 1}, "started": "t0"}
    again = runs.write_manifest(tmp_path, {"config": {"a": 1}, "started": "t1"})
    assert again["started"] == "t0" and again["resumed"] == 1
    same = runs.write_manifest(tmp_path, {"config": {"a": 1}, "started": "t2"}, resumed=False)
    assert same["resumed"] == 1
    assert json.loads((tmp_path / "manifest.json").read_text()) == same
    assert runs.update_manifest(tmp_path, reused={"n": 2})["reused"] == {"n": 2}
    assert runs.read_manifest(tmp_path)["started"] == "t0" and runs.read_manifest(tmp_path / "none") is None


def test_write_manifest_check_refuses_before_writing(tmp_path):
    runs.write_manifest(tmp_path, {"config": {"a": 1}})

    def refuse(old):
        if runs.differing_keys(old["config"], {"a": 2}, ["a"]):
            raise ValueError("another run")

    with pytest.raises(ValueError, match="another run"):
        runs.write_manifest(tmp_path, {"config": {"a": 2}}, check=refuse)
    assert runs.read_manifest(tmp_path) == {"config": {"a": 1}}


def test_differing_keys_with_a_value_function():
    old, new = {"judge": {"backend": "self"}}, {"judge": {"backend": "self", "prompt": "mem0"}}
    assert runs.differing_keys(old, new, ["judge"]) == ["judge"]
    with_default = lambda cfg, k: {"prompt": "mem0", **cfg[k]}  # noqa: E731
    assert runs.differing_keys(old, new, ["judge"], with_default) == []


def test_seed_everything_repeats_the_draws():
    runs.seed_everything(7)
    a = (random.random(), np.random.rand())
    runs.seed_everything(7)
    assert (random.random(), np.random.rand()) == a
