/*
 * The upstream trust store (tls.c): loading it (the system store, --upstream-ca files
 * and their errors), and the checks its verify callback adds to mbedTLS's for chains
 * an upstream sends: an issuing CA's non-critical nameConstraints against every name
 * of the leaf (its subject, its dNSName, iPAddress and directoryName SANs, the CN of
 * a leaf without subjectAltName) and of the CAs below it. Chains are made with
 * OpenSSL, which also verifies each one: the proxy refuses exactly the chains OpenSSL
 * refuses.
 */
#include <errno.h>
#include <stdarg.h>
#include <sys/wait.h>

#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "proxy/tls.h"
#include "test.h"

/* ---- helpers ---------------------------------------------------------------- */

static const char *tmp_path(const char *name)
{
  static char buf[8][1024];
  static int slot;
  char *p = buf[slot++ % 8];

  snprintf(p, sizeof(buf[0]), "%s/%s", test_tmpdir(), name);
  return p;
}

/* Runs a shell command in the test's directory; its exit status, -1 if it did not
 * exit. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
  char cmd[4096];
  int n, st;
  va_list ap;

  n = snprintf(cmd, sizeof(cmd), "cd '%s' && ", test_tmpdir());
  va_start(ap, fmt);
  vsnprintf(cmd + n, sizeof(cmd) - (size_t)n, fmt, ap);
  va_end(ap);
  fflush(NULL);
  st = system(cmd);
  if (st == -1 || !WIFEXITED(st))
    return -1;
  return WEXITSTATUS(st);
}

static void make_root(void)
{
  ASSERT_EQ(run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                "-days 2 -subj '/CN=upstream trust test root' -keyout root.key "
                "-out root.pem -addext basicConstraints=critical,CA:TRUE "
                "-addext keyUsage=critical,keyCertSign 2>/dev/null"),
            0);
}

/* A CA NAME (NAME.pem, NAME.key) with subject subj ("/CN=x" syntax) signed by issuer,
 * with the extension lines ext (OpenSSL config syntax) besides basicConstraints and
 * keyUsage; NAME.cas is it and the CAs between it and the root. */
static void make_ca(const char *name, const char *issuer, const char *subj, const char *ext)
{
  size_t size = strlen(ext) + 128;
  char *text = malloc(size), above[256];
  int n;

  ASSERT_NE(text, NULL);
  n = snprintf(text, size,
               "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n%s\n", ext);
  test_write_file(test_tmpdir(), "int.ext", text, (size_t)n, 0644);
  free(text);
  snprintf(above, sizeof(above), "%s.cas", issuer);
  ASSERT_EQ(run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                "-keyout %s.key -subj '%s' -out %s.csr 2>/dev/null "
                "&& openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key "
                "-CAcreateserial -days 2 -extfile int.ext -out %s.pem 2>/dev/null && "
                "cat %s.pem %s > %s.cas",
                name, subj, name, name, issuer, issuer, name, name,
                strcmp(issuer, "root") == 0 ? "/dev/null" : above, name),
            0);
}

/* An intermediate NAME (NAME.pem, NAME.key) signed by the root, with the extension
 * lines ext (OpenSSL config syntax) besides basicConstraints and keyUsage. */
static void make_intermediate(const char *name, const char *ext)
{
  char subj[256];

  snprintf(subj, sizeof(subj), "/CN=upstream trust test %s", name);
  make_ca(name, "root", subj, ext);
}

/* A leaf NAME.pem with subject CN=cn, signed by intermediate issuer, with the
 * subjectAltName san ("" for none); NAME.chain is the leaf, then the intermediate. */
static void make_leaf(const char *issuer, const char *name, const char *cn, const char *san)
{
  char text[1024];
  int n;

  n = snprintf(text, sizeof(text),
               "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
               "extendedKeyUsage=serverAuth\n%s%s\n",
               san[0] != '\0' ? "subjectAltName=" : "", san);
  test_write_file(test_tmpdir(), "leaf.ext", text, (size_t)n, 0644);
  ASSERT_EQ(run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                "-keyout %s.key -subj '/CN=%s' -out %s.csr 2>/dev/null && "
                "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial "
                "-days 2 -extfile leaf.ext -out %s.pem 2>/dev/null && "
                "cat %s.pem %s.pem > %s.chain",
                name, cn, name, name, issuer, issuer, name, name, issuer, name),
            0);
}

static struct proxy_upstream_tls *trust_root(void)
{
  const char *extra[] = { tmp_path("root.pem") };
  struct proxy_upstream_tls *u = NULL;
  char err[512] = "";
  int r, saved;

  /* No system store: only the test root is trusted (the warning goes to a file). */
  saved = test_stderr_to(tmp_path("trust.log"));
  r = proxy_upstream_tls_new(tmp_path("no-system-store.crt"), extra, 1, &u, err, sizeof(err));
  test_stderr_back(saved);
  if (r != 0)
    TEST_FAIL_("proxy_upstream_tls_new: %d: %s", r, err);
  return u;
}

/*
 * Verifies NAME.chain as a handshake with an upstream verifies it: the trust store,
 * profile and verify callback of the upstream configuration. host is the name the
 * proxy dialled, NULL for an address (whose IP SAN tls.c checks after the
 * handshake). Returns the verification flags, 0 when the chain is accepted.
 */
static uint32_t upstream_verify(struct proxy_upstream_tls *u, const char *name,
                                const char *host)
{
  const mbedtls_ssl_config *conf = proxy_upstream_tls_conf(u);
  mbedtls_x509_crt chain;
  char file[256];
  uint32_t flags = 0;

  snprintf(file, sizeof(file), "%s.chain", name);
  mbedtls_x509_crt_init(&chain);
  ASSERT_EQ(mbedtls_x509_crt_parse_file(&chain, tmp_path(file)), 0);
  (void)mbedtls_x509_crt_verify_with_profile(&chain, conf->ca_chain, conf->ca_crl,
                                             conf->cert_profile, host, &flags, conf->f_vrfy,
                                             conf->p_vrfy);
  mbedtls_x509_crt_free(&chain);
  return flags;
}

