"""SOL 013 filter parsing and evaluation."""

from __future__ import annotations

import pytest

from vimha.domain.errors import InvalidInput
from vimha.domain.filters import known_paths, parse_filter

KNOWN = known_paths(
    [
        "id",
        "perceivedSeverity",
        "eventType",
        "isRootCause",
        "count",
        "tags",
        "faultDetails",
        "alarmRaisedTime",
        "location/*",
        "rootCauseFaultyResource/faultyResourceType",
        "name",
    ]
)

DOC = {
    "id": "a1",
    "perceivedSeverity": "CRITICAL",
    "eventType": "EQUIPMENT_ALARM",
    "isRootCause": True,
    "count": 7,
    "tags": ["red", "blue"],
    "faultDetails": ["psu 1 failed", "fan ok"],
    "alarmRaisedTime": "2026-01-02T03:04:05.000Z",
    "location": {"site": "s1", "rack": "r2"},
    "rootCauseFaultyResource": {"faultyResourceType": "COMPUTE"},
    "name": "a,b)c'd",
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("(eq,perceivedSeverity,CRITICAL)", True),
        ("(eq,perceivedSeverity,MAJOR)", False),
        ("(neq,perceivedSeverity,MAJOR)", True),
        ("(in,eventType,QOS_ALARM,EQUIPMENT_ALARM)", True),
        ("(nin,eventType,QOS_ALARM,EQUIPMENT_ALARM)", False),
        ("(cont,faultDetails,psu)", True),
        ("(ncont,faultDetails,psu)", False),
        ("(ncont,faultDetails,disk)", True),
        ("(eq,tags,blue)", True),
        ("(neq,tags,blue)", False),
        ("(gt,count,6)", True),
        ("(gte,count,7)", True),
        ("(lt,count,7)", False),
        ("(lte,count,7.0)", True),
        ("(eq,isRootCause,true)", True),
        ("(eq,isRootCause,false)", False),
        ("(gt,alarmRaisedTime,2026-01-01T00:00:00Z)", True),
        ("(lt,alarmRaisedTime,2026-01-02T03:04:05+01:00)", False),
        ("(eq,location/site,s1)", True),
        ("(eq,location/zone,z1)", False),
        ("(neq,location/zone,z1)", True),
        ("(eq,rootCauseFaultyResource/faultyResourceType,COMPUTE)", True),
        ("(eq,perceivedSeverity,CRITICAL);(eq,count,7)", True),
        ("(eq,perceivedSeverity,CRITICAL);(eq,count,8)", False),
        ("(eq,name,'a,b)c''d')", True),
        ("(in,name,x,'a,b)c''d')", True),
        ("", True),
    ],
)
def test_filter_evaluation(expr: str, expected: bool) -> None:
    assert parse_filter(expr, KNOWN).matches(DOC) is expected


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("eq,perceivedSeverity,CRITICAL", "expected"),
        ("(xx,perceivedSeverity,CRITICAL)", "unknown operator"),
        ("(eq,perceivedSeverity,A,B)", "exactly one value"),
        ("(eq,nope,1)", "unknown attribute 'nope'"),
        ("(eq,location/site/x,1)", "unknown attribute"),
        ("(eq,perceivedSeverity)", "needs an operator"),
        ("(eq,name,'unterminated)", "unterminated quote"),
        ("(eq,name,a(b)", "must be inside a quoted value"),
        ("(eq,perceivedSeverity,CRITICAL);", "expected"),
        ("(eq,,x)", "unknown attribute"),
    ],
)
def test_bad_filters_name_the_bad_part(expr: str, complaint: str) -> None:
    with pytest.raises(InvalidInput, match=complaint.replace("(", r"\(")):
        parse_filter(expr, KNOWN)


def test_mentions() -> None:
    flt = parse_filter("(eq,perceivedSeverity,CLEARED)", KNOWN)
    assert flt.mentions("perceivedSeverity")
    assert not flt.mentions("eventType")
