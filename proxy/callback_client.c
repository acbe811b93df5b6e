/*
 * The credential callback's HTTP client: one POST per call, over TCP (a host name
 * resolved with uv_getaddrinfo, one lookup of it at a time per cache that the calls
 * waiting for it share, and each address tried in turn; literal addresses used
 * directly), TLS on top for https:// (mbedTLS with BIO callbacks over libuv buffers),
 * or a unix socket. The answer is handed to callback_answer.c as it arrives. One
 * timer bounds the whole call: resolution, connect, handshake, request and answer.
 *
 * mbedTLS's BIO callbacks only record a write error; the code that called mbedTLS acts
 * on it once mbedTLS has returned. So `finish`, which frees the TLS context, never runs
 * inside mbedTLS.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mbedtls/asn1.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "proxy/callback_internal.h"
#include "proxy/proxy.h"
#include "proxy/sockready.h"
#include "proxy/strbuf.h"

#ifndef AUTHPROXY_VERSION
#define AUTHPROXY_VERSION "dev"
#endif

#define IO_BUF_SIZE 16384
#define MAX_ADDRS 16 /* of a resolved name, tried in turn */
/* The shortest time a connect attempt gets before the next address is tried, unless
 * the call has less left (attempt_ms). */
#define MIN_ATTEMPT_MS 1000
/* How many times a call's timeout, finding the callback's answer waiting behind a
 * late loop, starts anew (answer_waiting): the connect, the TLS handshake and the
 * answer, each once. */
#define LATE_MAX 3

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

enum phase { PHASE_RESOLVE, PHASE_CONNECT, PHASE_HANDSHAKE, PHASE_ANSWER };

static const char *const phase_names[] = {
  "resolving the callback's host",
  "connecting",
  "in the TLS handshake",
  "waiting for the answer",
};

/* One uv_write of bytes copied out of the caller's buffer; wiped when done. */
struct wreq {
  uv_write_t req;
  struct proxy_cred_client *cl;
  size_t len;
  char data[];
};

struct proxy_cred_client {
  uv_loop_t *loop;
  proxy_cred_client_done_cb done_cb; /* NULL once called or aborted */
  void *arg;
  enum rules_callback_kind kind;
  char host[RULES_MAX_NAME_LEN + 1];  /* http(s): dialled, SNI, verified */
  uint16_t port;
  char *socket_path;                  /* unix */
  const mbedtls_ssl_config *tls_conf;
  uint32_t timeout_ms;
  uint64_t deadline_ms;               /* loop time when the call times out */
  enum phase phase;

  char *req;                          /* the request: holds secret header values */
  size_t req_len;

  uv_timer_t timer;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } io;
  uv_connect_t connect;
  struct proxy_cred_lookup *lookup;   /* resolves the host (shared) */
  struct proxy_cred_client *lk_prev, *lk_next; /* waiting for lookup's answer */
  struct sockaddr_storage addrs[MAX_ADDRS]; /* resolved addresses */
  size_t naddrs;
  size_t next_addr;                   /* the next one to try */
  struct sockaddr_storage literal;    /* a literal address in the URL */
  int have_literal;                   /* not tried yet */
  int last_err;                       /* of the last failed connect */

  mbedtls_ssl_context *ssl;           /* https only */
  int check_ip;                       /* host is an address: verify an IP SAN */
  int handshake_done;
  const unsigned char *rx;            /* ciphertext lent for one read callback */
  size_t rx_len;
  int write_err;                      /* a write failed inside a BIO callback */

  struct proxy_cred_answer ans;

  int has_deferred;                   /* a failure to report from the timer */
  enum proxy_cred_outcome deferred;
  int deferred_err;

  unsigned late;                      /* timeouts started anew for a late loop */
  unsigned handles;                   /* open handles: timer, io */
  unsigned reqs;                      /* getaddrinfo, connect and writes in flight */
  unsigned starting : 1;              /* inside proxy_cred_client_start */
  unsigned timer_open : 1;
  unsigned io_open : 1;
  unsigned lk_waiting : 1;            /* on lookup's list */
  unsigned finished : 1;

  char detail[256];
  char rbuf[IO_BUF_SIZE];             /* read buffer (ciphertext or plaintext) */
  char pbuf[IO_BUF_SIZE];             /* TLS plaintext */
};

static void finish(struct proxy_cred_client *cl, enum proxy_cred_outcome o, int err,
                   struct proxy_creds *creds);
static void next_address(struct proxy_cred_client *cl);

/* ---- small helpers ---- */

static void wipe_free(char *p, size_t len)
{
  if (p == NULL)
    return;
  explicit_bzero(p, len);
  free(p);
}

