#!/usr/bin/env python3
"""A local SMTP server for tests: accepts mail and writes each message to a folder.

    python3 scripts/smtp_sink.py OUT_DIR

Starts an aiosmtpd Controller on 127.0.0.1 (a free port), prints the port on the first line of
stdout, and runs until killed (SIGTERM/SIGINT stop it cleanly) or until its parent process
exits. Needs `python3 -m pip install aiosmtpd`.

Each accepted message becomes one file, OUT_DIR/NNNNNN.json:

    {"mail_from": "hello@brand.example", "rcpt_tos": ["asha@example.com"],
     "data": "<base64 of the raw RFC 5322 message, exactly as received>"}

written to a temporary name first and renamed, so a reader never sees half a file.

Recipients whose local part starts with "bad" are refused at RCPT TO with
`550 5.1.1 <address>: Recipient address rejected: User unknown in local recipient table`
(what Postfix answers for an unknown mailbox); a message with no accepted recipient is never
written.
"""

import base64
import itertools
import json
import os
import signal
import socket
import sys
import threading

from aiosmtpd.controller import Controller

HOST = "127.0.0.1"


class Sink:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.rsplit("@", 1)[0].lower()
        if local.startswith("bad"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content if envelope.original_content is not None else envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": base64.b64encode(raw).decode("ascii"),
        }
        with self.lock:
            n = next(self.counter)
        name = os.path.join(self.out_dir, f"{n:06d}.json")
        tmp = name + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, name)
        return f"250 2.0.0 Ok: queued as {n:06d}"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start(handler):
    # Controller checks it is up by connecting to its port, so it needs a real port number:
    # take a free one, and try again in the unlikely case another process grabbed it first.
    last = None
    for _ in range(10):
        port = free_port()
        controller = Controller(handler, hostname=HOST, port=port, server_hostname="sink.local", ready_timeout=10)
        try:
            controller.start()
            return controller, port
        except Exception as e:  # noqa: BLE001 (port taken: any of several errors)
            last = e
    raise SystemExit(f"smtp_sink: could not start: {last}")


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: smtp_sink.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    controller, port = start(Sink(out_dir))
    print(port, flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()
    # Also stop when the process that started us is gone (a test run killed outright).
    while not stop.wait(1):
        if os.getppid() != parent:
            break
    controller.stop()


if __name__ == "__main__":
    main()
