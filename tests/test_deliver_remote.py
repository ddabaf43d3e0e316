"""Integration tests of postern-deliver-remote: org.postern.Delivery1 called
the way the queue manager calls it (test-deliver-client), with real peers.
postern-deliver-remote and dnsmasq run in a private network namespace; the
receiving servers (a second postern-smtpd, a scriptable SMTP server in
smtp_peer.py, Dovecot's LMTP) run in a second namespace behind a veth pair,
or on loopback for LMTP."""
import json
import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import time

import pytest

from common import BUILD_DIR, SRC_DIR
from test_man_examples import examples
from netns_helpers import (CLIENT_ADDR, Dnsmasq, Network, have_root_netns, make_test_ca,
                           stop_process, tempdir, wait_for, write_queue_file)

DELIVER = os.path.join(BUILD_DIR, 'src', 'deliver-remote', 'postern-deliver-remote')
CLIENT = os.path.join(BUILD_DIR, 'src', 'deliver-remote', 'test-deliver-client')
SMTPD = os.path.join(BUILD_DIR, 'src', 'smtpd', 'postern-smtpd')
POSTMAP = os.path.join(BUILD_DIR, 'src', 'tools', 'postmap', 'postmap')
HERE = os.path.dirname(os.path.abspath(__file__))
OWN_MODULES = ('src/deliver-remote/', 'dns.c', 'tls-client.c')

MX_ADDR = '198.51.100.10'       # postern-smtpd
CLOSED_ADDR = '198.51.100.11'   # nothing listens
PEER_ADDR = '198.51.100.12'     # smtp_peer.py
PEER2_ADDR = '198.51.100.13'    # a second smtp_peer.py
PEER3_ADDR = '198.51.100.14'    # a third one
SILENT_ADDR = '198.51.100.15'   # a listener that drops SYNs (full accept queue)
# IPv6: only ::1, the loopback of the deliverer's own namespace, where an
# IPv6 peer listens (the deliverer then sets inet_interfaces to its IPv4
# address, so that ::1 does not count as "myself").
V6_CF = 'inet_interfaces = %s\n' % CLIENT_ADDR

pytestmark = pytest.mark.skipif(
    not have_root_netns() or not shutil.which('dnsmasq') or not os.path.exists(DELIVER),
    reason='needs root, ip, dnsmasq and the built postern-deliver-remote')

DNS_RECORDS = [
    '--mx-host=example.net,mx.example.net,10',
    '--host-record=mx.example.net,' + MX_ADDR,
    '--mx-host=peer.example,mx.peer.example,10',
    '--host-record=mx.peer.example,' + PEER_ADDR,
    '--mx-host=pref.example,mx1.pref.example,10',
    '--mx-host=pref.example,mx2.pref.example,20',
    '--mx-host=pref.example,mx3.pref.example,30',
    '--host-record=mx1.pref.example,' + CLOSED_ADDR,
    '--host-record=mx2.pref.example,' + PEER_ADDR,
    '--host-record=mx3.pref.example,' + MX_ADDR,
    '--host-record=afallback.example,' + PEER_ADDR,
    # RFC 7505 null MX: preference 0, exchange "." (root).
    '--dns-rr=nullmx.example,15,000000',
    '--host-record=nullmx.example,' + PEER_ADDR,
    '--mx-host=loop.example,self.loop.example,10',
    '--host-record=self.loop.example,' + CLIENT_ADDR,
    '--mx-host=backup.example,self.backup.example,10',
    '--mx-host=backup.example,mx.peer.example,5',
    '--host-record=self.backup.example,' + CLIENT_ADDR,
    # Two MX hosts at the same preference, a worse one behind them.
    '--mx-host=equal.example,mxa.equal.example,10',
    '--mx-host=equal.example,mxb.equal.example,10',
    '--mx-host=equal.example,mxc.equal.example,20',
    '--host-record=mxa.equal.example,' + PEER_ADDR,
    '--host-record=mxb.equal.example,' + PEER2_ADDR,
    '--host-record=mxc.equal.example,' + PEER3_ADDR,
    # The best MX drops SYNs.
    '--mx-host=silent.example,mx1.silent.example,10',
    '--mx-host=silent.example,mx2.silent.example,20',
    '--host-record=mx1.silent.example,' + SILENT_ADDR,
    '--host-record=mx2.silent.example,' + PEER_ADDR,
    # IPv6: an MX with AAAA only, an MX with A and AAAA, and the same two
    # as domains without MX (the A/AAAA fallback).
    '--mx-host=v6only.example,mx.v6only.example,10',
    '--host-record=mx.v6only.example,::1',
    '--mx-host=dual.example,mx.dual.example,10',
    '--host-record=mx.dual.example,%s,::1' % PEER_ADDR,
    '--host-record=v6host.example,::1',
    '--host-record=dualhost.example,%s,::1' % PEER_ADDR,
    # Two IPv6-only MX hosts (addresses nothing answers on: no IPv6 route
    # but ::1) ahead of an IPv4 one, for smtp_balance_inet_protocols.
    '--mx-host=balance.example,mx1.balance.example,10',
    '--mx-host=balance.example,mx2.balance.example,20',
    '--mx-host=balance.example,mx3.balance.example,30',
    '--host-record=mx1.balance.example,2001:db8::1',
    '--host-record=mx2.balance.example,2001:db8::2',
    '--host-record=mx3.balance.example,' + PEER_ADDR,
]


