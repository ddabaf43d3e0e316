"""The examples of the manual pages are exercised with the built programs.

Every .EX/.EE or .nf/.fi block of a page in man/ is either an example,
marked in the roff source with a comment line '.\\" example: NAME' right
before it, or listed in NOT_EXAMPLES (grammars, diagrams, log lines of
daemons). Every marked example is listed in TESTED and used by a test:
tables are written to files and built with postmap, the "postmap -q"
commands shown are run and give the answers the page states, main.cf
snippets load with "postconf -n" and pass "posternctl check", bounce
templates are loaded by postern-bounce, unit drop-ins pass
"systemd-analyze verify", and commands that need a running systemd
(systemctl) are only checked for verbs that exist. Paths under
/etc/postern and /etc/aliases are moved into a private directory."""
import ast
import glob
import json
import os
import re
import shlex
import signal
import shutil
import socket
import subprocess

import pytest

from common import BUILD_DIR, SRC_DIR, program, run
from smtpd_helpers import free_port, parse_queue_file, wait_for
from test_man_examples import examples

MAN_DIR = os.path.join(SRC_DIR, 'man')
POSTMAP = program('src/tools/postmap/postmap')
POSTALIAS = program('src/tools/postmap/postalias')
POSTCONF = program('src/tools/postconf/postconf')
POSTERNCTL = program('src/tools/posternctl/posternctl')
POSTCAT = program('src/tools/postcat/postcat')
BIN_DIRS = [program(d) for d in ('src/tools/postmap', 'src/tools/postconf',
                                 'src/tools/posternctl', 'src/smtpd')]

# The marked examples of each page, and the test files that use them.
TESTED = {
    'postmap.1': ['warnings', 'build and query', 'query several keys', 'query cidr'],
    'postalias.1': ['warnings', 'build and query'],
    'postconf.1': ['commands'],
    'posternctl.1': ['policy explain', 'commands'],
    'postern-maps.5': ['regexp warning', 'virtual', 'virtual_alias_maps',
                       'sender_checks.pcre', 'client_access.cidr', 'main.cf tables',
                       'postmap -q'],
    'postern-access.5': ['synopsis', 'sender_access'],
    'postern-smtpd.8': ['LoadCredential', 'dovecot', 'policy explain', 'testing'],
    'postern.7': ['listening addresses', 'credential', 'ReadWritePaths'],
    'bounce.5': ['synopsis', 'failure_template', 'diagnostic', 'bounce.cf'],
    'postern-queue.5': ['queue file'],
    'header_checks.5': ['synopsis', 'postmap -q'],
}
TESTED_ELSEWHERE = {
    'header_checks.5': ('test_header_checks.py', ['header_checks', 'body_checks']),
    'postern-deliver-remote.8': (('test_deliver_remote.py', 'test_smtp_sasl_client.py'),
                                 ['tls_policy', 'wrappermode', 'sasl', 'sasl_passwd']),
    'postern-smtpd.8': (('test_tls_sasl.py', 'test_smtpd.py'),
                        ['submission sender ownership', 'sender_logins', 'reject footer']),
    'postern-migrate.7': ('test_man_examples.py', [
        'postfix/main.cf', 'postfix/master.cf', 'command', 'report',
        'postern/main.cf (excerpt)', 'postern/services.d/submission.cf',
        'postern/services.d/smtps.cf',
        'postern/systemd/postern-smtpd.socket.d/50-migrated.conf', 'commands', 'dovecot']),
}
# Blocks that are not examples: (page, start of the first line): reason.
NOT_EXAMPLES = {
    ('header_checks.5', 'QUEUEID: reject: header Subject:'): 'log line of postern-smtpd',
    ('postern-maps.5', '\\fIparameter\\fR = \\fItype'): 'grammar',
    ('postern-maps.5', '.BI / pattern /'): 'grammar',
    ('postern-maps.5', '.IB network / length'): 'grammar',
    ('postern-bounce.8', '.B "Notify(h queue_file,'): 'D-Bus signature',
    ('postern-bounce.8', '.I "ORIG: sender non-delivery notification'): 'log lines',
    ('postern-deliver-remote.8', 'host mx.example.com[192.0.2.10] said:'): 'log text',
    ('postern-deliver-remote.8', 'Trusted TLS connection established to'): 'log line',
    ('postern-qmgr.8', 'QUEUEID: to=<rcpt>, orig_to=<rcpt>,'): 'log format',
    ('postern-smtpd.8', 'connect from unknown[192.0.2.1]'): 'log lines',
    ('postern-pickup.8', 'QUEUEID: uid=UID from=<sender>'): 'log lines',
    ('postern-deliver-remote.8', 'QUEUEID: Trusted TLS connection'): 'log lines',
    ('postern.7', '  SMTP client --25/587/465--> postern-smtpd'): 'mail flow diagram',
}

ROFF_CHARS = {'\\(dq': '"', '\\(:u': '\u00fc', '\\(:a': '\u00e4', '\\(:o': '\u00f6'}


