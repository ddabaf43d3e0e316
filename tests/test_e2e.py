"""End-to-end tests: the real daemons (postern-smtpd, -qmgr, -deliver-local,
-deliver-remote, -bounce, -pickup) run together, each under
systemd-socket-activate with one private configuration directory, queue and
runtime directory (e2e_helpers.py). Mail goes in as users send it (smtplib,
sendmail) and the tests look at what users see: Maildirs, bounce reports,
mailq output and the log lines of every daemon.

Needs root (useradd, delivery as other users, network namespaces) and
systemd-socket-activate."""
import json
import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from e2e_helpers import (PROGRAMS, QUEUE_ID_RE, SOCKET_ACTIVATE, Instance, maildir_messages,
                         make_user, read_message, remove_user, stop_process, wait_for)
from netns_helpers import (CLIENT_ADDR, PEER_ADDRS, Dnsmasq, Network, have_root_netns,
                           make_test_ca)

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason='needs root'),
    pytest.mark.skipif(not SOCKET_ACTIVATE, reason='systemd-socket-activate not installed'),
    pytest.mark.skipif(not all(os.access(p, os.X_OK) for p in PROGRAMS.values()),
                       reason='daemons not built'),
]


@pytest.fixture
def make():
    made = []

    def instance(main_cf='', **kw):
        i = Instance(main_cf, **kw)
        made.append(i)
        return i

    yield instance
    errors = []
    for i in reversed(made):
        try:
            i.cleanup()
        except AssertionError as e:
            errors.append(e)
    if errors:
        raise errors[0]


def virtual_instance(make, extra=''):
    inst = make(extra)
    mailboxes = inst.table('vmailbox', 'info@example.com    example.com/info/\n'
                                       'sales@example.com   example.com/sales/\n')
    aliases = inst.table('virtual', 'postmaster@example.com  info@example.com\n'
                                    '@example.net            sales@example.com\n')
    with open(os.path.join(inst.confdir, 'main.cf'), 'a') as f:
        f.write('virtual_mailbox_domains = example.com\n'
                'virtual_mailbox_maps = %s\n'
                'virtual_alias_domains = example.net\n'
                'virtual_alias_maps = %s\n'
                'virtual_uid_maps = static:5000\n'
                'virtual_gid_maps = static:5000\n' % (mailboxes, aliases))
    return inst


def test_virtual_domains(make):
    """The tutorial's virtual mailbox domain: mailboxes from a hash: table
    built with postmap, an alias and a catch-all domain, uid/gid 5000."""
    inst = virtual_instance(make).start()
    qid = inst.send('someone@example.com', ['postmaster@example.com', 'anyone@example.net'])
    qid2 = inst.send('someone@example.com', ['sales@example.com'], subject='direct')
    info = os.path.join(inst.vmail, 'example.com', 'info')
    sales = os.path.join(inst.vmail, 'example.com', 'sales')
    wait_for(lambda: len(maildir_messages(info)) == 1 and len(maildir_messages(sales)) == 2,
             what='three deliveries')
    inst.wait_log('qmgr', r'%s: removed' % qid)
    inst.wait_log('qmgr', r'%s: removed' % qid2)
    for path in maildir_messages(info) + maildir_messages(sales):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (5000, 5000)
    msg = read_message(maildir_messages(info)[0])
    assert msg['Delivered-To'] == 'info@example.com'
    assert msg['X-Original-To'] == 'postmaster@example.com'
    by_subject = {read_message(p)['Subject']: read_message(p) for p in maildir_messages(sales)}
    assert by_subject['test']['X-Original-To'] == 'anyone@example.net'
    assert by_subject['direct']['X-Original-To'] == 'sales@example.com'
    log = inst.log_text('qmgr')
    assert re.search(r'%s: to=<sales@example.com>, orig_to=<anyone@example.net>, '
                     r'relay=virtual, delay=[0-9.]+, delays=[0-9./]+, dsn=2.0.0, '
                     r'status=sent \(delivered to maildir\)' % qid, log), log
    # Exactly one daemon logs the delivery.
    assert 'status=sent' not in inst.log_text('deliver-local')
    wait_for(inst.queue_empty, what='an empty queue')


@pytest.fixture
def local_user():
    """A throw-away system user with a home under a temporary directory."""
    root = tempfile.mkdtemp(prefix='postern-e2e-home.', dir='/tmp')
    os.chmod(root, 0o755)
    name = 'pe2e%04d' % random.randrange(10000)
    made = []
    try:
        home = make_user(name, root)
        made.append(name)
        yield pwd.getpwnam(name)
    finally:
        for n in made:
            remove_user(n)
        shutil.rmtree(root, ignore_errors=True)


