"""Helpers for the end-to-end tests: one whole postern instance built from
the real daemons, each under systemd-socket-activate on its socket in a
private runtime directory (qmgr, deliver-local, deliver-remote, bounce),
postern-smtpd on a TCP port, and postern-pickup run on demand, all sharing
one configuration directory and queue_directory. Every daemon logs to its
own file (POSTERN_LOG_TARGET=stderr). An instance may live in a network
namespace (netns_helpers.Network) to relay to a second instance.

Processes are stopped by PID; nothing here sleeps for a fixed time: waits
poll for files and log lines with deadlines."""
import email
import email.policy
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import common
from common import BUILD_DIR, free_port

SOCKET_ACTIVATE = shutil.which('systemd-socket-activate')
PROGRAMS = {
    'qmgr': os.path.join(BUILD_DIR, 'src', 'qmgr', 'postern-qmgr'),
    'deliver-local': os.path.join(BUILD_DIR, 'src', 'deliver-local', 'postern-deliver-local'),
    'deliver-remote': os.path.join(BUILD_DIR, 'src', 'deliver-remote',
                                   'postern-deliver-remote'),
    'bounce': os.path.join(BUILD_DIR, 'src', 'bounce', 'postern-bounce'),
    'pickup': os.path.join(BUILD_DIR, 'src', 'pickup', 'postern-pickup'),
    'smtpd': os.path.join(BUILD_DIR, 'src', 'smtpd', 'postern-smtpd'),
}
TOOLS = {
    'postmap': os.path.join(BUILD_DIR, 'src', 'tools', 'postmap', 'postmap'),
    'postqueue': os.path.join(BUILD_DIR, 'src', 'tools', 'postqueue', 'postqueue'),
    'postsuper': os.path.join(BUILD_DIR, 'src', 'tools', 'postsuper', 'postsuper'),
    'sendmail': os.path.join(BUILD_DIR, 'src', 'tools', 'sendmail', 'sendmail'),
    'postdrop': os.path.join(BUILD_DIR, 'src', 'tools', 'sendmail', 'postdrop'),
}
# The bus daemons and the socket each one listens on.
BUS_DAEMONS = ('qmgr', 'deliver-local', 'deliver-remote', 'bounce')
QUEUE_DIRS = ('maildrop', 'incoming', 'active', 'deferred', 'hold', 'corrupt', 'defer')
OWN_MODULES = ('src/qmgr/', 'src/deliver-local/', 'src/deliver-remote/', 'src/bounce/',
               'src/pickup/', 'queue-file.c')
PASS_ENV = ('POSTERN_CONFIG_DIR', 'POSTERN_RUNTIME_DIR', 'POSTERN_LOG_TARGET',
            'POSTERN_QMGR_SOCKET', 'ASAN_OPTIONS', 'UBSAN_OPTIONS', 'PATH')
QUEUE_ID_RE = r'[0-9A-Za-z]{16}'


def stop_process(proc, timeout=10):
    """Stops a Popen by its PID: SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def maildir_messages(path):
    """Files in a Maildir's new/ (sorted), [] when it does not exist."""
    new = os.path.join(str(path), 'new')
    try:
        return sorted(os.path.join(new, n) for n in os.listdir(new))
    except FileNotFoundError:
        return []


def read_message(path):
    with open(path, 'rb') as f:
        return email.message_from_binary_file(f, policy=email.policy.default)


def wait_for(predicate, timeout=20.0, what='condition'):
    """common.wait_for with this module's default deadline."""
    return common.wait_for(predicate, timeout, what)


# Runs "$@" with a private /run/systemd whose journal socket is $JOURNAL.
JOURNAL_NS_SCRIPT = ('mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && '
                     'mkdir /run/systemd/journal && '
                     'ln -s "$JOURNAL" /run/systemd/journal/socket && exec "$@"')


