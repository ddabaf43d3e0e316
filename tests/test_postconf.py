"""Integration tests for postconf and posternctl: run the built programs as
an administrator would, each test with its own configuration directory
(selected with -c or POSTERN_CONFIG_DIR), and check their output, exit
status and the files they write. Where Postfix's own postconf has the same
feature, the output is compared with it byte for byte."""
import json
import os
import re
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_DIR = os.environ.get('POSTERN_BUILD_DIR') or os.path.join(os.path.dirname(HERE), 'build')
POSTCONF = os.path.join(BUILD_DIR, 'src', 'tools', 'postconf', 'postconf')
POSTERNCTL = os.path.join(BUILD_DIR, 'src', 'tools', 'posternctl', 'posternctl')
POSTMAP = os.path.join(BUILD_DIR, 'src', 'tools', 'postmap', 'postmap')
POSTFIX_POSTCONF = '/usr/sbin/postconf'

needs_postfix = pytest.mark.skipif(not os.access(POSTFIX_POSTCONF, os.X_OK),
                                   reason='Postfix postconf not installed: nothing to compare with')

# The Postfix basic, virtual, TLS and SASL tutorials' settings.
TUTORIAL = """\
# main.cf from the Postfix tutorials
myhostname = mail.example.com
mydomain = example.com
myorigin = $mydomain
inet_interfaces = all
inet_protocols = all
mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain
mynetworks = 127.0.0.0/8 [::1]/128
relayhost =
home_mailbox = Maildir/
smtpd_banner = $myhostname ESMTP
recipient_delimiter = +
mailbox_size_limit = 0
message_size_limit = 52428800
biff = no
append_dot_mydomain = no
compatibility_level = 3.6

# TLS
smtpd_tls_cert_file = {dir}/cert.pem
smtpd_tls_key_file = {dir}/key.pem
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtpd_tls_protocols = !SSLv2, !SSLv3
smtpd_tls_mandatory_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1
smtp_tls_security_level = may
smtp_tls_CApath = /etc/ssl/certs
smtp_tls_loglevel = 1

# SASL through Dovecot
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_security_options = noanonymous, noplaintext
smtpd_sasl_tls_security_options = noanonymous
smtpd_sasl_local_domain = $myhostname
broken_sasl_auth_clients = no
smtpd_relay_restrictions = permit_mynetworks,
    permit_sasl_authenticated,
    defer_unauth_destination
smtpd_recipient_restrictions =
    permit_mynetworks
    permit_sasl_authenticated
    reject_unauth_destination
smtpd_helo_required = yes

# virtual mailboxes and aliases
alias_maps = hash:{dir}/aliases
alias_database = hash:{dir}/aliases
virtual_mailbox_domains = example.net, example.org
virtual_mailbox_base = /var/mail/vhosts
virtual_mailbox_maps = hash:{dir}/vmailbox
virtual_minimum_uid = 100
virtual_uid_maps = static:5000
virtual_gid_maps = static:5000
virtual_alias_maps = hash:{dir}/virtual
header_checks = regexp:{dir}/header_checks
"""


def run(args, confdir=None, input=None, env=None):
    e = dict(os.environ)
    e.pop('POSTERN_CONFIG_DIR', None)
    if confdir is not None:
        e['POSTERN_CONFIG_DIR'] = str(confdir)
    if env:
        e.update(env)
    return subprocess.run([str(a) for a in args], input=input, capture_output=True, text=True,
                          env=e, timeout=60)


def postconf(confdir, *args):
    return run([POSTCONF, '-c', confdir, *args])


def postfix(confdir, *args):
    """Postfix's postconf on the same directory (its master.cf warning aside)."""
    return run([POSTFIX_POSTCONF, '-c', confdir, *args])


@pytest.fixture
def confdir(tmp_path):
    d = tmp_path / 'conf'
    d.mkdir()
    (d / 'main.cf').write_text('')
    return d


def make_cert(d, name='cert.pem', key='key.pem', cn='mail.example.com'):
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '30',
                    '-subj', '/CN=' + cn, '-keyout', str(d / key), '-out', str(d / name)],
                   check=True, capture_output=True)


@pytest.fixture
def tutorial(confdir):
    """The tutorial configuration with real tables and a certificate."""
    (confdir / 'main.cf').write_text(TUTORIAL.format(dir=confdir))
    (confdir / 'aliases').write_text('postmaster: root\n')
    (confdir / 'vmailbox').write_text('info@example.net example.net/info/\n')
    (confdir / 'virtual').write_text('sales@example.net info@example.net\n')
    (confdir / 'header_checks').write_text('/^Subject: .*viagra/ REJECT\n')
    for table in ('aliases', 'vmailbox', 'virtual'):
        r = run([POSTMAP, 'hash:%s/%s' % (confdir, table)])
        assert r.returncode == 0, r.stderr
    make_cert(confdir)
    return confdir


