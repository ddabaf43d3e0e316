#!/usr/bin/env python3
# gen-params.py: turns src/shared/conf-params.tab (the table of every main.cf
# parameter, format described in its header) into
#   --header FILE  conf-params.h: enum ConfParam { P_<NAME>, ..., _P_MAX }
#   --source FILE  conf-params.c: const ConfParamInfo conf_params[_P_MAX],
#                  sorted by name so that conf_param_lookup() can bisect
#   --man FILE     postern.conf(5): syntax, types and every parameter
# Any subset of the outputs may be asked for. @CONFDIR@-style placeholders in
# defaults become the config.h macros in C, and the --set NAME=VALUE values
# in the man page. The table is checked strictly: a bad row stops the build
# with its line number.

import argparse
import re
import sys
import textwrap

TYPES = {
    'string': 'CONF_TYPE_STRING',
    'bool': 'CONF_TYPE_BOOL',
    'int': 'CONF_TYPE_INT',
    'time': 'CONF_TYPE_TIME',
    'size': 'CONF_TYPE_SIZE',
    'list': 'CONF_TYPE_LIST',
    'maplist': 'CONF_TYPE_MAPLIST',
    'enum': 'CONF_TYPE_STRING',
}
FLAGS = {
    'computed': 'CONF_FLAG_COMPUTED',
    'readonly': 'CONF_FLAG_READONLY',
    'raw': 'CONF_FLAG_RAW',
    'unimplemented': 'CONF_FLAG_UNIMPLEMENTED',
}
SERVICES = ['smtpd', 'submission', 'smtps', 'qmgr', 'deliver-remote', 'deliver-local',
            'bounce', 'pickup', 'sendmail', 'postqueue', 'postmap', 'postalias', 'all']
# Placeholder -> macro of the generated config.h.
MACROS = {
    'CONFDIR': 'POSTERN_CONFIG_DIR',
    'SPOOLDIR': 'POSTERN_SPOOL_DIR',
    'SBINDIR': 'POSTERN_SBINDIR',
    'LIBEXECDIR': 'POSTERN_LIBEXECDIR',
    'VERSION': 'POSTERN_VERSION',
}
TIME_UNITS = 'smhdw'
UNIT_NAMES = {'s': 'seconds', 'm': 'minutes', 'h': 'hours', 'd': 'days', 'w': 'weeks'}
MAN_DATE = '2026-11-25'


class Param:
    pass


def fail(path, lineno, msg):
    sys.exit('%s:%d: error: %s' % (path, lineno, msg))


def parse_table(path):
    params = []
    seen = {}
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip('\n')
            if not line.strip() or line.lstrip().startswith('#'):
                continue
            fields = [x.strip() for x in line.split('|')]
            if len(fields) < 6:
                fail(path, lineno, 'expected 6 fields separated by "|"')
            p = Param()
            p.lineno = lineno
            p.name, typ, flags, services = fields[:4]
            p.default = '|'.join(fields[4:-1]).strip()
            p.description = fields[-1]
            if not re.fullmatch(r'[A-Za-z0-9_]+', p.name):
                fail(path, lineno, 'bad parameter name "%s"' % p.name)
            if p.name in seen:
                fail(path, lineno, '%s already defined at line %d' % (p.name, seen[p.name]))
            seen[p.name] = lineno
            p.time_unit = None
            p.choices = None
            base, _, arg = typ.partition(':')
            if base not in TYPES:
                fail(path, lineno, 'unknown type "%s"' % typ)
            p.type = base
            if base == 'time':
                if len(arg) != 1 or arg not in TIME_UNITS:
                    fail(path, lineno, 'time needs a default unit, e.g. time:s')
                p.time_unit = arg
            elif base == 'enum':
                if not arg:
                    fail(path, lineno, 'enum needs its values, e.g. enum:yes,no')
                p.choices = arg.split(',')
                if any(c != c.strip() or (not c and i > 0) for i, c in enumerate(p.choices)):
                    fail(path, lineno, 'bad enum values "%s"' % arg)
                if p.default.lower() not in [c.lower() for c in p.choices]:
                    fail(path, lineno, 'default "%s" is not one of the enum values' % p.default)
            elif arg:
                fail(path, lineno, 'type %s takes no argument' % base)
            p.flags = [] if flags == '-' else [x.strip() for x in flags.split(',')]
            for fl in p.flags:
                if fl not in FLAGS:
                    fail(path, lineno, 'unknown flag "%s"' % fl)
            svcs = []
            for s in services.split():
                if s == 'smtpd*':
                    svcs += ['smtpd', 'submission', 'smtps']
                elif s in SERVICES:
                    svcs.append(s)
                else:
                    fail(path, lineno, 'unknown service "%s"' % s)
            if not svcs:
                fail(path, lineno, 'no services given')
            p.services = ' '.join(svcs)
            if not p.description or '|' in p.description:
                fail(path, lineno, 'missing description')
            for m in re.findall(r'@([A-Z]+)@', p.default):
                if m not in MACROS:
                    fail(path, lineno, 'unknown placeholder @%s@' % m)
            params.append(p)
    params.sort(key=lambda p: p.name.encode())
    return params


