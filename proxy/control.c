/*
 * Control API server: a Unix socket, llhttp per client, one request at a time: a
 * client's next request (pipelined) is parsed once the answer to the last one has
 * gone to the socket, so a client that sends without reading holds one answer.
 *
 * At most MAX_CLIENTS are served at once. Further connections wait in the socket's
 * backlog (they are not accepted) until a client leaves, so that a burst of runtimes
 * attaching together is served in turn; only when no slot has freed for WAIT_MS are
 * they accepted and refused with 503 too_many_clients, which says why. A client kept
 * alive between requests (an HTTP client's connection pool) gives its slot up to a
 * connection waiting for one: it is closed, as servers close idle connections.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <llhttp.h>

#include "proxy/control.h"
#include "proxy/log.h"

#define MAX_CLIENTS 64
#define MAX_HEAD 16384
#define MAX_URL 4096
/* Time allowed for each request to arrive whole (and between requests). */
#define IDLE_MS 30000
/* How long connections wait for a slot without one freeing before they are refused. */
#define WAIT_MS 2000

struct client;

struct proxy_control {
  uv_loop_t *loop;
  uv_pipe_t pipe;
  char *path;
  proxy_control_cb cb;
  void *arg;
  struct client *clients;
  unsigned nclients;
  unsigned nrefused;      /* of them, being answered 503 too_many_clients */
  uv_timer_t wait_timer;  /* runs while a connection waits (deferred) */
  int deferred;           /* libuv holds a connection we have not accepted yet */
  int refusing;           /* no slot freed for WAIT_MS: refuse until one does */
  int handles;
  int closing;
  int bound;  /* the socket file at path is this daemon's */
  void (*close_cb)(void *arg);
  void *close_arg;
};

struct client {
  struct proxy_control *ctl;
  struct client *next, *prev;
  uv_pipe_t pipe;
  uv_timer_t timer;
  int handles;
  int closing;
  llhttp_t parser;
  struct strbuf url;
  struct strbuf body;
  size_t head_bytes;
  int complete;
  int too_large;
  int keep_alive;
  int discard;               /* answered an error early: read and drop the rest */
  int refused;               /* answered 503 too_many_clients: holds no slot */
  int expect_continue;       /* the request carries Expect: 100-continue */
  int between;               /* answered, kept alive, no byte of another request yet */
  uint64_t idle_since;       /* uv_now when between began */
  int in_expect;             /* the header being read is Expect */
  size_t hlen;               /* bytes of the header name or value being read */
  char hbuf[16];             /* its first bytes */
  int stalled;               /* reading stopped until the last answer is written */
  size_t have;               /* unparsed bytes kept in readbuf while stalled */
  char method[16];
  char readbuf[16384];
};

static void control_maybe_done(struct proxy_control *c);
static void take_connection(struct proxy_control *ctl);
static int evict_idle(struct proxy_control *ctl);

void proxy_control_error(struct proxy_control_response *resp, int status, const char *code,
                         const char *fmt, ...)
{
  char msg[1024];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  resp->status = status;
  strbuf_reset(&resp->body);
  strbuf_adds(&resp->body, "{\"error\":{\"code\":");
  strbuf_add_json_str(&resp->body, code, strlen(code));
  strbuf_adds(&resp->body, ",\"message\":");
  strbuf_add_json_str(&resp->body, msg, strlen(msg));
  strbuf_adds(&resp->body, "}}\n");
}

/* ---- clients ---- */

static void client_closed(uv_handle_t *h)
{
  struct client *cl = h->data;
  struct proxy_control *ctl = cl->ctl;

  if (--cl->handles > 0)
    return;
  if (cl->prev != NULL)
    cl->prev->next = cl->next;
  else
    ctl->clients = cl->next;
  if (cl->next != NULL)
    cl->next->prev = cl->prev;
  ctl->nclients--;
  if (cl->refused)
    ctl->nrefused--;
  if (ctl->nclients - ctl->nrefused < MAX_CLIENTS)
    ctl->refusing = 0;
  strbuf_free(&cl->url);
  /* A body may hold a secret pushed through the API (body.secret wipes it), and so
   * may the bytes last read. */
  strbuf_free(&cl->body);
  explicit_bzero(cl->readbuf, sizeof(cl->readbuf));
  free(cl);
  if (ctl->deferred && !ctl->closing) {
    /* A slot (or room to refuse one more) is free: the waiting connection takes it,
     * or waits again. */
    uv_timer_stop(&ctl->wait_timer);
    ctl->deferred = 0;
    take_connection(ctl);
  }
  control_maybe_done(ctl);
}

