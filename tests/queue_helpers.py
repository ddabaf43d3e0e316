"""Helpers for the queue tests: a private queue instance (configuration
directory, queue_directory, runtime directory), the built postern-qmgr under
systemd-socket-activate, the test delivery agent (src/qmgr/test-delivery-agent,
a real org.postern.Delivery1 server that records what it is given), a writer
of queue files in the postern-queue(5) format for bulk tests, and readers
of the daemon log and the agent's record."""
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from common import BUILD_DIR
from smtpd_helpers import parse_queue_file, wait_for

QMGR = os.path.join(BUILD_DIR, 'src', 'qmgr', 'postern-qmgr')
AGENT = os.path.join(BUILD_DIR, 'src', 'qmgr', 'test-delivery-agent')
PICKUP = os.path.join(BUILD_DIR, 'src', 'pickup', 'postern-pickup')
TOOLS = {
    'postqueue': os.path.join(BUILD_DIR, 'src', 'tools', 'postqueue', 'postqueue'),
    'postsuper': os.path.join(BUILD_DIR, 'src', 'tools', 'postsuper', 'postsuper'),
    'postcat': os.path.join(BUILD_DIR, 'src', 'tools', 'postcat', 'postcat'),
    'sendmail': os.path.join(BUILD_DIR, 'src', 'tools', 'sendmail', 'sendmail'),
    'postdrop': os.path.join(BUILD_DIR, 'src', 'tools', 'sendmail', 'postdrop'),
    'posternctl': os.path.join(BUILD_DIR, 'src', 'tools', 'posternctl', 'posternctl'),
}
QUEUE_DIRS = ('maildrop', 'incoming', 'active', 'deferred', 'hold', 'corrupt', 'defer')
OWN_MODULES = ('src/qmgr/', 'queue-file.c', 'queue-scan.c', 'src/pickup/', 'src/tools/post')

ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'


def b62(v, width):
    out = ''
    for _ in range(width):
        out = ALPHABET[v % 62] + out
        v //= 62
    return out


def new_queue_id(t=None):
    """A queue ID as queue-id.c makes them: time-sortable, 16 characters."""
    t = time.time() if t is None else t
    sec = int(t)
    usec = int((t - sec) * 1e6)
    return b62(sec, 6) + b62(usec, 4) + b62(random.getrandbits(35) % 62 ** 6, 6)


def format_queue_file(qid, sender, rcpts, content, arrival=None, flags=0):
    """Bytes of a queue file (postern-queue(5)). rcpts: addresses, or
    (status, address) pairs."""
    arrival = time.time() if arrival is None else arrival
    if isinstance(content, str):
        content = content.encode()
    env = 'id=%s\ntime=%d.%06d\nsize=%d\nsender=%s\nbody=7BIT\n' % (
        qid, int(arrival), int((arrival % 1) * 1e6), len(content), sender)
    for r in rcpts:
        status, addr = r if isinstance(r, tuple) else ('-', r)
        env += 'rcpt=%s - - %s\n' % (status, addr)
    env += 'end=\n'
    env = env.encode()
    header = ('POSTERNQ 0001 %016x %016x %08x' % (len(content), len(env), flags)).encode()
    header = header.ljust(63) + b'\n'
    return header + content + env


