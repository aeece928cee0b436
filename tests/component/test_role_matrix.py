"""Every endpoint x every role -> the expected status: 401 without a token, 403 below the
endpoint's role, never 401/403 at or above it. The table is the contract (docs/api.md):
an endpoint added to the API without a line here fails the test.

Role agent (a node's own token, bound to its host): 403 everywhere but where an agent
reports, and there 403 for any other host than its own (issue 22: a compromised compute
node cannot speak for another node, nor change the inventory, the alarms or subscriptions).
"""

from __future__ import annotations

import pytest

from tests.component.conftest import ADMIN, AGENT, OPERATOR, READER, Api

RANK = {"none": -1, "reader": 0, "operator": 1, "admin": 2}
TOKENS = {"reader": READER, "operator": OPERATOR, "admin": ADMIN, "agent": AGENT}
# where an agent is admitted: (its own host's request, another host's request), url and body
AGENT_OWN = {
    ("PUT", "/vim/v1/hosts/{hostId}/services"): (
        ("/vim/v1/hosts/cmp-1/services", b'{"services": []}'),
        ("/vim/v1/hosts/cmp-2/services", b'{"services": []}'),
    ),
    ("GET", "/vim/v1/hosts/{hostId}/services/declared"): (
        ("/vim/v1/hosts/cmp-1/services/declared", b""),
        ("/vim/v1/hosts/cmp-2/services/declared", b""),
    ),
    ("POST", "/vim/v1/events"): (
        (
            "/vim/v1/events",
            b'{"managedObjectId": "cmp-1/nova-compute", "faultType": "F", '
            b'"probableCause": "p", "perceivedSeverity": "MAJOR", "eventType": "EQUIPMENT_ALARM"}',
        ),
        (
            "/vim/v1/events",
            b'{"managedObjectId": "cmp-2", "faultType": "F", '
            b'"probableCause": "p", "perceivedSeverity": "MAJOR", "eventType": "EQUIPMENT_ALARM"}',
        ),
    ),
    ("GET", "/vim/v1/hosts/{hostId}/instances/desired"): (
        ("/vim/v1/hosts/cmp-1/instances/desired", b""),
        ("/vim/v1/hosts/cmp-2/instances/desired", b""),
    ),
    ("PUT", "/vim/v1/hosts/{hostId}/instances/observed"): (
        ("/vim/v1/hosts/cmp-1/instances/observed", b'{"guests": []}'),
        ("/vim/v1/hosts/cmp-2/instances/observed", b'{"guests": []}'),
    ),
    ("PUT", "/vim/v1/hosts/{hostId}/migrations/{migrationId}/state"): (
        ("/vim/v1/hosts/cmp-1/migrations/x/state", b"disk"),
        ("/vim/v1/hosts/cmp-2/migrations/x/state", b"disk"),
    ),
    ("GET", "/vim/v1/hosts/{hostId}/migrations/{migrationId}/state"): (
        ("/vim/v1/hosts/cmp-1/migrations/x/state", b""),
        ("/vim/v1/hosts/cmp-2/migrations/x/state", b""),
    ),
}
# where any agent is admitted, whatever its host: the images its guests need
AGENT_ANY = {("GET", "/vim/v1/images/{imageId}/file")}
# (method, path) -> the lowest role admitted; "none": no token needed
MATRIX = {
    ("GET", "/vimfm/api_versions"): "none",
    ("GET", "/vimfm/v1/api_versions"): "none",
    ("GET", "/vimfm/v1/alarms"): "reader",
    ("GET", "/vimfm/v1/alarms/{alarmId}"): "reader",
    ("PATCH", "/vimfm/v1/alarms/{alarmId}"): "operator",
    ("GET", "/vimfm/v1/alarms/{alarmId}/history"): "reader",
    ("GET", "/vim/v1/objects/{objectId}"): "reader",
    ("POST", "/vimfm/v1/subscriptions"): "operator",
    ("GET", "/vimfm/v1/subscriptions"): "reader",
    ("GET", "/vimfm/v1/subscriptions/{subscriptionId}"): "reader",
    ("DELETE", "/vimfm/v1/subscriptions/{subscriptionId}"): "operator",
    ("POST", "/vim/v1/events"): "operator",
    ("PUT", "/events"): "operator",
    ("POST", "/vim/v1/events/alertmanager"): "operator",
    ("GET", "/vim/v1/retention-policy"): "reader",
    ("PATCH", "/vim/v1/retention-policy"): "admin",
    ("POST", "/vim/v1/retention-policy/apply"): "admin",
    ("GET", "/vim/v1/notifications"): "reader",
    ("GET", "/vim/v1/notifications/{notificationId}"): "reader",
    ("GET", "/vim/v1/status"): "reader",
    ("GET", "/metrics"): "reader",
    ("GET", "/vim/v1/service-groups"): "reader",
    ("GET", "/vim/v1/service-groups/{name}"): "reader",
    ("GET", "/vim/v1/hosts"): "reader",
    ("GET", "/vim/v1/hosts/{hostId}"): "reader",
    ("GET", "/vim/v1/hosts/{hostId}/fencing"): "reader",
    ("POST", "/vim/v1/hosts"): "admin",
    ("PATCH", "/vim/v1/hosts/{hostId}"): "admin",
    ("DELETE", "/vim/v1/hosts/{hostId}"): "admin",
    ("PUT", "/vim/v1/hosts/{hostId}/services"): "operator",
    ("GET", "/vim/v1/hosts/{hostId}/services/declared"): "reader",
    ("GET", "/vim/v1/services"): "reader",
    ("GET", "/vim/v1/services/{hostId}/{name}"): "reader",
    ("POST", "/vim/v1/services"): "admin",
    ("PATCH", "/vim/v1/services/{hostId}/{name}"): "admin",
    ("DELETE", "/vim/v1/services/{hostId}/{name}"): "admin",
    # the compute model (issues 14, 15, 17)
    ("GET", "/vim/v1/flavors"): "reader",
    ("POST", "/vim/v1/flavors"): "admin",
    ("GET", "/vim/v1/flavors/{flavorId}"): "reader",
    ("DELETE", "/vim/v1/flavors/{flavorId}"): "admin",
    ("GET", "/vim/v1/images"): "reader",
    ("POST", "/vim/v1/images"): "operator",
    ("GET", "/vim/v1/images/{imageId}"): "reader",
    ("DELETE", "/vim/v1/images/{imageId}"): "operator",
    ("PUT", "/vim/v1/images/{imageId}/file"): "operator",
    ("GET", "/vim/v1/images/{imageId}/file"): "reader",
    ("GET", "/vim/v1/networks"): "reader",
    ("POST", "/vim/v1/networks"): "admin",
    ("GET", "/vim/v1/networks/{networkId}"): "reader",
    ("DELETE", "/vim/v1/networks/{networkId}"): "admin",
    ("GET", "/vim/v1/ports"): "reader",
    ("POST", "/vim/v1/ports"): "operator",
    ("GET", "/vim/v1/ports/{portId}"): "reader",
    ("DELETE", "/vim/v1/ports/{portId}"): "operator",
    ("GET", "/vim/v1/vnfs"): "reader",
    ("POST", "/vim/v1/vnfs"): "operator",
    ("GET", "/vim/v1/vnfs/{vnfId}"): "reader",
    ("DELETE", "/vim/v1/vnfs/{vnfId}"): "operator",
    ("GET", "/vim/v1/instances"): "reader",
    ("GET", "/vim/v1/instances/{instanceId}"): "reader",
    ("POST", "/vim/v1/instances/{instanceId}/reboot"): "operator",
    ("POST", "/vim/v1/instances/{instanceId}/stop"): "operator",
    ("POST", "/vim/v1/instances/{instanceId}/start"): "operator",
    ("POST", "/vim/v1/instances/{instanceId}/pause"): "operator",
    ("POST", "/vim/v1/instances/{instanceId}/unpause"): "operator",
    ("DELETE", "/vim/v1/instances/{instanceId}"): "operator",
    ("GET", "/vim/v1/instances/{instanceId}/actions"): "reader",
    ("GET", "/vim/v1/hosts/{hostId}/instances/desired"): "reader",
    ("PUT", "/vim/v1/hosts/{hostId}/instances/observed"): "operator",
    ("POST", "/vim/v1/instances/{instanceId}/console"): "operator",
    ("GET", "/vim/v1/placement-groups"): "reader",
    ("POST", "/vim/v1/placement-groups"): "operator",
    ("GET", "/vim/v1/placement-groups/{groupId}"): "reader",
    ("DELETE", "/vim/v1/placement-groups/{groupId}"): "operator",
    ("POST", "/vim/v1/placement/explain"): "reader",
    ("POST", "/vim/v1/vnfs/{vnfId}/scale"): "operator",
    ("GET", "/vim/v1/vnfs/{vnfId}/operations"): "reader",
    ("GET", "/vim/v1/vnf-operations/{opId}"): "reader",
    ("POST", "/vim/v1/instances/{instanceId}/repair"): "operator",
    ("POST", "/vim/v1/instances/{instanceId}/migrate"): "operator",
    ("GET", "/vim/v1/migrations"): "reader",
    ("POST", "/vim/v1/maintenance"): "admin",
    ("GET", "/vim/v1/maintenance"): "reader",
    ("GET", "/vim/v1/maintenance/{sessionId}"): "reader",
    ("POST", "/vim/v1/maintenance/{sessionId}/abort"): "admin",
    ("POST", "/vim/v1/maintenance/{sessionId}/hosts/{hostId}/done"): "admin",
    ("GET", "/vim/v1/maintenance/{sessionId}/vnfs/{vnfId}"): "reader",
    ("PUT", "/vim/v1/maintenance/{sessionId}/vnfs/{vnfId}"): "operator",
    ("GET", "/vim/v1/migrations/{migrationId}"): "reader",
    ("PUT", "/vim/v1/hosts/{hostId}/migrations/{migrationId}/state"): "operator",
    ("GET", "/vim/v1/hosts/{hostId}/migrations/{migrationId}/state"): "reader",
    # insight (issue 20): HA metrics, incidents, correlation rules
    ("GET", "/vim/v1/metrics"): "reader",
    ("GET", "/vim/v1/metrics/instances/{instanceId}"): "reader",
    ("GET", "/vim/v1/metrics/vnfs/{vnfId}"): "reader",
    ("GET", "/vim/v1/metrics/hosts/{hostId}"): "reader",
    ("GET", "/vim/v1/metrics/sals/{sal}"): "reader",
    ("GET", "/vim/v1/metrics/incidents"): "reader",
    ("GET", "/vim/v1/incidents"): "reader",
    ("GET", "/vim/v1/incidents/{incidentId}"): "reader",
    ("GET", "/vim/v1/correlation/rules"): "reader",
    ("POST", "/vim/v1/correlation/rules/reload"): "admin",
    ("POST", "/vim/v1/hosts/{hostId}/report-fault"): "operator",
    ("POST", "/vim/v1/hosts/{hostId}/confirm-down"): "admin",
    # the SDN controller's view and intents (issue 18)
    ("GET", "/vim/v1/sdn/switches"): "reader",
    ("GET", "/vim/v1/sdn/instances"): "reader",
    ("GET", "/vim/v1/sdn/networks"): "reader",
    ("POST", "/vim/v1/sdn/networks"): "operator",
    ("GET", "/vim/v1/sdn/networks/{ref}"): "reader",
    ("DELETE", "/vim/v1/sdn/networks/{ref}"): "operator",
    ("GET", "/vim/v1/sdn/ports"): "reader",
    ("POST", "/vim/v1/sdn/ports"): "operator",
    ("GET", "/vim/v1/sdn/ports/{port_id}"): "reader",
    ("DELETE", "/vim/v1/sdn/ports/{port_id}"): "operator",
}
PLACEHOLDERS = dict.fromkeys(
    (
        "alarmId",
        "objectId",
        "subscriptionId",
        "notificationId",
        "name",
        "flavorId",
        "imageId",
        "networkId",
        "portId",
        "vnfId",
        "instanceId",
        "groupId",
        "opId",
        "ref",
        "port_id",
        "migrationId",
        "sessionId",
        "incidentId",
        "sal",
    ),
    "x",
)