def test_tutorial_loads_clean(tutorial):
    r = postconf(tutorial, '-n')
    assert r.returncode == 0
    assert r.stderr == ''
    lines = r.stdout.splitlines()
    assert lines == sorted(lines)
    assert 'config_directory = %s' % tutorial in lines
    assert 'myorigin = $mydomain' in lines
    assert ('smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, '
            'defer_unauth_destination') in lines
    assert ('smtpd_recipient_restrictions = permit_mynetworks permit_sasl_authenticated '
            'reject_unauth_destination') in lines


@needs_postfix
def test_n_matches_postfix(tutorial):
    ours = postconf(tutorial, '-n')
    theirs = postfix(tutorial, '-n')
    assert theirs.returncode == 0
    assert ours.stdout == theirs.stdout


@needs_postfix
def test_names_h_and_x_match_postfix(tutorial):
    names = ['myhostname', 'myorigin', 'mydestination', 'smtpd_banner', 'relayhost',
             'smtpd_sasl_local_domain', 'mailbox_size_limit', 'virtual_mailbox_domains']
    for flags in ([], ['-h'], ['-x'], ['-hx'], ['-n'], ['-nx']):
        ours = postconf(tutorial, *flags, *names)
        theirs = postfix(tutorial, *flags, *names)
        assert ours.returncode == 0, ours.stderr
        assert ours.stdout == theirs.stdout, flags
    assert postconf(tutorial, 'myhostname').stdout == 'myhostname = mail.example.com\n'
    assert postconf(tutorial, '-h', 'myorigin').stdout == '$mydomain\n'
    assert postconf(tutorial, '-hx', 'myorigin').stdout == 'example.com\n'
    assert postconf(tutorial, '-x', 'smtpd_banner').stdout == \
        'smtpd_banner = mail.example.com ESMTP\n'


@needs_postfix
def test_unknown_name(tutorial):
    r = postconf(tutorial, 'myhostname', 'no_such_parameter', 'mydomain')
    assert r.returncode == 0
    assert r.stdout == 'myhostname = mail.example.com\nmydomain = example.com\n'
    assert r.stderr == 'postconf: warning: no_such_parameter: unknown parameter\n'
    theirs = postfix(tutorial, 'myhostname', 'no_such_parameter', 'mydomain')
    assert theirs.stdout == r.stdout
    assert 'no_such_parameter: unknown parameter' in theirs.stderr


# Postfix lists the per-transport parameters (smtp_destination_concurrency_limit,
# ...) only for the transports of its master.cf.
POSTFIX_MASTER_CF = """\
smtp      inet  n       -       y       -       -       smtpd
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
lmtp      unix  -       -       y       -       -       lmtp
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
"""

# Defaults in which postern deliberately differs from Postfix 3.7, each with
# its reason; postern.conf(5) says the same in the parameter's description or
# under "Differences from Postfix". A value of None is not pinned (it comes
# from the build's directories).
DEVIATIONS = {
    'alias_maps': ('hash:/etc/aliases', 'no NIS client, so no nis:mail.aliases'),
    'biff': ('no', 'there is no biff service to notify'),
    'compatibility_level': ('3.6', 'postern always has the level 3.6 defaults'),
    'enable_long_queue_ids': ('yes', 'queue ids are always long and time-ordered'),
    'virtual_mailbox_lock': ('fcntl', 'kernel lock only, no lock files in the mailbox base'),
    'smtpd_forbid_bare_newline': ('normalize', 'Postfix 3.9 default (SMTP smuggling)'),
    'smtpd_forbid_unauth_pipelining': ('yes', 'Postfix 3.9 default'),
    'smtpd_sasl_type': ('dovecot', 'only the Dovecot auth protocol is implemented'),
    'smtpd_sasl_path': ('private/auth', 'the Dovecot auth socket, not a Cyrus name'),
    'mail_name': ('postern', "postern's own name"),
    'mail_owner': ('postern', "postern's own account"),
    'syslog_name': ('postern', "postern's own name (no multi-instance support)"),
    'mail_version': (None, "postern's version"),
    'readme_directory': ('no', 'postern ships no README files'),
    'config_directory': (None, "postern's own directory"),
    'command_directory': (None, "postern's own directory"),
    'daemon_directory': (None, "postern's own directory"),
    'data_directory': ('/var/lib/postern', "postern's own directory"),
    'queue_directory': (None, "postern's own directory"),
}