/* What OpenSSL says of the same chain, as a TLS client checking host (or ip). */
static int openssl_accepts(const char *issuer, const char *name, const char *host,
                           const char *ip)
{
  return run("openssl verify -purpose sslserver -CAfile root.pem -untrusted %s.pem "
             "%s %s %s.pem > verdict.txt 2>&1",
             issuer, host != NULL ? "-verify_hostname" : "-verify_ip",
             host != NULL ? host : ip, name) == 0;
}

struct chain_case {
  const char *name; /* the leaf's file name */
  const char *cn;
  const char *san;
  const char *host; /* the name dialled; NULL: the address ip */
  const char *ip;
  int accepted;
};

/* For each case: the proxy accepts the chain exactly when expected, and OpenSSL
 * agrees (the premise: a browser-grade verifier says the same). */
static void check_cases(struct proxy_upstream_tls *u, const char *issuer,
                        const struct chain_case *cases, size_t count)
{
  size_t i;

  for (i = 0; i < count; i++) {
    const struct chain_case *t = &cases[i];
    uint32_t flags;

    make_leaf(issuer, t->name, t->cn, t->san);
    if (openssl_accepts(issuer, t->name, t->host, t->ip) != t->accepted) {
      run("cat verdict.txt >&2");
      TEST_FAIL_("%s (%s): OpenSSL does not %s it", t->name, t->san,
                 t->accepted ? "accept" : "reject");
    }
    flags = upstream_verify(u, t->name, t->host);
    if (t->accepted ? flags != 0 : (flags & MBEDTLS_X509_BADCERT_OTHER) == 0)
      TEST_FAIL_("%s (CN=%s, SAN %s): flags 0x%x, expected %s", t->name, t->cn, t->san,
                 (unsigned)flags, t->accepted ? "0" : "BADCERT_OTHER");
  }
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- nameConstraints of an upstream's issuing CA ----------------------------- */

/*
 * An intermediate constrained (non-critically, so mbedTLS 2.28 parses the chain and
 * ignores the extension) to allowed.test minus bad.allowed.test and to 10.0.0.0/8:
 * every dNSName and iPAddress of the leaf must be within, not only the one the
 * proxy dialled, and the other name forms (not constrained here) do not matter.
 */
TEST(name_constraints_bind_every_san)
{
  static const struct chain_case cases[] = {
    { "in", "in.allowed.test", "DNS:in.allowed.test", "in.allowed.test", NULL, 1 },
    { "out", "out.example.com", "DNS:out.example.com", "out.example.com", NULL, 0 },
    { "excl", "bad.allowed.test", "DNS:bad.allowed.test", "bad.allowed.test", NULL, 0 },
    /* A second dNSName outside: the leaf is refused for the name it was dialled by. */
    { "second", "in.allowed.test", "DNS:in.allowed.test,DNS:out.example.com",
      "in.allowed.test", NULL, 0 },
    /* iPAddress SANs, for a host name and for an address (the CN of those is not a
     * host name: OpenSSL would hold one to the dNSName subtrees). */
    { "ipin", "in.allowed.test", "DNS:in.allowed.test,IP:10.1.2.3", "in.allowed.test",
      NULL, 1 },
    { "ipout", "in.allowed.test", "DNS:in.allowed.test,IP:192.0.2.1", "in.allowed.test",
      NULL, 0 },
    { "addrin", "an upstream by address", "IP:10.1.2.3", NULL, "10.1.2.3", 1 },
    { "addrout", "an upstream by address", "IP:192.0.2.1", NULL, "192.0.2.1", 0 },
    /* The iPAddress subtrees are IPv4 only: no IPv6 address is within them. */
    { "addr6", "an upstream by address", "IP:2001:db8::1", NULL, "2001:db8::1", 0 },
    /* A name form no subtree constrains. */
    { "email", "in.allowed.test", "DNS:in.allowed.test,email:a@out.example.com",
      "in.allowed.test", NULL, 1 },
  };
  struct proxy_upstream_tls *u;

  make_root();
  make_intermediate("nc", "nameConstraints=permitted;DNS:allowed.test,"
                          "permitted;IP:10.0.0.0/255.0.0.0,excluded;DNS:bad.allowed.test");
  u = trust_root();
  check_cases(u, "nc", cases, COUNT(cases));
  proxy_upstream_tls_free(u);
}

/*
 * A leaf without subjectAltName: mbedTLS matches the dialled name against its CN, so
 * the CN is the name the constraints bind (as OpenSSL does for a CN that looks like a
 * host name when there is no dNSName).
 */
TEST(name_constraints_bind_the_cn_without_san)
{
  static const struct chain_case cases[] = {
    { "cnin", "in.allowed.test", "", "in.allowed.test", NULL, 1 },
    { "cnout", "out.example.com", "", "out.example.com", NULL, 0 },
    { "cnexcl", "bad.allowed.test", "", "bad.allowed.test", NULL, 0 },
  };
  struct proxy_upstream_tls *u;

  make_root();
  make_intermediate("nc", "nameConstraints=permitted;DNS:allowed.test,"
                          "excluded;DNS:bad.allowed.test");
  u = trust_root();
  check_cases(u, "nc", cases, COUNT(cases));
  proxy_upstream_tls_free(u);
}

/*
 * A wildcard leaf from a CA excluded from one of the names it matches: mbedTLS
 * matches "*.allowed.test" to bad.allowed.test, so the leaf speaks for a name its CA
 * may not sign for. Chrome and the pyca/webpki verifier refuse it; OpenSSL compares
 * the strings and accepts it, so there is no OpenSSL premise here. The same leaf for
 * other names is refused too (the leaf is, not the name); a CA whose excluded name
 * is two labels down does not bind it.
 */
TEST(name_constraints_wildcard_meets_excluded)
{
  struct proxy_upstream_tls *u;

  make_root();
  make_intermediate("nc", "nameConstraints=permitted;DNS:allowed.test,"
                          "excluded;DNS:bad.allowed.test");
  make_intermediate("deep", "nameConstraints=permitted;DNS:allowed.test,"
                            "excluded;DNS:x.bad.allowed.test");
  u = trust_root();
  make_leaf("nc", "wild", "wildcard", "DNS:*.allowed.test");
  make_leaf("deep", "wilddeep", "wildcard", "DNS:*.allowed.test");
  ASSERT_EQ(upstream_verify(u, "wild", "bad.allowed.test"), MBEDTLS_X509_BADCERT_OTHER);
  ASSERT_EQ(upstream_verify(u, "wild", "good.allowed.test"), MBEDTLS_X509_BADCERT_OTHER);
  ASSERT_EQ(upstream_verify(u, "wilddeep", "good.allowed.test"), 0);
  ASSERT_EQ(upstream_verify(u, "wilddeep", "bad.allowed.test"), 0);
  proxy_upstream_tls_free(u);
}

/*
 * A dNSName SAN encoded with the constructed bit set ([2] as A2, not 82): mbedTLS
 * 2.28 parses it and matches the dialled name against it as a dNSName (it compares
 * the tag's number only), so the constraints bind it as one. Made with OpenSSL's raw
 * DER, which no OpenSSL verifier accepts: there is no OpenSSL premise here.
 */
TEST(name_constraints_bind_a_constructed_dns_san)
{
  struct proxy_upstream_tls *u;

  make_root();
  make_intermediate("nc", "nameConstraints=permitted;DNS:allowed.test,"
                          "excluded;DNS:bad.allowed.test");
  u = trust_root();
  /* SEQUENCE { [2] constructed "bad.allowed.test" }, "*.allowed.test", "evil.test" */
  make_leaf("nc", "excl", "x", "DER:3012A2106261642E616C6C6F7765642E74657374");
  make_leaf("nc", "wild", "x", "DER:3010A20E2A2E616C6C6F7765642E74657374");
  make_leaf("nc", "out", "x", "DER:300BA2096576696C2E74657374");
  ASSERT_EQ(upstream_verify(u, "excl", "bad.allowed.test"), MBEDTLS_X509_BADCERT_OTHER);
  ASSERT_EQ(upstream_verify(u, "wild", "bad.allowed.test"), MBEDTLS_X509_BADCERT_OTHER);
  ASSERT_EQ(upstream_verify(u, "out", "evil.test"), MBEDTLS_X509_BADCERT_OTHER);
  proxy_upstream_tls_free(u);
}

/*
 * An issuing CA whose nameConstraints our strict parser refuses (a dNSName subtree
 * with a trailing dot): what the CA may sign is unknown, so its chains are refused,
 * even for a name that looks inside. Control: the same CA without the extension.
 */
TEST(name_constraints_unparsed_refuse_the_chain)
{
  struct proxy_upstream_tls *u;

  make_root();
  make_intermediate("badnc", "nameConstraints=permitted;DNS:allowed.test.");
  make_intermediate("plain", "");
  u = trust_root();
  make_leaf("badnc", "under-bad", "x.allowed.test", "DNS:x.allowed.test");
  make_leaf("plain", "under-plain", "x.allowed.test", "DNS:x.allowed.test");
  ASSERT_EQ(upstream_verify(u, "under-plain", "x.allowed.test"), 0);
  ASSERT_EQ(upstream_verify(u, "under-bad", "x.allowed.test"), MBEDTLS_X509_BADCERT_OTHER);
  proxy_upstream_tls_free(u);
}

/* ---- directoryName constraints and subjects ----------------------------------- */

/*
 * A leaf NAME.pem for api.example.com with the subject subj ("/O=x/CN=y", "/" for the
 * empty one, whose subjectAltName is then critical as RFC 5280 wants) and the further
 * `openssl req` options opts, signed by the CA issuer; NAME.chain is the leaf and
 * issuer.cas.
 */
static void make_dn_leaf(const char *issuer, const char *name, const char *subj,
                         const char *opts)
{
  char text[1024];
  int n;

  n = snprintf(text, sizeof(text),
               "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
               "extendedKeyUsage=serverAuth\nsubjectAltName=%sDNS:api.example.com\n",
               strcmp(subj, "/") == 0 ? "critical," : "");
  test_write_file(test_tmpdir(), "leaf.ext", text, (size_t)n, 0644);
  ASSERT_EQ(run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                "-keyout %s.key -subj '%s' %s -out %s.csr >/dev/null 2>&1 && "
                "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial "
                "-days 2 -extfile leaf.ext -out %s.pem 2>/dev/null && "
                "cat %s.pem %s.cas > %s.chain",
                name, subj, opts, name, name, issuer, issuer, name, name, issuer, name),
            0);
}

