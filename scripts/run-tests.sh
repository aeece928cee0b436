#!/usr/bin/env bash
# The whole suite as CI runs it (`make test`, after lint): the unit, component and contract
# tests on two workers (pytest-xdist, each file on one worker: the session's servers of a
# file, libvirtd's included, stay in its worker), then the system tests one after another:
# each starts clouds that load the whole 2-core machine, and two at once (tried: two workers,
# modules sharing libvirtd, the host's bridges or epmd grouped, tests/support/xdist_groups.py)
# took as long (31 min) and failed where two heavy clouds overlapped. Both parts run even
# when the first fails; the exit code says whether either failed. With arguments: pytest
# with them, as given.
set -u
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/pytest -q -p no:cacheprovider)
if [ $# -gt 0 ]; then
    exec "${PYTEST[@]}" "$@"
fi
"${PYTEST[@]}" -n 2 --dist loadfile --durations=20 tests/unit tests/component tests/contract
fast=$?
"${PYTEST[@]}" --durations=40 tests/system
slow=$?
echo "unit, component and contract tests: exit $fast; system tests: exit $slow"
[ "$fast" -eq 0 ] && [ "$slow" -eq 0 ]
