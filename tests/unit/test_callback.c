/*
 * The credential callback client and cache (proxy/callback.c, callback_client.c).
 *
 * Each test runs a libuv loop with an in-process fake callback (a uv TCP server or a
 * uv_pipe on the same loop, so a test also shows the client never blocks the loop);
 * the https tests start tests/tools/fake_callback.py with certificates made by
 * openssl in the test's directory. Every test ends with test_loop_close: no handle
 * may be left open.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <uv.h>

#include "proxy/audit.h"
#include "proxy/callback.h"
#include "proxy/strbuf.h"
#include "rules/rules.h"
#include "test.h"

void test_loop_close(uv_loop_t *loop);

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- an in-process fake callback ------------------------------------------------ */

enum srv_mode {
  SRV_OK,    /* 200 with Authorization "Bearer cb-<n>" and X-Extra */
  SRV_RAW,   /* the bytes in srv.raw, as they are */
  SRV_HANG,  /* never answer */
  SRV_CLOSE, /* close without answering */
  SRV_SLOW,  /* SRV_OK after delay_ms */
};

union stream {
  uv_handle_t h;
  uv_stream_t s;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
};

struct sconn;

struct srv {
  uv_loop_t *loop;
  union stream l;
  int is_pipe;
  int listening;
  int port;
  enum srv_mode mode;
  char *raw;
  size_t raw_len;
  uint64_t delay_ms;
  int keep_open;         /* do not close after answering */
  const char *hang_host; /* SRV_OK: never answer calls for this host */
  int calls;             /* complete requests received */
  int conns;             /* connections accepted */
  int client_closed;     /* connections the client closed first */
  char last[16384];      /* the last complete request */
  size_t last_len;
  struct sconn *list;
};

struct sconn {
  union stream io;
  uv_timer_t timer;
  struct srv *srv;
  struct sconn *prev, *next;
  char buf[16384];
  size_t len;
  int got_request;
  int handles;
  int closing;
};

struct swrite {
  uv_write_t req;
  struct sconn *sc;
  char data[];
};

static void sconn_closed(uv_handle_t *h)
{
  struct sconn *sc = h->data;

  if (--sc->handles == 0)
    free(sc);
}

static void sconn_close(struct sconn *sc)
{
  struct srv *s = sc->srv;

  if (sc->closing)
    return;
  sc->closing = 1;
  if (sc->prev != NULL)
    sc->prev->next = sc->next;
  else
    s->list = sc->next;
  if (sc->next != NULL)
    sc->next->prev = sc->prev;
  uv_close(&sc->io.h, sconn_closed);
  uv_close((uv_handle_t *)&sc->timer, sconn_closed);
}

static void swrite_cb(uv_write_t *req, int status)
{
  struct swrite *w = container_of(req, struct swrite, req);
  struct sconn *sc = w->sc;

  free(w);
  if (status == 0 && !sc->closing && !sc->srv->keep_open)
    sconn_close(sc);
}

static void ssend(struct sconn *sc, const char *data, size_t len)
{
  struct swrite *w = malloc(sizeof(*w) + len);
  uv_buf_t b;

  ASSERT_NOT_NULL(w);
  w->sc = sc;
  memcpy(w->data, data, len);
  b = uv_buf_init(w->data, (unsigned)len);
  ASSERT_EQ(uv_write(&w->req, &sc->io.s, &b, 1, swrite_cb), 0);
}

static void answer_ok(struct sconn *sc)
{
  char body[256], msg[512];
  int n;

  snprintf(body, sizeof(body),
           "{\"headers\":{\"Authorization\":\"Bearer cb-%d\",\"X-Extra\":\"two\"}}",
           sc->srv->calls);
  n = snprintf(msg, sizeof(msg),
               "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               "Content-Length: %zu\r\n%s\r\n%s",
               strlen(body), sc->srv->keep_open ? "" : "Connection: close\r\n", body);
  ssend(sc, msg, (size_t)n);
}

static void slow_cb(uv_timer_t *t)
{
  answer_ok(t->data);
}

/* 1 when buf holds a whole request (head and Content-Length body). */
static int request_complete(const char *buf, size_t len)
{
  const char *end = memmem(buf, len, "\r\n\r\n", 4);
  const char *cl;
  size_t head, body = 0;

  if (end == NULL)
    return 0;
  head = (size_t)(end - buf) + 4;
  cl = memmem(buf, head, "\r\nContent-Length: ", 18);
  if (cl != NULL)
    body = strtoul(cl + 18, NULL, 10);
  return len >= head + body;
}

static void on_request(struct sconn *sc)
{
  struct srv *s = sc->srv;

  sc->got_request = 1;
  s->calls++;
  memcpy(s->last, sc->buf, sc->len);
  s->last[sc->len] = '\0';
  s->last_len = sc->len;
  switch (s->mode) {
  case SRV_OK:
    if (s->hang_host == NULL || strstr(sc->buf, s->hang_host) == NULL)
      answer_ok(sc);
    break;
  case SRV_RAW:
    ssend(sc, s->raw, s->raw_len);
    break;
  case SRV_HANG:
    break;
  case SRV_CLOSE:
    sconn_close(sc);
    break;
  case SRV_SLOW:
    uv_timer_start(&sc->timer, slow_cb, s->delay_ms, 0);
    break;
  }
}

static void salloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct sconn *sc = h->data;

  (void)suggested;
  *buf = uv_buf_init(sc->buf + sc->len, (unsigned)(sizeof(sc->buf) - 1 - sc->len));
}

static void sread(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
  struct sconn *sc = st->data;

  (void)buf;
  if (n < 0) {
    sc->srv->client_closed++;
    sconn_close(sc);
    return;
  }
  sc->len += (size_t)n;
  if (!sc->got_request && request_complete(sc->buf, sc->len))
    on_request(sc);
  else if (sc->len >= sizeof(sc->buf) - 1)
    sconn_close(sc);
}

static void on_conn(uv_stream_t *l, int status)
{
  struct srv *s = l->data;
  struct sconn *sc;

  ASSERT_EQ(status, 0);
  sc = calloc(1, sizeof(*sc));
  ASSERT_NOT_NULL(sc);
  sc->srv = s;
  if (s->is_pipe)
    ASSERT_EQ(uv_pipe_init(s->loop, &sc->io.pipe, 0), 0);
  else
    ASSERT_EQ(uv_tcp_init(s->loop, &sc->io.tcp), 0);
  sc->io.h.data = sc;
  ASSERT_EQ(uv_timer_init(s->loop, &sc->timer), 0);
  sc->timer.data = sc;
  sc->handles = 2;
  sc->next = s->list;
  if (s->list != NULL)
    s->list->prev = sc;
  s->list = sc;
  ASSERT_EQ(uv_accept(l, &sc->io.s), 0);
  s->conns++;
  ASSERT_EQ(uv_read_start(&sc->io.s, salloc, sread), 0);
}

static void srv_listen_tcp(struct srv *s, uv_loop_t *loop)
{
  struct sockaddr_storage ss;
  struct sockaddr_in sin;
  int len = sizeof(ss);

  s->loop = loop;
  ASSERT_EQ(uv_tcp_init(loop, &s->l.tcp), 0);
  s->l.h.data = s;
  ASSERT_EQ(uv_ip4_addr("127.0.0.1", 0, &sin), 0);
  ASSERT_EQ(uv_tcp_bind(&s->l.tcp, (const struct sockaddr *)&sin, 0), 0);
  ASSERT_EQ(uv_listen(&s->l.s, 128, on_conn), 0);
  ASSERT_EQ(uv_tcp_getsockname(&s->l.tcp, (struct sockaddr *)&ss, &len), 0);
  s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  s->listening = 1;
}

static void srv_listen_pipe(struct srv *s, uv_loop_t *loop, const char *path)
{
  s->loop = loop;
  s->is_pipe = 1;
  ASSERT_EQ(uv_pipe_init(loop, &s->l.pipe, 0), 0);
  s->l.h.data = s;
  ASSERT_EQ(uv_pipe_bind(&s->l.pipe, path), 0);
  ASSERT_EQ(uv_listen(&s->l.s, 128, on_conn), 0);
  s->listening = 1;
}

static void srv_close(struct srv *s)
{
  while (s->list != NULL)
    sconn_close(s->list);
  if (s->listening)
    uv_close(&s->l.h, NULL);
  s->listening = 0;
  free(s->raw);
  s->raw = NULL;
}