@pytest.fixture(scope='module')
def world():
    net = Network()
    tmp = tempdir('postern-remote-world.')
    try:
        dns = Dnsmasq(net, tmp, ['example', 'example.net'], DNS_RECORDS)
        ca = make_test_ca(tmp, ['mx.peer.example', 'wrong.example'])
        yield {'net': net, 'dns': dns, 'ca': ca, 'tmp': tmp}
    finally:
        net.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def unix_connectable(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Deliverer:
    """postern-deliver-remote under systemd-socket-activate in the client
    namespace, with its own configuration and runtime directory."""

    def __init__(self, world, main_cf=''):
        self.world = world
        self.net = world['net']
        self.tmp = tempdir('postern-remote-test.')
        self.confdir = os.path.join(self.tmp, 'conf')
        self.queue = os.path.join(self.tmp, 'queue')
        self.socket = os.path.join(self.tmp, 'run', 'deliver-remote')
        self.log_path = os.path.join(self.tmp, 'deliver.log')
        os.makedirs(self.confdir)
        os.makedirs(os.path.join(self.tmp, 'run'))
        os.makedirs(os.path.join(self.queue, 'private'))
        os.makedirs(os.path.join(self.tmp, 'msgs'))
        with open(os.path.join(self.confdir, 'main.cf'), 'w') as f:
            f.write('myhostname = client.example.org\n'
                    'mydomain = example.org\n'
                    'queue_directory = %s\n'
                    'dns_resolver_servers = 127.0.0.1\n'
                    'inet_protocols = ipv4\n'
                    'smtp_tls_loglevel = 1\n'
                    'max_idle = 60s\n' % self.queue)
            f.write(main_cf)
        self.log = open(self.log_path, 'w')
        self.proc = self.net.popen(
            self.net.client,
            ['systemd-socket-activate', '-l', self.socket,
             '-E', 'POSTERN_LOG_TARGET=stderr', '-E', 'ASAN_OPTIONS', '-E', 'UBSAN_OPTIONS',
             DELIVER, '-c', self.confdir],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: unix_connectable(self.socket), what='deliver-remote socket')

    def message(self, rcpts, content=None, sender='sender@example.org', **kw):
        if content is None:
            content = ('Received: from client.example.org by client.example.org\n'
                       'From: sender@example.org\nTo: %s\nSubject: test\n'
                       'Message-ID: <%f@example.org>\n\nHello.\n' % (rcpts[0] if isinstance(rcpts[0], str) else rcpts[0][0], time.time()))
        return write_queue_file(os.path.join(self.tmp, 'msgs'), content, sender, rcpts, **kw)

    def deliver(self, qfile, transport='smtp', nexthop='', extra=()):
        r = subprocess.run([CLIENT, self.socket, qfile, transport, nexthop] + list(extra),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr + self.log_text()
        results = {}
        relay = None
        for line in r.stdout.splitlines():
            if line.startswith('relay='):
                relay = line[6:]
                continue
            if line.startswith('setup_usec='):
                self.setup_usec = int(line[11:])
                continue
            if line.startswith('tls='):
                # "PROTOCOL CIPHER TRUST" of the relay's connection, or empty.
                self.tls = line[4:]
                continue
            idx, status, dsn, diag = line.split(' ', 3)
            results[int(idx)] = (status, dsn, diag)
        return results, relay

    def log_text(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def cleanup(self):
        stop_process(self.proc)
        self.log.close()
        log = self.log_text()
        shutil.rmtree(self.tmp, ignore_errors=True)
        for marker in ('ERROR: AddressSanitizer', 'ERROR: LeakSanitizer'):
            assert marker not in log, log
        for line in log.splitlines():
            if 'runtime error:' in line:
                assert not any(m in line for m in OWN_MODULES), log


class SmtpPeer:
    """smtp_peer.py in the peer namespace."""

    def __init__(self, world, addr=PEER_ADDR, port=25, ns=None, **cfg):
        self.net = world['net']
        self.tmp = tempdir('postern-peer.')
        self.log_path = os.path.join(self.tmp, 'peer.jsonl')
        cfg['listen'] = [addr, port]
        cfg['log'] = self.log_path
        path = os.path.join(self.tmp, 'peer.json')
        with open(path, 'w') as f:
            json.dump(cfg, f)
        self.stderr = open(os.path.join(self.tmp, 'stderr'), 'w')
        self.proc = self.net.popen(ns or self.net.peer,
                                   ['python3', os.path.join(HERE, 'smtp_peer.py'), path],
                                   stdout=self.stderr, stderr=subprocess.STDOUT)
        wait_for(lambda: any(e['ev'] == 'listening' for e in self.events()), what='smtp peer')

    def events(self, kind=None):
        try:
            with open(self.log_path) as f:
                evs = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []
        return [e for e in evs if kind is None or e['ev'] == kind]

    def cleanup(self):
        stop_process(self.proc)
        self.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def make(world):
    made = []

    def deliverer(main_cf=''):
        d = Deliverer(world, main_cf)
        made.append(d)
        return d

    def peer(**kw):
        p = SmtpPeer(world, **kw)
        made.append(p)
        return p

    yield deliverer, peer
    errors = []
    for m in reversed(made):
        try:
            m.cleanup()
        except AssertionError as e:
            errors.append(e)
    if errors:
        raise errors[0]


# ---------------------------------------------------------------------------
# MX resolution and basic results


@pytest.fixture
def smtpd_mx(world):
    """A second postern-smtpd as the MX of example.net."""
    if not os.path.exists(SMTPD):
        pytest.skip('postern-smtpd not built')
    net = world['net']
    tmp = tempdir('postern-mx.')
    queue = os.path.join(tmp, 'queue')
    for d in ('incoming', 'active', 'deferred', 'hold', 'corrupt', 'maildrop'):
        os.makedirs(os.path.join(queue, d))
    os.makedirs(os.path.join(tmp, 'conf'))
    with open(os.path.join(tmp, 'conf', 'main.cf'), 'w') as f:
        f.write('myhostname = mx.example.net\nmydomain = example.net\n'
                'mydestination = example.net\nqueue_directory = %s\n'
                # Any local user: recipient validation is not under test.
                'local_recipient_maps =\n'
                'smtpd_error_sleep_time = 0\nmax_idle = 60s\n' % queue)
    log = open(os.path.join(tmp, 'smtpd.log'), 'w')
    proc = net.popen(net.peer, ['systemd-socket-activate', '-l', MX_ADDR + ':25',
                                '--fdname=smtpd', '-E', 'POSTERN_LOG_TARGET=stderr',
                                '-E', 'POSTERN_QMGR_SOCKET=' + os.path.join(tmp, 'qmgr'),
                                '-E', 'POSTERN_RUNTIME_DIR=' + tmp,
                                SMTPD, '--service=smtpd', '-c', os.path.join(tmp, 'conf')],
                     stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: net.port_open(net.peer, MX_ADDR, 25), what='postern-smtpd')
        yield queue
    finally:
        stop_process(proc)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_relay_through_mx_to_postern_smtpd(make, smtpd_mx):
    deliverer, _ = make
    d = deliverer()
    q = d.message(['alice@example.net', 'bob@example.net'])
    results, relay = d.deliver(q)
    assert relay == 'mx.example.net[%s]:25' % MX_ADDR
    assert results[0][0] == 'sent' and results[1][0] == 'sent', results
    assert results[0][1] == '2.0.0'
    assert 'queued as' in results[0][2]
    files = wait_for(lambda: [n for n in os.listdir(os.path.join(smtpd_mx, 'incoming'))
                              if not n.startswith('.')], what='queue file at the MX')
    with open(os.path.join(smtpd_mx, 'incoming', files[0]), 'rb') as f:
        data = f.read()
    assert b'rcpt=- - - alice@example.net' in data or b'alice@example.net' in data
    assert b'Subject: test' in data


def test_mx_preference_order(make):
    deliverer, peer = make
    p = peer()
    d = deliverer()
    # mx1 (preference 10) refuses connections, mx2 (20) takes the mail, mx3
    # (30) is never tried.
    results, relay = d.deliver(d.message(['u@pref.example']))
    assert results[0][0] == 'relayed', results
    assert relay == 'mx2.pref.example[%s]:25' % PEER_ADDR
    assert 'connect to mx1.pref.example[%s]:25: Connection refused' % CLOSED_ADDR in d.log_text()
    assert len(p.events('message')) == 1


def test_equal_preference_mx_hosts_share_the_load(make):
    """RFC 5321 5.1: MX hosts of equal preference are tried in random
    order, so that fresh connections reach both; the preference-20 host is
    never tried while one at 10 answers. Both at 10 stay unused with
    probability 2 * 2**-40 (below 1e-11)."""
    deliverer, peer = make
    pa, pb, pc = peer(), peer(addr=PEER2_ADDR), peer(addr=PEER3_ADDR)
    d = deliverer('smtp_connection_cache_time_limit = 0s\n')
    relays = set()
    for _ in range(40):
        results, relay = d.deliver(d.message(['u@equal.example']))
        assert results[0][0] == 'relayed', results
        relays.add(relay)
    assert relays == {'mxa.equal.example[%s]:25' % PEER_ADDR,
                      'mxb.equal.example[%s]:25' % PEER2_ADDR}, relays
    na, nb = len(pa.events('message')), len(pb.events('message'))
    assert na + nb == 40 and na > 0 and nb > 0, (na, nb)
    assert pc.events('connect') == []


SILENT_LISTENER = r"""
import socket, sys, time
# listen(0) takes one connection into the accept queue; with it full the
# kernel drops further SYNs, as a firewall that drops packets does.
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 25))
srv.listen(0)
filler = socket.create_connection((sys.argv[1], 25), timeout=5)
probe = socket.socket()
probe.settimeout(1.5)
try:
    probe.connect((sys.argv[1], 25))
    print('not full', flush=True)
except OSError:
    print('full', flush=True)
time.sleep(600)
"""


@pytest.fixture
def silent_mx(world):
    net = world['net']
    proc = net.popen(net.peer, ['python3', '-c', SILENT_LISTENER, SILENT_ADDR],
                     stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'full'
        yield SILENT_ADDR
    finally:
        stop_process(proc)


def test_connect_timeout_falls_through_to_next_mx(make, silent_mx):
    deliverer, peer = make
    p = peer()
    d = deliverer('smtp_connect_timeout = 2s\n')
    t = time.monotonic()
    results, relay = d.deliver(d.message(['u@silent.example']))
    took = time.monotonic() - t
    assert results[0][0] == 'relayed', results
    assert relay == 'mx2.silent.example[%s]:25' % PEER_ADDR
    assert 1.8 < took < 10, took
    assert ('connect to mx1.silent.example[%s]:25: Connection timed out' % SILENT_ADDR
            in d.log_text()), d.log_text()
    assert len(p.events('message')) == 1


def test_connect_timeout_defers(make, silent_mx):
    deliverer, _ = make
    d = deliverer('smtp_connect_timeout = 2s\nsmtp_mx_address_limit = 1\n')
    results, _ = d.deliver(d.message(['u@silent.example']))
    assert results[0] == ('deferred', '4.4.1', 'connect to mx1.silent.example[%s]:25: '
                          'Connection timed out' % SILENT_ADDR), results


def dns_queries(world, name, since=0):
    """The address record types dnsmasq was asked for name, in its log
    from the offset since on."""
    types = [l.split('query[')[1].split(']')[0]
             for l in world['dns'].log_text()[since:].splitlines()
             if 'query[' in l and l.endswith(' %s from 127.0.0.1' % name)]
    return [t for t in types if t in ('A', 'AAAA')]


def test_ipv4_only_never_uses_ipv6(make, world):
    """inet_protocols = ipv4: no AAAA lookups, no IPv6 connections. An MX
    host with only an AAAA record has no address: with none left, the
    recipient bounces as in Postfix (smtp_defer_if_no_mx_address_found =
    no), and the A/AAAA fallback of a domain without MX finds nothing
    either."""
    deliverer, peer = make
    p4, p6 = peer(), peer(addr='::1', ns=world['net'].client)
    d = deliverer(V6_CF + 'inet_protocols = ipv4\n')
    since = len(world['dns'].log_text())
    results, _ = d.deliver(d.message(['u@v6only.example']))
    assert results[0] == ('bounced', '5.4.4', 'Host or domain name not found. Name service '
                          'error for name=mx.v6only.example type=A: Host not found'), results
    results, _ = d.deliver(d.message(['u@v6host.example']))
    assert results[0][:2] == ('bounced', '5.4.4'), results
    for dom in ('dual.example', 'dualhost.example'):
        results, relay = d.deliver(d.message(['u@' + dom]))
        assert results[0][0] == 'relayed', results
        assert relay.endswith('[%s]:25' % PEER_ADDR), relay
    assert p6.events('connect') == []
    assert len(p4.events('message')) == 2
    for name in ('mx.v6only.example', 'v6host.example', 'mx.dual.example'):
        assert dns_queries(world, name, since) == ['A'], world['dns'].log_text()


def test_ipv6_only_uses_aaaa(make, world):
    deliverer, peer = make
    p4, p6 = peer(), peer(addr='::1', ns=world['net'].client)
    d = deliverer(V6_CF + 'inet_protocols = ipv6\n')
    since = len(world['dns'].log_text())
    results, relay = d.deliver(d.message(['u@dual.example']))
    assert results[0][0] == 'relayed', results
    assert relay == 'mx.dual.example[::1]:25'
    # The A/AAAA fallback without MX, for a host with AAAA only.
    results, relay = d.deliver(d.message(['u@v6host.example']))
    assert results[0][0] == 'relayed', results
    assert relay == 'v6host.example[::1]:25'
    # A host with only an A record has no address for IPv6.
    results, _ = d.deliver(d.message(['u@peer.example']))
    assert results[0][:2] == ('bounced', '5.4.4'), results
    assert 'type=AAAA' in results[0][2], results
    assert p4.events('connect') == []
    assert len(p6.events('message')) == 2
    assert dns_queries(world, 'mx.dual.example', since) == ['AAAA'], world['dns'].log_text()


def test_ipv4_and_ipv6_in_random_order(make, world):
    """inet_protocols = all: the addresses of a host with A and AAAA are
    tried in random order (Postfix's smtp_address_preference = any), so
    fresh connections reach both; with the IPv6 server gone IPv4 takes
    the mail. Both families are used with probability 1 - 2 * 2**-40."""
    deliverer, peer = make
    p4, p6 = peer(), peer(addr='::1', ns=world['net'].client)
    d = deliverer(V6_CF + 'inet_protocols = all\nsmtp_connection_cache_time_limit = 0s\n')
    relays = set()
    for i in range(40):
        results, relay = d.deliver(d.message(['u@%s' % ('dual.example' if i % 2
                                                         else 'dualhost.example')]))
        assert results[0][0] == 'relayed', results
        relays.add(relay.split('[')[1])
    assert relays == {'::1]:25', PEER_ADDR + ']:25'}, relays
    assert len(p4.events('message')) + len(p6.events('message')) == 40
    p6.cleanup()
    for _ in range(5):
        results, relay = d.deliver(d.message(['u@dual.example']))
        assert results[0][0] == 'relayed', results
        assert relay == 'mx.dual.example[%s]:25' % PEER_ADDR


@pytest.mark.parametrize('preference,want', [('ipv4', PEER_ADDR), ('ipv6', '::1')])
def test_address_preference(make, world, preference, want):
    """smtp_address_preference: the preferred family is tried first when a
    host has both (with any, test_ipv4_and_ipv6_in_random_order); when its
    server is gone, the other family takes the mail."""
    deliverer, peer = make
    p4, p6 = peer(), peer(addr='::1', ns=world['net'].client)
    d = deliverer(V6_CF + 'inet_protocols = all\nsmtp_connection_cache_time_limit = 0s\n'
                  'smtp_address_preference = %s\n' % preference)
    for i in range(10):
        results, relay = d.deliver(d.message(['u@%s' % ('dual.example' if i % 2
                                                         else 'dualhost.example')]))
        assert results[0][0] == 'relayed', results
        assert relay.split('[')[1] == want + ']:25', relay
    (p6 if want == '::1' else p4).cleanup()
    results, relay = d.deliver(d.message(['u@dual.example']))
    assert results[0][0] == 'relayed', results
    assert relay.split('[')[1] == ('::1' if want == PEER_ADDR else PEER_ADDR) + ']:25', relay


@pytest.mark.parametrize('balance', ['yes', 'no'])
def test_balance_inet_protocols(make, balance):
    """balance.example has two IPv6-only MX hosts ahead of an IPv4 one.
    With smtp_mx_address_limit = 2, smtp_balance_inet_protocols = yes keeps
    an IPv4 address within the limit, and the mail goes out over IPv4; with
    no, the two IPv6 addresses use up the limit and the mail is deferred."""
    deliverer, peer = make
    p = peer()
    d = deliverer(V6_CF + 'inet_protocols = all\nsmtp_mx_address_limit = 2\n'
                  'smtp_balance_inet_protocols = %s\n' % balance)
    results, relay = d.deliver(d.message(['u@balance.example']))
    log = d.log_text()
    assert 'mx1.balance.example[2001:db8::1]:25' in log, log
    if balance == 'yes':
        assert results[0][0] == 'relayed', results
        assert relay == 'mx3.balance.example[%s]:25' % PEER_ADDR
        assert 'mx2.balance.example' not in log, log
    else:
        assert results[0][:2] == ('deferred', '4.4.1'), results
        assert 'mx2.balance.example[2001:db8::2]:25' in results[0][2], results
        assert p.events('connect') == []


def test_all_mx_down_defers(make):
    deliverer, _ = make
    d = deliverer('smtp_mx_address_limit = 1\n')
    results, _ = d.deliver(d.message(['u@pref.example']))
    assert results[0][:2] == ('deferred', '4.4.1'), results
    assert results[0][2] == 'connect to mx1.pref.example[%s]:25: Connection refused' % CLOSED_ADDR


def test_a_record_fallback(make):
    deliverer, peer = make
    p = peer()
    d = deliverer()
    results, relay = d.deliver(d.message(['u@afallback.example']))
    assert results[0][0] == 'relayed', results
    assert relay == 'afallback.example[%s]:25' % PEER_ADDR
    assert p.events('message')[0]['rcpts'] == ['RCPT TO:<u@afallback.example>']


def test_null_mx_bounces(make):
    deliverer, peer = make
    p = peer()
    d = deliverer()
    results, _ = d.deliver(d.message(['u@nullmx.example']))
    assert results[0] == ('bounced', '5.1.10',
                          'Domain nullmx.example does not accept mail (nullMX)'), results
    assert p.events('connect') == []


def test_nxdomain_bounces(make):
    deliverer, _ = make
    d = deliverer()
    results, _ = d.deliver(d.message(['u@nosuch.example']))
    assert results[0][:2] == ('bounced', '5.4.4'), results
    assert 'name=nosuch.example type=MX: Host not found' in results[0][2]


def test_mx_loops_back_to_myself(make):
    deliverer, _ = make
    d = deliverer()
    results, _ = d.deliver(d.message(['u@loop.example']))
    assert results[0] == ('bounced', '5.4.6', 'mail for loop.example loops back to myself'), results


def test_mx_below_myself_is_used(make):
    deliverer, peer = make
    p = peer()
    d = deliverer()
    # backup.example: preference 5 is mx.peer.example, 10 is this host.
    results, relay = d.deliver(d.message(['u@backup.example']))
    assert results[0][0] == 'relayed', results
    assert relay.startswith('mx.peer.example[')


def test_bracketed_nexthop_skips_mx(make):
    deliverer, peer = make
    p = peer(port=2525)
    d = deliverer()
    # loop.example would loop through its MX; the explicit next hop wins.
    results, relay = d.deliver(d.message(['u@loop.example']), nexthop='[%s]:2525' % PEER_ADDR)
    assert results[0][0] == 'relayed', results
    assert relay == '%s[%s]:2525' % (PEER_ADDR, PEER_ADDR)
    assert len(p.events('message')) == 1


def test_relayhost(make):
    deliverer, peer = make
    p = peer(port=2526)
    d = deliverer('relayhost = [mx.peer.example]:2526\n')
    results, relay = d.deliver(d.message(['u@nosuch.example']))
    assert results[0][0] == 'relayed', results
    assert relay == 'mx.peer.example[%s]:2526' % PEER_ADDR


# ---------------------------------------------------------------------------
# Replies: 2xx, 4xx, 5xx, timeouts


def test_per_recipient_replies(make):
    deliverer, peer = make
    peer(replies={
        'RCPT:bad@peer.example': '550 5.1.1 <bad@peer.example>: Recipient address rejected: '
                                 'User unknown',
        'RCPT:busy@peer.example': '450 4.2.0 <busy@peer.example>: Mailbox busy',
    })
    d = deliverer()
    results, relay = d.deliver(d.message(['good@peer.example', 'bad@peer.example',
                                          'busy@peer.example']))
    assert results[0][:2] == ('relayed', '2.0.0'), results
    assert results[1] == ('bounced', '5.1.1',
                          'host mx.peer.example[%s] said: 550 5.1.1 <bad@peer.example>: '
                          'Recipient address rejected: User unknown (in reply to RCPT TO '
                          'command)' % PEER_ADDR)
    assert results[2][0:2] == ('deferred', '4.2.0')
    assert results[2][2].endswith('Mailbox busy (in reply to RCPT TO command)')
    assert relay == 'mx.peer.example[%s]:25' % PEER_ADDR


def test_mail_from_rejected(make):
    deliverer, peer = make
    peer(replies={'MAIL': '553 5.7.1 <sender@example.org>: Sender address rejected'})
    d = deliverer()
    results, _ = d.deliver(d.message(['a@peer.example', 'b@peer.example']))
    for i in (0, 1):
        assert results[i][:2] == ('bounced', '5.7.1'), results
        assert results[i][2].endswith('(in reply to MAIL FROM command)')


def test_data_rejections(make):
    deliverer, peer = make
    peer(replies={'DOT': '451 4.3.0 Error: queue file write error'})
    d = deliverer()
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0] == ('deferred', '4.3.0',
                          'host mx.peer.example[%s] said: 451 4.3.0 Error: queue file write '
                          'error (in reply to end of DATA command)' % PEER_ADDR), results


def test_data_5xx_bounces(make):
    deliverer, peer = make
    peer(replies={'DOT': '554 5.7.1 Message rejected as spam'})
    d = deliverer()
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][:2] == ('bounced', '5.7.1'), results


def test_greeting_timeout_defers(make):
    deliverer, peer = make
    peer(delays={'greeting': 5})
    d = deliverer('smtp_helo_timeout = 1s\n')
    t = time.monotonic()
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert time.monotonic() - t < 4.5
    assert results[0] == ('deferred', '4.4.2',
                          'conversation with mx.peer.example[%s] timed out while receiving the '
                          'initial server greeting' % PEER_ADDR), results



def test_connection_setup_time_is_reported(make):
    """The reply carries the time until the session was ready for MAIL
    FROM (greeting and EHLO included, the DATA phase not), which the queue
    manager logs as the c of delays=a/b/c/d."""
    deliverer, peer = make
    peer(delays={'greeting': 0.4, 'DOT': 0.6})
    d = deliverer()
    t = time.monotonic()
    results, _ = d.deliver(d.message(['a@peer.example']))
    total = time.monotonic() - t
    assert results[0][0] == 'relayed', results
    assert 400000 <= d.setup_usec < 1000000 * (total - 0.5), (d.setup_usec, total)

def test_data_done_timeout_defers(make):
    deliverer, peer = make
    peer(delays={'DOT': 5})
    d = deliverer('smtp_data_done_timeout = 1s\n')
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][:2] == ('deferred', '4.4.2'), results
    assert 'timed out while sending end of data' in results[0][2]


def test_helo_fallback(make):
    deliverer, peer = make
    p = peer(ehlo_reply='502 5.5.2 Error: command not recognized')
    d = deliverer()
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    cmds = [e['line'] for e in p.events('cmd')]
    assert cmds[0] == 'EHLO client.example.org' and cmds[1] == 'HELO client.example.org'


def test_pipelining_and_dsn_passthrough(make):
    deliverer, peer = make
    p = peer(extensions=['PIPELINING', 'SIZE 10000000', '8BITMIME', 'DSN'])
    d = deliverer()
    q = d.message([('a@peer.example', 'SUCCESS,FAILURE', 'rfc822;orig+2Ba@peer.example'),
                   ('b@peer.example', 'NEVER', None)], ret='HDRS', envid='ENV+2B1')
    results, _ = d.deliver(q)
    assert results[0][0] == 'sent' and results[1][0] == 'sent', results
    cmds = [e['line'] for e in p.events('cmd')]
    mail = [c for c in cmds if c.startswith('MAIL')][0]
    assert mail.startswith('MAIL FROM:<sender@example.org> SIZE=')
    assert 'RET=HDRS' in mail and 'ENVID=ENV+2B1' in mail
    assert 'RCPT TO:<a@peer.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Ba@peer.example' in cmds
    assert 'RCPT TO:<b@peer.example> NOTIFY=NEVER' in cmds


def test_message_over_the_servers_size_limit_bounces(make):
    """A server that announces SIZE 1000 does not get a larger message: it
    bounces 5.3.4 before MAIL, as Postfix does; the SIZE= parameter is the
    content size."""
    deliverer, peer = make
    p = peer(extensions=['PIPELINING', 'SIZE 1000', '8BITMIME'])
    d = deliverer()
    big = 'Subject: big\n\n' + 'x' * 70 + '\n'
    results, _ = d.deliver(d.message(['a@peer.example'], content=big * 30))
    assert results[0][:2] == ('bounced', '5.3.4'), results
    assert results[0][2].startswith('message size ') and results[0][2].endswith(
        ' exceeds size limit 1000 of server mx.peer.example[%s]' % PEER_ADDR), results
    assert not [e for e in p.events('cmd') if e['line'].startswith('MAIL')]
    results, _ = d.deliver(d.message(['a@peer.example'], content=big))
    assert results[0][0] == 'relayed', results
    mail = [e['line'] for e in p.events('cmd') if e['line'].startswith('MAIL')]
    assert len(mail) == 1 and mail[0].endswith(' SIZE=%d' % len(big)), mail


def test_no_dsn_parameters_without_dsn(make):
    deliverer, peer = make
    p = peer(extensions=['PIPELINING'])
    d = deliverer()
    results, _ = d.deliver(d.message([('a@peer.example', 'SUCCESS', 'rfc822;a@peer.example')],
                                     ret='FULL'))
    assert results[0][0] == 'relayed'
    cmds = [e['line'] for e in p.events('cmd')]
    assert 'MAIL FROM:<sender@example.org>' in cmds and 'RCPT TO:<a@peer.example>' in cmds


@pytest.mark.parametrize('extensions,status', [
    (['PIPELINING', '8BITMIME'], 'relayed'),
    (['PIPELINING', '8BITMIME', 'DSN'], 'sent'),
])
def test_relayed_unless_peer_has_dsn(make, extensions, status):
    """RFC 3461 5.2.2: a peer without DSN cannot take NOTIFY, so the
    delivery is "relayed" (the queue manager then owes the success notice);
    a peer with DSN is given NOTIFY and the delivery is "sent"."""
    deliverer, peer = make
    peer(extensions=extensions)
    d = deliverer()
    results, _ = d.deliver(d.message([('a@peer.example', 'SUCCESS', None),
                                      ('b@peer.example', None, None)]))
    assert results[0][:2] == (status, '2.0.0'), results
    assert results[1][:2] == (status, '2.0.0'), results


def test_hopcount_limit_bounces(make):
    deliverer, peer = make
    p = peer()
    d = deliverer('hopcount_limit = 5\n')
    content = 'Received: from a by b\n' * 5 + 'Subject: loop\n\nbody\n'
    results, _ = d.deliver(d.message(['a@peer.example'], content=content))
    assert results[0][:2] == ('bounced', '5.4.6'), results
    assert 'mail forwarding loop' in results[0][2]
    assert p.events('connect') == []
    content = 'Received: from a by b\n' * 4 + 'Subject: fine\n\nbody\n'
    results, _ = d.deliver(d.message(['a@peer.example'], content=content))
    assert results[0][0] == 'relayed', results


def test_connection_reuse(make):
    deliverer, peer = make
    p = peer()
    d = deliverer('smtp_connection_cache_time_limit = 5s\n')
    r1, _ = d.deliver(d.message(['a@peer.example']))
    r2, _ = d.deliver(d.message(['b@peer.example']))
    assert r1[0][0] == 'relayed' and r2[0][0] == 'relayed', (r1, r2)
    assert len(p.events('connect')) == 1
    assert len(p.events('message')) == 2
    assert 'RSET' in [e['line'] for e in p.events('cmd')]
    # After the cache time the connection is closed with QUIT.
    wait_for(lambda: p.events('close'), timeout=10, what='cached connection closed')
    assert [e['line'] for e in p.events('cmd')][-1] == 'QUIT'


def test_reused_connection_pipelines_rset(make):
    """With PIPELINING the RSET that tests a cached connection goes out
    with MAIL, RCPT and DATA in one group: the peer has them all even when
    it refuses the RSET, and the message then goes out on a new
    connection."""
    deliverer, peer = make
    p = peer(extensions=['PIPELINING'], replies={'RSET': '421 4.3.2 going away'})
    d = deliverer('smtp_connection_cache_time_limit = 5s\n')
    r1, _ = d.deliver(d.message(['a@peer.example']))
    r2, _ = d.deliver(d.message(['b@peer.example']))
    assert r1[0][0] == 'relayed' and r2[0][0] == 'relayed', (r1, r2)
    wait_for(lambda: len(p.events('connect')) == 2 and len(p.events('message')) == 2,
             what='second message on a new connection')
    first = [e['line'] for e in p.events('cmd') if e['conn'] == 1]
    i = first.index('RSET')
    # MAIL and RCPT reached the peer although it refused the RSET: they
    # went out with it, not after its reply. (The peer hangs up after its
    # 421, so whether it still reads the DATA in the same group is a race.)
    assert [c.split(':')[0] for c in first[i:i + 3]] == ['RSET', 'MAIL FROM', 'RCPT TO'], first
    assert [e['conn'] for e in p.events('message')] == [1, 2]


def test_no_reuse_when_disabled(make):
    deliverer, peer = make
    p = peer()
    d = deliverer('smtp_connection_cache_time_limit = 0s\n')
    d.deliver(d.message(['a@peer.example']))
    d.deliver(d.message(['b@peer.example']))
    assert len(p.events('connect')) == 2


# ---------------------------------------------------------------------------
# 8BITMIME and SMTPUTF8

EIGHTBIT = ('From: sender@example.org\nSubject: caf\u00e9\nContent-Type: text/plain; '
            'charset=utf-8\nContent-Transfer-Encoding: 8bit\n\ncaf\u00e9 cr\u00e8me\n')


def test_8bit_downgraded_to_quoted_printable(make):
    deliverer, peer = make
    p = peer(extensions=['PIPELINING'])
    d = deliverer()
    content = EIGHTBIT.replace('Subject: caf\u00e9', 'Subject: cafe')
    results, _ = d.deliver(d.message(['a@peer.example'], content=content, body_8bit=True))
    assert results[0][0] == 'relayed', results
    msg = p.events('message')[0]
    assert not msg['eight_bit']
    assert 'Content-Transfer-Encoding: quoted-printable' in msg['data']
    assert 'caf=C3=A9 cr=C3=A8me' in msg['data']
    assert 'BODY=8BITMIME' not in msg['from']


def test_8bit_sent_as_is_with_8bitmime(make):
    deliverer, peer = make
    p = peer(extensions=['PIPELINING', '8BITMIME'])
    d = deliverer()
    results, _ = d.deliver(d.message(['a@peer.example'], content=EIGHTBIT, body_8bit=True))
    assert results[0][0] == 'relayed', results
    msg = p.events('message')[0]
    assert msg['eight_bit'] and 'BODY=8BITMIME' in msg['from']


def test_8bit_multipart_without_8bitmime_bounces(make):
    deliverer, peer = make
    peer(extensions=['PIPELINING'])
    d = deliverer()
    content = ('MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n'
               'Content-Type: text/plain\n\ncaf\u00e9\n--b--\n')
    results, _ = d.deliver(d.message(['a@peer.example'], content=content, body_8bit=True))
    assert results[0][:2] == ('bounced', '5.6.3'), results


def test_smtputf8_required_but_missing(make):
    deliverer, peer = make
    peer(extensions=['PIPELINING', '8BITMIME'])
    d = deliverer()
    results, _ = d.deliver(d.message(['j\u00f6rg@peer.example'], smtputf8=True,
                                     content='Subject: x\n\nhi\n'))
    assert results[0] == ('bounced', '5.6.7', 'SMTPUTF8 is required, but was not offered by host '
                          'mx.peer.example[%s]' % PEER_ADDR), results


def test_smtputf8_passed_on(make):
    deliverer, peer = make
    p = peer(extensions=['PIPELINING', '8BITMIME', 'SMTPUTF8'])
    d = deliverer()
    results, _ = d.deliver(d.message(['j\u00f6rg@peer.example'], smtputf8=True,
                                     content='Subject: x\n\nhi\n'))
    assert results[0][0] == 'relayed', results
    assert 'SMTPUTF8' in p.events('message')[0]['from']


# ---------------------------------------------------------------------------
# TLS


def tls_cf(world, level, ca='ca'):
    return ('smtp_tls_security_level = %s\nsmtp_tls_CAfile = %s\n' % (level, world['ca'][ca]))


def test_tls_may_uses_starttls(make, world):
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['mx.peer.example']))
    d = deliverer(tls_cf(world, 'may'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert p.events('tls')
    assert p.events('message')[0]['tls'] is True
    assert ('Trusted TLS connection established to mx.peer.example[%s]:25: TLSv1.3 with cipher'
            % PEER_ADDR) in d.log_text()
    # The reply carries the TLS facts for the queue manager's log line.
    proto, cipher, trust = d.tls.split(' ')
    assert (proto, trust) == ('TLSv1.3', 'Trusted') and cipher.startswith('TLS_'), d.tls


def test_tls_loglevel_zero_logs_no_tls_line(make, world):
    """smtp_tls_loglevel = 0 keeps the "TLS connection established" line
    out of the log (the TLS facts still reach the delivery result)."""
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['mx.peer.example']))
    d = deliverer(tls_cf(world, 'may') + 'smtp_tls_loglevel = 0\n')
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert p.events('message')[0]['tls'] is True
    assert d.tls.startswith('TLSv1.3 '), d.tls
    assert 'TLS connection established' not in d.log_text()