static void client_close(struct client *cl)
{
  if (cl->closing)
    return;
  cl->closing = 1;
  uv_close((uv_handle_t *)&cl->pipe, client_closed);
  uv_close((uv_handle_t *)&cl->timer, client_closed);
}

static void idle_cb(uv_timer_t *t);
static void wait_cb(uv_timer_t *t);
static void process(struct client *cl);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void shutdown_done(uv_shutdown_t *req, int status)
{
  (void)status;
  free(req);
}

/*
 * Reading stopped while a write was queued (process): once the queue is empty, the
 * bytes left in readbuf are parsed and reading starts again. Called when any write
 * completes, a 100 Continue's too: with only that one queued (a pipelining client that
 * has not read the answers before it), the body that followed was never read, and the
 * client waited for its answer until the idle timeout.
 */
static void resume(struct client *cl)
{
  if (!cl->stalled || cl->closing || cl->discard || cl->pipe.write_queue_size > 0)
    return;
  cl->stalled = 0;
  process(cl);
  if (!cl->stalled && !cl->closing && !cl->discard &&
      uv_read_start((uv_stream_t *)&cl->pipe, alloc_cb, read_cb) != 0)
    client_close(cl);
}

static void write_done(uv_write_t *req, int status)
{
  struct client *cl = req->data;
  struct proxy_control *ctl = cl->ctl;

  free(req);
  /* After an early error the client may still be sending its body: keep reading
   * (and dropping) it for a moment, or closing would reset the connection and the
   * client would never read the answer. */
  if (status == 0 && cl->discard && !cl->closing) {
    uv_shutdown_t *sr = malloc(sizeof(*sr));

    if (sr != NULL && uv_shutdown(sr, (uv_stream_t *)&cl->pipe, shutdown_done) != 0)
      free(sr);
    uv_timer_start(&cl->timer, idle_cb, 2000, 0);
    return;
  }
  if (status < 0 || !cl->keep_alive) {
    client_close(cl);
    return;
  }
  resume(cl);
  /* A connection waits for a slot, and this client is now idle between requests: it
   * gives its slot up now, as to a connection that arrives, not when the wait runs out
   * 2 s later (which also logged that none had finished). */
  if (cl->between && !cl->closing && ctl->deferred && !ctl->closing &&
      ctl->nclients - ctl->nrefused >= MAX_CLIENTS)
    evict_idle(ctl);
}

/*
 * The answer when the real one cannot be built for want of memory: fixed text, sent
 * without allocating (uv_try_write of a few hundred bytes to a socket with nothing
 * queued), then the connection closes. When the request was carried out (status below
 * 400: the sandbox is attached, the config swapped), it says so: closing without a
 * word made `authproxy ctl` report an attach that worked as failed, blaming the
 * daemon's file descriptors.
 */
static void answer_oom(struct client *cl, int status)
{
  static const char done_body[] =
      "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"the request was carried out, "
      "but the daemon ran out of memory building its answer: read the result back\"}}\n";
  static const char failed_body[] =
      "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"out of memory\"}}\n";
  char head[160];
  const char *body = status < 400 ? done_body : failed_body;
  size_t body_len = status < 400 ? sizeof(done_body) - 1 : sizeof(failed_body) - 1;
  uv_buf_t bufs[2];
  int n;

  log_error("control: %s %s: out of memory building the answer (status %d%s); the "
            "connection is closed after a 500", cl->method,
            cl->url.data != NULL ? cl->url.data : "", status,
            status < 400 ? ": the request was carried out" : "");
  n = snprintf(head, sizeof(head),
               "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
               "Content-Length: %zu\r\nConnection: close\r\n\r\n",
               body_len);
  bufs[0] = uv_buf_init(head, (unsigned)n);
  bufs[1] = uv_buf_init((char *)(uintptr_t)body, (unsigned)body_len);
  if (cl->pipe.write_queue_size == 0)
    (void)uv_try_write((uv_stream_t *)&cl->pipe, bufs, 2);
  client_close(cl);
}