struct dn_case {
  const char *name; /* the leaf's file name */
  const char *subj;
  const char *opts; /* for openssl req: a string type, multi-valued RDNs */
  int accepted;
};

/* For each case: OpenSSL 3, plain and -x509_strict, accepts the chain exactly when
 * expected, and so does the proxy. */
static void check_dn_cases(struct proxy_upstream_tls *u, const char *issuer,
                           const struct dn_case *cases, size_t count)
{
  size_t i;
  int strict;

  for (i = 0; i < count; i++) {
    const struct dn_case *t = &cases[i];
    uint32_t flags;

    make_dn_leaf(issuer, t->name, t->subj, t->opts);
    for (strict = 0; strict < 2; strict++) {
      if ((run("openssl verify %s -purpose sslserver -CAfile root.pem -untrusted %s.cas "
               "-verify_hostname api.example.com %s.pem > verdict.txt 2>&1",
               strict ? "-x509_strict" : "", issuer, t->name) == 0) != t->accepted) {
        run("cat verdict.txt >&2");
        TEST_FAIL_("%s (subject %s)%s: OpenSSL does not %s it", t->name, t->subj,
                   strict ? " -x509_strict" : "", t->accepted ? "accept" : "reject");
      }
    }
    flags = upstream_verify(u, t->name, "api.example.com");
    if (t->accepted ? flags != 0 : flags != MBEDTLS_X509_BADCERT_OTHER)
      TEST_FAIL_("%s (subject %s): flags 0x%x, expected %s", t->name, t->subj,
                 (unsigned)flags, t->accepted ? "0" : "BADCERT_OTHER");
  }
}

