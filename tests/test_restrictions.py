"""Relay control and access policy of postern-smtpd: restriction lists,
address classes and recipient validation, DNS-based checks against a real
DNS server, per-client rate limits, the policy delegation client,
"posternctl policy explain" and the open-relay warnings of "posternctl
check".

The daemon and dnsmasq run in a private network namespace; "external"
clients (192.0.2.10, 192.0.2.11) connect from a second namespace over a
veth pair, loopback clients (127.0.0.1, in mynetworks) from inside the
server's namespace. See dns_helpers.py."""
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading

import pytest

import dns_helpers
import dovecot_helpers
from common import BUILD_DIR
from dns_helpers import CLIENT_ADDRS, SERVER_ADDR, Dnsmasq, RestrictNet, connect
from smtpd_helpers import QUEUE_DIRS, SMTPD, JournalSink, RawClient, Smtpd, wait_for

POSTERNCTL = os.path.join(BUILD_DIR, 'src', 'tools', 'posternctl', 'posternctl')
LISTED, UNLISTED = CLIENT_ADDRS         # 192.0.2.10 has DNS names and is block-listed

pytestmark = pytest.mark.skipif(not dns_helpers.available(),
                                reason='needs root, ip and dnsmasq')

DNS_RECORDS = [
    '--ptr-record=10.2.0.192.in-addr.arpa,client.example.net',
    '--host-record=client.example.net,192.0.2.10',
    '--mx-host=good.example,mx.good.example,10',
    '--host-record=mx.good.example,192.0.2.50',
    '--host-record=helo.good.example,192.0.2.10',
    '--host-record=10.2.0.192.rbl.test,127.0.0.2',
    '--txt-record=10.2.0.192.rbl.test,listed for testing',
    '--host-record=10.2.0.192.wl.test,127.0.0.5',
    '--host-record=bad.example.rhsbl.test,127.0.0.2',
    '--host-record=client.example.net.rhsbl.test,127.0.0.2',
]
LOCAL_DOMAINS = ['test', 'example', 'example.net', 'in-addr.arpa']

BASE_CF = '''\
myhostname = mx.example.test
mydomain = example.test
mydestination = $myhostname, example.test, localhost
relay_domains = relay.example.test
mynetworks = 127.0.0.0/8
local_recipient_maps = inline:{{ alice=1, postmaster=1 }}
virtual_alias_domains = valias.example.test
virtual_alias_maps = inline:{{ info@valias.example.test=alice }}
virtual_mailbox_domains = vmbox.example.test
virtual_mailbox_maps = inline:{{ bob@vmbox.example.test=bob/ }}
dns_resolver_servers = 127.0.0.1
queue_directory = {queue}
smtpd_error_sleep_time = 0
max_idle = 60s
'''
RELAY_CF = ('smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, '
            'reject_unauth_destination\n')


@pytest.fixture(scope='module')
def net():
    n = RestrictNet()
    tmp = tempfile.mkdtemp(prefix='postern-restrict-dns.')
    try:
        n.dns = Dnsmasq(n, tmp, LOCAL_DOMAINS, DNS_RECORDS)
        yield n
    finally:
        n.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


class NsSmtpd(Smtpd):
    """postern-smtpd in the server namespace, listening on port 25 of all
    its addresses, with its own configuration, queue and runtime directory
    (the anvil table)."""

    def __init__(self, net, main_cf='', service='smtpd', service_cf=None, port=25,
                 runtime=None, journal=False):
        self.net = net
        self.want_journal = journal
        self.tmp = tempfile.mkdtemp(prefix='postern-restrict-test.')
        self.confdir = os.path.join(self.tmp, 'conf')
        self.queue = os.path.join(self.tmp, 'queue')
        self.runtime = runtime or os.path.join(self.tmp, 'run')
        self.service = service
        self.port = port
        self.proc = None
        self.journal = None
        self.log_path = os.path.join(self.tmp, 'smtpd.log')
        os.makedirs(os.path.join(self.confdir, 'services.d'))
        os.makedirs(self.runtime, exist_ok=True)
        for d in QUEUE_DIRS:
            os.makedirs(os.path.join(self.queue, d))
        with open(os.path.join(self.confdir, 'main.cf'), 'w') as f:
            f.write(BASE_CF.format(queue=self.queue) + main_cf)
        if service_cf is not None:
            with open(os.path.join(self.confdir, 'services.d', service + '.cf'), 'w') as f:
                f.write(service_cf)

    def start(self):
        self.log = open(self.log_path, 'w')
        wrapper = []
        if self.want_journal:
            self.journal = JournalSink(os.path.join(self.tmp, 'journal'))
            wrapper = self.journal.wrapper()
        self.proc = self.net.popen(
            self.net.server,
            wrapper +
            ['systemd-socket-activate', '-l', '0.0.0.0:%d' % self.port,
             '--fdname=' + self.service,
             '-E', 'POSTERN_LOG_TARGET=' + ('journal' if self.want_journal else 'stderr'),
             '-E', 'POSTERN_QMGR_SOCKET=' + os.path.join(self.tmp, 'qmgr'),
             '-E', 'POSTERN_RUNTIME_DIR=' + self.runtime,
             '-E', 'ASAN_OPTIONS', '-E', 'UBSAN_OPTIONS',
             SMTPD, '--service=' + self.service, '-c', self.confdir],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, what='postern-smtpd in the namespace')
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError('postern-smtpd exited: ' + self.log_text())
        try:
            s = connect(self.net.server, '127.0.0.1', self.port, timeout=2)
        except OSError:
            return False
        try:
            return s.recv(1000).startswith(b'220')
        finally:
            s.close()

    def client(self, source=LISTED):
        """A raw client: from the client namespace (source 192.0.2.x), or
        from loopback inside the server namespace (source '127.0.0.1')."""
        if source == '127.0.0.1':
            sock = connect(self.net.server, '127.0.0.1', self.port)
        else:
            sock = connect(self.net.client, SERVER_ADDR, self.port, source)
        c = RawClient.__new__(RawClient)
        c.sock = sock
        c.buf = b''
        return c


@pytest.fixture
def make(net):
    made = []

    def make_(main_cf='', **kw):
        s = NsSmtpd(net, main_cf, **kw)
        made.append(s)
        return s.start()
    yield make_
    for s in made:
        s.cleanup()


def converse(srv, rcpt='alice@example.test', helo='client.example.net',
             sender='a@good.example', source=LISTED, ehlo=True):
    """One transaction up to RCPT; returns the first reply that is not a
    success (or the RCPT reply)."""
    c = srv.client(source)
    try:
        assert c.reply()[0].startswith('220')
        if helo is not None:
            r = c.cmd(('EHLO ' if ehlo else 'HELO ') + helo)
            if not r[-1].startswith('250'):
                return r[0]
        r = c.cmd('MAIL FROM:<%s>' % sender)
        if not r[0].startswith('250'):
            return r[0]
        return c.cmd('RCPT TO:<%s>' % rcpt)[0]
    finally:
        c.close()


# ---- relay control ----

@pytest.mark.parametrize('rcpt', [
    'user@remote.example',
    'user@remote.example.',                       # trailing dot
    'user%remote.example@example.test',           # percent hack
    'remote.example!user@example.test',           # bang path
    '"user@remote.example"@example.test',         # quoted local part
    '@mx.example.test,@example.test:user@remote.example',   # source route
    'user%remote.example@relay.example.test',     # routed through a relay domain
    'user@[192.0.2.99]',                          # foreign address literal
    'user@xn--bcher-kva.example',
])
def test_relay_denied_from_outside(make, rcpt):
    srv = make(RELAY_CF)
    reply = converse(srv, rcpt)
    assert reply.startswith('554 5.7.1 <') and reply.endswith('>: Relay access denied'), reply


def test_relay_denied_smtputf8(make):
    srv = make(RELAY_CF)
    c = srv.client()
    c.reply()
    c.cmd('EHLO client.example.net')
    assert c.cmd('MAIL FROM:<a@good.example> SMTPUTF8') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<us\u00e9r@b\u00fccher.example>') == [
        '554 5.7.1 <us\u00e9r@b\u00fccher.example>: Relay access denied']


