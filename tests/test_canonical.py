"""Canonical address mapping (canonical_maps, sender_canonical_maps,
recipient_canonical_maps and their *_classes, propagate_unmatched_extensions,
remote_header_rewrite_domain), through the real chain: postern-smtpd or
sendmail + postern-pickup, postern-qmgr (which does the mapping when a
message leaves incoming/), postern-deliver-local into virtual Maildirs.
What is checked is what a user sees: the delivered message's Return-Path
(the envelope sender), Delivered-To (the envelope recipient) and headers,
and the queue and log when a table fails.

Needs root (virtual delivery as uid 5000) and systemd-socket-activate."""
import os
import re
import smtplib

import pytest

from e2e_helpers import (PROGRAMS, SOCKET_ACTIVATE, Instance, maildir_messages, read_message,
                         wait_for)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason='needs root'),
    pytest.mark.skipif(not SOCKET_ACTIVATE, reason='systemd-socket-activate not installed'),
    pytest.mark.skipif(not all(os.access(p, os.X_OK) for p in PROGRAMS.values()),
                       reason='daemons not built'),
]


@pytest.fixture
def make():
    made = []

    def instance(main_cf='', tables=None):
        """An instance with virtual mailboxes info@, sales@ and
        alice.smith@example.com; tables: {param: (name, text, kind)}."""
        inst = Instance(main_cf)
        made.append(inst)
        boxes = inst.table('vmailbox', 'info@example.com         example.com/info/\n'
                                       'sales@example.com        example.com/sales/\n'
                                       'alice.smith@example.com  example.com/alice/\n')
        lines = ['virtual_mailbox_domains = example.com',
                 'virtual_mailbox_maps = ' + boxes,
                 'virtual_uid_maps = static:5000',
                 'virtual_gid_maps = static:5000']
        for param, (name, text, kind) in (tables or {}).items():
            lines.append('%s = %s' % (param, inst.table(name, text, kind)))
        with open(os.path.join(inst.confdir, 'main.cf'), 'a') as f:
            f.write('\n'.join(lines) + '\n')
        return inst

    yield instance
    errors = []
    for i in reversed(made):
        try:
            i.cleanup()
        except AssertionError as e:
            errors.append(e)
    if errors:
        raise errors[0]


def send(inst, sender, rcpts, headers, body='Hello.\n'):
    """Sends a message with these header lines over SMTP from 127.0.0.1;
    returns the queue ID."""
    msg = '\r\n'.join(headers) + '\r\n\r\n' + body.replace('\n', '\r\n')
    with smtplib.SMTP(inst.smtpd_host, inst.smtpd_port, timeout=30) as s:
        s.ehlo('client.example.org')
        code, text = s.mail(sender)
        assert code == 250, text
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code == 250, (r, text)
        code, text = s.data(msg.encode())
        assert code == 250, text
    return re.search(r'queued as ([0-9A-Za-z]{16})', text.decode()).group(1)


def delivered(inst, box, n=1):
    """The messages in a virtual mailbox, once there are n."""
    path = os.path.join(inst.vmail, 'example.com', box)
    try:
        files = wait_for(lambda: len(maildir_messages(path)) >= n and maildir_messages(path),
                         what='%d message(s) in %s' % (n, box))
    except TimeoutError:
        raise TimeoutError('no %d message(s) in %s; queue %s; logs:\n%s' % (
            n, box, {q: inst.queue_ids(q) for q in ('incoming', 'active', 'deferred', 'hold')},
            inst.all_logs()))
    return [read_message(p) for p in files]


def raw(msg, name):
    """A header as written (unfolded), without parsing by the email package."""
    return [v for k, v in msg._headers if k.lower() == name.lower()]


SENDER_TABLE = ('alice@mx.example.com   alice.smith@example.com\n'
                'bob                    Bob.Jones@example.org\n')


