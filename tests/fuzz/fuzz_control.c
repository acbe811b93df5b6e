/*
 * Fuzz target for the control API's request path (proxy/control.c): the bytes a
 * client writes to the control socket, parsed by the server's llhttp glue into
 * requests, dispatched to a handler, and answered.
 *
 * The server runs on a libuv loop on a Unix socket in a private temporary directory
 * (created once, removed at exit). Each input is written by a client socket, which
 * then half-closes and reads until the server closes the connection; the loop is
 * run without blocking in between, for a bounded number of rounds.
 *
 * The handler checks what the transport promises (abort on violation): a method
 * that is one of llhttp's names, a NUL-terminated path without a query, a body that
 * is NUL-terminated at body_len and no longer than PROXY_CONTROL_MAX_BODY. It then
 * answers with an error naming the path, whose JSON must parse back to the same
 * bytes (the escaping of arbitrary URL bytes). The client must see only complete
 * answers: every "HTTP/1.1 " status line starts a response whose Content-Length
 * bytes follow, except an answer to HEAD, which has no body (the handler records
 * which requests were HEAD, in order; a final error answer of the server's own,
 * to a request it could not parse, has its body).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "proxy/control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Rounds of the loop per input: enough for the largest inputs libFuzzer makes by
 * default to be written, parsed and answered many times over. */
#define MAX_ROUNDS 20000

static uv_loop_t loop;
static struct proxy_control *ctl;
static char dir[64];
static char sock_path[100]; /* fits sockaddr_un.sun_path (108) */

static void cleanup(void)
{
  if (ctl != NULL) {
    proxy_control_close(ctl, NULL, NULL);
    ctl = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  if (sock_path[0] != '\0')
    unlink(sock_path);
  if (dir[0] != '\0')
    rmdir(dir);
}

/*
 * Whether decoded (a JSON string as cJSON decodes it) is what strbuf_add_json_str
 * encoded from raw: bytes from 0x80 up are escaped as \u00XX, which decodes to the
 * UTF-8 form of that code point. proxy_control_error keeps at most 1023 bytes.
 */
static int same_text(const char *decoded, const char *raw, size_t len)
{
  const unsigned char *d = (const unsigned char *)decoded;
  size_t i;

  if (len > 1023)
    len = 1023;
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)raw[i];

    if (c < 0x80) {
      if (*d++ != c)
        return 0;
    } else {
      if (d[0] != (0xc0 | (c >> 6)) || d[1] != (0x80 | (c & 0x3f)))
        return 0;
      d += 2;
    }
  }
  return *d == '\0';
}

/* Whether each request of the current input the handler saw was HEAD, in order. */
static unsigned char heads[1 << 16];
static size_t nrequests;

static void handler(void *arg, const struct proxy_control_request *req,
                    struct proxy_control_response *resp)
{
  static const char *const methods[] = { "GET", "PUT", "POST", "PATCH", "DELETE", "HEAD",
                                         "OPTIONS" };
  cJSON *root, *err, *msg;
  size_t i, plen;
  int known = 0;

  (void)arg;
  if (req->method == NULL || req->path == NULL || req->body == NULL)
    abort();
  for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
    known |= strcmp(req->method, methods[i]) == 0;
  if (!known && strlen(req->method) == 0)
    abort();
  if (nrequests == sizeof(heads))
    abort(); /* more requests than any input of libFuzzer's sizes can hold */
  heads[nrequests++] = strcmp(req->method, "HEAD") == 0;
  plen = strlen(req->path);
  if (memchr(req->path, '?', plen) != NULL)
    abort();
  if (req->body[req->body_len] != '\0' || req->body_len > PROXY_CONTROL_MAX_BODY)
    abort();
  /* Answer an error naming the path; the escaping must round-trip. */
  proxy_control_error(resp, 404, "not_found", "%s", req->path);
  if (resp->body.oom)
    return;
  root = cJSON_Parse(resp->body.data);
  if (root == NULL)
    abort();
  err = cJSON_GetObjectItemCaseSensitive(root, "error");
  msg = err ? cJSON_GetObjectItemCaseSensitive(err, "message") : NULL;
  if (!cJSON_IsString(msg) || !same_text(msg->valuestring, req->path, plen))
    abort();
  cJSON_Delete(root);
}

static void init(void)
{
  char err[256];

  snprintf(dir, sizeof(dir), "/tmp/authproxy-fuzz-control.XXXXXX");
  if (mkdtemp(dir) == NULL) {
    dir[0] = '\0';
    abort();
  }
  snprintf(sock_path, sizeof(sock_path), "%s/control.sock", dir);
  if (uv_loop_init(&loop) != 0 ||
      proxy_control_start(&loop, sock_path, handler, NULL, &ctl, err, sizeof(err)) != 0) {
    fprintf(stderr, "fuzz_control: %s\n", err);
    abort();
  }
  atexit(cleanup);
}

/* Every status line the server wrote starts a response with a complete body (none
 * for HEAD). */
static void check_answers(const char *buf, size_t len)
{
  size_t off = 0, i = 0;

  while (off < len) {
    const char *head_end, *cl;
    unsigned long body;

    if (len - off < 9 || memcmp(buf + off, "HTTP/1.1 ", 9) != 0)
      abort();
    head_end = memmem(buf + off, len - off, "\r\n\r\n", 4);
    if (head_end == NULL)
      abort();
    cl = memmem(buf + off, (size_t)(head_end - (buf + off)), "Content-Length: ", 16);
    if (cl == NULL)
      abort();
    body = strtoul(cl + 16, NULL, 10);
    if (i < nrequests && heads[i])
      body = 0;
    i++;
    off = (size_t)(head_end - buf) + 4;
    if (body > len - off)
      abort();
    off += body;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct sockaddr_un sa;
  char *answer = NULL;
  size_t written = 0, got = 0, cap = 0;
  int fd, rounds, eof = 0, shut = 0;

  if (ctl == NULL)
    init();
  nrequests = 0;
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    abort();
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
    abort();
  if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0)
    abort();
  for (rounds = 0; rounds < MAX_ROUNDS && !eof; rounds++) {
    ssize_t n;

    if (written < size) {
      n = send(fd, data + written, size - written, MSG_NOSIGNAL);
      if (n > 0)
        written += (size_t)n;
      else if (n < 0 && errno != EAGAIN)
        written = size; /* the server closed early (an error answer): stop writing */
    }
    if (written == size && !shut) {
      shutdown(fd, SHUT_WR);
      shut = 1;
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    for (;;) {
      if (got == cap) {
        char *p = realloc(answer, cap ? cap * 2 : 4096);

        if (p == NULL)
          abort();
        answer = p;
        cap = cap ? cap * 2 : 4096;
      }
      n = recv(fd, answer + got, cap - got, 0);
      if (n > 0) {
        got += (size_t)n;
        continue;
      }
      if (n == 0 || (n < 0 && errno != EAGAIN))
        eof = 1;
      break;
    }
  }
  if (!eof)
    abort(); /* the server neither answered nor closed: a stuck connection */
  close(fd);
  /* Let the server run its close callbacks, so nothing of this input lingers. */
  uv_run(&loop, UV_RUN_NOWAIT);
  uv_run(&loop, UV_RUN_NOWAIT);
  check_answers(answer, got);
  free(answer);
  return 0;
}
