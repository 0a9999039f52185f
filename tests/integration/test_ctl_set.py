"""dbswapctl set run by root where another local user has a hand: a
directory the user owns or may write, a symlink the user planted, a file
the user swapped in.  set must write nothing it was not asked to (the
file a planted symlink points at stays as it was), and give the user no
secret (a new version never takes an untrusted owner or mode): it refuses,
naming what and whose, unless --force.  Symlinks the caller owns are
followed, with a note when they lead out of the file's directory.

No agent and no cluster: set without --wait only edits the file."""

import os
import shutil
import stat
import subprocess
import tempfile
import unittest

import harness as h
from common import main

SECRET = 'postgresql://app:s3cret-new@db/app'
VICTIM_TEXT = 'ROOT_ONLY=do-not-touch\n'


def ctl_set(path, *extra, user=None, cwd=None):
    """dbswapctl set PATH DATABASE_URL=- (the value on stdin), as root or
    as user."""
    argv = [os.environ['DBSWAPCTL'], 'set', path, 'DATABASE_URL=-', *extra]
    kw = dict(capture_output=True, text=True, timeout=30,
              input=SECRET + '\n', stdin=None, cwd=cwd)
    if user is not None:
        return user.run(argv, **kw)
    return subprocess.run(argv, **kw)


def read(path):
    with open(path) as f:
        return f.read()


