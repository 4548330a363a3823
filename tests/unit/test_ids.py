"""Job ids sort by creation; lease tokens name their job and nothing else parses."""

from __future__ import annotations

import pytest

from dispatcher.domain import ids
from dispatcher.domain.errors import InvalidArgument


def test_ids_made_in_the_same_millisecond_still_sort_in_creation_order() -> None:
    gen = ids.JobIdGenerator()
    made = [gen.new(1_800_000_000_000) for _ in range(1000)]
    made += [gen.new(1_800_000_000_001) for _ in range(10)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_a_clock_stepping_back_does_not_break_the_order() -> None:
    gen = ids.JobIdGenerator()
    a = gen.new(1_800_000_000_500)
    b = gen.new(1_800_000_000_100)
    assert a < b


def _decode(text: str) -> int:
    """Crockford base32 back to an integer, one character at a time."""
    value = 0
    for char in text:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    return value


def test_an_id_is_the_ulid_spec_encoding_of_time_and_random_bits() -> None:
    # The spec's example (github.com/ulid/spec): time 1469918176385 is "01ARYZ6S41".
    assert ids.encode_ulid(1469918176385 << 80) == "01ARYZ6S41" + "0" * 16
    assert ids.encode_ulid(_decode("01ARZ3NDEKTSV4RRFFQ69G5FAV")) == "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    for value in (0, 1, 31, 32, 1023, 1024, 2**80 - 1, 2**80, 2**128 - 1):
        text = ids.encode_ulid(value)
        assert len(text) == 26
        assert _decode(text) == value


def test_a_generated_id_encodes_its_millisecond_and_its_random_part() -> None:
    gen = ids.JobIdGenerator()
    for ms in (0, 1, 1469918176385, 1469918176385, 1469918176386, 2**48 - 1):
        text = gen.new(ms)
        value = _decode(text)
        assert (value >> 80, len(text)) == (ms, 26)
        assert ids.encode_ulid(value) == text
    assert ids.JobIdGenerator().new(1469918176385).startswith("01ARYZ6S41")  # the spec's time


def test_id_text_order_is_numeric_order() -> None:
    values = sorted({(n * 0x9E3779B97F4A7C15) % 2**128 for n in range(1, 500)})
    texts = [ids.encode_ulid(v) for v in values]
    assert texts == sorted(texts)


def test_a_token_names_its_job() -> None:
    token = ids.new_lease_token("01M83HEKD3AA16Q5HS2VATHPWR")
    assert ids.job_id_of_token(token) == "01M83HEKD3AA16Q5HS2VATHPWR"
    assert ids.new_lease_token("01M83HEKD3AA16Q5HS2VATHPWR") != token


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "x",
        "01M83HEKD3AA16Q5HS2VATHPWR",
        "01M83HEKD3AA16Q5HS2VATHPWR." + "g" * 32,
        "01M83HEKD3AA16Q5HS2VATHPWR." + "0" * 31,
        "01m83hekd3aa16q5hs2vathpwr." + "0" * 32,
        "{evil}:key." + "0" * 32,
        "01M83HEKD3AA16Q5HS2VATHPWR." + "0" * 32 + "\n",
    ],
)
def test_a_malformed_token_is_invalid_argument(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        ids.job_id_of_token(bad)


def test_a_transition_writes_every_column_a_transition_may_change_and_no_other() -> None:
    from dispatcher.domain.models import Job, JobChange, JobState, Priority, RetryPolicy
    from dispatcher.store.sql import runs

    j = Job(
        "01M83HEKD3AA16Q5HS2VATHPWR",
        "d",
        "q",
        "t",
        b"",
        "",
        Priority.DEFAULT,
        {},
        JobState.QUEUED,
        0,
        3,
        RetryPolicy(),
        1000,
        0,
        0,
    )
    params = runs._mutable_params(JobChange(j, j, 0))
    assert set(params) == set(runs._MUTABLE) | {"b_id", "b_version"}
