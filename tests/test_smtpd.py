"""Integration tests of postern-smtpd: the built daemon under
systemd-socket-activate on a free loopback port, each test with its own
configuration and queue directory, driven by smtplib, swaks and a raw socket.
Assertions are on SMTP replies, queue files and log lines."""
import os
import smtplib
import subprocess
import time

import pytest

from smtpd_helpers import SMTPD, Smtpd, shipped, tmpfs_queue, wait_for

pytestmark = pytest.mark.skipif(not os.path.exists(SMTPD), reason='postern-smtpd not built')

MSG = ('From: sender@example.org\r\nTo: user@example.test\r\nSubject: test\r\n'
       'Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <t1@example.org>\r\n\r\n'
       'Hello.\r\n')


@pytest.fixture
def make_smtpd():
    started = []

    def make(**kw):
        s = Smtpd(**kw).start()
        started.append(s)
        return s
    yield make
    for s in started:
        s.cleanup()


@pytest.fixture
def smtpd(make_smtpd):
    return make_smtpd()


def queued_id(reply_text):
    assert reply_text.startswith('250 2.0.0 Ok: queued as '), reply_text
    return reply_text.split()[-1]


def test_banner_and_ehlo(smtpd):
    c = smtpd.connect()
    assert c.reply() == ['220 mx.example.test ESMTP postern']
    r = c.cmd('EHLO client.example.org')
    assert r[0] == '250-mx.example.test'
    keywords = [line[4:] for line in r[1:]]
    assert keywords == ['PIPELINING', 'SIZE 10240000', 'VRFY', 'ENHANCEDSTATUSCODES',
                        '8BITMIME', 'DSN', 'SMTPUTF8', 'CHUNKING']
    assert c.cmd('HELO client.example.org') == ['250 mx.example.test']
    assert c.cmd('QUIT') == ['221 2.0.0 Bye']
    assert c.closed()


def test_shipped_main_cf_disables_vrfy(make_smtpd):
    # The built-in default keeps VRFY (test_banner_and_ehlo, as Postfix);
    # the main.cf that postern installs turns it off.
    s = make_smtpd(main_cf=shipped('main.cf', 'disable_vrfy_command'))
    c = s.connect()
    c.reply()
    assert 'VRFY' not in [line[4:] for line in c.cmd('EHLO client.example.org')]
    assert c.cmd('VRFY <user@example.test>') == ['502 5.5.1 VRFY command is disabled']
    assert c.cmd('VRFY') == ['502 5.5.1 VRFY command is disabled']
    c.cmd('QUIT')


def test_smtplib_message_queued(smtpd):
    with smtplib.SMTP('127.0.0.1', smtpd.port) as s:
        s.ehlo('client.example.org')
        s.mail('sender@example.org')
        s.rcpt('user@example.test')
        code, text = s.data(MSG)
        assert code == 250
        qid = queued_id('250 ' + text.decode())
    assert smtpd.queue_files() == [qid]
    hdr, content, env = smtpd.read_queue_file(qid)
    assert env['id'] == qid
    assert env['sender'] == 'sender@example.org'
    assert env['rcpt'] == [('-', '-', '-', 'user@example.test')]
    assert env['client_addr'] == '127.0.0.1'
    assert env['helo'] == 'client.example.org'
    assert env['protocol'] == 'ESMTP'
    assert env['service'] == 'smtpd'
    assert int(env['size']) == hdr['size'] == len(content)
    text = content.decode()
    assert text.startswith('Received: from client.example.org (localhost [127.0.0.1])\n'
                           '\tby mx.example.test (postern) with ESMTP id %s\n'
                           '\tfor <user@example.test>; ' % qid)
    assert text.endswith('Subject: test\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n'
                         'Message-ID: <t1@example.org>\n\nHello.\n')
    assert '\r' not in text
    # The journal-shaped log lines.
    smtpd.wait_log('disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 '
                   'commands=5')
    log = smtpd.log_text()
    assert 'connect from localhost[127.0.0.1]' in log
    assert '%s: client=localhost[127.0.0.1]' % qid in log
    assert '%s: from=<sender@example.org>, size=%d, nrcpt=1' % (qid, len(content)) in log