def test_tls_may_without_starttls_is_plaintext(make, world):
    deliverer, peer = make
    p = peer()
    d = deliverer(tls_cf(world, 'may'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert p.events('message')[0]['tls'] is False
    assert d.tls == ''


def test_tls_may_handshake_failure_falls_back(make, world):
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['mx.peer.example']), broken_tls=True)
    d = deliverer(tls_cf(world, 'may'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert len(p.events('connect')) == 2
    assert p.events('message')[0]['tls'] is False
    assert 'retrying without TLS' in d.log_text()


def test_tls_encrypt_requires_starttls(make, world):
    deliverer, peer = make
    p = peer()
    d = deliverer(tls_cf(world, 'encrypt'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0] == ('deferred', '4.7.4', 'TLS is required, but was not offered by host '
                          'mx.peer.example[%s]' % PEER_ADDR), results
    assert p.events('message') == []


def test_tls_encrypt_with_starttls(make, world):
    deliverer, peer = make
    # encrypt does not look at the certificate: the wrong name is fine.
    p = peer(starttls=list(world['ca']['wrong.example']))
    d = deliverer(tls_cf(world, 'encrypt', ca='other_ca'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert p.events('message')[0]['tls'] is True
    assert 'Untrusted TLS connection established' in d.log_text()


def test_tls_verify_success(make, world):
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['mx.peer.example']))
    d = deliverer(tls_cf(world, 'verify'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert 'Verified TLS connection established to mx.peer.example' in d.log_text()
    assert d.tls.endswith(' Verified'), d.tls


def test_tls_verify_wrong_ca_defers(make, world):
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['mx.peer.example']))
    d = deliverer(tls_cf(world, 'verify', ca='other_ca'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][:2] == ('deferred', '4.7.5'), results
    assert results[0][2].startswith('Server certificate not trusted')
    assert p.events('message') == []


def test_tls_verify_wrong_name_defers(make, world):
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['wrong.example']))
    d = deliverer(tls_cf(world, 'verify'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][:2] == ('deferred', '4.7.5'), results
    assert results[0][2].startswith('Server certificate not verified')


def test_tls_secure_matches_nexthop(make, world):
    deliverer, peer = make
    # The certificate names mx.peer.example, a subdomain of the next hop
    # peer.example: secure's default "nexthop, dot-nexthop" accepts it.
    p = peer(starttls=list(world['ca']['mx.peer.example']))
    d = deliverer(tls_cf(world, 'secure'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    d2 = deliverer(tls_cf(world, 'secure') + 'smtp_tls_secure_cert_match = nexthop\n')
    results, _ = d2.deliver(d2.message(['a@peer.example']))
    assert results[0][:2] == ('deferred', '4.7.5'), results


@pytest.mark.parametrize('servername,nexthop,sni', [
    ('hostname', '', 'mx.peer.example'),
    ('nexthop', '', 'peer.example'),
    ('nexthop', '[mx.peer.example]', 'mx.peer.example'),
    ('sni.example', '', 'sni.example'),
    ('', '', None),
    # RFC 6066 3: no address literals in SNI.
    ('hostname', '[%s]' % PEER_ADDR, None),
])
def test_tls_servername(make, world, servername, nexthop, sni):
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['mx.peer.example']))
    d = deliverer(tls_cf(world, 'encrypt') + 'smtp_tls_servername = %s\n' % servername)
    results, _ = d.deliver(d.message(['a@peer.example']), nexthop=nexthop)
    assert results[0][0] == 'relayed', results
    assert [e['sni'] for e in p.events('tls')] == [sni]


def test_tls_capath(make, world, tmp_path):
    """smtp_tls_CApath: a directory of hashed CA certificate links
    (openssl rehash) instead of smtp_tls_CAfile."""
    deliverer, peer = make
    good, bad = tmp_path / 'good', tmp_path / 'bad'
    for d, ca in ((good, 'ca'), (bad, 'other_ca')):
        d.mkdir()
        shutil.copy(world['ca'][ca], str(d / 'ca.pem'))
        subprocess.run(['openssl', 'rehash', str(d)], check=True, capture_output=True)
        assert any(n.endswith('.0') for n in os.listdir(str(d)))
    p = peer(starttls=list(world['ca']['mx.peer.example']))
    d = deliverer('smtp_tls_security_level = verify\nsmtp_tls_CApath = %s\n' % good)
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert d.tls.endswith(' Verified'), d.tls
    d = deliverer('smtp_tls_security_level = verify\nsmtp_tls_CApath = %s\n' % bad)
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][:2] == ('deferred', '4.7.5'), results
    assert results[0][2].startswith('Server certificate not trusted'), results
    assert len(p.events('message')) == 1


def test_tls_protocols_for_opportunistic_tls(make, world):
    """smtp_tls_protocols applies to "may": a peer that stops at TLSv1.2
    fails the handshake with >=TLSv1.3 and gets the mail in plaintext; with
    the default protocols it gets TLSv1.2."""
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['mx.peer.example']), tls_max_version='TLSv1_2')
    d = deliverer(tls_cf(world, 'may'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert d.tls.startswith('TLSv1.2 '), d.tls
    d = deliverer(tls_cf(world, 'may') + 'smtp_tls_protocols = >=TLSv1.3\n')
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert d.tls == ''
    assert [m['tls'] for m in p.events('message')] == [True, False]
    assert 'retrying without TLS' in d.log_text()


@pytest.mark.parametrize('syntax', ['>=TLSv1.3', '!SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.2'])
def test_tls_mandatory_protocols_for_encrypt(make, world, syntax):
    """encrypt uses smtp_tls_mandatory_protocols, not smtp_tls_protocols:
    a TLSv1.2 peer is refused by mandatory >=TLSv1.3 (in both syntaxes)
    and is fine when only smtp_tls_protocols asks for TLSv1.3."""
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['mx.peer.example']), tls_max_version='TLSv1_2')
    d = deliverer(tls_cf(world, 'encrypt') + 'smtp_tls_protocols = %s\n' % syntax)
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert d.tls.startswith('TLSv1.2 '), d.tls
    d = deliverer(tls_cf(world, 'encrypt') + 'smtp_tls_mandatory_protocols = %s\n' % syntax)
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][:2] == ('deferred', '4.7.5'), results
    assert 'handshake failure' in results[0][2], results
    assert len(p.events('message')) == 1