# Postfix defaults that depend on compatibility_level or on the "stress"
# state: postern has the value Postfix computes at level 3.6 without stress.
CONDITIONAL = {'append_dot_mydomain', 'mynetworks_style', 'relay_domains',
               'smtp_tls_fingerprint_digest', 'smtpd_tls_fingerprint_digest',
               'smtpd_relay_restrictions', 'smtputf8_enable', 'smtpd_hard_error_limit',
               'smtpd_junk_command_limit', 'smtpd_timeout'}

# Computed from the host: both read gethostname() and the interface
# addresses; Postfix's -d ignores mynetworks_style, so mynetworks is compared
# with Postfix's value at mynetworks_style = host.
HOST_DERIVED = {'myhostname', 'mydomain', 'mynetworks'}


def parse_postconf(text):
    values = {}
    for line in text.splitlines():
        name, sep, value = line.partition(' =')
        assert sep, line
        values[name] = value[1:]
    return values


def expand_refs(value):
    return set(m[0] or m[1] for m in re.findall(r'\$(\w+)|\$[{(](\w+)', value))


@needs_postfix
def test_defaults_match_postfix(confdir):
    """Every parameter of the table has Postfix 3.7's default, unless it is
    one of the deliberate deviations above; parameters Postfix does not have
    are postern's own and skipped."""
    (confdir / 'master.cf').write_text(POSTFIX_MASTER_CF)
    ours_r = postconf(confdir, '-d')
    assert ours_r.returncode == 0, ours_r.stderr
    ours = parse_postconf(ours_r.stdout)
    theirs_r = postfix(confdir, '-d')
    assert theirs_r.returncode == 0, theirs_r.stderr
    theirs = parse_postconf(theirs_r.stdout)
    assert len(ours) > 250
    shared = [n for n in ours if n in theirs]
    assert len(shared) > 250

    (confdir / 'main.cf').write_text('compatibility_level = 3.6\nmynetworks_style = host\n')
    evaluated = parse_postconf(postfix(confdir, '-x', *sorted(CONDITIONAL | HOST_DERIVED)).stdout)
    (confdir / 'main.cf').write_text('')

    wrong = []
    for name in shared:
        if name in DEVIATIONS:
            want, reason = DEVIATIONS[name]
            assert ours[name] != theirs[name], '%s no longer deviates (%s)' % (name, reason)
            if want is not None and ours[name] != want:
                wrong.append('%s = %s (expected the deviation %s)' % (name, ours[name], want))
        elif name in CONDITIONAL or name in HOST_DERIVED:
            if ours[name] != evaluated[name]:
                wrong.append('%s = %s, Postfix: %s' % (name, ours[name], evaluated[name]))
        elif ours[name] != theirs[name]:
            wrong.append('%s = %s, Postfix: %s' % (name, ours[name], theirs[name]))
    assert wrong == []
    for name in DEVIATIONS.keys() | CONDITIONAL | HOST_DERIVED:
        assert name in ours, name

    # -dh prints the same values without names.
    same = [n for n in shared if n not in DEVIATIONS and n not in CONDITIONAL
            and n not in HOST_DERIVED]
    ours_h = postconf(confdir, '-dh', *same).stdout
    assert ours_h == postfix(confdir, '-dh', *same).stdout

    # -dx: a value may differ only through a reference to a deviating,
    # conditional or host-derived parameter.
    ours_x = parse_postconf(postconf(confdir, '-dx', *same).stdout)
    theirs_x = parse_postconf(postfix(confdir, '-dx', *same).stdout)
    differ = DEVIATIONS.keys() | CONDITIONAL | HOST_DERIVED
    for name in same:
        if ours_x[name] == theirs_x[name]:
            continue
        seen, todo = set(), expand_refs(ours[name])
        while todo:
            ref = todo.pop()
            if ref not in seen:
                seen.add(ref)
                todo |= expand_refs(ours.get(ref, ''))
        assert seen & differ, '%s expands to %s, Postfix: %s' % (name, ours_x[name],
                                                                  theirs_x[name])