def test_swaks(smtpd):
    r = subprocess.run(['swaks', '--server', '127.0.0.1', '--port', str(smtpd.port),
                        '--from', 'a@example.org', '--to', 'b@example.test,c@example.test',
                        '--helo', 'swaks.example.org', '--body', 'via swaks'],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '<-  250 2.0.0 Ok: queued as ' in r.stdout
    (qid,) = smtpd.queue_files()
    _, content, env = smtpd.read_queue_file(qid)
    assert [x[3] for x in env['rcpt']] == ['b@example.test', 'c@example.test']
    assert b'via swaks' in content
    # Two recipients: no "for <...>" in the Received header, as in Postfix.
    assert b'\tfor <' not in content


def test_command_replies(smtpd):
    c = smtpd.connect()
    c.reply()
    assert c.cmd('MAIL FROM:<a@example.org>') == ['250 2.1.0 Ok']
    assert c.cmd('MAIL FROM:<a@example.org>') == ['503 5.5.1 Error: nested MAIL command']
    assert c.cmd('DATA') == ['554 5.5.1 Error: no valid recipients']
    assert c.cmd('RSET') == ['250 2.0.0 Ok']
    assert c.cmd('RCPT TO:<b@example.test>') == ['503 5.5.1 Error: need MAIL command']
    assert c.cmd('DATA') == ['503 5.5.1 Error: need RCPT command']
    assert c.cmd('NOOP') == ['250 2.0.0 Ok']
    assert c.cmd('FOO') == ['502 5.5.2 Error: command not recognized']
    assert c.cmd('') == ['500 5.5.2 Error: bad syntax']
    assert c.cmd('MAIL TO:<x@y>') == ['501 5.5.4 Syntax: MAIL FROM:<address>']
    assert c.cmd('MAIL FROM:<a b@example.org>') == ['501 5.1.7 Bad sender address syntax']
    assert c.cmd('MAIL FROM:<a@example.org> FOO=1') == ['555 5.5.4 Unsupported option']
    assert c.cmd('VRFY') == ['501 5.5.4 Syntax: VRFY address']
    assert c.cmd('VRFY <user@example.test>') == ['252 2.0.0 user@example.test']
    assert c.cmd('AUTH PLAIN AGFAYg==') == ['503 5.5.1 Error: authentication not enabled']
    assert c.cmd('STARTTLS') == ['502 5.5.1 Error: command not implemented']
    assert c.cmd('HELO') == ['501 5.5.4 Syntax: HELO hostname']
    assert c.cmd('RSET x') == ['501 5.5.4 Syntax: RSET']
    assert c.cmd('HELP')[0].startswith('214 2.0.0 ')
    assert c.cmd('X' * 3000) == ['500 5.5.2 Error: line too long']
    assert c.cmd('NOOP') == ['250 2.0.0 Ok']
    assert c.cmd('QUIT') == ['221 2.0.0 Bye']


def test_relay_control(smtpd):
    # The default smtpd_relay_restrictions end in defer_unauth_destination:
    # 454 4.7.1, as Postfix answers (test_restrictions.py covers 554).
    c = smtpd.connect()
    c.reply()
    c.cmd('EHLO x.example.org')
    assert c.cmd('MAIL FROM:<a@example.org>') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<user@example.test>') == ['250 2.1.5 Ok']
    assert c.cmd('RCPT TO:<user@mx.example.test.>') == ['250 2.1.5 Ok']
    assert c.cmd('RCPT TO:<user@relay.example.test>') == ['250 2.1.5 Ok']
    assert c.cmd('RCPT TO:<user@sub.relay.example.test>') == ['250 2.1.5 Ok']
    assert c.cmd('RCPT TO:<postmaster>') == ['250 2.1.5 Ok']
    assert c.cmd('RCPT TO:<user@elsewhere.example>') == [
        '454 4.7.1 <user@elsewhere.example>: Relay access denied']
    assert c.cmd('RCPT TO:<user@[192.0.2.1]>') == [
        '454 4.7.1 <user@[192.0.2.1]>: Relay access denied']
    # After the first accepted RCPT the transaction has its queue ID: Postfix
    # logs the rejection under it instead of NOQUEUE.
    smtpd.wait_log(': reject: RCPT from localhost[127.0.0.1]: 454 4.7.1 '
                   '<user@elsewhere.example>: Relay access denied; from=<a@example.org> '
                   'to=<user@elsewhere.example> proto=ESMTP helo=<x.example.org>')


def test_reject_log_names_the_restriction(make_smtpd):
    s = make_smtpd(journal=True, main_cf='smtpd_relay_restrictions = permit_mynetworks, '
                   'permit_sasl_authenticated, reject_unauth_destination\n')
    c = s.connect()
    c.reply()
    c.cmd('EHLO x.example.org')
    assert c.cmd('MAIL FROM:<a b@example.org>') == ['501 5.1.7 Bad sender address syntax']
    c.cmd('MAIL FROM:<a@example.org>')
    assert c.cmd('RCPT TO:<user@elsewhere.example>') == [
        '554 5.7.1 <user@elsewhere.example>: Relay access denied']
    c.cmd('QUIT')
    rec = s.journal.wait(lambda r: 'Relay access denied' in r.get('MESSAGE', ''),
                         'the relay rejection in the journal')
    assert rec['MESSAGE'] == (
        'NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 5.7.1 <user@elsewhere.example>: '
        'Relay access denied; from=<a@example.org> to=<user@elsewhere.example> proto=ESMTP '
        'helo=<x.example.org>')
    assert rec['POSTERN_RESTRICTION'] == 'reject_unauth_destination'
    assert rec['POSTERN_CLIENT'] == 'localhost[127.0.0.1]'
    assert rec['POSTERN_RECIPIENT'] == 'user@elsewhere.example'
    assert rec['POSTERN_SENDER'] == 'a@example.org'
    # A rejection outside the access policy names no restriction.
    rec = s.journal.wait(lambda r: 'Bad sender address syntax' in r.get('MESSAGE', ''),
                         'the syntax rejection in the journal')
    assert 'POSTERN_RESTRICTION' not in rec


def test_relay_from_mynetworks(make_smtpd):
    s = make_smtpd(main_cf='mynetworks = 127.0.0.0/8\n')
    c = s.connect()
    c.reply()
    c.cmd('MAIL FROM:<a@example.org>')
    assert c.cmd('RCPT TO:<user@elsewhere.example>') == ['250 2.1.5 Ok']


def test_pipelining(smtpd):
    c = smtpd.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    c.send('MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n'
           'RCPT TO:<nobody@elsewhere.example>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n')
    assert c.reply() == ['250 2.1.0 Ok']
    assert c.reply() == ['250 2.1.5 Ok']
    assert c.reply()[0].startswith('454 4.7.1')
    assert c.reply() == ['250 2.1.5 Ok']
    assert c.reply() == ['354 End data with <CR><LF>.<CR><LF>']
    c.send('Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<d@example.org>\r\n'
           'RCPT TO:<e@example.test>\r\nQUIT\r\n')
    qid = queued_id(c.reply()[0])
    assert c.reply() == ['250 2.1.0 Ok']
    assert c.reply() == ['250 2.1.5 Ok']
    assert c.reply() == ['221 2.0.0 Bye']
    _, content, env = smtpd.read_queue_file(qid)
    assert [r[3] for r in env['rcpt']] == ['b@example.test', 'c@example.test']
    smtpd.wait_log('ehlo=1 mail=2 rcpt=3/4 data=1 quit=1 commands=8/9')


def test_improper_pipelining_rejected(smtpd):
    c = smtpd.connect()
    c.reply()
    # EHLO ends a group: a client must wait for its reply.
    c.send('EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\n')
    assert c.reply() == ['554 5.5.0 Error: SMTP protocol synchronization']
    assert c.closed()
    smtpd.wait_log('improper command pipelining after ehlo from localhost[127.0.0.1]')


def test_improper_pipelining_allowed_when_not_forbidden(make_smtpd):
    s = make_smtpd(main_cf='smtpd_forbid_unauth_pipelining = no\n')
    c = s.connect()
    c.reply()
    c.send('EHLO client.example.org\r\nNOOP\r\n')
    assert c.reply()[0] == '250-mx.example.test'
    assert c.reply() == ['250 2.0.0 Ok']
    s.wait_log('improper command pipelining after ehlo')


def test_chunking(smtpd):
    # Not this host's address: the content stays exactly as sent.
    c = smtpd.connect(source='127.0.0.5')
    c.reply()
    c.cmd('EHLO client.example.org')
    c.cmd('MAIL FROM:<a@example.org> BODY=8BITMIME')
    c.cmd('RCPT TO:<b@example.test>')
    part1 = b'Subject: chunked\r\n\r\nline one\r\n.dot stays\r'
    part2 = b'\nlast line\r\n'
    c.send(b'BDAT %d\r\n' % len(part1) + part1)
    assert c.reply() == ['250 2.0.0 Ok: %d bytes' % len(part1)]
    c.send(b'BDAT %d LAST\r\n' % len(part2) + part2)
    qid = queued_id(c.reply()[0])
    _, content, env = smtpd.read_queue_file(qid)
    assert content.endswith(b'Subject: chunked\n\nline one\n.dot stays\nlast line\n')
    assert env['body'] == '8BITMIME'
    # A refused chunk is read and thrown away, and the session goes on.
    c.send(b'BDAT 10\r\n0123456789')
    assert c.reply() == ['503 5.5.1 Error: need RCPT command']
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<b@example.test>')
    assert queued_id(c.cmd('BDAT 0 LAST')[0])
    assert c.cmd('QUIT') == ['221 2.0.0 Bye']
    assert len(smtpd.queue_files()) == 2


def test_size_limits(make_smtpd):
    s = make_smtpd(main_cf='message_size_limit = 20000\n')
    c = s.connect()
    c.reply()
    assert 'SIZE 20000' in [x[4:] for x in c.cmd('EHLO client.example.org')]
    assert c.cmd('MAIL FROM:<a@example.org> SIZE=20001') == [
        '552 5.3.4 Message size exceeds fixed limit']
    assert c.cmd('MAIL FROM:<a@example.org> SIZE=1000') == ['250 2.1.0 Ok']
    c.cmd('RCPT TO:<b@example.test>')
    c.cmd('DATA')
    c.send(b'Subject: big\r\n\r\n' + (b'x' * 998 + b'\r\n') * 30 + b'.\r\n')
    assert c.reply() == ['552 5.3.4 Message size exceeds fixed limit']
    # The session goes on and nothing was queued.
    assert c.cmd('NOOP') == ['250 2.0.0 Ok']
    assert s.queue_files(hidden=True) == []


def test_recipient_limit(make_smtpd):
    s = make_smtpd(main_cf='smtpd_recipient_limit = 2\n')
    c = s.connect()
    c.reply()
    c.cmd('MAIL FROM:<a@example.org>')
    assert c.cmd('RCPT TO:<b@example.test>') == ['250 2.1.5 Ok']
    assert c.cmd('RCPT TO:<c@example.test>') == ['250 2.1.5 Ok']
    assert c.cmd('RCPT TO:<d@example.test>') == ['452 4.5.3 Error: too many recipients']


def test_hard_error_limit(make_smtpd):
    s = make_smtpd(main_cf='smtpd_hard_error_limit = 5\n')
    c = s.connect()
    c.reply()
    for i in range(4):
        assert c.cmd('BOGUS') == ['502 5.5.2 Error: command not recognized']
    c.send('BOGUS\r\n')
    assert c.reply() == ['502 5.5.2 Error: command not recognized']
    assert c.reply() == ['421 4.7.0 mx.example.test Error: too many errors']
    assert c.closed()
    s.wait_log('disconnect from localhost[127.0.0.1] unknown=0/5 commands=0/5')


def test_error_sleep_does_not_block_others(make_smtpd):
    s = make_smtpd(main_cf='smtpd_soft_error_limit = 1\nsmtpd_error_sleep_time = 2s\n')
    bad = s.connect()
    bad.reply()
    bad.cmd('BOGUS')
    bad.send('BOGUS\r\n')           # this reply is held back for 2 s
    t0 = time.monotonic()
    good = s.connect()
    assert good.reply()[0].startswith('220 ')
    assert good.cmd('NOOP') == ['250 2.0.0 Ok']
    assert time.monotonic() - t0 < 1.5
    assert bad.reply() == ['502 5.5.2 Error: command not recognized']
    assert time.monotonic() - t0 >= 1.5


def test_timeout(make_smtpd):
    s = make_smtpd(main_cf='smtpd_timeout = 1s\n')
    c = s.connect()
    c.reply()
    assert c.reply() == ['421 4.4.2 mx.example.test Error: timeout exceeded']
    assert c.closed()
    s.wait_log('timeout after unknown from localhost[127.0.0.1]')


SMUGGLING = [
    b'\n.\n',
    b'\r.\r\n',
    b'\n.\r\n',
    b'\r\n.\n',
    b'\r\n.\r',
]


@pytest.mark.parametrize('end', SMUGGLING, ids=['lf-dot-lf', 'cr-dot-crlf', 'lf-dot-crlf',
                                                'crlf-dot-lf', 'crlf-dot-cr'])
def test_smuggling(smtpd, end):
    c = smtpd.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<b@example.test>')
    assert c.cmd('DATA')[0].startswith('354')
    smuggled = (b'Subject: first\r\n\r\nfirst body' + end +
                b'MAIL FROM:<admin@example.test>\r\nRCPT TO:<victim@example.test>\r\n'
                b'DATA\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n.\r\n')
    c.send(smuggled)
    qid = queued_id(c.reply()[0])
    assert c.cmd('QUIT') == ['221 2.0.0 Bye']
    assert smtpd.queue_files() == [qid]
    _, content, env = smtpd.read_queue_file(qid)
    assert b'MAIL FROM:<admin@example.test>' in content
    assert b'smuggled body' in content
    assert [r[3] for r in env['rcpt']] == ['b@example.test']


def test_bare_lf_reject(make_smtpd):
    s = make_smtpd(main_cf='smtpd_forbid_bare_newline = reject\n')
    c = s.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<b@example.test>')
    c.cmd('DATA')
    c.send(b'Subject: x\r\n\r\nbare\nlf\r\n.\r\n')
    assert c.reply() == ['550 5.5.2 mx.example.test Error: bare <LF> received']
    assert c.closed()
    assert s.queue_files(hidden=True) == []


def test_dsn_and_smtputf8_in_envelope(smtpd):
    c = smtpd.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    assert c.cmd('MAIL FROM:<j\u00f6rg@example.org> SMTPUTF8 RET=HDRS ENVID=QQ314159') == [
        '250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE '
                 'ORCPT=rfc822;b+40example.test') == ['250 2.1.5 Ok']
    assert c.cmd('RCPT TO:<c@example.test> NOTIFY=NEVER') == ['250 2.1.5 Ok']
    c.cmd('DATA')
    c.send('Subject: x\r\n\r\ny\r\n.\r\n')
    qid = queued_id(c.reply()[0])
    _, content, env = smtpd.read_queue_file(qid)
    assert env['sender'] == 'j\u00f6rg@example.org'
    assert env['ret'] == 'HDRS'
    assert env['envid'] == 'QQ314159'
    assert env['smtputf8'] == 'yes'
    assert env['rcpt'] == [('-', 'SUCCESS,FAILURE', 'rfc822;b+40example.test', 'b@example.test'),
                           ('-', 'NEVER', '-', 'c@example.test')]
    assert b'with UTF8SMTP id' in content


CHECKS = r'''/^Subject: reject me/        REJECT Go away
/^Subject: code reject/       REJECT 554 5.7.0 Custom code
/^Subject: discard me/        DISCARD
/^Subject: hold me/           HOLD
/^Subject: warn me/           WARN watch this
/^X-Drop-Me:/                 IGNORE
/^Subject: redirect me/       REDIRECT catch@example.test
'''
BODY_CHECKS = r'''/forbidden words/  REJECT Body says no
'''


def send_subject(s, subject, extra='', body='hi'):
    c = s.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<b@example.test>')
    c.cmd('RCPT TO:<c@example.test>')
    c.cmd('DATA')
    c.send('Subject: %s\r\n%s\r\n%s\r\n.\r\n' % (subject, extra, body))
    r = c.reply()[0]
    c.cmd('QUIT')
    return r


def test_content_checks(make_smtpd, tmp_path):
    s = make_smtpd(main_cf='header_checks = regexp:$config_directory/header_checks\n'
                           'body_checks = regexp:$config_directory/body_checks\n',
                   files={'header_checks': CHECKS, 'body_checks': BODY_CHECKS})
    assert send_subject(s, 'reject me') == '550 5.7.1 Go away'
    assert send_subject(s, 'code reject') == '554 5.7.0 Custom code'
    assert send_subject(s, 'fine', body='these are forbidden words') == '550 5.7.1 Body says no'
    assert s.queue_files(hidden=True) == []

    assert queued_id(send_subject(s, 'discard me'))
    assert s.queue_files(hidden=True) == []

    qid = queued_id(send_subject(s, 'hold me'))
    assert s.queue_files() == []
    assert s.queue_files('hold') == [qid]
    hdr, _, _ = s.read_queue_file(qid, 'hold')
    assert hdr['flags'] == 1

    qid = queued_id(send_subject(s, 'warn me', extra='X-Drop-Me: yes\r\nX-Keep: yes\r\n'))
    _, content, _ = s.read_queue_file(qid)
    assert b'X-Keep: yes\n' in content
    assert b'X-Drop-Me' not in content
    s.wait_log('warning: header Subject: warn me from localhost[127.0.0.1]')

    qid = queued_id(send_subject(s, 'redirect me'))
    _, _, env = s.read_queue_file(qid)
    assert env['rcpt'] == [('-', '-', '-', 'catch@example.test')]
    log = s.log_text()
    assert 'reject: header Subject: reject me from localhost[127.0.0.1]' in log
    assert 'hold: header Subject: hold me' in log


def send_bare(s, sender='user@example.test', rcpt='friend@elsewhere.example', source=None):
    """A message with Subject: only; returns the content of its queue file."""
    c = s.connect(source)
    c.reply()
    c.cmd('EHLO laptop')
    c.cmd('MAIL FROM:<%s>' % sender)
    assert c.cmd('RCPT TO:<%s>' % rcpt) == ['250 2.1.5 Ok']
    c.cmd('DATA')
    c.send('Subject: no date\r\n\r\nbody\r\n.\r\n')
    qid = queued_id(c.reply()[0])
    c.cmd('QUIT')
    _, content, env = s.read_queue_file(qid)
    return qid, content.split(b'\n\n', 1)[0].decode(), env


def test_submission_adds_missing_headers(make_smtpd):
    # The shipped submission.cf names the clients (permit_mynetworks here;
    # test_tls_sasl.py covers permit_sasl_authenticated).
    s = make_smtpd(service='submission', service_cf='mynetworks = 127.0.0.0/8\n' +
                   shipped('services.d/submission.cf', 'local_header_rewrite_clients'))
    qid, head, env = send_bare(s, source='127.0.0.5')
    assert env['service'] == 'submission'
    assert 'Subject: no date' in head
    assert '\nDate: ' in head
    assert '\nMessage-ID: <' in head and ('.%s@mx.example.test>' % qid) in head
    assert '\nFrom: user@example.test' in head


def test_smtpd_does_not_add_headers(make_smtpd):
    # An MX client that is neither this host nor in mynetworks: its mail
    # is left as it came, whatever the service is called.
    for service in ('smtpd', 'submission'):
        s = make_smtpd(service=service)
        _, head, _ = send_bare(s, rcpt='b@example.test', source='127.0.0.5')
        assert 'Message-ID' not in head and '\nDate:' not in head and 'From:' not in head
    # The default local_header_rewrite_clients = permit_inet_interfaces:
    # this host's own address is local submission (Postfix).
    _, head, _ = send_bare(s, rcpt='b@example.test')
    assert '\nMessage-ID: <' in head and '\nDate: ' in head
    # always_add_missing_headers = yes: every client.
    s = make_smtpd(main_cf='always_add_missing_headers = yes\n')
    _, head, _ = send_bare(s, rcpt='b@example.test', source='127.0.0.5')
    assert '\nMessage-ID: <' in head and '\nFrom: user@example.test' in head


@pytest.fixture
def small_queue(tmp_path):
    """A queue directory on a 1 MiB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip('needs root to mount a tmpfs')
    with tmpfs_queue(tmp_path) as qdir:
        yield qdir


def test_queue_minfree(make_smtpd, small_queue):
    def mail(s, args=''):
        c = s.connect()
        c.reply()
        c.cmd('EHLO client.example.org')
        r = c.cmd('MAIL FROM:<a@example.org>' + args)
        c.cmd('QUIT')
        return r
    full = ['452 4.3.1 Insufficient system storage']
    # Postfix: 1.5 times message_size_limit must be free (10 MB > 1 MiB).
    s = make_smtpd(queue_dir=str(small_queue), main_cf='message_size_limit = 10000000\n')
    assert mail(s) == full
    s.wait_log('NOQUEUE: reject: MAIL from localhost[127.0.0.1]: 452 4.3.1 Insufficient system '
               'storage; from=<> proto=ESMTP helo=<client.example.org>')
    s.wait_log('warning: not enough free space in mail queue')
    # With a small limit, queue_minfree decides.
    s = make_smtpd(queue_dir=str(small_queue), main_cf='message_size_limit = 100000\n'
                   'queue_minfree = 2000000\n')
    assert mail(s) == full
    s = make_smtpd(queue_dir=str(small_queue), main_cf='message_size_limit = 100000\n'
                   'queue_minfree = 100000\n')
    assert mail(s) == ['250 2.1.0 Ok']
    # A declared SIZE must fit above queue_minfree.
    s = make_smtpd(queue_dir=str(small_queue), main_cf='message_size_limit = 0\n'
                   'queue_minfree = 524288\n')
    assert mail(s, ' SIZE=20000') == ['250 2.1.0 Ok']
    assert mail(s, ' SIZE=600000') == full
    # Nothing accepted: what is queued are the postmaster notices of the
    # 452s (resource is in the default notify_classes).
    for name in s.queue_files():
        assert s.read_queue_file(name)[2]['sender'] == 'double-bounce@mx.example.test'


def test_disk_full(make_smtpd, small_queue):
    qdir = small_queue
    # No size limit: MAIL passes, the queue file write runs out of space.
    s = make_smtpd(queue_dir=str(qdir), main_cf='message_size_limit = 0\n')
    c = s.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<b@example.test>')
    c.cmd('DATA')
    c.send(b'Subject: big\r\n\r\n' + (b'y' * 998 + b'\r\n') * 2100 + b'.\r\n')
    assert c.reply() == ['452 4.3.1 Insufficient system storage']
    assert os.listdir(qdir / 'incoming') == []
    # A small message still goes through afterwards.
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<b@example.test>')
    c.cmd('DATA')
    c.send(b'Subject: small\r\n\r\nok\r\n.\r\n')
    assert queued_id(c.reply()[0])
    c.cmd('QUIT')
    s.stop()


def strace_calls(path):
    """The system calls of an "strace -f -y -o path" log, each as one line
    placed where the call completed (unfinished/resumed pairs joined)."""
    pending, calls = {}, []
    with open(path, errors='replace') as f:
        for line in f:
            pid, _, rest = line.rstrip('\n').partition(' ')
            rest = rest.lstrip()
            if rest.endswith('<unfinished ...>'):
                pending[pid] = rest[:-len('<unfinished ...>')]
            elif rest.startswith('<... '):
                calls.append(pending.pop(pid, '') + rest.split('resumed>', 1)[-1])
            else:
                calls.append(rest)
    return calls


def test_queue_file_durable_before_250(make_smtpd, tmp_path):
    """Under strace: the queue file's data is synced, the file renamed into
    incoming/ and the directory synced, in that order, before the "250 Ok:
    queued" reply is written."""
    log = str(tmp_path / 'strace.log')
    s = make_smtpd(wrap=['strace', '-f', '-qq', '-y', '-s', '200', '-o', log, '-e',
                         'trace=fdatasync,fsync,sync_file_range,renameat,renameat2,rename,'
                         'write,writev,sendto,sendmsg'])
    r = send_subject(s, 'durable')
    qid = queued_id(r)
    s.stop()
    calls = strace_calls(log)
    incoming = os.path.join(s.queue, 'incoming')

    def first(pred, start=0, what=''):
        for i in range(start, len(calls)):
            if pred(calls[i]):
                return i
        raise AssertionError('no %s after call %d in:\n%s' % (what, start, '\n'.join(calls)))
    data_sync = first(lambda c: c.startswith(('fdatasync(', 'fsync(')) and
                      c.split(')', 1)[0].endswith('%s/.%s>' % (incoming, qid)) and
                      c.endswith('= 0'), what='data sync of the queue file')
    renamed = first(lambda c: c.startswith(('renameat(', 'renameat2(', 'rename(')) and
                    '".%s"' % qid in c and '"%s"' % qid in c and c.endswith('= 0'),
                    data_sync, 'rename into incoming/')
    dir_sync = first(lambda c: c.startswith('fsync(') and
                     c.split(')', 1)[0].endswith('<%s>' % incoming) and c.endswith('= 0'),
                     renamed, 'fsync of incoming/')
    reply = first(lambda c: c.startswith(('write(', 'writev(', 'sendto(', 'sendmsg(')) and
                  '250 2.0.0 Ok: queued as %s' % qid in c, what='the 250 reply')
    assert data_sync < renamed < dir_sync < reply, calls[data_sync:reply + 1]


B62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'


def queue_id_time(qid):
    """The arrival time a queue ID encodes (queue-id.h): 6 base-62 digits
    of seconds, 4 of microseconds."""
    def num(s):
        n = 0
        for ch in s:
            n = n * 62 + B62.index(ch)
        return n
    return num(qid[:6]) + num(qid[6:10]) / 1e6


def test_concurrent_sessions_group_commit(smtpd):
    import concurrent.futures

    def one(i):
        ids = []
        with smtplib.SMTP('127.0.0.1', smtpd.port) as s:
            for j in range(5):
                s.mail('a%d@example.org' % i)
                s.rcpt('b@example.test')
                code, text = s.data('Subject: %d/%d\r\n\r\nbody\r\n' % (i, j))
                ids.append(queued_id('%d %s' % (code, text.decode())))
        return ids
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        per_client = list(ex.map(one, range(20)))
    end = time.time()
    files = smtpd.queue_files(hidden=True)
    assert len(files) == 100 and not any(f.startswith('.') for f in files)
    ids = [qid for client in per_client for qid in client]
    assert sorted(ids) == files
    # Sortable by time: each client's messages, queued one after the
    # other, have increasing IDs, and every ID encodes a time within the
    # run.
    for client in per_client:
        assert client == sorted(client) and len(set(client)) == 5, client
    for qid in ids:
        assert start - 1 <= queue_id_time(qid) <= end + 1, (qid, start, end)


def test_idle_exit(make_smtpd):
    s = make_smtpd(main_cf='max_idle = 1s\n')
    c = s.connect()
    c.reply()
    c.cmd('QUIT')
    c.close()
    assert s.proc.wait(timeout=10) == 0


def test_qmgr_announcement(make_smtpd, tmp_path):
    """With a queue manager listening on the configured socket, the queue ID
    arrives as an org.postern.Queue1.Enqueue call. The peer here speaks just
    enough of the D-Bus handshake to receive the call."""
    import socket
    import threading
    s = make_smtpd()
    path = os.path.join(s.tmp, 'qmgr')
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    got = []

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(5)
        data = b''
        try:
            # sd-bus pipelines its side of the authentication handshake
            # (AUTH EXTERNAL, DATA, NEGOTIATE_UNIX_FD, BEGIN); answer it
            # in one go, then read the method call.
            while b'BEGIN\r\n' not in data:
                data += conn.recv(4096)
            conn.sendall(b'DATA\r\nOK 0123456789abcdef0123456789abcdef\r\nAGREE_UNIX_FD\r\n')
            while b'Enqueue' not in data or not qid_holder[0] or \
                    qid_holder[0].encode() not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        got.append(data)
        conn.close()
    qid_holder = ['']
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    qid = queued_id(send_subject(s, 'announce'))
    qid_holder[0] = qid
    t.join(10)
    srv.close()
    assert got and b'Enqueue' in got[0] and qid.encode() in got[0]


def test_qmgr_announcement_survives_a_restarted_queue_manager(make_smtpd):
    """A queue manager that dies with an announcement in flight gets it again
    on a new connection, and one that went away while idle is reached again
    for the next message: mail never waits for the next queue run because
    the queue manager was restarted."""
    import socket
    import threading
    s = make_smtpd()
    path = os.path.join(s.tmp, 'qmgr')
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    srv.settimeout(15)
    expect = []                 # queue IDs, one per connection, in order
    seen = []                   # (connection number, data)
    ready = threading.Event()

    def serve():
        for n in range(3):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.settimeout(10)
            data = b''
            try:
                while b'BEGIN\r\n' not in data:
                    data += conn.recv(4096)
                conn.sendall(b'DATA\r\nOK 0123456789abcdef0123456789abcdef\r\n'
                             b'AGREE_UNIX_FD\r\n')
                ready.wait(10)
                while len(expect) <= n or expect[n].encode() not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            seen.append((n, data))
            # Hang up without a reply, as a queue manager killed by -9 does.
            conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    qid1 = queued_id(send_subject(s, 'first'))
    expect.extend([qid1, qid1])
    ready.set()
    wait_for(lambda: len(seen) >= 2, timeout=10, what='the announcement again')
    qid2 = queued_id(send_subject(s, 'second'))
    expect.append(qid2)
    t.join(15)
    srv.close()
    assert [n for n, _ in seen] == [0, 1, 2]
    assert qid1.encode() in seen[0][1] and b'Enqueue' in seen[0][1]
    assert qid1.encode() in seen[1][1], 'not announced again on a new connection'
    assert qid2.encode() in seen[2][1], 'next message not announced after the hang-up'


# --- smtpd_reject_footer, smtpd_discard_ehlo_keywords, smtpd_noop_commands,
# smtpd_junk_command_limit, strict_rfc821_envelopes ---------------------------

def test_reject_footer(make_smtpd):
    """Every 4xx and 5xx reply ends with the footer lines, each with the
    reply's code and enhanced status code; 2xx replies are left alone; the
    log keeps the plain reply."""
    s = make_smtpd(main_cf='smtpd_reject_footer = For help call +1 555 0100.'
                           '\\nClient $client_address, server ${server_name}.\n')
    c = s.connect()
    c.reply()
    assert c.cmd('EHLO client.example.org')[-1] == '250 CHUNKING'
    assert c.cmd('MAIL FROM:<sender@example.org>') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<user@elsewhere.example>') == [
        '454-4.7.1 <user@elsewhere.example>: Relay access denied',
        '454-4.7.1 For help call +1 555 0100.',
        '454 4.7.1 Client 127.0.0.1, server mx.example.test.']
    # Without an enhanced status code only the reply code is repeated.
    assert c.cmd('FOO') == ['502-5.5.2 Error: command not recognized',
                            '502-5.5.2 For help call +1 555 0100.',
                            '502 5.5.2 Client 127.0.0.1, server mx.example.test.']
    assert c.cmd('QUIT') == ['221 2.0.0 Bye']
    s.wait_log('NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 454 4.7.1 '
               '<user@elsewhere.example>: Relay access denied;')
    assert 'For help call' not in s.log_text()


