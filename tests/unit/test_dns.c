/*
 * The DNS responder on a real loop: UDP and TCP sockets on 127.0.0.1 with ephemeral
 * ports, a blocking client on a helper thread (or, where a test inspects the
 * responder between loop iterations, a non-blocking one on the loop's thread), and a
 * check that closing leaves no handle behind.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "proxy/dns.h"
#include "proxy/dns_internal.h"
#include "proxy/dnsmsg.h"
#include "proxy/fdbudget.h"
#include "rules/rules.h"
#include "test.h"

void test_loop_close(uv_loop_t *loop);

struct env;
typedef void (*client_fn)(struct env *e);

struct env {
  uv_loop_t loop;
  uv_async_t done;
  struct proxy_dns_table *table;
  struct proxy_dns *dns;
  struct proxy_dns_table *table2; /* a second sandbox's (run_shared) */
  struct proxy_dns *dns2;
  uint16_t tcp_port2;
  struct proxy_dns_stats stats; /* copied when the client is done */
  int family;
  uint16_t udp_port;
  uint16_t tcp_port;
  client_fn client;
  pthread_t thread;
  int closed;
  /* What the client saw, checked on the main thread after the loop ended. */
  uint32_t addrs[8];
  const char *names[8];
  int naddrs;
};

/* ---- sockets ---- */

static int bound_socket(int family, int type, uint16_t *port)
{
  struct sockaddr_storage ss;
  socklen_t len;
  int fd = socket(family, type | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return -errno;
  memset(&ss, 0, sizeof(ss));
  if (family == AF_INET) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(*sin);
  } else {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

    sin6->sin6_family = AF_INET6;
    sin6->sin6_addr = in6addr_loopback;
    len = sizeof(*sin6);
  }
  if (bind(fd, (struct sockaddr *)&ss, len) != 0 ||
      (type == SOCK_STREAM && listen(fd, 16) != 0)) {
    int err = -errno;

    close(fd);
    return err;
  }
  len = sizeof(ss);
  ASSERT_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
  *port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                  : ((struct sockaddr_in6 *)&ss)->sin6_port);
  return fd;
}

static int client_socket(const struct env *e, int type, uint16_t port)
{
  struct sockaddr_storage ss;
  struct timeval tv = { .tv_sec = 5 };
  socklen_t len;
  int fd = socket(e->family, type | SOCK_CLOEXEC, 0);

  ASSERT_GE(fd, 0);
  memset(&ss, 0, sizeof(ss));
  if (e->family == AF_INET) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin->sin_port = htons(port);
    len = sizeof(*sin);
  } else {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

    sin6->sin6_family = AF_INET6;
    sin6->sin6_addr = in6addr_loopback;
    sin6->sin6_port = htons(port);
    len = sizeof(*sin6);
  }
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
  if (connect(fd, (struct sockaddr *)&ss, len) != 0)
    TEST_FAIL_("connect to port %u: %s", port, strerror(errno));
  return fd;
}

/* ---- queries and answers ---- */

static size_t make_query(uint8_t *out, uint16_t id, const char *name, uint16_t qtype,
                         uint16_t qclass, int edns)
{
  size_t n = 12;
  const char *p = name;

  memset(out, 0, 12);
  out[0] = (uint8_t)(id >> 8), out[1] = (uint8_t)id;
  out[2] = 0x01; /* RD */
  out[5] = 1;
  out[11] = edns ? 1 : 0;
  while (*p != '\0') {
    size_t len = strcspn(p, ".");

    out[n++] = (uint8_t)len;
    memcpy(out + n, p, len);
    n += len;
    p += len;
    if (*p == '.')
      p++;
  }
  out[n++] = 0;
  out[n++] = (uint8_t)(qtype >> 8), out[n++] = (uint8_t)qtype;
  out[n++] = (uint8_t)(qclass >> 8), out[n++] = (uint8_t)qclass;
  if (edns) {
    static const uint8_t opt[] = { 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0 };

    memcpy(out + n, opt, sizeof(opt));
    n += sizeof(opt);
  }
  return n;
}

struct answer {
  uint16_t id;
  int rcode;
  int aa;
  int ancount;
  int arcount;
  uint32_t addr; /* host order, from the A record if any */
  uint32_t ttl;
};

/* Decodes the answers this responder gives: the question, then at most one A
 * record named by a pointer, then at most one OPT. */
static void decode(const uint8_t *m, size_t len, struct answer *a)
{
  size_t p = 12;

  ASSERT_GE(len, 12);
  ASSERT(m[2] & 0x80);
  memset(a, 0, sizeof(*a));
  a->id = (uint16_t)(m[0] << 8 | m[1]);
  a->rcode = m[3] & 0x0f;
  a->aa = (m[2] >> 2) & 1;
  a->ancount = m[6] << 8 | m[7];
  a->arcount = m[10] << 8 | m[11];
  if (m[5] == 0)
    return; /* header-only error */
  while (p < len && m[p] != 0)
    p += 1 + m[p];
  p += 5;
  if (a->ancount == 1) {
    ASSERT_LE(p + 16, len);
    ASSERT_EQ(m[p], 0xc0);
    ASSERT_EQ(m[p + 3], 1); /* A */
    a->ttl = (uint32_t)m[p + 6] << 24 | (uint32_t)m[p + 7] << 16 |
             (uint32_t)m[p + 8] << 8 | m[p + 9];
    ASSERT_EQ(m[p + 11], 4);
    a->addr = (uint32_t)m[p + 12] << 24 | (uint32_t)m[p + 13] << 16 |
              (uint32_t)m[p + 14] << 8 | m[p + 15];
    p += 16;
  }
  if (a->arcount == 1) {
    ASSERT_LE(p + 11, len);
    ASSERT_EQ(m[p + 2], 41);
    ASSERT_EQ(m[p + 3] << 8 | m[p + 4], 1232);
    p += 11;
  }
  ASSERT_EQ(p, len);
}