def test_percent_hack_off_stays_local(make):
    srv = make(RELAY_CF + 'allow_percent_hack = no\n')
    assert converse(srv, 'user%remote.example@example.test') == (
        '550 5.1.1 <user%remote.example@example.test>: Recipient address rejected: '
        'User unknown in local recipient table')


def test_default_relay_restrictions_defer(make):
    srv = make()
    assert converse(srv, 'user@remote.example') == (
        '454 4.7.1 <user@remote.example>: Relay access denied')


@pytest.mark.parametrize('rcpt', ['user@remote.example', 'user%remote.example@example.test'])
def test_relay_allowed_from_mynetworks(make, rcpt):
    srv = make(RELAY_CF)
    assert converse(srv, rcpt, source='127.0.0.1') == '250 2.1.5 Ok'


@pytest.mark.skipif(not dovecot_helpers.available(), reason='no dovecot')
def test_relay_allowed_after_auth(make):
    tmp = tempfile.mkdtemp(prefix='postern-restrict-auth.')
    sock = os.path.join(tmp, 'auth')
    dov = dovecot_helpers.Dovecot(sock, {'alice': 'secret'}).start()
    try:
        srv = make(RELAY_CF + 'smtpd_sasl_auth_enable = yes\nsmtpd_sasl_path = %s\n' % sock)
        c = srv.client()
        c.reply()
        c.cmd('EHLO client.example.net')
        assert c.cmd('MAIL FROM:<a@good.example>') == ['250 2.1.0 Ok']
        assert c.cmd('RCPT TO:<user@remote.example>')[0].startswith('554 5.7.1')
        assert c.cmd('RSET') == ['250 2.0.0 Ok']
        assert c.cmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==') == ['235 2.7.0 Authentication successful']
        assert c.cmd('MAIL FROM:<a@good.example>') == ['250 2.1.0 Ok']
        assert c.cmd('RCPT TO:<user@remote.example>') == ['250 2.1.5 Ok']
        c.close()
    finally:
        dov.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- address classes and recipient validation ----

@pytest.mark.parametrize('rcpt,reply', [
    ('alice@example.test', '250 2.1.5 Ok'),
    ('alice+tag@example.test', None),
    ('Alice@MX.Example.Test.', '250 2.1.5 Ok'),
    ('postmaster', '250 2.1.5 Ok'),
    ('nobody@example.test', '550 5.1.1 <nobody@example.test>: Recipient address rejected: '
                            'User unknown in local recipient table'),
    ('alice@[198.51.100.1]', '250 2.1.5 Ok'),
    ('nobody@[198.51.100.1]', '550 5.1.1 <nobody@[198.51.100.1]>: Recipient address rejected: '
                              'User unknown in local recipient table'),
    ('info@valias.example.test', '250 2.1.5 Ok'),
    ('x@valias.example.test', '550 5.1.1 <x@valias.example.test>: Recipient address rejected: '
                              'User unknown in virtual alias table'),
    ('bob@vmbox.example.test', '250 2.1.5 Ok'),
    ('x@vmbox.example.test', '550 5.1.1 <x@vmbox.example.test>: Recipient address rejected: '
                             'User unknown in virtual mailbox table'),
    ('x@relay.example.test', '550 5.1.1 <x@relay.example.test>: Recipient address rejected: '
                             'User unknown in relay recipient table'),
    ('ok@relay.example.test', '250 2.1.5 Ok'),
])
def test_recipient_validation(make, rcpt, reply):
    srv = make(RELAY_CF + 'recipient_delimiter = +\n'
               'relay_recipient_maps = inline:{ ok@relay.example.test=1 }\n')
    assert converse(srv, rcpt) == (reply or '250 2.1.5 Ok')


def test_unlisted_recipient_off(make):
    srv = make(RELAY_CF + 'smtpd_reject_unlisted_recipient = no\n')
    assert converse(srv, 'nobody@example.test') == '250 2.1.5 Ok'


def test_recipient_table_failure_defers(make):
    srv = make(RELAY_CF + 'local_recipient_maps = hash:/nonexistent/table\n')
    assert converse(srv, 'alice@example.test') == (
        '451 4.3.0 <alice@example.test>: Temporary lookup failure')


# ---- restrictions: each fires in one case and not in the other ----

