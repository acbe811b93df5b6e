/*
 * The credential cache of one sandbox: fresh answers of the callback kept per
 * (host, port) for ttl_seconds in a bounded LRU hash table, single flight for lookups
 * of a key no answer is cached for, and the accounting of every call (counters, the
 * operational log, the audit log). The HTTP side is in callback_client.c.
 *
 * Lookups that wait hang off the call in flight for their key; the call's answer,
 * success or failure, goes to all of them in the order they came. Failures are never
 * cached. A sweep timer drops expired entries within a second, so credentials do not
 * linger in memory long after their TTL.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <mbedtls/sha256.h>

#include "proxy/audit.h"
#include "proxy/callback.h"
#include "proxy/callback_internal.h"
#include "proxy/log.h"
#include "proxy/strbuf.h"

#define SWEEP_MS 1000
#define EDGE_LOG_MS 5000 /* at most one line per this long for failing <-> working */
#define MAX_ENTRIES_LIMIT (1u << 20)

struct call;

struct proxy_cred_wait {
  struct call *call;
  struct proxy_cred_wait *prev, *next;
  proxy_cred_cb cb;
  void *arg;
};

/* One callback call in flight and the lookups waiting on it. */
struct call {
  struct proxy_cred_cache *cache;
  struct call *prev, *next;          /* cache->calls */
  struct proxy_cred_wait *waiters;   /* in arrival order */
  struct proxy_cred_wait *last;
  struct proxy_cred_client *client;  /* NULL once it answered or was aborted */
  uint64_t generation;               /* of the config it was made under */
  uint32_t ttl_seconds;
  uint64_t start_ms;                 /* clock_ms: the entry's TTL counts from here */
  uint64_t start_ns;                 /* uv_hrtime: latency */
  char *url;                         /* the callback URL without its query */
  uint16_t port;
  char host[RULES_MAX_NAME_LEN + 1];
};

/* One cached answer. */
struct entry {
  struct entry *hnext;               /* hash chain */
  struct entry *lprev, *lnext;       /* LRU list, most recently used first */
  struct proxy_creds *creds;
  uint64_t expires_ms;               /* clock_ms */
  uint64_t hash;
  uint16_t port;
  char host[RULES_MAX_NAME_LEN + 1];
};

struct proxy_cred_cache {
  uv_loop_t *loop;
  char *sandbox;
  size_t max_entries;
  unsigned max_calls;
  const struct mbedtls_ssl_config *tls_conf;
  struct proxy_audit *audit;
  struct proxy_cred_stats *stats;
  struct proxy_cred_stats own_stats;
  struct proxy_fd_budget *fds;       /* one per call in flight */
  struct proxy_cred_lookup *lookup;  /* of the callback's host, for every call */
  struct entry **buckets;
  size_t nbuckets;                   /* a power of two */
  size_t nentries;
  struct entry *lru_head, *lru_tail;
  struct call *calls;
  unsigned ncalls;
  uint64_t generation;               /* bumped when the callback config changes */
  unsigned char fingerprint[32];     /* SHA-256 of URL, TTL and headers */
  int have_fingerprint;
  uint64_t seed;                     /* hash seed: host names come from the sandbox */
  uint64_t busy_logged;
  uint64_t fail_run;                 /* failed calls since the last success */
  uint64_t ok_calls;                 /* successful calls */
  uint64_t edge_logged_ms;           /* uv_now of the last change logged; 0: none */
  uint64_t edges_skipped;            /* changes not logged since */
  uv_timer_t sweep;
  int freeing;
};

/* ---- names ---- */

static const char *const outcome_names[PROXY_CRED__COUNT] = {
  [PROXY_CRED_OK] = "ok",
  [PROXY_CRED_TIMEOUT] = "timeout",
  [PROXY_CRED_RESOLVE] = "resolve_failed",
  [PROXY_CRED_CONNECT] = "connect_failed",
  [PROXY_CRED_TLS] = "tls_failed",
  [PROXY_CRED_BAD_RESPONSE] = "bad_response",
  [PROXY_CRED_BAD_STATUS] = "bad_status",
  [PROXY_CRED_TOO_LARGE] = "too_large",
  [PROXY_CRED_NOT_JSON] = "not_json",
  [PROXY_CRED_BAD_HEADERS] = "bad_headers",
  [PROXY_CRED_BUSY] = "busy",
  [PROXY_CRED_CANCELLED] = "cancelled",
  [PROXY_CRED_INTERNAL] = "internal_error",
};

