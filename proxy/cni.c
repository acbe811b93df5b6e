/*
 * `authproxy cni` (or the executable named authproxy-cni): the CNI plugin.
 *
 *   ADD    attaches CNI_NETNS to the daemon as sandbox "cni-" + CNI_CONTAINERID (see
 *          proxy_api_derive_name) with the configured proxy_config, then prints the
 *          previous plugin's result with dns.nameservers set to the responder.
 *   DEL    detaches it. Idempotent: an unknown sandbox is success, and so is a daemon
 *          that is not running (the spec asks DEL to complete "to the fullest extent
 *          possible"; a stopped daemon serves nothing, and when it starts again it
 *          forgets every sandbox whose namespace is gone). A daemon that is up but
 *          fails or does not answer is an error, so the runtime retries.
 *   CHECK  the sandbox is attached to CNI_NETNS, and the daemon answers.
 *   VERSION
 *
 * Errors are the spec's error document on standard output (and a line on standard
 * error for logs), with the spec's codes and the plugin's own from 100 (cni.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proxy/apiclient.h"
#include "proxy/cfgload.h"
#include "proxy/cni.h"
#include "proxy/commands.h"
#include "proxy/control.h"
#include "proxy/strbuf.h"
#include "rules/rules.h"

#define CNI_TIMEOUT_MS 30000
/* The configuration carries at most one proxy_config (which the daemon takes up to
 * PROXY_CONTROL_MAX_BODY) and a previous result. */
#define CNI_MAX_STDIN (PROXY_CONTROL_MAX_BODY + (256u << 10))

static void usage(FILE *f)
{
  fprintf(f,
    "usage: authproxy cni   (or an executable named authproxy-cni)\n"
    "\n"
    "A CNI plugin (spec 1.0.0; also 0.3.0, 0.3.1, 0.4.0), run by a container runtime\n"
    "with CNI_COMMAND (ADD, DEL, CHECK, VERSION), CNI_CONTAINERID, CNI_NETNS and\n"
    "CNI_IFNAME in the environment and the network configuration on standard input.\n"
    "Chain it after the loopback plugin; its keys:\n"
    "  \"control\": \"/run/authproxy/control.sock\"   the daemon's socket (default)\n"
    "  and one of\n"
    "  \"proxy_config\": {...}                       inline\n"
    "  \"proxy_config_file\": \"/etc/authproxy/x.json\"\n"
    "  \"proxy_config_name\": \"NAME\"                 stored with `authproxy ctl config-set`\n"
    "The namespace becomes sandbox cni-CONTAINERID of `authproxy serve`.\n"
    "See examples/authproxy.conflist.\n");
}

static const char *env(const char *name)
{
  return getenv(name);
}

/* Writes s (at most max bytes) as a JSON string of printable ASCII, any other byte as
 * '?', with no allocation. */
static void put_ascii_json(const char *s, size_t max)
{
  size_t i;

  putchar('"');
  for (i = 0; i < max && s[i] != '\0'; i++) {
    unsigned char c = (unsigned char)s[i];

    putchar(c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? c : '?');
  }
  putchar('"');
}

/* Prints the error document on stdout and a line on stderr; returns the exit status. */
static int emit_error(const struct proxy_cni_error *e)
{
  const char *version = e->version[0] ? e->version : "1.0.0";
  char *doc = proxy_cni_error_json(version, e);

  if (doc != NULL) {
    printf("%s\n", doc);
    free(doc);
  } else {
    /* Out of memory building it: the same document written without allocating (its
     * text as ASCII), rather than an empty standard output the runtime cannot
     * decode. stderr has the text as it is. */
    fputs("{\"cniVersion\":", stdout);
    put_ascii_json(version, sizeof(e->version));
    printf(",\"code\":%d,\"msg\":", e->code);
    put_ascii_json(e->msg, sizeof(e->msg));
    fputs(",\"details\":", stdout);
    put_ascii_json(e->details, sizeof(e->details));
    fputs("}\n", stdout);
  }
  fprintf(stderr, "authproxy-cni: error %d: %s: %s\n", e->code, e->msg, e->details);
  return 1;
}

/* Maps a failed exchange with the daemon to an error. */
static int transport_error(int r, const char *what, const char *err, struct proxy_cni_error *e)
{
  /* Building the request, or holding or decoding the answer (the daemon did answer). */
  if (r == -ENOMEM)
    return proxy_cni_oom(e, what);
  if (r == -ETIMEDOUT)
    return proxy_cni_fail(e, PROXY_CNI_ERR_AGAIN, "the authproxy daemon did not answer",
                          "%s: %s; try again", what, err);
  return proxy_cni_fail(e, PROXY_CNI_ERR_DAEMON_DOWN, "authproxy daemon unreachable",
                        "%s: %s", what, err);
}