static void set_detail(struct proxy_cred_client *cl, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void set_detail(struct proxy_cred_client *cl, const char *fmt, va_list ap)
{
  vsnprintf(cl->detail, sizeof(cl->detail), fmt, ap);
}

static void timer_cb(uv_timer_t *t);
static void reconnect_closed(uv_handle_t *h);

static void fail(struct proxy_cred_client *cl, enum proxy_cred_outcome o, int err,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Ends the call with a failure; the detail names what failed (never a value). The
 * first failure wins. Inside proxy_cred_client_start, where the caller does not hold
 * the client yet, the failure is reported from the loop through the timer.
 */
static void fail(struct proxy_cred_client *cl, enum proxy_cred_outcome o, int err,
                 const char *fmt, ...)
{
  va_list ap;

  if (cl->finished || cl->has_deferred)
    return;
  va_start(ap, fmt);
  set_detail(cl, fmt, ap);
  va_end(ap);
  if (cl->starting) {
    cl->has_deferred = 1;
    cl->deferred = o;
    cl->deferred_err = err;
    uv_timer_start(&cl->timer, timer_cb, 0, 0);
    return;
  }
  finish(cl, o, err, NULL);
}

/* ---- teardown ---- */

static void release(struct proxy_cred_client *cl)
{
  free(cl->socket_path);
  /* The read buffers held the answer; wipe the whole struct. */
  explicit_bzero(cl, sizeof(*cl));
  free(cl);
}

static void maybe_release(struct proxy_cred_client *cl)
{
  if (cl->finished && cl->handles == 0 && cl->reqs == 0)
    release(cl);
}

static void handle_closed(uv_handle_t *h)
{
  struct proxy_cred_client *cl = h->data;

  cl->handles--;
  maybe_release(cl);
}

static void lookup_unwait(struct proxy_cred_client *cl);

/* Closes everything (idempotent): handles, the wait for a resolution, TLS, buffers.
 * Write and connect requests complete with UV_ECANCELED when their handle closes; a
 * lookup goes on for the other calls waiting for it, or completes unused. */
static void shut(struct proxy_cred_client *cl)
{
  if (cl->timer_open) {
    cl->timer_open = 0;
    uv_close((uv_handle_t *)&cl->timer, handle_closed);
  }
  if (cl->io_open) {
    cl->io_open = 0;
    uv_close(&cl->io.handle, handle_closed);
  }
  if (cl->lk_waiting)
    lookup_unwait(cl);
  if (cl->ssl != NULL) {
    mbedtls_ssl_free(cl->ssl);
    free(cl->ssl);
    cl->ssl = NULL;
  }
  wipe_free(cl->req, cl->req_len);
  cl->req = NULL;
  cl->req_len = 0;
  proxy_cred_answer_free(&cl->ans);
}

static void finish(struct proxy_cred_client *cl, enum proxy_cred_outcome o, int err,
                   struct proxy_creds *creds)
{
  proxy_cred_client_done_cb cb = cl->done_cb;
  struct proxy_cred_result res;

  if (cl->finished)
    return;
  cl->finished = 1;
  cl->done_cb = NULL;
  shut(cl);
  if (cb != NULL) {
    memset(&res, 0, sizeof(res));
    res.outcome = o;
    res.err = err;
    res.http_status = cl->ans.status;
    res.creds = creds;
    res.detail = cl->detail;
    cb(cl->arg, &res);
  }
  /* Handles are closing, so this never releases here; release runs from their
   * close callbacks. */
  maybe_release(cl);
}

void proxy_cred_client_abort(struct proxy_cred_client *cl)
{
  if (cl == NULL || cl->finished)
    return;
  cl->done_cb = NULL;
  snprintf(cl->detail, sizeof(cl->detail), "aborted");
  finish(cl, PROXY_CRED_CANCELLED, -ECANCELED, NULL);
}

static uint64_t time_left(const struct proxy_cred_client *cl)
{
  uint64_t now = uv_now(cl->loop);

  return cl->deadline_ms > now ? cl->deadline_ms - now : 0;
}

/* What the callback answered in time, waiting behind a late loop: 1 (connected, or
 * something to read), -1 (its connect failed) or 0 (proxy_socket_answered). */
static int answer_waiting(struct proxy_cred_client *cl)
{
  if (!cl->io_open)
    return 0;
  return proxy_socket_answered(&cl->io.handle, cl->phase == PHASE_CONNECT);
}

static void timer_cb(uv_timer_t *t)
{
  struct proxy_cred_client *cl = t->data;

  if (cl->has_deferred) {
    finish(cl, cl->deferred, cl->deferred_err, NULL);
    return;
  }
  /* The loop is late, not the callback: what it answered in time is read first, and
   * the rest of the call gets its whole timeout from now. A few times at most, so that
   * a callback that trickles cannot stretch the call without end. A connect that
   * failed in time gets no more time, but its error, not a timeout, is the call's
   * outcome once the loop has read it (a turn later: a timer of 0 would run again at
   * once). */
  if (cl->late < LATE_MAX) {
    int answered = answer_waiting(cl);

    if (answered != 0) {
      cl->late++;
      if (answered > 0)
        cl->deadline_ms = uv_now(cl->loop) + cl->timeout_ms;
      uv_timer_start(&cl->timer, timer_cb, answered > 0 ? cl->timeout_ms : 1, 0);
      return;
    }
  }
  /* This address's share of the timeout is over: the next one (reconnect_closed). */
  if (cl->phase == PHASE_CONNECT && cl->kind != RULES_CB_UNIX &&
      cl->next_addr < cl->naddrs && time_left(cl) > 0 && cl->io_open) {
    cl->last_err = UV_ETIMEDOUT;
    cl->io_open = 0;
    uv_close(&cl->io.handle, reconnect_closed);
    return;
  }
  fail(cl, PROXY_CRED_TIMEOUT, -ETIMEDOUT, "no answer within %" PRIu32 " ms (%s)",
       cl->timeout_ms, phase_names[cl->phase]);
}

/* ---- the answer ---- */

static void answer_failed(struct proxy_cred_client *cl)
{
  fail(cl, cl->ans.outcome, cl->ans.err, "%s", cl->ans.detail);
}

/* The complete 2xx answer is in cl->ans: check it and finish the call. */
static void answer_done(struct proxy_cred_client *cl)
{
  struct proxy_creds *creds = NULL;

  if (proxy_cred_answer_creds(&cl->ans, &creds) != PROXY_CRED_ANSWER_DONE) {
    answer_failed(cl);
    return;
  }
  finish(cl, PROXY_CRED_OK, 0, creds);
  proxy_creds_unref(creds);
}

/* Plaintext of the answer arrived. */
static void http_input(struct proxy_cred_client *cl, const char *data, size_t len)
{
  int r;

  if (cl->finished)
    return;
  r = proxy_cred_answer_feed(&cl->ans, data, len);
  if (r == PROXY_CRED_ANSWER_DONE)
    answer_done(cl);
  else if (r == PROXY_CRED_ANSWER_FAILED)
    answer_failed(cl);
}

/* The callback closed its side. clean: TLS close_notify was received. */
static void on_eof(struct proxy_cred_client *cl, int clean)
{
  int r;

  if (cl->ssl != NULL && !cl->handshake_done) {
    fail(cl, PROXY_CRED_TLS, -ECONNRESET,
         "the callback closed the connection during the TLS handshake");
    return;
  }
  r = proxy_cred_answer_eof(&cl->ans, cl->ssl != NULL, clean);
  if (r == PROXY_CRED_ANSWER_DONE)
    answer_done(cl);
  else
    answer_failed(cl);
}

/* ---- writing ---- */

static void write_cb(uv_write_t *req, int status)
{
  struct wreq *w = container_of(req, struct wreq, req);
  struct proxy_cred_client *cl = w->cl;

  cl->reqs--;
  explicit_bzero(w->data, w->len);
  free(w);
  if (cl->finished) {
    maybe_release(cl);
    return;
  }
  if (status < 0)
    fail(cl, PROXY_CRED_CONNECT, status, "write: %s", uv_strerror(status));
}

/* Queues a copy of data on the connection. Returns 0 or a negative error. */
static int write_bytes(struct proxy_cred_client *cl, const void *data, size_t len)
{
  struct wreq *w;
  uv_buf_t b;
  int r;

  w = malloc(sizeof(*w) + len);
  if (w == NULL)
    return -ENOMEM;
  w->cl = cl;
  w->len = len;
  memcpy(w->data, data, len);
  b = uv_buf_init(w->data, (unsigned)len);
  r = uv_write(&w->req, &cl->io.stream, &b, 1, write_cb);
  if (r < 0) {
    explicit_bzero(w->data, len);
    free(w);
    return r;
  }
  cl->reqs++;
  return 0;
}

/* ---- TLS ---- */

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
  struct proxy_cred_client *cl = ctx;
  int r;

  if (cl->write_err != 0)
    return MBEDTLS_ERR_NET_SEND_FAILED;
  r = write_bytes(cl, buf, len);
  if (r < 0) {
    cl->write_err = r;
    return MBEDTLS_ERR_NET_SEND_FAILED;
  }
  return (int)len;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
  struct proxy_cred_client *cl = ctx;
  size_t n;

  if (cl->rx_len == 0)
    return MBEDTLS_ERR_SSL_WANT_READ;
  n = len < cl->rx_len ? len : cl->rx_len;
  memcpy(buf, cl->rx, n);
  cl->rx += n;
  cl->rx_len -= n;
  return (int)n;
}

/* 1 if the peer certificate has an iPAddress SAN equal to the address cl->host
 * (mbedTLS 2.28 matches names only against dNSName SANs). */
static int peer_has_ip_san(const struct proxy_cred_client *cl)
{
  const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(cl->ssl);
  const mbedtls_x509_sequence *san;
  unsigned char addr[16];
  size_t alen;

  if (inet_pton(AF_INET, cl->host, addr) == 1)
    alen = 4;
  else if (inet_pton(AF_INET6, cl->host, addr) == 1)
    alen = 16;
  else
    return 0;
  if (crt == NULL)
    return 0;
  for (san = &crt->subject_alt_names; san != NULL; san = san->next) {
    if (san->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && san->buf.len == alen &&
        memcmp(san->buf.p, addr, alen) == 0)
      return 1;
  }
  return 0;
}

static void tls_failed(struct proxy_cred_client *cl, int r)
{
  char msg[128], info[256] = "";
  uint32_t flags;

  if (cl->write_err != 0) {
    fail(cl, PROXY_CRED_CONNECT, cl->write_err, "write: %s", uv_strerror(cl->write_err));
    return;
  }
  mbedtls_strerror(r, msg, sizeof(msg));
  flags = mbedtls_ssl_get_verify_result(cl->ssl);
  if (flags != 0 && flags != (uint32_t)-1) {
    mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
    info[strcspn(info, "\n")] = '\0';
  }
  fail(cl, PROXY_CRED_TLS, -EPROTO, "TLS with %s: %s%s%s; nothing was sent", cl->host, msg,
       info[0] ? ": " : "", info);
}

/* Sends the request through TLS, then wipes it. Returns 0 or -1 (finished). */
static int tls_send_request(struct proxy_cred_client *cl)
{
  size_t off = 0;
  int r;

  while (off < cl->req_len) {
    r = mbedtls_ssl_write(cl->ssl, (const unsigned char *)cl->req + off, cl->req_len - off);
    if (r <= 0) {
      /* The send BIO never refuses, so WANT_WRITE cannot happen: any r <= 0 fails. */
      tls_failed(cl, r);
      return -1;
    }
    off += (size_t)r;
  }
  wipe_free(cl->req, cl->req_len);
  cl->req = NULL;
  cl->req_len = 0;
  return 0;
}

/* Drives the handshake, the request and the answer with the ciphertext in cl->rx. */
static void tls_pump(struct proxy_cred_client *cl)
{
  int r;

  if (!cl->handshake_done) {
    r = mbedtls_ssl_handshake(cl->ssl);
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
      if (cl->write_err != 0)
        tls_failed(cl, r);
      return;
    }
    if (r != 0) {
      tls_failed(cl, r);
      return;
    }
    /* VERIFY_REQUIRED fails the handshake already; checked again so that a
     * configuration with optional verification can never leak the request. */
    if (mbedtls_ssl_get_verify_result(cl->ssl) != 0) {
      tls_failed(cl, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED);
      return;
    }
    if (cl->check_ip && !peer_has_ip_san(cl)) {
      fail(cl, PROXY_CRED_TLS, -EPROTO,
           "TLS with %s: the certificate has no IP address SAN for it; nothing was sent",
           cl->host);
      return;
    }
    cl->handshake_done = 1;
    cl->phase = PHASE_ANSWER;
    if (tls_send_request(cl) != 0)
      return;
  }
  for (;;) {
    r = mbedtls_ssl_read(cl->ssl, (unsigned char *)cl->pbuf, sizeof(cl->pbuf));
    if (r > 0) {
      http_input(cl, cl->pbuf, (size_t)r);
      explicit_bzero(cl->pbuf, (size_t)r);
      if (cl->finished)
        return;
      continue;
    }
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
      return;
    if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
      on_eof(cl, 1);
      return;
    }
    tls_failed(cl, r);
    return;
  }
}

