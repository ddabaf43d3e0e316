"""DANE in postern-deliver-remote (smtp_tls_security_level = dane, RFC 7672)
against real DNSSEC: a zone dane.example signed here with ldns-signzone
(its key made in the test's temporary directory), an unsigned zone
insecure.example, both served by an authoritative unbound on
127.0.0.1:5300 in the client namespace, and a validating unbound on
127.0.0.1:53 in front of it with dane.example's key as trust anchor, which
postern asks (dns_resolver_servers). The receiving server is smtp_peer.py in
the peer namespace, with certificates from a test CA. Both unbounds run as
processes of the Network and are stopped by PID, whatever the outcome."""
import hashlib
import os
import re
import shutil
import subprocess

import pytest

from common import wait_for
from netns_helpers import Network, have_root_netns, make_test_ca, tempdir
# make: the deliverer/peer factory, here on this module's world.
from test_deliver_remote import DELIVER, PEER_ADDR, Deliverer, SmtpPeer, make  # noqa: F401

NOSTLS_ADDR = '198.51.100.13'   # a peer without STARTTLS
AUTH_PORT = 5300

# unbound and ldns-signzone come from tools/deps.sh: missing, the tests fail.
pytestmark = pytest.mark.skipif(
    not have_root_netns() or not os.path.exists(DELIVER),
    reason='needs root, ip and the built postern-deliver-remote')


def openssl(*args, input=None):
    return subprocess.run(['openssl'] + list(args), check=True, capture_output=True,
                          input=input).stdout


def spki_sha256(cert):
    """TLSA selector 1, matching type 1: SHA2-256 of the SubjectPublicKeyInfo."""
    pub = openssl('x509', '-in', cert, '-noout', '-pubkey')
    der = openssl('pkey', '-pubin', '-outform', 'DER', input=pub)
    return hashlib.sha256(der).hexdigest()


def cert_sha256(cert):
    """TLSA selector 0, matching type 1: SHA2-256 of the whole certificate."""
    return hashlib.sha256(openssl('x509', '-in', cert, '-outform', 'DER')).hexdigest()


SOA = ('@ IN SOA ns.{z}. hostmaster.{z}. 1 3600 600 86400 300\n'
       '@ IN NS ns.{z}.\nns IN A 127.0.0.1\n')


