"""A real SMTP server for the channel tests (aiosmtpd).

Usage: smtp_sink.py OUTDIR

Listens on 127.0.0.1 on a free port and prints `port N` once it accepts
connections. Every accepted mail becomes OUTDIR/N.json (written to a
temporary name first, then renamed) with the envelope, the login used,
the headers decoded, the text body decoded, and the raw message.

Recipients starting with `tempfail` get a 451 and those starting with
`reject` a 550, so tests can check how the sender sorts SMTP errors.
AUTH PLAIN/LOGIN is offered without TLS; only beredskab / mail-secret
passes.
"""

import asyncio
import email
import email.policy
import json
import os
import socket
import logging
import sys

from aiosmtpd.smtp import SMTP, AuthResult

# aiosmtpd 1.4 logs a deprecation warning about its own use of the old
# login_data on each login.
logging.getLogger("mail.log").setLevel(logging.ERROR)

USER = b"beredskab"
PASSWORD = b"mail-secret"


class Sink:
    def __init__(self, out):
        self.out = out
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("tempfail"):
            return "451 4.3.0 try again later"
        if address.startswith("reject"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        headers = {}
        for name, value in msg.items():
            headers.setdefault(name.lower(), []).append(str(value))
        auth = session.auth_data
        login = auth.login.decode() if session.authenticated and auth else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": login,
            "headers": headers,
            "content_type": msg.get_content_type(),
            "charset": msg.get_content_charset(),
            "body": msg.get_content(),
            "raw": raw.decode("utf-8", "replace"),
        }
        self.count += 1
        tmp = os.path.join(self.out, ".%d.json.tmp" % self.count)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.out, "%d.json" % self.count))
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == USER and auth_data.password == PASSWORD
    # handled=False: aiosmtpd itself answers 535 to a failed login.
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


async def main(out):
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    handler = Sink(out)
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            hostname="sink.test",
            authenticator=authenticator,
            auth_require_tls=False,
            loop=loop,
        ),
        sock=sock,
    )
    print("port %d" % sock.getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