class Journal:
    """A datagram socket in the journal's native protocol that stands in
    for journald: a daemon run through wrap() with env() logs its entries
    here, every field readable."""

    def __init__(self, directory):
        self.path = os.path.join(directory, 'journal.socket')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.entries = []

    def wrap(self, cmd):
        return ['unshare', '-m', 'sh', '-c', JOURNAL_NS_SCRIPT, 'sh'] + list(cmd)

    @staticmethod
    def parse(data):
        """NAME=value lines, or NAME, newline, 64-bit little-endian length,
        value, newline."""
        fields = {}
        i = 0
        while i < len(data):
            nl = data.index(b'\n', i)
            eq = data.find(b'=', i, nl)
            if eq >= 0:
                fields[data[i:eq].decode()] = data[eq + 1:nl].decode(errors='replace')
                i = nl + 1
            else:
                (size,) = struct.unpack('<Q', data[nl + 1:nl + 9])
                fields[data[i:nl].decode()] = data[nl + 9:nl + 9 + size].decode(errors='replace')
                i = nl + 9 + size + 1
        return fields

    def read(self):
        while True:
            try:
                self.entries.append(self.parse(self.sock.recv(1 << 20)))
            except BlockingIOError:
                return self.entries

    def wait(self, pred, what, timeout=20):
        """The entries pred accepts, once there is one."""
        return wait_for(lambda: [e for e in self.read() if pred(e)], timeout, what)

    def close(self):
        self.sock.close()


