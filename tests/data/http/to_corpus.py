#!/usr/bin/env python3
"""Writes the request bytes of every case in tests/data/http/*.txt (the "> " and "+ "
lines, unescaped as tests/unit/test_httphead.c does) to tests/fuzz/corpus/httphead/,
one file per case named <file>-<case>. Existing files there (crashers found by the
fuzzer) are left alone."""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "fuzz", "corpus", "httphead")
SIMPLE = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "s": b" ", "\\": b"\\"}


def unescape(s, where):
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        e = s[i + 1:i + 2]
        if e in SIMPLE:
            out += SIMPLE[e]
            i += 2
        elif e == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", s[i + 2:i + 4]):
            out.append(int(s[i + 2:i + 4], 16))
            i += 4
        else:
            sys.exit("%s: bad escape in %r" % (where, s))
    return bytes(out)


def main():
    os.makedirs(OUT, exist_ok=True)
    count = 0
    for name in sorted(os.listdir(HERE)):
        if not name.endswith(".txt"):
            continue
        stem = name[:-4]
        cases = {}
        case = None
        with open(os.path.join(HERE, name), encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if line.startswith("=== "):
                    case = line[4:]
                    cases[case] = b""
                elif case is not None and (line.startswith("> ") or line.startswith("+ ")):
                    cases[case] += unescape(line[2:], "%s:%d" % (name, lineno))
        for case, data in cases.items():
            with open(os.path.join(OUT, "%s-%s" % (stem, case)), "wb") as f:
                f.write(data)
            count += 1
    print("wrote %d inputs to %s" % (count, os.path.normpath(OUT)))


if __name__ == "__main__":
    main()
