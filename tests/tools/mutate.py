#!/usr/bin/python3
"""Mutation testing of one C source file against the unit tests, run by hand.

For each mutant (one small change to the file) the driver writes the mutant over the
file, rebuilds the unit-test runner, runs the unit tests and records whether a test
failed (killed), none did (survived) or the mutant did not compile (build-failed).
The original file is copied back after every mutant, on an exception and on SIGINT or
SIGTERM, so the tree never keeps a mutant; a run that dies anyway leaves FILE.orig
beside FILE to restore from.

Mutation operators, applied outside comments, string and character literals and
preprocessor lines:
  rel      <  <=  >  >=  ==  !=   each swapped for its boundary or opposite
  logic    &&  <->  ||
  negate   if (C) / while (C)   ->   if (!(C)) / while (!(C))
  return   return 0 / 1 / -1 / true / false   ->   1 / 0 / 0 / false / true
  delete   x++; x--; ++x; --x; break; continue;   ->   ;
  offby1   + 1 / - 1   ->   removed

Tests run suite by suite, stopping at the first that fails: first the mutated file's
own suites (FRONT), then the suites that exercise rules/ (STAGE1), then, for a mutant
that survives them, every other unit test except the few that take more than a second
(SLOW). A test that fails is run again, and one that then passes (flaky) does not kill
the mutant. Each test has 3 seconds (UNIT_TEST_TIMEOUT; the slowest kept takes 0.5)
and each run a wall-clock bound; a hang counts as killed.

Run it with the system python3 (the #! line): under pyenv's python the tests that
start tests/tools/fake_callback.py inherit a PATH whose python3 cannot load ssl.

Usage (from the repository root):
  cmake -S . -B build-mut -DCMAKE_C_FLAGS=-O0 && cmake --build build-mut -j2
  tests/tools/mutate.py rules/match.c [--build build-mut] [--max 150] [--seed 1]
                        [--out mutants-match.tsv] [--only LINE,...] [--list]
                        [--rerun mutants-match.tsv]
The output is one tab-separated line per mutant: status, line, operator, the line
before and after, and the suite that killed it. --list prints the mutants without
building anything; --only runs the mutants on the given lines; --rerun only those a
previous run's output lists as survived (to check new tests against them). Mutants
are sampled (fixed seed) down to --max.
"""
import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

# Suites that exercise rules/, most telling first; each runs alone and the first that
# fails ends the mutant's run.
STAGE1 = ["test_rules_config/", "test_rules_match/", "test_rules_decide/",
          "test_rules_deny_paths/", "test_rules_secrets/", "test_rules_inspect/",
          "test_rules_metadata/", "test_rules_serialize/", "test_syntax/",
          "test_rules_cmd/", "test_dns/", "test_dnstable/", "test_diag/",
          "test_httphead/", "test_netns_build/", "test_api/", "test_strbuf/"]
# Suites run before STAGE1 when mutating the named file: the unit tests of that parser,
# which kill most of its mutants in a fraction of a second.
FRONT = {"proxy/clienthello.c": ["test_clienthello/"],
         "proxy/dnsmsg.c": ["test_dnsmsg/", "test_dns/"],
         "proxy/nameconstr.c": ["test_nameconstr/", "test_upstream_trust/"],
         "rules/template.c": ["test_rules_secrets/", "test_rules_config/"],
         "rules/secrets.c": ["test_rules_secrets/", "test_api/"],
         "proxy/seal.c": ["test_seal/", "test_ca/"],
         # The answer parser on its own, then through calls to a local server; the
         # slow tests of test_callback (timeouts, caching) are left to stage 2.
         "proxy/callback_answer.c": ["test_callback_answer/",
                                     "test_callback/failure_modes_",
                                     "test_callback/success_answer_shapes",
                                     "test_callback/https",
                                     "test_callback/audit_and_log_never_hold_values"]}
