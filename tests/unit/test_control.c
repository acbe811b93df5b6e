/*
 * The control API transport (proxy/control.c) driven through a real Unix socket: a
 * client socket in the test, the server on a libuv loop run without blocking while
 * the client waits.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "proxy/control.h"
#include "test.h"

struct fixture {
  uv_loop_t loop;
  struct proxy_control *ctl;
  char path[108];
  size_t body_size; /* bytes of each answer's body */
  int body_oom;     /* the handler runs out of memory building the body */
  unsigned requests;
};

static void handler(void *arg, const struct proxy_control_request *req,
                    struct proxy_control_response *resp)
{
  struct fixture *f = arg;
  size_t i;

  (void)req;
  f->requests++;
  resp->status = 200;
  resp->content_type = "text/plain";
  for (i = 0; i < f->body_size; i++)
    strbuf_add(&resp->body, "abcdefghijklmnopqrstuvwxyz" + i % 26, 1);
  if (f->body_oom)
    resp->body.oom = 1;
}

static void fixture_start(struct fixture *f, size_t body_size)
{
  char err[256];

  memset(f, 0, sizeof(*f));
  f->body_size = body_size;
  snprintf(f->path, sizeof(f->path), "%s/c.sock", test_tmpdir());
  ASSERT_EQ(uv_loop_init(&f->loop), 0);
  if (proxy_control_start(&f->loop, f->path, handler, f, &f->ctl, err, sizeof(err)) != 0)
    TEST_FAIL_("proxy_control_start: %s", err);
}

static void fixture_stop(struct fixture *f)
{
  proxy_control_close(f->ctl, NULL, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&f->loop), 0);
}

static int client_connect(const struct fixture *f)
{
  struct sockaddr_un sa;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  ASSERT(fd >= 0);
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, f->path, strlen(f->path));
  ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  return fd;
}

static void client_send(int fd, const char *s)
{
  ASSERT_EQ(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

static double now_s(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Runs the server while reading what it sends to fd, until it closes the connection
 * or limit_s passes. Returns the bytes read; *closed says whether it closed.
 */
static size_t client_drain(struct fixture *f, int fd, double limit_s, int *closed)
{
  double end = now_s() + limit_s;
  char buf[65536];
  size_t got = 0;

  *closed = 0;
  while (now_s() < end) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ssize_t n;

    uv_run(&f->loop, UV_RUN_NOWAIT);
    if (poll(&p, 1, 5) <= 0)
      continue;
    n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) {
      *closed = 1;
      break;
    }
    if (n < 0) {
      ASSERT(errno == EAGAIN || errno == EINTR);
      continue;
    }
    got += (size_t)n;
  }
  return got;
}

/* Runs the server while reading what it sends to fd into out (NUL-terminated), until
 * it closes the connection or limit_s passes. Returns the bytes read. */
static size_t client_read(struct fixture *f, int fd, double limit_s, char *out, size_t size)
{
  double end = now_s() + limit_s;
  size_t got = 0;

  while (now_s() < end && got + 1 < size) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ssize_t n;

    uv_run(&f->loop, UV_RUN_NOWAIT);
    if (poll(&p, 1, 5) <= 0)
      continue;
    n = recv(fd, out + got, size - 1 - got, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno == ECONNRESET))
      break;
    if (n < 0) {
      ASSERT(errno == EAGAIN || errno == EINTR);
      continue;
    }
    got += (size_t)n;
  }
  out[got] = '\0';
  return got;
}

/* An answer to HEAD has no body (RFC 9110 9.3.2): a client reading the next answer on
 * the connection would take the body for it. */