static void tls_begin(struct proxy_cred_client *cl)
{
  unsigned char addr[16];
  int r;

  cl->ssl = calloc(1, sizeof(*cl->ssl));
  if (cl->ssl == NULL) {
    fail(cl, PROXY_CRED_INTERNAL, -ENOMEM, "out of memory");
    return;
  }
  mbedtls_ssl_init(cl->ssl);
  r = mbedtls_ssl_setup(cl->ssl, cl->tls_conf);
  if (r != 0) {
    tls_failed(cl, r);
    return;
  }
  if (inet_pton(AF_INET, cl->host, addr) == 1 || inet_pton(AF_INET6, cl->host, addr) == 1) {
    /* No name to verify: the address is checked against IP SANs after the
     * handshake, before the request goes out. */
    cl->check_ip = 1;
    r = mbedtls_ssl_set_hostname(cl->ssl, NULL);
  } else {
    r = mbedtls_ssl_set_hostname(cl->ssl, cl->host);
  }
  if (r != 0) {
    tls_failed(cl, r);
    return;
  }
  mbedtls_ssl_set_bio(cl->ssl, cl, bio_send, bio_recv, NULL);
  cl->phase = PHASE_HANDSHAKE;
  tls_pump(cl);
}

/* ---- connection ---- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct proxy_cred_client *cl = h->data;

  (void)suggested;
  *buf = uv_buf_init(cl->rbuf, sizeof(cl->rbuf));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
  struct proxy_cred_client *cl = s->data;

  (void)buf;
  if (cl->finished || nread == 0)
    return;
  if (nread < 0) {
    if (nread == UV_EOF)
      on_eof(cl, 0);
    else
      fail(cl, PROXY_CRED_CONNECT, (int)nread, "read: %s", uv_strerror((int)nread));
    return;
  }
  if (cl->ssl != NULL) {
    cl->rx = (const unsigned char *)cl->rbuf;
    cl->rx_len = (size_t)nread;
    tls_pump(cl);
    cl->rx = NULL;
    cl->rx_len = 0;
  } else {
    http_input(cl, cl->rbuf, (size_t)nread);
  }
  explicit_bzero(cl->rbuf, (size_t)nread);
}

static void connected(struct proxy_cred_client *cl)
{
  int r;

  r = uv_read_start(&cl->io.stream, alloc_cb, read_cb);
  if (r < 0) {
    fail(cl, PROXY_CRED_CONNECT, r, "read: %s", uv_strerror(r));
    return;
  }
  if (cl->kind == RULES_CB_HTTPS) {
    tls_begin(cl);
    return;
  }
  cl->phase = PHASE_ANSWER;
  r = write_bytes(cl, cl->req, cl->req_len);
  if (r < 0) {
    fail(cl, r == -ENOMEM ? PROXY_CRED_INTERNAL : PROXY_CRED_CONNECT, r, "write: %s",
         uv_strerror(r));
    return;
  }
  wipe_free(cl->req, cl->req_len);
  cl->req = NULL;
  cl->req_len = 0;
}

static const char *target_name(const struct proxy_cred_client *cl, char *buf, size_t size)
{
  if (cl->kind == RULES_CB_UNIX)
    snprintf(buf, size, "%s", cl->socket_path);
  else if (strchr(cl->host, ':') != NULL)
    snprintf(buf, size, "[%s]:%u", cl->host, cl->port);
  else
    snprintf(buf, size, "%s:%u", cl->host, cl->port);
  return buf;
}

static void reconnect_closed(uv_handle_t *h)
{
  struct proxy_cred_client *cl = h->data;

  cl->handles--;
  if (cl->finished)
    maybe_release(cl);
  else
    next_address(cl);
}

static void connect_cb(uv_connect_t *req, int status)
{
  struct proxy_cred_client *cl = req->data;
  char where[RULES_MAX_NAME_LEN + 16];

  cl->reqs--;
  if (cl->finished) {
    maybe_release(cl);
    return;
  }
  /* Its share of the timeout ended (timer_cb): the handle is closing. */
  if (status == UV_ECANCELED)
    return;
  if (status == 0) {
    /* The rest of the call has what is left of the timeout, not this share. */
    if (cl->kind != RULES_CB_UNIX)
      uv_timer_start(&cl->timer, timer_cb, time_left(cl), 0);
    connected(cl);
    return;
  }
  if (cl->kind == RULES_CB_UNIX || cl->next_addr >= cl->naddrs) {
    fail(cl, PROXY_CRED_CONNECT, status, "connect to %s: %s",
         target_name(cl, where, sizeof(where)), uv_strerror(status));
    return;
  }
  /* A uv_tcp_t that failed to connect cannot connect again: close it and try the
   * next address from the close callback. */
  cl->last_err = status;
  cl->io_open = 0;
  uv_close(&cl->io.handle, reconnect_closed);
}