# Tests that take a second or more; left out of stage 2 to keep a mutant cheap.
SLOW = {"test_callback/alternating_outcomes_logged_sparingly",
        "test_callback/slow_call_does_not_block_others",
        "test_callback/cache_expires_after_ttl",
        "test_control/trickled_request_is_cut_off",
        "test_control/client_cap_refuses_after_a_wait",
        "test_runtime/call_deadline_covers_sending"}


def mask(src):
    """A copy of src with comments, literals and preprocessor lines blanked, same length."""
    out = list(src)
    i, n = 0, len(src)
    at_line_start = True
    while i < n:
        c = src[i]
        if at_line_start and c == "#":
            j = i
            while j < n and not (src[j] == "\n" and src[j - 1] != "\\"):
                j += 1
            for k in range(i, j):
                out[k] = " "
            i = j
            continue
        if c == "\n":
            at_line_start = True
            i += 1
            continue
        if not c.isspace():
            at_line_start = False
        if src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if src[k] != "\n":
                    out[k] = " "
            i = j
            continue
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
            continue
        if c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            for k in range(i + 1, min(j, n)):
                out[k] = "_"
            i = j + 1
            continue
        i += 1
    return "".join(out)


def match_paren(m, open_pos):
    depth = 0
    for k in range(open_pos, len(m)):
        if m[k] == "(":
            depth += 1
        elif m[k] == ")":
            depth -= 1
            if depth == 0:
                return k
    return -1


REL = {"<": ["<="], "<=": ["<"], ">": [">="], ">=": [">"], "==": ["!="], "!=": ["=="]}
RET = {"0": ["1"], "1": ["0"], "-1": ["0"], "true": ["false"], "false": ["true"]}


def mutants(src):
    """Yield (start, end, replacement, operator) edits of src."""
    m = mask(src)
    for mo in re.finditer(r"(?<![<>=!\-])(<=|>=|==|!=|<|>)(?![<>=])", m):
        op = mo.group(1)
        # Skip "->" (excluded by the look-behind on '-') and "<<", ">>".
        for rep in REL[op]:
            yield mo.start(1), mo.end(1), rep, "rel"
    for mo in re.finditer(r"&&|\|\|", m):
        yield mo.start(), mo.end(), "||" if mo.group() == "&&" else "&&", "logic"
    for mo in re.finditer(r"\b(if|while)\s*\(", m):
        o = mo.end() - 1
        c = match_paren(m, o)
        if c > 0:
            yield o, c + 1, "(!" + src[o:c + 1] + ")", "negate"
    for mo in re.finditer(r"\breturn\s+(-1|0|1|true|false)\s*;", m):
        for rep in RET[mo.group(1)]:
            yield mo.start(1), mo.end(1), rep, "return"
    for mo in re.finditer(r"(?<=[;{}\s])(\w+(?:->\w+|\.\w+|\[\w+\])*(?:\+\+|--)|(?:\+\+|--)\w+"
                          r"(?:->\w+|\.\w+)*|break|continue)\s*;", m):
        yield mo.start(), mo.end(), ";", "delete"
    for mo in re.finditer(r"\s[+-]\s1\b(?!\.)", m):
        yield mo.start(), mo.end(), "", "offby1"


def line_of(src, pos):
    return src.count("\n", 0, pos) + 1


def describe_edit(orig, e):
    s, t, rep, op = e
    ln = line_of(orig, s)
    before = orig.split("\n")[ln - 1]
    after = (orig[:s] + rep + orig[t:]).split("\n")[ln - 1]
    return ln, op, before.strip(), after.strip()


