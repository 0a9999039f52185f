"""Encrypted env files (whole file and per value), keys, and
`dbswapctl set --wait`, against a real agent and PostgreSQL."""

import json
import os
import pwd
import stat
import subprocess

import harness as h
from common import ClusterTest, fresh_password, main

CTL = os.environ.get('DBSWAPCTL', 'dbswapctl')
MAGIC = b'DBSWAP'


def ctl(*args, input=None, check=True, env=None):
    r = subprocess.run([CTL, *args], input=input, capture_output=True,
                       timeout=60, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f'dbswapctl {" ".join(args)} exited '
                             f'{r.returncode}: {r.stderr.decode()}')
    return r


class Keys(ClusterTest):

    def keygen(self, name='agent.key'):
        path = os.path.join(self.tmp, name)
        r = ctl('keygen', '--out', path)
        pub = r.stdout.decode().strip()
        self.assertRegex(pub, r'^[A-Za-z0-9+/]{43}=$')
        return path, pub

    def test_keygen_pubkey(self):
        path, pub = self.keygen()
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(ctl('pubkey', path).stdout.decode().strip(), pub)
        r = ctl('keygen', '--out', path, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b'exists', r.stderr)
        os.chmod(path, 0o640)
        r = ctl('pubkey', path, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f'chmod 600 {path}'.encode(), r.stderr)

    def test_encrypt_decrypt(self):
        path, pub = self.keygen()
        plain = b'# db\nDATABASE_URL=postgresql://a:b@c/d\n'
        sealed = ctl('encrypt', '--pubkey', pub, input=plain).stdout
        self.assertTrue(sealed.startswith(MAGIC))
        self.assertNotIn(b'postgresql', sealed)
        self.assertEqual(ctl('decrypt', '--key', path, input=sealed).stdout,
                         plain)
        # --pubkey also takes a file holding the key
        pubfile = os.path.join(self.tmp, 'agent.pub')
        with open(pubfile, 'w') as f:
            f.write(f'# the agent\n{pub}\n')
        sealed = ctl('encrypt', '--pubkey', pubfile, input=plain).stdout
        self.assertEqual(ctl('decrypt', '--key', path, input=sealed).stdout,
                         plain)