R = 'smtpd_recipient_restrictions'
CASES = [
    # (id, main.cf, fire kwargs, expected reply, pass kwargs)
    ('reject', 'smtpd_client_restrictions = permit_mynetworks, reject\n', {},
     '554 5.7.1 <client.example.net[192.0.2.10]>: Client host rejected: Access denied',
     {'source': '127.0.0.1'}),
    ('defer', 'smtpd_sender_restrictions = check_sender_access inline:{a@good.example=OK}, '
              'defer\n', {'sender': 'b@good.example'},
     '450 4.7.1 <b@good.example>: Sender address rejected: Try again later', {}),
    ('reject_invalid_helo_hostname', 'smtpd_helo_restrictions = reject_invalid_helo_hostname\n',
     {'helo': 'bad_name!'}, '501 5.5.2 <bad_name!>: Helo command rejected: Invalid name', {}),
    ('reject_invalid_hostname', 'smtpd_helo_restrictions = reject_invalid_hostname\n',
     {'helo': 'a..b'}, '501 5.5.2 <a..b>: Helo command rejected: Invalid name',
     {'helo': '[192.0.2.10]'}),
    ('reject_non_fqdn_helo_hostname', 'smtpd_helo_restrictions = reject_non_fqdn_helo_hostname\n',
     {'helo': 'localbox'},
     '504 5.5.2 <localbox>: Helo command rejected: need fully-qualified hostname', {}),
    ('reject_unknown_helo_hostname', 'smtpd_helo_restrictions = reject_unknown_helo_hostname\n',
     {'helo': 'nohost.example'}, '450 4.7.1 <nohost.example>: Helo command rejected: Host not found',
     {'helo': 'helo.good.example'}),
    ('reject_non_fqdn_sender', 'smtpd_sender_restrictions = reject_non_fqdn_sender\n',
     {'sender': 'user'}, '504 5.5.2 <user>: Sender address rejected: need fully-qualified address',
     {}),
    ('reject_non_fqdn_recipient', R + ' = reject_non_fqdn_recipient\n', {'rcpt': 'alice'},
     '504 5.5.2 <alice>: Recipient address rejected: need fully-qualified address', {}),
    ('reject_unknown_sender_domain', 'smtpd_sender_restrictions = reject_unknown_sender_domain\n',
     {'sender': 'a@gone.example'},
     '450 4.1.8 <a@gone.example>: Sender address rejected: Domain not found', {}),
    ('reject_unknown_sender_domain_550',
     'smtpd_sender_restrictions = reject_unknown_sender_domain\nunknown_address_reject_code = 550\n',
     {'sender': 'a@gone.example'},
     '550 5.1.8 <a@gone.example>: Sender address rejected: Domain not found', {}),
    ('reject_unknown_recipient_domain', R + ' = reject_unknown_recipient_domain\n',
     {'rcpt': 'x@gone.example', 'source': '127.0.0.1'},
     '450 4.1.2 <x@gone.example>: Recipient address rejected: Domain not found',
     {'rcpt': 'x@good.example', 'source': '127.0.0.1'}),
    ('reject_unknown_client_hostname',
     'smtpd_client_restrictions = reject_unknown_client_hostname\n', {'source': UNLISTED},
     '450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.11]', {}),
    ('reject_unknown_reverse_client_hostname',
     'smtpd_client_restrictions = reject_unknown_reverse_client_hostname\n', {'source': UNLISTED},
     '450 4.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.11]', {}),
    ('reject_rbl_client', 'smtpd_client_restrictions = reject_rbl_client rbl.test\n', {},
     '554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using rbl.test; '
     'listed for testing', {'source': UNLISTED}),
    ('reject_rbl_client_filter',
     'smtpd_client_restrictions = reject_rbl_client rbl.test=127.0.0.[2..3]\n', {},
     '554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using rbl.test; '
     'listed for testing', {'source': UNLISTED}),
    ('reject_rhsbl_sender', 'smtpd_sender_restrictions = reject_rhsbl_sender rhsbl.test\n',
     {'sender': 'a@bad.example'},
     '554 5.7.1 Service unavailable; Sender address [bad.example] blocked using rhsbl.test', {}),
    ('reject_rhsbl_client', 'smtpd_client_restrictions = reject_rhsbl_client rhsbl.test\n', {},
     '554 5.7.1 Service unavailable; Client host [client.example.net] blocked using rhsbl.test',
     {'source': UNLISTED}),
    ('permit_dnswl_client',
     'smtpd_relay_restrictions = permit_dnswl_client wl.test, reject_unauth_destination\n',
     {'source': UNLISTED, 'rcpt': 'x@remote.example'},
     '554 5.7.1 <x@remote.example>: Relay access denied', {'rcpt': 'x@remote.example'}),
    ('check_client_access',
     'smtpd_client_restrictions = check_client_access inline:{ {192.0.2.10 = REJECT go away} }\n', {},
     '554 5.7.1 <client.example.net[192.0.2.10]>: Client host rejected: go away',
     {'source': UNLISTED}),
    ('check_client_access_name',
     'smtpd_client_restrictions = check_client_access inline:{example.net=REJECT}\n', {},
     '554 5.7.1 <client.example.net[192.0.2.10]>: Client host rejected: Access denied',
     {'source': UNLISTED}),
    ('check_helo_access', 'smtpd_helo_restrictions = check_helo_access inline:{evil.example=REJECT}\n',
     {'helo': 'evil.example'}, '554 5.7.1 <evil.example>: Helo command rejected: Access denied', {}),
    ('check_sender_access',
     'smtpd_sender_restrictions = check_sender_access inline:{spammer@good.example=REJECT}\n',
     {'sender': 'spammer@good.example'},
     '554 5.7.1 <spammer@good.example>: Sender address rejected: Access denied', {}),
    ('check_sender_access_domain',
     'smtpd_sender_restrictions = check_sender_access inline:{ {good.example = DEFER later} }\n',
     {'sender': 'x@sub.good.example'},
     '450 4.7.1 <x@sub.good.example>: Sender address rejected: later', {'sender': 'x@bad.example'}),
    ('check_recipient_access',
     R + ' = check_recipient_access inline:{ {alice@example.test = 550 5.2.1 mailbox disabled} }\n',
     {}, '550 5.2.1 <alice@example.test>: Recipient address rejected: mailbox disabled',
     {'rcpt': 'postmaster@example.test'}),
    ('check_recipient_access_numeric_4xx',
     R + ' = check_recipient_access inline:{ {alice@example.test = 451 try later} }\n', {},
     '451 4.7.1 <alice@example.test>: Recipient address rejected: try later',
     {'rcpt': 'postmaster@example.test'}),
    ('check_recipient_access_dunno',
     'smtpd_relay_restrictions = check_recipient_access inline:{x@remote.example=DUNNO, '
     'remote.example=OK}, reject_unauth_destination\n', {'rcpt': 'x@remote.example'},
     '554 5.7.1 <x@remote.example>: Relay access denied', {'rcpt': 'y@remote.example'}),
    ('reject_unlisted_recipient',
     'smtpd_reject_unlisted_recipient = no\n' + R + ' = reject_unlisted_recipient\n',
     {'rcpt': 'nobody@example.test'},
     '550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in local '
     'recipient table', {}),
    ('reject_unlisted_sender', 'smtpd_sender_restrictions = reject_unlisted_sender\n',
     {'sender': 'nobody@example.test'},
     '550 5.1.0 <nobody@example.test>: Sender address rejected: User unknown in local '
     'recipient table', {'sender': 'alice@example.test'}),
    ('restriction_class',
     'smtpd_restriction_classes = strict\nstrict = reject_non_fqdn_helo_hostname\n'
     'smtpd_helo_restrictions = check_helo_access inline:{box=strict}\n',
     {'helo': 'box'}, '504 5.5.2 <box>: Helo command rejected: need fully-qualified hostname',
     {'helo': 'otherbox'}),
    ('permit_auth_destination',
     'smtpd_relay_restrictions = permit_auth_destination, reject\n',
     {'rcpt': 'x@remote.example'}, '554 5.7.1 <x@remote.example>: Recipient address rejected: '
                                   'Access denied', {}),
    ('smtpd_helo_required', 'smtpd_helo_required = yes\n', {'helo': None},
     '503 5.5.1 Error: send HELO/EHLO first', {}),
]


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_restriction_fires(make, case):
    _, cf, fire, reply, _ = case
    srv = make(RELAY_CF + cf)
    assert converse(srv, **fire) == reply
    if reply.startswith(('4', '5')) and not reply.startswith('503'):
        srv.wait_log('reject: ')


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_restriction_does_not_fire(make, case):
    _, cf, _, _, ok = case
    srv = make(RELAY_CF + cf)
    assert converse(srv, **ok) == '250 2.1.5 Ok'


def test_dns_down_defers_instead_of_passing(make):
    """A DNS check that cannot get an answer defers the mail (Postfix's
    defer_if_permit with 450 4.1.8) instead of letting it through or
    rejecting it for good."""
    srv = make(RELAY_CF + 'smtpd_sender_restrictions = reject_unknown_sender_domain\n'
               'dns_resolver_servers = 127.0.0.1:1\n')
    assert converse(srv, sender='a@good.example') == (
        '450 4.1.8 <a@good.example>: Sender address rejected: Domain not found')
    srv.wait_log('reject: ')


DENY_LISTED = 'smtpd_client_restrictions = check_client_access inline:{192.0.2.10=REJECT}\n'


def test_delay_reject_no_rejects_client_at_connect(make):
    """smtpd_delay_reject = no: the client restrictions run at connect and
    their rejection replaces the greeting; every command but QUIT then
    gets 503, as in Postfix's smtpd."""
    srv = make(RELAY_CF + 'smtpd_delay_reject = no\n' + DENY_LISTED)
    c = srv.client()
    assert c.reply() == [
        '554 5.7.1 <client.example.net[192.0.2.10]>: Client host rejected: Access denied']
    assert c.cmd('EHLO client.example.net') == [
        '503 5.7.0 Error: access denied for client.example.net[192.0.2.10]']
    assert c.cmd('MAIL FROM:<a@good.example>') == [
        '503 5.7.0 Error: access denied for client.example.net[192.0.2.10]']
    assert c.cmd('QUIT') == ['221 2.0.0 Bye']
    c.close()
    srv.wait_log('NOQUEUE: reject: CONNECT from client.example.net[192.0.2.10]: 554 5.7.1 '
                 '<client.example.net[192.0.2.10]>: Client host rejected: Access denied')
    # Another client is greeted and gets through.
    assert converse(srv, source=UNLISTED) == '250 2.1.5 Ok'


def test_delay_reject_no_rejects_sender_at_mail(make):
    srv = make(RELAY_CF + 'smtpd_delay_reject = no\n'
               'smtpd_sender_restrictions = check_sender_access inline:{a@bad.example=REJECT}\n')
    c = srv.client()
    assert c.reply()[0].startswith('220 ')
    assert c.cmd('HELO client.example.net') == ['250 mx.example.test']
    assert c.cmd('MAIL FROM:<a@bad.example>') == [
        '554 5.7.1 <a@bad.example>: Sender address rejected: Access denied']
    assert c.cmd('MAIL FROM:<a@good.example>') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<alice@example.test>') == ['250 2.1.5 Ok']
    c.close()


def test_delay_reject_yes_rejects_client_at_rcpt(make):
    """The default smtpd_delay_reject = yes: the client rejection waits for
    RCPT, HELO and MAIL succeed."""
    srv = make(RELAY_CF + DENY_LISTED)
    c = srv.client()
    assert c.reply()[0].startswith('220 ')
    assert c.cmd('HELO client.example.net') == ['250 mx.example.test']
    assert c.cmd('MAIL FROM:<a@good.example>') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<alice@example.test>') == [
        '554 5.7.1 <client.example.net[192.0.2.10]>: Client host rejected: Access denied']
    c.close()
    srv.wait_log('NOQUEUE: reject: RCPT from client.example.net[192.0.2.10]: 554 5.7.1')