/*
 * A permitted directoryName subtree binds the leaf's subject, whatever its
 * dNSName: the subtree's RDNs must begin the subject's, compared as OpenSSL compares
 * canonical encodings (surrounding spaces dropped, inner runs of spaces one, ASCII
 * case ignored), and an empty subject is not bound. The only dNSName here is within
 * every subtree, so the subject alone decides.
 */
TEST(name_constraints_dirname_permitted_binds_the_subject)
{
  static const struct dn_case one[] = {
    { "in", "/O=Example/CN=x", "", 1 },
    { "out", "/O=Other/CN=x", "", 0 },
    { "case", "/O=  eXAMPLE   /CN=x", "", 1 },
    { "inner", "/O=Exa mple/CN=x", "", 0 },
    { "type", "/OU=Example/CN=x", "", 0 },
    { "last", "/CN=x/O=Example", "", 0 },
    { "alone", "/O=Example", "", 1 },
    { "empty", "/", "", 1 },
    /* PrintableString "EXAMPLE " against the subtree's UTF8String "Example". */
    { "prt", "/O=EXAMPLE /CN=x", "-config dn.cnf", 1 },
  };
  static const struct dn_case spaces[] = {
    { "one", "/O=example corp/CN=x", "", 1 },
    { "tab", "/O=  EXAMPLE \t CORP /CN=x", "", 1 },
    { "none", "/O=examplecorp/CN=x", "", 0 },
  };
  static const struct dn_case two[] = {
    { "deeper", "/C=US/O=Example/OU=Eng/CN=x", "", 1 },
    { "same", "/C=US/O=Example", "", 1 },
    { "short", "/C=US", "", 0 },
    { "first", "/C=US/CN=x", "", 0 },
    { "order", "/O=Example/C=US/CN=x", "", 0 },
    { "other", "/C=US/OU=Example/CN=x", "", 0 },
    { "merged", "/C=US/O=Example+OU=Eng/CN=x", "-multivalue-rdn", 0 },
    { "empty2", "/", "", 1 },
  };
  /* A multi-valued RDN in the subtree: the same attributes in any order. */
  static const struct dn_case multi[] = {
    { "swapped", "/C=US/OU=Eng+O=Example/CN=x", "-multivalue-rdn", 1 },
    { "lower", "/C=US/O=example+OU=eng/CN=x", "-multivalue-rdn", 1 },
    { "more", "/C=US/O=Example+OU=Eng+CN=x", "-multivalue-rdn", 0 },
    { "split", "/C=US/O=Example/OU=Eng/CN=x", "", 0 },
  };
  /* The subtree a PrintableString (raw DER), the subjects UTF8Strings. */
  static const struct dn_case printable[] = {
    { "utf8", "/O=example/CN=x", "", 1 },
    { "utf8out", "/O=examples/CN=x", "", 0 },
  };
  static const char cnf[] = "[req]\ndistinguished_name=dn\nstring_mask=nombstr\n[dn]\n";
  struct proxy_upstream_tls *u;

  make_root();
  test_write_file(test_tmpdir(), "dn.cnf", cnf, sizeof(cnf) - 1, 0644);
  make_intermediate("one", "nameConstraints=permitted;dirName:dn_one,"
                           "permitted;DNS:example.com\n[dn_one]\nO=Example");
  make_intermediate("spaces", "nameConstraints=permitted;dirName:dn_sp\n"
                              "[dn_sp]\nO=Example   Corp");
  make_intermediate("two", "nameConstraints=permitted;dirName:dn_two\n"
                           "[dn_two]\nC=US\nO=Example");
  make_intermediate("multi", "nameConstraints=permitted;dirName:dn_mv\n"
                             "[dn_mv]\nC=US\nO=Example\n+OU=Eng");
  /* SEQUENCE { [0] { SEQUENCE { [4] { Name O=PrintableString "Example" } } } } */
  make_intermediate("printable", "nameConstraints=DER:301AA0183016A414301231103"
                                 "00E060355040A13074578616D706C65");
  u = trust_root();
  check_dn_cases(u, "one", one, COUNT(one));
  check_dn_cases(u, "spaces", spaces, COUNT(spaces));
  check_dn_cases(u, "two", two, COUNT(two));
  check_dn_cases(u, "multi", multi, COUNT(multi));
  check_dn_cases(u, "printable", printable, COUNT(printable));
  proxy_upstream_tls_free(u);
}

/*
 * Subtrees of other string types (raw DER) against UTF8String subjects: OpenSSL
 * converts BMPString, UniversalString and TeletexString (read as Latin-1) to UTF-8
 * before comparing, folding ASCII case only; a NumericString it keeps as it is, so
 * it equals no UTF8String.
 */
TEST(name_constraints_dirname_string_types)
{
  static const struct dn_case bmp[] = {
    { "bmpin", "/O= caf\xc3\xa9 /CN=x", "-utf8", 1 },
    { "bmpout", "/O=CAF\xc3\x89/CN=x", "-utf8", 0 },
  };
  static const struct dn_case t61[] = {
    { "t61in", "/O=caf\xc3\xa9/CN=x", "-utf8", 1 },
    { "t61out", "/O=CAF\xc3\x89/CN=x", "-utf8", 0 },
  };
  static const struct dn_case univ[] = { { "univin", "/O=EXAMPLE/CN=x", "", 1 } };
  static const struct dn_case num[] = { { "numout", "/O=123/CN=x", "", 0 } };
  struct proxy_upstream_tls *u;

  make_root();
  /* Each: SEQUENCE { [0] { SEQUENCE { [4] { Name O=value } } } } */
  make_intermediate("bmp", "nameConstraints=DER:301BA0193017A41530133111300F060355040A"
                           "1E0800430061006600E9"); /* BMPString "Café" */
  make_intermediate("t61", "nameConstraints=DER:3017A0153013A411300F310D300B060355040A"
                           "1404436166E9"); /* TeletexString "Caf\xe9" */
  make_intermediate("univ", "nameConstraints=DER:302FA02D302BA42930273125302306035504"
                            "0A1C1C0000004500000078000000610000006D000000700000006C0000"
                            "0065"); /* UniversalString "Example" */
  make_intermediate("num", "nameConstraints=DER:3016A0143012A410300E310C300A060355040A"
                           "1203313233"); /* NumericString "123" */
  u = trust_root();
  check_dn_cases(u, "bmp", bmp, COUNT(bmp));
  check_dn_cases(u, "t61", t61, COUNT(t61));
  check_dn_cases(u, "univ", univ, COUNT(univ));
  check_dn_cases(u, "num", num, COUNT(num));
  proxy_upstream_tls_free(u);
}

