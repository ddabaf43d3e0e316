"""Integration tests of postern-bounce: the built daemon under
systemd-socket-activate on an AF_UNIX socket in a private runtime directory
($POSTERN_RUNTIME_DIR), with its own configuration and queue. The test
client calls org.postern.Bounce1.Notify with a queue file the way the queue
manager does; the tests read the report from incoming/ (postern-queue(5))
and parse it with Python's email package, and check the log lines."""
import email
import email.utils
import os
import secrets
import shutil
import signal
import subprocess
import tempfile

import pytest

from common import BUILD_DIR
from smtpd_helpers import parse_queue_file, wait_for

BOUNCE = os.path.join(BUILD_DIR, 'src', 'bounce', 'postern-bounce')
CLIENT = os.path.join(BUILD_DIR, 'src', 'bounce', 'test-bounce-client')
QUEUE_DIRS = ('incoming', 'active', 'deferred', 'hold', 'corrupt', 'maildrop')
OWN_MODULES = ('src/bounce/', 'queue-file.c', 'queue-id.c', 'addr.c')
ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'

pytestmark = pytest.mark.skipif(not (os.path.exists(BOUNCE) and os.path.exists(CLIENT)),
                                reason='postern-bounce not built')

ARRIVAL = 1700000000

MESSAGE = ('Received: from client.example.org (client.example.org [192.0.2.10])\n'
           '\tby mx.example.test (postern) with ESMTP id %(qid)s\n'
           '\tfor <user@example.net>; Tue, 14 Nov 2023 22:13:20 +0000\n'
           'From: Sender <sender@example.org>\n'
           'To: user@example.net\n'
           'Subject: Quarterly figures\n'
           'Message-ID: <m1@example.org>\n'
           '\n'
           'Hello,\n\nthe figures are attached.\n')


def new_queue_id():
    return ''.join(secrets.choice(ALPHABET) for _ in range(16))


def write_queue_file(path, qid, sender, rcpts, content, ret=None, envid=None):
    """Writes a queue file (postern-queue(5)). rcpts: list of (address,
    notify, orcpt) with '-' for none."""
    body = content.encode()
    env = ['id=' + qid, 'time=%d.000000' % ARRIVAL, 'size=%d' % len(body), 'sender=' + sender]
    if ret:
        env.append('ret=' + ret)
    if envid:
        env.append('envid=' + envid)
    env += ['body=7BIT', 'client_name=client.example.org', 'client_addr=192.0.2.10',
            'protocol=ESMTP', 'service=smtpd']
    for addr, notify, orcpt in rcpts:
        env.append('rcpt=- %s %s %s' % (notify, orcpt, addr))
    env.append('end=')
    envelope = ('\n'.join(env) + '\n').encode()
    header = ('POSTERNQ 0001 %016x %016x %08x' % (len(body), len(envelope), 0)).ljust(63) + '\n'
    with open(path, 'wb') as f:
        f.write(header.encode() + body + envelope)