def test_reject_footer_continues_the_line(make_smtpd):
    """A footer that starts with \\c continues the reply's own line:
    one-line replies for clients that cannot read more."""
    s = make_smtpd(main_cf='smtpd_reject_footer = \\c (see https://help.example.test)\n')
    with smtplib.SMTP('127.0.0.1', s.port) as smtp:
        smtp.ehlo('client.example.org')
        smtp.mail('sender@example.org')
        code, text = smtp.rcpt('user@elsewhere.example')
    assert (code, text) == (454, b'4.7.1 <user@elsewhere.example>: Relay access denied '
                                 b'(see https://help.example.test)')


def test_discard_ehlo_keywords(make_smtpd):
    """Discarded keywords are not announced, and their commands and
    parameters are refused as Postfix refuses them."""
    s = make_smtpd(main_cf='smtpd_discard_ehlo_keywords = dsn, chunking, Pipelining, size\n')
    c = s.connect()
    c.reply()
    keywords = [line[4:] for line in c.cmd('EHLO client.example.org')[1:]]
    assert keywords == ['VRFY', 'ENHANCEDSTATUSCODES', '8BITMIME', 'SMTPUTF8']
    s.wait_log('localhost[127.0.0.1]: discarding EHLO keywords: PIPELINING SIZE DSN CHUNKING')
    assert c.cmd('MAIL FROM:<sender@example.org> RET=HDRS') == [
        '501 5.7.1 DSN support is disabled']
    assert c.cmd('MAIL FROM:<sender@example.org> SIZE=100') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<user@example.test> NOTIFY=NEVER') == [
        '501 5.7.1 DSN support is disabled']
    assert c.cmd('RCPT TO:<user@example.test>') == ['250 2.1.5 Ok']
    # BDAT cannot be skipped without CHUNKING: the session ends.
    assert c.cmd('BDAT 5 LAST') == ['521 5.5.1 Error: command not implemented']
    assert c.closed()