/* The code of an error answer into buf ("" if it is none). Returns as
 * proxy_api_error_parse: 0, -EBADMSG (not an API error) or -ENOMEM. */
static int answer_code(const struct proxy_api_answer *a, char *buf, size_t size)
{
  const char *code = "", *msg;
  const cJSON *details;
  cJSON *root;
  int r = proxy_api_error_parse(a, &root, &code, &msg, &details);

  snprintf(buf, size, "%s", code);
  cJSON_Delete(root);
  return r;
}

/*
 * A 503: the daemon cannot take the request now, and the runtime should try again. It
 * is stopping (code "stopping"), or every control connection is taken
 * ("too_many_clients"): the message says which, so that nobody restarts a daemon that
 * is only busy.
 */
static int unavailable_error(const char *code, const char *what, const char *name,
                             const char *text, struct proxy_cni_error *e)
{
  return proxy_cni_fail(e, PROXY_CNI_ERR_AGAIN,
                        strcmp(code, "stopping") == 0
                            ? "the authproxy daemon is stopping"
                            : "the authproxy daemon cannot take the request now",
                        "%s %s: %s; try again", what, name, text);
}

/* Reads the proxy_config to send: inline, from a file, or NULL for a stored one. */
static int config_text(const struct proxy_cni_conf *c, char **text, struct proxy_cni_error *e)
{
  struct rules_diag diag;
  cJSON *tree = NULL;
  size_t len;
  int r;

  *text = NULL;
  if (c->proxy_config != NULL) {
    *text = cJSON_PrintUnformatted(c->proxy_config);
    return *text ? 0 : proxy_cni_oom(e, NULL);
  }
  if (c->proxy_config_file == NULL)
    return 0;
  r = proxy_read_file(c->proxy_config_file, PROXY_CONTROL_MAX_BODY, text, &len);
  if (r == -ENOMEM)
    return proxy_cni_oom(e, NULL);
  if (r != 0)
    return proxy_cni_fail(e, PROXY_CNI_ERR_CONFIG, "cannot read proxy_config_file",
                          "%s: %s", c->proxy_config_file,
                          r == -EFBIG ? "larger than the daemon accepts (1 MiB)" : strerror(-r));
  rules_diag_init(&diag);
  r = rules_json_parse(*text, len, &tree, &diag);
  if (r != 0 || !cJSON_IsObject(tree)) {
    /* Out of memory is the plugin's failure, which a runtime retries, not the file's. */
    if (r == -ENOMEM)
      proxy_cni_oom(e, NULL);
    else
      proxy_cni_fail(e, PROXY_CNI_ERR_CONFIG, "invalid proxy_config_file", "%s: %s",
                     c->proxy_config_file,
                     rules_json_error(r, &diag, "must hold a JSON object (a proxy_config)"));
    explicit_bzero(*text, len);
    free(*text);
    *text = NULL;
    r = -EINVAL;
  }
  rules_diag_free(&diag);
  rules_json_free(tree);
  return r;
}

static int cni_add(const struct proxy_cni_conf *c, const char *name, const char *netns,
                   struct proxy_cni_error *e)
{
  struct proxy_api_answer a;
  struct strbuf body;
  char path[160], err[512], code[64], text[3072], *cfg = NULL, *result;
  int r;