/* Queues the answer; head_only: to a HEAD request, whose answer has no body (its
 * Content-Length is still the body's a GET would get). */
static void send_response(struct client *cl, struct proxy_control_response *resp,
                          int head_only)
{
  static const char *const texts[] = {
    [200] = "OK", [201] = "Created", [204] = "No Content", [400] = "Bad Request",
    [404] = "Not Found", [405] = "Method Not Allowed", [409] = "Conflict",
    [413] = "Content Too Large", [414] = "URI Too Long", [415] = "Unsupported Media Type",
    [422] = "Unprocessable Content", [431] = "Request Header Fields Too Large",
    [500] = "Internal Server Error", [503] = "Service Unavailable",
    [507] = "Insufficient Storage",
  };
  const char *text = resp->status > 0 &&
                             (size_t)resp->status < sizeof(texts) / sizeof(texts[0]) &&
                             texts[resp->status] != NULL
                         ? texts[resp->status]
                         : "Status";
  struct strbuf head;
  uv_write_t *req;
  uv_buf_t buf;
  char *mem;
  size_t total;

  strbuf_init(&head);
  strbuf_addf(&head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
              resp->status, text,
              resp->content_type ? resp->content_type : "application/json",
              resp->body.len, cl->keep_alive ? "" : "Connection: close\r\n");
  total = head.len + (head_only ? 0 : resp->body.len);
  req = malloc(sizeof(*req) + total);
  if (head.oom || resp->body.oom || req == NULL) {
    free(req);
    strbuf_free(&head);
    answer_oom(cl, resp->status);
    return;
  }
  mem = (char *)(req + 1);
  memcpy(mem, head.data, head.len);
  if (total > head.len)
    memcpy(mem + head.len, resp->body.data, resp->body.len);
  strbuf_free(&head);
  req->data = cl;
  buf = uv_buf_init(mem, (unsigned)total);
  if (uv_write(req, (uv_stream_t *)&cl->pipe, &buf, 1, write_done) != 0) {
    free(req);
    client_close(cl);
  }
}

static void respond_error(struct client *cl, int status, const char *code, const char *msg)
{
  struct proxy_control_response resp;

  memset(&resp, 0, sizeof(resp));
  strbuf_init(&resp.body);
  cl->keep_alive = 0;
  proxy_control_error(&resp, status, code, "%s", msg);
  send_response(cl, &resp, 0);
  strbuf_free(&resp.body);
}

static int on_message_begin(llhttp_t *p)
{
  struct client *cl = p->data;

  cl->between = 0;
  /* Fields of a chunked trailer went through the same callbacks: an Expect there asks
   * for nothing, and must not make the next request's head answered with a 100. */
  cl->expect_continue = 0;
  cl->in_expect = 0;
  cl->hlen = 0;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
  struct client *cl = p->data;

  strbuf_add(&cl->url, at, len);
  if (cl->url.len > MAX_URL) {
    cl->too_large = 414;
    return -1;
  }
  return 0;
}

static int on_header(llhttp_t *p, const char *at, size_t len)
{
  struct client *cl = p->data;

  cl->head_bytes += len;
  if (cl->head_bytes > MAX_HEAD) {
    cl->too_large = 431;
    return -1;
  }
  /* Kept for Expect (a name, or a value, may arrive in pieces). */
  if (cl->hlen < sizeof(cl->hbuf))
    memcpy(cl->hbuf + cl->hlen, at,
           len < sizeof(cl->hbuf) - cl->hlen ? len : sizeof(cl->hbuf) - cl->hlen);
  cl->hlen += len;
  return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
  struct client *cl = p->data;

  cl->in_expect = cl->hlen == 6 && strncasecmp(cl->hbuf, "expect", 6) == 0;
  cl->hlen = 0;
  return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
  struct client *cl = p->data;
  size_t n = cl->hlen;

  while (n > 0 && n <= sizeof(cl->hbuf) && (cl->hbuf[n - 1] == ' ' || cl->hbuf[n - 1] == '\t'))
    n--;
  if (cl->in_expect && n == 12 && strncasecmp(cl->hbuf, "100-continue", 12) == 0)
    cl->expect_continue = 1;
  cl->in_expect = 0;
  cl->hlen = 0;
  return 0;
}

