/*
 * `authproxy ctl`: the command-line client of the control API (a Unix socket). One
 * request per invocation, blocking I/O, bounded answers; errors come back with the
 * API's code, message and every validation detail.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proxy/apiclient.h"
#include "proxy/cfgload.h"
#include "proxy/commands.h"
#include "proxy/strbuf.h"
#include "rules/rules.h"

#define TIMEOUT_MS 60000

static void usage(FILE *f)
{
  fprintf(f,
    "usage: authproxy ctl [--control SOCKET] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  attach NAME --netns PATH (--config FILE | --config-name NAME)\n"
    "         [--ca-cert PEM --ca-key PEM]\n"
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
    "  config-set NAME --config FILE\n"
    "                               store a config for attaches that name it (CNI\n"
    "                               plugin, OCI hook); lists secrets not pushed yet\n"
    "  config-get NAME              a stored config, redacted\n"
    "  config-delete NAME           forget a stored config\n"
    "  configs                      names of stored configs\n"
    "  health | metrics\n"
    "\n"
    "A KEY or NAME that begins with '-' follows \"--\" (secret-delete -- -h).\n"
    "The socket defaults to $AUTHPROXY_CONTROL, else " PROXY_API_DEFAULT_CONTROL ".\n");
}

/* Sends one request; prints why it could not be sent. */
static int call(const char *sock, const char *method, const char *path, const char *body,
                size_t body_len, struct proxy_api_answer *a)
{
  char err[512];
  int r;

  r = proxy_api_call(sock, method, path, body, body_len, TIMEOUT_MS, a, err, sizeof(err));
  if (r != 0)
    fprintf(stderr, "authproxy ctl: %s\n", err);
  return r;
}

/* call() with a request body built in b, which may have run out of memory. */
static int call_with(const char *sock, const char *method, const char *path, const char *what,
                     const struct strbuf *b, struct proxy_api_answer *a)
{
  if (b->oom) {
    fprintf(stderr, "authproxy ctl: %s: out of memory\n", what);
    return -ENOMEM;
  }
  return call(sock, method, path, b->data, b->len, a);
}

/* Prints an API error and returns 1. */
static int report(const char *what, const struct proxy_api_answer *a)
{
  const char *code, *msg;
  const cJSON *details, *it;
  cJSON *root;

  /* Not an API error, or not decoded for want of memory: the answer as it came. */
  if (proxy_api_error_parse(a, &root, &code, &msg, &details) != 0) {
    fprintf(stderr, "authproxy ctl: %s: HTTP %d: %s\n", what, a->status,
            a->body ? a->body : "");
    return 1;
  }
  fprintf(stderr, "authproxy ctl: %s: %s: %s\n", what, code, msg);
  cJSON_ArrayForEach(it, details) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "path");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(it, "message");

    if (cJSON_IsString(p) && cJSON_IsString(m))
      fprintf(stderr, "  %s: %s\n", p->valuestring, m->valuestring);
  }
  cJSON_Delete(root);
  return 1;
}

/*
 * Prints a JSON answer (pretty; an answer that is not JSON, a PEM or metrics, as it
 * is), or the field `field` of it as raw text. Its status is the command's: what it
 * prints is the result (`ctl attach ... > ca.pem`), so a field it cannot print is a
 * failure, said. Out of memory pretty-printing, the answer goes out as it came.
 */
static int print_answer(const struct proxy_api_answer *a, const char *field)
{
  cJSON *root;
  const cJSON *f;
  char *text;
  int ret = proxy_api_body_parse(a, &root);

  if (ret != 0 && field != NULL) {
    fprintf(stderr, "authproxy ctl: cannot read %s from the answer: %s\n", field,
            ret == -ENOMEM ? "out of memory" : "not JSON");
    return 1;
  }
  if (root == NULL) {
    fputs(a->body, stdout);
    return 0;
  }
  if (field != NULL) {
    f = cJSON_GetObjectItemCaseSensitive(root, field);
    ret = cJSON_IsString(f) ? 0 : 1;
    if (ret == 0)
      fputs(f->valuestring, stdout);
    else
      fprintf(stderr, "authproxy ctl: the answer has no %s\n", field);
    cJSON_Delete(root);
    return ret;
  }
  text = cJSON_Print(root);
  if (text != NULL)
    printf("%s\n", text);
  else
    printf("%s\n", a->body);
  free(text);
  cJSON_Delete(root);
  return 0;
}