  r = config_text(c, &cfg, e);
  if (r != 0)
    return r;
  strbuf_init(&body);
  proxy_api_attach_body(&body, netns, cfg, c->proxy_config_name);
  if (cfg != NULL) {
    explicit_bzero(cfg, strlen(cfg));
    free(cfg);
  }
  if (body.oom) {
    strbuf_free(&body);
    return proxy_cni_oom(e, NULL);
  }
  snprintf(path, sizeof(path), "/v1/sandboxes/%s", name);
  r = proxy_api_call(c->control, "PUT", path, body.data, body.len, CNI_TIMEOUT_MS, &a, err,
                     sizeof(err));
  explicit_bzero(body.data, body.len);
  strbuf_free(&body);
  if (r != 0)
    return transport_error(r, "attach", err, e);
  if (a.status == 200) {
    /* The daemon answers an attach that repeats one exactly as a retry that succeeded.
     * A runtime does not repeat an ADD without a DEL (the CNI spec), so this one is an
     * attachment that exists, as it always was. */
    proxy_api_answer_free(&a);
    return proxy_cni_fail(e, PROXY_CNI_ERR_ATTACH, "authproxy could not attach the namespace",
                          "attach %s (%s): sandbox_exists: the namespace is attached so "
                          "already; a second ADD needs a DEL first", name, netns);
  }
  if (a.status != 201) {
    /* An answer not decoded for want of memory would be read as another error. */
    if (answer_code(&a, code, sizeof(code)) == -ENOMEM ||
        proxy_api_error_text(&a, text, sizeof(text)) == -ENOMEM)
      r = proxy_cni_oom(e, "attach");
    else if (a.status == 503)
      r = unavailable_error(code, "attach", name, text, e);
    else if (strcmp(code, "invalid_config") == 0 || strcmp(code, "config_not_found") == 0)
      r = proxy_cni_fail(e, PROXY_CNI_ERR_REJECTED, "proxy_config rejected",
                         "attach %s: %s", name, text);
    else
      r = proxy_cni_fail(e, PROXY_CNI_ERR_ATTACH, "authproxy could not attach the namespace",
                         "attach %s (%s): %s", name, netns, text);
    proxy_api_answer_free(&a);
    return r;
  }
  proxy_api_answer_free(&a);
  result = proxy_cni_add_result(c);
  if (result == NULL)
    return proxy_cni_oom(e, NULL);
  printf("%s\n", result);
  free(result);
  return 0;
}

static int cni_del(const struct proxy_cni_conf *c, const char *name, struct proxy_cni_error *e)
{
  struct proxy_api_answer a;
  char path[160], err[512], code[64], text[3072];
  int r;

  snprintf(path, sizeof(path), "/v1/sandboxes/%s", name);
  r = proxy_api_call(c->control, "DELETE", path, NULL, 0, CNI_TIMEOUT_MS, &a, err, sizeof(err));
  if (r != 0 && proxy_api_unreachable(r)) {
    /* Best effort, as the spec asks of DEL: see the comment at the top. */
    fprintf(stderr, "authproxy-cni: DEL %s: %s; nothing to detach now (a restarted daemon "
                    "forgets sandboxes whose namespace is gone)\n", name, err);
    return 0;
  }
  if (r != 0)
    return transport_error(r, "detach", err, e);
  r = answer_code(&a, code, sizeof(code));
  if (a.status == 200 || strcmp(code, "sandbox_not_found") == 0) {
    proxy_api_answer_free(&a);
    return 0;
  }
  /* An answer not decoded for want of memory would be read as another error (its
   * code unread, a sandbox already gone as a failure to detach it). */
  if (r == -ENOMEM || proxy_api_error_text(&a, text, sizeof(text)) == -ENOMEM)
    r = proxy_cni_oom(e, "detach");
  else if (a.status == 503)
    r = unavailable_error(code, "detach", name, text, e);
  else
    r = proxy_cni_fail(e, PROXY_CNI_ERR_ATTACH, "authproxy could not detach the namespace",
                       "detach %s: %s", name, text);
  proxy_api_answer_free(&a);
  return r;
}

static int cni_check(const struct proxy_cni_conf *c, const char *name, const char *netns,
                     struct proxy_cni_error *e)
{
  struct proxy_api_answer a;
  char path[160], err[512], code[64], text[3072];
  const cJSON *got;
  cJSON *root;
  int r;

  if (strcmp(c->version, "0.3.0") == 0 || strcmp(c->version, "0.3.1") == 0)
    return proxy_cni_fail(e, PROXY_CNI_ERR_VERSION, "incompatible CNI version",
                          "CHECK needs cniVersion 0.4.0 or later, not %s", c->version);
  if (c->prev_result == NULL)
    return proxy_cni_fail(e, PROXY_CNI_ERR_CONFIG, "invalid network configuration",
                          "CHECK needs prevResult (the result of the ADD)");
  snprintf(path, sizeof(path), "/v1/sandboxes/%s", name);
  r = proxy_api_call(c->control, "GET", path, NULL, 0, CNI_TIMEOUT_MS, &a, err, sizeof(err));
  if (r != 0)
    return transport_error(r, "check", err, e);
  if (a.status != 200) {
    /* An answer not decoded for want of memory would be read as another error. */
    if (answer_code(&a, code, sizeof(code)) == -ENOMEM ||
        proxy_api_error_text(&a, text, sizeof(text)) == -ENOMEM)
      r = proxy_cni_oom(e, "check");
    else if (a.status == 503)
      r = unavailable_error(code, "check", name, text, e);
    else
      r = proxy_cni_fail(e, PROXY_CNI_ERR_NOT_ATTACHED, "the namespace is not served",
                         "sandbox %s: %s: its traffic has nowhere to go", name, text);
    proxy_api_answer_free(&a);
    return r;
  }
  r = proxy_api_body_parse(&a, &root);
  got = cJSON_GetObjectItemCaseSensitive(root, "netns");
  if (r == -ENOMEM)
    r = proxy_cni_oom(e, "check");
  else if (!cJSON_IsString(got) || strcmp(got->valuestring, netns) != 0)
    r = proxy_cni_fail(e, PROXY_CNI_ERR_NOT_ATTACHED, "the namespace is not served",
                       "sandbox %s serves %s, not CNI_NETNS %s", name,
                       cJSON_IsString(got) ? got->valuestring : "?", netns);
  cJSON_Delete(root);
  proxy_api_answer_free(&a);
  return r;
}