/* A raw answer with a correct Content-Length: status line, extra header lines, body. */
static void srv_answer(struct srv *s, const char *status, const char *extra, const char *body)
{
  struct strbuf b;

  strbuf_init(&b);
  strbuf_addf(&b, "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                  "Connection: close\r\n%s\r\n%s", status, strlen(body), extra, body);
  ASSERT(!b.oom);
  free(s->raw);
  s->raw_len = b.len;
  s->raw = strbuf_take(&b);
  s->mode = SRV_RAW;
}

/* A raw answer sent exactly as given. */
static void srv_raw(struct srv *s, const char *raw, size_t len)
{
  free(s->raw);
  s->raw = malloc(len + 1);
  ASSERT_NOT_NULL(s->raw);
  memcpy(s->raw, raw, len);
  s->raw[len] = '\0';
  s->raw_len = len;
  s->mode = SRV_RAW;
}

/* ---- fixture ----------------------------------------------------------------------- */

struct fx {
  uv_loop_t loop;
  struct srv srv;
  uv_timer_t guard;
  uv_timer_t sleep;
  int guard_fired;
  int slept;
  struct rules_config *cfg;
  const struct rules_callback *cb;
  struct proxy_cred_cache *cache;
  struct proxy_cred_stats stats;
};

/* Answers recorded by on_res; g_done counts every answer of the test. */
struct res {
  int n;
  int status;
  const char *reason;
  size_t nheaders;
  char name[4][64];
  char value[4][128];
  int keep;                      /* take a reference to the creds */
  struct proxy_creds *kept;
  struct proxy_cred_cache *reenter; /* call proxy_cred_get on it from the callback */
  const struct rules_callback *reenter_cfg;
  int reenter_ret;
  struct proxy_cred_cache **free_cache; /* free *free_cache from the callback */
};

static int g_done;

static void on_res(void *arg, int status, const char *reason, struct proxy_creds *cr)
{
  struct res *r = arg;
  size_t i;

  r->n++;
  g_done++;
  r->status = status;
  r->reason = reason;
  if (status == 0) {
    ASSERT_NOT_NULL(cr);
    ASSERT_NULL(reason);
    r->nheaders = cr->nheaders;
    for (i = 0; i < cr->nheaders && i < 4; i++) {
      snprintf(r->name[i], sizeof(r->name[i]), "%s", cr->headers[i].name);
      snprintf(r->value[i], sizeof(r->value[i]), "%s", cr->headers[i].value);
      ASSERT_EQ(strlen(cr->headers[i].value), cr->headers[i].value_len);
    }
    if (r->keep)
      r->kept = proxy_creds_ref(cr);
  } else {
    ASSERT_NULL(cr);
    ASSERT_NOT_NULL(reason);
  }
  if (r->reenter != NULL) {
    struct proxy_cred_wait *w = (struct proxy_cred_wait *)1;
    struct res other;

    memset(&other, 0, sizeof(other));
    r->reenter_ret = proxy_cred_get(r->reenter, r->reenter_cfg, "again.corp.example", 443,
                                    on_res, &other, &w);
    ASSERT_NULL(w);
    ASSERT_EQ(other.n, 0);
  }
  if (r->free_cache != NULL && *r->free_cache != NULL) {
    proxy_cred_cache_free(*r->free_cache);
    *r->free_cache = NULL;
  }
}

static void guard_cb(uv_timer_t *t)
{
  struct fx *f = t->data;

  f->guard_fired = 1;
}

static void sleep_cb(uv_timer_t *t)
{
  struct fx *f = t->data;

  f->slept = 1;
}

static void fx_init(struct fx *f)
{
  memset(f, 0, sizeof(*f));
  g_done = 0;
  ASSERT_EQ(uv_loop_init(&f->loop), 0);
  ASSERT_EQ(uv_timer_init(&f->loop, &f->guard), 0);
  f->guard.data = f;
  ASSERT_EQ(uv_timer_init(&f->loop, &f->sleep), 0);
  f->sleep.data = f;
}

static struct rules_config *parse_cfg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A config whose callback object is fmt (printf-style). */
static struct rules_config *parse_cfg(const char *fmt, ...)
{
  struct rules_config *cfg = NULL;
  struct rules_diag d;
  char cb[4096], json[4200];
  va_list ap;
  size_t i;

  va_start(ap, fmt);
  vsnprintf(cb, sizeof(cb), fmt, ap);
  va_end(ap);
  snprintf(json, sizeof(json), "{\"callback\": %s}", cb);
  rules_diag_init(&d);
  if (rules_config_parse(json, strlen(json), "", NULL, &cfg, &d) != 0) {
    for (i = 0; i < d.count; i++)
      fprintf(stderr, "config: %s: %s\n", d.entries[i].path, d.entries[i].message);
    TEST_FAIL_("config rejected: %s", json);
  }
  rules_diag_free(&d);
  ASSERT_NOT_NULL(rules_config_callback(cfg));
  return cfg;
}

/* The standard http callback on the in-process server: ttl and timeout given. */
static void fx_http_cfg(struct fx *f, unsigned ttl, unsigned timeout_ms)
{
  f->cfg = parse_cfg("{\"url\": \"http://127.0.0.1:%d/creds?tenant=qs-secret\", "
                     "\"match_hosts\": [\"*.corp.example\"], \"ttl_seconds\": %u, "
                     "\"timeout_ms\": %u, \"headers\": [{\"name\": \"X-Callback-Auth\", "
                     "\"type\": \"plaintext\", \"value\": \"cb-secret\"}]}",
                     f->srv.port, ttl, timeout_ms);
  f->cb = rules_config_callback(f->cfg);
}

static void fx_cache(struct fx *f, const struct proxy_cred_opts *opts)
{
  struct proxy_cred_opts o;

  memset(&o, 0, sizeof(o));
  if (opts != NULL)
    o = *opts;
  if (o.stats == NULL)
    o.stats = &f->stats;
  ASSERT_EQ(proxy_cred_cache_new(&f->loop, "sb1", &o, &f->cache), 0);
}

/* The common case: server on TCP in mode m, http callback, default cache. */
static void fx_start(struct fx *f, enum srv_mode m, unsigned ttl, unsigned timeout_ms)
{
  fx_init(f);
  srv_listen_tcp(&f->srv, &f->loop);
  f->srv.mode = m;
  fx_http_cfg(f, ttl, timeout_ms);
  fx_cache(f, NULL);
}

static void run_until(struct fx *f, const int *counter, int target)
{
  f->guard_fired = 0;
  uv_timer_start(&f->guard, guard_cb, 10000, 0);
  while (*counter < target) {
    if (f->guard_fired)
      TEST_FAIL_("timed out after 10 s waiting for %d events (have %d)", target, *counter);
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  uv_timer_stop(&f->guard);
}

static void run_for(struct fx *f, uint64_t ms)
{
  f->slept = 0;
  uv_timer_start(&f->sleep, sleep_cb, ms, 0);
  run_until(f, &f->slept, 1);
}

static void fx_done(struct fx *f)
{
  proxy_cred_cache_free(f->cache);
  f->cache = NULL;
  srv_close(&f->srv);
  uv_close((uv_handle_t *)&f->guard, NULL);
  uv_close((uv_handle_t *)&f->sleep, NULL);
  test_loop_close(&f->loop);
  rules_config_unref(f->cfg);
}

/* Starts a lookup that must wait (no cached answer). */
static struct proxy_cred_wait *get_wait(struct fx *f, const char *host, uint16_t port,
                                        struct res *r)
{
  struct proxy_cred_wait *w = NULL;

  ASSERT_EQ(proxy_cred_get(f->cache, f->cb, host, port, on_res, r, &w), 0);
  ASSERT_NOT_NULL(w);
  ASSERT_EQ(r->n, 0);
  return w;
}

/* One lookup to completion. */
static void get_sync(struct fx *f, const char *host, uint16_t port, struct res *r)
{
  struct proxy_cred_wait *w = NULL;
  int before = r->n;

  ASSERT_EQ(proxy_cred_get(f->cache, f->cb, host, port, on_res, r, &w), 0);
  if (w == NULL) {
    ASSERT_EQ(r->n, before + 1);
    return;
  }
  run_until(f, &r->n, before + 1);
}

static const char *srv_header(const struct srv *s, const char *line)
{
  return strstr(s->last, line);
}

/* ---- success, request format ----------------------------------------------------- */

TEST(success_request_format)
{
  struct fx f;
  struct res r;
  char host[64], cl[64];
  const char *body;

  fx_start(&f, SRV_OK, 300, 2000);
  memset(&r, 0, sizeof(r));
  get_wait(&f, "api.corp.example", 443, &r);
  run_until(&f, &r.n, 1);

  ASSERT_EQ(r.status, 0);
  ASSERT_EQ(r.nheaders, 2);
  ASSERT_STREQ(r.name[0], "Authorization");
  ASSERT_STREQ(r.value[0], "Bearer cb-1");
  ASSERT_STREQ(r.name[1], "X-Extra");
  ASSERT_STREQ(r.value[1], "two");

  ASSERT_EQ(f.srv.calls, 1);
  ASSERT_EQ(strncmp(f.srv.last, "POST /creds?tenant=qs-secret HTTP/1.1\r\n", 39), 0);
  snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%d\r\n", f.srv.port);
  ASSERT_NOT_NULL(srv_header(&f.srv, host));
  ASSERT_NOT_NULL(srv_header(&f.srv, "\r\nContent-Type: application/json\r\n"));
  ASSERT_NOT_NULL(srv_header(&f.srv, "\r\nConnection: close\r\n"));
  ASSERT_NOT_NULL(srv_header(&f.srv, "\r\nX-Callback-Auth: cb-secret\r\n"));
  body = strstr(f.srv.last, "\r\n\r\n") + 4;
  ASSERT_STREQ(body, "{\"sandbox\":\"sb1\",\"host\":\"api.corp.example\",\"port\":443}");
  snprintf(cl, sizeof(cl), "\r\nContent-Length: %zu\r\n", strlen(body));
  ASSERT_NOT_NULL(srv_header(&f.srv, cl));
  ASSERT_EQ(f.stats.calls, 1);
  ASSERT_EQ(f.stats.successes, 1);
  ASSERT_EQ(f.stats.outcomes[PROXY_CRED_OK], 1);
  ASSERT_EQ(f.stats.failures, 0);
  ASSERT_EQ(proxy_cred_cache_size(f.cache), 1);
  fx_done(&f);
}

/* The client does not wait for the end of the connection once the answer is complete,
 * reads answers delimited by the connection's end, chunked ones, and skips interim
 * 1xx answers; an empty headers object is a valid answer. */
TEST(success_answer_shapes)
{
  static const struct {
    const char *name;
    const char *raw;
    int keep_open;
    size_t nheaders;
  } cases[] = {
    { "keep-alive",
      "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"headers\":{\"Authorization\":\"Bearer k\"}}",
      1, 1 },
    { "until-close",
      "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"headers\":{\"Authorization\":\"Bearer k\"}}",
      0, 1 },
    { "chunked",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nf\r\n{\"headers\":{\"Au\r\n"
      "17\r\nthorization\":\"Bearer k\"\r\n2\r\n}}\r\n0\r\n\r\n",
      1, 1 },
    { "100-continue",
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n"
      "{\"headers\":{\"Authorization\":\"Bearer k\"}}",
      0, 1 },
    { "201-extra-members",
      "HTTP/1.1 201 Created\r\nContent-Length: 63\r\n\r\n"
      "{\"expires_in\":30,\"headers\":{\"Authorization\":\"Bearer k\"},\"x\":[]}",
      0, 1 },
    { "empty-headers", "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"headers\":{}}", 0, 0 },
  };
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct fx f;
    struct res r;

    fprintf(stderr, "case %s\n", cases[i].name);
    fx_start(&f, SRV_RAW, 300, 1000);
    srv_raw(&f.srv, cases[i].raw, strlen(cases[i].raw));
    f.srv.keep_open = cases[i].keep_open;
    memset(&r, 0, sizeof(r));
    get_sync(&f, "api.corp.example", 443, &r);
    ASSERT_EQ(r.status, 0);
    ASSERT_EQ(r.nheaders, cases[i].nheaders);
    if (r.nheaders > 0) {
      ASSERT_STREQ(r.name[0], "Authorization");
      ASSERT_STREQ(r.value[0], "Bearer k");
    }
    fx_done(&f);
  }
}

/* ---- caching ------------------------------------------------------------------------- */

TEST(cache_hit_within_ttl)
{
  struct fx f;
  struct res r;
  struct proxy_cred_wait *w;
  int i;

  fx_start(&f, SRV_OK, 300, 2000);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(r.status, 0);
  for (i = 0; i < 5; i++) {
    w = (struct proxy_cred_wait *)1;
    ASSERT_EQ(proxy_cred_get(f.cache, f.cb, "api.corp.example", 443, on_res, &r, &w), 0);
    /* A hit answers before proxy_cred_get returns. */
    ASSERT_NULL(w);
    ASSERT_EQ(r.n, i + 2);
    ASSERT_EQ(r.status, 0);
    ASSERT_STREQ(r.value[0], "Bearer cb-1");
  }
  ASSERT_EQ(f.srv.calls, 1);
  ASSERT_EQ(f.stats.cache_hits, 5);
  ASSERT_EQ(f.stats.calls, 1);

  /* The key is (host, port): another port or host is another call. */
  get_sync(&f, "api.corp.example", 8443, &r);
  get_sync(&f, "b.corp.example", 443, &r);
  ASSERT_EQ(f.srv.calls, 3);
  ASSERT_STREQ(r.value[0], "Bearer cb-3");
  ASSERT_EQ(proxy_cred_cache_size(f.cache), 3);
  fx_done(&f);
}

/* Each sandbox has its own cache: a second sandbox's lookup for the same key never
 * gets the first one's credentials; it calls, naming itself. */
TEST(cache_per_sandbox)
{
  struct proxy_cred_cache *other = NULL;
  struct proxy_cred_wait *w = NULL;
  struct proxy_cred_opts o;
  struct fx f;
  struct res r, r2;

  fx_start(&f, SRV_OK, 300, 2000);
  memset(&o, 0, sizeof(o));
  o.stats = &f.stats;
  ASSERT_EQ(proxy_cred_cache_new(&f.loop, "sb2", &o, &other), 0);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_STREQ(r.value[0], "Bearer cb-1");
  ASSERT_NOT_NULL(srv_header(&f.srv, "\"sandbox\":\"sb1\""));

  memset(&r2, 0, sizeof(r2));
  ASSERT_EQ(proxy_cred_get(other, f.cb, "api.corp.example", 443, on_res, &r2, &w), 0);
  ASSERT_NOT_NULL(w);
  run_until(&f, &r2.n, 1);
  ASSERT_EQ(r2.status, 0);
  ASSERT_STREQ(r2.value[0], "Bearer cb-2");
  ASSERT_NOT_NULL(srv_header(&f.srv, "\"sandbox\":\"sb2\""));
  ASSERT_EQ(f.srv.calls, 2);
  ASSERT_EQ(proxy_cred_cache_size(other), 1);
  ASSERT_EQ(proxy_cred_cache_size(f.cache), 1);
  proxy_cred_cache_free(other);
  fx_done(&f);
}

TEST(cache_expires_after_ttl)
{
  struct fx f;
  struct res r;

  fx_start(&f, SRV_OK, 1, 2000);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(f.srv.calls, 1);
  ASSERT_EQ(f.stats.cache_hits, 1);
  run_for(&f, 1100);
  /* The sweep dropped (and wiped) the expired entry without a lookup. */
  ASSERT_EQ(proxy_cred_cache_size(f.cache), 0);
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(r.status, 0);
  ASSERT_STREQ(r.value[0], "Bearer cb-2");
  ASSERT_EQ(f.srv.calls, 2);
  fx_done(&f);
}

TEST(ttl_zero_never_cached)
{
  struct fx f;
  struct res r;

  fx_start(&f, SRV_OK, 0, 2000);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(r.status, 0);
  ASSERT_EQ(f.srv.calls, 2);
  ASSERT_EQ(proxy_cred_cache_size(f.cache), 0);
  ASSERT_EQ(f.stats.cache_hits, 0);
  fx_done(&f);
}

TEST(lru_bounded)
{
  struct proxy_cred_opts o;
  struct fx f;
  struct res r;

  fx_init(&f);
  srv_listen_tcp(&f.srv, &f.loop);
  f.srv.mode = SRV_OK;
  fx_http_cfg(&f, 300, 2000);
  memset(&o, 0, sizeof(o));
  o.max_entries = 2;
  fx_cache(&f, &o);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "a.corp.example", 443, &r);
  get_sync(&f, "b.corp.example", 443, &r);
  get_sync(&f, "a.corp.example", 443, &r); /* hit: a is now the most recent */
  get_sync(&f, "c.corp.example", 443, &r); /* evicts b */
  ASSERT_EQ(f.srv.calls, 3);
  ASSERT_EQ(proxy_cred_cache_size(f.cache), 2);
  ASSERT_EQ(f.stats.evictions, 1);
  get_sync(&f, "a.corp.example", 443, &r);
  get_sync(&f, "c.corp.example", 443, &r);
  ASSERT_EQ(f.srv.calls, 3);
  get_sync(&f, "b.corp.example", 443, &r);
  ASSERT_EQ(f.srv.calls, 4);
  fx_done(&f);
}

TEST(config_change_flushes)
{
  struct rules_config *cfg2, *cfg3;
  struct fx f;
  struct res r;

  fx_start(&f, SRV_OK, 300, 2000);
  cfg2 = parse_cfg("{\"url\": \"http://127.0.0.1:%d/creds?tenant=qs-secret\", "
                   "\"match_hosts\": [\"*.corp.example\"], \"ttl_seconds\": 300, "
                   "\"headers\": [{\"name\": \"X-Callback-Auth\", \"type\": \"plaintext\", "
                   "\"value\": \"rotated\"}]}", f.srv.port);
  cfg3 = parse_cfg("{\"url\": \"http://127.0.0.1:%d/other\", "
                   "\"match_hosts\": [\"*.corp.example\"], \"ttl_seconds\": 300, "
                   "\"headers\": [{\"name\": \"X-Callback-Auth\", \"type\": \"plaintext\", "
                   "\"value\": \"rotated\"}]}", f.srv.port);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(f.srv.calls, 1);
  /* New callback headers: the cached answer is not used. */
  f.cb = rules_config_callback(cfg2);
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(f.srv.calls, 2);
  ASSERT_NOT_NULL(srv_header(&f.srv, "\r\nX-Callback-Auth: rotated\r\n"));
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(f.srv.calls, 2);
  /* A new URL likewise. */
  f.cb = rules_config_callback(cfg3);
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(f.srv.calls, 3);
  ASSERT_EQ(strncmp(f.srv.last, "POST /other HTTP/1.1\r\n", 22), 0);
  ASSERT_STREQ(r.value[0], "Bearer cb-3");
  fx_done(&f);
  rules_config_unref(cfg2);
  rules_config_unref(cfg3);
}

/* A lookup made under a new config neither joins nor reuses a call made under the
 * old one, even while it is still in flight. */
TEST(config_change_does_not_join_old_call)
{
  struct rules_config *cfg2;
  struct fx f;
  struct res r1, r2;

  fx_start(&f, SRV_SLOW, 300, 2000);
  f.srv.delay_ms = 100;
  cfg2 = parse_cfg("{\"url\": \"http://127.0.0.1:%d/v2\", \"match_hosts\": [\"*\"]}",
                   f.srv.port);
  memset(&r1, 0, sizeof(r1));
  memset(&r2, 0, sizeof(r2));
  get_wait(&f, "api.corp.example", 443, &r1);
  f.cb = rules_config_callback(cfg2);
  get_wait(&f, "api.corp.example", 443, &r2);
  run_until(&f, &g_done, 2);
  ASSERT_EQ(f.srv.conns, 2);
  ASSERT_EQ(f.stats.calls, 2);
  ASSERT_EQ(f.stats.joined, 0);
  /* Only the answer under the current config was cached. */
  ASSERT_EQ(proxy_cred_cache_size(f.cache), 1);
  get_sync(&f, "api.corp.example", 443, &r2);
  ASSERT_EQ(f.stats.cache_hits, 1);
  ASSERT_EQ(f.srv.calls, 2);
  fx_done(&f);
  rules_config_unref(cfg2);
}

/* ---- single flight ------------------------------------------------------------------ */

#define NWAIT 50

TEST(single_flight_success)
{
  struct fx f;
  struct res r[NWAIT];
  int i;

  fx_start(&f, SRV_SLOW, 300, 2000);
  f.srv.delay_ms = 50;
  memset(r, 0, sizeof(r));
  for (i = 0; i < NWAIT; i++)
    get_wait(&f, "api.corp.example", 443, &r[i]);
  run_until(&f, &g_done, NWAIT);
  for (i = 0; i < NWAIT; i++) {
    ASSERT_EQ(r[i].n, 1);
    ASSERT_EQ(r[i].status, 0);
    ASSERT_STREQ(r[i].value[0], "Bearer cb-1");
  }
  ASSERT_EQ(f.srv.conns, 1);
  ASSERT_EQ(f.srv.calls, 1);
  ASSERT_EQ(f.stats.calls, 1);
  ASSERT_EQ(f.stats.joined, NWAIT - 1);
  fx_done(&f);
}

TEST(single_flight_failure_not_cached)
{
  struct fx f;
  struct res r[NWAIT], again;
  int i;

  fx_start(&f, SRV_RAW, 300, 2000);
  srv_answer(&f.srv, "503 Service Unavailable", "",
             "{\"headers\":{\"Authorization\":\"Bearer from-an-error\"}}");
  memset(r, 0, sizeof(r));
  for (i = 0; i < NWAIT; i++)
    get_wait(&f, "api.corp.example", 443, &r[i]);
  run_until(&f, &g_done, NWAIT);
  for (i = 0; i < NWAIT; i++) {
    ASSERT_EQ(r[i].n, 1);
    ASSERT_EQ(r[i].status, -EPROTO);
    ASSERT_STREQ(r[i].reason, "callback_failed");
  }
  ASSERT_EQ(f.srv.calls, 1);
  ASSERT_EQ(f.stats.failures, 1);
  ASSERT_EQ(f.stats.outcomes[PROXY_CRED_BAD_STATUS], 1);
  ASSERT_EQ(proxy_cred_cache_size(f.cache), 0);
  /* The failure was not cached: the next lookup calls again, and now succeeds. */
  f.srv.mode = SRV_OK;
  memset(&again, 0, sizeof(again));
  get_sync(&f, "api.corp.example", 443, &again);
  ASSERT_EQ(again.status, 0);
  ASSERT_STREQ(again.value[0], "Bearer cb-2");
  ASSERT_EQ(f.srv.calls, 2);
  fx_done(&f);
}

/* ---- failure modes ----------------------------------------------------------------- */

struct fail_case {
  const char *name;
  const char *status;  /* status line after "HTTP/1.1 " */
  const char *extra;   /* extra header lines */
  const char *body;
  enum proxy_cred_outcome outcome;
};

static const struct fail_case fail_cases[] = {
  { "status 500", "500 Internal Server Error", "",
    "{\"headers\":{\"Authorization\":\"Bearer x\"}}", PROXY_CRED_BAD_STATUS },
  { "status 404", "404 Not Found", "", "{}", PROXY_CRED_BAD_STATUS },
  { "redirect", "302 Found", "Location: http://127.0.0.1:1/\r\n", "", PROXY_CRED_BAD_STATUS },
  { "not json", "200 OK", "", "Authorization: Bearer x", PROXY_CRED_NOT_JSON },
  { "json array", "200 OK", "", "[{\"headers\":{}}]", PROXY_CRED_NOT_JSON },
  { "json string", "200 OK", "", "\"headers\"", PROXY_CRED_NOT_JSON },
  { "trailing text", "200 OK", "", "{\"headers\":{}} {}", PROXY_CRED_NOT_JSON },
  { "empty body", "200 OK", "", "", PROXY_CRED_NOT_JSON },
  { "truncated json", "200 OK", "", "{\"headers\":{\"A\":\"b\"}", PROXY_CRED_NOT_JSON },
  { "nul escape", "200 OK", "", "{\"headers\":{\"X-A\":\"a\\u0000b\"}}", PROXY_CRED_NOT_JSON },
  { "raw control char", "200 OK", "", "{\"headers\":{\"X-A\":\"a\tb\"}}", PROXY_CRED_NOT_JSON },
  { "no headers", "200 OK", "", "{\"token\":\"x\"}", PROXY_CRED_BAD_HEADERS },
  { "headers null", "200 OK", "", "{\"headers\":null}", PROXY_CRED_BAD_HEADERS },
  { "headers array", "200 OK", "", "{\"headers\":[[\"Authorization\",\"x\"]]}",
    PROXY_CRED_BAD_HEADERS },
  { "headers string", "200 OK", "", "{\"headers\":\"Authorization: x\"}",
    PROXY_CRED_BAD_HEADERS },
  /* cJSON would read the first of two members with one name, other readers the last:
   * any name given twice in one object, at any depth, spelled alike or not. */
  { "headers twice", "200 OK", "", "{\"headers\":{},\"headers\":{\"A\":\"b\"}}",
    PROXY_CRED_NOT_JSON },
  { "headers twice, escaped", "200 OK", "",
    "{\"headers\":{\"X-A\":\"a\"},\"h\\u0065aders\":{\"X-A\":\"b\"}}", PROXY_CRED_NOT_JSON },
  { "header name twice", "200 OK", "",
    "{\"headers\":{\"Authorization\":\"Bearer a\",\"Authorization\":\"Bearer b\"}}",
    PROXY_CRED_NOT_JSON },
  { "other member twice", "200 OK", "",
    "{\"headers\":{\"Authorization\":\"Bearer a\"},\"ttl\":1,\"ttl\":2}", PROXY_CRED_NOT_JSON },
  { "value number", "200 OK", "", "{\"headers\":{\"X-N\":1}}", PROXY_CRED_BAD_HEADERS },
  { "value null", "200 OK", "", "{\"headers\":{\"X-N\":null}}", PROXY_CRED_BAD_HEADERS },
  { "value object", "200 OK", "", "{\"headers\":{\"X-N\":{\"v\":\"x\"}}}",
    PROXY_CRED_BAD_HEADERS },
  { "one bad among good", "200 OK", "",
    "{\"headers\":{\"Authorization\":\"Bearer x\",\"X-N\":false}}", PROXY_CRED_BAD_HEADERS },
  { "name with space", "200 OK", "", "{\"headers\":{\"Bad Name\":\"x\"}}",
    PROXY_CRED_BAD_HEADERS },
  { "name with colon", "200 OK", "", "{\"headers\":{\"X-A:\":\"x\"}}", PROXY_CRED_BAD_HEADERS },
  { "name with crlf", "200 OK", "", "{\"headers\":{\"X-A\\r\\nX-B\":\"x\"}}",
    PROXY_CRED_BAD_HEADERS },
  { "empty name", "200 OK", "", "{\"headers\":{\"\":\"x\"}}", PROXY_CRED_BAD_HEADERS },
  { "non-ascii name", "200 OK", "", "{\"headers\":{\"X-\\u00e9\":\"x\"}}",
    PROXY_CRED_BAD_HEADERS },
  { "hop-by-hop connection", "200 OK", "", "{\"headers\":{\"Connection\":\"close\"}}",
    PROXY_CRED_BAD_HEADERS },
  { "transfer-encoding", "200 OK", "", "{\"headers\":{\"transfer-encoding\":\"chunked\"}}",
    PROXY_CRED_BAD_HEADERS },
  { "host", "200 OK", "", "{\"headers\":{\"Host\":\"evil.example\"}}", PROXY_CRED_BAD_HEADERS },
  { "content-length", "200 OK", "", "{\"headers\":{\"Content-Length\":\"0\"}}",
    PROXY_CRED_BAD_HEADERS },
  { "proxy-authorization", "200 OK", "", "{\"headers\":{\"Proxy-Authorization\":\"x\"}}",
    PROXY_CRED_BAD_HEADERS },
  { "crlf value", "200 OK", "",
    "{\"headers\":{\"Authorization\":\"Bearer x\\r\\nX-Injected: 1\"}}",
    PROXY_CRED_BAD_HEADERS },
  { "lf value", "200 OK", "", "{\"headers\":{\"Authorization\":\"Bearer x\\nX: 1\"}}",
    PROXY_CRED_BAD_HEADERS },
  { "cr value", "200 OK", "", "{\"headers\":{\"Authorization\":\"Bearer x\\r\"}}",
    PROXY_CRED_BAD_HEADERS },
  { "control value", "200 OK", "", "{\"headers\":{\"Authorization\":\"a\\u0001b\"}}",
    PROXY_CRED_BAD_HEADERS },
  { "duplicate name", "200 OK", "",
    "{\"headers\":{\"Authorization\":\"a\",\"authorization\":\"b\"}}",
    PROXY_CRED_BAD_HEADERS },
  { "content-length over 64 KiB", "200 OK", "", NULL, PROXY_CRED_TOO_LARGE },
};

static void check_failure(const char *name, const char *raw, size_t raw_len,
                          enum proxy_cred_outcome want)
{
  struct fx f;
  struct res r;

  fprintf(stderr, "case %s\n", name);
  fx_start(&f, SRV_RAW, 300, 2000);
  srv_raw(&f.srv, raw, raw_len);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  if (r.status == 0 || f.stats.outcomes[want] != 1)
    TEST_FAIL_("case %s: status %d, outcome %s count %llu", name, r.status,
               proxy_cred_outcome_name(want), (unsigned long long)f.stats.outcomes[want]);
  ASSERT_STREQ(r.reason, "callback_failed");
  ASSERT_EQ(f.stats.failures, 1);
  ASSERT_EQ(proxy_cred_cache_size(f.cache), 0);
  /* Never cached: the next lookup calls the callback again. */
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_NE(r.status, 0);
  ASSERT_EQ(r.n, 2);
  ASSERT_EQ(f.srv.calls, 2);
  ASSERT_EQ(f.stats.calls, 2);
  fx_done(&f);
}

TEST(failure_modes_fail_closed)
{
  struct strbuf b;
  size_t i;

  for (i = 0; i < sizeof(fail_cases) / sizeof(fail_cases[0]); i++) {
    const struct fail_case *c = &fail_cases[i];

    strbuf_init(&b);
    if (c->body != NULL)
      strbuf_addf(&b, "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n%s\r\n%s",
                  c->status, strlen(c->body), c->extra, c->body);
    else
      strbuf_addf(&b, "HTTP/1.1 %s\r\nContent-Length: %u\r\n\r\n{", c->status,
                  PROXY_CRED_MAX_BODY + 1);
    ASSERT(!b.oom);
    check_failure(c->name, b.data, b.len, c->outcome);
    strbuf_free(&b);
  }
}

/* Answers whose shape is built here: too many headers, long values, large bodies. */
TEST(failure_modes_bounds)
{
  struct strbuf body, raw;
  int i;

  /* 65 headers: one over RULES_MAX_INJECT. */
  strbuf_init(&body);
  strbuf_adds(&body, "{\"headers\":{");
  for (i = 0; i <= RULES_MAX_INJECT; i++)
    strbuf_addf(&body, "%s\"X-H%d\":\"v\"", i ? "," : "", i);
  strbuf_adds(&body, "}}");
  strbuf_init(&raw);
  strbuf_addf(&raw, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", body.len, body.data);
  check_failure("65 headers", raw.data, raw.len, PROXY_CRED_BAD_HEADERS);
  strbuf_free(&raw);
  strbuf_free(&body);

  /* A value one byte over RULES_MAX_VALUE_LEN. */
  strbuf_init(&body);
  strbuf_adds(&body, "{\"headers\":{\"Authorization\":\"");
  for (i = 0; i <= RULES_MAX_VALUE_LEN; i++)
    strbuf_add(&body, "a", 1);
  strbuf_adds(&body, "\"}}");
  strbuf_init(&raw);
  strbuf_addf(&raw, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", body.len, body.data);
  check_failure("long value", raw.data, raw.len, PROXY_CRED_BAD_HEADERS);
  strbuf_free(&raw);

  /* Over 64 KiB of body, chunked (no Content-Length to refuse early). */
  strbuf_init(&raw);
  strbuf_adds(&raw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (i = 0; i < 17; i++) {
    strbuf_addf(&raw, "1000\r\n");
    strbuf_add(&raw, body.data, 4096 < body.len ? 4096 : body.len);
    strbuf_adds(&raw, "\r\n");
  }
  strbuf_adds(&raw, "0\r\n\r\n");
  check_failure("chunked over 64 KiB", raw.data, raw.len, PROXY_CRED_TOO_LARGE);
  strbuf_free(&raw);
  strbuf_free(&body);

  /* Over 64 KiB delimited by the end of the connection. */
  strbuf_init(&raw);
  strbuf_adds(&raw, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"headers\":{},\"pad\":\"");
  for (i = 0; i < (int)PROXY_CRED_MAX_BODY; i++)
    strbuf_add(&raw, "x", 1);
  strbuf_adds(&raw, "\"}");
  check_failure("until-close over 64 KiB", raw.data, raw.len, PROXY_CRED_TOO_LARGE);
  strbuf_free(&raw);

  /* A response head over PROXY_CRED_MAX_HEAD. */
  strbuf_init(&raw);
  strbuf_adds(&raw, "HTTP/1.1 200 OK\r\nX-Pad: ");
  for (i = 0; i < (int)PROXY_CRED_MAX_HEAD; i++)
    strbuf_add(&raw, "p", 1);
  strbuf_adds(&raw, "\r\nContent-Length: 14\r\n\r\n{\"headers\":{}}");
  check_failure("head over 16 KiB", raw.data, raw.len, PROXY_CRED_TOO_LARGE);
  strbuf_free(&raw);

  /* Exactly RULES_MAX_INJECT headers is fine. */
  {
    struct fx f;
    struct res r;

    strbuf_init(&body);
    strbuf_adds(&body, "{\"headers\":{");
    for (i = 0; i < RULES_MAX_INJECT; i++)
      strbuf_addf(&body, "%s\"X-H%d\":\"v%d\"", i ? "," : "", i, i);
    strbuf_adds(&body, "}}");
    fx_start(&f, SRV_RAW, 300, 2000);
    srv_answer(&f.srv, "200 OK", "", body.data);
    memset(&r, 0, sizeof(r));
    get_sync(&f, "api.corp.example", 443, &r);
    ASSERT_EQ(r.status, 0);
    ASSERT_EQ(r.nheaders, RULES_MAX_INJECT);
    ASSERT_STREQ(r.value[3], "v3");
    fx_done(&f);
    strbuf_free(&body);
  }
}

/* Malformed HTTP and connections that end early. */
TEST(failure_modes_http)
{
  static const struct {
    const char *name;
    const char *raw;
  } cases[] = {
    { "garbage", "hello there\r\n\r\n" },
    { "two content-lengths",
      "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nContent-Length: 15\r\n\r\n{\"headers\":{}}" },
    { "content-length and chunked",
      "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nTransfer-Encoding: chunked\r\n\r\n"
      "e\r\n{\"headers\":{}}\r\n0\r\n\r\n" },
    { "bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" },
    { "truncated body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"headers\":{}}" },
    { "truncated head", "HTTP/1.1 200 OK\r\nContent-Le" },
    { "upgrade", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n" },
  };
  size_t i;
  struct fx f;
  struct res r;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    fprintf(stderr, "case %s\n", cases[i].name);
    fx_start(&f, SRV_RAW, 300, 2000);
    srv_raw(&f.srv, cases[i].raw, strlen(cases[i].raw));
    memset(&r, 0, sizeof(r));
    get_sync(&f, "api.corp.example", 443, &r);
    if (r.status == 0)
      TEST_FAIL_("case %s succeeded", cases[i].name);
    ASSERT_STREQ(r.reason, "callback_failed");
    ASSERT_EQ(f.stats.outcomes[PROXY_CRED_BAD_RESPONSE] + f.stats.outcomes[PROXY_CRED_BAD_STATUS], 1);
    get_sync(&f, "api.corp.example", 443, &r);
    ASSERT_EQ(f.srv.calls, 2);
    fx_done(&f);
  }

  /* The callback closes without a word. */
  fx_start(&f, SRV_CLOSE, 300, 2000);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_STREQ(r.reason, "callback_failed");
  ASSERT_EQ(f.stats.outcomes[PROXY_CRED_BAD_RESPONSE], 1);
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(f.srv.calls, 2);
  fx_done(&f);
}

TEST(timeout)
{
  struct fx f;
  struct res r;
  uint64_t t0, ms;

  fx_start(&f, SRV_HANG, 300, 200);
  memset(&r, 0, sizeof(r));
  t0 = uv_hrtime();
  get_sync(&f, "api.corp.example", 443, &r);
  ms = (uv_hrtime() - t0) / 1000000;
  ASSERT_EQ(r.status, -ETIMEDOUT);
  ASSERT_STREQ(r.reason, "callback_timeout");
  ASSERT_GE(ms, 190);
  ASSERT_LT(ms, 2000);
  ASSERT_EQ(f.stats.timeouts, 1);
  ASSERT_EQ(f.stats.outcomes[PROXY_CRED_TIMEOUT], 1);
  ASSERT_EQ(f.srv.calls, 1);
  /* The client gave up on the connection. */
  run_until(&f, &f.srv.client_closed, 1);
  /* Not cached: called again. */
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_STREQ(r.reason, "callback_timeout");
  ASSERT_EQ(f.srv.calls, 2);
  fx_done(&f);
}

/* A slow callback does not hold up the loop: another key's call completes first. */
TEST(slow_call_does_not_block_others)
{
  struct fx f;
  struct res slow, quick;

  fx_start(&f, SRV_OK, 300, 1500);
  f.srv.hang_host = "\"host\":\"slow.corp.example\"";
  memset(&slow, 0, sizeof(slow));
  memset(&quick, 0, sizeof(quick));
  get_wait(&f, "slow.corp.example", 443, &slow);
  run_until(&f, &f.srv.calls, 1);
  get_wait(&f, "fast.corp.example", 443, &quick);
  run_until(&f, &quick.n, 1);
  ASSERT_EQ(quick.status, 0);
  ASSERT_EQ(slow.n, 0);
  run_until(&f, &slow.n, 1);
  ASSERT_STREQ(slow.reason, "callback_timeout");
  fx_done(&f);
}

TEST(connect_refused)
{
  struct fx f;
  struct res r;
  /* Port 1 (tcpmux): nothing listens on it. (A port bound and closed again here is
   * free for the next bind(0) of a test that ctest runs beside this one.) */
  int port = 1;

  fx_init(&f);
  f.cfg = parse_cfg("{\"url\": \"http://127.0.0.1:%d/\", \"match_hosts\": [\"*\"]}", port);
  f.cb = rules_config_callback(f.cfg);
  fx_cache(&f, NULL);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(r.status, -ECONNREFUSED);
  ASSERT_STREQ(r.reason, "callback_failed");
  ASSERT_EQ(f.stats.outcomes[PROXY_CRED_CONNECT], 1);
  fx_done(&f);
}

/* A host name goes through uv_getaddrinfo; localhost may resolve to ::1 first, where
 * nothing listens, and the client then tries 127.0.0.1. */
TEST(host_name_resolved)
{
  struct fx f;
  struct res r;

  fx_init(&f);
  srv_listen_tcp(&f.srv, &f.loop);
  f.srv.mode = SRV_OK;
  f.cfg = parse_cfg("{\"url\": \"http://localhost:%d/c\", \"match_hosts\": [\"*\"]}",
                    f.srv.port);
  f.cb = rules_config_callback(f.cfg);
  fx_cache(&f, NULL);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(r.status, 0);
  ASSERT_STREQ(r.value[0], "Bearer cb-1");
  {
    char host[64];

    snprintf(host, sizeof(host), "\r\nHost: localhost:%d\r\n", f.srv.port);
    ASSERT_NOT_NULL(srv_header(&f.srv, host));
  }
  fx_done(&f);
}

/* Calls for several hosts at once share the lookup of the callback's name (one at a
 * time per cache: each holds a thread of the pool every sandbox shares); each gets
 * the addresses and its own answer. Then the cache is freed while calls wait for a
 * lookup: they are cancelled, and the lookup completes unused. */
TEST(host_name_lookup_shared)
{
  static const char *const hosts[] = { "a.corp.example", "b.corp.example",
                                       "c.corp.example", "d.corp.example" };
  struct res r[4], late[4];
  struct fx f;
  size_t i;

  fx_init(&f);
  srv_listen_tcp(&f.srv, &f.loop);
  f.srv.mode = SRV_OK;
  f.cfg = parse_cfg("{\"url\": \"http://localhost:%d/c\", \"match_hosts\": [\"*\"]}",
                    f.srv.port);
  f.cb = rules_config_callback(f.cfg);
  fx_cache(&f, NULL);
  memset(r, 0, sizeof(r));
  for (i = 0; i < 4; i++)
    get_wait(&f, hosts[i], 443, &r[i]);
  run_until(&f, &g_done, 4);
  for (i = 0; i < 4; i++) {
    ASSERT_EQ(r[i].status, 0);
    ASSERT_EQ(r[i].nheaders, 2);
  }
  ASSERT_EQ(f.stats.calls, 4);
  ASSERT_EQ(f.srv.calls, 4);

  memset(late, 0, sizeof(late));
  for (i = 0; i < 4; i++)
    get_wait(&f, hosts[i], 8443, &late[i]);
  proxy_cred_cache_free(f.cache);
  f.cache = NULL;
  for (i = 0; i < 4; i++)
    ASSERT_EQ(late[i].status, -ECANCELED);
  ASSERT_EQ(f.srv.calls, 4);
  fx_done(&f);

  /* The first call told that the name does not resolve frees the cache, with the
   * others waiting for the same answer: they are cancelled. */
  fx_init(&f);
  f.cfg = parse_cfg("{\"url\": \"http://no-such-host.invalid:9/\", \"match_hosts\": [\"*\"], "
                    "\"timeout_ms\": 5000}");
  f.cb = rules_config_callback(f.cfg);
  fx_cache(&f, NULL);
  memset(late, 0, sizeof(late));
  for (i = 0; i < 4; i++) {
    late[i].free_cache = &f.cache;
    get_wait(&f, hosts[i], 443, &late[i]);
  }
  run_until(&f, &g_done, 4);
  ASSERT(f.cache == NULL);
  ASSERT_NE(late[0].status, 0);
  for (i = 1; i < 4; i++)
    ASSERT_EQ(late[i].status, -ECANCELED);
  fx_done(&f);
}

/* An IPv6 literal: bracketed in the Host header (skipped where ::1 is unavailable). */
TEST(ipv6_literal)
{
  struct sockaddr_in6 sin6;
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  char host[64];
  struct fx f;
  struct res r;

  fx_init(&f);
  f.srv.loop = &f.loop;
  f.srv.mode = SRV_OK;
  ASSERT_EQ(uv_tcp_init(&f.loop, &f.srv.l.tcp), 0);
  f.srv.l.h.data = &f.srv;
  f.srv.listening = 1;
  ASSERT_EQ(uv_ip6_addr("::1", 0, &sin6), 0);
  if (uv_tcp_bind(&f.srv.l.tcp, (const struct sockaddr *)&sin6, 0) != 0 ||
      uv_listen(&f.srv.l.s, 16, on_conn) != 0) {
    fprintf(stderr, "no IPv6 loopback: skipped\n");
    srv_close(&f.srv);
    uv_close((uv_handle_t *)&f.guard, NULL);
    uv_close((uv_handle_t *)&f.sleep, NULL);
    test_loop_close(&f.loop);
    return;
  }
  ASSERT_EQ(uv_tcp_getsockname(&f.srv.l.tcp, (struct sockaddr *)&ss, &len), 0);
  f.srv.port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  f.cfg = parse_cfg("{\"url\": \"http://[::1]:%d/v6\", \"match_hosts\": [\"*\"]}",
                    f.srv.port);
  f.cb = rules_config_callback(f.cfg);
  fx_cache(&f, NULL);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(r.status, 0);
  snprintf(host, sizeof(host), "\r\nHost: [::1]:%d\r\n", f.srv.port);
  ASSERT_NOT_NULL(srv_header(&f.srv, host));
  fx_done(&f);
}

/* A name that does not resolve fails closed (or times out, where resolution hangs). */
TEST(unresolvable_name)
{
  struct fx f;
  struct res r;

  fx_init(&f);
  f.cfg = parse_cfg("{\"url\": \"http://no-such-host.invalid:9/\", \"match_hosts\": [\"*\"], "
                    "\"timeout_ms\": 3000}");
  f.cb = rules_config_callback(f.cfg);
  fx_cache(&f, NULL);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_NE(r.status, 0);
  ASSERT_EQ(f.stats.outcomes[PROXY_CRED_RESOLVE] + f.stats.outcomes[PROXY_CRED_TIMEOUT], 1);
  fx_done(&f);
}

TEST(busy)
{
  struct proxy_cred_opts o;
  struct proxy_cred_wait *w;
  struct fx f;
  struct res a, b, a2;

  fx_init(&f);
  srv_listen_tcp(&f.srv, &f.loop);
  f.srv.mode = SRV_HANG;
  fx_http_cfg(&f, 300, 300);
  memset(&o, 0, sizeof(o));
  o.max_calls = 1;
  fx_cache(&f, &o);
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  memset(&a2, 0, sizeof(a2));
  get_wait(&f, "a.corp.example", 443, &a);
  /* Another key while one call is in flight: refused at once, nothing sent. */
  w = (struct proxy_cred_wait *)1;
  ASSERT_EQ(proxy_cred_get(f.cache, f.cb, "b.corp.example", 443, on_res, &b, &w), 0);
  ASSERT_NULL(w);
  ASSERT_EQ(b.n, 1);
  ASSERT_EQ(b.status, -EBUSY);
  ASSERT_STREQ(b.reason, "callback_failed");
  ASSERT_EQ(f.stats.outcomes[PROXY_CRED_BUSY], 1);
  /* The same key still joins. */
  get_wait(&f, "a.corp.example", 443, &a2);
  run_until(&f, &g_done, 3);
  ASSERT_STREQ(a.reason, "callback_timeout");
  ASSERT_STREQ(a2.reason, "callback_timeout");
  ASSERT_EQ(f.srv.conns, 1);
  fx_done(&f);
}

/* The descriptors for calls are a budget shared with every other sandbox's cache:
 * here other sandboxes hold all but one. */
TEST(busy_at_fd_budget)
{
  struct proxy_fd_budget budget = { .used = 2, .max = 3 };
  struct proxy_cred_opts o;
  struct proxy_cred_wait *w;
  struct fx f;
  struct res a, b;

  fx_init(&f);
  srv_listen_tcp(&f.srv, &f.loop);
  f.srv.mode = SRV_HANG;
  fx_http_cfg(&f, 300, 300);
  memset(&o, 0, sizeof(o));
  o.fds = &budget;
  fx_cache(&f, &o);
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  get_wait(&f, "a.corp.example", 443, &a);
  ASSERT_EQ(budget.used, 3);
  /* Below max_calls, but the daemon's budget is full: refused at once, fail closed,
   * nothing sent. */
  w = (struct proxy_cred_wait *)1;
  ASSERT_EQ(proxy_cred_get(f.cache, f.cb, "b.corp.example", 443, on_res, &b, &w), 0);
  ASSERT_NULL(w);
  ASSERT_EQ(b.n, 1);
  ASSERT_EQ(b.status, -EBUSY);
  ASSERT_STREQ(b.reason, "callback_failed");
  ASSERT_EQ(f.stats.outcomes[PROXY_CRED_BUSY], 1);
  ASSERT_EQ(budget.refused, 1);
  run_until(&f, &g_done, 2);
  ASSERT_STREQ(a.reason, "callback_timeout");
  ASSERT_EQ(f.srv.conns, 1);
  /* The finished call gave its descriptor back. */
  ASSERT_EQ(budget.used, 2);
  fx_done(&f);
}

TEST(invalid_arguments)
{
  struct proxy_cred_opts o;
  struct proxy_cred_cache *c = (struct proxy_cred_cache *)1;
  struct proxy_cred_wait *w = (struct proxy_cred_wait *)1;
  char longname[RULES_MAX_NAME_LEN + 2];
  struct fx f;
  struct res r;

  fx_start(&f, SRV_OK, 300, 1000);
  memset(&r, 0, sizeof(r));
  ASSERT_EQ(proxy_cred_get(f.cache, f.cb, "", 443, on_res, &r, &w), -EINVAL);
  ASSERT_NULL(w);
  memset(longname, 'a', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  ASSERT_EQ(proxy_cred_get(f.cache, f.cb, longname, 443, on_res, &r, &w), -EINVAL);
  ASSERT_EQ(proxy_cred_get(f.cache, NULL, "a.example", 443, on_res, &r, &w), -EINVAL);
  ASSERT_EQ(r.n, 0);
  memset(&o, 0, sizeof(o));
  o.max_entries = (size_t)1 << 30;
  ASSERT_EQ(proxy_cred_cache_new(&f.loop, "x", &o, &c), -EINVAL);
  ASSERT_NULL(c);
  proxy_cred_cancel(NULL);
  proxy_cred_cache_free(NULL);
  proxy_creds_unref(NULL);
  ASSERT_EQ(f.srv.conns, 0);
  fx_done(&f);
}

/* ---- cancel and free ------------------------------------------------------------------ */

TEST(cancel_one_waiter)
{
  struct proxy_cred_wait *w[3];
  struct fx f;
  struct res r[3];
  int i;

  fx_start(&f, SRV_SLOW, 300, 2000);
  f.srv.delay_ms = 50;
  memset(r, 0, sizeof(r));
  for (i = 0; i < 3; i++)
    w[i] = get_wait(&f, "api.corp.example", 443, &r[i]);
  proxy_cred_cancel(w[1]);
  run_until(&f, &g_done, 2);
  run_for(&f, 20);
  ASSERT_EQ(r[0].n, 1);
  ASSERT_EQ(r[1].n, 0);
  ASSERT_EQ(r[2].n, 1);
  ASSERT_EQ(r[2].status, 0);
  ASSERT_EQ(f.srv.calls, 1);
  fx_done(&f);
}

/* With every waiter gone the call still completes and is cached (ttl > 0)... */
TEST(cancel_all_waiters_still_caches)
{
  struct proxy_cred_wait *w;
  struct fx f;
  struct res r;

  fx_start(&f, SRV_SLOW, 300, 2000);
  f.srv.delay_ms = 30;
  memset(&r, 0, sizeof(r));
  w = get_wait(&f, "api.corp.example", 443, &r);
  proxy_cred_cancel(w);
  while (proxy_cred_cache_size(f.cache) == 0)
    run_for(&f, 10);
  ASSERT_EQ(r.n, 0);
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(f.stats.cache_hits, 1);
  ASSERT_STREQ(r.value[0], "Bearer cb-1");
  fx_done(&f);
}

/* ...but with ttl 0 nobody would use the answer: the call is aborted. */
TEST(cancel_all_waiters_ttl0_aborts)
{
  struct proxy_cred_wait *w;
  struct fx f;
  struct res r;

  fx_start(&f, SRV_HANG, 0, 5000);
  memset(&r, 0, sizeof(r));
  w = get_wait(&f, "api.corp.example", 443, &r);
  run_until(&f, &f.srv.calls, 1);
  proxy_cred_cancel(w);
  ASSERT_EQ(f.stats.outcomes[PROXY_CRED_CANCELLED], 1);
  /* The callback did not fail: no alert on authproxy_callback_failures_total. */
  ASSERT_EQ(f.stats.failures, 0);
  run_until(&f, &f.srv.client_closed, 1);
  ASSERT_EQ(r.n, 0);
  fx_done(&f);
}

TEST(free_with_calls_in_flight)
{
  struct fx f;
  struct res r[10];
  int i;

  fx_start(&f, SRV_HANG, 300, 5000);
  memset(r, 0, sizeof(r));
  for (i = 0; i < 10; i++) {
    get_wait(&f, i % 2 ? "a.corp.example" : "b.corp.example", 443, &r[i]);
    /* A callback that looks up again while the cache is being freed. */
    r[i].reenter = f.cache;
    r[i].reenter_cfg = f.cb;
  }
  run_until(&f, &f.srv.calls, 2);
  proxy_cred_cache_free(f.cache);
  /* Every waiter was answered before proxy_cred_cache_free returned. */
  for (i = 0; i < 10; i++) {
    ASSERT_EQ(r[i].n, 1);
    ASSERT_EQ(r[i].status, -ECANCELED);
    ASSERT_STREQ(r[i].reason, "callback_failed");
    ASSERT_EQ(r[i].reenter_ret, -ECANCELED);
  }
  ASSERT_EQ(f.stats.outcomes[PROXY_CRED_CANCELLED], 2);
  ASSERT_EQ(f.stats.failures, 0);
  f.cache = NULL;
  run_until(&f, &f.srv.client_closed, 2);
  fx_done(&f);
}

/* Freeing the cache while a call connects, and while a name is being resolved (the
 * getaddrinfo request in the thread pool is cancelled or completes unused); mid-TLS
 * is https_free_mid_handshake. */
TEST(free_while_connecting_or_resolving)
{
  struct fx f;
  struct res r;

  fx_start(&f, SRV_OK, 300, 5000);
  memset(&r, 0, sizeof(r));
  get_wait(&f, "api.corp.example", 443, &r);
  proxy_cred_cache_free(f.cache);
  f.cache = NULL;
  ASSERT_EQ(r.status, -ECANCELED);
  fx_done(&f);

  fx_init(&f);
  srv_listen_tcp(&f.srv, &f.loop);
  f.cfg = parse_cfg("{\"url\": \"http://localhost:%d/\", \"match_hosts\": [\"*\"]}",
                    f.srv.port);
  f.cb = rules_config_callback(f.cfg);
  fx_cache(&f, NULL);
  memset(&r, 0, sizeof(r));
  get_wait(&f, "api.corp.example", 443, &r);
  proxy_cred_cache_free(f.cache);
  f.cache = NULL;
  ASSERT_EQ(r.status, -ECANCELED);
  ASSERT_EQ(f.srv.conns, 0);
  fx_done(&f);
}

/* Credentials outlive the cache for a holder of a reference. */
TEST(creds_reference_outlives_cache)
{
  struct fx f;
  struct res r;

  fx_start(&f, SRV_OK, 300, 2000);
  memset(&r, 0, sizeof(r));
  r.keep = 1;
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_NOT_NULL(r.kept);
  proxy_cred_cache_free(f.cache);
  f.cache = NULL;
  ASSERT_EQ(r.kept->nheaders, 2);
  ASSERT_STREQ(r.kept->headers[0].value, "Bearer cb-1");
  ASSERT_EQ(r.kept->headers[0].value_len, 11);
  proxy_creds_unref(r.kept);
  fx_done(&f);
}

/* ---- unix socket ---------------------------------------------------------------------- */

TEST(unix_socket)
{
  char path[512];
  struct fx f;
  struct res r;

  fx_init(&f);
  snprintf(path, sizeof(path), "%s/cb.sock", test_tmpdir());
  srv_listen_pipe(&f.srv, &f.loop, path);
  f.srv.mode = SRV_OK;
  f.cfg = parse_cfg("{\"url\": \"unix:%s:/v1/creds\", \"match_hosts\": [\"*\"], "
                    "\"headers\": [{\"name\": \"Authorization\", \"type\": \"plaintext\", "
                    "\"value\": \"Bearer to-the-callback\"}]}", path);
  f.cb = rules_config_callback(f.cfg);
  fx_cache(&f, NULL);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "git.corp.example", 8443, &r);
  ASSERT_EQ(r.status, 0);
  ASSERT_STREQ(r.value[0], "Bearer cb-1");
  ASSERT_EQ(strncmp(f.srv.last, "POST /v1/creds HTTP/1.1\r\nHost: localhost\r\n", 42), 0);
  ASSERT_NOT_NULL(srv_header(&f.srv, "\r\nAuthorization: Bearer to-the-callback\r\n"));
  ASSERT_CONTAINS(f.srv.last, "{\"sandbox\":\"sb1\",\"host\":\"git.corp.example\",\"port\":8443}");
  fx_done(&f);

  /* No socket at the path. */
  fx_init(&f);
  f.cfg = parse_cfg("{\"url\": \"unix:%s/none.sock\", \"match_hosts\": [\"*\"]}",
                    test_tmpdir());
  f.cb = rules_config_callback(f.cfg);
  fx_cache(&f, NULL);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "git.corp.example", 443, &r);
  ASSERT_EQ(r.status, -ENOENT);
  ASSERT_EQ(f.stats.outcomes[PROXY_CRED_CONNECT], 1);
  fx_done(&f);
}

/* ---- audit, log, metrics ----------------------------------------------------------- */

static char *slurp(const char *path)
{
  struct strbuf b;
  char buf[4096];
  ssize_t n;
  int fd = open(path, O_RDONLY | O_CLOEXEC);

  ASSERT_GE(fd, 0);
  strbuf_init(&b);
  while ((n = read(fd, buf, sizeof(buf))) > 0)
    strbuf_add(&b, buf, (size_t)n);
  close(fd);
  strbuf_add(&b, "", 0);
  return strbuf_take(&b);
}

static int count_lines(const char *path)
{
  char *s = slurp(path);
  int n = 0;
  const char *p;

  for (p = s; *p != '\0'; p++)
    n += *p == '\n';
  free(s);
  return n;
}

TEST(audit_and_log_never_hold_values)
{
  struct proxy_audit *audit = NULL;
  struct proxy_cred_opts o;
  char apath[512], lpath[512], url[128];
  char *alog, *llog, *second;
  int saved;
  struct fx f;
  struct res r;

  snprintf(apath, sizeof(apath), "%s/audit.jsonl", test_tmpdir());
  snprintf(lpath, sizeof(lpath), "%s/stderr.log", test_tmpdir());
  saved = test_stderr_to(lpath);

  fx_init(&f);
  srv_listen_tcp(&f.srv, &f.loop);
  f.srv.mode = SRV_OK;
  fx_http_cfg(&f, 300, 2000);
  ASSERT_EQ(proxy_audit_open(&f.loop, apath, &audit), 0);
  memset(&o, 0, sizeof(o));
  o.audit = audit;
  fx_cache(&f, &o);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(r.status, 0);
  srv_answer(&f.srv, "200 OK", "",
             "{\"headers\":{\"Authorization\":\"Bearer crlf-secret\\r\\nX-Evil: 1\"}}");
  get_sync(&f, "api.corp.example", 8443, &r);
  ASSERT_NE(r.status, 0);
  proxy_cred_cache_free(f.cache);
  f.cache = NULL;
  proxy_audit_close(audit);
  while (count_lines(apath) < 2)
    run_for(&f, 10);
  fx_done(&f);
  test_stderr_back(saved);

  alog = slurp(apath);
  llog = slurp(lpath);
  snprintf(url, sizeof(url), "\"url\":\"http://127.0.0.1:%d/creds\"", f.srv.port);
  ASSERT_EQ(count_lines(apath), 2);
  second = strchr(alog, '\n') + 1;
  ASSERT_CONTAINS(alog, "\"event\":\"callback\",\"sandbox\":\"sb1\",\"host\":\"api.corp.example\","
                        "\"port\":443,");
  ASSERT_CONTAINS(alog, url);
  ASSERT_CONTAINS(alog, "\"outcome\":\"ok\",\"status\":200,\"latency_ms\":");
  ASSERT_CONTAINS(alog, "\"header_names\":[\"Authorization\",\"X-Extra\"]}");
  ASSERT_CONTAINS(second, "\"port\":8443,");
  ASSERT_CONTAINS(second, "\"outcome\":\"bad_headers\",\"reason\":\"callback_failed\"");
  ASSERT_CONTAINS(second, "\"header_names\":[]}");
  ASSERT(strncmp(alog, "{\"time\":\"", 9) == 0);

  ASSERT_CONTAINS(llog, "callback http://127.0.0.1:");
  ASSERT_CONTAINS(llog, "sandbox sb1, api.corp.example:443: ok in ");
  ASSERT_CONTAINS(llog, "headers: Authorization, X-Extra");
  ASSERT_CONTAINS(llog, "api.corp.example:8443: bad_headers after ");
  ASSERT_CONTAINS(llog, "header Authorization: the value has CR, LF, NUL");
  ASSERT_CONTAINS(llog, "requests fail with callback_failed");
  /* No value: neither the answers' nor the callback's own secret nor the query. */
  ASSERT_NOT_CONTAINS(alog, "cb-1");
  ASSERT_NOT_CONTAINS(llog, "cb-1");
  ASSERT_NOT_CONTAINS(alog, "crlf-secret");
  ASSERT_NOT_CONTAINS(llog, "crlf-secret");
  ASSERT_NOT_CONTAINS(alog, "cb-secret");
  ASSERT_NOT_CONTAINS(llog, "cb-secret");
  ASSERT_NOT_CONTAINS(alog, "qs-secret");
  ASSERT_NOT_CONTAINS(llog, "qs-secret");
  ASSERT_NOT_CONTAINS(llog, "two");
  free(alog);
  free(llog);
}

/* A call nobody waits for any more is audited "cancelled" with no reason: no request
 * got callback_failed from it, and the callback may be healthy. */
TEST(cancelled_call_audited_without_reason)
{
  struct proxy_audit *audit = NULL;
  struct proxy_cred_opts o;
  struct proxy_cred_wait *w;
  char apath[512];
  char *alog;
  struct fx f;
  struct res r;

  snprintf(apath, sizeof(apath), "%s/audit-cancelled.jsonl", test_tmpdir());
  fx_init(&f);
  srv_listen_tcp(&f.srv, &f.loop);
  f.srv.mode = SRV_HANG;
  fx_http_cfg(&f, 0, 5000);
  ASSERT_EQ(proxy_audit_open(&f.loop, apath, &audit), 0);
  memset(&o, 0, sizeof(o));
  o.audit = audit;
  fx_cache(&f, &o);
  memset(&r, 0, sizeof(r));
  w = get_wait(&f, "api.corp.example", 443, &r);
  run_until(&f, &f.srv.calls, 1);
  proxy_cred_cancel(w);
  run_until(&f, &f.srv.client_closed, 1);
  proxy_cred_cache_free(f.cache);
  f.cache = NULL;
  proxy_audit_close(audit);
  while (count_lines(apath) < 1)
    run_for(&f, 10);
  fx_done(&f);

  alog = slurp(apath);
  ASSERT_EQ(count_lines(apath), 1);
  ASSERT_CONTAINS(alog, "\"outcome\":\"cancelled\"");
  if (strstr(alog, "\"reason\"") != NULL)
    TEST_FAIL_("a cancelled call is audited with a reason: %s", alog);
  free(alog);
}

TEST(stats_write)
{
  struct proxy_cred_stats s;
  struct strbuf b;

  memset(&s, 0, sizeof(s));
  s.calls = 7;
  s.successes = 4;
  s.failures = 3;
  s.timeouts = 1;
  s.outcomes[PROXY_CRED_OK] = 4;
  s.outcomes[PROXY_CRED_TIMEOUT] = 1;
  s.outcomes[PROXY_CRED_BAD_STATUS] = 2;
  s.cache_hits = 11;
  strbuf_init(&b);
  proxy_cred_stats_write(&b, &s);
  ASSERT(!b.oom);
  ASSERT_CONTAINS(b.data, "# TYPE authproxy_callback_calls_total counter\n"
                          "authproxy_callback_calls_total 7\n");
  ASSERT_CONTAINS(b.data, "authproxy_callback_failures_total{reason=\"callback_failed\"} 2\n");
  ASSERT_CONTAINS(b.data, "authproxy_callback_failures_total{reason=\"callback_timeout\"} 1\n");
  ASSERT_CONTAINS(b.data, "authproxy_callback_outcomes_total{outcome=\"bad_status\"} 2\n");
  ASSERT_CONTAINS(b.data, "authproxy_callback_outcomes_total{outcome=\"busy\"} 0\n");
  ASSERT_CONTAINS(b.data, "authproxy_callback_cache_hits_total 11\n");
  strbuf_free(&b);
  ASSERT_STREQ(proxy_cred_outcome_name(PROXY_CRED_TLS), "tls_failed");
  ASSERT_STREQ(proxy_cred_outcome_name(PROXY_CRED__COUNT), "unknown");
  ASSERT_NULL(proxy_cred_outcome_reason(PROXY_CRED_OK));
  ASSERT_STREQ(proxy_cred_outcome_reason(PROXY_CRED_TIMEOUT), "callback_timeout");
  ASSERT_STREQ(proxy_cred_outcome_reason(PROXY_CRED_NOT_JSON), "callback_failed");
}

/* ---- https ------------------------------------------------------------------------------ */

struct tls_client {
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_x509_crt ca;
  mbedtls_ssl_config conf;
};

static void tls_client_init(struct tls_client *t, const char *ca_file)
{
  mbedtls_entropy_init(&t->entropy);
  mbedtls_ctr_drbg_init(&t->drbg);
  mbedtls_x509_crt_init(&t->ca);
  mbedtls_ssl_config_init(&t->conf);
  ASSERT_EQ(mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy,
                                  (const unsigned char *)"cb-test", 7), 0);
  ASSERT_EQ(mbedtls_x509_crt_parse_file(&t->ca, ca_file), 0);
  ASSERT_EQ(mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_CLIENT,
                                        MBEDTLS_SSL_TRANSPORT_STREAM,
                                        MBEDTLS_SSL_PRESET_DEFAULT), 0);
  mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
  mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
}

static void tls_client_free(struct tls_client *t)
{
  mbedtls_ssl_config_free(&t->conf);
  mbedtls_x509_crt_free(&t->ca);
  mbedtls_ctr_drbg_free(&t->drbg);
  mbedtls_entropy_free(&t->entropy);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void sh(const char *fmt, ...)
{
  char cmd[4096];
  va_list ap;
  int rc;

  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  rc = system(cmd);
  if (rc != 0)
    TEST_FAIL_("command failed (%d): %s", rc, cmd);
}

/* A CA in dir/NAME-ca.pem and a server certificate NAME.pem/.key with the given SAN. */
static void make_cert(const char *dir, const char *name, const char *san)
{
  sh("cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
     "-days 2 -subj '/CN=callback test CA %s' -keyout %s-ca.key -out %s-ca.pem "
     "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign "
     ">/dev/null 2>&1 && "
     "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=%s-server "
     "-keyout %s.key -out %s.csr >/dev/null 2>&1 && "
     "printf 'subjectAltName=%s\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' "
     "> %s.ext && "
     "openssl x509 -req -in %s.csr -CA %s-ca.pem -CAkey %s-ca.key -CAcreateserial -days 2 "
     "-extfile %s.ext -out %s.pem >/dev/null 2>&1",
     dir, name, name, name, name, name, name, san, name, name, name, name, name, name);
}

struct pyserver {
  pid_t pid;
  int port;
  char log[512];
  char mode_file[512]; /* {"default": MODE}, read at every call (py_mode) */
};

/* Starts tests/tools/fake_callback.py with TLS; waits (bounded) for its port. */
static void py_start(struct pyserver *p, const char *dir, const char *cert)
{
  char portfile[512], certp[512], keyp[512], tool[1024];
  struct timespec ts = { 0, 20 * 1000 * 1000 };
  FILE *fp;
  int i;

  snprintf(portfile, sizeof(portfile), "%s/%s.port", dir, cert);
  snprintf(p->log, sizeof(p->log), "%s/%s.jsonl", dir, cert);
  snprintf(p->mode_file, sizeof(p->mode_file), "%s/%s.mode", dir, cert);
  snprintf(certp, sizeof(certp), "%s/%s.pem", dir, cert);
  snprintf(keyp, sizeof(keyp), "%s/%s.key", dir, cert);
  snprintf(tool, sizeof(tool), "%s", test_data_path("../tools/fake_callback.py"));
  p->pid = fork();
  ASSERT_GE(p->pid, 0);
  if (p->pid == 0) {
    /* Dies with the test, even when the test aborts. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execl("/usr/bin/python3", "python3", tool, "--port-file", portfile, "--log", p->log,
          "--cert", certp, "--key", keyp, "--mode-file", p->mode_file, (char *)NULL);
    _exit(127);
  }
  for (i = 0; i < 500; i++) {
    fp = fopen(portfile, "r");
    if (fp != NULL) {
      ASSERT_EQ(fscanf(fp, "%d", &p->port), 1);
      fclose(fp);
      return;
    }
    nanosleep(&ts, NULL);
  }
  TEST_FAIL_("fake_callback.py did not start within 10 s (%s)", tool);
}

/* The server's answers from its next call on (fake_callback.py's modes). */
static void py_mode(const struct pyserver *p, const char *mode)
{
  FILE *fp = fopen(p->mode_file, "w");

  ASSERT_NOT_NULL(fp);
  fprintf(fp, "{\"default\": \"%s\"}\n", mode);
  ASSERT_EQ(fclose(fp), 0);
}

static void py_stop(struct pyserver *p)
{
  kill(p->pid, SIGTERM);
  waitpid(p->pid, NULL, 0);
}

/* Number of complete calls the python server logged. */
static int py_calls(const struct pyserver *p)
{
  char *s = slurp(p->log);
  const char *q = s;
  int n = 0;

  while ((q = strstr(q, "\"event\": \"call\"")) != NULL) {
    n++;
    q++;
  }
  free(s);
  return n;
}

static void https_case(struct tls_client *tc, const char *url_host, int port,
                       int want_ok, struct proxy_cred_stats *stats)
{
  struct proxy_cred_opts o;
  struct fx f;
  struct res r;

  fx_init(&f);
  f.cfg = parse_cfg("{\"url\": \"https://%s:%d/creds\", \"match_hosts\": [\"*\"], "
                    "\"timeout_ms\": 5000, \"headers\": [{\"name\": \"X-Callback-Auth\", "
                    "\"type\": \"plaintext\", \"value\": \"cb-secret\"}]}", url_host, port);
  f.cb = rules_config_callback(f.cfg);
  memset(&o, 0, sizeof(o));
  o.tls_conf = tc ? &tc->conf : NULL;
  o.stats = stats;
  ASSERT_EQ(proxy_cred_cache_new(&f.loop, "sb-tls", &o, &f.cache), 0);
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  if (want_ok) {
    ASSERT_EQ(r.status, 0);
    ASSERT_EQ(r.nheaders, 1);
    ASSERT_STREQ(r.name[0], "Authorization");
    ASSERT(strncmp(r.value[0], "Bearer cb-", 10) == 0);
  } else {
    ASSERT_NE(r.status, 0);
    ASSERT_STREQ(r.reason, "callback_failed");
  }
  fx_done(&f);
}

TEST(https)
{
  const char *dir = test_tmpdir();
  struct proxy_cred_stats stats;
  struct pyserver good, dnsonly;
  struct tls_client tc, other;
  char path[512];
  char *log;

  make_cert(dir, "good", "DNS:localhost,IP:127.0.0.1");
  make_cert(dir, "dnsonly", "DNS:localhost");
  py_start(&good, dir, "good");
  py_start(&dnsonly, dir, "dnsonly");
  snprintf(path, sizeof(path), "%s/good-ca.pem", dir);
  tls_client_init(&tc, path);
  snprintf(path, sizeof(path), "%s/dnsonly-ca.pem", dir);
  tls_client_init(&other, path);
  memset(&stats, 0, sizeof(stats));

  /* By name, verified against the name; by address, against an IP SAN. */
  https_case(&tc, "localhost", good.port, 1, &stats);
  https_case(&tc, "127.0.0.1", good.port, 1, &stats);
  ASSERT_EQ(py_calls(&good), 2);
  log = slurp(good.log);
  ASSERT_CONTAINS(log, "[\"X-Callback-Auth\", \"cb-secret\"]");
  ASSERT_CONTAINS(log, "\"json\": {\"host\": \"api.corp.example\", \"port\": 443, "
                       "\"sandbox\": \"sb-tls\"}");
  free(log);

  /* A CA the client does not trust: nothing is sent. */
  https_case(&other, "localhost", good.port, 0, &stats);
  ASSERT_EQ(stats.outcomes[PROXY_CRED_TLS], 1);
  /* An address the certificate does not name. */
  https_case(&other, "127.0.0.1", dnsonly.port, 0, &stats);
  ASSERT_EQ(stats.outcomes[PROXY_CRED_TLS], 2);
  /* No TLS configuration at all. */
  https_case(NULL, "localhost", good.port, 0, &stats);
  ASSERT_EQ(stats.outcomes[PROXY_CRED_TLS], 3);
  ASSERT_EQ(py_calls(&good), 2);
  ASSERT_EQ(py_calls(&dnsonly), 0);
  /* The same address with the right CA works: the refusal above was the SAN. */
  https_case(&other, "localhost", dnsonly.port, 1, &stats);
  ASSERT_EQ(py_calls(&dnsonly), 1);
  ASSERT_EQ(stats.successes, 3);

  /* An answer without a length ends with the connection: taken when close_notify
   * proves its end, refused when the TCP connection ends without it (a truncation,
   * which an attacker on the path can make). */
  py_mode(&good, "eof_framed");
  https_case(&tc, "localhost", good.port, 1, &stats);
  ASSERT_EQ(stats.successes, 4);
  py_mode(&good, "eof_framed_cut");
  https_case(&tc, "localhost", good.port, 0, &stats);
  ASSERT_EQ(stats.outcomes[PROXY_CRED_BAD_RESPONSE], 1);
  ASSERT_EQ(py_calls(&good), 4);

  py_stop(&good);
  py_stop(&dnsonly);
  tls_client_free(&tc);
  tls_client_free(&other);
}

/* A certificate from a trusted CA, for another name: the callback's host name is
 * verified, not only the chain (mbedTLS checks no name unless one is set). */
TEST(https_name_mismatch)
{
  const char *dir = test_tmpdir();
  struct proxy_cred_stats stats;
  struct pyserver srv;
  struct tls_client tc;
  char path[512];

  make_cert(dir, "othername", "DNS:other.example,IP:127.0.0.1");
  py_start(&srv, dir, "othername");
  snprintf(path, sizeof(path), "%s/othername-ca.pem", dir);
  tls_client_init(&tc, path);
  memset(&stats, 0, sizeof(stats));

  https_case(&tc, "localhost", srv.port, 0, &stats);
  ASSERT_EQ(stats.outcomes[PROXY_CRED_TLS], 1);
  ASSERT_EQ(py_calls(&srv), 0);
  /* The same server by the address its certificate names: the refusal was the name. */
  https_case(&tc, "127.0.0.1", srv.port, 1, &stats);
  ASSERT_EQ(py_calls(&srv), 1);

  py_stop(&srv);
  tls_client_free(&tc);
}

/* Freeing the cache in the middle of a TLS handshake. */
TEST(https_free_mid_handshake)
{
  const char *dir = test_tmpdir();
  struct proxy_cred_opts o;
  struct pyserver good;
  struct tls_client tc;
  char path[512];
  struct fx f;
  struct res r;

  make_cert(dir, "good", "DNS:localhost,IP:127.0.0.1");
  py_start(&good, dir, "good");
  snprintf(path, sizeof(path), "%s/good-ca.pem", dir);
  tls_client_init(&tc, path);
  fx_init(&f);
  f.cfg = parse_cfg("{\"url\": \"https://127.0.0.1:%d/\", \"match_hosts\": [\"*\"]}",
                    good.port);
  f.cb = rules_config_callback(f.cfg);
  memset(&o, 0, sizeof(o));
  o.tls_conf = &tc.conf;
  o.stats = &f.stats;
  ASSERT_EQ(proxy_cred_cache_new(&f.loop, "sb", &o, &f.cache), 0);
  memset(&r, 0, sizeof(r));
  get_wait(&f, "api.corp.example", 443, &r);
  /* Run until the connection is up and the ClientHello sent, not longer. */
  uv_run(&f.loop, UV_RUN_ONCE);
  proxy_cred_cache_free(f.cache);
  f.cache = NULL;
  ASSERT_EQ(r.status, -ECANCELED);
  fx_done(&f);
  tls_client_free(&tc);
  py_stop(&good);
}

/* A callback that is down fails every request that needs it (failures are not
 * cached): the log gets the first failure of a run and then the 10th, not one line per
 * request a sandbox sends; a success ends the run. */
TEST(failure_runs_logged_sparingly)
{
  char lpath[512], *llog, *p;
  int saved, i, lines = 0;
  struct fx f;
  struct res r;

  snprintf(lpath, sizeof(lpath), "%s/stderr.log", test_tmpdir());
  saved = test_stderr_to(lpath);

  fx_init(&f);
  srv_listen_tcp(&f.srv, &f.loop);
  fx_http_cfg(&f, 300, 2000);
  fx_cache(&f, NULL);
  for (i = 0; i < 30; i++) {
    memset(&r, 0, sizeof(r));
    srv_answer(&f.srv, "500 Internal Server Error", "", "down");
    get_sync(&f, "api.corp.example", 443, &r);
    ASSERT_NE(r.status, 0);
  }
  ASSERT_EQ(f.stats.failures, 30);
  srv_answer(&f.srv, "200 OK", "", "{\"headers\":{\"X-Token\":\"t-1234567890\"}}");
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 8443, &r);
  ASSERT_EQ(r.status, 0);
  srv_answer(&f.srv, "500 Internal Server Error", "", "down again");
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 9443, &r);
  ASSERT_NE(r.status, 0);
  fx_done(&f);
  test_stderr_back(saved);

  llog = slurp(lpath);
  for (p = llog; (p = strstr(p, "bad_status after")) != NULL; p++)
    lines++;
  /* The 1st and the 10th of the run of 30. The 1st after the success begins a new run,
   * but within 5 s of the last change logged: it is counted, not logged (see
   * alternating_outcomes_logged_sparingly). */
  ASSERT_EQ(lines, 2);
  ASSERT_CONTAINS(llog, "(1 failed calls in a row)");
  ASSERT_CONTAINS(llog, "(10 failed calls in a row)");
  free(llog);
}

/* Successful calls are as repeatable by a sandbox as failed ones: with ttl_seconds 0
 * every request calls, and with a TTL every new name or port does. The log gets the
 * 1st, 10th, 100th and every 1000th success (with the count), not one line per
 * request; the first after failures only if no change between failing and working
 * was logged in the last 5 s (here one was: the failure). */
TEST(successes_logged_sparingly)
{
  char lpath[512], *llog, *p;
  int saved, i, lines = 0;
  struct fx f;
  struct res r;

  snprintf(lpath, sizeof(lpath), "%s/stderr.log", test_tmpdir());
  saved = test_stderr_to(lpath);

  fx_init(&f);
  srv_listen_tcp(&f.srv, &f.loop);
  f.srv.mode = SRV_OK;
  fx_http_cfg(&f, 0, 2000);
  fx_cache(&f, NULL);
  for (i = 0; i < 30; i++) {
    memset(&r, 0, sizeof(r));
    get_sync(&f, "api.corp.example", 443, &r);
    ASSERT_EQ(r.status, 0);
  }
  ASSERT_EQ(f.stats.successes, 30);
  ASSERT_EQ(f.srv.calls, 30);
  srv_answer(&f.srv, "500 Internal Server Error", "", "down");
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_NE(r.status, 0);
  f.srv.mode = SRV_OK;
  memset(&r, 0, sizeof(r));
  get_sync(&f, "api.corp.example", 443, &r);
  ASSERT_EQ(r.status, 0);
  fx_done(&f);
  test_stderr_back(saved);

  llog = slurp(lpath);
  for (p = llog; (p = strstr(p, ": ok in ")) != NULL; p++)
    lines++;
  /* The 1st and the 10th of 31. */
  ASSERT_EQ(lines, 2);
  ASSERT_CONTAINS(llog, "(1 successful calls)");
  ASSERT_CONTAINS(llog, "(10 successful calls)");
  free(llog);
}

/* A sandbox can alternate between a name the callback refuses and calls it accepts (a
 * new port each time, so nothing is cached): every failure then begins a run and every
 * success ends one. Such changes are logged at most once per 5 s, with the number
 * left out; a failure after a quiet 5 s is logged again (a new outage). */
TEST(alternating_outcomes_logged_sparingly)
{
  char lpath[512], *llog, *p;
  int saved, i, ok_lines = 0, fail_lines = 0;
  struct fx f;
  struct res r;

  snprintf(lpath, sizeof(lpath), "%s/stderr.log", test_tmpdir());
  saved = test_stderr_to(lpath);

  fx_init(&f);
  srv_listen_tcp(&f.srv, &f.loop);
  fx_http_cfg(&f, 300, 2000);
  fx_cache(&f, NULL);
  for (i = 0; i < 30; i++) {
    srv_answer(&f.srv, "200 OK", "", "{\"headers\":{\"X-Token\":\"t-1234567890\"}}");
    memset(&r, 0, sizeof(r));
    get_sync(&f, "ok.corp.example", (uint16_t)(1000 + i), &r);
    ASSERT_EQ(r.status, 0);
    srv_answer(&f.srv, "403 Forbidden", "", "no credentials for this host");
    memset(&r, 0, sizeof(r));
    get_sync(&f, "refused.corp.example", 443, &r);
    ASSERT_NE(r.status, 0);
  }
  srv_answer(&f.srv, "200 OK", "", "{\"headers\":{\"X-Token\":\"t-1234567890\"}}");
  memset(&r, 0, sizeof(r));
  get_sync(&f, "ok.corp.example", 1999, &r);
  ASSERT_EQ(r.status, 0);
  ASSERT_EQ(f.stats.successes, 31);
  ASSERT_EQ(f.stats.failures, 30);
  /* Quiet for 5 s: the next failure starts an outage worth a line. */
  run_for(&f, 5100);
  srv_answer(&f.srv, "500 Internal Server Error", "", "down");
  memset(&r, 0, sizeof(r));
  get_sync(&f, "ok.corp.example", 2000, &r);
  ASSERT_NE(r.status, 0);
  fx_done(&f);
  test_stderr_back(saved);

  llog = slurp(lpath);
  for (p = llog; (p = strstr(p, ": ok in ")) != NULL; p++)
    ok_lines++;
  for (p = llog; (p = strstr(p, " after ")) != NULL; p++)
    fail_lines++;
  /* Successes: the 1st and the 10th. Failures: the first, then the one after the
   * quiet 5 s, which counts the changes left out: 29 more failures that began a run
   * and 30 successes that ended one. */
  ASSERT_EQ(ok_lines, 2);
  ASSERT_EQ(fail_lines, 2);
  ASSERT_CONTAINS(llog, "refused.corp.example:443: bad_status after");
  ASSERT_CONTAINS(llog, "ok.corp.example:2000: bad_status after");
  ASSERT_CONTAINS(llog, "(1 failed calls in a row; 59 changes between failing and working "
                        "not logged before this)");
  free(llog);
}
