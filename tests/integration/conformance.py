"""What every client package must do, in one place: the scenarios of the
pool contract (ipc/PROTOCOL.md, "Writing a client") and, for each
language, the test that checks it against the real agent and server, or
the reason there is none yet.  test_conformance.py fails when a named
test is not there, or when a scenario has neither a test nor a stated
gap, so a fourth language starts from this list and a renamed test cannot
quietly drop out of it.

A test is named as PATH::NAME, PATH from the top of the tree:
  tests/integration/*.py                     NAME is Class.method
  client-lib/node/test/**/*.test.js          NAME is the start of the
                                             test's title, as written
  client-lib/go/**/*_test.go                 NAME is the Test function
  client-lib/python/tests/*.py               NAME is the test function
"""

# Scenario id -> what must hold.  "Busy loops" are 8 concurrent loops of
# SELECT 1 (or a short transaction) through the package's pool.
SCENARIOS = {
    'rotations-under-load':
        '100 password rotations under 8 busy loops: no failed query, every '
        'generation acked by every subscriber',
    'ack-after-drain':
        'a connection of the old value held across a rotation keeps the '
        'generation unacked until it is released; then the ack comes',
    'failover-under-load':
        'the primary crashed under busy loops: at most one failed query '
        'per busy connection, none after the swap, the pool on the '
        'secondary',
    'hung-primary-under-load':
        'the primary hung (SIGSTOP) under busy loops: at most one failed '
        'query per loop, no loop stuck, the pool on the secondary',
    'agent-restart-under-load':
        'the agent killed and restarted under busy loops: no failed query, '
        'the pool subscribes again and follows the next rotation',
    'forbidden-target':
        "a target the app's uid may not follow: checkouts fail at once with "
        'an error that says forbidden, never a hang',
    'unknown-target':
        'a target the agent does not have: checkouts fail at once with an '
        'error naming it',
    'no-agent-environment':
        "no agent: the pool connects with the process environment's value",
    'agent-settings':
        'DATABASE_POOL_* pushed by the agent size the pool, and a change '
        'takes effect live',
    'driver-errors-masked':
        "a checkout that fails with the driver's connect error (which "
        'quotes the host, and a host may hold part of the value): the error '
        'the app gets, and every log line, show no secret of the value',
}

TESTS = 'tests/integration/'
NODE = 'client-lib/node/test/'
GO = 'client-lib/go/'


class Gap(str):
    """No test yet; the string says why, or what covers part of it."""


