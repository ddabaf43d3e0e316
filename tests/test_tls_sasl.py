"""Integration tests of TLS (STARTTLS on 25 and 587, implicit TLS on 465)
and SMTP AUTH through a real Dovecot auth service, driving the built
postern-smtpd under systemd-socket-activate. Certificates are made here
with openssl req; clients are smtplib, Python's ssl module on a raw
socket, and openssl s_client. Assertions are on replies, certificates
seen, queue files and log lines."""
import base64
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

import dovecot_helpers
from dovecot_helpers import Dovecot
from common import program
from smtpd_helpers import SMTPD, QUEUE_DIRS, RawClient, Smtpd, shipped, wait_for

pytestmark = [
    pytest.mark.skipif(not os.path.exists(SMTPD), reason='postern-smtpd not built'),
    pytest.mark.skipif(not shutil.which('openssl'), reason='openssl not installed'),
]

USERS = {'alice': 'secret-a', 'bob': 'secret-b'}
MSG = ('From: alice@example.test\r\nTo: someone@remote.example\r\nSubject: t\r\n'
       'Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <t1@example.test>\r\n\r\nHi.\r\n')


def make_cert(directory, name, cn='mail.example.com'):
    cert = os.path.join(directory, name + '.crt')
    key = os.path.join(directory, name + '.key')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=' + cn,
                    '-keyout', key, '-out', cert], check=True, capture_output=True)
    return cert, key


class TlsSmtpd(Smtpd):
    """Smtpd with extra environment (CREDENTIALS_DIRECTORY) and a readiness
    check that speaks TLS first in wrapper mode."""

    def __init__(self, env=None, wrapper=False, **kw):
        super().__init__(**kw)
        self.extra_env = env or {}
        self.wrapper = wrapper

    def start(self):
        env = dict(os.environ)
        env.pop('LISTEN_FDS', None)
        self.log = open(self.log_path, 'w')
        args = ['systemd-socket-activate', '-l', '127.0.0.1:%d' % self.port,
                '--fdname=' + self.service, '-E', 'POSTERN_LOG_TARGET=stderr',
                '-E', 'POSTERN_QMGR_SOCKET=' + os.path.join(self.tmp, 'qmgr'),
                '-E', 'POSTERN_RUNTIME_DIR=' + self.tmp]
        for k, v in self.extra_env.items():
            args += ['-E', '%s=%s' % (k, v)]
        args += [SMTPD, '--service=' + self.service, '-c', self.confdir]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_for(self._port_open, what='port %d' % self.port)
        return self

    def _port_open(self):
        if not self.wrapper:
            return super()._port_open()
        if self.proc.poll() is not None:
            raise RuntimeError('postern-smtpd exited: ' + self.log_text())
        try:
            with tls_connect(self.port) as s:
                return s.recv(1000).startswith(b'220 ')
        except OSError:
            return False

    def pid(self):
        return self.proc.pid


def client_context(**kw):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_connect(port, ctx=None, session=None):
    raw = socket.create_connection(('127.0.0.1', port), timeout=10)
    return (ctx or client_context()).wrap_socket(raw, session=session)


class TlsClient(RawClient):
    """RawClient whose socket can be switched to TLS after STARTTLS."""

    def starttls(self, ctx=None):
        assert self.cmd('STARTTLS') == ['220 2.0.0 Ready to start TLS']
        assert self.buf == b''
        self.sock = (ctx or client_context()).wrap_socket(self.sock)
        return self.sock

    def auth_plain(self, user, password):
        token = base64.b64encode(b'\0' + user.encode() + b'\0' + password.encode()).decode()
        return self.cmd('AUTH PLAIN ' + token)


def ehlo_keywords(reply):
    return [line[4:] for line in reply[1:]]


@pytest.fixture
def env(tmp_path):
    """Certificates, a queue directory and a running Dovecot whose auth
    socket is QUEUE/private/auth (smtpd_sasl_path's default)."""
    os.chmod(tmp_path, 0o755)
    queue = tmp_path / 'queue'
    for d in QUEUE_DIRS:
        (queue / d).mkdir(parents=True)
    cert, key = make_cert(str(tmp_path), 'server')
    ns = type('Env', (), {})()
    ns.tmp = str(tmp_path)
    ns.queue = str(queue)
    ns.cert, ns.key = cert, key
    ns.dovecot = None
    if dovecot_helpers.available():
        ns.dovecot = Dovecot(str(queue / 'private' / 'auth'), USERS).start()
    started = []

    def make(service='smtpd', main_cf='', service_cf=None, env=None, wrapper=False, start=True):
        base = ('smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n' % (cert, key))
        s = TlsSmtpd(service=service, main_cf=base + main_cf, service_cf=service_cf,
                     queue_dir=ns.queue, env=env, wrapper=wrapper)
        started.append(s)
        return s.start() if start else s
    ns.make = make
    yield ns
    for s in started:
        s.cleanup()
    if ns.dovecot:
        ns.dovecot.cleanup()


needs_dovecot = pytest.mark.skipif(not dovecot_helpers.available(), reason='no dovecot')

SUBMISSION = ('smtpd_tls_security_level = encrypt\nsmtpd_sasl_auth_enable = yes\n'
              'smtpd_tls_auth_only = yes\nsmtpd_sasl_authenticated_header = yes\n')