class CtlSet(unittest.TestCase):

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest('the attacks need root (local users, chown)')
        self.attacker = h.LocalUser()
        self.addCleanup(self.attacker.close)
        # Root's own: a directory only root may enter, a file in it.
        self.root_dir = tempfile.mkdtemp(prefix='dbswap-ctlset-root-')
        self.addCleanup(shutil.rmtree, self.root_dir, True)
        self.victim = os.path.join(self.root_dir, 'victim.env')
        with open(self.victim, 'w') as f:
            f.write(VICTIM_TEXT)
        os.chmod(self.victim, 0o600)
        self.victim_ino = os.stat(self.victim).st_ino
        # Where the user has a hand: made per test, under a root 0755
        # parent so that the user can reach it.
        self.base = tempfile.mkdtemp(prefix='dbswap-ctlset-')
        os.chmod(self.base, 0o755)
        self.addCleanup(shutil.rmtree, self.base, True)

    def as_attacker(self, *argv, groups=()):
        r = self.attacker.run(list(argv), groups=groups)
        self.assertEqual(r.returncode, 0, r.stderr)

    def dir_owned_by_attacker(self):
        d = os.path.join(self.base, 'app')
        os.mkdir(d, 0o755)
        os.chown(d, self.attacker.uid, self.attacker.gid)
        return d

    def sticky_dir(self):
        d = os.path.join(self.base, 'tmp')
        os.mkdir(d)
        os.chmod(d, 0o1777)
        return d

    def assert_victim_untouched(self):
        st = os.stat(self.victim)
        self.assertEqual(read(self.victim), VICTIM_TEXT)
        self.assertEqual((st.st_ino, stat.S_IMODE(st.st_mode), st.st_uid),
                         (self.victim_ino, 0o600, 0))

    def assert_refused(self, r, *words):
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn('refused (--force to write anyway)', r.stderr)
        for w in words:
            self.assertIn(w, r.stderr)
        self.assertNotIn(SECRET, r.stderr + r.stdout)

    def who(self):
        return f'user {self.attacker.name} (uid {self.attacker.uid})'

    # ------------------------------------------------------------------
    # Symlinks planted to send root's write elsewhere

    def test_symlink_planted_in_a_directory_the_user_owns(self):
        d = self.dir_owned_by_attacker()
        path = os.path.join(d, 'app.env')
        self.as_attacker('ln', '-s', self.victim, path)
        r = ctl_set(path)
        self.assert_refused(r, f'{d} is owned by {self.who()}')
        self.assert_victim_untouched()
        self.assertTrue(os.path.islink(path))

    def test_symlink_planted_in_a_sticky_directory(self):
        # /tmp-like: anyone may create names, only their owner remove them.
        d = self.sticky_dir()
        path = os.path.join(d, 'app.env')
        self.as_attacker('ln', '-s', self.victim, path)
        r = ctl_set(path)
        self.assert_refused(r, f'{path} is a symlink owned by {self.who()}')
        self.assert_victim_untouched()

    def test_directory_symlink_planted_on_the_way(self):
        # The user's directory holds a link to a directory of root's:
        # set would write root's file of the same name.
        d = self.dir_owned_by_attacker()
        self.as_attacker('ln', '-s', self.root_dir, os.path.join(d, 'conf'))
        r = ctl_set(os.path.join(d, 'conf', 'victim.env'))
        self.assert_refused(r, f'{d} is owned by {self.who()}')
        self.assert_victim_untouched()

    def test_symlink_planted_in_a_group_writable_directory(self):
        group, gid = h.local_group()
        d = os.path.join(self.base, 'shared')
        os.mkdir(d)
        os.chown(d, 0, gid)
        os.chmod(d, 0o770)
        path = os.path.join(d, 'app.env')
        self.as_attacker('ln', '-s', self.victim, path, groups=[gid])
        r = ctl_set(path)
        self.assert_refused(r, f'{d} is writable by its group (mode 0770)')
        self.assert_victim_untouched()
        # Through a relative path too (the walk starts at the working
        # directory as getcwd() names it).
        r = ctl_set('app.env', cwd=d)
        self.assert_refused(r, f'{d} is writable by its group')
        self.assert_victim_untouched()

    # ------------------------------------------------------------------
    # Files swapped in: the new version would keep the user's owner and
    # mode, and the user would read the secret

    def test_file_swapped_in_by_the_user_who_owns_the_directory(self):
        d = self.dir_owned_by_attacker()
        path = os.path.join(d, 'app.env')
        self.as_attacker('sh', '-c', f'umask 0; echo X=1 > {path}')
        before = os.stat(path)
        r = ctl_set(path)
        self.assert_refused(r, f'{d} is owned by {self.who()}')
        self.assertEqual(read(path), 'X=1\n')
        self.assertEqual(os.stat(path).st_ino, before.st_ino)

    def test_file_of_the_user_in_a_sticky_directory(self):
        d = self.sticky_dir()
        path = os.path.join(d, 'app.env')
        self.as_attacker('sh', '-c', f'umask 0; echo X=1 > {path}')
        r = ctl_set(path)
        self.assert_refused(r, f'{path} is owned by {self.who()}',
                            'the new version would be theirs')
        self.assertEqual(read(path), 'X=1\n')

    def test_force_writes_and_keeps_the_owner_vouched_for(self):
        d = self.dir_owned_by_attacker()
        path = os.path.join(d, 'app.env')
        self.as_attacker('sh', '-c', f'umask 077; echo X=1 > {path}')
        r = ctl_set(path, '--force')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f'warning: {d} is owned by {self.who()}; written '
                      f'anyway (--force)', r.stderr)
        self.assertIn(f'warning: {path} is owned by {self.who()}', r.stderr)
        self.assertEqual(read(path), f'X=1\nDATABASE_URL={SECRET}\n')
        st = os.stat(path)
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)),
                         (self.attacker.uid, 0o600))

    # ------------------------------------------------------------------
    # What stays allowed

    def test_own_symlink_out_of_the_directory_is_followed_with_a_note(self):
        a = os.path.join(self.base, 'a')
        b = os.path.join(self.base, 'b')
        os.mkdir(a)
        os.mkdir(b)
        real = os.path.join(b, 'real.env')
        with open(real, 'w') as f:
            f.write('X=1\n')
        os.chmod(real, 0o640)
        link = os.path.join(a, 'app.env')
        os.symlink('../b/real.env', link)
        r = ctl_set(link)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f'note: {link} is a symlink out of its directory; '
                      f'writing {os.path.realpath(real)}', r.stderr)
        self.assertTrue(os.path.islink(link))
        self.assertEqual(read(real), f'X=1\nDATABASE_URL={SECRET}\n')
        self.assertEqual(stat.S_IMODE(os.stat(real).st_mode), 0o640)
        # Within the directory: no note.
        os.symlink('app.env', os.path.join(a, 'alias.env'))
        os.replace(link, os.path.join(a, 'app.env.old'))
        with open(link, 'w') as f:
            f.write('Y=2\n')
        r = ctl_set(os.path.join(a, 'alias.env'))
        self.assertEqual((r.returncode, r.stderr), (0, ''))
        self.assertEqual(read(link), f'Y=2\nDATABASE_URL={SECRET}\n')

    def test_a_user_edits_its_own_file_in_its_own_directory(self):
        d = self.dir_owned_by_attacker()
        path = os.path.join(d, 'app.env')
        self.as_attacker('sh', '-c', f'umask 077; echo X=1 > {path}')
        r = ctl_set(path, user=self.attacker)
        self.assertEqual((r.returncode, r.stderr), (0, ''))
        self.assertEqual(os.stat(path).st_uid, self.attacker.uid)
        # Root's file stays out of its reach.
        r = ctl_set(self.victim, user=self.attacker)
        self.assertNotEqual(r.returncode, 0)
        self.assert_victim_untouched()

    def test_symlink_loop(self):
        a = os.path.join(self.base, 'loop')
        os.symlink('loop', a)
        r = ctl_set(a)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('Too many levels of symbolic links', r.stderr)


if __name__ == '__main__':
    main()