def test_discard_ehlo_keywords_silently(make_smtpd):
    s = make_smtpd(main_cf='smtpd_discard_ehlo_keywords = silent-discard, smtputf8, vrfy\n')
    c = s.connect()
    c.reply()
    keywords = [line[4:] for line in c.cmd('EHLO client.example.org')[1:]]
    assert keywords == ['PIPELINING', 'SIZE 10240000', 'ENHANCEDSTATUSCODES', '8BITMIME',
                        'DSN', 'CHUNKING']
    assert c.cmd('MAIL FROM:<sender@example.org> SMTPUTF8') == ['555 5.5.4 Unsupported option']
    assert c.cmd('QUIT') == ['221 2.0.0 Bye']
    c.closed()
    assert 'discarding EHLO keywords' not in s.log_text()


def test_discard_ehlo_pipelining_makes_pipelining_improper(make_smtpd):
    """Without PIPELINING announced, commands sent ahead are improper
    pipelining even after EHLO (reject_unauth_pipelining)."""
    s = make_smtpd(main_cf='smtpd_discard_ehlo_keywords = pipelining\n'
                           'smtpd_data_restrictions = reject_unauth_pipelining\n')
    c = s.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    c.send('MAIL FROM:<sender@example.org>\r\nRCPT TO:<user@example.test>\r\nDATA\r\n')
    assert c.reply() == ['250 2.1.0 Ok']
    assert c.reply() == ['250 2.1.5 Ok']
    assert c.reply() == ['503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP '
                         'command pipelining']