@needs_dovecot
def test_submission_requires_starttls_then_auth(env):
    s = env.make(service='submission', service_cf=SUBMISSION)
    c = TlsClient(s.port)
    c.reply()
    kw = ehlo_keywords(c.cmd('EHLO client.example.org'))
    assert 'STARTTLS' in kw
    assert not any(k.startswith('AUTH') for k in kw)
    assert c.cmd('MAIL FROM:<a@example.org>') == ['530 5.7.0 Must issue a STARTTLS command first']
    assert c.auth_plain('alice', 'secret-a') == ['530 5.7.0 Must issue a STARTTLS command first']
    assert c.cmd('NOOP') == ['250 2.0.0 Ok']
    c.starttls()
    # RFC 3207: the EHLO state is gone after the handshake.
    assert c.cmd('AUTH PLAIN AGFsaWNlAHNlY3JldC1h') == ['503 5.5.1 Error: send HELO/EHLO first']
    kw = ehlo_keywords(c.cmd('EHLO client.example.org'))
    assert 'AUTH PLAIN LOGIN' in kw
    assert 'STARTTLS' not in kw
    # Without AUTH the submission port relays nothing.
    assert c.cmd('MAIL FROM:<alice@example.test>') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<someone@remote.example>') == [
        '454 4.7.1 <someone@remote.example>: Relay access denied']
    assert c.cmd('RSET') == ['250 2.0.0 Ok']
    assert c.auth_plain('alice', 'secret-a') == ['235 2.7.0 Authentication successful']
    assert c.auth_plain('alice', 'secret-a') == ['503 5.5.1 Error: already authenticated']
    assert c.cmd('MAIL FROM:<alice@example.test>') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<someone@remote.example>') == ['250 2.1.5 Ok']
    c.cmd('QUIT')


@needs_dovecot
def test_shipped_submission_requires_auth(env):
    """The services.d/submission.cf that postern installs: TLS first, then
    nothing is accepted without AUTH; after AUTH mail goes out, and the
    headers the client left out are added (permit_sasl_authenticated)."""
    s = env.make(service='submission', service_cf=shipped('services.d/submission.cf'))
    c = TlsClient(s.port)
    c.reply()
    c.cmd('EHLO client.example.org')
    assert c.cmd('MAIL FROM:<alice@example.test>') == [
        '530 5.7.0 Must issue a STARTTLS command first']
    c.starttls()
    assert 'AUTH PLAIN LOGIN' in ehlo_keywords(c.cmd('EHLO client.example.org'))
    c.cmd('MAIL FROM:<alice@example.test>')
    for rcpt in ('someone@remote.example', 'user@example.test'):
        r = c.cmd('RCPT TO:<%s>' % rcpt)
        assert r == ['554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: Access denied'], r
    assert c.cmd('DATA') == ['554 5.5.1 Error: no valid recipients']
    c.cmd('RSET')
    assert c.auth_plain('alice', 'secret-a') == ['235 2.7.0 Authentication successful']
    assert c.cmd('MAIL FROM:<alice@example.test>') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<someone@remote.example>') == ['250 2.1.5 Ok']
    assert c.cmd('DATA')[0].startswith('354 ')
    c.send('Subject: from a phone\r\n\r\nHi.\r\n.\r\n')
    qid = c.reply()[0].split()[-1]
    c.cmd('QUIT')
    _, content, envelope = s.read_queue_file(qid)
    head = content.split(b'\n\n', 1)[0].decode()
    assert envelope['sasl_username'] == 'alice'
    assert '\nDate: ' in head and '\nMessage-ID: <' in head
    assert '\nFrom: alice@example.test' in head


@needs_dovecot
def test_auth_plain_and_login_with_smtplib(env):
    s = env.make(service='submission', service_cf=SUBMISSION +
                 'smtpd_tls_received_header = yes\nsmtpd_tls_loglevel = 1\n')
    for mech in ('PLAIN', 'LOGIN'):
        with smtplib.SMTP('127.0.0.1', s.port) as smtp:
            smtp.starttls(context=client_context())
            smtp.ehlo('client.example.org')
            with pytest.raises(smtplib.SMTPAuthenticationError) as e:
                if mech == 'PLAIN':
                    smtp.login('alice', 'wrong')
                else:
                    login_mech(smtp, 'LOGIN', 'wrong')
            assert e.value.smtp_code == 535
            assert e.value.smtp_error.startswith(b'5.7.8 Error: authentication failed:')
            if mech == 'PLAIN':
                code, _ = smtp.login('alice', 'secret-a')
            else:
                code, _ = login_mech(smtp, 'LOGIN', 'secret-a')
            assert code == 235
            smtp.sendmail('alice@example.test', ['someone@remote.example'], MSG)
    s.wait_log('SASL PLAIN authentication failed')
    s.wait_log('SASL LOGIN authentication failed')
    log = s.log_text()
    assert 'warning: localhost[127.0.0.1]: SASL PLAIN authentication failed' in log
    assert 'client=localhost[127.0.0.1], sasl_method=PLAIN, sasl_username=alice' in log
    assert 'client=localhost[127.0.0.1], sasl_method=LOGIN, sasl_username=alice' in log
    assert 'Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3 with cipher' \
        in log
    # Never a password or an AUTH exchange in the log.
    assert 'secret-a' not in log and 'wrong' not in log
    assert base64.b64encode(b'secret-a').decode() not in log
    qids = s.queue_files()
    assert len(qids) == 2
    _, content, envelope = s.read_queue_file(qids[0])
    assert envelope['sasl_username'] == 'alice'
    assert envelope['sasl_method'] in ('PLAIN', 'LOGIN')
    assert envelope['protocol'] == 'ESMTPSA'
    text = content.decode()
    assert '\t(using TLSv1.3 with cipher ' in text
    assert '\t(Authenticated sender: alice)\n' in text
    assert ' with ESMTPSA id ' in text


def login_mech(smtp, mech, password):
    smtp.user, smtp.password = 'alice', password
    return smtp.auth(mech, smtp.auth_login, initial_response_ok=False)