/*
 * proxy_read_file of at most max bytes; on failure says "cannot read WHAT: why", the
 * why of a file too large being too_large. WHAT is path unless what is given.
 */
static int read_input(const char *path, const char *what, size_t max, const char *too_large,
                      char **data, size_t *len)
{
  int r = proxy_read_file(path, max, data, len);

  if (r != 0)
    fprintf(stderr, "authproxy ctl: cannot read %s: %s\n", what != NULL ? what : path,
            r == -EFBIG ? too_large : strerror(-r));
  return r;
}

/* Reads a config file and checks it is JSON, reporting positions in the file. */
static char *read_config(const char *path)
{
  struct rules_diag diag;
  struct cJSON *root = NULL;
  char *data = NULL;
  size_t len;
  int r;

  if (read_input(path, NULL, PROXY_CONFIG_MAX_BYTES,
                 "larger than 1 MiB, the limit of a proxy_config", &data, &len) != 0)
    return NULL;
  rules_diag_init(&diag);
  r = rules_json_parse(data, len, &root, &diag);
  if (r != 0) {
    fprintf(stderr, "authproxy ctl: %s: %s\n", path,
            rules_json_error(r, &diag, "not JSON"));
    rules_diag_free(&diag);
    free(data);
    return NULL;
  }
  rules_diag_free(&diag);
  rules_json_free(root);
  return data;
}

/* 1 if s can be put in a request path as one segment (names and keys are checked
 * again by the daemon; this only keeps the request line well-formed). */
static int segment_ok(const char *s)
{
  size_t i, n = strlen(s);

  if (n == 0 || n > 255)
    return 0;
  for (i = 0; i < n; i++)
    if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f || s[i] == '/' ||
        s[i] == '?' || s[i] == '#' || s[i] == '%')
      return 0;
  return 1;
}

/* Reads a PEM file an option names into *out; says why it cannot. */
static int read_pem(const char *path, const char *option, char **out)
{
  char what[320];
  size_t len;

  snprintf(what, sizeof(what), "%s %s", option, path);
  return read_input(path, what, 1u << 20,
                    "larger than 1 MiB, which no PEM certificate or key is", out, &len);
}