def test_delay_reject_no_rejects_at_helo(make):
    srv = make(RELAY_CF + 'smtpd_delay_reject = no\nsmtpd_helo_restrictions = '
               'reject_non_fqdn_helo_hostname\n')
    c = srv.client()
    c.reply()
    assert c.cmd('HELO box') == [
        '504 5.5.2 <box>: Helo command rejected: need fully-qualified hostname']
    assert c.cmd('HELO box.example.net') == ['250 mx.example.test']


def test_warn_if_reject(make):
    srv = make(RELAY_CF + 'smtpd_helo_restrictions = warn_if_reject, '
               'reject_non_fqdn_helo_hostname\n')
    assert converse(srv, helo='box') == '250 2.1.5 Ok'
    srv.wait_log('reject_warning: RCPT from client.example.net[192.0.2.10]: 504 5.5.2 <box>: Helo command '
                 'rejected: need fully-qualified hostname')


def send_message(srv, rcpt='alice@example.test', source=LISTED, sender='a@good.example'):
    c = srv.client(source)
    c.reply()
    c.cmd('EHLO client.example.net')
    assert c.cmd('MAIL FROM:<%s>' % sender) == ['250 2.1.0 Ok']
    r = c.cmd('RCPT TO:<%s>' % rcpt)
    if not r[0].startswith('250'):
        return r[0]
    r = c.cmd('DATA')
    if not r[0].startswith('354'):
        return r[0]
    r = c.cmd('Subject: test\r\n\r\nhello\r\n.')
    c.cmd('QUIT')
    return r[0]


@pytest.mark.parametrize('action', ['HOLD', 'DISCARD', 'WARN watch this', 'PREPEND X-Seen: yes',
                                    'REDIRECT x@elsewhere.example', 'FILTER smtp:[192.0.2.1]'])
def test_access_actions(make, action):
    srv = make(RELAY_CF + R + ' = check_recipient_access inline:{ {alice@example.test = %s} }\n'
               % action)
    reply = send_message(srv)
    assert reply.startswith('250 2.0.0 Ok: queued as '), reply
    qid = reply.split()[-1]
    verb = action.split()[0]
    if verb == 'HOLD':
        assert srv.queue_files('hold') == [qid]
        srv.wait_log('hold: RCPT from')
    elif verb == 'DISCARD':
        assert srv.queue_files('incoming') == [] and srv.queue_files('hold') == []
        srv.wait_log('discard: RCPT from')
    else:
        wait_for(lambda: srv.queue_files('incoming') == [qid], what='queue file')
        _, content, env = srv.read_queue_file(qid)
        assert [r[3] for r in env['rcpt']] == ['alice@example.test']
        if verb == 'PREPEND':
            assert b'\nX-Seen: yes\n' in content
        elif verb == 'WARN':
            srv.wait_log('warn: RCPT from client.example.net[192.0.2.10]: <alice@example.test>: Recipient '
                         'address watch this')
        else:
            srv.wait_log('%s action is not supported' % verb)


def test_data_and_end_of_data_restrictions(make):
    srv = make(RELAY_CF + 'smtpd_data_restrictions = check_sender_access '
               'inline:{data@good.example=REJECT}\n'
               'smtpd_end_of_data_restrictions = check_sender_access '
               'inline:{ {eod@good.example = REJECT no thanks} }\n')
    assert send_message(srv, sender='data@good.example') == (
        '554 5.7.1 <data@good.example>: Sender address rejected: Access denied')
    assert send_message(srv, sender='eod@good.example') == (
        '554 5.7.1 <eod@good.example>: Sender address rejected: no thanks')
    assert send_message(srv, sender='ok@good.example').startswith('250 2.0.0 Ok: queued as')
    assert len(srv.queue_files()) == 1


@pytest.mark.parametrize('ehlo,pipelined', [(False, True), (True, False)])
def test_reject_unauth_pipelining(make, ehlo, pipelined):
    srv = make(RELAY_CF + 'smtpd_forbid_unauth_pipelining = no\n'
               'smtpd_data_restrictions = reject_unauth_pipelining\n')
    c = srv.client()
    c.reply()
    c.cmd(('EHLO ' if ehlo else 'HELO ') + 'client.example.net')
    cmds = ['MAIL FROM:<a@good.example>', 'RCPT TO:<alice@example.test>', 'DATA']
    if pipelined:
        c.send(''.join(x + '\r\n' for x in cmds))
        replies = [c.reply()[0] for _ in cmds]
    else:
        replies = [c.cmd(x)[0] for x in cmds]
    if pipelined:
        assert replies[2] == ('503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP '
                              'command pipelining')
    else:
        assert replies[2].startswith('354')


def test_rbl_reply_maps(make, tmp_path):
    replies = tmp_path / 'rbl_replies'
    replies.write_text('rbl.test $rbl_code 5.7.9 Listed by $rbl_domain: '
                       '$rbl_what${rbl_reason?, why: $rbl_reason}\n')
    srv = make(RELAY_CF + 'smtpd_client_restrictions = reject_rbl_client rbl.test\n'
               'rbl_reply_maps = texthash:%s\n' % replies)
    assert converse(srv) == ('554 5.7.9 Listed by rbl.test: 192.0.2.10, why: listed for testing')


def test_broken_restriction_defers(make):
    srv = make(RELAY_CF + R + ' = reject_nonsense_restriction\n')
    assert converse(srv) == '451 4.3.5 Server configuration error'


def test_no_relay_control_defers(make):
    srv = make('smtpd_relay_restrictions =\n' + R + ' = permit_mynetworks\n')
    assert converse(srv) == '451 4.3.5 Server configuration error'


# ---- policy delegation ----

class PolicyServer:
    def __init__(self, path):
        self.path = path
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                buf = b''
                while b'\n\n' not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                attrs = dict(l.split('=', 1) for l in buf.decode().split('\n') if '=' in l)
                self.requests.append(attrs)
                if attrs.get('sender') == 'blocked@good.example':
                    conn.sendall(b'action=REJECT policy says no\n\n')
                else:
                    conn.sendall(b'action=DUNNO\n\n')

    def close(self):
        self.sock.close()


def test_check_policy_service(make):
    tmp = tempfile.mkdtemp(prefix='postern-policy.')
    server = PolicyServer(os.path.join(tmp, 'policy'))
    try:
        srv = make(RELAY_CF + R + ' = check_policy_service unix:%s\n' % server.path)
        assert converse(srv, sender='blocked@good.example') == (
            '554 5.7.1 <alice@example.test>: Recipient address rejected: policy says no')
        assert converse(srv, sender='fine@good.example') == '250 2.1.5 Ok'
        req = server.requests[0]
        assert req['request'] == 'smtpd_access_policy'
        assert req['protocol_state'] == 'RCPT'
        assert req['client_address'] == '192.0.2.10'
        assert req['client_name'] == 'client.example.net'
        assert req['recipient'] == 'alice@example.test'
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_check_policy_service_down(make):
    srv = make(RELAY_CF + R + ' = check_policy_service unix:/nonexistent/policy\n')
    # smtpd_policy_service_default_action, applied as Postfix applies it.
    assert converse(srv) == ('451 4.3.5 <alice@example.test>: Recipient address rejected: '
                             'Server configuration problem')
    srv.wait_log('problem talking to policy server')


# ---- rate and connection limits ----

UNIT = 2.0


def wait_reset(attempt, expect):
    """Retries attempt() until it returns expect, within the time unit and
    a margin (the window restarts with the first event after it ends)."""
    return wait_for(lambda: attempt() == expect, timeout=UNIT + 3, what='limit reset')


def fresh(srv, *cmds):
    """The reply to the last of cmds, on a new connection (so that polling
    for a reset does not run into smtpd_hard_error_limit)."""
    c = srv.client()
    try:
        c.reply()
        c.cmd('EHLO client.example.net')
        for x in cmds:
            r = c.cmd(x)[0]
        return r
    finally:
        c.close()