def run(cmd, timeout, env=None):
    # Output goes to a file, not a pipe: some tests start helpers that keep the
    # runner's stdout open, and a reader of a pipe would wait for them.
    with tempfile.TemporaryFile() as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGTERM first: the unit runner then ends the running test's process
            # group, which SIGKILL of the runner would leave running.
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            rc = -1
        f.seek(0)
        return rc, f.read().decode(errors="replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--build", default="build-mut")
    ap.add_argument("--max", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--only")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--rerun")
    a = ap.parse_args()

    with open(a.file) as f:
        orig = f.read()
    edits = list(mutants(orig))
    edits.sort(key=lambda e: e[0])
    if a.only:
        want = {int(x) for x in a.only.split(",")}
        edits = [e for e in edits if line_of(orig, e[0]) in want]
    total = len(edits)
    if a.rerun:
        rows = set()
        for row in open(a.rerun):
            f = row.rstrip("\n").split("\t")
            if f[0] == "survived":
                rows.add((int(f[1]), f[2], f[4][3:]))
        edits = [e for e in edits
                 if (lambda d: (d[0], d[1], d[3]) in rows)(describe_edit(orig, e))]
    if len(edits) > a.max:
        random.Random(a.seed).shuffle(edits)
        edits = sorted(edits[:a.max], key=lambda e: e[0])
    def describe(e):
        return describe_edit(orig, e)

    if a.list:
        for e in edits:
            print("%d\t%s\t%s\t=> %s" % describe(e))
        print("%d mutants of %d" % (len(edits), total), file=sys.stderr)
        return 0

    backup = a.file + ".orig"
    with open(backup, "w") as f:
        f.write(orig)

    def restore(*_):
        with open(a.file, "w") as f:
            f.write(orig)
        os.unlink(backup)
        sys.exit(130)

    signal.signal(signal.SIGINT, restore)
    signal.signal(signal.SIGTERM, restore)

    runner = os.path.join(a.build, "tests", "unit-tests")
    listed = run([runner, "--list"], 60)[1].split()
    front = FRONT.get(os.path.relpath(a.file).replace(os.sep, "/"), [])
    stage1 = front + [p for p in STAGE1 if p not in front]
    stage2 = [t for t in listed
              if not any(t.startswith(p) for p in stage1) and t not in SLOW]
    env = dict(os.environ, UNIT_TEST_TIMEOUT="3")
    out = open(a.out, "w") if a.out else sys.stdout
    counts = {}
    t0 = time.time()
    try:
        for i, e in enumerate(edits):
            s, t, rep, op = e
            with open(a.file, "w") as f:
                f.write(orig[:s] + rep + orig[t:])
            rc, log = run(["cmake", "--build", a.build, "--target", "unit-tests",
                           "-j2"], 300)
            by = ""
            flaky = []
            if rc != 0:
                status = "build-failed"
            else:
                for suite in stage1 + [stage2]:
                    by = suite if isinstance(suite, str) else "others"
                    rc, log = run([runner] + ([suite] if isinstance(suite, str)
                                              else suite), 300, env)
                    if rc == 0:
                        continue
                    failed = [l.split()[1].rstrip(":") for l in log.splitlines()
                              if l.startswith("FAIL")]
                    # A test that fails once and passes when run again is flaky
                    # (some tests of the proxy are, on a loaded machine): it kills
                    # nothing.
                    if failed and run([runner] + failed, 300, env)[0] == 0:
                        flaky += failed
                        rc = 0
                        continue
                    if failed:
                        by = " ".join(failed[:3])
                    break
                status = "survived" if rc == 0 else "killed"
            counts[status] = counts.get(status, 0) + 1
            ln, op, before, after = describe(e)
            if status != "killed":
                by = "flaky: " + " ".join(flaky) if flaky else ""
            out.write("%s\t%d\t%s\t%s\t=> %s\t%s\n" % (status, ln, op, before, after, by))
            out.flush()
            print("[%d/%d %.0fs] %s line %d %s" % (i + 1, len(edits), time.time() - t0,
                                                   status, ln, op), file=sys.stderr)
    finally:
        with open(a.file, "w") as f:
            f.write(orig)
        os.unlink(backup)
    # Leave the build matching the restored source.
    run(["cmake", "--build", a.build, "--target", "unit-tests", "-j2"], 300)
    k, s = counts.get("killed", 0), counts.get("survived", 0)
    print("%s: %d mutants (of %d), killed %d, survived %d, build-failed %d, "
          "kill rate %.1f%%" % (a.file, len(edits), total, k, s,
                                counts.get("build-failed", 0),
                                100.0 * k / (k + s) if k + s else 0), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