const char *proxy_cred_outcome_name(enum proxy_cred_outcome o)
{
  if ((unsigned)o >= PROXY_CRED__COUNT)
    return "unknown";
  return outcome_names[o];
}

const char *proxy_cred_outcome_reason(enum proxy_cred_outcome o)
{
  if (o == PROXY_CRED_OK)
    return NULL;
  return o == PROXY_CRED_TIMEOUT ? "callback_timeout" : "callback_failed";
}

/* ---- credentials ---- */

struct proxy_creds *proxy_creds_ref(struct proxy_creds *cr)
{
  cr->refs++;
  return cr;
}

void proxy_creds_unref(struct proxy_creds *cr)
{
  if (cr == NULL || --cr->refs > 0)
    return;
  /* Names, values and the struct are one allocation: wipe all of it. */
  explicit_bzero(cr, cr->alloc_size);
  free(cr);
}

/* ---- counters ---- */

static void write_counter(struct strbuf *b, const char *name, const char *help, uint64_t v)
{
  strbuf_addf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
              (unsigned long long)v);
}

void proxy_cred_stats_write(struct strbuf *b, const struct proxy_cred_stats *s)
{
  int i;

  write_counter(b, "authproxy_callback_calls_total", "Credential callback calls started.",
                s->calls);
  write_counter(b, "authproxy_callback_successes_total",
                "Credential callback calls that returned usable headers.", s->successes);
  strbuf_adds(b, "# HELP authproxy_callback_failures_total Credential lookups that failed, "
                 "by the reason requests got.\n"
                 "# TYPE authproxy_callback_failures_total counter\n");
  strbuf_addf(b, "authproxy_callback_failures_total{reason=\"callback_failed\"} %llu\n",
              (unsigned long long)(s->failures - s->timeouts));
  strbuf_addf(b, "authproxy_callback_failures_total{reason=\"callback_timeout\"} %llu\n",
              (unsigned long long)s->timeouts);
  strbuf_adds(b, "# HELP authproxy_callback_outcomes_total Credential callback results, "
                 "by outcome.\n# TYPE authproxy_callback_outcomes_total counter\n");
  for (i = 0; i < PROXY_CRED__COUNT; i++)
    strbuf_addf(b, "authproxy_callback_outcomes_total{outcome=\"%s\"} %llu\n",
                outcome_names[i], (unsigned long long)s->outcomes[i]);
  write_counter(b, "authproxy_callback_cache_hits_total",
                "Credential lookups answered from the cache.", s->cache_hits);
  write_counter(b, "authproxy_callback_joined_total",
                "Credential lookups that waited on a call already in flight.", s->joined);
  write_counter(b, "authproxy_callback_evictions_total",
                "Fresh credentials dropped because the cache was full.", s->evictions);
  write_counter(b, "authproxy_callback_latency_milliseconds_total",
                "Sum of the latencies of finished callback calls.", s->latency_ms_sum);
}

/* ---- accounting: counters, log, audit ---- */


/* What one finished call (or refused lookup) was, for record(). */
struct record {
  const char *host;
  uint16_t port;
  const char *url;                   /* not NUL-terminated: url_len bytes */
  size_t url_len;
  enum proxy_cred_outcome outcome;
  int http_status;
  uint64_t latency_ms;
  const char *detail;
  const struct proxy_creds *creds;
};

static void audit_record(struct proxy_cred_cache *c, const struct record *r)
{
  /* The reason is the answer the call's requests got; a cancelled call had none. */
  const char *reason =
    r->outcome == PROXY_CRED_CANCELLED ? NULL : proxy_cred_outcome_reason(r->outcome);
  struct strbuf b;
  size_t i;

  if (c->audit == NULL)
    return;
  strbuf_init(&b);
  strbuf_add(&b, "{", 1);
  proxy_audit_add_time(&b);
  strbuf_adds(&b, ",\"event\":\"callback\",\"sandbox\":");
  strbuf_add_json_str(&b, c->sandbox, strlen(c->sandbox));
  strbuf_adds(&b, ",\"host\":");
  strbuf_add_json_str(&b, r->host, strlen(r->host));
  strbuf_addf(&b, ",\"port\":%u,\"url\":", r->port);
  strbuf_add_json_str(&b, r->url, r->url_len);
  strbuf_addf(&b, ",\"outcome\":\"%s\"", proxy_cred_outcome_name(r->outcome));
  if (reason != NULL)
    strbuf_addf(&b, ",\"reason\":\"%s\"", reason);
  if (r->http_status > 0)
    strbuf_addf(&b, ",\"status\":%d", r->http_status);
  strbuf_addf(&b, ",\"latency_ms\":%llu,\"header_names\":[",
              (unsigned long long)r->latency_ms);
  for (i = 0; r->creds != NULL && i < r->creds->nheaders; i++) {
    if (i > 0)
      strbuf_add(&b, ",", 1);
    strbuf_add_json_str(&b, r->creds->headers[i].name, strlen(r->creds->headers[i].name));
  }
  strbuf_adds(&b, "]}");
  proxy_audit_write_buf(c->audit, &b);
  strbuf_free(&b);
}

