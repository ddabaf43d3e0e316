"""The message-id= journal entry: when a message is queued, postern-smtpd
(mail from SMTP clients) and postern-pickup (mail from sendmail) log
"QUEUEID: message-id=<...>" as Postfix's cleanup does, with the fields
MESSAGE_ID (catalog entry), POSTERN_QUEUE_ID and POSTERN_MESSAGE_ID, so that
"journalctl POSTERN_MESSAGE_ID=..." finds the queue ID of a message a user
names by its Message-ID.

The daemons run in a private mount namespace whose
/run/systemd/journal/socket is a datagram socket of the test, which reads
the records in the journal's native protocol and checks every field."""
import os
import shutil
import smtplib
import subprocess
import tempfile

import pytest

from common import wait_for
from e2e_helpers import Journal
from queue_helpers import PICKUP, QueueInstance
from smtpd_helpers import SMTPD, Smtpd

MSGID_MESSAGE_ID = 'ec303682e8684f64985158d2413ad17d'
MSGID_QUEUED = '5f0e9b3a1c2d4e6f8a7b9c0d1e2f3a65'

class FakeJournal(Journal):
    """e2e_helpers.Journal in a directory of its own, with the environment
    the daemons it wraps need."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='postern-journal.')
        super().__init__(self.dir)

    def env(self, base=None):
        e = dict(base if base is not None else os.environ)
        e['JOURNAL'] = self.path
        e['POSTERN_LOG_TARGET'] = 'journal'
        return e

    def close(self):
        super().close()
        shutil.rmtree(self.dir, ignore_errors=True)


class JournalSmtpd(Smtpd):
    """postern-smtpd logging to the fake journal."""

    def __init__(self, journal, **kw):
        super().__init__(**kw)
        self.journal = journal

    def start(self):
        env = self.journal.env()
        env.pop('LISTEN_FDS', None)
        self.log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(
            self.journal.wrap(
                ['systemd-socket-activate', '-l', '127.0.0.1:%d' % self.port,
                 '--fdname=' + self.service, '-E', 'POSTERN_LOG_TARGET',
                 '-E', 'POSTERN_QMGR_SOCKET=' + os.path.join(self.tmp, 'qmgr'),
                 '-E', 'POSTERN_RUNTIME_DIR=' + self.tmp,
                 SMTPD, '--service=' + self.service, '-c', self.confdir]),
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_for(self._port_open, what='port %d' % self.port)
        return self


@pytest.fixture
def journal():
    j = FakeJournal()
    yield j
    j.close()


def test_smtpd_logs_message_id(journal):
    s = JournalSmtpd(journal).start()
    try:
        with smtplib.SMTP('127.0.0.1', s.port) as c:
            c.ehlo('client.example.org')
            c.mail('sender@example.org')
            c.rcpt('user@example.test')
            code, text = c.data('From: sender@example.org\r\nSubject: hello\r\n'
                                'Message-ID:  <t1.4711@client.example.org> \r\n\r\nHi.\r\n')
        assert code == 250
        qid = text.decode().split()[-1]
        (entry,) = journal.wait(lambda e: e.get('MESSAGE_ID') == MSGID_MESSAGE_ID,
                                'message-id entry')
        assert entry['MESSAGE'] == '%s: message-id=<t1.4711@client.example.org>' % qid
        assert entry['POSTERN_QUEUE_ID'] == qid
        assert entry['POSTERN_MESSAGE_ID'] == '<t1.4711@client.example.org>'
        assert entry['SYSLOG_IDENTIFIER'] == 'postern/smtpd'
        assert entry['PRIORITY'] == '6'
        # Before the envelope line, as Postfix's cleanup logs it before qmgr.
        ids = [e.get('MESSAGE_ID') for e in journal.read()]
        assert ids.index(MSGID_MESSAGE_ID) < ids.index(MSGID_QUEUED)
    finally:
        s.cleanup()


@pytest.fixture
def queue():
    q = QueueInstance()
    yield q
    q.cleanup()


def run_pickup(q, journal):
    with open(q.qmgr_log, 'a') as out:
        r = subprocess.run(journal.wrap([PICKUP, '-c', q.confdir]), stdout=out,
                           stderr=subprocess.STDOUT, env=journal.env(q.env()), timeout=60)
    assert r.returncode == 0, q.log_text()


def test_pickup_logs_message_id(queue, journal):
    # A folded Message-ID header is logged unfolded.
    r = queue.tool('sendmail', '-f', 'cron@example.test', 'bob@remote.test',
                   input='Subject: folded\nMessage-ID:\n <f1@example.test>\n\nbody\n')
    assert r.returncode == 0, r.stderr
    run_pickup(queue, journal)
    (qid,) = queue.files('incoming')
    (entry,) = journal.wait(lambda e: e.get('MESSAGE_ID') == MSGID_MESSAGE_ID,
                            'message-id entry')
    assert entry['MESSAGE'] == '%s: message-id=<f1@example.test>' % qid
    assert entry['POSTERN_QUEUE_ID'] == qid
    assert entry['POSTERN_MESSAGE_ID'] == '<f1@example.test>'
    assert entry['SYSLOG_IDENTIFIER'] == 'postern-pickup'


def test_pickup_logs_added_message_id(queue, journal):
    # Without a Message-ID pickup adds one and logs that.
    r = queue.tool('sendmail', '-f', 'cron@example.test', 'bob@remote.test',
                   input='Subject: none\n\nbody\n')
    assert r.returncode == 0, r.stderr
    run_pickup(queue, journal)
    (qid,) = queue.files('incoming')
    (entry,) = journal.wait(lambda e: e.get('MESSAGE_ID') == MSGID_MESSAGE_ID,
                            'message-id entry')
    msgid = '<%s@mx.example.test>' % qid
    assert entry['MESSAGE'] == '%s: message-id=%s' % (qid, msgid)
    assert entry['POSTERN_MESSAGE_ID'] == msgid
    hdr, content, env = queue.read(qid)
    assert ('\nMessage-Id: %s\n' % msgid) in content.decode()