class BounceService:
    """One postern-bounce instance; main_cf holds extra main.cf lines."""

    def __init__(self, main_cf='', files=None):
        self.tmp = tempfile.mkdtemp(prefix='postern-bounce-test.')
        self.confdir = os.path.join(self.tmp, 'conf')
        self.queue = os.path.join(self.tmp, 'queue')
        self.rundir = os.path.join(self.tmp, 'run')
        self.socket = os.path.join(self.rundir, 'bounce')
        self.log_path = os.path.join(self.tmp, 'bounce.log')
        self.proc = None
        os.makedirs(os.path.join(self.confdir, 'services.d'))
        os.makedirs(self.rundir)
        for d in QUEUE_DIRS:
            os.makedirs(os.path.join(self.queue, d))
        for name, text in (files or {}).items():
            with open(os.path.join(self.confdir, name), 'w', encoding='utf-8') as f:
                f.write(text)
        with open(os.path.join(self.confdir, 'main.cf'), 'w') as f:
            f.write('myhostname = mx.example.test\n'
                    'mydomain = example.test\n'
                    'queue_directory = %s\n'
                    'max_idle = 60s\n' % self.queue)
            f.write(main_cf)

    def start(self):
        self.log = open(self.log_path, 'w')
        env = dict(os.environ)
        env.pop('LISTEN_FDS', None)
        self.proc = subprocess.Popen(
            ['systemd-socket-activate', '-l', self.socket,
             '-E', 'POSTERN_LOG_TARGET=stderr',
             '-E', 'POSTERN_RUNTIME_DIR=' + self.rundir,
             BOUNCE, '-c', self.confdir],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_for(lambda: os.path.exists(self.socket), what='socket ' + self.socket)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, 'log', None):
            self.log.close()

    def cleanup(self):
        self.stop()
        log = self.log_text()
        shutil.rmtree(self.tmp, ignore_errors=True)
        for marker in ('ERROR: AddressSanitizer', 'ERROR: LeakSanitizer'):
            assert marker not in log, log
        for line in log.splitlines():
            if 'runtime error:' in line:
                assert not any(m in line for m in OWN_MODULES), log

    def log_text(self):
        if not os.path.exists(self.log_path):
            return ''
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def wait_log(self, text, timeout=10):
        return wait_for(lambda: text in self.log_text(), timeout, 'log line ' + repr(text))

    def original(self, sender='sender@example.org', rcpts=None, ret=None, envid=None,
                 content=None):
        """Queues an original message in active/ and returns its queue ID."""
        qid = new_queue_id()
        rcpts = rcpts or [('user@example.net', '-', '-')]
        write_queue_file(os.path.join(self.queue, 'active', qid), qid, sender, rcpts,
                         content if content is not None else MESSAGE % {'qid': qid}, ret, envid)
        return qid

    def notify(self, qid, kind, rcpts, relay='', last_attempt=(ARRIVAL + 3600) * 1000000,
               check=True):
        """Calls Notify; rcpts: list of (index, address, orig, dsn, diagnostic).
        Returns the CompletedProcess; with check, the report queue ID."""
        args = [CLIENT, '--socket=' + self.socket, '--relay=' + relay,
                '--last-attempt=%d' % last_attempt]
        for r in rcpts:
            args.append('--rcpt=' + '|'.join(str(x) for x in r))
        args += [os.path.join(self.queue, 'active', qid), qid, kind]
        p = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if not check:
            return p
        assert p.returncode == 0, (p.stderr, self.log_text())
        return p.stdout.strip()

    def incoming(self):
        return sorted(n for n in os.listdir(os.path.join(self.queue, 'incoming'))
                      if not n.startswith('.'))

    def report(self, qid):
        """(envelope dict, parsed email.message.Message) of a report."""
        with open(os.path.join(self.queue, 'incoming', qid), 'rb') as f:
            hdr, content, env = parse_queue_file(f.read())
        return env, email.message_from_bytes(content)


@pytest.fixture
def make_bounce():
    started = []

    def make(**kw):
        b = BounceService(**kw).start()
        started.append(b)
        return b
    yield make
    for b in started:
        b.cleanup()


@pytest.fixture
def bounce(make_bounce):
    return make_bounce()


def parts(msg):
    assert msg.get_content_type() == 'multipart/report'
    assert msg.get_param('report-type') == 'delivery-status'
    p = msg.get_payload()
    assert len(p) == 3, [x.get_content_type() for x in p]
    return p


def dsn_fields(msg):
    """(per-message fields, [per-recipient fields]) of the report."""
    status = parts(msg)[1]
    assert status.get_content_type() in ('message/delivery-status',
                                         'message/global-delivery-status')
    blocks = status.get_payload()
    return blocks[0], blocks[1:]


def date_of(value):
    return email.utils.parsedate_to_datetime(value).timestamp()


