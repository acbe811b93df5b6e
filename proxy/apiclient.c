/*
 * The blocking control API client (apiclient.h). Used by short-lived commands (ctl,
 * the CNI plugin, the OCI hook), never by the daemon's loop.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "proxy/apiclient.h"
#include "proxy/strbuf.h"
#include "rules/rules.h"

#define MAX_HEAD 16384

static int64_t now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes everything by deadline (now_ms). Non-blocking sends with a poll for room in
 * between: a blocking send's timeout (SO_SNDTIMEO) restarts whenever the daemon takes
 * a little, so a daemon taking the request in slowly would hold the caller far past
 * its deadline. MSG_NOSIGNAL: a daemon that answers early (413) and closes must not
 * kill the caller with SIGPIPE. */
static int send_all(int fd, const char *p, size_t len, int64_t deadline)
{
  while (len > 0) {
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    int64_t left;
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return -errno;
    if (n < 0) {
      left = deadline - now_ms();
      if (left <= 0)
        return -ETIMEDOUT;
      if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
        return -errno;
      continue;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Parses a decimal number of at most 10 digits from p[0..len); -1 if malformed. */
static long long parse_decimal(const char *p, size_t len)
{
  long long v = 0;
  size_t i;

  if (len == 0 || len > 10)
    return -1;
  for (i = 0; i < len; i++) {
    if (p[i] < '0' || p[i] > '9')
      return -1;
    v = v * 10 + (p[i] - '0');
  }
  return v;
}

int proxy_api_parse_answer(const char *raw, size_t len, struct proxy_api_answer *a)
{
  const char *end, *line, *next, *colon, *v, *ve;
  long long content_length = -1, status;
  size_t head_len, body_len;

  memset(a, 0, sizeof(*a));
  end = memmem(raw, len < MAX_HEAD ? len : MAX_HEAD, "\r\n\r\n", 4);
  if (end == NULL || len < 13 || memcmp(raw, "HTTP/1.1 ", 9) != 0 ||
      (raw[12] != ' ' && raw[12] != '\r'))
    return -EPROTO;
  status = parse_decimal(raw + 9, 3);
  if (status < 100 || status > 599)
    return -EPROTO;
  head_len = (size_t)(end - raw) + 4;
  next = memchr(raw, '\n', head_len);
  if (next[-1] != '\r')
    return -EPROTO; /* the status line ends with a bare LF */
  /* Header lines: only Content-Length and Transfer-Encoding matter here. */
  for (line = next + 1; line < end; line = next + 1) {
    next = memchr(line, '\n', (size_t)(end + 2 - line));
    if (next == NULL || next == line || next[-1] != '\r')
      return -EPROTO;
    colon = memchr(line, ':', (size_t)(next - line));
    if (colon == NULL)
      return -EPROTO;
    for (v = colon + 1; v < next - 1 && (*v == ' ' || *v == '\t'); v++)
      ;
    for (ve = next - 1; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
      ;
    if ((size_t)(colon - line) == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
      if (content_length >= 0)
        return -EPROTO;
      content_length = parse_decimal(v, (size_t)(ve - v));
      if (content_length < 0)
        return -EPROTO;
    } else if ((size_t)(colon - line) == 17 &&
               strncasecmp(line, "Transfer-Encoding", 17) == 0) {
      /* The daemon always sends Content-Length; anything else is not it. */
      return -EPROTO;
    }
  }
  body_len = len - head_len;
  if (content_length >= 0) {
    if ((unsigned long long)content_length > body_len)
      return -EPROTO; /* cut short */
    body_len = (size_t)content_length;
  }
  if (memchr(raw + head_len, '\0', body_len) != NULL)
    return -EPROTO;
  a->body = malloc(body_len + 1);
  if (a->body == NULL)
    return -ENOMEM;
  memcpy(a->body, raw + head_len, body_len);
  a->body[body_len] = '\0';
  a->body_len = body_len;
  a->status = (int)status;
  return 0;
}

void proxy_api_answer_free(struct proxy_api_answer *a)
{
  free(a->body);
  memset(a, 0, sizeof(*a));
}

int proxy_api_name_ok(const char *s, size_t max)
{
  size_t i;

  if (s == NULL || s[0] == '\0')
    return 0;
  for (i = 0; s[i] != '\0'; i++) {
    char c = s[i];
    int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');

    if (i >= max || (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-'))))
      return 0;
  }
  return 1;
}

int proxy_api_unreachable(int ret)
{
  return ret == -ENOENT || ret == -ECONNREFUSED || ret == -ENOTSOCK;
}

/* 0 if something listens on the socket at sock (its backlog full included), else
 * -ENOENT, -ECONNREFUSED or -ENOTSOCK as connect says (see proxy_api_unreachable). */
static int listening(const char *sock)
{
  struct sockaddr_un sa;
  int fd, r;

  if (strlen(sock) >= sizeof(sa.sun_path))
    return 0;
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return 0;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, sock, strlen(sock));
  r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 ? 0 : -errno;
  close(fd);
  return proxy_api_unreachable(r) ? r : 0;
}

static int connect_to(const char *sock, int timeout_ms, char *err, size_t errsz)
{
  struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
  struct sockaddr_un sa;
  int fd, r;

  if (strlen(sock) >= sizeof(sa.sun_path)) {
    snprintf(err, errsz, "control socket path %s is too long (at most %zu bytes)", sock,
             sizeof(sa.sun_path) - 1);
    return -ENAMETOOLONG;
  }
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    r = -errno;
    snprintf(err, errsz, "cannot create a socket: %s", strerror(-r));
    return r;
  }
  /* Bounds connect (a full backlog); sends are bounded by send_all. */
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, sock, strlen(sock));
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    r = errno == EAGAIN || errno == EINPROGRESS ? -ETIMEDOUT : -errno;
    snprintf(err, errsz, "cannot connect to the control socket %s: %s%s", sock,
             strerror(-r),
             proxy_api_unreachable(r) ? " (is `authproxy serve` running?)" : "");
    close(fd);
    return r;
  }
  return fd;
}

int proxy_api_call(const char *sock, const char *method, const char *path,
                   const char *body, size_t body_len, int timeout_ms,
                   struct proxy_api_answer *a, char *err, size_t errsz)
{
  int64_t deadline = now_ms() + timeout_ms;
  struct strbuf req, in;
  char buf[65536];
  int fd, r, sent;

  memset(a, 0, sizeof(*a));
  strbuf_init(&req);
  strbuf_init(&in);
  req.secret = 1; /* a request may push a secret, an answer may show a CA key */
  in.secret = 1;
  fd = connect_to(sock, timeout_ms, err, errsz);
  if (fd < 0)
    return fd;
  strbuf_addf(&req, "%s %s HTTP/1.1\r\nHost: authproxy\r\nConnection: close\r\n", method,
              path);
  if (body != NULL)
    strbuf_addf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n", body_len);
  strbuf_adds(&req, "\r\n");
  if (body != NULL)
    strbuf_add(&req, body, body_len);
  if (req.oom) {
    r = -ENOMEM;
    snprintf(err, errsz, "out of memory");
    goto out;
  }
  sent = send_all(fd, req.data, req.len, deadline);
  /* A daemon that refuses a request early (413) answers and closes before reading it
   * all: the answer is still worth reading. */
  if (sent != 0 && sent != -EPIPE && sent != -ECONNRESET) {
    r = sent;
    if (r == -ETIMEDOUT)
      snprintf(err, errsz, "%s did not take the request within %d s", sock,
               timeout_ms / 1000);
    else
      snprintf(err, errsz, "cannot send the request to %s: %s", sock, strerror(-r));
    goto out;
  }
  for (;;) {
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int64_t left = deadline - now_ms();
    ssize_t n;

    r = left <= 0 ? 0 : poll(&pfd, 1, (int)left);
    if (r < 0 && errno == EINTR)
      continue;
    if (r == 0) {
      r = -ETIMEDOUT;
      snprintf(err, errsz, "no answer from %s within %d s", sock, timeout_ms / 1000);
      goto out;
    }
    n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == ECONNRESET && in.len > 0)
      break;
    if ((n < 0 && errno == ECONNRESET) || (n == 0 && in.len == 0)) {
      /* Closed unanswered. A daemon stopping closes the connections it has not
       * answered (those waiting for a slot too), as does one killed: nothing listens
       * there any more, and saying so is what the caller needs (a CNI DEL, an OCI
       * poststop, then finish without it). A daemon still listening accepted a
       * connection it could not take, as libuv does out of descriptors (or memory). */
      r = listening(sock);
      if (r != 0) {
        snprintf(err, errsz, "%s closed the connection without an answer, and nothing "
                 "listens there now: the daemon stopped (is `authproxy serve` running?)",
                 sock);
        goto out;
      }
      r = -ECONNRESET;
      snprintf(err, errsz, "%s closed the connection without an answer: is the daemon "
               "out of file descriptors? (see its log)", sock);
      goto out;
    }
    if (n < 0) {
      r = -errno;
      snprintf(err, errsz, "cannot read the answer from %s: %s", sock, strerror(-r));
      goto out;
    }
    if (n == 0)
      break;
    if (in.len + (size_t)n > PROXY_API_MAX_ANSWER) {
      r = -EFBIG;
      snprintf(err, errsz, "the answer from %s is larger than %u bytes", sock,
               PROXY_API_MAX_ANSWER);
      goto out;
    }
    strbuf_add(&in, buf, (size_t)n);
    if (in.oom) {
      r = -ENOMEM;
      snprintf(err, errsz, "out of memory");
      goto out;
    }
  }
  r = proxy_api_parse_answer(in.data ? in.data : "", in.len, a);
  if (r == -EPROTO)
    snprintf(err, errsz, "malformed answer from %s (is it an authproxy control socket?)",
             sock);
  else if (r != 0)
    snprintf(err, errsz, "out of memory");
out:
  strbuf_free(&req); /* both wiped: .secret */
  strbuf_free(&in);
  close(fd);
  return r;
}

int proxy_api_body_parse(const struct proxy_api_answer *a, cJSON **root)
{
  unsigned long failures = rules_json_alloc_failures();

  *root = a->body ? cJSON_ParseWithLength(a->body, a->body_len) : NULL;
  if (*root != NULL)
    return 0;
  return rules_json_alloc_failures() != failures ? -ENOMEM : -EBADMSG;
}

int proxy_api_error_parse(const struct proxy_api_answer *a, cJSON **root, const char **code,
                          const char **message, const cJSON **details)
{
  const cJSON *e, *c, *m, *d;
  int r = proxy_api_body_parse(a, root);

  if (r != 0)
    return r;
  e = cJSON_GetObjectItemCaseSensitive(*root, "error");
  c = cJSON_GetObjectItemCaseSensitive(e, "code");
  m = cJSON_GetObjectItemCaseSensitive(e, "message");
  d = cJSON_GetObjectItemCaseSensitive(e, "details");
  if (!cJSON_IsString(c) || !cJSON_IsString(m)) {
    cJSON_Delete(*root);
    *root = NULL;
    return -EBADMSG;
  }
  *code = c->valuestring;
  *message = m->valuestring;
  *details = cJSON_IsArray(d) ? d : NULL;
  return 0;
}

int proxy_api_error_text(const struct proxy_api_answer *a, char *buf, size_t size)
{
  const char *code, *msg;
  const cJSON *details, *it;
  cJSON *root;
  int r = proxy_api_error_parse(a, &root, &code, &msg, &details);
  size_t off;
  int n;

  if (size == 0) {
    cJSON_Delete(root);
    return r == -ENOMEM ? r : 0;
  }
  if (r != 0) {
    /* Not an API error: the status and the start of the body, on one line. */
    snprintf(buf, size, "HTTP %d: %.200s", a->status, a->body ? a->body : "");
    for (off = 0; buf[off] != '\0'; off++)
      if ((unsigned char)buf[off] < 0x20)
        buf[off] = ' ';
    return r == -ENOMEM ? r : 0;
  }
  n = snprintf(buf, size, "%s: %s", code, msg);
  off = n < 0 ? 0 : (size_t)n;
  cJSON_ArrayForEach(it, details) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "path");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(it, "message");

    if (off >= size)
      break;
    if (cJSON_IsString(p) && cJSON_IsString(m)) {
      n = snprintf(buf + off, size - off, "; %s: %s", p->valuestring, m->valuestring);
      off += n < 0 ? 0 : (size_t)n;
    }
  }
  if (off >= size && size > 4)
    memcpy(buf + size - 4, "...", 4);
  cJSON_Delete(root);
  return 0;
}