TEST(head_answer_has_no_body)
{
  struct fixture f;
  char out[4096], *sep;
  int fd;

  fixture_start(&f, 10);
  fd = client_connect(&f);
  client_send(fd, "HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  client_read(&f, fd, 10, out, sizeof(out));
  close(fd);
  ASSERT_EQ(f.requests, 2);
  sep = strstr(out, "\r\n\r\n");
  ASSERT_NOT_NULL(sep);
  /* The first answer's head says how long the body would be, and the second answer
   * follows it at once. */
  ASSERT_CONTAINS(out, "Content-Length: 10\r\n");
  ASSERT(strncmp(sep + 4, "HTTP/1.1 200 OK\r\n", 17) == 0);
  sep = strstr(sep + 4, "\r\n\r\n");
  ASSERT_NOT_NULL(sep);
  ASSERT_STREQ(sep + 4, "abcdefghij");
  fixture_stop(&f);
}

/* After a request with Connection: close, what the client pipelined behind it gets no
 * answer (not even an error): the connection ends with the one answer. */
TEST(nothing_answered_after_connection_close)
{
  struct fixture f;
  char out[4096];
  int fd;

  fixture_start(&f, 10);
  fd = client_connect(&f);
  client_send(fd, "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  "GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
  client_read(&f, fd, 10, out, sizeof(out));
  close(fd);
  ASSERT_EQ(f.requests, 1);
  ASSERT(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
  ASSERT_NULL(strstr(out + 1, "HTTP/1.1"));
  fixture_stop(&f);
}

/* A request asking to switch protocols (Upgrade) is answered as HTTP, and the
 * connection ends with that answer: before, llhttp refused the switch after the
 * answer and a spurious 400 followed it. */
TEST(upgrade_request_answered_then_closed)
{
  struct fixture f;
  char out[4096];
  int fd;

  fixture_start(&f, 10);
  fd = client_connect(&f);
  client_send(fd, "GET /a HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n"
                  "Upgrade: websocket\r\n\r\n");
  client_read(&f, fd, 10, out, sizeof(out));
  close(fd);
  ASSERT_EQ(f.requests, 1);
  ASSERT(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
  ASSERT_CONTAINS(out, "Connection: close\r\n");
  ASSERT_NULL(strstr(out + 1, "HTTP/1.1"));
  fixture_stop(&f);
}

/* A request carried out whose answer could not be built (out of memory) gets a 500
 * out_of_memory that says it was carried out: the connection used to close with no
 * answer, and `authproxy ctl attach` reported an attach that had worked as failed,
 * asking whether the daemon was out of file descriptors. */
TEST(answer_out_of_memory_is_500)
{
  struct fixture f;
  char out[4096];
  int fd;

  fixture_start(&f, 10);
  f.body_oom = 1;
  fd = client_connect(&f);
  client_send(fd, "PUT /v1/sandboxes/box HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
  client_read(&f, fd, 10, out, sizeof(out));
  close(fd);
  ASSERT_EQ(f.requests, 1);
  ASSERT(strncmp(out, "HTTP/1.1 500 Internal Server Error\r\n", 36) == 0);
  ASSERT_CONTAINS(out, "Connection: close\r\n");
  ASSERT_CONTAINS(out, "\"code\":\"out_of_memory\"");
  ASSERT_CONTAINS(out, "the request was carried out");
  fixture_stop(&f);
}

/* A request target over 4 KiB is answered 414 with its own code, not 400. */
TEST(long_target_is_414)
{
  struct fixture f;
  char req[6000], out[4096];
  int fd;

  fixture_start(&f, 10);
  memset(req, 'a', sizeof(req));
  memcpy(req, "GET /", 5);
  snprintf(req + 5000, sizeof(req) - 5000, " HTTP/1.1\r\nHost: x\r\n\r\n");
  fd = client_connect(&f);
  client_send(fd, req);
  client_read(&f, fd, 10, out, sizeof(out));
  close(fd);
  ASSERT_EQ(f.requests, 0);
  ASSERT(strncmp(out, "HTTP/1.1 414 URI Too Long\r\n", 27) == 0);
  ASSERT_CONTAINS(out, "uri_too_long");
  fixture_stop(&f);
}

/* A client that half-closes after its request (as `nc -N` or socat do) still gets the
 * whole answer, even one larger than the socket's buffer. */
TEST(half_close_gets_whole_answer)
{
  static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             "Content-Length: 4194304\r\n\r\n";
  struct fixture f;
  size_t got;
  int fd, closed;

  fixture_start(&f, 4u << 20);
  fd = client_connect(&f);
  client_send(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
  got = client_drain(&f, fd, 20, &closed);
  ASSERT(closed);
  ASSERT_EQ(f.requests, 1);
  ASSERT_EQ(got, sizeof(head) - 1 + (4u << 20));
  close(fd);
  fixture_stop(&f);
}

/* A client that sends its request a byte at a time, never finishing it, is closed once
 * the time for a request has passed: reads do not extend it (they used to, so such a
 * client held one of the 64 slots for as long as it kept sending). */
TEST(trickled_request_is_cut_off)
{
  static const char req[] = "GET /healthz HTTP/1.1\r\nX-Slow: ";
  struct fixture f;
  double start, next;
  size_t sent = 0;
  int fd, closed = 0;

  fixture_start(&f, 16);
  fd = client_connect(&f);
  start = now_s();
  next = start;
  /* The server allows 30 s per request; a byte every 250 ms, for up to 36 s. */
  while (!closed && now_s() < start + 36) {
    char buf[256];
    ssize_t n;

    if (now_s() >= next) {
      char c = sent < sizeof(req) - 1 ? req[sent] : 'a';

      if (send(fd, &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
        sent++;
      next += 0.25;
    }
    uv_run(&f.loop, UV_RUN_NOWAIT);
    n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno == ECONNRESET))
      closed = 1;
    else
      usleep(5000);
  }
  ASSERT(closed);
  ASSERT_GE(now_s() - start, 29);
  ASSERT_LT(now_s() - start, 33);
  ASSERT_EQ(f.requests, 0);
  close(fd);
  fixture_stop(&f);
}

/* A daemon that is alive but not accepting (its backlog full) still holds its path:
 * a new one must say so at once, not hang in connect() waiting for it. */
TEST(busy_daemon_detected_without_hanging)
{
  struct sockaddr_un sa;
  struct proxy_control *ctl = NULL;
  uv_loop_t loop;
  char path[108], err[256];
  int lfd, fds[64], n = 0, full = 0, i;

  snprintf(path, sizeof(path), "%s/busy.sock", test_tmpdir());
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  ASSERT_EQ(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ASSERT_EQ(listen(lfd, 0), 0);
  /* Fill the backlog: connections nobody accepts, until one would wait. */
  while (n < 64 && !full) {
    fds[n] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ASSERT_GE(fds[n], 0);
    if (connect(fds[n], (struct sockaddr *)&sa, sizeof(sa)) != 0) {
      ASSERT_EQ(errno, EAGAIN);
      full = 1;
    }
    n++;
  }
  ASSERT_EQ(full, 1);
  ASSERT_EQ(uv_loop_init(&loop), 0);
  ASSERT_EQ(proxy_control_start(&loop, path, handler, NULL, &ctl, err, sizeof(err)),
            -EADDRINUSE);
  ASSERT_CONTAINS(err, "another daemon");
  ASSERT_NULL(ctl);
  ASSERT_EQ(uv_loop_close(&loop), 0);
  for (i = 0; i < n; i++)
    close(fds[i]);
  close(lfd);
}

/* Counts the answers on fds[0..n) by status line, running the server meanwhile, until
 * every connection has closed or limit_s passes. */
static void read_statuses(struct fixture *f, int *fds, int n, double limit_s, int *ok,
                          int *busy, int *other)
{
  char out[4096];
  int i;

  *ok = *busy = *other = 0;
  for (i = 0; i < n; i++) {
    client_read(f, fds[i], limit_s, out, sizeof(out));
    if (strncmp(out, "HTTP/1.1 200 ", 13) == 0)
      (*ok)++;
    else if (strncmp(out, "HTTP/1.1 503 ", 13) == 0 && strstr(out, "too_many_clients"))
      (*busy)++;
    else
      (*other)++;
    close(fds[i]);
  }
}

/* A burst of more clients than the server serves at once (a runtime starting many
 * sandboxes together), all arriving while the loop is busy: each is answered in its
 * turn. The cap on clients bounds what slow clients hold; it must not refuse clients
 * that a moment's wait would serve. */
TEST(burst_beyond_client_cap_is_served)
{
  struct fixture f;
  int fds[100], i, ok, busy, other;

  fixture_start(&f, 10);
  for (i = 0; i < 100; i++) {
    fds[i] = client_connect(&f);
    client_send(fds[i], "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  }
  read_statuses(&f, fds, 100, 10, &ok, &busy, &other);
  ASSERT_EQ(busy, 0);
  ASSERT_EQ(other, 0);
  ASSERT_EQ(ok, 100);
  ASSERT_EQ(f.requests, 100);
  fixture_stop(&f);
}

/* Clients that hold every slot and send nothing: a further client waits a moment for
 * a slot, then hears why it is refused (503 too_many_clients), well before the slots'
 * own 30 s run out; once a slot frees, clients are served again. */
TEST(client_cap_refuses_after_a_wait)
{
  struct fixture f;
  int held[64], late[2], fd, i, ok, busy, other;
  char out[4096];
  double start, took;

  fixture_start(&f, 10);
  for (i = 0; i < 64; i++)
    held[i] = client_connect(&f);
  /* Let the server take them all before the next one comes. */
  client_read(&f, held[0], 0.3, out, sizeof(out));
  ASSERT_EQ(out[0], '\0');
  start = now_s();
  for (i = 0; i < 2; i++) {
    late[i] = client_connect(&f);
    client_send(late[i], "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  }
  read_statuses(&f, late, 2, 10, &ok, &busy, &other);
  took = now_s() - start;
  ASSERT_EQ(busy, 2);
  ASSERT_EQ(ok + other, 0);
  ASSERT_LT(took, 8);
  close(held[0]);
  client_read(&f, held[1], 0.3, out, sizeof(out)); /* the server sees the close */
  fd = client_connect(&f);
  client_send(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  read_statuses(&f, &fd, 1, 10, &ok, &busy, &other);
  ASSERT_EQ(ok, 1);
  for (i = 1; i < 64; i++)
    close(held[i]);
  fixture_stop(&f);
}

/* Runs the server while reading what it sends to fd into out (NUL-terminated), until
 * out holds text, it closes the connection or limit_s passes. */
static void client_read_until(struct fixture *f, int fd, double limit_s, const char *text,
                              char *out, size_t size)
{
  double end = now_s() + limit_s;
  size_t got = 0;

  out[0] = '\0';
  while (now_s() < end && got + 1 < size && strstr(out, text) == NULL) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ssize_t n;

    uv_run(&f->loop, UV_RUN_NOWAIT);
    if (poll(&p, 1, 5) <= 0)
      continue;
    n = recv(fd, out + got, size - 1 - got, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno == ECONNRESET))
      break;
    if (n < 0) {
      ASSERT(errno == EAGAIN || errno == EINTR);
      continue;
    }
    got += (size_t)n;
    out[got] = '\0';
  }
}

/*
 * A request with Expect: 100-continue (curl -T sends it, whatever the size) gets a
 * 100 Continue before its body: the client sends the body only after it, or after a
 * wait of its own (a second for curl, on every call). None went out, so each attach
 * made with `curl -T config.json` took a second. An HTTP/1.0 client gets none, and
 * one whose body is over the limit gets its 413 at once instead.
 */
TEST(expect_continue_answered)
{
  struct fixture f;
  char out[4096];
  int fd;

  fixture_start(&f, 10);
  fd = client_connect(&f);
  client_send(fd, "PUT /v1/sandboxes/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                  "EXPECT:  100-Continue \r\n\r\n");
  client_read_until(&f, fd, 10, "\r\n\r\n", out, sizeof(out));
  ASSERT_STREQ(out, "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_EQ(f.requests, 0);
  /* The body, then a second request on the connection, chunked. */
  client_send(fd, "{}PUT /v1/sandboxes/b HTTP/1.1\r\nHost: x\r\n"
                  "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
  client_read_until(&f, fd, 10, "HTTP/1.1 100 Continue\r\n\r\n", out, sizeof(out));
  ASSERT(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
  ASSERT_CONTAINS(out, "abcdefghijHTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_EQ(f.requests, 1);
  /* An Expect in a trailer asks nothing: no 100 for the next request either. */
  client_send(fd, "2\r\n{}\r\n0\r\nExpect: 100-continue\r\n\r\n");
  client_read_until(&f, fd, 10, "abcdefghij", out, sizeof(out));
  ASSERT(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
  ASSERT_EQ(f.requests, 2);
  client_send(fd, "PUT /v1/sandboxes/e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
  client_read_until(&f, fd, 10, "abcdefghij", out, sizeof(out));
  ASSERT(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
  ASSERT_EQ(f.requests, 3);
  close(fd);

  /* HTTP/1.0: no interim answer; the final one once the body is there. */
  fd = client_connect(&f);
  client_send(fd, "PUT /v1/sandboxes/c HTTP/1.0\r\nContent-Length: 2\r\n"
                  "Expect: 100-continue\r\n\r\n");
  client_read_until(&f, fd, 0.3, "\r\n\r\n", out, sizeof(out));
  ASSERT_STREQ(out, "");
  client_send(fd, "{}");
  client_read_until(&f, fd, 10, "abcdefghij", out, sizeof(out));
  ASSERT(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
  close(fd);

  /* Over the limit: the 413 at once, and no 100. */
  fd = client_connect(&f);
  client_send(fd, "PUT /v1/sandboxes/d HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n"
                  "Expect: 100-continue\r\n\r\n");
  client_read_until(&f, fd, 10, "}}", out, sizeof(out));
  ASSERT(strncmp(out, "HTTP/1.1 413 ", 13) == 0);
  ASSERT_EQ(f.requests, 4);
  close(fd);
  fixture_stop(&f);
}

/* Runs the server loop a few times without waiting: what it has to read is read. */
static void run_a_little(struct fixture *f)
{
  int i;

  for (i = 0; i < 20; i++) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
}

/*
 * A pipelining client whose next request asks Expect: 100-continue while the socket is
 * full of answers it has not read: the 100 Continue waits in the write queue, the body
 * arrives, and reading stops until that queue is empty. It empties when the 100 is
 * written, but only the write of a final answer resumed reading: the body was never
 * read, and the client, having read all there was, waited for its answer until the
 * idle timeout closed the connection (30 s).
 *
 * A first connection sends GETs without reading: the server answers until the socket
 * is full, and the one answer more it queued says how many fit (C). A second sends C
 * GETs and the PUT's head, so that the 100 is the write that finds the socket full,
 * then the PUT's body.
 */
TEST(expect_continue_queued_behind_unread_answers)
{
  enum { PROBE = 500, BODY = 1000 };
  static const char get[] = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
  static const char put[] = "PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                            "Expect: 100-continue\r\n\r\n";
  char head[256], *batch, *out;
  size_t answer_len, fit, i, got, want;
  struct fixture f;
  unsigned before;
  int fd, n;

  fixture_start(&f, BODY);
  n = snprintf(head, sizeof(head),
               "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n",
               BODY);
  answer_len = (size_t)n + BODY;
  batch = malloc(PROBE * (sizeof(get) - 1) + sizeof(put));
  ASSERT_NOT_NULL(batch);
  for (i = 0; i < PROBE; i++)
    memcpy(batch + i * (sizeof(get) - 1), get, sizeof(get));
  fd = client_connect(&f);
  client_send(fd, batch); /* within one read of the server's (16 KiB) */
  run_a_little(&f);
  if (f.requests < 2 || f.requests >= PROBE)
    TEST_FAIL_("%u of %d unread answers before the server stopped: no full socket to "
               "test with", f.requests, PROBE);
  fit = f.requests - 1;
  close(fd);
  run_a_little(&f);

  before = f.requests;
  for (i = 0; i < fit; i++)
    memcpy(batch + i * (sizeof(get) - 1), get, sizeof(get) - 1);
  memcpy(batch + fit * (sizeof(get) - 1), put, sizeof(put));
  fd = client_connect(&f);
  client_send(fd, batch);
  run_a_little(&f);
  ASSERT_EQ(f.requests - before, fit);
  client_send(fd, "x");
  run_a_little(&f);
  free(batch);
  /* Everything: C answers, the 100, the PUT's answer. */
  want = fit * answer_len + 25 + answer_len;
  out = malloc(want + 4096);
  ASSERT_NOT_NULL(out);
  got = 0;
  {
    double end = now_s() + 10;

    while (now_s() < end && got < want) {
      struct pollfd p = { .fd = fd, .events = POLLIN };
      ssize_t r;

      uv_run(&f.loop, UV_RUN_NOWAIT);
      if (poll(&p, 1, 5) <= 0)
        continue;
      r = recv(fd, out + got, want + 4096 - got, MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno == ECONNRESET))
        break;
      if (r > 0)
        got += (size_t)r;
    }
  }
  if (got != want || f.requests - before != fit + 1)
    TEST_FAIL_("%zu answers and a 100 Continue: read %zu of %zu bytes; %u of %zu requests "
               "handled", fit, got, want, f.requests - before, fit + 1);
  ASSERT_EQ(memcmp(out + fit * answer_len, "HTTP/1.1 100 Continue\r\n\r\n", 25), 0);
  ASSERT_EQ(memcmp(out + fit * answer_len + 25, head, strlen(head)), 0);
  free(out);
  close(fd);
  fixture_stop(&f);
}

/*
 * Connections an HTTP client keeps alive between requests (its pool: a few
 * orchestrator processes hold 64 of them) give their slots up to connections waiting
 * for one: the idle ones are closed, as servers close idle kept-alive connections. They
 * held every slot for their idle time (30 s), and every other client, a runtime's
 * attach included, waited 2 s to be refused 503 too_many_clients ("none of them has
 * finished"). A client that has begun its next request, or sent it whole for the
 * loop to read, is not closed.
 */
TEST(idle_kept_alive_clients_give_up_their_slots)
{
  struct fixture f;
  int pooled[64], late[2], i, ok, busy, other, closed = 0;
  char out[4096];

  fixture_start(&f, 10);
  for (i = 0; i < 64; i++) {
    pooled[i] = client_connect(&f);
    client_send(pooled[i], "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    client_read_until(&f, pooled[i], 10, "abcdefghij", out, sizeof(out));
    ASSERT(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
  }
  /* One has begun its next request; another has sent it whole, not read yet. */
  client_send(pooled[0], "GET /healthz HTTP/1.1\r\n");
  client_read_until(&f, pooled[0], 0.2, "\r\n\r\n", out, sizeof(out));
  ASSERT_STREQ(out, "");
  client_send(pooled[1], "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  for (i = 0; i < 2; i++) {
    late[i] = client_connect(&f);
    client_send(late[i], "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  }
  read_statuses(&f, late, 2, 10, &ok, &busy, &other);
  ASSERT_EQ(busy, 0);
  ASSERT_EQ(other, 0);
  ASSERT_EQ(ok, 2);
  /* Two idle ones were closed for them; the others are served as before. */
  for (i = 0; i < 64; i++) {
    char c;

    uv_run(&f.loop, UV_RUN_NOWAIT);
    if (i == 1)
      continue; /* its answer is read below */
    if (recv(pooled[i], &c, 1, MSG_DONTWAIT) == 0) {
      ASSERT(i != 0);
      closed++;
      close(pooled[i]);
      pooled[i] = -1;
    }
  }
  ASSERT_EQ(closed, 2);
  client_read_until(&f, pooled[1], 10, "abcdefghij", out, sizeof(out));
  ASSERT(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
  client_send(pooled[0], "Host: x\r\n\r\n");
  client_read_until(&f, pooled[0], 10, "abcdefghij", out, sizeof(out));
  ASSERT(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
  for (i = 0; i < 64; i++)
    if (pooled[i] >= 0)
      close(pooled[i]);
  fixture_stop(&f);
}

/*
 * A client that becomes idle between requests while a connection waits for a slot
 * gives its slot up then: every slot was busy (requests begun) when the connection
 * came, and one finished a moment later. The waiting connection was served only when
 * its wait ran out (2 s), and the log said that none of the 64 had finished.
 */
TEST(client_idle_after_its_answer_gives_its_slot_to_one_waiting)
{
  struct fixture f;
  int pooled[64], late, i, ok, busy, other, saved;
  char out[4096], log[4096], path[1024];
  FILE *fp;
  size_t n;

  fixture_start(&f, 10);
  for (i = 0; i < 64; i++) {
    pooled[i] = client_connect(&f);
    client_send(pooled[i], "GET /healthz HTTP/1.1\r\n");
  }
  client_read(&f, pooled[0], 0.3, out, sizeof(out));
  ASSERT_EQ(out[0], '\0');
  snprintf(path, sizeof(path), "%s/idle.log", test_tmpdir());
  saved = test_stderr_to(path);
  late = client_connect(&f);
  client_send(late, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  client_read(&f, late, 0.3, out, sizeof(out));
  ASSERT_EQ(out[0], '\0');
  /* One finishes its request and stays, kept alive. */
  client_send(pooled[0], "Host: x\r\n\r\n");
  client_read_until(&f, pooled[0], 10, "abcdefghij", out, sizeof(out));
  ASSERT(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
  read_statuses(&f, &late, 1, 10, &ok, &busy, &other);
  test_stderr_back(saved);
  ASSERT_EQ(ok, 1);
  fp = fopen(path, "r");
  ASSERT(fp != NULL);
  n = fread(log, 1, sizeof(log) - 1, fp);
  log[n] = '\0';
  fclose(fp);
  if (strstr(log, "refusing") != NULL)
    TEST_FAIL_("served only when its wait ran out: %s", log);
  for (i = 0; i < 64; i++)
    close(pooled[i]);
  fixture_stop(&f);
}
