"""Helpers shared by the integration tests: where the built programs are,
and private configuration directories."""
import os
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_DIR = os.path.dirname(HERE)
BUILD_DIR = os.environ.get('POSTERN_BUILD_DIR') or os.path.join(SRC_DIR, 'build')


def program(path):
    """Path of a built program, e.g. program('src/tools/postconf/postconf')."""
    return os.path.join(BUILD_DIR, path)


def run(args, confdir=None, input=None, check=False, env=None):
    """Runs a command as a user would, returning the CompletedProcess with
    text output."""
    e = dict(os.environ)
    if confdir:
        e['POSTERN_CONFIG_DIR'] = confdir
    if env:
        e.update(env)
    return subprocess.run(args, input=input, capture_output=True, text=True, env=e,
                          check=check, timeout=60)


def wait_for(predicate, timeout=10.0, what='condition', interval=0.02):
    """Polls predicate until it returns a true value (which it returns) or
    the deadline passes (TimeoutError naming what was awaited)."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError('timed out waiting for ' + what)
        time.sleep(interval)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
