"""meson install puts every piece where a distribution expects it: programs,
units, tmpfiles.d, sysusers.d, the journal catalog, manual pages and the
default configuration (which a reinstall must not overwrite)."""
import os
import subprocess
import tempfile

import pytest

from common import BUILD_DIR


@pytest.fixture(scope='module')
def destdir():
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, DESTDIR=d)
        subprocess.run(['meson', 'install', '-C', BUILD_DIR, '--no-rebuild', '--quiet'],
                       env=env, check=True, capture_output=True)
        yield d


def prefix_of(destdir):
    out = subprocess.run(['meson', 'introspect', '--buildoptions', BUILD_DIR],
                         capture_output=True, text=True, check=True).stdout
    import json
    opts = {o['name']: o['value'] for o in json.loads(out)}
    return destdir + opts['prefix'], opts


@pytest.mark.parametrize('path', [
    'sbin/postconf', 'sbin/postmap', 'sbin/postalias', 'sbin/newaliases', 'sbin/posternctl',
    'lib/systemd/system/postern.target',
    'lib/tmpfiles.d/postern.conf', 'lib/sysusers.d/postern.conf',
    'lib/systemd/catalog/postern.catalog',
    'share/man/man7/postern.7', 'share/man/man5/postern.conf.5', 'share/man/man1/postconf.1',
    'share/man/man1/postmap.1', 'share/man/man5/postern-maps.5', 'share/man/man1/posternctl.1',
])
def test_installed(destdir, path):
    prefix, _ = prefix_of(destdir)
    assert os.path.exists(os.path.join(prefix, path)), path


def test_default_configuration(destdir):
    _, opts = prefix_of(destdir)
    conf = destdir + opts['confdir']
    assert os.path.isfile(os.path.join(conf, 'main.cf'))
    with open(os.path.join(conf, 'services.d', 'submission.cf')) as f:
        assert 'smtpd_tls_security_level = encrypt' in f.read()
    assert os.path.isfile(os.path.join(conf, 'services.d', 'smtps.cf'))


def test_reinstall_keeps_admin_changes(destdir):
    _, opts = prefix_of(destdir)
    main_cf = os.path.join(destdir + opts['confdir'], 'main.cf')
    with open(main_cf, 'w') as f:
        f.write('myhostname = changed.example\n')
    env = dict(os.environ, DESTDIR=destdir)
    subprocess.run(['meson', 'install', '-C', BUILD_DIR, '--no-rebuild', '--quiet'],
                   env=env, check=True, capture_output=True)
    with open(main_cf) as f:
        assert f.read() == 'myhostname = changed.example\n'


def test_catalog_parses(destdir):
    """journalctl accepts the catalog and finds every entry."""
    prefix, _ = prefix_of(destdir)
    catalog = os.path.join(prefix, 'lib/systemd/catalog/postern.catalog')
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, 'usr/lib/systemd/catalog'))
        subprocess.run(['cp', catalog, os.path.join(root, 'usr/lib/systemd/catalog/')], check=True)
        subprocess.run(['journalctl', '--root', root, '--update-catalog'], check=True,
                       capture_output=True)
        out = subprocess.run(['journalctl', '--root', root, '--list-catalog'], check=True,
                             capture_output=True, text=True).stdout
    ids = [l.split()[1] for l in open(catalog) if l.startswith('-- ')]
    src = open(os.path.join(os.path.dirname(__file__), '..', 'src/shared/log-msgid.h')).read()
    for msgid in (w.strip('"') for w in src.split() if w.startswith('"') and len(w) == 34):
        assert msgid in ids, f'{msgid} from log-msgid.h has no catalog entry'
    for i in ids:
        assert i in out.replace('-', '') or i in out


def test_every_man_page_installed(destdir):
    """Every page of man/ and the generated postern.conf(5) land in their
    section's directory, and the installed pages render without warnings."""
    prefix, _ = prefix_of(destdir)
    man_dir = os.path.join(os.path.dirname(__file__), '..', 'man')
    pages = sorted(p for p in os.listdir(man_dir) if p[-2:-1] == '.' and p[-1] in '1234578')
    assert len(pages) >= 20
    installed = []
    for page in pages + ['postern.conf.5']:
        path = os.path.join(prefix, 'share/man/man' + page[-1], page)
        assert os.path.isfile(path), path
        installed.append(path)
    for path in installed:
        r = subprocess.run(['groff', '-ww', '-z', '-t', '-man', path], capture_output=True,
                           text=True)
        assert r.returncode == 0 and r.stderr == '', (path, r.stderr)
