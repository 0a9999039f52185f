"""Shared set-up of the integration tests: one PostgreSQL cluster per test
file, a role whose password the tests rotate, and an env file to write."""

import os
import secrets
import subprocess
import tempfile
import time
import unittest

import harness as h


def fresh_password(tag='pw'):
    # Distinctive enough to grep for, never a substring of anything else.
    return f'{tag}-{secrets.token_hex(6)}'


class ClusterTest(unittest.TestCase):
    """A cluster for the whole class, a role 'app' with a known password,
    and a temp dir for env files."""

    cluster = None

    @classmethod
    def setUpClass(cls):
        cls.cluster = h.PgCluster()
        cls.cluster.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='dbswap-test-')
        self.addCleanup(subprocess.run, ['rm', '-rf', self.tmp])
        self.role = 'app_' + secrets.token_hex(3)
        self.password = fresh_password()
        self.cluster.create_role(self.role, self.password)
        self.env_path = os.path.join(self.tmp, 'app.env')

    def url(self, password=None, role=None):
        return self.cluster.url(role or self.role, password or self.password)

    def write_env(self, text, how=h.write_rename):
        how(self.env_path, text)

    def write_url(self, password, how=h.write_rename, name='DATABASE_URL'):
        self.write_env(f'{name}={self.url(password)}\n', how)

    def rotate(self, how=h.write_rename):
        """Changes the role's password on the server, then in the file;
        returns (new password, time the file write finished)."""
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        self.write_url(new, how)
        return new, time.monotonic()

    def start_agent(self, *args, targets=(), env_files=None, env=None):
        agent = h.Agent(env_files=env_files or [self.env_path],
                        targets=targets, args=args, env=env)
        self.addCleanup(agent.close)
        return agent

    def start_subscriber(self, agent, target='DATABASE_URL', args=()):
        sub = h.Subscriber(agent.sock, target, args=args)
        self.addCleanup(sub.close)
        return sub

    def ctl(self, agent, *args, check=True, timeout=10):
        r = subprocess.run([os.environ['DBSWAPCTL'], '--socket', agent.sock,
                            *args], capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            self.fail(f'dbswapctl {" ".join(args)} exited {r.returncode}: '
                      f'{r.stderr}')
        return r


def main():
    unittest.main(verbosity=2)