/*
 * How long the connect attempt starting now may take before the next address is
 * tried: an equal share of what is left of the call's timeout for this address and
 * each one after it, but at least MIN_ATTEMPT_MS. A first address that never answers
 * (a black-holed IPv6 path in front of a working IPv4 one) would otherwise take the
 * whole timeout, and every call would fail.
 */
static uint64_t attempt_ms(const struct proxy_cred_client *cl)
{
  uint64_t left = time_left(cl), share = left / (cl->naddrs - cl->next_addr + 1);

  if (share < MIN_ATTEMPT_MS)
    share = left < MIN_ATTEMPT_MS ? left : MIN_ATTEMPT_MS;
  return share;
}

/* Connects the TCP handle (opened here) to sa. */
static void tcp_connect(struct proxy_cred_client *cl, const struct sockaddr *sa)
{
  char where[RULES_MAX_NAME_LEN + 16];
  int r;

  r = uv_tcp_init(cl->loop, &cl->io.tcp);
  if (r < 0) {
    fail(cl, PROXY_CRED_INTERNAL, r, "socket: %s", uv_strerror(r));
    return;
  }
  cl->io.handle.data = cl;
  cl->io_open = 1;
  cl->handles++;
  cl->phase = PHASE_CONNECT;
  cl->connect.data = cl;
  r = uv_tcp_connect(&cl->connect, &cl->io.tcp, sa, connect_cb);
  if (r < 0) {
    fail(cl, PROXY_CRED_CONNECT, r, "connect to %s: %s",
         target_name(cl, where, sizeof(where)), uv_strerror(r));
    return;
  }
  cl->reqs++;
  if (!cl->has_deferred)
    uv_timer_start(&cl->timer, timer_cb, attempt_ms(cl), 0);
}