/*
 * Whether a change between failing and working (the first failure of a run, the first
 * success after one) is worth a line: a sandbox alternating between a name the
 * callback refuses and calls it accepts makes one per request. At most one per
 * EDGE_LOG_MS; skipped[] then says how many were left out before it (or is empty).
 */
static int edge_due(struct proxy_cred_cache *c, char *skipped, size_t size)
{
  skipped[0] = '\0';
  if (!proxy_log_due(&c->edge_logged_ms, uv_now(c->loop), EDGE_LOG_MS)) {
    c->edges_skipped++;
    return 0;
  }
  if (c->edges_skipped > 0)
    snprintf(skipped, size, "; %llu changes between failing and working not logged "
                            "before this", (unsigned long long)c->edges_skipped);
  c->edges_skipped = 0;
  return 1;
}

/* Counts, logs and audits one call; never a header value. */
static void record(struct proxy_cred_cache *c, const struct record *r)
{
  struct proxy_cred_stats *s = c->stats;
  char names[512], skipped[128] = "";
  size_t i, n = 0;

  s->outcomes[r->outcome]++;
  if (r->outcome == PROXY_CRED_CANCELLED) {
    /* Nobody waits for it any more (every request went away, the sandbox detached,
     * the jail ends): no request got callback_failed from it and the callback may be
     * healthy, so it is neither a failure for alerts nor one of a failing run. The
     * outcome counter and the audit record have it. */
    audit_record(c, r);
    return;
  }
  if (r->outcome == PROXY_CRED_OK) {
    s->successes++;
  } else {
    s->failures++;
    if (r->outcome == PROXY_CRED_TIMEOUT)
      s->timeouts++;
  }
  if (r->outcome != PROXY_CRED_BUSY)
    s->latency_ms_sum += r->latency_ms;

  if (r->outcome == PROXY_CRED_OK) {
    /* A sandbox makes calls at will (every request with ttl_seconds 0, every new name
     * or port otherwise): the 1st, 10th, 100th and every 1000th success is logged, and
     * the first after failures (the callback recovered) unless such changes come too
     * fast (edge_due); the audit log has each. */
    int recovered = c->fail_run > 0;
    int nth = proxy_log_nth(++c->ok_calls);

    c->fail_run = 0;
    if ((recovered && edge_due(c, skipped, sizeof(skipped))) || nth) {
      names[0] = '\0';
      for (i = 0; i < r->creds->nheaders && n < sizeof(names); i++) {
        int k = snprintf(names + n, sizeof(names) - n, "%s%s", i ? ", " : "",
                         r->creds->headers[i].name);

        n += k > 0 ? (size_t)k : 0;
      }
      log_info("callback %.*s: sandbox %s, %s:%u: ok in %llu ms, headers: %s (%llu "
               "successful calls%s)", (int)r->url_len, r->url, c->sandbox, r->host, r->port,
               (unsigned long long)r->latency_ms, r->creds->nheaders ? names : "(none)",
               (unsigned long long)c->ok_calls, skipped);
    }
  } else if (r->outcome == PROXY_CRED_BUSY) {
    /* A sandbox hammering many names could flood the log: one line per 1000. */
    if (c->busy_logged++ % 1000 == 0)
      log_warn("callback %.*s: sandbox %s, %s:%u: %s; requests fail with callback_failed "
               "(%llu so far)", (int)r->url_len, r->url, c->sandbox, r->host, r->port, r->detail,
               (unsigned long long)c->busy_logged);
  } else {
    /* Failures are not cached, so a callback that is down fails every request that
     * needs it, as fast as the sandbox sends them: the first failure of a run is
     * logged (unless runs begin too fast: edge_due), then the 10th, the 100th and
     * every 1000th (metrics and the audit log count each). */
    ++c->fail_run;
    if (proxy_log_nth(c->fail_run) &&
        (c->fail_run > 1 || edge_due(c, skipped, sizeof(skipped))))
      log_warn("callback %.*s: sandbox %s, %s:%u: %s after %llu ms: %s; requests fail "
               "with %s (%llu failed calls in a row%s)",
               (int)r->url_len, r->url, c->sandbox, r->host, r->port,
               proxy_cred_outcome_name(r->outcome), (unsigned long long)r->latency_ms,
               r->detail, proxy_cred_outcome_reason(r->outcome),
               (unsigned long long)c->fail_run, skipped);
  }
  audit_record(c, r);
}

