"""dbswapctl rotate, set --wait against a password that reaches the server
late, and the command line's habits (--help per command, watch refused).

rotate makes a new password, changes it on the server over an admin
connection (a SCRAM verifier made client-side: the plaintext never
reaches the server), writes it into the env file as set does and waits
for every subscriber's ack.  Both strategies run under load from the C
pool (pool-load): no query may fail.  After a rotation the old password
(single) or the old role (alternate) must not log in; the admin
connection's password must appear nowhere: not in dbswapctl's output, the
agent's log or any process's argv.  A wait that times out must leave the
old role alone."""

import glob
import os
import re
import secrets
import subprocess
import threading
import time
import unittest

import harness as h
from common import ClusterTest, PoolLoad, fresh_password, main

TARGET = 'DATABASE_URL'
PAUSE = ('--pause-ms', 2)
# dbswapctl's commands, each of which must answer --help.
COMMANDS = ('status', 'watch', 'metrics', 'reload', 'set', 'rotate',
            'failover',
            'failback', 'reconnect', 'keygen', 'pubkey', 'encrypt',
            'decrypt')


class CmdlineScan(threading.Thread):
    """Reads every process's argv over and over until stopped, and keeps
    those that hold any of the secrets."""

    def __init__(self, secrets_):
        super().__init__(daemon=True)
        self.secrets = [s.encode() for s in secrets_]
        self.found = []
        self.scans = 0
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            for path in glob.glob('/proc/[0-9]*/cmdline'):
                try:
                    with open(path, 'rb') as f:
                        argv = f.read()
                except OSError:
                    continue
                if any(s in argv for s in self.secrets):
                    self.found.append((path, argv))
            self.scans += 1

    def stop(self):
        self._done.set()
        self.join(10)


