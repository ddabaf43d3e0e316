"""postern under real systemd: a throwaway container boots with the host's
/usr and a staged installation, runs systemd-sysusers and systemd-tmpfiles,
starts postern.target, and the tests check what an administrator sees with
systemctl, journalctl and SMTP clients: socket activation of every role,
mail over 25, 587 and 465 (SASL through a Dovecot run as a transient unit)
delivered into a home Maildir, local submission through the pickup path,
single sockets stopped alone, reload without dropping sessions, the message
trail in the journal, the sandboxes' exposure, and recovery of a killed
queue manager. One container serves the whole module; the tests run in file
order and each leaves the mail system as it found it."""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from systemd_helpers import Container, wait_for

pytestmark = pytest.mark.skipif(shutil.which('systemd-nspawn') is None
                                or os.geteuid() != 0,
                                reason='needs root and systemd-nspawn')

MAIN_CF = '''
myhostname = mx.example.test
mydomain = example.test
mydestination = $myhostname, example.test, localhost
home_mailbox = Maildir/
smtpd_banner = $myhostname ESMTP first-banner
'''

# smtps exits quickly when idle, so that idle exit is seen within a test.
SERVICES = {'smtps': 'max_idle = 3s\n'}

SERVICES_UNITS = ['postern-smtpd.service', 'postern-submission.service',
                  'postern-smtps.service', 'postern-qmgr.service',
                  'postern-deliver-remote.service', 'postern-deliver-local.service',
                  'postern-bounce.service', 'postern-pickup.service']
TRIGGER_UNITS = ['postern-smtpd.socket', 'postern-submission.socket', 'postern-smtps.socket',
                 'postern-qmgr.socket', 'postern-qmgr.timer', 'postern-deliver-remote.socket',
                 'postern-deliver-local.socket', 'postern-bounce.socket', 'postern-pickup.path']

# A Dovecot with only the auth service, its client socket where
# smtpd_sasl_path points (private/auth below the queue directory).
DOVECOT_CONF = '''\
base_dir = /run/test-dovecot
state_dir = /run/test-dovecot/state
log_path = /dev/stderr
protocols =
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = dovenull
default_internal_user = dovecot
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u /srv/shared/dovecot.passwd
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}
service auth {
  unix_listener /var/spool/postern/private/auth {
    mode = 0660
    user = postern
    group = postern
  }
}
service anvil {
  chroot =
}
'''


@pytest.fixture(scope='module')
def ct():
    c = Container(main_cf=MAIN_CF, services=SERVICES)
    try:
        c.boot()
        c.setup_postern()
        # A local user with a home Maildir, the alias table local delivery
        # reads, and a SASL user in Dovecot's passwd-file.
        c.run(['useradd', '-m', 'bob'])
        c.run(['sh', '-c', 'printf "postmaster: root\\nrobert: bob\\n" > /etc/aliases'])
        c.run(['/usr/local/sbin/newaliases'])
        with open(os.path.join(c.shared, 'dovecot.conf'), 'w') as f:
            f.write(DOVECOT_CONF)
        with open(os.path.join(c.shared, 'dovecot.passwd'), 'w') as f:
            f.write('alice:{PLAIN}wonderland::::::\n')
        os.chmod(os.path.join(c.shared, 'dovecot.passwd'), 0o644)
        c.systemctl('start', 'postern.target')
        yield c
    finally:
        c.stop()


@pytest.fixture(scope='module')
def dovecot(ct):
    if not os.access('/usr/sbin/dovecot', os.X_OK):
        pytest.skip('Dovecot is not installed')
    ct.run(['useradd', '--system', '--user-group', '--no-create-home', 'dovecot'], check=False)
    ct.run(['useradd', '--system', '--user-group', '--no-create-home', 'dovenull'], check=False)
    ct.run(['systemd-run', '--unit=test-dovecot', '/usr/sbin/dovecot', '-F', '-c',
            '/srv/shared/dovecot.conf'])
    wait_for(lambda: ct.run(['test', '-S', '/var/spool/postern/private/auth'],
                            check=False).returncode == 0, what='Dovecot auth socket')
    yield
    ct.systemctl('stop', 'test-dovecot.service', check=False)


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


def send_mail(ct, port, rcpt, subject, extra=()):
    """Sends one message with swaks inside the container's network; returns
    the queue ID from the 250 reply."""
    if shutil.which('swaks') is None:
        pytest.skip('swaks is not installed')
    r = subprocess.run(ct.net_cmd(['swaks', '--server', '127.0.0.1:%d' % port,
                                   '--from', 'alice@example.org', '--to', rcpt,
                                   '--header', 'Subject: ' + subject,
                                   '--body', 'test body for ' + subject] + list(extra)),
                       capture_output=True, text=True, timeout=60)
    m = re.search(r'250 2\.0\.0 Ok: queued as (\S+)', r.stdout)
    assert m, r.stdout + r.stderr
    return m.group(1)


def maildir_has(ct, subject):
    r = ct.run(['grep', '-rl', 'Subject: ' + subject, '/home/bob/Maildir/new'], check=False)
    return r.stdout.strip()


def port_open(ct, port):
    r = subprocess.run(ct.net_cmd(['python3', '-c',
                                   'import socket;socket.create_connection(("127.0.0.1",%d),1)'
                                   % port]), capture_output=True)
    return r.returncode == 0


def show(ct, unit, prop):
    return ct.systemctl('show', '-p', prop, '--value', unit).stdout.strip()


def test_every_trigger_active_and_no_process_before_first_use(ct):
    for unit in TRIGGER_UNITS:
        assert ct.is_active(unit) == 'active', unit
    for unit in SERVICES_UNITS:
        assert ct.is_active(unit) == 'inactive', unit
    ps = ct.run(['ps', '-eo', 'comm']).stdout
    assert 'postern' not in ps
    # The target pulls in every socket, path and timer.
    wants = show(ct, 'postern.target', 'Wants').split()
    assert set(TRIGGER_UNITS) <= set(wants), wants


