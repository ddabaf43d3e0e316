"""Queue manager, pickup, sendmail and the queue tools, driving the built
programs: postern-qmgr under systemd-socket-activate with a private
configuration, queue and runtime directory, the test delivery agent as the
org.postern.Delivery1 service, postern-smtpd and sendmail/postdrop/pickup
as the sources of mail, and postqueue, postsuper, postcat as a user runs
them."""
import json
import os
import pty
import re
import signal
import smtplib
import subprocess
import time

import pytest

from queue_helpers import PICKUP, QueueInstance, TOOLS, wait_for

TOOLS_POSTDROP = TOOLS["postdrop"]
from smtpd_helpers import Smtpd


@pytest.fixture
def make_queue():
    made = []

    def make(main_cf='', **kw):
        q = QueueInstance(main_cf, **kw)
        made.append(q)
        return q
    yield make
    for q in made:
        q.cleanup()


def sent_lines(q, qid=None):
    return [l for l in q.log_lines('status=sent') if qid is None or qid in l]


# --- the path of a message ---------------------------------------------------


def test_smtpd_mail_reaches_delivery_agents(make_queue):
    smtpd = Smtpd(main_cf='local_recipient_maps =\nminimal_backoff_time = 1s\n'
                          'maximal_backoff_time = 2s\nqueue_run_delay = 1s\n')
    try:
        # One private instance: smtpd's configuration and queue; its
        # POSTERN_QMGR_SOCKET is <tmp>/qmgr, our runtime directory.
        q = make_queue(confdir=smtpd.confdir, tmp=smtpd.tmp)
        q.runtime = smtpd.tmp
        q.queue = smtpd.queue
        q.start_agent().start_qmgr()
        smtpd.start()
        with smtplib.SMTP('127.0.0.1', smtpd.port) as c:
            c.sendmail('alice@example.org', ['bob@example.test', 'carol@relay.example.test'],
                       'Subject: hello\r\n\r\nhi\r\n')
        q.wait_log('removed')
        recs = q.deliveries()
        by_rcpt = {r['rcpt']: r for r in recs}
        assert by_rcpt['bob@example.test']['transport'] == 'local'
        assert by_rcpt['bob@example.test']['nexthop'] == 'mx.example.test'
        assert by_rcpt['carol@relay.example.test']['transport'] == 'relay'
        assert by_rcpt['carol@relay.example.test']['nexthop'] == 'relay.example.test'
        qid = recs[0]['id']
        line = sent_lines(q, qid)[0]
        assert re.search(r'%s: to=<[^>]+>, relay=test-agent\[127.0.0.1\]:25, delay=[0-9.]+, '
                         r'delays=[0-9.]+/[0-9.]+/0/[0-9.]+, dsn=2.0.0, status=sent \(250 2.0.0 Ok\)'
                         % qid, line), line
        assert q.queue_empty()
    finally:
        smtpd.cleanup()



def test_delays_show_the_agents_connection_setup(make_queue):
    """delays=a/b/c/d: c is the connection set-up time the agent reports,
    d the rest of the delivery."""
    q = make_queue()
    q.set_rules('slow *@remote.test 800\n')
    qid = q.inject('alice@example.org', ['bob@remote.test'])
    q.start_agent('--setup-usec', '300000').start_qmgr()
    q.wait_log('%s: removed' % qid)
    line = sent_lines(q, qid)[0]
    m = re.search(r'delays=([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+),', line)
    assert m, line
    assert m.group(3) == '0.3', line
    assert 0.4 <= float(m.group(4)) < 5, line


def test_resolution_and_transport_maps(make_queue):
    q = make_queue('transport_maps = inline:{ special.test=smtp:[127.0.0.1]:2525, '
                   '.parent.test=smtp:[127.0.0.2], '
                   'user@override.test=lmtp:unix:private/dovecot-lmtp, '
                   'gone.test=error:5.1.2 no such domain here, '
                   'void.test=discard:silently dropped, '
                   'example.org=relay: }\n'
                   'relayhost = [smarthost.test]:587\n'
                   'virtual_mailbox_domains = vmail.test\n')
    q.start_agent()
    rcpts = ['a@special.test', 'b@sub.special.test', 'c@sub.parent.test', 'user@override.test', 'x@gone.test',
             'y@void.test', 'z@elsewhere.test', 'v@vmail.test', 'root', 'w@example.org']
    qid = q.inject('alice@example.org', rcpts)
    q.start_qmgr()
    q.wait_log('%s: removed' % qid)
    got = {r['rcpt']: (r['transport'], r['nexthop']) for r in q.deliveries()}
    assert got['a@special.test'] == ('smtp', '[127.0.0.1]:2525')
    # As in Postfix 3, parent_domain_matches_subdomains does not list
    # transport_maps by default: "domain" is only the domain, ".domain" its
    # subdomains.
    assert got['b@sub.special.test'] == ('smtp', '[smarthost.test]:587')
    assert got['c@sub.parent.test'] == ('smtp', '[127.0.0.2]')
    assert got['user@override.test'] == ('lmtp', 'unix:private/dovecot-lmtp')
    assert got['z@elsewhere.test'] == ('smtp', '[smarthost.test]:587')
    assert got['v@vmail.test'] == ('virtual', 'vmail.test')
    assert got['root'] == ('local', 'mx.example.test')
    assert got['w@example.org'] == ('relay', 'example.org')
    assert 'x@gone.test' not in got and 'y@void.test' not in got
    assert q.log_lines('to=<x@gone.test>, relay=none')[0].endswith(
        'dsn=5.1.2, status=bounced (no such domain here)')
    assert 'status=sent (silently dropped)' in q.log_lines('to=<y@void.test>')[0]


def test_transport_maps_parent_matching(make_queue):
    q = make_queue('transport_maps = inline:{ special.test=smtp:[127.0.0.1]:2525 }\n'
                   'parent_domain_matches_subdomains = relay_domains, transport_maps\n')
    q.start_agent()
    qid = q.inject('alice@example.org', ['b@sub.special.test'])
    q.start_qmgr()
    q.wait_log('%s: removed' % qid)
    assert q.deliveries()[0]['nexthop'] == '[127.0.0.1]:2525'