def test_defaults_postern_specific(confdir):
    r = postconf(confdir, '-d', 'smtpd_sasl_type', 'smtpd_sasl_path', 'mail_owner',
                 'append_dot_mydomain', 'alias_maps', 'queue_directory', 'smtpd_relay_restrictions')
    assert r.returncode == 0
    assert r.stdout == (
        'smtpd_sasl_type = dovecot\n'
        'smtpd_sasl_path = private/auth\n'
        'mail_owner = postern\n'
        'append_dot_mydomain = no\n'
        'alias_maps = hash:/etc/aliases\n'
        'queue_directory = /var/spool/postern\n'
        'smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, '
        'defer_unauth_destination\n')
    # -d needs no main.cf at all.
    os.unlink(confdir / 'main.cf')
    assert postconf(confdir, '-dh', 'mail_name').stdout == 'postern\n'


def test_all_parameters(tutorial):
    with open(tutorial / 'main.cf', 'a') as f:
        f.write('mua_restrictions = permit_sasl_authenticated, reject\n'
                'smtpd_client_restrictions = $mua_restrictions\n')
    r = postconf(tutorial)
    assert r.returncode == 0
    assert r.stderr == ''
    lines = r.stdout.splitlines()
    names = [l.split(' =')[0] for l in lines]
    assert names == sorted(names)
    assert len(names) > 250
    assert 'mua_restrictions = permit_sasl_authenticated, reject' in lines
    assert 'message_size_limit = 52428800' in lines
    assert 'queue_run_delay = 300s' in lines
    d = postconf(tutorial, '-d').stdout.splitlines()
    assert [l.split(' =')[0] for l in d] == [n for n in names if n != 'mua_restrictions']


@needs_postfix
def test_fold_matches_postfix(confdir):
    hosts = ', '.join('host%d.example.com' % i for i in range(25))
    (confdir / 'main.cf').write_text('mydestination = %s\nmyhostname = a.example\n' % hosts)
    for flags in (['-nf'], ['-f', 'mydestination']):
        ours = postconf(confdir, *flags)
        theirs = postfix(confdir, *flags)
        assert ours.stdout == theirs.stdout


EDIT_INPUT = """\
# header comment
myhostname = old.example.com
mydestination = $myhostname,
# comment between continuation lines
    localhost.$mydomain,
    localhost

# relay via provider
relayhost = [old.relay]:25
inet_interfaces = all
smtpd_banner = $myhostname ESMTP
myhostname = again.example.com
#myorigin = commented
"""


@needs_postfix
@pytest.mark.parametrize('args', [
    # One new parameter only: Postfix appends several in random order.
    ['-e', 'mydestination = $myhostname, localhost', 'relayhost=[new.relay]:587',
     'myorigin = $mydomain'],
    ['-e', 'relay_domains='],
    ['-e', 'myhostname = new.example.com'],
    ['-X', 'mydestination', 'relayhost', 'no_such_name'],
    ['-#', 'mydestination', 'smtpd_banner'],
])
def test_edit_matches_postfix(tmp_path, args):
    ours_dir, theirs_dir = tmp_path / 'ours', tmp_path / 'theirs'
    for d in (ours_dir, theirs_dir):
        d.mkdir()
        (d / 'main.cf').write_text(EDIT_INPUT)
    r = postconf(ours_dir, *args)
    assert r.returncode == 0, r.stderr
    t = postfix(theirs_dir, *args)
    assert t.returncode == 0, t.stderr
    assert (ours_dir / 'main.cf').read_text() == (theirs_dir / 'main.cf').read_text()
    if args == ['-e', 'myhostname = new.example.com']:
        assert r.stderr == 'postconf: %s/main.cf:12: warning: multiple entries for "myhostname"\n' \
            % ours_dir
    # Nothing but main.cf is left behind.
    assert os.listdir(ours_dir) == ['main.cf']


def test_edit_keeps_order_and_comments(confdir):
    (confdir / 'main.cf').write_text(EDIT_INPUT)
    st = os.stat(confdir / 'main.cf')
    os.chmod(confdir / 'main.cf', 0o640)
    r = postconf(confdir, '-e', 'relayhost = [smtp.example.net]:587', 'soft_bounce=yes',
                 'myorigin = $mydomain')
    assert r.returncode == 0
    text = (confdir / 'main.cf').read_text()
    # New parameters are appended in the order given.
    assert text == EDIT_INPUT.replace('relayhost = [old.relay]:25',
                                      'relayhost = [smtp.example.net]:587') + \
        'soft_bounce = yes\nmyorigin = $mydomain\n'
    assert os.stat(confdir / 'main.cf').st_mode & 0o777 == 0o640
    assert os.stat(confdir / 'main.cf').st_ino != st.st_ino   # replaced, not rewritten
    assert postconf(confdir, '-h', 'relayhost').stdout == '[smtp.example.net]:587\n'


