"""Integration tests for "posternctl migrate": a Postfix configuration
directory made here (the tutorials' main.cf, a master.cf with smtp,
submission, smtps, an extra listening address and a pipe service used as a
content filter) is migrated with the built posternctl, and the files it
writes, its report and its exit status are checked; the result must pass
"posternctl check"."""
import grp
import json
import os
import shutil
import subprocess

import pytest

from common import program, run

POSTERNCTL = program('src/tools/posternctl/posternctl')
POSTMAP = program('src/tools/postmap/postmap')
POSTFIX_POSTMAP = '/usr/sbin/postmap'
POSTFIX_MASTER_CF = '/etc/postfix/master.cf'

MAIN_CF = """\
# main.cf from the Postfix tutorials
smtpd_banner = $myhostname ESMTP
biff = no
append_dot_mydomain = no
readme_directory = no
compatibility_level = 3.6
queue_directory = /var/spool/postfix

myhostname = mail.example.com
mydomain = example.com
myorigin = $mydomain
mydestination = $myhostname, localhost.$mydomain, localhost
mynetworks = 127.0.0.0/8 [::1]/128
inet_interfaces = all
recipient_delimiter = +
alias_maps = hash:{pf}/aliases
alias_database = hash:{pf}/aliases

smtpd_tls_cert_file = {pf}/cert.pem
smtpd_tls_key_file = {pf}/key.pem
smtpd_tls_security_level = may

smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,
    defer_unauth_destination
mua_client_restrictions = permit_sasl_authenticated, reject

virtual_mailbox_domains = example.net, example.org
virtual_mailbox_maps = hash:{pf}/vmailbox
virtual_alias_maps = hash:$config_directory/virtual
virtual_transport = lmtp:unix:private/dovecot-lmtp
header_checks = regexp:{pf}/header_checks
content_filter = spamassassin
"""

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
smtp      inet  n       -       y       -       -       smtpd
127.0.0.1:2525 inet n   -       y       -       -       smtpd
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_reject_unlisted_recipient=no
  -o smtpd_client_restrictions=$mua_client_restrictions
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
submissions inet n      -       y       -       -       smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
# a comment inside the service
  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }
pickup    unix  n       -       y       60      1       pickup
qmgr      unix  n       -       n       300     1       qmgr
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=postfix/$service_name
maildrop  unix  -       n       n       -       -       pipe
  flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}
spamassassin unix -     n       n       -       -       pipe
  user=debian-spamd argv=/usr/bin/spamc -f -e /usr/sbin/sendmail -oi -f ${sender} ${recipient}
