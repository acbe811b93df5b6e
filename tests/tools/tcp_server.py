#!/usr/bin/env python3
"""A TCP server for tests, on 127.0.0.1, for protocols that are not HTTP.

Each connection gets --banner first (after --delay seconds), as a server that speaks
first does (SMTP's greeting, SSH's identification string); then, by --reply:
  echo  every byte read is sent back, until the client closes (the default)
  got   "got " and the first read are sent back, and the connection is closed
  none  the first read is taken, and the connection is closed
The port goes to PORT_FILE once it listens (written whole: the name appears last).
"""
import argparse
import os
import socket
import threading
import time


def serve(c, args, banner):
    try:
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
    except OSError:
        pass
    c.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port_file")
    p.add_argument("--banner", default="", help="sent first; \\r and \\n are escapes")
    p.add_argument("--delay", type=float, default=0)
    p.add_argument("--reply", choices=("echo", "got", "none"), default="echo")
    args = p.parse_args()
    banner = args.banner.replace("\\r", "\r").replace("\\n", "\n").encode()
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(ls.getsockname()[1]))
    os.rename(args.port_file + ".tmp", args.port_file)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c, args, banner), daemon=True).start()


if __name__ == "__main__":
    main()