def test_edit_refuses_bad_value(confdir):
    (confdir / 'main.cf').write_text(EDIT_INPUT)
    r = postconf(confdir, '-e', 'message_size_limit = lots', 'relayhost = x')
    assert r.returncode == 1
    assert r.stderr == ('postconf: error: message_size_limit = lots: expected a size (bytes, '
                        'optionally with k/m/g suffix)\n')
    assert (confdir / 'main.cf').read_text() == EDIT_INPUT
    r = postconf(confdir, '-e', 'no equals sign')
    assert r.returncode == 1
    assert r.stderr == 'postconf: error: missing \'=\' after parameter name: "no equals sign"\n'
    r = postconf(confdir, '-e')
    assert r.returncode == 1
    assert (confdir / 'main.cf').read_text() == EDIT_INPUT


def test_edit_repairs_broken_file(confdir):
    (confdir / 'main.cf').write_text('myhostname = a.example\nmessage_size_limit = lots\n')
    assert postconf(confdir, '-n').returncode == 1
    assert postconf(confdir, '-e', 'message_size_limit = 20m').returncode == 0
    r = postconf(confdir, '-n')
    assert r.returncode == 0
    assert 'message_size_limit = 20m\n' in r.stdout


def test_bad_value_and_unknown_name_located(confdir):
    lines = ['# comment %d' % i for i in range(1, 10)] + [
        'myhostname = mail.example.com',     # 10
        'myhostname = mx.example.com',       # 11
        'message_size_limit = lots',         # 12
        'smtpd_tmeout = 30s',                # 13
        'my_class = permit',                 # 14: used below, so no warning
        'smtpd_restriction_classes = my_class',
        'smtpd_helo_required = perhaps',     # 16
    ]
    (confdir / 'main.cf').write_text('\n'.join(lines) + '\n')
    r = postconf(confdir, '-n')
    assert r.returncode == 1
    assert r.stdout == ''
    main = '%s/main.cf' % confdir
    assert r.stderr.splitlines() == [
        'postconf: %s:11: warning: overriding earlier entry at line 10: '
        'myhostname = mail.example.com' % main,
        'postconf: %s:12: error: message_size_limit = lots: expected a size (bytes, optionally '
        'with k/m/g suffix)' % main,
        'postconf: %s:13: warning: unknown parameter: smtpd_tmeout' % main,
        'postconf: %s:16: error: smtpd_helo_required = perhaps: expected a boolean (yes or no)'
        % main,
    ]


def test_config_dir_from_environment(confdir):
    (confdir / 'main.cf').write_text('myhostname = env.example.com\n')
    r = run([POSTCONF, '-n'], confdir=confdir)
    assert r.returncode == 0
    assert r.stdout == 'config_directory = %s\nmyhostname = env.example.com\n' % confdir
    r = run([POSTERNCTL, 'conf', '-h', 'myhostname'], confdir=confdir)
    assert r.stdout == 'env.example.com\n'


def test_missing_main_cf(tmp_path):
    r = postconf(tmp_path, '-n')
    assert r.returncode == 1
    assert r.stderr == 'postconf: %s/main.cf: error: cannot read: No such file or directory\n' \
        % tmp_path


