"""Integration tests of postern-smtpd as a group of processes: the
supervisor and its workers under systemd-socket-activate (the supervisor is
the main PID), worker restarts, full reload on SIGHUP, idle exit, and the
sd_notify protocol (READY, RELOADING, STATUS, WATCHDOG) seen by a notify
socket of our own. Assertions are on SMTP replies, processes, queue files,
log lines and notify messages."""
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile

import pytest

from smtpd_helpers import SMTPD, Smtpd, wait_for

pytestmark = pytest.mark.skipif(not os.path.exists(SMTPD), reason='postern-smtpd not built')

MSG = 'From: a@example.org\r\nTo: b@example.test\r\nSubject: process test\r\n\r\nHello.\r\n'


class ProcSmtpd(Smtpd):
    """An instance with extra variables for the daemon (systemd-socket-activate
    passes only those named with -E)."""

    def __init__(self, env=None, **kw):
        super().__init__(**kw)
        self.extra_env = env or {}

    def start(self):
        self.log = open(self.log_path, 'w')
        args = ['systemd-socket-activate', '-l', '127.0.0.1:%d' % self.port,
                '--fdname=' + self.service,
                '-E', 'POSTERN_LOG_TARGET=stderr',
                '-E', 'POSTERN_QMGR_SOCKET=' + os.path.join(self.tmp, 'qmgr'),
                '-E', 'POSTERN_RUNTIME_DIR=' + self.tmp]
        for k, v in self.extra_env.items():
            args += ['-E', '%s=%s' % (k, v)]
        args += [SMTPD, '--service=' + self.service, '-c', self.confdir]
        env = dict(os.environ)
        env.pop('LISTEN_FDS', None)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_for(self._port_open, what='port %d' % self.port)
        return self

    def _port_open(self):
        if self.service != 'smtps':
            return super()._port_open()
        if self.proc.poll() is not None:
            raise RuntimeError('postern-smtpd exited: ' + self.log_text())
        try:
            raw = socket.create_connection(('127.0.0.1', self.port), timeout=1)
            with ssl._create_unverified_context().wrap_socket(raw) as t:
                t.settimeout(5)
                return t.recv(1000).startswith(b'220 ')
        except OSError:
            return False

    def workers(self):
        """PIDs of the live worker processes (children of the main PID)."""
        path = '/proc/%d/task/%d/children' % (self.proc.pid, self.proc.pid)
        try:
            with open(path) as f:
                pids = [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []
        return sorted(p for p in pids if process_state(p) not in (None, 'Z'))

    def wait_workers(self, n, timeout=10):
        return wait_for(lambda: len(self.workers()) == n and self.workers(), timeout,
                        '%d workers' % n)

    def set_main_cf(self, extra):
        with open(os.path.join(self.confdir, 'main.cf'), 'a') as f:
            f.write(extra)

    def reload(self):
        os.kill(self.proc.pid, signal.SIGHUP)


def process_state(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def socket_owner(sock, pids):
    """Which of pids serves the server side of the client socket sock."""
    cport = sock.getsockname()[1]
    sport = sock.getpeername()[1]
    inode = None
    with open('/proc/net/tcp') as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(':')[1], 16) == sport and int(remote.split(':')[1], 16) == cport:
                inode = fields[9]
    assert inode, 'no server socket for client port %d' % cport
    for pid in pids:
        for fd in os.listdir('/proc/%d/fd' % pid):
            try:
                if os.readlink('/proc/%d/fd/%s' % (pid, fd)) == 'socket:[%s]' % inode:
                    return pid
            except FileNotFoundError:
                pass
    return None


def queued_id(reply_text):
    assert reply_text.startswith('250 2.0.0 Ok: queued as '), reply_text
    return reply_text.split()[-1]


def send_message(c, rcpt='b@example.test'):
    assert c.cmd('MAIL FROM:<a@example.org>') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<%s>' % rcpt) == ['250 2.1.5 Ok']
    assert c.cmd('DATA')[0].startswith('354')
    c.send(MSG + '.\r\n')
    return queued_id(c.reply()[0])


@pytest.fixture
def make_smtpd():
    started = []

    def make(**kw):
        s = ProcSmtpd(**kw).start()
        started.append(s)
        return s
    yield make
    for s in started:
        s.cleanup()


def connections_on_every_worker(s, workers):
    """Opens greeted connections until each worker serves one of them."""
    conns, owners = [], {}
    for _ in range(200):
        c = s.connect()
        assert c.reply()[0].startswith('220 ')
        conns.append(c)
        owners.setdefault(socket_owner(c.sock, workers), c)
        if all(w in owners for w in workers):
            return conns, owners
    raise AssertionError('sessions did not spread over the workers: %r' % owners.keys())


def test_two_workers_share_the_socket(make_smtpd):
    s = make_smtpd(main_cf='smtpd_worker_processes = 2\n')
    workers = s.wait_workers(2)
    conns, owners = connections_on_every_worker(s, workers)
    # A message through each worker.
    qids = [send_message(c) for c in owners.values()]
    for c in conns:
        assert c.cmd('QUIT') == ['221 2.0.0 Bye']
        c.close()
    assert sorted(s.queue_files()) == sorted(qids)
    assert s.workers() == workers


def test_killed_worker_is_replaced_and_its_file_removed(make_smtpd):
    s = make_smtpd(main_cf='smtpd_worker_processes = 2\n')
    workers = s.wait_workers(2)
    conns, owners = connections_on_every_worker(s, workers)
    victim = workers[0]
    c = owners[victim]
    # Half a message: the temporary queue file exists.
    c.cmd('EHLO client.example.org')
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<b@example.test>')
    assert c.cmd('DATA')[0].startswith('354')
    c.send('Subject: never finished\r\n\r\nhalf')
    wait_for(lambda: s.queue_files(hidden=True), what='temporary queue file')
    assert all(n.startswith('.') for n in s.queue_files(hidden=True))
    os.kill(victim, signal.SIGKILL)
    assert c.closed()
    s.wait_log('Worker %d was killed by signal KILL, starting another' % victim)
    now = s.wait_workers(2)
    assert victim not in now and workers[1] in now
    # What the dead worker wrote is gone; nothing was acknowledged.
    wait_for(lambda: s.queue_files(hidden=True) == [], what='orphan removed')
    s.wait_log('Removed the unfinished queue file incoming/.')
    # The survivor's session goes on, and new sessions work.
    assert send_message(owners[workers[1]])
    with smtplib.SMTP('127.0.0.1', s.port) as client:
        client.sendmail('a@example.org', ['b@example.test'], MSG)
    assert len(s.queue_files()) == 2
    for x in conns:
        x.close()


def test_reload_new_banner_keeps_open_sessions(make_smtpd):
    s = make_smtpd(main_cf='smtpd_worker_processes = 2\n')
    old_workers = s.wait_workers(2)
    old = s.connect()
    assert old.reply() == ['220 mx.example.test ESMTP postern']
    assert old.cmd('EHLO client.example.org')[0] == '250-mx.example.test'
    assert old.cmd('MAIL FROM:<a@example.org>') == ['250 2.1.0 Ok']
    s.set_main_cf('smtpd_banner = $myhostname ESMTP reloaded\n')
    s.reload()
    s.wait_log('Reloaded the TLS configuration, settings and tables')
    # The open session completes its message.
    assert old.cmd('RCPT TO:<b@example.test>') == ['250 2.1.5 Ok']
    assert old.cmd('DATA')[0].startswith('354')
    old.send(MSG + '.\r\n')
    qid = queued_id(old.reply()[0])
    # Every new connection gets the new configuration.
    for _ in range(5):
        c = s.connect()
        assert c.reply() == ['220 mx.example.test ESMTP reloaded']
        c.cmd('QUIT')
        c.close()
    # Idle old workers are gone; the busy one leaves after its session.
    assert old.cmd('QUIT') == ['221 2.0.0 Bye']
    old.close()
    new_workers = s.wait_workers(2)
    assert not set(new_workers) & set(old_workers)
    assert s.queue_files() == [qid]
    log = s.log_text()
    assert 'was killed' not in log and 'exited with status' not in log, log


def test_reload_with_broken_main_cf_keeps_running_config(make_smtpd):
    s = make_smtpd(main_cf='smtpd_worker_processes = 2\n')
    workers = s.wait_workers(2)
    s.set_main_cf('smtpd_banner = $myhostname never used\nmessage_size_limit = lots\n')
    with open(os.path.join(s.confdir, 'main.cf')) as f:
        bad_line = f.read().splitlines().index('message_size_limit = lots') + 1
    s.reload()
    s.wait_log('keeping the running one')
    log = s.log_text()
    where = '%s:%d' % (os.path.join(s.confdir, 'main.cf'), bad_line)
    assert any(where in line and 'message_size_limit' in line for line in log.splitlines()), log
    # Same workers, same configuration, still serving.
    assert s.workers() == workers
    c = s.connect()
    assert c.reply() == ['220 mx.example.test ESMTP postern']
    assert send_message(c)
    c.cmd('QUIT')


def test_reload_with_broken_certificate_keeps_running_config(make_smtpd, tmp_path):
    key, cert = tmp_path / 'k.pem', tmp_path / 'c.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
                    '-subj', '/CN=mx.example.test', '-keyout', str(key), '-out', str(cert)],
                   check=True, capture_output=True)
    s = make_smtpd(main_cf='smtpd_worker_processes = 2\nsmtpd_tls_security_level = may\n'
                   'smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n' % (cert, key))
    workers = s.wait_workers(2)
    cert.write_text('garbage\n')
    s.set_main_cf('smtpd_banner = $myhostname never used\n')
    s.reload()
    s.wait_log('keeping the previous certificates')
    assert s.workers() == workers
    with smtplib.SMTP('127.0.0.1', s.port) as client:
        client.starttls(context=ssl._create_unverified_context())
        assert client.noop()[0] == 250


