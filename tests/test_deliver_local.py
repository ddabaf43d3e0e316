"""Integration tests for postern-deliver-local: the built daemon runs under
systemd-socket-activate with a private configuration directory, queue
directory and POSTERN_RUNTIME_DIR; the test client (a stand-in for the queue
manager) writes a queue file and calls org.postern.Delivery1.Deliver. The
tests look at what a user sees: the per-recipient results, the files in
Maildirs and mailboxes, their owners, and their headers.

Needs root (it creates throw-away system users with useradd and removes them
afterwards) and systemd-socket-activate."""
import fcntl
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid

import pytest

from common import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_DIR = os.environ.get('POSTERN_BUILD_DIR') or os.path.join(os.path.dirname(HERE), 'build')
DAEMON = os.path.join(BUILD_DIR, 'src', 'deliver-local', 'postern-deliver-local')
CLIENT = os.path.join(BUILD_DIR, 'src', 'deliver-local', 'test-deliver-local-client')
POSTMAP = os.path.join(BUILD_DIR, 'src', 'tools', 'postmap', 'postmap')
POSTALIAS = os.path.join(BUILD_DIR, 'src', 'tools', 'postmap', 'postalias')
SOCKET_ACTIVATE = shutil.which('systemd-socket-activate')
VUID = 5000

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason='needs root: creates users, delivers as them'),
    pytest.mark.skipif(not SOCKET_ACTIVATE, reason='systemd-socket-activate not installed'),
    pytest.mark.skipif(not os.access(DAEMON, os.X_OK), reason='postern-deliver-local not built'),
]

MESSAGE = (
    'Received: from client.example.org by mx.example.com\n'
    'From: Sender <sender@example.org>\n'
    'To: someone\n'
    'Subject: test\n'
    '\n'
    'Hello.\n'
    'From the body, a line that mbox must quote.\n'
    'Bye.\n'
)


@pytest.fixture
def tmp_path():
    """A world-traversable temporary directory (pytest's own sits in a 0700
    parent that the users we deliver as cannot enter)."""
    d = tempfile.mkdtemp(prefix='postern-deliver-local-')
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def users():
    """Creates system users with homes under a temporary directory and
    deletes them (and their files) afterwards."""
    created = []

    def make(home_root):
        name = 'pdl' + uuid.uuid4().hex[:8]
        home = os.path.join(home_root, name)
        subprocess.run(['useradd', '-m', '-d', home, '-s', '/bin/sh', '-K', 'UMASK=022', name],
                       check=True, capture_output=True)
        created.append(name)
        return pwd.getpwnam(name)

    yield make
    for name in created:
        subprocess.run(['userdel', '-r', '-f', name], capture_output=True)
        subprocess.run(['groupdel', name], capture_output=True)


