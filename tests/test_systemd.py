"""postern under real systemd: a throwaway container boots with the host's
/usr and a staged installation, runs systemd-sysusers and systemd-tmpfiles,
starts postern.target, and the tests check what an administrator sees with
systemctl, journalctl and an SMTP client."""
import os
import re
import shutil
import socket
import subprocess

import pytest

from systemd_helpers import Container, wait_for

pytestmark = pytest.mark.skipif(shutil.which('systemd-nspawn') is None,
                                reason='systemd-nspawn is not installed')

MAIN_CF = '''
myhostname = mx.example.test
mydomain = example.test
mydestination = $myhostname, example.test, localhost
smtpd_banner = $myhostname ESMTP first-banner
'''


@pytest.fixture(scope='module')
def ct():
    c = Container(main_cf=MAIN_CF)
    try:
        c.boot()
        c.setup_postern()
        c.systemctl('start', 'postern.target')
        yield c
    finally:
        c.stop()


def smtp_script(ct, port, lines, timeout=20):
    """Speaks SMTP to 127.0.0.1:port inside the container; returns the
    replies as one string."""
    script = r'''
import socket, sys
s = socket.create_connection(("127.0.0.1", %d), timeout=%d)
f = s.makefile("rb")
out = []
def reply():
    while True:
        l = f.readline().decode()
        out.append(l)
        if len(l) < 4 or l[3] != "-":
            return
reply()
for line in sys.stdin.read().split("\n"):
    if not line:
        continue
    if line.startswith("DATA_BODY "):
        s.sendall(line[10:].encode().replace(b"\\n", b"\r\n") + b"\r\n")
        continue
    s.sendall(line.encode() + b"\r\n")
    reply()
print("".join(out), end="")
''' % (port, timeout)
    r = subprocess.run(ct.net_cmd(['python3', '-c', script]), input='\n'.join(lines),
                       capture_output=True, text=True, timeout=timeout + 10)
    assert r.returncode == 0, r.stderr
    return r.stdout


def port_open(ct, port):
    r = subprocess.run(ct.net_cmd(['python3', '-c',
                                   'import socket;socket.create_connection(("127.0.0.1",%d),1)'
                                   % port]), capture_output=True)
    return r.returncode == 0


def test_sockets_listen_without_processes(ct):
    for unit in ('postern-smtpd.socket', 'postern-submission.socket', 'postern-smtps.socket'):
        assert ct.is_active(unit) == 'active', unit
    for unit in ('postern-smtpd.service', 'postern-submission.service', 'postern-smtps.service'):
        assert ct.is_active(unit) == 'inactive', unit
    ps = ct.run(['ps', '-eo', 'comm']).stdout
    assert 'postern' not in ps


def test_first_connection_starts_the_service(ct):
    out = smtp_script(ct, 25, ['QUIT'])
    assert out.startswith('220 mx.example.test ESMTP first-banner'), out
    wait_for(lambda: ct.is_active('postern-smtpd.service') == 'active', what='smtpd active')
    main_pid = ct.systemctl('show', '-p', 'MainPID', '--value', 'postern-smtpd.service').stdout
    status = ct.run(['ps', '-o', 'user=', '-p', main_pid.strip()]).stdout.strip()
    assert status == 'postern'


def test_mail_to_port_25_is_queued_and_logged(ct):
    out = smtp_script(ct, 25, ['EHLO client.example', 'MAIL FROM:<alice@example.org>',
                               'RCPT TO:<bob@example.test>', 'DATA',
                               'DATA_BODY Subject: hi\\n\\nhello', '.', 'QUIT'])
    m = re.search(r'250 2\.0\.0 Ok: queued as (\S+)', out)
    assert m, out
    qid = m.group(1)
    files = ct.run(['find', '/var/spool/postern', '-name', qid]).stdout
    assert qid in files
    log = wait_for(lambda: ct.journal('POSTERN_QUEUE_ID=' + qid), what='journal entries')
    assert 'from=<alice@example.org>' in log or 'client=' in log
    ident = ct.journal('POSTERN_QUEUE_ID=' + qid, '-o', 'verbose')
    assert 'SYSLOG_IDENTIFIER=postern/smtpd' in ident


def test_stopping_one_socket_closes_only_its_port(ct):
    assert port_open(ct, 587)
    ct.systemctl('stop', 'postern-submission.socket')
    try:
        assert not port_open(ct, 587)
        assert port_open(ct, 25)
        assert port_open(ct, 465)
    finally:
        ct.systemctl('start', 'postern-submission.socket')
    assert port_open(ct, 587)


def security_score(ct, unit):
    out = ct.run(['systemd-analyze', 'security', '--no-pager', unit], check=False).stdout
    m = re.search(r'Overall exposure level for \S+: (\d+\.\d+)', out)
    assert m, out[-2000:]
    return float(m.group(1))


@pytest.mark.parametrize('unit', ['postern-smtpd.service', 'postern-submission.service',
                                  'postern-smtps.service'])
def test_sandbox_exposure(ct, unit):
    assert security_score(ct, unit) <= 2.0