def test_services(confdir):
    (confdir / 'main.cf').write_text(
        'myhostname = mail.example.com\n'
        'mua_client_restrictions = permit_sasl_authenticated, reject\n')
    sd = confdir / 'services.d'
    sd.mkdir()
    (sd / 'submission.cf').write_text('smtpd_tls_security_level = encrypt\n'
                                      'smtpd_sasl_auth_enable = yes\n'
                                      'smtpd_client_restrictions = $mua_client_restrictions\n')
    (sd / 'qmgr.cf').write_text('qmgr_message_active_limit = 1000\n')
    r = postconf(confdir, '-P')
    assert r.returncode == 0, r.stderr
    assert r.stderr == ''
    # Services by name, each one's overrides by name, as Postfix sorts -o options.
    assert r.stdout == ('qmgr/unix/qmgr_message_active_limit = 1000\n'
                        'submission/inet/smtpd_client_restrictions = $mua_client_restrictions\n'
                        'submission/inet/smtpd_sasl_auth_enable = yes\n'
                        'submission/inet/smtpd_tls_security_level = encrypt\n')
    r = postconf(confdir, '-Px', 'submission/inet/smtpd_client_restrictions')
    assert r.stdout == ('submission/inet/smtpd_client_restrictions = '
                        'permit_sasl_authenticated, reject\n')
    r = postconf(confdir, '-Ph', 'submission/inet/smtpd_tls_security_level', 'smtps')
    assert r.stdout == 'encrypt\n'
    assert r.stderr == 'postconf: warning: unmatched request: "smtps"\n'

    r = postconf(confdir, '-P', 'submission/inet/smtpd_tls_security_level=may', '-e')
    assert r.returncode == 0, r.stderr
    r = postconf(confdir, '-P', '-e', 'smtps/inet/smtpd_tls_wrappermode=yes')
    assert r.returncode == 0, r.stderr
    assert (sd / 'smtps.cf').read_text() == 'smtpd_tls_wrappermode = yes\n'
    assert (sd / 'submission.cf').read_text().startswith('smtpd_tls_security_level = may\n')
    assert postconf(confdir, '-Ph', 'submission/inet/smtpd_tls_security_level').stdout == 'may\n'
    r = postconf(confdir, '-P', '-X', 'submission/inet/smtpd_sasl_auth_enable')
    assert r.returncode == 0
    assert 'smtpd_sasl_auth_enable' not in (sd / 'submission.cf').read_text()
    r = postconf(confdir, '-P', '-e', 'submission/unix/smtpd_tls_security_level=may')
    assert r.returncode == 1
    assert 'submission is a service of type inet, not unix' in r.stderr
    r = postconf(confdir, '-P', '-e', 'smtps/inet/smtpd_tls_wrappermode=often')
    assert r.returncode == 1
    assert r.stderr == ('postconf: error: smtps/inet/smtpd_tls_wrappermode = often: expected a '
                        'boolean (yes or no)\n')


@needs_postfix
def test_services_format_matches_postfix(confdir):
    (confdir / 'main.cf').write_text('myhostname = mail.example.com\n')
    sd = confdir / 'services.d'
    sd.mkdir()
    (sd / 'submission.cf').write_text('smtpd_tls_security_level = encrypt\n'
                                      'smtpd_sasl_auth_enable = yes\n')
    (confdir / 'master.cf').write_text(
        'submission inet n - y - - smtpd\n'
        '  -o smtpd_tls_security_level=encrypt\n'
        '  -o smtpd_sasl_auth_enable=yes\n')
    assert postconf(confdir, '-P').stdout == postfix(confdir, '-P').stdout
    assert postconf(confdir, '-P', 'submission/inet/smtpd_sasl_auth_enable').stdout == \
        postfix(confdir, '-P', 'submission/inet/smtpd_sasl_auth_enable').stdout


def test_service_errors_located(confdir):
    sd = confdir / 'services.d'
    sd.mkdir()
    (sd / 'smtps.cf').write_text('smtpd_tls_wrappermode = sometimes\n')
    r = postconf(confdir, '-P')
    assert r.returncode == 1
    assert r.stderr == ('postconf: %s/smtps.cf:1: error: smtpd_tls_wrappermode = sometimes: '
                        'expected a boolean (yes or no)\n' % sd)


def test_json(tutorial):
    r = run([POSTERNCTL, 'conf', '-c', tutorial, '-n', '--json'])
    assert r.returncode == 0
    data = json.loads(r.stdout)
    assert data['myorigin'] == '$mydomain'
    assert data['config_directory'] == str(tutorial)
    plain = postconf(tutorial, '-n').stdout.splitlines()
    assert len(data) == len(plain)
    r = run([POSTERNCTL, 'conf', '-c', tutorial, '-x', '--json', 'myorigin', 'mydestination'])
    assert json.loads(r.stdout) == {
        'myorigin': 'example.com',
        'mydestination': 'mail.example.com, localhost.example.com, localhost, example.com'}
    assert run([POSTERNCTL, 'conf', '-c', tutorial, '-n']).stdout == '\n'.join(plain) + '\n'


def test_check_ok(tutorial):
    r = run([POSTERNCTL, 'check', '-c', tutorial])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ''
    assert r.stdout.startswith('posternctl: configuration OK: %s (' % tutorial)
    # aliases, vmailbox, virtual, header_checks, static:5000 and the default
    # local_recipient_maps' proxy:unix:passwd.byname.
    assert '6 lookup tables' in r.stdout
    r = run([POSTERNCTL, 'check', '--json'], confdir=tutorial)
    assert r.returncode == 0
    assert json.loads(r.stdout) == []
    r = run([POSTERNCTL, 'check', '-q', '-c', tutorial])
    assert r.returncode == 0
    assert r.stdout == ''