def timespan(text):
    """Seconds in a monotonic time as systemctl show prints it: microseconds
    ("1139208722") or a time span ("23min 59.208549s")."""
    if text.isdigit():
        return int(text) / 1e6
    units = {'d': 86400, 'h': 3600, 'min': 60, 's': 1, 'ms': 1e-3, 'us': 1e-6}
    parts = re.findall(r'([\d.]+)(d|h|min|ms|us|s)\b', text)
    assert parts, text
    return sum(float(n) * units[u] for n, u in parts)


def test_deferred_queue_timer_waits_a_full_interval_after_it_starts(ct):
    # The first run is queue_run_delay (5 min) after the timer starts, however
    # long ago the system booted, and then 5 min after qmgr last ran.
    ct.systemctl('restart', 'postern-qmgr.timer')
    started = timespan(show(ct, 'postern-qmgr.timer', 'ActiveEnterTimestampMonotonic'))
    nxt = timespan(show(ct, 'postern-qmgr.timer', 'NextElapseUSecMonotonic'))
    assert 299 <= nxt - started <= 301, (started, nxt)
    assert ct.is_active('postern-qmgr.service') == 'inactive'


def test_first_connection_starts_the_service(ct):
    out = smtp_script(ct, 25, ['QUIT'])
    assert out.startswith('220 mx.example.test ESMTP first-banner'), out
    wait_for(lambda: ct.is_active('postern-smtpd.service') == 'active', what='smtpd active')
    main_pid = show(ct, 'postern-smtpd.service', 'MainPID')
    user = ct.run(['ps', '-o', 'user=', '-p', main_pid]).stdout.strip()
    assert user == 'postern'
    # Type=notify: READY=1 made it active, STATUS= shows in systemctl status.
    assert show(ct, 'postern-smtpd.service', 'StatusText')
    status = ct.systemctl('status', 'postern-smtpd.service', check=False).stdout
    assert re.search(r'Status: ".*worker', status), status
    assert show(ct, 'postern-smtpd.service', 'WatchdogUSec') == '30s'


def test_mail_to_port_25_is_delivered_to_a_home_maildir(ct):
    qid = send_mail(ct, 25, 'bob@mx.example.test', 'via-port-25')
    ident = ct.journal('POSTERN_QUEUE_ID=' + qid, '-o', 'verbose')
    assert 'SYSLOG_IDENTIFIER=postern/smtpd' in ident
    wait_for(lambda: maildir_has(ct, 'via-port-25'), what='delivery into /home/bob/Maildir')
    owner = ct.run(['stat', '-c', '%U', maildir_has(ct, 'via-port-25').split()[0]]).stdout
    assert owner.strip() == 'bob'
    wait_for(lambda: 'status=sent' in ct.journal('POSTERN_QUEUE_ID=' + qid),
             what='status=sent in the journal')
    # The queue manager and local delivery ran under their units.
    for unit in ('postern-qmgr.service', 'postern-deliver-local.service'):
        assert show(ct, unit, 'ExecMainStartTimestampMonotonic') != '0', unit


def test_alias_and_message_trail_in_the_journal(ct):
    qid = send_mail(ct, 25, 'robert@mx.example.test', 'via-alias')
    wait_for(lambda: maildir_has(ct, 'via-alias'), what='alias delivery')
    log = wait_for(lambda: (lambda t: t if 'status=sent' in t else None)(
        ct.journal('POSTERN_QUEUE_ID=' + qid, '-o', 'verbose')), what='journal trail')
    # One query shows the whole life of the message across the units:
    # reception, alias expansion and delivery, removal from the queue.
    for unit in ('postern-smtpd.service', 'postern-qmgr.service'):
        assert '_SYSTEMD_UNIT=' + unit in log, (unit, log)
    assert 'POSTERN_SENDER=alice@example.org' in log
    assert 'POSTERN_STATUS=sent' in log
    assert re.search(r'to=<bob@mx\.example\.test>, orig_to=<robert@mx\.example\.test>, '
                     r'relay=local', log) or 'relay=local' in log, log
    assert ': removed' in log


POSTERNCTL = '/usr/local/sbin/posternctl'


def trace(ct, *args):
    return ct.run([POSTERNCTL, 'trace'] + list(args), check=False)


def test_posternctl_trace(ct):
    r = trace(ct, '--help')
    assert r.returncode == 0, r.stderr
    assert '--sender' in r.stdout and '--recipient' in r.stdout, r.stdout
    qid = send_mail(ct, 25, 'bob@mx.example.test', 'for-trace')
    wait_for(lambda: 'status=sent' in ct.journal('POSTERN_QUEUE_ID=' + qid),
             what='delivery')
    out = trace(ct, qid).stdout
    assert 'from=<alice@example.org>' in out, out
    assert 'status=sent' in out, out


