#!/usr/bin/env python3
"""Sends each request-smuggling shape on its own connection and prints one JSON line
per case: its name, the status line the sandbox got back (or "closed"/"reset"), and
whether the proxy closed the connection afterwards. Runs inside the sandbox.

Usage: smuggle_client.py HOST PORT
"""
import json
import socket
import sys

H = "api.example.com"

# name -> bytes. Every request names its case in the path, so the upstream log tells
# which ones (if any) arrived.
CASES = {
    "cl_te": "POST /case/cl_te HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_cl": "POST /case/te_cl HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "dup_cl_same": "POST /case/dup_cl_same HTTP/1.1\r\nHost: %s\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "dup_cl_diff": "POST /case/dup_cl_diff HTTP/1.1\r\nHost: %s\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
    "cl_list": "POST /case/cl_list HTTP/1.1\r\nHost: %s\r\nContent-Length: 3, 3\r\n\r\nabc",
    "cl_negative": "POST /case/cl_negative HTTP/1.1\r\nHost: %s\r\nContent-Length: -3\r\n\r\nabc",
    "cl_hex": "POST /case/cl_hex HTTP/1.1\r\nHost: %s\r\nContent-Length: 0x3\r\n\r\nabc",
    "cl_plus": "POST /case/cl_plus HTTP/1.1\r\nHost: %s\r\nContent-Length: +3\r\n\r\nabc",
    "te_xchunked": "POST /case/te_xchunked HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te_chunked_identity": "POST /case/te_chunked_identity HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te_double_field": "POST /case/te_double_field HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_vtab": "POST /case/te_vtab HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n",
    "te_quoted": "POST /case/te_quoted HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
    "te_http10": "POST /case/te_http10 HTTP/1.0\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bare_lf": "GET /case/bare_lf HTTP/1.1\nHost: %s\n\n",
    "bare_cr": "GET /case/bare_cr HTTP/1.1\r\nHost: %s\r\nX-A: a\rb\r\n\r\n",
    "obs_fold": "GET /case/obs_fold HTTP/1.1\r\nHost: %s\r\nX-A: a\r\n b\r\n\r\n",
    "space_before_colon": "GET /case/space_before_colon HTTP/1.1\r\nHost: %s\r\nContent-Length : 3\r\n\r\nabc",
    "nul_in_header": "GET /case/nul_in_header HTTP/1.1\r\nHost: %s\r\nX-A: a\x00b\r\n\r\n",
    "chunk_size_invalid": "POST /case/chunk_size_invalid HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk_size_overflow": "POST /case/chunk_size_overflow HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
    "chunk_ext_bare_lf": "POST /case/chunk_ext_bare_lf HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n3;x=\"a\nb\"\r\nabc\r\n0\r\n\r\n",
    "chunk_missing_crlf": "POST /case/chunk_missing_crlf HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
    "pipelined_after_rejected": "GET /case/pipelined_first HTTP/1.1\r\nHost: %s\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nGET /case/pipelined_after_rejected HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    "absolute_other_host": "GET http://evil.example.net/case/absolute_other_host HTTP/1.1\r\nHost: %s\r\n\r\n",
    "connect": "CONNECT evil.example.net:443 HTTP/1.1\r\nHost: evil.example.net:443\r\n\r\n",
    "http2_preface": "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "http09": "GET /case/http09\r\n\r\n",
    "missing_host": "GET /case/missing_host HTTP/1.1\r\n\r\n",
    "two_hosts": "GET /case/two_hosts HTTP/1.1\r\nHost: %s\r\nHost: evil.example.net\r\n\r\n",
    "huge_head": "GET /case/huge_head HTTP/1.1\r\nHost: %s\r\nX-Big: " + "a" * 70000 + "\r\n\r\n",
}

# Shapes that are forwarded, but changed: the sandbox gets the upstream's answer.
FORWARDED = {
    "h2c_upgrade": "GET /case/h2c_upgrade HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 0\r\n\r\n",
    "connection_authorization": "GET /case/connection_authorization HTTP/1.1\r\nHost: %s\r\nConnection: keep-alive, Authorization\r\nAuthorization: Bearer sandbox\r\nauthorization: Bearer again\r\n\r\n",
}


def run(name, data, host, port):
    s = socket.create_connection((host, port), timeout=10)
    try:
        s.sendall((data % H if "%s" in data else data).encode("latin-1"))
    except OSError:
        pass
    buf = b""
    closed = "open"
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = "closed"
                break
            buf += chunk
            if name in FORWARDED and b"\r\n\r\n" in buf:
                break
    except ConnectionResetError:
        closed = "reset"
    except socket.timeout:
        closed = "timeout"
    s.close()
    status = buf.split(b"\r\n", 1)[0].decode("latin-1") if buf else ""
    reason = ""
    for line in buf.split(b"\r\n"):
        if line.lower().startswith(b"x-authproxy-error:"):
            reason = line.split(b":", 1)[1].strip().decode()
    print(json.dumps({"case": name, "status": status, "reason": reason, "end": closed}))
    sys.stdout.flush()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    for name, data in list(CASES.items()) + list(FORWARDED.items()):
        run(name, data, host, port)


if __name__ == "__main__":
    main()