static int cni_version(const char *in, size_t len, struct proxy_cni_error *e)
{
  const cJSON *v;
  cJSON *root = NULL;
  char *doc;
  int r;

  if (len > 0) {
    r = rules_json_parse(in, len, &root, NULL);
    if (r == -ENOMEM)
      return proxy_cni_oom(e, NULL);
    if (r != 0)
      return proxy_cni_fail(e, PROXY_CNI_ERR_DECODE, "cannot decode the VERSION input",
                            "standard input must be {\"cniVersion\": ...}");
  }
  v = cJSON_GetObjectItemCaseSensitive(root, "cniVersion");
  if (cJSON_IsString(v) && v->valuestring[0] != '\0' && strlen(v->valuestring) <= 32)
    snprintf(e->version, sizeof(e->version), "%s", v->valuestring);
  rules_json_free(root);
  doc = proxy_cni_version_json(e->version[0] ? e->version : NULL);
  if (doc == NULL)
    return proxy_cni_oom(e, NULL);
  printf("%s\n", doc);
  free(doc);
  return 0;
}

int proxy_cmd_cni(int argc, char **argv)
{
  struct proxy_cni_error e;
  struct proxy_cni_conf c;
  const char *cmd = getenv("CNI_COMMAND");
  char name[PROXY_API_NAME_SIZE], *in = NULL;
  size_t len = 0;
  int r;

  memset(&e, 0, sizeof(e));
  memset(&c, 0, sizeof(c));
  if (argc > 1) {
    int help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;

    usage(help ? stdout : stderr);
    return help ? 0 : 2;
  }
  if (cmd == NULL || (strcmp(cmd, "ADD") != 0 && strcmp(cmd, "DEL") != 0 &&
                      strcmp(cmd, "CHECK") != 0 && strcmp(cmd, "VERSION") != 0)) {
    proxy_cni_fail(&e, PROXY_CNI_ERR_ENV, "invalid environment variables",
                   "CNI_COMMAND is %s%s%s; this plugin implements ADD, DEL, CHECK and VERSION "
                   "(CNI 1.0.0)", cmd ? "\"" : "", cmd ? cmd : "not set", cmd ? "\"" : "");
    return emit_error(&e);
  }
  r = proxy_read_file("-", CNI_MAX_STDIN, &in, &len);
  if (r != 0) {
    proxy_cni_fail(&e, r == -EFBIG ? PROXY_CNI_ERR_CONFIG : PROXY_CNI_ERR_IO,
                   "cannot read the network configuration", "standard input: %s",
                   r == -EFBIG ? "larger than 1.25 MiB" : strerror(-r));
    return emit_error(&e);
  }
  if (strcmp(cmd, "VERSION") == 0) {
    r = cni_version(in, len, &e);
    goto out;
  }
  r = proxy_cni_parse_conf(in, len, &c, &e);
  if (r != 0)
    goto out;
  r = proxy_cni_check_env(cmd, env, &e);
  if (r != 0)
    goto out;
  if (proxy_api_derive_name("cni-", getenv("CNI_CONTAINERID"), name, sizeof(name)) != 0) {
    r = proxy_cni_fail(&e, PROXY_CNI_ERR_ENV, "invalid environment variables",
                       "CNI_CONTAINERID is not a valid container id");
    goto out;
  }
  if (strcmp(cmd, "ADD") == 0)
    r = cni_add(&c, name, getenv("CNI_NETNS"), &e);
  else if (strcmp(cmd, "DEL") == 0)
    r = cni_del(&c, name, &e);
  else
    r = cni_check(&c, name, getenv("CNI_NETNS"), &e);
out:
  proxy_cni_conf_free(&c);
  explicit_bzero(in, len);
  free(in);
  return r != 0 ? emit_error(&e) : 0; /* main() flushes the result, and says if it cannot */
}
