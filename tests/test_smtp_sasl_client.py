"""The SASL client of postern-deliver-remote (smtp_sasl_auth_enable): a
satellite relaying through a smarthost that wants SMTP AUTH (RFC 4954), as
Postfix's SASL_README describes it. The smarthost is a real postern-smtpd
checking passwords with a real Dovecot auth service, or smtp_peer.py where
the test needs a server that offers other mechanisms or no TLS. The
namespaces, the deliverer and the peers come from test_deliver_remote."""
import base64
import os
import shutil
import subprocess

import pytest

import dovecot_helpers
from dovecot_helpers import Dovecot
from netns_helpers import stop_process, tempdir, wait_for
from test_deliver_remote import (MAN_PAGE, PEER_ADDR, POSTMAP, SMTPD, pytestmark,  # noqa: F401
                                 tls_cf, make, world)
from test_man_examples import examples

PASSWORD = 'Relay-s3cret'
PASSWORD_B64 = base64.b64encode(b'\0relay@example.org\0' + PASSWORD.encode()).decode()


def password_map(tmp_path, entries):
    """A texthash password table (postmap-free, so read as it is)."""
    path = os.path.join(str(tmp_path), 'sasl_passwd')
    with open(path, 'w') as f:
        for key, value in entries.items():
            f.write('%s %s\n' % (key, value))
    return 'texthash:' + path


def sasl_cf(maps, extra=''):
    return 'smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = %s\n%s' % (maps, extra)


def assert_no_password(d):
    log = d.log_text()
    assert PASSWORD not in log and PASSWORD_B64 not in log, log


# ---------------------------------------------------------------------------
# A postern-smtpd smarthost on the submission port with Dovecot SASL


@pytest.fixture
def smarthost(world):
    """postern-smtpd at [mx.peer.example]:587 in the peer namespace (the
    test CA's certificate for that name): TLS required, AUTH through
    Dovecot, relaying only for authenticated clients. Yields its queue
    directory."""
    if not os.path.exists(SMTPD):
        pytest.skip('postern-smtpd not built')
    if not dovecot_helpers.available():
        pytest.skip('dovecot not installed')
    net = world['net']
    tmp = tempdir('postern-smarthost.')
    os.chmod(tmp, 0o755)
    queue = os.path.join(tmp, 'queue')
    for d in ('incoming', 'active', 'deferred', 'hold', 'corrupt', 'maildrop', 'private'):
        os.makedirs(os.path.join(queue, d))
    os.makedirs(os.path.join(tmp, 'conf'))
    cert, key = world['ca']['mx.peer.example']
    with open(os.path.join(tmp, 'conf', 'main.cf'), 'w') as f:
        f.write('myhostname = mx.peer.example\nmydomain = peer.example\n'
                'mydestination = peer.example\nqueue_directory = %s\n'
                'mynetworks = 127.0.0.0/8\n'
                'smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n'
                'smtpd_tls_security_level = encrypt\nsmtpd_tls_auth_only = yes\n'
                'smtpd_sasl_auth_enable = yes\n'
                'smtpd_relay_restrictions = permit_sasl_authenticated, reject\n'
                'smtpd_error_sleep_time = 0\nmax_idle = 60s\n' % (queue, cert, key))
    dovecot = Dovecot(os.path.join(queue, 'private', 'auth'),
                      {'relay@example.org': PASSWORD}).start()
    log = open(os.path.join(tmp, 'smtpd.log'), 'w')
    proc = net.popen(net.peer, ['systemd-socket-activate', '-l', PEER_ADDR + ':587',
                                '--fdname=smtpd', '-E', 'POSTERN_LOG_TARGET=stderr',
                                '-E', 'POSTERN_QMGR_SOCKET=' + os.path.join(tmp, 'qmgr'),
                                '-E', 'POSTERN_RUNTIME_DIR=' + tmp,
                                SMTPD, '--service=smtpd', '-c', os.path.join(tmp, 'conf')],
                     stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: net.port_open(net.peer, PEER_ADDR, 587), what='postern-smtpd')
        yield queue
    finally:
        stop_process(proc)
        log.close()
        dovecot.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