def test_noop_commands(make_smtpd):
    s = make_smtpd(main_cf='smtpd_noop_commands = XYZZY, soml\n')
    c = s.connect()
    c.reply()
    assert c.cmd('xyzzy plugh') == ['250 2.0.0 Ok']
    assert c.cmd('SOML FROM:<a@example.org>') == ['250 2.0.0 Ok']
    assert c.cmd('SAML FROM:<a@example.org>') == ['502 5.5.2 Error: command not recognized']
    assert c.cmd('QUIT') == ['221 2.0.0 Bye']


def test_junk_command_limit(make_smtpd):
    """Past smtpd_junk_command_limit commands that move no mail, each one
    is an error; the hard error limit then ends the session. A delivered
    message starts the count again."""
    s = make_smtpd(main_cf='smtpd_junk_command_limit = 2\nsmtpd_hard_error_limit = 2\n'
                           'smtpd_noop_commands = XYZZY\n')
    c = s.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    for cmd in ('NOOP', 'RSET', 'VRFY <user@example.test>'):
        assert c.cmd(cmd)[0].startswith('2'), cmd          # junk 1 to 3: no error yet
    assert c.cmd('MAIL FROM:<sender@example.org>') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:<user@example.test>') == ['250 2.1.5 Ok']
    assert c.cmd('DATA')[0].startswith('354')
    c.send(MSG + '.\r\n')
    assert c.reply()[0].startswith('250 2.0.0 Ok: queued as ')
    for cmd in ('NOOP', 'XYZZY', 'NOOP'):
        assert c.cmd(cmd) == ['250 2.0.0 Ok'], cmd
    assert c.cmd('NOOP') == ['250 2.0.0 Ok']                # error 1
    c.send('NOOP\r\n')                                      # error 2
    assert c.reply() == ['250 2.0.0 Ok']
    assert c.reply() == ['421 4.7.0 mx.example.test Error: too many errors']
    assert c.closed()