def check_common_headers(msg, to, subject):
    assert msg['From'] == 'Mail Delivery System <MAILER-DAEMON@mx.example.test>'
    assert msg['To'] == to
    assert msg['Subject'] == subject
    assert msg['Auto-Submitted'] == 'auto-replied'
    assert msg['MIME-Version'] == '1.0'
    assert msg['Message-Id'].endswith('@mx.example.test>')
    assert email.utils.parsedate_to_datetime(msg['Date']) is not None


def test_remote_5xx(bounce):
    qid = bounce.original()
    diag = '550 5.1.1 <user@example.net>: Recipient address rejected: User unknown'
    rid = bounce.notify(qid, 'failure', [(0, 'user@example.net', '', '5.1.1', diag)],
                        relay='mx.example.net[192.0.2.25]:25')
    assert rid and bounce.incoming() == [rid]
    env, msg = bounce.report(rid)
    # The null sender to the original sender, one recipient.
    assert env['sender'] == ''
    assert env['rcpt'] == [('-', '-', '-', 'sender@example.org')]
    assert env['service'] == 'bounce'
    check_common_headers(msg, 'sender@example.org', 'Undelivered Mail Returned to Sender')
    assert msg['Received'].startswith('by mx.example.test (postern)')
    assert rid in msg['Received']

    text, status, orig = parts(msg)
    assert text.get_content_type() == 'text/plain'
    body = text.get_payload()
    assert 'This is the mail system at host mx.example.test.' in body
    assert '<user@example.net>: host mx.example.net[192.0.2.25]:25 said: 550 5.1.1' in body

    per_msg, per_rcpt = dsn_fields(msg)
    assert per_msg['Reporting-MTA'] == 'dns; mx.example.test'
    assert per_msg['X-Postern-Queue-ID'] == qid
    assert date_of(per_msg['Arrival-Date']) == ARRIVAL
    assert 'Original-Envelope-Id' not in per_msg
    assert len(per_rcpt) == 1
    r = per_rcpt[0]
    assert r['Final-Recipient'] == 'rfc822; user@example.net'
    assert 'Original-Recipient' not in r
    assert r['Action'] == 'failed'
    assert r['Status'] == '5.1.1'
    assert r['Remote-MTA'] == 'dns; mx.example.net'
    assert r['Diagnostic-Code'] == 'smtp; ' + diag
    assert date_of(r['Last-Attempt-Date']) == ARRIVAL + 3600
    assert 'Will-Retry-Until' not in r

    # The whole original comes back by default.
    assert orig.get_content_type() == 'message/rfc822'
    inner = orig.get_payload()[0]
    assert inner['Subject'] == 'Quarterly figures'
    assert 'the figures are attached.' in inner.get_payload()

    # journalctl POSTERN_QUEUE_ID=ORIG shows the report it caused, and the
    # report's own line names the original.
    bounce.wait_log('%s: sender non-delivery notification: %s' % (qid, rid))
    bounce.wait_log('%s: from=<>, to=<sender@example.org>' % rid)
    assert 'sender non-delivery notification for %s' % qid in bounce.log_text()


def test_expired_after_maximal_queue_lifetime(bounce):
    qid = bounce.original()
    diag = ('message expired after 5 days in the queue (connect to '
            'mx.example.net[192.0.2.25]:25: Connection refused)')
    rid = bounce.notify(qid, 'failure', [(0, 'user@example.net', '', '4.4.7', diag)])
    env, msg = bounce.report(rid)
    _, per_rcpt = dsn_fields(msg)
    assert per_rcpt[0]['Action'] == 'failed'
    assert per_rcpt[0]['Status'] == '4.4.7'
    assert per_rcpt[0]['Diagnostic-Code'] == 'X-Postern; ' + diag
    assert 'Remote-MTA' not in per_rcpt[0]
    assert 'message expired after 5 days' in parts(msg)[0].get_payload()


