"""A MariaDB member's replication position: domain 0's sequence number (the freshest replica
is the one promoted)."""

from __future__ import annotations

import pytest

from vimha.agent.mariadb_handler import gtid_position


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("", 0),
        (None, 0),
        ("0-11-25", 25),
        ("1-5-900,0-12-40", 40),  # another domain does not count
        ("0-3269261769-100", 100),  # the server id changes with each primary, not the seq
        ("garbage", 0),
    ],
)
def test_position_is_the_sequence_number_of_domain_0(text: str | None, position: int) -> None:
    assert gtid_position(text) == position


def test_a_failed_check_says_what_failed_even_without_a_message() -> None:
    from vimha.agent.handlers import failure

    assert failure(TimeoutError()) == "no answer in time"
    assert failure(ConnectionRefusedError(111, "refused")) == "[Errno 111] refused"
    assert failure(OSError()) == "OSError"