def test_virtual_alias_expansion(make_queue):
    q = make_queue('virtual_alias_maps = inline:{ {list@example.test = a@remote.test, team}, '
                   'team = b@remote.test c@remote.test, @catch.test = catcher@remote.test, '
                   'loop1@example.test = loop2@example.test, '
                   'loop2@example.test = loop1@example.test }\n'
                   'virtual_alias_recursion_limit = 5\n')
    q.start_agent()
    qid = q.inject('alice@example.org', ['list@example.test', 'anyone@catch.test',
                                         'loop1@example.test'])
    q.start_qmgr()
    q.wait_log('%s: removed' % qid)
    got = sorted((r['rcpt'], r['orig']) for r in q.deliveries())
    assert got == [('a@remote.test', 'list@example.test'), ('b@remote.test', 'list@example.test'),
                   ('c@remote.test', 'list@example.test'),
                   ('catcher@remote.test', 'anyone@catch.test')]
    assert 'orig_to=<list@example.test>' in q.log_lines('to=<b@remote.test>')[0]
    assert 'dsn=5.4.6, status=bounced' in q.log_lines('to=<loop1@example.test>')[0]


def test_corrupt_queue_file_goes_to_corrupt(make_queue):
    q = make_queue()
    q.start_agent()
    with open(os.path.join(q.queue, 'incoming', '1xAAAAAAAAAAAAAA'), 'wb') as f:
        f.write(b'garbage\n')
    good = q.inject('alice@example.org', ['bob@remote.test'])
    q.start_qmgr()
    q.wait_log('%s: removed' % good)
    q.wait_log('corrupt queue file')
    assert q.files('corrupt') == ['1xAAAAAAAAAAAAAA']


# --- deferred mail ---------------------------------------------------------


def attempts(q, rcpt):
    return [r for r in q.deliveries() if r['rcpt'] == rcpt]


def test_deferred_mail_retried_with_backoff(make_queue):
    q = make_queue()
    q.set_rules('*@later.test deferred 4.4.1 connection refused\n')
    q.start_agent()
    qid = q.inject('alice@example.org', ['bob@later.test', 'ok@remote.test'])
    t0 = time.monotonic()
    q.start_qmgr()
    q.wait_log('status=deferred (connection refused)')
    wait_for(lambda: q.files('deferred') == [qid], what='deferred file')
    path = q.path_of(qid)
    assert re.search(r'/deferred/[0-9A-F]/[0-9A-F]/%s$' % qid, path), path
    # The delivered recipient is recorded in the file and not tried again.
    env = q.read(qid)[2]
    assert ('D', 'ok@remote.test') in [(r[0], r[3]) for r in env['rcpt']]
    # Retried on schedule (minimal_backoff_time = 1s), twice.
    q.wait_deliveries(lambda d: len([r for r in d if r['rcpt'] == 'bob@later.test']) >= 3,
                      timeout=20)
    assert time.monotonic() - t0 >= 2
    q.set_rules('')
    q.wait_log('%s: removed' % qid, timeout=20)
    assert len(attempts(q, 'ok@remote.test')) == 1
    assert attempts(q, 'bob@later.test')[-1]['status'] == 'sent'


def test_flush_and_flush_site_and_id(make_queue):
    q = make_queue('minimal_backoff_time = 1h\nmaximal_backoff_time = 2h\n'
                   'queue_run_delay = 1h\n')
    q.set_rules('*@slow.test deferred 4.4.1 try later\n*@other.test deferred 4.4.1 later too\n')
    q.start_agent()
    a = q.inject('alice@example.org', ['x@slow.test'])
    b = q.inject('alice@example.org', ['y@other.test'])
    q.start_qmgr()
    q.wait_log('status=deferred', count=2)
    wait_for(lambda: len(q.files('deferred')) == 2, what='both deferred')
    n = len(q.deliveries())
    # postqueue -s: only the site's mail.
    r = q.tool('postqueue', '-s', 'slow.test')
    assert r.returncode == 0, r.stderr
    q.wait_deliveries(lambda d: len(d) == n + 1)
    wait_for(lambda: len(q.files('deferred')) == 2, what='deferred again')
    assert q.deliveries()[-1]['rcpt'] == 'x@slow.test'
    # postqueue -i: one message.
    r = q.tool('postqueue', '-i', b)
    assert r.returncode == 0, r.stderr
    q.wait_deliveries(lambda d: len(d) == n + 2)
    assert q.deliveries()[-1]['rcpt'] == 'y@other.test'
    wait_for(lambda: len(q.files('deferred')) == 2, what='deferred again')
    # postqueue -f: everything, even though the destinations are "dead".
    q.set_rules('')
    r = q.tool('postqueue', '-f')
    assert r.returncode == 0, r.stderr
    q.wait_log('%s: removed' % a)
    q.wait_log('%s: removed' % b)
    assert q.queue_empty()
    r = q.tool('postqueue', '-i', 'ZZZZZZZZZZZZZZZZ')
    assert r.returncode != 0 and 'no such message' in r.stderr


def test_expired_mail_bounces(make_queue):
    q = make_queue('maximal_queue_lifetime = 3s\nbounce_queue_lifetime = 3s\n')
    q.set_rules('*@never.test deferred 4.4.1 host not responding\n')
    q.start_agent()
    qid = q.inject('alice@example.org', ['x@never.test'])
    q.start_qmgr()
    q.wait_log('%s: to=<x@never.test>' % qid)
    line = q.wait_log('status=bounced', timeout=20) and q.log_lines('status=bounced')[0]
    assert re.search(r'%s: to=<x@never.test>, relay=none, .*dsn=4.4.1, status=bounced '
                     r'\(message expired after \d+ seconds in the queue: host not responding\)'
                     % qid, line), line
    q.wait_log('%s: removed' % qid)
    assert q.queue_empty()
    assert q.log_lines('non-delivery notification not sent: no bounce service')


# --- queue tools -------------------------------------------------------------


def parse_mailq(text):
    """Parses Postfix mailq output into a list of dicts."""
    lines = text.splitlines()
    if lines == ['Mail queue is empty']:
        return []
    assert lines[0] == '-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------'
    assert re.match(r'^-- \d+ Kbytes in \d+ Requests?\.$', lines[-1]), lines[-1]
    msgs, cur = [], None
    for l in lines[1:-1]:
        if not l:
            cur = None
            continue
        m = re.match(r'^([0-9A-Za-z]{16})([*! ]) +(\d+) (\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d)  (\S+)$', l)
        if m:
            cur = dict(id=m.group(1), mark=m.group(2), size=int(m.group(3)),
                       sender=m.group(5), rcpts=[], reasons=[])
            msgs.append(cur)
        elif l.startswith(' ' * 41) and not l.strip().startswith('('):
            cur['rcpts'].append(l.strip())
        else:
            cur['reasons'].append(l.strip())
    assert int(re.search(r'in (\d+) Request', lines[-1]).group(1)) == len(msgs)
    return msgs


