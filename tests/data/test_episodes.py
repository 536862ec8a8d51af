"""Episode builders on the real train conversation (conv-26) with LoCoMo's observation facts as the
bank source, and the parquet rows read back by verl's own RL dataset class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memory_r1.data import load_split
from memory_r1.data.episodes import (
    ANSWER_SOURCE,
    MANAGER_SOURCE,
    EpisodeError,
    answer_rows,
    evidence_turns,
    load_observations,
    manager_rows,
    observation_banks,
    read_rows,
    row_stats,
    window_conversation,
    write_rows,
)


@pytest.fixture(scope="module")
def train(locomo_path):
    return load_split("train", locomo_path)


@pytest.fixture(scope="module")
def embedder():
    from memory_r1.memory import CachingEmbedder, MiniLMEmbedder

    return CachingEmbedder(MiniLMEmbedder())


@pytest.fixture(scope="module")
def manager_episodes(train, embedder, locomo_path):
    return manager_rows(train, source="observations", answer_top_k=5, embedder=embedder, data=locomo_path)


@pytest.fixture(scope="module")
def answer_episodes(train, embedder, locomo_path):
    from memory_r1.memory import BankFactory

    with BankFactory.open(path=":memory:", embedder=embedder) as factory:
        sizes = observation_banks(train.conversations, factory, locomo_path)
        rows = answer_rows(train, factory, top_k=5, distill=False, source="observations")
    return rows, sizes


def test_observations_of_conv26(locomo_path, train):
    obs = load_observations(["conv-26"], locomo_path)["conv-26"]
    conv = train.conversations[0]
    positions = {t.dia_id: i for i, t in enumerate(conv.turns)}
    assert len(obs) == 184
    assert {o.speaker for o in obs} == set(conv.speakers)
    assert all(o.last_turn(positions) is not None for o in obs)  # every fact cites a real turn
    assert obs[0].date == "1:56 pm on 8 May, 2023" and obs[0].session == 1
    with pytest.raises(EpisodeError, match="conv-99"):
        load_observations(["conv-99"], locomo_path)


def test_evidence_turns_of_conv26(train):
    conv = train.conversations[0]
    ets = evidence_turns(conv, train.questions())
    assert len(ets) == 133  # distinct turns cited by the 152 train questions
    assert sum(len(e.questions) for e in ets) == 203  # (turn, question) links
    assert len({q.qid for e in ets for q in e.questions}) == 150  # 2 questions cite no turn
    assert [e.position for e in ets] == sorted(e.position for e in ets)
    first = ets[0]
    assert all(first.turn.dia_id in q.evidence for q in first.questions)


def test_answer_rows(answer_episodes, train):
    rows, sizes = answer_episodes
    assert len(rows) == 152 == len(train.questions())
    assert sizes == {"conv-26/Caroline": 102, "conv-26/Melanie": 82}
    for r in rows:
        assert r["data_source"] == ANSWER_SOURCE and r["reward_model"]["style"] == "rule"
        assert len(r["extra_info"]["memory_ids"]) == 10  # 5 + 5 per question
        assert r["reward_model"]["ground_truth"] == r["extra_info"]["answer"]
    r = rows[0]
    assert r["extra_info"]["speakers"] == ["Caroline", "Melanie"] and r["extra_info"]["source"] == "observations"
    user = r["prompt"][-1]["content"]
    assert user.startswith("Memories for Caroline:") and user.endswith(f"Question: {r['extra_info']['question']}")
    assert user.count("\n- ") == 10 - 1 + 1  # ten memory lines (the first follows the header line)


def test_manager_rows(manager_episodes):
    rows = manager_episodes
    assert len(rows) == 133
    stats = row_stats(rows)
    assert stats["linked_questions"] == 203
    assert stats["facts_sources"] == {"observation": 92, "turn": 41}
    for r in rows:
        info = r["extra_info"]
        assert r["data_source"] == MANAGER_SOURCE
        assert json.loads(r["reward_model"]["ground_truth"]) == [q["answer"] for q in info["questions"]]
        assert info["owner"] in info["speakers"] and info["facts"]
        banks = json.loads(info["banks"])
        assert set(banks) == set(info["speakers"])
        # the prompt's ids map to memories of the owner's bank state
        owner_ids = {m["id"] for m in banks[info["owner"]]["memories"]}
        assert set(json.loads(info["id_map"]).values()) <= owner_ids
    # states grow along the dialogue: the first evidence turn has the fewest preceding facts
    sizes = [sum(r["extra_info"]["bank_sizes"]) for r in rows]
    assert sizes[0] == min(sizes) and sizes[-1] == max(sizes) <= 184


def test_manager_state_is_the_preceding_turns_only(manager_episodes, train):
    conv = train.conversations[0]
    positions = {t.dia_id: i for i, t in enumerate(conv.turns)}
    for r in manager_episodes[::10]:
        info = r["extra_info"]
        here = positions[info["dia_id"]]
        for snap in json.loads(info["banks"]).values():
            for m in snap["memories"]:
                assert max(positions[d] for d in m["metadata"]["dia_ids"]) < here


def test_snapshot_round_trip(manager_episodes, embedder):
    from memory_r1.memory import BankFactory

    info = manager_episodes[40]["extra_info"]
    snaps = json.loads(info["banks"])
    with BankFactory.open(path=":memory:", embedder=embedder) as f:
        for speaker, snap in snaps.items():
            bank = f.bank(f"rt/{speaker}")
            bank.restore(snap)
            again = bank.snapshot()
            assert [(m["id"], m["text"], m["timestamp"]) for m in again["memories"]] == [
                (m["id"], m["text"], m["timestamp"]) for m in snap["memories"]
            ]


def test_history_window(train, embedder, locomo_path):
    rows = manager_rows(train, history_turns=20, embedder=embedder, data=locomo_path, max_turns=30)
    conv = train.conversations[0]
    positions = {t.dia_id: i for i, t in enumerate(conv.turns)}
    for r in rows:
        here = positions[r["extra_info"]["dia_id"]]
        assert r["extra_info"]["history_turns"] == 20
        for snap in json.loads(r["extra_info"]["banks"]).values():
            for m in snap["memories"]:
                assert here - 20 <= max(positions[d] for d in m["metadata"]["dia_ids"]) < here


def test_manager_rows_need_a_state_source(train):
    with pytest.raises(EpisodeError, match="observations or pipeline"):
        manager_rows(train, source="banks")
    with pytest.raises(EpisodeError, match="needs an LLM"):
        manager_rows(train, source="pipeline")


def test_window_conversation(train):
    conv = train.conversations[0]
    w = window_conversation(conv, 10, 25, "D2:1")
    assert w.conversation_id == "conv-26@D2:1" and [t.dia_id for t in w.turns] == [t.dia_id for t in conv.turns[10:25]]
    assert all(s.date_time for s in w.sessions) and w.qa == []


def _tiny_tokenizer_dir(path: Path) -> Path:
    """A word-level tokenizer with a chat template (no download, no model)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "<eos>", "<|user|>", "<|system|>", "<|assistant|>"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="<eos>")
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <eos> {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    fast.save_pretrained(str(path))
    return path


def test_parquet_rows_load_through_verls_dataset(tmp_path, answer_episodes, manager_episodes):
    pytest.importorskip("verl")
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    tok = AutoTokenizer.from_pretrained(str(_tiny_tokenizer_dir(tmp_path / "tok")))
    # workers None: no process pool (HF datasets replaces os.environ by a copy when it starts one,
    # which would leave the rest of the test session with a detached environment)
    cfg = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 4096, "filter_overlong_prompts": True,
                            "truncation": "error", "return_raw_chat": True, "filter_overlong_prompts_workers": None,
                            "cache_dir": str(tmp_path / "cache")})
    for rows, name in ((answer_episodes[0], "answer"), (manager_episodes, "manager")):
        path = write_rows(rows, tmp_path / f"{name}.parquet")
        assert read_rows(path)[3] == json.loads(json.dumps(rows[3]))  # plain round trip
        ds = RLHFDataset(str(path), tok, cfg)
        assert len(ds) == len(rows)
        item = ds[3]
        assert item["data_source"] == rows[3]["data_source"]
        assert list(item["raw_prompt"]) == rows[3]["prompt"]
        assert item["reward_model"]["ground_truth"] == rows[3]["reward_model"]["ground_truth"]
        assert item["extra_info"]["index"] == 3 and item["index"] == 3
        if name == "manager":  # the bank state travels in the row
            assert json.loads(item["extra_info"]["banks"]) == json.loads(rows[3]["extra_info"]["banks"])
            assert item["extra_info"]["questions"] == rows[3]["extra_info"]["questions"]
        batch = collate_fn([ds[0], ds[1]])
        assert list(batch["data_source"]) == [rows[0]["data_source"]] * 2
    with pytest.raises(EpisodeError):
        write_rows([], tmp_path / "empty.parquet")