def test_home_maildir(make, local_user):
    """home_mailbox = Maildir/: delivery into the user's home, as the user."""
    inst = make('home_mailbox = Maildir/').start()
    rcpt = '%s@mx.example.com' % local_user.pw_name
    qid = inst.send('someone@example.org', [rcpt])
    maildir = os.path.join(local_user.pw_dir, 'Maildir')
    files = wait_for(lambda: maildir_messages(maildir), what='delivery to ' + maildir)
    inst.wait_log('qmgr', r'%s: removed' % qid)
    st = os.stat(files[0])
    assert (st.st_uid, st.st_gid) == (local_user.pw_uid, local_user.pw_gid)
    msg = read_message(files[0])
    assert msg['Delivered-To'] == rcpt
    assert msg['Return-Path'] == '<someone@example.org>'
    assert re.search(r'%s: to=<%s>, relay=local, .*status=sent \(delivered to maildir\)'
                     % (qid, re.escape(rcpt)), inst.log_text('qmgr'))


def report_parts(msg):
    """The parts of a multipart/report: (text, delivery-status fields per
    recipient, the returned message)."""
    assert msg.get_content_type() == 'multipart/report', msg
    assert msg.get_param('report-type') == 'delivery-status'
    parts = list(msg.iter_parts())
    status = parts[1]
    assert status.get_content_type() == 'message/delivery-status'
    groups = status.get_payload()
    return parts[0].get_content(), groups, parts[2] if len(parts) > 2 else None


def test_unknown_users_bounce_to_the_sender(make, local_user):
    """Unknown local and virtual users, accepted by smtpd, bounce: the
    report lands in the sender's Maildir and the original stays no longer
    in the queue."""
    inst = virtual_instance(make, 'home_mailbox = Maildir/').start()
    sender = '%s@mx.example.com' % local_user.pw_name
    qid = inst.send(sender, ['nosuchuser@mx.example.com', 'nobody@example.com'])
    maildir = os.path.join(local_user.pw_dir, 'Maildir')
    files = wait_for(lambda: maildir_messages(maildir), what='the bounce report')
    inst.wait_log('qmgr', r'%s: removed' % qid)
    msg = read_message(files[0])
    assert 'MAILER-DAEMON@mx.example.com' in msg['From']
    assert msg['Return-Path'] == '<>'
    text, groups, returned = report_parts(msg)
    per_rcpt = {g['Final-Recipient']: g for g in groups[1:]}
    assert set(per_rcpt) == {'rfc822; nosuchuser@mx.example.com', 'rfc822; nobody@example.com'}, \
        per_rcpt
    for g in per_rcpt.values():
        assert g['Action'] == 'failed'
        assert g['Status'] == '5.1.1'
    assert 'nosuchuser@mx.example.com' in text
    log = inst.log_text('qmgr')
    assert re.search(r'%s: to=<nosuchuser@mx.example.com>, relay=local, .*dsn=5.1.1, '
                     r'status=bounced' % qid, log), log
    # The report is a message of its own, delivered like any other.
    rid = inst.wait_log('bounce', r'%s: sender non-delivery notification: (%s)'
                        % (qid, QUEUE_ID_RE)).group(1)
    inst.wait_log('qmgr', r'%s: to=<%s>, relay=local, .*status=sent' % (rid, re.escape(sender)))
    wait_for(inst.queue_empty, what='an empty queue')


def test_sendmail_pickup(make, local_user):
    """sendmail -> postdrop -> maildrop/ -> postern-pickup -> qmgr ->
    deliver-local."""
    inst = make('home_mailbox = Maildir/').start(smtpd=False)
    rcpt = '%s@mx.example.com' % local_user.pw_name
    r = inst.tool('sendmail', '-f', 'root@mx.example.com', rcpt,
                  input='Subject: via sendmail\n\nHello from sendmail.\n')
    assert r.returncode == 0, r.stderr
    assert inst.queue_ids('maildrop'), 'nothing in maildrop/'
    r = inst.run_pickup()
    assert r.returncode == 0, r.stdout + r.stderr
    assert not inst.queue_ids('maildrop')
    maildir = os.path.join(local_user.pw_dir, 'Maildir')
    files = wait_for(lambda: maildir_messages(maildir), what='delivery to ' + maildir)
    msg = read_message(files[0])
    assert msg['Subject'] == 'via sendmail'
    assert msg['Message-ID'] and msg['Date']
    assert 'Hello from sendmail.' in msg.get_content()
    # The Maildir file appears before qmgr hears back and logs the delivery.
    inst.wait_log('qmgr', r'to=<%s>, relay=local, .*status=sent' % re.escape(rcpt))