def ex(page, name):
    """The text a reader sees of example NAME of PAGE: roff requests
    (.RS, .in, .ft) dropped, font changes removed, .B/.I lines unquoted."""
    out = []
    for line in examples(os.path.join(MAN_DIR, page))[name].splitlines():
        m = re.match(r'^\.[BI] "(.*)"$', line)
        if m:
            line = m[1]
        elif re.match(r'^\.(RS|RE|in|ft)\b', line):
            continue
        line = re.sub(r'\\f[BIRP]', '', line)
        for k, v in ROFF_CHARS.items():
            line = line.replace(k, v)
        out.append(line)
    return '\n'.join(out) + '\n'


def localize(text, root):
    return (text.replace('/etc/postern/', f'{root}/')
            .replace('/etc/postern', str(root))
            .replace('/etc/aliases', f'{root}/aliases'))


def shell(script, confdir, cwd=None, input=None):
    """Runs commands as a user would type them, with the built programs
    first in PATH and confdir as the configuration directory."""
    env = dict(os.environ, POSTERN_CONFIG_DIR=str(confdir),
               PATH=os.pathsep.join(BIN_DIRS + [os.environ.get('PATH', '/usr/bin:/bin')]))
    return subprocess.run(['/bin/sh', '-ec', script], input=input, capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=60)


def check_clean(confdir, *extra):
    """The configuration loads with postconf -n and passes posternctl check
    without warnings."""
    r = run([POSTCONF, '-c', str(confdir), '-n'])
    assert r.returncode == 0 and r.stderr == '', r.stderr
    r = run([POSTERNCTL, 'check', '-c', str(confdir)] + list(extra))
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'warning' not in r.stdout + r.stderr, r.stdout + r.stderr
    return r


def query(key, table, confdir=None):
    r = run([POSTMAP, '-q', key, table], confdir=confdir)
    assert r.returncode in (0, 1) and r.stderr == '', r.stderr
    return r.stdout.rstrip('\n') if r.returncode == 0 else None


@pytest.fixture
def conf(tmp_path):
    """A private configuration directory (in place of /etc/postern)."""
    d = tmp_path / 'postern'
    (d / 'services.d').mkdir(parents=True)
    # The pages' /etc/aliases lives here too (see localize()), indexed as
    # the set-up command's newaliases leaves it, so that no test depends on
    # the host having run newaliases.
    (d / 'main.cf').write_text('myhostname = mx.example.com\nmydomain = example.com\n'
                               'mynetworks = 127.0.0.0/8\n'
                               f'alias_maps = hash:{d}/aliases\n'
                               f'alias_database = hash:{d}/aliases\n')
    (d / 'aliases').write_text('postmaster: root\n')
    r = run([POSTALIAS, '-c', str(d), str(d / 'aliases')])
    assert r.returncode == 0, r.stderr
    return d


def make_cert(d):
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
                    '-keyout', str(d / 'key.pem'), '-out', str(d / 'cert.pem'), '-days', '2',
                    '-subj', '/CN=mx.example.com'], check=True, capture_output=True)
    return d / 'cert.pem', d / 'key.pem'


# --- the list of examples -------------------------------------------------

def blocks(path):
    """(marker or None, first line) of every .EX/.nf block of a page."""
    lines = open(path).read().splitlines()
    res = []
    for i, line in enumerate(lines):
        if line in ('.EX', '.nf'):
            m = re.match(r'^\.\\" example: (.+)$', lines[i - 1])
            first = next(x for x in lines[i + 1:] if not re.match(r'^\.(RS|in|ft)\b', x))
            res.append((m[1] if m else None, first))
    return res


def test_every_example_is_marked_and_tested():
    unmarked, markers = [], {}
    for path in sorted(glob.glob(os.path.join(MAN_DIR, '*.[1-8]'))):
        page = os.path.basename(path)
        for marker, first in blocks(path):
            if marker is None:
                if not any(p == page and first.startswith(f) for p, f in NOT_EXAMPLES):
                    unmarked.append(f'{page}: {first}')
            else:
                markers.setdefault(page, []).append(marker)
    assert unmarked == [], 'example blocks without a marker (add one, or list them in NOT_EXAMPLES)'
    want = {p: sorted(n) for p, n in TESTED.items()}
    for page, (_, names) in TESTED_ELSEWHERE.items():
        want[page] = sorted(want.get(page, []) + names)
    assert {p: sorted(n) for p, n in markers.items()} == want
    # Every NOT_EXAMPLES entry still exists.
    for page, start in NOT_EXAMPLES:
        firsts = [f for m, f in blocks(os.path.join(MAN_DIR, page)) if m is None]
        assert len([f for f in firsts if f.startswith(start)]) == 1, (page, start)


def test_every_marker_is_used():
    """Each name in TESTED is looked up by a test of this file (by a
    literal ex(PAGE, NAME) call); the others appear in their test file."""
    tree = ast.parse(open(__file__).read())
    used = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == 'ex' and len(node.args) == 2
                and all(isinstance(a, ast.Constant) for a in node.args)):
            used.add((node.args[0].value, node.args[1].value))
    listed = {(p, n) for p, names in TESTED.items() for n in names}
    assert listed - used == set(), 'examples listed but not used by a test'
    assert used - listed == set()
    here = os.path.dirname(os.path.abspath(__file__))
    for page, (fnames, names) in TESTED_ELSEWHERE.items():
        if isinstance(fnames, str):
            fnames = (fnames,)
        src = ''.join(open(os.path.join(here, f)).read() for f in fnames)
        for n in names:
            assert f"'{n}'" in src, (page, n)