class ScriptedLLM:
    """Stands in for the extractor + Memory Manager LLM: the extractor states one fact per turn
    (the turn's first words), the manager ADDs every new fact."""

    name = "scripted"
    context_window = 8192

    def __init__(self):
        self.prompts = 0

    def generate(self, conversations, params):
        from memory_r1.agents.extractor import EXTRACT_SYSTEM
        from memory_r1.llm.base import Generation

        out = []
        for conv in conversations:
            self.prompts += 1
            last = conv[-1]["content"]
            if conv[0]["content"] == EXTRACT_SYSTEM:
                speaker, _, said = last.splitlines()[-1].partition(": ")
                text = f"- {speaker} said: {' '.join(said.split()[:8])}"
            else:
                facts = last.split("NEW FACTS:\n", 1)[1].splitlines()
                text = "\n".join(f"ADD: {f[2:]}" for f in facts if f.startswith("- "))
            out.append(Generation(text=text, prompt_tokens=1, completion_tokens=1, finish_reason="stop"))
        return out

    def count_tokens(self, messages):
        return 1

    def close(self):
        pass


def test_pipeline_source_builds_states_with_the_manager(train, embedder):
    from memory_r1.config import load_recipe, recipe_path

    ingest = load_recipe(recipe_path("smollm2-135m", "eval"))["ingest"]
    llm = ScriptedLLM()
    rows = manager_rows(train, source="pipeline", history_turns=6, llm=llm, ingest=ingest, embedder=embedder,
                        max_turns=3)
    assert len(rows) == 3 and llm.prompts > 0
    conv = train.conversations[0]
    turns = {t.dia_id: i for i, t in enumerate(conv.turns)}
    for r in rows:
        info = r["extra_info"]
        assert info["source"] == "pipeline" and info["facts_source"] == "extractor"
        assert info["facts"][0].startswith(f"{info['owner']} said:")
        here = turns[info["dia_id"]]
        window = conv.turns[max(0, here - 6):here]
        snaps = json.loads(info["banks"])
        for speaker in info["speakers"]:  # one ADD per preceding turn of that speaker in the window
            assert len(snaps[speaker]["memories"]) == sum(1 for t in window if t.speaker == speaker)


def test_answer_rows_from_pipeline_banks(train, embedder):
    from memory_r1.config import load_recipe, recipe_path
    from memory_r1.data.episodes import check_banks, pipeline_banks
    from memory_r1.memory import BankFactory

    ingest = {**load_recipe(recipe_path("smollm2-135m", "eval"))["ingest"], "max_sessions": 1}
    with BankFactory.open(path=":memory:", embedder=embedder) as factory:
        with pytest.raises(EpisodeError, match="lack"):
            check_banks(train.conversations, factory)
        stats = pipeline_banks(train.conversations, factory, ScriptedLLM(), ingest)
        sizes = check_banks(train.conversations, factory)
        rows = answer_rows(train, factory, top_k=30, source="pipeline")
    assert stats["turns"] == len(train.conversations[0].sessions[0].turns)
    assert sum(sizes.values()) == stats["ops"]["added"] > 0
    assert len(rows) == 152 and rows[0]["extra_info"]["source"] == "pipeline"
    assert max(len(r["extra_info"]["memory_ids"]) for r in rows) == sum(sizes.values())  # fewer than 30 each