# --- relaying between two instances ----------------------------------------

PEER_ADDR = PEER_ADDRS[0]


@pytest.fixture
def net():
    if not have_root_netns() or not shutil.which('dnsmasq'):
        pytest.skip('needs root, ip and dnsmasq')
    n = Network()
    tmp = tempfile.mkdtemp(prefix='postern-e2e-dns.', dir='/tmp')
    try:
        Dnsmasq(n, tmp, ['example.net'], ['--mx-host=example.net,mx.example.net,10',
                                          '--host-record=mx.example.net,' + PEER_ADDR])
        yield n
    finally:
        n.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def relay_pair(make, net, start_peer=True, a_cf='', b_cf='', start=True):
    """Instance a (client namespace) sends to example.net, whose MX is
    instance b (peer namespace) with a virtual mailbox for user@example.net."""
    a = make('myhostname = mx.example.com\n' + a_cf, name='a', net=net, ns=net.client,
             smtpd_addr=CLIENT_ADDR)
    b = make('myhostname = mx.example.net\nmydomain = example.net\n' + b_cf, name='b',
             net=net, ns=net.peer, smtpd_addr=PEER_ADDR)
    boxes = b.table('vmailbox', 'user@example.net  example.net/user/\n')
    with open(os.path.join(b.confdir, 'main.cf'), 'a') as f:
        f.write('virtual_mailbox_domains = example.net\nvirtual_mailbox_maps = %s\n'
                'virtual_uid_maps = static:5000\nvirtual_gid_maps = static:5000\n' % boxes)
    if start:
        a.start()
    if start and start_peer:
        b.start()
    return a, b


def test_relay_through_mx_to_second_instance(make, net):
    a, b = relay_pair(make, net)
    qid = a.send('someone@example.com', ['user@example.net'])
    box = os.path.join(b.vmail, 'example.net', 'user')
    files = wait_for(lambda: maildir_messages(box), what='delivery at the second instance')
    line = a.wait_log('qmgr', r'%s: to=<user@example.net>, relay=mx.example.net\[%s\]:25, '
                      r'delay=[0-9.]+, delays=[0-9./]+, dsn=2.0.0, status=sent \(250 [^)]*'
                      r'queued as (%s)\)' % (qid, re.escape(PEER_ADDR), QUEUE_ID_RE))
    bqid = line.group(1)
    a.wait_log('qmgr', r'%s: removed' % qid)
    b.wait_log('qmgr', r'%s: to=<user@example.net>, relay=virtual, .*status=sent' % bqid)
    msg = read_message(files[0])
    assert msg['Delivered-To'] == 'user@example.net'
    assert len(msg.get_all('Received')) >= 2
    assert 'status=' not in a.log_text('deliver-remote')
    # Plaintext: no tls= field.
    assert 'tls=' not in line.group(0)


def test_relay_with_tls_logs_tls_facts(make, net, tmp_path):
    """The delivery line names the TLS protocol, cipher and trust of the
    connection that carried the message, between dsn= and status= (where
    Postfix log parsers, which read status= last, do not trip over it)."""
    ca = make_test_ca(str(tmp_path), ['mx.example.net'])
    cert, key = ca['mx.example.net']
    a, b = relay_pair(make, net, start=False,
                      a_cf='smtp_tls_security_level = verify\nsmtp_tls_CAfile = %s\n' % ca['ca'],
                      b_cf='smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\n'
                           'smtpd_tls_key_file = %s\n' % (cert, key))
    # Both queue managers log to stand-in journals, every field readable.
    ja, jb = a.use_journal('qmgr'), b.use_journal('qmgr')
    a.start()
    b.start()
    qid = a.send('someone@example.com', ['user@example.net'])
    entry = ja.wait(lambda e: e.get('POSTERN_QUEUE_ID') == qid and
                    e.get('POSTERN_STATUS') == 'sent', 'the delivery entry at a')[0]
    line = re.fullmatch(r'%s: to=<user@example.net>, relay=mx.example.net\[%s\]:25, '
                        r'delay=[0-9.]+, delays=[0-9./]+, dsn=2.0.0, '
                        r'tls=(TLSv1\.[23])/([A-Z0-9_-]+)/Verified, status=sent \(250 [^)]*'
                        r'queued as (%s)\)' % (qid, re.escape(PEER_ADDR), QUEUE_ID_RE),
                        entry['MESSAGE'])
    assert line, entry
    assert entry['POSTERN_TLS'] == '%s/%s/Verified' % line.group(1, 2), entry
    box = os.path.join(b.vmail, 'example.net', 'user')
    wait_for(lambda: maildir_messages(box), what='delivery over TLS')
    # b's delivery to a virtual mailbox has no TLS: neither field nor text.
    entry = jb.wait(lambda e: e.get('POSTERN_QUEUE_ID') == line.group(3) and
                    e.get('POSTERN_STATUS') == 'sent', 'the delivery entry at b')[0]
    assert 'POSTERN_TLS' not in entry and 'tls=' not in entry['MESSAGE'], entry


