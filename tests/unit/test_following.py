"""Whether a database standby keeps up with the active it follows (agent/following.py): the
decision, with the time given and the active's answer faked."""

from __future__ import annotations

import asyncio

from vimha.agent.following import Following


class Active:
    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, address: str) -> bool:
        self.asked.append(address)
        return self.answers


def judge(f: Following, receiving: bool, now: float) -> str | None:
    return asyncio.run(f.judge(receiving, now))


def test_a_standby_receiving_or_following_nothing_is_fine() -> None:
    active = Active(True)
    f = Following(10.0, active)
    assert judge(f, False, 0.0) is None  # follows nothing yet
    f.follows("10.0.0.1:5432")
    assert judge(f, True, 100.0) is None
    assert active.asked == [] and not f.replace


def test_one_that_received_nothing_from_an_active_that_answers_cannot_follow_it() -> None:
    active = Active(True)
    f = Following(10.0, active)
    f.follows("10.0.0.1:5432")
    assert judge(f, False, 0.0) is None
    assert judge(f, False, 9.9) is None  # within the grace: the active is not even asked
    assert active.asked == []
    why = judge(f, False, 10.0)
    assert why is not None and "10.0.0.1:5432" in why and "10 s" in why
    assert f.replace
    assert judge(f, True, 11.0) is None and not f.replace  # it received again after all


def test_while_the_active_does_not_answer_the_standby_is_fine_and_asks_once_a_second() -> None:
    active = Active(False)
    f = Following(10.0, active)
    f.follows("10.0.0.1:5432")
    judge(f, False, 0.0)
    for now in (10.0, 10.3, 10.6, 10.9, 11.0):
        assert judge(f, False, now) is None
    assert len(active.asked) == 2 and not f.replace
    active.answers = True
    assert judge(f, False, 12.0) is not None


def test_a_new_active_starts_the_grace_again() -> None:
    f = Following(10.0, Active(True))
    f.follows("a:1")
    judge(f, False, 0.0)
    f.follows("b:1")
    assert judge(f, False, 12.0) is None
    assert judge(f, False, 22.0) is not None
    f.follows("b:1")  # the same active again: no new grace
    assert judge(f, False, 23.0) is not None