static void next_address(struct proxy_cred_client *cl)
{
  if (cl->have_literal) {
    cl->have_literal = 0;
    tcp_connect(cl, (const struct sockaddr *)&cl->literal);
    return;
  }
  if (cl->next_addr < cl->naddrs) {
    tcp_connect(cl, (const struct sockaddr *)&cl->addrs[cl->next_addr++]);
    return;
  }
  if (cl->last_err != 0)
    fail(cl, PROXY_CRED_CONNECT, cl->last_err, "connect to %s:%u: %s", cl->host, cl->port,
         uv_strerror(cl->last_err));
  else
    fail(cl, PROXY_CRED_RESOLVE, -EHOSTUNREACH, "%s has no IPv4 or IPv6 address", cl->host);
}

/* ---- resolving the host: one lookup per name at a time, its answer shared ---- */

struct lookup_req {
  uv_getaddrinfo_t gai;
  struct proxy_cred_lookup *lk; /* NULL once the lookup is freed: completes unused */
  struct lookup_req *prev, *next;
  char host[RULES_MAX_NAME_LEN + 1];
  uint16_t port;
};

struct proxy_cred_lookup {
  uv_loop_t *loop;
  struct lookup_req *reqs;               /* in flight: one per host and port */
  struct lookup_req *answering;          /* the one lookup_cb hands out */
  struct proxy_cred_client *head, *tail; /* clients waiting, oldest first */
  int freed;                             /* freed inside lookup_cb: free after */
};