def test_posternctl_trace_follows_a_bounce(ct):
    # ghost is an alias of a user that does not exist: smtpd accepts it,
    # local delivery bounces it, and the report goes back to bob.
    ct.run(['sh', '-c', 'printf "ghost: nosuchuser\\n" >> /etc/aliases'])
    ct.run(['/usr/local/sbin/newaliases'])
    ct.systemctl('reload', 'postern.target')       # the running roles see the new alias
    # smtpd's new workers take over the listening socket once they are ready.
    out = wait_for(lambda: (lambda o: o if 'queued as' in o else None)(smtp_script(
        ct, 25, ['EHLO client.example', 'MAIL FROM:<bob@mx.example.test>',
                 'RCPT TO:<ghost@mx.example.test>', 'DATA',
                 'DATA_BODY Subject: bounce-trace\\n\\nbody\\n.', 'QUIT'])),
        what='the new alias accepted by smtpd')
    qid = queue_id_of(out)

    def complete():
        t = trace(ct, qid).stdout
        m = re.search(re.escape(qid) + r': sender non-delivery notification: (\S+)', t)
        if m and '%s: removed' % m.group(1) in t and '%s: removed' % qid in t:
            return t, m.group(1)
        return None
    out, report = wait_for(complete, timeout=60, what='the bounce and its delivery in the trace')
    lines = out.splitlines()
    print(out)

    def index(pattern):
        for i, line in enumerate(lines):
            if re.search(pattern, line):
                return i
        raise AssertionError('%r not in the trace:\n%s' % (pattern, out))
    order = [index(re.escape(qid) + r': client=\S*\[127\.0\.0\.1\]'),
             index(re.escape(qid) + r': from=<bob@mx\.example\.test>'),
             index(re.escape(qid) + r': to=<[^>]*>.*status=bounced'),
             index(re.escape(qid) + r': sender non-delivery notification: ' + re.escape(report)),
             index(re.escape(qid) + r': removed')]
    assert order == sorted(order), out
    # The report's own life: queued, delivered to bob, removed.
    assert index(re.escape(report) + r': to=<bob@mx\.example\.test>.*status=sent') < \
        index(re.escape(report) + r': removed'), out
    # Found by its sender and by its recipient, with the same lines.
    for args in (('--sender', 'bob@mx.example.test'), ('--recipient', 'ghost@mx.example.test')):
        r = trace(ct, *args)
        assert r.returncode == 0, r.stderr
        for line in lines:
            assert line in r.stdout.splitlines(), (args, line, r.stdout)


def test_submission_587_with_dovecot_sasl(ct, dovecot):
    out = smtp_script(ct, 587, ['EHLO client.example', 'MAIL FROM:<alice@example.org>',
                                'QUIT'])
    assert 'STARTTLS' in out and '530' in out, out     # TLS first, then AUTH
    send_mail(ct, 587, 'bob@mx.example.test', 'via-587',
              ['--tls', '--auth', 'PLAIN', '--auth-user', 'alice',
               '--auth-password', 'wonderland'])
    wait_for(lambda: maildir_has(ct, 'via-587'), what='delivery of submitted mail')


def test_smtps_465_with_dovecot_sasl_and_idle_exit(ct, dovecot):
    send_mail(ct, 465, 'bob@mx.example.test', 'via-465',
              ['--tlsc', '--auth', 'LOGIN', '--auth-user', 'alice',
               '--auth-password', 'wonderland'])
    wait_for(lambda: maildir_has(ct, 'via-465'), what='delivery of smtps mail')
    # max_idle = 3s in services.d/smtps.cf: the service exits, the socket stays.
    wait_for(lambda: ct.is_active('postern-smtps.service') == 'inactive', timeout=20,
             what='smtps idle exit')
    assert ct.is_active('postern-smtps.socket') == 'active'
    assert show(ct, 'postern-smtps.service', 'Result') == 'success'


def test_local_submission_through_the_pickup_path(ct):
    r = ct.run(['/usr/local/sbin/sendmail', '-f', 'root@mx.example.test', 'bob'],
               input='Subject: via-sendmail\n\nlocal body\n', check=False)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: maildir_has(ct, 'via-sendmail'), what='pickup and delivery')
    assert ct.run(['find', '/var/spool/postern/maildrop', '-type', 'f']).stdout == ''
    assert ct.is_active('postern-pickup.path') == 'active'


def test_stopping_one_socket_closes_only_its_port(ct):
    assert port_open(ct, 587)
    ct.systemctl('stop', 'postern-submission.socket')
    try:
        assert not port_open(ct, 587)
        assert port_open(ct, 25)
        assert port_open(ct, 465)
        for unit in TRIGGER_UNITS:
            if unit != 'postern-submission.socket':
                assert ct.is_active(unit) == 'active', unit
    finally:
        ct.systemctl('start', 'postern-submission.socket')
    assert port_open(ct, 587)


def test_masked_role_stays_down(ct):
    ct.systemctl('stop', 'postern-smtps.socket')
    ct.systemctl('mask', '--runtime', 'postern-smtps.socket')
    try:
        ct.systemctl('restart', 'postern.target')
        assert not port_open(ct, 465)
        assert port_open(ct, 25)
    finally:
        ct.systemctl('unmask', '--runtime', 'postern-smtps.socket')
        ct.systemctl('start', 'postern-smtps.socket')
    assert port_open(ct, 465)


HOLD_SESSION = r'''
import socket, sys
s = socket.create_connection(("127.0.0.1", 25), timeout=30)
f = s.makefile("rb")
def reply():
    out = ""
    while True:
        l = f.readline().decode()
        out += l
        if len(l) < 4 or l[3] != "-":
            return out
print(reply(), end="", flush=True)
sys.stdin.readline()
for cmd in ("EHLO old.example", "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@mx.example.test>",
            "DATA"):
    s.sendall(cmd.encode() + b"\r\n")
    print(reply(), end="", flush=True)
s.sendall(b"Subject: old-session\r\n\r\nbody\r\n.\r\n")
print(reply(), end="", flush=True)
s.sendall(b"QUIT\r\n")
print(reply(), end="", flush=True)
'''