class Rotate(ClusterTest):

    def setUp(self):
        super().setUp()
        self.admin_file = os.path.join(self.tmp, 'admin.conninfo')
        c = self.cluster
        fd = os.open(self.admin_file, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(f'host={c.sockdir} port={c.port} user={c.superuser} '
                    f'password={c.superuser_password} dbname=postgres\n')

    def start_load(self, agent, *args, name='pool-load'):
        load = PoolLoad(agent.sock, args=args + PAUSE, name=name)
        self.addCleanup(load.close)
        return load

    def rotate_cmd(self, agent, *args, timeout=60):
        return self.ctl(agent, 'rotate', self.env_path, TARGET, '--admin',
                        self.admin_file, *args, check=False, timeout=timeout)

    def file_value(self, name=TARGET):
        with open(self.env_path) as f:
            for line in f:
                if line.startswith(name + '='):
                    v = line[len(name) + 1:].strip()
                    return v.strip("'")
        return None

    def assert_no_admin_secret(self, agent, *texts):
        pw = self.cluster.superuser_password
        for t in texts:
            self.assertNotIn(pw, t)
        self.assertNotIn(pw, agent.log())

    def started(self, *args):
        self.write_url(self.password)
        agent = self.start_agent(*args)
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        return agent

    # set --wait follows the agent's attempts

    def test_set_wait_follows_the_agent_until_a_late_alter_role(self):
        """The file first, ALTER ROLE a second later: the agent's second
        to fifth attempt succeeds.  set --wait must not call the value
        rejected meanwhile (it did after 3 attempts, while the agent
        tries 6), and must say which attempt the agent is at."""
        agent = self.started()
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        new = fresh_password('late')
        p = subprocess.Popen([os.environ['DBSWAPCTL'], '--socket', agent.sock,
                              'set', self.env_path, f'{TARGET}=-',
                              '--wait=20'],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        p.stdin.write(self.url(new) + '\n')
        p.stdin.close()
        time.sleep(1.0)
        self.cluster.set_password(self.role, new)
        p.wait(timeout=30)
        with p.stdout, p.stderr:
            out, err = p.stdout.read(), p.stderr.read()
        self.assertEqual(p.returncode, 0, out + err)
        self.assertRegex(out, r'waiting for the server to accept the new '
                              r'password \(attempt [2-6] of 6\)')
        self.assertIn('done: every subscriber uses the new value', out)
        sub.wait_line(rf'^connect 2 ok$')
        self.assertNotIn(new, out + err)

    def test_set_wait_exits_4_when_the_agent_gives_up(self):
        agent = self.started()
        bad = fresh_password('never')
        t0 = time.monotonic()
        r = self.ctl(agent, 'set', self.env_path, f'{TARGET}=-', '--wait=30',
                     stdin=self.url(bad) + '\n', check=False, timeout=40)
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 4, r.stdout + r.stderr)
        self.assertIn('gave up', r.stderr)
        self.assertIn('(attempt 6 of 6)', r.stdout)
        self.assertNotIn(bad, r.stdout + r.stderr)
        # six attempts with backoff from 100 ms: not before the fifth wait
        self.assertGreater(took, 1.0)

    # rotate, single role

    def test_single_under_load(self):
        agent = self.started()
        load = self.start_load(agent, '--threads', 4, '--tx')
        load.wait_progress(lambda p: p['queries'] > 50, what='queries')
        scan = CmdlineScan([self.cluster.superuser_password])
        scan.start()
        olds = [self.password]
        outs = []
        for i in range(3):
            r = self.rotate_cmd(agent, '--wait=20')
            outs.append(r.stdout + r.stderr)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertRegex(r.stdout, r'\[\d+\.\d{3}s\] password of '
                                       rf'{self.role} changed on the server')
            self.assertIn('done: every subscriber uses the new value',
                          r.stdout)
            self.assertIn('the old password no longer logs in', r.stdout)
            load.wait_progress_after(time.monotonic())
        scan.stop()
        rc, s = load.stop()
        self.assertEqual(s['failures'], 0, load.describe())
        self.assertEqual(rc, 0, load.describe())
        self.assertEqual(s['generation'], 4, s)
        self.assertEqual(s['current_user_at_end'], self.role)
        # the file holds the newest password; it logs in, no older one does
        url = self.file_value()
        self.assertTrue(h.can_connect(url), h.last_connect_error())
        for old in olds:
            self.assertFalse(h.can_connect(self.url(old)))
        newest = h.parse_conninfo(url)['password']
        for o in outs:
            self.assertNotIn(newest, o)
        self.assertNotIn(newest, agent.log())
        self.assert_no_admin_secret(agent, *outs)
        self.assertGreater(scan.scans, 0)
        self.assertEqual(scan.found, [])
        # the server got a verifier, never the plaintext
        verifier = self.cluster.sql(
            'SELECT rolpassword FROM pg_authid WHERE rolname = '
            f'{h.quote_literal(self.role)}')
        self.assertTrue(verifier.startswith('SCRAM-SHA-256$'), verifier)

    def test_admin_errors_are_masked(self):
        agent = self.started()
        c = self.cluster
        wrong = fresh_password('adminpw')
        with open(self.admin_file, 'w') as f:
            f.write(f'host={c.sockdir} port={c.port} user={c.superuser} '
                    f'password={wrong} dbname=postgres\n')
        r = self.rotate_cmd(agent)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('admin connection', r.stderr)
        self.assertNotIn(wrong, r.stdout + r.stderr)
        # nothing changed: the old password still logs in
        self.assertTrue(h.can_connect(self.url()))
        self.assertEqual(self.file_value(), self.url())

    def test_key_value_form_is_kept(self):
        self.write_env(f'{TARGET}='
                       f'"{self.cluster.keyvalue(self.role, self.password)}"\n')
        agent = self.start_agent()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        r = self.rotate_cmd(agent, '--wait=20')
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        sub.wait_line(r'^connect 2 ok$')
        value = sub.updates()[-1][1]
        # only user's and password's values changed, in their places
        c = self.cluster
        self.assertRegex(value, rf"^host={c.host} port={c.port} "
                                rf"user='{self.role}' password='[^']+' "
                                r"dbname='postgres'$")
        kv = h.parse_conninfo(value)
        self.assertEqual((kv['user'], kv['port']),
                         (self.role, str(self.cluster.port)))
        self.assertNotEqual(kv['password'], self.password)
        self.assertTrue(h.can_connect(value), h.last_connect_error())
        self.assertFalse(h.can_connect(self.url()))

    def test_encrypted_value_stays_encrypted(self):
        key = os.path.join(self.tmp, 'agent.key')
        ctl = os.environ['DBSWAPCTL']
        subprocess.run([ctl, 'keygen', '--out', key], check=True,
                       capture_output=True)
        subprocess.run([ctl, 'set', self.env_path, f'{TARGET}=-', '--key',
                        key, '--encrypt-values'], check=True,
                       input=self.url() + '\n', text=True,
                       capture_output=True)
        agent = self.start_agent('--key', key)
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        # without the key, the value cannot be read: nothing changes
        r = self.rotate_cmd(agent)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('--key', r.stderr)
        self.assertTrue(h.can_connect(self.url()))
        r = self.rotate_cmd(agent, '--key', key, '--wait=20')
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(self.env_path) as f:
            text = f.read()
        self.assertTrue(text.startswith(f'{TARGET}=enc:v1:'), text)
        sub.wait_line(r'^connect 2 ok$')
        self.assertFalse(h.can_connect(self.url()))

    def test_nothing_changes_when_the_agent_would_not_follow(self):
        """A file the agent does not watch, or a target it does not have:
        refused before the server changes."""
        agent = self.started()
        other = os.path.join(self.tmp, 'other.env')
        h.write_rename(other, f'{TARGET}={self.url()}\n')
        r = self.ctl(agent, 'rotate', other, TARGET, '--admin',
                     self.admin_file, '--wait', check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f'does not watch {other}', r.stderr)
        r = self.ctl(agent, 'rotate', self.env_path, 'NOPE_URL', '--admin',
                     self.admin_file, '--wait', check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('has no target NOPE_URL', r.stderr)
        self.assertTrue(h.can_connect(self.url()), h.last_connect_error())
        self.assertEqual(self.file_value(), self.url())

    def test_secondary_with_the_same_user_gets_the_same_password(self):
        """The secondary here is the same server by another way (its unix
        socket): enough to see both entries rewritten and validated."""
        c = self.cluster
        sec = (f'host={c.sockdir} port={c.port} user={self.role} '
               f'password={self.password} dbname=postgres')
        self.write_env(f'{TARGET}={self.url()}\n'
                       f'{TARGET}_SECONDARY="{sec}"\n')
        agent = self.start_agent()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        r = self.rotate_cmd(agent, '--wait=20')
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f'wrote {self.env_path}: {TARGET} {TARGET}_SECONDARY',
                      r.stdout)
        t = h.target_status(agent, TARGET)
        for srv in t['servers']:
            self.assertEqual(srv['state'], 'ok', srv)
        with open(self.env_path) as f:
            text = f.read()
        self.assertNotIn(self.password, text)

    # rotate, two roles taking turns

    def alternate_roles(self):
        """NAME_a and NAME_b, members of group NAME that holds the
        privileges; the target on NAME_a.  Returns NAME."""
        name = 'alt_' + secrets.token_hex(3)
        q = h.quote_ident
        self.cluster.durable_sql(
            f'CREATE ROLE {q(name)} NOLOGIN;\n'
            f'CREATE ROLE {q(name + "_a")} LOGIN IN ROLE {q(name)} '
            f'PASSWORD {h.quote_literal(self.password)};\n'
            f'CREATE ROLE {q(name + "_b")} NOLOGIN IN ROLE {q(name)};\n'
            f'CREATE TABLE {q(name + "_t")} (x int);\n'
            f'GRANT SELECT ON {q(name + "_t")} TO {q(name)};\n')
        return name

    def can_login(self, role):
        return self.cluster.sql(
            'SELECT rolcanlogin FROM pg_roles WHERE rolname = '
            f'{h.quote_literal(role)}') == 't'

    def test_alternate_under_load(self):
        name = self.alternate_roles()
        self.write_env(f'{TARGET}={self.url(role=name + "_a")}\n')
        agent = self.start_agent()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        load = self.start_load(agent, '--threads', 4, '--tx')
        load.wait_progress(lambda p: p['queries'] > 50, what='queries')
        scan = CmdlineScan([self.cluster.superuser_password])
        scan.start()
        outs = []
        old_url = self.file_value()
        for i, (old, new) in enumerate([('a', 'b'), ('b', 'a'),
                                         ('a', 'b')]):
            r = self.rotate_cmd(agent, '--strategy', 'alternate',
                                '--wait=20')
            outs.append(r.stdout + r.stderr)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn(f'login of {name}_{old} disabled', r.stdout)
            self.assertFalse(self.can_login(f'{name}_{old}'))
            self.assertTrue(self.can_login(f'{name}_{new}'))
            url = self.file_value()
            self.assertEqual(h.parse_conninfo(url)['user'], f'{name}_{new}')
            self.assertTrue(h.can_connect(url), h.last_connect_error())
            # the previous credentials do not log in any more
            self.assertFalse(h.can_connect(old_url))
            old_url = url
            load.wait_progress_after(time.monotonic())
        scan.stop()
        rc, s = load.stop()
        self.assertEqual(s['failures'], 0, load.describe())
        self.assertEqual(rc, 0, load.describe())
        self.assertEqual(s['current_user_at_end'], f'{name}_b')
        self.assert_no_admin_secret(agent, *outs)
        self.assertEqual(scan.found, [])

    def test_alternate_wait_timeout_does_not_revoke(self):
        name = self.alternate_roles()
        self.write_env(f'{TARGET}={self.url(role=name + "_a")}\n')
        agent = self.start_agent()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        lazy = self.start_subscriber(agent, args=('--no-ack',))
        lazy.wait_line(r'^update ')
        r = self.rotate_cmd(agent, '--strategy', 'alternate', '--wait=2')
        self.assertEqual(r.returncode, 5, r.stdout + r.stderr)
        self.assertIn('dbswapctl rotate: timed out after 2 s', r.stderr)
        self.assertIn(f'{name}_a keeps its login', r.stderr)
        self.assertNotIn('disabled', r.stdout)
        # both log in: the old one because nobody proved it unused
        self.assertTrue(self.can_login(f'{name}_a'))
        self.assertTrue(h.can_connect(self.url(role=name + '_a')))
        self.assertTrue(h.can_connect(self.file_value()))

    def test_alternate_needs_the_role_pair(self):
        agent = self.started()
        r = self.rotate_cmd(agent, '--strategy', 'alternate')
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('_a or', r.stderr)
        self.assertTrue(h.can_connect(self.url()))

    # rotate must not call a change done that the apps never took

    def layered(self, url):
        """The target in self.env_path and again in a later file, which
        wins: the agent's value comes from the later one.  The same
        credentials in both, in the other form of conninfo in the later
        file, which the agent reads after its start."""
        self.write_env(f'{TARGET}={url}\n')
        over = os.path.join(self.tmp, 'over.env')
        h.write_rename(over, 'UNUSED=1\n')
        agent = self.start_agent(env_files=[self.env_path, over])
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        kv = ' '.join(f"{k}='{v}'" for k, v in h.parse_conninfo(url).items())
        h.write_rename(over, f'{TARGET}="{kv}"\n')
        h.wait_for(lambda: h.target_status(agent, TARGET)['generation'] >= 2,
                   what='the later file\'s value published')
        return agent

    def test_alternate_refuses_when_a_later_file_supplies_the_target(self):
        """FILE defines the target, but a later --env file supplies the
        value in use: the agent reads FILE and nothing changes.  The old
        role is the one in use: it must keep its login."""
        name = self.alternate_roles()
        url_a = self.url(role=name + '_a')
        agent = self.layered(url_a)
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^update ')
        r = self.rotate_cmd(agent, '--strategy', 'alternate', '--wait=10')
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f'{TARGET} comes from {self.tmp}/over.env', r.stderr)
        self.assertIn('nothing changed', r.stderr)
        self.assertFalse(self.can_login(f'{name}_b'))
        self.assertNotIn('disabled', r.stdout)
        self.assertNotIn('done:', r.stdout)
        self.assertTrue(self.can_login(f'{name}_a'))
        self.assertTrue(h.can_connect(url_a), h.last_connect_error())

    def test_single_fails_when_a_later_file_supplies_the_target(self):
        url = self.url()
        agent = self.layered(url)
        r = self.rotate_cmd(agent, '--wait=10')
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f'{TARGET} comes from {self.tmp}/over.env', r.stderr)
        self.assertIn('nothing changed', r.stderr)
        self.assertTrue(h.can_connect(url), h.last_connect_error())

    def test_later_file_read_at_start_is_refused_before_any_change(self):
        """Both files read at the agent's start (one evaluation, the same
        read seq): the later file is read here to see that it defines
        the target."""
        name = self.alternate_roles()
        url_a = self.url(role=name + '_a')
        self.write_env(f'{TARGET}={url_a}\n')
        over = os.path.join(self.tmp, 'over.env')
        h.write_rename(over, f'{TARGET}={url_a}\n')
        agent = self.start_agent(env_files=[self.env_path, over])
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        for args in ((), ('--strategy', 'alternate')):
            r = self.rotate_cmd(agent, '--wait=10', *args)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn(f'{TARGET} comes from {over}', r.stderr)
            self.assertIn('nothing changed', r.stderr)
            self.assertEqual(self.file_value(), url_a)
            self.assertTrue(h.can_connect(url_a), h.last_connect_error())
        self.assertFalse(self.can_login(f'{name}_b'))

    def test_set_wait_for_rotate_fails_when_the_target_did_not_change(self):
        """The check after the write, for what the look before it cannot
        see: the agent reads FILE, and the target keeps the value of a
        later file.  rotate calls that a failure, not "done"."""
        url = self.url()
        # over.env read again, the target's value unchanged: the file's
        # read seq moves past the one that set the value, and the look
        # before the change can no longer tell where the value comes from
        agent = self.layered(url)
        over = os.path.join(self.tmp, 'over.env')
        with open(over) as f:
            text = f.read()
        h.write_rename(over, text + 'UNUSED=2\n')
        h.wait_for(lambda: h.file_status(agent, over)['seq'] >
                   h.target_status(agent, TARGET)['value_seq'],
                   what='over.env read again')
        r = self.rotate_cmd(agent, '--wait=10')
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f'{TARGET} did not change', r.stderr)
        self.assertIn('no longer logs in', r.stderr)
        self.assertNotIn('done:', r.stdout)

    def test_alternate_without_subscribers_does_not_revoke(self):
        """0 of 0 acked proves nothing: the old role keeps its login
        unless --allow-no-subscribers says that is wanted."""
        name = self.alternate_roles()
        self.write_env(f'{TARGET}={self.url(role=name + "_a")}\n')
        agent = self.start_agent()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        r = self.rotate_cmd(agent, '--strategy', 'alternate', '--wait=2')
        self.assertEqual(r.returncode, 5, r.stdout + r.stderr)
        self.assertIn('no subscriber has acked yet', r.stdout)
        self.assertIn(f'no subscriber of {TARGET} acked', r.stderr)
        self.assertIn(f'{name}_a keeps its login', r.stderr)
        self.assertTrue(self.can_login(f'{name}_a'))
        r = self.rotate_cmd(agent, '--strategy', 'alternate', '--wait=10',
                            '--allow-no-subscribers')
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f'login of {name}_b disabled', r.stdout)
        self.assertFalse(self.can_login(f'{name}_b'))
        self.assertTrue(self.can_login(f'{name}_a'))

    def test_alternate_keeps_a_role_another_target_uses(self):
        name = self.alternate_roles()
        url_a = self.url(role=name + '_a')
        self.write_env(f'{TARGET}={url_a}\nOTHER_URL={url_a}\n')
        agent = self.start_agent(targets=(TARGET, 'OTHER_URL'))
        for t in (TARGET, 'OTHER_URL'):
            h.wait_for(lambda: h.target_status(agent, t)['generation'] >= 1,
                       what=f'{t} published')
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^update ')
        r = self.rotate_cmd(agent, '--strategy', 'alternate', '--wait=10')
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f'OTHER_URL (of target OTHER_URL) also logs in as '
                      f'{name}_a', r.stderr)
        self.assertIn('nothing changed', r.stderr)
        self.assertEqual(self.file_value(), url_a)
        self.assertTrue(self.can_login(f'{name}_a'))
        self.assertFalse(self.can_login(f'{name}_b'))
        self.assertTrue(h.can_connect(url_a), h.last_connect_error())
        # single: the other target's password would die
        r = self.rotate_cmd(agent, '--wait=10')
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('its password would stop working', r.stderr)
        self.assertTrue(h.can_connect(url_a), h.last_connect_error())

    def test_secondary_elsewhere_with_the_same_user_is_refused(self):
        """TARGET_SECONDARY defined in another file with the same user:
        rotate would not change it, so a failover would land on a dead
        password (single) or keep the old role in use (alternate)."""
        c = self.cluster
        url = self.url()
        self.write_env(f'{TARGET}={url}\n')
        sec = (f'host={c.sockdir} port={c.port} user={self.role} '
               f'password={self.password} dbname=postgres')
        other = os.path.join(self.tmp, 'secondary.env')
        h.write_rename(other, f'{TARGET}_SECONDARY="{sec}"\n')
        agent = self.start_agent(env_files=[self.env_path, other])
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        r = self.rotate_cmd(agent, '--wait=10')
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f'{TARGET}_SECONDARY (of target {TARGET}) also logs '
                      f'in as {self.role}', r.stderr)
        self.assertIn('nothing changed', r.stderr)
        self.assertEqual(self.file_value(), url)
        self.assertTrue(h.can_connect(url), h.last_connect_error())

    def test_alternate_looks_again_before_revoking(self):
        """A target that takes the old role during the wait: the look
        just before the revocation finds it, and the role keeps its
        login."""
        name = self.alternate_roles()
        url_a = self.url(role=name + '_a')
        self.write_env(f'{TARGET}={url_a}\n')
        later = os.path.join(self.tmp, 'later.env')
        h.write_rename(later, f'OTHER_URL={self.url()}\n')
        agent = self.start_agent(targets=(TARGET, 'OTHER_URL'),
                                 env_files=[self.env_path, later])
        for t in (TARGET, 'OTHER_URL'):
            h.wait_for(lambda: h.target_status(agent, t)['generation'] >= 1,
                       what=f'{t} published')
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^update ')
        lazy = self.start_subscriber(agent, args=('--no-ack',))
        lazy.wait_line(r'^update ')
        p = subprocess.Popen([os.environ['DBSWAPCTL'], '--socket', agent.sock,
                              'rotate', self.env_path, TARGET, '--admin',
                              self.admin_file, '--strategy', 'alternate',
                              '--wait=30'],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        h.wait_for(lambda: h.target_status(agent, TARGET)['generation'] >= 2,
                   what='the new value published')
        h.write_rename(later, f'OTHER_URL={url_a}\n')
        h.wait_for(lambda: f'{name}_a' in
                   (h.target_status(agent, 'OTHER_URL')['conninfo'] or ''),
                   what='OTHER_URL on the old role')
        lazy.close()  # every subscriber left has acked: the wait ends
        out, err = p.communicate(timeout=40)
        self.assertEqual(p.returncode, 1, out + err)
        self.assertIn('every subscriber acked', out)
        self.assertIn(f'target OTHER_URL still logs in as {name}_a', err)
        self.assertIn(f'{name}_a keeps its login', err)
        self.assertTrue(self.can_login(f'{name}_a'))
        self.assertTrue(h.can_connect(url_a), h.last_connect_error())

    def test_alternate_refuses_roles_in_different_groups(self):
        name = self.alternate_roles()
        q = h.quote_ident
        self.cluster.durable_sql(
            f'REVOKE {q(name)} FROM {q(name + "_b")};\n'
            f'CREATE ROLE {q(name + "_x")} NOLOGIN;\n'
            f'GRANT {q(name + "_x")} TO {q(name + "_b")};\n')
        url_a = self.url(role=name + '_a')
        self.write_env(f'{TARGET}={url_a}\n')
        agent = self.start_agent()
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        r = self.rotate_cmd(agent, '--strategy', 'alternate', '--wait=10')
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f'{name} (not a group of {name}_b)', r.stderr)
        self.assertIn(f'{name}_x (not a group of {name}_a)', r.stderr)
        self.assertIn('nothing changed', r.stderr)
        self.assertEqual(self.file_value(), url_a)
        self.assertFalse(self.can_login(f'{name}_b'))
        self.assertTrue(h.can_connect(url_a), h.last_connect_error())

    def test_wait_refused_before_any_change_when_files_are_hidden(self):
        """A peer shown no file identities could not follow the write:
        refused before the server or the file change."""
        user = h.LocalUser()
        self.addCleanup(user.close)
        os.chmod(self.tmp, 0o711)
        own = os.path.join(self.tmp, 'own')
        os.mkdir(own, 0o700)
        os.chown(own, user.uid, user.gid)
        path = os.path.join(own, 'user.env')
        url = self.url()
        h.write_rename(path, f'USER_URL={url}\n')
        os.chown(path, user.uid, user.gid)
        admin = os.path.join(own, 'admin.conninfo')
        with open(self.admin_file) as f:
            h.write_rename(admin, f.read())
        os.chmod(admin, 0o600)
        os.chown(admin, user.uid, user.gid)
        self.write_url(self.password)
        agent = self.start_agent('--socket-mode', '0666',
                                 '--allow', f'{TARGET}=uid:0',
                                 '--allow', f'USER_URL=uid:{user.uid}',
                                 targets=(TARGET, 'USER_URL'),
                                 env_files=[self.env_path, path])
        os.chmod(agent.dir, 0o711)
        agent.wait_log(r'USER_URL: generation 1 published', timeout=10)
        r = user.run([os.environ['DBSWAPCTL'], '--socket', agent.sock,
                      'rotate', path, 'USER_URL', '--admin', admin,
                      '--wait=10'], timeout=40)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('only to admins', r.stderr)
        self.assertIn('nothing changed', r.stderr)
        self.assertNotIn('password of', r.stdout)
        with open(path) as f:
            self.assertEqual(f.read(), f'USER_URL={url}\n')
        self.assertTrue(h.can_connect(url), h.last_connect_error())

    def test_set_wait_on_a_name_no_target_uses(self):
        agent = self.started()
        r = self.ctl(agent, 'set', self.env_path, 'UNUSED_NAME=1',
                     '--wait=10', check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn('0 target(s) changed', r.stdout)
        self.assertIn('no target changed: nothing to wait for', r.stdout)
        self.assertNotIn('every subscriber uses', r.stdout)

    def test_rotate_messages_name_rotate(self):
        """set's file edit, called by rotate, speaks as rotate."""
        agent = self.started()
        os.chown(self.env_path, 65534, 65534)  # not trusted: refused
        r = self.rotate_cmd(agent, '--wait=10')
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn('dbswapctl set:', r.stderr)
        self.assertIn('dbswapctl rotate: ', r.stderr)
        self.assertIn('is owned by', r.stderr)
        self.assertTrue(h.can_connect(self.url()), h.last_connect_error())

    # command-line habits

    def test_watch_forbidden_target_exits_with_the_agents_message(self):
        self.write_url(self.password)
        agent = self.start_agent('--socket-mode', '0666',
                                 '--allow', f'{TARGET}=uid:0')
        agent.wait_log(rf'{TARGET}: generation 1 published', timeout=10)
        os.chmod(agent.dir, 0o711)
        with h.LocalUser() as user:
            r = user.run([os.environ['DBSWAPCTL'], '--socket', agent.sock,
                          'watch', TARGET], capture_output=True, text=True,
                         timeout=15)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('forbidden', r.stderr)
        r = self.ctl(agent, 'watch', 'NO_SUCH_TARGET', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('no target NO_SUCH_TARGET', r.stderr)

    def test_bash_completion(self):
        lib = '/usr/share/bash-completion/bash_completion'
        if not os.path.exists(lib):
            self.skipTest('bash-completion is not installed')
        comp = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            '..', '..', 'packaging', 'completion',
                            'dbswapctl')
        agent = self.started()
        script = f"""
source {lib}
source {comp}
PATH={os.path.dirname(os.environ['DBSWAPCTL'])}:$PATH
t() {{ COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1));
      COMP_LINE="$*"; COMP_POINT=${{#COMP_LINE}}; COMPREPLY=();
      _dbswapctl; echo "${{COMPREPLY[*]}}"; }}
t dbswapctl ro
t dbswapctl rotate --st
t dbswapctl rotate --strategy al
t dbswapctl --socket {agent.sock} watch DATA
t dbswapctl --socket {agent.sock} rotate {self.env_path} D
"""
        r = subprocess.run(['bash', '-c', script], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.stdout.splitlines(),
                         ['rotate', '--strategy', 'alternate', TARGET,
                          TARGET], r.stderr)

    def test_help_for_every_command(self):
        # Every command the general usage lists: a new one cannot be left
        # without its own --help or out of the completion.
        usage = subprocess.run([os.environ['DBSWAPCTL'], '--help'],
                               capture_output=True, text=True,
                               timeout=10).stdout
        listed = re.findall(r'^  ([a-z]+)\b', usage, re.M)
        self.assertEqual(sorted(listed), sorted(COMMANDS), usage)
        completion = open(os.path.join(
            os.path.dirname(__file__), '..', '..', 'packaging',
            'completion', 'dbswapctl')).read()
        words = re.search(r'local commands="([^"]*)"', completion).group(1)
        self.assertEqual(sorted(words.split()), sorted(COMMANDS))
        for cmd in COMMANDS:
            r = subprocess.run([os.environ['DBSWAPCTL'], cmd, '--help'],
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 0, (cmd, r.stderr))
            self.assertTrue(r.stdout.startswith(f'Usage: dbswapctl {cmd}'),
                            (cmd, r.stdout))
            self.assertEqual(r.stderr, '')


if __name__ == '__main__':
    main()
