"""Network namespaces and a DNS server for the restriction tests.

RestrictNet builds two namespaces joined by a veth pair:

  server  lo (127.0.0.1: dnsmasq on port 53, loopback clients), 198.51.100.1
          on the link; postern-smtpd runs here under systemd-socket-activate
  client  192.0.2.10 and 192.0.2.11 on the link: "external" clients outside
          mynetworks; also 192.0.2.12 to .14 (MORE_CLIENT_ADDRS)

Each side routes the other's /24 over the link. dnsmasq answers from its
own records only (--local for the test domains: NXDOMAIN for anything not
listed). Sockets are opened inside a namespace by a short-lived thread that
setns()es itself (network namespaces are per thread), so the tests use
ordinary socket and smtplib objects. Everything is stopped by PID and the
namespaces are deleted, even when a test fails."""
import ctypes
import os
import random
import shutil
import smtplib
import socket
import subprocess
import threading

from netns_helpers import sh, stop_process, wait_for

SERVER_ADDR = '198.51.100.1'
CLIENT_ADDRS = ['192.0.2.10', '192.0.2.11']
MORE_CLIENT_ADDRS = ['192.0.2.12', '192.0.2.13', '192.0.2.14']
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL('libc.so.6', use_errno=True)


def available():
    return os.geteuid() == 0 and shutil.which('ip') and os.path.exists('/usr/sbin/dnsmasq')


def in_netns(ns, func):
    """Runs func() on a thread inside network namespace ns and returns its
    result (exceptions are re-raised here)."""
    out = {}

    def run():
        try:
            fd = os.open('/run/netns/' + ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), 'setns')
            finally:
                os.close(fd)
            out['value'] = func()
        except BaseException as e:     # handed to the caller
            out['error'] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if 'error' in out:
        raise out['error']
    return out['value']


def connect(ns, addr, port, source=None, timeout=10):
    """A TCP socket connected from inside ns (optionally from source)."""
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect((addr, port))
        return s
    return in_netns(ns, make)


class NetnsSMTP(smtplib.SMTP):
    """smtplib.SMTP whose socket is made inside a namespace."""

    def __init__(self, ns, host, port, source=None, **kw):
        self._ns = ns
        self._source = source
        super().__init__(host, port, **kw)

    def _get_socket(self, host, port, timeout):
        return connect(self._ns, host, port, self._source, timeout or 10)


class RestrictNet:
    def __init__(self):
        tag = '%d%04d' % (os.getpid() % 100000, random.randrange(10000))
        self.server = 'prss' + tag
        self.client = 'prsc' + tag
        self.created = []
        self.procs = []
        try:
            for ns in (self.server, self.client):
                sh('ip', 'netns', 'add', ns)
                self.created.append(ns)
                sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
            va, vb = 'ra' + tag, 'rb' + tag
            sh('ip', 'link', 'add', va, 'netns', self.server, 'type', 'veth',
               'peer', 'name', vb, 'netns', self.client)
            sh('ip', '-n', self.server, 'addr', 'add', SERVER_ADDR + '/24', 'dev', va)
            sh('ip', '-n', self.server, 'link', 'set', va, 'up')
            sh('ip', '-n', self.server, 'route', 'add', '192.0.2.0/24', 'dev', va)
            for a in CLIENT_ADDRS + MORE_CLIENT_ADDRS:
                sh('ip', '-n', self.client, 'addr', 'add', a + '/24', 'dev', vb)
            sh('ip', '-n', self.client, 'link', 'set', vb, 'up')
            sh('ip', '-n', self.client, 'route', 'add', '198.51.100.0/24', 'dev', vb)
        except Exception:
            self.cleanup()
            raise

    def popen(self, ns, args, **kw):
        p = subprocess.Popen(['ip', 'netns', 'exec', ns] + list(args), **kw)
        self.procs.append(p)
        return p

    def cleanup(self):
        for p in reversed(self.procs):
            stop_process(p)
        self.procs = []
        for ns in reversed(self.created):
            sh('ip', 'netns', 'del', ns, check=False)
        self.created = []


class Dnsmasq:
    """dnsmasq on 127.0.0.1:53 in the server namespace."""

    def __init__(self, net, tmpdir, local_domains, records):
        self.log_path = os.path.join(tmpdir, 'dnsmasq.log')
        args = ['/usr/sbin/dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null',
                '--no-resolv', '--no-hosts', '--listen-address=127.0.0.1',
                '--bind-interfaces', '--port=53', '--user=root', '--group=root',
                '--pid-file=', '--log-queries', '--log-facility=' + self.log_path]
        args += ['--local=/%s/' % d for d in local_domains]
        args += records
        self.proc = net.popen(net.server, args, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        wait_for(self._ready, what='dnsmasq')

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