# ---------------------------------------------------------------------------
# TLS policy tables (smtp_tls_policy_maps) and wrapper mode


def policy_cf(world, tmp_path, level, entries, kind='texthash'):
    """main.cf lines with smtp_tls_security_level = level and a policy
    table of entries (key, value), as texthash: or as hash: built with
    postern's postmap."""
    path = tmp_path / ('policy-%d' % len(os.listdir(str(tmp_path))))
    path.write_text(''.join('%s %s\n' % e for e in entries))
    if kind == 'hash':
        r = subprocess.run([POSTMAP, 'hash:%s' % path], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return tls_cf(world, level) + 'smtp_tls_policy_maps = %s:%s\n' % (kind, path)


@pytest.mark.parametrize('kind', ['texthash', 'hash'])
def test_tls_policy_secure_for_one_domain(make, world, tmp_path, kind):
    """With the default level may, a policy "secure match=..." for one
    domain: its server must present a certificate for the match name;
    destinations without an entry stay opportunistic."""
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['mx.peer.example']))
    d = deliverer(policy_cf(world, tmp_path, 'may', [
        ('peer.example', 'secure match=mx.peer.example'),
        ('afallback.example', 'secure match=other.example:.other.example')], kind=kind))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert d.tls.endswith(' Verified'), d.tls
    # The same server under another name whose policy matches other names.
    results, _ = d.deliver(d.message(['a@afallback.example']))
    assert results[0][:2] == ('deferred', '4.7.5'), results
    assert results[0][2].startswith('Server certificate not verified'), results
    assert 'other.example, .other.example' in results[0][2], results
    # No entry: may, not verified but delivered.
    results, _ = d.deliver(d.message(['a@example.com']), nexthop='[mx.peer.example]')
    assert results[0][0] == 'relayed', results
    assert d.tls.endswith(' Trusted'), d.tls
    assert len(p.events('message')) == 2


