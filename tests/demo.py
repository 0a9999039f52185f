"""The dbswap demo: a throwaway PostgreSQL, dbswapd watching an env file, an
app built on libdbswap printing each swap, and live password rotations
written into the env file.  Everything is cleaned up at the end.

Run through ./dev.sh demo (which builds first and sets the paths)."""

import os
import subprocess
import sys
import tempfile
import time

import harness as h

ROTATIONS = 3


def say(text=''):
    print(text, flush=True)


def ctl(agent, *args):
    return subprocess.run([os.environ['DBSWAPCTL'], '--socket', agent.sock,
                           *args], capture_output=True, text=True,
                          timeout=10).stdout


def show_app(sub, since):
    for line in sub.lines()[since:]:
        parts = line.split(' ', 3)
        if parts[0] == 'update':
            say(f'   [app] got generation {parts[2]} (a new conninfo)')
        elif parts[0] == 'connect':
            say(f'   [app] connected with generation {parts[1]}: '
                f'{" ".join(parts[2:])}')


def main():
    tmp = tempfile.mkdtemp(prefix='dbswap-demo-')
    env_path = os.path.join(tmp, 'app.env')
    try:
        say('1. Starting a throwaway PostgreSQL 15 cluster')
        with h.PgCluster() as pg:
            password = h.secrets.token_urlsafe(12)
            pg.create_role('app', password)
            say(f'   127.0.0.1:{pg.port}, role "app" with a random password')

            say(f'\n2. Writing {env_path}')
            h.write_rename(env_path, '# the app\'s database\n'
                           f'DATABASE_URL={pg.url("app", password)}\n')

            say('\n3. Starting dbswapd --env app.env')
            with h.Agent(env_files=[env_path]) as agent:
                agent.wait_log(r'generation 1 published')
                say('   ' + agent.log().splitlines()[-1])

                say('\n4. Starting an app on libdbswap; it connects with '
                    'every value it gets, then acks')
                with h.Subscriber(agent.sock, 'DATABASE_URL') as app, \
                        agent.client(name='demo-timer') as timer:
                    app.wait_line(r'^connect 1 ')
                    show_app(app, 0)
                    timer.subscribe(['DATABASE_URL'])
                    u = timer.next_update()
                    timer.ack('DATABASE_URL', u['generation'])

                    say(f'\n5. Rotating the password {ROTATIONS} times: '
                        'ALTER ROLE on the server, then the new value '
                        'into the env file (write a temp file, mv)')
                    for i in range(ROTATIONS):
                        password = h.secrets.token_urlsafe(12)
                        pg.set_password('app', password)
                        mark = len(app.lines())
                        t0 = time.monotonic()
                        h.write_rename(env_path, '# the app\'s database\n'
                                       'DATABASE_URL='
                                       f'{pg.url("app", password)}\n')
                        u = timer.next_update()
                        ms = (time.monotonic() - t0) * 1000
                        gen = u['generation']
                        timer.ack('DATABASE_URL', gen)
                        app.wait_line(rf'^connect {gen} ')
                        say(f'   rotation {i + 1}: validated by dbswapd and '
                            f'delivered {ms:.1f} ms after the mv')
                        show_app(app, mark)
                    h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')
                               ['acked'] == 2, what='acks')

                    say('\n6. A wrong password written into the file is not '
                        'published')
                    h.write_rename(env_path, 'DATABASE_URL='
                                   f'{pg.url("app", "not-the-password")}\n')
                    st = h.wait_for(lambda: (s := h.target_status(
                        agent, 'DATABASE_URL'))['state'] == 'failed' and s,
                        what='the failure')
                    say(f'   generation stays {st["generation"]}; error: '
                        f'{st["error"]}')

                    say('\n7. dbswapctl status')
                    for line in ctl(agent, 'status').splitlines():
                        say('   ' + line)
        say('\n8. Cleaned up: cluster stopped and removed, agent stopped.')
    finally:
        subprocess.run(['rm', '-rf', tmp])
    return 0


if __name__ == '__main__':
    sys.exit(main())