def test_reload_keeps_sessions_and_applies_the_new_banner(ct):
    old = subprocess.Popen(ct.net_cmd(['python3', '-c', HOLD_SESSION]), stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = old.stdout.readline()
        assert 'first-banner' in banner, banner
        main_pid = show(ct, 'postern-smtpd.service', 'MainPID')
        ct.run(['/usr/local/sbin/postconf', '-e',
                'smtpd_banner = $myhostname ESMTP second-banner'])
        ct.systemctl('reload', 'postern-smtpd.service')
        out = wait_for(lambda: (lambda o: o if 'second-banner' in o else None)(
            smtp_script(ct, 25, ['QUIT'])), timeout=15, what='the new banner')
        assert out.startswith('220 mx.example.test ESMTP second-banner'), out
        # The session opened before the reload goes on to the end.
        out, err = old.communicate('go\n', timeout=30)
        assert re.search(r'250 2\.0\.0 Ok: queued as', out), out + err
        assert show(ct, 'postern-smtpd.service', 'MainPID') == main_pid
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()
    wait_for(lambda: maildir_has(ct, 'old-session'), what='delivery of the old session')


def test_reload_of_the_target_reaches_the_smtpd_roles(ct):
    smtp_script(ct, 25, ['QUIT'])       # make sure smtpd runs
    ct.run(['/usr/local/sbin/postconf', '-e',
            'smtpd_banner = $myhostname ESMTP third-banner'])
    ct.systemctl('reload', 'postern.target')
    out = wait_for(lambda: (lambda o: o if 'third-banner' in o else None)(
        smtp_script(ct, 25, ['QUIT'])), timeout=15, what='the banner after a target reload')
    assert out.startswith('220 mx.example.test ESMTP third-banner'), out


def journal_cursor(ct):
    """The journal's current end, for journal_after()."""
    out = ct.run(['journalctl', '-n', '0', '--show-cursor', '-q'], check=False).stdout
    m = re.search(r'-- cursor: (\S+)', out)
    assert m, out
    return m.group(1)


def journal_entries(ct, cursor):
    """The journal entries after cursor, as dicts. (A field or unit match
    together with --after-cursor missed entries now and then in the
    container, so the matching is done here.)"""
    return [json.loads(line) for line in
            ct.journal('--after-cursor', cursor, '-o', 'json').splitlines() if line]


def journal_after(ct, cursor, unit=None):
    """The messages after cursor, one a line; with unit, only those of the
    unit and those systemd logs about it (as journalctl -u)."""
    return '\n'.join(str(e.get('MESSAGE')) for e in journal_entries(ct, cursor)
                     if not unit or unit in (e.get('_SYSTEMD_UNIT'), e.get('UNIT')))

def queue_id_of(out):
    m = re.search(r'250 2\.0\.0 Ok: queued as (\S+)', out)
    assert m, out
    return m.group(1)


def test_reload_of_the_queue_manager_applies_transport_maps_in_place(ct):
    # A message to robert@ is delivered locally (alias of bob) until the
    # reloaded transport table sends it to the error transport.
    ct.systemctl('start', 'postern-qmgr.service')
    pid = show(ct, 'postern-qmgr.service', 'MainPID')
    with open(os.path.join(ct.confdir, 'transport'), 'w') as f:
        f.write('robert@mx.example.test error:5.7.1 refused by the reloaded transport table\n')
    ct.run(['/usr/local/sbin/postconf', '-e', 'transport_maps = texthash:/etc/postern/transport'])
    try:
        r = ct.systemctl('reload', 'postern-qmgr.service', check=False)
        assert r.returncode == 0, r.stderr
        out = smtp_script(ct, 25, ['EHLO client.example', 'MAIL FROM:<>',
                                   'RCPT TO:<robert@mx.example.test>', 'DATA',
                                   'DATA_BODY Subject: after-qmgr-reload\\n\\nbody\\n.', 'QUIT'])
        qid = queue_id_of(out)
        log = wait_for(lambda: (lambda t: t if 'status=bounced' in t else None)(
            ct.journal('POSTERN_QUEUE_ID=' + qid)), what='the bounce by the new transport')
        assert 'refused by the reloaded transport table' in log, log
        assert 'Reloaded the configuration' in ct.journal('-u', 'postern-qmgr.service')
        # The same process: the queue manager reloaded in place.
        assert show(ct, 'postern-qmgr.service', 'MainPID') == pid
    finally:
        ct.run(['/usr/local/sbin/postconf', '-X', 'transport_maps'])
        ct.systemctl('reload', 'postern-qmgr.service', check=False)
    assert not maildir_has(ct, 'after-qmgr-reload')


RELOADABLE = {
    # unit: what its journal says after a reload that loaded
    'postern-smtpd.service': 'Reloaded the TLS configuration, settings and tables',
    'postern-qmgr.service': 'Reloaded the configuration',
    'postern-deliver-local.service': 'Reloaded the configuration',
    'postern-bounce.service': 'Reloaded the configuration',
    'postern-deliver-remote.service': 'exiting so that the next one uses the new configuration',
}


def test_reload_of_the_target_reaches_every_running_role(ct):
    for unit in RELOADABLE:
        ct.systemctl('start', unit)
        assert show(ct, unit, 'CanReload') == 'yes', unit
    pids = {unit: show(ct, unit, 'MainPID') for unit in RELOADABLE}
    cursor = journal_cursor(ct)
    ct.run(['/usr/local/sbin/postconf', '-e', 'home_mailbox = Maildir2/'])
    try:
        r = ct.systemctl('reload', 'postern.target', check=False)
        assert r.returncode == 0, r.stderr
        for unit, text in RELOADABLE.items():
            wait_for(lambda: text in journal_after(ct, cursor, unit),
                     what='the reload of ' + unit)
        # Reloaded in place; deliver-remote finished its (no) deliveries and
        # exited cleanly, for its socket to start it with the new settings.
        for unit in RELOADABLE:
            if unit != 'postern-deliver-remote.service':
                assert show(ct, unit, 'MainPID') == pids[unit], unit
        wait_for(lambda: ct.is_active('postern-deliver-remote.service') == 'inactive',
                 what='deliver-remote exit after the reload')
        assert show(ct, 'postern-deliver-remote.service', 'Result') == 'success'
        # The running local delivery agent uses the new home_mailbox.
        send_mail(ct, 25, 'bob@mx.example.test', 'after-target-reload')
        wait_for(lambda: ct.run(['grep', '-rl', 'Subject: after-target-reload',
                                 '/home/bob/Maildir2/new'], check=False).stdout.strip(),
                 what='delivery into the reloaded home_mailbox')
        assert show(ct, 'postern-deliver-local.service', 'MainPID') == \
            pids['postern-deliver-local.service']
    finally:
        ct.run(['/usr/local/sbin/postconf', '-e', 'home_mailbox = Maildir/'])
        ct.systemctl('reload', 'postern.target', check=False)


def test_reload_refuses_a_broken_configuration(ct):
    banner = smtp_script(ct, 25, ['QUIT']).splitlines()[0]
    ct.systemctl('start', 'postern-qmgr.service')
    smtpd_pid = show(ct, 'postern-smtpd.service', 'MainPID')
    qmgr_pid = show(ct, 'postern-qmgr.service', 'MainPID')
    main_cf = os.path.join(ct.confdir, 'main.cf')
    with open(main_cf) as f:
        good = f.read()
    bad_line = len(good.splitlines()) + 1
    where = 'main.cf:%d' % bad_line
    cursor = journal_cursor(ct)
    with open(main_cf, 'w') as f:
        f.write(good if good.endswith('\n') else good + '\n')
        f.write('max_idle = not-a-time\n')
    try:
        # posternctl check in ExecReload= fails the reload itself ...
        r = ct.systemctl('reload', 'postern-smtpd.service', check=False)
        assert r.returncode != 0, r.stdout + r.stderr
        log = wait_for(lambda: (lambda t: t if where in t else None)(
            journal_after(ct, cursor, 'postern-smtpd.service')),
            what='the refusal in the journal')
        assert 'max_idle' in log, log
        # ... and the running service goes on with the old configuration.
        assert ct.is_active('postern-smtpd.service') == 'active'
        assert show(ct, 'postern-smtpd.service', 'MainPID') == smtpd_pid
        assert smtp_script(ct, 25, ['QUIT']).splitlines()[0] == banner
        # A SIGHUP that reaches a daemon without the check is refused by the
        # daemon: logged with FILE:LINE and the config-error MESSAGE_ID.
        ct.run(['kill', '-HUP', qmgr_pid])

        def refusal():
            entries = journal_entries(ct, cursor)
            mine = [e for e in entries if e.get('_PID') == qmgr_pid]
            if any('Reload failed' in str(e.get('MESSAGE')) for e in mine):
                return mine
            return None
        mine = wait_for(refusal, what="qmgr's refusal in the journal")
        diag = [e for e in mine if where in str(e.get('MESSAGE'))]
        assert diag, mine
        assert diag[0]['MESSAGE_ID'] == '8d4c1a2e6f3b4b0c9a7e5d1f2c3b4a51', diag
        assert diag[0]['PRIORITY'] == '3', diag
        assert show(ct, 'postern-qmgr.service', 'MainPID') == qmgr_pid
    finally:
        with open(main_cf, 'w') as f:
            f.write(good)
    r = ct.systemctl('reload', 'postern-smtpd.service', check=False)
    assert r.returncode == 0, r.stderr


def test_private_key_as_a_credential(ct):
    # The key moves where postern cannot read it; LoadCredential= hands it in.
    ct.run(['sh', '-c', 'cp /etc/postern/tls/key.pem /run/root-only.key && '
                        'chmod 0600 /run/root-only.key && chown root:root /run/root-only.key'])
    ct.run(['/usr/local/sbin/postconf', '-e', 'smtpd_tls_key_file = /run/root-only.key'])
    ct.run(['mkdir', '-p', '/run/systemd/system/postern-smtps.service.d'])
    ct.run(['sh', '-c', 'printf "[Service]\\nLoadCredential=smtpd_tls_key_file:'
                        '/run/root-only.key\\n" > '
                        '/run/systemd/system/postern-smtps.service.d/50-key.conf'])
    ct.systemctl('daemon-reload')
    try:
        ct.systemctl('stop', 'postern-smtps.service')
        r = subprocess.run(ct.net_cmd(['openssl', 's_client', '-connect', '127.0.0.1:465',
                                       '-quiet']), input='QUIT\r\n', capture_output=True,
                           text=True, timeout=20)
        assert '220 mx.example.test' in r.stdout, r.stdout + r.stderr
    finally:
        ct.run(['rm', '-rf', '/run/systemd/system/postern-smtps.service.d'])
        ct.run(['/usr/local/sbin/postconf', '-e',
                'smtpd_tls_key_file = /etc/postern/tls/key.pem'])
        ct.systemctl('daemon-reload')
        ct.systemctl('stop', 'postern-smtps.service')


def test_queue_manager_status_shows_the_queue_sizes(ct):
    ct.systemctl('start', 'postern-qmgr.service')
    # STATUS= follows the counts at most once a second.
    wait_for(lambda: re.match(r'Queue: \d+ incoming, \d+ active, 0 deferred; '
                              r'\d+ deliveries in flight$',
                              show(ct, 'postern-qmgr.service', 'StatusText')),
             what='the queue sizes in the status')
    # Without the local delivery agent the message waits in deferred/.
    ct.systemctl('stop', 'postern-deliver-local.socket')
    try:
        qid = send_mail(ct, 25, 'bob@mx.example.test', 'status-deferred')
        wait_for(lambda: 'status=deferred' in ct.journal('POSTERN_QUEUE_ID=' + qid),
                 what='the deferral')
        wait_for(lambda: ', 1 deferred;' in show(ct, 'postern-qmgr.service', 'StatusText'),
                 what='1 deferred in the status')
        assert ct.systemctl('status', 'postern-qmgr.service', check=False).stdout.count(
            '1 deferred') == 1
    finally:
        ct.systemctl('start', 'postern-deliver-local.socket')
    # qmgr waits a second before it calls an agent that refused again, so a
    # flush right after the deferral may defer once more: flush until it
    # arrives.
    flushed = [0.0]

    def delivered():
        if count_in_maildir(ct, 'status-deferred'):
            return True
        if time.monotonic() - flushed[0] > 2:
            ct.run(['/usr/local/sbin/postqueue', '-f'])
            flushed[0] = time.monotonic()
        return False
    wait_for(delivered, what='delivery after the flush')
    wait_for(lambda: ', 0 deferred;' in show(ct, 'postern-qmgr.service', 'StatusText'),
             what='0 deferred in the status')


# An SMTP server on 127.0.0.2:2525 that offers STARTTLS, asks for a client
# certificate and prints the common name it got (or None).
CERT_PEER = r'''
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
ctx.verify_mode = ssl.CERT_OPTIONAL
ctx.load_verify_locations(sys.argv[3])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.2", 2525))
srv.listen(1)
srv.settimeout(60)
print("listening", flush=True)
c, _ = srv.accept()
c.settimeout(60)
f = c.makefile("rb")
peer = None
def send(text):
    c.sendall(text.encode() + b"\r\n")
send("220 peer.example ESMTP")
while True:
    line = f.readline()
    if not line:
        break
    cmd = line.decode().strip().upper()
    if cmd.startswith("EHLO"):
        send("250-peer.example")
        send("250 8BITMIME" if peer is not None else "250 STARTTLS")
    elif cmd == "STARTTLS":
        send("220 2.0.0 go ahead")
        c = ctx.wrap_socket(c, server_side=True)
        f = c.makefile("rb")
        cert = c.getpeercert()
        peer = dict(x[0] for x in cert["subject"])["commonName"] if cert else ""
    elif cmd == "DATA":
        send("354 go ahead")
        while f.readline() not in (b".\r\n", b""):
            pass
        send("250 2.0.0 queued")
    elif cmd == "QUIT":
        send("221 2.0.0 bye")
        break
    else:
        send("250 2.0.0 ok")
print("client-cert:", peer, flush=True)
'''


def test_client_key_as_a_credential(ct):
    # A client certificate whose key only root can read: deliver-remote
    # gets the key through LoadCredential=smtp_tls_key_file.
    tls = os.path.join(ct.confdir, 'tls')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj',
                    '/CN=client.example.test', '-keyout', os.path.join(tls, 'client.key'),
                    '-out', os.path.join(tls, 'client.pem')], check=True, capture_output=True)
    ct.run(['chown', 'root:root', '/etc/postern/tls/client.key'])
    ct.run(['chmod', '0600', '/etc/postern/tls/client.key'])
    with open(os.path.join(ct.confdir, 'transport'), 'w') as f:
        f.write('peer.example smtp:[127.0.0.2]:2525\n')
    ct.run(['/usr/local/sbin/postconf', '-e', 'transport_maps = texthash:/etc/postern/transport',
            'smtp_tls_security_level = may',
            'smtp_tls_cert_file = /etc/postern/tls/client.pem',
            'smtp_tls_key_file = /etc/postern/tls/client.key'])
    dropin = '/run/systemd/system/postern-deliver-remote.service.d'
    ct.run(['mkdir', '-p', dropin])
    ct.run(['sh', '-c', 'printf "[Service]\\nLoadCredential=smtp_tls_key_file:'
                        '/etc/postern/tls/client.key\\n" > %s/50-key.conf' % dropin])
    ct.systemctl('daemon-reload')
    ct.systemctl('stop', 'postern-deliver-remote.service')
    ct.systemctl('reload', 'postern.target')
    peer = subprocess.Popen(ct.net_cmd(['python3', '-c', CERT_PEER, os.path.join(tls, 'cert.pem'),
                                        os.path.join(tls, 'key.pem'),
                                        os.path.join(tls, 'client.pem')]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert peer.stdout.readline() == 'listening\n'
        out = smtp_script(ct, 25, ['EHLO client.example', 'MAIL FROM:<>',
                                   'RCPT TO:<carol@peer.example>', 'DATA',
                                   'DATA_BODY Subject: client-cert\\n\\nbody\\n.', 'QUIT'])
        qid = queue_id_of(out)
        out, err = peer.communicate(timeout=60)
        assert 'client-cert: client.example.test' in out, out + err + ct.journal(
            '-u', 'postern-deliver-remote.service')
        wait_for(lambda: 'status=sent' in ct.journal('POSTERN_QUEUE_ID=' + qid),
                 what='status=sent')
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
        ct.run(['rm', '-rf', dropin])
        ct.run(['/usr/local/sbin/postconf', '-X', 'transport_maps', 'smtp_tls_security_level',
                'smtp_tls_cert_file', 'smtp_tls_key_file'])
        ct.systemctl('daemon-reload')
        ct.systemctl('reload', 'postern.target', check=False)


# An SMTP server on 127.0.0.2:2525 for one connection: prints the EHLO name
# and "got-data" when the message is in, and with argv[1] == "hold" answers
# the end of data only after a line on its stdin.
HOLD_PEER = r'''
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.2", 2525))
srv.listen(1)
srv.settimeout(60)
print("listening", flush=True)
c, _ = srv.accept()
c.settimeout(60)
f = c.makefile("rb")
def send(text):
    c.sendall(text.encode() + b"\r\n")
send("220 peer.example ESMTP")
while True:
    line = f.readline()
    if not line:
        break
    cmd = line.decode().strip()
    if cmd.upper().startswith("EHLO"):
        print("ehlo", cmd[5:], flush=True)
        send("250-peer.example")
        send("250 8BITMIME")
    elif cmd.upper() == "DATA":
        send("354 go ahead")
        while f.readline() not in (b".\r\n", b""):
            pass
        print("got-data", flush=True)
        if sys.argv[1] == "hold":
            sys.stdin.readline()
        send("250 2.0.0 queued")
    elif cmd.upper() == "QUIT":
        send("221 2.0.0 bye")
        break
    else:
        send("250 2.0.0 ok")
'''


def test_reload_of_remote_delivery_finishes_in_flight_work_first(ct):
    with open(os.path.join(ct.confdir, 'transport'), 'w') as f:
        f.write('peer.example smtp:[127.0.0.2]:2525\n')
    ct.run(['/usr/local/sbin/postconf', '-e', 'transport_maps = texthash:/etc/postern/transport',
            'smtp_helo_name = before.example'])
    ct.systemctl('stop', 'postern-deliver-remote.service')
    ct.systemctl('reload', 'postern.target')

    def start_peer(mode):
        p = subprocess.Popen(ct.net_cmd(['python3', '-c', HOLD_PEER, mode]),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline() == 'listening\n'
        return p

    def send(subject):
        return queue_id_of(smtp_script(ct, 25, [
            'EHLO client.example', 'MAIL FROM:<>', 'RCPT TO:<carol@peer.example>', 'DATA',
            'DATA_BODY Subject: %s\\n\\nbody\\n.' % subject, 'QUIT']))
    peers = []
    try:
        peers.append(start_peer('hold'))
        qid = send('remote-before-reload')
        assert peers[0].stdout.readline() == 'ehlo before.example\n'
        assert peers[0].stdout.readline() == 'got-data\n'
        pid = show(ct, 'postern-deliver-remote.service', 'MainPID')
        cursor = journal_cursor(ct)
        # A delivery is in flight: the reload lets it finish, then exits.
        ct.run(['/usr/local/sbin/postconf', '-e', 'smtp_helo_name = after.example'])
        r = ct.systemctl('reload', 'postern-deliver-remote.service', check=False)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: '1 delivery in progress finishes' in
                 journal_after(ct, cursor, 'postern-deliver-remote.service'),
                 what='the reload of deliver-remote')
        assert show(ct, 'postern-deliver-remote.service', 'MainPID') == pid
        peers[0].stdin.write('go\n')
        peers[0].stdin.flush()
        wait_for(lambda: 'status=sent' in ct.journal('POSTERN_QUEUE_ID=' + qid),
                 what='the delivery in flight')
        wait_for(lambda: ct.is_active('postern-deliver-remote.service') == 'inactive',
                 what='deliver-remote exit after its delivery')
        assert show(ct, 'postern-deliver-remote.service', 'Result') == 'success'
        # The next delivery starts a new process with the new configuration.
        peers.append(start_peer('pass'))
        send('remote-after-reload')
        assert peers[1].stdout.readline() == 'ehlo after.example\n'
    finally:
        for p in peers:
            if p.poll() is None:
                p.kill()
                p.wait()
        ct.run(['/usr/local/sbin/postconf', '-X', 'transport_maps', 'smtp_helo_name'])
        ct.systemctl('reload', 'postern.target', check=False)


def count_in_maildir(ct, subject):
    r = ct.run(['grep', '-rlx', 'Subject: ' + subject, '/home/bob/Maildir/new'], check=False)
    return len(r.stdout.split())


def restarts(ct, unit):
    return int(show(ct, unit, 'NRestarts'))


def wait_restarted(ct, unit, before, old_pid):
    """Waits until systemd restarted unit (Restart=on-failure) and it runs
    again under a new main PID."""
    wait_for(lambda: restarts(ct, unit) == before + 1, what='the restart of ' + unit)
    wait_for(lambda: ct.is_active(unit) == 'active' and
             show(ct, unit, 'MainPID') not in ('0', old_pid), what=unit + ' active again')


# The smtpd and local delivery kills run before the queue manager is killed:
# smtpd's workers keep their connection to the queue manager, and an
# announcement sent over one whose queue manager died is lost (the mail waits
# in incoming/ until a queue manager starts and scans it).


def test_killed_smtpd_is_restarted_and_keeps_accepted_mail(ct):
    smtp_script(ct, 25, ['QUIT'])
    pid = show(ct, 'postern-smtpd.service', 'MainPID')
    before = restarts(ct, 'postern-smtpd.service')
    qid = send_mail(ct, 25, 'bob@mx.example.test', 'smtpd-kill')
    ct.run(['kill', '-KILL', pid])
    wait_restarted(ct, 'postern-smtpd.service', before, pid)
    out = smtp_script(ct, 25, ['QUIT'])
    assert out.startswith('220 mx.example.test'), out
    try:
        wait_for(lambda: count_in_maildir(ct, 'smtpd-kill'), what='delivery of the accepted mail')
    except TimeoutError:
        print(ct.journal('POSTERN_QUEUE_ID=' + qid), ct.journal('-n', '60'),
              ct.run(['find', '/var/spool/postern', '-type', 'f']).stdout)
        raise
    assert count_in_maildir(ct, 'smtpd-kill') == 1


def test_killed_local_delivery_agent_delivers_once(ct):
    ct.systemctl('start', 'postern-qmgr.service')
    ct.systemctl('start', 'postern-deliver-local.service')
    pid = show(ct, 'postern-deliver-local.service', 'MainPID')
    before = restarts(ct, 'postern-deliver-local.service')
    ct.run(['kill', '-STOP', pid])
    try:
        qid = send_mail(ct, 25, 'bob@mx.example.test', 'local-kill')
        # The queue manager's Deliver call waits for the stopped agent.
        wait_for(lambda: re.search(r'\b1 deliver(y|ies) in flight',
                                   show(ct, 'postern-qmgr.service', 'StatusText')),
                 what='the delivery in flight')
    finally:
        ct.run(['kill', '-KILL', pid])
    wait_restarted(ct, 'postern-deliver-local.service', before, pid)
    # A call lost with the agent is deferred; flush the queue.
    ct.run(['/usr/local/sbin/postqueue', '-f'])
    wait_for(lambda: count_in_maildir(ct, 'local-kill'), timeout=30,
             what='delivery after the restart')
    wait_for(lambda: 'status=sent' in ct.journal('POSTERN_QUEUE_ID=' + qid), what='status=sent')
    assert count_in_maildir(ct, 'local-kill') == 1


def test_killed_queue_manager_comes_back_and_loses_nothing(ct):
    send_mail(ct, 25, 'bob@mx.example.test', 'before-kill')
    wait_for(lambda: maildir_has(ct, 'before-kill'), what='delivery before the kill')
    wait_for(lambda: ct.is_active('postern-qmgr.service') == 'active', what='qmgr running')
    pid = show(ct, 'postern-qmgr.service', 'MainPID')
    ct.systemctl('kill', '-s', 'KILL', 'postern-qmgr.service')
    # Restart=on-failure (or the next activation) brings it back.
    send_mail(ct, 25, 'bob@mx.example.test', 'after-kill')
    wait_for(lambda: maildir_has(ct, 'after-kill'), what='delivery after the kill')
    new_pid = show(ct, 'postern-qmgr.service', 'MainPID')
    assert new_pid not in ('0', pid)
    assert ct.is_active('postern-qmgr.socket') == 'active'
    assert ct.run(['find', '/var/spool/postern/incoming', '/var/spool/postern/active',
                   '-type', 'f']).stdout == ''


def test_killed_queue_manager_with_queued_mail_delivers_it_once(ct):
    ct.systemctl('start', 'postern-qmgr.service')
    pid = show(ct, 'postern-qmgr.service', 'MainPID')
    before = restarts(ct, 'postern-qmgr.service')
    subjects = ['qmgr-kill-%d' % i for i in range(5)]
    # Stopped, the queue manager takes no mail: it stays in incoming/.
    ct.run(['kill', '-STOP', pid])
    try:
        for subject in subjects:
            send_mail(ct, 25, 'bob@mx.example.test', subject)
        assert ct.run(['find', '/var/spool/postern/incoming', '-type', 'f']).stdout.strip()
    finally:
        ct.run(['kill', '-KILL', pid])
    # systemd restarts it; the new one finds the mail without being called.
    wait_restarted(ct, 'postern-qmgr.service', before, pid)
    wait_for(lambda: all(count_in_maildir(ct, s) for s in subjects), timeout=60,
             what='delivery of the mail queued while the queue manager was down')
    for subject in subjects:
        assert count_in_maildir(ct, subject) == 1, subject


def test_lost_reply_of_local_delivery_is_logged_with_the_queue_id(ct):
    # A command alias that takes a while; the queue manager dies while it
    # runs, so local delivery cannot reply. Its warning carries the
    # message's POSTERN_QUEUE_ID, and the restarted queue manager delivers
    # the message again.
    ct.run(['sh', '-c', 'printf "slowpoke: |/bin/sleep 2\\n" >> /etc/aliases'])
    ct.run(['/usr/local/sbin/newaliases'])
    ct.systemctl('reload', 'postern.target')
    ct.systemctl('start', 'postern-qmgr.service')
    cursor = journal_cursor(ct)
    out = wait_for(lambda: (lambda o: o if 'queued as' in o else None)(smtp_script(
        ct, 25, ['EHLO client.example', 'MAIL FROM:<>', 'RCPT TO:<slowpoke@mx.example.test>',
                 'DATA', 'DATA_BODY Subject: slow\\n\\nbody\\n.', 'QUIT'])),
        what='the new alias accepted by smtpd')
    qid = queue_id_of(out)
    wait_for(lambda: re.search(r'\b1 delivery call in progress',
                               show(ct, 'postern-deliver-local.service', 'StatusText')),
             what='the command delivery in progress')
    pid = show(ct, 'postern-qmgr.service', 'MainPID')
    ct.run(['kill', '-KILL', pid])

    def warning():
        for e in journal_entries(ct, cursor):
            if 'cannot send the Deliver reply' in str(e.get('MESSAGE')):
                return e
        return None
    e = wait_for(warning, what="local delivery's warning")
    assert e.get('POSTERN_QUEUE_ID') == qid, e
    assert e['MESSAGE'].startswith(qid + ': '), e
    # The message was in flight: it is delivered again. The queue manager
    # that systemd restarted found its file in active/ still locked by the
    # agent's copy of the descriptor and does not look again by itself (a
    # gap of the queue manager's recovery, not of the units): start a new
    # one now that the delivery is over, as the timer would.
    wait_for(lambda: 'delivery call' not in show(ct, 'postern-deliver-local.service',
                                                 'StatusText') or
             ' 0 delivery calls' in show(ct, 'postern-deliver-local.service', 'StatusText'),
             what='the end of the lost delivery')
    ct.systemctl('restart', 'postern-qmgr.service')
    wait_for(lambda: re.search(re.escape(qid) + ': to=<slowpoke@mx.example.test>.*status=sent',
                               journal_after(ct, cursor)),
             timeout=60, what='the delivery by the new queue manager')


def security_score(ct, unit):
    out = ct.run(['systemd-analyze', 'security', '--no-pager', unit], check=False).stdout
    m = re.search(r'Overall exposure level for \S+: (\d+\.\d+)', out)
    assert m, out[-2000:]
    return float(m.group(1))


@pytest.mark.parametrize('unit', SERVICES_UNITS)
def test_sandbox_exposure(ct, unit):
    limit = 4.0 if unit == 'postern-deliver-local.service' else 2.0
    assert security_score(ct, unit) <= limit


def test_units_run_unprivileged_with_empty_capabilities(ct):
    for unit in SERVICES_UNITS:
        caps = show(ct, unit, 'CapabilityBoundingSet')
        if unit == 'postern-deliver-local.service':
            assert show(ct, unit, 'User') == 'root'
            assert set(caps.split()) == {'cap_chown', 'cap_setgid', 'cap_setuid'}, caps
        else:
            assert show(ct, unit, 'User') == 'postern', unit
            assert caps == '', (unit, caps)
        assert show(ct, unit, 'NoNewPrivileges') == 'yes', unit
        assert show(ct, unit, 'ProtectSystem') == 'strict', unit