def test_sender_canonical_local_client(make):
    """A local client (loopback: permit_inet_interfaces): envelope sender
    and sender headers are rewritten, display names and comments stay,
    recipient headers and Received: stay; "bob" (a bare user in a header,
    completed with $myorigin, then found as "bob" because example.com is
    $myorigin) maps too."""
    inst = make(tables={'sender_canonical_maps': ('sender_canonical', SENDER_TABLE, 'hash')})
    inst.start()
    qid = send(inst, 'alice@mx.example.com', ['info@example.com'],
               ['From: "Alice, A." <alice@mx.example.com> (work)',
                'Reply-To: bob,',
                '  Team: carol@example.net, alice@mx.example.com;',
                'To: Info <info@example.com>, alice@mx.example.com',
                'Sender: bob@example.net',
                'Subject: canonical'])
    msg, = delivered(inst, 'info')
    assert msg['Return-Path'] == '<alice.smith@example.com>'
    assert raw(msg, 'From') == ['"Alice, A." <alice.smith@example.com> (work)']
    assert raw(msg, 'Reply-To') == [
        'Bob.Jones@example.org,\n  Team: carol@example.net, alice.smith@example.com;']
    # "bob" matches only in a local domain.
    assert raw(msg, 'Sender') == ['bob@example.net']
    # To: is a recipient header: sender_canonical_maps leaves it alone.
    assert raw(msg, 'To') == ['Info <info@example.com>, alice@mx.example.com']
    received = raw(msg, 'Received')[-1]
    assert 'for <info@example.com>' in received and qid in received


def test_remote_client_headers_untouched(make):
    """A client outside local_header_rewrite_clients: the envelope sender
    is rewritten, its headers are not."""
    inst = make('local_header_rewrite_clients = permit_sasl_authenticated',
                tables={'sender_canonical_maps': ('sender_canonical', SENDER_TABLE, 'hash')})
    inst.start()
    send(inst, 'alice@mx.example.com', ['info@example.com'],
         ['From: Alice <alice@mx.example.com>', 'Reply-To: bob', 'Subject: remote'])
    msg, = delivered(inst, 'info')
    assert msg['Return-Path'] == '<alice.smith@example.com>'
    assert raw(msg, 'From') == ['Alice <alice@mx.example.com>']
    assert raw(msg, 'Reply-To') == ['bob']


def test_remote_header_rewrite_domain(make):
    """With remote_header_rewrite_domain, a remote client's headers are
    rewritten too, and a bare user gets that domain (not $myorigin)."""
    inst = make('local_header_rewrite_clients = permit_sasl_authenticated\n'
                'remote_header_rewrite_domain = example.net',
                tables={'sender_canonical_maps': ('sender_canonical', SENDER_TABLE +
                                                  'dave@example.net  d@example.org\n', 'hash')})
    inst.start()
    send(inst, 'alice@mx.example.com', ['info@example.com'],
         ['From: Alice <alice@mx.example.com>', 'Reply-To: dave, erin', 'Subject: remote'])
    msg, = delivered(inst, 'info')
    assert raw(msg, 'From') == ['Alice <alice.smith@example.com>']
    assert raw(msg, 'Reply-To') == ['d@example.org, erin@example.net']


def test_recipient_canonical_and_domain_mapping(make):
    """recipient_canonical_maps: an address and an "@domain" entry (the
    user is kept); envelope recipients and To:/Cc: change, the original
    recipient stays in Received: and is logged as orig_to= and written as
    X-Original-To:, as Postfix does."""
    inst = make(tables={'recipient_canonical_maps': (
        'recipient_canonical', 'old@example.com  info@example.com\n'
                               '@legacy.example  @example.com\n', 'hash')})
    inst.start()
    qid = send(inst, 'someone@example.org', ['old@example.com'],
               ['From: someone@example.org', 'To: Old Address <old@example.com>',
                'Cc: sales@legacy.example (Sales)', 'Subject: rcpt'])
    msg, = delivered(inst, 'info')
    assert msg['Delivered-To'] == 'info@example.com'
    assert msg['X-Original-To'] == 'old@example.com'
    assert raw(msg, 'To') == ['Old Address <info@example.com>']
    assert raw(msg, 'Cc') == ['sales@example.com (Sales)']
    assert raw(msg, 'From') == ['someone@example.org']
    assert 'for <old@example.com>' in raw(msg, 'Received')[-1]
    # The envelope recipient in the other domain maps by "@domain".
    qid2 = send(inst, 'someone@example.org', ['sales@legacy.example'],
                ['From: someone@example.org', 'To: sales@legacy.example', 'Subject: rcpt2'])
    msg2, = delivered(inst, 'sales')
    assert msg2['Delivered-To'] == 'sales@example.com'
    assert raw(msg2, 'To') == ['sales@example.com']
    inst.wait_log('qmgr', r'%s: to=<sales@example.com>, orig_to=<sales@legacy.example>, '
                          r'.*status=sent' % qid2)
    inst.wait_log('qmgr', r'%s: to=<info@example.com>, orig_to=<old@example.com>, '
                          r'.*status=sent' % qid)