def test_idle_exit_takes_the_workers_along(make_smtpd):
    s = make_smtpd(main_cf='smtpd_worker_processes = 2\nmax_idle = 1s\n')
    workers = s.wait_workers(2)
    c = s.connect()
    c.reply()
    c.cmd('QUIT')
    c.close()
    assert s.proc.wait(timeout=15) == 0
    wait_for(lambda: all(process_state(p) in (None, 'Z') for p in workers),
             what='workers gone')


def test_idle_exit_waits_for_open_sessions(make_smtpd):
    s = make_smtpd(main_cf='smtpd_worker_processes = 2\nmax_idle = 1s\n')
    s.wait_workers(2)
    c = s.connect()
    c.reply()
    with pytest.raises(subprocess.TimeoutExpired):
        s.proc.wait(timeout=2.5)
    assert c.cmd('NOOP') == ['250 2.0.0 Ok']
    c.cmd('QUIT')
    assert s.proc.wait(timeout=15) == 0


def test_sigterm_stops_everything(make_smtpd):
    s = make_smtpd(main_cf='smtpd_worker_processes = 3\n')
    workers = s.wait_workers(3)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=10) == 0
    wait_for(lambda: all(process_state(p) in (None, 'Z') for p in workers),
             what='workers gone')


def test_ticket_resumption_across_workers(make_smtpd, tmp_path):
    key, cert = tmp_path / 'k.pem', tmp_path / 'c.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
                    '-subj', '/CN=mx.example.test', '-keyout', str(key), '-out', str(cert)],
                   check=True, capture_output=True)
    s = make_smtpd(service='smtps', main_cf='smtpd_worker_processes = 2\n',
                   service_cf='smtpd_tls_wrappermode = yes\nsmtpd_tls_cert_file = %s\n'
                              'smtpd_tls_key_file = %s\n' % (cert, key))
    workers = s.wait_workers(2)
    ctx = ssl._create_unverified_context()
    with socket.create_connection(('127.0.0.1', s.port)) as raw:
        with ctx.wrap_socket(raw) as t:
            t.recv(1000)
            t.sendall(b'QUIT\r\n')
            t.recv(1000)
            session = t.session
    served = set()
    for _ in range(30):
        raw = socket.create_connection(('127.0.0.1', s.port))
        with ctx.wrap_socket(raw, session=session) as t:
            assert t.recv(1000).startswith(b'220 ')
            assert t.session_reused
            served.add(socket_owner(t, workers))
        if len(served) == 2:
            break
    assert served == set(workers)


