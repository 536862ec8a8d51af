"""LoCoMo's observation facts of the real train conversation (conv-26)."""

from __future__ import annotations

import pytest

from memory_r1.data import load_split
from memory_r1.data.locomo import LocomoDataError
from memory_r1.data.observations import load_observations


def test_observations_of_conv26(locomo_path):
    obs = load_observations(["conv-26"], locomo_path)["conv-26"]
    conv = load_split("train", locomo_path).conversations[0]
    positions = {t.dia_id: i for i, t in enumerate(conv.turns)}
    assert len(obs) == 184
    assert {o.speaker for o in obs} == set(conv.speakers)
    assert all(o.last_turn(positions) is not None for o in obs)  # every fact cites a real turn
    assert obs[0].date == "1:56 pm on 8 May, 2023" and obs[0].session == 1
    with pytest.raises(LocomoDataError, match="conv-99"):
        load_observations(["conv-99"], locomo_path)
