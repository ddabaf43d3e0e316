"""notify_classes in postern-smtpd: a session that ends with an error of a
listed class (policy, protocol, resource, software) leaves one postmaster
notice in the queue, a transcript of the session as Postfix's smtpd sends
it, from double_bounce_sender to error_notice_recipient. The notices are
read from incoming/ and parsed with Python's email package."""
import base64
import email
import email.policy
import os
import re

import pytest

import dovecot_helpers
from dovecot_helpers import Dovecot
from smtpd_helpers import SMTPD, RawClient, Smtpd, tmpfs_queue, wait_for

pytestmark = pytest.mark.skipif(not os.path.exists(SMTPD), reason='postern-smtpd not built')

SENDER = 'double-bounce@mx.example.test'
POSTMASTER = 'postmaster@mx.example.test'


@pytest.fixture
def make_smtpd():
    started = []

    def make(**kw):
        s = Smtpd(**kw)
        started.append(s)
        return s.start()
    yield make
    for s in started:
        s.cleanup()


def notices(s):
    """(envelope, parsed message) of each postmaster notice in incoming/."""
    found = []
    for qid in s.queue_files():
        try:
            _, content, env = s.read_queue_file(qid)
        except FileNotFoundError:
            continue
        if env['sender'] == SENDER:
            found.append((env, email.message_from_bytes(content, policy=email.policy.default)))
    return found


def wait_notice(s):
    got = wait_for(lambda: notices(s), what='a postmaster notice in incoming/')
    assert len(got) == 1, got
    return got[0]


def no_notice(s):
    """After the daemon stopped (it finishes every commit first), nothing
    from double_bounce_sender is queued, not even a temporary file."""
    s.stop()
    assert notices(s) == []
    assert [n for n in s.queue_files(hidden=True) if n.startswith('.')] == []


def session(s, *commands):
    c = s.connect()
    replies = [c.reply()]
    for cmd in commands:
        replies.append(c.cmd(cmd))
    replies.append(c.cmd('QUIT'))
    assert c.closed()
    return replies


def check_notice(env, msg, to=POSTMASTER):
    assert [r[3] for r in env['rcpt']] == [to]
    # The client as the logs name it: NAME[ADDR] (the name may be unknown).
    assert re.fullmatch(r'postern SMTP server: errors from [^\s\[]+\[127\.0\.0\.1\]',
                        msg['Subject']), msg['Subject']
    assert msg['To'].addresses[0].addr_spec == to
    assert msg['From'].addresses[0].addr_spec == 'MAILER-DAEMON@mx.example.test'
    assert msg['Auto-Submitted'] == 'auto-generated'
    assert msg['Message-Id'] and msg['Date']
    body = msg.get_content()
    assert body.startswith('Transcript of session follows.\n\n Out: 220 mx.example.test ESMTP '
                           'postern\n'), body
    assert body.rstrip().endswith('For other details, see the local mail logfile')
    return body


def test_policy_relay_denied(make_smtpd):
    s = make_smtpd(main_cf='notify_classes = policy\nsmtpd_relay_restrictions = '
                   'permit_mynetworks, reject_unauth_destination\n')
    r = session(s, 'EHLO client.example.org', 'MAIL FROM:<a@example.org>',
                'RCPT TO:<someone@remote.example>')
    assert r[3] == ['554 5.7.1 <someone@remote.example>: Relay access denied']
    env, msg = wait_notice(s)
    body = check_notice(env, msg)
    assert ' In:  RCPT TO:<someone@remote.example>\n' in body
    assert ' Out: 554 5.7.1 <someone@remote.example>: Relay access denied\n' in body
    assert ' In:  QUIT\n Out: 221 2.0.0 Bye\n' in body
    s.wait_log('postmaster notice of SMTP errors (policy) from ')
    # One notice per session, and a session without errors sends none.
    session(s, 'EHLO client.example.org', 'NOOP')
    s.stop()
    assert len(notices(s)) == 1


