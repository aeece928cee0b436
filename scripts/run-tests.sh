#!/usr/bin/env bash
# The whole suite as CI runs it (`make test`, after lint): the unit, component and contract
# tests on two workers (pytest-xdist, each file on one worker: the session's servers of a
# file, libvirtd's included, stay in its worker), then the system tests in two streams at
# once: the clouds (embedded, HA, stateful, SDN, QEMU; the database and broker groups), one
# after another, as each loads the whole 2-core machine (tried: two such workers, modules
# sharing libvirtd, the host's bridges or epmd grouped, took as long, 31 min, and failed
# where two heavy clouds overlapped); and beside them the light ones (one controller and
# an agent or two, mostly waiting on timers: ~2.5 min), each stream in its own half of the
# test port range. Both parts run even when the first fails; the exit code says whether
# any failed. With arguments: pytest with them, as given.
set -u
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/pytest -q -p no:cacheprovider)
if [ $# -gt 0 ]; then
    exec "${PYTEST[@]}" "$@"
fi
"${PYTEST[@]}" -n 2 --dist loadfile --durations=20 tests/unit tests/component tests/contract
fast=$?
LIGHT=(agent_watchdog api_tls compute_service_failure controllers hardware_health
       host_classification host_health host_inventory notification_delivery packaging
       supervision)
light_files=() ignores=()
for name in "${LIGHT[@]}"; do
    light_files+=("tests/system/test_$name.py")
    ignores+=("--ignore=tests/system/test_$name.py")
done
light_log=$(mktemp /tmp/vimha-light-tests.XXXXXX)
VIMHA_TEST_PORT_SHARE=1/2 \
    "${PYTEST[@]}" --durations=10 "${light_files[@]}" > "$light_log" 2>&1 &
light_pid=$!
VIMHA_TEST_PORT_SHARE=0/2 \
    "${PYTEST[@]}" --durations=40 tests/system "${ignores[@]}"
slow=$?
wait "$light_pid"
light=$?
echo "--- the light system tests, run beside the others:"
cat "$light_log"
rm -f "$light_log"
echo "unit, component and contract tests: exit $fast; system tests: exit $slow;" \
     "light system tests: exit $light"
[ "$fast" -eq 0 ] && [ "$slow" -eq 0 ] && [ "$light" -eq 0 ]