def test_mailq_and_json_listing(make_queue):
    q = make_queue('minimal_backoff_time = 1h\nmaximal_backoff_time = 2h\nqueue_run_delay = 1h\n')
    r = q.tool('postqueue', '-p')
    assert r.stdout == 'Mail queue is empty\n', r.stderr
    q.set_rules('*@slow.test deferred 4.4.1 connect to slow.test: Connection refused\n')
    q.start_agent()
    a = q.inject('alice@example.org', ['x@slow.test', 'y@slow.test', 'done@remote.test'])
    b = q.inject('', ['z@example.org'], sub='hold')
    q.start_qmgr()
    wait_for(lambda: q.files('deferred') == [a], what='deferred')
    msgs = {m['id']: m for m in parse_mailq(q.tool('postqueue', '-p').stdout)}
    assert msgs[a]['mark'] == ' ' and msgs[a]['sender'] == 'alice@example.org'
    assert msgs[a]['rcpts'] == ['x@slow.test', 'y@slow.test']
    assert msgs[a]['reasons'] == ['(connect to slow.test: Connection refused)']
    assert msgs[b]['mark'] == '!' and msgs[b]['sender'] == 'MAILER-DAEMON'
    js = [json.loads(l) for l in q.tool('postqueue', '-j').stdout.splitlines()]
    ja = [j for j in js if j['queue_id'] == a][0]
    assert ja['queue_name'] == 'deferred' and ja['sender'] == 'alice@example.org'
    assert ja['forced_expire'] is False and ja['message_size'] == msgs[a]['size']
    assert ja['recipients'] == [
        {'address': 'x@slow.test', 'delay_reason': 'connect to slow.test: Connection refused'},
        {'address': 'y@slow.test', 'delay_reason': 'connect to slow.test: Connection refused'}]
    jb = [j for j in js if j['queue_id'] == b][0]
    assert jb['queue_name'] == 'hold' and jb['recipients'] == [{'address': 'z@example.org'}]
    # mailq is the same listing (sendmail -bp).
    r = q.tool('sendmail', '-bp')
    assert parse_mailq(r.stdout) == parse_mailq(q.tool('postqueue', '-p').stdout)


def as_nobody(q, *args):
    """Runs a queue tool as an unprivileged user (nobody, no groups)."""
    return subprocess.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
                           TOOLS[args[0]]] + list(args[1:]), capture_output=True, text=True,
                          env=q.env(), timeout=120)


def test_mailq_for_unprivileged_users(make_queue):
    """The queue directories are 0700 (tmpfiles.d): a user who cannot read
    them gets the listing from the queue manager (Queue1.List), as from
    Postfix's showq, and never "Mail queue is empty" for a full queue."""
    q = make_queue('minimal_backoff_time = 1h\nmaximal_backoff_time = 2h\nqueue_run_delay = 1h\n')
    for d in (q.tmp, q.confdir, q.runtime, q.queue):
        os.chmod(d, 0o755)
    for d in os.listdir(q.queue):
        os.chmod(os.path.join(q.queue, d), 0o700)
    # No queue manager to ask: a clear error, not an empty queue.
    r = as_nobody(q, 'postqueue', '-p')
    assert r.returncode == 1 and r.stdout == '', r
    assert 'postqueue: fatal: the queue manager cannot list the queue' in r.stderr, r.stderr
    q.set_rules('*@slow.test deferred 4.4.1 connect to slow.test: Connection refused\n')
    q.start_agent()
    a = q.inject('alice@example.org', ['x@slow.test', 'y@slow.test'])
    b = q.inject('', ['z@example.org'], sub='hold')
    q.start_qmgr()
    os.chmod(os.path.join(q.runtime, 'qmgr'), 0o666)     # SocketMode=0666
    wait_for(lambda: q.files('deferred') == [a], what='deferred')
    r = as_nobody(q, 'postqueue', '-p')
    assert r.returncode == 0, r.stderr
    assert parse_mailq(r.stdout) == parse_mailq(q.tool('postqueue', '-p').stdout)
    msgs = {m['id']: m for m in parse_mailq(r.stdout)}
    assert sorted(msgs) == sorted([a, b])
    assert msgs[a]['rcpts'] == ['x@slow.test', 'y@slow.test']
    assert msgs[a]['reasons'] == ['(connect to slow.test: Connection refused)']
    assert msgs[b]['mark'] == '!'
    r = as_nobody(q, 'postqueue', '-j')
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(l)['queue_id'] for l in r.stdout.splitlines()) == sorted([a, b])
    r = as_nobody(q, 'sendmail', '-bp')
    assert parse_mailq(r.stdout) == parse_mailq(q.tool('postqueue', '-p').stdout), r.stderr
    # postqueue -f is for every user too (authorized_flush_users).
    r = as_nobody(q, 'postqueue', '-f')
    assert r.returncode == 0, r.stderr
    # posternctl reads the queue itself: an error, not an empty listing.
    r = as_nobody(q, 'posternctl', 'queue', 'list')
    assert r.returncode == 1 and 'message' not in r.stdout, r
    assert 'cannot read the' in r.stderr and 'Permission denied' in r.stderr, r.stderr
    # An empty queue is still reported as such.
    assert q.tool('postsuper', '-d', 'ALL').returncode == 0
    r = as_nobody(q, 'postqueue', '-p')
    assert r.stdout == 'Mail queue is empty\n', r.stderr


def test_postsuper_hold_release_delete_requeue(make_queue):
    q = make_queue('minimal_backoff_time = 1h\nmaximal_backoff_time = 2h\nqueue_run_delay = 1s\n')
    q.set_rules('*@slow.test deferred 4.4.1 later\n')
    q.start_agent()
    ids = [q.inject('alice@example.org', ['x%d@slow.test' % i]) for i in range(3)]
    q.start_qmgr()
    wait_for(lambda: len(q.files('deferred')) == 3, what='deferred')
    r = q.tool('postsuper', '-h', ids[0])
    assert r.stderr == 'postsuper: Placed on hold: 1 message\n'
    assert q.files('hold') == [ids[0]]
    r = q.tool('postsuper', '-h', 'ALL')
    assert r.stderr == 'postsuper: Placed on hold: 2 messages\n'
    assert q.files('hold') == sorted(ids)
    msgs = parse_mailq(q.tool('postqueue', '-p').stdout)
    assert all(m['mark'] == '!' for m in msgs)
    # Messages on hold are never scheduled, even by a flush.
    n = len(q.deliveries())
    assert q.tool('postqueue', '-f').returncode == 0
    assert q.tool('postqueue', '-i', ids[0]).returncode != 0
    assert len(q.deliveries()) == n
    q.set_rules('')
    r = q.tool('postsuper', '-H', ids[1])
    assert r.stderr == 'postsuper: Released from hold: 1 message\n'
    q.wait_log('%s: removed' % ids[1])
    r = q.tool('postsuper', '-d', '-', input='%s\n' % ids[2])
    assert 'postsuper: Deleted: 1 message' in r.stderr
    assert q.path_of(ids[2]) is None
    r = q.tool('postsuper', '-r', ids[0])
    assert r.stderr == 'postsuper: Requeued: 1 message\n'
    q.wait_log('%s: removed' % ids[0])
    assert q.queue_empty() and not q.files('hold')
    r = q.tool('postsuper', '-d', 'ALL')
    assert r.stderr == '' and r.returncode == 0