def test_tls_policy_none_overrides_encrypt(make, world, tmp_path):
    """The default level encrypt, "none" for one domain: that domain's
    server without STARTTLS gets the mail in plaintext, others defer."""
    deliverer, peer = make
    p = peer()
    d = deliverer(policy_cf(world, tmp_path, 'encrypt', [('peer.example', 'none')]))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert p.events('message')[0]['tls'] is False
    results, _ = d.deliver(d.message(['a@afallback.example']))
    assert results[0][:2] == ('deferred', '4.7.4'), results
    assert len(p.events('message')) == 1


def test_tls_policy_parent_domain(make, world, tmp_path):
    """A domain next hop is looked up as itself, then as .parent keys
    (nearest first); a key without the dot matches only the domain itself,
    one with the dot only its subdomains."""
    deliverer, peer = make
    p = peer()          # no STARTTLS: encrypt defers, may delivers
    d = deliverer(policy_cf(world, tmp_path, 'may', [('.peer.example', 'encrypt'),
                                                      ('.example', 'none')]))
    # mx.peer.example (no MX: its A record) matches .peer.example first.
    results, _ = d.deliver(d.message(['a@example.com']), nexthop='mx.peer.example')
    assert results[0][:2] == ('deferred', '4.7.4'), results
    # peer.example itself is not under .peer.example; .example says none.
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    d = deliverer(policy_cf(world, tmp_path, 'may', [('peer.example', 'encrypt')]))
    results, _ = d.deliver(d.message(['a@example.com']), nexthop='mx.peer.example')
    assert results[0][0] == 'relayed', results
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][:2] == ('deferred', '4.7.4'), results
    assert len(p.events('message')) == 2