class Encrypted(ClusterTest):
    """An agent holding a key, a sealed env file, a subscriber."""

    def setUp(self):
        super().setUp()
        self.key = os.path.join(self.tmp, 'agent.key')
        self.pub = ctl('keygen', '--out', self.key).stdout.decode().strip()

    def seal_env(self, text, pub=None):
        sealed = ctl('encrypt', '--pubkey', pub or self.pub,
                     input=text.encode()).stdout
        h.write_rename(self.env_path, sealed)

    def start(self, *extra, keys=None):
        args = []
        for k in (keys or [self.key]):
            args += ['--key', k]
        agent = self.start_agent(*args, *extra)
        sub = self.start_subscriber(agent)
        return agent, sub

    def set(self, agent, *args, input=None, check=True):
        return ctl('--socket', agent.sock, 'set', self.env_path, *args,
                   input=input, check=check)

    def status(self, agent):
        return h.target_status(agent, 'DATABASE_URL')

    def file_status(self, agent):
        return h.file_status(agent, self.env_path)

    def test_sealed_file_reaches_subscribers(self):
        self.seal_env(f'# sealed\nOTHER=1\nDATABASE_URL={self.url()}\n')
        agent, sub = self.start()
        m = sub.wait_line(r'^update DATABASE_URL 1 (.*)$')
        self.assertEqual(m.group(1), self.url())
        sub.wait_line(r'^connect 1 ok$')
        f = self.file_status(agent)
        self.assertEqual((f['state'], f['encryption'], f['entries']),
                         ('ok', 'file', 2))

    def test_set_wait_on_a_sealed_file(self):
        self.seal_env(f'# keep me\nOTHER=1\nDATABASE_URL={self.url()}\n')
        agent, sub = self.start()
        sub.wait_line(r'^connect 1 ok$')
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        r = self.set(agent, 'DATABASE_URL=-', '--key', self.key, '--wait',
                     input=(self.url(new) + '\n').encode())
        out = r.stdout.decode()
        self.assertIn('generation 2 published', out)
        self.assertIn('1 of 1 subscriber(s) acked generation 2', out)
        self.assertRegex(out, r'done: .*can be revoked')
        # --wait returned only after the subscriber had it
        self.assertEqual(self.status(agent)['acked'], 1)
        self.assertEqual(sub.updates()[-1], (2, self.url(new)))
        # still sealed, the rest kept
        with open(self.env_path, 'rb') as f:
            data = f.read()
        self.assertTrue(data.startswith(MAGIC))
        plain = ctl('decrypt', '--key', self.key, input=data).stdout
        self.assertEqual(plain.decode(), '# keep me\nOTHER=1\n'
                         f'DATABASE_URL={self.url(new)}\n')
        # a sealed file needs the key to be edited
        r = self.set(agent, 'OTHER=2', '--pubkey', self.pub, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b'--key', r.stderr)

    def test_set_wait_encrypted_values_with_public_key_only(self):
        h.write_rename(self.env_path, '# readable, diff-friendly\n'
                       'APP_NAME=billing\n'
                       f'DATABASE_URL={self.url()}\n'
                       'LOG_LEVEL=info\n')
        agent, sub = self.start()
        sub.wait_line(r'^connect 1 ok$')
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        r = self.set(agent, 'DATABASE_URL=-', '--pubkey', self.pub,
                     '--encrypt-values', '--wait',
                     input=(self.url(new) + '\n').encode())
        self.assertIn(b'done:', r.stdout)
        with open(self.env_path) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[:2], ['# readable, diff-friendly',
                                     'APP_NAME=billing'])
        self.assertRegex(lines[2], r'^DATABASE_URL=enc:v1:[A-Za-z0-9+/=]+$')
        self.assertEqual(lines[3], 'LOG_LEVEL=info')
        self.assertNotIn(new, '\n'.join(lines))
        self.assertEqual(sub.updates()[-1], (2, self.url(new)))
        self.assertEqual(self.file_status(agent)['encryption'], 'values')

        # A value that was encrypted stays encrypted: --pubkey suffices.
        newer = fresh_password()
        self.cluster.set_password(self.role, newer)
        self.set(agent, f'DATABASE_URL={self.url(newer)}', '--pubkey',
                 self.pub, '--wait')
        with open(self.env_path) as f:
            self.assertIn('DATABASE_URL=enc:v1:', f.read())
        self.assertEqual(sub.updates()[-1], (3, self.url(newer)))
        # ...and cannot be changed without a key to encrypt it with.
        r = self.set(agent, 'DATABASE_URL=x', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b'--pubkey', r.stderr)

    def test_set_wait_exit_codes(self):
        h.write_rename(self.env_path, f'DATABASE_URL={self.url()}\n')
        agent, sub = self.start()
        sub.wait_line(r'^connect 1 ok$')
        # rejected: wrong password, with the reason, masked
        bad = fresh_password('wrong')
        r = self.set(agent, f'DATABASE_URL={self.url(bad)}', '--wait=10',
                     check=False)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn(b'password authentication failed', r.stderr)
        self.assertNotIn(bad.encode(), r.stderr + r.stdout)
        # a reload between the write and --wait's look does not hide what
        # the write changed (the read that first saw the file counts)
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        self.set(agent, f'DATABASE_URL={self.url(new)}')
        ctl('--socket', agent.sock, 'reload')
        ident = h.file_status(agent, self.env_path)['identity']
        seq = h.file_status(agent, self.env_path)['seq']
        self.assertEqual(self.status(agent)['value_seq'], seq, ident)
        sub.wait_line(r'^update DATABASE_URL 2 ')
        # a change that touches no target returns at once
        self.set(agent, f'DATABASE_URL={self.url()}')
        r = self.set(agent, 'UNRELATED=1', '--wait')
        self.assertIn(b'0 target(s) changed', r.stdout)
        # timeout: a subscriber that never acks, named with its pid
        lazy = self.start_subscriber(agent, args=['--no-ack', '--no-connect',
                                                  '--name', 'lazy-app'])
        lazy.wait_line(r'^update DATABASE_URL')
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        r = self.set(agent, f'DATABASE_URL={self.url(new)}', '--wait=2',
                     check=False)
        self.assertEqual(r.returncode, 5, r.stderr)
        self.assertIn(f'pid {lazy.pid} (lazy-app)'.encode(), r.stderr)
        self.assertIn(b'acked by 1 of 2', r.stderr)

    def test_set_keeps_mode_owner_and_layout(self):
        text = ('# header comment\n\nexport A=1   # trailing\n'
                'B="multi\nline"\nDATABASE_URL=' + self.url() + '\nC=3\n')
        h.write_rename(self.env_path, text)
        pg = pwd.getpwnam('postgres')
        os.chown(self.env_path, pg.pw_uid, pg.pw_gid)
        os.chmod(self.env_path, 0o640)
        agent, sub = self.start()
        sub.wait_line(r'^connect 1 ok$')
        value = "it's \"quoted\" $HOME ${X} # not a comment"
        # Another user's file: root vouches for its owner with --force
        # (without it, set refuses: test_ctl_set.py).
        r = self.set(agent, f'A={value}', 'D=new', '--wait', '--force')
        self.assertIn(f'is owned by user postgres (uid {pg.pw_uid}); '
                      f'written anyway (--force)', r.stderr.decode())
        st = os.stat(self.env_path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        self.assertEqual((st.st_uid, st.st_gid), (pg.pw_uid, pg.pw_gid))
        with open(self.env_path) as f:
            new = f.read()
        lines = new.splitlines()
        self.assertEqual(lines[:2], ['# header comment', ''])
        self.assertTrue(lines[2].startswith('export A='))
        self.assertTrue(lines[2].endswith('   # trailing'))
        self.assertEqual(lines[3:], ['B="multi', 'line"',
                                     'DATABASE_URL=' + self.url(), 'C=3',
                                     'D=new'])
        # no temp files left behind
        self.assertEqual(sorted(os.listdir(self.tmp)),
                         sorted(['agent.key', 'app.env']))

    def test_key_rotation_two_keys(self):
        key2 = os.path.join(self.tmp, 'new.key')
        pub2 = ctl('keygen', '--out', key2).stdout.decode().strip()
        self.seal_env(f'DATABASE_URL={self.url()}\n')
        agent, sub = self.start(keys=[self.key, key2])
        sub.wait_line(r'^connect 1 ok$')
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        self.seal_env(f'DATABASE_URL={self.url(new)}\n', pub=pub2)
        sub.wait_line(r'^update DATABASE_URL 2 ')
        self.assertEqual(len(h._status(agent, 5)['keys']), 2)

    def test_key_from_systemd_credentials(self):
        creds = os.path.join(self.tmp, 'creds')
        os.mkdir(creds, 0o700)
        os.rename(self.key, os.path.join(creds, 'dbswap.key'))
        self.seal_env(f'DATABASE_URL={self.url()}\n')
        agent = self.start_agent(env={'CREDENTIALS_DIRECTORY': creds})
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        keys = h._status(agent, 5)['keys']
        self.assertEqual(keys[0]['path'], os.path.join(creds, 'dbswap.key'))

    def test_credential_readable_by_group_but_not_others(self):
        """systemd may give the service user read access to a credential
        through an ACL, which shows as group bits (0440): accepted for a
        credential; a key readable by others never is."""
        creds = os.path.join(self.tmp, 'creds')
        os.mkdir(creds, 0o700)
        path = os.path.join(creds, 'dbswap.key')
        os.rename(self.key, path)
        os.chmod(path, 0o440)
        self.seal_env(f'DATABASE_URL={self.url()}\n')
        agent = self.start_agent(env={'CREDENTIALS_DIRECTORY': creds})
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        self.assertIsNone(h._status(agent, 5)['keys'][0]['error'])
        agent.stop()
        os.chmod(path, 0o444)
        agent = self.start_agent(env={'CREDENTIALS_DIRECTORY': creds})
        keys = h._status(agent, 5)['keys']
        self.assertIn('accessible by group or others', keys[0]['error'])
        # The same 0440 outside the credentials directory is refused.
        os.chmod(path, 0o440)
        agent.stop()
        agent = self.start_agent('--key', path)
        self.assertIn('accessible by group or others',
                      h._status(agent, 5)['keys'][0]['error'])


class Faults(Encrypted):
    """Every fault leaves the old credentials in force, with a clear error
    in the log and in status."""

    def setUp(self):
        super().setUp()
        self.seal_env(f'DATABASE_URL={self.url()}\n')
        self.agent, self.sub = self.start()
        self.sub.wait_line(r'^connect 1 ok$')

    def assert_rejected(self, pattern, *secrets):
        f = h.wait_for(lambda: (s := self.file_status(self.agent))
                       ['state'] == 'error' and s, what='file rejected')
        self.assertRegex(f['error'], pattern)
        self.assertTrue(f['error'].startswith(self.env_path + ':'))
        t = self.status(self.agent)
        self.assertEqual((t['generation'], t['valid'], t['state']),
                         (1, True, 'ok'))
        self.assertEqual(len(self.sub.updates()), 1)
        log = self.agent.log()
        self.assertIn(f['error'], log)
        for s in (self.password,) + secrets:
            self.assertNotIn(s, log)
            self.assertNotIn(s, json.dumps(h._status(self.agent, 5)))

    def test_sealed_to_a_key_the_agent_lacks(self):
        other = os.path.join(self.tmp, 'other.key')
        pub = ctl('keygen', '--out', other).stdout.decode().strip()
        new = fresh_password()
        self.seal_env(f'DATABASE_URL={self.url(new)}\n', pub=pub)
        self.assert_rejected(r'sealed to a key the agent does not have '
                             r'\(its keys: [0-9a-f]{16}\)', new)

    def test_tampered(self):
        with open(self.env_path, 'rb') as f:
            data = bytearray(f.read())
        data[-5] ^= 0x40
        h.write_rename(self.env_path, bytes(data))
        self.assert_rejected(r'does not open')

    def test_truncated(self):
        with open(self.env_path, 'rb') as f:
            data = f.read()
        h.write_rename(self.env_path, data[:40])
        self.assert_rejected(r'truncated')

    def test_bad_encrypted_value(self):
        h.write_rename(self.env_path, 'DATABASE_URL=enc:v1:bm90IHNlYWxlZA==\n')
        self.assert_rejected(r':1:\d+: DATABASE_URL: ')

    def test_unknown_value_version(self):
        h.write_rename(self.env_path, 'DATABASE_URL=enc:v9:AAAA\n')
        self.assert_rejected(r'DATABASE_URL: .*version')

    def test_file_swapped_mid_write(self):
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        sealed = ctl('encrypt', '--pubkey', self.pub,
                     input=f'DATABASE_URL={self.url(new)}\n'.encode()).stdout
        # half the sealed bytes, a pause, then the rest, in place
        h.write_slow(self.env_path, sealed, delay=0.1)
        m = self.sub.wait_line(r'^update DATABASE_URL 2 (.*)$')
        self.assertEqual(m.group(1), self.url(new))
        self.assertNotRegex(self.agent.log(), 'encrypted file')

    def test_key_file_problems_on_reload(self):
        # The key goes away or gets too open: a reload keeps the key that
        # was loaded, reports the problem, and the sealed file still opens.
        os.chmod(self.key, 0o644)
        ctl('--socket', self.agent.sock, 'reload')
        keys = h._status(self.agent, 5)['keys']
        self.assertIn('chmod 600', keys[0]['error'])
        self.assertIsNotNone(keys[0]['id'])
        os.unlink(self.key)
        ctl('--socket', self.agent.sock, 'reload')
        keys = h._status(self.agent, 5)['keys']
        self.assertIn('No such file', keys[0]['error'])
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        self.seal_env(f'DATABASE_URL={self.url(new)}\n')
        self.sub.wait_line(r'^update DATABASE_URL 2 ')

    def test_agent_started_with_a_bad_key(self):
        # an agent whose key is missing: the sealed file cannot open
        agent = self.start_agent('--key', os.path.join(self.tmp, 'nope.key'))
        f = h.wait_for(lambda: (s := h.file_status(agent, self.env_path))
                       ['state'] == 'error' and s, what='file rejected')
        self.assertIn('does not have', f['error'])
        self.assertIn('nope.key', h._status(agent, 5)['keys'][0]['error'])
        self.assertFalse(h.target_status(agent, 'DATABASE_URL')['valid'])

    def test_key_added_after_start_loads_on_reload(self):
        late = os.path.join(self.tmp, 'late.key')
        agent = self.start_agent('--key', late)
        h.wait_for(lambda: h.file_status(agent, self.env_path)['state']
                   == 'error', what='file rejected without its key')
        self.assertFalse(h.target_status(agent, 'DATABASE_URL')['valid'])
        os.rename(self.key, late)
        ctl('--socket', agent.sock, 'reload')
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')['valid'],
                   what='the sealed file opened with the key added since')
        self.assertIsNone(h._status(agent, 5)['keys'][0]['error'])

    def test_reload_says_a_credential_takes_a_restart(self):
        creds = os.path.join(self.tmp, 'creds')
        os.mkdir(creds, 0o700)
        agent = self.start_agent(env={'CREDENTIALS_DIRECTORY': creds})
        ctl('--socket', agent.sock, 'reload')
        h.wait_for(lambda: 'takes a restart' in agent.log(),
                   what='the log says a new credential takes a restart')