def test_message_rate_limit(make):
    srv = make(RELAY_CF + 'anvil_rate_time_unit = 2s\nsmtpd_client_message_rate_limit = 2\n')
    c = srv.client()
    c.reply()
    c.cmd('EHLO client.example.net')

    def mail():
        r = c.cmd('MAIL FROM:<a@good.example>')[0]
        c.cmd('RSET')
        return r
    assert mail() == '250 2.1.0 Ok'
    assert mail() == '250 2.1.0 Ok'
    assert mail() == '450 4.7.1 Error: too much mail from 192.0.2.10'
    c.close()
    srv.wait_log('Message delivery request rate limit exceeded: 3 from client.example.net[192.0.2.10] for '
                 'service smtpd (smtpd_client_message_rate_limit)')
    wait_reset(lambda: fresh(srv, 'MAIL FROM:<a@good.example>'), '250 2.1.0 Ok')


def test_recipient_rate_limit(make):
    srv = make(RELAY_CF + 'anvil_rate_time_unit = 2s\nsmtpd_client_recipient_rate_limit = 2\n')
    c = srv.client()
    c.reply()
    c.cmd('EHLO client.example.net')
    c.cmd('MAIL FROM:<a@good.example>')

    def rcpt():
        return c.cmd('RCPT TO:<alice@example.test>')[0]
    assert [rcpt(), rcpt()] == ['250 2.1.5 Ok'] * 2
    assert rcpt() == '450 4.7.1 Error: too many recipients from 192.0.2.10'
    c.close()
    srv.wait_log('Recipient address rate limit exceeded: 3 from client.example.net[192.0.2.10]')
    wait_reset(lambda: fresh(srv, 'MAIL FROM:<a@good.example>', 'RCPT TO:<alice@example.test>'),
               '250 2.1.5 Ok')


def test_connection_rate_limit(make):
    srv = make(RELAY_CF + 'anvil_rate_time_unit = 2s\nsmtpd_client_connection_rate_limit = 2\n')

    def banner():
        c = srv.client()
        try:
            return c.reply()[0]
        finally:
            c.close()
    assert banner()[:3] == '220'
    assert banner()[:3] == '220'
    assert banner() == '421 4.7.0 mx.example.test Error: too many connections from 192.0.2.10'
    srv.wait_log('Connection rate limit exceeded: 3 from client.example.net[192.0.2.10] for service smtpd')
    wait_reset(lambda: banner()[:3], '220')
    # Clients in mynetworks are exempt (smtpd_client_event_limit_exceptions).
    for _ in range(4):
        c = srv.client('127.0.0.1')
        assert c.reply()[0].startswith('220')
        c.close()


def test_connection_count_limit_across_services(make, tmp_path):
    run = str(tmp_path / 'run')
    cf = RELAY_CF + 'smtpd_client_connection_count_limit = 1\n'
    a = make(cf, runtime=run)
    b = make(cf, service='submission', port=587, runtime=run)
    first = a.client()
    assert first.reply()[0].startswith('220')
    second = b.client()
    assert second.reply() == [
        '421 4.7.0 mx.example.test Error: too many connections from 192.0.2.10']
    second.close()
    b.wait_log('Connection concurrency limit exceeded: 2 from client.example.net[192.0.2.10] for service '
               'submission')
    first.cmd('QUIT')
    first.close()

    def ok():
        c = b.client()
        try:
            return c.reply()[0][:3]
        finally:
            c.close()
    wait_for(lambda: ok() == '220', what='connection slot freed')


def test_new_tls_session_rate_limit(make, tmp_path):
    key, cert = str(tmp_path / 'key.pem'), str(tmp_path / 'cert.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj',
                    '/CN=mx.example.test', '-keyout', key, '-out', cert],
                   check=True, capture_output=True)
    srv = make(RELAY_CF + 'smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\n'
               'smtpd_tls_key_file = %s\nanvil_rate_time_unit = 2s\n'
               'smtpd_client_new_tls_session_rate_limit = 1\n' % (cert, key))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def starttls(then_mail=False):
        c = srv.client()
        try:
            c.reply()
            c.cmd('EHLO client.example.net')
            r = c.cmd('STARTTLS')[0]
            if r.startswith('220'):
                ctx.wrap_socket(c.sock).close()
            elif then_mail:
                # Refused STARTTLS: the session goes on in plaintext.
                assert c.cmd('MAIL FROM:<a@good.example>') == ['250 2.1.0 Ok']
                assert c.cmd('RCPT TO:<alice@example.test>') == ['250 2.1.5 Ok']
                assert c.cmd('QUIT') == ['221 2.0.0 Bye']
            return r
        finally:
            c.close()
    assert starttls().startswith('220')
    assert starttls(then_mail=True) == '454 4.7.0 Error: too many new TLS sessions from 192.0.2.10'
    srv.wait_log('New TLS session rate limit exceeded: 2 from client.example.net[192.0.2.10]')
    wait_reset(lambda: starttls()[:3], '220')


@pytest.mark.skipif(not dovecot_helpers.available(), reason='no dovecot')
def test_auth_rate_limit(make):
    tmp = tempfile.mkdtemp(prefix='postern-restrict-auth.')
    sock = os.path.join(tmp, 'auth')
    dov = dovecot_helpers.Dovecot(sock, {'alice': 'secret'}).start()
    try:
        srv = make(RELAY_CF + 'smtpd_sasl_auth_enable = yes\nsmtpd_sasl_path = %s\n'
                   'anvil_rate_time_unit = 2s\nsmtpd_client_auth_rate_limit = 1\n' % sock)
        c = srv.client()
        c.reply()
        c.cmd('EHLO client.example.net')
        assert c.cmd('AUTH PLAIN AGFsaWNlAHdyb25n')[0].startswith('535')
        assert c.cmd('AUTH PLAIN AGFsaWNlAHdyb25n') == [
            '450 4.7.1 Error: too many AUTH commands from 192.0.2.10']
        c.close()
        srv.wait_log('AUTH command rate limit exceeded: 2 from client.example.net[192.0.2.10] '
                     'for service smtpd (smtpd_client_auth_rate_limit)')
        wait_reset(lambda: fresh(srv, 'AUTH PLAIN AGFsaWNlAHNlY3JldA==')[:3], '235')
    finally:
        dov.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- posternctl policy explain and check ----

def write_conf(tmp_path, main_cf, services=None):
    conf = tmp_path / 'conf'
    (conf / 'services.d').mkdir(parents=True)
    (conf / 'main.cf').write_text(main_cf)
    for name, text in (services or {}).items():
        (conf / 'services.d' / (name + '.cf')).write_text(text)
    return str(conf)


def posternctl(*args):
    return subprocess.run([POSTERNCTL] + list(args), capture_output=True, text=True, timeout=60)


EXPLAIN_CF = '''\
myhostname = mx.example.test
mydestination = $myhostname, example.test
mynetworks = 127.0.0.0/8
local_recipient_maps = inline:{ alice=1 }
'''


def test_policy_explain_relay_denied(tmp_path):
    conf = write_conf(tmp_path, EXPLAIN_CF)
    r = posternctl('policy', 'explain', '-c', conf, '--client', '192.0.2.10', '--helo',
                   'client.example.net', '--from', 'x@good.example', '--to', 'a@b.example',
                   '--no-dns')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        'smtpd_relay_restrictions: permit_mynetworks: no match (192.0.2.10 not in mynetworks)',
        'smtpd_relay_restrictions: permit_sasl_authenticated: no match',
        'smtpd_relay_restrictions: defer_unauth_destination: reject: 454 4.7.1 <a@b.example>: '
        'Relay access denied',
        'verdict: reject (454 4.7.1 <a@b.example>: Relay access denied)',
    ]


def test_policy_explain_sasl_and_json(tmp_path):
    conf = write_conf(tmp_path, EXPLAIN_CF)
    r = posternctl('policy', 'explain', '-c', conf, '--client', '192.0.2.10', '--sasl', 'alice',
                   '--to', 'a@b.example', '--json', '--no-dns')
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out['verdict'] == 'accept' and out['reply'] is None
    assert {'stage': 'RCPT', 'list': 'smtpd_relay_restrictions',
            'step': 'permit_sasl_authenticated',
            'outcome': 'permit (authenticated as alice)'} in out['steps']