def test_unknown_local_user(bounce):
    qid = bounce.original(rcpts=[('nobody@mx.example.test', '-', '-')])
    rid = bounce.notify(qid, 'failure',
                        [(0, 'nobody@mx.example.test', '', '5.1.1', 'unknown user: "nobody"')],
                        relay='local')
    _, msg = bounce.report(rid)
    _, per_rcpt = dsn_fields(msg)
    r = per_rcpt[0]
    assert r['Final-Recipient'] == 'rfc822; nobody@mx.example.test'
    assert r['Status'] == '5.1.1'
    assert r['Diagnostic-Code'] == 'X-Postern; unknown user: "nobody"'
    assert 'Remote-MTA' not in r
    assert '<nobody@mx.example.test>: unknown user: "nobody"' in parts(msg)[0].get_payload()


def test_delay_warning(make_bounce):
    b = make_bounce(main_cf='maximal_queue_lifetime = 2d\n')
    qid = b.original(rcpts=[('user@example.net', 'DELAY,FAILURE', '-')])
    rid = b.notify(qid, 'delay', [(0, 'user@example.net', '', '4.4.1',
                                   'connect to mx.example.net[192.0.2.25]:25: Connection '
                                   'timed out')], relay='mx.example.net[192.0.2.25]:25')
    env, msg = b.report(rid)
    check_common_headers(msg, 'sender@example.org', 'Delayed Mail (still being retried)')
    _, per_rcpt = dsn_fields(msg)
    r = per_rcpt[0]
    assert r['Action'] == 'delayed'
    assert r['Status'] == '4.4.1'
    assert date_of(r['Will-Retry-Until']) == ARRIVAL + 2 * 86400
    text = parts(msg)[0].get_payload()
    assert 'warning only' in text
    assert '2 day(s) old' in text
    # Delay reports carry the headers only, whatever RET says.
    assert parts(msg)[2].get_content_type() == 'text/rfc822-headers'
    assert 'the figures are attached' not in parts(msg)[2].get_payload()
    b.wait_log('%s: sender delay notification: %s' % (qid, rid))


def test_success_dsn(bounce):
    qid = bounce.original(rcpts=[('user@mx.example.test', 'SUCCESS', '-'),
                                 ('far@example.net', 'SUCCESS,FAILURE', '-')])
    rid = bounce.notify(qid, 'success', [(0, 'user@mx.example.test', '', '2.0.0',
                                          'delivered to maildir')], relay='local')
    _, msg = bounce.report(rid)
    check_common_headers(msg, 'sender@example.org', 'Successful Mail Delivery Report')
    _, per_rcpt = dsn_fields(msg)
    assert per_rcpt[0]['Action'] == 'delivered'
    assert per_rcpt[0]['Status'] == '2.0.0'
    assert parts(msg)[2].get_content_type() == 'text/rfc822-headers'
    assert ('<user@mx.example.test>: delivery via local: delivered to maildir'
            in parts(msg)[0].get_payload())
    bounce.wait_log('%s: sender delivery status notification: %s' % (qid, rid))

    # A peer without DSN: the message was relayed.
    rid2 = bounce.notify(qid, 'relayed', [(1, 'far@example.net', '', '2.0.0',
                                           '250 2.0.0 Ok: queued as 4711')],
                         relay='mx.example.net[192.0.2.25]:25')
    _, msg = bounce.report(rid2)
    _, per_rcpt = dsn_fields(msg)
    assert per_rcpt[0]['Action'] == 'relayed'
    assert per_rcpt[0]['Remote-MTA'] == 'dns; mx.example.net'