def test_check_errors(tutorial):
    main = '%s/main.cf' % tutorial
    make_cert(tutorial, 'other.pem', 'other.key', 'other.example')
    text = (tutorial / 'main.cf').read_text()
    text = text.replace('smtpd_tls_key_file = %s/key.pem' % tutorial,
                        'smtpd_tls_key_file = %s/other.key' % tutorial)
    text += 'transport_maps = hash:%s/transport\n' % tutorial
    text += 'smtpd_sender_restrictions = check_sender_access cidr:%s/nosuch.cidr\n' % tutorial
    (tutorial / 'main.cf').write_text(text)
    (tutorial / 'header_checks').write_text('/^Subject: .*viagra/ REJECT\n/broken(/ REJECT\n')
    os.utime(tutorial / 'vmailbox', (2 ** 31, 2 ** 31))
    line = {l.split(' =')[0]: n for n, l in enumerate(text.splitlines(), 1) if ' =' in l}

    r = run([POSTERNCTL, 'check', '-c', tutorial])
    assert r.returncode == 1
    assert r.stdout == ''
    errors = r.stderr.splitlines()
    assert all(e.startswith('posternctl: ') for e in errors)
    assert ('posternctl: %s:%d: warning: virtual_mailbox_maps: hash:%s/vmailbox: %s/vmailbox.db '
            'is older than %s/vmailbox (run "postmap hash:%s/vmailbox")'
            % (main, line['virtual_mailbox_maps'], tutorial, tutorial, tutorial, tutorial)) \
        in errors
    assert ('posternctl: %s:%d: error: transport_maps: hash:%s/transport: cannot use '
            '%s/transport.db: No such file or directory (run "postmap hash:%s/transport")'
            % (main, line['transport_maps'], tutorial, tutorial, tutorial)) in errors
    assert any(e.startswith('posternctl: %s/header_checks:2: ' % tutorial) for e in errors)
    assert any(e.startswith('posternctl: %s:%d: error: smtpd_sender_restrictions: '
                            % (main, line['smtpd_sender_restrictions'])) for e in errors)
    assert any(e.startswith('posternctl: %s:%d: error: smtpd_tls_key_file: '
                            % (main, line['smtpd_tls_key_file'])) for e in errors)

    r = run([POSTERNCTL, 'check', '-c', tutorial, '--json'])
    assert r.returncode == 1
    diags = json.loads(r.stdout)
    assert {d['level'] for d in diags} == {'error', 'warning'}
    assert len(diags) == len(errors)
    assert all(set(d) == {'level', 'file', 'line', 'message'} for d in diags)


def test_check_unimplemented_parameters(tutorial):
    """Parameters that postern accepts but does not implement warn, at the
    line that sets them, when set to something other than their default;
    the check still passes, and postconf -n lists them as before."""
    main = tutorial / 'main.cf'
    before = postconf(tutorial, '-n').stdout
    with open(main, 'a') as f:
        f.write('mime_header_checks = hash:%s/mime_header_checks\n'
                'smtpd_policy_service_try_limit = 3\n'
                'smtpd_junk_command_limit = 100\n'
                'smtpd_tls_eecdh_grade = auto\n' % tutorial)
    (tutorial / 'services.d').mkdir()
    (tutorial / 'services.d' / 'submission.cf').write_text('smtpd_tls_security_level = encrypt\n'
                                                          'smtpd_tls_req_ccert = yes\n')
    line = {l.split(' =')[0]: n for n, l in enumerate(main.read_text().splitlines(), 1)
            if ' =' in l}
    warnings = [
        '%s:%d: warning: mime_header_checks is not implemented by postern; the setting has '
        'no effect' % (main, line['mime_header_checks']),
        '%s:%d: warning: smtpd_policy_service_try_limit is not implemented by postern; the '
        'setting has no effect' % (main, line['smtpd_policy_service_try_limit']),
        '%s/services.d/submission.cf:2: warning: smtpd_tls_req_ccert is not implemented by '
        'postern; the setting has no effect' % tutorial,
    ]

    r = run([POSTERNCTL, 'check', '-c', tutorial])
    assert r.returncode == 0, r.stderr
    # mime_header_checks.db does not exist: nothing opens the tables of such a
    # parameter, so the check does not look for them either.
    assert r.stderr.splitlines() == ['posternctl: ' + w for w in warnings]
    assert r.stdout.startswith('posternctl: configuration OK: %s (' % tutorial)
    assert r.stdout.endswith('; see the warnings above)\n')
    r = run([POSTERNCTL, 'check', '-c', tutorial, '--json'])
    assert r.returncode == 0
    assert [(d['level'], '%s:%d: warning: %s' % (d['file'], d['line'], d['message']))
            for d in json.loads(r.stdout)] == [('warning', w) for w in warnings]

    # postconf lists the settings as before, with the same warnings.
    r = postconf(tutorial, '-n')
    assert r.returncode == 0
    assert r.stdout == ''.join(sorted(
        before.splitlines(True) +
        ['mime_header_checks = hash:%s/mime_header_checks\n' % tutorial,
         'smtpd_junk_command_limit = 100\n',
         'smtpd_policy_service_try_limit = 3\n',
         'smtpd_tls_eecdh_grade = auto\n']))
    assert r.stderr.splitlines() == ['postconf: ' + w for w in warnings]


