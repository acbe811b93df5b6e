#!/usr/bin/env python3
"""A TCP server for tests, on 127.0.0.1 (or --bind ADDR), for protocols that are not HTTP.

With --cert and --key each connection is TLS (1.2 at most, as the proxy speaks it
upstream) from its start. Each connection gets --banner first (after --delay
seconds), as a server that speaks first does (SMTP's greeting, SSH's identification
string); then, by --reply:
  echo  every byte read is sent back, until the client closes (the default)
  got   "got " and the first read are sent back, and the connection is closed
  none  the first read is taken, and the connection is closed
The port goes to PORT_FILE once it listens (written whole: the name appears last).
"""
import argparse
import os
import socket
import ssl
import threading
import time


def serve(c, args, banner, ctx):
    try:
        if ctx is not None:
            c = ctx.wrap_socket(c, server_side=True)
        if args.delay > 0:
            time.sleep(args.delay)
        if banner:
            c.sendall(banner)
        if args.reply == "echo":
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        elif args.reply == "got":
            c.sendall(b"got " + c.recv(4096))
        else:
            c.recv(4096)
    except (OSError, ssl.SSLError):
        pass
    c.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port_file")
    p.add_argument("--banner", default="", help="sent first; \\r and \\n are escapes")
    p.add_argument("--delay", type=float, default=0)
    p.add_argument("--reply", choices=("echo", "got", "none"), default="echo")
    p.add_argument("--cert", help="PEM chain: TLS, with --key")
    p.add_argument("--key")
    p.add_argument("--bind", default="127.0.0.1", help="the address to listen on")
    args = p.parse_args()
    ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.cert, args.key)
    banner = args.banner.replace("\\r", "\r").replace("\\n", "\n").encode()
    ls = socket.socket()
    ls.bind((args.bind, 0))
    ls.listen(64)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(ls.getsockname()[1]))
    os.rename(args.port_file + ".tmp", args.port_file)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c, args, banner, ctx), daemon=True).start()


if __name__ == "__main__":
    main()
