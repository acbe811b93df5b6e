/*
 * `authproxy ctl`: the command-line client of the control API (a Unix socket). One
 * request per invocation, blocking I/O, bounded answers; errors come back with the
 * API's code, message and every validation detail.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "proxy/cfgload.h"
#include "proxy/commands.h"
#include "proxy/strbuf.h"
#include "rules/rules.h"

#define DEFAULT_CONTROL "/run/authproxy/control.sock"
#define MAX_ANSWER (8u << 20)
#define TIMEOUT_MS 60000

static void usage(FILE *f)
{
  fprintf(f,
    "usage: authproxy ctl [--control SOCKET] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  attach NAME --netns PATH --config FILE [--ca-cert PEM --ca-key PEM]\n"
    "                               attach a namespace; prints the sandbox CA (PEM)\n"
    "  update NAME --config FILE    replace the sandbox's proxy_config atomically\n"
    "  get NAME                     the sandbox, redacted\n"
    "  list                         attached sandboxes (and those not re-attached)\n"
    "  detach NAME                  stop serving; the namespace keeps no network\n"
    "  ca NAME                      the sandbox CA certificate (PEM)\n"
    "  secret-set KEY [--from-file FILE]\n"
    "                               store a secret (read from stdin by default; one\n"
    "                               trailing newline is trimmed)\n"
    "  secret-delete KEY            remove a pushed secret\n"
    "  secrets                      names of pushed secrets\n"
    "  health | metrics\n"
    "\n"
    "The socket defaults to $AUTHPROXY_CONTROL, else " DEFAULT_CONTROL ".\n");
}

struct answer {
  int status;
  char *body;
  size_t body_len;
};

static int write_all(int fd, const char *p, size_t len)
{
  while (len > 0) {
    ssize_t n = write(fd, p, len);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Sends one request with Connection: close and reads the whole answer. */
static int call(const char *sock, const char *method, const char *path, const char *body,
                size_t body_len, struct answer *a)
{
  struct sockaddr_un sa;
  struct strbuf req, in;
  struct pollfd pfd;
  char buf[65536], *hdr_end, *cl;
  int fd, r;

  memset(a, 0, sizeof(*a));
  if (strlen(sock) >= sizeof(sa.sun_path)) {
    fprintf(stderr, "authproxy ctl: socket path %s is too long\n", sock);
    return -ENAMETOOLONG;
  }
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    r = -errno;
    fprintf(stderr, "authproxy ctl: cannot connect to %s: %s%s\n", sock, strerror(-r),
            r == -ENOENT || r == -ECONNREFUSED ? " (is `authproxy serve` running?)" : "");
    close(fd);
    return r;
  }
  strbuf_init(&req);
  strbuf_addf(&req, "%s %s HTTP/1.1\r\nHost: authproxy\r\nConnection: close\r\n", method,
              path);
  if (body != NULL)
    strbuf_addf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n", body_len);
  strbuf_adds(&req, "\r\n");
  if (body != NULL)
    strbuf_add(&req, body, body_len);
  r = req.oom ? -ENOMEM : write_all(fd, req.data, req.len);
  if (req.data != NULL)
    explicit_bzero(req.data, req.len);
  strbuf_free(&req);
  if (r != 0) {
    close(fd);
    return r;
  }
  strbuf_init(&in);
  for (;;) {
    ssize_t n;

    pfd.fd = fd;
    pfd.events = POLLIN;
    r = poll(&pfd, 1, TIMEOUT_MS);
    if (r == 0) {
      fprintf(stderr, "authproxy ctl: no answer from %s within %d s\n", sock,
              TIMEOUT_MS / 1000);
      r = -ETIMEDOUT;
      goto out;
    }
    n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      r = -errno;
      goto out;
    }
    if (n == 0)
      break;
    strbuf_add(&in, buf, (size_t)n);
    if (in.len > MAX_ANSWER || in.oom) {
      r = -EFBIG;
      goto out;
    }
  }
  r = -EPROTO;
  if (in.len < 12 || strncmp(in.data, "HTTP/1.1 ", 9) != 0)
    goto out;
  a->status = atoi(in.data + 9);
  hdr_end = strstr(in.data, "\r\n\r\n");
  if (hdr_end == NULL)
    goto out;
  a->body_len = in.len - (size_t)(hdr_end + 4 - in.data);
  cl = strcasestr(in.data, "\r\nContent-Length:");
  if (cl != NULL && cl < hdr_end && (size_t)atol(cl + 17) < a->body_len)
    a->body_len = (size_t)atol(cl + 17);
  a->body = malloc(a->body_len + 1);
  if (a->body == NULL) {
    r = -ENOMEM;
    goto out;
  }
  memcpy(a->body, hdr_end + 4, a->body_len);
  a->body[a->body_len] = '\0';
  r = 0;
out:
  if (r == -EPROTO)
    fprintf(stderr, "authproxy ctl: malformed answer from %s\n", sock);
  strbuf_free(&in);
  close(fd);
  return r;
}