class Instance:
    """A private postern-deliver-local under systemd-socket-activate."""

    def __init__(self, root, params):
        self.root = root
        self.conf = os.path.join(root, 'conf')
        self.queue = os.path.join(root, 'queue')
        self.run_dir = os.path.join(root, 'run')
        for d in (self.conf, self.run_dir, os.path.join(self.queue, 'incoming'),
                  os.path.join(self.queue, 'active')):
            os.makedirs(d, exist_ok=True)
        base = {
            'myhostname': 'mx.example.com',
            'mydomain': 'example.com',
            'myorigin': '$myhostname',
            'mydestination': '$myhostname, localhost',
            'queue_directory': self.queue,
            'mail_owner': 'root',
            'alias_maps': '',
            'max_idle': '60s',
        }
        base.update(params)
        with open(os.path.join(self.conf, 'main.cf'), 'w') as f:
            for k, v in base.items():
                f.write('%s = %s\n' % (k, v))
        self.socket = os.path.join(self.run_dir, 'deliver-local')
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.log = open(os.path.join(root, 'daemon.log'), 'w+')
        self.proc = subprocess.Popen(
            [SOCKET_ACTIVATE, '-l', self.socket, '-E', 'POSTERN_RUNTIME_DIR=' + self.run_dir,
             '-E', 'ASAN_OPTIONS=detect_leaks=0', '-E', 'UBSAN_OPTIONS=halt_on_error=1',
             DAEMON, '-c', self.conf],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(self.socket), what='the delivery socket')

    def deliver(self, rcpts, transport='local', nexthop='mx.example.com', message=MESSAGE,
                sender='sender@example.org'):
        """Calls Deliver; returns ({address: (status, dsn, text)}, relay)."""
        msg = os.path.join(self.root, 'msg-%s' % uuid.uuid4().hex[:6])
        with open(msg, 'w') as f:
            f.write(message)
        p = subprocess.run(
            [CLIENT, '--socket', self.socket, '--transport', transport, '--nexthop', nexthop,
             '--sender', sender, '--queue-dir', os.path.join(self.queue, 'active'),
             '--message', msg] + rcpts,
            capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr + self.daemon_log()
        results, relay = {}, None
        plain = [r.split('=')[0] for r in rcpts]
        for line in p.stdout.splitlines():
            if line.startswith('relay='):
                relay = line[6:]
            elif line.startswith('queue_id='):
                continue
            else:
                index, status, dsn, text = line.split(' ', 3)
                results[plain[int(index)]] = (status, dsn, text)
        assert len(results) == len(rcpts), p.stdout
        return results, relay

    def daemon_log(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture
def instance(tmp_path):
    os.chmod(tmp_path, 0o755)
    started = []

    def start(**params):
        inst = Instance(str(tmp_path), params)
        started.append(inst)
        return inst

    yield start
    for inst in started:
        inst.stop()


def maildir_messages(d):
    new = os.path.join(d, 'new')
    if not os.path.isdir(new):
        return []
    return [os.path.join(new, n) for n in sorted(os.listdir(new))]


def read(path):
    with open(path) as f:
        return f.read()


def make_table(path, text, alias=False):
    """Writes a table source and indexes it with the built postmap or
    postalias; texthash: when they are not built."""
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, 0o644)
    tool = POSTALIAS if alias else POSTMAP
    if os.access(tool, os.X_OK):
        subprocess.run([tool, 'hash:' + path], check=True, capture_output=True,
                       env=dict(os.environ, POSTERN_CONFIG_DIR=os.path.dirname(path)))
        return 'hash:' + path
    return 'texthash:' + path


# --- virtual(8) --------------------------------------------------------------

def virtual_setup(tmp_path, instance, **extra):
    vmail = tmp_path / 'vmail'
    vmail.mkdir()
    os.chown(vmail, VUID, VUID)
    maps = make_table(str(tmp_path / 'vmailbox'),
                      'info@example.com    example.com/info/\n'
                      'sales@example.com   example.com/sales/\n'
                      'mbox@example.com    example.com/mbox\n')
    params = dict(virtual_mailbox_domains='example.com', virtual_mailbox_base=str(vmail),
                  virtual_mailbox_maps=maps, virtual_uid_maps='static:%d' % VUID,
                  virtual_gid_maps='static:%d' % VUID, recipient_delimiter='+')
    params.update(extra)
    return vmail, instance(**params)


def test_virtual_maildirs(tmp_path, instance):
    vmail, inst = virtual_setup(tmp_path, instance)
    res, relay = inst.deliver(['info@example.com', 'sales+news@example.com',
                               'mbox@example.com', 'nobody@example.com'],
                              transport='virtual', nexthop='example.com')
    assert relay == 'virtual'
    assert res['info@example.com'] == ('sent', '2.0.0', 'delivered to maildir')
    assert res['sales+news@example.com'] == ('sent', '2.0.0', 'delivered to maildir')
    assert res['mbox@example.com'] == ('sent', '2.0.0', 'delivered to mailbox')
    assert res['nobody@example.com'] == ('bounced', '5.1.1',
                                         'unknown user: "nobody@example.com"')

    info = maildir_messages(str(vmail / 'example.com' / 'info'))
    sales = maildir_messages(str(vmail / 'example.com' / 'sales'))
    assert len(info) == 1 and len(sales) == 1
    for sub in ('tmp', 'new', 'cur'):
        assert os.path.isdir(vmail / 'example.com' / 'info' / sub)
    st = os.stat(info[0])
    assert (st.st_uid, st.st_gid) == (VUID, VUID)
    body = read(info[0])
    assert body.startswith('Return-Path: <sender@example.org>\n'
                           'X-Original-To: info@example.com\n'
                           'Delivered-To: info@example.com\n'
                           'Received: from client.example.org')
    assert '\nFrom the body' in body        # no quoting in Maildir
    assert 'Delivered-To: sales+news@example.com\n' in read(sales[0])
    # The maildir(5) name: time.M<usec>P<pid>Q<n>.<host>
    name = os.path.basename(info[0])
    sec, rest = name.split('.', 1)
    assert sec.isdigit() and rest.startswith('M') and 'P' in rest and 'Q' in rest

    mbox = read(vmail / 'example.com' / 'mbox')
    assert mbox.startswith('From sender@example.org ')
    assert '\n>From the body' in mbox
    assert os.stat(vmail / 'example.com' / 'mbox').st_uid == VUID
    # The queue manager logs the to=<...> status= lines, not the agent.
    assert 'status=' not in inst.daemon_log()


def test_virtual_limit_and_minimum_uid(tmp_path, instance):
    vmail, inst = virtual_setup(tmp_path, instance, virtual_mailbox_limit='200')
    res, _ = inst.deliver(['info@example.com', 'mbox@example.com'], transport='virtual',
                          nexthop='example.com')
    assert res['info@example.com'][:2] == ('bounced', '5.2.2')
    assert res['mbox@example.com'][:2] == ('bounced', '5.2.2')
    assert maildir_messages(str(vmail / 'example.com' / 'info')) == []
    inst.stop()

    # A uid below virtual_minimum_uid is a configuration error: defer.
    shutil.rmtree(tmp_path / 'vmail')
    vmail, inst = virtual_setup(tmp_path, instance, virtual_minimum_uid='6000')
    res, _ = inst.deliver(['info@example.com'], transport='virtual', nexthop='example.com')
    assert res['info@example.com'][:2] == ('deferred', '4.3.5')


# --- local(8) mailboxes ------------------------------------------------------

def test_home_maildir_as_user(tmp_path, instance, users):
    u = users(str(tmp_path / 'home'))
    inst = instance(home_mailbox='Maildir/', recipient_delimiter='+')
    res, relay = inst.deliver(['%s@mx.example.com' % u.pw_name,
                               '%s+tag@mx.example.com=orig@example.net' % u.pw_name])
    assert relay == 'local'
    assert res['%s@mx.example.com' % u.pw_name] == ('sent', '2.0.0', 'delivered to maildir')
    assert res['%s+tag@mx.example.com' % u.pw_name][0] == 'sent'
    md = os.path.join(u.pw_dir, 'Maildir')
    # Two recipients, one mailbox: local(8) delivers each recipient.
    msgs = maildir_messages(md)
    assert len(msgs) == 2
    for p in [md, os.path.join(md, 'new')] + msgs:
        st = os.stat(p)
        assert (st.st_uid, st.st_gid) == (u.pw_uid, u.pw_gid), p
    texts = [read(m) for m in msgs]
    assert any('X-Original-To: orig@example.net\nDelivered-To: %s+tag@mx.example.com\n'
               % u.pw_name in t for t in texts)
    assert all(t.startswith('Return-Path: <sender@example.org>\n') for t in texts)


def test_spool_mbox_with_from_line_and_locks(tmp_path, instance, users):
    u = users(str(tmp_path / 'home'))
    spool = tmp_path / 'spool'
    spool.mkdir()
    os.chmod(spool, 0o775)          # root's, like /var/mail
    inst = instance(mail_spool_directory=str(spool), deliver_lock_attempts='2',
                    deliver_lock_delay='1s')
    rcpt = '%s@mx.example.com' % u.pw_name
    res, _ = inst.deliver([rcpt], sender='')
    assert res[rcpt] == ('sent', '2.0.0', 'delivered to mailbox')
    box = spool / u.pw_name
    st = os.stat(box)
    assert (st.st_uid, st.st_mode & 0o777) == (u.pw_uid, 0o600)
    text = read(box)
    assert text.startswith('From MAILER-DAEMON ')
    assert 'Return-Path: <>\nX-Original-To: %s\nDelivered-To: %s\n' % (rcpt, rcpt) in text
    assert '\n>From the body' in text and text.endswith('Bye.\n\n')
    assert not os.path.exists(str(box) + '.lock')

    # A held dot-lock and a held fcntl lock both defer.
    open(str(box) + '.lock', 'w').close()
    res, _ = inst.deliver([rcpt])
    assert res[rcpt][:2] == ('deferred', '4.2.0')
    os.unlink(str(box) + '.lock')
    with open(box, 'a') as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        res, _ = inst.deliver([rcpt])
        assert res[rcpt][:2] == ('deferred', '4.2.0') and 'lock' in res[rcpt][2]
    assert read(box) == text            # nothing half-written
    res, _ = inst.deliver([rcpt])
    assert res[rcpt][0] == 'sent' and read(box).count('\nFrom sender@example.org ') == 1


def test_unknown_user_and_size_limit(tmp_path, instance, users):
    u = users(str(tmp_path / 'home'))
    spool = tmp_path / 'spool'
    spool.mkdir()
    inst = instance(mail_spool_directory=str(spool), mailbox_size_limit='300')
    rcpt = '%s@mx.example.com' % u.pw_name
    res, _ = inst.deliver(['no-such-user@mx.example.com', rcpt])
    assert res['no-such-user@mx.example.com'] == ('bounced', '5.1.1',
                                                  'unknown user: "no-such-user"')
    assert res[rcpt][:2] == ('bounced', '5.2.2')
    assert 'File too large' in res[rcpt][2]
    assert not (spool / u.pw_name).exists() or os.path.getsize(spool / u.pw_name) == 0


def test_root_mailbox_is_not_written(tmp_path, instance):
    spool = tmp_path / 'spool'
    spool.mkdir()
    inst = instance(mail_spool_directory=str(spool))
    res, _ = inst.deliver(['root@mx.example.com'])
    assert res['root@mx.example.com'][0] == 'deferred'
    assert 'aliased' in res['root@mx.example.com'][2]
    assert not (spool / 'root').exists()


# --- aliases, :include:, files, commands, .forward ------------------------------

def test_aliases(tmp_path, instance, users):
    home = str(tmp_path / 'home')
    a, b = users(home), users(home)
    out = tmp_path / 'out'
    out.mkdir()
    os.chmod(out, 0o1777)
    inc = tmp_path / 'list.inc'
    inc.write_text('# members\n%s\n' % b.pw_name)
    os.chmod(inc, 0o644)
    aliases = make_table(str(tmp_path / 'aliases'), (
        'team: %(a)s, :include:%(inc)s, %(out)s/team.mbox, "|cat > %(out)s/team.cmd"\n'
        'postmaster: %(a)s\n'
        'remote: someone@elsewhere.example, %(b)s\n'
        'owner-remote: %(a)s\n'
        '%(a)s: %(a)s, %(b)s\n'
        'ghost: ghost\n'
    ) % dict(a=a.pw_name, b=b.pw_name, inc=inc, out=out), alias=True)
    inst = instance(alias_maps=aliases, home_mailbox='Maildir/', recipient_delimiter='+')
    rcpts = ['team@mx.example.com', 'postmaster+x@mx.example.com', 'remote@mx.example.com',
             '%s@mx.example.com' % a.pw_name, 'ghost@mx.example.com']
    res, _ = inst.deliver(rcpts)
    log = inst.daemon_log()
    for r in rcpts[:4]:
        assert res[r][0] == 'sent', (r, res[r], log)
    # An address in its own expansion means the user; there is no user ghost.
    assert res['ghost@mx.example.com'] == ('bounced', '5.1.1', 'unknown user: "ghost"')

    amail = maildir_messages(os.path.join(a.pw_dir, 'Maildir'))
    bmail = maildir_messages(os.path.join(b.pw_dir, 'Maildir'))
    # a: as team member, as postmaster, and through its own alias (once:
    # owner-remote only changes the sender of the forwarded copy).
    assert len(amail) == 3
    assert all('Delivered-To: %s@mx.example.com\n' % a.pw_name in read(m) for m in amail)
    # b: in team (once, though named by :include: and by a's alias), in
    # postmaster (through a's alias), as remote's local member, and for a.
    assert len(bmail) == 4
    assert all(os.stat(m).st_uid == b.pw_uid for m in bmail)

    # /file and |command from a root-owned alias table run as default_privs.
    nobody = pwd.getpwnam('nobody')
    mbox = out / 'team.mbox'
    assert os.stat(mbox).st_uid == nobody.pw_uid
    assert read(mbox).startswith('From sender@example.org ')
    cmd = read(out / 'team.cmd')
    assert os.stat(out / 'team.cmd').st_uid == nobody.pw_uid
    assert cmd.startswith('From sender@example.org ') and 'Delivered-To: team@mx.example.com\n' in cmd
    assert '\nFrom the body' in cmd                     # commands get no quoting

    # The remote member is forwarded as a new queue file, sent by owner-remote.
    incoming = os.listdir(os.path.join(inst.queue, 'incoming'))
    assert len(incoming) == 1
    assert 'forwarded as %s' % incoming[0] in res['remote@mx.example.com'][2]
    data = open(os.path.join(inst.queue, 'incoming', incoming[0]), 'rb').read()
    assert b'Delivered-To: remote@mx.example.com\n' in data
    assert b'sender=owner-remote@mx.example.com\n' in data
    assert b'someone@elsewhere.example' in data


def test_alias_command_restricted(tmp_path, instance, users):
    a = users(str(tmp_path / 'home'))
    aliases = make_table(str(tmp_path / 'aliases'),
                         'pipe: "|cat > /dev/null"\nfile: /dev/null\n', alias=True)
    inst = instance(alias_maps=aliases, allow_mail_to_commands='forward',
                    allow_mail_to_files='forward')
    res, _ = inst.deliver(['pipe@mx.example.com', 'file@mx.example.com'])
    assert res['pipe@mx.example.com'][:2] == ('bounced', '5.7.1')
    assert 'restricted' in res['pipe@mx.example.com'][2]
    assert res['file@mx.example.com'][:2] == ('bounced', '5.7.1')


def test_dot_forward(tmp_path, instance, users):
    home = str(tmp_path / 'home')
    a, b = users(home), users(home)
    out = os.path.join(a.pw_dir, 'piped')
    fwd = os.path.join(a.pw_dir, '.forward')
    with open(fwd, 'w') as f:
        f.write('# keep a copy, give one to b, and run a filter\n'
                '\\%s, %s\n"|cat > %s"\n' % (a.pw_name, b.pw_name, out))
    os.chown(fwd, a.pw_uid, a.pw_gid)
    inst = instance(home_mailbox='Maildir/', recipient_delimiter='+')
    rcpt = '%s+ext@mx.example.com' % a.pw_name
    res, _ = inst.deliver([rcpt])
    assert res[rcpt][0] == 'sent', (res, inst.daemon_log())
    assert len(maildir_messages(os.path.join(a.pw_dir, 'Maildir'))) == 1
    assert len(maildir_messages(os.path.join(b.pw_dir, 'Maildir'))) == 1
    # The command ran as the user whose .forward named it.
    assert os.stat(out).st_uid == a.pw_uid
    assert 'Delivered-To: %s\n' % rcpt in read(out)

    # An empty .forward means no forwarding.
    open(fwd, 'w').close()
    res, _ = inst.deliver(['%s@mx.example.com' % a.pw_name])
    assert len(maildir_messages(os.path.join(a.pw_dir, 'Maildir'))) == 2
    assert len(maildir_messages(os.path.join(b.pw_dir, 'Maildir'))) == 1



def test_unreachable_forward_file_is_skipped(tmp_path, instance, users):
    """A forward_path entry the user cannot reach (a directory closed to
    them, as /root is to everybody in the service's sandbox) counts as no
    forward file, as in Postfix: the mail is delivered, not deferred."""
    u = users(str(tmp_path / 'home'))
    closed = tmp_path / 'closed'
    closed.mkdir(mode=0o700)
    (closed / ('%s.forward' % u.pw_name)).write_text('nobody-else\n')
    inst = instance(home_mailbox='Maildir/',
                    forward_path='%s/$user.forward, $home/.forward' % closed)
    rcpt = '%s@mx.example.com' % u.pw_name
    res, _ = inst.deliver([rcpt])
    assert res[rcpt][0] == 'sent', (res, inst.daemon_log())
    assert len(maildir_messages(os.path.join(u.pw_dir, 'Maildir'))) == 1

def test_delivered_to_loop_bounces(tmp_path, instance, users):
    u = users(str(tmp_path / 'home'))
    inst = instance(home_mailbox='Maildir/')
    rcpt = '%s@mx.example.com' % u.pw_name
    res, _ = inst.deliver([rcpt], message='Delivered-To: %s\n' % rcpt + MESSAGE)
    assert res[rcpt][:2] == ('bounced', '5.4.6')
    assert maildir_messages(os.path.join(u.pw_dir, 'Maildir')) == []


def test_bad_calls_are_refused(tmp_path, instance):
    inst = instance()
    p = subprocess.run([CLIENT, '--socket', inst.socket, '--transport', 'smtp',
                        '--queue-dir', os.path.join(inst.queue, 'active'), '--message', '/dev/null',
                        'a@b'], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and 'Unknown transport' in p.stderr
    # The daemon survived and still answers.
    res, _ = inst.deliver(['nosuch@mx.example.com'])
    assert res['nosuch@mx.example.com'][:2] == ('bounced', '5.1.1')