int proxy_cred_lookup_new(uv_loop_t *loop, struct proxy_cred_lookup **out)
{
  struct proxy_cred_lookup *lk = calloc(1, sizeof(*lk));

  *out = NULL;
  if (lk == NULL)
    return -ENOMEM;
  lk->loop = loop;
  *out = lk;
  return 0;
}

void proxy_cred_lookup_free(struct proxy_cred_lookup *lk)
{
  struct lookup_req *req;

  if (lk == NULL)
    return;
  while (lk->head != NULL)
    lookup_unwait(lk->head); /* none should be left: they time out on their own */
  while (lk->reqs != NULL) {
    req = lk->reqs;
    lk->reqs = req->next;
    req->lk = NULL;
    req->prev = req->next = NULL;
    proxy_lookup_orphaned();
    uv_cancel((uv_req_t *)&req->gai); /* a queued one never takes a thread */
  }
  if (lk->answering != NULL)
    lk->freed = 1;
  else
    free(lk);
}

static void lookup_unwait(struct proxy_cred_client *cl)
{
  struct proxy_cred_lookup *lk = cl->lookup;

  if (cl->lk_prev != NULL)
    cl->lk_prev->lk_next = cl->lk_next;
  else
    lk->head = cl->lk_next;
  if (cl->lk_next != NULL)
    cl->lk_next->lk_prev = cl->lk_prev;
  else
    lk->tail = cl->lk_prev;
  cl->lk_prev = cl->lk_next = NULL;
  cl->lk_waiting = 0;
}

static int same_name(const struct lookup_req *req, const struct proxy_cred_client *cl)
{
  return req->port == cl->port && strcmp(req->host, cl->host) == 0;
}

static void lookup_cb(uv_getaddrinfo_t *gai, int status, struct addrinfo *res);

/* Waits for the addresses of cl->host: the lookup of that name in flight, or a new
 * one. Called inside proxy_cred_client_start, where a failure is deferred. */
