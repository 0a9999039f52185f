"""libpq's own words never carry a secret out, and no password goes to a
server that asks for it in cleartext (issue 15).

An attacker who can write a value (or who runs a server a value points
at) must not read a secret through what the agent says about it: libpq's
messages quote the value's text ("invalid integer value \"...\" for
connection option \"port\"", "could not translate host name \"<tail of a
password>@...\""), and a mistyped value puts a password where libpq quotes
it.  Each value here holds a distinctive secret where libpq would echo it;
the secret must appear in no `dbswapctl status`, `status --json`, the
agent's log (its events are log lines) or a status reply, while the error
still says what is wrong.

A local user runs a fake server that answers the start-up packet with
AuthenticationCleartextPassword and records what comes back: the agent
must close the connection without sending the password, for a validation
and for a failover switch."""

import base64
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.parse

import harness as h
from common import ClusterTest, fresh_password, main

CTL = os.environ.get('DBSWAPCTL', '')

# A server that asks for the password in cleartext: answers an SSL or GSS
# request with 'N', the start-up packet with 'R' int32 8 int32 3, and then
# reports (one JSON line per connection on stdout) every byte the client
# sent after the start-up packet, until the client closes or 5 s pass.
# With the argument "hidden", the request rides in the same write as the
# 'N' (libpq 15 keeps it in its buffer), and an AuthenticationOk follows
# the start-up packet to make libpq go on to what it holds.  With "race",
# the start-up packet is answered with AuthenticationSASL and, 50 ms
# later, the cleartext request: libpq 15 answers both when they are in
# its buffer together.  With "split", the cleartext request comes in two
# writes 50 ms apart, cut inside its code.  With "longerror PW", the
# start-up packet is answered with a FATAL whose message is PW over and
# over, longer than any buffer the agent cuts an error to.  With "sasl8"
# and "md5short", an authentication request whose length is not what
# libpq 15 reads for its code, with a cleartext request where libpq would
# then read on (a review found both).
FAKE_SERVER = r'''
import json, socket, struct, sys, threading, time
hidden = sys.argv[1:] == ['hidden']
race = sys.argv[1:] == ['race']
split = sys.argv[1:] == ['split']
longerror = sys.argv[2] if sys.argv[1:2] == ['longerror'] else None
mode = sys.argv[1] if sys.argv[1:] else None
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen(16)
print(json.dumps({'port': s.getsockname()[1]}), flush=True)

def read_n(c, n):
    b = b''
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b

def serve(c):
    c.settimeout(5)
    got = b''
    try:
        while True:
            n, = struct.unpack('!I', read_n(c, 4))
            body = read_n(c, n - 4)
            code, = struct.unpack('!I', body[:4])
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                c.sendall(b'N' + (b'R' + struct.pack('!II', 8, 3)
                                  if hidden else b''))
                continue
            break
        if mode == 'sasl8':
            # Length 8, but libpq reads the mechanisms after it.
            c.sendall(b'R' + struct.pack('!II', 8, 10) + b'SCRAM-SHA-256\0\0'
                      + b'R' + struct.pack('!II', 8, 3))
        if mode == 'md5short':
            # Length 8, but libpq reads a salt: 'A' 0 0 0, then 0x52 is
            # an 'R' to libpq, and what follows a cleartext request.
            c.sendall(b'R' + struct.pack('!II', 8, 5) + b'A'
                      + struct.pack('!I', 0x52) + struct.pack('!II', 8, 3)
                      + b'\0' * (0x52 - 12))
        if longerror:
            m = ('x' * 8 + ' '.join([longerror] * 80)).encode()
            body = b'SFATAL\0VFATAL\0C28000\0M' + m + b'\0\0'
            c.sendall(b'E' + struct.pack('!I', 4 + len(body)) + body)
        if race:
            mech = b'SCRAM-SHA-256\0\0'
            c.sendall(b'R' + struct.pack('!II', 8 + len(mech), 10) + mech)
            time.sleep(0.05)
        if split:
            c.sendall(b'R' + struct.pack('!I', 8) + b'\0\0')
            time.sleep(0.05)
            c.sendall(b'\0\3')
        elif mode not in ('sasl8', 'md5short'):
            c.sendall(b'R' + struct.pack('!II', 8, 0 if hidden else 3))
        while True:
            d = c.recv(4096)
            if not d:
                break
            got += d
    except (EOFError, OSError):
        pass
    print(json.dumps({'after_startup': got.hex()}), flush=True)
    c.close()

while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


class FakeServer:
    """FAKE_SERVER run as a throwaway local user."""

    def __init__(self, *args):
        self.user = h.LocalUser()
        self.proc = self.user.popen([sys.executable, '-c', FAKE_SERVER,
                                     *args],
                                    stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.proc.stdout.readline())['port']
        self.sessions = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.sessions.append(bytes.fromhex(
                json.loads(line)['after_startup']))

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self._thread.join(5)
        self.proc.stdout.close()
        self.user.close()


class Leaks(ClusterTest):

    def start(self, env_text, targets):
        self.write_env(env_text)
        return self.start_agent(targets=targets)

    def wait_failed(self, agent, name):
        return h.wait_for(
            lambda: (s := h.target_status(agent, name))['state'] == 'failed'
            and s.get('error') and s, timeout=30, what=f'{name} failed')

    def outputs(self, agent):
        """Every text the agent shows: status both ways, the status
        reply, the log."""
        texts = {'status reply': json.dumps(h._status(agent, 10))}
        for args in (['status'], ['status', '--json']):
            r = subprocess.run([CTL, '--socket', agent.sock, *args],
                               capture_output=True, text=True, timeout=20,
                               stdin=subprocess.DEVNULL)
            texts[f'dbswapctl {" ".join(args)}'] = r.stdout + r.stderr
        texts['log'] = agent.log()
        return texts

    def assert_hidden(self, agent, secrets):
        for where, text in self.outputs(agent).items():
            for s in secrets:
                self.assertNotIn(s, text, f'{s!r} in {where}:\n{text}')

    def assert_not_sent(self, fake, pw):
        for got in fake.sessions:
            self.assertNotIn(pw.encode(), got)
            self.assertFalse(got.startswith(b'p'),
                             f'a password message was sent: {got!r}')

    def test_echoes(self):
        """Each of the issue's echo shapes: the error names what is wrong
        and quotes none of it."""
        s = {k: fresh_password(k) for k in
             ('port', 'at1', 'at2', 'nohost', 'half', 'sslmode', 'slash1',
              'slash2', 'tmo', 'hostaddr')}
        port = self.cluster.port
        cases = {
            # port=${X} with X a secret: libpq quoted it.
            'PORT_URL': (f'host=127.0.0.1 port={s["port"]} user=app',
                         'port 1 of 1 is not a number'),
            # An unencoded '@': libpq took the tail for the host.
            'AT_URL': (f'postgresql://app:{s["at1"]}@{s["at2"]}@127.0.0.1:'
                       f'{port}/postgres', 'ambiguous'),
            # No "@host": libpq read the password as the port.
            'NOHOST_URL': (f'postgresql://app:{s["nohost"]}/postgres',
                           'port 1 of 1 is not a number'),
            # Half-written: cut before "@host".
            'HALF_URL': (f'postgresql://app:{s["half"]}',
                         'port 1 of 1 is not a number'),
            'SSLMODE_URL': (f'host=127.0.0.1 port={port} '
                            f'sslmode={s["sslmode"]}', 'sslmode is not one'),
            # A '/' in a password: libpq reads port and database.
            'SLASH_URL': (f'postgresql://app:{s["slash1"]}/{s["slash2"]}'
                          f'@127.0.0.1:{port}/postgres',
                          'ambiguous'),
            'TIMEOUT_URL': (f'host=127.0.0.1 port={port} '
                            f'connect_timeout={s["tmo"]}',
                            'connect_timeout is not a whole number'),
            'HOSTADDR_URL': (f'host=db hostaddr={s["hostaddr"]} '
                             f'port={port}',
                             'hostaddr 1 of 1 is not a numeric address'),
        }
        env = ''.join(f"{k}='{v}'\n" for k, (v, _) in cases.items())
        agent = self.start(env, list(cases))
        errors = {name: self.wait_failed(agent, name)['error']
                  for name in cases}
        self.assert_hidden(agent, list(s.values()))
        for name, (_, expect) in cases.items():
            self.assertIn(expect, errors[name], name)

    def test_unresolvable_host_named_by_position(self):
        """A host that cannot be named (it holds the password) and does
        not resolve: the error gives its position."""
        pw = fresh_password('host') + '.invalid'
        agent = self.start(f"BAD_URL='host=127.0.0.1,{pw} port=1,1 "
                           f"user=app password={pw} connect_timeout=2'\n",
                           ['BAD_URL'])
        st = self.wait_failed(agent, 'BAD_URL')
        self.assertIn('host 2 of 2', st['error'])
        self.assert_hidden(agent, [pw, pw.split('.')[0]])

    def test_conninfo_in_dbname(self):
        """A dbname that libpq would expand as a connection string of its
        own (it holds '=' or starts with postgresql://) when a program
        passes it with expand_dbname: its password is a password.  Neither
        the masked value nor the server's "database ... does not exist"
        may show it; the agent refuses such a dbname."""
        s = {k: fresh_password(k) for k in ('kv', 'kvuri', 'path', 'query')}
        q = functools.partial(urllib.parse.quote, safe='')
        kv = (f'host=127.0.0.1 port={self.cluster.port} user={self.role} '
              f'password={self.password}')
        cases = {
            'KV_URL': f'{kv} dbname=host=db\\ password={s["kv"]}\\ user=app',
            'KVURI_URL': f'{kv} dbname=postgresql://app:{s["kvuri"]}@db/app',
            'PATH_URL': self.url().rsplit('/', 1)[0] + '/' +
            q(f'postgresql://app:{s["path"]}@db/app'),
            'QUERY_URL': self.url() + '?dbname=' +
            q(f'host=db password={s["query"]} user=app'),
        }
        env = ''.join(f"{k}='{v}'\n" for k, v in cases.items())
        agent = self.start(env, list(cases))
        errors = {name: self.wait_failed(agent, name)['error']
                  for name in cases}
        self.assert_hidden(agent, list(s.values()))
        for name in cases:
            self.assertIn('dbname', errors[name], name)

    def cleartext_refused(self, mode=None, sslmode='prefer',
                          why='asked for the password in cleartext'):
        """An agent on a value for a FakeServer(mode): nothing is sent
        after the start-up packet, and the value fails saying why.
        Returns the target's status, the fake and the password."""
        fake = FakeServer(*([mode] if mode else []))
        self.addCleanup(fake.close)
        pw = fresh_password('clear')
        agent = self.start(f"DATABASE_URL='host=127.0.0.1 port={fake.port} "
                           f"user=app password={pw} dbname=postgres "
                           f"sslmode={sslmode}'\n", ['DATABASE_URL'])
        # The fake reports a connection once the client closes it.
        h.wait_for(lambda: fake.sessions, timeout=30,
                   what='the fake server saw a client')
        self.assert_not_sent(fake, pw)
        st = self.wait_failed(agent, 'DATABASE_URL')
        self.assertIn(f'{why}: refused', st['error'])
        self.assert_hidden(agent, [pw])
        return st, fake

    def test_cleartext_refused(self):
        st, fake = self.cleartext_refused()
        self.assertIn(f'"127.0.0.1", port {fake.port}', st['error'])

    def test_cleartext_hidden_behind_the_tls_answer_refused(self):
        """A server that sends the cleartext request in the same write as
        its 'N' to libpq's TLS request: libpq 15 would keep it in its
        buffer, out of the agent's sight, and answer it later."""
        self.cleartext_refused('hidden')

    def test_cleartext_request_in_pieces_refused(self):
        """A request cut inside its code: libpq must not get the first
        piece before the agent has seen the code."""
        self.cleartext_refused('split', sslmode='disable')

    def test_requests_whose_length_libpq_does_not_read_refused(self):
        """libpq 15 reads an authentication request by its code (a SASL
        request's names, an MD5 request's salt), not by its length, and
        goes on from where it stopped: a length that disagrees put libpq
        inside what the agent took for the next message, and a cleartext
        request hidden there was answered."""
        for mode in ('sasl8', 'md5short'):
            with self.subTest(mode=mode):
                self.cleartext_refused(mode, sslmode='disable',
                                       why='sent a malformed message')

    def test_tls_is_not_held_back(self):
        """The guard leaves TLS alone: a server with TLS, reached with
        sslmode=require, and prefer, validates as usual."""
        d = tempfile.mkdtemp(prefix='dbswap-tls-')
        self.addCleanup(subprocess.run, ['rm', '-rf', d])
        os.chmod(d, 0o755)
        cert, key = os.path.join(d, 'server.crt'), os.path.join(d, 'server.key')
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048',
                        '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
                        '-keyout', key, '-out', cert],
                       check=True, capture_output=True)
        h._chown_server(cert)
        h._chown_server(key)
        os.chmod(key, 0o600)
        tls = h.PgCluster(settings={'ssl': 'on', 'ssl_cert_file': cert,
                                    'ssl_key_file': key,
                                    'log_connections': 'on'})
        self.addCleanup(tls.close)
        pw = fresh_password('tls')
        tls.create_role('app', pw)
        for mode in ('require', 'prefer'):
            with self.subTest(sslmode=mode):
                self.write_env(f"DATABASE_URL='host=127.0.0.1 port={tls.port} "
                               f"user=app password={pw} dbname=postgres "
                               f"sslmode={mode}'\n")
                agent = self.start_agent(targets=['DATABASE_URL'])
                h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')
                           ['state'] == 'ok', timeout=30,
                           what=f'DATABASE_URL ok with sslmode={mode}')
                agent.close()
        self.assertRegex(tls.log(), r'connection authorized: user=app '
                         r'database=postgres .*SSL enabled')

    def test_server_error_quoting_the_password_at_a_cut(self):
        """A server error that quotes the password over and over, past
        every buffer the agent cuts an error to: no piece of it is left,
        not even one cut in two by a buffer's end."""
        pw = fresh_password('cut')
        fake = FakeServer('longerror', pw)
        self.addCleanup(fake.close)
        agent = self.start(f"DATABASE_URL='host=127.0.0.1 port={fake.port} "
                           f"user=app password={pw} dbname=postgres "
                           f"sslmode=disable'\n", ['DATABASE_URL'])
        st = self.wait_failed(agent, 'DATABASE_URL')
        self.assertIn('****', st['error'])
        self.assert_hidden(agent, [pw[:6], pw[-6:]])

    @unittest.skipIf(os.environ.get('DBSWAP_TEST_AGENT_WRAPPER'),
                     'traces the agent with strace')
    def test_cleartext_request_timed_between_look_and_read_refused(self):
        """A cleartext request that arrives after the agent looked at the
        socket and before libpq read it.  strace holds every recvfrom()
        of the agent's for 200 ms after it returns, so the request (sent
        50 ms after an AuthenticationSASL) lands in that window: looking
        first and letting libpq read after would hand libpq both, and
        libpq 15 answers both.  Only what was looked at may be read."""
        fake = FakeServer('race')
        self.addCleanup(fake.close)
        pw = fresh_password('clear')
        self.write_env('NOTE=before strace\n')
        agent = self.start_agent(targets=['DATABASE_URL'])
        h.wait_for(lambda: h.file_status(agent, self.env_path)['state']
                   == 'ok', what='the env file read')
        # Attached to the running agent (root may), not its parent: the
        # agent stays the harness's child, stopped with it, and strace
        # detaches when it is killed.
        tracer = subprocess.Popen(
            ['strace', '-o', '/dev/null', '-p', str(agent.pid),
             '-e', 'trace=recvfrom', '-e', 'inject=recvfrom:delay_exit=200000'],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        self.addCleanup(tracer.wait)
        self.addCleanup(tracer.terminate)
        self.assertIn('attached', tracer.stderr.readline())
        self.write_env(f"DATABASE_URL='host=127.0.0.1 port={fake.port} "
                       f"user=app password={pw} dbname=postgres "
                       f"sslmode=disable'\n")
        h.wait_for(lambda: fake.sessions, timeout=60,
                   what='the fake server saw a client')
        for got in fake.sessions:
            # The SASL start ('p', with the mechanism) goes out; the
            # password must not.
            self.assertIn(b'SCRAM-SHA-256', got)
            self.assertNotIn(pw.encode(), got)
        st = self.wait_failed(agent, 'DATABASE_URL')
        self.assertIn('asked for the password in cleartext: refused',
                      st['error'])

    def test_cleartext_refused_on_failover(self):
        """The same server as a failover secondary: the monitor's checks
        and a switch to it never send the password."""
        fake = FakeServer()
        self.addCleanup(fake.close)
        pw = fresh_password('clear')
        agent = self.start(
            f"DATABASE_URL='{self.url()}'\n"
            f"DATABASE_URL_SECONDARY='host=127.0.0.1 port={fake.port} "
            f"user=app password={pw} dbname=postgres'\n"
            "DB_HEALTH_CHECK_INTERVAL=200\n",
            ['DATABASE_URL'])
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')['state']
                   == 'ok', timeout=30, what='DATABASE_URL ok')
        h.wait_for(lambda: fake.sessions, timeout=30,
                   what='a check of the secondary')
        self.assert_not_sent(fake, pw)
        seen = len(fake.sessions)
        with agent.client() as c:
            c.failover('DATABASE_URL', timeout=30)
        h.wait_for(lambda: len(fake.sessions) > seen, timeout=30,
                   what='a switch to the secondary')
        self.assert_not_sent(fake, pw)
        h.wait_for(lambda: 'cleartext' in agent.log(), timeout=30,
                   what='the refusal in the log')
        self.assertEqual(h.target_status(agent, 'DATABASE_URL')
                         ['failover']['current'], 'primary')
        self.assert_hidden(agent, [pw])


class RefusedShapesStayHidden(ClusterTest):
    """A password where a setting belongs, in a value the agent refuses,
    a value that only looks encrypted, a password's byte after a
    backslash: the text the agent emits about them shows none of it.
    The reader is a local user allowed to follow the targets, who sees
    their errors in `dbswapctl status`; root's status and the log are
    checked too (issue 15: masker and connplan disagreed)."""

    def setUp(self):
        super().setUp()
        self.follower = h.LocalUser()
        self.addCleanup(self.follower.close)

    def open_agent(self, env_files, targets, *args):
        agent = self.start_agent(
            '--socket-mode', '0666',
            *[a for t in targets
              for a in ('--allow', f'{t}=uid:{self.follower.uid}')],
            *args, env_files=env_files, targets=targets)
        os.chmod(agent.dir, 0o711)
        os.chmod(self.tmp, 0o755)
        return agent

    def follower_sees(self, agent):
        texts = {}
        for args in (['status'], ['status', '--json']):
            r = self.follower.run([CTL, '--socket', agent.sock, *args])
            self.assertEqual(r.returncode, 0, r.stderr)
            texts[f'follower: dbswapctl {" ".join(args)}'] = (r.stdout +
                                                              r.stderr)
        return texts

    def assert_hidden(self, agent, secrets):
        texts = Leaks.outputs(self, agent)
        texts.update(self.follower_sees(agent))
        for where, text in texts.items():
            for s in secrets:
                self.assertNotIn(s, text, f'{s!r} in {where}:\n{text}')
        return texts

    def test_settings_the_agent_refuses_are_masked(self):
        """A digits-only password as a URI's port (no "@host"), above
        65535; a password as the port after user info, for one host or
        the second of two, or as the host before a refused port; a hex
        password (openssl rand -hex) as a hostaddr; digits as port= or
        connect_timeout=: the agent refuses each, and its masked value
        shows none."""
        def digits(n):  # n digits, the first not 0: above 65535
            return str(10 ** (n - 1) + int.from_bytes(os.urandom(8), 'big')
                       % (9 * 10 ** (n - 1)))
        s = {'nohost': digits(10), 'port': fresh_password('port'),
             'second': fresh_password('second'),
             'hex': os.urandom(16).hex(), 'kvport': digits(10),
             'tmo': digits(11), 'swap': fresh_password('swap')}
        port = self.cluster.port
        auth = f'{self.role}:{self.password}'
        cases = {
            'NOHOST_URL': (f'postgresql://app:{s["nohost"]}/postgres',
                           'port 1 of 1 is not a number'),
            'PORT_URL': (f'postgresql://{auth}@127.0.0.1:{s["port"]}/x',
                         'port 1 of 1 is not a number'),
            'SECOND_URL': (f'postgresql://{auth}@127.0.0.1:{port},'
                           f'127.0.0.1:{s["second"]}/x',
                           'port 2 of 2 is not a number'),
            'HEX_URL': (f'host=db.example.com hostaddr={s["hex"]} '
                        f'user=app dbname=app',
                        'hostaddr 1 of 1 is not a numeric address'),
            # "password@host:port" with the ':' typed as '@': libpq
            # reads host PASSWORD, port 127.0.0.1.
            'SWAP_URL': (f'postgresql://{self.role}@{s["swap"]}:127.0.0.1/x',
                         'port 1 of 1 is not a number'),
            'KVPORT_URL': (f'host=127.0.0.1 port={s["kvport"]} user=app',
                           'port 1 of 1 is not a number'),
            'TMO_URL': (f'host=127.0.0.1 port={port} '
                        f'connect_timeout={s["tmo"]}',
                        'connect_timeout is not a whole number'),
        }
        self.write_env(''.join(f"{k}='{v}'\n" for k, (v, _) in
                               cases.items()))
        agent = self.open_agent([self.env_path], list(cases))
        errors = {name: Leaks.wait_failed(self, agent, name)['error']
                  for name in cases}
        texts = self.assert_hidden(agent, list(s.values()))
        for name, (_, expect) in cases.items():
            self.assertIn(expect, errors[name], name)
        # The follower does see the errors (else this proves nothing).
        self.assertIn('hostaddr 1 of 1',
                      texts['follower: dbswapctl status --json'])

    def test_a_value_that_only_looks_encrypted(self):
        """"enc:v1:" and a base64 password (or a mis-paste): neither eight
        bytes of it as a key id nor its length is shown; the error names
        the agent's own key ids."""
        key = os.path.join(self.tmp, 'agent.key')
        r = subprocess.run([CTL, 'keygen', '--out', key],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        long_pw = fresh_password('long') * 6   # past the length check
        short_pw = fresh_password('short')     # shorter than a sealed one
        files = {}
        for tag, pw in (('long', long_pw), ('short', short_pw)):
            files[tag] = os.path.join(self.tmp, f'{tag}.env')
            looks_sealed = 'enc:v1:' + base64.b64encode(pw.encode()).decode()
            h.write_rename(files[tag],
                           f'PW={looks_sealed}\n'
                           f'{tag.upper()}_URL="host=127.0.0.1 port='
                           f'{self.cluster.port} user={self.role} '
                           f'password=${{PW}}"\n')
        agent = self.open_agent(list(files.values()),
                                ['LONG_URL', 'SHORT_URL'], '--key', key)
        errs = {tag: h.wait_for(
            lambda p=path: (f := h.file_status(agent, p))['state'] ==
            'error' and f['error'], what=f'{tag}.env rejected')
            for tag, path in files.items()}
        self.assert_hidden(agent, [long_pw.encode()[:8].hex(), long_pw[:8],
                                   short_pw, f'{len(short_pw)} bytes',
                                   f'{len(long_pw)} bytes'])
        key_id = h._status(agent, 10)['keys'][0]['id']
        self.assertIn('sealed to a key the agent does not have '
                      f'(its keys: {key_id})', errs['long'])
        self.assertIn('truncated', errs['short'])

    def test_an_unknown_escape_names_no_byte(self):
        """A backslash before a password's byte in double quotes: the
        error gives file:line:column, not the byte."""
        line = 'ESC_URL="postgresql://app:Sup3r\\qSecret@127.0.0.1/x"'
        self.write_env(line + '\n')
        agent = self.open_agent([self.env_path], ['ESC_URL'])
        err = h.wait_for(lambda: (f := h.file_status(agent, self.env_path))
                         ['state'] == 'error' and f['error'],
                         what='the file rejected')
        col = line.index('\\') + 1
        self.assertIn(f'{self.env_path}:1:{col}: unknown escape', err)
        self.assert_hidden(agent, ['\\q', 'Sup3r', 'Secret'])


if __name__ == '__main__':
    main()