def test_strict_rfc821_envelopes(make_smtpd):
    s = make_smtpd(main_cf='strict_rfc821_envelopes = yes\n')
    c = s.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    assert c.cmd('MAIL FROM:sender@example.org') == ['501 5.1.7 Bad sender address syntax']
    assert c.cmd('MAIL FROM:<sender@example.org>') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:user@example.test') == ['501 5.1.3 Bad recipient address syntax']
    assert c.cmd('RCPT TO: <user@example.test>') == ['250 2.1.5 Ok']
    assert c.cmd('QUIT') == ['221 2.0.0 Bye']
    # The default accepts the bare form, as Postfix does.
    d = make_smtpd()
    c = d.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    assert c.cmd('MAIL FROM:sender@example.org') == ['250 2.1.0 Ok']
    assert c.cmd('RCPT TO:user@example.test') == ['250 2.1.5 Ok']


def test_reject_footer_man_page_example(make_smtpd):
    """The footer example of postern-smtpd(8), with this client's address."""
    from test_man_examples import examples
    from common import SRC_DIR
    want = [line for line in examples(os.path.join(SRC_DIR, 'man', 'postern-smtpd.8'))
            ['reject footer'].splitlines() if not line.startswith('.')]
    s = make_smtpd(main_cf='smtpd_reject_footer = Help: +1 555 0100, client $client_address\n')
    c = s.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    c.cmd('MAIL FROM:<sender@example.org>')
    assert c.cmd('RCPT TO:<user@example.net>') == [
        line.replace('192.0.2.7', '127.0.0.1') for line in want]