def test_ret_hdrs_full_and_size_limit(make_bounce):
    b = make_bounce(main_cf='bounce_size_limit = 2000\n')
    rc = [(0, 'user@example.net', '', '5.1.1', '550 5.1.1 no such user')]

    qid = b.original(ret='HDRS')
    _, msg = b.report(b.notify(qid, 'failure', rc))
    att = parts(msg)[2]
    assert att.get_content_type() == 'text/rfc822-headers'
    assert att['Content-Description'] == 'Undelivered Message Headers'
    assert 'Subject: Quarterly figures' in att.get_payload()
    assert 'the figures are attached' not in att.get_payload()

    qid = b.original(ret='FULL')
    _, msg = b.report(b.notify(qid, 'failure', rc))
    att = parts(msg)[2]
    assert att.get_content_type() == 'message/rfc822'
    assert 'the figures are attached' in att.get_payload()[0].get_payload()

    # Larger than bounce_size_limit: the headers only, even with RET=FULL.
    big = MESSAGE % {'qid': 'x'} + 'x' * 78 + '\n' * 1
    big += ('y' * 78 + '\n') * 100
    qid = b.original(ret='FULL', content=big)
    _, msg = b.report(b.notify(qid, 'failure', rc))
    att = parts(msg)[2]
    assert att.get_content_type() == 'text/rfc822-headers'
    assert 'yyyy' not in att.get_payload()


def test_envid_and_orcpt_round_trip(bounce):
    qid = bounce.original(envid='QQ+2B314159',
                          rcpts=[('user@example.net', 'FAILURE', 'rfc822;user+2Btag@example.net'),
                                 ('two@example.net', '-', '-')])
    rid = bounce.notify(qid, 'failure', [
        (0, 'user@example.net', '', '5.1.1', '550 5.1.1 unknown'),
        (1, 'three@example.net', 'two@example.net', '5.2.2', '552 5.2.2 Mailbox full'),
    ], relay='mx.example.net[192.0.2.25]:25')
    # One report covers all recipients of the call.
    assert bounce.incoming() == [rid]
    _, msg = bounce.report(rid)
    per_msg, per_rcpt = dsn_fields(msg)
    # RFC 3464 2.2.1: the ENVID, decoded from xtext.
    assert per_msg['Original-Envelope-Id'] == 'QQ+314159'
    assert len(per_rcpt) == 2
    assert per_rcpt[0]['Original-Recipient'] == 'rfc822; user+tag@example.net'
    assert per_rcpt[0]['Final-Recipient'] == 'rfc822; user@example.net'
    # Without ORCPT, the address before alias expansion.
    assert per_rcpt[1]['Original-Recipient'] == 'rfc822; two@example.net'
    assert per_rcpt[1]['Final-Recipient'] == 'rfc822; three@example.net'
    assert per_rcpt[1]['Status'] == '5.2.2'


def test_notify_never_and_without_failure(bounce):
    qid = bounce.original(rcpts=[('user@example.net', 'NEVER', '-'),
                                 ('two@example.net', 'SUCCESS', '-'),
                                 ('three@example.net', '-', '-')])
    rc = lambda i, a: (i, a, '', '5.1.1', '550 5.1.1 unknown')  # noqa: E731
    assert bounce.notify(qid, 'failure', [rc(0, 'user@example.net')]) == ''
    assert bounce.notify(qid, 'failure', [rc(1, 'two@example.net')]) == ''
    # Delays and successes without the NOTIFY keyword: none.
    assert bounce.notify(qid, 'delay', [(1, 'two@example.net', '', '4.4.1', 'timeout')]) == ''
    assert bounce.notify(qid, 'success', [(2, 'three@example.net', '', '2.0.0', 'ok')]) == ''
    assert bounce.incoming() == []
    # Mixed: only the recipient that wants a report is in it.
    rid = bounce.notify(qid, 'failure', [rc(0, 'user@example.net'), rc(2, 'three@example.net')])
    _, msg = bounce.report(rid)
    _, per_rcpt = dsn_fields(msg)
    assert [r['Final-Recipient'] for r in per_rcpt] == ['rfc822; three@example.net']