static void continue_done(uv_write_t *req, int status)
{
  struct client *cl = req->data;

  free(req);
  if (status < 0)
    client_close(cl);
  else
    resume(cl);
}

/*
 * A client that sent Expect: 100-continue waits for an interim answer before its body
 * (curl -T does, for any size): without one it waits its own timeout, a second for
 * curl, before sending anyway, on every call (RFC 9110 10.1.1: the server answers at
 * once with a final status, or with 100). Not to HTTP/1.0 clients, which do not know
 * it.
 */
static void send_continue(struct client *cl)
{
  static char line[] = "HTTP/1.1 100 Continue\r\n\r\n"; /* libuv only reads it */
  uv_write_t *req = malloc(sizeof(*req));
  uv_buf_t buf = uv_buf_init(line, sizeof(line) - 1);

  if (req == NULL)
    return; /* the client sends its body after its own wait */
  req->data = cl;
  if (uv_write(req, (uv_stream_t *)&cl->pipe, &buf, 1, continue_done) != 0) {
    free(req);
    client_close(cl);
  }
}

static int on_headers_complete(llhttp_t *p)
{
  struct client *cl = p->data;

  if (p->content_length > PROXY_CONTROL_MAX_BODY && !(p->flags & F_CHUNKED)) {
    cl->too_large = 413;
    return -1;
  }
  if (cl->expect_continue && (p->http_major > 1 || p->http_minor > 0) && !p->upgrade &&
      (p->content_length > 0 || (p->flags & F_CHUNKED)))
    send_continue(cl);
  cl->expect_continue = 0;
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
  struct client *cl = p->data;

  if (cl->body.len + len > PROXY_CONTROL_MAX_BODY) {
    cl->too_large = 413;
    return -1;
  }
  strbuf_add(&cl->body, at, len);
  return 0;
}

static int on_complete(llhttp_t *p)
{
  struct client *cl = p->data;

  cl->complete = 1;
  snprintf(cl->method, sizeof(cl->method), "%s", llhttp_method_name(p->method));
  /* The API switches to no other protocol: a request asking to (Upgrade) is answered
   * as HTTP and the connection ends there, or llhttp would refuse whatever follows. */
  cl->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
  return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
  .on_message_begin = on_message_begin,
  .on_url = on_url,
  .on_header_field = on_header,
  .on_header_value = on_header,
  .on_header_field_complete = on_header_field_complete,
  .on_header_value_complete = on_header_value_complete,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_complete,
};

static void dispatch(struct client *cl)
{
  struct proxy_control *ctl = cl->ctl;
  struct proxy_control_request req;
  struct proxy_control_response resp;
  char *q;

  if (cl->url.oom || cl->body.oom) {
    respond_error(cl, 500, "out_of_memory", "out of memory");
    return;
  }
  strbuf_add(&cl->url, "", 0);
  strbuf_add(&cl->body, "", 0);
  q = strchr(cl->url.data, '?');
  if (q != NULL)
    *q = '\0';
  memset(&req, 0, sizeof(req));
  req.method = cl->method;
  req.path = cl->url.data;
  req.body = cl->body.data;
  req.body_len = cl->body.len;
  memset(&resp, 0, sizeof(resp));
  strbuf_init(&resp.body);
  resp.status = 500;
  ctl->cb(ctl->arg, &req, &resp);
  send_response(cl, &resp, strcmp(cl->method, "HEAD") == 0);
  /* The idle time restarts with each request answered, not with each read: a client
   * that sends a byte now and then would otherwise hold its slot forever, and 64
   * such clients would shut out every runtime's attach. */
  if (!cl->closing)
    uv_timer_again(&cl->timer);
  if (cl->keep_alive && !cl->closing) {
    cl->between = 1;
    cl->idle_since = uv_now(ctl->loop);
  }
  strbuf_free(&resp.body);
  explicit_bzero(cl->body.data, cl->body.cap);
  strbuf_reset(&cl->body);
  strbuf_reset(&cl->url);
  cl->head_bytes = 0;
  cl->complete = 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct client *cl = h->data;

  (void)suggested;
  buf->base = cl->readbuf;
  buf->len = sizeof(cl->readbuf);
}