"""


def make_cert(directory):
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
                    '-keyout', os.path.join(directory, 'key.pem'),
                    '-out', os.path.join(directory, 'cert.pem'), '-days', '2',
                    '-subj', '/CN=mail.example.com'], check=True, capture_output=True)


def make_postfix(tmp_path, main=MAIN_CF, master=MASTER_CF):
    pf = tmp_path / 'postfix'
    pf.mkdir()
    (pf / 'main.cf').write_text(main.replace('{pf}', str(pf)))
    (pf / 'master.cf').write_text(master)
    (pf / 'vmailbox').write_text('info@example.net    example.net/info/\n')
    (pf / 'virtual').write_text('postmaster@example.net    info@example.net\n')
    (pf / 'aliases').write_text('postmaster: root\n')
    (pf / 'header_checks').write_text('/^Subject: spam/ REJECT\n')
    make_cert(str(pf))
    return pf


def migrate(*args):
    return run([POSTERNCTL, 'migrate', *args])


def section(out, title):
    """Lines of a report section ("notes:", "not carried over:")."""
    lines = out.splitlines()
    if title + ':' not in lines:
        return []
    res = []
    for line in lines[lines.index(title + ':') + 1:]:
        if not line.startswith('  '):
            break
        res.append(line[2:])
    return res


def test_migrate_tutorial(tmp_path):
    pf = make_postfix(tmp_path)
    out = tmp_path / 'postern'
    r = migrate('--from', str(pf), '--to', str(out))
    assert r.returncode == 2, r.stderr
    assert r.stderr == ''
    lines = r.stdout.splitlines()
    assert lines[0] == f'migrated {pf} to {out}'
    assert lines[1] == 'carried over: 26 parameters'
    assert 'services.d/submission.cf: 6 overrides' in lines
    assert 'services.d/smtps.cf: 3 overrides' in lines
    assert 'systemd/postern-smtpd.socket.d/50-migrated.conf: 2 listen addresses' in lines
    for f in ('cert.pem', 'key.pem', 'aliases', 'vmailbox', 'virtual', 'header_checks'):
        assert f'copied: {f}' in lines

    assert section(r.stdout, 'not carried over') == [
        'main.cf:34: parameter "content_filter": content filters are not supported by '
        'postern; dropped',
        'master.cf:4: service "submission": option "milter_macro_daemon_name=ORIGINATING": '
        'milters are not supported by postern; dropped',
        'master.cf:25: service "spamassassin" (pipe): no postern equivalent; not migrated',
    ]
    assert section(r.stdout, 'notes') == [
        'main.cf:7: parameter "queue_directory": Postfix installation setting; postern uses '
        'its own (/var/spool/postern); dropped',
        'main.cf:24: smtpd_sasl_path: "private/auth" is now /var/spool/postern/private/auth: '
        'Dovecot must listen there',
        'main.cf:32: virtual_transport: "private/dovecot-lmtp" is now '
        '/var/spool/postern/private/dovecot-lmtp: Dovecot must listen there',
        'master.cf:4: service "submission": option "syslog_name=postfix/submission" dropped: '
        'the journal identifier is postern/SERVICE',
        'master.cf:13: service "submissions": option "syslog_name=postfix/submissions" '
        'dropped: the journal identifier is postern/SERVICE',
        'master.cf:21: service "relay": option "syslog_name=postfix/$service_name" dropped: '
        'the journal identifier is postern/SERVICE',
        'master.cf:23: service "maildrop" (pipe): not used by main.cf, master.cf or '
        'transport_maps; skipped',
        "master.cf: chroot (column 5) dropped: postern's units run sandboxed by systemd",
    ]
    assert section(r.stdout, 'next steps') == [
        f'postalias hash:{out}/aliases',
        f'postmap hash:{out}/vmailbox',
        f'postmap hash:{out}/virtual',
        f'cp -r {out}/systemd/postern-smtpd.socket.d /etc/systemd/system/',
        'systemctl daemon-reload',
        f'posternctl -c {out} check',
        'systemctl enable --now postern-smtpd.socket postern-submission.socket '
        'postern-smtps.socket',
    ]

    assert (out / 'services.d' / 'submission.cf').read_text() == """\
# services.d/submission.cf: overrides of main.cf for postern's submission service,
# migrated from master.cf line 4 (submission inet n - y - - smtpd).
smtpd_tls_security_level = encrypt
smtpd_sasl_auth_enable = yes
smtpd_tls_auth_only = yes
smtpd_reject_unlisted_recipient = no
smtpd_client_restrictions = $mua_client_restrictions
smtpd_relay_restrictions = permit_sasl_authenticated,reject
"""
    assert (out / 'services.d' / 'smtps.cf').read_text() == """\
# services.d/smtps.cf: overrides of main.cf for postern's smtps service,
# migrated from master.cf line 13 (submissions inet n - y - - smtpd).
smtpd_tls_wrappermode = yes
smtpd_sasl_auth_enable = yes
smtpd_client_restrictions = permit_sasl_authenticated, reject
"""
    assert not (out / 'services.d' / 'smtpd.cf').exists()
    assert (out / 'systemd' / 'postern-smtpd.socket.d' / '50-migrated.conf').read_text() == """\
