"""Integration tests for postmap, postalias and newaliases: run the built
programs as an administrator would and check their output, their exit
status, the files they leave behind, and that tables built by postern and
by Postfix's own postmap/postalias read back the same either way."""
import os
import shutil
import stat
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_DIR = os.environ.get('POSTERN_BUILD_DIR') or os.path.join(os.path.dirname(HERE), 'build')
POSTMAP = os.path.join(BUILD_DIR, 'src', 'tools', 'postmap', 'postmap')
POSTALIAS = os.path.join(BUILD_DIR, 'src', 'tools', 'postmap', 'postalias')
POSTFIX_POSTMAP = '/usr/sbin/postmap'
POSTFIX_POSTALIAS = '/usr/sbin/postalias'

needs_postfix = pytest.mark.skipif(
    not os.access(POSTFIX_POSTMAP, os.X_OK) or not os.access(POSTFIX_POSTALIAS, os.X_OK),
    reason='Postfix postmap/postalias not installed (/usr/sbin/postmap): '
           'cannot check interoperability with Postfix tables')


def run(args, input=None, confdir=None, cwd=None):
    env = dict(os.environ)
    env.pop('POSTERN_CONFIG_DIR', None)
    if confdir:
        env['POSTERN_CONFIG_DIR'] = str(confdir)
    return subprocess.run([str(a) for a in args], input=input, capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


@pytest.fixture
def confdir(tmp_path):
    """A private configuration directory with an empty main.cf."""
    d = tmp_path / 'conf'
    d.mkdir()
    (d / 'main.cf').write_text('')
    return d


@pytest.fixture
def postfix_confdir(tmp_path):
    """A configuration directory for Postfix's own tools: an empty main.cf."""
    d = tmp_path / 'postfix-conf'
    d.mkdir()
    (d / 'main.cf').write_text('')
    return d


def postmap(*args, confdir=None, input=None, cwd=None):
    pre = ['-c', confdir] if confdir else []
    return run([POSTMAP, *pre, *args], input=input, cwd=cwd)


def postalias(*args, confdir=None, input=None, cwd=None):
    pre = ['-c', confdir] if confdir else []
    return run([POSTALIAS, *pre, *args], input=input, cwd=cwd)


VIRTUAL = """\
# virtual aliases
Info@Example.COM    alice
sales@example.com   alice,
    bob
onlykey
info@example.com    duplicate
"quoted key"        quoted value
"""


def test_build_and_query(tmp_path, confdir):
    src = tmp_path / 'virtual'
    src.write_text(VIRTUAL)
    r = postmap(src, confdir=confdir)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ''
    assert r.stderr.splitlines() == [
        f'postmap: warning: {src}, line 5: expected format: key whitespace value',
        f'postmap: warning: {src}, line 6: duplicate entry: "info@example.com"',
    ]
    assert (tmp_path / 'virtual.db').is_file()

    # Keys were folded when building, and the query is folded too.
    r = postmap('-q', 'INFO@example.com', f'hash:{src}', confdir=confdir)
    assert (r.returncode, r.stdout, r.stderr) == (0, 'alice\n', '')
    r = postmap('-q', 'sales@example.com', src, confdir=confdir)
    assert (r.returncode, r.stdout) == (0, 'alice,    bob\n')
    r = postmap('-q', '"quoted key"', src, confdir=confdir)
    assert r.stdout == 'quoted value\n'

    # Not found: no output, exit 1.
    r = postmap('-q', 'nobody@example.com', f'hash:{src}', confdir=confdir)
    assert (r.returncode, r.stdout, r.stderr) == (1, '', '')


def test_query_stdin_and_several_tables(tmp_path, confdir):
    a = tmp_path / 'a'
    a.write_text('one first\n')
    b = tmp_path / 'b'
    b.write_text('one second\ntwo second\n')
    assert postmap(a, b, confdir=confdir).returncode == 0

    r = postmap('-q', 'two', a, b, confdir=confdir)
    assert (r.returncode, r.stdout) == (0, 'second\n')
    r = postmap('-q', '-', f'hash:{a}', f'hash:{b}', confdir=confdir, input='ONE\nthree\ntwo\n')
    assert r.returncode == 0
    assert r.stdout == 'ONE\tfirst\ntwo\tsecond\n'
    r = postmap('-q', '-', a, confdir=confdir, input='nothing\n')
    assert (r.returncode, r.stdout) == (1, '')


def test_list(tmp_path, confdir):
    src = tmp_path / 'list'
    src.write_text('b 2\nA 1\n')
    assert postmap(f'btree:{src}', confdir=confdir).returncode == 0
    r = postmap('-s', f'btree:{src}', confdir=confdir)
    assert (r.returncode, r.stdout) == (0, 'a\t1\nb\t2\n')

    r = postmap('-s', 'inline:{x=1, y=2}', confdir=confdir)
    assert (r.returncode, r.stdout) == (0, 'x\t1\ny\t2\n')

    pattern = tmp_path / 'p.regexp'
    pattern.write_text('/x/ y\n')
    r = postmap('-s', f'regexp:{pattern}', confdir=confdir)
    assert r.returncode == 1
    assert r.stderr == f'postmap: fatal: table regexp:{pattern}: sequence operation is not supported\n'


def test_no_folding(tmp_path, confdir):
    src = tmp_path / 'case'
    src.write_text('MixedCase value\n')
    assert postmap('-f', src, confdir=confdir).returncode == 0
    assert postmap('-s', src, confdir=confdir).stdout == 'MixedCase\tvalue\n'
    assert postmap('-f', '-q', 'MixedCase', src, confdir=confdir).stdout == 'value\n'
    assert postmap('-q', 'MixedCase', src, confdir=confdir).returncode == 1


def test_default_database_type(tmp_path, confdir):
    (confdir / 'main.cf').write_text('default_database_type = btree\n')
    src = tmp_path / 'typed'
    src.write_text('k v\n')
    assert postmap(src, confdir=confdir).returncode == 0
    assert postmap('-q', 'k', f'btree:{src}', confdir=confdir).stdout == 'v\n'
    # The file is a btree: opening it as a hash table fails.
    r = postmap('-q', 'k', f'hash:{src}', confdir=confdir)
    assert r.returncode == 1
    assert r.stderr.startswith(f'postmap: fatal: open database {src}.db: ')


def test_atomic_rebuild_and_permissions(tmp_path, confdir):
    src = tmp_path / 'secret'
    src.write_text('k old\n')
    os.chmod(src, 0o640)
    assert postmap(src, confdir=confdir).returncode == 0
    db = tmp_path / 'secret.db'
    assert stat.S_IMODE(db.stat().st_mode) == 0o640
    inode = db.stat().st_ino

    src.write_text('k new\n')
    assert postmap(src, confdir=confdir).returncode == 0
    # Replaced by rename: a new file, nothing left behind.
    assert db.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ['conf', 'secret', 'secret.db']
    assert postmap('-q', 'k', src, confdir=confdir).stdout == 'new\n'


def test_errors(tmp_path, confdir):
    missing = tmp_path / 'missing'
    r = postmap(missing, confdir=confdir)
    assert r.returncode == 1
    assert r.stderr == f'postmap: fatal: open {missing}: No such file or directory\n'
    assert list(tmp_path.iterdir()) == [confdir]

    r = postmap('-q', 'x', f'hash:{missing}', confdir=confdir)
    assert r.returncode == 1
    assert r.stderr == f'postmap: fatal: open database {missing}.db: No such file or directory\n'

    r = postmap('-q', 'x', 'bogus:thing', confdir=confdir)
    assert (r.returncode, r.stderr) == (1, 'postmap: fatal: unsupported dictionary type: bogus\n')

    r = postmap('-q', 'x', 'inline:{a=b', confdir=confdir)
    assert r.returncode == 1
    assert 'bad syntax' in r.stderr

    pattern = tmp_path / 'p.regexp'
    pattern.write_text('/x/ y\n')
    r = postmap(f'regexp:{pattern}', confdir=confdir)
    assert (r.returncode, r.stderr) == (
        1, 'postmap: fatal: unsupported map type for this operation: regexp\n')

    r = postmap(confdir=confdir)
    assert r.returncode == 1
    assert 'usage: postmap' in r.stderr
    r = postmap('-i', tmp_path / 'x', confdir=confdir)
    assert r.returncode == 1
    assert 'not supported' in r.stderr


def test_pattern_tables(tmp_path, confdir):
    regexp = tmp_path / 'checks.regexp'
    regexp.write_text(
        '/^(.*)@example\\.com$/   local:$1\n'
        'if !/@/\n'
        '/^(postmaster|abuse)$/   role:${1}\n'
        'endif\n'
        '/^x/q                    bad-flag\n'
        '/./                      other\n')
    r = postmap('-q', 'Joe@Example.com', f'regexp:{regexp}', confdir=confdir)
    assert r.returncode == 0
    assert r.stdout == 'local:Joe\n'
    assert r.stderr == (f'postmap: warning: {regexp}, line 5: unknown regexp option "q": '
                        'skipping this rule\n')
    r = postmap('-q', '-', f'regexp:{regexp}', confdir=confdir, input='abuse\nabuse@x.org\n')
    assert r.stdout == 'abuse\trole:abuse\nabuse@x.org\tother\n'

    pcre = tmp_path / 'checks.pcre'
    pcre.write_text('/^(\\d+)\\.(\\d+)$/ swapped:$2.$1\n/^Case$/i exact\n')
    assert postmap('-q', '12.34', f'pcre:{pcre}', confdir=confdir).stdout == 'swapped:34.12\n'
    assert postmap('-q', 'case', f'pcre:{pcre}', confdir=confdir).returncode == 1

    cidr = tmp_path / 'clients.cidr'
    cidr.write_text('192.0.2.0/24 OK\n[2001:db8::]/32 v6\n198.51.100.7/24 bad\n')
    r = postmap('-q', '192.0.2.77', f'cidr:{cidr}', confdir=confdir)
    assert (r.returncode, r.stdout) == (0, 'OK\n')
    assert r.stderr == (f'postmap: warning: {cidr}, line 3: non-null host address bits in '
                        '"198.51.100.7/24", perhaps you should use "198.51.100.0/24" instead: '
                        'skipping this rule\n')
    assert postmap('-q', '2001:DB8::25', f'cidr:{cidr}', confdir=confdir).stdout == 'v6\n'
    assert postmap('-q', '203.0.113.1', f'cidr:{cidr}', confdir=confdir).returncode == 1


def test_small_tables(tmp_path, confdir):
    assert postmap('-q', 'B', 'inline:{ a=1, { b = two words } }', confdir=confdir).stdout == \
        'two words\n'
    assert postmap('-q', 'anything', 'static:{ fixed answer }', confdir=confdir).stdout == \
        'fixed answer\n'
    text = tmp_path / 'text'
    text.write_text('Key value from text\n')
    assert postmap('-q', 'key', f'texthash:{text}', confdir=confdir).stdout == 'value from text\n'
    assert not (tmp_path / 'text.db').exists()
    r = postmap('-q', 'root', 'unix:passwd.byname', confdir=confdir)
    assert r.returncode == 0
    assert r.stdout.startswith('root:') and r.stdout.split(':')[2] == '0'


ALIASES = """\
# /etc/aliases
Root: admin, Other
  , third
"Quoted Name": x
bad line
mailer-daemon: postmaster
postmaster:root
pipe: "|/usr/bin/filter --flag", archive
user@example.com: nope
"""


def test_postalias(tmp_path, confdir):
    src = tmp_path / 'aliases'
    src.write_text(ALIASES)
    r = postalias(src, confdir=confdir)
    assert r.returncode == 0
    assert r.stderr.splitlines() == [
        f'postalias: warning: {src}, line 5: need name:value pair',
        f'postalias: warning: {src}, line 9: name must be local',
    ]
    r = postalias('-q', 'ROOT', src, confdir=confdir)
    assert (r.returncode, r.stdout) == (0, 'admin, Other, third\n')
    r = postalias('-q', '-', f'hash:{src}', confdir=confdir, input='quoted name\npipe\nnone\n')
    assert r.stdout == 'quoted name:\tx\npipe:\t"|/usr/bin/filter --flag", archive\n'
    listing = [line for line in postalias('-s', src, confdir=confdir).stdout.splitlines()
               if not line.startswith('YP_')]
    assert sorted(listing) == sorted([
        '@:\t@', 'root:\tadmin, Other, third', 'quoted name:\tx', 'mailer-daemon:\tpostmaster',
        'postmaster:\troot', 'pipe:\t"|/usr/bin/filter --flag", archive'])


def test_newaliases(tmp_path):
    conf = tmp_path / 'conf'
    conf.mkdir()
    aliases = tmp_path / 'aliases'
    aliases.write_text('root: admin\n')
    other = tmp_path / 'other'
    other.write_text('Postmaster: root\nbroken\n')
    (conf / 'main.cf').write_text(f'alias_database = hash:{aliases}, btree:{other}\n')
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    newaliases = bindir / 'newaliases'
    newaliases.symlink_to(POSTALIAS)

    r = run([newaliases], confdir=conf)
    assert r.returncode == 0, r.stderr
    assert r.stderr == f'newaliases: warning: {other}, line 2: need name:value pair\n'
    assert postalias('-q', 'root', aliases, confdir=conf).stdout == 'admin\n'
    assert postalias('-q', 'postmaster', f'btree:{other}', confdir=conf).stdout == 'root\n'

    # -c selects the configuration directory, too.
    (aliases.parent / 'aliases.db').unlink()
    r = run([newaliases, '-c', conf])
    assert r.returncode == 0
    assert (aliases.parent / 'aliases.db').is_file()

    r = run([newaliases, '-c', tmp_path / 'no-such-dir'])
    assert r.returncode == 1
    assert r.stderr.startswith('newaliases: fatal: ')


@needs_postfix
@pytest.mark.parametrize('kind', ['hash', 'btree'])
def test_postfix_builds_postern_reads(tmp_path, confdir, postfix_confdir, kind):
    src = tmp_path / 'virtual'
    src.write_text(VIRTUAL)
    r = run([POSTFIX_POSTMAP, '-c', postfix_confdir, f'{kind}:{src}'])
    assert r.returncode == 0, r.stderr
    for key, want in [('info@example.com', 'alice'), ('INFO@EXAMPLE.COM', 'alice'),
                      ('sales@example.com', 'alice,    bob'), ('"quoted key"', 'quoted value')]:
        r = postmap('-q', key, f'{kind}:{src}', confdir=confdir)
        assert (r.returncode, r.stdout) == (0, want + '\n'), key
    assert postmap('-q', 'onlykey', f'{kind}:{src}', confdir=confdir).returncode == 1
    ours = postmap('-s', f'{kind}:{src}', confdir=confdir).stdout
    theirs = run([POSTFIX_POSTMAP, '-c', postfix_confdir, '-s', f'{kind}:{src}']).stdout
    assert sorted(ours.splitlines()) == sorted(theirs.splitlines())

    # An alias database from Postfix's postalias, with its "@" and NIS records.
    aliases = tmp_path / 'aliases'
    aliases.write_text(ALIASES)
    assert run([POSTFIX_POSTALIAS, '-c', postfix_confdir, f'{kind}:{aliases}']).returncode == 0
    assert postalias('-q', 'root', f'{kind}:{aliases}', confdir=confdir).stdout == \
        'admin, Other, third\n'
    assert postalias('-q', '@', f'{kind}:{aliases}', confdir=confdir).stdout == '@\n'


@needs_postfix
@pytest.mark.parametrize('kind', ['hash', 'btree'])
def test_postern_builds_postfix_reads(tmp_path, confdir, postfix_confdir, kind):
    src = tmp_path / 'virtual'
    src.write_text(VIRTUAL)
    assert postmap(f'{kind}:{src}', confdir=confdir).returncode == 0
    for key, want in [('info@example.com', 'alice'), ('Info@Example.COM', 'alice'),
                      ('sales@example.com', 'alice,    bob'), ('"quoted key"', 'quoted value')]:
        r = run([POSTFIX_POSTMAP, '-c', postfix_confdir, '-q', key, f'{kind}:{src}'])
        assert (r.returncode, r.stdout) == (0, want + '\n'), (key, r.stderr)
    r = run([POSTFIX_POSTMAP, '-c', postfix_confdir, '-q', 'onlykey', f'{kind}:{src}'])
    assert r.returncode == 1
    theirs = run([POSTFIX_POSTMAP, '-c', postfix_confdir, '-s', f'{kind}:{src}']).stdout
    ours = postmap('-s', f'{kind}:{src}', confdir=confdir).stdout
    assert sorted(theirs.splitlines()) == sorted(ours.splitlines())

    aliases = tmp_path / 'aliases'
    aliases.write_text(ALIASES)
    assert postalias(f'{kind}:{aliases}', confdir=confdir).returncode == 0
    r = run([POSTFIX_POSTALIAS, '-c', postfix_confdir, '-q', 'root', f'{kind}:{aliases}'])
    assert (r.returncode, r.stdout) == (0, 'admin, Other, third\n')
    r = run([POSTFIX_POSTALIAS, '-c', postfix_confdir, '-q', 'pipe', f'{kind}:{aliases}'])
    assert r.stdout == '"|/usr/bin/filter --flag", archive\n'
    # The same records as Postfix's own postalias would write (NIS time stamp aside).
    ref = tmp_path / 'ref-aliases'
    shutil.copy(aliases, ref)
    assert run([POSTFIX_POSTALIAS, '-c', postfix_confdir, f'{kind}:{ref}']).returncode == 0
    theirs = run([POSTFIX_POSTALIAS, '-c', postfix_confdir, '-s', f'{kind}:{ref}']).stdout
    ours = run([POSTFIX_POSTALIAS, '-c', postfix_confdir, '-s', f'{kind}:{aliases}']).stdout

    def stable(text):
        return sorted(line for line in text.splitlines() if not line.startswith('YP_'))
    assert stable(ours) == stable(theirs)


@needs_postfix
def test_warnings_match_postfix(tmp_path, confdir, postfix_confdir):
    """The same bad lines give the same warnings, word for word, as Postfix
    (duplicates aside: postern names the line, Postfix the .db file)."""
    src = tmp_path / 'source'
    src.write_text('good value\nonlykey\n"open quote x\nkey: value\n')
    ours = postmap(src, confdir=confdir).stderr.splitlines()
    theirs = run([POSTFIX_POSTMAP, '-c', postfix_confdir, f'hash:{src}']).stderr.splitlines()
    assert ours == theirs