/*
 * Parses the cl->have bytes in readbuf, answering each complete request. Stops at a
 * request boundary while an answer is still queued: the rest stays in readbuf and
 * reading stops until write_done finds the queue empty.
 */
static void process(struct client *cl)
{
  llhttp_errno_t err;
  const char *p = cl->readbuf;
  size_t left = cl->have;

  cl->have = 0;
  while (left > 0 && !cl->closing) {
    if (cl->pipe.write_queue_size > 0) {
      memmove(cl->readbuf, p, left);
      cl->have = left;
      if (!cl->stalled) {
        cl->stalled = 1;
        uv_read_stop((uv_stream_t *)&cl->pipe);
      }
      return;
    }
    err = llhttp_execute(&cl->parser, p, left);
    if (err == HPE_PAUSED) {
      size_t used = (size_t)(llhttp_get_error_pos(&cl->parser) - p);

      llhttp_resume(&cl->parser);
      dispatch(cl);
      if (!cl->keep_alive) {
        /* The client asked to close after this request: what it sent after it is
         * not answered (write_done closes once the answer is out). */
        uv_read_stop((uv_stream_t *)&cl->pipe);
        return;
      }
      p += used;
      left -= used;
      continue;
    }
    if (err != HPE_OK) {
      cl->discard = 1;
      if (cl->too_large == 413)
        respond_error(cl, 413, "body_too_large", "request bodies are limited to 1 MiB");
      else if (cl->too_large == 414)
        respond_error(cl, 414, "uri_too_long", "request targets are limited to 4 KiB");
      else if (cl->too_large == 431)
        respond_error(cl, 431, "head_too_large", "request heads are limited to 16 KiB");
      else
        respond_error(cl, 400, "bad_request", llhttp_errno_name(err));
      return;
    }
    break;
  }
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct client *cl = s->data;

  (void)buf;
  if (n == UV_EOF && cl->pipe.write_queue_size > 0 && !cl->closing) {
    /* A client that half-closes after its request (nc -N, socat) still reads the
     * answer: closing now would cut off what the socket has not taken yet. It goes
     * out whole, then write_done closes. */
    cl->keep_alive = 0;
    uv_read_stop(s);
    return;
  }
  if (n < 0) {
    client_close(cl);
    return;
  }
  if (n == 0 || cl->closing || cl->discard)
    return;
  cl->have = (size_t)n;
  process(cl);
}

static void idle_cb(uv_timer_t *t)
{
  client_close(t->data);
}

/* Leaves the connection libuv holds where it is (libuv stops accepting until it is
 * taken), and arms the timer that refuses waiting connections if no slot frees. */
static void defer(struct proxy_control *ctl)
{
  if (ctl->deferred)
    return;
  ctl->deferred = 1;
  uv_timer_start(&ctl->wait_timer, wait_cb, WAIT_MS, 0);
}

/* 1 if the client's next request has begun to arrive: bytes wait in its socket that
 * the loop has not read yet (closing it then would drop a request it sent). */
static int bytes_waiting(struct client *cl)
{
  uv_os_fd_t fd;
  int n = 0;

  if (uv_fileno((uv_handle_t *)&cl->pipe, &fd) != 0)
    return 1;
  return ioctl(fd, FIONREAD, &n) != 0 || n > 0;
}

/*
 * Closes the client idle the longest between requests, its answers all written, to
 * free its slot for a connection waiting; 1 if there was one. Pooled keep-alive
 * connections (64 of them: a few orchestrator processes, each with an HTTP client
 * that keeps its connections) used to hold every slot for their whole idle time (30
 * s), and every other client, a runtime's attach included, waited 2 s to be refused
 * 503 too_many_clients. Clients expect a server to close an idle kept-alive
 * connection; a client that has not had an answer yet is never closed.
 */