def test_policy_explain_sender_login_mismatch(tmp_path):
    """The sender login checks as posternctl policy explain shows them:
    the owner passes, another login and no login are refused with
    Postfix's replies, a sender without owner passes the "known" variant."""
    conf = write_conf(tmp_path, EXPLAIN_CF +
                      'smtpd_sender_login_maps = inline:{ alice@example.test=alice, '
                      '{ @team.example = bob, carol } }\n'
                      'smtpd_sender_restrictions = reject_known_sender_login_mismatch, '
                      'reject_sender_login_mismatch\n')

    def explain(sender, *login):
        r = posternctl('policy', 'explain', '-c', conf, '--client', '192.0.2.10', '--from',
                       sender, '--to', 'alice@example.test', '--no-dns', *login)
        assert r.returncode == 0, r.stderr
        return [line for line in r.stdout.splitlines()
                if line.startswith(('smtpd_sender_restrictions', 'verdict'))]
    assert explain('Alice@example.test', '--sasl', 'alice') == [
        'smtpd_sender_restrictions: reject_known_sender_login_mismatch: no match '
        '(Alice@example.test is owned by alice)',
        'smtpd_sender_restrictions: reject_sender_login_mismatch: no match '
        '(Alice@example.test is owned by alice)',
        'verdict: accept']
    assert explain('x@team.example', '--sasl', 'alice')[0] == (
        'smtpd_sender_restrictions: reject_known_sender_login_mismatch: reject: 553 5.7.1 '
        '<x@team.example>: Sender address rejected: not owned by user alice')
    assert explain('x@team.example', '--sasl', 'carol')[-1] == 'verdict: accept'
    assert explain('x@team.example')[-1] == (
        'verdict: reject (553 5.7.1 <x@team.example>: Sender address rejected: not logged in)')
    assert explain('x@other.example', '--sasl', 'alice') == [
        'smtpd_sender_restrictions: reject_known_sender_login_mismatch: no match '
        '(x@other.example has no owner)',
        'smtpd_sender_restrictions: reject_sender_login_mismatch: reject: 553 5.7.1 '
        '<x@other.example>: Sender address rejected: not owned by user alice',
        'verdict: reject (553 5.7.1 <x@other.example>: Sender address rejected: not owned by '
        'user alice)']