/* An excluded directoryName subtree: a subject it begins is refused, in any case and
 * spacing; one it does not begin, and the empty subject, are not. */
TEST(name_constraints_dirname_excluded_binds_the_subject)
{
  static const struct dn_case cases[] = {
    { "bad", "/O=Bad/CN=x", "", 0 },
    { "spaced", "/O= bAD /OU=y/CN=x", "", 0 },
    { "good", "/O=Good/CN=x", "", 1 },
    { "later", "/CN=x/O=Bad", "", 1 },
    { "empty", "/", "", 1 },
  };
  struct proxy_upstream_tls *u;

  make_root();
  make_intermediate("ex", "nameConstraints=excluded;dirName:dn_ex\n[dn_ex]\nO=Bad");
  u = trust_root();
  check_dn_cases(u, "ex", cases, COUNT(cases));
  proxy_upstream_tls_free(u);
}

/*
 * A CA below a constrained one is bound by its directoryName subtrees too, as OpenSSL
 * binds it, unless it is self-issued (its subject its issuer's, compared as OpenSSL
 * compares names: case and spacing aside): then the leaf below it is bound alone.
 */
TEST(name_constraints_dirname_bind_intermediates)
{
  static const struct dn_case outside[] = { { "leaf1", "/O=Example/CN=x", "", 0 } };
  static const struct dn_case inside[] = { { "leaf2", "/O=Example/CN=x", "", 1 } };
  static const struct dn_case self[] = { { "leaf3", "/O=Example/CN=x", "", 1 },
                                         { "leaf3out", "/O=Other/CN=x", "", 0 } };
  static const struct dn_case selfcase[] = { { "leaf4", "/O=Example/CN=x", "", 1 } };
  struct proxy_upstream_tls *u;

  make_root();
  make_ca("top", "root", "/CN=constrained", "nameConstraints=permitted;dirName:dn_top\n"
                                            "[dn_top]\nO=Example");
  make_ca("subout", "top", "/CN=sub outside", "");
  make_ca("subin", "top", "/O=Example/CN=sub inside", "");
  make_ca("subself", "top", "/CN=constrained", "");
  make_ca("subcase", "top", "/CN=  CONSTRAINED ", "");
  u = trust_root();
  check_dn_cases(u, "subout", outside, COUNT(outside));
  check_dn_cases(u, "subin", inside, COUNT(inside));
  check_dn_cases(u, "subself", self, COUNT(self));
  check_dn_cases(u, "subcase", selfcase, COUNT(selfcase));
  proxy_upstream_tls_free(u);
}

/* ---- subjectAltNames below a constrained CA ----------------------------------- */

/* A leaf NAME.pem with the subject subj and the extension lines ext (a subjectAltName,
 * sections after it), signed by the CA issuer; NAME.chain is the leaf and issuer.cas. */
static void make_ext_leaf(const char *issuer, const char *name, const char *subj,
                          const char *ext)
{
  size_t size = strlen(ext) + 128;
  char *text = malloc(size);
  int n;

  ASSERT_NE(text, NULL);
  n = snprintf(text, size,
               "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
               "extendedKeyUsage=serverAuth\n%s\n", ext);
  test_write_file(test_tmpdir(), "leaf.ext", text, (size_t)n, 0644);
  free(text);
  ASSERT_EQ(run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                "-keyout %s.key -subj '%s' -out %s.csr >/dev/null 2>&1 && "
                "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial "
                "-days 2 -extfile leaf.ext -out %s.pem 2>/dev/null && "
                "cat %s.pem %s.cas > %s.chain",
                name, subj, name, name, issuer, issuer, name, name, issuer, name),
            0);
}

struct san_case {
  const char *issuer; /* the CA that signs the leaf: its .cas, the chain above */
  const char *name;   /* the leaf's file name */
  const char *ext;    /* the leaf's subjectAltName */
  int accepted;
};

#define SAN_HOST "www.allowed.test"
#define SAN_DNS "subjectAltName=DNS:" SAN_HOST

/* For each case, a leaf O=Example, CN=www.allowed.test for that name: OpenSSL 3,
 * plain and -x509_strict, accepts the chain exactly when expected, and so does the
 * proxy. */
static void check_san_cases(struct proxy_upstream_tls *u, const struct san_case *cases,
                            size_t count)
{
  size_t i;
  int strict;

  for (i = 0; i < count; i++) {
    const struct san_case *t = &cases[i];
    uint32_t flags;

    make_ext_leaf(t->issuer, t->name, "/O=Example/CN=" SAN_HOST, t->ext);
    for (strict = 0; strict < 2; strict++) {
      if ((run("openssl verify %s -purpose sslserver -CAfile root.pem -untrusted %s.cas "
               "-verify_hostname " SAN_HOST " %s.pem > verdict.txt 2>&1",
               strict ? "-x509_strict" : "", t->issuer, t->name) == 0) != t->accepted) {
        run("cat verdict.txt >&2");
        TEST_FAIL_("%s (under %s)%s: OpenSSL does not %s it", t->name, t->issuer,
                   strict ? " -x509_strict" : "", t->accepted ? "accept" : "reject");
      }
    }
    flags = upstream_verify(u, t->name, SAN_HOST);
    if (t->accepted ? flags != 0 : flags != MBEDTLS_X509_BADCERT_OTHER)
      TEST_FAIL_("%s (under %s): flags 0x%x, expected %s", t->name, t->issuer,
                 (unsigned)flags, t->accepted ? "0" : "BADCERT_OTHER");
  }
}