static int evict_idle(struct proxy_control *ctl)
{
  struct client *cl, *oldest = NULL;

  for (cl = ctl->clients; cl != NULL; cl = cl->next)
    if (cl->between && !cl->closing && !cl->refused && !cl->stalled && !cl->discard &&
        cl->have == 0 && cl->pipe.write_queue_size == 0 && !bytes_waiting(cl) &&
        (oldest == NULL || cl->idle_since < oldest->idle_since))
      oldest = cl;
  if (oldest == NULL)
    return 0;
  client_close(oldest);
  return 1;
}

/* Accepts the connection libuv holds: served, or refused once the server is refusing. */
static void take_connection(struct proxy_control *ctl)
{
  struct client *cl;
  int over = ctl->nclients - ctl->nrefused >= MAX_CLIENTS;

  if (ctl->closing)
    return;
  /* A slot held by a client idle between requests frees once it is closed: client_closed
   * then takes the waiting connection. */
  if (over && evict_idle(ctl)) {
    defer(ctl);
    return;
  }
  /* Refusals are bounded too: each holds a client until its answer is written. */
  if (over && (!ctl->refusing || ctl->nrefused >= MAX_CLIENTS)) {
    defer(ctl);
    return;
  }
  cl = calloc(1, sizeof(*cl));
  if (cl == NULL) {
    /* Not accepted: libuv keeps it; try again when the timer fires. */
    defer(ctl);
    return;
  }
  cl->ctl = ctl;
  uv_pipe_init(ctl->loop, &cl->pipe, 0);
  uv_timer_init(ctl->loop, &cl->timer);
  cl->pipe.data = cl;
  cl->timer.data = cl;
  cl->handles = 2;
  strbuf_init(&cl->url);
  strbuf_init(&cl->body);
  cl->body.secret = 1;
  cl->next = ctl->clients;
  if (ctl->clients != NULL)
    ctl->clients->prev = cl;
  ctl->clients = cl;
  ctl->nclients++;
  if (uv_accept((uv_stream_t *)&ctl->pipe, (uv_stream_t *)&cl->pipe) != 0) {
    client_close(cl);
    return;
  }
  if (over) {
    cl->refused = 1;
    ctl->nrefused++;
    respond_error(cl, 503, "too_many_clients",
                  "too many control connections: the daemon serves 64 at once, and none "
                  "of them has finished for 2 s; try again");
    return;
  }
  llhttp_init(&cl->parser, HTTP_REQUEST, &settings);
  cl->parser.data = cl;
  uv_timer_start(&cl->timer, idle_cb, IDLE_MS, IDLE_MS);
  uv_read_start((uv_stream_t *)&cl->pipe, alloc_cb, read_cb);
}

/* No slot freed for WAIT_MS while a connection waited: refuse the waiting ones (each
 * hears why) until a client leaves. After a failed allocation, simply try again. */
static void wait_cb(uv_timer_t *t)
{
  struct proxy_control *ctl = t->data;

  if (!ctl->deferred || ctl->closing)
    return;
  ctl->deferred = 0;
  if (ctl->nclients - ctl->nrefused >= MAX_CLIENTS && !ctl->refusing) {
    ctl->refusing = 1;
    log_warn("control: %u connections open and none finished for %d ms: refusing new "
             "ones (503 too_many_clients) until one closes", ctl->nclients - ctl->nrefused,
             WAIT_MS);
  }
  take_connection(ctl);
}

static void on_connection(uv_stream_t *server, int status)
{
  if (status < 0) {
    proxy_log_accept_failed("control", -status);
    return;
  }
  take_connection(server->data);
}

/* ---- server ---- */

/* 1 if something listens on the socket at path. */
static int socket_alive(const char *path)
{
  struct sockaddr_un sa;
  int fd, r;

  /* Non-blocking: a daemon that is alive but not accepting (its backlog full) makes a
   * blocking connect wait for it, and this daemon would hang at start. */
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return 0;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EAGAIN;
  close(fd);
  return r;
}

/*
 * 1 if the directory path is to be created in cannot be used, with a message in err.
 * libuv reports a bind in a missing directory as "permission denied" (it turns ENOENT
 * into EACCES, as Windows would say), which sent root looking for a permission
 * problem instead of the directory (/run/authproxy outside the systemd unit, whose
 * RuntimeDirectory= makes it).
 */