/* ---- the table ---- */

static uint64_t key_hash(const struct proxy_cred_cache *c, const char *host, uint16_t port)
{
  uint64_t h = 0xcbf29ce484222325ull ^ c->seed;
  const unsigned char *p;

  /* FNV-1a with a random seed: names come from the sandbox, and although chains are
   * bounded by max_entries anyway, a seed keeps them from being lined up at will. */
  for (p = (const unsigned char *)host; *p != '\0'; p++)
    h = (h ^ *p) * 0x100000001b3ull;
  h = (h ^ (port & 0xff)) * 0x100000001b3ull;
  h = (h ^ (port >> 8)) * 0x100000001b3ull;
  return h ^ (h >> 29);
}

static struct entry **bucket(struct proxy_cred_cache *c, uint64_t hash)
{
  return &c->buckets[hash & (c->nbuckets - 1)];
}

static struct entry *entry_find(struct proxy_cred_cache *c, const char *host, uint16_t port,
                                uint64_t hash)
{
  struct entry *e;

  for (e = *bucket(c, hash); e != NULL; e = e->hnext)
    if (e->hash == hash && e->port == port && strcmp(e->host, host) == 0)
      return e;
  return NULL;
}

static void lru_unlink(struct proxy_cred_cache *c, struct entry *e)
{
  if (e->lprev != NULL)
    e->lprev->lnext = e->lnext;
  else
    c->lru_head = e->lnext;
  if (e->lnext != NULL)
    e->lnext->lprev = e->lprev;
  else
    c->lru_tail = e->lprev;
  e->lprev = e->lnext = NULL;
}

static void lru_push(struct proxy_cred_cache *c, struct entry *e)
{
  e->lprev = NULL;
  e->lnext = c->lru_head;
  if (c->lru_head != NULL)
    c->lru_head->lprev = e;
  c->lru_head = e;
  if (c->lru_tail == NULL)
    c->lru_tail = e;
}

static void entry_remove(struct proxy_cred_cache *c, struct entry *e)
{
  struct entry **pp;

  for (pp = bucket(c, e->hash); *pp != e; pp = &(*pp)->hnext)
    ;
  *pp = e->hnext;
  lru_unlink(c, e);
  c->nentries--;
  proxy_creds_unref(e->creds);
  free(e);
  if (c->nentries == 0 && !c->freeing)
    uv_timer_stop(&c->sweep);
}

static void flush_entries(struct proxy_cred_cache *c)
{
  while (c->lru_head != NULL)
    entry_remove(c, c->lru_head);
}

/*
 * Milliseconds on CLOCK_BOOTTIME, which TTLs count on: unlike the loop's clock
 * (CLOCK_MONOTONIC), it goes on while the host is suspended, so a laptop that slept
 * an hour does not send credentials its callback gave for five minutes.
 */
