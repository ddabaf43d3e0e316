"""The client host name of postern-smtpd, looked up before the greeting as
Postfix's smtpd does: the address's PTR name (the hosts file first), then
that name's addresses, which must include the client address for the name
to be verified; otherwise the client is "unknown". The name shows in the
connect and disconnect lines, the Received header and the queue file, and
the restrictions use it (check_client_access, permit_mynetworks host
names, reject_unknown_client_hostname and
reject_unknown_reverse_client_hostname).

Clients connect from a network namespace (192.0.2.x) to postern-smtpd in
another one where dnsmasq answers (see dns_helpers.py):

  192.0.2.10  PTR client.example.net, which has A 192.0.2.10: verified
  192.0.2.11  no PTR record
  192.0.2.12  PTR forged.example.net, which has A 192.0.2.99 only
  192.0.2.13  PTR gone.example.net, which does not exist
  192.0.2.14  PTR 192.0.2.14, a numeric name"""
import shutil
import socket
import tempfile
import time

import pytest

import dns_helpers
from dns_helpers import CLIENT_ADDRS, MORE_CLIENT_ADDRS, Dnsmasq, RestrictNet, in_netns
from smtpd_helpers import wait_for
from test_restrictions import RELAY_CF, make  # noqa: F401 (make is a fixture)

VERIFIED, NO_PTR = CLIENT_ADDRS
FORGED, GONE, NUMERIC = MORE_CLIENT_ADDRS

pytestmark = pytest.mark.skipif(not dns_helpers.available(),
                                reason='needs root, ip and dnsmasq')

DNS_RECORDS = [
    '--ptr-record=10.2.0.192.in-addr.arpa,client.example.net',
    '--host-record=client.example.net,192.0.2.10',
    '--ptr-record=12.2.0.192.in-addr.arpa,forged.example.net',
    '--host-record=forged.example.net,192.0.2.99',
    '--ptr-record=13.2.0.192.in-addr.arpa,gone.example.net',
    '--ptr-record=14.2.0.192.in-addr.arpa,192.0.2.14',
]
LOCAL_DOMAINS = ['test', 'example', 'example.net', 'in-addr.arpa']


@pytest.fixture(scope='module')
def net():
    n = RestrictNet()
    tmp = tempfile.mkdtemp(prefix='postern-client-name-dns.')
    try:
        n.dns = Dnsmasq(n, tmp, LOCAL_DOMAINS, DNS_RECORDS)
        yield n
    finally:
        n.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def greeting(srv, source):
    c = srv.client(source)
    try:
        return c.reply()[0]
    finally:
        c.close()


def converse(srv, source, rcpt='alice@example.test'):
    """Up to RCPT; returns the first reply that is not a success."""
    c = srv.client(source)
    try:
        r = c.reply()[0]
        if not r.startswith('220'):
            return r
        assert c.cmd('EHLO helo.example.net')[-1].startswith('250')
        r = c.cmd('MAIL FROM:<a@good.example>')[0]
        if not r.startswith('250'):
            return r
        return c.cmd('RCPT TO:<%s>' % rcpt)[0]
    finally:
        c.close()


def send_message(srv, source):
    c = srv.client(source)
    try:
        assert c.reply()[0].startswith('220 ')
        assert c.cmd('EHLO helo.example.net')[-1].startswith('250')
        assert c.cmd('MAIL FROM:<a@good.example>') == ['250 2.1.0 Ok']
        assert c.cmd('RCPT TO:<alice@example.test>') == ['250 2.1.5 Ok']
        assert c.cmd('DATA')[0].startswith('354')
        r = c.cmd('Subject: test\r\n\r\nhello\r\n.')[0]
        assert r.startswith('250 2.0.0 Ok: queued as '), r
        c.cmd('QUIT')
        return r.split()[-1]
    finally:
        c.close()


def ptr_queries(net, addr):
    name = '.'.join(reversed(addr.split('.'))) + '.in-addr.arpa'
    return net.dns.log_text().count('query[PTR] %s ' % name)


# ---- the name in logs, headers and the queue file ----

def test_verified_name_in_log_header_and_queue_file(make):
    srv = make(RELAY_CF)
    qid = send_message(srv, VERIFIED)
    srv.wait_log('connect from client.example.net[192.0.2.10]')
    srv.wait_log('%s: client=client.example.net[192.0.2.10]' % qid)
    srv.wait_log('disconnect from client.example.net[192.0.2.10] ehlo=1 mail=1 rcpt=1 data=1')
    wait_for(lambda: qid in srv.queue_files(), what='queue file')
    _, content, env = srv.read_queue_file(qid)
    assert env['client_name'] == 'client.example.net'
    assert env['client_addr'] == '192.0.2.10'
    assert content.startswith(b'Received: from helo.example.net (client.example.net '
                              b'[192.0.2.10])\n'), content


