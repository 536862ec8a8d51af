"""The Memory Manager's parsed operations applied to a real bank (qdrant local mode, MiniLM)."""

from __future__ import annotations

import pytest

from memory_r1.agents.manager import apply_operations, build_manager_messages, parse_operations
from memory_r1.memory import BankFactory, MiniLMEmbedder


@pytest.fixture(scope="module")
def factory():
    f = BankFactory.open(path=":memory:", embedder=MiniLMEmbedder().load())
    yield f
    f.close()


def _ops_for(bank, completion):
    related = bank.list()
    _, id_map = build_manager_messages(["x"], related, owner="Caroline")
    return parse_operations(completion, id_map), related


def test_each_op_on_a_real_bank(factory):
    bank = factory.bank("conv-t/Caroline")
    parsed, _ = _ops_for(bank, "ADD: Caroline has a dog named Rex\nADD: Caroline lives in Boston")
    stats = apply_operations(bank, parsed.ops, timestamp="8 May, 2023")
    assert (stats.added, stats.failed) == (2, 0)
    items = {m.text: m for m in bank.list()}
    assert set(items) == {"Caroline has a dog named Rex", "Caroline lives in Boston"}
    assert all(m.timestamp == "8 May, 2023" for m in items.values())

    # ids the manager sees are prompt integers in bank.list() order
    parsed, related = _ops_for(bank, "UPDATE 1: Caroline moved from Boston to Oslo\nDELETE 0\nNONE")
    assert [m.text for m in related] == ["Caroline has a dog named Rex", "Caroline lives in Boston"]
    stats = apply_operations(bank, parsed.ops, timestamp="9 May, 2023")
    assert (stats.updated, stats.deleted, stats.noop, stats.failed) == (1, 1, 1, 0)
    assert [m.text for m in bank.list()] == ["Caroline moved from Boston to Oslo"]
    moved = bank.list()[0]
    hist = bank.history(moved.id)
    assert [(h.op, h.old_text, h.new_text, h.actor) for h in hist] == [
        ("ADD", None, "Caroline lives in Boston", "manager"),
        ("UPDATE", "Caroline lives in Boston", "Caroline moved from Boston to Oslo", "manager"),
    ]
    dog = items["Caroline has a dog named Rex"]
    assert [h.op for h in bank.history(dog.id)] == ["ADD", "DELETE"]


def test_invented_id_and_garbage_leave_bank_unchanged(factory):
    bank = factory.bank("conv-t/Melanie")
    apply_operations(bank, parse_operations("ADD: Melanie paints sunsets", {}).ops)
    before = bank.snapshot()
    parsed, _ = _ops_for(bank, "UPDATE 7: Melanie hates painting\nDELETE 3")
    assert parsed.invalid_ids == ["7", "3"] and parsed.ops == []
    apply_operations(bank, parsed.ops)
    garbage, _ = _ops_for(bank, "Melanie's memories look fine to me!")
    assert not garbage.parsed
    apply_operations(bank, garbage.ops)
    assert bank.snapshot() == before


def test_op_on_memory_deleted_in_same_batch_is_refused_not_misapplied(factory):
    bank = factory.bank("conv-t/Jon")
    apply_operations(bank, parse_operations("ADD: Jon is a banker\nADD: Jon likes dancing", {}).ops)
    parsed, _ = _ops_for(bank, "DELETE 0\nUPDATE 0: Jon was a banker until January 2023")
    stats = apply_operations(bank, parsed.ops)
    assert (stats.deleted, stats.updated, stats.failed) == (1, 0, 1)
    assert [m.text for m in bank.list()] == ["Jon likes dancing"]


def test_verbatim_duplicate_adds_are_skipped_and_counted(factory):
    bank = factory.bank("conv-t/Gina")
    stats = apply_operations(bank, parse_operations("ADD: Gina loves music\nADD: gina  loves music", {}).ops)
    assert (stats.added, stats.duplicate) == (1, 1)
    stats = apply_operations(bank, parse_operations("ADD: Gina loves music\nADD: Gina lost her job", {}).ops)
    assert (stats.added, stats.duplicate) == (1, 1)
    assert len(bank) == 2