static int parent_missing(const char *path, char *err, size_t errsz)
{
  char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
  const char *slash = strrchr(path, '/');
  struct stat st;
  int r;

  if (slash == NULL || slash == path)
    return 0;
  snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
  r = stat(dir, &st) == 0 ? 0 : errno;
  if (r == 0 && S_ISDIR(st.st_mode))
    return 0;
  snprintf(err, errsz, "cannot listen on %s: its directory %s %s; create it (root's, mode "
           "0700) or choose another --control path", path, dir,
           r == 0 ? "is not a directory" : r == ENOENT ? "does not exist" : strerror(r));
  return 1;
}

int proxy_control_start(uv_loop_t *loop, const char *path, proxy_control_cb cb, void *arg,
                        struct proxy_control **out, char *err, size_t errsz)
{
  struct proxy_control *ctl;
  struct stat st;
  mode_t old;
  int r;

  *out = NULL;
  if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    snprintf(err, errsz, "control socket path %s is too long (at most %zu bytes); choose a "
             "shorter --control path", path, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    return -ENAMETOOLONG;
  }
  if (lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      snprintf(err, errsz, "%s exists and is not a socket; remove it or choose another "
               "--control path", path);
      return -EEXIST;
    }
    if (socket_alive(path)) {
      snprintf(err, errsz, "another daemon is listening on %s", path);
      return -EADDRINUSE;
    }
    unlink(path);
  }
  ctl = calloc(1, sizeof(*ctl));
  if (ctl == NULL)
    return -ENOMEM;
  ctl->loop = loop;
  ctl->cb = cb;
  ctl->arg = arg;
  ctl->path = strdup(path);
  uv_pipe_init(loop, &ctl->pipe, 0);
  ctl->pipe.data = ctl;
  uv_timer_init(loop, &ctl->wait_timer);
  ctl->wait_timer.data = ctl;
  ctl->handles = 2;
  /* Created 0600 from the start: root only, no window where others may connect. */
  old = umask(0177);
  r = uv_pipe_bind(&ctl->pipe, path);
  umask(old);
  if (r == 0) {
    ctl->bound = 1;
    r = chmod(path, 0600) == 0 ? 0 : -errno;
  }
  if (r == 0)
    r = uv_listen((uv_stream_t *)&ctl->pipe, 128, on_connection);
  if (r != 0 || ctl->path == NULL) {
    if (r != 0 && parent_missing(path, err, errsz))
      r = UV_ENOENT;
    else
      snprintf(err, errsz, "cannot listen on %s: %s", path,
               r ? uv_strerror(r) : "out of memory");
    proxy_control_close(ctl, NULL, NULL);
    return r ? r : -ENOMEM;
  }
  *out = ctl;
  return 0;
}

static void control_maybe_done(struct proxy_control *ctl)
{
  void (*cb)(void *arg) = ctl->close_cb;
  void *arg = ctl->close_arg;

  if (!ctl->closing || ctl->handles > 0 || ctl->clients != NULL)
    return;
  free(ctl->path);
  free(ctl);
  if (cb != NULL)
    cb(arg);
}

static void pipe_closed(uv_handle_t *h)
{
  struct proxy_control *ctl = h->data;

  ctl->handles--;
  control_maybe_done(ctl);
}

void proxy_control_close(struct proxy_control *ctl, void (*cb)(void *arg), void *arg)
{
  struct client *cl, *next;

  if (ctl == NULL || ctl->closing)
    return;
  ctl->closing = 1;
  ctl->close_cb = cb;
  ctl->close_arg = arg;
  /* Only a socket this daemon made: when bind failed, the path may be another
   * daemon's (two started at once, both found it stale). */
  if (ctl->path != NULL && ctl->bound)
    unlink(ctl->path);
  for (cl = ctl->clients; cl != NULL; cl = next) {
    next = cl->next;
    client_close(cl);
  }
  uv_close((uv_handle_t *)&ctl->wait_timer, pipe_closed);
  uv_close((uv_handle_t *)&ctl->pipe, pipe_closed);
}