def test_requeue_expands_aliases_again(make_queue):
    q = make_queue()
    vpath = os.path.join(q.tmp, 'virtual')
    with open(vpath, 'w') as f:
        f.write('list@example.test a@slow.test, b@slow.test\n')
    with open(os.path.join(q.confdir, 'main.cf'), 'a') as f:
        f.write('virtual_alias_maps = texthash:%s\nminimal_backoff_time = 1h\n'
                'maximal_backoff_time = 2h\n' % vpath)
    q.set_rules('a@slow.test sent 2.0.0 ok\n*@slow.test deferred 4.4.1 later\n')
    q.start_agent()
    qid = q.inject('alice@example.org', ['list@example.test'])
    q.start_qmgr()
    wait_for(lambda: q.files('deferred') == [qid], what='deferred')
    env = q.read(qid)[2]
    assert [r[0] + r[3] for r in env['rcpt']] == ['Xlist@example.test', 'Da@slow.test',
                                                   '-b@slow.test']
    # A changed table takes effect when the queue manager starts again
    # (texthash: is read at start, as Postfix does).
    q.kill_qmgr(signal.SIGTERM)
    with open(vpath, 'w') as f:
        f.write('list@example.test a@slow.test, c@remote.test\n')
    q.set_rules('')
    r = q.tool('postsuper', '-r', qid)
    assert r.returncode == 0, r.stderr
    assert q.files('incoming') == [qid]
    q.start_qmgr()
    q.wait_log('%s: removed' % qid)
    got = [(r['rcpt'], r['status']) for r in q.deliveries()]
    # a was delivered already and is not delivered again; b is no longer
    # in the list; c is new.
    assert got.count(('a@slow.test', 'sent')) == 1
    assert ('c@remote.test', 'sent') in got and ('b@slow.test', 'sent') not in got


def test_requeue_runs_header_checks_again(make_queue):
    """postsuper -r sends a message through the header processing again, as
    Postfix's requeue through cleanup: header_checks PREPEND changes the
    queued message, HOLD moves it to the hold queue, REJECT bounces it."""
    q = make_queue('minimal_backoff_time = 1h\nmaximal_backoff_time = 2h\n')
    hc = os.path.join(q.tmp, 'header_checks')
    with open(hc, 'w') as f:
        f.write('/^Subject: hello/ PREPEND X-Requeued: yes\n'
                '/^Subject: hold me/ HOLD inspect this\n'
                '/^Subject: spam/ REJECT no spam here\n'
                '/^X-Drop-Me:/ IGNORE\n')
    with open(os.path.join(q.confdir, 'main.cf'), 'a') as f:
        f.write('header_checks = regexp:%s\n' % hc)
    q.set_rules('*@slow.test deferred 4.4.1 later\n')
    q.start_agent()
    a = q.inject('alice@example.org', ['a@slow.test'],
                 content='Received: by test\nX-Drop-Me: 1\n  folded\nSubject: hello\n\nbody a\n')
    b = q.inject('alice@example.org', ['b@slow.test'],
                 content='Received: by test\nSubject: hold me\n\nbody b\n')
    c = q.inject('alice@example.org', ['c@slow.test'],
                 content='Received: by test\nSubject: spam\n\nbody c\n')
    # No header section at all: "Subject: spam" is body text here.
    d = q.inject('alice@example.org', ['d@slow.test'], content='\nSubject: spam\n')
    q.start_qmgr()
    wait_for(lambda: q.files('deferred') == sorted([a, b, c, d]), what='all deferred')
    # The queue manager does not check new mail (smtpd did).
    assert b'X-Requeued' not in q.read(a)[1]
    r = q.tool('postsuper', '-r', 'ALL')
    assert r.stderr == 'postsuper: Requeued: 4 messages\n', r.stderr
    q.wait_log('%s: to=<c@slow.test>, relay=none, delay=' % c)
    line = q.log_lines('%s: to=<c@slow.test>, relay=none' % c)[0]
    assert 'dsn=5.7.1, status=bounced (no spam here)' in line, line
    q.wait_log('%s: removed' % c)
    wait_for(lambda: q.files('hold') == [b], what='b on hold')
    assert q.log_lines('%s: hold: header Subject: hold me' % b)
    q.wait_log('%s: to=<a@slow.test>' % a, count=2)
    q.wait_log('%s: to=<d@slow.test>' % d, count=2)
    wait_for(lambda: q.files('deferred') == sorted([a, d]), what='a and d deferred again')
    assert q.read(d)[1] == b'\nSubject: spam\n'
    assert not q.log_lines('%s: to=<d@slow.test>, relay=none' % d)
    content = q.read(a)[1].decode()
    assert content == 'Received: by test\nX-Requeued: yes\nSubject: hello\n\nbody a\n', content
    assert q.read(a)[2]['size'] == str(len(content))


def test_postcat(make_queue):
    q = make_queue()
    qid = q.inject('alice@example.org', ['bob@remote.test'],
                   content='Received: by test\nSubject: cat me\n\nthe body\n', sub='hold')
    r = q.tool('postcat', '-q', qid)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == '*** ENVELOPE RECORDS hold/%s ***' % qid
    assert 'sender: alice@example.org' in out and 'recipient: bob@remote.test' in out
    i = out.index('*** MESSAGE CONTENTS hold/%s ***' % qid)
    assert out[i + 1:i + 5] == ['Received: by test', 'Subject: cat me', '', 'the body']
    assert out[-1] == '*** MESSAGE FILE END hold/%s ***' % qid
    assert q.tool('postcat', '-h', '-q', qid).stdout.splitlines()[1:] == [
        'Received: by test', 'Subject: cat me', '']
    assert q.tool('postcat', '-b', '-q', qid).stdout.splitlines()[1:] == ['the body']
    r = q.tool('postcat', '-q', 'ZZZZZZZZZZZZZZZZ')
    assert r.returncode != 0


# --- recovery ---------------------------------------------------------------