def signed_zone(tmp, ee, other_ee, ta):
    """dane.example: one MX domain per case, each with its own MX host."""
    zone = '$ORIGIN dane.example.\n$TTL 300\n' + SOA.format(z='dane.example')
    hosts = {
        'ok': ['3 1 1 ' + ee],                  # matches the peer's certificate
        'bad': ['3 1 1 ' + other_ee],           # matches another key
        'nostls': ['3 1 1 ' + ee],              # its peer offers no STARTTLS
        'notlsa': [],                           # secure, but no TLSA
        'ta': ['2 0 1 ' + ta],                  # the test CA as trust anchor
        'unusable': ['1 1 1 ' + ee, '0 0 1 ' + ta],   # PKIX usages only
        'bogus': ['3 1 1 ' + ee],               # its signature is broken below
    }
    for name, tlsa in hosts.items():
        addr = NOSTLS_ADDR if name == 'nostls' else PEER_ADDR
        zone += '%s IN MX 10 mx-%s\nmx-%s IN A %s\n' % (name, name, name, addr)
        for t in tlsa:
            zone += '_25._tcp.mx-%s IN TLSA %s\n' % (name, t)
    path = os.path.join(tmp, 'dane.example.zone')
    with open(path, 'w') as f:
        f.write(zone)
    key = subprocess.run(['ldns-keygen', '-a', 'ECDSAP256SHA256', '-k', 'dane.example'],
                         cwd=tmp, check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(['ldns-signzone', '-f', path + '.signed', path, key], cwd=tmp, check=True,
                   capture_output=True)
    # Bogus: the TLSA data of mx-bogus changed after signing, so that its
    # RRSIG no longer verifies; the rest of the zone stays valid.
    with open(path + '.signed') as f:
        signed = f.read()
    signed, n = re.subn(r'(_25\._tcp\.mx-bogus\.dane\.example\.\s+\d+\s+IN\s+TLSA\s+3 1 1 )\w+',
                        lambda m: m.group(1) + other_ee, signed)
    assert n == 1, signed
    with open(path + '.signed', 'w') as f:
        f.write(signed)
    return path + '.signed', os.path.join(tmp, key + '.key')


def unsigned_zone(tmp, other_ee):
    """insecure.example: not signed, a TLSA record that would not match, and
    a domain whose MX host is in the signed zone."""
    zone = ('$ORIGIN insecure.example.\n$TTL 300\n' + SOA.format(z='insecure.example') +
            '@ IN MX 10 mx\nmx IN A %s\n_25._tcp.mx IN TLSA 3 1 1 %s\n' % (PEER_ADDR, other_ee) +
            # Unsigned MX records naming a host of the signed zone.
            'hosted IN MX 10 mx-bad.dane.example.\n')
    path = os.path.join(tmp, 'insecure.example.zone')
    with open(path, 'w') as f:
        f.write(zone)
    return path


UNBOUND_COMMON = '''server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: ""
    use-syslog: no
    logfile: "{dir}/unbound-{port}.log"
    verbosity: 1
    do-ip6: no
    do-not-query-localhost: no
    qname-minimisation: no
    num-threads: 1
{server_extra}remote-control:
    control-enable: no
'''


class Unbound:
    def __init__(self, net, tmp, port, extra, server_extra=''):
        self.log = os.path.join(tmp, 'unbound-%d.log' % port)
        conf = os.path.join(tmp, 'unbound-%d.conf' % port)
        with open(conf, 'w') as f:
            f.write(UNBOUND_COMMON.format(port=port, dir=tmp, server_extra=server_extra) + extra)
        r = subprocess.run(['unbound-checkconf', conf], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        self.proc = net.popen(net.client, ['unbound', '-d', '-c', conf],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self._ready(net, port), what='unbound on port %d' % port)

    def _ready(self, net, port):
        if self.proc.poll() is not None:
            raise RuntimeError('unbound exited: ' + self.log_text())
        return 'start of service' in self.log_text()

    def log_text(self):
        try:
            with open(self.log, errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''


@pytest.fixture(scope='module')
def world():
    net = Network()
    tmp = tempdir('postern-dane-world.')
    try:
        ca = make_test_ca(tmp, ['mx-ok.dane.example', 'mx-ta.dane.example', 'other.example',
                                'ta.dane.example'])
        cert = ca['mx-ok.dane.example'][0]
        ee = spki_sha256(cert)
        other_ee = spki_sha256(ca['other.example'][0])
        ta = cert_sha256(ca['ca'])
        # DANE-TA needs the CA in the chain the server sends.
        chain = os.path.join(tmp, 'mx-ta.chain.pem')
        with open(chain, 'w') as f:
            f.write(open(ca['mx-ta.dane.example'][0]).read() + open(ca['ca']).read())
        ca['ta-chain'] = (chain, ca['mx-ta.dane.example'][1])
        # The same CA's certificate for the next-hop domain, not the MX host.
        chain = os.path.join(tmp, 'ta-nexthop.chain.pem')
        with open(chain, 'w') as f:
            f.write(open(ca['ta.dane.example'][0]).read() + open(ca['ca']).read())
        ca['ta-nexthop-chain'] = (chain, ca['ta.dane.example'][1])
        signed, key = signed_zone(tmp, ee, other_ee, ta)
        insecure = unsigned_zone(tmp, other_ee)
        auth = Unbound(net, tmp, AUTH_PORT, '''auth-zone:
    name: "dane.example"
    zonefile: "{s}"
    for-downstream: yes
    for-upstream: no
auth-zone:
    name: "insecure.example"
    zonefile: "{i}"
    for-downstream: yes
    for-upstream: no
'''.format(s=signed, i=insecure))
        stubs = ''.join('stub-zone:\n    name: "%s"\n    stub-addr: 127.0.0.1@%d\n' % (z, AUTH_PORT)
                        for z in ('dane.example', 'insecure.example'))
        resolver = Unbound(net, tmp, 53, stubs, server_extra='''    module-config: "validator iterator"
    trust-anchor-file: "{k}"
    val-log-level: 2
'''.format(k=key))
        yield {'net': net, 'ca': ca, 'tmp': tmp, 'auth': auth, 'resolver': resolver}
    finally:
        net.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


DANE_CF = 'smtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane\n'


def tls_peer(peer, world, cert='mx-ok.dane.example', **kw):
    return peer(starttls=list(world['ca'][cert]), **kw)


def test_dane_ee_match_is_verified(make, world):
    deliverer, peer = make
    p = tls_peer(peer, world)
    d = deliverer(DANE_CF)
    results, relay = d.deliver(d.message(['a@ok.dane.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert relay == 'mx-ok.dane.example[%s]:25' % PEER_ADDR
    assert p.events('message')[0]['tls'] is True
    # RFC 7672: the SNI is the TLSA base domain.
    assert p.events('tls')[0]['sni'] == 'mx-ok.dane.example'
    assert ('Verified TLS connection established to mx-ok.dane.example[%s]:25' % PEER_ADDR
            in d.log_text()), d.log_text()


def test_dane_mismatch_defers(make, world):
    deliverer, peer = make
    p = tls_peer(peer, world)
    d = deliverer(DANE_CF)
    results, _ = d.deliver(d.message(['a@bad.dane.example']))
    status, dsn, diag = results[0]
    assert (status, dsn) == ('deferred', '4.7.5'), results
    assert 'Server certificate not verified' in diag, diag
    assert not p.events('message')


def test_dane_tlsa_without_starttls_defers(make, world):
    deliverer, peer = make
    p = peer(addr=NOSTLS_ADDR)
    d = deliverer(DANE_CF)
    results, _ = d.deliver(d.message(['a@nostls.dane.example']))
    status, dsn, diag = results[0]
    assert (status, dsn) == ('deferred', '4.7.4'), results
    assert 'TLS is required, but was not offered' in diag, diag
    assert not p.events('message')


def test_dane_secure_zone_without_tlsa_is_may(make, world):
    deliverer, peer = make
    # Any certificate will do: TLS is opportunistic here.
    p = tls_peer(peer, world, cert='other.example')
    d = deliverer(DANE_CF)
    results, _ = d.deliver(d.message(['a@notlsa.dane.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert p.events('message')[0]['tls'] is True
    assert 'Verified TLS' not in d.log_text()


def test_dane_insecure_zone_is_may(make, world):
    """An unsigned zone's TLSA record (one that would not match) is not
    used: opportunistic TLS, delivered."""
    deliverer, peer = make
    p = tls_peer(peer, world)
    d = deliverer(DANE_CF)
    results, _ = d.deliver(d.message(['a@insecure.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert p.events('message')[0]['tls'] is True
    assert 'Verified TLS' not in d.log_text()


@pytest.mark.parametrize('policy,relayed', [(None, False), ('dane', False), ('encrypt', True),
                                            ('may', True)])
def test_dane_insecure_mx_policy(make, world, policy, relayed):
    """An unsigned MX record naming a host with validated TLSA records (that
    do not match here): by default, as Postfix, the records are used (RFC
    7672 2.2.1); smtp_tls_dane_insecure_mx_policy = encrypt only makes TLS
    mandatory, may ignores them."""
    deliverer, peer = make
    p = tls_peer(peer, world)
    cf = DANE_CF
    if policy:
        cf += 'smtp_tls_dane_insecure_mx_policy = %s\n' % policy
    d = deliverer(cf)
    results, _ = d.deliver(d.message(['a@hosted.insecure.example']))
    if relayed:
        assert results[0][0] == 'relayed', (results, d.log_text())
        assert p.events('message')[0]['tls'] is True
    else:
        assert results[0][:2] == ('deferred', '4.7.5'), results
        assert 'Server certificate not verified' in results[0][2], results
        assert not p.events('message')


def test_dane_bogus_tlsa_defers(make, world):
    deliverer, peer = make
    p = tls_peer(peer, world)
    d = deliverer(DANE_CF)
    results, _ = d.deliver(d.message(['a@bogus.dane.example']))
    status, dsn, diag = results[0]
    assert (status, dsn) == ('deferred', '4.7.5'), results
    assert 'TLSA lookup error for mx-bogus.dane.example:25' in diag, diag
    assert not p.events('connect')


def test_dane_unusable_tlsa_means_encrypt(make, world):
    """Validated TLSA records none of which SMTP can use (PKIX-TA/EE):
    TLS is mandatory but not authenticated (RFC 7672 2.2)."""
    deliverer, peer = make
    p = tls_peer(peer, world, cert='other.example')
    d = deliverer(DANE_CF)
    results, _ = d.deliver(d.message(['a@unusable.dane.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert p.events('message')[0]['tls'] is True
    assert 'Verified TLS' not in d.log_text()


def test_dane_ta_matches_ca(make, world):
    deliverer, peer = make
    p = tls_peer(peer, world, cert='ta-chain')
    d = deliverer(DANE_CF)
    results, _ = d.deliver(d.message(['a@ta.dane.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert p.events('message')[0]['tls'] is True
    assert ('Verified TLS connection established to mx-ta.dane.example[%s]:25' % PEER_ADDR
            in d.log_text()), d.log_text()


def test_dane_ta_wrong_name_defers(make, world):
    """DANE-TA(2) checks the name: the CA's certificate for another name
    is not accepted for mx-ta.dane.example."""
    deliverer, peer = make
    p = peer(starttls=list(world['ca']['other.example']))
    d = deliverer(DANE_CF)
    results, _ = d.deliver(d.message(['a@ta.dane.example']))
    assert results[0][:2] == ('deferred', '4.7.5'), results
    assert not p.events('message')


def test_dane_ta_accepts_nexthop_domain_with_secure_mx(make, world):
    """RFC 7672 3.2.2: with a DNSSEC-validated MX lookup, a DANE-TA(2)
    match may name the next-hop domain instead of the MX host. Without an
    MX lookup ([mx-ta.dane.example]) the next hop is the host itself, and
    the certificate for ta.dane.example is not accepted."""
    deliverer, peer = make
    p = tls_peer(peer, world, cert='ta-nexthop-chain')
    d = deliverer(DANE_CF)
    results, _ = d.deliver(d.message(['a@ta.dane.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert ('Verified TLS connection established to mx-ta.dane.example[%s]:25' % PEER_ADDR
            in d.log_text()), d.log_text()
    results, _ = d.deliver(d.message(['a@example.com']), nexthop='[mx-ta.dane.example]')
    assert results[0][:2] == ('deferred', '4.7.5'), results
    assert 'Server certificate not verified' in results[0][2], results
    assert len(p.events('message')) == 1


def test_dane_from_policy_map(make, world, tmp_path):
    """smtp_tls_policy_maps can ask for dane per destination while the
    default level is may: the policy's domain gets its TLSA records checked
    (a mismatch defers), others stay opportunistic."""
    deliverer, peer = make
    p = tls_peer(peer, world)
    policy = tmp_path / 'tls_policy'
    policy.write_text('bad.dane.example dane\nok.dane.example dane\n')
    d = deliverer('smtp_dns_support_level = dnssec\nsmtp_tls_security_level = may\n'
                  'smtp_tls_policy_maps = texthash:%s\n' % policy)
    results, _ = d.deliver(d.message(['a@bad.dane.example']))
    assert results[0][:2] == ('deferred', '4.7.5'), results
    assert 'Server certificate not verified' in results[0][2], results
    results, _ = d.deliver(d.message(['a@ok.dane.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert 'Verified TLS connection established to mx-ok.dane.example' in d.log_text()
    # Not in the table: may, the non-matching TLSA records are not used.
    policy.write_text('ok.dane.example dane\n')
    d = deliverer('smtp_dns_support_level = dnssec\nsmtp_tls_security_level = may\n'
                  'smtp_tls_policy_maps = texthash:%s\n' % policy)
    results, _ = d.deliver(d.message(['a@bad.dane.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert len(p.events('message')) == 2


def test_dane_bracketed_nexthop(make, world):
    """[host]: no MX lookup; the host's validated address records lead to
    its TLSA records."""
    deliverer, peer = make
    tls_peer(peer, world)
    d = deliverer(DANE_CF)
    results, _ = d.deliver(d.message(['a@example.com']), nexthop='[mx-bad.dane.example]')
    assert results[0][:2] == ('deferred', '4.7.5'), results
    results, _ = d.deliver(d.message(['a@example.com']), nexthop='[mx-ok.dane.example]')
    assert results[0][0] == 'relayed', results


def test_dane_needs_dnssec_support_level(make, world):
    """Without smtp_dns_support_level = dnssec, dane is may (with a
    warning): the non-matching TLSA record is not looked at."""
    deliverer, peer = make
    p = tls_peer(peer, world)
    d = deliverer('smtp_tls_security_level = dane\n')
    results, _ = d.deliver(d.message(['a@bad.dane.example']))
    assert results[0][0] == 'relayed', (results, d.log_text())
    assert p.events('message')[0]['tls'] is True
    assert 'needs smtp_dns_support_level = dnssec; using may instead' in d.log_text()


def test_dane_only_without_tlsa_defers(make, world):
    deliverer, peer = make
    p = tls_peer(peer, world)
    d = deliverer('smtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane-only\n')
    results, _ = d.deliver(d.message(['a@notlsa.dane.example']))
    status, dsn, diag = results[0]
    assert (status, dsn) == ('deferred', '4.7.5'), results
    assert 'no DNSSEC-validated TLSA records' in diag, diag
    assert not p.events('connect')
    results, _ = d.deliver(d.message(['a@ok.dane.example']))
    assert results[0][0] == 'relayed', results


@pytest.mark.parametrize('main_cf,error', [
    ('smtp_dns_support_level = disabled\n',
     'smtp_dns_support_level = disabled is not supported'),
    ('smtp_tls_security_level = dane-only\n',
     'smtp_tls_security_level = dane-only: needs smtp_dns_support_level = dnssec'),
    ('smtp_dns_support_level = dnssec\nlmtp_tls_security_level = dane-only\n',
     'lmtp_tls_security_level = dane-only: DANE is not used for LMTP'),
])
def test_configuration_refused(main_cf, error):
    """Settings that could never work stop the service with the reason."""
    tmp = tempdir('postern-dane-conf.')
    try:
        with open(os.path.join(tmp, 'main.cf'), 'w') as f:
            f.write(main_cf)
        r = subprocess.run([DELIVER, '-c', tmp], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, POSTERN_LOG_TARGET='stderr'))
        assert r.returncode != 0
        assert error in r.stderr, r.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