@needs_dovecot
def test_auth_protocol_details(env):
    s = env.make(main_cf='smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n'
                 'broken_sasl_auth_clients = yes\n'
                 'smtpd_sasl_security_options = noanonymous, noplaintext\n'
                 'smtpd_sasl_tls_security_options = noanonymous\n')
    c = TlsClient(s.port)
    c.reply()
    kw = ehlo_keywords(c.cmd('EHLO client.example.org'))
    # Without TLS noplaintext leaves nothing to offer.
    assert 'STARTTLS' in kw and not any(k.startswith('AUTH') for k in kw)
    assert c.auth_plain('alice', 'secret-a') == [
        '538 5.7.11 Encryption required for requested authentication mechanism']
    c.starttls()
    kw = ehlo_keywords(c.cmd('EHLO client.example.org'))
    assert 'AUTH PLAIN LOGIN' in kw and 'AUTH=PLAIN LOGIN' in kw
    assert c.cmd('AUTH CRAM-MD5') == ['504 5.5.4 Unsupported authentication mechanism']
    assert c.cmd('AUTH') == ['501 5.5.4 Syntax: AUTH mechanism']
    # The continuation flow, aborted with "*".
    assert c.cmd('AUTH PLAIN') == ['334 ']
    assert c.cmd('*') == ['501 5.7.0 Authentication aborted']
    assert c.cmd('AUTH LOGIN') == ['334 VXNlcm5hbWU6']
    assert c.cmd(base64.b64encode(b'bob').decode()) == ['334 UGFzc3dvcmQ6']
    assert c.cmd(base64.b64encode(b'secret-b').decode()) == ['235 2.7.0 Authentication successful']
    # Authenticated clients relay on port 25 too (permit_sasl_authenticated).
    assert c.cmd('MAIL FROM:<bob@example.test>') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<x@remote.example>') == ['250 2.1.5 Ok']
    c.cmd('QUIT')
    # An empty initial response ("=") reaches Dovecot, which refuses it.
    c = TlsClient(s.port)
    c.reply()
    c.starttls()
    c.cmd('EHLO client.example.org')
    assert c.cmd('AUTH PLAIN =')[0].startswith('535 5.7.8 Error: authentication failed:')
    c.close()


@needs_dovecot
def test_wrong_passwords_count_as_errors(env):
    s = env.make(main_cf='smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n'
                 'smtpd_hard_error_limit = 3\n')
    c = TlsClient(s.port)
    c.reply()
    c.starttls()
    c.cmd('EHLO client.example.org')
    for _ in range(2):
        r = c.auth_plain('alice', 'guess')
        assert r[0].startswith('535 5.7.8 Error: authentication failed:'), r
    c.send('AUTH PLAIN ' + base64.b64encode(b'\0alice\0guess').decode() + '\r\n')
    assert c.reply()[0].startswith('535 5.7.8')
    assert c.reply() == ['421 4.7.0 mx.example.test Error: too many errors']
    assert c.closed()
    assert s.log_text().count('warning: localhost[127.0.0.1]: SASL PLAIN authentication failed') == 3


@needs_dovecot
def test_dovecot_down_and_back(env):
    s = env.make(main_cf='smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n')

    def session():
        c = TlsClient(s.port)
        c.reply()
        c.starttls()
        c.cmd('EHLO client.example.org')
        return c
    c = session()
    assert c.auth_plain('alice', 'secret-a') == ['235 2.7.0 Authentication successful']
    c.close()
    env.dovecot.stop()
    # The auth process may serve its connection a moment longer.
    s.wait_log('connection to the Dovecot auth service', timeout=20)
    for _ in range(2):
        c = session()
        assert c.auth_plain('alice', 'secret-a') == ['454 4.7.0 Temporary authentication failure']
        assert c.cmd('NOOP') == ['250 2.0.0 Ok']
        c.close()
    assert s.proc.poll() is None
    s.wait_log('SASL PLAIN authentication failed')
    env.dovecot.start()
    c = session()
    assert c.auth_plain('alice', 'secret-a') == ['235 2.7.0 Authentication successful']
    c.close()


def test_dovecot_socket_missing(env):
    """No Dovecot at all (the socket was never there): AUTH answers 454
    4.7.0, the session and the daemon go on."""
    s = env.make(main_cf='smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n'
                 'smtpd_sasl_path = private/nosuch\n')
    c = TlsClient(s.port)
    c.reply()
    c.starttls()
    c.cmd('EHLO client.example.org')
    assert c.auth_plain('alice', 'secret-a') == ['454 4.7.0 Temporary authentication failure']
    assert c.cmd('NOOP') == ['250 2.0.0 Ok']
    assert c.cmd('MAIL FROM:<alice@example.test>') == ['250 2.1.0 Ok']
    c.cmd('QUIT')
    s.wait_log('warning: localhost[127.0.0.1]: SASL PLAIN authentication failed:')
    assert s.proc.poll() is None


@needs_dovecot
def test_error_sleep_after_failed_auth(env):
    """Past smtpd_soft_error_limit, the reply to a failed AUTH waits
    smtpd_error_sleep_time; before it, it does not."""
    s = env.make(main_cf='smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n'
                 'smtpd_soft_error_limit = 1\nsmtpd_error_sleep_time = 3s\n')
    c = TlsClient(s.port)
    c.reply()
    c.starttls()
    c.cmd('EHLO client.example.org')

    def timed_failure():
        start = time.monotonic()
        r = c.auth_plain('alice', 'guess')
        assert r[0].startswith('535 5.7.8 Error: authentication failed:'), r
        return time.monotonic() - start
    first = timed_failure()         # error 1: within the soft limit
    second = timed_failure()        # error 2: over it
    assert second >= 2.9, (first, second)
    assert first < 2.0 and second - first > 1.5, (first, second)
    # The session goes on after the pause.
    assert c.cmd('NOOP') == ['250 2.0.0 Ok']
    c.close()