class Secrets(Encrypted):

    def test_password_appears_only_where_asked(self):
        """A rotation and the error paths with known passwords; then the
        agent's log, status, and every dbswapctl output but --show-secret
        are searched for them."""
        self.seal_env(f'DATABASE_URL={self.url()}\n')
        agent, sub = self.start()
        watch = subprocess.Popen([CTL, '--socket', agent.sock, 'watch',
                                  'DATABASE_URL', '--count', '2'],
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
        self.addCleanup(watch.kill)
        sub.wait_line(r'^connect 1 ok$')
        new = fresh_password('rotated')
        bad = fresh_password('wrong')
        self.cluster.set_password(self.role, new)
        outputs = []
        r = self.set(agent, 'DATABASE_URL=-', '--key', self.key, '--wait',
                     input=(self.url(new) + '\n').encode())
        outputs.append(r.stdout + r.stderr)
        # set --wait follows the agent's 6 attempts (about 3 s of backoff
        # plus the logins, longer under valgrind) and exits 4 when it gives
        # up: the bound only catches a wait that never ends.
        r = self.set(agent, 'DATABASE_URL=-', '--key', self.key, '--wait=60',
                     input=(self.url(bad) + '\n').encode(), check=False)
        self.assertEqual(r.returncode, 4)
        outputs.append(r.stdout + r.stderr)
        h.write_rename(self.env_path, f'DATABASE_URL="{self.url(bad)}\n')
        h.wait_for(lambda: h.file_status(agent, self.env_path)['state'] ==
                   'error', what='syntax error')
        for args in (['status'], ['status', '--json']):
            r = ctl('--socket', agent.sock, *args)
            outputs.append(r.stdout + r.stderr)
        out, _ = watch.communicate(timeout=10)
        outputs.append(out)
        shown = ctl('--socket', agent.sock, 'watch', 'DATABASE_URL',
                    '--count', '1', '--show-secret').stdout
        everything = b'\n'.join(outputs) + agent.log().encode()
        with open(f'/proc/{agent.pid}/cmdline', 'rb') as f:
            everything += f.read()
        with open(f'/proc/{agent.pid}/environ', 'rb') as f:
            everything += f.read()
        for secret in (self.password, new, bad):
            self.assertNotIn(secret.encode(), everything, secret)
        self.assertIn(new.encode(), shown)


if __name__ == '__main__':
    main()
