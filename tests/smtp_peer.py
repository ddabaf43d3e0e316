"""A small scriptable SMTP server for the delivery tests: a real SMTP peer
over TCP whose replies, extensions, delays and TLS the test chooses, which
records every connection, command and message as JSON lines.

    python3 smtp_peer.py CONFIG.json

CONFIG keys: listen ["addr", port], log (path), greeting ("220 ..."),
extensions (EHLO keywords), ehlo_reply (replaces the EHLO reply, e.g.
"502 5.5.2 Error: command not recognized"), starttls (null or [cert, key]),
broken_tls (answer 220 to STARTTLS, then send garbage and close),
implicit_tls (null or [cert, key]: TLS from the start of every connection,
port 465 style, RFC 8314; no STARTTLS then),
replies ({"MAIL": "...", "RCPT:addr": "...", "DATA": "...", "DOT": "..."}),
delays ({"greeting": seconds, "DOT": seconds, ...}),
auth (SMTP AUTH, RFC 4954: {"mechanisms": "PLAIN LOGIN", "users": {name:
password}, "required": true for "530" to MAIL before AUTH}).

Events: listening, connect, cmd, auth (mech, user, ok), tls (with the TLS version and "sni", the
server name the client sent or null), message, error, close."""
import asyncio
import base64
import binascii
import json
import ssl
import sys
import time


