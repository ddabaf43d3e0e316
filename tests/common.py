"""Helpers shared by the integration tests: where the built programs are,
and private configuration directories."""
import os
import subprocess

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
