"""How a Galera member starts (issue 5, ARCH-5): join a primary component, bootstrap a new
cluster only from the member with every committed transaction, or wait."""

from __future__ import annotations

import pytest

from vimha.domain.galera import (
    Act,
    Member,
    State,
    parse_grastate,
    plan,
    recovered_position,
)

DECLARED = ("a", "b", "c")


def members(*ms: Member) -> dict[str, Member]:
    return {m.name: m for m in ms}


def stopped(name: str, seqno: int, live: bool = True, safe: bool = False) -> Member:
    return Member(name, live, State.STOPPED, seqno, safe)


def test_a_member_joins_a_running_primary_component() -> None:
    view = members(stopped("a", 5), Member("b", True, State.PRIMARY), stopped("c", 3))
    assert plan("a", DECLARED, view, None).act is Act.JOIN


def test_a_primary_member_whose_agent_is_gone_is_not_joined() -> None:
    view = members(stopped("a", 5), Member("b", False, State.PRIMARY), stopped("c", 3))
    decided = plan("a", DECLARED, view, None)
    assert decided.act is Act.WAIT and "b" in decided.reason


def test_all_stopped_the_highest_position_bootstraps_the_others_wait() -> None:
    view = members(stopped("a", 10), stopped("b", 12), stopped("c", 12))
    assert plan("b", DECLARED, view, None).act is Act.BOOTSTRAP  # highest, then first name
    assert plan("a", DECLARED, view, None).act is Act.WAIT
    assert plan("c", DECLARED, view, None).act is Act.WAIT


def test_no_bootstrap_while_a_member_has_not_reported() -> None:
    view = members(stopped("a", 10), stopped("b", 12))
    decided = plan("b", DECLARED, view, None)
    assert decided.act is Act.WAIT and "c" in decided.reason
    down = members(stopped("a", 10), stopped("b", 12), Member("c", True, State.DOWN))
    assert plan("b", DECLARED, down, None).act is Act.WAIT  # its position not read yet


def test_the_member_that_left_last_and_cleanly_bootstraps_without_the_others() -> None:
    view = members(stopped("a", 1), stopped("b", 7, safe=True))
    assert plan("b", DECLARED, view, None).act is Act.BOOTSTRAP
    assert plan("a", DECLARED, view, None).act is Act.WAIT


def test_a_claimed_bootstrap_is_joined_not_repeated() -> None:
    view = members(stopped("a", 12), stopped("b", 12), stopped("c", 12))
    assert plan("a", DECLARED, view, "c").act is Act.JOIN
    assert plan("a", DECLARED, view, "a").act is Act.BOOTSTRAP


def test_minorities_everywhere_the_most_advanced_takes_the_primary() -> None:
    view = members(
        Member("a", True, State.NON_PRIMARY, 40),
        Member("b", True, State.NON_PRIMARY, 41),
        stopped("c", 39),
    )
    assert plan("b", DECLARED, view, None).act is Act.BOOTSTRAP
    assert plan("a", DECLARED, view, None).act is Act.WAIT


def test_a_cut_off_member_does_nothing_while_the_majority_is_primary() -> None:
    view = members(
        Member("a", True, State.NON_PRIMARY, 50),
        Member("b", True, State.PRIMARY),
        Member("c", True, State.PRIMARY),
    )
    assert plan("a", DECLARED, view, None).act is Act.JOIN  # i.e. no pc.bootstrap


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "# GALERA saved state\nversion: 2.1\nuuid:    24b8-11f1:x\nseqno:   42\n"
            "safe_to_bootstrap: 1\n",
            ("24b8-11f1:x", 42, True),
        ),
        ("uuid: u\nseqno: -1\nsafe_to_bootstrap: 0\n", ("u", -1, False)),
        ("", ("", -1, False)),
        ("seqno: x\n", ("", -1, False)),
    ],
)
def test_grastate(text: str, expected: tuple[str, int, bool]) -> None:
    assert parse_grastate(text) == expected


def test_recovered_position_from_the_log() -> None:
    log = (
        "2026-11-26 0:38:33 0 [Note] InnoDB: something\n"
        "2026-11-26 0:38:33 0 [Note] WSREP: Recovered position: 24b8799c-e931-11f1:5\n"
    )
    assert recovered_position(log) == ("24b8799c-e931-11f1", 5)
    assert recovered_position("nothing here") is None


def test_members_of_different_histories_never_bootstrap() -> None:
    """A member bootstrapped apart (a new state UUID) counts its seqno from 1 again: compared
    with the others' it would look behind, or ahead, and either bootstrap loses commits."""
    view = members(
        Member("a", True, State.NON_PRIMARY, 4_200, history="bee5118e"),
        Member("b", True, State.STOPPED, 10_474, history="a07a745e"),
        Member("c", True, State.STOPPED, 10_400, history="a07a745e"),
    )
    for me in DECLARED:
        decided = plan(me, DECLARED, view, None)
        assert decided.act is Act.WAIT and "different histories" in decided.reason, me


def test_a_member_without_data_does_not_make_a_second_history() -> None:
    view = members(
        Member("a", True, State.STOPPED, -1, history=""),
        Member("b", True, State.STOPPED, 12, history="a07a745e"),
        Member("c", True, State.STOPPED, 10, history="a07a745e"),
    )
    assert plan("b", DECLARED, view, None).act is Act.BOOTSTRAP


def test_a_restarted_member_waits_until_the_others_let_its_previous_run_go() -> None:
    """Killed and restarted at once, a member would rejoin before the others evicted its
    previous run: they would fail to agree on a view and all fall to non-primary."""
    counting_me = members(
        stopped("a", 5),
        Member("b", True, State.PRIMARY, size=3),
        Member("c", True, State.PRIMARY, size=3),
    )
    decided = plan("a", DECLARED, counting_me, None)
    assert decided.act is Act.WAIT and decided.evicting and "previous run" in decided.reason
    assert plan("a", DECLARED, counting_me, None, impatient=True).act is Act.JOIN
    let_go = members(
        stopped("a", 5),
        Member("b", True, State.PRIMARY, size=2),
        Member("c", True, State.PRIMARY, size=2),
    )
    assert plan("a", DECLARED, let_go, None).act is Act.JOIN


def test_of_equally_advanced_members_one_the_others_reach_turns_primary() -> None:
    """All non-primary after a cut: a tie goes to the member whose component is largest, not
    to the one cut off alone (its primary component would serve no client)."""
    view = members(
        Member("a", True, State.NON_PRIMARY, 900, history="h", size=1),
        Member("b", True, State.NON_PRIMARY, 900, history="h", size=2),
        Member("c", True, State.NON_PRIMARY, 900, history="h", size=2),
    )
    assert plan("b", DECLARED, view, None).act is Act.BOOTSTRAP
    assert plan("a", DECLARED, view, None).act is Act.WAIT
    ahead = members(
        Member("a", True, State.NON_PRIMARY, 901, history="h", size=1),
        Member("b", True, State.NON_PRIMARY, 900, history="h", size=2),
        Member("c", True, State.NON_PRIMARY, 900, history="h", size=2),
    )
    assert plan("a", DECLARED, ahead, None).act is Act.BOOTSTRAP  # it has more: never lost