def test_kill_9_loses_nothing_and_repeats_no_confirmed_delivery(make_queue):
    n_msgs = int(os.environ.get('POSTERN_KILL_TEST_MESSAGES', '5000'))
    q = make_queue('default_destination_concurrency_limit = 20\n')
    q.start_agent()
    ids = []
    t = time.time()
    for i in range(n_msgs):
        ids.append(q.inject('alice@example.org', ['r%d@remote%d.test' % (i, i % 7),
                                                  'local%d@example.test' % i],
                            arrival=t + i * 1e-6))
    q.start_qmgr()
    # Kill in the middle of the run.
    q.wait_deliveries(lambda d: len(d) >= n_msgs // 2, timeout=300, what='half the run')
    q.kill_qmgr(signal.SIGKILL)
    at_kill = {}
    for r in q.deliveries():
        at_kill[(r['id'], r['rcpt'])] = at_kill.get((r['id'], r['rcpt']), 0) + 1
    present = set()
    confirmed = set()
    for sub in ('incoming', 'active', 'deferred'):
        for qid in q.files(sub):
            present.add(qid)
            for status, _, _, addr in q.read(qid)[2]['rcpt']:
                if status == 'D':
                    confirmed.add((qid, addr))
    # Removed files: every recipient confirmed.
    for i, qid in enumerate(ids):
        if qid not in present:
            confirmed.add((qid, 'r%d@remote%d.test' % (i, i % 7)))
            confirmed.add((qid, 'local%d@example.test' % i))
    assert confirmed, 'the kill came before any confirmed delivery'
    q.start_qmgr()
    wait_for(q.queue_empty, timeout=300, what='queue drained after restart')
    counts = {}
    for r in q.deliveries():
        counts[(r['id'], r['rcpt'])] = counts.get((r['id'], r['rcpt']), 0) + 1
    for i, qid in enumerate(ids):
        for rcpt in ('r%d@remote%d.test' % (i, i % 7), 'local%d@example.test' % i):
            assert counts.get((qid, rcpt), 0) >= 1, (qid, rcpt)
    for key in confirmed:
        assert counts[key] == at_kill[key], key
    assert q.log_lines('Resumed')


def test_idle_exit(make_queue):
    q = make_queue('max_idle = 1s\n')
    q.start_agent()
    qid = q.inject('alice@example.org', ['bob@remote.test'])
    q.start_qmgr()
    q.wait_log('%s: removed' % qid)
    q.qmgr.wait(timeout=20)
    assert q.qmgr.returncode == 0



def test_running_qmgr_finds_unannounced_mail(make_queue):
    """Mail whose announcement was lost waits in incoming/, and a message
    that a previous queue manager left in active/ waits there: a running
    queue manager picks both up on its next queue run."""
    q = make_queue('queue_run_delay = 1s\nmax_idle = 1h\n')
    q.start_agent().start_qmgr()
    # Once this one is through, the queue manager has done its start-up scans.
    q.wait_log('%s: removed' % q.inject('alice@example.org', ['dave@remote.test']),
               timeout=15)
    first = q.inject('alice@example.org', ['bob@remote.test'])
    second = q.inject('alice@example.org', ['carol@remote.test'], sub='active')
    q.wait_log('%s: removed' % first, timeout=15)
    q.wait_log('%s: removed' % second, timeout=15)
    got = sorted(r['rcpt'] for r in q.deliveries())
    assert got == ['bob@remote.test', 'carol@remote.test', 'dave@remote.test']
    assert q.qmgr.poll() is None, 'the queue manager was restarted, not running'


# --- local submission -------------------------------------------------------


def test_sendmail_pickup_delivery(make_queue):
    q = make_queue()
    q.start_agent().start_qmgr()
    msg = ('To: Bob <bob@remote.test>, carol@example.test\nCc: (team) dave@remote.test\n'
           'Bcc: eve@remote.test\nSubject: from cron\n\nline one\n.\nnot reached\n')
    r = q.tool('sendmail', '-t', '-f', 'cron@example.test', '-F', 'Cron Daemon', 'extra',
               input=msg)
    assert r.returncode == 0, r.stderr
    assert len(q.files('maildrop')) == 1
    assert q.pickup().returncode == 0
    assert q.files('maildrop') == []
    q.wait_log('removed')
    got = sorted(r['rcpt'] for r in q.deliveries())
    assert got == ['bob@remote.test', 'carol@example.test', 'dave@remote.test',
                   'eve@remote.test', 'extra@example.test']
    line = q.log_lines('from=<cron@example.test>')[0]
    assert re.search(r'postern-pickup: ([0-9A-Za-z]{16}): uid=\d+ from=<cron@example.test>', line)


def test_sendmail_config_warnings_only_on_a_terminal(make_queue):
    """A warning about main.cf (here an unimplemented parameter) reaches
    sendmail's stderr only when that is a terminal, as with Postfix: a cron
    job that sends mail gets no output to mail back every run."""
    q = make_queue('smtpd_policy_service_try_limit = 3\n')
    warning = 'is not implemented by postern; the setting has no effect'
    r = q.tool('sendmail', '-oi', 'bob@remote.test', input='Subject: quiet\n\nhi\n')
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert len(q.files('maildrop')) == 1
    primary, secondary = pty.openpty()
    try:
        p = subprocess.run([TOOLS['sendmail'], '-oi', 'bob@remote.test'],
                           input=b'Subject: loud\n\nhi\n', stdout=subprocess.PIPE,
                           stderr=secondary, env=q.env(), timeout=60)
        os.close(secondary)
        secondary = None
        out = b''
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:     # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        if secondary is not None:
            os.close(secondary)
        os.close(primary)
    assert p.returncode == 0
    assert re.search(r'^postdrop: %s:\d+: warning: smtpd_policy_service_try_limit %s\r?$'
                     % (re.escape(os.path.join(q.confdir, 'main.cf')), warning),
                     out.decode(), re.M), out
    assert len(q.files('maildrop')) == 2


def test_sendmail_content_and_defaults(make_queue):
    q = make_queue()
    r = q.tool('sendmail', '-oi', 'bob@remote.test', input='Subject: dots\r\n\r\n.\r\nend\r\n')
    assert r.returncode == 0, r.stderr
    assert q.pickup().returncode == 0
    (qid,) = q.files('incoming')
    hdr, content, env = q.read(qid)
    assert env['sender'].endswith('@example.test') and env['uid'] == str(os.getuid())
    assert env['rcpt'] == [('-', '-', '-', 'bob@remote.test')]
    text = content.decode()
    assert text.startswith('Received: by mx.example.test (postern, from userid %d)\n\tid %s; '
                           % (os.getuid(), qid))
    assert 'Message-Id: <%s@mx.example.test>' % qid in text and '\nDate: ' in text
    assert '\nFrom: %s\n' % env['sender'] in text
    assert text.endswith('Subject: dots\n\n.\nend\n')


def test_sendmail_bs_smtp_on_stdin(make_queue):
    q = make_queue()
    dialog = ('EHLO me\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\n'
              'Subject: bs\r\n\r\n..dot\r\n.\r\nQUIT\r\n')
    r = q.tool('sendmail', '-bs', input=dialog)
    assert r.returncode == 0, r.stderr
    codes = [l[:3] for l in r.stdout.splitlines()]
    assert codes == ['220', '250', '250', '250', '250', '354', '250', '221'], r.stdout
    assert q.pickup().returncode == 0
    (qid,) = q.files('incoming')
    assert q.read(qid)[1].decode().endswith('Subject: bs\n\n.dot\n')


def test_corrupt_maildrop_file(make_queue):
    q = make_queue()
    with open(os.path.join(q.queue, 'maildrop', '1xBBBBBBBBBBBBBB'), 'w') as f:
        f.write('not a queue file\n')
    r = q.pickup()
    assert q.files('corrupt') == ['1xBBBBBBBBBBBBBB'] and not q.files('maildrop')
    assert q.log_lines('bad maildrop file (malformed): moved to corrupt')


def test_postdrop_ignores_config_override_for_users(make_queue):
    """A non-root caller cannot point the set-gid postdrop at another
    configuration (and thereby another queue)."""
    if os.getuid() != 0:
        pytest.skip('needs root to run postdrop as another user')
    q = make_queue()
    os.chmod(q.tmp, 0o755)
    r = subprocess.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
                        TOOLS_POSTDROP, '-c', q.confdir, '--', 'x@example.test'],
                       input='hi\n', capture_output=True, text=True,
                       env=dict(q.env(), POSTERN_CONFIG_DIR=q.confdir), timeout=30)
    assert q.files('maildrop') == []
    assert r.returncode != 0