@needs_dovecot
def test_smtplib_smtp_ssl_to_smtps(env):
    """Python's smtplib.SMTP_SSL against the smtps role with the shipped
    smtps.cf: AUTH, then the message is queued under the announced ID."""
    s = env.make(service='smtps', wrapper=True, service_cf=shipped('services.d/smtps.cf'))
    with smtplib.SMTP_SSL('127.0.0.1', s.port, context=client_context()) as smtp:
        smtp.ehlo('client.example.org')
        assert smtp.login('bob', 'secret-b')[0] == 235
        assert smtp.mail('bob@example.test') == (250, b'2.1.0 Ok')
        assert smtp.rcpt('someone@remote.example') == (250, b'2.1.5 Ok')
        code, text = smtp.data(MSG)
    assert code == 250 and text.startswith(b'2.0.0 Ok: queued as '), text
    qid = text.decode().split()[-1]
    assert s.queue_files() == [qid]
    _, content, envelope = s.read_queue_file(qid)
    assert envelope['sasl_username'] == 'bob'
    assert envelope['protocol'] == 'ESMTPSA'
    assert envelope['service'] == 'smtps'
    assert [r[3] for r in envelope['rcpt']] == ['someone@remote.example']
    assert content.endswith(b'\n\nHi.\n')


def test_smtps_speaks_tls_first(env):
    s = env.make(service='smtps', service_cf='smtpd_tls_wrappermode = yes\n', wrapper=True)
    # A plaintext client hears no greeting.
    raw = socket.create_connection(('127.0.0.1', s.port), timeout=1)
    with pytest.raises(socket.timeout):
        raw.recv(100)
    raw.close()
    with tls_connect(s.port) as t:
        assert t.recv(1000) == b'220 mx.example.test ESMTP postern\r\n'
        t.sendall(b'EHLO x\r\n')
        ehlo = t.recv(1000).decode()
        assert 'STARTTLS' not in ehlo
    r = subprocess.run(['openssl', 's_client', '-connect', '127.0.0.1:%d' % s.port, '-quiet'],
                       input='QUIT\r\n', capture_output=True, text=True, timeout=30)
    assert '220 mx.example.test ESMTP postern' in r.stdout, r.stdout + r.stderr
    assert '221 2.0.0 Bye' in r.stdout


def test_openssl_starttls_smtp(env):
    s = env.make(main_cf='smtpd_tls_security_level = may\n')
    r = subprocess.run(['openssl', 's_client', '-connect', '127.0.0.1:%d' % s.port,
                        '-starttls', 'smtp', '-quiet'],
                       input='QUIT\r\n', capture_output=True, text=True, timeout=30)
    assert '221 2.0.0 Bye' in r.stdout, r.stdout + r.stderr
    assert 'CN = mail.example.com' in r.stderr


def test_no_starttls_without_level(env):
    s = env.make()
    c = TlsClient(s.port)
    c.reply()
    assert 'STARTTLS' not in ehlo_keywords(c.cmd('EHLO x'))
    assert c.cmd('STARTTLS') == ['502 5.5.1 Error: command not implemented']