/*
 * A CA below a constrained one is bound by its constraints in its subjectAltName too,
 * as OpenSSL binds it: its dNSNames, iPAddresses and directoryNames against the
 * subtrees of their form of every CA above it, not only its issuer; a self-issued CA
 * is not bound (its leaf still is). The leaves are within every subtree.
 */
TEST(name_constraints_bind_intermediate_sans)
{
  static const struct san_case cases[] = {
    { "dnsout", "l-dnsout", SAN_DNS, 0 },
    { "dnsin", "l-dnsin", SAN_DNS, 1 },
    { "dnsexcl", "l-dnsexcl", SAN_DNS, 0 },
    { "deep", "l-deep", SAN_DNS, 0 },
    { "ipout", "l-ipout", SAN_DNS, 0 },
    { "ipin", "l-ipin", SAN_DNS, 1 },
    { "dirout", "l-dirout", SAN_DNS, 0 },
    { "dirin", "l-dirin", SAN_DNS, 1 },
    { "self", "l-self", SAN_DNS, 1 },
    { "self", "l-selfout", SAN_DNS ",DNS:www.example.com", 0 },
  };
  struct proxy_upstream_tls *u;

  make_root();
  make_ca("dns", "root", "/CN=constrained dns",
          "nameConstraints=permitted;DNS:allowed.test,excluded;DNS:bad.allowed.test");
  make_ca("dnsout", "dns", "/CN=sub dnsout", "subjectAltName=DNS:ca.example.com");
  make_ca("dnsin", "dns", "/CN=sub dnsin", "subjectAltName=DNS:ca.allowed.test");
  make_ca("dnsexcl", "dns", "/CN=sub dnsexcl", "subjectAltName=DNS:bad.allowed.test");
  /* Two below the constrained CA, the one between within. */
  make_ca("mid", "dns", "/CN=sub mid", "subjectAltName=DNS:mid.allowed.test");
  make_ca("deep", "mid", "/CN=sub deep", "subjectAltName=DNS:ca.example.com");
  make_ca("ip", "root", "/CN=constrained ip",
          "nameConstraints=permitted;IP:10.0.0.0/255.0.0.0");
  make_ca("ipout", "ip", "/CN=sub ipout", "subjectAltName=IP:192.0.2.1");
  make_ca("ipin", "ip", "/CN=sub ipin", "subjectAltName=IP:10.1.2.3");
  make_ca("dir", "root", "/CN=constrained dir",
          "nameConstraints=permitted;dirName:dn_top\n[dn_top]\nO=Example");
  make_ca("dirout", "dir", "/O=Example/CN=sub dirout",
          "subjectAltName=dirName:dn_s\n[dn_s]\nO=Other");
  make_ca("dirin", "dir", "/O=Example/CN=sub dirin",
          "subjectAltName=dirName:dn_s\n[dn_s]\nO=example\nCN=x");
  make_ca("self", "dns", "/CN=  Constrained DNS", "subjectAltName=DNS:ca.example.com");
  u = trust_root();
  check_san_cases(u, cases, COUNT(cases));
  proxy_upstream_tls_free(u);
}

/*
 * A leaf's directoryNames are bound by directoryName subtrees as its subject is, but
 * an empty one too (OpenSSL compares canonical encodings: the empty one begins with
 * no subtree's but an empty one's). Empty: SEQUENCE { [2] "www.allowed.test",
 * [4] { SEQUENCE {} } } in raw DER.
 */
TEST(name_constraints_bind_leaf_dirname_sans)
{
#define EMPTY_DIRNAME "subjectAltName=DER:301682107777772E616C6C6F7765642E74657374A4023000"
  static const struct san_case cases[] = {
    { "dir", "out", SAN_DNS ",dirName:dn_s\n[dn_s]\nO=Other", 0 },
    { "dir", "in", SAN_DNS ",dirName:dn_s\n[dn_s]\nO= EXAMPLE\nOU=x", 1 },
    { "dir", "later", SAN_DNS ",dirName:dn_s\n[dn_s]\nOU=x\nO=Example", 0 },
    { "dir", "empty", EMPTY_DIRNAME, 0 },
    { "ex", "exout", SAN_DNS ",dirName:dn_s\n[dn_s]\nO=bad\nOU=x", 0 },
    { "ex", "exin", SAN_DNS ",dirName:dn_s\n[dn_s]\nO=Good", 1 },
    { "ex", "exempty", EMPTY_DIRNAME, 1 },
    /* No directoryName subtree: not bound. */
    { "dns", "dnsonly", SAN_DNS ",dirName:dn_s\n[dn_s]\nO=Other", 1 },
  };
#undef EMPTY_DIRNAME
  struct proxy_upstream_tls *u;

  make_root();
  make_ca("dir", "root", "/CN=constrained dir",
          "nameConstraints=permitted;dirName:dn_top\n[dn_top]\nO=Example");
  make_ca("ex", "root", "/CN=excluding dir",
          "nameConstraints=excluded;dirName:dn_top\n[dn_top]\nO=Bad");
  make_ca("dns", "root", "/CN=constrained dns",
          "nameConstraints=permitted;DNS:allowed.test");
  u = trust_root();
  check_san_cases(u, cases, COUNT(cases));
  proxy_upstream_tls_free(u);
}

/*
 * An iPAddress of neither 4 nor 16 bytes below a CA with iPAddress subtrees: OpenSSL
 * refuses it (unsupported name syntax), for a leaf and for a CA; below a CA without
 * them it is not looked at. Raw DER: SEQUENCE { [2] "www.allowed.test",
 * [7] 01 02 03 04 0a }.
 */