static void lookup_wait(struct proxy_cred_client *cl)
{
  struct proxy_cred_lookup *lk = cl->lookup;
  struct lookup_req *req;
  struct addrinfo hints;
  char service[8];
  int r;

  cl->phase = PHASE_RESOLVE;
  req = lk->answering;
  if (req == NULL || !same_name(req, cl))
    for (req = lk->reqs; req != NULL && !same_name(req, cl); req = req->next)
      ;
  if (req == NULL) {
    req = calloc(1, sizeof(*req));
    if (req == NULL) {
      fail(cl, PROXY_CRED_INTERNAL, -ENOMEM, "resolve %s: out of memory", cl->host);
      return;
    }
    req->lk = lk;
    snprintf(req->host, sizeof(req->host), "%s", cl->host);
    req->port = cl->port;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof(service), "%u", cl->port);
    r = uv_getaddrinfo(lk->loop, &req->gai, lookup_cb, req->host, service, &hints);
    if (r < 0) {
      free(req);
      fail(cl, PROXY_CRED_RESOLVE, r, "resolve %s: %s", cl->host, uv_strerror(r));
      return;
    }
    req->next = lk->reqs;
    if (lk->reqs != NULL)
      lk->reqs->prev = req;
    lk->reqs = req;
  }
  cl->lk_prev = lk->tail;
  cl->lk_next = NULL;
  if (lk->tail != NULL)
    lk->tail->lk_next = cl;
  else
    lk->head = cl;
  lk->tail = cl;
  cl->lk_waiting = 1;
}

static void resolved(struct proxy_cred_client *cl, int status, const struct addrinfo *res)
{
  const struct addrinfo *ai;

  if (status < 0) {
    fail(cl, PROXY_CRED_RESOLVE, status, "resolve %s: %s", cl->host, uv_strerror(status));
    return;
  }
  for (ai = res; ai != NULL && cl->naddrs < MAX_ADDRS; ai = ai->ai_next) {
    if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
        ai->ai_addrlen > sizeof(cl->addrs[0]))
      continue;
    memcpy(&cl->addrs[cl->naddrs++], ai->ai_addr, ai->ai_addrlen);
  }
  next_address(cl);
}

static void lookup_cb(uv_getaddrinfo_t *gai, int status, struct addrinfo *res)
{
  struct lookup_req *req = container_of(gai, struct lookup_req, gai);
  struct proxy_cred_lookup *lk = req->lk;
  struct proxy_cred_client *cl;

  if (lk == NULL) {
    proxy_lookup_orphan_done();
    goto out;
  }
  if (req->prev != NULL)
    req->prev->next = req->next;
  else
    lk->reqs = req->next;
  if (req->next != NULL)
    req->next->prev = req->prev;
  /* Every client waiting for this name gets the answer, one that starts meanwhile
   * (from a done callback) too; a done callback may free the lookup. */
  lk->answering = req;
  while (!lk->freed) {
    for (cl = lk->head; cl != NULL && !same_name(req, cl); cl = cl->lk_next)
      ;
    if (cl == NULL)
      break;
    lookup_unwait(cl);
    resolved(cl, status, res);
  }
  lk->answering = NULL;
  if (lk->freed)
    free(lk);
out:
  if (res != NULL)
    uv_freeaddrinfo(res);
  free(req);
}

/* ---- the request ---- */

static int configured(const struct rules_callback *cfg, const char *name)
{
  size_t i;

  for (i = 0; i < cfg->nheaders; i++)
    if (strcasecmp(cfg->headers[i].name, name) == 0)
      return 1;
  return 0;
}

/*
 * Builds the whole request in one exactly sized allocation: the callback's own
 * headers may carry secrets, and a growing buffer would leave copies behind.
 */
