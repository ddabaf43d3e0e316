"""The examples of header_checks(5) do what the page says: the tables it
shows answer as described through postmap -q, and postern-smtpd applies
them to mail (REJECT reaches the client, HOLD lands in hold/, IGNORE drops
the header)."""
import os
import smtplib

import pytest

from common import SRC_DIR, program, run
from smtpd_helpers import Smtpd, wait_for
from test_man_examples import examples

PAGE = os.path.join(SRC_DIR, 'man', 'header_checks.5')
POSTMAP = program('src/tools/postmap/postmap')


@pytest.fixture
def tables(tmp_path):
    ex = examples(PAGE)
    paths = {}
    for name in ('header_checks', 'body_checks'):
        p = tmp_path / name
        p.write_text(ex[name])
        paths[name] = str(p)
    return paths


@pytest.mark.parametrize('table,line,want', [
    ('header_checks', 'Subject: cheap VIAGRA now', 'REJECT Message content rejected'),
    ('header_checks', 'X-Mailer: Spam Engine 2.0', 'DISCARD'),
    ('header_checks', 'Received: from x ([192.0.2.7]) by y', 'HOLD inspect mail relayed by the lab'),
    ('header_checks', 'X-Internal-Debug: 1', 'IGNORE'),
    ('body_checks', 'begin 644 invoice.exe', 'REJECT executable attachments are refused'),
])
def test_tables_answer(tables, table, line, want):
    r = run([POSTMAP, '-q', line, 'regexp:' + tables[table]])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == want


def test_no_match(tables):
    r = run([POSTMAP, '-q', 'Subject: lunch', 'regexp:' + tables['header_checks']])
    assert r.returncode == 1 and r.stdout == ''


@pytest.fixture
def smtpd(tables):
    d = Smtpd(main_cf='header_checks = regexp:%s\nbody_checks = regexp:%s\n'
              % (tables['header_checks'], tables['body_checks']))
    d.start()
    yield d
    d.stop()


def send(d, body):
    with smtplib.SMTP('127.0.0.1', d.port, timeout=20) as c:
        return c.sendmail('a@example.org', ['bob@example.test'], body)


def test_reject_reaches_client(smtpd):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(smtpd, 'Subject: cheap viagra\r\n\r\nhello\r\n')
    assert e.value.smtp_code == 550
    assert b'5.7.1 Message content rejected' in e.value.smtp_error
    assert smtpd.queue_files() == []


def test_hold_and_ignore(smtpd):
    send(smtpd, 'Received: from lab ([192.0.2.9]) by x\r\nX-Internal-Debug: yes\r\n'
                'Subject: hi\r\n\r\nhello\r\n')
    held = wait_for(lambda: smtpd.queue_files('hold'), what='held message')
    _, content, _ = smtpd.read_queue_file(held[0], 'hold')
    assert b'X-Internal-Debug' not in content
    assert b'Subject: hi' in content
    assert smtpd.queue_files() == []