class QueueInstance:
    """A private queue: configuration, queue and runtime directories, the
    test agent and postern-qmgr. main_cf adds main.cf lines."""

    def __init__(self, main_cf='', confdir=None, tmp=None):
        self.own_tmp = tmp is None
        self.tmp = tmp or tempfile.mkdtemp(prefix='pq.', dir='/tmp')
        self.confdir = confdir or os.path.join(self.tmp, 'conf')
        self.queue = os.path.join(self.tmp, 'queue')
        self.runtime = os.path.join(self.tmp, 'run')
        os.makedirs(self.runtime, exist_ok=True)
        for d in QUEUE_DIRS:
            os.makedirs(os.path.join(self.queue, d), exist_ok=True)
        self.record = os.path.join(self.tmp, 'deliveries.txt')
        self.rules = os.path.join(self.tmp, 'rules.txt')
        self.qmgr_log = os.path.join(self.tmp, 'qmgr.log')
        self.agent_log = os.path.join(self.tmp, 'agent.log')
        self.qmgr = None
        self.agent = None
        self.qmgr_runs = []
        self.set_rules('')
        if confdir is None:
            os.makedirs(self.confdir, exist_ok=True)
            # Lines of main_cf replace the base lines of the same name.
            names = {l.split('=')[0].strip() for l in main_cf.splitlines() if '=' in l}
            base = [l for l in self.base_config().splitlines()
                    if l.split('=')[0].strip() not in names]
            with open(os.path.join(self.confdir, 'main.cf'), 'w') as f:
                f.write('\n'.join(base) + '\n' + main_cf)

    def base_config(self):
        return ('myhostname = mx.example.test\n'
                'mydomain = example.test\n'
                'myorigin = example.test\n'
                'mydestination = $myhostname, example.test, localhost\n'
                'relay_domains = relay.example.test\n'
                'queue_directory = %s\n'
                'minimal_backoff_time = 1s\n'
                'maximal_backoff_time = 2s\n'
                'queue_run_delay = 1s\n'
                'max_idle = 60s\n' % self.queue)

    def env(self):
        e = dict(os.environ)
        e['POSTERN_CONFIG_DIR'] = self.confdir
        e['POSTERN_RUNTIME_DIR'] = self.runtime
        e['POSTERN_LOG_TARGET'] = 'stderr'
        e['POSTERN_POSTDROP'] = TOOLS['postdrop']
        e['POSTERN_POSTQUEUE'] = TOOLS['postqueue']
        e.pop('LISTEN_FDS', None)
        return e

    def set_rules(self, text):
        tmp = self.rules + '.tmp'
        with open(tmp, 'w') as f:
            f.write(text)
        os.replace(tmp, self.rules)

    # --- processes --------------------------------------------------------

    def start_agent(self, *extra):
        self.agent_out = open(self.agent_log, 'a')
        paths = [os.path.join(self.runtime, n) for n in ('deliver-remote', 'deliver-local')]
        args = [AGENT, '--record', self.record, '--rules', self.rules] + list(extra)
        for p in paths:
            args += ['--listen', p]
        self.agent = subprocess.Popen(args, stdout=self.agent_out, stderr=subprocess.STDOUT,
                                      env=self.env())
        wait_for(lambda: all(os.path.exists(p) for p in paths), what='agent sockets')
        return self

    def start_qmgr(self, poke=True):
        """Starts postern-qmgr under systemd-socket-activate; it execs the
        daemon at the first connection, which poke makes."""
        self.qmgr_out = open(self.qmgr_log, 'a')
        sock = os.path.join(self.runtime, 'qmgr')
        if os.path.exists(sock):
            os.unlink(sock)
        self.qmgr = subprocess.Popen(
            ['systemd-socket-activate', '-l', sock,
             '-E', 'POSTERN_LOG_TARGET=stderr',
             '-E', 'POSTERN_RUNTIME_DIR=' + self.runtime,
             '-E', 'POSTERN_CONFIG_DIR=' + self.confdir,
             QMGR, '-c', self.confdir],
            stdout=self.qmgr_out, stderr=subprocess.STDOUT, env=self.env())
        self.qmgr_runs.append(self.qmgr)
        wait_for(lambda: os.path.exists(sock), what='qmgr socket')
        if poke:
            self.poke()
        return self

    def poke(self):
        """Connects to the queue manager socket, which starts the daemon."""
        sock = os.path.join(self.runtime, 'qmgr')

        def connect():
            # The path exists from bind(); connections work from listen().
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(sock)
                    return True
                except ConnectionRefusedError:
                    return False
        wait_for(connect, what='qmgr socket listening')
        wait_for(lambda: self.qmgr_pid_running(), what='qmgr exec')

    def qmgr_pid_running(self):
        try:
            with open('/proc/%d/cmdline' % self.qmgr.pid, 'rb') as f:
                return b'postern-qmgr' in f.read()
        except OSError:
            return False

    def kill_qmgr(self, sig=signal.SIGKILL):
        if self.qmgr and self.qmgr.poll() is None:
            os.kill(self.qmgr.pid, sig)
            self.qmgr.wait(timeout=30)

    def stop(self):
        for p in (self.qmgr, self.agent):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for f in ('qmgr_out', 'agent_out'):
            if getattr(self, f, None):
                getattr(self, f).close()

    def cleanup(self):
        self.stop()
        log = self.log_text()
        if self.own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        for marker in ('ERROR: AddressSanitizer', 'ERROR: LeakSanitizer'):
            assert marker not in log, log
        for line in log.splitlines():
            if 'runtime error:' in line:
                assert not any(m in line for m in OWN_MODULES), log

    # --- tools ------------------------------------------------------------

    def tool(self, name, *args, input=None, env=None):
        e = self.env()
        if env:
            e.update(env)
        return subprocess.run([TOOLS[name]] + list(args), input=input, capture_output=True,
                              text=True, env=e, timeout=120)

    def pickup(self):
        """Runs postern-pickup once, as postern-pickup.path would."""
        with open(self.qmgr_log, 'a') as out:
            return subprocess.run([PICKUP, '-c', self.confdir], stdout=out,
                                  stderr=subprocess.STDOUT, env=self.env(), timeout=60)

    # --- queue ------------------------------------------------------------

    def inject(self, sender, rcpts, content=None, sub='incoming', arrival=None, qid=None):
        """Writes a queue file directly (as smtpd would) and returns its ID."""
        qid = qid or new_queue_id(arrival)
        content = content or ('Received: by test\nSubject: test %s\n\nbody\n' % qid)
        data = format_queue_file(qid, sender, rcpts, content, arrival)
        d = os.path.join(self.queue, sub)
        tmp = os.path.join(d, '.' + qid)
        with open(tmp, 'wb') as f:
            f.write(data)
        os.rename(tmp, os.path.join(d, qid))
        return qid

    def files(self, sub):
        """Queue IDs in a queue (hashed subdirectories included)."""
        out = []
        top = os.path.join(self.queue, sub)
        for root, dirs, names in os.walk(top):
            out += [n for n in names if not n.startswith('.') and len(n) == 16]
        return sorted(out)

    def path_of(self, qid):
        for sub in ('incoming', 'active', 'deferred', 'hold', 'corrupt', 'maildrop'):
            for root, dirs, names in os.walk(os.path.join(self.queue, sub)):
                if qid in names:
                    return os.path.join(root, qid)
        return None

    def read(self, qid):
        p = self.path_of(qid)
        with open(p, 'rb') as f:
            return parse_queue_file(f.read())

    def queue_empty(self):
        return not any(self.files(s) for s in ('incoming', 'active', 'deferred'))

    # --- observations -----------------------------------------------------

    def log_text(self):
        try:
            with open(self.qmgr_log, errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def log_lines(self, text):
        return [l for l in self.log_text().splitlines() if text in l]

    def wait_log(self, text, timeout=20, count=1):
        return wait_for(lambda: len(self.log_lines(text)) >= count, timeout,
                        'log line %r x%d' % (text, count))

    def deliveries(self):
        """Agent records: list of dicts (id, rcpt, status, transport, nexthop, orig,
        call: the number of the Deliver call)."""
        try:
            with open(self.record) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for l in lines:
            p = l.split(' ')
            if len(p) >= 7:
                out.append(dict(id=p[0], rcpt=p[1], status=p[2], transport=p[3],
                                nexthop=p[4], orig=p[5], call=p[7] if len(p) > 7 else None))
        return out

    def wait_deliveries(self, pred, timeout=20, what='deliveries'):
        return wait_for(lambda: pred(self.deliveries()), timeout, what)