def test_tls_policy_bracketed_nexthop_with_port(make, world, tmp_path):
    """[host]:port next hops (here the relayhost) are looked up verbatim,
    port and brackets included, and never as parent domains."""
    deliverer, peer = make
    p = peer(port=2526)
    relay = 'relayhost = [mx.peer.example]:2526\n'
    d = deliverer(relay + policy_cf(world, tmp_path, 'may',
                                    [('[mx.peer.example]:2526', 'encrypt')]))
    results, _ = d.deliver(d.message(['a@nosuch.example']))
    assert results[0][:2] == ('deferred', '4.7.4'), results
    assert p.events('connect'), 'the policy made no connection'
    for key in ('[mx.peer.example]', 'mx.peer.example', '.peer.example'):
        d = deliverer(relay + policy_cf(world, tmp_path, 'may', [(key, 'encrypt')]))
        results, _ = d.deliver(d.message(['a@nosuch.example']))
        assert results[0][0] == 'relayed', (key, results)
    assert len(p.events('message')) == 3


def test_tls_policy_attributes(make, world, tmp_path):
    """protocols=, ciphers=, exclude= and servername= of a policy apply to
    its destination, over main.cf, against a peer that stops at TLSv1.2."""
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['mx.peer.example']), tls_max_version='TLSv1_2')
    d = deliverer(policy_cf(world, tmp_path, 'may', [
        ('peer.example', 'encrypt protocols=>=TLSv1.3'),
        ('afallback.example', 'encrypt protocols=!SSLv2:!SSLv3:!TLSv1 servername=sni.example'),
        ('[mx.peer.example]', 'encrypt, ciphers=high, exclude=AESGCM:CHACHA20')]))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][:2] == ('deferred', '4.7.5'), results
    assert 'handshake failure' in results[0][2], results
    results, _ = d.deliver(d.message(['a@afallback.example']))
    assert results[0][0] == 'relayed', results
    assert d.tls.startswith('TLSv1.2 ') and 'GCM' in d.tls, d.tls
    assert p.events('tls')[-1]['sni'] == 'sni.example'
    results, _ = d.deliver(d.message(['a@example.com']), nexthop='[mx.peer.example]')
    assert results[0][0] == 'relayed', results
    proto, cipher, _ = d.tls.split(' ')
    assert proto == 'TLSv1.2' and 'GCM' not in cipher and 'CHACHA' not in cipher, d.tls
    assert p.events('tls')[-1]['sni'] is None
    assert len(p.events('message')) == 2