def test_posternctl_queue(make_queue):
    q = make_queue()
    a = q.inject('alice@example.org', ['bob@remote.test'], sub='deferred')
    r = q.tool('posternctl', 'queue', 'list', '--json')
    assert r.returncode == 0, r.stderr
    (j,) = [json.loads(l) for l in r.stdout.splitlines()]
    assert j['queue_id'] == a and j['queue_name'] == 'deferred'
    r = q.tool('posternctl', 'queue', 'hold', a)
    assert r.stdout == 'hold: 1 message\n' and q.files('hold') == [a]
    r = q.tool('posternctl', 'queue', 'show', '--json', a)
    assert json.loads(r.stdout)['recipients'] == [{'address': 'bob@remote.test', 'status': '-'}]
    r = q.tool('posternctl', 'queue', 'delete', 'ALL')
    assert r.stdout == 'delete: 1 message\n' and q.path_of(a) is None


# --- scheduling and tools, more ------------------------------------------------


def test_recipient_limit_splits_deliveries(make_queue):
    """default_destination_recipient_limit = 2: five recipients at one
    destination go out in three Deliver calls of at most two."""
    q = make_queue('default_destination_recipient_limit = 2\n')
    q.start_agent()
    rcpts = ['r%d@remote.test' % i for i in range(5)]
    qid = q.inject('alice@example.org', rcpts)
    q.start_qmgr()
    q.wait_log('%s: removed' % qid)
    calls = {}
    for d in q.deliveries():
        calls.setdefault(d['call'], []).append(d['rcpt'])
    assert sorted(len(c) for c in calls.values()) == [1, 2, 2], calls
    assert sorted(r for c in calls.values() for r in c) == rcpts
    assert all(d['nexthop'] == 'remote.test' for d in q.deliveries())


def queue_status(q, user=None):
    """posternctl queue status --json: Queue1.Status() of the queue manager."""
    args = [TOOLS['posternctl'], 'queue', '--json', 'status']
    if user is not None:
        args = ['setpriv', '--reuid=%d' % user, '--regid=%d' % user, '--clear-groups'] + args
    r = subprocess.run(args, capture_output=True, text=True, timeout=30, env=q.env())
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_status_bus_method(make_queue):
    """Queue1.Status() through posternctl queue status."""
    q = make_queue('minimal_backoff_time = 1h\nmaximal_backoff_time = 2h\nqueue_run_delay = 1h\n')
    q.set_rules('*@slow.test deferred 4.4.1 later\n')
    q.start_agent()
    a = q.inject('alice@example.org', ['x@slow.test'])
    q.start_qmgr()
    q.wait_log('%s: to=<x@slow.test>' % a)
    wait_for(lambda: q.files('deferred') == [a], what='deferred')
    values = queue_status(q)
    assert values['active'] == 0 and values['in_flight'] == 0, values
    assert values['enqueued'] == 0 and values['scanning_deferred'] is False, values
    # The retry time of the deferred message, an hour away.
    due = values['next_deferred_due_usec'] / 1e6
    assert time.time() + 3000 < due < time.time() + 7300, values
    # Anyone may ask, like postqueue -p.
    for d in (q.tmp, q.runtime, q.confdir):
        os.chmod(d, 0o755)
    os.chmod(os.path.join(q.runtime, 'qmgr'), 0o666)
    assert queue_status(q, user=65534)['active'] == 0
    r = q.tool('posternctl', 'queue', 'status')
    assert 'active: 0\n' in r.stdout and 'scanning_deferred: no\n' in r.stdout, r.stdout


def test_postsuper_reads_ids_from_stdin(make_queue):
    """postsuper -h -, -H - and -r - take queue IDs from standard input."""
    q = make_queue('minimal_backoff_time = 1h\nmaximal_backoff_time = 2h\n')
    ids = [q.inject('alice@example.org', ['x%d@slow.test' % i], sub='deferred')
           for i in range(3)]
    r = q.tool('postsuper', '-h', '-', input='%s\n%s\n' % (ids[0], ids[1]))
    assert r.returncode == 0 and r.stderr == 'postsuper: Placed on hold: 2 messages\n', r
    assert q.files('hold') == sorted(ids[:2])
    r = q.tool('postsuper', '-H', '-', input=ids[0] + '\n')
    assert r.stderr == 'postsuper: Released from hold: 1 message\n', r
    assert q.files('hold') == [ids[1]]
    r = q.tool('postsuper', '-r', '-', input='%s\n%s\n' % (ids[0], ids[2]))
    assert r.stderr == 'postsuper: Requeued: 2 messages\n', r
    assert q.files('incoming') == sorted([ids[0], ids[2]])
    assert q.files('hold') == [ids[1]]


