"""posternctl trace against a real journal: a throwaway systemd container
(systemd_helpers.Container) runs journald; util-linux's logger --journald
writes entries with the fields postern's daemons log (POSTERN_QUEUE_ID,
POSTERN_ORIG_QUEUE_ID, POSTERN_REPORT_QUEUE_ID, POSTERN_SENDER,
POSTERN_RECIPIENT), and the installed posternctl reads them back inside the
container."""
import json
import os
import re
import shutil

import pytest

from common import BUILD_DIR

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason='needs root'),
    pytest.mark.skipif(not shutil.which('systemd-nspawn'), reason='needs systemd-nspawn'),
]

QID1 = '1xTRACE0000001aa'
QID2 = '1xTRACE0000002bb'
QID3 = '1xTRACE0000003cc'
POSTERNCTL = '/usr/local/sbin/posternctl'

# (SYSLOG_IDENTIFIER, queue id, message, extra fields)
ENTRIES = [
    ('postern/smtpd', QID1, 'client=client.example.org[192.0.2.10]', {}),
    ('postern/smtpd', QID3, 'client=other.example.org[192.0.2.11]', {}),
    ('postern/smtpd', QID1, 'from=<alice@example.org>, size=300, nrcpt=1 (queue incoming)',
     {'POSTERN_SENDER': 'alice@example.org'}),
    ('postern-qmgr', QID1, 'to=<bob@example.net>, relay=local, delay=0.1, '
     'delays=0.1/0/0/0, dsn=5.1.1, status=bounced (unknown user: "bob")',
     {'POSTERN_RECIPIENT': 'bob@example.net', 'POSTERN_SENDER': 'alice@example.org'}),
    ('postern/bounce', QID1, 'sender non-delivery notification: ' + QID2,
     {'POSTERN_REPORT_QUEUE_ID': QID2}),
    ('postern/bounce', QID2, 'from=<>, to=<alice@example.org>, size=2000, nrcpt=1 '
     '(sender non-delivery notification for %s)' % QID1, {'POSTERN_ORIG_QUEUE_ID': QID1}),
    ('postern-qmgr', QID3, 'to=<carol@example.net>, relay=local, delay=0.1, '
     'delays=0.1/0/0/0, dsn=2.0.0, status=sent (delivered to maildir)',
     {'POSTERN_RECIPIENT': 'carol@example.net'}),
    ('postern-qmgr', QID2, 'to=<alice@example.org>, relay=local, delay=0.1, '
     'delays=0.1/0/0/0, dsn=2.0.0, status=sent (delivered to maildir)',
     {'POSTERN_RECIPIENT': 'alice@example.org', 'POSTERN_SENDER': ''}),
    ('postern-qmgr', QID2, 'removed', {}),
    ('postern-qmgr', QID1, 'removed', {}),
]
CHAIN = [e for e in ENTRIES if e[1] in (QID1, QID2)]


@pytest.fixture(scope='module')
def container():
    from systemd_helpers import Container
    c = Container(build_dir=BUILD_DIR)
    try:
        c.boot()
        for ident, qid, text, fields in ENTRIES:
            lines = ['MESSAGE=%s: %s' % (qid, text), 'SYSLOG_IDENTIFIER=' + ident,
                     'POSTERN_QUEUE_ID=' + qid, 'PRIORITY=6']
            lines += ['%s=%s' % kv for kv in fields.items()]
            c.run(['logger', '--journald'], input='\n'.join(lines) + '\n')
        c.run(['logger', '--journald'], input='MESSAGE=unrelated %s\n' % QID1)
        c.run(['journalctl', '--sync'], check=False)
        yield c
    finally:
        c.stop()


def trace(c, *args):
    return c.run([POSTERNCTL, 'trace'] + list(args), check=False)


def test_trace_follows_the_bounce(container):
    r = trace(container, QID1)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(CHAIN), r.stdout
    for line, (ident, qid, text, _) in zip(lines, CHAIN):
        m = re.match(r'^\w{3} [ 0-9]\d \d\d:\d\d:\d\d\.\d{6} (\S+)\[(\d+)\]: (.*)$', line)
        assert m, line
        assert m.group(1) == ident
        assert m.group(3) == '%s: %s' % (qid, text)


def test_trace_json(container):
    r = trace(container, '--json', QID1)
    assert r.returncode == 0, r.stderr
    objs = [json.loads(l) for l in r.stdout.splitlines()]
    assert [o['queue_id'] for o in objs] == [e[1] for e in CHAIN]
    assert [o['unit'] for o in objs] == [e[0] for e in CHAIN]
    assert all(isinstance(o['pid'], int) and o['time_usec'] > 0 for o in objs)
    assert objs == sorted(objs, key=lambda o: o['time_usec'])


def test_trace_by_sender_and_recipient(container):
    by_sender = trace(container, '--sender', 'alice@example.org')
    assert by_sender.returncode == 0, by_sender.stderr
    assert by_sender.stdout == trace(container, QID1).stdout
    by_rcpt = trace(container, '--recipient', 'carol@example.net')
    assert by_rcpt.returncode == 0, by_rcpt.stderr
    assert [l.split(': ', 1)[1] for l in by_rcpt.stdout.splitlines()] == \
        ['%s: %s' % (e[1], e[2]) for e in ENTRIES if e[1] == QID3]


def test_trace_nothing_found(container):
    r = trace(container, '1xNOTHERE0000000')
    assert r.returncode == 1
    assert 'no journal entries' in r.stderr
    r = trace(container, 'not-a-queue-id')
    assert r.returncode == 2
    r = trace(container, '--since', '@%d' % (2 ** 33), QID1)
    assert r.returncode == 1
