#!/usr/bin/python3
"""The systemd lab: the built .debs on a Debian 12 root booted under
systemd-nspawn, with systemd as PID 1.

    tests/lab/lab.py (--debs DIR | --build-debs OUTDIR) [--only C,...]
                     [--keep] [--rebuild-root]

The root is made once by debootstrap (bookworm, minbase, from the Debian
mirror apt uses here) with systemd, dbus, PostgreSQL 15 and the agent's
libraries, and cached as a tar in $DBSWAP_LAB_CACHE (default
/var/cache/dbswap-lab), named after a hash of what goes into it; later runs
unpack that.  The container has no network (--private-network): everything
apt needs for the .debs is in the root already.  Minbase has no procps, so
/bin/kill is missing there as on any minimal system.

nspawn on a machine whose PID 1 is not systemd (cgroups v1, /run on disk)
needs: a cgroup of its own in every hierarchy (made here under the
caller's, removed after), a private tmpfs on /run/systemd/nspawn (in a mount
namespace of its own, so the host's /run is untouched), and --keep-unit
--register=no --private-network.  A reboot inside ends nspawn, so the reboot
check powers off and boots the same root again.

Commands run inside through nsenter into the container's PID 1.  Each check
prints PASS, FAIL (with the commands' output, passwords masked) or SKIP.
Exit: 0 when nothing failed, 1 when a check failed, 77 when the lab cannot
run here (not root, no nspawn, no cgroup to make, no way to make the root,
or a root that does not boot before anything of ours is installed).
"""

import argparse
import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

SUITE = "bookworm"
VARIANT = "minbase"
# What the root holds besides minbase: systemd as init, dbus for
# systemd-analyze and systemctl's bus calls, the agent's shared libraries
# (the container has no network, so apt must find every dependency of the
# .debs installed already), and PostgreSQL 15 for rotation and failover.
# A change here makes a new root (the cache file is named after this list).
PACKAGES = [
    "systemd", "dbus",
    "libpq5", "libsodium23", "libmsgpackc2", "libc-ares2", "libsystemd0",
    "libmicrohttpd12",
    "postgresql-15", "postgresql-client-15",
]
# Steps run in the root (chroot) after debootstrap, part of the hash too:
# the second cluster, for failover.
PREP = [
    "pg_createcluster 15 second -p 5433 >/dev/null",
    "apt-get clean",
]
CACHE = os.environ.get("DBSWAP_LAB_CACHE", "/var/cache/dbswap-lab")
SKIP = 77
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# The same bound as the build's hardening test (packaging/meson.build).
EXPOSURE_MAX = 2.0
ENV_FILE = "/etc/dbswap/dbswap.env"
DEFAULTS = "/etc/default/dbswapd"
METRICS_PORT = 9187
# Names /metrics must have (a few of each kind: per target, per server,
# counters, the agent's own).
METRICS_NAMES = ["dbswap_build_info", "dbswap_clients",
                 "dbswap_target_generation", "dbswap_target_subscribers",
                 "dbswap_target_acked_subscribers", "dbswap_server_up",
                 "dbswap_validations_total", "dbswap_server_switches_total",
                 "dbswap_health_check_seconds"]
# The --on-event hook: it runs in the agent's sandbox (user dbswap,
# ProtectSystem=strict, PrivateTmp=yes), where the agent's state directory
# is the one place on disk it may write that others can read.
HOOK = "/usr/local/bin/record-hook"
HOOK_LOG = "/var/lib/dbswap/lab-events"
HOOK_TEXT = """#!/bin/sh
# lab: one line per event, the DBSWAP_* variables the agent passed
line=$(env | grep '^DBSWAP_' | sort | tr '\\n' ' ')
echo "$1: $line" >>""" + HOOK_LOG + """
"""
ADMIN_FILE = "/etc/dbswap/rotate/lab.admin"


def sampling_cmdlines(cmd):
    """A shell command running CMD while every /proc/*/cmdline is sampled
    into /root/cmdlines, CMD's output after; CMD's exit."""
    return ("rm -f /root/cmdlines; touch /run/lab-poll; "
            "( while [ -e /run/lab-poll ]; do for f in /proc/[0-9]*/"
            "cmdline; do tr '\\0' ' ' 2>/dev/null <$f; echo; done; done "
            f">/root/cmdlines ) & {cmd} >/root/cmd.out 2>&1; rc=$?; "
            "rm -f /run/lab-poll; wait; cat /root/cmd.out; exit $rc")


def log(msg):
    print(msg, flush=True)


class Skip(Exception):
    pass


class Fail(Exception):
    pass


def skip_lab(msg):
    log(f"lab: SKIP: {msg}")
    sys.exit(SKIP)


# -- the root ------------------------------------------------------------

def debian_mirror():
    """The first Debian archive URI apt uses here for the suite (not the
    security archive), else deb.debian.org."""
    files = glob.glob("/etc/apt/sources.list") + \
        sorted(glob.glob("/etc/apt/sources.list.d/*"))
    for path in files:
        try:
            text = open(path, encoding="utf-8").read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
                    if m:
                        fields[m.group(1).lower()] = m.group(2).split()
                if SUITE in fields.get("suites", []) and \
                        "deb" in fields.get("types", []):
                    for uri in fields.get("uris", []):
                        if "security" not in uri:
                            return uri
        else:
            for line in text.splitlines():
                f = line.split("#")[0].split()
                if len(f) >= 3 and f[0] == "deb":
                    i = 1
                    while i < len(f) and f[i].startswith("["):
                        while not f[i].endswith("]"):
                            i += 1
                        i += 1
                    if i + 1 < len(f) and f[i + 1] == SUITE and \
                            "security" not in f[i]:
                        return f[i]
    return "http://deb.debian.org/debian"


def root_tar():
    h = hashlib.sha256(json.dumps([SUITE, VARIANT, PACKAGES, PREP])
                       .encode()).hexdigest()[:12]
    return os.path.join(CACHE, f"root-{SUITE}-{h}.tar.zst")