def test_posternctl_queue_json_commands(make_queue):
    """posternctl queue release/requeue/flush --json: one JSON object each."""
    q = make_queue('minimal_backoff_time = 1h\nmaximal_backoff_time = 2h\nqueue_run_delay = 1h\n')
    q.set_rules('*@slow.test deferred 4.4.1 later\n')
    q.start_agent()
    a = q.inject('alice@example.org', ['x@slow.test'], sub='hold')
    r = q.tool('posternctl', 'queue', '--json', 'release', a)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {'command': 'release', 'messages': 1}
    assert q.files('hold') == [] and q.files('deferred') == [a]
    # Released mail is due at once: the first deferred queue run takes it.
    q.start_qmgr()
    q.wait_log('%s: to=<x@slow.test>' % a)
    wait_for(lambda: q.files('deferred') == [a], what='deferred')
    r = q.tool('posternctl', 'queue', '--json', 'requeue', 'ALL')
    assert json.loads(r.stdout) == {'command': 'requeue', 'messages': 1}, r.stdout
    q.wait_log('%s: to=<x@slow.test>' % a, count=2)
    wait_for(lambda: q.files('deferred') == [a], what='deferred again')
    r = q.tool('posternctl', 'queue', '--json', 'flush', a)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {'command': 'flush', 'queue_id': a}
    q.wait_log('%s: to=<x@slow.test>' % a, count=3)
    r = q.tool('posternctl', 'queue', '--json', 'flush')
    assert json.loads(r.stdout) == {'command': 'flush'}
    r = q.tool('posternctl', 'queue', '--json', 'flush', 'slow.test')
    assert json.loads(r.stdout) == {'command': 'flush', 'site': 'slow.test'}
    # Let the retries end before the queue manager is stopped.
    q.wait_log('%s: to=<x@slow.test>' % a, count=4)
    wait_for(lambda: (lambda st: st['active'] == 0 and st['in_flight'] == 0 and
                      not st['scanning_deferred'])(queue_status(q)), what='a quiet queue')


def test_postcat_envelope_only(make_queue):
    q = make_queue()
    qid = q.inject('alice@example.org', ['bob@remote.test', 'carol@remote.test'],
                   content='Received: by test\nSubject: cat me\n\nthe body\n', sub='hold')
    r = q.tool('postcat', '-e', '-q', qid)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == '*** ENVELOPE RECORDS hold/%s ***' % qid
    assert 'sender: alice@example.org' in out
    assert 'recipient: bob@remote.test' in out and 'recipient: carol@remote.test' in out
    assert 'Subject: cat me' not in r.stdout and 'the body' not in r.stdout
    assert not any(l.startswith('*** MESSAGE CONTENTS') for l in out)


def test_sendmail_q_flushes_and_bm_submits(make_queue):
    """sendmail -q is postqueue -f; -bm (the default mode) reads a message."""
    q = make_queue('minimal_backoff_time = 1h\nmaximal_backoff_time = 2h\nqueue_run_delay = 1h\n')
    q.set_rules('*@slow.test deferred 4.4.1 later\n')
    q.start_agent()
    a = q.inject('alice@example.org', ['x@slow.test'])
    q.start_qmgr()
    q.wait_log('%s: to=<x@slow.test>' % a)
    wait_for(lambda: q.files('deferred') == [a], what='deferred')
    q.set_rules('')
    r = q.tool('sendmail', '-q')
    assert r.returncode == 0, r.stderr
    q.wait_log('%s: removed' % a)
    r = q.tool('sendmail', '-bm', '-f', 'cron@example.test', 'bob@remote.test',
               input='Subject: bm\n\nhello\n')
    assert r.returncode == 0, r.stderr
    assert q.pickup().returncode == 0
    wait_for(lambda: any(d['rcpt'] == 'bob@remote.test' for d in q.deliveries()),
             what='the -bm message delivered')


def test_bounce_queue_lifetime_for_null_sender_mail(make_queue):
    """bounce_queue_lifetime applies to mail with the null sender only."""
    q = make_queue('maximal_queue_lifetime = 1h\nbounce_queue_lifetime = 2s\n')
    q.set_rules('*@never.test deferred 4.4.1 host not responding\n')
    q.start_agent()
    report = q.inject('', ['x@never.test'])
    normal = q.inject('alice@example.org', ['y@never.test'])
    q.start_qmgr()
    q.wait_log('%s: to=<x@never.test>, relay=none' % report, timeout=30)
    line = q.log_lines('%s: to=<x@never.test>, relay=none' % report)[0]
    assert 'status=bounced (message expired after' in line, line
    q.wait_log('%s: removed' % report)
    # The normal message is retried, not expired.
    q.wait_log('%s: to=<y@never.test>' % normal, count=3)
    assert not q.log_lines('%s: to=<y@never.test>, relay=none' % normal)
    assert q.path_of(normal) is not None


def test_slow_destination_does_not_starve_others(make_queue):
    """Ten messages to a destination whose deliveries take 3 s each, then
    ten to a fast one: the slow destination gets at most its concurrency
    window (2) and the fast mail is all delivered meanwhile."""
    q = make_queue('default_destination_concurrency_limit = 2\ndefault_process_limit = 4\n')
    q.set_rules('slow *@slow.test 3000\n')
    q.start_agent()
    slow = [q.inject('alice@example.org', ['s%d@slow.test' % i]) for i in range(10)]
    fast = [q.inject('alice@example.org', ['f%d@fast.test' % i]) for i in range(10)]
    q.start_qmgr()
    for qid in fast:
        q.wait_log('%s: removed' % qid, timeout=15)
    # 3 s per slow delivery, two at a time: the first two at most are done.
    done_slow = [qid for qid in slow if q.log_lines('%s: removed' % qid)]
    assert len(done_slow) <= 2, done_slow
    started = {d['call'] for d in q.deliveries() if d['rcpt'].endswith('@slow.test')}
    assert len(started) <= 4, started
    # The slow mail is delivered too, in its own time.
    for qid in slow:
        q.wait_log('%s: removed' % qid, timeout=30)
    assert not q.log_lines('status=deferred')


def test_backoff_grows_with_age(make_queue):
    """The retry time after each failed attempt grows with the message's
    age, from minimal_backoff_time up to maximal_backoff_time."""
    q = make_queue('minimal_backoff_time = 1s\nmaximal_backoff_time = 4s\nqueue_run_delay = 1s\n')
    q.set_rules('*@slow.test deferred 4.4.1 later\n')
    q.start_agent()
    qid = q.inject('alice@example.org', ['x@slow.test'])
    q.start_qmgr()
    gaps = []
    for n in range(1, 6):
        q.wait_log('%s: to=<x@slow.test>' % qid, count=n, timeout=30)
        path = wait_for(lambda: q.files('deferred') == [qid] and q.path_of(qid),
                        what='deferred after attempt %d' % n)
        # The retry time is the file's mtime (postern-queue(5)).
        gaps.append(os.stat(path).st_mtime - time.time())
    assert gaps[0] < 1.6, gaps
    assert all(b >= a - 0.6 for a, b in zip(gaps, gaps[1:])), gaps
    assert 3.0 < gaps[-1] < 4.3, gaps


