"""A throwaway systemd container for tests under real systemd.

The container boots the host's own /usr with an empty, volatile root
(systemd-nspawn --volatile=yes), with a staged "meson install" of postern
bound over /usr/local and /etc/postern, and a private network namespace (only
loopback). Commands run inside with nsenter; clients that need only the
network run from the host inside the container's network namespace
(Container.net_cmd). The container is stopped by the PID of its
systemd-nspawn process."""
import os
import shutil
import signal
import subprocess
import tempfile

import common
from common import SRC_DIR

PLAIN_BUILD_DIR = (os.environ.get('POSTERN_PLAIN_BUILD_DIR')
                   or os.environ.get('POSTERN_BUILD_DIR')
                   or os.path.join(SRC_DIR, 'build'))


def stage_install(build_dir, stage):
    """Installs the build below stage (DESTDIR) and returns its prefix."""
    env = dict(os.environ, DESTDIR=stage)
    subprocess.run(['meson', 'install', '-C', build_dir, '--quiet'], env=env, check=True,
                   capture_output=True)
    return os.path.join(stage, 'usr/local')


def wait_for(predicate, timeout=30.0, what='condition'):
    """common.wait_for with this module's default deadline."""
    return common.wait_for(predicate, timeout, what)


class Container:
    def __init__(self, main_cf='', services=None, build_dir=PLAIN_BUILD_DIR, extra_binds=()):
        self.tmp = tempfile.mkdtemp(prefix='postern-nspawn.')
        self.stage = os.path.join(self.tmp, 'stage')
        self.prefix = stage_install(build_dir, self.stage)
        self.confdir = os.path.join(self.stage, 'etc/postern')
        with open(os.path.join(self.confdir, 'main.cf'), 'a') as f:
            f.write(main_cf)
        for name, text in (services or {}).items():
            with open(os.path.join(self.confdir, 'services.d', name + '.cf'), 'a') as f:
                f.write(text)
        self.shared = os.path.join(self.tmp, 'shared')
        os.makedirs(self.shared)
        self.empty_unitdir = os.path.join(self.tmp, 'etc-systemd-system')
        os.makedirs(self.empty_unitdir)
        self.extra_binds = list(extra_binds)
        self.proc = None
        self.leader = None

    def boot(self):
        self.log = open(os.path.join(self.tmp, 'nspawn.log'), 'w')
        args = ['systemd-nspawn', '-D', '/', '--volatile=yes', '--register=no', '--keep-unit',
                '-q', '--private-network',
                '--bind-ro=%s:/usr/local' % self.prefix,
                '--bind=%s:/etc/postern' % self.confdir,
                '--bind=%s:/srv/shared' % self.shared,
                # An empty, read-only /etc/systemd/system keeps first-boot
                # presets from enabling the host's other services (dovecot,
                # postfix, ...) inside the container.
                '--bind-ro=%s:/etc/systemd/system' % self.empty_unitdir]
        args += ['--bind=%s' % b for b in self.extra_binds]
        args += ['-b', 'systemd.firstboot=off']
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.leader = wait_for(self._find_leader, what='container init')
        wait_for(lambda: self.run(['systemctl', 'is-system-running'], check=False).stdout.strip()
                 in ('running', 'degraded'), timeout=60, what='container boot')
        return self

    def _find_leader(self):
        if self.proc.poll() is not None:
            raise RuntimeError('systemd-nspawn exited: ' + open(self.log.name).read()[-2000:])
        try:
            children = open('/proc/%d/task/%d/children' % (self.proc.pid, self.proc.pid)).read()
        except OSError:
            return None
        for pid in children.split():
            try:
                if os.readlink('/proc/%s/exe' % pid).endswith('/systemd'):
                    return int(pid)
            except OSError:
                pass
        return None

    def run(self, args, check=True, input=None, timeout=60):
        """Runs a command inside the container (all namespaces)."""
        return subprocess.run(['nsenter', '-t', str(self.leader), '-a'] + args, input=input,
                              capture_output=True, text=True, check=check, timeout=timeout)

    def net_cmd(self, args):
        """The argument list that runs a host program in the container's
        network namespace only."""
        return ['nsenter', '-t', str(self.leader), '-n'] + args

    def systemctl(self, *args, check=True):
        return self.run(['systemctl', '--no-pager'] + list(args), check=check)

    def is_active(self, unit):
        return self.systemctl('is-active', unit, check=False).stdout.strip()

    def journal(self, *args):
        return self.run(['journalctl', '--no-pager', '-q'] + list(args), check=False).stdout

    def setup_postern(self):
        self.run(['systemd-sysusers'])
        # A test certificate for the TLS services, its key readable by the
        # postern user only (the shipped main.cf names the distribution's
        # snakeoil certificate, which a volatile container does not have).
        tls = os.path.join(self.confdir, 'tls')
        os.makedirs(tls, exist_ok=True)
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                        'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj',
                        '/CN=mx.example.test', '-keyout', os.path.join(tls, 'key.pem'),
                        '-out', os.path.join(tls, 'cert.pem')], check=True, capture_output=True)
        self.run(['chown', 'postern:postern', '/etc/postern/tls/key.pem'])
        self.run(['chmod', '0600', '/etc/postern/tls/key.pem'])
        self.run(['/usr/local/sbin/postconf', '-e', 'smtpd_tls_cert_file = /etc/postern/tls/cert.pem',
                  'smtpd_tls_key_file = /etc/postern/tls/key.pem'])
        self.run(['systemd-tmpfiles', '--create', '--prefix=/var/spool/postern',
                  '--prefix=/run/postern', '--prefix=/var/lib/postern'])
        self.run(['journalctl', '--update-catalog'], check=False)
        self.systemctl('daemon-reload')

    def stop(self):
        if self.proc and self.proc.poll() is None:
            # SIGTERM asks systemd-nspawn for an orderly shutdown of the container.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