/* Prints an API error and returns 1. */
static int report(const char *what, const struct answer *a)
{
  cJSON *root = cJSON_Parse(a->body ? a->body : "");
  const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
  const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
  const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
  const cJSON *details = cJSON_GetObjectItemCaseSensitive(err, "details"), *it;

  if (cJSON_IsString(code) && cJSON_IsString(msg)) {
    fprintf(stderr, "authproxy ctl: %s: %s: %s\n", what, code->valuestring, msg->valuestring);
    cJSON_ArrayForEach(it, details) {
      const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "path");
      const cJSON *m = cJSON_GetObjectItemCaseSensitive(it, "message");

      if (cJSON_IsString(p) && cJSON_IsString(m))
        fprintf(stderr, "  %s: %s\n", p->valuestring, m->valuestring);
    }
  } else {
    fprintf(stderr, "authproxy ctl: %s: HTTP %d: %s\n", what, a->status,
            a->body ? a->body : "");
  }
  cJSON_Delete(root);
  return 1;
}

/* Prints a JSON answer (pretty), or the field `field` of it as raw text. */
static int print_answer(const struct answer *a, const char *field)
{
  cJSON *root = cJSON_Parse(a->body);
  const cJSON *f;
  char *text;

  if (root == NULL) {
    fputs(a->body, stdout);
    return 0;
  }
  if (field != NULL) {
    f = cJSON_GetObjectItemCaseSensitive(root, field);
    if (cJSON_IsString(f))
      fputs(f->valuestring, stdout);
    cJSON_Delete(root);
    return 0;
  }
  text = cJSON_Print(root);
  if (text != NULL)
    printf("%s\n", text);
  free(text);
  cJSON_Delete(root);
  return 0;
}

/* Reads a config file and checks it is JSON, reporting positions in the file. */
static char *read_config(const char *path)
{
  struct rules_diag diag;
  struct cJSON *root = NULL;
  char *data = NULL;
  size_t len;
  int r;

  r = proxy_read_file(path, PROXY_CONFIG_MAX_BYTES, &data, &len);
  if (r != 0) {
    fprintf(stderr, "authproxy ctl: cannot read %s: %s\n", path, strerror(-r));
    return NULL;
  }
  rules_diag_init(&diag);
  if (rules_json_parse(data, len, &root, &diag) != 0) {
    fprintf(stderr, "authproxy ctl: %s: %s\n", path,
            diag.count ? diag.entries[0].message : "not JSON");
    rules_diag_free(&diag);
    free(data);
    return NULL;
  }
  rules_diag_free(&diag);
  rules_json_free(root);
  return data;
}

static int cmd_with_config(const char *sock, const char *cmd, int argc, char **argv)
{
  static const struct option opts[] = {
    { "netns", required_argument, NULL, 'n' }, { "config", required_argument, NULL, 'c' },
    { "ca-cert", required_argument, NULL, 'C' }, { "ca-key", required_argument, NULL, 'K' },
    { NULL, 0, NULL, 0 },
  };
  const char *netns = NULL, *config = NULL, *ca_cert = NULL, *ca_key = NULL, *name;
  char *cfg = NULL, *cert = NULL, *key = NULL, path[256], what[192];
  int attach = strcmp(cmd, "attach") == 0, c, ret = 2;
  struct strbuf body;
  struct answer a;
  size_t len;

  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'n': netns = optarg; break;
    case 'c': config = optarg; break;
    case 'C': ca_cert = optarg; break;
    case 'K': ca_key = optarg; break;
    default: return 2;
    }
  }
  if (optind != argc - 1 || config == NULL || (attach && netns == NULL) ||
      (!attach && (netns || ca_cert || ca_key)) || (!ca_cert != !ca_key)) {
    fprintf(stderr, "authproxy ctl: usage: %s\n",
            attach ? "attach NAME --netns PATH --config FILE [--ca-cert PEM --ca-key PEM]"
                   : "update NAME --config FILE");
    return 2;
  }
  name = argv[optind];
  cfg = read_config(config);
  if (cfg == NULL)
    return 1;
  strbuf_init(&body);
  strbuf_add(&body, "{", 1);
  if (attach) {
    strbuf_adds(&body, "\"netns\":");
    strbuf_add_json_str(&body, netns, strlen(netns));
    strbuf_add(&body, ",", 1);
    if (ca_cert != NULL) {
      if (proxy_read_file(ca_cert, 1u << 20, &cert, &len) != 0 ||
          proxy_read_file(ca_key, 1u << 20, &key, &len) != 0) {
        fprintf(stderr, "authproxy ctl: cannot read %s or %s\n", ca_cert, ca_key);
        ret = 1;
        goto out;
      }
      strbuf_adds(&body, "\"ca\":{\"certificate\":");
      strbuf_add_json_str(&body, cert, strlen(cert));
      strbuf_adds(&body, ",\"key\":");
      strbuf_add_json_str(&body, key, strlen(key));
      strbuf_adds(&body, "},");
    }
  }
  strbuf_adds(&body, "\"proxy_config\":");
  strbuf_adds(&body, cfg);
  strbuf_add(&body, "}", 1);
  snprintf(path, sizeof(path), "/v1/sandboxes/%s", name);
  snprintf(what, sizeof(what), "%s %s", cmd, name);
  ret = 1;
  if (!body.oom && call(sock, attach ? "PUT" : "PATCH", path, body.data, body.len, &a) == 0) {
    if (a.status >= 400)
      ret = report(what, &a);
    else
      ret = print_answer(&a, attach ? "ca_certificate" : NULL);
    free(a.body);
  }