static uint64_t clock_ms(void)
{
  struct timespec ts;

  if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
    clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sweep_cb(uv_timer_t *t)
{
  struct proxy_cred_cache *c = t->data;
  uint64_t now = clock_ms();
  struct entry *e, *prev;

  for (e = c->lru_tail; e != NULL; e = prev) {
    prev = e->lprev;
    if (now >= e->expires_ms)
      entry_remove(c, e);
  }
}

/* Caches creds (takes a reference) for the call's key. */
static void cache_put(struct proxy_cred_cache *c, const struct call *call,
                      struct proxy_creds *creds)
{
  uint64_t hash = key_hash(c, call->host, call->port);
  struct entry *e;

  e = entry_find(c, call->host, call->port, hash);
  if (e != NULL)
    entry_remove(c, e);
  e = calloc(1, sizeof(*e));
  if (e == NULL)
    return; /* not cached: the next lookup calls again */
  if (c->nentries >= c->max_entries) {
    if (clock_ms() < c->lru_tail->expires_ms)
      c->stats->evictions++;
    entry_remove(c, c->lru_tail);
  }
  e->hash = hash;
  e->port = call->port;
  memcpy(e->host, call->host, sizeof(e->host));
  e->creds = proxy_creds_ref(creds);
  e->expires_ms = call->start_ms + (uint64_t)call->ttl_seconds * 1000;
  e->hnext = *bucket(c, hash);
  *bucket(c, hash) = e;
  lru_push(c, e);
  c->nentries++;
  if (!uv_is_active((uv_handle_t *)&c->sweep))
    uv_timer_start(&c->sweep, sweep_cb, SWEEP_MS, SWEEP_MS);
}

/* ---- calls ---- */

static int cacheable(const struct proxy_cred_cache *c, const struct call *call)
{
  return call->ttl_seconds > 0 && call->generation == c->generation && !c->freeing;
}

static void call_unlink(struct proxy_cred_cache *c, struct call *call)
{
  if (call->prev != NULL)
    call->prev->next = call->next;
  else
    c->calls = call->next;
  if (call->next != NULL)
    call->next->prev = call->prev;
  call->prev = call->next = NULL;
  c->ncalls--;
  proxy_fd_budget_put(c->fds);
}

static void waiter_unlink(struct call *call, struct proxy_cred_wait *w)
{
  if (w->prev != NULL)
    w->prev->next = w->next;
  else
    call->waiters = w->next;
  if (w->next != NULL)
    w->next->prev = w->prev;
  else
    call->last = w->prev;
  w->prev = w->next = NULL;
}

/*
 * The call is over: account for it, cache a success, answer every waiter, free it.
 * A waiter's callback may look up again (a success is already cached), cancel other
 * waiters, or free the cache; the call stays valid until the last one has run.
 */
static void call_complete(struct call *call, const struct proxy_cred_result *res)
{
  struct proxy_cred_cache *c = call->cache;
  const char *reason = proxy_cred_outcome_reason(res->outcome);
  struct proxy_cred_wait *w;
  struct record r;
  int status = res->outcome == PROXY_CRED_OK ? 0 : (res->err < 0 ? res->err : -EPROTO);
  proxy_cred_cb cb;
  void *arg;

  call_unlink(c, call);
  memset(&r, 0, sizeof(r));
  r.host = call->host;
  r.port = call->port;
  r.url = call->url;
  r.url_len = strlen(call->url);
  r.outcome = res->outcome;
  r.http_status = res->http_status;
  r.latency_ms = (uv_hrtime() - call->start_ns) / 1000000;
  r.detail = res->detail;
  r.creds = res->creds;
  record(c, &r);
  if (res->outcome == PROXY_CRED_OK && cacheable(c, call))
    cache_put(c, call, res->creds);
  if (res->outcome == PROXY_CRED_TIMEOUT)
    status = -ETIMEDOUT;
  while (call->waiters != NULL) {
    w = call->waiters;
    waiter_unlink(call, w);
    cb = w->cb;
    arg = w->arg;
    free(w);
    cb(arg, status, reason, res->outcome == PROXY_CRED_OK ? res->creds : NULL);
  }
  free(call->url);
  free(call);
}

static void client_done(void *arg, const struct proxy_cred_result *res)
{
  struct call *call = arg;

  call->client = NULL;
  call_complete(call, res);
}

/* Aborts a call in flight and answers its waiters -ECANCELED. */
static void call_abort(struct call *call, const char *why)
{
  struct proxy_cred_result res;

  proxy_cred_client_abort(call->client);
  call->client = NULL;
  memset(&res, 0, sizeof(res));
  res.outcome = PROXY_CRED_CANCELLED;
  res.err = -ECANCELED;
  res.detail = why;
  call_complete(call, &res);
}

static struct call *call_find(struct proxy_cred_cache *c, const char *host, uint16_t port)
{
  struct call *call;

  for (call = c->calls; call != NULL; call = call->next)
    if (call->generation == c->generation && call->port == port &&
        strcmp(call->host, host) == 0)
      return call;
  return NULL;
}

static int call_start(struct proxy_cred_cache *c, const struct rules_callback *cfg,
                      const char *host, uint16_t port, struct call **out)
{
  struct proxy_cred_client_params p;
  struct call *call;
  int r;

  call = calloc(1, sizeof(*call));
  if (call == NULL)
    return -ENOMEM;
  /* The query may carry a token: logs and audit name the URL without it. */
  call->url = strndup(cfg->url, strcspn(cfg->url, "?"));
  if (call->url == NULL) {
    free(call);
    return -ENOMEM;
  }
  call->cache = c;
  call->generation = c->generation;
  call->ttl_seconds = cfg->ttl_seconds;
  call->port = port;
  memcpy(call->host, host, strlen(host) + 1);
  call->start_ms = clock_ms();
  call->start_ns = uv_hrtime();

  memset(&p, 0, sizeof(p));
  p.cfg = cfg;
  p.tls_conf = c->tls_conf;
  p.sandbox = c->sandbox;
  p.host = host;
  p.port = port;
  p.done = client_done;
  p.arg = call;
  p.lookup = c->lookup;
  r = proxy_cred_client_start(c->loop, &p, &call->client);
  if (r < 0) {
    free(call->url);
    free(call);
    return r;
  }
  call->next = c->calls;
  if (c->calls != NULL)
    c->calls->prev = call;
  c->calls = call;
  c->ncalls++;
  c->stats->calls++;
  *out = call;
  return 0;
}

/* ---- config identity ---- */

static void hash_field(mbedtls_sha256_context *h, const void *p, size_t len)
{
  uint64_t n = len;

  mbedtls_sha256_update_ret(h, (const unsigned char *)&n, sizeof(n));
  mbedtls_sha256_update_ret(h, p, len);
}

/* Drops every entry when the callback config differs from the last lookup's. */
static void check_config(struct proxy_cred_cache *c, const struct rules_callback *cfg)
{
  mbedtls_sha256_context h;
  unsigned char fp[32];
  size_t i;

  mbedtls_sha256_init(&h);
  mbedtls_sha256_starts_ret(&h, 0);
  hash_field(&h, cfg->url, strlen(cfg->url));
  hash_field(&h, &cfg->ttl_seconds, sizeof(cfg->ttl_seconds));
  for (i = 0; i < cfg->nheaders; i++) {
    hash_field(&h, cfg->headers[i].name, strlen(cfg->headers[i].name));
    hash_field(&h, cfg->headers[i].value, cfg->headers[i].value_len);
  }
  mbedtls_sha256_finish_ret(&h, fp);
  mbedtls_sha256_free(&h);
  if (c->have_fingerprint && memcmp(fp, c->fingerprint, sizeof(fp)) == 0)
    return;
  if (c->have_fingerprint) {
    log_info("callback of sandbox %s changed: %zu cached credential set(s) dropped",
             c->sandbox, c->nentries);
    flush_entries(c);
    c->generation++;
  }
  memcpy(c->fingerprint, fp, sizeof(fp));
  c->have_fingerprint = 1;
}

/* ---- the cache ---- */

int proxy_cred_cache_new(uv_loop_t *loop, const char *sandbox,
                         const struct proxy_cred_opts *opts, struct proxy_cred_cache **out)
{
  struct proxy_cred_opts defaults;
  struct proxy_cred_cache *c;
  size_t n;

  *out = NULL;
  if (opts == NULL) {
    memset(&defaults, 0, sizeof(defaults));
    opts = &defaults;
  }
  if (sandbox == NULL || opts->max_entries > MAX_ENTRIES_LIMIT)
    return -EINVAL;
  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->loop = loop;
  c->max_entries = opts->max_entries ? opts->max_entries : PROXY_CRED_DEFAULT_ENTRIES;
  c->max_calls = opts->max_calls ? opts->max_calls : PROXY_CRED_DEFAULT_CALLS;
  c->tls_conf = opts->tls_conf;
  c->audit = opts->audit;
  c->stats = opts->stats ? opts->stats : &c->own_stats;
  c->fds = opts->fds;
  for (n = 16; n < c->max_entries; n *= 2)
    ;
  c->nbuckets = n;
  c->buckets = calloc(n, sizeof(*c->buckets));
  c->sandbox = strdup(sandbox);
  if (c->buckets != NULL && c->sandbox != NULL)
    (void)proxy_cred_lookup_new(loop, &c->lookup);
  if (c->lookup == NULL) {
    free(c->buckets);
    free(c->sandbox);
    free(c);
    return -ENOMEM;
  }
  if (uv_random(NULL, NULL, &c->seed, sizeof(c->seed), 0, NULL) != 0)
    c->seed = uv_hrtime();
  uv_timer_init(loop, &c->sweep);
  c->sweep.data = c;
  /* Sweeping alone must not keep the loop running. */
  uv_unref((uv_handle_t *)&c->sweep);
  *out = c;
  return 0;
}

static void sweep_closed(uv_handle_t *h)
{
  struct proxy_cred_cache *c = h->data;

  free(c->buckets);
  free(c->sandbox);
  free(c);
}

void proxy_cred_cache_free(struct proxy_cred_cache *c)
{
  if (c == NULL || c->freeing)
    return;
  c->freeing = 1;
  while (c->calls != NULL)
    call_abort(c->calls, "the credential cache was freed (sandbox closed or its config "
                         "replaced)");
  flush_entries(c);
  proxy_cred_lookup_free(c->lookup);
  c->lookup = NULL;
  uv_close((uv_handle_t *)&c->sweep, sweep_closed);
}

size_t proxy_cred_cache_size(const struct proxy_cred_cache *c)
{
  return c->nentries;
}

int proxy_cred_get(struct proxy_cred_cache *c, const struct rules_callback *cfg,
                   const char *host, uint16_t port, proxy_cred_cb cb, void *arg,
                   struct proxy_cred_wait **wait)
{
  struct proxy_cred_wait *w;
  struct proxy_creds *creds;
  struct call *call;
  struct entry *e;
  struct record r;
  uint64_t hash;
  size_t hlen;
  int ret;

  *wait = NULL;
  if (c->freeing)
    return -ECANCELED;
  hlen = host != NULL ? strlen(host) : 0;
  if (hlen == 0 || hlen > RULES_MAX_NAME_LEN || cfg == NULL || cb == NULL)
    return -EINVAL;
  check_config(c, cfg);

  hash = key_hash(c, host, port);
  e = entry_find(c, host, port, hash);
  if (e != NULL && clock_ms() < e->expires_ms) {
    lru_unlink(c, e);
    lru_push(c, e);
    c->stats->cache_hits++;
    /* The callback may free the cache and with it the entry: hold the creds. */
    creds = proxy_creds_ref(e->creds);
    cb(arg, 0, NULL, creds);
    proxy_creds_unref(creds);
    return 0;
  }
  if (e != NULL)
    entry_remove(c, e);

  w = calloc(1, sizeof(*w));
  if (w == NULL)
    return -ENOMEM;
  call = call_find(c, host, port);
  if (call != NULL) {
    c->stats->joined++;
  } else if (c->ncalls >= c->max_calls || proxy_fd_budget_take(c->fds) != 0) {
    free(w);
    memset(&r, 0, sizeof(r));
    r.host = host;
    r.port = port;
    /* The query may carry a token: logs and audit name the URL without it. */
    r.url = cfg->url;
    r.url_len = strcspn(cfg->url, "?");
    r.outcome = PROXY_CRED_BUSY;
    r.detail = c->ncalls >= c->max_calls
                   ? "too many callback calls in flight; nothing was sent"
                   : "all sandboxes' callback calls in flight hold the file descriptors "
                     "kept for them; nothing was sent (raise RLIMIT_NOFILE)";
    record(c, &r);
    cb(arg, -EBUSY, proxy_cred_outcome_reason(PROXY_CRED_BUSY), NULL);
    return 0;
  } else {
    ret = call_start(c, cfg, host, port, &call);
    if (ret < 0) {
      proxy_fd_budget_put(c->fds);
      free(w);
      return ret;
    }
  }
  w->call = call;
  w->cb = cb;
  w->arg = arg;
  w->prev = call->last;
  if (call->last != NULL)
    call->last->next = w;
  else
    call->waiters = w;
  call->last = w;
  *wait = w;
  return 0;
}

void proxy_cred_cancel(struct proxy_cred_wait *w)
{
  struct call *call;

  if (w == NULL)
    return;
  call = w->call;
  waiter_unlink(call, w);
  free(w);
  /* Nobody waits and nobody would reuse the answer: stop calling. */
  if (call->waiters == NULL && call->client != NULL && !cacheable(call->cache, call))
    call_abort(call, "every waiting request went away and the answer would not be "
                     "cached");
}