def c_string(s):
    out = '"'
    for ch in s:
        if ch in '"\\':
            out += '\\' + ch
        elif ' ' <= ch <= '~':
            out += ch
        else:
            out += '\\%03o' % ord(ch)
    return out + '"'


def c_default(s):
    """A C expression for a default, with placeholders as config.h macros."""
    parts = re.split(r'@([A-Z]+)@', s)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(MACROS[part])
        elif part or len(parts) == 1:
            out.append(c_string(part))
    return ' '.join(out)


def enum_name(name):
    return 'P_' + name.upper()


def write_header(params, path):
    with open(path, 'w', encoding='utf-8') as f:
        f.write('/* conf-params.h: generated by tools/gen-params.py from conf-params.tab;\n'
                ' * do not edit. One value per main.cf parameter, in name order. */\n'
                '#pragma once\n\n'
                'typedef enum ConfParam {\n')
        for p in params:
            f.write('        %s,\n' % enum_name(p.name))
        f.write('        _P_MAX,\n} ConfParam;\n')


def write_source(params, path):
    with open(path, 'w', encoding='utf-8') as f:
        f.write('/* conf-params.c: generated by tools/gen-params.py from conf-params.tab;\n'
                ' * do not edit. The table is sorted by name (strcmp order). */\n'
                '#include <stddef.h>\n\n#include "conf.h"\n\n')
        for p in params:
            if p.choices:
                f.write('static const char *const choices_%s[] = {%s, NULL};\n'
                        % (p.name, ', '.join(c_string(c) for c in p.choices)))
        f.write('\nconst ConfParamInfo conf_params[_P_MAX] = {\n')
        for p in params:
            flags = ' | '.join(FLAGS[x] for x in p.flags) or '0'
            f.write('        [%s] = {\n' % enum_name(p.name))
            f.write('                .name = %s,\n' % c_string(p.name))
            f.write('                .type = %s,\n' % TYPES[p.type])
            f.write('                .def = %s,\n' % c_default(p.default))
            f.write('                .time_unit = %s,\n'
                    % ("'%s'" % p.time_unit if p.time_unit else '0'))
            f.write('                .flags = %s,\n' % flags)
            f.write('                .services = %s,\n' % c_string(p.services))
            f.write('                .description = %s,\n' % c_string(p.description))
            f.write('                .choices = %s,\n'
                    % ('choices_' + p.name if p.choices else 'NULL'))
            f.write('        },\n')
        f.write('};\n')


def roff(s):
    """Escapes text for use inside a roff line (not at its start)."""
    return s.replace('\\', '\\e').replace('-', '\\-')


def roff_line(s):
    s = roff(s)
    if s.startswith(('.', "'")):
        s = '\\&' + s
    return s


def roff_text(s, width=72):
    """Text lines for a paragraph: one sentence per line, wrapped, escaped."""
    lines = []
    for sentence in re.split(r'(?<=[.!?;:])\s+(?=[A-Z])', s):
        for line in textwrap.wrap(sentence, width, break_on_hyphens=False):
            lines.append(roff_line(line))
    return '\n'.join(lines)


def type_text(p):
    if p.type == 'time':
        return 'time (bare numbers are %s)' % UNIT_NAMES[p.time_unit]
    if p.type == 'enum':
        vals = [c for c in p.choices if c]
        t = 'one of ' + ', '.join(vals)
        if '' in p.choices:
            t += ', or empty'
        return t
    return {
        'string': 'string',
        'bool': 'boolean',
        'int': 'integer',
        'size': 'size',
        'list': 'list',
        'maplist': 'list of lookup tables',
    }[p.type]