def test_qmgr_stays_up_while_deferred_mail_is_due_soon(make_queue):
    """max_idle = 1s: deferred mail due before the next timer run
    (queue_run_delay) keeps the queue manager running to retry it; with
    nothing due soon it exits."""
    q = make_queue('max_idle = 1s\nqueue_run_delay = 4s\n'
                   'minimal_backoff_time = 2s\nmaximal_backoff_time = 2s\n')
    q.set_rules('*@slow.test deferred 4.4.1 later\n')
    q.start_agent()
    qid = q.inject('alice@example.org', ['x@slow.test'])
    q.start_qmgr()
    q.wait_log('%s: to=<x@slow.test>' % qid)
    q.set_rules('')
    # Retried by the same process at the next deferred queue run (4 s),
    # well after max_idle.
    q.wait_log('%s: removed' % qid, timeout=20)
    assert len(q.qmgr_runs) == 1
    assert len(q.log_lines('%s: to=<x@slow.test>' % qid)) == 2
    q.qmgr.wait(timeout=20)
    assert q.qmgr.returncode == 0

    # Deferred mail due only after the next timer run: exit when idle.
    q2 = make_queue('max_idle = 1s\nqueue_run_delay = 5s\n'
                    'minimal_backoff_time = 1h\nmaximal_backoff_time = 1h\n')
    q2.set_rules('*@slow.test deferred 4.4.1 later\n')
    q2.start_agent()
    qid = q2.inject('alice@example.org', ['x@slow.test'])
    q2.start_qmgr()
    q2.wait_log('%s: to=<x@slow.test>' % qid)
    q2.qmgr.wait(timeout=20)
    assert q2.qmgr.returncode == 0
    assert q2.files('deferred') == [qid]


def test_unprivileged_sendmail_through_setgid_postdrop(make_queue):
    """meson install gives postdrop mode 2755 and group postdrop; with it
    a user who cannot write maildrop/ (1730 root:postdrop) submits mail
    with sendmail, and pickup takes it. postdrop ignores
    $POSTERN_CONFIG_DIR for users, so this runs in a private mount
    namespace whose /etc/postern holds the test's main.cf."""
    import grp
    import shutil as sh
    q = make_queue()
    dest = os.path.join(q.tmp, 'dest')
    r = subprocess.run(['meson', 'install', '-C', os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.dirname(TOOLS['postdrop'])))), '--no-rebuild', '--quiet'],
        env=dict(os.environ, DESTDIR=dest), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    prefix = subprocess.run(['meson', 'introspect', '--buildoptions', os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.dirname(TOOLS['postdrop']))))],
        capture_output=True, text=True, check=True).stdout
    prefix = [o['value'] for o in json.loads(prefix) if o['name'] == 'prefix'][0]
    postdrop = dest + prefix + '/sbin/postdrop'
    sendmail = dest + prefix + '/sbin/sendmail'
    st = os.stat(postdrop)
    assert oct(st.st_mode & 0o7777) == '0o2755', oct(st.st_mode)
    assert st.st_uid == 0 and grp.getgrgid(st.st_gid).gr_name == 'postdrop'
    # The layout of tmpfiles.d/postern.conf.
    for d in (q.tmp, q.queue, dest):
        os.chmod(d, 0o755)
    maildrop = os.path.join(q.queue, 'maildrop')
    os.chown(maildrop, 0, grp.getgrnam('postdrop').gr_gid)
    os.chmod(maildrop, 0o1730)
    script = '''set -e
keep=$(mktemp -d)
cp -a /etc/passwd /etc/group /etc/nsswitch.conf "$keep"/
[ -e /etc/ld.so.cache ] && cp -a /etc/ld.so.cache "$keep"/
mount -t tmpfs -o mode=755 tmpfs /etc
cp -a "$keep"/. /etc/
chmod 755 /etc
mkdir -m 755 /etc/postern
cp "$1" /etc/postern/main.cf
chmod 644 /etc/postern/main.cf
exec setpriv --reuid=65534 --regid=65534 --clear-groups env -i PATH=/usr/bin:/bin \
    ASAN_OPTIONS=detect_leaks=0 POSTERN_POSTDROP="$2" POSTERN_LOG_TARGET=stderr \
    "$3" -f nobody@example.test bob@remote.test
'''
    r = subprocess.run(['unshare', '-m', '--propagation', 'private', 'sh', '-c', script, 'sh',
                        os.path.join(q.confdir, 'main.cf'), postdrop, sendmail],
                       input='Subject: from nobody\n\nhello\n', capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    (qid,) = q.files('maildrop')
    st = os.stat(os.path.join(maildrop, qid))
    assert st.st_uid == 65534, st
    # A user cannot list or read maildrop/ itself.
    r = subprocess.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'ls',
                        maildrop], capture_output=True, text=True)
    assert r.returncode != 0
    assert q.pickup().returncode == 0
    (qid,) = q.files('incoming')
    env = q.read(qid)[2]
    assert env['sender'] == 'nobody@example.test' and env['uid'] == '65534'
    assert env['rcpt'] == [('-', '-', '-', 'bob@remote.test')]


def test_round_robin_between_destinations(make_queue):
    """With one delivery at a time (default_process_limit = 1), destinations
    take turns: mail for a fast destination queued after five messages
    for a slow one does not wait for all of them."""
    q = make_queue('default_process_limit = 1\n')
    q.set_rules('slow *@slow.test 700\n')
    q.start_agent()
    slow = [q.inject('alice@example.org', ['s%d@slow.test' % i]) for i in range(5)]
    fast = [q.inject('alice@example.org', ['f%d@fast.test' % i]) for i in range(5)]
    q.start_qmgr()
    for qid in slow + fast:
        q.wait_log('%s: removed' % qid, timeout=30)
    assert not q.log_lines('status=deferred')
    order = ['slow' if '@slow.test' in l else 'fast' for l in q.log_lines('status=sent')]
    assert sorted(order) == ['fast'] * 5 + ['slow'] * 5, order
    # Turns: never more than two slow deliveries in a row while fast mail
    # waits (FIFO would give five).
    first_fast = order.index('fast')
    assert first_fast <= 2, order
    assert 'slow, slow, slow' not in ', '.join(order[:order.index('fast', 0) + 8]), order
