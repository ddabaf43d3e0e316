#!/usr/bin/python3
"""idle-sessions.py: holds many concurrent idle SMTP sessions open against
postern-smtpd on loopback and reports how fast each was greeted and how much
memory the daemon used for them.

    bench/idle-sessions.py [--sessions N] [--batch N] [--workers N] [--build DIR]

Defaults: 10000 sessions opened in batches of 500 (a batch is connected
and greeted before the next starts, so the listen backlog is never the
limit), smtpd_worker_processes = 0 (one worker per CPU). The greeting
latency of a session is the time from its connect() to the complete "220 "
line; the max and the 99th percentile are reported. Memory is the PSS
(proportional set size, /proc/PID/smaps_rollup) summed over the supervisor
and its workers once every session is open, with RSS for reference. The
daemon runs under systemd-socket-activate with a private configuration and
queue directory, removed at the end. Raises RLIMIT_NOFILE for itself and the
daemon (needs root for more than the hard limit)."""
import argparse
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tree(pid):
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
            return [pid] + [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return [pid]


def memory_kib(pids):
    pss = rss = 0
    for p in pids:
        with open('/proc/%d/smaps_rollup' % p) as f:
            for line in f:
                k, v = line.split(':', 1)
                if k == 'Pss':
                    pss += int(v.split()[0])
                elif k == 'Rss':
                    rss += int(v.split()[0])
    return pss, rss


def greet_batch(n, port, keep):
    """Opens n connections at once; returns their greeting latencies."""
    sel = selectors.DefaultSelector()
    pending = {}
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        t0 = time.monotonic()
        s.connect_ex(('127.0.0.1', port))
        pending[s] = [t0, b'']
        sel.register(s, selectors.EVENT_READ)
    latencies = []
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                data = s.recv(512)
            except BlockingIOError:
                continue
            except OSError as e:
                raise SystemExit('connection failed: %s' % e)
            if not data:
                raise SystemExit('connection closed before the greeting')
            st = pending[s]
            st[1] += data
            if b'\r\n' in st[1]:
                assert st[1].startswith(b'220 '), st[1]
                latencies.append(time.monotonic() - st[0])
                sel.unregister(s)
                del pending[s]
                keep.append(s)
    if pending:
        raise SystemExit('%d sessions not greeted within 30 s' % len(pending))
    sel.close()
    return latencies


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sessions', type=int, default=10000)
    ap.add_argument('--batch', type=int, default=500)
    ap.add_argument('--workers', type=int, default=0)
    ap.add_argument('--build', default=os.environ.get('POSTERN_BUILD_DIR',
                                                      os.path.join(HERE, '..', 'build')))
    args = ap.parse_args()
    smtpd = os.path.join(args.build, 'src', 'smtpd', 'postern-smtpd')
    if not os.access(smtpd, os.X_OK):
        sys.exit('no %s: build first' % smtpd)

    want = args.sessions + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        hard = want
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, hard)), hard))

    tmp = tempfile.mkdtemp(prefix='postern-idle.', dir='/var/tmp')
    proc = None
    socks = []
    try:
        conf = os.path.join(tmp, 'conf')
        queue = os.path.join(tmp, 'queue')
        os.makedirs(os.path.join(conf, 'services.d'))
        for d in ('incoming', 'active', 'deferred', 'hold', 'corrupt', 'maildrop'):
            os.makedirs(os.path.join(queue, d))
        with open(os.path.join(conf, 'main.cf'), 'w') as f:
            f.write('myhostname = bench.example.test\nqueue_directory = %s\n'
                    'max_idle = 600s\nsmtpd_worker_processes = %d\n' % (queue, args.workers))
        port = free_port()
        log = open(os.path.join(tmp, 'smtpd.log'), 'w')
        proc = subprocess.Popen(
            ['systemd-socket-activate', '-l', '127.0.0.1:%d' % port, '--fdname=smtpd',
             '-E', 'POSTERN_LOG_TARGET=stderr', smtpd, '--service=smtpd', '-c', conf],
            stdout=log, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=5) as s:
                    s.recv(100)
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5)          # let the workers come up
        base_pss, _ = memory_kib(tree(proc.pid))

        latencies = []
        t0 = time.monotonic()
        while len(socks) < args.sessions:
            n = min(args.batch, args.sessions - len(socks))
            latencies += greet_batch(n, port, socks)
        elapsed = time.monotonic() - t0
        time.sleep(0.5)
        pids = tree(proc.pid)
        pss, rss = memory_kib(pids)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print('%d idle sessions (%d processes, batches of %d, opened in %.1f s): '
              'greeting latency max %.1f ms, p99 %.1f ms; PSS %.1f MiB (%.1f MiB before the '
              'sessions, %.1f KiB per session), RSS %.1f MiB'
              % (len(socks), len(pids), args.batch, elapsed, latencies[-1] * 1000, p99 * 1000,
                 pss / 1024, base_pss / 1024, (pss - base_pss) / len(socks), rss / 1024))
    finally:
        for s in socks:
            s.close()
        if proc:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