def test_remote_4xx_defers_then_flush_delivers(make, net):
    a, b = relay_pair(make, net, start_peer=False)
    peer_tmp = tempfile.mkdtemp(prefix='postern-e2e-peer.', dir='/tmp')
    cfg = os.path.join(peer_tmp, 'peer.json')
    with open(cfg, 'w') as f:
        json.dump({'listen': [PEER_ADDR, 25], 'log': os.path.join(peer_tmp, 'peer.jsonl'),
                   'replies': {'RCPT': '451 4.3.0 Mailbox busy, come back later'}}, f)
    peer = net.popen(net.peer, [sys.executable, os.path.join(HERE, 'smtp_peer.py'), cfg],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: net.port_open(net.peer, PEER_ADDR, 25), what='the 4xx peer')
        qid = a.send('someone@example.com', ['user@example.net'])
        a.wait_log('qmgr', r'%s: to=<user@example.net>, relay=mx.example.net\[%s\]:25, .*'
                   r'dsn=4.3.0, status=deferred \(host mx.example.net\[%s\] said: 451 4.3.0 '
                   r'Mailbox busy' % (qid, re.escape(PEER_ADDR), re.escape(PEER_ADDR)))
        wait_for(lambda: qid in a.queue_ids('deferred'), what='the message in deferred/')
        r = a.tool('postqueue', '-p')
        assert r.returncode == 0, r.stderr
        assert qid in r.stdout and 'Mailbox busy, come back later' in r.stdout, r.stdout
        assert 'user@example.net' in r.stdout
    finally:
        stop_process(peer)
        shutil.rmtree(peer_tmp, ignore_errors=True)
    # The peer is fixed: the real second instance answers now.
    b.start()
    r = a.tool('postqueue', '-f')
    assert r.returncode == 0, r.stderr
    box = os.path.join(b.vmail, 'example.net', 'user')
    wait_for(lambda: maildir_messages(box), what='delivery after the flush')
    a.wait_log('qmgr', r'%s: removed' % qid)
    r = a.tool('postqueue', '-p')
    assert qid not in r.stdout


def test_notify_success_relayed_to_peer_without_dsn(make, net, local_user):
    """RFC 3461 5.2.2: the MX of example.net does not announce DSN, so
    NOTIFY=SUCCESS cannot go further; the sender gets a report with Action:
    relayed, and the log says status=sent as Postfix's does."""
    a = make('myhostname = mx.example.com\nhome_mailbox = Maildir/\n', name='a', net=net,
             ns=net.client, smtpd_addr=CLIENT_ADDR).start()
    peer_tmp = tempfile.mkdtemp(prefix='postern-e2e-peer.', dir='/tmp')
    cfg = os.path.join(peer_tmp, 'peer.json')
    with open(cfg, 'w') as f:
        json.dump({'listen': [PEER_ADDR, 25], 'log': os.path.join(peer_tmp, 'peer.jsonl'),
                   'extensions': ['PIPELINING', '8BITMIME']}, f)
    peer = net.popen(net.peer, [sys.executable, os.path.join(HERE, 'smtp_peer.py'), cfg],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: net.port_open(net.peer, PEER_ADDR, 25), what='the peer without DSN')
        sender = '%s@mx.example.com' % local_user.pw_name
        qid = a.send(sender, ['user@example.net'], rcpt_options=['NOTIFY=SUCCESS'],
                     mail_options=['ENVID=e2e-relayed-1'])
        maildir = os.path.join(local_user.pw_dir, 'Maildir')
        files = wait_for(lambda: maildir_messages(maildir), what='the relayed notice')
        a.wait_log('qmgr', r'%s: removed' % qid)
        with open(os.path.join(peer_tmp, 'peer.jsonl')) as f:
            cmds = [e['line'] for e in map(json.loads, f) if e['ev'] == 'cmd']
    finally:
        stop_process(peer)
        shutil.rmtree(peer_tmp, ignore_errors=True)
    assert 'RCPT TO:<user@example.net>' in cmds, cmds
    assert re.search(r'%s: to=<user@example.net>, relay=mx.example.net\[%s\]:25, .*'
                     r'dsn=2.0.0, status=sent \(250 ' % (qid, re.escape(PEER_ADDR)),
                     a.log_text('qmgr'))
    text, groups, _ = report_parts(read_message(files[0]))
    assert groups[0]['Original-Envelope-Id'] == 'e2e-relayed-1'
    assert groups[1]['Final-Recipient'] == 'rfc822; user@example.net'
    assert groups[1]['Action'] == 'relayed'
    assert groups[1]['Status'] == '2.0.0'