def test_loopback_client_named_from_hosts_file(make):
    """127.0.0.1 is "localhost" by the hosts file, forward and reverse, as
    Postfix finds it through the C library."""
    srv = make(RELAY_CF)
    assert greeting(srv, '127.0.0.1').startswith('220 ')
    srv.wait_log('connect from localhost[127.0.0.1]')


def test_unconfirmed_ptr_is_unknown(make):
    """A PTR name whose addresses do not include the client is not
    believed: the client is unknown, with Postfix's warning. The reverse
    name still counts for reject_unknown_reverse_client_hostname."""
    srv = make(RELAY_CF + 'smtpd_client_restrictions = '
               'reject_unknown_reverse_client_hostname\n')
    qid = send_message(srv, FORGED)
    srv.wait_log('warning: hostname forged.example.net does not resolve to address 192.0.2.12')
    srv.wait_log('connect from unknown[192.0.2.12]')
    wait_for(lambda: qid in srv.queue_files(), what='queue file')
    _, content, env = srv.read_queue_file(qid)
    assert env['client_name'] == 'unknown'
    assert b'(unknown [192.0.2.12])' in content


def test_unconfirmed_ptr_rejected_by_unknown_client_hostname(make):
    srv = make(RELAY_CF + 'smtpd_client_restrictions = reject_unknown_client_hostname\n'
               'unknown_client_reject_code = 550\n')
    assert converse(srv, FORGED) == (
        '550 5.7.25 Client host rejected: cannot find your hostname, [192.0.2.12]')
    assert converse(srv, VERIFIED) == '250 2.1.5 Ok'


def test_ptr_name_without_address_is_unknown(make):
    srv = make(RELAY_CF + 'smtpd_client_restrictions = reject_unknown_client_hostname\n')
    assert converse(srv, GONE) == (
        '450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.13]')
    srv.wait_log('warning: hostname gone.example.net does not resolve to address 192.0.2.13: '
                 'Name or service not known')
    srv.wait_log('connect from unknown[192.0.2.13]')


def test_numeric_ptr_is_no_name(make):
    """A PTR name that is an address is no name at all, reverse or
    verified (Postfix's sockaddr_to_hostname())."""
    srv = make(RELAY_CF + 'smtpd_client_restrictions = '
               'reject_unknown_reverse_client_hostname\nunknown_client_reject_code = 550\n')
    assert converse(srv, NUMERIC) == (
        '550 5.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.14]')
    srv.wait_log('warning: numeric hostname: 192.0.2.14')
    srv.wait_log('connect from unknown[192.0.2.14]')


def test_no_ptr_is_unknown(make):
    srv = make(RELAY_CF + 'smtpd_client_restrictions = '
               'reject_unknown_reverse_client_hostname\nunknown_client_reject_code = 550\n')
    assert converse(srv, NO_PTR) == (
        '550 5.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.11]')
    srv.wait_log('connect from unknown[192.0.2.11]')
    srv.wait_log('disconnect from unknown[192.0.2.11]')


def test_one_lookup_serves_the_restrictions(make, net):
    """The restrictions use the names found at connect: no second PTR
    query for the same session."""
    srv = make(RELAY_CF + 'smtpd_client_restrictions = reject_unknown_client_hostname, '
               'reject_unknown_reverse_client_hostname, check_client_access '
               'inline:{nothing.example=REJECT}\n')
    before = ptr_queries(net, VERIFIED)
    assert converse(srv, VERIFIED) == '250 2.1.5 Ok'
    assert ptr_queries(net, VERIFIED) == before + 1


# ---- restrictions by name ----

def test_check_client_access_by_verified_name(make):
    srv = make(RELAY_CF + 'smtpd_client_restrictions = check_client_access '
               'inline:{client.example.net=REJECT, forged.example.net=REJECT}\n')
    assert converse(srv, VERIFIED) == (
        '554 5.7.1 <client.example.net[192.0.2.10]>: Client host rejected: Access denied')
    srv.wait_log('NOQUEUE: reject: RCPT from client.example.net[192.0.2.10]: 554 5.7.1')
    # An unconfirmed PTR name is not the client's name.
    assert converse(srv, FORGED) == '250 2.1.5 Ok'


def test_mynetworks_host_name_needs_verified_name(make):
    srv = make(RELAY_CF + 'mynetworks = 127.0.0.0/8, client.example.net, forged.example.net\n')
    assert converse(srv, VERIFIED, 'user@remote.example') == '250 2.1.5 Ok'
    assert converse(srv, FORGED, 'user@remote.example') == (
        '554 5.7.1 <user@remote.example>: Relay access denied')


