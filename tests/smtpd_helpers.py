"""Helpers for the postern-smtpd integration tests: a private instance of the
built daemon under systemd-socket-activate on a free loopback port, with its
own configuration directory and queue, a raw SMTP client for pipelining and
smuggling cases, and a reader of the queue file format (postern-queue(5))."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile

from common import BUILD_DIR, SRC_DIR, free_port, wait_for

SMTPD = os.path.join(BUILD_DIR, 'src', 'smtpd', 'postern-smtpd')
SHIPPED_CONF = os.path.join(SRC_DIR, 'conf')
OWN_MODULES = ('src/smtpd/', 'addr.c', 'queue-file.c', 'queue-id.c')
QUEUE_DIRS = ('incoming', 'active', 'deferred', 'hold', 'corrupt', 'maildrop')


class Smtpd:
    """One postern-smtpd instance. main_cf holds extra main.cf lines,
    service_cf the lines of services.d/SERVICE.cf."""

    def __init__(self, service='smtpd', main_cf='', service_cf=None, files=None,
                 queue_dir=None, journal=False, wrap=None):
        self.tmp = tempfile.mkdtemp(prefix='postern-smtpd-test.')
        # wrap: a command line the daemon runs under (strace ...).
        self.wrap = wrap or []
        # journal: log to a JournalSink instead of stderr (self.journal).
        self.journal = JournalSink(os.path.join(self.tmp, 'journal')) if journal else None
        self.confdir = os.path.join(self.tmp, 'conf')
        self.queue = queue_dir or os.path.join(self.tmp, 'queue')
        self.service = service
        self.port = free_port()
        self.proc = None
        self.log_path = os.path.join(self.tmp, 'smtpd.log')
        os.makedirs(os.path.join(self.confdir, 'services.d'))
        for d in QUEUE_DIRS:
            os.makedirs(os.path.join(self.queue, d), exist_ok=True)
        for name, text in (files or {}).items():
            with open(os.path.join(self.confdir, name), 'w') as f:
                f.write(text)
        with open(os.path.join(self.confdir, 'main.cf'), 'w') as f:
            f.write('myhostname = mx.example.test\n'
                    'mydomain = example.test\n'
                    'mydestination = $myhostname, example.test, localhost\n'
                    'relay_domains = relay.example.test\n'
                    'mynetworks = 192.0.2.0/24\n'
                    # Recipient validation (local_recipient_maps) is tested
                    # in test_restrictions.py; here any local user is fine.
                    'local_recipient_maps =\n'
                    'queue_directory = %s\n'
                    'smtpd_error_sleep_time = 0\n'
                    'max_idle = 60s\n' % self.queue)
            f.write(main_cf)
        if service_cf is not None:
            with open(os.path.join(self.confdir, 'services.d', service + '.cf'), 'w') as f:
                f.write(service_cf)

    def start(self):
        env = dict(os.environ)
        env.pop('LISTEN_FDS', None)
        self.log = open(self.log_path, 'w')
        # systemd-socket-activate passes only the variables named with -E.
        self.proc = subprocess.Popen(
            (self.journal.wrapper() if self.journal else []) + self.wrap +
            ['systemd-socket-activate', '-l', '127.0.0.1:%d' % self.port,
             '--fdname=' + self.service,
             '-E', 'POSTERN_LOG_TARGET=' + ('journal' if self.journal else 'stderr'),
             '-E', 'POSTERN_QMGR_SOCKET=' + os.path.join(self.tmp, 'qmgr'),
             '-E', 'POSTERN_RUNTIME_DIR=' + self.tmp,
             SMTPD, '--service=' + self.service, '-c', self.confdir],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_for(self._port_open, what='port %d' % self.port)
        return self

    def _port_open(self):
        if self.proc.poll() is not None:
            raise RuntimeError('postern-smtpd exited: ' + self.log_text())
        try:
            with socket.create_connection(('127.0.0.1', self.port), timeout=1) as s:
                s.settimeout(5)
                s.recv(1000)            # the banner: the daemon runs
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, 'log', None):
            self.log.close()
        if self.journal:
            self.journal.close()

    def cleanup(self):
        """Stops the daemon and removes its files; fails when a sanitizer
        (a -Db_sanitize build) reported anything."""
        self.stop()
        log = self.log_text() if os.path.exists(self.log_path) else ''
        shutil.rmtree(self.tmp, ignore_errors=True)
        for marker in ('ERROR: AddressSanitizer', 'ERROR: LeakSanitizer'):
            assert marker not in log, log
        # UBSan reports about this daemon's own modules.
        for line in log.splitlines():
            if 'runtime error:' in line:
                assert not any(m in line for m in OWN_MODULES), log

    def log_text(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def wait_log(self, text, timeout=10):
        return wait_for(lambda: text in self.log_text(), timeout, 'log line ' + repr(text))

    def queue_files(self, sub='incoming', hidden=False):
        names = sorted(os.listdir(os.path.join(self.queue, sub)))
        return [n for n in names if hidden or not n.startswith('.')]

    def read_queue_file(self, qid, sub='incoming'):
        with open(os.path.join(self.queue, sub, qid), 'rb') as f:
            return parse_queue_file(f.read())

    def connect(self, source=None):
        return RawClient(self.port, source)


class JournalSink:
    """Receives what a daemon sends to the journal: a datagram socket that
    wrapper() mounts at /run/systemd/journal/socket in a private mount
    namespace of the daemon (the host's /run is not touched). records()
    parses the native protocol into dicts of fields."""

    def __init__(self, directory):
        os.makedirs(directory)
        self.dir = directory
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(os.path.join(directory, 'socket'))
        self.sock.setblocking(False)
        self.got = []

    def wrapper(self):
        return ['unshare', '--mount', '--propagation', 'private', 'sh', '-ec',
                'mount -t tmpfs tmpfs /run; mkdir -p /run/systemd/journal; '
                'mount --bind "$0" /run/systemd/journal; exec "$@"', self.dir]

    def records(self):
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except (BlockingIOError, OSError):
                break
            rec = {}
            while data:
                line, sep, rest = data.partition(b'\n')
                if b'=' in line:
                    k, v = line.split(b'=', 1)
                    data = rest
                else:           # KEY\n, 64-bit little-endian size, value, \n
                    size = int.from_bytes(rest[:8], 'little')
                    k, v, data = line, rest[8:8 + size], rest[9 + size:]
                rec[k.decode()] = v.decode('utf-8', 'replace')
            self.got.append(rec)
        return self.got

    def wait(self, predicate, what, timeout=10):
        """The first record for which predicate(record) is true."""
        def find():
            return next((r for r in self.records() if predicate(r)), None)
        return wait_for(find, timeout, what)

    def close(self):
        self.sock.close()


def shipped(name, *params):
    """The text of a configuration file shipped in conf/ ("main.cf",
    "services.d/submission.cf"); with params, only the lines setting them."""
    with open(os.path.join(SHIPPED_CONF, name)) as f:
        text = f.read()
    if not params:
        return text
    lines = [line for line in text.splitlines(True)
             if line.split('=', 1)[0].strip() in params]
    assert len(lines) == len(params), (name, params, lines)
    return ''.join(lines)


def parse_queue_file(data):
    """Parses a queue file into (header dict, content bytes, envelope dict
    with 'rcpt' a list of (status, notify, orcpt, address))."""
    header = data[:64]
    assert header.endswith(b'\n'), header
    magic, version, csize, esize, flags = header.split()
    assert magic == b'POSTERNQ' and version == b'0001'
    csize, esize = int(csize, 16), int(esize, 16)
    assert len(data) == 64 + csize + esize
    content = data[64:64 + csize]
    env = {'rcpt': []}
    lines = data[64 + csize:].decode('utf-8', 'surrogateescape').split('\n')
    assert lines[-1] == '' and lines[-2] == 'end='
    for line in lines[:-2]:
        k, v = line.split('=', 1)
        if k == 'rcpt':
            status, notify, orcpt, addr = v.split(' ', 3)
            env['rcpt'].append((status, notify, orcpt, addr))
        else:
            env[k] = v
    return {'flags': int(flags, 16), 'size': csize}, content, env


class RawClient:
    """A line-oriented SMTP client on a plain socket, for what smtplib will
    not do: pipelined groups, bare LF, BDAT, broken syntax."""

    def __init__(self, port, source=None):
        # source: another loopback address (127.0.0.5) for a client that
        # is not one of this host's interface addresses.
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=10,
                                             source_address=(source, 0) if source else None)
        self.buf = b''

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        while b'\r\n' not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError('connection closed; pending: %r' % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b'\r\n', 1)
        return line.decode('utf-8', 'replace')

    def reply(self):
        """One complete (possibly multi-line) reply as a list of lines."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == '-':
            lines.append(self.line())
        return lines

    def cmd(self, text):
        self.send(text + '\r\n')
        return self.reply()

    def closed(self):
        """Whether the server closed the connection (after any pending data)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


@contextlib.contextmanager
def tmpfs_queue(parent, fill=False):
    """A queue directory (incoming, hold, active, deferred) on a 1 MiB tmpfs
    below parent, filled up to the last byte with fill; unmounted after."""
    qdir = parent / 'queue'
    qdir.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(qdir)], check=True)
    try:
        for d in ('incoming', 'hold', 'active', 'deferred'):
            (qdir / d).mkdir()
        if fill:
            try:
                with open(qdir / 'filler', 'wb') as f:
                    while True:
                        f.write(b'x' * 4096)
                        f.flush()
            except OSError:
                pass
        yield qdir
    finally:
        subprocess.run(['umount', '-l', str(qdir)], check=True)