@pytest.mark.parametrize('value,reason', [
    ('secure bogus=1', 'unknown attribute "bogus"'),
    ('sekure', 'unknown security level "sekure"'),
    ('secure match', 'attribute "match" is not a name=value pair'),
    ('verify match=', 'empty "match" attribute'),
    ('encrypt protocols=TLSv9', 'bad "protocols" attribute "TLSv9"'),
    ('encrypt ciphers=strong', 'bad "ciphers" attribute "strong"'),
    ('fingerprint match=3D:FA', 'security level "fingerprint" is not supported'),
    ('dane-only', 'dane-only needs smtp_dns_support_level = dnssec'),
])
def test_tls_policy_invalid_defers(make, world, tmp_path, value, reason):
    """An invalid policy defers with the table, the key and the reason,
    and never connects (no silent downgrade to the default level)."""
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['mx.peer.example']))
    d = deliverer(policy_cf(world, tmp_path, 'may', [('.example', value)]))
    results, _ = d.deliver(d.message(['a@peer.example']))
    status, dsn, diag = results[0]
    assert (status, dsn) == ('deferred', '4.7.0'), results
    assert diag.startswith('client TLS configuration problem: invalid TLS policy "%s" for '
                           '.example in smtp_tls_policy_maps: ' % value), diag
    assert reason in diag, diag
    assert p.events('connect') == []