def test_bounce_of_a_bounce(make_bounce):
    rc = [(0, 'sender@example.org', '', '5.1.1', '550 5.1.1 no such user')]
    # Default notify_classes (resource, software): discarded, logged.
    b = make_bounce()
    qid = b.original(sender='')
    assert b.notify(qid, 'failure', rc) == ''
    assert b.incoming() == []
    b.wait_log('%s: undeliverable bounce discarded' % qid)

    b = make_bounce(main_cf='notify_classes = 2bounce, resource, software\n')
    qid = b.original(sender='')
    rid = b.notify(qid, 'failure', rc, relay='mx.example.org[192.0.2.30]:25')
    assert b.incoming() == [rid]
    env, msg = b.report(rid)
    assert env['sender'] == 'double-bounce@mx.example.test'
    assert env['rcpt'] == [('-', '-', '-', 'postmaster@mx.example.test')]
    check_common_headers(msg, 'postmaster@mx.example.test', 'Postmaster Copy: Undelivered Mail')
    # The failed bounce comes back whole.
    assert parts(msg)[2].get_content_type() == 'message/rfc822'
    b.wait_log('%s: postmaster non-delivery notification: %s' % (qid, rid))

    # A failed double bounce is discarded: never a triple bounce.
    qid = b.original(sender='double-bounce@mx.example.test')
    assert b.notify(qid, 'failure', rc) == ''
    assert b.incoming() == [rid]
    b.wait_log('%s: undeliverable postmaster notification discarded' % qid)


def test_postmaster_copy_has_headers_only(make_bounce):
    b = make_bounce(main_cf='notify_classes = bounce, delay\n'
                            'bounce_notice_recipient = admin\n')
    qid = b.original(ret='FULL')
    rid = b.notify(qid, 'failure', [(0, 'user@example.net', '', '5.1.1', '550 5.1.1 unknown')],
                   relay='mx.example.net[192.0.2.25]:25')
    files = b.incoming()
    assert len(files) == 2 and rid in files
    copy_id = [f for f in files if f != rid][0]
    env, msg = b.report(copy_id)
    assert env['sender'] == 'double-bounce@mx.example.test'
    assert env['rcpt'] == [('-', '-', '-', 'admin@mx.example.test')]
    check_common_headers(msg, 'admin@mx.example.test', 'Postmaster Copy: Undelivered Mail')
    att = parts(msg)[2]
    assert att.get_content_type() == 'text/rfc822-headers'
    assert 'Subject: Quarterly figures' in att.get_payload()
    assert 'the figures are attached' not in att.get_payload()
    per_msg, _ = dsn_fields(msg)
    assert per_msg['X-Postern-Sender'] == 'rfc822; sender@example.org'
    b.wait_log('%s: postmaster non-delivery notification: %s' % (qid, copy_id))
    # The sender's own report still has the whole message.
    _, msg = b.report(rid)
    assert parts(msg)[2].get_content_type() == 'message/rfc822'

    # Delay class: a copy to delay_notice_recipient (postmaster).
    qid = b.original()
    before = set(b.incoming())
    rid = b.notify(qid, 'delay', [(0, 'user@example.net', '', '4.4.1', 'timeout')])
    new = sorted(set(b.incoming()) - before)
    assert len(new) == 2
    copy_id = [f for f in new if f != rid][0]
    env, msg = b.report(copy_id)
    assert env['rcpt'][0][3] == 'postmaster@mx.example.test'
    assert msg['Subject'] == 'Postmaster Warning: Delayed Mail'


def test_error_classes_copy(make_bounce):
    b = make_bounce(main_cf='notify_classes = policy\nerror_notice_recipient = errors\n')
    qid = b.original()
    rid = b.notify(qid, 'failure', [(0, 'user@example.net', '', '5.1.1', '550 5.1.1 unknown')])
    assert b.incoming() == [rid]        # 5.1.1 is no policy problem
    qid = b.original()
    rid = b.notify(qid, 'failure', [(0, 'user@example.net', '', '5.7.1',
                                     '554 5.7.1 Relay access denied')])
    copies = [f for f in b.incoming() if f != rid]
    copies = [f for f in copies if b.report(f)[0]['rcpt'][0][3] == 'errors@mx.example.test']
    assert len(copies) == 1
    env, msg = b.report(copies[0])
    assert env['sender'] == 'double-bounce@mx.example.test'
    assert parts(msg)[2].get_content_type() == 'text/rfc822-headers'
    b.wait_log('%s: postmaster error notification: %s' % (qid, copies[0]))