MAN_HEAD = r'''.TH POSTERN.CONF 5 @DATE@ postern "postern manual"
.SH NAME
postern.conf \- postern configuration parameters
.SH SYNOPSIS
.IR @CONFDIR@ /main.cf
.br
.IR @CONFDIR@ /services.d/ NAME .cf
.SH DESCRIPTION
postern reads its configuration from
.B main.cf
in the configuration directory, in the syntax of Postfix's main.cf.
Every program, daemon and command reads the same file; a daemon serving
service
.I NAME
then applies
.BI services.d/ NAME .cf
on top of it.
.SS Syntax
Each logical line has the form
.IP
.I name
=
.I value
.PP
White space around the name, the equal sign and the value is ignored.
A line that starts with white space continues the previous logical line.
Empty lines and lines whose first non\-blank character is
.B #
are comments; a
.B #
later in a line is part of the value.
When a name is given more than once, the last value wins, with a warning.
.SS Expansion
.B $\fIname\fB
and
.B ${\fIname\fB}
(or
.BR $(\fIname\fB) )
in a value are replaced with the value of parameter
.IR name ;
.B $$
stands for a literal dollar sign.
.B ${\fIname\fB?\fIvalue\fB}
gives
.I value
when
.I name
is set to a non\-empty value and nothing otherwise;
.B ${\fIname\fB:\fIvalue\fB}
gives
.I value
when
.I name
is empty or unknown.
.B ${\fIname\fB?{\fIvalue1\fB}:{\fIvalue2\fB}}
chooses between two values, and
.B ${\fIname\fB?{\fIvalue\fB}}
and
.B ${\fIname\fB:{\fIvalue\fB}}
allow the value to contain colons and braces.
Expansion happens when the configuration is used, after the whole file has
been read, so that
.B myorigin = $mydomain
follows a later change of
.BR mydomain .
A reference to an undefined name expands to nothing, with a warning;
references nested more than 100 levels deep are an error.
Names that are not postern parameters may be defined and used in other
values (for example with
.BR smtpd_restriction_classes );
unused unknown names draw a warning.
.SS Value types
.TP
.B string
Any text.
.TP
.B boolean
.B yes
or
.BR no ;
.B true
and
.B false
are accepted as well, in any case.
.TP
.B integer
A decimal number.
.TP
.B time
A number with an optional unit:
.B s
(seconds),
.B m
(minutes),
.B h
(hours),
.B d
(days) or
.B w
(weeks).
A number without unit uses the unit given for the parameter.
.TP
.B size
A number of bytes, optionally followed by
.BR k ,
.B m
or
.B g
(multiples of 1024).
.TP
.B list
Items separated by commas and/or white space; an item in braces
.B { ... }
may contain both.
.TP
.B list of lookup tables
A list of
.IB type : name
tables, for example
.BR hash:@CONFDIR@/virtual ,
.B regexp:@CONFDIR@/header_checks
or
.BR inline:{\~key=value\~} .
.PP
Values are checked against their type after expansion whenever the
configuration is loaded.
A file with errors is rejected as a whole: a daemon keeps its previous
configuration and a command stops, reporting each problem as
.IB file : line :
.BR error: .
Unknown parameter names are reported as warnings, and so are parameters
that postern accepts but does not implement (marked below) when they are
set to a value other than their default:
.IP
.IB file : line ": warning: " name " is not implemented by postern; the setting has no effect"
.SS Per\-service overrides
.BI services.d/ NAME .cf
has the syntax of main.cf and overrides parameters for service
.I NAME
only, like the
.B "\-o name=value"
options of Postfix's master.cf.
The services are
.BR smtpd ,
.BR submission ,
.B smtps
(the
.B inet
services of
.BR postern\-smtpd ),
.BR qmgr ,
.BR deliver\-remote ,
.BR deliver\-local ,
.B bounce
and
.B pickup
.RB ( unix
services).
Values in main.cf that refer to an overridden parameter see the override.
.B postconf \-P
lists the overrides.
.SS Configuration directory
The directory is
.I @CONFDIR@
unless the
.B \-c
.I dir
option of a command or the environment variable
.B POSTERN_CONFIG_DIR
selects another one.
Programs running set\-user\-id or set\-group\-id ignore the variable.
.SS Differences from Postfix
Defaults are those of Postfix 3.7 at compatibility level 3.6.
Conditional defaults that depend on
.B compatibility_level
or on system stress in Postfix have their fixed, modern value here:
.BR append_dot_mydomain ,
.BR mynetworks_style ,
.BR relay_domains ,
.BR smtpd_relay_restrictions ,
.BR smtputf8_enable ,
.BR smtp_tls_fingerprint_digest ,
.BR smtpd_tls_fingerprint_digest ,
.BR smtpd_hard_error_limit ,
.B smtpd_junk_command_limit
and
.BR smtpd_timeout .
The default
.B myhostname
comes from
.BR gethostname (2)
without a DNS lookup, as in Postfix.
Deliberate differences:
.TP
.B alias_maps
is
.B hash:/etc/aliases
without Postfix's
.BR nis:mail.aliases :
postern has no NIS client.
.TP
.B biff
is
.BR no :
postern does not implement the biff notification.
.TP
.B virtual_mailbox_lock
is
.B fcntl
(Postfix on Linux:
.BR "fcntl, dotlock" ),
so that virtual delivery leaves no lock files in
.BR virtual_mailbox_base .
.TP
.BR smtpd_forbid_bare_newline ", " smtpd_forbid_unauth_pipelining
have the Postfix 3.9 defaults
.B normalize
and
.BR yes ,
against SMTP smuggling and clients that talk out of turn.
.TP
.BR smtpd_sasl_type ", " smtpd_sasl_path
are
.B dovecot
and
.BR private/auth :
postern speaks only the Dovecot authentication protocol.
.TP
.BR compatibility_level ", " enable_long_queue_ids
are
.B 3.6
and
.BR yes ,
and informational: postern always behaves so.
.TP
.BR mail_name ", " mail_owner ", " syslog_name ", " mail_version
and the directories
.RB ( config_directory ,
.BR queue_directory ,
.BR data_directory ,
.BR command_directory ,
.BR daemon_directory ,
.BR readme_directory )
name postern, its account and its own paths.
.PP
Parameters that Postfix does not have, such as
.B dns_resolver_servers
or
.BR smtpd_worker_processes ,
are postern's own; the per\-transport limits such as
.B smtp_destination_concurrency_limit
exist for postern's fixed transports
.BR smtp ,
.BR relay ,
.B lmtp
and
.B virtual
whether or not a master.cf defines them.
.SH PARAMETERS
'''