class Instance:
    """One postern instance. main_cf lines replace base lines of the same
    parameter name. net/ns: run everything inside that namespace;
    smtpd_addr: the address smtpd listens on (port 25 in a namespace, a
    free loopback port otherwise)."""

    def __init__(self, main_cf='', name='postern', net=None, ns=None, smtpd_addr=None):
        self.tmp = tempfile.mkdtemp(prefix='postern-e2e-%s.' % name, dir='/tmp')
        os.chmod(self.tmp, 0o755)
        self.name = name
        self.net = net
        self.ns = ns
        self.confdir = os.path.join(self.tmp, 'conf')
        self.queue = os.path.join(self.tmp, 'queue')
        self.runtime = os.path.join(self.tmp, 'run')
        self.logdir = os.path.join(self.tmp, 'log')
        self.vmail = os.path.join(self.tmp, 'vmail')
        for d in (self.confdir, self.runtime, self.logdir, self.vmail):
            os.makedirs(d)
        os.chown(self.vmail, 5000, 5000)
        for d in QUEUE_DIRS:
            os.makedirs(os.path.join(self.queue, d))
        os.chmod(os.path.join(self.queue, 'maildrop'), 0o1733)
        if net:
            self.smtpd_host, self.smtpd_port = smtpd_addr, 25
        else:
            self.smtpd_host, self.smtpd_port = '127.0.0.1', free_port()
        self.procs = {}
        self.logs = {}
        self.journals = {}      # daemon name -> Journal (see use_journal())
        self.pids = {}
        base = ('myhostname = mx.example.com\n'
                'mydomain = example.com\n'
                'myorigin = $mydomain\n'
                'mydestination = $myhostname, localhost.$mydomain, localhost\n'
                'mynetworks = 127.0.0.0/8, 192.0.2.0/24, 198.51.100.0/24\n'
                'queue_directory = %s\n'
                'mail_owner = root\n'
                'alias_maps =\n'
                'local_recipient_maps =\n'
                'smtpd_reject_unlisted_recipient = no\n'
                'smtpd_error_sleep_time = 0\n'
                'minimal_backoff_time = 1s\n'
                'maximal_backoff_time = 2s\n'
                'queue_run_delay = 1s\n'
                'max_idle = 300s\n'
                'inet_protocols = ipv4\n'
                'dns_resolver_servers = 127.0.0.1\n'
                'virtual_mailbox_base = %s\n' % (self.queue, self.vmail))
        names = {l.split('=')[0].strip() for l in main_cf.splitlines() if '=' in l}
        lines = [l for l in base.splitlines() if l.split('=')[0].strip() not in names]
        with open(os.path.join(self.confdir, 'main.cf'), 'w') as f:
            f.write('\n'.join(lines) + '\n' + main_cf + '\n')

    # --- environment --------------------------------------------------------

    def env(self):
        e = dict(os.environ)
        e.pop('LISTEN_FDS', None)
        e.update(POSTERN_CONFIG_DIR=self.confdir, POSTERN_RUNTIME_DIR=self.runtime,
                 POSTERN_LOG_TARGET='stderr', POSTERN_QMGR_SOCKET=self.socket('qmgr'),
                 POSTERN_POSTDROP=TOOLS['postdrop'], POSTERN_POSTQUEUE=TOOLS['postqueue'])
        e.setdefault('ASAN_OPTIONS', 'detect_leaks=0')
        e.setdefault('UBSAN_OPTIONS', 'print_stacktrace=1')
        return e

    def env_args(self, names):
        """-E arguments of systemd-socket-activate, which passes only
        the variables it is told."""
        e = self.env()
        out = []
        for k in names:
            if k in e:
                out += ['-E', '%s=%s' % (k, e[k])]
        return out

    def socket(self, name):
        return os.path.join(self.runtime, name)

    def use_journal(self, name):
        """Makes bus daemon name log to a Journal (returned) instead of its
        log file; call before start()."""
        self.journals[name] = Journal(self.tmp)
        return self.journals[name]

    def wrap(self, args):
        return self.net.exec_args(self.ns, args) if self.net else list(args)

    def table(self, name, text, kind='hash'):
        """Writes conf/NAME and indexes it with the built postmap."""
        path = os.path.join(self.confdir, name)
        with open(path, 'w') as f:
            f.write(text)
        if kind == 'hash':
            subprocess.run([TOOLS['postmap'], 'hash:' + path], check=True,
                           capture_output=True, env=self.env())
        return '%s:%s' % (kind, path)

    # --- daemons ------------------------------------------------------------

    def _log(self, name):
        f = open(os.path.join(self.logdir, name + '.log'), 'a')
        self.logs.setdefault(name, []).append(f)
        return f

    def start_bus_daemon(self, name):
        """Starts a bus daemon under systemd-socket-activate; the first
        connection (from qmgr, smtpd, ...) execs it."""
        sock = self.socket(name)
        if os.path.exists(sock):
            os.unlink(sock)
        env = self.env()
        journal = self.journals.get(name)
        if journal:
            env.update(JOURNAL=journal.path, POSTERN_LOG_TARGET='journal')
        args = [SOCKET_ACTIVATE, '-l', sock]
        for k in PASS_ENV:
            if k in env:
                args += ['-E', '%s=%s' % (k, env[k])]
        if journal:
            args = journal.wrap(args)
        args += [PROGRAMS[name], '-c', self.confdir]
        p = subprocess.Popen(self.wrap(args), stdout=self._log(name),
                             stderr=subprocess.STDOUT, env=env)
        self.procs[name] = p
        wait_for(lambda: os.path.exists(sock), what=name + ' socket')
        return p

    def start_smtpd(self):
        args = [SOCKET_ACTIVATE, '-l', '%s:%d' % (self.smtpd_host, self.smtpd_port),
                '--fdname=smtpd'] + self.env_args(PASS_ENV)
        args += [PROGRAMS['smtpd'], '--service=smtpd', '-c', self.confdir]
        p = subprocess.Popen(self.wrap(args), stdout=self._log('smtpd'),
                             stderr=subprocess.STDOUT, env=self.env())
        self.procs['smtpd'] = p
        wait_for(self._smtpd_ready, what='postern-smtpd')
        return p

    def _smtpd_ready(self):
        if self.procs['smtpd'].poll() is not None:
            raise RuntimeError('postern-smtpd exited: ' + self.log_text('smtpd'))
        if self.net:
            return self.net.port_open(self.ns, self.smtpd_host, self.smtpd_port)
        try:
            with socket.create_connection((self.smtpd_host, self.smtpd_port), timeout=1) as s:
                s.settimeout(5)
                s.recv(1000)
            return True
        except OSError:
            return False

    def start(self, smtpd=True):
        for name in BUS_DAEMONS:
            self.start_bus_daemon(name)
        if smtpd:
            self.start_smtpd()
        return self

    def daemon_pid(self, name):
        """PID of a bus daemon once systemd-socket-activate exec()ed it."""
        p = self.procs.get(name)
        if not p or p.poll() is not None:
            return None
        pid = p.pid
        if self.net:
            # ip netns exec execs too: the PID stays the same.
            pass
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                return pid if ('postern-' + name).encode() in f.read() else None
        except OSError:
            return None

    def kill(self, name, sig=signal.SIGKILL):
        p = self.procs.get(name)
        if p and p.poll() is None:
            os.kill(p.pid, sig)
            p.wait(timeout=30)

    def run_pickup(self):
        """Runs postern-pickup by hand, as postern-pickup.path would start it."""
        return subprocess.run(self.wrap([PROGRAMS['pickup'], '-c', self.confdir]),
                              capture_output=True, text=True, env=self.env(), timeout=60)

    def tool(self, name, *args, input=None):
        return subprocess.run(self.wrap([TOOLS[name]] + list(args)), capture_output=True,
                              text=True, env=self.env(), input=input, timeout=60)

    def stop(self):
        for p in reversed(list(self.procs.values())):
            stop_process(p)
        for fs in self.logs.values():
            for f in fs:
                f.close()
        self.logs = {}

    def cleanup(self):
        """Stops every daemon, removes the files; fails on sanitizer
        reports about the delivery roles."""
        self.stop()
        for j in self.journals.values():
            j.close()
        text = self.all_logs()
        shutil.rmtree(self.tmp, ignore_errors=True)
        for marker in ('ERROR: AddressSanitizer', 'ERROR: LeakSanitizer'):
            assert marker not in text, text
        for line in text.splitlines():
            if 'runtime error:' in line:
                assert not any(m in line for m in OWN_MODULES), text

    # --- logs ---------------------------------------------------------------

    def log_text(self, name):
        try:
            with open(os.path.join(self.logdir, name + '.log'), errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def all_logs(self):
        return ''.join('--- %s\n%s' % (n, self.log_text(n))
                       for n in BUS_DAEMONS + ('smtpd',))

    def wait_log(self, name, pattern, timeout=20):
        """Waits for a regular expression in a daemon's log; returns the match."""
        rx = re.compile(pattern)
        try:
            return wait_for(lambda: rx.search(self.log_text(name)), timeout,
                            '%s log: %s' % (name, pattern))
        except TimeoutError:
            raise TimeoutError('no %r in the %s log:\n%s' % (pattern, name, self.all_logs()))

    def queue_ids(self, sub):
        found = []
        for root, _, files in os.walk(os.path.join(self.queue, sub)):
            found += [f for f in files if not f.startswith('.')]
        return sorted(found)

    def queue_empty(self):
        return not any(self.queue_ids(s) for s in ('incoming', 'active', 'deferred'))

    # --- SMTP ---------------------------------------------------------------

    def send(self, sender, rcpts, subject='test', body='Hello.\n', rcpt_options=(),
             mail_options=()):
        """Sends one message with smtplib (inside the namespace when the
        instance has one); returns the queue id from the 250 reply to
        DATA."""
        msg = ('From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n'
               'Message-ID: <%f.%d@client.example.org>\r\n\r\n%s' %
               (sender, rcpts[0], subject, time.time(), os.getpid(), body))
        args = dict(host=self.smtpd_host, port=self.smtpd_port, sender=sender,
                    rcpts=list(rcpts), msg=msg, rcpt_options=list(rcpt_options),
                    mail_options=list(mail_options))
        r = subprocess.run(self.wrap([sys.executable, '-c', SEND_SCRIPT, json.dumps(args)]),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        m = re.search(r'queued as (%s)' % QUEUE_ID_RE, r.stdout)
        assert m, r.stdout
        return m.group(1)


# Run by send(), in the instance's network namespace when it has one.
SEND_SCRIPT = """
import json, smtplib, sys
a = json.loads(sys.argv[1])
with smtplib.SMTP(a['host'], a['port'], timeout=30) as s:
    s.ehlo('client.example.org')
    s.mail(a['sender'], a['mail_options'])
    for r in a['rcpts']:
        code, text = s.rcpt(r, a['rcpt_options'])
        assert code == 250, (r, code, text)
    code, text = s.data(a['msg'].encode())
    assert code == 250, (code, text)
    print(text.decode())
"""


def make_user(name, home_root):
    """Creates a throw-away system user with its home under home_root."""
    home = os.path.join(home_root, name)
    subprocess.run(['useradd', '--no-user-group', '--gid', 'users', '--home-dir', home,
                    '--create-home', '--shell', '/bin/sh', name], check=True,
                   capture_output=True)
    return home


def remove_user(name):
    subprocess.run(['userdel', name], capture_output=True)