# --- postmap(1), postalias(1), postern-maps(5) ----------------------------

def write_tables(conf):
    """The tables of postern-maps(5), built as their comments say."""
    (conf / 'virtual').write_text(localize(ex('postern-maps.5', 'virtual'), conf))
    (conf / 'sender_checks.pcre').write_text(ex('postern-maps.5', 'sender_checks.pcre'))
    (conf / 'client_access.cidr').write_text(ex('postern-maps.5', 'client_access.cidr'))
    # "# /etc/postern/virtual, then: postmap /etc/postern/virtual"
    first = (conf / 'virtual').read_text().splitlines()[0]
    cmd = first.split('then: ', 1)[1]
    r = shell(cmd, conf)
    assert r.returncode == 0 and r.stderr == '', r.stderr


def test_postmap_warnings(tmp_path):
    want = ex('postmap.1', 'warnings')
    lines = ['k%d value' % i for i in range(1, 31)]
    lines[0] = 'info@example.com alice'
    lines[11] = 'no-value-here'
    lines[29] = 'info@example.com bob'
    (tmp_path / 'virtual').write_text('\n'.join(lines) + '\n')
    r = subprocess.run([POSTMAP, 'virtual'], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0
    assert r.stderr == want
    # The first of duplicate keys wins.
    assert query('info@example.com', f'hash:{tmp_path}/virtual') == 'alice'


def test_postmap_examples(conf):
    write_tables(conf)
    (conf / 'virtual.db').unlink()
    shutil.copy(conf / 'sender_checks.pcre', conf / 'sender_checks')
    r = shell(localize(ex('postmap.1', 'build and query'), conf), conf)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert r.stdout == 'alice\n'
    # Neither key is listed in the table: no output, exit status 1.
    r = shell(localize(ex('postmap.1', 'query several keys'), conf), conf)
    assert (r.returncode, r.stdout, r.stderr) == (1, '', '')
    r = shell(localize(ex('postmap.1', 'query several keys'), conf)
              .replace('b@example.org', 'postmaster@example.org'), conf)
    assert (r.returncode, r.stdout) == (0, 'postmaster@example.org\tOK\n')
    r = shell(localize(ex('postmap.1', 'query cidr'), conf), conf)
    assert (r.returncode, r.stdout, r.stderr) == (0, 'OK\n', '')


def test_postalias_warnings(tmp_path):
    want = ex('postalias.1', 'warnings')
    lines = ['user%d: root' % i for i in range(1, 11)]
    lines[6] = 'no pair here'
    lines[8] = 'user@example.com: root'
    (tmp_path / 'aliases').write_text('\n'.join(lines) + '\n')
    r = run([POSTALIAS, str(tmp_path / 'aliases')], confdir=str(tmp_path))
    assert r.returncode == 0
    assert r.stderr.replace(str(tmp_path / 'aliases'), '/etc/aliases') == want


def test_postalias_examples(conf):
    (conf / 'aliases').write_text('postmaster: root\nroot: alice\n')
    r = shell(localize(ex('postalias.1', 'build and query'), conf), conf)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert r.stdout == 'root\n'
    assert (conf / 'aliases.db').exists()


def test_regexp_warning(conf):
    want = ex('postern-maps.5', 'regexp warning')
    (conf / 'checks.pcre').write_text('/^a/ OK\n/^b/ OK\n# comment\n/^c/q OK\n/^d/ OK\n')
    r = run([POSTMAP, '-q', 'dx', f'pcre:{conf}/checks.pcre'])
    assert r.stderr == localize(want, conf)
    # The rule is skipped, the others apply.
    assert r.returncode == 0 and r.stdout == 'OK\n'
    r = run([POSTMAP, '-q', 'cx', f'pcre:{conf}/checks.pcre'])
    assert r.returncode == 1 and r.stdout == ''


def test_virtual_aliases(conf):
    write_tables(conf)
    v = f'hash:{conf}/virtual'
    assert query('info@example.com', v) == 'alice'
    assert query('sales@example.com', v) == 'alice, bob'
    assert query('@example.org', v) == 'catchall@example.com'
    with open(conf / 'main.cf', 'a') as f:
        f.write(localize(ex('postern-maps.5', 'virtual_alias_maps'), conf))
    check_clean(conf)
    r = run([POSTCONF, '-c', str(conf), '-h', 'virtual_alias_maps'])
    assert r.stdout == v + '\n'


@pytest.mark.parametrize('key,want', [
    ('postmaster@example.org', 'OK'),
    ('joe+lists@example.com', 'PREPEND X-Original-User: joe'),
    ('joe@example.com', None),
    ('joe+lists@example.net', None),
    ('bob@spam.example', 'REJECT no mail from spam.example'),
    ('bob@mx.spam.example', 'REJECT no mail from mx.spam.example'),
])
def test_sender_checks(conf, key, want):
    (conf / 'sender_checks.pcre').write_text(ex('postern-maps.5', 'sender_checks.pcre'))
    assert query(key, f'pcre:{conf}/sender_checks.pcre') == want


@pytest.mark.parametrize('key,want', [
    ('192.0.2.10', 'OK'),
    ('2001:db8::25', 'OK'),
    ('2001:db9::25', None),         # an IPv4 pattern never matches IPv6
    ('198.51.100.7', 'REJECT'),
    ('198.51.100.8', None),
    ('203.0.113.1', 'DUNNO'),
    ('mail.example.com', None),
])
def test_client_access_cidr(conf, key, want):
    (conf / 'client_access.cidr').write_text(ex('postern-maps.5', 'client_access.cidr'))
    assert query(key, f'cidr:{conf}/client_access.cidr') == want


def test_maps_queries(conf):
    write_tables(conf)
    r = shell(localize(ex('postern-maps.5', 'postmap -q'), conf), conf)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert r.stdout == 'PREPEND X-Original-User: joe\nOK\n'


def test_main_cf_tables(conf):
    with open(conf / 'main.cf', 'a') as f:
        f.write(ex('postern-maps.5', 'main.cf tables'))
    check_clean(conf)
    r = run([POSTCONF, '-c', str(conf), '-h', 'transport_maps', 'relay_recipient_maps'])
    assert r.returncode == 0
    transport, relay = r.stdout.splitlines()
    assert query('example.net', transport) == 'smtp:[relay.example.net]:587'
    assert query('example.org', transport) == 'lmtp:unix:private/dovecot-lmtp'
    assert query('example.com', transport) is None
    assert query('anyone@example.com', relay) == 'OK'


# --- postern-access(5) ----------------------------------------------------

@pytest.mark.parametrize('sender,verdict', [
    ('spammer@example.org',
     'reject (554 5.7.1 <spammer@example.org>: Sender address rejected: Access denied)'),
    ('bob@example.net',
     'reject (450 4.7.1 <bob@example.net>: Sender address rejected: try again tomorrow)'),
    ('news@example.com', 'accept'),
    ('info@example.com',
     'reject (550 5.7.1 <info@example.com>: Sender address rejected: '
     'no mail from info@ anywhere)'),
    ('info@example.org',
     'reject (550 5.7.1 <info@example.org>: Sender address rejected: '
     'no mail from info@ anywhere)'),
    # The domain is looked up before "user@".
    ('info@example.net',
     'reject (450 4.7.1 <info@example.net>: Sender address rejected: try again tomorrow)'),
    ('bob@example.com', 'accept'),
])
def test_access_table(conf, sender, verdict):
    syn = localize(ex('postern-access.5', 'synopsis'), conf).splitlines()
    with open(conf / 'main.cf', 'a') as f:
        f.write(''.join(line + '\n' for line in syn if ' = ' in line))
    (conf / 'sender_access').write_text(ex('postern-access.5', 'sender_access'))
    (conf / 'client_access').write_text('')
    for cmd in [line for line in syn if ' = ' not in line] + [f'postmap {conf}/client_access']:
        r = shell(cmd, conf)
        assert r.returncode == 0 and r.stderr == '', r.stderr
    check_clean(conf)
    r = run([POSTERNCTL, 'policy', 'explain', '--client', '192.0.2.10', '--from', sender,
             '--to', 'postmaster@mx.example.com', '--no-dns'], confdir=str(conf))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == 'verdict: ' + verdict


# --- postconf(1), posternctl(1) -------------------------------------------

def test_postconf_examples(conf):
    cmds = ex('postconf.1', 'commands').splitlines()
    out = []
    for cmd in cmds:
        r = shell(cmd, conf)
        assert r.returncode == 0 and r.stderr == '', (cmd, r.stderr)
        out.append(r.stdout)
    assert 'myhostname = mx.example.com\n' in out[0]
    assert out[1] == ('myhostname = mx.example.com\n'
                      'mydestination = $myhostname, localhost.$mydomain, localhost\n')
    main = (conf / 'main.cf').read_text()
    assert 'relayhost = [smtp.example.net]:587\n' in main
    assert 'myorigin = $mydomain\n' in main
    assert (conf / 'services.d' / 'submission.cf').read_text() == \
        'smtpd_tls_security_level = encrypt\n'
    r = run([POSTCONF, '-P'], confdir=str(conf))
    assert r.stdout == 'submission/inet/smtpd_tls_security_level = encrypt\n'
    assert re.fullmatch(r'myorigin = [^$\s]+\n', out[4])
    # The result passes the check once the certificate it needs is there.
    cert, key = make_cert(conf)
    with open(conf / 'main.cf', 'a') as f:
        f.write(f'smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n')
    check_clean(conf)


def systemctl_verbs():
    r = run(['systemctl', '--help'])
    return set(re.findall(r'^\s+([a-z][a-z-]+)\s', r.stdout, re.M)), r.stdout


def check_systemctl(cmd):
    """A systemctl command line names a verb and options systemctl has, and
    units postern ships."""
    args = shlex.split(cmd)
    assert args[0] == 'systemctl'
    verbs, text = systemctl_verbs()
    assert args[1] in verbs, args[1]
    for a in args[2:]:
        if a.startswith('-'):
            assert re.search(r'\s' + re.escape(a) + r'\b', text), a
        else:
            assert os.path.exists(os.path.join(SRC_DIR, 'units', a)) or \
                os.path.exists(os.path.join(SRC_DIR, 'units', a + '.in')), a


def test_posternctl_examples(conf):
    cmds = ex('posternctl.1', 'commands').splitlines()
    check, reload = cmds[0].split(' && ')
    r = shell(check, conf)
    assert r.returncode == 0 and 'configuration OK' in r.stdout + r.stderr
    check_systemctl(reload)
    r = shell(cmds[1], conf)
    assert r.returncode == 0
    assert json.loads(r.stdout) == []
    r = shell(cmds[2], conf)
    assert r.returncode == 0
    assert json.loads(r.stdout)['myhostname'] == 'mx.example.com'
    # A configuration with an error fails the check, so that "&&" does not
    # reload it.
    with open(conf / 'main.cf', 'a') as f:
        f.write('smtpd_tls_security_level = encrypt\n')
    assert shell(check, conf).returncode == 1
    assert json.loads(shell(cmds[1], conf).stdout)[0]['level'] == 'error'


def test_policy_explain(conf):
    want = ex('posternctl.1', 'policy explain')
    assert ex('postern-smtpd.8', 'policy explain') == want
    for extra in ([], ['--no-dns']):
        r = run([POSTERNCTL, 'policy', 'explain', '--client', '192.0.2.10',
                 '--to', 'a@b.example'] + extra, confdir=str(conf))
        assert r.returncode == 0, r.stderr
        assert r.stdout == want


# --- postern-smtpd(8), postern(7): units, Dovecot, testing ----------------

def unit_dir(tmp_path):
    """The units as built, in a directory of their own."""
    d = tmp_path / 'units'
    d.mkdir()
    for f in glob.glob(os.path.join(SRC_DIR, 'units', '*')):
        if not f.endswith(('.in', 'meson.build')):
            shutil.copy(f, d)
    for f in glob.glob(os.path.join(BUILD_DIR, 'units', '*')):
        if os.path.isfile(f):
            shutil.copy(f, d)
    return d


def verify_dropin(tmp_path, unit, text):
    """Installs text as a drop-in of unit and has systemd check it; without
    a working systemd-analyze the keys are compared with the unit files."""
    units = unit_dir(tmp_path)
    dropin = units / (unit + '.d') / 'override.conf'
    dropin.parent.mkdir()
    section = text.splitlines()[0]
    assert re.fullmatch(r'\[(Socket|Service)\]', section)
    keys = [line.split('=', 1)[0] for line in text.splitlines()[1:] if line]
    if not shutil.which('systemd-analyze'):
        shipped = (units / unit).read_text() if (units / unit).exists() else \
            open(os.path.join(SRC_DIR, 'units', unit + '.in')).read()
        for k in keys:
            assert re.search(r'^#?\s*' + k + '=', shipped, re.M), k
        return units

    def verify():
        return run(['systemd-analyze', 'verify', '--man=no', str(units / unit)],
                   env={'SYSTEMD_UNIT_PATH': f'{units}:'})
    # The drop-in is read: an unknown key in it is reported.
    dropin.write_text(text + 'NoSuchKey=1\n')
    r = verify()
    if 'override.conf' not in r.stderr:
        pytest.skip('systemd-analyze verify does not read drop-ins here: ' + r.stderr)
    dropin.write_text(text)
    r = verify()
    assert 'override.conf' not in r.stderr, r.stderr
    return units


def split_edit(text):
    """A "# systemctl edit UNIT" block: (unit, drop-in text, other commands)."""
    lines = text.splitlines()
    m = re.fullmatch(r'# (systemctl edit (\S+))', lines[0])
    assert m
    check_systemctl(m[1])
    body, rest = [], []
    for line in lines[1:]:
        (rest if rest or not line else body).append(line)
    cmds = [line[2:] for line in rest if line.startswith('# ')]
    assert len(cmds) == len([line for line in rest if line])
    return m[2], '\n'.join(body) + '\n', cmds


def test_listening_addresses(tmp_path, conf):
    unit, dropin, cmds = split_edit(ex('postern.7', 'listening addresses'))
    assert unit == 'postern-smtpd.socket'
    units = verify_dropin(tmp_path, unit, dropin)
    # Only postern-smtpd.socket is configured for these addresses here.
    for other in ('postern-submission.socket', 'postern-smtps.socket'):
        (units / other).unlink()
    # Without the main.cf line, posternctl check sees the disagreement.
    (units / (unit + '.d') / 'override.conf').write_text(dropin)
    r = run([POSTERNCTL, 'check', '-c', str(conf), '--unit-dir', str(units)])
    assert 'inet_interfaces' in r.stdout + r.stderr
    for cmd in cmds:
        if cmd.startswith('systemctl'):
            check_systemctl(cmd)
            continue
        r = shell(cmd, conf)
        assert r.returncode == 0 and r.stderr == '', r.stderr
    assert run([POSTCONF, '-c', str(conf), '-h', 'inet_interfaces']).stdout == \
        '192.0.2.25, 2001:db8::25\n'
    check_clean(conf, '--unit-dir', str(units))


def test_credential_dropin(tmp_path):
    unit, dropin, cmds = split_edit(ex('postern.7', 'credential'))
    assert unit == 'postern-smtpd.service' and cmds == []
    verify_dropin(tmp_path, unit, dropin)


def test_read_write_paths_dropin(tmp_path):
    unit, dropin, cmds = split_edit(ex('postern.7', 'ReadWritePaths'))
    assert unit == 'postern-deliver-local.service' and cmds == []
    verify_dropin(tmp_path, unit, dropin)


def test_load_credential(tmp_path):
    line = ex('postern-smtpd.8', 'LoadCredential').strip()
    assert line.startswith('LoadCredential=smtpd_tls_key_file:')
    verify_dropin(tmp_path, 'postern-smtpd.service', '[Service]\n' + line + '\n')
    # The units carry such a line, commented out.
    for svc in ('smtpd', 'submission', 'smtps'):
        text = open(os.path.join(SRC_DIR, 'units', f'postern-{svc}.service.in')).read()
        assert '#LoadCredential=smtpd_tls_key_file:' in text
    # postern(7) shows the same credential name.
    assert 'LoadCredential=smtpd_tls_key_file:' in ex('postern.7', 'credential')


@pytest.mark.skipif(not os.access('/usr/bin/doveconf', os.X_OK), reason='no doveconf')
def test_dovecot_auth_listener(tmp_path):
    conf = tmp_path / 'dovecot.conf'
    conf.write_text('protocols = lmtp\nssl = no\n' + ex('postern-smtpd.8', 'dovecot'))
    r = run(['/usr/bin/doveconf', '-c', str(conf), '-n'])
    assert r.returncode == 0, r.stderr
    assert 'unix_listener /var/spool/postern/private/auth {' in r.stdout
    # The path is smtpd_sasl_path's default below the default queue directory.
    d = run([POSTCONF, '-d', 'smtpd_sasl_path', 'queue_directory']).stdout
    assert 'smtpd_sasl_path = private/auth\n' in d
    assert 'queue_directory = /var/spool/postern\n' in d


def test_testing_command(tmp_path):
    cmd = ex('postern-smtpd.8', 'testing')
    assert '127.0.0.1:2525' in cmd and '-c ./conf' in cmd
    port = free_port()
    queue = tmp_path / 'queue'
    for d in ('incoming', 'active', 'deferred', 'hold', 'corrupt', 'maildrop'):
        (queue / d).mkdir(parents=True)
    (tmp_path / 'conf').mkdir()
    (tmp_path / 'conf' / 'main.cf').write_text(
        f'myhostname = mx.example.test\nqueue_directory = {queue}\n')
    env = dict(os.environ)
    env.pop('LISTEN_FDS', None)
    env['PATH'] = os.pathsep.join(BIN_DIRS + [env.get('PATH', '/usr/bin:/bin')])
    proc = subprocess.Popen(['/bin/sh', '-c', 'exec ' + cmd.replace('2525', str(port))],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def banner():
            assert proc.poll() is None, 'the command exited'
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=5) as s:
                    s.settimeout(10)
                    data = s.recv(4096)
                    s.sendall(b'EHLO client.example\r\n')
                    while b'\r\n250 ' not in data:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    s.sendall(b'QUIT\r\n')
                    return data
            except OSError:
                return None
        data = wait_for(banner, what='postern-smtpd on port %d' % port).decode()
        assert data.startswith('220 mx.example.test ESMTP')
        assert '250-mx.example.test' in data or '250 mx.example.test' in data
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- bounce(5) -------------------------------------------------------------

BOUNCE = program('src/bounce/postern-bounce')
bounce_built = pytest.mark.skipif(
    not (os.path.exists(BOUNCE) and os.path.exists(program('src/bounce/test-bounce-client'))),
    reason='postern-bounce not built')


@pytest.fixture
def bounce_service():
    from test_bounce import BounceService
    started = []

    def make(template):
        b = BounceService(files={'bounce.cf': template})
        # bounce(5) SYNOPSIS: the parameter names the file, relative to the
        # configuration directory.
        r = shell(ex('bounce.5', 'synopsis').strip(), b.confdir)
        assert r.returncode == 0 and r.stderr == '', r.stderr
        started.append(b)
        return b.start()
    yield make
    for b in started:
        b.cleanup()


def notify(b, kind):
    from test_bounce import parts
    qid = b.original(rcpts=[('user@example.net', 'DELAY,FAILURE', '-')])
    rid = b.notify(qid, kind, [(0, 'user@example.net', '', '5.1.1' if kind == 'failure'
                                else '4.4.1', '550 5.1.1 unknown user')])
    _, msg = b.report(rid)
    text = parts(msg)[0]
    return msg, text.get_content_charset(), text.get_payload(decode=True).decode(
        text.get_content_charset())


@bounce_built
def test_bounce_template_excerpt(bounce_service):
    b = bounce_service(ex('bounce.5', 'failure_template'))
    msg, charset, text = notify(b, 'failure')
    assert msg['From'] == 'Mail Delivery System <MAILER-DAEMON@mx.example.test>'
    assert msg['Subject'] == 'Undelivered Mail Returned to Sender'
    assert charset == 'us-ascii'
    assert text.startswith('This is the mail system at host mx.example.test.\n...\n')


@bounce_built
def test_bounce_template_example(bounce_service):
    tmpl = ex('bounce.5', 'bounce.cf')
    assert tmpl.startswith('# /etc/postern/bounce.cf\n')
    b = bounce_service(tmpl)
    msg, charset, text = notify(b, 'failure')
    assert msg['Subject'] == 'Nachricht nicht zustellbar'
    assert charset == 'utf-8'
    assert text.startswith('Dies ist das Mailsystem von mx.example.test.\n\n'
                           'Ihre Nachricht konnte nicht zugestellt werden. Die Gr\u00fcnde\n')
    msg, charset, text = notify(b, 'delay')
    assert msg['Subject'] == 'Still trying to deliver your message'
    # maximal_queue_lifetime is 5d by default.
    assert text.startswith('We will keep trying for 5 days in all.\n')
    assert 'warning' not in b.log_text()


@bounce_built
def test_bounce_template_diagnostic(bounce_service):
    want = ex('bounce.5', 'diagnostic').strip()
    m = re.fullmatch(r'bounce\.cf:2: error: (\w+): unknown header "(.*)"', want)
    b = bounce_service(f'{m[1]} = <<EOF\n{m[2]}\n\ntext\nEOF\n')
    qid = b.original()
    p = b.notify(qid, 'failure', [(0, 'user@example.net', '', '5.1.1', 'x')], check=False)
    assert p.returncode != 0
    b.wait_log(want)
    assert b.incoming() == []


# --- postern-queue(5) ------------------------------------------------------

def test_queue_file_example(tmp_path, conf):
    lines = ex('postern-queue.5', 'queue file').splitlines()
    header = lines[0].ljust(63) + '\n'
    i = next(n for n, line in enumerate(lines) if line.startswith('id='))
    content = ''.join(line + '\n' for line in lines[1:i]).encode()
    envelope = ''.join(line + '\n' for line in lines[i:]).encode()
    data = header.encode() + content + envelope
    hdr, body, env = parse_queue_file(data)   # sizes and layout agree
    assert hdr['size'] == len(body) == int(env['size'])
    qid = env['id']
    assert re.fullmatch(r'[0-9A-Za-z]{16}', qid)
    assert env['rcpt'][1] == ('-', 'SUCCESS,FAILURE', 'rfc822;two+20words@example.com',
                              '"two words"@example.com')
    queue = tmp_path / 'queue'
    (queue / 'incoming').mkdir(parents=True)
    (queue / 'incoming' / qid).write_bytes(data)
    with open(conf / 'main.cf', 'a') as f:
        f.write(f'queue_directory = {queue}\n')
    r = run([POSTCAT, '-c', str(conf), '-q', qid])
    assert r.returncode == 0, r.stderr
    assert 'sender@example.org' in r.stdout
    assert 'one@example.com' in r.stdout
    assert '"two words"@example.com' in r.stdout
    assert 'Subject: hi' in r.stdout


# --- header_checks(5) ------------------------------------------------------

def test_header_checks_synopsis_and_query(conf):
    syn = localize(ex('header_checks.5', 'synopsis'), conf)
    (conf / 'header_checks').write_text(examples(os.path.join(MAN_DIR, 'header_checks.5'))
                                        ['header_checks'])
    (conf / 'body_checks').write_text(examples(os.path.join(MAN_DIR, 'header_checks.5'))
                                      ['body_checks'])
    with open(conf / 'main.cf', 'a') as f:
        f.write(syn)
    check_clean(conf)
    r = shell(localize(ex('header_checks.5', 'postmap -q'), conf), conf)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert r.stdout == 'REJECT Message content rejected\n'


# --- every program and parameter has its documentation --------------------

def installed_files():
    """Installed path -> source path, from meson's introspection of the
    build directory (links such as mailq and newaliases included)."""
    r = subprocess.run(['meson', 'introspect', '--installed', BUILD_DIR], capture_output=True,
                       text=True, check=True)
    return {dest: src for src, dest in json.loads(r.stdout).items()}


def test_every_installed_program_has_a_page():
    installed = installed_files()
    programs = sorted(os.path.basename(d) for d in installed
                      if re.search(r'/(bin|sbin|libexec/postern)/[^/]+$', d))
    assert {'postern-smtpd', 'postconf', 'sendmail', 'mailq', 'newaliases'} <= set(programs)
    pages = {os.path.basename(d): s for d, s in installed.items()
             if re.search(r'/man/man[1-8]/[^/]+$', d)}
    missing, not_installed = [], []
    for name in programs:
        # Commands in section 1, daemons (libexec) in section 8.
        page = name + ('.8' if name.startswith('postern-') else '.1')
        if not os.path.exists(os.path.join(MAN_DIR, page)):
            missing.append(page)
        elif os.path.realpath(pages.get(page, '')) != os.path.realpath(os.path.join(MAN_DIR, page)):
            not_installed.append(page)
    assert missing == [], 'programs without a manual page'
    assert not_installed == [], 'pages that man/meson.build does not install'
    # And every page in man/ is installed.
    for path in glob.glob(os.path.join(MAN_DIR, '*.[1-8]')):
        assert os.path.basename(path) in pages, path


def table_parameters():
    names = []
    with open(os.path.join(SRC_DIR, 'src', 'shared', 'conf-params.tab')) as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith('#'):
                names.append(line.split('|')[0].strip())
    return names


def test_generated_conf_page_has_every_parameter():
    page = open(os.path.join(BUILD_DIR, 'man', 'postern.conf.5')).read()
    params = page.split('\n.SH PARAMETERS\n', 1)[1].split('\n.SH ', 1)[0]
    documented = re.findall(r'^\.TP\n\.B (\S+)\n', params, re.M)
    names = table_parameters()
    assert len(names) > 250
    assert len(documented) == len(names)
    assert sorted(documented) == sorted(names)
    # Each entry states its type, default and readers.
    entries = params.split('.TP\n')[1:]
    assert len(entries) == len(names)
    for e in entries:
        assert '\nType: ' in e and '\nDefault' in e and '\nRead by: ' in e, e


# --- daemon pages: units, bus, journal fields, sandbox ----------------------

DAEMONS = {
    'postern-smtpd.8': ('smtpd', ['postern-smtpd', 'postern-submission', 'postern-smtps']),
    'postern-qmgr.8': ('qmgr', ['postern-qmgr']),
    'postern-deliver-remote.8': ('deliver-remote', ['postern-deliver-remote']),
    'postern-deliver-local.8': ('deliver-local', ['postern-deliver-local']),
    'postern-bounce.8': ('bounce', ['postern-bounce']),
    'postern-pickup.8': ('pickup', ['postern-pickup']),
}
UNITS_DIR = os.path.join(SRC_DIR, 'units')


def page_text(page):
    """The page's source with roff escapes that split words undone."""
    text = open(os.path.join(MAN_DIR, page)).read()
    return text.replace('\\-', '-').replace('\\~', ' ').replace('\\e', '\\')


def section(text, name):
    m = re.search(r'^\.SH "?%s"?\n(.*?)(?=^\.SH |\Z)' % re.escape(name), text, re.M | re.S)
    return m[1] if m else ''


def unit_settings(path):
    settings = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith(('#', '[')) and '=' in line:
            k, v = line.split('=', 1)
            settings.setdefault(k, []).append(v)
    return settings


def journal_fields(role):
    """The POSTERN_* fields the role's sources log (environment variable
    names, read with getenv(), are not fields)."""
    names, env = set(), set()
    for path in glob.glob(os.path.join(SRC_DIR, 'src', role, '*.c')):
        if os.path.basename(path).startswith(('test-', 'fuzz-')):
            continue
        src = open(path).read()
        names |= set(re.findall(r'"(POSTERN_[A-Z_]+)"', src))
        env |= set(re.findall(r'(?:getenv|setenv)\("(POSTERN_[A-Z_]+)"', src))
        # log_mail(LEVEL, MSGID, QID, ...) with a queue ID.
        if re.search(r'log_mail\(\s*\w+,\s*\w+,\s*(?!NULL\b)', src):
            names.add('POSTERN_QUEUE_ID')
    return names - env


@pytest.mark.parametrize('page', sorted(DAEMONS))
def test_daemon_page_units_bus_fields_sandbox(page):
    role, unit_names = DAEMONS[page]
    text = page_text(page)
    # Every unit of the role, and its service unit in particular.
    units = sorted(os.path.basename(u).removesuffix('.in')
                   for n in unit_names for u in glob.glob(os.path.join(UNITS_DIR, n + '.*')))
    assert any(u.endswith('.service') for u in units)
    assert any(u.endswith(('.socket', '.path', '.timer')) for u in units)
    for u in units:
        assert u in text, (page, u)
    # The bus: the interface served, or the one called.
    assert re.search(r'^\.S[HS] "?(D-)?BUS INTERFACE"?$', text, re.M | re.I), page
    assert 'org.postern.' in text
    # Every journal field the sources log.
    fields = journal_fields(role)
    assert 'POSTERN_QUEUE_ID' in fields
    missing = sorted(f for f in fields if f not in text)
    assert missing == [], (page, missing)
    assert 'MESSAGE_ID' in text and 'SYSLOG_IDENTIFIER' in text
    # The sandbox of each service unit.
    sandbox = section(text, 'SANDBOX')
    assert sandbox, page + ' has no SANDBOX section'
    for u in units:
        if not u.endswith('.service'):
            continue
        st = unit_settings(os.path.join(UNITS_DIR, u + '.in'))
        assert st['User'][0] in sandbox
        caps = ' '.join(st.get('CapabilityBoundingSet', [''])).split()
        assert 'CapabilityBoundingSet' in sandbox
        for cap in caps:
            assert cap in sandbox, (u, cap)
        for paths in st.get('ReadWritePaths', []):
            for p in paths.split():
                p = p.lstrip('-')
                if p.startswith('@SPOOLDIR@/'):
                    assert p.split('/', 1)[1] in sandbox, (u, p)
                else:
                    assert p.replace('@SPOOLDIR@', '/var/spool/postern') in sandbox, (u, p)
        for key in ('PrivateNetwork', 'IPAddressDeny'):
            if key in st:
                assert '%s=%s' % (key, st[key][0]) in sandbox, (u, key)
        families = ' '.join(st['RestrictAddressFamilies'])
        assert families in sandbox, (u, families)
        for f in st['SystemCallFilter']:
            for group in f.lstrip('~').split():
                assert group in sandbox, (u, group)
    # And the overview.
    see_also = section(text, 'SEE ALSO')
    assert re.search(r'^\.BR postern \(7\)', see_also, re.M), page