def test_every_endpoint_is_in_the_matrix(api: Api) -> None:
    """What the API publishes (its OpenAPI document, which lists every route but the
    Prometheus scrape endpoint) is what the matrix covers."""
    served = {
        (method.upper(), path) for path, ops in api.app.openapi()["paths"].items() for method in ops
    } | {("GET", "/metrics")}
    assert served == set(MATRIX), {
        "not in the matrix": served - set(MATRIX),
        "not served": set(MATRIX) - served,
    }


@pytest.mark.parametrize("role", ["none", "reader", "operator", "admin"])
async def test_every_endpoint_answers_each_role_as_the_matrix_says(api: Api, role: str) -> None:
    wrong = []
    for (method, path), needed in MATRIX.items():
        url = path.format(**PLACEHOLDERS, hostId="x")
        headers = {"Authorization": f"Bearer {TOKENS[role]}"} if role in TOKENS else {}
        r = await api.client.request(method, url, headers=headers, content=b"{}")
        if RANK[role] >= RANK[needed]:
            expected = "not 401/403"
            ok = r.status_code not in (401, 403)
        else:
            expected = "401" if role == "none" else "403"
            ok = r.status_code == int(expected)
        if not ok:
            wrong.append(f"{method} {path} as {role}: {r.status_code}, expected {expected}")
    assert wrong == []


async def test_an_agent_speaks_for_its_own_host_only(api: Api) -> None:
    headers = {"Authorization": f"Bearer {AGENT}", "Content-Type": "application/json"}
    wrong = []
    for (method, path), needed in MATRIX.items():
        if needed == "none":
            continue
        if (method, path) in AGENT_OWN:
            (mine, body), (other, other_body) = AGENT_OWN[(method, path)]
            r = await api.client.request(method, mine, headers=headers, content=body)
            if r.status_code in (401, 403):
                wrong.append(f"{method} {mine} (its own host): {r.status_code} {r.text}")
            r = await api.client.request(method, other, headers=headers, content=other_body)
            if r.status_code != 403:
                wrong.append(f"{method} {other} (another host): {r.status_code}, expected 403")
            continue
        url = path.format(**PLACEHOLDERS, hostId="cmp-1")
        r = await api.client.request(method, url, headers=headers, content=b"{}")
        if (method, path) in AGENT_ANY:
            if r.status_code in (401, 403):
                wrong.append(f"{method} {path} as agent: {r.status_code}, expected admitted")
            continue
        if r.status_code != 403:
            wrong.append(f"{method} {path} as agent: {r.status_code}, expected 403")
    assert wrong == []