TEST(name_constraints_ip_san_of_another_length)
{
#define IP5 "subjectAltName=DER:301982107777772E616C6C6F7765642E746573748705010203040A"
  static const struct san_case cases[] = {
    { "ip", "ip5", IP5, 0 },
    { "dns", "dns5", IP5, 1 },
    { "ca5", "l-ca5", SAN_DNS, 0 },
  };
  struct proxy_upstream_tls *u;

  make_root();
  make_ca("ip", "root", "/CN=constrained ip",
          "nameConstraints=permitted;IP:10.0.0.0/255.0.0.0");
  make_ca("dns", "root", "/CN=constrained dns",
          "nameConstraints=permitted;DNS:allowed.test");
  make_ca("ca5", "ip", "/CN=sub ca5", IP5);
#undef IP5
  u = trust_root();
  check_san_cases(u, cases, COUNT(cases));
  proxy_upstream_tls_free(u);
}

/*
 * A dNSName or iPAddress encoded constructed (BER; RFC 5280 certificates are DER) below
 * a CA with subtrees of its form: OpenSSL reads the name from the string segments
 * inside and holds that to the subtrees, mbedTLS reads the bytes as they are, so
 * neither reading can be checked alone. Refused, for a leaf and for a CA, which is
 * what OpenSSL says where the name it reads is outside (the cases it accepts, a name
 * within, are refused too: there is no OpenSSL premise for those). Below a CA without
 * subtrees of the form, such a name is not looked at, as OpenSSL does not look at it.
 * Raw DER: [7] constructed { OCTET STRING 01 02 03 04 } (1.2.3.4) or { 0a 01 02 03 }
 * (10.1.2.3), [2] constructed { IA5String "bad.allowed.test" } or "ca.allowed.test",
 * each with [2] "www.allowed.test" for a leaf.
 */
TEST(name_constraints_constructed_strings_refused)
{
#define CONS_IP_OUT "A706040401020304"
#define CONS_IP_IN "A70604040A010203"
#define LEAF_DNS "82107777772E616C6C6F7765642E74657374"
  static const struct san_case cases[] = {
    { "ip", "ipout", "subjectAltName=DER:301A" CONS_IP_OUT LEAF_DNS, 0 },
    { "ipcaout", "l-ipcaout", SAN_DNS, 0 },
    { "dnscaexcl", "l-dnscaexcl", SAN_DNS, 0 },
    { "dns", "ipnotlooked", "subjectAltName=DER:301A" CONS_IP_OUT LEAF_DNS, 1 },
  };
  /* OpenSSL accepts these; the proxy refuses them. */
  static const char *const refused[][2] = {
    { "ip", "ipin" },
    { "ipcain", "l-ipcain" },
    { "dnscain", "l-dnscain" },
  };
  struct proxy_upstream_tls *u;
  size_t i;

  make_root();
  make_ca("ip", "root", "/CN=constrained ip", "nameConstraints=permitted;IP:10.0.0.0/255.0.0.0");
  make_ca("dns", "root", "/CN=constrained dns",
          "nameConstraints=permitted;DNS:allowed.test,excluded;DNS:bad.allowed.test");
  make_ca("ipcaout", "ip", "/CN=sub ipcaout", "subjectAltName=DER:3008" CONS_IP_OUT);
  make_ca("ipcain", "ip", "/CN=sub ipcain", "subjectAltName=DER:3008" CONS_IP_IN);
  make_ca("dnscaexcl", "dns", "/CN=sub dnscaexcl",
          "subjectAltName=DER:3014A21216106261642E616C6C6F7765642E74657374");
  make_ca("dnscain", "dns", "/CN=sub dnscain",
          "subjectAltName=DER:3013A211160F63612E616C6C6F7765642E74657374");
  u = trust_root();
  check_san_cases(u, cases, COUNT(cases));
  make_ext_leaf("ip", "ipin", "/O=Example/CN=" SAN_HOST,
                "subjectAltName=DER:301A" CONS_IP_IN LEAF_DNS);
  make_ext_leaf("ipcain", "l-ipcain", "/O=Example/CN=" SAN_HOST, SAN_DNS);
  make_ext_leaf("dnscain", "l-dnscain", "/O=Example/CN=" SAN_HOST, SAN_DNS);
  for (i = 0; i < COUNT(refused); i++) {
    uint32_t flags;

    ASSERT_EQ(run("openssl verify -x509_strict -purpose sslserver -CAfile root.pem "
                  "-untrusted %s.cas -verify_hostname " SAN_HOST " %s.pem >/dev/null 2>&1",
                  refused[i][0], refused[i][1]),
              0);
    flags = upstream_verify(u, refused[i][1], SAN_HOST);
    if (flags != MBEDTLS_X509_BADCERT_OTHER)
      TEST_FAIL_("%s (under %s): flags 0x%x, expected BADCERT_OTHER", refused[i][1],
                 refused[i][0], (unsigned)flags);
  }
#undef CONS_IP_OUT
#undef CONS_IP_IN
#undef LEAF_DNS
  proxy_upstream_tls_free(u);
}

/*
 * The comparisons are bounded as OpenSSL bounds them: a certificate's names (subject
 * attributes and subjectAltName entries) times a constraining CA's subtrees may be
 * 2^20, not more. A CA of 1,024 subtrees (dNSName allowed.test, 1,023 excluded
 * addresses); leaves of two subject attributes and a dNSName, with 1,021 and with
 * 1,022 iPAddresses within: 1,025 names is one too many, for a leaf and for a CA.
 */