void proxy_api_attach_body(struct strbuf *b, const char *netns, const char *config_json,
                           const char *config_name)
{
  strbuf_adds(b, "{\"netns\":");
  strbuf_add_json_str(b, netns, strlen(netns));
  if (config_json != NULL) {
    strbuf_adds(b, ",\"proxy_config\":");
    strbuf_adds(b, config_json);
  } else {
    strbuf_adds(b, ",\"proxy_config_name\":");
    strbuf_add_json_str(b, config_name, strlen(config_name));
  }
  strbuf_adds(b, "}");
}

static int name_char(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == '-';
}

int proxy_api_derive_name(const char *prefix, const char *id, char *out, size_t size)
{
  size_t plen = strlen(prefix), ilen = strlen(id), i;
  uint32_t h = 2166136261u; /* FNV-1a */
  int plain = ilen <= 60;

  if (ilen == 0 || plen == 0 || plen > 8 || size < PROXY_API_NAME_SIZE ||
      !((prefix[0] >= 'a' && prefix[0] <= 'z') || (prefix[0] >= 'A' && prefix[0] <= 'Z') ||
        (prefix[0] >= '0' && prefix[0] <= '9')))
    return -EINVAL;
  for (i = 0; i < plen; i++)
    if (!name_char(prefix[i]))
      return -EINVAL;
  for (i = 0; i < ilen; i++) {
    h = (h ^ (unsigned char)id[i]) * 16777619u;
    if (!name_char(id[i]))
      plain = 0;
  }
  memcpy(out, prefix, plen);
  if (plain) {
    memcpy(out + plen, id, ilen + 1);
    return 0;
  }
  for (i = 0; i < ilen && i < 51; i++)
    out[plen + i] = name_char(id[i]) ? id[i] : '_';
  snprintf(out + plen + i, size - plen - i, "-%08x", (unsigned)h);
  return 0;
}