MAN_TAIL = r'''.SH FILES
.TP
.I @CONFDIR@/main.cf
Main configuration file.
.TP
.I @CONFDIR@/services.d/
Per\-service overrides.
.SH SEE ALSO
.BR postconf (1),
.BR posternctl (1),
.BR postern (7)
'''


def write_man(params, path, values):
    def subst(text):
        return re.sub(r'@([A-Z]+)@', lambda m: values[m.group(1)], text)

    out = [subst(MAN_HEAD.replace('@DATE@', MAN_DATE))]
    for p in params:
        out.append('.TP\n.B %s\n' % p.name)
        out.append('%s\n' % roff_text(p.description))
        out.append('.br\nType: %s.\n' % roff(type_text(p)))
        if 'computed' in p.flags:
            default = 'computed at run time (see the description)'
            out.append('.br\nDefault: %s.\n' % default)
        elif p.default:
            out.append('.br\nDefault:\n.BR "%s" .\n' % roff(subst(p.default)).replace('"', '""'))
        else:
            out.append('.br\nDefault: empty.\n')
        notes = []
        if 'readonly' in p.flags:
            notes.append('informational, postern does not act on it')
        if 'unimplemented' in p.flags:
            notes.append('not implemented by postern: setting it has no effect, and a value '
                         'other than the default draws a warning')
        if 'raw' in p.flags:
            notes.append('not expanded when loaded')
        svc = 'all programs' if p.services == 'all' else ', '.join(p.services.split())
        out.append('.br\nRead by: %s%s.\n' % (roff(svc), ''.join('; ' + roff(n) for n in notes)))
    out.append(subst(MAN_TAIL))
    with open(path, 'w', encoding='utf-8') as f:
        f.write(''.join(out))


def main():
    ap = argparse.ArgumentParser(description='Generate the parameter table sources.')
    ap.add_argument('--table', required=True, help='conf-params.tab')
    ap.add_argument('--header', help='write conf-params.h here')
    ap.add_argument('--source', help='write conf-params.c here')
    ap.add_argument('--man', help='write postern.conf.5 here')
    ap.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                    help='value of @NAME@ in the man page (CONFDIR, SPOOLDIR, ...)')
    a = ap.parse_args()

    params = parse_table(a.table)
    if a.header:
        write_header(params, a.header)
    if a.source:
        write_source(params, a.source)
    if a.man:
        values = {}
        for s in a.set:
            k, eq, v = s.partition('=')
            if not eq or k not in MACROS:
                sys.exit('gen-params.py: bad --set %s' % s)
            values[k] = v
        missing = [k for k in MACROS if k not in values]
        if missing:
            sys.exit('gen-params.py: --man needs --set for %s' % ', '.join(missing))
        write_man(params, a.man, values)


if __name__ == '__main__':
    main()