def test_delay_reject_no_reply_names_client(make):
    srv = make(RELAY_CF + 'smtpd_delay_reject = no\n'
               'smtpd_client_restrictions = check_client_access inline:{192.0.2.10=REJECT}\n')
    c = srv.client(VERIFIED)
    try:
        assert c.reply() == [
            '554 5.7.1 <client.example.net[192.0.2.10]>: Client host rejected: Access denied']
        assert c.cmd('MAIL FROM:<a@good.example>') == [
            '503 5.7.0 Error: access denied for client.example.net[192.0.2.10]']
    finally:
        c.close()
    srv.wait_log('NOQUEUE: reject: CONNECT from client.example.net[192.0.2.10]: 554 5.7.1')


# ---- turning it off, DNS failures ----

def test_peername_lookup_off(make, net):
    srv = make(RELAY_CF + 'smtpd_peername_lookup = no\n'
               'smtpd_client_restrictions = check_client_access inline:{client.example.net=REJECT}\n')
    before = ptr_queries(net, VERIFIED)
    assert converse(srv, VERIFIED) == '250 2.1.5 Ok'
    srv.wait_log('connect from unknown[192.0.2.10]')
    srv.wait_log('disconnect from unknown[192.0.2.10]')
    assert ptr_queries(net, VERIFIED) == before


def test_dns_down_unknown_and_450(make):
    """No DNS server answers: the client is unknown for now, and
    reject_unknown_client_hostname defers with 450 whatever
    unknown_client_reject_code says, as Postfix does for a temporary
    failure."""
    srv = make(RELAY_CF + 'dns_resolver_servers = 127.0.0.1:1\n'
               'smtpd_client_restrictions = reject_unknown_client_hostname\n'
               'unknown_client_reject_code = 550\n')
    assert converse(srv, VERIFIED) == (
        '450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.10]')
    srv.wait_log('connect from unknown[192.0.2.10]')


def silent_dns(net):
    """A UDP socket on 127.0.0.1 of the server namespace that never
    answers: lookups run into their time limit."""
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(('127.0.0.1', 0))
        return s
    return in_netns(net.server, make)


def test_greeting_waits_for_lookup_time_limit(make, net):
    """The greeting waits for the lookup; a DNS server that never answers
    costs the time limit (10 s), then the client is unknown for now."""
    dns = silent_dns(net)
    try:
        srv = make(RELAY_CF + 'dns_resolver_servers = 127.0.0.1:%d\n' % dns.getsockname()[1] +
                   'smtpd_client_restrictions = reject_unknown_reverse_client_hostname\n'
                   'unknown_client_reject_code = 550\n')
        c = srv.client(VERIFIED)
        c.sock.settimeout(30)
        try:
            start = time.monotonic()
            assert c.reply()[0].startswith('220 ')
            waited = time.monotonic() - start
            assert 9 <= waited < 20, waited
            assert c.cmd('EHLO helo.example.net')[-1].startswith('250')
            assert c.cmd('MAIL FROM:<a@good.example>') == ['250 2.1.0 Ok']
            assert c.cmd('RCPT TO:<alice@example.test>') == [
                '450 4.7.1 Client host rejected: cannot find your reverse hostname, '
                '[192.0.2.10]']
        finally:
            c.close()
        srv.wait_log('connect from unknown[192.0.2.10]')
    finally:
        dns.close()


def test_client_gone_during_lookup(make, net):
    """Clients that hang up while their name is looked up, and a daemon
    stopped meanwhile, leave nothing behind (the sanitizer build checks
    the log in cleanup())."""
    dns = silent_dns(net)
    try:
        srv = make(RELAY_CF + 'dns_resolver_servers = 127.0.0.1:%d\n' % dns.getsockname()[1])
        for _ in range(3):
            srv.client(VERIFIED).close()
        c = srv.client(NO_PTR)
        c.sock.settimeout(30)
        try:
            # The lookups of the first clients end (time limit) while this
            # one waits; its greeting comes after theirs.
            assert c.reply()[0].startswith('220 ')
        finally:
            c.close()
        srv.wait_log('disconnect from unknown[192.0.2.11]')
        srv.wait_log('disconnect from unknown[192.0.2.10]')
        wait_for(lambda: srv.log_text().count('disconnect from unknown[192.0.2.10]') == 3,
                 what='three disconnect lines')
        # Stopped with lookups in progress.
        for _ in range(3):
            srv.client(VERIFIED).close()
        srv.stop()
        assert srv.proc.returncode == 0, srv.log_text()
    finally:
        dns.close()