def test_policy_explain_unknown_user_and_dns(net, tmp_path):
    conf = write_conf(tmp_path, EXPLAIN_CF + 'dns_resolver_servers = 127.0.0.1\n'
                      'smtpd_client_restrictions = reject_rbl_client rbl.test\n')
    r = subprocess.run(['ip', 'netns', 'exec', net.server, POSTERNCTL, 'policy', 'explain',
                        '-c', conf, '--client', '192.0.2.11', '--to', 'bob@example.test'],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert 'smtpd_client_restrictions: reject_rbl_client rbl.test: no match (192.0.2.11 not ' \
           'listed in rbl.test)' in lines
    assert 'smtpd_relay_restrictions: defer_unauth_destination: no match (example.test is a ' \
           'local domain)' in lines
    assert lines[-1] == ('verdict: reject (550 5.1.1 <bob@example.test>: Recipient address '
                         'rejected: User unknown in local recipient table)')
    r = posternctl('policy', 'explain', '-c', conf, '--client', '192.0.2.10', '--to',
                   'alice@example.test', '--no-dns')
    assert 'smtpd_client_restrictions: reject_rbl_client rbl.test: skipped (needs DNS)' in \
        r.stdout.splitlines()


SAFE_CF = 'mynetworks = 127.0.0.0/8\n'


@pytest.mark.parametrize('cf,line,text', [
    ('mynetworks = 127.0.0.0/8\n# the tutorial\'s mistake\n'
     'smtpd_relay_restrictions = permit, reject_unauth_destination\n', 3,
     'open relay: smtpd_relay_restrictions: "permit" comes before reject_unauth_destination'),
    ('mynetworks = 127.0.0.0/8\nsmtpd_relay_restrictions = permit_mynetworks,\n'
     '  check_sender_access inline:{x@y.example=OK}, reject_unauth_destination\n', 2,
     'open relay: smtpd_relay_restrictions: "check_sender_access inline:{x@y.example=OK}" comes '
     'before reject_unauth_destination'),
    ('smtpd_relay_restrictions =\nsmtpd_recipient_restrictions = permit_mynetworks, permit\n', 2,
     'open relay: smtpd_recipient_restrictions: "permit" comes before any relay control'),
    ('mynetworks = 0.0.0.0/0\n', 1, 'open relay: mynetworks: "0.0.0.0/0" is the whole Internet'),
    ('mynetworks = 127.0.0.0/8, [::]/0\n', 1, 'open relay: mynetworks: "[::]/0" is the whole'),
    ('mynetworks_style = class\n', 1, 'open relay: mynetworks_style = class'),
    ('mynetworks = 127.0.0.0/8\nrelay_domains = *\n', 2,
     'open relay: relay_domains: "*" matches every domain'),
])
def test_check_reports_open_relay(tmp_path, cf, line, text):
    conf = write_conf(tmp_path, cf)
    r = posternctl('check', '-c', conf)
    assert '%s/main.cf:%d: warning: %s' % (conf, line, text) in r.stderr, r.stderr
    assert '(services smtpd, submission, smtps)' in r.stderr


def test_check_reports_service_override(tmp_path):
    conf = write_conf(tmp_path, SAFE_CF, {
        'submission': 'smtpd_relay_restrictions = permit, reject_unauth_destination\n'})
    r = posternctl('check', '-c', conf)
    assert ('%s/services.d/submission.cf:1: warning: open relay: smtpd_relay_restrictions: '
            '"permit" comes before reject_unauth_destination: a client outside mynetworks can '
            'relay to any destination (service submission)' % conf) in r.stderr, r.stderr
    assert 'service smtpd' not in r.stderr


def test_check_quiet_for_safe_config(tmp_path):
    conf = write_conf(tmp_path, SAFE_CF + 'smtpd_relay_restrictions = permit_mynetworks, '
                      'permit_sasl_authenticated, reject_unauth_destination\n')
    r = posternctl('check', '-c', conf)
    assert 'open relay' not in r.stderr, r.stderr


def test_check_reports_policy_errors(tmp_path):
    """Problems of the restriction engine reach posternctl check with the
    file and line of the parameter (not only the daemon's log)."""
    conf = write_conf(tmp_path, SAFE_CF + 'smtpd_client_restrictions = permit_mynetworks,\n'
                      '  reject_bogus_thing\n'
                      'smtpd_client_event_limit_exceptions = 127.0.0.1 trusted.example.net\n')
    r = posternctl('check', '-c', conf)
    assert r.returncode == 1, r.stderr
    assert ('%s/main.cf:2: error: smtpd_client_restrictions: unknown restriction '
            '"reject_bogus_thing" (services smtpd, submission, smtps)' % conf) in r.stderr, r.stderr
    assert ('%s/main.cf:4: warning: smtpd_client_event_limit_exceptions: host name '
            '"trusted.example.net" is ignored' % conf) in r.stderr, r.stderr


def test_mynetworks_host_name_matches_verified_name(make):
    """A host name in mynetworks matches the client's verified name, as in
    Postfix (namadr list): 192.0.2.10 is client.example.net forward and
    reverse, 192.0.2.11 has no name."""
    srv = make(RELAY_CF + 'mynetworks = 127.0.0.0/8 client.example.net\n')
    assert converse(srv, 'user@remote.example') == '250 2.1.5 Ok'
    assert converse(srv, 'user@remote.example', source=UNLISTED) == (
        '554 5.7.1 <user@remote.example>: Relay access denied')


# ---- more restrictions firing and not firing ----

def test_permit_ends_list(make):
    """permit ends its list: "permit, reject" lets the sender through, a
    lone "reject" refuses it."""
    srv = make(RELAY_CF + 'smtpd_sender_restrictions = permit, reject\n')
    assert converse(srv) == '250 2.1.5 Ok'
    srv.cleanup()       # one instance on port 25 at a time
    srv = make(RELAY_CF + 'smtpd_sender_restrictions = reject\n')
    assert converse(srv) == '554 5.7.1 <a@good.example>: Sender address rejected: Access denied'


def test_default_relay_restrictions_pass_local_recipient(make):
    """The default defer_unauth_destination does not fire for a local
    recipient from outside mynetworks."""
    srv = make()
    assert converse(srv, 'alice@example.test') == '250 2.1.5 Ok'


def test_rbl_filter_that_does_not_match(make):
    """192.0.2.10 is listed with 127.0.0.2: a =127.0.0.3 filter does not
    match it."""
    srv = make(RELAY_CF + 'smtpd_client_restrictions = reject_rbl_client rbl.test=127.0.0.3\n')
    assert converse(srv) == '250 2.1.5 Ok'


def test_proxy_interfaces_address_is_local(make):
    rcpt = 'alice@[198.51.100.5]'
    srv = make(RELAY_CF)
    assert converse(srv, rcpt) == '554 5.7.1 <%s>: Relay access denied' % rcpt
    srv.cleanup()
    srv = make(RELAY_CF + 'proxy_interfaces = 198.51.100.5\n')
    assert converse(srv, rcpt) == '250 2.1.5 Ok'
    assert converse(srv, 'nobody@[198.51.100.5]') == (
        '550 5.1.1 <nobody@[198.51.100.5]>: Recipient address rejected: User unknown in local '
        'recipient table')


def test_virtual_alias_domains_default(make):
    """virtual_alias_domains = $virtual_alias_maps (its default): a domain
    that is a key of the table (Postfix's "example.com anything" line) is a
    virtual alias domain."""
    srv = make(RELAY_CF + 'virtual_alias_domains = $virtual_alias_maps\n'
               'virtual_alias_maps = inline:{ {va2.example = domain}, '
               '{info@va2.example = alice} }\n')
    assert converse(srv, 'info@va2.example') == '250 2.1.5 Ok'
    assert converse(srv, 'x@va2.example') == (
        '550 5.1.1 <x@va2.example>: Recipient address rejected: User unknown in virtual alias '
        'table')
    assert converse(srv, 'x@va3.example') == '554 5.7.1 <x@va3.example>: Relay access denied'


def test_virtual_alias_domains_unset_default(tmp_path):
    """Without virtual_alias_domains in main.cf its default applies."""
    conf = write_conf(tmp_path, EXPLAIN_CF + 'virtual_alias_maps = inline:{ {va2.example = x}, '
                      '{info@va2.example = alice} }\n')
    r = posternctl('policy', 'explain', '-c', conf, '--client', '192.0.2.10', '--to',
                   'info@va2.example', '--no-dns')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == 'verdict: accept', r.stdout


@pytest.mark.parametrize('sender_domain,rcpt_domain', [('gone.example', None),
                                                       (None, 'gone.example')])
def test_dns_down_defers_despite_550_code(make, sender_domain, rcpt_domain):
    """unknown_address_reject_code = 550 is for domains that surely do not
    exist; a DNS that cannot answer still defers with 450."""
    srv = make(RELAY_CF + 'unknown_address_reject_code = 550\n'
               'smtpd_sender_restrictions = reject_unknown_sender_domain\n'
               + R + ' = reject_unknown_recipient_domain\n'
               'dns_resolver_servers = 127.0.0.1:1\n')
    if sender_domain:
        assert converse(srv, sender='a@' + sender_domain) == (
            '450 4.1.8 <a@gone.example>: Sender address rejected: Domain not found')
    else:
        assert converse(srv, rcpt='x@' + rcpt_domain, sender='', source='127.0.0.1') == (
            '450 4.1.2 <x@gone.example>: Recipient address rejected: Domain not found')


class InetPolicyServer(PolicyServer):
    """The policy server on 127.0.0.1 inside the server namespace."""

    def __init__(self, net):
        self.requests = []

        def listen():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(('127.0.0.1', 0))
            s.listen(16)
            return s
        self.sock = dns_helpers.in_netns(net.server, listen)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()


@pytest.mark.parametrize('host', ['127.0.0.1', 'localhost'])
def test_check_policy_service_inet(make, net, host):
    server = InetPolicyServer(net)
    try:
        srv = make(RELAY_CF + R + ' = check_policy_service inet:%s:%d\n' % (host, server.port))
        assert converse(srv, sender='blocked@good.example') == (
            '554 5.7.1 <alice@example.test>: Recipient address rejected: policy says no')
        assert converse(srv, sender='fine@good.example') == '250 2.1.5 Ok'
        assert [r['sender'] for r in server.requests] == ['blocked@good.example',
                                                         'fine@good.example']
    finally:
        server.close()


# mynetworks syntax, through posternctl policy explain (the same engine).
@pytest.mark.parametrize('mynetworks,client,match', [
    ('[2001:db8::]/32', '2001:db8::5', '[2001:db8::]/32'),
    ('[2001:db8::]/32', '2001:db9::5', None),
    ('[::1]', '::1', '[::1]'),
    ('[::1]', '::2', None),
    ('192.0.2.10', '192.0.2.10', '192.0.2.10'),
    ('192.0.2.10', '192.0.2.11', None),
    ('cidr:{FILE}', '198.51.100.7', 'cidr:{FILE}'),
    ('cidr:{FILE}', '198.51.100.200', None),
    ('inline:{{192.0.2.11=ok}}', '192.0.2.11', 'inline:{{192.0.2.11=ok}}'),
    ('inline:{{192.0.2.11=ok}}', '192.0.2.12', None),
    ('{LIST}', '203.0.113.9', '203.0.113.0/24'),
    ('{LIST}', '203.0.114.9', None),
    ('!192.0.2.10 192.0.2.0/24', '192.0.2.11', '192.0.2.0/24'),
    ('!192.0.2.10 192.0.2.0/24', '192.0.2.10', None),
])
def test_mynetworks_syntax(tmp_path, mynetworks, client, match):
    cidr = tmp_path / 'nets.cidr'
    cidr.write_text('198.51.100.0/25 OK\n')
    lst = tmp_path / 'nets.list'
    lst.write_text('# trusted\n203.0.113.0/24\n')
    value = mynetworks.format(FILE=cidr, LIST=lst)
    conf = write_conf(tmp_path, EXPLAIN_CF.replace('mynetworks = 127.0.0.0/8',
                                                   'mynetworks = ' + value))
    r = posternctl('policy', 'explain', '-c', conf, '--client', client, '--to',
                   'x@remote.example', '--no-dns')
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    if match:
        assert first == ('smtpd_relay_restrictions: permit_mynetworks: permit (%s in '
                         'mynetworks: %s)' % (client, match.format(FILE=cidr))), r.stdout
    else:
        assert first == ('smtpd_relay_restrictions: permit_mynetworks: no match (%s not in '
                         'mynetworks)' % client), r.stdout


@pytest.mark.parametrize('style,matches', [('host', False), ('subnet', True)])
def test_mynetworks_style_when_unset(tmp_path, style, matches):
    """Without mynetworks, mynetworks_style decides: host trusts only this
    machine's own addresses (127.0.0.1), subnet its networks (127.0.0.0/8)."""
    conf = write_conf(tmp_path, EXPLAIN_CF.replace('mynetworks = 127.0.0.0/8\n', '') +
                      'mynetworks_style = %s\n' % style)
    r = posternctl('policy', 'explain', '-c', conf, '--client', '127.0.0.2', '--to',
                   'x@remote.example', '--no-dns')
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith('smtpd_relay_restrictions: permit_mynetworks: %s' %
                            ('permit' if matches else 'no match')), r.stdout
    r = posternctl('policy', 'explain', '-c', conf, '--client', '127.0.0.1', '--to',
                   'x@remote.example', '--no-dns')
    assert r.stdout.splitlines()[0].startswith(
        'smtpd_relay_restrictions: permit_mynetworks: permit'), r.stdout


def test_policy_explain_service_override(tmp_path):
    conf = write_conf(tmp_path, EXPLAIN_CF, {
        'submission': 'smtpd_relay_restrictions = permit_sasl_authenticated, reject\n'})
    args = ['policy', 'explain', '-c', conf, '--client', '127.0.0.1', '--to', 'x@remote.example',
            '--no-dns']
    r = posternctl(*args)
    assert r.stdout.splitlines()[-1] == 'verdict: accept', r.stdout
    r = posternctl(*args, '--service', 'submission')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        'smtpd_relay_restrictions: permit_sasl_authenticated: no match',
        'smtpd_relay_restrictions: reject: reject: 554 5.7.1 <x@remote.example>: Recipient '
        'address rejected: Access denied',
        'verdict: reject (554 5.7.1 <x@remote.example>: Recipient address rejected: Access '
        'denied)']