# --- notices, crashes, logs --------------------------------------------------


def test_notify_success_sends_a_success_dsn(make, local_user):
    inst = virtual_instance(make, 'home_mailbox = Maildir/').start()
    sender = '%s@mx.example.com' % local_user.pw_name
    qid = inst.send(sender, ['info@example.com'], rcpt_options=['NOTIFY=SUCCESS'],
                    mail_options=['RET=HDRS', 'ENVID=e2e-success-1'])
    wait_for(lambda: maildir_messages(os.path.join(inst.vmail, 'example.com', 'info')),
             what='the delivery')
    maildir = os.path.join(local_user.pw_dir, 'Maildir')
    files = wait_for(lambda: maildir_messages(maildir), what='the success notice')
    inst.wait_log('qmgr', r'%s: removed' % qid)
    msg = read_message(files[0])
    text, groups, returned = report_parts(msg)
    assert groups[0]['Original-Envelope-Id'] == 'e2e-success-1'
    assert groups[1]['Final-Recipient'] == 'rfc822; info@example.com'
    assert groups[1]['Action'] == 'delivered'
    assert groups[1]['Status'] == '2.0.0'
    # Nothing for a recipient without NOTIFY=SUCCESS.
    qid2 = inst.send(sender, ['sales@example.com'])
    inst.wait_log('qmgr', r'%s: removed' % qid2)
    assert len(maildir_messages(maildir)) == 1


def test_delivery_agent_killed_mid_batch(make):
    """kill -9 of postern-deliver-local while deliveries run: what it did
    not report is retried after it is back, nothing is lost."""
    inst = virtual_instance(make).start()
    n = 30
    qids = [inst.send('someone@example.com', ['info@example.com', 'sales@example.com'],
                      subject='batch %d' % k) for k in range(n)]
    inst.wait_log('qmgr', r'to=<(info|sales)@example.com>, relay=virtual, .*status=sent')
    inst.kill('deliver-local')
    # systemd would start it again at the next connection; so do we.
    inst.start_bus_daemon('deliver-local')
    info = os.path.join(inst.vmail, 'example.com', 'info')
    sales = os.path.join(inst.vmail, 'example.com', 'sales')

    def subjects(box):
        return {read_message(p)['Subject'] for p in maildir_messages(box)}
    want = {'batch %d' % k for k in range(n)}
    wait_for(lambda: subjects(info) == want and subjects(sales) == want, timeout=60,
             what='every message in both mailboxes')
    for qid in qids:
        inst.wait_log('qmgr', r'%s: removed' % qid, timeout=30)
    wait_for(inst.queue_empty, what='an empty queue')


def test_log_lines_of_one_message(make):
    """POSTERN_LOG_TARGET=stderr: one queue id in the client=, from=,
    to=... status=sent and removed lines, in that order, each line logged
    by exactly one daemon."""
    inst = virtual_instance(make).start()
    qid = inst.send('someone@example.com', ['info@example.com'])
    inst.wait_log('qmgr', r'%s: removed' % qid)
    smtpd = [l for l in inst.log_text('smtpd').splitlines() if qid in l]
    qmgr = [l for l in inst.log_text('qmgr').splitlines() if qid in l]
    assert re.search(r'%s: client=' % qid, smtpd[0]), smtpd
    # message-id= (when the message has one) comes between client= and from=.
    rest = [l for l in smtpd[1:] if ': message-id=' not in l]
    assert re.search(r'%s: from=<someone@example.com>, size=\d+, nrcpt=1' % qid, rest[0]), smtpd
    assert re.search(r'%s: to=<info@example.com>, relay=virtual, delay=[0-9.]+, '
                     r'delays=[0-9.]+/[0-9.]+/0/[0-9.]+, dsn=2.0.0, status=sent' % qid,
                     qmgr[0]), qmgr
    assert qmgr[-1].endswith('%s: removed' % qid), qmgr
    everything = inst.all_logs()
    assert everything.count('%s: to=<info@example.com>' % qid) == 1


