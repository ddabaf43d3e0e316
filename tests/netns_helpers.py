"""Network namespaces for the delivery tests: a "client" namespace where
postern-deliver-remote and a dnsmasq DNS server on 127.0.0.1:53 run, and a
"peer" namespace reached over a veth pair where the receiving mail servers
listen. Addresses come from the documentation ranges only (198.51.100.0/24
on the link). Everything started here is stopped by PID, and the namespaces
are deleted, even when a test fails.

Also: a writer of postern queue files (postern-queue(5)), so that tests can
hand the delivery agent exactly the message they need."""
import os
import random
import shutil
import signal
import string
import subprocess
import tempfile
import time
from common import wait_for

CLIENT_ADDR = '198.51.100.1'
PEER_ADDRS = ['198.51.100.10', '198.51.100.11', '198.51.100.12', '198.51.100.13',
              '198.51.100.14', '198.51.100.15', '198.51.100.16']


def have_root_netns():
    return os.geteuid() == 0 and shutil.which('ip') is not None


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


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


class Network:
    """Two namespaces joined by a veth pair: client (198.51.100.1) and peer
    (198.51.100.10-16)."""

    def __init__(self):
        tag = '%d%04d' % (os.getpid() % 100000, random.randrange(10000))
        self.client = 'pstc' + tag
        self.peer = 'pstp' + tag
        self.procs = []
        self.created = []
        try:
            for ns in (self.client, self.peer):
                sh('ip', 'netns', 'add', ns)
                self.created.append(ns)
                sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
            va, vb = 'pa' + tag, 'pb' + tag
            sh('ip', 'link', 'add', va, 'netns', self.client, 'type', 'veth',
               'peer', 'name', vb, 'netns', self.peer)
            sh('ip', '-n', self.client, 'addr', 'add', CLIENT_ADDR + '/24', 'dev', va)
            sh('ip', '-n', self.client, 'link', 'set', va, 'up')
            for a in PEER_ADDRS:
                sh('ip', '-n', self.peer, 'addr', 'add', a + '/24', 'dev', vb)
            sh('ip', '-n', self.peer, 'link', 'set', vb, 'up')
            # IPv6 duplicate address detection would delay nothing here, but
            # keep the link IPv4-only as the tests are.
        except Exception:
            self.cleanup()
            raise

    def exec_args(self, ns, args):
        return ['ip', 'netns', 'exec', ns] + list(args)

    def popen(self, ns, args, **kw):
        p = subprocess.Popen(self.exec_args(ns, args), **kw)
        self.procs.append(p)
        return p

    def run(self, ns, args, **kw):
        return subprocess.run(self.exec_args(ns, args), capture_output=True, text=True,
                              timeout=60, **kw)

    def port_open(self, ns, addr, port):
        r = self.run(ns, ['python3', '-c',
                          'import socket,sys\n'
                          's=socket.socket()\n'
                          's.settimeout(1)\n'
                          'sys.exit(s.connect_ex((%r,%d)))' % (addr, port)])
        return r.returncode == 0

    def cleanup(self):
        for p in reversed(self.procs):
            stop_process(p)
        self.procs = []
        for ns in reversed(self.created):
            sh('ip', 'netns', 'del', ns, check=False)
        self.created = []


class Dnsmasq:
    """dnsmasq on 127.0.0.1:53 in the client namespace, answering only from
    its own records for the given domains (NXDOMAIN for other names there)."""

    def __init__(self, net, tmpdir, local_domains, records):
        self.net = net
        self.log_path = os.path.join(tmpdir, 'dnsmasq.log')
        args = ['dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null', '--no-resolv',
                '--no-hosts', '--listen-address=127.0.0.1', '--bind-interfaces', '--port=53',
                '--user=root', '--group=root', '--pid-file=', '--log-queries',
                '--log-facility=' + self.log_path]
        for d in local_domains:
            args.append('--local=/%s/' % d)
        args += records
        self.proc = net.popen(net.client, args, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        wait_for(lambda: self._ready(), what='dnsmasq')

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError('dnsmasq exited: ' + self.log_text())
        return 'started, version' in self.log_text()

    def log_text(self):
        try:
            with open(self.log_path, errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''


_ID_CHARS = string.digits + string.ascii_uppercase + string.ascii_lowercase


def new_queue_id():
    return ''.join(random.choice(_ID_CHARS) for _ in range(16))


def write_queue_file(path_dir, content, sender, rcpts, smtputf8=False, body_8bit=False,
                     ret=None, envid=None, queue_id=None):
    """Writes a queue file in postern-queue(5) format and returns its path.
    rcpts: addresses, or (address, notify, orcpt) tuples (notify like
    "SUCCESS,FAILURE" or "-", orcpt like "rfc822;a@b" or None)."""
    qid = queue_id or new_queue_id()
    if isinstance(content, str):
        content = content.encode()
    content = content.replace(b'\r\n', b'\n')
    env = ['id=' + qid, 'time=%d.000000' % int(time.time()), 'size=%d' % len(content),
           'sender=' + sender]
    if ret:
        env.append('ret=' + ret)
    if envid:
        env.append('envid=' + envid)
    env.append('body=' + ('8BITMIME' if body_8bit else '7BIT'))
    if smtputf8:
        env.append('smtputf8=yes')
    env += ['client_name=localhost', 'client_addr=127.0.0.1', 'protocol=ESMTP',
            'service=smtpd']
    for r in rcpts:
        if isinstance(r, str):
            r = (r, '-', None)
        addr, notify, orcpt = r
        env.append('rcpt=- %s %s %s' % (notify or '-', orcpt or '-', addr))
    env.append('end=')
    envelope = ('\n'.join(env) + '\n').encode()
    header = b'POSTERNQ %04d %016x %016x %08x' % (1, len(content), len(envelope), 0)
    header = header.ljust(63) + b'\n'
    path = os.path.join(path_dir, qid)
    with open(path, 'wb') as f:
        f.write(header + content + envelope)
    return path


def make_test_ca(tmpdir, names):
    """A test CA and, per name, a server certificate signed by it (made with
    the openssl command). Returns {'ca': path, NAME: (cert, key)}, plus an
    unrelated CA under 'other_ca'."""
    out = {}

    def ossl(*args):
        subprocess.run(['openssl'] + list(args), check=True, capture_output=True, cwd=tmpdir)

    for ca in ('ca', 'other_ca'):
        ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
             '-subj', '/CN=postern test %s' % ca, '-keyout', ca + '.key', '-out', ca + '.pem')
        out[ca] = os.path.join(tmpdir, ca + '.pem')
    for n in names:
        ossl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=' + n,
             '-keyout', n + '.key', '-out', n + '.csr')
        with open(os.path.join(tmpdir, n + '.ext'), 'w') as f:
            f.write('subjectAltName=DNS:%s\n' % n)
        ossl('x509', '-req', '-in', n + '.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
             '-CAcreateserial', '-days', '2', '-extfile', n + '.ext', '-out', n + '.pem')
        out[n] = (os.path.join(tmpdir, n + '.pem'), os.path.join(tmpdir, n + '.key'))
    return out


def tempdir(prefix):
    return tempfile.mkdtemp(prefix=prefix)