def test_template_file(make_bounce):
    tmpl = ('failure_template = <<EOF\n'
            'Charset: utf-8\n'
            'From: Postmaster <postmaster@$mydomain>\n'
            'Subject: Nachricht an $mydomain nicht zustellbar\n'
            '\n'
            'Hier ist das Mailsystem von $myhostname; Grüße.\n'
            'Wir versuchen es $maximal_queue_lifetime_days Tage lang, $$-Zeichen bleiben.\n'
            'EOF\n')
    b = make_bounce(main_cf='bounce_template_file = bounce.cf\nmaximal_queue_lifetime = 3d\n',
                    files={'bounce.cf': tmpl})
    qid = b.original()
    _, msg = b.report(b.notify(qid, 'failure', [(0, 'user@example.net', '', '5.1.1',
                                                 '550 5.1.1 unknown')]))
    assert msg['From'] == 'Postmaster <postmaster@example.test>'
    assert msg['Subject'] == 'Nachricht an example.test nicht zustellbar'
    text = parts(msg)[0]
    assert text.get_content_charset() == 'utf-8'
    body = text.get_payload(decode=True).decode('utf-8')
    assert 'Hier ist das Mailsystem von mx.example.test; Grüße.' in body
    assert 'Wir versuchen es 3 Tage lang, $-Zeichen bleiben.' in body
    # Other kinds keep the built-in text.
    qid = b.original(rcpts=[('user@example.net', 'SUCCESS', '-')])
    _, msg = b.report(b.notify(qid, 'success', [(0, 'user@example.net', '', '2.0.0', 'ok')]))
    assert msg['Subject'] == 'Successful Mail Delivery Report'


def test_bad_template_file_is_reported(make_bounce):
    b = make_bounce(main_cf='bounce_template_file = bounce.cf\n',
                    files={'bounce.cf': 'failure_template = <<EOF\nX-Bad: header\n\nt\nEOF\n'})
    qid = b.original()
    p = b.notify(qid, 'failure', [(0, 'user@example.net', '', '5.1.1', 'x')], check=False)
    assert p.returncode != 0
    b.wait_log('bounce.cf:2: error: failure_template: unknown header "X-Bad: header"')
    assert b.incoming() == []


def test_bad_requests(bounce):
    qid = bounce.original()
    rc = [(0, 'user@example.net', '', '5.1.1', 'x')]
    # Not the named message.
    other = new_queue_id()
    os.link(os.path.join(bounce.queue, 'active', qid), os.path.join(bounce.queue, 'active', other))
    p = bounce.notify(other, 'failure', rc, check=False)
    assert p.returncode == 1 and 'InvalidArgs' in p.stderr
    # Recipient index out of range, bad status, bad kind.
    p = bounce.notify(qid, 'failure', [(5, 'user@example.net', '', '5.1.1', 'x')], check=False)
    assert p.returncode == 1 and 'InvalidArgs' in p.stderr
    p = bounce.notify(qid, 'failure', [(0, 'user@example.net', '', '5.1', 'x')], check=False)
    assert p.returncode == 1 and 'Invalid status' in p.stderr
    p = bounce.notify(qid, 'bogus', rc, check=False)
    assert p.returncode == 1 and 'Unknown kind' in p.stderr
    # A damaged queue file.
    bad = new_queue_id()
    with open(os.path.join(bounce.queue, 'active', bad), 'wb') as f:
        f.write(b'POSTERNQ 0001 garbage\n')
    p = bounce.notify(bad, 'failure', rc, check=False)
    assert p.returncode == 1 and 'org.postern.Bounce1.Error.BadQueueFile' in p.stderr
    assert bounce.incoming() == []
    # The service still works.
    assert bounce.notify(qid, 'failure', rc)
