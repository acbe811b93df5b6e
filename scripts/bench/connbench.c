/*
 * connbench: the load generator for what wrk cannot measure. Built by
 * scripts/bench/run.sh with the system OpenSSL (libssl-dev); not part of the product
 * or of CI.
 *
 *   connbench rate  -a HOST:PORT [-s SNI] [-H HOST] [-p PATH] [--tls] [--resume]
 *                   [--keep-alive] [-c CONNS] [-d SECONDS] [-n REQUESTS]
 *       CONNS threads sending requests for SECONDS (or until REQUESTS in all). Without
 *       --keep-alive each request has a new connection, closed by the client once the
 *       response is read (as curl does; the request does not say Connection: close),
 *       optionally resuming the TLS session of the thread's previous connection. Prints
 *       one JSON line: requests per second, latency percentiles, resumed count.
 *
 *   connbench idle  -a HOST:PORT [-s SNI] [-H HOST] [-p PATH] [--tls] -n N
 *       Opens N keep-alive connections one after the other, sends one request on each
 *       and reads its response (so a proxy has dialed and set up both sides), keeps
 *       the sockets open (the TLS state is freed on our side, silently), prints
 *       "ready N" and waits for standard input to close.
 *
 *   connbench mint  -f SNI_FORMAT -n N -a HOST:PORT
 *       N TLS handshakes (and nothing else), each to the name printf(SNI_FORMAT, i),
 *       resolved and sent as SNI, to PORT. Prints the handshake time percentiles. Run
 *       twice over the same names: the difference is what a proxy spends on a name
 *       it sees for the first time.
 *
 *   connbench pingpong -n N CPU_A CPU_B
 *       One byte back and forth N times over a socket pair between threads pinned to
 *       two CPUs: the cost of a wakeup across CPUs on this machine (or on one CPU).
 *
 * HOST is resolved with getaddrinfo once (the benchmark's namespaces point it at
 * /etc/hosts or at authproxy's DNS responder). Certificates are not verified: this
 * is a load generator, like wrk.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

struct opts {
  const char *mode;
  char host[256];
  char port[16];
  const char *sni;
  const char *host_header;
  const char *path;
  const char *sni_format;
  int tls;
  int resume;
  int keep_alive;
  int conns;
  int seconds;
  int count;
  uint64_t requests;          /* rate: stop after this many in all (0: no limit) */
};

struct samples {
  uint64_t *v;
  size_t n, cap;
};

struct worker {
  pthread_t thread;
  const struct opts *o;
  struct sockaddr_storage addr;
  socklen_t addrlen;
  SSL_CTX *ctx;
  uint64_t deadline_us;
  uint64_t quota;             /* requests this worker sends; 0: until the deadline */
  struct samples lat;
  uint64_t errors;
  uint64_t resumed;
  uint64_t bytes;
};

static uint64_t now_us(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int samples_add(struct samples *s, uint64_t v)
{
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 4096;
    uint64_t *p = realloc(s->v, cap * sizeof(*p));

    if (p == NULL)
      return -ENOMEM;
    s->v = p;
    s->cap = cap;
  }
  s->v[s->n++] = v;
  return 0;
}

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

  return x < y ? -1 : x > y;
}

/* The p-th percentile of sorted samples (nearest rank). */
static uint64_t percentile(const struct samples *s, double p)
{
  size_t i;

  if (s->n == 0)
    return 0;
  i = (size_t)(p / 100.0 * (double)s->n);
  if (i >= s->n)
    i = s->n - 1;
  return s->v[i];
}