SMARTHOST_CF = ('relayhost = [mx.peer.example]:587\n'
                # Postfix's default forbids plaintext mechanisms even in TLS;
                # SASL_README's smarthost example allows them there.
                'smtp_sasl_tls_security_options = noanonymous\n')


def queued(queue):
    return [n for n in os.listdir(os.path.join(queue, 'incoming')) if not n.startswith('.')]


def test_relay_through_authenticated_smarthost(make, world, smarthost, tmp_path):
    """The example of postern-deliver-remote(8), with its table built by
    postmap, on the smarthost's name."""
    deliverer, _ = make
    table = examples(MAN_PAGE)['sasl_passwd']
    assert table.startswith('[smtp.example.com]:587 ')
    src = tmp_path / 'sasl_passwd'
    src.write_text('[mx.peer.example]:587 relay@example.org:%s\n' % PASSWORD)
    r = subprocess.run([POSTMAP, 'hash:%s' % src], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    cf = (examples(MAN_PAGE)['sasl'].replace('smtp.example.com', 'mx.peer.example')
          .replace('/etc/postern/sasl_passwd', str(src)))
    assert 'smtp_tls_security_level = secure\n' in cf
    d2 = deliverer(cf + 'smtp_tls_CAfile = %s\n' % world['ca']['ca'])
    d = deliverer(tls_cf(world, 'encrypt') + SMARTHOST_CF)
    results, relay = d2.deliver(d2.message(['someone@remote.example']))
    assert results[0][0] in ('sent', 'relayed'), results
    assert relay == 'mx.peer.example[%s]:587' % PEER_ADDR
    assert d2.tls.endswith(' Verified'), d2.tls
    files = wait_for(lambda: queued(smarthost), what='queue file at the smarthost')
    with open(os.path.join(smarthost, 'incoming', files[0]), 'rb') as f:
        data = f.read()
    assert b'someone@remote.example' in data and b'relay@example.org' in data
    assert_no_password(d2)

    # Without smtp_sasl_auth_enable the smarthost refuses to relay.
    results, _ = d.deliver(d.message(['other@remote.example']))
    assert results[0][0] == 'bounced', results
    assert 'Relay access denied' in results[0][2] or 'Access denied' in results[0][2], results


def test_wrong_password_defers_with_the_servers_reply(make, world, smarthost, tmp_path):
    deliverer, _ = make
    maps = password_map(tmp_path, {'[mx.peer.example]:587': 'relay@example.org:wrong-one'})
    d = deliverer(tls_cf(world, 'encrypt') + SMARTHOST_CF + sasl_cf(maps))
    results, _ = d.deliver(d.message(['someone@remote.example']))
    status, dsn, diag = results[0]
    assert (status, dsn) == ('deferred', '4.7.8'), results
    assert diag.startswith('SASL authentication failed; server mx.peer.example[%s] said: '
                           '535 5.7.8 ' % PEER_ADDR), results
    assert ('SASL authentication failed; server mx.peer.example[%s] said: 535 5.7.8'
            % PEER_ADDR) in d.log_text()
    assert 'wrong-one' not in d.log_text()
    assert queued(smarthost) == []


# ---------------------------------------------------------------------------
# smtp_peer.py: mechanisms, security options, lookup keys


def auth_peer(peer, world, mechanisms='PLAIN LOGIN', tls=False, required=True, **kw):
    cfg = dict(auth={'mechanisms': mechanisms, 'users': {'relay@example.org': PASSWORD},
                     'required': required}, **kw)
    if tls:
        cfg['starttls'] = list(world['ca']['mx.peer.example'])
    return peer(**cfg)


def auth_cmds(p):
    return [e['line'] for e in p.events('cmd') if e['line'].upper().startswith('AUTH')]


def test_plaintext_session_does_not_authenticate_by_default(make, world, tmp_path):
    """Postfix's default smtp_sasl_security_options = noplaintext,
    noanonymous: without TLS neither PLAIN nor LOGIN may be used, and the
    mail is deferred with Postfix's words for it (a password exists, so
    authentication counts as required)."""
    deliverer, peer = make
    p = auth_peer(peer, world)
    maps = password_map(tmp_path, {'mx.peer.example': 'relay@example.org:' + PASSWORD})
    d = deliverer(sasl_cf(maps))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0] == ('deferred', '4.7.0', 'SASL authentication failed; cannot authenticate '
                          'to server mx.peer.example[%s]: no mechanism available'
                          % PEER_ADDR), results
    assert auth_cmds(p) == []
    assert p.events('message') == []
    assert_no_password(d)