static int cmd_with_config(const char *sock, const char *cmd, int argc, char **argv)
{
  static const struct option opts[] = {
    { "netns", required_argument, NULL, 'n' }, { "config", required_argument, NULL, 'c' },
    { "config-name", required_argument, NULL, 'N' },
    { "ca-cert", required_argument, NULL, 'C' }, { "ca-key", required_argument, NULL, 'K' },
    { NULL, 0, NULL, 0 },
  };
  const char *netns = NULL, *config = NULL, *cfgname = NULL, *ca_cert = NULL;
  const char *ca_key = NULL, *name, *method;
  char *cfg = NULL, *cert = NULL, *key = NULL, path[320], what[192];
  int attach = strcmp(cmd, "attach") == 0, store = strcmp(cmd, "config-set") == 0;
  int c, ret = 2;
  struct strbuf body;
  struct proxy_api_answer a;

  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'n': netns = optarg; break;
    case 'c': config = optarg; break;
    case 'N': cfgname = optarg; break;
    case 'C': ca_cert = optarg; break;
    case 'K': ca_key = optarg; break;
    default: return 2;
    }
  }
  if (optind != argc - 1 || (config == NULL) == (cfgname == NULL) ||
      (attach && netns == NULL) || (!attach && (netns || ca_cert || ca_key || cfgname)) ||
      (!ca_cert != !ca_key) || !segment_ok(argv[optind]) ||
      (cfgname != NULL && !segment_ok(cfgname))) {
    fprintf(stderr, "authproxy ctl: usage: %s\n",
            attach ? "attach NAME --netns PATH (--config FILE | --config-name NAME) "
                     "[--ca-cert PEM --ca-key PEM]"
            : store ? "config-set NAME --config FILE"
                    : "update NAME --config FILE");
    return 2;
  }
  name = argv[optind];
  if (config != NULL) {
    cfg = read_config(config);
    if (cfg == NULL)
      return 1;
  }
  strbuf_init(&body);
  body.secret = 1; /* the CA key, opaque values in the config */
  strbuf_add(&body, "{", 1);
  if (attach) {
    strbuf_adds(&body, "\"netns\":");
    strbuf_add_json_str(&body, netns, strlen(netns));
    strbuf_add(&body, ",", 1);
    if (ca_cert != NULL) {
      if (read_pem(ca_cert, "--ca-cert", &cert) != 0 || read_pem(ca_key, "--ca-key", &key) != 0) {
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
  if (cfgname != NULL) {
    strbuf_adds(&body, "\"proxy_config_name\":");
    strbuf_add_json_str(&body, cfgname, strlen(cfgname));
  } else {
    strbuf_adds(&body, "\"proxy_config\":");
    strbuf_adds(&body, cfg);
  }
  strbuf_add(&body, "}", 1);
  snprintf(path, sizeof(path), "/v1/%s/%s", store ? "configs" : "sandboxes", name);
  snprintf(what, sizeof(what), "%s %s", cmd, name);
  method = attach || store ? "PUT" : "PATCH";
  ret = 1;
  if (call_with(sock, method, path, what, &body, &a) == 0) {
    if (a.status >= 400)
      ret = report(what, &a);
    else
      ret = print_answer(&a, attach ? "ca_certificate" : NULL);
    proxy_api_answer_free(&a);
  }
out:
  strbuf_free(&body); /* wiped: .secret */
  if (key != NULL)
    explicit_bzero(key, strlen(key));
  free(key);
  free(cert);
  if (cfg != NULL)
    explicit_bzero(cfg, strlen(cfg));
  free(cfg);
  return ret;
}

static int cmd_secret_set(const char *sock, int argc, char **argv)
{
  const char *from = "-", *keyname;
  char path[320], what[128], src[320], too_large[64], *value = NULL;
  struct strbuf body;
  struct proxy_api_answer a;
  size_t len;
  int ret = 1;

  if (argc == 4 && strcmp(argv[2], "--from-file") == 0)
    from = argv[3];
  else if (argc != 2)
    argc = 0;
  if (argc == 0 || !segment_ok(argv[1])) {
    fprintf(stderr, "authproxy ctl: usage: secret-set KEY [--from-file FILE]\n");
    return 2;
  }
  keyname = argv[1];
  snprintf(src, sizeof(src), "the secret from %s",
           strcmp(from, "-") == 0 ? "standard input" : from);
  snprintf(too_large, sizeof(too_large), "it is longer than the %d bytes a secret may be",
           RULES_MAX_SECRET_LEN);
  /* One byte more than a value may hold: the trailing newline trimmed below. */
  if (read_input(from, src, RULES_MAX_SECRET_LEN + 1, too_large, &value, &len) != 0)
    return 1;
  if (len > 0 && value[len - 1] == '\n')
    value[--len] = '\0';
  strbuf_init(&body);
  body.secret = 1;
  strbuf_adds(&body, "{\"value\":");
  strbuf_add_json_str(&body, value, len);
  strbuf_add(&body, "}", 1);
  snprintf(path, sizeof(path), "/v1/secrets/%s", keyname);
  snprintf(what, sizeof(what), "secret-set %s", keyname);
  if (call_with(sock, "PUT", path, what, &body, &a) == 0) {
    ret = a.status >= 400 ? report(what, &a) : 0;
    proxy_api_answer_free(&a);
  }
  strbuf_free(&body); /* wiped: .secret */
  explicit_bzero(value, len);
  free(value);
  return ret;
}

static int simple(const char *sock, const char *method, const char *path, const char *what,
                  const char *field)
{
  struct proxy_api_answer a;
  int ret = 1;

  if (call(sock, method, path, NULL, 0, &a) == 0) {
    ret = a.status >= 400 ? report(what, &a) : print_answer(&a, field);
    proxy_api_answer_free(&a);
  }
  return ret;
}

int proxy_cmd_ctl(int argc, char **argv)
{
  const char *sock = getenv("AUTHPROXY_CONTROL");
  char path[320];
  const char *cmd;
  int i = 1;

  if (sock == NULL || sock[0] == '\0')
    sock = PROXY_API_DEFAULT_CONTROL;
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
  /* `ctl secret-set --help` stored standard input as a secret named "--help". A key
   * spelled like an option ("-h", "--help": valid keys, the second the one that did
   * store) follows "--", which the commands without options then drop. */
  for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    }
  if (argc > 1 && strcmp(argv[1], "--") == 0 && strcmp(cmd, "attach") != 0 &&
      strcmp(cmd, "update") != 0 && strcmp(cmd, "config-set") != 0) {
    argv[1] = argv[0];
    argv++;
    argc--;
  }
  if (strcmp(cmd, "attach") == 0 || strcmp(cmd, "update") == 0 ||
      strcmp(cmd, "config-set") == 0)
    return cmd_with_config(sock, cmd, argc, argv);
  if (strcmp(cmd, "secret-set") == 0)
    return cmd_secret_set(sock, argc, argv);
  if ((strcmp(cmd, "get") == 0 || strcmp(cmd, "detach") == 0 || strcmp(cmd, "ca") == 0 ||
       strcmp(cmd, "secret-delete") == 0 || strcmp(cmd, "config-get") == 0 ||
       strcmp(cmd, "config-delete") == 0) && argc == 2 && segment_ok(argv[1])) {
    if (strncmp(cmd, "config-", 7) == 0)
      snprintf(path, sizeof(path), "/v1/configs/%s", argv[1]);
    else if (strcmp(cmd, "secret-delete") == 0)
      snprintf(path, sizeof(path), "/v1/secrets/%s", argv[1]);
    else if (strcmp(cmd, "ca") == 0)
      snprintf(path, sizeof(path), "/v1/sandboxes/%s/ca.pem", argv[1]);
    else
      snprintf(path, sizeof(path), "/v1/sandboxes/%s", argv[1]);
    return simple(sock,
                  strcmp(cmd, "get") == 0 || strcmp(cmd, "ca") == 0 ||
                          strcmp(cmd, "config-get") == 0
                      ? "GET"
                      : "DELETE",
                  path, cmd, NULL);
  }
  if (argc == 1) {
    if (strcmp(cmd, "list") == 0)
      return simple(sock, "GET", "/v1/sandboxes", cmd, NULL);
    if (strcmp(cmd, "secrets") == 0)
      return simple(sock, "GET", "/v1/secrets", cmd, NULL);
    if (strcmp(cmd, "configs") == 0)
      return simple(sock, "GET", "/v1/configs", cmd, NULL);
    if (strcmp(cmd, "health") == 0)
      return simple(sock, "GET", "/healthz", cmd, NULL);
    if (strcmp(cmd, "metrics") == 0)
      return simple(sock, "GET", "/metrics", cmd, NULL);
  }
  fprintf(stderr, "authproxy ctl: unknown command or wrong arguments: %s\n\n", cmd);
  usage(stderr);
  return 2;
}