out:
  if (body.data != NULL)
    explicit_bzero(body.data, body.len);
  strbuf_free(&body);
  if (key != NULL)
    explicit_bzero(key, strlen(key));
  free(key);
  free(cert);
  explicit_bzero(cfg, strlen(cfg));
  free(cfg);
  return ret;
}

static int cmd_secret_set(const char *sock, int argc, char **argv)
{
  const char *from = "-", *keyname;
  char path[256], what[128], *value = NULL;
  struct strbuf body;
  struct answer a;
  size_t len;
  int ret = 1;

  if (argc == 4 && strcmp(argv[2], "--from-file") == 0)
    from = argv[3];
  else if (argc != 2) {
    fprintf(stderr, "authproxy ctl: usage: secret-set KEY [--from-file FILE]\n");
    return 2;
  }
  keyname = argv[1];
  if (proxy_read_file(from, RULES_MAX_SECRET_LEN, &value, &len) != 0) {
    fprintf(stderr, "authproxy ctl: cannot read the secret from %s\n",
            strcmp(from, "-") == 0 ? "standard input" : from);
    return 1;
  }
  if (len > 0 && value[len - 1] == '\n')
    value[--len] = '\0';
  strbuf_init(&body);
  strbuf_adds(&body, "{\"value\":");
  strbuf_add_json_str(&body, value, len);
  strbuf_add(&body, "}", 1);
  snprintf(path, sizeof(path), "/v1/secrets/%s", keyname);
  snprintf(what, sizeof(what), "secret-set %s", keyname);
  if (!body.oom && call(sock, "PUT", path, body.data, body.len, &a) == 0) {
    ret = a.status >= 400 ? report(what, &a) : 0;
    free(a.body);
  }
  if (body.data != NULL)
    explicit_bzero(body.data, body.len);
  strbuf_free(&body);
  explicit_bzero(value, len);
  free(value);
  return ret;
}

static int simple(const char *sock, const char *method, const char *path, const char *what,
                  const char *field)
{
  struct answer a;
  int ret = 1;

  if (call(sock, method, path, NULL, 0, &a) == 0) {
    ret = a.status >= 400 ? report(what, &a) : print_answer(&a, field);
    free(a.body);
  }
  return ret;
}

int proxy_cmd_ctl(int argc, char **argv)
{
  const char *sock = getenv("AUTHPROXY_CONTROL");
  char path[256];
  const char *cmd;
  int i = 1;

  if (sock == NULL || sock[0] == '\0')
    sock = DEFAULT_CONTROL;
  if (argc > 2 && strcmp(argv[1], "--control") == 0) {
    sock = argv[2];
    i = 3;
  }
  if (i >= argc || strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
    usage(i >= argc ? stderr : stdout);
    return i >= argc ? 2 : 0;
  }
  cmd = argv[i];
  argc -= i;
  argv += i;
  if (strcmp(cmd, "attach") == 0 || strcmp(cmd, "update") == 0)
    return cmd_with_config(sock, cmd, argc, argv);
  if (strcmp(cmd, "secret-set") == 0)
    return cmd_secret_set(sock, argc, argv);
  if ((strcmp(cmd, "get") == 0 || strcmp(cmd, "detach") == 0 || strcmp(cmd, "ca") == 0 ||
       strcmp(cmd, "secret-delete") == 0) && argc == 2) {
    if (strcmp(cmd, "secret-delete") == 0)
      snprintf(path, sizeof(path), "/v1/secrets/%s", argv[1]);
    else if (strcmp(cmd, "ca") == 0)
      snprintf(path, sizeof(path), "/v1/sandboxes/%s/ca.pem", argv[1]);
    else
      snprintf(path, sizeof(path), "/v1/sandboxes/%s", argv[1]);
    return simple(sock, strcmp(cmd, "get") == 0 || strcmp(cmd, "ca") == 0 ? "GET" : "DELETE",
                  path, cmd, NULL);
  }
  if (argc == 1) {
    if (strcmp(cmd, "list") == 0)
      return simple(sock, "GET", "/v1/sandboxes", cmd, NULL);
    if (strcmp(cmd, "secrets") == 0)
      return simple(sock, "GET", "/v1/secrets", cmd, NULL);
    if (strcmp(cmd, "health") == 0)
      return simple(sock, "GET", "/healthz", cmd, NULL);
    if (strcmp(cmd, "metrics") == 0)
      return simple(sock, "GET", "/metrics", cmd, NULL);
  }
  fprintf(stderr, "authproxy ctl: unknown command or wrong arguments: %s\n\n", cmd);
  usage(stderr);
  return 2;
}