/* Sends one query over UDP on fd and decodes the answer. */
static void udp_ask(int fd, uint16_t id, const char *name, uint16_t qtype, uint16_t qclass,
                    int edns, struct answer *a)
{
  uint8_t q[512], r[1024];
  size_t n = make_query(q, id, name, qtype, qclass, edns);
  ssize_t got;

  ASSERT_EQ(send(fd, q, n, 0), n);
  got = recv(fd, r, sizeof(r), 0);
  if (got < 0)
    TEST_FAIL_("no UDP answer for %s: %s", name, strerror(errno));
  decode(r, (size_t)got, a);
  ASSERT_EQ(a->id, id);
}

/* Reads one length-prefixed TCP message. Returns its length, 0 on EOF. */
static size_t tcp_read_msg(int fd, uint8_t *buf, size_t size)
{
  uint8_t hdr[2];
  size_t need, have = 0;
  ssize_t n;

  while (have < 2) {
    n = recv(fd, hdr + have, 2 - have, 0);
    if (n == 0 && have == 0)
      return 0;
    if (n <= 0)
      TEST_FAIL_("tcp read: %s", n == 0 ? "EOF in a length" : strerror(errno));
    have += (size_t)n;
  }
  need = (size_t)hdr[0] << 8 | hdr[1];
  ASSERT_LE(need, size);
  for (have = 0; have < need; have += (size_t)n) {
    n = recv(fd, buf + have, need - have, 0);
    if (n <= 0)
      TEST_FAIL_("tcp read: %s", n == 0 ? "EOF in a message" : strerror(errno));
  }
  return need;
}

static void tcp_send_query(int fd, uint16_t id, const char *name, uint16_t qtype)
{
  uint8_t q[514];
  size_t n = make_query(q + 2, id, name, qtype, PROXY_DNS_CLASS_IN, 0);

  q[0] = (uint8_t)(n >> 8), q[1] = (uint8_t)n;
  ASSERT_EQ(send(fd, q, n + 2, MSG_NOSIGNAL), n + 2);
}

static void tcp_ask(int fd, uint16_t id, const char *name, struct answer *a)
{
  uint8_t r[1024];
  size_t n;

  tcp_send_query(fd, id, name, PROXY_DNS_TYPE_A);
  n = tcp_read_msg(fd, r, sizeof(r));
  ASSERT_GT(n, 0);
  decode(r, n, a);
  ASSERT_EQ(a->id, id);
}

/* Waits until the server closes fd (EOF or reset). */
static void expect_closed(int fd)
{
  uint8_t b[64];
  ssize_t n = recv(fd, b, sizeof(b), 0);

  if (n < 0 && errno == ECONNRESET)
    return;
  if (n != 0)
    TEST_FAIL_("expected the connection to be closed: recv %zd (%s)", n,
               n < 0 ? strerror(errno) : "data");
}

static void record(struct env *e, const char *name, uint32_t addr)
{
  ASSERT_LT(e->naddrs, 8);
  e->names[e->naddrs] = name;
  e->addrs[e->naddrs++] = addr;
}

/* ---- the harness ---- */

static void noop_cb(void *arg)
{
  (*(int *)arg)++;
}

static void closed_cb(void *arg)
{
  struct env *e = arg;

  e->closed++;
}

static void done_cb(uv_async_t *a)
{
  struct env *e = a->data;

  e->stats = *proxy_dns_stats(e->dns);
  proxy_dns_close(e->dns, closed_cb, e);
  e->dns = NULL;
  if (e->dns2 != NULL)
    proxy_dns_close(e->dns2, closed_cb, e);
  e->dns2 = NULL;
  uv_close((uv_handle_t *)a, NULL);
}

static void *client_main(void *arg)
{
  struct env *e = arg;

  e->client(e);
  uv_async_send(&e->done);
  return NULL;
}

/* Runs client on a thread against a responder serving UDP and TCP sockets of family
 * on e's loop, then closes the responder and checks that nothing is left open. */
static void run(struct env *e, int family, const struct proxy_dns_opts *opts,
                size_t max_entries, client_fn client)
{
  int udp, tcp;

  e->family = family;
  e->client = client;
  if (e->table == NULL)
    e->table = proxy_dns_table_new(max_entries, "test-sandbox", 3600 * 1000);
  ASSERT_NOT_NULL(e->table);
  udp = bound_socket(family, SOCK_DGRAM, &e->udp_port);
  ASSERT_GE(udp, 0);
  tcp = bound_socket(family, SOCK_STREAM, &e->tcp_port);
  ASSERT_GE(tcp, 0);
  ASSERT_EQ(uv_loop_init(&e->loop), 0);
  ASSERT_EQ(uv_async_init(&e->loop, &e->done, done_cb), 0);
  e->done.data = e;
  if (family == AF_INET)
    ASSERT_EQ(proxy_dns_start(&e->loop, e->table, opts, udp, tcp, -1, -1, &e->dns), 0);
  else
    ASSERT_EQ(proxy_dns_start(&e->loop, e->table, opts, -1, -1, udp, tcp, &e->dns), 0);
  ASSERT_EQ(pthread_create(&e->thread, NULL, client_main, e), 0);
  ASSERT_EQ(uv_run(&e->loop, UV_RUN_DEFAULT), 0);
  ASSERT_EQ(pthread_join(e->thread, NULL), 0);
  ASSERT_EQ(e->closed, 1);
  test_loop_close(&e->loop);
}

static void check_recorded(struct env *e)
{
  for (int i = 0; i < e->naddrs; i++)
    ASSERT_STREQ(proxy_dns_table_lookup(e->table, e->addrs[i], 0), e->names[i]);
}

/* ---- UDP ---- */