def test_delay_warning(make, local_user):
    """delay_warning_time > 0: one delay warning per message, after that
    time, while the recipient stays queued."""
    inst = make('home_mailbox = Maildir/\ndelay_warning_time = 1s\n'
                'transport_maps = inline:{ slow.example.org = retry:4.4.1 try again later }\n'
                ).start()
    sender = '%s@mx.example.com' % local_user.pw_name
    qid = inst.send(sender, ['someone@slow.example.org'])
    maildir = os.path.join(local_user.pw_dir, 'Maildir')
    files = wait_for(lambda: maildir_messages(maildir), what='the delay warning')
    text, groups, returned = report_parts(read_message(files[0]))
    assert groups[1]['Final-Recipient'] == 'rfc822; someone@slow.example.org'
    assert groups[1]['Action'] == 'delayed'
    assert groups[1]['Status'].startswith('4.')
    # Still queued; the header flag keeps it from warning twice.
    inst.wait_log('qmgr', r'(?s)%s: to=<someone@slow.example.org>.*status=deferred.*'
                  r'%s: to=<someone@slow.example.org>.*status=deferred.*'
                  r'%s: to=<someone@slow.example.org>.*status=deferred' % (qid, qid, qid))
    assert len(maildir_messages(maildir)) == 1
    assert qid in inst.queue_ids('deferred') + inst.queue_ids('active')


def test_alias_expansion_error_bounce_survives_bounce_service_failure(make):
    """A recipient whose virtual alias expansion fails stays pending until
    the bounce service queued its report: with the service failing (its
    socket refuses connections) the recipient is deferred, and once the
    service works the sender gets the report."""
    inst = virtual_instance(make)
    with open(os.path.join(inst.confdir, 'main.cf'), 'a') as f:
        f.write('virtual_alias_maps = inline:{ loop1@example.com = loop2@example.com, '
                'loop2@example.com = loop1@example.com }\n'
                'virtual_alias_recursion_limit = 5\n')
    for name in ('qmgr', 'deliver-local', 'deliver-remote'):
        inst.start_bus_daemon(name)
    inst.start_smtpd()
    # A socket nobody listens on: connections are refused.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(inst.socket('bounce'))
    dead.close()
    qid = inst.send('sales@example.com', ['loop1@example.com', 'info@example.com'])
    inst.wait_log('qmgr', r'%s: to=<loop1@example.com>, relay=none, .*dsn=5.4.6, status=bounced'
                  % qid)
    inst.wait_log('qmgr', r'%s: to=<loop1@example.com>, relay=none, dsn=4.3.0, '
                  r'status=deferred \(bounce or trace service failure' % qid)
    info = os.path.join(inst.vmail, 'example.com', 'info')
    wait_for(lambda: maildir_messages(info), what='the delivery to info@')
    wait_for(lambda: qid in inst.queue_ids('deferred'), what='the message in deferred/')
    inst.start_bus_daemon('bounce')
    assert inst.tool('postqueue', '-f').returncode == 0
    sales = os.path.join(inst.vmail, 'example.com', 'sales')
    files = wait_for(lambda: maildir_messages(sales), what='the bounce report')
    inst.wait_log('qmgr', r'%s: removed' % qid)
    text, groups, _ = report_parts(read_message(files[0]))
    assert [g['Final-Recipient'] for g in groups[1:]] == ['rfc822; loop1@example.com']
    assert groups[1]['Action'] == 'failed' and groups[1]['Status'] == '5.4.6'
    assert 'recursion limit' in text
    # Delivered once, never again by the retries.
    assert len(maildir_messages(info)) == 1
    wait_for(inst.queue_empty, what='an empty queue')


