"""Both stages' rows written as parquet and read back, plainly and by verl's own RL dataset class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memory_r1.train.verl.rows import RowsError, read_rows, write_rows


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
    with pytest.raises(RowsError):
        write_rows([], tmp_path / "empty.parquet")