class Peer:
    def __init__(self, cfg):
        self.cfg = cfg
        self.log = open(cfg['log'], 'a', buffering=1)
        self.conn_seq = 0

    def record(self, **ev):
        ev['t'] = time.time()
        self.log.write(json.dumps(ev) + '\n')

    def reply_for(self, key, default):
        return self.cfg.get('replies', {}).get(key, default)

    async def delay(self, key):
        d = self.cfg.get('delays', {}).get(key)
        if d:
            await asyncio.sleep(d)

    async def handle(self, reader, writer):
        self.conn_seq += 1
        conn = self.conn_seq
        peer = writer.get_extra_info('peername')
        self.record(ev='connect', conn=conn, peer=peer[0])
        tls = writer.get_extra_info('ssl_object') is not None
        if tls:
            self.record(ev='tls', conn=conn, sni=self.sni.pop(0) if self.sni else None,
                        version=writer.get_extra_info('ssl_object').version())

        async def send(line):
            writer.write(line.encode() + b'\r\n')
            await writer.drain()

        try:
            await self.delay('greeting')
            await send(self.cfg.get('greeting', '220 mx.peer.example ESMTP test peer'))
            mail = None
            authed = False
            auth = self.cfg.get('auth')
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                line = raw.decode('utf-8', 'replace').rstrip('\r\n')
                self.record(ev='cmd', conn=conn, line=line, tls=tls)
                verb = line.split(' ', 1)[0].split(':', 1)[0].upper()
                if verb in ('EHLO', 'LHLO'):
                    await self.delay('EHLO')
                    if self.cfg.get('ehlo_reply'):
                        await send(self.cfg['ehlo_reply'])
                        continue
                    ext = list(self.cfg.get('extensions', ['PIPELINING', '8BITMIME']))
                    if self.cfg.get('starttls') and not tls:
                        ext.append('STARTTLS')
                    if auth:
                        ext.append('AUTH ' + auth['mechanisms'])
                    lines = ['mx.peer.example'] + ext
                    for i, text in enumerate(lines):
                        await send('250%s%s' % ('-' if i < len(lines) - 1 else ' ', text))
                elif verb == 'HELO':
                    await send('250 mx.peer.example')
                elif verb == 'STARTTLS':
                    await send('220 2.0.0 Ready to start TLS')
                    if self.cfg.get('broken_tls'):
                        writer.write(b'this is not TLS\r\n' * 4)
                        await writer.drain()
                        break
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    ctx.load_cert_chain(*self.cfg['starttls'])
                    if self.cfg.get('tls_max_version'):
                        ctx.maximum_version = ssl.TLSVersion[self.cfg['tls_max_version']]
                    sni = []

                    def on_sni(sslobj, name, sslctx):
                        # None when the client sent no server name.
                        sni.append(name)
                    ctx.sni_callback = on_sni
                    await writer.start_tls(ctx)
                    tls = True
                    self.record(ev='tls', conn=conn, sni=sni[0] if sni else None,
                                version=writer.get_extra_info('ssl_object').version())
                elif verb == 'AUTH' and auth:
                    words = line.split()
                    mech = words[1].upper() if len(words) > 1 else ''

                    async def ask(prompt):
                        await send('334 ' + base64.b64encode(prompt.encode()).decode())
                        got = (await reader.readline()).decode('utf-8', 'replace').strip()
                        self.record(ev='cmd', conn=conn, line=got, tls=tls)
                        return base64.b64decode(got, validate=True).decode()
                    try:
                        if mech == 'PLAIN':
                            resp = words[2] if len(words) > 2 else None
                            resp = (base64.b64decode(resp, validate=True).decode() if resp
                                    else (await ask('')))
                            _, user, pw = resp.split('\0')
                        elif mech == 'LOGIN':
                            user = await ask('Username:')
                            pw = await ask('Password:')
                        else:
                            await send('504 5.5.4 Unrecognized authentication type')
                            continue
                    except (ValueError, binascii.Error):
                        await send('501 5.5.2 Cannot decode response')
                        continue
                    authed = auth['users'].get(user) == pw
                    self.record(ev='auth', conn=conn, mech=mech, user=user, ok=authed)
                    await send('235 2.7.0 Authentication successful' if authed
                               else '535 5.7.8 Error: authentication failed: bad credentials')
                elif verb == 'MAIL' and auth and auth.get('required') and not authed:
                    await send('530 5.7.0 Authentication required')
                elif verb == 'MAIL':
                    await self.delay('MAIL')
                    mail = {'from': line, 'rcpts': [], 'conn': conn, 'tls': tls}
                    await send(self.reply_for('MAIL', '250 2.1.0 Ok'))
                elif verb == 'RCPT':
                    await self.delay('RCPT')
                    addr = line[line.find('<') + 1:line.find('>')]
                    r = self.reply_for('RCPT:' + addr, self.reply_for('RCPT', '250 2.1.5 Ok'))
                    if r.startswith('2') and mail is not None:
                        mail['rcpts'].append(line)
                    await send(r)
                elif verb == 'DATA':
                    await self.delay('DATA')
                    r = self.reply_for('DATA', '354 End data with <CR><LF>.<CR><LF>')
                    if mail is None or not mail['rcpts']:
                        r = '554 5.5.1 Error: no valid recipients'
                    await send(r)
                    if not r.startswith('354'):
                        continue
                    data = b''
                    while True:
                        chunk = await reader.readline()
                        if not chunk:
                            return
                        if chunk == b'.\r\n':
                            break
                        data += chunk
                    mail['data'] = data.decode('utf-8', 'surrogateescape')
                    mail['eight_bit'] = any(b >= 0x80 for b in data)
                    self.record(ev='message', **mail)
                    await self.delay('DOT')
                    await send(self.reply_for('DOT', '250 2.0.0 Ok: queued as TESTPEER'))
                    mail = None
                elif verb == 'RSET':
                    mail = None
                    await send(self.reply_for('RSET', '250 2.0.0 Ok'))
                elif verb == 'QUIT':
                    await send('221 2.0.0 Bye')
                    break
                elif verb == 'NOOP':
                    await send('250 2.0.0 Ok')
                else:
                    await send('502 5.5.2 Error: command not recognized')
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as e:
            self.record(ev='error', conn=conn, error=str(e))
        finally:
            self.record(ev='close', conn=conn)
            try:
                writer.close()
            except Exception:
                pass


async def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    peer = Peer(cfg)
    ctx = None
    peer.sni = []
    if cfg.get('implicit_tls'):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cfg['implicit_tls'])

        def on_sni(sslobj, name, sslctx):
            peer.sni.append(name)
        ctx.sni_callback = on_sni
    server = await asyncio.start_server(peer.handle, cfg['listen'][0], cfg['listen'][1],
                                        reuse_address=True, ssl=ctx)
    peer.record(ev='listening')
    async with server:
        await server.serve_forever()


if __name__ == '__main__':
    asyncio.run(main())