class Peers:
    """Scripted SMTP peers (smtp_peer.py) in the peer namespace, one per
    address; stop() ends them by PID."""

    def __init__(self, net):
        self.net = net
        self.tmp = tempfile.mkdtemp(prefix='postern-e2e-peers.', dir='/tmp')
        self.procs = []

    def start(self, addr, **cfg):
        path = os.path.join(self.tmp, 'peer-%s.json' % addr)
        cfg.update(listen=[addr, 25], log=os.path.join(self.tmp, 'peer-%s.jsonl' % addr))
        with open(path, 'w') as f:
            json.dump(cfg, f)
        self.procs.append(self.net.popen(
            self.net.peer, [sys.executable, os.path.join(HERE, 'smtp_peer.py'), path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: self.net.port_open(self.net.peer, addr, 25), what='peer ' + addr)

    def stop(self):
        for p in self.procs:
            stop_process(p)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def peers(net):
    p = Peers(net)
    yield p
    p.stop()


def test_one_report_for_failures_at_two_servers(make, net, peers, local_user):
    """A remote 5xx, end to end: two recipients of one message rejected by
    two different servers give the sender one report, with each
    recipient's Remote-MTA and Diagnostic-Code (issue 8: one report per
    message for all its failed recipients)."""
    a, b = PEER_ADDRS[1], PEER_ADDRS[2]
    inst = make('myhostname = mx.example.com\nhome_mailbox = Maildir/\n'
                'transport_maps = inline:{ example.net = smtp:[%s], example.org = smtp:[%s] }\n'
                % (a, b), name='a', net=net, ns=net.client, smtpd_addr=CLIENT_ADDR).start()
    peers.start(a, replies={'RCPT': '550 5.1.1 <one@example.net>: no such user here'})
    peers.start(b, replies={'RCPT': '554 5.7.1 <two@example.org>: relaying denied'})
    sender = '%s@mx.example.com' % local_user.pw_name
    qid = inst.send(sender, ['one@example.net', 'two@example.org'],
                    mail_options=['ENVID=two-servers'])
    inst.wait_log('qmgr', r'%s: removed' % qid)
    maildir = os.path.join(local_user.pw_dir, 'Maildir')
    files = wait_for(lambda: maildir_messages(maildir), what='the report')
    log = inst.log_text('qmgr')
    for rcpt, addr, dsn in (('one@example.net', a, '5.1.1'), ('two@example.org', b, '5.7.1')):
        assert re.search(r'%s: to=<%s>, relay=%s\[%s\]:25, .*dsn=%s, status=bounced'
                         % (qid, rcpt, re.escape(addr), re.escape(addr), dsn), log), log
    # All reports are delivered by now: exactly one.
    rids = re.findall(r'%s: sender non-delivery notification: (%s)' % (qid, QUEUE_ID_RE),
                      inst.log_text('bounce'))
    assert len(rids) == 1, inst.log_text('bounce')
    inst.wait_log('qmgr', r'%s: removed' % rids[0])
    assert len(maildir_messages(maildir)) == 1
    msg = read_message(files[0])
    assert msg['Return-Path'] == '<>'
    assert msg['Subject'] == 'Undelivered Mail Returned to Sender'
    text, groups, returned = report_parts(msg)
    assert groups[0]['Reporting-MTA'] == 'dns; mx.example.com'
    assert groups[0]['Original-Envelope-Id'] == 'two-servers'
    assert groups[0]['Arrival-Date']
    per = {g['Final-Recipient']: g for g in groups[1:]}
    assert set(per) == {'rfc822; one@example.net', 'rfc822; two@example.org'}
    one, two = per['rfc822; one@example.net'], per['rfc822; two@example.org']
    assert one['Action'] == 'failed' and one['Status'] == '5.1.1'
    assert two['Action'] == 'failed' and two['Status'] == '5.7.1'
    assert one['Remote-MTA'] == 'dns; %s' % a and two['Remote-MTA'] == 'dns; %s' % b
    assert one['Diagnostic-Code'].startswith('smtp; 550 5.1.1 <one@example.net>: no such user')
    assert two['Diagnostic-Code'].startswith('smtp; 554 5.7.1 <two@example.org>: relaying')
    assert one['Last-Attempt-Date'] and two['Last-Attempt-Date']
    assert one['Will-Retry-Until'] is None
    assert 'host %s[%s] said: 550' % (a, a) in ' '.join(text.split())
    assert 'host %s[%s] said: 554' % (b, b) in ' '.join(text.split())
    assert returned is not None


def test_expiry_report_with_bounce_service(make, net, peers, local_user):
    """A peer that always answers 4xx: after maximal_queue_lifetime the
    sender gets a failure report as Postfix writes it for expired mail
    (Action: failed with the last 4.x.x status, no Will-Retry-Until)."""
    addr = PEER_ADDRS[3]
    inst = make('myhostname = mx.example.com\nhome_mailbox = Maildir/\n'
                'maximal_queue_lifetime = 3s\nbounce_queue_lifetime = 3s\n'
                'minimal_backoff_time = 1s\nmaximal_backoff_time = 1s\n'
                'transport_maps = inline:{ example.net = smtp:[%s] }\n' % addr,
                name='a', net=net, ns=net.client, smtpd_addr=CLIENT_ADDR).start()
    peers.start(addr, replies={'RCPT': '451 4.2.1 <late@example.net>: mailbox busy, '
                                       'try again later'})
    sender = '%s@mx.example.com' % local_user.pw_name
    qid = inst.send(sender, ['late@example.net'])
    maildir = os.path.join(local_user.pw_dir, 'Maildir')
    files = wait_for(lambda: maildir_messages(maildir), timeout=30, what='the expiry report')
    inst.wait_log('qmgr', r'%s: removed' % qid)
    log = inst.log_text('qmgr')
    assert re.search(r'%s: to=<late@example.net>, relay=%s\[%s\]:25, .*dsn=4.2.1, '
                     r'status=deferred' % (qid, re.escape(addr), re.escape(addr)), log), log
    assert re.search(r'%s: to=<late@example.net>, relay=none, .*dsn=4.2.1, status=bounced '
                     r'\(message expired after \d+ seconds in the queue: host %s\[%s\] said: '
                     r'451 4.2.1' % (qid, re.escape(addr), re.escape(addr)), log), log
    msg = read_message(files[0])
    assert msg['Return-Path'] == '<>'
    assert msg['Subject'] == 'Undelivered Mail Returned to Sender'
    text, groups, returned = report_parts(msg)
    assert groups[0]['Reporting-MTA'] == 'dns; mx.example.com'
    assert groups[0]['Arrival-Date']
    assert len(groups) == 2
    g = groups[1]
    assert g['Final-Recipient'] == 'rfc822; late@example.net'
    assert g['Action'] == 'failed'
    assert g['Status'] == '4.2.1'
    assert 'message expired after' in g['Diagnostic-Code']
    assert '451 4.2.1' in g['Diagnostic-Code']
    assert g['Last-Attempt-Date']
    assert g['Will-Retry-Until'] is None
    assert 'late@example.net' in text and 'message expired' in ' '.join(text.split())
    assert returned is not None
    rid = inst.wait_log('bounce', r'%s: sender non-delivery notification: (%s)'
                        % (qid, QUEUE_ID_RE)).group(1)
    inst.wait_log('qmgr', r'%s: removed' % rid)
    wait_for(inst.queue_empty, what='an empty queue')


def test_bounce_of_a_bounce(make, local_user):
    """A report that cannot be delivered either: with 2bounce in
    notify_classes it goes to 2bounce_notice_recipient as a double
    bounce; without, it is dropped with a log line, as in Postfix; never a
    bounce for a bounce."""
    routes = ('transport_maps = inline:{ fail.example = error:5.1.1 mailbox unavailable, '
              'gone.example = error:5.1.2 domain gone }\n')
    inst = make('home_mailbox = Maildir/\nnotify_classes = 2bounce, resource, software\n'
                '2bounce_notice_recipient = %s@mx.example.com\n' % local_user.pw_name +
                routes).start()
    qid = inst.send('someone@gone.example', ['user@fail.example'])
    maildir = os.path.join(local_user.pw_dir, 'Maildir')
    files = wait_for(lambda: maildir_messages(maildir), what='the double bounce')
    rid = inst.wait_log('bounce', r'%s: sender non-delivery notification: (%s)'
                        % (qid, QUEUE_ID_RE)).group(1)
    inst.wait_log('qmgr', r'%s: to=<someone@gone.example>, relay=none, .*dsn=5.1.2, '
                  r'status=bounced \(domain gone\)' % rid)
    did = inst.wait_log('bounce', r'%s: postmaster non-delivery notification: (%s)'
                        % (rid, QUEUE_ID_RE)).group(1)
    inst.wait_log('qmgr', r'%s: removed' % did)
    for i in (qid, rid):
        inst.wait_log('qmgr', r'%s: removed' % i)
    msg = read_message(files[0])
    assert msg['To'] == '%s@mx.example.com' % local_user.pw_name, msg['To']
    assert msg['Return-Path'] == '<double-bounce@example.com>'
    assert msg['Subject'] == 'Postmaster Copy: Undelivered Mail'
    text, groups, returned = report_parts(msg)
    assert groups[1]['Final-Recipient'] == 'rfc822; someone@gone.example'
    assert groups[1]['Action'] == 'failed' and groups[1]['Status'] == '5.1.2'
    # The failed report itself comes back whole.
    assert returned.get_content_type() == 'message/rfc822'
    inner = returned.get_payload()[0]
    assert inner['Subject'] == 'Undelivered Mail Returned to Sender'
    assert inner.get_content_type() == 'multipart/report'
    assert len(maildir_messages(maildir)) == 1
    wait_for(inst.queue_empty, what='an empty queue')

    # Default notify_classes: the failed report is dropped and logged.
    inst2 = make('home_mailbox = Maildir/\n2bounce_notice_recipient = %s@mx.example.com\n'
                 % local_user.pw_name + routes, name='b').start()
    qid = inst2.send('someone@gone.example', ['user@fail.example'])
    rid = inst2.wait_log('bounce', r'%s: sender non-delivery notification: (%s)'
                         % (qid, QUEUE_ID_RE)).group(1)
    inst2.wait_log('bounce', r'%s: undeliverable bounce discarded' % rid)
    inst2.wait_log('qmgr', r'%s: removed' % rid)
    assert 'postmaster non-delivery notification' not in inst2.log_text('bounce')
    assert len(maildir_messages(maildir)) == 1
    wait_for(inst2.queue_empty, what='an empty queue')