def test_check_config_errors(confdir):
    (confdir / 'main.cf').write_text('alias_maps = texthash:/dev/null\n'
                                     'smtpd_tls_security_level = encrypt\n'
                                     'bogus_name = 1\n')
    r = run([POSTERNCTL, 'check', '-c', confdir])
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        'posternctl: %s/main.cf:3: warning: unknown parameter: bogus_name' % confdir,
        'posternctl: %s/main.cf:2: error: smtpd_tls_security_level = encrypt needs '
        'smtpd_tls_cert_file or smtpd_tls_chain_files' % confdir,
    ]
    (confdir / 'main.cf').write_text('alias_maps = texthash:/dev/null\n'
                                     'message_size_limit = lots\n')
    r = run([POSTERNCTL, 'check', '-c', confdir])
    assert r.returncode == 1
    assert r.stderr == ('posternctl: %s/main.cf:2: error: message_size_limit = lots: expected a '
                        'size (bytes, optionally with k/m/g suffix)\n' % confdir)
    (confdir / 'main.cf').write_text('alias_maps = texthash:/dev/null\nbogus_name = 1\n')
    r = run([POSTERNCTL, 'check', '-c', confdir])
    assert r.returncode == 0
    assert r.stderr == 'posternctl: %s/main.cf:2: warning: unknown parameter: bogus_name\n' \
        % confdir
    assert 'configuration OK' in r.stdout


def test_posternctl_usage():
    r = run([POSTERNCTL, '--help'])
    assert r.returncode == 0
    assert 'check' in r.stdout and 'conf' in r.stdout
    r = run([POSTERNCTL, '--version'])
    assert r.returncode == 0 and r.stdout.startswith('posternctl ')
    r = run([POSTERNCTL, 'frobnicate'])
    assert r.returncode == 1
    assert r.stderr == 'posternctl: error: unknown verb "frobnicate"; see posternctl --help\n'
    r = run([POSTERNCTL])
    assert r.returncode == 1


def test_posternctl_global_options_before_verb(confdir):
    """systemctl-style: options may come before the verb."""
    with open(os.path.join(confdir, 'main.cf'), 'w') as f:
        f.write('message_size_limit = lots\n')
    r = run([POSTERNCTL, '-c', confdir, '--json', 'check'])
    assert r.returncode == 1
    diags = json.loads(r.stdout)
    assert diags[0]['line'] == 1 and diags[0]['level'] == 'error'
    assert 'expected a size' in diags[0]['message']


def test_check_socket_units_against_inet_interfaces(tmp_path):
    """posternctl check warns when the socket units listen where main.cf's
    inet_interfaces says postern should not, and is quiet once a drop-in
    agrees."""
    units = tmp_path / 'units'
    conf = tmp_path / 'conf'
    (units / 'postern-smtpd.socket.d').mkdir(parents=True)
    conf.mkdir()
    with open(os.path.join(os.path.dirname(__file__), '..', 'units', 'postern-smtpd.socket')) as f:
        (units / 'postern-smtpd.socket').write_text(f.read())
    (conf / 'main.cf').write_text('inet_interfaces = loopback-only\nalias_maps =\n')
    r = run([POSTERNCTL, 'check', '-c', conf, '--unit-dir', units])
    assert r.returncode == 0
    assert 'postern-smtpd.socket listens beyond loopback (ListenStream=25)' in r.stderr
    assert 'inet_interfaces = loopback-only' in r.stderr
    (units / 'postern-smtpd.socket.d' / '50-loopback.conf').write_text(
        '[Socket]\nListenStream=\nListenStream=127.0.0.1:25\nListenStream=[::1]:25\n')
    r = run([POSTERNCTL, 'check', '-c', conf, '--unit-dir', units])
    assert r.returncode == 0
    assert 'socket' not in r.stderr