@pytest.mark.parametrize('propagate, want', [
    ('canonical, virtual', '<alice.smith+lists@example.com>'),
    ('virtual', '<alice.smith@example.com>'),
])
def test_extension_propagation(make, propagate, want):
    """user+ext@domain found as user@domain: the extension is kept when
    propagate_unmatched_extensions names canonical."""
    inst = make('recipient_delimiter = +\npropagate_unmatched_extensions = ' + propagate,
                tables={'sender_canonical_maps': ('sender_canonical', SENDER_TABLE, 'hash')})
    inst.start()
    send(inst, 'alice+lists@mx.example.com', ['info@example.com'],
         ['From: alice+lists@mx.example.com', 'Subject: ext'])
    msg, = delivered(inst, 'info')
    assert msg['Return-Path'] == want
    assert raw(msg, 'From') == [want.strip('<>')]


def test_classes_envelope_sender_only(make):
    """canonical_classes = envelope_sender: only the envelope sender maps;
    headers and envelope recipients stay."""
    inst = make('canonical_classes = envelope_sender',
                tables={'canonical_maps': ('canonical', SENDER_TABLE +
                                           'info@example.com  sales@example.com\n', 'hash')})
    inst.start()
    send(inst, 'alice@mx.example.com', ['info@example.com'],
         ['From: alice@mx.example.com', 'To: info@example.com', 'Subject: classes'])
    msg, = delivered(inst, 'info')
    assert msg['Return-Path'] == '<alice.smith@example.com>'
    assert msg['Delivered-To'] == 'info@example.com'
    assert raw(msg, 'From') == ['alice@mx.example.com']
    assert raw(msg, 'To') == ['info@example.com']


def test_sendmail_pickup_path(make):
    """Mail from sendmail (postdrop, postern-pickup) is mapped as well."""
    inst = make(tables={'canonical_maps': ('canonical', SENDER_TABLE, 'hash')})
    inst.start(smtpd=False)
    r = inst.tool('sendmail', '-f', 'alice@mx.example.com', 'info@example.com',
                  input='From: Alice <alice@mx.example.com>\nTo: info@example.com\n'
                        'Subject: via sendmail\n\nHello.\n')
    assert r.returncode == 0, r.stderr
    r = inst.run_pickup()
    assert r.returncode == 0, r.stdout + r.stderr
    msg, = delivered(inst, 'info')
    assert msg['Return-Path'] == '<alice.smith@example.com>'
    assert raw(msg, 'From') == ['Alice <alice.smith@example.com>']


def test_failing_table_defers(make):
    """A table lookup that fails (a PCRE match limit) leaves the message
    in the queue, unmapped and undelivered, with a log line saying why."""
    inst = make(tables={'sender_canonical_maps': ('sender_canonical.pcre',
                                                  '/^(a|aa)+$/  never@example.com\n', 'pcre')})
    inst.start()
    sender = 'a' * 40 + 'b@mx.example.com'
    qid = send(inst, sender, ['info@example.com'], ['From: x@example.org', 'Subject: fail'])
    inst.wait_log('qmgr', r'%s: canonical mapping failed: .*; deferring' % qid)
    assert qid in inst.queue_ids('incoming')
    r = inst.tool('postqueue', '-p')
    assert qid in r.stdout and sender in r.stdout, r.stdout
    assert not maildir_messages(os.path.join(inst.vmail, 'example.com', 'info'))