TEST(name_constraints_names_times_subtrees_bounded)
{
  static const struct san_case cases[] = {
    { "many", "fits", NULL, 1 },
    { "many", "over", NULL, 0 },
    { "subover", "l-subover", SAN_DNS, 0 },
  };
  struct san_case run_cases[COUNT(cases)];
  size_t size = 64 * 1024, n, i;
  char *nc = malloc(size), *san_fits = malloc(size), *san_over = malloc(size);

  ASSERT_NE(nc, NULL);
  ASSERT_NE(san_fits, NULL);
  ASSERT_NE(san_over, NULL);
  n = (size_t)snprintf(nc, size, "nameConstraints=permitted;DNS:allowed.test");
  for (i = 1; i < 1024; i++)
    n += (size_t)snprintf(nc + n, size - n, ",excluded;IP:192.0.%zu.%zu/255.255.255.255",
                          i / 256, i % 256);
  n = (size_t)snprintf(san_fits, size, SAN_DNS);
  for (i = 1; i <= 1021; i++)
    n += (size_t)snprintf(san_fits + n, size - n, ",IP:10.0.%zu.%zu", i / 256, i % 256);
  snprintf(san_over, size, "%s,IP:10.1.0.1", san_fits);
  memcpy(run_cases, cases, sizeof(cases));
  run_cases[0].ext = san_fits;
  run_cases[1].ext = san_over;
  make_root();
  make_ca("many", "root", "/CN=many subtrees", nc);
  make_ca("subover", "many", "/O=Example/CN=sub over", san_over);
  {
    struct proxy_upstream_tls *u = trust_root();

    check_san_cases(u, run_cases, COUNT(run_cases));
    proxy_upstream_tls_free(u);
  }
  free(nc);
  free(san_fits);
  free(san_over);
}

/* ---- loading the trust store -------------------------------------------------- */

static const char *log_text(const char *path)
{
  static char text[8192];
  FILE *f = fopen(path, "r");
  size_t n;

  ASSERT_NOT_NULL(f);
  n = fread(text, 1, sizeof(text) - 1, f);
  fclose(f);
  text[n] = '\0';
  return text;
}

TEST(trust_store_errors_name_the_file)
{
  struct proxy_upstream_tls *u = NULL;
  const char *extra[1];
  const char *missing = tmp_path("missing.crt");
  static const char junk[] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  char err[512], both[8192];
  int saved, n;

  make_root();

  /* No system store and no --upstream-ca: nothing to trust, an error with the fix. */
  err[0] = '\0';
  ASSERT_EQ(proxy_upstream_tls_new(missing, NULL, 0, &u, err, sizeof(err)), -EINVAL);
  ASSERT_NULL(u);
  ASSERT_CONTAINS(err, "cannot load the system trust store ");
  ASSERT_CONTAINS(err, missing);
  ASSERT_CONTAINS(err, "pass --upstream-ca FILE");

  /* No system store but an --upstream-ca: a warning, and only that CA is trusted. */
  saved = test_stderr_to(tmp_path("log.txt"));
  extra[0] = tmp_path("root.pem");
  n = proxy_upstream_tls_new(missing, extra, 1, &u, err, sizeof(err));
  test_stderr_back(saved);
  ASSERT_EQ(n, 0);
  ASSERT_NOT_NULL(u);
  ASSERT_CONTAINS(log_text(tmp_path("log.txt")), "no system trust store at ");
  ASSERT_CONTAINS(log_text(tmp_path("log.txt")), "trusting only --upstream-ca");
  make_intermediate("plain", "");
  make_leaf("plain", "leaf", "x.example.com", "DNS:x.example.com");
  ASSERT_EQ(upstream_verify(u, "leaf", "x.example.com"), 0);
  proxy_upstream_tls_free(u);
  u = NULL;

  /* An --upstream-ca that is missing, empty, junk, or holds a certificate that does
   * not parse beside one that does: refused, naming the file. */
  err[0] = '\0';
  extra[0] = tmp_path("absent.pem");
  ASSERT_EQ(proxy_upstream_tls_new(NULL, extra, 1, &u, err, sizeof(err)), -EINVAL);
  ASSERT_NULL(u);
  ASSERT_CONTAINS(err, "cannot load CA file ");
  ASSERT_CONTAINS(err, extra[0]);

  test_write_file(test_tmpdir(), "empty.pem", "", 0, 0644);
  err[0] = '\0';
  extra[0] = tmp_path("empty.pem");
  ASSERT_EQ(proxy_upstream_tls_new(NULL, extra, 1, &u, err, sizeof(err)), -EINVAL);
  ASSERT_NULL(u);
  ASSERT_CONTAINS(err, extra[0]);

  test_write_file(test_tmpdir(), "junk.pem", junk, sizeof(junk) - 1, 0644);
  err[0] = '\0';
  extra[0] = tmp_path("junk.pem");
  ASSERT_EQ(proxy_upstream_tls_new(NULL, extra, 1, &u, err, sizeof(err)), -EINVAL);
  ASSERT_NULL(u);
  ASSERT_CONTAINS(err, extra[0]);

  n = snprintf(both, sizeof(both), "%s", log_text(tmp_path("root.pem")));
  snprintf(both + n, sizeof(both) - (size_t)n, "%s", junk);
  test_write_file(test_tmpdir(), "both.pem", both, strlen(both), 0644);
  err[0] = '\0';
  extra[0] = tmp_path("both.pem");
  ASSERT_EQ(proxy_upstream_tls_new(NULL, extra, 1, &u, err, sizeof(err)), -EINVAL);
  ASSERT_NULL(u);
  ASSERT_CONTAINS(err, extra[0]);
  ASSERT_CONTAINS(err, "(some certificates in it did not parse)");
}

/* A system store with a certificate mbedTLS cannot parse beside ones it can (the
 * distribution's bundle may carry one) still loads: refusing it would stop every
 * start; the certificates that parse are trusted. */
TEST(system_store_partly_parsed_loads)
{
  static const char junk[] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  struct proxy_upstream_tls *u = NULL;
  char err[512] = "", both[8192];
  int n;

  make_root();
  n = snprintf(both, sizeof(both), "%s", junk);
  snprintf(both + n, sizeof(both) - (size_t)n, "%s", log_text(tmp_path("root.pem")));
  test_write_file(test_tmpdir(), "system.crt", both, strlen(both), 0644);
  ASSERT_EQ(proxy_upstream_tls_new(tmp_path("system.crt"), NULL, 0, &u, err, sizeof(err)), 0);
  make_intermediate("plain", "");
  make_leaf("plain", "leaf", "x.example.com", "DNS:x.example.com");
  ASSERT_EQ(upstream_verify(u, "leaf", "x.example.com"), 0);
  proxy_upstream_tls_free(u);
}
