"""A private Dovecot for the SASL tests: only the auth service, listening on
one unix socket (where postern's smtpd_sasl_path points), users from a
passwd-file, no network listeners, run in the foreground from its own
configuration file and stopped by its PID."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DOVECOT = '/usr/sbin/dovecot'

CONF = '''\
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
protocols =
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
default_login_user = dovecot
default_internal_user = dovecot
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {tmp}/passwd
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  unix_listener {socket} {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
'''


def available():
    return os.access(DOVECOT, os.X_OK)


class Dovecot:
    """users: dict of name -> plaintext password."""

    def __init__(self, socket_path, users):
        self.socket_path = socket_path
        self.tmp = tempfile.mkdtemp(prefix='postern-dovecot.')
        os.chmod(self.tmp, 0o755)       # the auth process runs as dovecot
        for d in ('run', 'state'):
            os.makedirs(os.path.join(self.tmp, d))
        with open(os.path.join(self.tmp, 'passwd'), 'w') as f:
            for name, pw in users.items():
                f.write('%s:{PLAIN}%s::::::\n' % (name, pw))
        os.chmod(os.path.join(self.tmp, 'passwd'), 0o644)
        self.conf = os.path.join(self.tmp, 'dovecot.conf')
        with open(self.conf, 'w') as f:
            f.write(CONF.format(tmp=self.tmp, socket=socket_path))
        os.makedirs(os.path.dirname(socket_path), exist_ok=True)
        self.proc = None

    def start(self, timeout=15):
        # Its own process group: the auth, log and anvil children outlive a
        # master killed by SIGTERM for a while, and are stopped as a group.
        self.proc = subprocess.Popen([DOVECOT, '-F', '-c', self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError('dovecot exited: ' + self.log_text())
            if time.monotonic() > deadline:
                raise TimeoutError('dovecot auth socket did not appear: ' + self.log_text())
            time.sleep(0.05)
        return self

    def _ready(self):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(self.socket_path)
                # The handshake ends with DONE once the auth process runs.
                data = b''
                while b'DONE\n' not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        return False
                    data += chunk
                return True
        except OSError:
            return False

    def stop(self):
        if not self.proc:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        deadline = time.monotonic() + 10
        try:
            os.killpg(pgid, signal.SIGTERM)
            while time.monotonic() < deadline:
                os.killpg(pgid, 0)
                time.sleep(0.05)
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # Dovecot leaves its listener behind; a stale socket is what an
        # administrator sees after a crash, so leave it too.

    def log_text(self):
        try:
            with open(os.path.join(self.tmp, 'dovecot.log'), errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