static int resolve(const struct opts *o, struct sockaddr_storage *ss, socklen_t *len)
{
  struct addrinfo hints, *res = NULL;
  int r;

  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  r = getaddrinfo(o->host, o->port, &hints, &res);
  if (r != 0) {
    fprintf(stderr, "connbench: cannot resolve %s: %s\n", o->host, gai_strerror(r));
    return -1;
  }
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

static int dial(const struct sockaddr_storage *ss, socklen_t len)
{
  int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

  if (fd < 0)
    return -1;
  if (connect(fd, (const struct sockaddr *)ss, len) != 0) {
    close(fd);
    return -1;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

/* One I/O abstraction over a plain socket or a TLS session. */
struct link {
  int fd;
  SSL *ssl;
};

static int link_write(struct link *l, const char *p, size_t len)
{
  while (len > 0) {
    ssize_t n = l->ssl ? SSL_write(l->ssl, p, (int)len) : write(l->fd, p, len);

    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static ssize_t link_read(struct link *l, char *p, size_t len)
{
  if (l->ssl != NULL) {
    int n = SSL_read(l->ssl, p, (int)len);

    if (n > 0)
      return n;
    return SSL_get_error(l->ssl, n) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
  }
  return read(l->fd, p, len);
}

/*
 * Reads one response: with close, until EOF; else through the head and
 * Content-Length bytes of body. Returns the bytes read, or -1 (error or not 2xx).
 */
static long long read_response(struct link *l, int until_eof)
{
  char buf[65536];
  size_t have = 0;
  long long total = 0, body_len = -1, head_len = -1;
  ssize_t n;

  for (;;) {
    if (!until_eof && head_len >= 0 && total >= head_len + body_len)
      break;
    n = link_read(l, buf + have, sizeof(buf) - have);
    if (n == 0)
      break;
    if (n < 0)
      return -1;
    total += n;
    if (head_len < 0) {
      char *end;

      have += (size_t)n;
      end = memmem(buf, have, "\r\n\r\n", 4);
      if (end == NULL) {
        if (have == sizeof(buf))
          return -1;
        continue;
      }
      head_len = end + 4 - buf;
      if (have < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[9] != '2')
        return -1;
      for (char *p = buf; p < end; p++) {
        if (p[0] == '\n' && strncasecmp(p + 1, "content-length:", 15) == 0) {
          body_len = strtoll(p + 16, NULL, 10);
          break;
        }
      }
      if (body_len < 0 && !until_eof)
        return -1;
      have = 0;
    } else {
      have = 0;
    }
  }
  if (head_len < 0 || (body_len >= 0 && total != head_len + body_len))
    return -1;
  return total;
}

static int format_request(const struct opts *o, char *buf, size_t size)
{
  int n = snprintf(buf, size, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: connbench\r\n"
                   "Accept: */*\r\n\r\n", o->path, o->host_header);

  return n > 0 && (size_t)n < size ? n : -1;
}

static SSL_CTX *client_ctx(void)
{
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

  if (ctx == NULL)
    return NULL;
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  /* Sessions are kept by hand, per worker, so resumption is exactly what --resume
   * asks for and nothing else. */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  return ctx;
}

/* Connects and handshakes; with sess, offers it. Returns 0 or -1. */
static int open_link(const struct worker *w, const char *sni, SSL_SESSION *sess,
                     struct link *l)
{
  l->ssl = NULL;
  l->fd = dial(&w->addr, w->addrlen);
  if (l->fd < 0)
    return -1;
  if (!w->o->tls)
    return 0;
  l->ssl = SSL_new(w->ctx);
  if (l->ssl == NULL)
    goto fail;
  SSL_set_fd(l->ssl, l->fd);
  SSL_set_tlsext_host_name(l->ssl, sni);
  if (sess != NULL)
    SSL_set_session(l->ssl, sess);
  if (SSL_connect(l->ssl) != 1)
    goto fail;
  return 0;
fail:
  if (l->ssl != NULL)
    SSL_free(l->ssl);
  l->ssl = NULL;
  close(l->fd);
  l->fd = -1;
  return -1;
}

static void close_link(struct link *l)
{
  if (l->ssl != NULL) {
    /* A session not shut down is marked not resumable by OpenSSL. */
    SSL_shutdown(l->ssl);
    SSL_free(l->ssl);
  }
  if (l->fd >= 0)
    close(l->fd);
}

static void *rate_worker(void *arg)
{
  struct worker *w = arg;
  const struct opts *o = w->o;
  SSL_SESSION *sess = NULL;
  struct link l = { -1, NULL };
  char req[1024];
  int req_len = format_request(o, req, sizeof(req));
  uint64_t sent = 0;

  while (now_us() < w->deadline_us && (w->quota == 0 || sent < w->quota)) {
    uint64_t t0 = now_us();
    long long got;

    sent++;
    if (l.fd < 0 && open_link(w, o->sni, o->resume ? sess : NULL, &l) != 0) {
      w->errors++;
      continue;
    }
    got = -1;
    if (link_write(&l, req, (size_t)req_len) == 0)
      got = read_response(&l, 0);
    if (got < 0) {
      w->errors++;
      close_link(&l);
      l.fd = -1;
      continue;
    }
    w->bytes += (uint64_t)got;
    if (!o->keep_alive) {
      if (l.ssl != NULL && o->resume) {
        if (SSL_session_reused(l.ssl))
          w->resumed++;
        /* TLS 1.3 tickets arrive after the handshake: take the session now. */
        SSL_SESSION_free(sess);
        sess = SSL_get1_session(l.ssl);
      }
      close_link(&l);
      l.fd = -1;
    }
    samples_add(&w->lat, now_us() - t0);
  }
  if (l.fd >= 0)
    close_link(&l);
  SSL_SESSION_free(sess);
  return NULL;
}

static int run_rate(const struct opts *o, SSL_CTX *ctx)
{
  struct worker *ws = calloc((size_t)o->conns, sizeof(*ws));
  struct samples all = { 0 };
  uint64_t start, elapsed, errors = 0, resumed = 0, bytes = 0;
  int i;

  if (ws == NULL)
    return 1;
  start = now_us();
  for (i = 0; i < o->conns; i++) {
    ws[i].o = o;
    ws[i].ctx = ctx;
    ws[i].deadline_us = start + (uint64_t)o->seconds * 1000000u;
    if (o->requests > 0)
      ws[i].quota = o->requests / (uint64_t)o->conns + ((uint64_t)i < o->requests % (uint64_t)o->conns);
    if (resolve(o, &ws[i].addr, &ws[i].addrlen) != 0)
      return 1;
    pthread_create(&ws[i].thread, NULL, rate_worker, &ws[i]);
  }
  for (i = 0; i < o->conns; i++) {
    pthread_join(ws[i].thread, NULL);
    for (size_t k = 0; k < ws[i].lat.n; k++)
      samples_add(&all, ws[i].lat.v[k]);
    errors += ws[i].errors;
    resumed += ws[i].resumed;
    bytes += ws[i].bytes;
    free(ws[i].lat.v);
  }
  elapsed = now_us() - start;
  qsort(all.v, all.n, sizeof(*all.v), cmp_u64);
  printf("{\"requests\":%zu,\"duration_us\":%llu,\"rate\":%.1f,\"p50_us\":%llu,"
         "\"p99_us\":%llu,\"errors\":%llu,\"resumed\":%llu,\"bytes\":%llu}\n",
         all.n, (unsigned long long)elapsed, (double)all.n * 1e6 / (double)elapsed,
         (unsigned long long)percentile(&all, 50), (unsigned long long)percentile(&all, 99),
         (unsigned long long)errors, (unsigned long long)resumed, (unsigned long long)bytes);
  free(all.v);
  free(ws);
  return errors * 100 > all.n + errors ? 1 : 0;
}

static int run_idle(const struct opts *o, SSL_CTX *ctx)
{
  struct worker w;
  char req[1024], c;
  int req_len = format_request(o, req, sizeof(req)), *fds, i, opened = 0;

  memset(&w, 0, sizeof(w));
  w.o = o;
  w.ctx = ctx;
  if (resolve(o, &w.addr, &w.addrlen) != 0)
    return 1;
  fds = calloc((size_t)o->count, sizeof(*fds));
  if (fds == NULL)
    return 1;
  for (i = 0; i < o->count; i++) {
    struct link l;

    if (open_link(&w, o->sni, NULL, &l) != 0) {
      fprintf(stderr, "connbench: connection %d failed: %s\n", i, strerror(errno));
      break;
    }
    if (link_write(&l, req, (size_t)req_len) != 0 || read_response(&l, 0) < 0) {
      fprintf(stderr, "connbench: request on connection %d failed\n", i);
      close_link(&l);
      break;
    }
    /* Keep the socket, drop our TLS state without a word to the peer. */
    if (l.ssl != NULL) {
      SSL_set_quiet_shutdown(l.ssl, 1);
      SSL_free(l.ssl);
    }
    fds[opened++] = l.fd;
  }
  printf("ready %d\n", opened);
  fflush(stdout);
  while (read(0, &c, 1) > 0)
    ;
  for (i = 0; i < opened; i++)
    close(fds[i]);
  free(fds);
  return opened == o->count ? 0 : 1;
}

static int run_mint(const struct opts *o, SSL_CTX *ctx)
{
  struct worker w;
  struct opts one = *o;
  struct samples lat = { 0 };
  char sni[256];
  int i, errors = 0;

  memset(&w, 0, sizeof(w));
  w.o = o;
  w.ctx = ctx;
  for (i = 0; i < o->count; i++) {
    struct link l;
    uint64_t t0;

    snprintf(sni, sizeof(sni), o->sni_format, i);
    /* Each name has its own address behind a proxy's DNS responder; resolving is
     * not part of the handshake being timed. */
    snprintf(one.host, sizeof(one.host), "%s", sni);
    if (resolve(&one, &w.addr, &w.addrlen) != 0) {
      errors++;
      continue;
    }
    t0 = now_us();
    if (open_link(&w, sni, NULL, &l) != 0) {
      errors++;
      continue;
    }
    samples_add(&lat, now_us() - t0);
    close_link(&l);
  }
  qsort(lat.v, lat.n, sizeof(*lat.v), cmp_u64);
  printf("{\"requests\":%zu,\"p50_us\":%llu,\"p99_us\":%llu,\"errors\":%d}\n", lat.n,
         (unsigned long long)percentile(&lat, 50), (unsigned long long)percentile(&lat, 99),
         errors);
  free(lat.v);
  return errors > 0;
}

struct pong {
  int fd;
  int cpu;
};

static int pin(int cpu)
{
  cpu_set_t set;

  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *pong_thread(void *arg)
{
  struct pong *p = arg;
  char b;

  pin(p->cpu);
  while (read(p->fd, &b, 1) == 1)
    if (write(p->fd, &b, 1) != 1)
      break;
  return NULL;
}

static int run_pingpong(int n, int cpu_a, int cpu_b)
{
  struct pong p;
  pthread_t th;
  int sv[2], i;
  uint64_t t0;
  char b = 'x';

  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
    return 1;
  p.fd = sv[1];
  p.cpu = cpu_b;
  pin(cpu_a);
  pthread_create(&th, NULL, pong_thread, &p);
  /* Warm up both threads on their CPUs before timing. */
  for (i = 0; i < 100; i++)
    if (write(sv[0], &b, 1) != 1 || read(sv[0], &b, 1) != 1)
      return 1;
  t0 = now_us();
  for (i = 0; i < n; i++)
    if (write(sv[0], &b, 1) != 1 || read(sv[0], &b, 1) != 1)
      return 1;
  printf("{\"round_trip_us\":%.1f}\n", (double)(now_us() - t0) / n);
  close(sv[0]);
  pthread_join(th, NULL);
  close(sv[1]);
  return 0;
}

static void usage(void)
{
  fprintf(stderr,
          "usage: connbench rate|idle|mint -a HOST:PORT [-s SNI] [-H HOST] [-p PATH]\n"
          "                 [--tls] [--resume] [--keep-alive] [-c CONNS] [-d SECONDS]\n"
          "                 [-n N] [-f SNI_FMT]\n"
          "       connbench pingpong -n N CPU_A CPU_B\n");
}

int main(int argc, char **argv)
{
  static const struct option long_opts[] = {
    { "tls", no_argument, NULL, 't' },
    { "resume", no_argument, NULL, 'r' },
    { "keep-alive", no_argument, NULL, 'k' },
    { NULL, 0, NULL, 0 },
  };
  struct opts o;
  struct rlimit rl;
  SSL_CTX *ctx;
  const char *colon;
  int c, ret;

  memset(&o, 0, sizeof(o));
  o.path = "/";
  o.conns = 1;
  o.seconds = 5;
  o.count = 1;
  if (argc < 2) {
    usage();
    return 2;
  }
  o.mode = argv[1];
  optind = 2;
  while ((c = getopt_long(argc, argv, "a:s:H:p:c:d:n:f:", long_opts, NULL)) != -1) {
    switch (c) {
    case 'a':
      colon = strrchr(optarg, ':');
      if (colon == NULL || (size_t)(colon - optarg) >= sizeof(o.host) ||
          strlen(colon + 1) >= sizeof(o.port)) {
        usage();
        return 2;
      }
      memcpy(o.host, optarg, (size_t)(colon - optarg));
      snprintf(o.port, sizeof(o.port), "%s", colon + 1);
      break;
    case 's': o.sni = optarg; break;
    case 'H': o.host_header = optarg; break;
    case 'p': o.path = optarg; break;
    case 'c': o.conns = atoi(optarg); break;
    case 'd': o.seconds = atoi(optarg); break;
    case 'n':
      o.count = atoi(optarg);
      o.requests = strtoull(optarg, NULL, 10);
      break;
    case 'f': o.sni_format = optarg; break;
    case 't': o.tls = 1; break;
    case 'r': o.resume = 1; break;
    case 'k': o.keep_alive = 1; break;
    default: usage(); return 2;
    }
  }
  if (strcmp(o.mode, "pingpong") == 0) {
    if (optind + 2 != argc || o.count < 1) {
      usage();
      return 2;
    }
    return run_pingpong(o.count, atoi(argv[optind]), atoi(argv[optind + 1]));
  }
  if (o.host[0] == '\0' || o.conns < 1 || o.seconds < 1 || o.count < 1) {
    usage();
    return 2;
  }
  if (o.sni == NULL)
    o.sni = o.host;
  if (o.host_header == NULL)
    o.host_header = o.sni;
  signal(SIGPIPE, SIG_IGN);
  /* Room for the idle mode's connections. */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  ctx = client_ctx();
  if (ctx == NULL) {
    ERR_print_errors_fp(stderr);
    return 1;
  }
  if (strcmp(o.mode, "rate") == 0) {
    ret = run_rate(&o, ctx);
  } else if (strcmp(o.mode, "idle") == 0) {
    ret = run_idle(&o, ctx);
  } else if (strcmp(o.mode, "mint") == 0 && o.sni_format != NULL) {
    o.tls = 1;
    ret = run_mint(&o, ctx);
  } else {
    usage();
    ret = 2;
  }
  SSL_CTX_free(ctx);
  return ret;
}