static int build_request(struct proxy_cred_client *cl, const struct proxy_cred_client_params *p)
{
  const struct rules_callback *cfg = p->cfg;
  struct strbuf head, body;
  size_t i, total;
  char *out = NULL, *w;
  int ret = -ENOMEM;

  strbuf_init(&head);
  strbuf_init(&body);
  /* The callback URL's query may carry a token. */
  head.secret = 1;
  strbuf_adds(&body, "{\"sandbox\":");
  strbuf_add_json_str(&body, p->sandbox, strlen(p->sandbox));
  strbuf_adds(&body, ",\"host\":");
  strbuf_add_json_str(&body, p->host, strlen(p->host));
  strbuf_addf(&body, ",\"port\":%u}", p->port);

  strbuf_addf(&head, "POST %s HTTP/1.1\r\nHost: ", cfg->path);
  if (cfg->kind == RULES_CB_UNIX)
    strbuf_adds(&head, "localhost");
  else if (strchr(cfg->host, ':') != NULL)
    strbuf_addf(&head, "[%s]", cfg->host);
  else
    strbuf_adds(&head, cfg->host);
  if (cfg->kind != RULES_CB_UNIX &&
      cfg->port != (cfg->kind == RULES_CB_HTTPS ? 443 : 80))
    strbuf_addf(&head, ":%u", cfg->port);
  strbuf_addf(&head, "\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n", body.len);
  if (!configured(cfg, "Accept"))
    strbuf_adds(&head, "Accept: application/json\r\n");
  if (!configured(cfg, "User-Agent"))
    strbuf_adds(&head, "User-Agent: authproxy/" AUTHPROXY_VERSION "\r\n");
  if (head.oom || body.oom)
    goto out;

  total = head.len + 2 + body.len;
  for (i = 0; i < cfg->nheaders; i++)
    total += strlen(cfg->headers[i].name) + 2 + cfg->headers[i].value_len + 2;
  out = malloc(total);
  if (out == NULL)
    goto out;
  w = out;
  memcpy(w, head.data, head.len);
  w += head.len;
  for (i = 0; i < cfg->nheaders; i++) {
    const struct rules_header *h = &cfg->headers[i];
    size_t nlen = strlen(h->name);

    /* The contract's Content-Type stays; a configured one is not sent twice. */
    if (strcasecmp(h->name, "Content-Type") == 0)
      continue;
    memcpy(w, h->name, nlen);
    w += nlen;
    memcpy(w, ": ", 2);
    w += 2;
    memcpy(w, h->value, h->value_len);
    w += h->value_len;
    memcpy(w, "\r\n", 2);
    w += 2;
  }
  memcpy(w, "\r\n", 2);
  w += 2;
  memcpy(w, body.data, body.len);
  w += body.len;
  cl->req = out;
  cl->req_len = (size_t)(w - out);
  out = NULL;
  ret = 0;
out:
  free(out);
  strbuf_free(&head);
  strbuf_free(&body);
  return ret;
}

int proxy_cred_client_start(uv_loop_t *loop, const struct proxy_cred_client_params *p,
                            struct proxy_cred_client **out)
{
  const struct rules_callback *cfg = p->cfg;
  struct proxy_cred_client *cl;
  int r;

  *out = NULL;
  cl = calloc(1, sizeof(*cl));
  if (cl == NULL)
    return -ENOMEM;
  cl->loop = loop;
  cl->done_cb = p->done;
  cl->arg = p->arg;
  cl->kind = cfg->kind;
  cl->tls_conf = p->tls_conf;
  cl->timeout_ms = cfg->timeout_ms;
  cl->port = cfg->port;
  if (cfg->kind == RULES_CB_UNIX) {
    cl->socket_path = strdup(cfg->socket);
    if (cl->socket_path == NULL)
      goto nomem;
  } else {
    snprintf(cl->host, sizeof(cl->host), "%s", cfg->host);
  }
  if (build_request(cl, p) != 0)
    goto nomem;
  proxy_cred_answer_init(&cl->ans);

  r = uv_timer_init(loop, &cl->timer);
  if (r < 0)
    goto nomem;
  cl->timer.data = cl;
  cl->timer_open = 1;
  cl->handles++;
  /* The loop's time may be stale by a whole iteration: the deadline counts from now. */
  uv_update_time(loop);
  cl->deadline_ms = uv_now(loop) + cfg->timeout_ms;
  uv_timer_start(&cl->timer, timer_cb, cfg->timeout_ms, 0);

  cl->starting = 1;
  switch (cfg->kind) {
  case RULES_CB_UNIX:
    r = uv_pipe_init(loop, &cl->io.pipe, 0);
    if (r < 0) {
      fail(cl, PROXY_CRED_INTERNAL, r, "socket: %s", uv_strerror(r));
      break;
    }
    cl->io.handle.data = cl;
    cl->io_open = 1;
    cl->handles++;
    cl->phase = PHASE_CONNECT;
    cl->connect.data = cl;
    uv_pipe_connect(&cl->connect, &cl->io.pipe, cl->socket_path, connect_cb);
    cl->reqs++;
    break;
  case RULES_CB_HTTPS:
    if (cl->tls_conf == NULL) {
      fail(cl, PROXY_CRED_TLS, -ENOTSUP,
           "https callbacks need the daemon's TLS client configuration; none was given");
      break;
    }
    /* fall through */
  case RULES_CB_HTTP:
    if (uv_ip4_addr(cl->host, cl->port, (struct sockaddr_in *)&cl->literal) == 0 ||
        uv_ip6_addr(cl->host, cl->port, (struct sockaddr_in6 *)&cl->literal) == 0) {
      cl->have_literal = 1;
      next_address(cl);
      break;
    }
    if (p->lookup == NULL) {
      fail(cl, PROXY_CRED_INTERNAL, -EINVAL, "no lookup to resolve %s with", cl->host);
      break;
    }
    cl->lookup = p->lookup;
    lookup_wait(cl);
    break;
  }
  cl->starting = 0;
  *out = cl;
  return 0;

nomem:
  wipe_free(cl->req, cl->req_len);
  free(cl->socket_path);
  free(cl);
  return -ENOMEM;
}