def test_protocol_unknown_command(make_smtpd):
    s = make_smtpd(main_cf='notify_classes = protocol\n')
    r = session(s, 'EHLO client.example.org', 'FROB nicate')
    assert r[2] == ['502 5.5.2 Error: command not recognized']
    env, msg = wait_notice(s)
    body = check_notice(env, msg)
    assert ' In:  FROB nicate\n Out: 502 5.5.2 Error: command not recognized\n' in body
    s.wait_log('postmaster notice of SMTP errors (protocol) from ')
    # A relay denial is policy, not protocol: no notice for it.
    session(s, 'EHLO client.example.org', 'MAIL FROM:<a@example.org>',
            'RCPT TO:<someone@remote.example>')
    s.stop()
    assert len(notices(s)) == 1


def test_notice_journal_entry(make_smtpd):
    s = make_smtpd(journal=True, main_cf='notify_classes = protocol, policy\n')
    session(s, 'EHLO client.example.org', 'FROB', 'MAIL FROM:<a@example.org>',
            'RCPT TO:<someone@remote.example>')
    env, msg = wait_notice(s)
    rec = s.journal.wait(lambda r: r.get('MESSAGE_ID') == '79890b2bc9934193bd2245dacb8b6195',
                         'the notice in the journal')
    assert rec['POSTERN_QUEUE_ID'] == env['id']
    assert rec['POSTERN_NOTIFY_CLASSES'] == 'policy, protocol'
    assert rec['POSTERN_RECIPIENT'] == POSTMASTER
    assert rec['POSTERN_CLIENT'].endswith('[127.0.0.1]')
    assert rec['MESSAGE'].startswith('%s: postmaster notice of SMTP errors (policy, protocol) '
                                     'from ' % env['id'])
    # And the usual line of a queued message.
    rec = s.journal.wait(lambda r: r.get('POSTERN_QUEUE_ID') == env['id'] and
                         'nrcpt=1' in r.get('MESSAGE', ''), 'the from= line of the notice')
    assert rec['MESSAGE'] == ('%s: from=<%s>, size=%d, nrcpt=1 (queue incoming)'
                              % (env['id'], SENDER, s.read_queue_file(env['id'])[0]['size']))


def test_message_content_never_in_transcript(make_smtpd):
    s = make_smtpd(main_cf='notify_classes = protocol\nerror_notice_recipient = hostmaster\n')
    c = s.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<user@example.test>')
    assert c.cmd('DATA')[0].startswith('354')
    c.send('Subject: secret subject\r\n\r\nsecret body line\r\n.\r\n')
    assert c.reply()[0].startswith('250 2.0.0 Ok: queued as')
    assert c.cmd('HELO') == ['501 5.5.4 Syntax: HELO hostname']
    c.cmd('QUIT')
    env, msg = wait_notice(s)
    body = check_notice(env, msg, to='hostmaster@mx.example.test')
    assert ' In:  DATA\n Out: 354 End data with <CR><LF>.<CR><LF>\n Out: 250 2.0.0 Ok: queued as' \
        in body
    assert ' In:  HELO\n Out: 501 5.5.4 Syntax: HELO hostname\n' in body
    assert 'secret' not in msg.as_string()


def test_lost_connection_reason(make_smtpd):
    s = make_smtpd(main_cf='notify_classes = protocol\n')
    c = s.connect()
    c.reply()
    assert c.cmd('FROB')[0].startswith('502')
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<user@example.test>')
    c.cmd('DATA')
    c.send('Subject: cut short\r\n')
    c.sock.close()
    env, msg = wait_notice(s)
    body = check_notice(env, msg)
    assert body.endswith(' In:  DATA\n Out: 354 End data with <CR><LF>.<CR><LF>\n\n'
                         'Session aborted, reason: lost connection\n\n'
                         'For other details, see the local mail logfile\n'), body
    assert 'cut short' not in body


def test_connection_rate_limit_is_policy(make_smtpd):
    # The daemon's start-up probe was the one connection allowed.
    s = make_smtpd(main_cf='notify_classes = policy\nsmtpd_client_connection_rate_limit = 1\n'
                   'smtpd_client_event_limit_exceptions =\n')
    c = s.connect()
    r = c.reply()
    assert r[0].startswith('421 4.7.0 '), r
    env, msg = wait_notice(s)
    body = msg.get_content()
    assert body.startswith('Transcript of session follows.\n\n Out: %s\n\n' % r[0]), body