COVERAGE = {
    'C (libdbswap pool)': {
        'rotations-under-load':
            TESTS + 'test_pool.py::Pool.test_password_rotated_100_times_'
                    'under_load',
        'ack-after-drain':
            TESTS + 'test_pool_misuse.py::PoolMisuse.test_ack_waits_for_the_'
                    'held_connection',
        'failover-under-load':
            TESTS + 'test_failover.py::Detection.test_crashed_primary_'
                    'under_load_default_settings',
        'hung-primary-under-load':
            TESTS + 'test_failover.py::Detection.test_hung_primary_'
                    'under_load_default_settings',
        'agent-restart-under-load':
            TESTS + 'test_pool.py::Pool.test_agent_killed_and_restarted_'
                    'under_load',
        'forbidden-target':
            TESTS + 'test_pool_misuse.py::PoolMisuse.test_refused_target_'
                    'fails_at_once',
        'unknown-target':
            TESTS + 'test_pool_misuse.py::PoolMisuse.test_refused_target_'
                    'fails_at_once',
        'no-agent-environment':
            TESTS + 'test_pool.py::Pool.test_without_an_agent_the_'
                    'environment_is_used',
        'agent-settings':
            TESTS + 'test_pool.py::Pool.test_agent_pool_settings_honoured',
        'driver-errors-masked':
            Gap('dbswap_pool_acquire() fails with an errno, no text; the '
                "pool's log lines go through pqerr (tests/unit/"
                "test-pqerr.c)"),
    },
    'Node.js': {
        'rotations-under-load':
            NODE + 'integration/rotation.test.js::${ROTATIONS} rotations '
                   'under ${LOOPS} busy loops',
        'ack-after-drain':
            NODE + 'integration/drain.test.js::a client held across a '
                   'rotation keeps its session',
        'failover-under-load':
            NODE + 'integration/failover.test.js::the primary crashed under '
                   '8 busy loops',
        'hung-primary-under-load':
            NODE + 'integration/failover.test.js::the primary hung under 8 '
                   'busy loops',
        'agent-restart-under-load':
            NODE + 'integration/agent.test.js::the agent killed and '
                   'restarted under 8 busy loops',
        'forbidden-target':
            NODE + "integration/agent.test.js::a target the app\\'s uid may "
                   'not follow',
        'unknown-target':
            NODE + 'pool.test.js::a refused target is asked again on each '
                   'new session',
        'no-agent-environment':
            NODE + 'integration/environment.test.js::no agent: the '
                   'environment',
        'agent-settings':
            NODE + 'integration/settings.test.js::DATABASE_POOL_MAX caps the '
                   'pool under 8 busy loops and changes live',
        'driver-errors-masked':
            NODE + 'integration/mask.test.js::driver-errors-masked: a '
                   'connect error quoting a socket dir',
    },
    'Go': {
        'rotations-under-load':
            TESTS + 'test_go.py::GoPool.test_rotations_under_load',
        'ack-after-drain':
            TESTS + 'test_go.py::GoPool.test_ack_waits_for_the_held_'
                    'connection',
        'failover-under-load':
            TESTS + 'test_go.py::GoFailover.test_crashed_primary_under_load',
        'hung-primary-under-load':
            TESTS + 'test_go.py::GoFailover.test_hung_primary_under_load',
        'agent-restart-under-load':
            TESTS + 'test_go.py::GoPool.test_agent_killed_and_restarted_'
                    'under_load',
        'forbidden-target':
            TESTS + 'test_go.py::GoPool.test_forbidden_target_gives_a_'
                    'clear_error',
        'unknown-target':
            TESTS + 'test_go.py::GoPool.test_unknown_target_gives_a_clear_'
                    'error',
        'no-agent-environment':
            TESTS + 'test_go.py::GoPool.test_without_an_agent_the_'
                    'environment_is_used',
        'agent-settings':
            TESTS + 'test_go.py::GoPool.test_agent_pool_settings_honoured',
        'driver-errors-masked':
            TESTS + 'test_go.py::GoDriverErrorsMasked.test_driver_errors_'
                    'masked',
    },
    'Python': {
        'rotations-under-load':
            TESTS + 'test_python.py::PythonPackage.test_rotations_under_'
                    'load_fail_no_query_and_are_acked',
        'ack-after-drain':
            TESTS + 'test_python.py::PythonPackage.test_ack_waits_for_the_'
                    'last_old_connection',
        'failover-under-load':
            TESTS + 'test_python.py::PythonFailover.test_failover_under_load',
        'hung-primary-under-load':
            TESTS + 'test_python.py::PythonFailover.test_hung_primary_'
                    'under_load',
        'agent-restart-under-load':
            TESTS + 'test_python.py::PythonPackage.test_agent_killed_and_'
                    'restarted_under_load',
        'forbidden-target':
            TESTS + 'test_python.py::PythonPackage.test_forbidden_target_is_'
                    'a_permission_error',
        'unknown-target':
            TESTS + 'test_python.py::PythonPackage.test_unknown_target_'
                    'fails_checkouts_at_once',
        'no-agent-environment':
            TESTS + 'test_python.py::PythonPackage.test_environment_value_'
                    'without_an_agent',
        'agent-settings':
            TESTS + 'test_python.py::PythonPackage.test_settings_pushed_by_'
                    'the_agent',
        'driver-errors-masked':
            TESTS + 'test_python.py::PythonDriverErrorsMasked.test_driver_'
                    'errors_masked',
    },
}