def test_notify_protocol_and_watchdog(make_smtpd):
    """The supervisor alone talks to systemd: READY=1 once the workers
    serve, STATUS= with the counts, RELOADING=1 and READY=1 around a reload,
    WATCHDOG=1 from its loop when WATCHDOG_USEC is set."""
    d = tempfile.mkdtemp(prefix='postern-notify.')
    path = os.path.join(d, 'notify')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    got = []

    def messages():
        try:
            while True:
                data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
                pid = None
                for level, typ, val in anc:
                    if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                        pid = int.from_bytes(val[:4], 'little')
                got.append((pid, data.decode()))
                return True
        except socket.timeout:
            return False
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    try:
        s = make_smtpd(main_cf='smtpd_worker_processes = 2\n',
                       env={'NOTIFY_SOCKET': path, 'WATCHDOG_USEC': '400000'})
        s.wait_workers(2)

        def seen(text):
            messages()
            return any(text in m for _, m in got)
        wait_for(lambda: seen('READY=1'), what='READY=1')
        wait_for(lambda: seen('WATCHDOG=1'), what='WATCHDOG=1')
        with smtplib.SMTP('127.0.0.1', s.port) as client:
            client.sendmail('a@example.org', ['b@example.test'], MSG)
        wait_for(lambda: seen('1 message queued'), what='STATUS with the count')
        s.reload()
        wait_for(lambda: seen('RELOADING=1'), what='RELOADING=1')
        s.wait_log('Reloaded the TLS configuration')
        wait_for(lambda: seen('RELOADING=1') and sum('READY=1' in m for _, m in got) >= 2,
                 what='READY=1 after the reload')
        # Every message came from the main PID.
        assert {pid for pid, _ in got} == {s.proc.pid}, got
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(d)
