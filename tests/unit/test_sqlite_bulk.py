"""SQLite's one-UPDATE Lease and Ack build their statement once per batch size:
parsing a VALUES list of hundreds of bind names cost more than running it."""

from __future__ import annotations

from dispatcher.store.sql import sqlite_bulk


def test_a_lease_of_the_same_size_reuses_the_statement_with_its_own_values() -> None:
    first, first_params = sqlite_bulk.lease_queued([("a", "ta"), ("b", "tb")])
    second, second_params = sqlite_bulk.lease_queued([("c", "tc"), ("d", "td")])
    third, _ = sqlite_bulk.lease_queued([("e", "te")])

    assert second is first
    assert third is not first
    assert first_params == {"grants_0_0": "a", "grants_0_1": "ta", "grants_1_0": "b",
                            "grants_1_1": "tb"}  # fmt: skip
    assert second_params["grants_1_0"] == "d"


def test_an_ack_of_the_same_size_reuses_the_statement_with_its_own_values() -> None:
    first, first_params = sqlite_bulk.ack_held([("a", "ta", b"r", "text/plain")])
    second, second_params = sqlite_bulk.ack_held([("b", "tb", b"", "")])

    assert second is first
    assert first_params == {"acks_0_0": "a", "acks_0_1": "ta", "acks_0_2": b"r",
                            "acks_0_3": "text/plain"}  # fmt: skip
    assert second_params == {"acks_0_0": "b", "acks_0_1": "tb", "acks_0_2": b"", "acks_0_3": ""}
    assert ":acks_0_3" in first.text and ":acks_1_0" not in first.text