def test_errors_before_accepted_mail_are_forgiven(make_smtpd):
    # As Postfix: once a message is queued, the errors before it do not
    # make a notice.
    s = make_smtpd(main_cf='notify_classes = protocol\n')
    c = s.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    assert c.cmd('FROB')[0].startswith('502')
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<user@example.test>')
    c.cmd('DATA')
    c.send('Subject: x\r\n\r\nx\r\n.\r\n')
    assert c.reply()[0].startswith('250 2.0.0 Ok: queued as')
    c.cmd('QUIT')
    no_notice(s)


def test_bounce_message_too_big(make_smtpd):
    # As Postfix: mail refused for its size is the bounce class; the
    # transcript goes to error_notice_recipient all the same.
    s = make_smtpd(main_cf='notify_classes = bounce\nmessage_size_limit = 1000\n')
    c = s.connect()
    c.reply()
    c.cmd('EHLO client.example.org')
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<user@example.test>')
    c.cmd('DATA')
    c.send('Subject: big\r\n\r\n' + ('z' * 70 + '\r\n') * 30 + '.\r\n')
    assert c.reply() == ['552 5.3.4 Message size exceeds fixed limit']
    c.cmd('QUIT')
    env, msg = wait_notice(s)
    body = check_notice(env, msg)
    assert ' In:  DATA\n Out: 354 End data with <CR><LF>.<CR><LF>\n' \
        ' Out: 552 5.3.4 Message size exceeds fixed limit\n' in body
    assert 'zzz' not in body
    s.wait_log('postmaster notice of SMTP errors (bounce) from ')


def test_default_classes_ignore_policy_and_protocol(make_smtpd):
    s = make_smtpd()
    session(s, 'EHLO client.example.org', 'FROB', 'MAIL FROM:<a@example.org>',
            'RCPT TO:<someone@remote.example>')
    s.wait_log('disconnect from ')
    no_notice(s)


def test_resource_queue_minfree(make_smtpd):
    # queue_minfree refuses MAIL with 452 4.3.1; the space below it is
    # still there for the notice (Postfix's notices do not honour
    # queue_minfree either). resource is in the default notify_classes.
    s = make_smtpd(main_cf='queue_minfree = 1000000000000000\n')
    r = session(s, 'EHLO client.example.org', 'MAIL FROM:<a@example.org>')
    assert r[2] == ['452 4.3.1 Insufficient system storage']
    env, msg = wait_notice(s)
    body = check_notice(env, msg)
    assert ' In:  MAIL FROM:<a@example.org>\n Out: 452 4.3.1 Insufficient system storage\n' \
        in body
    s.wait_log('postmaster notice of SMTP errors (resource) from ')


@pytest.fixture
def full_queue(tmp_path):
    """A queue directory on a 1 MiB tmpfs, filled up."""
    if os.geteuid() != 0:
        pytest.skip('needs root to mount a tmpfs')
    with tmpfs_queue(tmp_path, fill=True) as qdir:
        yield qdir


def test_resource_disk_full_notice_fails_quietly(make_smtpd, full_queue):
    s = make_smtpd(queue_dir=str(full_queue))
    r = session(s, 'EHLO client.example.org', 'MAIL FROM:<a@example.org>')
    assert r[2] == ['452 4.3.1 Insufficient system storage']
    s.wait_log('[127.0.0.1]: No space left on device')
    assert 'warning: cannot queue the postmaster notice of SMTP errors from ' in s.log_text()
    # The daemon goes on, nothing half-written is left.
    assert session(s, 'NOOP')[1] == ['250 2.0.0 Ok']
    assert os.listdir(full_queue / 'incoming') == []


def auth_token(user, password):
    return base64.b64encode(b'\0' + user.encode() + b'\0' + password.encode()).decode()