# ---- more limits ----

def mail_attempts(srv, n, source=LISTED):
    c = srv.client(source)
    try:
        c.reply()
        c.cmd('EHLO client.example.net')
        out = []
        for _ in range(n):
            out.append(c.cmd('MAIL FROM:<a@good.example>')[0])
            c.cmd('RSET')
        return out
    finally:
        c.close()


def test_explicit_limit_exceptions(make):
    """smtpd_client_event_limit_exceptions = 192.0.2.10/32 exempts
    192.0.2.10, not 192.0.2.11 (nor is mynetworks exempt any more)."""
    srv = make(RELAY_CF + 'smtpd_client_message_rate_limit = 1\n'
               'smtpd_client_event_limit_exceptions = 192.0.2.10/32\n')
    assert mail_attempts(srv, 3) == ['250 2.1.0 Ok'] * 3
    assert mail_attempts(srv, 2, UNLISTED) == [
        '250 2.1.0 Ok', '450 4.7.1 Error: too much mail from 192.0.2.11']
    assert mail_attempts(srv, 2, '127.0.0.1') == [
        '250 2.1.0 Ok', '450 4.7.1 Error: too much mail from 127.0.0.1']


def test_message_rate_shared_by_services(make, tmp_path):
    """smtpd and submission count the same client in one table."""
    run = str(tmp_path / 'run')
    cf = RELAY_CF + 'smtpd_client_message_rate_limit = 2\n'
    a = make(cf, runtime=run)
    b = make(cf, service='submission', port=587, runtime=run)
    assert mail_attempts(a, 1) == ['250 2.1.0 Ok']
    assert mail_attempts(b, 2) == ['250 2.1.0 Ok', '450 4.7.1 Error: too much mail from 192.0.2.10']
    assert mail_attempts(a, 1) == ['450 4.7.1 Error: too much mail from 192.0.2.10']


def test_message_rate_across_workers(make):
    """With two worker processes, connections land on either; the limit
    counts them all."""
    srv = make(RELAY_CF + 'smtpd_worker_processes = 2\nsmtpd_client_message_rate_limit = 3\n')
    replies = [mail_attempts(srv, 1)[0] for _ in range(6)]
    assert replies == ['250 2.1.0 Ok'] * 3 + ['450 4.7.1 Error: too much mail from 192.0.2.10'] * 3


def test_limit_journal_fields(make):
    srv = make(RELAY_CF + 'smtpd_client_message_rate_limit = 1\n', journal=True)
    assert mail_attempts(srv, 2) == ['250 2.1.0 Ok',
                                     '450 4.7.1 Error: too much mail from 192.0.2.10']
    rec = srv.journal.wait(lambda r: 'rate limit exceeded' in r.get('MESSAGE', ''),
                           'the limit record')
    assert rec['POSTERN_CLIENT'] == 'client.example.net[192.0.2.10]'
    assert rec['POSTERN_LIMIT'] == 'smtpd_client_message_rate_limit'
    assert rec['PRIORITY'] == '4'


@pytest.mark.parametrize('cf,line,text', [
    ('mynetworks = 127.0.0.0/8\nsmtpd_relay_restrictions = permit_mynetworks,\n'
     '  check_policy_service inet:127.0.0.1:10023, reject_unauth_destination\n', 2,
     'open relay: smtpd_relay_restrictions: "check_policy_service inet:127.0.0.1:10023" comes '
     'before reject_unauth_destination: a client outside mynetworks that the policy server '
     'permits can relay'),
    ('mynetworks = 127.0.0.0/8\nsmtpd_restriction_classes = friendly\n'
     'friendly = check_sender_access inline:{x@y.example=OK}\n'
     'smtpd_relay_restrictions = permit_mynetworks, friendly, reject_unauth_destination\n', 4,
     'open relay: smtpd_relay_restrictions: "friendly" comes before reject_unauth_destination: '
     'a client outside mynetworks that the restriction class permits can relay'),
])
def test_check_reports_policy_and_class(tmp_path, cf, line, text):
    conf = write_conf(tmp_path, cf)
    r = posternctl('check', '-c', conf)
    assert '%s/main.cf:%d: warning: %s' % (conf, line, text) in r.stderr, r.stderr


@pytest.mark.parametrize('cf', [
    # A class that rejects first cannot open relaying.
    'mynetworks = 127.0.0.0/8\nsmtpd_restriction_classes = strict\n'
    'strict = reject_non_fqdn_sender, reject_unauth_destination, permit\n'
    'smtpd_relay_restrictions = permit_mynetworks, strict, reject_unauth_destination\n',
    # The relay restrictions, evaluated first, end relaying safely: a
    # permit in the recipient restrictions only sees our own destinations.
    'mynetworks = 127.0.0.0/8\nsmtpd_relay_restrictions = permit_mynetworks, '
    'permit_sasl_authenticated, reject_unauth_destination\n'
    'smtpd_recipient_restrictions = check_recipient_access inline:{a@b.example=REJECT}, permit\n',
])
def test_check_quiet_when_relay_is_controlled(tmp_path, cf):
    conf = write_conf(tmp_path, cf)
    r = posternctl('check', '-c', conf)
    assert 'open relay' not in r.stderr, r.stderr


def test_delay_reject_no_smtps_rejects_after_handshake(net, tmp_path):
    """smtps: the connect-time client check answers, over TLS, in place of
    the greeting."""
    key, cert = str(tmp_path / 'key.pem'), str(tmp_path / 'cert.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj',
                    '/CN=mx.example.test', '-keyout', key, '-out', cert],
                   check=True, capture_output=True)

    class SmtpsNsSmtpd(NsSmtpd):
        def _ready(self):
            if self.proc.poll() is not None:
                raise RuntimeError('postern-smtpd exited: ' + self.log_text())
            try:
                connect(self.net.server, '127.0.0.1', self.port, timeout=2).close()
                return True
            except OSError:
                return False

    srv = SmtpsNsSmtpd(net, RELAY_CF + 'smtpd_delay_reject = no\n' + DENY_LISTED +
                       'smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n' % (cert, key),
                       service='smtps', port=465, service_cf='smtpd_tls_wrappermode = yes\n')
    try:
        srv.start()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

        def greeting(source):
            c = srv.client(source)
            c.sock = ctx.wrap_socket(c.sock)
            try:
                return c.reply()
            finally:
                c.close()
        assert greeting(LISTED) == [
            '554 5.7.1 <client.example.net[192.0.2.10]>: Client host rejected: Access denied']
        assert greeting(UNLISTED)[0].startswith('220 ')
    finally:
        srv.cleanup()


def test_check_reports_missing_relay_control_once(tmp_path):
    conf = write_conf(tmp_path, SAFE_CF + 'smtpd_relay_restrictions = permit_mynetworks\n'
                      'smtpd_client_restrictions = check_client_access hash:%s/nothere\n'
                      % tmp_path)
    r = posternctl('check', '-c', conf)
    assert r.returncode == 1
    assert ('%s/main.cf:2: error: smtpd_relay_restrictions and smtpd_recipient_restrictions: '
            'specify at least one working instance of' % conf) in r.stderr, r.stderr
    # The missing table is reported once, by the table checks.
    assert len([l for l in r.stderr.splitlines() if 'nothere' in l]) == 1, r.stderr