# Listening addresses of postern-smtpd.socket, migrated from master.cf line 2.
# Install: cp -r systemd/postern-smtpd.socket.d /etc/systemd/system/ &&
#   systemctl daemon-reload && systemctl restart postern-smtpd.socket
[Socket]
ListenStream=
ListenStream=25
ListenStream=127.0.0.1:2525
"""
    main = (out / 'main.cf').read_text()
    expected = MAIN_CF.replace('{pf}', str(out))
    expected = expected.replace(
        'queue_directory = /var/spool/postfix\n',
        '# posternctl migrate: Postfix installation setting; postern uses its own '
        '(/var/spool/postern):\n#queue_directory = /var/spool/postfix\n')
    expected = expected.replace(
        'content_filter = spamassassin\n',
        '# posternctl migrate: content filters are not supported by postern:\n'
        '#content_filter = spamassassin\n')
    assert main == ('# main.cf for postern, migrated by "posternctl migrate" from\n'
                    f'# {pf}/main.cf.\n'
                    '# Parameters that postern does not support are commented out below,\n'
                    '# each after a line that says why.\n' + expected)
    # Copies keep their modes: the key stays private.
    assert os.stat(out / 'key.pem').st_mode & 0o777 == os.stat(pf / 'key.pem').st_mode & 0o777
    assert (out / 'vmailbox').read_text() == (pf / 'vmailbox').read_text()


def test_migrated_directory_passes_check(tmp_path):
    pf = make_postfix(tmp_path)
    out = tmp_path / 'postern'
    r = migrate('--from', str(pf), '--to', str(out))
    assert r.returncode == 2, r.stderr
    # Before the tables are rebuilt, check says what is missing.
    r = run([POSTERNCTL, '-c', str(out), 'check'])
    assert r.returncode == 1
    assert f'run "postmap hash:{out}/vmailbox"' in r.stderr
    # The rebuild commands of the report, with the built programs.
    for cmd in section(migrate('--from', str(pf), '--to', str(out), '--dry-run').stdout,
                       'next steps'):
        tool, arg = cmd.split(' ', 1)
        if tool in ('postmap', 'postalias'):
            prog = program(f'src/tools/postmap/{tool}')
            subprocess.run([prog, '-c', str(out), arg], check=True)
    r = run([POSTERNCTL, '-c', str(out), 'check'])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ''
    assert r.stdout == (f'posternctl: configuration OK: {out} (27 parameters set, '
                               '2 service files, 5 lookup tables, 3 TLS certificates checked)\n')
    r = run([program('src/tools/postconf/postconf'), '-c', str(out), '-P'])
    assert r.returncode == 0
    assert 'submission/inet/smtpd_tls_security_level = encrypt' in r.stdout.splitlines()


def test_dry_run_writes_nothing(tmp_path):
    pf = make_postfix(tmp_path)
    out = tmp_path / 'postern'
    r = migrate('--from', str(pf), '--to', str(out), '--dry-run')
    assert r.returncode == 2
    assert not out.exists()
    assert f'--- would write {out}/main.cf\n' in r.stdout
    assert (f'--- would write {out}/services.d/submission.cf\n'
            "# services.d/submission.cf: overrides of main.cf for postern's submission "
            'service,\n') in r.stdout
    assert f'--- would copy {pf}/vmailbox to {out}/vmailbox\n' in r.stdout
    assert f'would migrate {pf} to {out}\n' in r.stdout


def test_refuses_to_overwrite(tmp_path):
    pf = make_postfix(tmp_path)
    out = tmp_path / 'postern'
    out.mkdir()
    (out / 'main.cf').write_text('myhostname = old.example.com\n')
    r = migrate('--from', str(pf), '--to', str(out))
    assert r.returncode == 1
    assert r.stdout == ''
    assert r.stderr == (f'posternctl: error: {out}/main.cf exists; nothing written '
                        '(--force replaces it)\n')
    assert sorted(os.listdir(out)) == ['main.cf']
    assert (out / 'main.cf').read_text() == 'myhostname = old.example.com\n'
    r = migrate('--from', str(pf), '--to', str(out), '--force')
    assert r.returncode == 2
    assert 'myhostname = mail.example.com\n' in (out / 'main.cf').read_text()


def test_unreadable_source(tmp_path):
    r = migrate('--from', str(tmp_path / 'nothing'), '--to', str(tmp_path / 'out'))
    assert r.returncode == 1
    assert r.stderr == (f'posternctl: error: cannot read {tmp_path}/nothing/main.cf: '
                        'No such file or directory\n')
    assert not (tmp_path / 'out').exists()
    pf = tmp_path / 'pf'
    pf.mkdir()
    (pf / 'main.cf').write_text('myhostname = mail.example.com\n')
    r = migrate('--from', str(pf), '--to', str(tmp_path / 'out'))
    assert r.returncode == 1
    assert 'cannot read' in r.stderr and 'master.cf' in r.stderr


def test_everything_carried_over(tmp_path):
    pf = tmp_path / 'pf'
    pf.mkdir()
    (pf / 'main.cf').write_text('myhostname = mail.example.com\nmynetworks = 127.0.0.0/8\n')
    (pf / 'master.cf').write_text(
        'smtp inet n - y - - smtpd\n'
        'submission inet n - y - - smtpd\n  -o smtpd_sasl_auth_enable=yes\n'
        'pickup unix n - y 60 1 pickup\n')
    out = tmp_path / 'out'
    r = migrate('--from', str(pf), '--to', str(out))
    assert r.returncode == 0, r.stdout
    assert 'not carried over:' not in r.stdout
    assert 'carried over: 2 parameters' in r.stdout.splitlines()
    assert ('master.cf: no service for postern\'s smtps (port 465); leave '
            'postern-smtps.socket disabled') in section(r.stdout, 'notes')
    assert not (out / 'systemd').exists()
    assert (out / 'services.d' / 'submission.cf').read_text().endswith(
        '\nsmtpd_sasl_auth_enable = yes\n')


def test_json_report(tmp_path):
    pf = make_postfix(tmp_path)
    out = tmp_path / 'postern'
    r = migrate('--from', str(pf), '--to', str(out), '--json')
    assert r.returncode == 2
    j = json.loads(r.stdout)
    assert j['from'] == str(pf) and j['to'] == str(out) and j['dry_run'] is False
    assert j['parameters'] == 26
    assert {'path': 'services.d/submission.cf', 'count': 6} in j['files']
    assert {'path': 'vmailbox', 'copied_from': f'{pf}/vmailbox'} in j['files']
    assert {'file': 'master.cf', 'line': 25,
            'message': 'service "spamassassin" (pipe): no postern equivalent; not migrated'} \
        in j['not_carried_over']
    assert f'posternctl -c {out} check' in j['next_steps']


def test_listen_addresses_from_inet_interfaces(tmp_path):
    pf = tmp_path / 'pf'
    pf.mkdir()
    (pf / 'main.cf').write_text('inet_interfaces = loopback-only\ninet_protocols = ipv4\n')
    (pf / 'master.cf').write_text(
        'smtp inet n - y - - smtpd\n'
        '[::1]:submission inet n - y - - smtpd\n'
        '192.0.2.1:465 inet n - y - - smtpd\n  -o smtpd_tls_wrappermode=yes\n'
        'mail.example.com:2525 inet n - y - 10 smtpd\n')
    out = tmp_path / 'out'
    r = migrate('--from', str(pf), '--to', str(out))
    assert r.returncode == 2
    d = out / 'systemd'
    assert (d / 'postern-smtpd.socket.d' / '50-migrated.conf').read_text().endswith(
        '[Socket]\nListenStream=\nListenStream=127.0.0.1:25\nListenStream=2525\n')
    assert (d / 'postern-submission.socket.d' / '50-migrated.conf').read_text().endswith(
        '[Socket]\nListenStream=\nListenStream=[::1]:587\n')
    assert (d / 'postern-smtps.socket.d' / '50-migrated.conf').read_text().endswith(
        '[Socket]\nListenStream=\nListenStream=192.0.2.1:465\nFreeBind=yes\n')
    assert section(r.stdout, 'not carried over') == [
        'master.cf:5: listen address "mail.example.com" of service "mail.example.com:2525" '
        'is not an IP address; systemd needs one; the socket listens on every address instead',
    ]
    assert ('master.cf:5: service "mail.example.com:2525": process limit 10 dropped: one '
            'postern-smtpd process serves all connections (LimitNOFILE= in a drop-in for the '
            'service caps them)') in section(r.stdout, 'notes')


def test_postscreen_and_conflicting_services(tmp_path):
    pf = tmp_path / 'pf'
    pf.mkdir()
    (pf / 'main.cf').write_text('postscreen_greet_action = enforce\n'
                                'virtual_alias_maps = proxy:hash:/etc/postfix/virtual\n'
                                'relay_recipient_maps = mysql:/etc/postfix/relay.cf\n')
    (pf / 'virtual').write_text('a@example.com b@example.com\n')
    (pf / 'master.cf').write_text(
        'smtp inet n - y - 1 postscreen\n'
        'smtpd pass - - y - - smtpd\n  -o smtpd_helo_required=yes\n'
        '127.0.0.1:10025 inet n - n - - smtpd\n  -o smtpd_helo_required=no\n'
        'dovecot unix - n n - - pipe\n'
        '  flags=DRhu user=vmail:vmail argv=/usr/lib/dovecot/deliver -d ${recipient}\n'
        'slow unix - - y - 1 smtp\n  -o smtp_connect_timeout=5\n')
    (pf / 'transport').write_text('example.org slow:[mx.example.org]\n')
    (pf / 'main.cf').write_text((pf / 'main.cf').read_text() +
                                f'transport_maps = hash:{pf}/transport\n'
                                'mailbox_transport = dovecot\n')
    out = tmp_path / 'out'
    r = migrate('--from', str(pf), '--to', str(out))
    assert r.returncode == 2
    lost = section(r.stdout, 'not carried over')
    assert lost == [
        'main.cf:1: parameter "postscreen_greet_action": postern has no postscreen; dropped',
        'main.cf:3: parameter "relay_recipient_maps": table type "mysql:" is not supported '
        'by postern (convert the table to hash: or texthash:); dropped',
        'master.cf:1: service "smtp" (postscreen): postern has no postscreen; postern-smtpd '
        'takes the connections on its address; not migrated',
        'master.cf:4: service "127.0.0.1:10025" (smtpd): postern has one service each for '
        'smtpd, submission and smtps; a further smtpd with options of its own has no '
        'equivalent; not migrated',
        'master.cf:6: service "dovecot" (pipe): no postern equivalent; not migrated',
        'master.cf:8: service "slow" (smtp): postern\'s transports are smtp, relay, lmtp, '
        'local and virtual; use "smtp:" where "slow:" is used; not migrated',
    ]
    assert ('main.cf:2: virtual_alias_maps: "proxy:" removed from proxy:hash:/etc/postfix/'
            'virtual: postern needs no proxy') in section(r.stdout, 'notes')
    main = (out / 'main.cf').read_text()
    assert f'virtual_alias_maps = hash:{out}/virtual\n' in main
    assert (out / 'services.d' / 'smtpd.cf').read_text().endswith(
        '\nsmtpd_helo_required = yes\n')


def test_sasl_password_table_readable_by_postern(tmp_path):
    """Postfix reads smtp_sasl_password_maps as root; postern-deliver-remote
    runs as postern. The copy of a 0600 table (and of its index) gets group
    read permission and the group postern, or a next step without it."""
    pf = tmp_path / 'pf'
    pf.mkdir()
    (pf / 'main.cf').write_text('relayhost = [smtp.example.com]:587\n'
                                'smtp_sasl_auth_enable = yes\n'
                                f'smtp_sasl_password_maps = hash:{pf}/sasl_passwd\n'
                                'smtp_tls_security_level = encrypt\n'
                                f'header_checks = regexp:{pf}/header_checks\n')
    (pf / 'master.cf').write_text('smtp inet n - y - - smtpd\n')
    (pf / 'sasl_passwd').write_text('[smtp.example.com]:587 user:secret\n')
    os.chmod(pf / 'sasl_passwd', 0o600)
    (pf / 'header_checks').write_text('/^X-Spam: yes/ REJECT\n')
    os.chmod(pf / 'header_checks', 0o600)
    out = tmp_path / 'out'
    r = migrate('--from', str(pf), '--to', str(out))
    assert r.returncode == 0, r.stdout
    st = os.stat(out / 'sasl_passwd')
    assert st.st_mode & 0o777 == 0o640
    try:
        gid = grp.getgrnam('postern').gr_gid
    except KeyError:
        gid = None
    if gid is not None:
        assert st.st_gid == gid
    else:
        assert f'chgrp postern {out}/sasl_passwd  # read by postern-deliver-remote as user ' \
               'postern' in section(r.stdout, 'next steps')
    # Other private files keep their mode and group.
    st = os.stat(out / 'header_checks')
    assert st.st_mode & 0o777 == 0o600 and st.st_gid == os.getgid()


@pytest.mark.skipif(not os.access(POSTFIX_POSTMAP, os.X_OK),
                    reason="Postfix's postmap is not installed")
def test_postfix_index_is_copied(tmp_path):
    pf = make_postfix(tmp_path)
    subprocess.run([POSTFIX_POSTMAP, '-c', str(pf), f'hash:{pf}/vmailbox'], check=True,
                   capture_output=True)
    out = tmp_path / 'postern'
    r = migrate('--from', str(pf), '--to', str(out))
    assert 'copied: vmailbox.db' in r.stdout.splitlines()
    assert f'postmap hash:{out}/vmailbox' not in r.stdout
    assert os.stat(out / 'vmailbox.db').st_mtime_ns == os.stat(pf / 'vmailbox.db').st_mtime_ns
    # Postfix's index answers postern's lookups.
    r = run([POSTMAP, '-c', str(out), '-q', 'info@example.net', f'hash:{out}/vmailbox'])
    assert r.returncode == 0 and r.stdout == 'example.net/info/\n'


@pytest.mark.skipif(not os.path.exists(POSTFIX_MASTER_CF),
                    reason="Postfix's master.cf is not installed")
def test_debian_master_cf_carries_over(tmp_path):
    """Debian's stock master.cf has nothing that postern cannot take over:
    its pipe services are unused."""
    pf = tmp_path / 'pf'
    pf.mkdir()
    shutil.copy(POSTFIX_MASTER_CF, pf / 'master.cf')
    (pf / 'main.cf').write_text('myhostname = mail.example.com\nreadme_directory = no\n'
                                'smtp_tls_session_cache_database = '
                                'btree:${data_directory}/smtp_scache\n')
    r = migrate('--from', str(pf), '--to', str(tmp_path / 'out'))
    assert r.returncode == 0, r.stdout
    assert 'carried over: 3 parameters' in r.stdout.splitlines()