def test_auth_initial_response_not_in_transcript(make_smtpd):
    # AUTH is not enabled: 503, a protocol error; the credentials on the
    # AUTH line never reach the transcript.
    s = make_smtpd(main_cf='notify_classes = protocol, policy\n')
    token = auth_token('alice', 'hunter2-secret')
    r = session(s, 'EHLO client.example.org', 'AUTH PLAIN ' + token)
    assert r[2] == ['503 5.5.1 Error: authentication not enabled']
    env, msg = wait_notice(s)
    body = check_notice(env, msg)
    assert ' In:  AUTH PLAIN (initial response not shown)\n' in body
    text = msg.as_string()
    assert token not in text and 'hunter2' not in text


@pytest.mark.skipif(not dovecot_helpers.available(), reason='no dovecot')
def test_failed_auth_never_in_transcript(make_smtpd):
    s = Smtpd(main_cf='notify_classes = protocol, policy\nsmtpd_sasl_auth_enable = yes\n')
    dovecot = Dovecot(os.path.join(s.queue, 'private', 'auth'), {'alice': 'right-pw'}).start()
    try:
        s.start()
        c = s.connect()
        c.reply()
        c.cmd('EHLO client.example.org')
        plain = auth_token('alice', 'wrong-pw-plain')
        assert c.cmd('AUTH PLAIN ' + plain)[0].startswith('535 5.7.8')
        user = base64.b64encode(b'alice').decode()
        pw = base64.b64encode(b'wrong-pw-login').decode()
        assert c.cmd('AUTH LOGIN')[0].startswith('334 ')
        assert c.cmd(user)[0].startswith('334 ')
        assert c.cmd(pw)[0].startswith('535 5.7.8')
        assert c.cmd('FROB')[0].startswith('502')
        c.cmd('QUIT')
        env, msg = wait_notice(s)
        body = check_notice(env, msg)
        assert ' In:  AUTH PLAIN (initial response not shown)\n' in body
        assert ' In:  AUTH LOGIN\n' in body
        assert body.count(' In:  (AUTH response not shown)\n') == 2
        text = msg.as_string()
        for secret in (plain, user, pw, 'wrong-pw'):
            assert secret not in text, secret
    finally:
        s.cleanup()
        dovecot.cleanup()


@pytest.fixture
def instance():
    """A whole postern (e2e_helpers.Instance) with the tutorial's virtual
    mailbox domain: postmaster@example.com is an alias of info@example.com."""
    import e2e_helpers
    if os.geteuid() != 0 or not e2e_helpers.SOCKET_ACTIVATE or not all(
            os.access(p, os.X_OK) for p in e2e_helpers.PROGRAMS.values()):
        pytest.skip('needs root, systemd-socket-activate and all daemons')
    inst = e2e_helpers.Instance('notify_classes = protocol\n')
    mailboxes = inst.table('vmailbox', 'info@example.com    example.com/info/\n')
    aliases = inst.table('virtual', 'postmaster@example.com  info@example.com\n')
    with open(os.path.join(inst.confdir, 'main.cf'), 'a') as f:
        f.write('virtual_mailbox_domains = example.com\n'
                'virtual_mailbox_maps = %s\n'
                'virtual_alias_maps = %s\n'
                'virtual_uid_maps = static:5000\n'
                'virtual_gid_maps = static:5000\n' % (mailboxes, aliases))
    yield inst
    inst.cleanup()


def test_notice_delivered(instance):
    """The notice goes through the queue manager like any mail and reaches
    the postmaster's mailbox."""
    import e2e_helpers
    inst = instance.start()
    c = RawClient(inst.smtpd_port)
    c.reply()
    c.cmd('EHLO client.example.org')
    assert c.cmd('FROB') == ['502 5.5.2 Error: command not recognized']
    c.cmd('QUIT')
    box = os.path.join(inst.vmail, 'example.com', 'info')
    files = e2e_helpers.wait_for(lambda: e2e_helpers.maildir_messages(box),
                                 what='the notice in the postmaster mailbox')
    assert len(files) == 1
    with open(files[0], 'rb') as f:
        msg = email.message_from_bytes(f.read(), policy=email.policy.default)
    assert msg['Return-Path'] == '<double-bounce@example.com>'
    assert msg['X-Original-To'] == 'postmaster@example.com'
    assert msg['Subject'].startswith('postern SMTP server: errors from ')
    assert ' In:  FROB\n Out: 502 5.5.2 Error: command not recognized\n' in msg.get_content()