def test_plain_with_initial_response(make, world, tmp_path):
    deliverer, peer = make
    p = auth_peer(peer, world, tls=True)
    maps = password_map(tmp_path, {'mx.peer.example': 'relay@example.org:' + PASSWORD})
    d = deliverer(tls_cf(world, 'may') + sasl_cf(maps, 'smtp_sasl_tls_security_options = '
                                                      'noanonymous\n'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert auth_cmds(p) == ['AUTH PLAIN ' + PASSWORD_B64]
    # After STARTTLS and the second EHLO, before MAIL.
    cmds = [(e['line'].split()[0], e['tls']) for e in p.events('cmd')]
    assert cmds[:5] == [('EHLO', False), ('STARTTLS', False), ('EHLO', True), ('AUTH', True),
                        ('MAIL', True)], cmds
    assert [(e['mech'], e['ok']) for e in p.events('auth')] == [('PLAIN', True)]
    assert_no_password(d)


def test_login_when_plain_is_not_offered(make, world, tmp_path):
    deliverer, peer = make
    p = auth_peer(peer, world, mechanisms='CRAM-MD5 LOGIN')
    maps = password_map(tmp_path, {'[mx.peer.example]': 'relay@example.org:' + PASSWORD})
    # Plaintext allowed without TLS: an administrator's explicit choice.
    d = deliverer('relayhost = [mx.peer.example]\n' +
                  sasl_cf(maps, 'smtp_sasl_security_options = noanonymous\n'))
    results, _ = d.deliver(d.message(['a@nosuch.example']))
    assert results[0][0] == 'relayed', results
    assert auth_cmds(p) == ['AUTH LOGIN']
    assert [(e['mech'], e['user'], e['ok']) for e in p.events('auth')] == [
        ('LOGIN', 'relay@example.org', True)]
    assert_no_password(d)


def test_mechanism_filter(make, world, tmp_path):
    deliverer, peer = make
    p = auth_peer(peer, world, mechanisms='PLAIN LOGIN')
    maps = password_map(tmp_path, {'mx.peer.example': 'relay@example.org:' + PASSWORD})
    d = deliverer(sasl_cf(maps, 'smtp_sasl_security_options = noanonymous\n'
                                'smtp_sasl_mechanism_filter = !plain, login\n'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert auth_cmds(p) == ['AUTH LOGIN']


def test_mechanism_filter_leaves_nothing(make, world, tmp_path):
    """Deferred, as Postfix words it."""
    deliverer, peer = make
    p = auth_peer(peer, world, mechanisms='PLAIN')
    maps = password_map(tmp_path, {'mx.peer.example': 'relay@example.org:' + PASSWORD})
    d = deliverer(sasl_cf(maps, 'smtp_sasl_security_options = noanonymous\n'
                                'smtp_sasl_mechanism_filter = login\n'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0] == ('deferred', '4.7.0', 'SASL authentication failed: server '
                          'mx.peer.example[%s] offered no compatible authentication mechanisms '
                          'for this type of connection security' % PEER_ADDR), results
    assert "offered no supported AUTH mechanisms: 'PLAIN'" in d.log_text()
    assert auth_cmds(p) == []


def test_no_password_for_this_host_means_no_auth(make, world, tmp_path):
    deliverer, peer = make
    p = auth_peer(peer, world, required=False)
    maps = password_map(tmp_path,
                        {'[smtp.elsewhere.example]:587': 'relay@example.org:' + PASSWORD})
    d = deliverer(sasl_cf(maps, 'smtp_sasl_security_options = noanonymous\n'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'relayed', results
    assert auth_cmds(p) == []


def test_server_without_auth_gets_none(make, world, tmp_path):
    """A password, but the server does not announce AUTH: Postfix goes on
    without authenticating, and the server's answer decides."""
    deliverer, peer = make
    p = peer(replies={'MAIL': '530 5.7.0 Authentication required'})
    maps = password_map(tmp_path, {'mx.peer.example': 'relay@example.org:' + PASSWORD})
    d = deliverer(sasl_cf(maps, 'smtp_sasl_security_options = noanonymous\n'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0][0] == 'bounced', results
    assert 'said: 530 5.7.0 Authentication required (in reply to MAIL FROM command)' \
        in results[0][2], results
    assert auth_cmds(p) == []


def test_auth_soft_bounce_off_bounces_on_535(make, world, tmp_path):
    deliverer, peer = make
    auth_peer(peer, world)
    maps = password_map(tmp_path, {'mx.peer.example': 'relay@example.org:not-it'})
    d = deliverer(sasl_cf(maps, 'smtp_sasl_security_options = noanonymous\n'
                                'smtp_sasl_auth_soft_bounce = no\n'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    assert results[0] == ('bounced', '5.7.8', 'SASL authentication failed; server mx.peer.example'
                          '[%s] said: 535 5.7.8 Error: authentication failed: bad credentials'
                          % PEER_ADDR), results


def test_authenticated_connection_is_reused_for_the_same_next_hop(make, world, tmp_path):
    deliverer, peer = make
    p = auth_peer(peer, world)
    maps = password_map(tmp_path, {'mx.peer.example': 'relay@example.org:' + PASSWORD})
    d = deliverer('smtp_connection_cache_time_limit = 5s\n' +
                  sasl_cf(maps, 'smtp_sasl_security_options = noanonymous\n'))
    r1, _ = d.deliver(d.message(['a@peer.example']))
    r2, _ = d.deliver(d.message(['b@peer.example']))
    assert r1[0][0] == 'relayed' and r2[0][0] == 'relayed', (r1, r2)
    assert len(p.events('connect')) == 1
    assert len(p.events('auth')) == 1
    assert len(p.events('message')) == 2


def test_password_table_missing_defers(make, world, tmp_path):
    deliverer, peer = make
    p = auth_peer(peer, world)
    d = deliverer(sasl_cf('hash:%s/no-such-table' % tmp_path,
                          'smtp_sasl_security_options = noanonymous\n'))
    results, _ = d.deliver(d.message(['a@peer.example']))
    status, dsn, diag = results[0]
    assert (status, dsn) == ('deferred', '4.3.0'), results
    assert diag.startswith('smtp_sasl_password_maps is unavailable: '), results
    assert auth_cmds(p) == [] and p.events('message') == []
    assert 'smtp_sasl_password_maps is unavailable' in d.log_text()


def test_host_name_is_looked_up_before_the_next_hop(make, world, tmp_path):
    """Postfix's order: the server's host name, then the next hop as given."""
    deliverer, peer = make
    p = auth_peer(peer, world)
    maps = password_map(tmp_path, {'[mx.peer.example]': 'nexthop@example.org:other',
                                   'mx.peer.example': 'relay@example.org:' + PASSWORD})
    d = deliverer('relayhost = [mx.peer.example]\n' +
                  sasl_cf(maps, 'smtp_sasl_security_options = noanonymous\n'))
    results, _ = d.deliver(d.message(['a@nosuch.example']))
    assert results[0][0] == 'relayed', results
    assert [(e['user'], e['ok']) for e in p.events('auth')] == [('relay@example.org', True)]


def test_lmtp_client_authenticates_with_its_own_parameters(make, world, tmp_path):
    deliverer, peer = make
    p = auth_peer(peer, world, port=24)
    maps = password_map(tmp_path, {'mx.peer.example': 'relay@example.org:' + PASSWORD})
    # The smtp_ settings do not apply to LMTP.
    d = deliverer(sasl_cf(maps, 'smtp_sasl_security_options = noanonymous\n'))
    results, _ = d.deliver(d.message(['a@peer.example']), transport='lmtp',
                           nexthop='inet:mx.peer.example:24')
    assert results[0][0] == 'bounced' and '530 5.7.0' in results[0][2], results
    assert auth_cmds(p) == []
    d = deliverer('lmtp_sasl_auth_enable = yes\nlmtp_sasl_password_maps = %s\n'
                  'lmtp_sasl_security_options = noanonymous\n' % maps)
    results, _ = d.deliver(d.message(['a@peer.example']), transport='lmtp',
                           nexthop='inet:mx.peer.example:24')
    assert results[0][0] == 'sent', results
    assert [(e['mech'], e['ok']) for e in p.events('auth')] == [('PLAIN', True)]