def test_rewritten_recipient_keeps_original_for_dsn(make):
    """A recipient changed by canonical mapping keeps the address as sent
    for delivery status notifications: a success notice names it as
    Original-Recipient, the mapped one as Final-Recipient."""
    inst = make(tables={'recipient_canonical_maps': (
        'recipient_canonical', 'old@example.com  info@example.com\n', 'hash')})
    inst.start()
    with smtplib.SMTP(inst.smtpd_host, inst.smtpd_port, timeout=30) as s:
        s.ehlo('client.example.org')
        s.sendmail('sales@example.com', ['old@example.com'],
                   'From: sales@example.com\r\nTo: old@example.com\r\nSubject: dsn\r\n\r\nHi.\r\n',
                   rcpt_options=['NOTIFY=SUCCESS'])
    delivered(inst, 'info')
    notice, = delivered(inst, 'sales')
    text = notice.as_string()
    assert re.search(r'(?m)^Original-Recipient: rfc822; ?old@example.com$', text), text
    assert re.search(r'(?m)^Final-Recipient: rfc822; ?info@example.com$', text), text


def test_held_at_reception_mapped_after_release(make):
    """A message that header_checks put on hold at reception never passed
    incoming/; once released (postsuper -H) it is mapped before delivery."""
    inst = make(tables={'sender_canonical_maps': ('sender_canonical', SENDER_TABLE, 'hash'),
                        'header_checks': ('header_checks', '/^Subject: hold me/  HOLD\n',
                                          'regexp')})
    inst.start()
    qid = send(inst, 'alice@mx.example.com', ['info@example.com'],
               ['From: alice@mx.example.com', 'Subject: hold me'])
    wait_for(lambda: qid in inst.queue_ids('hold'), what='the message on hold')
    r = inst.tool('postsuper', '-H', qid)
    assert r.returncode == 0, r.stderr
    r = inst.tool('postqueue', '-f')       # as the queue manager's timer would
    assert r.returncode == 0, r.stderr
    msg, = delivered(inst, 'info')
    assert msg['Return-Path'] == '<alice.smith@example.com>'
    assert raw(msg, 'From') == ['alice.smith@example.com']
    inst.wait_log('qmgr', r'%s: removed' % qid)


def test_long_header_section_and_body_untouched(make):
    """A From: after 70 kB of other headers is still mapped; an address in
    the body is not."""
    inst = make(tables={'sender_canonical_maps': ('sender_canonical', SENDER_TABLE, 'hash')})
    inst.start()
    filler = ['X-Filler-%03d: %s' % (i, 'x' * 700) for i in range(100)]
    send(inst, 'alice@mx.example.com', ['info@example.com'],
         filler + ['From: alice@mx.example.com', 'Subject: long'],
         body='From: alice@mx.example.com\n\nalice@mx.example.com\n')
    msg, = delivered(inst, 'info')
    assert raw(msg, 'From') == ['alice.smith@example.com']
    assert len(raw(msg, 'X-Filler-099')) == 1
    assert msg.get_content() == 'From: alice@mx.example.com\n\nalice@mx.example.com\n'


def test_canonical_then_virtual_alias(make):
    """Canonical mapping comes before virtual alias expansion, and the
    alias result still names the address as received."""
    inst = make(tables={'recipient_canonical_maps': (
                            'recipient_canonical', 'old@example.com  team@example.com\n', 'hash'),
                        'virtual_alias_maps': (
                            'virtual', 'team@example.com  sales@example.com\n', 'hash')})
    inst.start()
    qid = send(inst, 'someone@example.org', ['old@example.com'],
               ['From: someone@example.org', 'To: old@example.com', 'Subject: both'])
    msg, = delivered(inst, 'sales')
    assert msg['Delivered-To'] == 'sales@example.com'
    assert msg['X-Original-To'] == 'old@example.com'
    assert raw(msg, 'To') == ['team@example.com']
    inst.wait_log('qmgr', r'%s: to=<sales@example.com>, orig_to=<old@example.com>, '
                          r'.*status=sent' % qid)