def make_root(tar):
    """debootstrap a root, prepare it, and cache it as TAR."""
    os.makedirs(CACHE, exist_ok=True)
    work = tempfile.mkdtemp(prefix="make-", dir=CACHE)
    try:
        root = os.path.join(work, "root")
        mirror = debian_mirror()
        log(f"lab: making the root: debootstrap --variant={VARIANT} "
            f"{SUITE} from {mirror} (about a minute and a half with a "
            "fast mirror)")
        start = time.monotonic()
        r = subprocess.run(
            ["nice", "-n", "10", "debootstrap", f"--variant={VARIANT}",
             "--include=" + ",".join(PACKAGES), SUITE, root, mirror],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            tail = "\n".join(r.stdout.splitlines()[-20:])
            skip_lab(f"debootstrap failed (no mirror reachable?):\n{tail}")
        for step in PREP:
            subprocess.run(["chroot", root, "sh", "-ec", step], check=True,
                           env={"PATH": PATH, "LANG": "C.UTF-8"})
        tmp = tar + f".tmp{os.getpid()}"
        subprocess.run(["tar", "--zstd", "--numeric-owner", "--xattrs",
                        "--acls", "-C", root, "-cpf", tmp, "."], check=True)
        os.rename(tmp, tar)
        log(f"lab: root made and cached in {time.monotonic() - start:.0f} s: "
            f"{tar} ({os.path.getsize(tar) >> 20} MiB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- cgroups and the container --------------------------------------------

def cgroup_dirs(name):
    """One new cgroup per mounted hierarchy, under the caller's own:
    [(path, is_cpuset)]."""
    mine = {}
    for line in open("/proc/self/cgroup"):
        num, ctrls, path = line.rstrip("\n").split(":", 2)
        if num == "0":
            mine["cgroup2"] = path
        for c in ctrls.split(","):
            if c:
                mine[c] = path
    dirs = []
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        sep = f.index("-")
        fstype, opts = f[sep + 1], f[sep + 3].split(",")
        if fstype == "cgroup2":
            key = "cgroup2"
        elif fstype == "cgroup":
            key = next((o for o in opts if o in mine), None)
        else:
            continue
        if key is None or key not in mine:
            continue
        dirs.append((os.path.join(f[4] + mine[key].rstrip("/"), name),
                     "cpuset" in opts))
    return dirs


def cgroup_kill_remove(path):
    """Kill what is left in PATH and below, then remove the tree."""
    for _ in range(50):
        pids = []
        for d, _subdirs, files in os.walk(path):
            if "cgroup.procs" in files:
                try:
                    pids += open(os.path.join(d, "cgroup.procs")).read().split()
                except OSError:
                    pass
        if not pids:
            break
        for p in pids:
            try:
                os.kill(int(p), 9)
            except OSError:
                pass
        time.sleep(0.1)
    for d, _subdirs, _files in sorted(os.walk(path), key=lambda w: -len(w[0])):
        try:
            os.rmdir(d)
        except OSError:
            pass


class Container:
    def __init__(self, root, logfile):
        self.root = root
        self.logfile = logfile
        self.name = f"dbswap-lab-{os.getpid()}"
        self.cgroups = []
        self.proc = None
        self.leader = None
        self.made_nspawn_dir = False
        self.boots = 0

    def make_cgroups(self):
        try:
            for path, cpuset in cgroup_dirs(self.name):
                os.makedirs(path, exist_ok=True)
                self.cgroups.append(path)
                if cpuset:
                    parent = os.path.dirname(path)
                    for f in ("cpuset.cpus", "cpuset.mems"):
                        val = open(os.path.join(parent, f)).read()
                        with open(os.path.join(path, f), "w") as out:
                            out.write(val)
        except OSError as e:
            self.remove_cgroups()
            skip_lab(f"cannot make a cgroup for nspawn: {e}")
        if not self.cgroups:
            skip_lab("no cgroup hierarchy mounted")

    def remove_cgroups(self):
        for path in self.cgroups:
            cgroup_kill_remove(path)
        self.cgroups = []

    def boot(self, timeout=120):
        """Boot the root; returns once systemd says running or degraded."""
        if not self.cgroups:
            self.make_cgroups()
        if not os.path.isdir("/run/systemd/nspawn"):
            os.makedirs("/run/systemd/nspawn")
            self.made_nspawn_dir = True
        cgroups = list(self.cgroups)

        def enter_cgroups():
            for path in cgroups:
                with open(os.path.join(path, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

        self.boots += 1
        out = open(self.logfile, "a")
        out.write(f"\n--- boot {self.boots} ---\n")
        out.flush()
        script = ("mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn && "
                  "exec systemd-nspawn -q -D \"$1\" -b -M dbswap-lab "
                  "--keep-unit --register=no --private-network "
                  "--console=read-only")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private",
             "sh", "-c", script, "sh", self.root],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            preexec_fn=enter_cgroups)
        out.close()
        deadline = time.monotonic() + timeout
        self.leader = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.leader = self.find_leader()
            if self.leader:
                break
            time.sleep(0.2)
        if not self.leader:
            raise Fail("the container did not start: " + self.log_tail())
        # systemctl answers once PID 1 has its private socket; before, it
        # prints nothing (or "offline").
        state, err = "", ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            r = self.run("systemctl is-system-running", timeout=10)
            state, err = r.stdout.strip(), r.stderr.strip()
            if state in ("running", "degraded", "maintenance", "stopping"):
                break
            time.sleep(0.3)
        if state not in ("running", "degraded"):
            raise Fail(f"boot ended in state {state!r} ({err}): "
                       + self.log_tail())
        if state == "degraded":
            failed = self.run("systemctl --failed --no-legend --plain")
            log(f"lab: booted degraded: {failed.stdout.strip()}")
        return state

    def log_tail(self, n=30):
        try:
            lines = open(self.logfile, errors="replace").read().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def find_leader(self):
        """The container's PID 1: a child of our nspawn whose pid in its
        own namespace is 1."""
        nspawn = self.proc.pid
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                status = open(f"/proc/{d}/status").read()
            except OSError:
                continue
            m = re.search(r"^NSpid:\s+(.*)$", status, re.M)
            pp = re.search(r"^PPid:\s+(\d+)", status, re.M)
            if not m or not pp:
                continue
            ns = m.group(1).split()
            if len(ns) >= 2 and ns[-1] == "1" and \
                    self.descends_from(int(pp.group(1)), nspawn):
                return int(d)
        return None

    @staticmethod
    def descends_from(pid, ancestor):
        for _ in range(5):
            if pid == ancestor:
                return True
            if pid <= 1:
                return False
            try:
                status = open(f"/proc/{pid}/status").read()
            except OSError:
                return False
            pid = int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1))
        return False

    def run(self, cmd, input=None, timeout=60):
        """Run a shell command inside; returns the CompletedProcess (stdout
        and stderr as text; rc 124 on timeout)."""
        argv = ["nsenter", "-t", str(self.leader), "-a", "-r", "-w",
                "env", "-i", f"PATH={PATH}", "LANG=C.UTF-8", "HOME=/root",
                "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "TERM=dumb",
                "DEBIAN_FRONTEND=noninteractive", "sh", "-c", cmd]
        try:
            return subprocess.run(argv, input=input, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            def s(x):
                return x.decode(errors="replace") if isinstance(x, bytes) \
                    else (x or "")
            return subprocess.CompletedProcess(argv, 124, s(e.stdout),
                                               s(e.stderr) + "\n(timed out)")

    def poweroff(self, timeout=60):
        if not self.proc or self.proc.poll() is not None:
            return
        start = time.monotonic()
        self.run("systemctl poweroff", timeout=10)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"lab: no power-off within {timeout} s: nspawn killed")
            self.proc.kill()
            self.proc.wait()
        log(f"lab: powered off in {time.monotonic() - start:.1f} s")
        self.leader = None

    def destroy(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.poweroff(timeout=20)
            except Exception:
                self.proc.kill()
        self.remove_cgroups()
        if self.made_nspawn_dir:
            try:
                os.rmdir("/run/systemd/nspawn")
            except OSError:
                pass


# -- the checks -----------------------------------------------------------

class Lab:
    def __init__(self, ct, debs, dropins=()):
        self.ct = ct
        self.debs = debs
        self.dropins = list(dropins)
        self.secrets = []
        self.pw = self.new_password()
        self.results = []
        self.extra = []     # results a check adds besides its own
        self.hook = False   # the --on-event hook in place (check_metrics)
        self.admin_pw = None

    def new_password(self):
        pw = secrets.token_hex(16)
        self.secrets.append(pw)
        return pw

    def mask(self, text):
        for s in self.secrets:
            text = text.replace(s, "****")
        return text

    def sh(self, cmd, input=None, timeout=60, ok=True):
        """Run CMD inside; with ok, fail unless it exits 0."""
        r = self.ct.run(cmd, input=input, timeout=timeout)
        if ok and r.returncode != 0:
            raise Fail(f"`{self.mask(cmd)}` exited {r.returncode}:\n"
                       + self.mask((r.stdout + r.stderr).strip()))
        return r

    def show(self, prop, unit="dbswapd.service"):
        return self.sh(f"systemctl show -p {prop} --value {unit}") \
            .stdout.strip()

    def wait_for(self, what, fn, timeout, step=0.25):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = fn()
            if last:
                return last
            if time.monotonic() >= deadline:
                raise Fail(f"{what}: not within {timeout} s")
            time.sleep(step)

    def status_json(self):
        r = self.sh("dbswapctl status --json")
        return json.loads(r.stdout)

    def target(self, name, st=None):
        st = st or self.status_json()
        for t in st.get("targets", []):
            if t.get("name") == name:
                return t
        return None

    def journal(self, args):
        return self.sh(f"journalctl --no-pager {args}").stdout

    def messages(self, cur, pid1=False):
        """The MESSAGEs after cursor CUR of dbswapd (or of PID 1), one
        string.  Filtered here: journalctl 252 with --after-cursor and a
        match (-u, FIELD=) prints nothing when the cursor's own entry does
        not match."""
        out = self.journal(f"--after-cursor='{cur}' -o json")
        lines = []
        for x in out.splitlines():
            try:
                e = json.loads(x)
            except ValueError:
                continue
            if pid1:
                if e.get("_PID") != "1":
                    continue
            elif e.get("_SYSTEMD_UNIT") != "dbswapd.service" and \
                    e.get("UNIT") != "dbswapd.service":
                continue
            m = e.get("MESSAGE")
            if isinstance(m, str):
                lines.append(m)
        return "\n".join(lines)

    def cursor(self):
        r = self.sh("journalctl -n 0 --show-cursor --no-pager")
        m = re.search(r"-- cursor: (\S+)", r.stdout)
        return m.group(1) if m else ""

    def has_option(self, opt):
        r = self.sh("dbswapd --help", ok=False)
        return opt in r.stdout + r.stderr

    def set_opts(self, opts):
        self.sh(f"sed -i 's|^DBSWAPD_OPTS=.*|DBSWAPD_OPTS=\"{opts}\"|' "
                f"{DEFAULTS}")

    def restart_agent(self):
        start = time.monotonic()
        self.sh("systemctl reset-failed dbswapd.service dbswapd.socket "
                "2>/dev/null; systemctl restart dbswapd.service", timeout=60)
        self.wait_ready()
        took = time.monotonic() - start
        if took > 5:
            log(f"lab: (restarting dbswapd took {took:.1f} s)")

    def wait_ready(self, timeout=20):
        self.wait_for("dbswapd active (READY=1)",
                      lambda: self.show("ActiveState") == "active", timeout)

    def psql(self, port, sql):
        self.sh(f"runuser -u postgres -- psql -q -X -v ON_ERROR_STOP=1 "
                f"-p {port} -d postgres -f -", input=sql)

    def url(self, port, pw):
        return f"postgresql://app:{pw}@127.0.0.1:{port}/app"

    def write_file(self, path, text, mode="0640", owner="root:dbswap"):
        self.sh(f"umask 077; cat >{path}.new && chown {owner} {path}.new && "
                f"chmod {mode} {path}.new && mv {path}.new {path}",
                input=text)

    # Each check: a method check_NAME, run in the order of CHECKS.

    def check_install(self):
        """apt install of the built .debs, offline, on the booted root;
        then the lab's set-up: role app on both clusters, users app and
        other (in dbswap-clients), the env file."""
        debs = [d for d in sorted(os.listdir(self.debs))
                if re.match(r"(dbswapd|libdbswap0)_.*\.deb$", d)]
        if len(debs) != 2:
            raise Fail(f"dbswapd and libdbswap0 .debs not both in "
                       f"{self.debs}: {debs}")
        dest = os.path.join(self.ct.root, "root/debs")
        os.makedirs(dest, exist_ok=True)
        for d in debs:
            shutil.copy(os.path.join(self.debs, d), dest)
        r = self.sh("cd /root/debs && apt-get install -y -q "
                    "--no-install-recommends "
                    + " ".join("./" + d for d in debs), timeout=180,
                    ok=False)
        if r.returncode != 0:
            out = (r.stdout + r.stderr).strip()
            hint = ""
            if re.search(r"Depends:|not installable|Unable to locate", out):
                hint = ("\n(the container has no network: every "
                        "dependency of the .debs must be in PACKAGES in "
                        "tests/lab/lab.py)")
            raise Fail(f"apt-get install exited {r.returncode}:\n"
                       + "\n".join(out.splitlines()[-15:]) + hint)
        for unit in ("dbswapd.service", "dbswapd.socket"):
            if self.show("LoadState", unit) != "loaded":
                raise Fail(f"{unit} not loaded after install:\n{r.stdout}")
        for path in self.dropins:
            self.sh("mkdir -p /etc/systemd/system/dbswapd.service.d")
            self.write_file("/etc/systemd/system/dbswapd.service.d/"
                            + os.path.basename(path), open(path).read(),
                            mode="0644", owner="root:root")
        if self.dropins:
            self.sh("systemctl daemon-reload")
        self.setup_databases()
        return f"{', '.join(debs)} installed by apt-get" + (
            f"; drop-ins: {', '.join(self.dropins)}" if self.dropins else "")

    def setup_databases(self):
        self.sh("systemctl start postgresql@15-second", timeout=60)
        for port in (5432, 5433):
            self.psql(port, f"CREATE ROLE app LOGIN PASSWORD '{self.pw}';\n"
                      "CREATE DATABASE app OWNER app;\n")
        self.sh("id app >/dev/null 2>&1 || useradd -m -G dbswap-clients app;"
                "id other >/dev/null 2>&1 || "
                "useradd -m -G dbswap-clients other")
        self.write_file(ENV_FILE, self.env_text())

    def env_text(self, pw=None):
        pw = pw or self.pw
        return (f"DATABASE_URL={self.url(5432, pw)}\n"
                f"DATABASE_URL_SECONDARY={self.url(5433, pw)}\n"
                "DB_HEALTH_CHECK_INTERVAL=1000\n"
                "DB_FAILURE_THRESHOLD=2\n"
                "DB_PRIMARY_RETRY_INTERVAL=2000\n")

    def check_socket_activation(self):
        """The socket enabled and listening from boot; the agent not started
        until the first connection, then started by it."""
        enabled = self.sh("systemctl is-enabled dbswapd.socket",
                          ok=False).stdout.strip()
        if enabled != "enabled":
            raise Fail(f"dbswapd.socket is {enabled!r} after install, "
                       "not enabled")
        if self.show("ActiveState", "dbswapd.socket") != "active":
            raise Fail("dbswapd.socket not active after install")
        state = self.show("ActiveState")
        if state != "inactive":
            raise Fail(f"dbswapd.service is {state} before any connection")
        ls = self.sh("stat -c '%A %U %G' /run/dbswap/dbswap.sock").stdout
        if ls.split() != ["srw-rw----", "root", "dbswap-clients"]:
            raise Fail(f"socket file: {ls.strip()}")
        self.sh("dbswapctl status >/dev/null")
        self.wait_for("dbswapd.service started by the first connection",
                      lambda: self.show("ActiveState") == "active", 15)
        return "socket enabled and listening; service inactive until " \
            "`dbswapctl status`, then active"

    def check_ready_status(self):
        """Type=notify: READY=1 (active) and STATUS= in systemctl show."""
        self.wait_ready()

        def status():
            s = self.show("StatusText")
            return s if re.search(r"DATABASE_URL gen \d+ primary", s) \
                else None
        s = self.wait_for("StatusText with DATABASE_URL's generation",
                          status, 15)
        if "ready:" not in self.journal("-u dbswapd -o cat"):
            raise Fail("no 'ready:' line in the journal")
        return f"StatusText={s!r}"

    def check_reload_notify(self):
        """SIGHUP from systemd: RELOADING=1 then READY=1, as PID 1 logs it
        (debug level, around the signal only)."""
        cur = self.cursor()
        pid = self.show("MainPID")
        self.sh("systemctl log-level debug")
        try:
            self.sh("systemctl kill --kill-who=main -s HUP dbswapd.service")

            def seen():
                j = self.messages(cur, pid1=True)
                return j if "Changed reload -> running" in j else None
            try:
                j = self.wait_for("reload -> running", seen, 15)
            except Fail as e:
                j = self.messages(cur, pid1=True)
                lines = [x for x in j.splitlines() if "dbswapd" in x]
                raise Fail(f"{e}; PID 1 said:\n" + "\n".join(lines[-15:]))
        finally:
            self.sh("systemctl log-level info", ok=False)
        if "Changed running -> reload" not in j:
            raise Fail("no running -> reload transition logged")
        if self.show("MainPID") != pid:
            raise Fail("the agent was restarted by a reload")
        return "running -> reload -> running, same MainPID"

    def check_reload_minimal(self):
        """`systemctl reload` on a root without procps (no /bin/kill)."""
        kill = self.sh("command -v kill; ls -l /bin/kill /usr/bin/kill "
                       "2>&1", ok=False).stdout.strip()
        r = self.sh("systemctl reload dbswapd.service", ok=False, timeout=30)
        if r.returncode != 0:
            st = self.sh("systemctl status --no-pager -n 5 dbswapd.service "
                         "| grep -E 'ExecReload|Process|status='", ok=False)
            raise Fail(f"systemctl reload exited {r.returncode}: "
                       f"{r.stderr.strip()}\n{st.stdout.strip()}\n"
                       f"(on this root: {kill})")
        if self.show("ActiveState") != "active":
            raise Fail("not active after reload")
        return "reload succeeded without procps"

    def check_access_rules(self):
        """--allow DATABASE_URL=user:app under the unit's sandbox: app
        follows the target, another member of dbswap-clients is refused,
        and the log names real uids (not 65534, as under PrivateUsers=)."""
        self.set_opts("--allow DATABASE_URL=user:app")
        cur = self.cursor()
        self.restart_agent()
        app = self.sh("runuser -u app -- timeout 10 dbswapctl watch "
                      "DATABASE_URL --count 1", ok=False)
        other = self.sh("runuser -u other -- timeout 10 dbswapctl watch "
                        "DATABASE_URL --count 1", ok=False)
        uid_app = self.sh("id -u app").stdout.strip()
        logs = self.messages(cur)
        problems = []
        if app.returncode != 0 or "DATABASE_URL" not in app.stdout:
            problems.append(f"user app (uid {uid_app}, allowed) got no "
                            f"value: exit {app.returncode}: "
                            + self.mask((app.stdout + app.stderr).strip()))
        if self.pw in other.stdout or "generation" in other.stdout:
            problems.append("user other (not allowed) got the value")
        elif other.returncode == 0:
            problems.append("user other's watch exited 0")
        elif other.returncode == 124:
            # The refusal works; the client does not say so (a CLI matter,
            # not the sandbox's): a result of its own.
            self.extra.append(("watch_forbidden_exits", "FAIL",
                               "`dbswapctl watch` by a user --allow "
                               "refuses hung until killed (10 s) instead "
                               "of exiting non-zero with the agent's "
                               "message"))
        else:
            self.extra.append(("watch_forbidden_exits", "PASS",
                               f"exit {other.returncode}: "
                               + other.stderr.strip()[:120]))
        if "65534" in logs:
            problems.append("the agent's log names uid 65534: "
                            + " | ".join(x for x in logs.splitlines()
                                         if "65534" in x)[:600])
        if problems:
            raise Fail("\n".join(problems))
        return f"app (uid {uid_app}) followed, other got nothing"

    def start_watcher(self):
        self.sh("systemctl stop lab-watch 2>/dev/null; "
                "systemctl reset-failed lab-watch 2>/dev/null; "
                "systemd-run -q --unit lab-watch -p User=app "
                "dbswapctl watch DATABASE_URL")

    def check_rotation(self):
        """ALTER ROLE on both servers, then `dbswapctl set --wait` (value
        on stdin) with a subscriber (dbswapctl watch as app) that acks."""
        self.start_watcher()
        time.sleep(1)
        before = (self.target("DATABASE_URL") or {}).get("generation")
        new = self.new_password()
        for port in (5432, 5433):
            self.psql(port, f"ALTER ROLE app PASSWORD '{new}';\n")
        self.sh(f"dbswapctl set {ENV_FILE} DATABASE_URL_SECONDARY=-",
                input=self.url(5433, new) + "\n")
        start = time.monotonic()
        r = self.sh(f"dbswapctl set {ENV_FILE} DATABASE_URL=- --wait=30",
                    input=self.url(5432, new) + "\n", timeout=60)
        took = time.monotonic() - start
        self.pw = new
        after = (self.target("DATABASE_URL") or {}).get("generation")
        if not before or not after or after <= before:
            raise Fail(f"generation {before} -> {after}")
        return (f"set --wait exited 0 in {took:.1f} s, generation "
                f"{before} -> {after}: "
                + self.mask(r.stdout.strip().splitlines()[-1]
                            if r.stdout.strip() else ""))

    def current(self):
        t = self.target("DATABASE_URL") or {}
        return (t.get("failover") or {}).get("current")

    def check_failover(self):
        """Primary cluster stopped: the agent moves to the secondary; started
        again: it fails back.  The journal has the fields DBSWAP_EVENT=
        failover and failback (and rotation-complete when the agent has
        --on-event, the events feature) with DBSWAP_TARGET."""
        self.start_watcher()
        self.wait_for("on the primary before", lambda: self.current()
                      == "primary", 15)
        self.sh("systemctl stop postgresql@15-main", timeout=60)
        try:
            self.wait_for("failover to the secondary",
                          lambda: self.current() == "secondary", 30)
        finally:
            self.sh("systemctl start postgresql@15-main", timeout=60)
        self.wait_for("failback to the primary",
                      lambda: self.current() == "primary", 40)
        msg = "failover and failback seen in status"
        # rotation-complete (every subscriber acked a new generation; the
        # failback's counts) comes with the events feature (--on-event).
        events = ["failover", "failback"]
        if self.has_option("--on-event"):
            events.append("rotation-complete")
        else:
            self.extra.append(("journal-rotation-complete", "SKIP",
                               "the agent has no --on-event option (the "
                               "events feature): DBSWAP_EVENT="
                               "rotation-complete not checked"))
        missing = []
        for ev in events:
            # The command the docs give; the root is new each run, so
            # every entry is this run's.
            for q in (f"-u dbswapd DBSWAP_EVENT={ev}",):
                j = self.journal(f"-o json {q}")
                recs = [json.loads(x) for x in j.splitlines() if x.strip()]
                if not any(r.get("DBSWAP_TARGET") == "DATABASE_URL"
                           for r in recs):
                    missing.append(f"`journalctl {q}`")
                if any(pw in j for pw in self.secrets):
                    missing.append(f"{ev} (an entry holds a password)")
        if missing:
            seen = self.journal("-u dbswapd -o verbose")
            seen = [x.strip() for x in seen.splitlines()
                    if re.match(r"\s*(DBSWAP_\w+|MESSAGE)=", x)
                    and re.search(r"DBSWAP_|fail(over|back)|acked", x)]
            self.extra.insert(0, ("journal-fields", "FAIL",
                               "no entry with DBSWAP_TARGET=DATABASE_URL "
                               "from " + ", ".join(missing)
                               + "; the journal has:\n"
                               + self.mask("\n".join(seen[-12:]))))
        else:
            self.extra.insert(0, ("journal-fields", "PASS",
                                  "DBSWAP_EVENT=" + ", ".join(events)
                                  + " (DBSWAP_TARGET=DATABASE_URL) by "
                                  "`journalctl -u dbswapd DBSWAP_EVENT=...`"))
        if self.hook:
            self.check_hook_records()
        return msg

    # -- metrics, health and events ---------------------------------------

    def http_get(self, path, port=METRICS_PORT):
        """GET PATH from the agent's listener inside, with bash's /dev/tcp
        (minbase has no curl): (status, body)."""
        r = self.sh("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d && printf "
                    "\"GET %s HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n\" "
                    ">&3 && timeout 5 cat <&3'" % (port, path),
                    ok=False, timeout=15)
        head, _, body = r.stdout.replace("\r\n", "\n").partition("\n\n")
        m = re.match(r"HTTP/1\.\d (\d+)", head)
        if not m:
            raise Fail(f"GET {path} on 127.0.0.1:{port}: no HTTP answer "
                       f"(exit {r.returncode}): "
                       + self.mask((r.stdout + r.stderr).strip()[:500]))
        return int(m.group(1)), body

    def check_metrics(self):
        """--metrics 127.0.0.1:9187 and --on-event (a hook that records
        its DBSWAP_* variables) through DBSWAPD_OPTS: /metrics and /health
        scraped inside with bash's /dev/tcp, `dbswapctl metrics` as root.
        The hook's records are checked after the failover (check_failover)."""
        self.write_file(HOOK, HOOK_TEXT, mode="0755", owner="root:root")
        self.sh(f"rm -f {HOOK_LOG}")
        self.set_opts(f"--allow DATABASE_URL=user:app --metrics "
                      f"127.0.0.1:{METRICS_PORT} --on-event {HOOK}")
        self.restart_agent()
        self.hook = True

        def scraped():
            try:
                return self.http_get("/metrics")
            except Fail:
                return None
        try:
            status, body = self.wait_for("the /metrics listener", scraped, 10)
        except Fail:
            self.http_get("/metrics")   # the error, with what came back
            raise
        # Families (# TYPE) are there from the start; a labelled series
        # once it has happened (dbswap_server_switches_total: check_hook_records).
        types = dict(re.findall(r"^# TYPE (dbswap_\w+) (\w+)", body, re.M))
        names = set(types)
        problems = []
        if status != 200:
            problems.append(f"/metrics: HTTP {status}")
        missing = [n for n in METRICS_NAMES if n not in names]
        if missing:
            problems.append("/metrics lacks " + ", ".join(missing))
        odd = [n for n, t in types.items()
               if (t == "counter") != n.endswith("_total")]
        if odd:
            problems.append("counters not named _total (or _total not a "
                            "counter): " + ", ".join(odd))
        gen = re.search(r'^dbswap_target_generation\{[^}]*target='
                        r'"DATABASE_URL"[^}]*\} (\d+)', body, re.M)
        if not gen or int(gen.group(1)) < 1:
            problems.append("/metrics: no dbswap_target_generation for "
                            "DATABASE_URL above 0")

        def healthy():
            s, b = self.http_get("/health")
            return (s, b) if s == 200 else None
        try:
            hstatus, hbody = self.wait_for("/health 200", healthy, 10)
        except Fail:
            hstatus, hbody = self.http_get("/health")
        try:
            health = json.loads(hbody)
        except ValueError:
            health = None
        if hstatus != 200 or not isinstance(health, dict):
            problems.append(f"/health: HTTP {hstatus}: {hbody[:300]}")
        ctl = self.sh("dbswapctl metrics", ok=False)
        ctl_names = set(re.findall(r"^# TYPE (dbswap_\w+)", ctl.stdout,
                                   re.M))
        if ctl.returncode != 0 or not re.search(
                r'^dbswap_target_generation\{[^}]*"DATABASE_URL"', ctl.stdout,
                re.M):
            problems.append(f"`dbswapctl metrics` exited {ctl.returncode}: "
                            + (ctl.stdout + ctl.stderr).strip()[:300])
        if any(pw in body + hbody + ctl.stdout for pw in self.secrets):
            problems.append("a password in /metrics, /health or "
                            "`dbswapctl metrics`")
        if problems:
            raise Fail(self.mask("\n".join(problems)))
        return (f"/metrics 200 ({len(names)} dbswap_ families, "
                f"{len(body)} bytes), /health 200 "
                f"{json.dumps(health)[:160]}, `dbswapctl metrics` "
                f"{len(ctl_names)} families")

    def check_hook_records(self):
        """After the failover: the hook recorded failover (and failback)
        with DBSWAP_TARGET, no password in its records."""
        def recorded():
            text = self.sh(f"cat {HOOK_LOG} 2>/dev/null", ok=False).stdout
            return text if re.search(r"DBSWAP_EVENT=failback\b", text) \
                else None
        try:
            text = self.wait_for("the hook's failback record", recorded, 10)
        except Fail:
            text = self.sh(f"cat {HOOK_LOG} 2>&1", ok=False).stdout
        lines = text.splitlines()
        problems = []
        for ev in ("failover", "failback"):
            if not any(f"DBSWAP_EVENT={ev} " in x + " " and
                       "DBSWAP_TARGET=DATABASE_URL " in x + " "
                       for x in lines):
                problems.append(f"no {ev} with DBSWAP_TARGET=DATABASE_URL")
        if any(pw in text for pw in self.secrets):
            problems.append("a password in the hook's environment")
        fo = self.http_get("/metrics")[1]
        count = re.findall(r'^dbswap_server_switches_total\{[^}]*target='
                           r'"DATABASE_URL"[^}]*\} (\d+)', fo, re.M)
        if not count or sum(int(c) for c in count) < 1:
            problems.append("/metrics: dbswap_server_switches_total for "
                            "DATABASE_URL not above 0")
        rec = [x for x in lines if "DBSWAP_EVENT=failover" in x]
        if problems:
            self.extra.append(("on_event_hook", "FAIL",
                               "; ".join(problems) + f"; {HOOK_LOG}:\n"
                               + self.mask("\n".join(lines[-10:]))))
        else:
            self.extra.append(("on_event_hook", "PASS",
                               f"{len(lines)} runs recorded in {HOOK_LOG}; "
                               + rec[0].strip()
                               + f"; dbswap_server_switches_total {count}"))

    # -- dbswapctl rotate ---------------------------------------------------

    def can_login(self, user, pw, port=5432):
        """(ok, output) of a psql login as USER with PW (on stdin, never in
        argv)."""
        r = self.sh(f"read -r PGPASSWORD; export PGPASSWORD; psql -X -w -q "
                    f"-h 127.0.0.1 -p {port} -U {user} -d app -tA "
                    f"-c 'select current_user' 2>&1", input=pw + "\n",
                    ok=False)
        return r.returncode == 0, self.mask(r.stdout.strip())

    def refused(self, user, pw):
        """None when USER with PW is refused by the server's
        authentication, else what happened."""
        ok, out = self.can_login(user, pw)
        if ok:
            return f"{user} still logs in with its old password"
        if not re.search(r"password authentication failed|not permitted "
                         r"to log in", out):
            return f"{user}'s login failed otherwise: {out[-200:]}"
        return None

    def file_url(self):
        """DATABASE_URL in the env file: (user, password), the password
        masked from then on."""
        line = self.sh(f"sed -n 's/^DATABASE_URL=//p' {ENV_FILE}") \
            .stdout.strip()
        u = urllib.parse.urlsplit(line)
        pw = urllib.parse.unquote(u.password or "")
        if pw and pw not in self.secrets:
            self.secrets.append(pw)
        return urllib.parse.unquote(u.username or ""), pw

    def rotate_setup(self):
        """The admin role (CREATEROLE) on the primary and its conninfo in
        /etc/dbswap/rotate/lab.admin (0600); the secondary as a role of
        its own (below)."""
        if self.admin_pw:
            return
        self.admin_pw = self.new_password()
        self.psql(5432, "CREATE ROLE rotator LOGIN CREATEROLE PASSWORD "
                  f"'{self.admin_pw}';\n")
        # The package makes the directory (tmpfiles.d), root's alone: the
        # README's set-up writes NAME.admin straight into it.
        mode = self.sh("stat -c '%a %U' /etc/dbswap/rotate",
                       ok=False).stdout.strip()
        if mode != "700 root":
            raise Fail(f"/etc/dbswap/rotate after install: "
                       f"{mode or 'missing'} (want 700 root)")
        self.write_file(ADMIN_FILE,
                        f"host=127.0.0.1 port=5432 dbname=postgres "
                        f"user=rotator password={self.admin_pw}\n",
                        mode="0600", owner="root:root")
        # The lab's clusters are independent, not replicas: a password
        # changed on the primary is not on the secondary.  So the secondary
        # logs in as a role of its own; rotate refuses while another entry
        # the agent holds (a secondary it keeps as last good, too) logs in
        # as the role it rotates.
        standby_pw = self.new_password()
        self.secrets.append(standby_pw)
        self.psql(5433, "DROP ROLE IF EXISTS standby; CREATE ROLE standby "
                  f"LOGIN PASSWORD '{standby_pw}';\n")
        self.sh(f"dbswapctl set {ENV_FILE} DATABASE_URL_SECONDARY=-",
                input=f"postgresql://standby:{standby_pw}@127.0.0.1:5433/"
                      "app\n")
        self.start_watcher()

        def secondary_as_standby():
            t = self.target("DATABASE_URL") or {}
            return t.get("generation") and any(
                srv.get("role") == "secondary"
                and "standby" in (srv.get("conninfo") or "")
                and srv.get("state") == "ok"
                for srv in t.get("servers") or [])
        self.wait_for("DATABASE_URL's secondary as role standby",
                      secondary_as_standby, 15)

    def admin_leaks(self, where):
        """Where the admin password shows: the whole journal (dbswapd's,
        the rotate unit's, everyone's) and the cmdlines sampled in
        /root/cmdlines."""
        found = []
        # The pattern from a file: `journalctl | grep -f -` with the
        # pattern on the shell's stdin finds nothing (journalctl reads it
        # too).
        self.sh("umask 077; cat >/run/lab-pat", input=self.admin_pw + "\n")
        j = self.sh("journalctl --no-pager -o verbose | grep -cF -f "
                    "/run/lab-pat", ok=False).stdout.strip()
        if j not in ("", "0"):
            found.append(f"the journal ({j} lines)")
        c = self.sh("grep -cF -f /run/lab-pat /root/cmdlines",
                    ok=False).stdout.strip()
        if c not in ("", "0"):
            found.append(f"/proc/*/cmdline during {where} ({c} samples)")
        self.sh("rm -f /run/lab-pat")
        return found

    def rotate(self, strategy):
        """dbswapctl rotate ... --wait with every /proc/*/cmdline sampled
        meanwhile into /root/cmdlines: (exit, output, seconds, samples of
        the rotate's own cmdline)."""
        cmd = sampling_cmdlines(
            f"dbswapctl rotate {ENV_FILE} DATABASE_URL --admin "
            f"{ADMIN_FILE} --strategy {strategy} --wait=30")
        start = time.monotonic()
        r = self.sh(cmd, ok=False, timeout=60)
        took = time.monotonic() - start
        seen = self.sh("grep -c '^dbswapctl rotate' /root/cmdlines",
                       ok=False).stdout.strip() or "0"
        return r.returncode, (r.stdout + r.stderr).strip(), took, seen

    def check_rotate(self):
        """`dbswapctl rotate --admin FILE --wait`, single then alternate
        (after the one-time roles app_a/app_b in group app): exit 0, a new
        generation, the old password / old role refused by the server, the
        admin password in no journal entry and no /proc/*/cmdline."""
        self.rotate_setup()
        out = []
        # single: the password of app.
        before = self.target("DATABASE_URL").get("generation")
        old_user, old_pw = self.file_url()
        rc, text, took, seen = self.rotate("single")
        user, new_pw = self.file_url()
        after = (self.target("DATABASE_URL") or {}).get("generation")
        problems = []
        if rc != 0:
            problems.append(f"rotate --strategy single exited {rc}")
        if not after or after <= before:
            problems.append(f"generation {before} -> {after}")
        if new_pw == old_pw or user != old_user:
            problems.append(f"the file's DATABASE_URL: user {old_user} -> "
                            f"{user}, password {'un' if new_pw == old_pw else ''}"
                            "changed")
        problems += filter(None, [self.refused(old_user, old_pw)])
        ok, who = self.can_login(user, new_pw)
        if not ok:
            problems.append(f"the new password does not log in: {who}")
        problems += self.admin_leaks("rotate --strategy single")
        if problems:
            raise Fail("; ".join(problems) + ":\n" + self.mask(text))
        self.pw = new_pw
        out.append(f"single: exit 0 in {took:.2f} s, generation {before} -> "
                   f"{after}, old password of {old_user} refused "
                   f"(rotate's cmdline sampled {seen} times)")

        # alternate: the one-time set-up of README "Rotating passwords",
        # then the target pointed at app_a once.
        pa = self.new_password()
        self.psql(5432, f"CREATE ROLE app_a LOGIN IN ROLE app PASSWORD "
                  f"'{pa}';\nCREATE ROLE app_b NOLOGIN IN ROLE app "
                  "PASSWORD NULL;\n")
        self.sh(f"dbswapctl set {ENV_FILE} DATABASE_URL=- --wait=30",
                input=f"postgresql://app_a:{pa}@127.0.0.1:5432/app\n",
                timeout=60)
        before = self.target("DATABASE_URL").get("generation")
        rc, text, took, seen = self.rotate("alternate")
        user, new_pw = self.file_url()
        after = (self.target("DATABASE_URL") or {}).get("generation")
        problems = []
        if rc != 0:
            problems.append(f"rotate --strategy alternate exited {rc}")
        if not after or after <= before:
            problems.append(f"generation {before} -> {after}")
        if user != "app_b":
            problems.append(f"the target uses {user}, not app_b")
        problems += filter(None, [self.refused("app_a", pa)])
        ok, who = self.can_login(user, new_pw)
        if not ok:
            problems.append(f"{user} does not log in with the new "
                            f"password: {who}")
        problems += self.admin_leaks("rotate --strategy alternate")
        if problems:
            raise Fail("; ".join(problems) + ":\n" + self.mask(text))
        last = [x for x in text.splitlines() if "disabled" in x]
        out.append(f"alternate: exit 0 in {took:.2f} s, generation {before} "
                   f"-> {after}, app_a -> app_b, app_a refused "
                   f"(cmdline sampled {seen} times)"
                   + (f": {self.mask(last[-1])}" if last else ""))
        out.append("admin password in no journal entry, no cmdline")
        return "; ".join(out)

    def check_rotate_timer(self):
        """The packaged dbswap-rotate@.service/.timer: /etc/dbswap/rotate/
        lab.conf and lab.admin; `systemctl start dbswap-rotate@lab` ends
        in success with a new generation; `systemctl enable --now` of the
        timer makes it active with a next elapse; the unit's
        `systemd-analyze security` score."""
        self.rotate_setup()
        user, old_pw = self.file_url()
        if user not in ("app_a", "app_b"):
            # --only rotate_timer: alternate needs the roles; single then.
            strategy = "single"
        else:
            strategy = "alternate"
        self.write_file("/etc/dbswap/rotate/lab.conf",
                        f"ROTATE_STRATEGY={strategy}\nROTATE_WAIT=30\n",
                        mode="0644", owner="root:root")
        unit = "dbswap-rotate@lab.service"
        before = self.target("DATABASE_URL").get("generation")
        cur = self.cursor()
        r = self.sh(sampling_cmdlines(f"systemctl start {unit}"), ok=False,
                    timeout=90)
        result = self.show("Result", unit)
        st = self.show("ExecMainStatus", unit)
        new_user, new_pw = self.file_url()
        after = (self.target("DATABASE_URL") or {}).get("generation")
        jr = self.journal(f"--after-cursor='{cur}' -u {unit} -o cat")
        problems = []
        if r.returncode != 0 or result != "success":
            problems.append(f"systemctl start {unit} exited {r.returncode}, "
                            f"Result={result}, status {st}")
        if not after or after <= before:
            problems.append(f"generation {before} -> {after}")
        if new_pw == old_pw:
            problems.append("the file's password unchanged")
        problems += filter(None, [self.refused(user, old_pw)])
        problems += self.admin_leaks(unit)
        if problems:
            raise Fail("; ".join(problems) + f"\njournalctl -u {unit}:\n"
                       + self.mask("\n".join(jr.splitlines()[-15:])))
        self.pw = new_pw if new_user == "app" else self.pw
        timer = "dbswap-rotate@lab.timer"
        self.sh(f"systemctl enable --now {timer} 2>&1")
        try:
            state = self.show("ActiveState", timer)
            nxt = self.show("NextElapseUSecRealtime", timer)
            if state != "active" or not nxt or nxt == "0":
                raise Fail(f"{timer}: {state}, next elapse {nxt!r}: "
                           + self.sh(f"systemctl list-timers --all "
                                     f"--no-pager {timer}", ok=False).stdout)
            sec = self.sh(f"systemd-analyze security --no-pager {unit}",
                          ok=False, timeout=60)
            m = re.search(r"Overall exposure level for \S+: ([0-9.]+)\s*(\S*)",
                          sec.stdout)
            if not m:
                raise Fail(f"no score for {unit}:\n"
                           + (sec.stdout + sec.stderr)[-1500:])
        finally:
            # Gone before remove/purge (which check that nothing of the
            # package's is left; these are the admin's).
            self.sh(f"systemctl disable --now {timer} 2>/dev/null; rm -f "
                    "/etc/dbswap/rotate/lab.conf", ok=False)
        return (f"{strategy}: Result=success, generation {before} -> {after}, "
                f"{user} -> {new_user}, old credentials refused; {timer} "
                f"active, next {nxt}; `systemd-analyze security {unit}`: "
                f"{m.group(1)} {m.group(2)}")

    def check_credentials(self):
        """The key as a credential: LoadCredential=dbswap.key from
        /etc/credstore, then LoadCredentialEncrypted= of a key sealed by
        systemd-creds; each time a sealed env file opens."""
        pub = self.sh("mkdir -p -m 0700 /etc/credstore && "
                      "dbswapctl keygen --out /etc/credstore/dbswap.key "
                      "&& chmod 0600 /etc/credstore/dbswap.key") \
            .stdout.strip().split()[-1]
        self.sh(f"dbswapctl encrypt --pubkey {pub} >/etc/dbswap/sealed.env"
                " && chown root:dbswap /etc/dbswap/sealed.env && "
                "chmod 0640 /etc/dbswap/sealed.env",
                input=f"SEALED_URL={self.url(5432, self.pw)}\n")
        self.set_opts("--allow DATABASE_URL=user:app --env "
                      "/etc/dbswap/sealed.env --target DATABASE_URL "
                      "--target SEALED_URL")

        def opened():
            t = self.target("SEALED_URL") or {}
            return t if t.get("generation") else None

        self.restart_agent()
        try:
            self.wait_for("SEALED_URL published (LoadCredential=)",
                          opened, 15)
        except Fail as e:
            raise Fail(f"{e}: {json.dumps(self.status_json())[:1500]}")
        self.sh("mkdir -p -m 0700 /etc/credstore.encrypted && "
                "systemd-creds encrypt --with-key=host --name=dbswap.key "
                "/etc/credstore/dbswap.key "
                "/etc/credstore.encrypted/dbswap.key && "
                "rm /etc/credstore/dbswap.key && "
                "mkdir -p /etc/systemd/system/dbswapd.service.d")
        self.write_file("/etc/systemd/system/dbswapd.service.d/lab-cred.conf",
                        "[Service]\nLoadCredential=\n"
                        "LoadCredentialEncrypted=dbswap.key\n",
                        mode="0644", owner="root:root")
        self.sh("systemctl daemon-reload")
        self.restart_agent()
        try:
            self.wait_for("SEALED_URL published (LoadCredentialEncrypted=)",
                          opened, 15)
        except Fail as e:
            raise Fail(f"{e}: {json.dumps(self.status_json())[:1500]}")
        cred = self.sh("ls /run/credentials/dbswapd.service/ 2>&1",
                       ok=False).stdout.strip()
        return f"sealed env file opened with either; credentials: {cred}"

    def check_watchdog(self):
        """SIGSTOP the agent: once WatchdogSec (the shipped unit's) passes
        without a ping, systemd aborts it (a stopped process dies of the
        SIGABRT at once) and Restart= starts a new one."""
        limit = self.show("WatchdogUSec")
        pid = self.show("MainPID")
        cur = self.cursor()
        self.sh("systemctl kill --kill-who=main -s STOP dbswapd.service")
        start = time.monotonic()
        self.wait_for("a new agent after the watchdog fired",
                      lambda: self.show("MainPID") not in (pid, "0")
                      and self.show("ActiveState") == "active", 60, step=1)
        took = time.monotonic() - start
        j = self.messages(cur, pid1=True)
        if "Watchdog timeout" not in j:
            raise Fail("restarted, but PID 1 logged no watchdog timeout:\n"
                       + j[-1500:])
        return (f"watchdog timeout (WatchdogUSec={limit}), agent {pid} "
                f"replaced after {took:.1f} s")

    def check_restart_kill9(self):
        """Restart=on-failure after SIGKILL."""
        pid = self.show("MainPID")
        n = int(self.show("NRestarts") or 0)
        self.sh("systemctl kill --kill-who=main -s KILL dbswapd.service")
        self.wait_for("a new agent after kill -9",
                      lambda: self.show("MainPID") not in (pid, "0")
                      and self.show("ActiveState") == "active", 15)
        n2 = int(self.show("NRestarts") or 0)
        if n2 <= n:
            raise Fail(f"NRestarts {n} -> {n2}")
        return f"restarted (NRestarts {n} -> {n2})"

    def check_unreadable_env(self):
        """An env file the sandbox hides (under /home, ProtectHome=yes) is
        an error in status, not an exit: the agent and the socket stay up."""
        self.sh("install -d -o app -g app /home/app && "
                "printf 'HOME_URL=x\\n' >/home/app/db.env && "
                "printf 'ROOT_URL=x\\n' >/root/db.env")
        self.set_opts("--allow DATABASE_URL=user:app "
                      "--env /home/app/db.env --env /root/db.env")
        cur = self.cursor()
        self.sh("systemctl reset-failed dbswapd.service dbswapd.socket "
                "2>/dev/null; systemctl restart dbswapd.service", ok=False,
                timeout=60)
        time.sleep(5)
        state = self.show("ActiveState")
        pid = self.show("MainPID")
        sock = self.show("ActiveState", "dbswapd.socket")
        n = self.show("NRestarts")
        try:
            if state != "active" or sock != "active":
                logs = self.messages(cur)
                raise Fail(f"dbswapd.service {state} (NRestarts {n}), "
                           f"dbswapd.socket {sock}; the journal:\n"
                           + self.mask("\n".join(logs.splitlines()[-12:])))
            if n != "0":
                raise Fail(f"active, but restarted {n} times")
            files = self.status_json().get("files", [])
            seen = [f for f in files if f.get("path") in
                    ("/home/app/db.env", "/root/db.env")]
            if len(seen) != 2:
                raise Fail(f"status does not list both files: {files}")
            time.sleep(3)
            if self.show("MainPID") != pid:
                raise Fail("the agent was replaced within 3 s")
        finally:
            self.set_opts("--allow DATABASE_URL=user:app")
            self.sh("systemctl reset-failed dbswapd.service dbswapd.socket "
                    "2>/dev/null; systemctl restart dbswapd.socket "
                    "dbswapd.service", ok=False, timeout=60)
        return ("agent and socket active, no restart; status: "
                + "; ".join(f"{f.get('state')}: {f.get('error')}"
                            for f in seen))

    def check_security(self):
        """The live `systemd-analyze security` score of the running unit."""
        r = self.sh("systemd-analyze security --no-pager dbswapd.service",
                    ok=False, timeout=60)
        m = re.search(r"Overall exposure level for dbswapd.service: "
                      r"([0-9.]+)\s*(\S*)", r.stdout)
        if not m:
            raise Fail("no score:\n" + (r.stdout + r.stderr)[-1500:])
        score = float(m.group(1))
        if score > EXPOSURE_MAX:
            raise Fail(f"exposure {score} {m.group(2)} > {EXPOSURE_MAX}")
        return f"exposure {score} {m.group(2)} (at most {EXPOSURE_MAX})"

    def check_reboot(self):
        """`systemctl enable dbswapd`, power off, boot again: the agent runs
        without a connection (the README's enable --now promise) and the
        socket listens."""
        r = self.sh("systemctl enable dbswapd 2>&1")
        self.ct.poweroff()
        self.ct.boot()
        socket = self.show("ActiveState", "dbswapd.socket")
        state = self.show("ActiveState")
        if socket != "active" or state != "active":
            raise Fail(f"after reboot: dbswapd.socket {socket}, "
                       f"dbswapd.service {state}; `systemctl enable "
                       f"dbswapd` said: {r.stdout.strip() or '(nothing)'}")
        return "socket and agent active after reboot"

    def agent_has_run(self):
        """With the package still there: the agent started and its value
        published (so that the state it leaves is there to be removed),
        whichever checks ran before."""
        if self.sh("command -v dbswapctl", ok=False).returncode != 0:
            return
        self.wait_for("DATABASE_URL published",
                      lambda: (self.target("DATABASE_URL") or {})
                      .get("generation"), 15)

    def check_remove(self):
        """apt remove: units stopped and gone, no /run/dbswap left."""
        self.agent_has_run()
        self.sh("systemctl stop lab-watch 2>/dev/null; true")
        self.sh("apt-get remove -y -q dbswapd", timeout=120)
        problems = []
        for unit in ("dbswapd.service", "dbswapd.socket"):
            st = self.show("ActiveState", unit)
            if st not in ("inactive", ""):
                problems.append(f"{unit} {st}")
        left = self.sh("ls -d /run/dbswap /run/dbswap/* /usr/sbin/dbswapd "
                       "2>/dev/null", ok=False).stdout.split()
        problems += [f"{p} left" for p in left]
        if problems:
            raise Fail("after apt remove: " + ", ".join(problems))
        return "stopped; no /run/dbswap, no binary"

    def check_purge(self):
        """apt purge (after the admin's own files are gone): nothing left in
        /etc, /var/lib or /run."""
        self.agent_has_run()
        self.sh("rm -rf /etc/dbswap/*.env /etc/dbswap/rotate/lab.* "
                "/etc/credstore* "
                "/etc/systemd/system/dbswapd.service.d")
        self.sh("apt-get purge -y -q dbswapd libdbswap0", timeout=120)
        left = self.sh("ls -d /etc/dbswap /etc/default/dbswapd "
                       "/var/lib/dbswap /var/lib/private/dbswap /run/dbswap "
                       "/etc/systemd/system/*/dbswapd* 2>/dev/null",
                       ok=False).stdout.split()
        if left:
            inside = self.sh("ls -lA /var/lib/dbswap/ 2>/dev/null | "
                             "tail -n +2", ok=False).stdout.strip()
            # Whether the current password is in there as it is (the
            # password goes in on stdin, never into a command line).
            plain = self.sh("grep -rlF -f - /var/lib/dbswap 2>/dev/null",
                            input=self.pw + "\n", ok=False).stdout.split()
            raise Fail("left after apt purge: " + ", ".join(left)
                       + (f"\n/var/lib/dbswap holds:\n{inside}"
                          if inside else "")
                       + (f"\nthe current password in plain text in: "
                          f"{', '.join(plain)}" if plain else ""))
        return "nothing left"


CHECKS = ["install", "socket_activation", "ready_status", "reload_notify",
          "reload_minimal", "access_rules", "rotation", "metrics",
          "failover", "rotate", "rotate_timer", "credentials", "watchdog", "restart_kill9", "unreadable_env",
          "security", "reboot", "remove", "purge"]


def build_debs(outdir):
    """The .debs of this tree by packaging/build-deb.sh (no lintian: the
    'deb' test lints), again only when the tree (but tests/lab) changed
    since."""
    src = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    files = subprocess.run(
        ["git", "-C", src, "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"], capture_output=True, check=True).stdout
    h = hashlib.sha256()
    for f in sorted(files.split(b"\0")):
        p = os.path.join(src.encode(), f)
        # The lab itself is in no package: editing it builds nothing.
        if f and os.path.isfile(p) and not f.startswith(b"tests/lab/"):
            h.update(f + b"\0" + open(p, "rb").read())
    want = h.hexdigest()
    stamp = os.path.join(outdir, ".lab-source")
    if os.path.exists(stamp) and open(stamp).read() == want:
        log(f"lab: the .debs in {outdir} are of this tree")
        return
    log(f"lab: building the .debs into {outdir}")
    env = dict(os.environ, DBSWAP_NO_LINTIAN="1")
    for old in glob.glob(os.path.join(outdir, "*.deb")):
        os.unlink(old)
    subprocess.run(["nice", "-n", "10",
                    os.path.join(src, "packaging/build-deb.sh"), outdir],
                   check=True, env=env)
    with open(stamp, "w") as f:
        f.write(want)


def main():
    # A TERM (a CI timeout) unwinds like an exception: the container is
    # powered off and the cgroups removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--debs", help="directory with the built .debs")
    g.add_argument("--build-debs", metavar="OUTDIR",
                   help="build the .debs into OUTDIR first (when the "
                   "tree changed)")
    ap.add_argument("--only", help="comma list of checks (install always "
                    "runs): " + ",".join(CHECKS))
    ap.add_argument("--drop-in", action="append", metavar="FILE.conf",
                    help="a drop-in for dbswapd.service, installed after "
                    "the .debs (to try a unit change without rebuilding "
                    "them); repeatable")
    ap.add_argument("--keep", action="store_true",
                    help="keep the unpacked root (its path is printed)")
    ap.add_argument("--rebuild-root", action="store_true",
                    help="debootstrap the root again")
    args = ap.parse_args()

    if os.geteuid() != 0:
        skip_lab("needs root (debootstrap, nspawn, cgroups)")
    for tool in ("systemd-nspawn", "debootstrap", "unshare", "nsenter",
                 "zstd", "tar", "chroot"):
        if not shutil.which(tool):
            skip_lab(f"{tool} not found (Debian: systemd-container, "
                     "debootstrap, util-linux, zstd)")
    if not os.path.isdir("/sys/fs/cgroup"):
        skip_lab("no /sys/fs/cgroup")

    debs = args.debs
    if args.build_debs:
        os.makedirs(args.build_debs, exist_ok=True)
        build_debs(args.build_debs)
        debs = args.build_debs
    debs = os.path.abspath(debs)

    started = time.monotonic()
    tar = root_tar()
    if args.rebuild_root and os.path.exists(tar):
        os.unlink(tar)
    if not os.path.exists(tar):
        make_root(tar)
    run = tempfile.mkdtemp(prefix="run-", dir=CACHE)
    root = os.path.join(run, "root")
    os.mkdir(root)
    t = time.monotonic()
    subprocess.run(["tar", "--zstd", "--numeric-owner", "--xattrs",
                    "--acls", "-C", root, "-xpf", tar], check=True)
    log(f"lab: root unpacked from {os.path.basename(tar)} in "
        f"{time.monotonic() - t:.0f} s")

    ct = Container(root, os.path.join(run, "console.log"))
    lab = Lab(ct, debs, args.drop_in or ())
    only = set(args.only.split(",")) if args.only else None
    failed = False
    try:
        t = time.monotonic()
        try:
            ct.boot()
        except Fail as e:
            log(f"lab: the bare root does not boot here: {e}")
            ct.destroy()
            skip_lab("systemd-nspawn cannot boot a root on this machine")
        log(f"lab: booted in {time.monotonic() - t:.1f} s")
        for name in CHECKS:
            if only and name != "install" and name not in only:
                continue
            fn = getattr(lab, "check_" + name)
            t = time.monotonic()
            try:
                msg = fn()
                lab.results.append((name, "PASS", msg))
            except Skip as e:
                lab.results.append((name, "SKIP", str(e)))
            except Fail as e:
                lab.results.append((name, "FAIL", lab.mask(str(e))))
                failed = True
            status, text = lab.results[-1][1:]
            log(f"{status} {name} ({time.monotonic() - t:.1f} s): {text}")
            for r in lab.extra:
                log(f"{r[1]} {r[0]}: {r[2]}")
                failed = failed or r[1] == "FAIL"
            lab.results += lab.extra
            lab.extra = []
            if name == "install" and status == "FAIL":
                break
            if ct.proc.poll() is not None:
                log("lab: the container is gone: " + ct.log_tail())
                failed = True
                break
    finally:
        ct.destroy()
        if args.keep:
            log(f"lab: root kept in {root}")
        else:
            shutil.rmtree(run, ignore_errors=True)
    counts = {}
    for _, status, _ in lab.results:
        counts[status] = counts.get(status, 0) + 1
    log(f"lab: {counts.get('PASS', 0)} passed, {counts.get('FAIL', 0)} "
        f"failed, {counts.get('SKIP', 0)} skipped in "
        f"{time.monotonic() - started:.0f} s")
    for name, status, _ in lab.results:
        if status == "FAIL":
            log(f"lab: FAILED: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