@pytest.mark.parametrize('protocols', ['>=TLSv1.2', '!SSLv2, !SSLv3, !TLSv1, !TLSv1.1'])
def test_old_protocols_refused(env, protocols):
    s = env.make(service='smtps', wrapper=True,
                 service_cf='smtpd_tls_wrappermode = yes\nsmtpd_tls_protocols = %s\n'
                            'smtpd_tls_mandatory_protocols = %s\n' % (protocols, protocols))
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx = client_context(minimum_version=version, maximum_version=version)
        ctx.set_ciphers('DEFAULT@SECLEVEL=0')
        with pytest.raises(ssl.SSLError):
            tls_connect(s.port, ctx)
    # The server is what refuses: it says so with the client's address.
    s.wait_log('SSL_accept error from localhost[127.0.0.1]: unsupported protocol')
    ctx = client_context(minimum_version=ssl.TLSVersion.TLSv1_2,
                         maximum_version=ssl.TLSVersion.TLSv1_2)
    with tls_connect(s.port, ctx) as t:
        assert t.version() == 'TLSv1.2'
        assert t.recv(100).startswith(b'220 ')
    r = subprocess.run(['openssl', 's_client', '-connect', '127.0.0.1:%d' % s.port, '-tls1',
                        '-cipher', 'DEFAULT@SECLEVEL=0'],
                       input='', capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    r = subprocess.run(['openssl', 's_client', '-connect', '127.0.0.1:%d' % s.port, '-tls1_2',
                        '-quiet'], input='QUIT\r\n', capture_output=True, text=True, timeout=30)
    assert '221 2.0.0 Bye' in r.stdout, r.stdout + r.stderr


def make_chain(directory):
    """A root CA, an intermediate CA it signed and a leaf (CN and DNS name
    mail.example.com) the intermediate signed. Returns the paths (root,
    intermediate, leaf, leaf key)."""
    def ossl(*args):
        subprocess.run(['openssl'] + list(args), check=True, capture_output=True, cwd=directory)
    ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
    with open(os.path.join(directory, 'ca.ext'), 'w') as f:
        f.write('basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n')
    with open(os.path.join(directory, 'leaf.ext'), 'w') as f:
        f.write('subjectAltName=DNS:mail.example.com\n')
    ossl('req', '-x509', *ec, '-days', '2', '-subj', '/CN=postern test root',
         '-addext', 'basicConstraints=critical,CA:TRUE',
         '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-keyout', 'root.key',
         '-out', 'root.pem')
    ossl('req', *ec, '-subj', '/CN=postern test intermediate', '-keyout', 'int.key',
         '-out', 'int.csr')
    ossl('x509', '-req', '-in', 'int.csr', '-CA', 'root.pem', '-CAkey', 'root.key',
         '-CAcreateserial', '-days', '2', '-extfile', 'ca.ext', '-out', 'int.pem')
    ossl('req', *ec, '-subj', '/CN=mail.example.com', '-keyout', 'leaf.key', '-out', 'leaf.csr')
    ossl('x509', '-req', '-in', 'leaf.csr', '-CA', 'int.pem', '-CAkey', 'int.key',
         '-CAcreateserial', '-days', '2', '-extfile', 'leaf.ext', '-out', 'leaf.pem')
    return tuple(os.path.join(directory, n) for n in ('root.pem', 'int.pem', 'leaf.pem',
                                                       'leaf.key'))


def cat(out, *paths):
    with open(out, 'w') as f:
        for p in paths:
            with open(p) as g:
                f.write(g.read())
    return out


@pytest.mark.parametrize('how', ['cert_file', 'chain_files'])
def test_certificate_chain_is_served(env, tmp_path, how):
    d = tmp_path / 'chain'
    d.mkdir()
    root, inter, leaf, key = make_chain(str(d))
    if how == 'cert_file':
        # The certificate file holds the leaf, then the intermediate.
        conf = 'smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n' % (
            cat(str(d / 'fullchain.pem'), leaf, inter), key)
    else:
        # One file: the key, the leaf, the intermediate (Postfix 3.4+).
        conf = ('smtpd_tls_cert_file =\nsmtpd_tls_key_file =\nsmtpd_tls_chain_files = %s\n'
                % cat(str(d / 'all.pem'), key, leaf, inter))
    s = env.make(service='smtps', wrapper=True,
                 service_cf='smtpd_tls_wrappermode = yes\n' + conf)
    r = subprocess.run(['openssl', 's_client', '-connect', '127.0.0.1:%d' % s.port,
                        '-showcerts', '-CAfile', root, '-verify_return_error',
                        '-verify_hostname', 'mail.example.com'],
                       input='', capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.stdout.count('-----BEGIN CERTIFICATE-----') == 2, out
    assert 'i:CN = postern test intermediate' in out and 'i:CN = postern test root' in out
    # Only the chain lets a client that trusts just the root verify.
    assert 'Verify return code: 0 (ok)' in out, out


def tls12_client():
    return client_context(minimum_version=ssl.TLSVersion.TLSv1_2,
                          maximum_version=ssl.TLSVersion.TLSv1_2)


def starttls_version(port, ctx):
    """The TLS version STARTTLS on port ends with, or None when the server
    refuses the handshake."""
    c = TlsClient(port)
    try:
        c.reply()
        c.cmd('EHLO client.example.org')
        try:
            return c.starttls(ctx).version()
        except ssl.SSLError:
            return None
    finally:
        c.close()


@pytest.mark.parametrize('setting, accepted', [
    ('', True),                                         # the default: >=TLSv1
    ('smtpd_tls_protocols = >=TLSv1.3\n', False),
    ('smtpd_tls_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.2\n', False),
    # Opportunistic TLS does not read the mandatory list.
    ('smtpd_tls_mandatory_protocols = >=TLSv1.3\n', True),
])
def test_protocols_setting_decides_may(env, setting, accepted):
    """The control for test_old_protocols_refused: the same TLS 1.2 client
    gets in or not depending only on the protocol setting."""
    s = env.make(main_cf='smtpd_tls_security_level = may\n' + setting)
    assert starttls_version(s.port, tls12_client()) == ('TLSv1.2' if accepted else None)
    if not accepted:
        s.wait_log('SSL_accept error from localhost[127.0.0.1]: unsupported protocol')
    # A TLS 1.3 client gets in either way.
    assert starttls_version(s.port, client_context()) == 'TLSv1.3'


@pytest.mark.parametrize('setting, accepted', [
    ('', True),
    ('smtpd_tls_mandatory_protocols = >=TLSv1.3\n', False),
    # The encrypt level does not read the opportunistic list.
    ('smtpd_tls_protocols = >=TLSv1.3\n', True),
])
def test_encrypt_level_uses_mandatory_protocols(env, setting, accepted):
    s = env.make(main_cf='smtpd_tls_security_level = encrypt\n' + setting)
    assert starttls_version(s.port, tls12_client()) == ('TLSv1.2' if accepted else None)


@pytest.mark.parametrize('level', [0, 2])
def test_tls_loglevel(env, level):
    s = env.make(main_cf='smtpd_tls_security_level = may\nsmtpd_tls_loglevel = %d\n' % level)
    c = TlsClient(s.port)
    c.reply()
    c.cmd('EHLO client.example.org')
    c.starttls()
    assert c.cmd('QUIT') == ['221 2.0.0 Bye']
    c.close()
    s.wait_log('disconnect from localhost[127.0.0.1]')
    log = s.log_text()
    lines = ('setting up TLS connection from localhost[127.0.0.1]',
             'Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3 with cipher')
    for line in lines:
        assert (line in log) == (level == 2), log


def test_tls12_only_server_refuses_tls13(env):
    # The other direction: <= bounds are applied too.
    s = env.make(service='smtps', wrapper=True,
                 service_cf='smtpd_tls_wrappermode = yes\nsmtpd_tls_protocols = <=TLSv1.2\n')
    with tls_connect(s.port) as t:
        assert t.version() == 'TLSv1.2'
    ctx = client_context(minimum_version=ssl.TLSVersion.TLSv1_3)
    with pytest.raises(ssl.SSLError):
        tls_connect(s.port, ctx)


@pytest.mark.parametrize('forbid', ['no', 'yes'])
def test_plaintext_pipelined_after_starttls_is_discarded(env, forbid):
    s = env.make(main_cf='smtpd_tls_security_level = may\n'
                 'smtpd_forbid_unauth_pipelining = %s\n' % forbid)
    c = TlsClient(s.port)
    c.reply()
    c.cmd('EHLO client.example.org')
    c.send('STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n')
    if forbid == 'yes':
        # Postfix 3.9 behaviour: a protocol violation ends the session.
        assert c.reply() == ['554 5.5.0 Error: SMTP protocol synchronization']
        assert c.closed()
        s.wait_log('improper command pipelining after starttls from localhost[127.0.0.1]')
        return
    assert c.reply() == ['220 2.0.0 Ready to start TLS']
    c.sock = client_context().wrap_socket(c.sock)
    c.cmd('EHLO client.example.org')
    assert c.cmd('RCPT TO:<user@example.test>') == ['503 5.5.1 Error: need MAIL command']
    s.wait_log('improper command pipelining after STARTTLS from localhost[127.0.0.1]: '
               'discarding %d bytes of plaintext' % len('MAIL FROM:<evil@x.example>\r\n'))


def test_key_from_credential(env, tmp_path):
    creds = tmp_path / 'creds'
    creds.mkdir()
    shutil.copy(env.key, creds / 'smtpd_tls_key_file')
    s = env.make(main_cf='smtpd_tls_security_level = may\n'
                 'smtpd_tls_key_file = /nonexistent/private/mail.key\n',
                 env={'CREDENTIALS_DIRECTORY': str(creds)})
    c = TlsClient(s.port)
    c.reply()
    c.starttls()
    assert c.cmd('NOOP') == ['250 2.0.0 Ok']
    # The key file's base name works as the credential name too.
    os.rename(creds / 'smtpd_tls_key_file', creds / 'mail.key')
    s2 = env.make(main_cf='smtpd_tls_security_level = may\n'
                  'smtpd_tls_key_file = /nonexistent/private/mail.key\n',
                  env={'CREDENTIALS_DIRECTORY': str(creds)})
    c = TlsClient(s2.port)
    c.reply()
    c.starttls()
    assert c.cmd('NOOP') == ['250 2.0.0 Ok']


def test_missing_certificate_is_a_startup_error(env):
    s = env.make(main_cf='smtpd_tls_security_level = may\n'
                 'smtpd_tls_cert_file = /nonexistent/cert.pem\n', start=False)
    s.log = open(s.log_path, 'w')
    r = subprocess.run([SMTPD, '--service=smtpd', '-c', s.confdir],
                       env=dict(os.environ, POSTERN_LOG_TARGET='stderr', LISTEN_FDS='0'),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert 'TLS setup failed: cannot read certificate /nonexistent/cert.pem: ' \
           'No such file or directory' in r.stderr, r.stderr


POSTERNCTL = program('src/tools/posternctl/posternctl')


def posternctl_check(confdir, main_cf, env=None):
    with open(os.path.join(confdir, 'main.cf'), 'w') as f:
        # No dependence on the host's /etc/aliases.db.
        f.write(main_cf + 'alias_maps =\nlocal_recipient_maps =\n')
    e = {k: v for k, v in os.environ.items() if k != 'CREDENTIALS_DIRECTORY'}
    e.update(env or {})
    return subprocess.run([POSTERNCTL, 'check', '-c', confdir], capture_output=True,
                          text=True, env=e, timeout=60)


def test_posternctl_check_tls_files(env, tmp_path):
    conf = tmp_path / 'conf'
    (conf / 'services.d').mkdir(parents=True)
    main = str(conf / 'main.cf')
    r = posternctl_check(str(conf), 'smtpd_tls_security_level = may\n'
                         'smtpd_tls_cert_file = /nonexistent/cert.pem\n'
                         'smtpd_tls_key_file = %s\n' % env.key)
    assert r.returncode == 1
    assert ('posternctl: %s:2: error: smtpd_tls_cert_file: cannot read /nonexistent/cert.pem: '
            'No such file or directory' % main) in r.stderr.splitlines(), r.stderr

    # The key only as a systemd credential (LoadCredential=), as the unit
    # runs the check: accepted, by parameter name or by the file's base name.
    creds = tmp_path / 'creds'
    creds.mkdir()
    key_conf = ('smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\n'
                'smtpd_tls_key_file = /nonexistent/private/mail.key\n' % env.cert)
    r = posternctl_check(str(conf), key_conf)
    assert r.returncode == 1
    assert ('posternctl: %s:3: error: smtpd_tls_key_file: cannot read '
            '/nonexistent/private/mail.key: No such file or directory' % main) in \
        r.stderr.splitlines(), r.stderr
    for name in ('smtpd_tls_key_file', 'mail.key'):
        shutil.copy(env.key, creds / name)
        r = posternctl_check(str(conf), key_conf, {'CREDENTIALS_DIRECTORY': str(creds)})
        assert r.returncode == 0 and 'smtpd_tls' not in r.stderr, r.stderr
        os.unlink(creds / name)
    # A credential with the wrong key is found and refused.
    _, other_key = make_cert(str(tmp_path), 'other')
    shutil.copy(other_key, creds / 'smtpd_tls_key_file')
    r = posternctl_check(str(conf), key_conf, {'CREDENTIALS_DIRECTORY': str(creds)})
    assert r.returncode == 1
    assert ('%s:3: error: smtpd_tls_key_file: cannot load the private key from %s: ' %
            (main, creds / 'smtpd_tls_key_file')) in r.stderr, r.stderr
    assert 'key values mismatch' in r.stderr


def peer_cn(sock):
    der = sock.getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der)
    r = subprocess.run(['openssl', 'x509', '-noout', '-subject'], input=pem,
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


def test_reload_new_certificate(env):
    s = env.make(main_cf='smtpd_tls_security_level = may\n')
    old = TlsClient(s.port)
    old.reply()
    assert 'mail.example.com' in peer_cn(old.starttls())
    # Replace the files in place, as certbot's deploy hook would, and reload.
    new_cert, new_key = make_cert(env.tmp, 'renewed', cn='renewed.example.com')
    shutil.copy(new_cert, env.cert)
    shutil.copy(new_key, env.key)
    os.kill(s.pid(), signal.SIGHUP)
    s.wait_log('Reloaded the TLS configuration')
    # The open session keeps working on its TLS session.
    assert old.cmd('NOOP') == ['250 2.0.0 Ok']
    assert old.cmd('EHLO x')[0] == '250-mx.example.test'
    new = TlsClient(s.port)
    new.reply()
    assert 'renewed.example.com' in peer_cn(new.starttls())
    assert old.cmd('QUIT') == ['221 2.0.0 Bye']
    # A broken certificate on reload keeps the running one.
    with open(env.cert, 'w') as f:
        f.write('garbage\n')
    os.kill(s.pid(), signal.SIGHUP)
    s.wait_log('keeping the previous certificates')
    c = TlsClient(s.port)
    c.reply()
    assert 'renewed.example.com' in peer_cn(c.starttls())


def test_session_resumption_by_ticket(env):
    s = env.make(service='smtps', wrapper=True,
                 service_cf='smtpd_tls_wrappermode = yes\nsmtpd_tls_loglevel = 1\n')
    ctx = client_context()
    with tls_connect(s.port, ctx) as t:
        t.recv(1000)            # TLS 1.3 tickets arrive after the handshake
        t.sendall(b'QUIT\r\n')
        t.recv(1000)
        session = t.session
    assert session is not None
    with tls_connect(s.port, ctx, session=session) as t:
        assert t.recv(1000).startswith(b'220 ')
        assert t.session_reused
    s.wait_log('(resumed)')


# smtpd_sender_login_maps: which SASL logins own which sender addresses.
# Keys as Postfix looks them up: user@domain (also without the address
# extension), the bare local part for a local domain, then @domain.
LOGIN_MAP = '''\
alice@example.test      alice
shared@example.test     alice, bob
info@remote.example     ALICE
postmaster              bob
@team.example           bob
'''


def login_server(env, restriction, extra=''):
    path = os.path.join(env.tmp, 'sender_logins')
    with open(path, 'w') as f:
        f.write(LOGIN_MAP)
    return env.make(main_cf='smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n'
                    'recipient_delimiter = +\n'
                    'smtpd_sender_login_maps = texthash:%s\n'
                    'smtpd_sender_restrictions = %s\n' % (path, restriction) + extra)


def rcpt_as(s, sender, user=None, rcpt='user@example.test'):
    """The replies to MAIL FROM and RCPT TO from a client logged in as user
    (None: not authenticated)."""
    c = TlsClient(s.port)
    c.reply()
    c.starttls()
    c.cmd('EHLO client.example.org')
    if user:
        assert c.auth_plain(user, USERS[user]) == ['235 2.7.0 Authentication successful']
    mail = c.cmd('MAIL FROM:<%s>' % sender)
    r = c.cmd('RCPT TO:<%s>' % rcpt) if mail == ['250 2.1.0 Ok'] else None
    c.cmd('QUIT')
    c.close()
    return mail, r


def not_owned(sender, user):
    return ['553 5.7.1 <%s>: Sender address rejected: not owned by user %s' % (sender, user)]


def not_logged_in(sender):
    return ['553 5.7.1 <%s>: Sender address rejected: not logged in' % sender]


@needs_dovecot
def test_reject_sender_login_mismatch(env):
    """An authenticated user sends only as the addresses the table gives
    them; an address that has an owner needs a login."""
    s = login_server(env, 'reject_sender_login_mismatch')
    ok = ['250 2.1.5 Ok']
    # The owner, also with an extension, another case, or a shared address.
    for sender in ('alice@example.test', 'alice+lists@example.test', 'Alice@Example.TEST',
                   'shared@example.test', 'info@remote.example'):
        assert rcpt_as(s, sender, 'alice')[1] == ok, sender
    # Somebody else's address, by full key, by local part, by @domain, and
    # an address the table does not list at all.
    for sender in ('bob@team.example', 'postmaster@example.test', 'stranger@remote.example'):
        assert rcpt_as(s, sender, 'alice')[1] == not_owned(sender, 'alice'), sender
    assert rcpt_as(s, 'anyone@team.example', 'bob')[1] == ok
    assert rcpt_as(s, 'postmaster@example.test', 'bob')[1] == ok
    assert rcpt_as(s, 'postmaster@mx.example.test', 'bob')[1] == ok
    assert rcpt_as(s, 'shared@example.test', 'bob')[1] == ok
    # The bare local part stands for local domains only.
    assert rcpt_as(s, 'postmaster@remote.example', 'bob')[1] == \
        not_owned('postmaster@remote.example', 'bob')
    # Without a login: owned addresses are refused, others and <> pass.
    assert rcpt_as(s, 'alice@example.test')[1] == not_logged_in('alice@example.test')
    assert rcpt_as(s, 'x@team.example')[1] == not_logged_in('x@team.example')
    assert rcpt_as(s, 'stranger@remote.example')[1] == ok
    assert rcpt_as(s, '')[1] == ok
    s.wait_log('reject: RCPT from localhost[127.0.0.1]: 553 5.7.1 <bob@team.example>: '
               'Sender address rejected: not owned by user alice')


@needs_dovecot
@pytest.mark.parametrize('restriction, owner, foreign, unknown, anonymous', [
    # Whether each variant lets through: alice sending as alice, alice as
    # bob's address, alice as an address nobody owns, no login as alice.
    ('reject_authenticated_sender_login_mismatch', True, False, False, True),
    ('reject_known_sender_login_mismatch', True, False, True, False),
    ('reject_unauthenticated_sender_login_mismatch', True, True, True, False),
])
def test_sender_login_mismatch_variants(env, restriction, owner, foreign, unknown, anonymous):
    s = login_server(env, restriction)
    ok = ['250 2.1.5 Ok']

    def expect(passes, refusal):
        return ok if passes else refusal
    assert rcpt_as(s, 'alice@example.test', 'alice')[1] == expect(owner, None)
    assert rcpt_as(s, 'bob@team.example', 'alice')[1] == \
        expect(foreign, not_owned('bob@team.example', 'alice'))
    assert rcpt_as(s, 'stranger@remote.example', 'alice')[1] == \
        expect(unknown, not_owned('stranger@remote.example', 'alice'))
    assert rcpt_as(s, 'alice@example.test')[1] == \
        expect(anonymous, not_logged_in('alice@example.test'))


@needs_dovecot
def test_sender_login_mismatch_at_mail_without_delay(env):
    """smtpd_delay_reject = no: the sender restrictions answer MAIL FROM;
    smtplib sees the refusal and then sends as its own address."""
    s = login_server(env, 'reject_sender_login_mismatch', 'smtpd_delay_reject = no\n')
    with smtplib.SMTP('127.0.0.1', s.port) as smtp:
        smtp.starttls(context=client_context())
        smtp.ehlo('client.example.org')
        smtp.login('bob', 'secret-b')
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            smtp.sendmail('alice@example.test', ['someone@remote.example'], MSG)
        assert e.value.smtp_code == 553
        assert e.value.smtp_error == (b'5.7.1 <alice@example.test>: Sender address rejected: '
                                      b'not owned by user bob')
        smtp.sendmail('bob@team.example', ['someone@remote.example'], MSG)
    qids = s.queue_files()
    assert len(qids) == 1
    _, _, envelope = s.read_queue_file(qids[0])
    assert envelope['sender'] == 'bob@team.example'
    assert envelope['sasl_username'] == 'bob'


@needs_dovecot
def test_sender_login_maps_table_missing_defers(env):
    """A table that does not open is never read as "no owner": the check
    answers 451 4.3.0 (Postfix's temporary lookup failure)."""
    s = env.make(main_cf='smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n'
                 'smtpd_sender_login_maps = texthash:/nonexistent/sender_logins\n'
                 'smtpd_sender_restrictions = reject_sender_login_mismatch\n')
    assert rcpt_as(s, 'alice@example.test', 'alice')[1] == [
        '451 4.3.0 <alice@example.test>: Temporary lookup failure']


def man_example(name):
    """Example NAME of postern-smtpd(8), without its roff requests."""
    from test_man_examples import examples
    from common import SRC_DIR
    text = examples(os.path.join(SRC_DIR, 'man', 'postern-smtpd.8'))[name]
    return ''.join(line + '\n' for line in text.splitlines() if not line.startswith('.'))


@needs_dovecot
def test_man_page_submission_sender_ownership(env):
    """The example of postern-smtpd(8): the shipped submission.cf with the
    two lines added and the table shown; alice sends as herself and as
    sales@, not as carol's domain."""
    path = os.path.join(env.tmp, 'sender_logins')
    with open(path, 'w') as f:
        f.write(man_example('sender_logins'))
    added = man_example('submission sender ownership')
    assert '/etc/postern/sender_logins' in added
    s = env.make(service='submission', service_cf=shipped('services.d/submission.cf') +
                 added.replace('/etc/postern/sender_logins', path))
    assert rcpt_as(s, 'alice@example.com', 'alice', rcpt='x@remote.example')[1] == \
        ['250 2.1.5 Ok']
    assert rcpt_as(s, 'sales@example.com', 'bob', rcpt='x@remote.example')[1] == \
        ['250 2.1.5 Ok']
    assert rcpt_as(s, 'news@shop.example.com', 'alice', rcpt='x@remote.example')[1] == \
        not_owned('news@shop.example.com', 'alice')


@needs_dovecot
@pytest.mark.parametrize('networks, offered', [
    ('127.0.0.0/8', False),
    ('!127.0.0.1, 127.0.0.0/8', True),
    ('192.0.2.0/24', True),
])
def test_sasl_exceptions_networks(env, networks, offered):
    """EHLO does not announce AUTH to the clients listed; as in Postfix the
    command itself still works for a client that knows to use it."""
    s = env.make(main_cf='smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n'
                 'smtpd_sasl_exceptions_networks = %s\n' % networks)
    c = TlsClient(s.port)
    c.reply()
    c.starttls()
    kw = ehlo_keywords(c.cmd('EHLO client.example.org'))
    assert ('AUTH PLAIN LOGIN' in kw) == offered, kw
    assert 'STARTTLS' not in kw and 'PIPELINING' in kw
    assert c.auth_plain('alice', 'secret-a') == ['235 2.7.0 Authentication successful']
    c.cmd('QUIT')


@needs_dovecot
def test_discard_ehlo_auth_and_starttls(env):
    """smtpd_discard_ehlo_keywords hides AUTH and STARTTLS, and the
    commands are refused as Postfix refuses them."""
    s = env.make(main_cf='smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n'
                 'smtpd_tls_auth_only = no\n'
                 'smtpd_discard_ehlo_keywords = auth, starttls\n')
    c = TlsClient(s.port)
    c.reply()
    kw = ehlo_keywords(c.cmd('EHLO client.example.org'))
    assert not any(k.startswith('AUTH') or k == 'STARTTLS' for k in kw), kw
    assert c.cmd('STARTTLS') == ['502 5.5.1 Error: command not implemented']
    assert c.auth_plain('alice', 'secret-a') == ['503 5.5.1 Error: authentication not enabled']
    c.cmd('QUIT')