def test_tls_policy_table_failure_defers(make, world, tmp_path):
    """A policy table that cannot be read (a hash: table never built)
    defers every delivery with the reason."""
    deliverer, peer = make
    p = peer()
    d = deliverer(tls_cf(world, 'may') + 'smtp_tls_policy_maps = hash:%s\n'
                  % (tmp_path / 'missing'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][:2] == ('deferred', '4.3.0'), results
    assert 'smtp_tls_policy_maps is unavailable' in results[0][2], results
    assert p.events('connect') == []


MAN_PAGE = os.path.join(SRC_DIR, 'man', 'postern-deliver-remote.8')


@pytest.mark.parametrize('key,outcome', [
    ('example.edu', 'plaintext'),
    ('example.com', 'Verified'),
    ('.example.net', 'not verified'),
    ('[mail.example.org]:587', 'not verified'),
    ('example.org', 'Trusted'),
])
def test_tls_policy_man_page_example(make, world, tmp_path, key, outcome):
    """The policy table of postern-deliver-remote(8) builds with postmap,
    and each of its values, given to peer.example, does what the page
    says: none is plaintext, verify with ciphers=high verifies the MX
    host, the two secure entries ask for names the server's certificate
    does not have, and dane without DNSSEC is may."""
    deliverer, peer = make
    table = examples(MAN_PAGE)['tls_policy']
    src = tmp_path / 'tls_policy'
    src.write_text(table)
    r = subprocess.run([POSTMAP, 'hash:%s' % src], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    value = dict(line.split(None, 1) for line in table.splitlines())[key]
    p = peer(starttls=list(world['ca']['mx.peer.example']))
    d = deliverer(policy_cf(world, tmp_path, 'encrypt', [('peer.example', value)]))
    results, _ = d.deliver(d.message(['a@peer.example']))
    if outcome == 'not verified':
        assert results[0][:2] == ('deferred', '4.7.5'), results
        assert results[0][2].startswith('Server certificate not verified'), results
        assert p.events('message') == []
    else:
        assert results[0][0] == 'relayed', results
        assert d.tls.endswith(' ' + outcome) if outcome != 'plaintext' else d.tls == '', d.tls
    if value == 'dane':
        assert ('TLS policy "dane" for peer.example in smtp_tls_policy_maps: dane needs '
                'smtp_dns_support_level = dnssec; using may instead') in d.log_text()


def wrapper_peer(peer, world, cert='mx.peer.example'):
    return peer(port=465, implicit_tls=list(world['ca'][cert]))


WRAPPER_CF = 'relayhost = [mx.peer.example]:465\nsmtp_tls_wrappermode = yes\n'


def test_tls_wrappermode(make, world):
    """smtp_tls_wrappermode: TLS from the first byte (RFC 8314), the
    greeting inside it, no STARTTLS; verify checks the certificate."""
    deliverer, peer = make
    p = wrapper_peer(peer, world)
    d = deliverer(WRAPPER_CF + tls_cf(world, 'verify'))
    results, relay = d.deliver(d.message(['a@nosuch.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert relay == 'mx.peer.example[%s]:465' % PEER_ADDR
    assert d.tls.endswith(' Verified'), d.tls
    assert p.events('message')[0]['tls'] is True
    assert [e['line'].split()[0] for e in p.events('cmd')][:2] == ['EHLO', 'MAIL']
    assert all(e['tls'] for e in p.events('cmd'))
    d = deliverer(WRAPPER_CF + tls_cf(world, 'verify', ca='other_ca'))
    results, _ = d.deliver(d.message(['a@nosuch.example']))
    assert results[0][:2] == ('deferred', '4.7.5'), results
    assert results[0][2].startswith('Server certificate not trusted'), results
    assert len(p.events('message')) == 1


def test_tls_wrappermode_man_page_example(make, world):
    """The wrapper mode example of postern-deliver-remote(8), with the
    peer's name for the provider's: secure checks the certificate against
    the relayhost's name."""
    deliverer, peer = make
    p = wrapper_peer(peer, world)
    cf = examples(MAN_PAGE)['wrappermode'].replace('mail.example.com', 'mx.peer.example')
    d = deliverer(cf + 'smtp_tls_CAfile = %s\n' % world['ca']['ca'])
    results, relay = d.deliver(d.message(['a@nosuch.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert relay == 'mx.peer.example[%s]:465' % PEER_ADDR
    assert d.tls.endswith(' Verified'), d.tls
    assert p.events('message')[0]['tls'] is True


def test_tls_wrappermode_with_may(make, world):
    """Below encrypt, wrapper mode still uses TLS (with a warning at
    start), unverified; a server that does not speak TLS defers and is not
    retried in plaintext."""
    deliverer, peer = make
    p = wrapper_peer(peer, world, cert='wrong.example')
    d = deliverer(WRAPPER_CF + tls_cf(world, 'may'))
    results, _ = d.deliver(d.message(['a@nosuch.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert p.events('message')[0]['tls'] is True
    assert 'smtp_tls_wrappermode requires smtp_tls_security_level = encrypt' in d.log_text()
    plain = peer(port=2526)
    d = deliverer('relayhost = [mx.peer.example]:2526\nsmtp_tls_wrappermode = yes\n'
                  + tls_cf(world, 'may'))
    results, _ = d.deliver(d.message(['a@nosuch.example']))
    assert results[0][:2] == ('deferred', '4.7.5'), results
    assert 'handshake failure' in results[0][2], results
    assert len(plain.events('connect')) == 1
    assert 'retrying without TLS' not in d.log_text()


# ---------------------------------------------------------------------------
# LMTP with Dovecot

DOVECOT = shutil.which('dovecot') or '/usr/sbin/dovecot'


@pytest.fixture
def dovecot():
    yield from run_dovecot()


@pytest.fixture
def dovecot_tls(world):
    """Dovecot whose LMTP offers STARTTLS, with the test CA's certificate
    for mx.peer.example."""
    yield from run_dovecot(world['ca']['mx.peer.example'])


def run_dovecot(cert_key=None):
    if not os.path.exists(DOVECOT):
        pytest.skip('dovecot not installed')
    tmp = tempdir('postern-dovecot.')
    os.chmod(tmp, 0o755)
    port = 24000 + os.getpid() % 1000
    ssl = 'ssl = no'
    if cert_key:
        ssl = 'ssl = yes\nssl_cert = <%s\nssl_key = <%s' % cert_key
    mail = os.path.join(tmp, 'mail')
    os.makedirs(mail)
    # Dovecot refuses to deliver as root: the mailboxes belong to nobody.
    nobody = pwd.getpwnam('nobody')
    os.chown(mail, nobody.pw_uid, nobody.pw_gid)
    me = pwd.getpwuid(os.getuid()).pw_name
    with open(os.path.join(tmp, 'users'), 'w') as f:
        for user in ('alice', 'bob'):
            f.write('%s:{PLAIN}x:%d:%d::%s/%s\n' % (user, nobody.pw_uid, nobody.pw_gid, mail,
                                                     user))
    conf = os.path.join(tmp, 'dovecot.conf')
    with open(conf, 'w') as f:
        f.write('''
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
protocols = lmtp
{ssl}
listen = 127.0.0.1
default_login_user = {me}
default_internal_user = {me}
default_internal_group = {grp}
mail_location = maildir:{mail}/%n
first_valid_uid = 0
lmtp_save_to_detail_mailbox = no
auth_username_format = %n
passdb {{
  driver = passwd-file
  args = username_format=%n {tmp}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {tmp}/users
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
'''.format(tmp=tmp, me=me, mail=mail, port=port, ssl=ssl,
           grp=grp.getgrgid(os.getgid()).gr_name))
    os.makedirs(os.path.join(tmp, 'run'))
    os.makedirs(os.path.join(tmp, 'state'))
    proc = subprocess.Popen([DOVECOT, '-F', '-c', conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    sock = os.path.join(tmp, 'run', 'lmtp')
    try:
        wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, what='dovecot')
        if proc.poll() is not None:
            with open(os.path.join(tmp, 'dovecot.log')) as f:
                raise RuntimeError('dovecot exited: ' + f.read())
        yield {'socket': sock, 'port': port, 'mail': mail, 'tmp': tmp}
    finally:
        stop_process(proc)
        if not os.environ.get('KEEP_DOVECOT'):
            shutil.rmtree(tmp, ignore_errors=True)


def maildir_files(mail, user):
    d = os.path.join(mail, user, 'new')
    return os.listdir(d) if os.path.isdir(d) else []


def test_lmtp_unix_to_dovecot(make, dovecot):
    deliverer, _ = make
    d = deliverer()
    # A path relative to queue_directory, as in "lmtp:unix:private/dovecot-lmtp".
    os.symlink(dovecot['socket'], os.path.join(d.queue, 'private', 'dovecot-lmtp'))
    results, relay = d.deliver(d.message(['alice@example.org', 'nobody@example.org',
                                          'bob@example.org']),
                               transport='lmtp', nexthop='unix:private/dovecot-lmtp')
    assert results[0][0] == 'sent', results
    assert results[2][0] == 'sent', results
    assert results[1][0] == 'bounced' and results[1][1].startswith('5.1.'), results
    assert relay == 'client.example.org[%s]' % os.path.join(d.queue, 'private', 'dovecot-lmtp')
    assert len(wait_for(lambda: maildir_files(dovecot['mail'], 'alice'), what='maildir')) == 1
    assert len(maildir_files(dovecot['mail'], 'bob')) == 1


def test_lmtp_inet_to_dovecot(make, dovecot):
    deliverer, _ = make
    d = deliverer()
    # Dovecot listens on the host's loopback: reach it by absolute socket
    # path here and by TCP from the host namespace below.
    results, relay = d.deliver(d.message(['alice@example.org']), transport='lmtp',
                               nexthop='unix:' + dovecot['socket'])
    assert results[0][0] == 'sent', results


def lmtp_tcp_delivery(dovecot, tmp, main_cf=''):
    """One LMTP delivery to bob over TCP by postern-deliver-remote in the
    host namespace, where Dovecot's inet listener is. Returns the
    test-deliver-client output and the agent's log."""
    conf = os.path.join(tmp, 'conf')
    os.makedirs(conf)
    with open(os.path.join(conf, 'main.cf'), 'w') as f:
        f.write('myhostname = client.example.org\nqueue_directory = %s\n'
                'dns_resolver_servers = 127.0.0.1:9\nmax_idle = 60s\n' % tmp + main_cf)
    sock = os.path.join(tmp, 'deliver-remote')
    log_path = os.path.join(tmp, 'log')
    log = open(log_path, 'w')
    proc = subprocess.Popen(['systemd-socket-activate', '-l', sock, '-E',
                             'POSTERN_LOG_TARGET=stderr', DELIVER, '-c', conf],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: unix_connectable(sock), what='socket')
        q = write_queue_file(tmp, 'Subject: lmtp inet\n\nhello\n', 's@example.org',
                             ['bob@example.org'])
        r = subprocess.run([CLIENT, sock, q, 'lmtp', 'inet:127.0.0.1:%d' % dovecot['port']],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        stop_process(proc)
        log.close()
    with open(log_path, errors='replace') as f:
        return r.stdout, f.read()


def test_lmtp_inet_tcp_to_dovecot(dovecot, world, tmp_path):
    out, _ = lmtp_tcp_delivery(dovecot, str(tmp_path))
    assert out.splitlines()[0].split(' ')[1] == 'sent', out
    assert 'relay=127.0.0.1[127.0.0.1]:%d' % dovecot['port'] in out
    assert 'tls=\n' in out
    assert len(wait_for(lambda: maildir_files(dovecot['mail'], 'bob'), what='maildir')) == 1


def test_lmtp_starttls_to_dovecot(dovecot_tls, world, tmp_path):
    """lmtp_tls_security_level = encrypt: STARTTLS after LHLO, the
    certificate checked against the test CA (Trusted: the name of an
    address next hop is not matched at this level)."""
    out, log = lmtp_tcp_delivery(dovecot_tls, str(tmp_path),
                                 'lmtp_tls_security_level = encrypt\nlmtp_tls_loglevel = 1\n'
                                 'lmtp_tls_CAfile = %s\n' % world['ca']['ca'])
    assert out.splitlines()[0].split(' ')[1] == 'sent', out + log
    assert re.search(r'^tls=TLSv1\.[23] \S+ Trusted$', out, re.M), out
    assert ('Trusted TLS connection established to 127.0.0.1[127.0.0.1]:%d: TLSv1'
            % dovecot_tls['port']) in log, log
    assert len(wait_for(lambda: maildir_files(dovecot_tls['mail'], 'bob'),
                        what='maildir')) == 1


def test_lmtp_encrypt_without_starttls_defers(dovecot, tmp_path):
    out, log = lmtp_tcp_delivery(dovecot, str(tmp_path), 'lmtp_tls_security_level = encrypt\n')
    assert out.splitlines()[0].split(' ', 3)[1:] == [
        'deferred', '4.7.4', 'TLS is required, but was not offered by host '
        '127.0.0.1[127.0.0.1]'], out + log
    assert maildir_files(dovecot['mail'], 'bob') == []


def test_bad_calls_are_refused(make):
    deliverer, _ = make
    d = deliverer()
    q = d.message(['a@peer.example'])
    r = subprocess.run([CLIENT, d.socket, q, 'pigeon', ''], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and 'unknown transport' in r.stderr
    r = subprocess.run([CLIENT, d.socket, q, 'smtp', '', '7:x@peer.example'],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and 'out of range' in r.stderr
    results, _ = d.deliver(q, nexthop='[bad host')
    assert results[0][:2] == ('deferred', '4.3.5'), results
