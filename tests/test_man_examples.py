"""The examples of postern-migrate(7) are exercised: the snippets marked in
the roff source with a comment line '.\\" example: NAME' before an .EX/.EE
(or .nf/.fi) block are extracted, the Postfix configuration is migrated
with the command shown, and the report and the files shown must be what
the built posternctl prints and writes; the commands shown are run (all
but those that need a running systemd) and the result must pass
"posternctl check". Paths of the examples (/etc/postfix, /etc/postern,
/etc/aliases, the certificate directory) are moved into a private
directory."""
import os
import re
import subprocess

import pytest

from common import SRC_DIR, program, run

MAN_PAGE = os.path.join(SRC_DIR, 'man', 'postern-migrate.7')
POSTERNCTL = program('src/tools/posternctl/posternctl')
CERT_DIR = '/etc/letsencrypt/live/mail.example.com'


def unescape(line):
    """The text a reader sees for one line of an .EX block."""
    if line.startswith('\\&'):
        line = line[2:]
    line = line.replace('\\-', '-').replace('\\(aq', "'").replace('\\&', '')
    return line.replace('\\e', '\\')


def examples(path=MAN_PAGE):
    """The marked examples of a man page: {name: text}."""
    res = {}
    lines = open(path).read().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'^\.\\" example: (.+)$', line)
        if not m:
            continue
        start = lines[i + 1]
        assert start in ('.EX', '.nf'), f'{path}:{i + 2}: example {m[1]} has no .EX/.nf'
        end = '.EE' if start == '.EX' else '.fi'
        body = []
        for b in lines[i + 2:]:
            if b == end:
                break
            body.append(unescape(b))
        res[m[1]] = '\n'.join(body) + '\n'
    return res


@pytest.fixture
def root(tmp_path):
    """A private file system tree for the paths of the examples."""
    for d in ('etc/postfix', 'etc/postern', 'certs'):
        (tmp_path / d).mkdir(parents=True)
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
                    '-keyout', str(tmp_path / 'certs' / 'privkey.pem'),
                    '-out', str(tmp_path / 'certs' / 'fullchain.pem'), '-days', '2',
                    '-subj', '/CN=mail.example.com'], check=True, capture_output=True)
    # /etc/aliases and its index exist on the system being migrated.
    (tmp_path / 'etc' / 'aliases').write_text('postmaster: root\n')
    subprocess.run([program('src/tools/postmap/postalias'), '-c', str(tmp_path / 'etc'),
                    f'hash:{tmp_path}/etc/aliases'], check=True)
    return tmp_path


def localize(text, root):
    return (text.replace(CERT_DIR, f'{root}/certs')
            .replace('/etc/postfix', f'{root}/etc/postfix')
            .replace('/etc/postern', f'{root}/etc/postern')
            .replace('/etc/aliases', f'{root}/etc/aliases'))


def test_all_examples_marked():
    ex = examples()
    assert sorted(ex) == sorted([
        'postfix/main.cf', 'postfix/master.cf', 'command', 'report',
        'postern/main.cf (excerpt)', 'postern/services.d/submission.cf',
        'postern/services.d/smtps.cf',
        'postern/systemd/postern-smtpd.socket.d/50-migrated.conf', 'commands', 'dovecot'])
    # Every .EX block of the page is a marked example.
    text = open(MAN_PAGE).read()
    assert text.count('\n.EX\n') == len(ex)


def test_worked_example(root):
    ex = examples()
    pf = root / 'etc' / 'postfix'
    pn = root / 'etc' / 'postern'
    (pf / 'main.cf').write_text(localize(ex['postfix/main.cf'], root))
    (pf / 'master.cf').write_text(ex['postfix/master.cf'])
    (pf / 'vmailbox').write_text('info@example.net    example.net/info/\n')
    (pf / 'virtual').write_text('postmaster@example.net    info@example.net\n')
    # The Postfix configuration is valid for Postfix's own postconf.
    if os.access('/usr/sbin/postconf', os.X_OK):
        r = run(['/usr/sbin/postconf', '-c', str(pf), '-n'])
        assert r.returncode == 0, r.stderr
        r = run(['/usr/sbin/postconf', '-c', str(pf), '-M'])
        assert r.returncode == 0, r.stderr
    # The shipped main.cf of a fresh installation, replaced with --force.
    (pn / 'main.cf').write_text('# shipped\n')

    cmd = localize(ex['command'], root).split()
    assert cmd[0] == 'posternctl'
    r = run([POSTERNCTL] + cmd[1:])
    assert r.returncode == 2, r.stderr
    assert r.stdout.replace(str(root), '') == ex['report']

    for name in ('services.d/submission.cf', 'services.d/smtps.cf',
                 'systemd/postern-smtpd.socket.d/50-migrated.conf'):
        assert (pn / name).read_text().replace(str(root), '') == ex['postern/' + name]
    # The excerpt's lines appear in this order in the new main.cf.
    main = (pn / 'main.cf').read_text().replace(str(root), '').splitlines()
    pos = 0
    for line in ex['postern/main.cf (excerpt)'].splitlines():
        if line == '...':
            continue
        assert line in main[pos:], line
        pos = main.index(line, pos) + 1

    # The commands that finish the migration; those that need the
    # system's systemd are only compared with the report.
    steps = ex['commands'].splitlines()
    report_steps = [s[2:] for s in ex['report'].split('next steps:\n')[1].splitlines()]
    for s in steps:
        if s.startswith(('systemctl', 'cp ')):
            assert s in report_steps or s == 'systemctl disable --now postfix.service'
            continue
        assert s in report_steps
        args = localize(s, root).split()
        if args[0] == 'posternctl':
            r = run([POSTERNCTL] + args[1:])
            assert r.returncode == 0, r.stderr
            assert r.stderr == ''
        else:
            r = run([program(f'src/tools/postmap/{args[0]}'), '-c', str(pn)] + args[1:])
            assert r.returncode == 0, r.stderr
    r = run([program('src/tools/postconf/postconf'), '-c', str(pn), '-n'])
    assert r.returncode == 0 and r.stderr == ''


def test_dry_run_of_worked_example(root):
    ex = examples()
    pf = root / 'etc' / 'postfix'
    (pf / 'main.cf').write_text(localize(ex['postfix/main.cf'], root))
    (pf / 'master.cf').write_text(ex['postfix/master.cf'])
    cmd = localize(ex['command'], root).split() + ['--dry-run']
    r = run([POSTERNCTL] + cmd[1:])
    assert r.returncode == 2
    assert os.listdir(root / 'etc' / 'postern') == []


@pytest.mark.skipif(not os.access('/usr/bin/doveconf', os.X_OK), reason='no doveconf')
def test_dovecot_snippet(tmp_path):
    conf = tmp_path / 'dovecot.conf'
    conf.write_text('protocols = lmtp\nssl = no\n' + examples()['dovecot'])
    r = run(['/usr/bin/doveconf', '-c', str(conf), '-n'])
    assert r.returncode == 0, r.stderr
    assert 'unix_listener /var/spool/postern/private/dovecot-lmtp {' in r.stdout