static void udp_answers_client(struct env *e)
{
  int fd = client_socket(e, SOCK_DGRAM, e->udp_port);
  struct answer a, b;

  /* A: a synthetic address with the configured TTL, the same one when asked again. */
  udp_ask(fd, 1, "api.github.com", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
  ASSERT_EQ(a.rcode, PROXY_DNS_RCODE_NOERROR);
  ASSERT_EQ(a.aa, 1);
  ASSERT_EQ(a.ancount, 1);
  ASSERT_EQ(a.arcount, 0);
  ASSERT_EQ(a.ttl, 30);
  ASSERT(proxy_dns_is_synthetic(a.addr));
  record(e, "api.github.com", a.addr);
  udp_ask(fd, 2, "API.GitHub.com", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 1, &b);
  ASSERT_EQ(b.addr, a.addr);
  ASSERT_EQ(b.arcount, 1); /* EDNS echoed */
  udp_ask(fd, 3, "pypi.org", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &b);
  ASSERT_NE(b.addr, a.addr);
  record(e, "pypi.org", b.addr);

  /* AAAA and other types: NODATA. */
  udp_ask(fd, 4, "api.github.com", PROXY_DNS_TYPE_AAAA, PROXY_DNS_CLASS_IN, 0, &a);
  ASSERT_EQ(a.rcode, PROXY_DNS_RCODE_NOERROR);
  ASSERT_EQ(a.ancount, 0);
  udp_ask(fd, 5, "example.com", 15 /* MX */, PROXY_DNS_CLASS_IN, 1, &a);
  ASSERT_EQ(a.rcode, PROXY_DNS_RCODE_NOERROR);
  ASSERT_EQ(a.ancount, 0);
  ASSERT_EQ(a.arcount, 1);
  udp_ask(fd, 6, "", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
  ASSERT_EQ(a.rcode, PROXY_DNS_RCODE_NOERROR);
  ASSERT_EQ(a.ancount, 0);

  /* localhost stays on loopback. */
  udp_ask(fd, 7, "localhost", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
  ASSERT_EQ(a.addr, 0x7f000001);
  udp_ask(fd, 8, "app.localhost", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
  ASSERT_EQ(a.addr, 0x7f000001);
  udp_ask(fd, 9, "localhost", PROXY_DNS_TYPE_AAAA, PROXY_DNS_CLASS_IN, 0, &a);
  ASSERT_EQ(a.ancount, 0);
  udp_ask(fd, 10, "notlocalhost", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
  ASSERT(proxy_dns_is_synthetic(a.addr));

  /* Names that would turn into addresses, and special-use names: NXDOMAIN. */
  {
    static const char *nx[] = { "10.0.0.1", "127.1", "0x7f000001", "0x7f.1",
                                "a.0177", "x.invalid", "invalid", "abc.onion" };

    for (size_t i = 0; i < sizeof(nx) / sizeof(nx[0]); i++) {
      udp_ask(fd, (uint16_t)(20 + i), nx[i], PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
      if (a.rcode != PROXY_DNS_RCODE_NXDOMAIN)
        TEST_FAIL_("%s: rcode %d, expected NXDOMAIN", nx[i], a.rcode);
      ASSERT_EQ(a.aa, 1);
    }
    /* Numbers that are not the last label, and hex-looking words, are names. */
    udp_ask(fd, 40, "1.2.3.example", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
    ASSERT_EQ(a.ancount, 1);
    udp_ask(fd, 41, "cafe.0xz", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
    ASSERT_EQ(a.ancount, 1);
  }

  /* Class CHAOS (version.bind): REFUSED. */
  udp_ask(fd, 50, "version.bind", 16, 3, 0, &a);
  ASSERT_EQ(a.rcode, PROXY_DNS_RCODE_REFUSED);
  ASSERT_EQ(a.aa, 0);
  close(fd);
}

TEST(udp_answers)
{
  struct env e = { 0 };
  struct proxy_dns_opts o = { .answer_ttl = 30 };

  run(&e, AF_INET, &o, 100, udp_answers_client);
  check_recorded(&e);
  /* 2 + 1 + 3 + 4 + 8 + 2 + 1 answered; 9 rejected (8 NXDOMAIN, 1 REFUSED). */
  ASSERT_EQ(e.stats.queries, 21);
  ASSERT_EQ(e.stats.refused, 9);
  ASSERT_EQ(e.stats.dropped, 0);
  proxy_dns_table_free(e.table);
}

static void udp_errors_client(struct env *e)
{
  int fd = client_socket(e, SOCK_DGRAM, e->udp_port);
  uint8_t q[2048], r[512];
  struct answer a;
  size_t n;
  ssize_t got;

  /* Malformed: too short, a response, a compression loop, and a datagram larger than
   * any query. None is answered; the next query is. */
  ASSERT_EQ(send(fd, "\x12\x34\x01", 3, 0), 3);
  n = make_query(q, 0x0bad, "example.com", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0);
  q[2] |= 0x80;
  ASSERT_EQ(send(fd, q, n, 0), n);
  memcpy(q, "\x0b\xad\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", 18);
  ASSERT_EQ(send(fd, q, 18, 0), 18);
  n = make_query(q, 0x0bad, "example.com", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0);
  memset(q + n, 0, sizeof(q) - n);
  ASSERT_EQ(send(fd, q, sizeof(q), 0), sizeof(q));
  ASSERT_EQ(send(fd, "", 0, 0), 0);
  udp_ask(fd, 0x600d, "good.example", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
  ASSERT_EQ(a.ancount, 1);

  /* Opcode NOTIFY: NOTIMP; two questions: FORMERR; both header-only. */
  n = make_query(q, 0x0001, "example.com", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0);
  q[2] = 0x20;
  ASSERT_EQ(send(fd, q, n, 0), n);
  got = recv(fd, r, sizeof(r), 0);
  ASSERT_EQ(got, 12);
  ASSERT_EQ(r[3] & 0x0f, PROXY_DNS_RCODE_NOTIMP);
  q[2] = 0x01;
  q[5] = 2;
  ASSERT_EQ(send(fd, q, n, 0), n);
  got = recv(fd, r, sizeof(r), 0);
  ASSERT_EQ(got, 12);
  ASSERT_EQ(r[3] & 0x0f, PROXY_DNS_RCODE_FORMERR);

  /* The table holds one name: a second is REFUSED, the first still resolves. */
  udp_ask(fd, 0x0002, "second.example", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
  ASSERT_EQ(a.rcode, PROXY_DNS_RCODE_REFUSED);
  ASSERT_EQ(a.ancount, 0);
  udp_ask(fd, 0x0003, "good.example", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
  ASSERT_EQ(a.ancount, 1);
  close(fd);
}

TEST(udp_malformed_dropped_and_errors)
{
  struct env e = { 0 };

  run(&e, AF_INET, NULL, 1, udp_errors_client);
  ASSERT_EQ(e.stats.dropped, 5);
  ASSERT_EQ(e.stats.queries, 5);
  ASSERT_EQ(e.stats.refused, 1);
  ASSERT_EQ(proxy_dns_table_count(e.table), 1);
  proxy_dns_table_free(e.table);
}

/*
 * Names with a byte outside the host name syntax are well-formed queries: a wildcard
 * (`dig '*.example.com'`), a space, raw UTF-8 (musl passes it to DNS as it is),
 * which c-ares, dig and musl send. Dropped, they cost the client its whole timeout
 * (node's dns.resolve4: 25 s) and then a temporary failure; they are answered
 * NXDOMAIN at once, over UDP and TCP, and never take an address.
 */
static void unusable_client(struct env *e)
{
  static const char *names[] = { "*.example.com", "a b.example", "b\xc3\xbc" "cher.example",
                                 "x!y.example", "A*" };
  int fd = client_socket(e, SOCK_DGRAM, e->udp_port);
  struct answer a;
  size_t i;

  for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    udp_ask(fd, (uint16_t)(100 + i), names[i], PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN,
            (int)(i & 1), &a);
    ASSERT_EQ(a.rcode, PROXY_DNS_RCODE_NXDOMAIN);
    ASSERT_EQ(a.ancount, 0);
    udp_ask(fd, (uint16_t)(200 + i), names[i], PROXY_DNS_TYPE_AAAA, PROXY_DNS_CLASS_IN,
            0, &a);
    ASSERT_EQ(a.rcode, PROXY_DNS_RCODE_NXDOMAIN);
  }
  close(fd);
  fd = client_socket(e, SOCK_STREAM, e->tcp_port);
  tcp_ask(fd, 1, "*.example.com", &a);
  ASSERT_EQ(a.rcode, PROXY_DNS_RCODE_NXDOMAIN);
  tcp_ask(fd, 2, "fine.example", &a); /* the connection stays open */
  ASSERT_EQ(a.ancount, 1);
  close(fd);
}

TEST(unusable_names_nxdomain)
{
  struct env e = { 0 };

  run(&e, AF_INET, NULL, 100, unusable_client);
  ASSERT_EQ(e.stats.queries, 12);
  ASSERT_EQ(e.stats.refused, 11);
  ASSERT_EQ(e.stats.dropped, 0);
  ASSERT_EQ(proxy_dns_table_count(e.table), 1);
  proxy_dns_table_free(e.table);
}

static void udp6_client(struct env *e)
{
  int fd = client_socket(e, SOCK_DGRAM, e->udp_port);
  struct answer a;

  udp_ask(fd, 7, "v6.example", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
  ASSERT_EQ(a.ancount, 1);
  record(e, "v6.example", a.addr);
  close(fd);
  fd = client_socket(e, SOCK_STREAM, e->tcp_port);
  tcp_ask(fd, 8, "v6.example", &a);
  ASSERT_EQ(a.addr, e->addrs[0]);
  close(fd);
}

/*
 * conn.c takes a connection's name from the table as is and compares it with
 * strcmp to the SNI or Host after rules_normalize_host, and the rules match that
 * name as a normalized host. So every name the responder hands an address to must
 * be a fixed point of rules_normalize_host: a name the rules would read differently
 * (case, numeric forms, bytes they reject) would be decided as something else, or
 * never agree with its own SNI. Every name over an alphabet of the tricky bytes up
 * to four bytes long is asked, with some longer ones.
 */
#define NORM_ALPHABET "0x9aF.-_"
#define NORM_MAX 4700

static struct {
  char raw[260];
  uint32_t addr;
} norm_asked[NORM_MAX];
static size_t norm_count;

static void norm_ask(int fd, const char *name)
{
  struct answer a;

  ASSERT_LT(norm_count, NORM_MAX);
  udp_ask(fd, (uint16_t)norm_count, name, PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0, &a);
  if (a.rcode == PROXY_DNS_RCODE_NOERROR) {
    ASSERT_EQ(a.ancount, 1);
  } else if (a.rcode != PROXY_DNS_RCODE_NXDOMAIN) {
    TEST_FAIL_("%s: rcode %d, expected an address or NXDOMAIN", name, a.rcode);
  }
  snprintf(norm_asked[norm_count].raw, sizeof(norm_asked[0].raw), "%s", name);
  norm_asked[norm_count++].addr = a.ancount == 1 ? a.addr : 0;
}

static void norm_client(struct env *e)
{
  static const char *longer[] = {
    "_dmarc.Example.COM", "a-.-b_", "xn--bcher-kva.example", "0x7f.0x1", "0x7f.0x1g",
    "1.2.3.4-", "0177.0.0.01x", "10.0.0.1.nip.io",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example",
  };
  const size_t k = sizeof(NORM_ALPHABET) - 1;
  int fd = client_socket(e, SOCK_DGRAM, e->udp_port);
  char name[260];
  size_t len, i, n, total;

  for (len = 1; len <= 4; len++) {
    for (total = 1, i = 0; i < len; i++)
      total *= k;
    for (n = 0; n < total; n++) {
      size_t v = n;

      for (i = 0; i < len; i++, v /= k)
        name[i] = NORM_ALPHABET[v % k];
      name[len] = '\0';
      /* An empty label has no wire form. */
      if (name[0] == '.' || name[len - 1] == '.' || strstr(name, "..") != NULL)
        continue;
      norm_ask(fd, name);
    }
  }
  for (i = 0; i < sizeof(longer) / sizeof(longer[0]); i++)
    norm_ask(fd, longer[i]);
  /* The longest name: 253 bytes in labels of 63. */
  memset(name, 'Z', 253);
  name[63] = name[127] = name[191] = '.';
  name[253] = '\0';
  norm_ask(fd, name);
  close(fd);
}

TEST(answered_names_are_normalized_hosts)
{
  struct env e = { 0 };
  size_t i, answered = 0;

  norm_count = 0;
  run(&e, AF_INET, NULL, 8192, norm_client);
  for (i = 0; i < norm_count; i++) {
    char norm[RULES_MAX_NAME_LEN + 1];
    const char *raw = norm_asked[i].raw, *name;
    int n;

    if (norm_asked[i].addr == 0)
      continue; /* NXDOMAIN: refusing more than the rules do is safe */
    answered++;
    ASSERT(proxy_dns_is_synthetic(norm_asked[i].addr));
    name = proxy_dns_table_lookup(e.table, norm_asked[i].addr, 0);
    ASSERT_NOT_NULL(name);
    n = rules_normalize_host(raw, strlen(raw), norm, sizeof(norm));
    if (n < 0)
      TEST_FAIL_("%s was answered %s but rules_normalize_host rejects it", raw, name);
    if (strcmp(norm, name) != 0)
      TEST_FAIL_("%s was answered as %s but the rules read it as %s", raw, name, norm);
  }
  /* Most of them are names; the numeric ones are not. */
  ASSERT_GT(answered, norm_count / 2);
  ASSERT_LT(answered, norm_count);
  proxy_dns_table_free(e.table);
}

TEST(ipv6_sockets)
{
  struct env e = { 0 };
  uint16_t port;
  int fd = bound_socket(AF_INET6, SOCK_DGRAM, &port);

  if (fd < 0) {
    printf("skipped: no IPv6 loopback here (%s)\n", strerror(-fd));
    return;
  }
  close(fd);
  run(&e, AF_INET6, NULL, 10, udp6_client);
  check_recorded(&e);
  proxy_dns_table_free(e.table);
}

/* ---- TCP ---- */

static void tcp_pipelined_client(struct env *e)
{
  int fd = client_socket(e, SOCK_STREAM, e->tcp_port);
  uint8_t both[1024], r[1024];
  struct answer a, b;
  size_t n1, n2;

  /* Two queries in one segment; answers come back in order. */
  n1 = make_query(both + 2, 0x1111, "one.example", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0);
  both[0] = 0, both[1] = (uint8_t)n1;
  n2 = make_query(both + 4 + n1, 0x2222, "two.example", PROXY_DNS_TYPE_A,
                  PROXY_DNS_CLASS_IN, 1);
  both[2 + n1] = 0, both[3 + n1] = (uint8_t)n2;
  ASSERT_EQ(send(fd, both, n1 + n2 + 4, 0), n1 + n2 + 4);
  decode(r, tcp_read_msg(fd, r, sizeof(r)), &a);
  decode(r, tcp_read_msg(fd, r, sizeof(r)), &b);
  ASSERT_EQ(a.id, 0x1111);
  ASSERT_EQ(b.id, 0x2222);
  ASSERT_EQ(b.arcount, 1);
  record(e, "one.example", a.addr);
  record(e, "two.example", b.addr);

  /* One query dribbled a byte at a time. */
  n1 = make_query(both + 2, 0x3333, "three.example", PROXY_DNS_TYPE_A,
                  PROXY_DNS_CLASS_IN, 0);
  both[0] = 0, both[1] = (uint8_t)n1;
  for (size_t i = 0; i < n1 + 2; i++) {
    struct timespec ts = { 0, 1000000 };

    ASSERT_EQ(send(fd, both + i, 1, 0), 1);
    nanosleep(&ts, NULL);
  }
  decode(r, tcp_read_msg(fd, r, sizeof(r)), &a);
  ASSERT_EQ(a.id, 0x3333);
  record(e, "three.example", a.addr);

  /* Half-close after a query: the answer still arrives, then EOF. */
  tcp_send_query(fd, 0x4444, "four.example", PROXY_DNS_TYPE_AAAA);
  ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
  decode(r, tcp_read_msg(fd, r, sizeof(r)), &a);
  ASSERT_EQ(a.id, 0x4444);
  ASSERT_EQ(a.ancount, 0);
  ASSERT_EQ(tcp_read_msg(fd, r, sizeof(r)), 0);
  close(fd);
}

TEST(tcp_pipelined)
{
  struct env e = { 0 };

  run(&e, AF_INET, NULL, 100, tcp_pipelined_client);
  check_recorded(&e);
  ASSERT_EQ(e.stats.queries, 4);
  ASSERT_EQ(e.stats.dropped, 0);
  proxy_dns_table_free(e.table);
}

static void tcp_bad_client(struct env *e)
{
  int fd;
  uint8_t q[600];
  struct answer a;
  size_t n;

  /* A length above any query: closed without reading the rest. */
  fd = client_socket(e, SOCK_STREAM, e->tcp_port);
  ASSERT_EQ(send(fd, "\xff\xff", 2, 0), 2);
  expect_closed(fd);
  close(fd);

  /* A malformed message (a response): closed, after the good query before it. */
  fd = client_socket(e, SOCK_STREAM, e->tcp_port);
  tcp_ask(fd, 1, "fine.example", &a);
  n = make_query(q + 2, 2, "example.com", PROXY_DNS_TYPE_A, PROXY_DNS_CLASS_IN, 0);
  q[0] = 0, q[1] = (uint8_t)n;
  q[4] |= 0x80;
  ASSERT_EQ(send(fd, q, n + 2, 0), n + 2);
  expect_closed(fd);
  close(fd);

  /* EOF in the middle of a message. */
  fd = client_socket(e, SOCK_STREAM, e->tcp_port);
  ASSERT_EQ(send(fd, "\x00\x20\x00", 3, 0), 3);
  ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
  expect_closed(fd);
  close(fd);
}

TEST(tcp_malformed_closes)
{
  struct env e = { 0 };

  run(&e, AF_INET, NULL, 100, tcp_bad_client);
  ASSERT_EQ(e.stats.queries, 1);
  ASSERT_EQ(e.stats.dropped, 3);
  proxy_dns_table_free(e.table);
}

static void tcp_idle_client(struct env *e)
{
  int fd = client_socket(e, SOCK_STREAM, e->tcp_port);
  struct timespec t0, t1;
  struct answer a;
  double ms;

  tcp_ask(fd, 1, "idle.example", &a);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  expect_closed(fd);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
  /* Closed by the idle timer (200 ms), long before the 5 s receive timeout. */
  ASSERT_GE(ms, 150);
  ASSERT_LT(ms, 4000);
  close(fd);
}

TEST(tcp_idle_timeout)
{
  struct env e = { 0 };
  struct proxy_dns_opts o = { .tcp_idle_ms = 200 };

  run(&e, AF_INET, &o, 100, tcp_idle_client);
  proxy_dns_table_free(e.table);
}

static void tcp_cap_client(struct env *e)
{
  int c1 = client_socket(e, SOCK_STREAM, e->tcp_port);
  int c2 = client_socket(e, SOCK_STREAM, e->tcp_port);
  int c3;
  struct answer a;

  tcp_ask(c1, 1, "c1.example", &a);
  tcp_ask(c2, 2, "c2.example", &a);
  tcp_ask(c1, 3, "c1.example", &a); /* c2 is now the one idle the longest */
  c3 = client_socket(e, SOCK_STREAM, e->tcp_port);
  tcp_ask(c3, 4, "c3.example", &a);
  expect_closed(c2);
  tcp_ask(c1, 5, "c1.example", &a);
  tcp_ask(c3, 6, "c3.example", &a);
  close(c1);
  close(c2);
  close(c3);
}

TEST(tcp_client_cap_evicts_idlest)
{
  struct env e = { 0 };
  struct proxy_dns_opts o = { .tcp_max_conns = 2 };

  run(&e, AF_INET, &o, 100, tcp_cap_client);
  ASSERT_EQ(e.stats.queries, 6);
  proxy_dns_table_free(e.table);
}

/* Two sandboxes' responders on one loop, serving TCP only, sharing sh. */
static void run_shared(struct env *e, struct proxy_dns_shared *sh, client_fn client)
{
  struct proxy_dns_opts o1 = { .shared = sh, .sandbox = "box-1" };
  struct proxy_dns_opts o2 = { .shared = sh, .sandbox = "box-2" };
  int tcp1, tcp2;

  e->family = AF_INET;
  e->client = client;
  e->table = proxy_dns_table_new(100, "box-1", 3600 * 1000);
  e->table2 = proxy_dns_table_new(100, "box-2", 3600 * 1000);
  ASSERT_NOT_NULL(e->table);
  ASSERT_NOT_NULL(e->table2);
  tcp1 = bound_socket(AF_INET, SOCK_STREAM, &e->tcp_port);
  tcp2 = bound_socket(AF_INET, SOCK_STREAM, &e->tcp_port2);
  ASSERT_GE(tcp1, 0);
  ASSERT_GE(tcp2, 0);
  ASSERT_EQ(uv_loop_init(&e->loop), 0);
  ASSERT_EQ(uv_async_init(&e->loop, &e->done, done_cb), 0);
  e->done.data = e;
  ASSERT_EQ(proxy_dns_start(&e->loop, e->table, &o1, -1, tcp1, -1, -1, &e->dns), 0);
  ASSERT_EQ(proxy_dns_start(&e->loop, e->table2, &o2, -1, tcp2, -1, -1, &e->dns2), 0);
  ASSERT_EQ(pthread_create(&e->thread, NULL, client_main, e), 0);
  ASSERT_EQ(uv_run(&e->loop, UV_RUN_DEFAULT), 0);
  ASSERT_EQ(pthread_join(e->thread, NULL), 0);
  ASSERT_EQ(e->closed, 2);
  test_loop_close(&e->loop);
  proxy_dns_table_free(e->table);
  proxy_dns_table_free(e->table2);
}

/* The daemon's budget of descriptors for TCP clients (two here) is full: a new client
 * takes the place of the one idle the longest, whichever sandbox's it is, so that one
 * sandbox holding clients cannot keep another's out. */
static void tcp_shared_budget_client(struct env *e)
{
  uint16_t p1 = e->tcp_port, p2 = e->tcp_port2;
  int a1, a2, a3, b1, b2;
  struct answer a;

  a1 = client_socket(e, SOCK_STREAM, p1);
  tcp_ask(a1, 1, "a1.example", &a);
  a2 = client_socket(e, SOCK_STREAM, p1);
  tcp_ask(a2, 2, "a2.example", &a);
  /* Box 2 has no client of its own to give up: box 1's idlest makes room. */
  b1 = client_socket(e, SOCK_STREAM, p2);
  tcp_ask(b1, 3, "b1.example", &a);
  expect_closed(a1);
  tcp_ask(a2, 4, "a2.example", &a);
  /* Now box 2's b1 is the idlest of all. */
  a3 = client_socket(e, SOCK_STREAM, p1);
  tcp_ask(a3, 5, "a3.example", &a);
  expect_closed(b1);
  b2 = client_socket(e, SOCK_STREAM, p2);
  tcp_ask(b2, 6, "b2.example", &a);
  expect_closed(a2);
  tcp_ask(a3, 7, "a3.example", &a);
  tcp_ask(b2, 8, "b2.example", &a);
  close(a1);
  close(a2);
  close(a3);
  close(b1);
  close(b2);
}

TEST(tcp_shared_budget_evicts_idlest_of_all)
{
  struct env e = { 0 };
  struct proxy_dns_shared sh = { .fds = { .max = 2 } };

  run_shared(&e, &sh, tcp_shared_budget_client);
  ASSERT_EQ(sh.fds.refused, 3);
  /* Every client gave its descriptor back as it closed. */
  ASSERT_EQ(sh.fds.used, 0);
  ASSERT_NULL(sh.oldest);
  ASSERT_NULL(sh.newest);
}

/* Many pipelined queries while the client does not read: the responder must stop
 * reading when its write queue grows, and lose nothing when the client catches up. */
#define FLOOD 3000

struct flood {
  struct env *e;
  int fd;
};

static void *flood_sender(void *arg)
{
  struct flood *f = arg;

  for (int i = 0; i < FLOOD; i++)
    tcp_send_query(f->fd, (uint16_t)i, "flood.example", PROXY_DNS_TYPE_A);
  return NULL;
}

static void tcp_flood_client(struct env *e)
{
  struct flood f = { e, -1 };
  struct timespec ts = { 0, 300 * 1000000 };
  pthread_t sender;
  uint8_t r[1024];

  f.fd = client_socket(e, SOCK_STREAM, e->tcp_port);
  ASSERT_EQ(pthread_create(&sender, NULL, flood_sender, &f), 0);
  nanosleep(&ts, NULL);
  for (int i = 0; i < FLOOD; i++) {
    struct answer a;

    decode(r, tcp_read_msg(f.fd, r, sizeof(r)), &a);
    ASSERT_EQ(a.id, (uint16_t)i);
    ASSERT_EQ(a.ancount, 1);
  }
  ASSERT_EQ(pthread_join(sender, NULL), 0);
  close(f.fd);
}

TEST(tcp_backpressure)
{
  struct env e = { 0 };
  uint16_t port;
  int udp, tcp, small = 4096;

  /* The accepted socket inherits the listener's small send buffer, so answers back
   * up into the responder's write queue quickly. */
  e.family = AF_INET;
  e.client = tcp_flood_client;
  e.table = proxy_dns_table_new(10, "flood", 0);
  udp = bound_socket(AF_INET, SOCK_DGRAM, &e.udp_port);
  tcp = bound_socket(AF_INET, SOCK_STREAM, &port);
  ASSERT_GE(udp, 0);
  ASSERT_GE(tcp, 0);
  e.tcp_port = port;
  ASSERT_EQ(setsockopt(tcp, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  ASSERT_EQ(uv_loop_init(&e.loop), 0);
  ASSERT_EQ(uv_async_init(&e.loop, &e.done, done_cb), 0);
  e.done.data = &e;
  ASSERT_EQ(proxy_dns_start(&e.loop, e.table, NULL, udp, tcp, -1, -1, &e.dns), 0);
  ASSERT_EQ(pthread_create(&e.thread, NULL, client_main, &e), 0);
  ASSERT_EQ(uv_run(&e.loop, UV_RUN_DEFAULT), 0);
  ASSERT_EQ(pthread_join(e.thread, NULL), 0);
  ASSERT_EQ(e.closed, 1);
  ASSERT_EQ(e.stats.queries, FLOOD);
  test_loop_close(&e.loop);
  proxy_dns_table_free(e.table);
}

/* The smallest query there is: a header with no question (a 12-byte FORMERR answers
 * it), with its TCP length. */
#define TINY_QUERY 14
#define TINY_FLOOD 4000

/* Sends as much of the len bytes at buf as the non-blocking fd takes; returns how
 * many. */
static size_t send_some(int fd, const uint8_t *buf, size_t len)
{
  ssize_t n;

  if (len == 0)
    return 0;
  n = send(fd, buf, len, MSG_NOSIGNAL);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return 0;
  if (n < 0)
    TEST_FAIL_("send: %s", strerror(errno));
  return (size_t)n;
}

/* Runs the loop once without blocking and checks the responder's user-space write
 * queue against its cap; returns the number queued. */
static size_t step(uv_loop_t *loop, const struct proxy_dns *d)
{
  size_t queued;

  uv_run(loop, UV_RUN_NOWAIT);
  queued = proxy_dns_tcp_queued(d);
  ASSERT_LE(queued, PROXY_DNS_TCP_WRITES_MAX);
  return queued;
}

/*
 * A client pipelines thousands of minimal queries and does not read. Their 14-byte
 * answers are each a write request of their own once the kernel's buffers are full,
 * and capping the queued bytes alone let about 290 pile up: the responder must stop
 * reading at PROXY_DNS_TCP_WRITES_MAX requests, and still answer every query, in
 * order, when the client reads. The client and the responder share this thread, so
 * the queue is checked after every loop iteration without racing the loop.
 */
TEST(tcp_write_requests_capped)
{
  static uint8_t queries[TINY_FLOOD * TINY_QUERY];
  struct proxy_dns_table *t = proxy_dns_table_new(10, "tiny", 0);
  struct proxy_dns *d;
  struct sockaddr_in sin = { .sin_family = AF_INET };
  uint8_t in[4096];
  size_t sent = 0, have = 0, answers = 0, queued, max_queued = 0;
  uint64_t seen = UINT64_MAX;
  uv_loop_t loop;
  uint16_t port;
  int tcp, fd, small = 4096, calls = 0, quiet = 0, i;

  ASSERT_NOT_NULL(t);
  for (i = 0; i < TINY_FLOOD; i++) {
    uint8_t *q = queries + (size_t)i * TINY_QUERY;

    memset(q, 0, TINY_QUERY);
    q[1] = TINY_QUERY - 2;
    q[2] = (uint8_t)(i >> 8), q[3] = (uint8_t)i;
    q[4] = 0x01; /* RD */
  }
  /* Small buffers on both sides (accepted sockets inherit the listener's send
   * buffer), so the kernel fills up long before the client is done sending. */
  tcp = bound_socket(AF_INET, SOCK_STREAM, &port);
  ASSERT_GE(tcp, 0);
  ASSERT_EQ(setsockopt(tcp, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  ASSERT_EQ(uv_loop_init(&loop), 0);
  ASSERT_EQ(proxy_dns_start(&loop, t, NULL, -1, tcp, -1, -1, &d), 0);
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons(port);
  /* The kernel completes the handshake on the listening socket by itself. */
  ASSERT_EQ(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
  ASSERT_EQ(fcntl(fd, F_SETFL, O_NONBLOCK), 0);

  /* Send without reading until the queue reaches its cap, where the responder stops
   * reading, or until neither side has moved for 1000 iterations (a responder that
   * stops short of the cap, or never queues at all: the checks below catch those). */
  for (i = 0; i < 100000 && quiet < 1000 && max_queued < PROXY_DNS_TCP_WRITES_MAX; i++) {
    size_t n = send_some(fd, queries + sent, sizeof(queries) - sent);

    sent += n;
    queued = step(&loop, d);
    if (queued > max_queued)
      max_queued = queued;
    if (n > 0 || proxy_dns_stats(d)->queries != seen)
      quiet = 0;
    else
      quiet++;
    seen = proxy_dns_stats(d)->queries;
  }
  printf("%zu of %d queries sent and %" PRIu64 " answered before the client read; at "
         "most %zu write requests queued (cap %d)\n",
         sent / TINY_QUERY, TINY_FLOOD, seen, max_queued, PROXY_DNS_TCP_WRITES_MAX);
  /* Not vacuous: the kernel's buffers filled and answers did queue in user space. */
  ASSERT_GE(max_queued, 1);
  ASSERT_LT(seen, TINY_FLOOD);

  /* Read everything: each answer is a header-only FORMERR for its query, in order. */
  for (i = 0; i < 1000000 && answers < TINY_FLOOD; i++) {
    ssize_t n;
    size_t off = 0;

    sent += send_some(fd, queries + sent, sizeof(queries) - sent);
    n = recv(fd, in + have, sizeof(in) - have, 0);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      TEST_FAIL_("recv: %s", strerror(errno));
    if (n == 0)
      TEST_FAIL_("EOF after %zu answers", answers);
    if (n > 0)
      have += (size_t)n;
    for (; have - off >= TINY_QUERY; off += TINY_QUERY, answers++) {
      const uint8_t *a = in + off;

      ASSERT_EQ(a[0] << 8 | a[1], 12);
      ASSERT_EQ(a[2] << 8 | a[3], answers);
      ASSERT(a[4] & 0x80);
      ASSERT_EQ(a[5] & 0x0f, PROXY_DNS_RCODE_FORMERR);
    }
    memmove(in, in + off, have - off);
    have -= off;
    queued = step(&loop, d);
    if (queued > max_queued)
      max_queued = queued;
  }
  ASSERT_EQ(answers, TINY_FLOOD);
  ASSERT_EQ(have, 0);
  /* Write callbacks run on the iteration after the write; the queue then empties. */
  for (i = 0; i < 100 && proxy_dns_tcp_queued(d) > 0; i++)
    step(&loop, d);
  ASSERT_EQ(proxy_dns_tcp_queued(d), 0);
  ASSERT_EQ(proxy_dns_stats(d)->queries, TINY_FLOOD);
  ASSERT_EQ(proxy_dns_stats(d)->dropped, 0);

  close(fd);
  proxy_dns_close(d, noop_cb, &calls);
  ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
  ASSERT_EQ(calls, 1);
  test_loop_close(&loop);
  proxy_dns_table_free(t);
}

/* Closing while a TCP client is connected (and one is mid-message) still closes
 * every handle and calls back once. */
static int held_fds[2] = { -1, -1 };

static void hold_client(struct env *e)
{
  struct answer a;

  held_fds[0] = client_socket(e, SOCK_STREAM, e->tcp_port);
  tcp_ask(held_fds[0], 1, "held.example", &a);
  held_fds[1] = client_socket(e, SOCK_STREAM, e->tcp_port);
  ASSERT_EQ(send(held_fds[1], "\x00\x30\x12", 3, 0), 3);
  tcp_ask(held_fds[0], 2, "held.example", &a); /* the second one is accepted by now */
}

TEST(close_with_clients_connected)
{
  struct env e = { 0 };

  run(&e, AF_INET, NULL, 10, hold_client);
  expect_closed(held_fds[0]);
  expect_closed(held_fds[1]);
  close(held_fds[0]);
  close(held_fds[1]);
  proxy_dns_table_free(e.table);
}

/* ---- start errors ---- */

TEST(start_rejects_bad_sockets)
{
  struct proxy_dns_table *t = proxy_dns_table_new(10, "k", 0);
  struct proxy_dns *d = (struct proxy_dns *)(uintptr_t)1; /* must be reset */
  uv_loop_t loop;
  uint16_t port;
  int udp, tcp, calls = 0;

  ASSERT_EQ(uv_loop_init(&loop), 0);
  ASSERT_EQ(proxy_dns_start(&loop, t, NULL, -1, -1, -1, -1, &d), -EINVAL);
  ASSERT_NULL(d);

  /* A TCP socket where the UDP one belongs: refused, and both sockets are closed. */
  udp = bound_socket(AF_INET, SOCK_DGRAM, &port);
  tcp = bound_socket(AF_INET, SOCK_STREAM, &port);
  ASSERT_EQ(proxy_dns_start(&loop, t, NULL, tcp, udp, -1, -1, &d), -EINVAL);
  ASSERT_NULL(d);
  ASSERT_EQ(fcntl(udp, F_GETFD), -1);
  ASSERT_EQ(fcntl(tcp, F_GETFD), -1);

  /* The second pair is wrong after the first was served: the first is closed too. */
  udp = bound_socket(AF_INET, SOCK_DGRAM, &port);
  tcp = bound_socket(AF_INET, SOCK_STREAM, &port);
  ASSERT_EQ(proxy_dns_start(&loop, t, NULL, udp, tcp, tcp + 1000, -1, &d), -EBADF);
  ASSERT_NULL(d);
  test_loop_close(&loop);
  ASSERT_EQ(fcntl(udp, F_GETFD), -1);
  ASSERT_EQ(fcntl(tcp, F_GETFD), -1);

  proxy_dns_close(NULL, noop_cb, &calls);
  ASSERT_EQ(calls, 1);
  proxy_dns_table_free(t);
}
