"""How a RabbitMQ member starts (issue 5, ARCH-5): rejoin with its data, join a running
member without it, form a new cluster only when there is none, once; and its status."""

from __future__ import annotations

import json

import pytest

from vimha.domain.rabbitmq import Act, ClusterStatus, Member, earlier_life, parse_status, plan

DECLARED = ("a", "b", "c")


def m(name: str, live: bool = True, running: bool = False, data: bool = False) -> Member:
    return Member(name, live, running, data, f"mq-{name}@10.0.0.1")


def view(*ms: Member) -> dict[str, Member]:
    return {x.name: x for x in ms}


def test_a_member_with_data_starts_and_rejoins_by_itself() -> None:
    assert plan("a", DECLARED, view(), True, None).act is Act.START


def test_a_member_without_data_joins_a_running_one() -> None:
    decided = plan("a", DECLARED, view(m("b", running=True), m("c")), False, None)
    assert decided.act is Act.JOIN and decided.peer == "mq-b@10.0.0.1"


def test_a_running_member_whose_agent_is_gone_is_not_joined() -> None:
    decided = plan("c", DECLARED, view(m("a", live=False, running=True)), False, None)
    assert decided.act is Act.FORM  # nobody live: c is the first live member


def test_the_first_live_member_forms_a_new_cluster_the_others_wait() -> None:
    fresh = view(m("a"), m("b"), m("c"))
    assert plan("a", DECLARED, fresh, False, None).act is Act.FORM
    assert plan("b", DECLARED, fresh, False, None).act is Act.WAIT
    assert plan("b", DECLARED, view(m("b"), m("c")), False, None).act is Act.FORM


def test_no_new_cluster_while_a_member_has_the_data_or_claimed_it() -> None:
    with_data = view(m("a"), m("b", data=True))
    decided = plan("a", DECLARED, with_data, False, None)
    assert decided.act is Act.WAIT and "b" in decided.reason
    assert plan("a", DECLARED, view(m("a"), m("c")), False, "c").act is Act.WAIT


@pytest.mark.parametrize(
    ("doc", "running", "partitions"),
    [
        (
            {"running_nodes": ["b", "a"], "disk_nodes": ["a", "b", "c"], "partitions": {}},
            ("a", "b"),
            (),
        ),
        ({"running_nodes": ["a"], "partitions": {"a": ["b", "c"]}}, ("a",), ("a",)),
    ],
)
def test_cluster_status(
    doc: dict[str, object], running: tuple[str, ...], partitions: tuple[str, ...]
) -> None:
    status = parse_status(json.dumps(doc))
    assert status.running == running and status.partitions == partitions


def test_what_the_tool_prints_after_its_answer_is_not_part_of_it() -> None:
    doc = {"running_nodes": ["a", "b"], "partitions": {}}
    text = json.dumps(doc, indent=1) + "\n" + json.dumps({"alarms": []}) + "\nWarning: busy\n"
    assert parse_status(text).running == ("a", "b")


def test_a_status_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_status("[]")
    with pytest.raises(ValueError):
        parse_status("Error: nope")


def test_a_wiped_node_waits_while_the_cluster_counts_its_earlier_life_running() -> None:
    me = "rabbit@a"
    remembered = ClusterStatus(
        ("rabbit@b", "rabbit@c"), ("rabbit@a", "rabbit@b", "rabbit@c"), (), ()
    )
    assert earlier_life(remembered, me) is None  # a member gone: forgotten, then joined
    unseen = ClusterStatus(remembered.members, remembered.members, (), ())
    assert "still counts rabbit@a" in str(earlier_life(unseen, me))
    assert earlier_life(ClusterStatus(("rabbit@b",), ("rabbit@b",), (), ()), me) is None
