/*
 * The control API's routes (DESIGN.md section 5):
 *
 *   GET    /healthz
 *   GET    /metrics                       Prometheus text
 *   GET    /v1/sandboxes                  names, namespaces, connections; lost ones
 *   PUT    /v1/sandboxes/NAME             {"netns", "proxy_config"[, "ca"]} -> CA PEM;
 *                                         "proxy_config_name": a stored config instead
 *   GET    /v1/sandboxes/NAME             redacted: opaque values absent, templates
 *   PATCH  /v1/sandboxes/NAME             {"proxy_config"}: validated, swapped atomically
 *   DELETE /v1/sandboxes/NAME             detach; for a not_attached one, forget its
 *                                         state (its namespace is left untouched)
 *   GET    /v1/sandboxes/NAME/ca.pem      the sandbox CA certificate
 *   GET    /v1/secrets                    names only
 *   PUT    /v1/secrets/KEY                {"value"}: write-only
 *   DELETE /v1/secrets/KEY
 *   GET    /v1/configs                    names of stored configs
 *   PUT    /v1/configs/NAME               {"proxy_config"}: validated, stored sealed
 *   GET    /v1/configs/NAME               redacted
 *   DELETE /v1/configs/NAME
 *
 * Request bodies are parsed strictly (rules_json_parse: no trailing text, no NUL, no
 * member name given twice in one object) and unknown fields are refused. Errors are {"error": {"code", "message", "details"}},
 * details holding the validation messages with their JSON paths. No answer ever holds
 * a secret or an opaque value.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <mbedtls/platform_util.h>

#include "proxy/audit.h"
#include "proxy/ca.h"
#include "proxy/callback.h"
#include "proxy/daemon.h"
#include "proxy/log.h"

static void error_resp(struct proxy_control_response *resp, const struct daemon_error *e)
{
  struct strbuf *b = &resp->body;
  size_t i;

  /* The runtime that called may log it where the operator does not look (a CNI
   * plugin's error goes to the kubelet): a failure of the daemon's own is in its log
   * too. Messages never hold a secret's value. */
  if (e->status >= 500)
    log_error("control: %s (%s)", e->message, e->code);
  resp->status = e->status;
  strbuf_reset(b);
  strbuf_adds(b, "{\"error\":{\"code\":");
  strbuf_add_json_str(b, e->code, strlen(e->code));
  strbuf_adds(b, ",\"message\":");
  strbuf_add_json_str(b, e->message, strlen(e->message));
  if (e->diag.count > 0) {
    strbuf_adds(b, ",\"details\":[");
    for (i = 0; i < e->diag.count; i++) {
      if (i > 0)
        strbuf_add(b, ",", 1);
      strbuf_adds(b, "{\"path\":");
      strbuf_add_json_str(b, e->diag.entries[i].path, strlen(e->diag.entries[i].path));
      strbuf_adds(b, ",\"message\":");
      strbuf_add_json_str(b, e->diag.entries[i].message, strlen(e->diag.entries[i].message));
      strbuf_add(b, "}", 1);
    }
    strbuf_add(b, "]", 1);
  }
  strbuf_adds(b, "}}\n");
}

/* The answer (with status) could not be built whole for want of memory: the control
 * layer answers 500 out_of_memory, saying whether the request was carried out. */
static void oom_resp(struct proxy_control_response *resp, int status)
{
  resp->status = status;
  strbuf_reset(&resp->body);
  resp->body.oom = 1;
}

/* rules_json_alloc_failures when the request being answered arrived. */
static unsigned long json_failures_before;

/*
 * Answers root, the result of a request carried out. When a cJSON allocation failed
 * since the request arrived, a member may be missing from root (cJSON_Add* leave it
 * out): a 201 to an attach without its ca_certificate, which `ctl attach` printed as
 * an empty CA with status 0. The body is then marked out of memory, which the control
 * layer answers with a 500 saying the request was carried out.
 */
static void json_resp(struct proxy_control_response *resp, int status, cJSON *root)
{
  char *text = cJSON_PrintUnformatted(root);

  cJSON_Delete(root);
  if (text == NULL || rules_json_alloc_failures() != json_failures_before) {
    free(text);
    oom_resp(resp, status);
    return;
  }
  resp->status = status;
  strbuf_reset(&resp->body);
  strbuf_adds(&resp->body, text);
  strbuf_adds(&resp->body, "\n");
  free(text);
}

/* The answer to a DELETE that worked: 200 {"name": NAME, "status": STATUS}. */
static void deleted_resp(struct proxy_control_response *resp, const char *name,
                         const char *status)
{
  cJSON *out = cJSON_CreateObject();

  cJSON_AddStringToObject(out, "name", name);
  cJSON_AddStringToObject(out, "status", status);
  json_resp(resp, 200, out);
}

/* Parses a request body that must be a JSON object with only the allowed fields. */
static cJSON *parse_body(const struct proxy_control_request *req, const char *const *allowed,
                         struct proxy_control_response *resp)
{
  struct rules_diag diag;
  cJSON *root = NULL, *item;
  size_t i;
  int r;

  rules_diag_init(&diag);
  if (req->body_len == 0) {
    proxy_control_error(resp, 400, "invalid_json", "the request needs a JSON body");
    return NULL;
  }
  r = rules_json_parse(req->body, req->body_len, &root, &diag);
  if (r == -ENOMEM) {
    proxy_control_error(resp, 500, "out_of_memory", "out of memory");
    rules_diag_free(&diag);
    return NULL;
  }
  if (r != 0) {
    proxy_control_error(resp, 400, "invalid_json", "%s",
                        diag.count ? diag.entries[0].message : "malformed JSON");
    rules_diag_free(&diag);
    return NULL;
  }
  rules_diag_free(&diag);
  if (!cJSON_IsObject(root)) {
    proxy_control_error(resp, 400, "invalid_request", "the body must be a JSON object");
    rules_json_free(root);
    return NULL;
  }
  cJSON_ArrayForEach(item, root) {
    for (i = 0; allowed[i] != NULL; i++)
      if (strcmp(item->string, allowed[i]) == 0)
        break;
    if (allowed[i] == NULL) {
      char names[256];
      size_t off = 0;

      names[0] = '\0';
      for (i = 0; allowed[i] != NULL && off < sizeof(names); i++)
        off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s", i ? ", " : "",
                                allowed[i]);
      proxy_control_error(resp, 400, "invalid_request",
                          "unknown field \"%.64s\" (allowed: %s)", item->string, names);
      rules_json_free(root);
      return NULL;
    }
  }
  return root;
}

/* ---- sandboxes ---- */

/*
 * Adds the sandbox's members to obj; full: its config and CA too. -ENOMEM when its
 * config could not be written out (rules_config_to_json allocates with malloc, which
 * rules_json_alloc_failures does not count): GET /v1/sandboxes/NAME went out as a 200
 * without proxy_config, and `ctl get` showed the sandbox as having no rules.
 */
static int sandbox_json(struct daemon *d, struct daemon_sandbox *s, cJSON *obj, int full)
{
  cJSON_AddStringToObject(obj, "name", s->name);
  cJSON_AddStringToObject(obj, "netns", s->netns);
  cJSON_AddNumberToObject(obj, "connections", proxy_sandbox_conns(s->sb));
  if (full) {
    char *redacted = rules_config_to_json(proxy_sandbox_config(s->sb), RULES_SER_REDACTED, 0);
    cJSON *cfg = redacted ? cJSON_Parse(redacted) : NULL;

    free(redacted);
    cJSON_AddNumberToObject(obj, "listener_port", s->port);
    if (cfg != NULL)
      rules_json_add(obj, "proxy_config", cfg);
    cJSON_AddStringToObject(obj, "ca_certificate", proxy_ca_cert_pem(s->ca));
    if (redacted == NULL)
      return -ENOMEM;
  }
  (void)d;
  return 0;
}

static void list_sandboxes(struct daemon *d, struct proxy_control_response *resp)
{
  cJSON *root = cJSON_CreateObject(), *arr = cJSON_CreateArray(), *lost = cJSON_CreateArray();
  struct daemon_sandbox *s;
  struct daemon_lost *l;

  for (s = d->sandboxes; s != NULL; s = s->next) {
    cJSON *o = cJSON_CreateObject();

    sandbox_json(d, s, o, 0);
    rules_json_append(arr, o);
  }
  for (l = d->lost; l != NULL; l = l->next) {
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "name", l->name);
    cJSON_AddStringToObject(o, "netns", l->netns ? l->netns : "");
    cJSON_AddStringToObject(o, "reason", l->why ? l->why : "");
    rules_json_append(lost, o);
  }
  rules_json_add(root, "sandboxes", arr);
  rules_json_add(root, "not_attached", lost);
  json_resp(resp, 200, root);
}

static void put_sandbox(struct daemon *d, const char *name,
                        const struct proxy_control_request *req,
                        struct proxy_control_response *resp)
{
  static const char *const allowed[] = { "netns", "proxy_config", "proxy_config_name", "ca",
                                         NULL };
  const cJSON *netns, *cfg, *cfgname, *ca;
  struct daemon_sandbox *s;
  struct daemon_config *stored;
  struct daemon_error err;
  cJSON *body, *out, *named = NULL;
  int r;

  body = parse_body(req, allowed, resp);
  if (body == NULL)
    return;
  netns = cJSON_GetObjectItemCaseSensitive(body, "netns");
  cfg = cJSON_GetObjectItemCaseSensitive(body, "proxy_config");
  cfgname = cJSON_GetObjectItemCaseSensitive(body, "proxy_config_name");
  ca = cJSON_GetObjectItemCaseSensitive(body, "ca");
  if (!cJSON_IsString(netns) || (cfg == NULL) == (cfgname == NULL) ||
      (cfgname != NULL && !cJSON_IsString(cfgname))) {
    proxy_control_error(resp, 400, "invalid_request",
                        "attach needs {\"netns\": PATH, \"proxy_config\": {...}} or "
                        "{\"netns\": PATH, \"proxy_config_name\": NAME}");
    rules_json_free(body);
    return;
  }
  if (cfgname != NULL) {
    /* The stored config is copied into the sandbox: storing another config under
     * that name later does not change sandboxes attached with it. */
    stored = daemon_config_find(d, cfgname->valuestring);
    if (stored == NULL) {
      proxy_control_error(resp, 400, "config_not_found",
                          "no config \"%.128s\" is stored; store it first with PUT "
                          "/v1/configs/NAME or `authproxy ctl config-set NAME --config FILE`",
                          cfgname->valuestring);
      rules_json_free(body);
      return;
    }
    if (daemon_json_parse_own(stored->persist, &named) != 0) {
      proxy_control_error(resp, 500, "internal_error", "config %s cannot be read back",
                          stored->name);
      rules_json_free(body);
      return;
    }
    cfg = named;
  }
  daemon_error_init(&err);
  r = daemon_attach(d, name, netns->valuestring, cfg, ca, &s, &err);
  if (r < 0) {
    error_resp(resp, &err);
  } else {
    /* 200: the sandbox was attached so already (a retry, say); the answer is the same. */
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "name", s->name);
    cJSON_AddStringToObject(out, "netns", s->netns);
    cJSON_AddStringToObject(out, "ca_certificate", proxy_ca_cert_pem(s->ca));
    json_resp(resp, r == 1 ? 200 : 201, out);
  }
  daemon_error_free(&err);
  rules_json_free(named);
  rules_json_free(body);
}

static void patch_sandbox(struct daemon *d, struct daemon_sandbox *s,
                          const struct proxy_control_request *req,
                          struct proxy_control_response *resp)
{
  static const char *const allowed[] = { "proxy_config", NULL };
  struct daemon_error err;
  const cJSON *cfg;
  char summary[256];
  cJSON *body, *out;

  body = parse_body(req, allowed, resp);
  if (body == NULL)
    return;
  cfg = cJSON_GetObjectItemCaseSensitive(body, "proxy_config");
  if (cfg == NULL) {
    proxy_control_error(resp, 400, "invalid_request", "update needs {\"proxy_config\": {...}}");
    rules_json_free(body);
    return;
  }
  daemon_error_init(&err);
  if (daemon_update(d, s, cfg, &err) != 0) {
    error_resp(resp, &err);
  } else {
    rules_config_summary(proxy_sandbox_config(s->sb), summary, sizeof(summary));
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "name", s->name);
    cJSON_AddStringToObject(out, "summary", summary);
    json_resp(resp, 200, out);
  }
  daemon_error_free(&err);
  rules_json_free(body);
}

/*
 * DELETE of a sandbox that is not attached: one the daemon could not re-attach at start
 * (not_attached) has its state forgotten, so that runtimes, which delete a sandbox with
 * this call (CNI DEL, the OCI poststop hook), do not see it attached again at a later
 * start. Its namespace is left as it is (daemon_lost_forget says why).
 */
static void delete_lost(struct daemon *d, const char *name,
                        struct proxy_control_response *resp)
{
  struct daemon_lost *l = daemon_lost_find(d, name);
  struct daemon_error err;

  if (l == NULL) {
    proxy_control_error(resp, 404, "sandbox_not_found", "no sandbox %s", name);
    return;
  }
  daemon_error_init(&err);
  if (daemon_lost_forget(d, l, &err) != 0)
    error_resp(resp, &err);
  else
    deleted_resp(resp, name, "forgotten");
  daemon_error_free(&err);
}

/*
 * 404 for a sandbox the daemon does not serve. One the daemon could not re-attach at
 * start is listed under not_attached with the reason, and GET, PATCH and ca.pem of it
 * said "no sandbox NAME", as of a name never attached: a runtime checking it after a
 * restart (CNI CHECK) was not told why it has no network, nor that PATCH cannot bring
 * it back. The code stays sandbox_not_found; the message says why and what to do.
 */
static void sandbox_not_found(struct daemon *d, const char *name,
                              struct proxy_control_response *resp)
{
  struct daemon_lost *l = daemon_lost_find(d, name);

  if (l == NULL) {
    proxy_control_error(resp, 404, "sandbox_not_found", "no sandbox %s", name);
    return;
  }
  proxy_control_error(resp, 404, "sandbox_not_found",
                      "sandbox %s is not attached: the daemon could not attach it again at "
                      "start (%.512s), and it has no network; attach it again with PUT, or "
                      "DELETE it to forget it",
                      name, l->why != NULL && l->why[0] != '\0' ? l->why : "no reason given");
}

static void sandbox_route(struct daemon *d, const char *rest,
                          const struct proxy_control_request *req,
                          struct proxy_control_response *resp)
{
  char name[DAEMON_NAME_MAX + 1];
  const char *slash = strchr(rest, '/');
  size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
  struct daemon_sandbox *s;
  struct daemon_error err;
  cJSON *out;

  if (len == 0 || len > DAEMON_NAME_MAX) {
    proxy_control_error(resp, 404, "not_found", "no such resource");
    return;
  }
  memcpy(name, rest, len);
  name[len] = '\0';
  if (!daemon_valid_name(name)) {
    proxy_control_error(resp, 400, "invalid_name",
                        "sandbox names are 1-128 of [A-Za-z0-9_.-], starting with a letter "
                        "or digit");
    return;
  }
  s = daemon_find(d, name);
  if (slash != NULL) {
    if (strcmp(slash, "/ca.pem") != 0 || strcmp(req->method, "GET") != 0) {
      proxy_control_error(resp, 404, "not_found", "no such resource");
      return;
    }
    if (s == NULL) {
      sandbox_not_found(d, name, resp);
      return;
    }
    resp->status = 200;
    resp->content_type = "application/x-pem-file";
    strbuf_adds(&resp->body, proxy_ca_cert_pem(s->ca));
    return;
  }
  if (strcmp(req->method, "PUT") == 0) {
    put_sandbox(d, name, req, resp);
    return;
  }
  if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "PATCH") != 0 &&
      strcmp(req->method, "DELETE") != 0) {
    proxy_control_error(resp, 405, "method_not_allowed",
                        "use GET, PUT, PATCH or DELETE on /v1/sandboxes/NAME");
    return;
  }
  if (s == NULL && strcmp(req->method, "DELETE") == 0) {
    delete_lost(d, name, resp);
    return;
  }
  if (s == NULL) {
    sandbox_not_found(d, name, resp);
    return;
  }
  if (strcmp(req->method, "GET") == 0) {
    out = cJSON_CreateObject();
    if (sandbox_json(d, s, out, 1) != 0) {
      cJSON_Delete(out);
      oom_resp(resp, 200);
    } else {
      json_resp(resp, 200, out);
    }
  } else if (strcmp(req->method, "PATCH") == 0) {
    patch_sandbox(d, s, req, resp);
  } else {
    daemon_error_init(&err);
    if (daemon_detach(d, s, &err) != 0)
      error_resp(resp, &err);
    else
      deleted_resp(resp, name, "detached");
    daemon_error_free(&err);
  }
}

/* ---- secrets ---- */

static void secret_name(const char *key, void *arg)
{
  rules_json_append(arg, cJSON_CreateString(key));
}

static void secret_route(struct daemon *d, const char *key,
                         const struct proxy_control_request *req,
                         struct proxy_control_response *resp)
{
  static const char *const allowed[] = { "value", NULL };
  struct daemon_error err;
  const cJSON *value;
  cJSON *body, *out;

  daemon_error_init(&err);
  if (strcmp(req->method, "PUT") == 0) {
    body = parse_body(req, allowed, resp);
    if (body == NULL)
      goto out;
    value = cJSON_GetObjectItemCaseSensitive(body, "value");
    if (!cJSON_IsString(value)) {
      proxy_control_error(resp, 400, "invalid_request", "a secret is {\"value\": STRING}");
    } else if (value->valuestring[0] == '\0') {
      /* `echo -n "$UNSET" | ctl secret-set KEY` would store it, and only the config
       * that uses it would be refused, later and elsewhere. */
      proxy_control_error(resp, 400, "invalid_request",
                          "secret %.128s is empty; nothing was stored (was the value piped "
                          "in empty, such as an unset variable?)",
                          key);
    } else if (daemon_secret_set(d, key, value->valuestring, strlen(value->valuestring),
                                 &err) != 0) {
      error_resp(resp, &err);
    } else {
      out = cJSON_CreateObject();
      cJSON_AddStringToObject(out, "name", key);
      cJSON_AddStringToObject(out, "status", "stored");
      json_resp(resp, 200, out);
    }
    rules_json_free(body);
  } else if (strcmp(req->method, "DELETE") == 0) {
    if (daemon_secret_delete(d, key, &err) != 0) {
      error_resp(resp, &err);
    } else {
      out = cJSON_CreateObject();
      cJSON_AddStringToObject(out, "name", key);
      cJSON_AddStringToObject(out, "status", "deleted");
      json_resp(resp, 200, out);
    }
  } else {
    /* Write-only: there is no GET of a value. */
    proxy_control_error(resp, 405, "method_not_allowed",
                        "secrets are write-only: PUT or DELETE /v1/secrets/KEY");
  }
out:
  daemon_error_free(&err);
}

/* ---- stored configs ---- */

static void list_configs(struct daemon *d, struct proxy_control_response *resp)
{
  cJSON *root = cJSON_CreateObject(), *names = cJSON_CreateArray(), *sorted;
  struct daemon_config *c;

  for (c = d->configs; c != NULL; c = c->next)
    rules_json_append(names, cJSON_CreateString(c->name));
  /* Newest first in memory; sorted for the answer. */
  sorted = cJSON_CreateArray();
  while (cJSON_GetArraySize(names) > 0) {
    cJSON *it, *min = NULL;

    cJSON_ArrayForEach(it, names)
      if (min == NULL || strcmp(it->valuestring, min->valuestring) < 0)
        min = it;
    rules_json_append(sorted, cJSON_DetachItemViaPointer(names, min));
  }
  cJSON_Delete(names);
  rules_json_add(root, "configs", sorted);
  json_resp(resp, 200, root);
}

static void config_route(struct daemon *d, const char *name,
                         const struct proxy_control_request *req,
                         struct proxy_control_response *resp)
{
  static const char *const allowed[] = { "proxy_config", NULL };
  struct daemon_config *c;
  struct daemon_error err;
  const cJSON *cfg;
  cJSON *body, *out, *missing, *red;

  if (!daemon_valid_name(name)) {
    proxy_control_error(resp, 400, "invalid_name",
                        "config names are 1-128 of [A-Za-z0-9_.-], starting with a letter "
                        "or digit");
    return;
  }
  daemon_error_init(&err);
  if (strcmp(req->method, "PUT") == 0) {
    body = parse_body(req, allowed, resp);
    if (body == NULL)
      goto out;
    cfg = cJSON_GetObjectItemCaseSensitive(body, "proxy_config");
    missing = cJSON_CreateArray();
    if (cfg == NULL) {
      proxy_control_error(resp, 400, "invalid_request",
                          "a stored config is {\"proxy_config\": {...}}");
    } else if (daemon_config_set(d, name, cfg, missing, &err) != 0) {
      error_resp(resp, &err);
    } else {
      out = cJSON_CreateObject();
      cJSON_AddStringToObject(out, "name", name);
      cJSON_AddStringToObject(out, "status", "stored");
      /* Secrets its templates name that exist nowhere yet: an attach with this config
       * fails until they are pushed. */
      rules_json_add(out, "unresolved_secrets", missing);
      missing = NULL;
      json_resp(resp, 200, out);
    }
    cJSON_Delete(missing);
    rules_json_free(body);
    goto out;
  }
  c = daemon_config_find(d, name);
  if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "DELETE") != 0) {
    proxy_control_error(resp, 405, "method_not_allowed",
                        "use GET, PUT or DELETE on /v1/configs/NAME");
  } else if (c == NULL) {
    proxy_control_error(resp, 404, "config_not_found", "no config %s is stored", name);
  } else if (strcmp(req->method, "GET") == 0) {
    out = cJSON_CreateObject();
    red = cJSON_Parse(c->redacted);
    cJSON_AddStringToObject(out, "name", c->name);
    if (red != NULL)
      rules_json_add(out, "proxy_config", red);
    json_resp(resp, 200, out);
  } else if (daemon_config_delete(d, c, &err) != 0) {
    error_resp(resp, &err);
  } else {
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "name", name);
    cJSON_AddStringToObject(out, "status", "deleted");
    json_resp(resp, 200, out);
  }
out:
  daemon_error_free(&err);
}

/* ---- metrics ---- */

/* Sandboxes of the state directory the daemon does not serve (GET /v1/sandboxes lists
 * them under not_attached): without network until attached again or deleted. */
static size_t count_not_attached(const struct daemon *d)
{
  const struct daemon_lost *l;
  size_t n = 0;

  for (l = d->lost; l != NULL; l = l->next)
    n++;
  return n;
}

/* The daemon-wide descriptor budgets (proxy_ctx_init), by use. */
static void fd_budget_write(struct strbuf *b, const struct proxy_ctx *ctx)
{
  static const char *const metric[3][3] = {
    { "authproxy_fd_budget_used", "gauge", "File descriptors held, by use, for all sandboxes." },
    { "authproxy_fd_budget_max", "gauge",
      "File descriptors all sandboxes may hold, by use (a sixteenth of RLIMIT_NOFILE)." },
    { "authproxy_fd_budget_full_total", "counter",
      "Descriptors wanted with the budget full, by use: a DNS over TCP client closed to "
      "make room, a callback lookup failed." },
  };
  const struct proxy_fd_budget *use[2] = { &ctx->dns_shared.fds, &ctx->callback_fds };
  static const char *const name[2] = { "dns_tcp", "callback" };
  int i, j;

  for (i = 0; i < 3; i++) {
    strbuf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", metric[i][0], metric[i][2], metric[i][0],
                metric[i][1]);
    for (j = 0; j < 2; j++) {
      uint64_t v = i == 0 ? use[j]->used : i == 1 ? use[j]->max : use[j]->refused;

      strbuf_addf(b, "%s{use=\"%s\"} %llu\n", metric[i][0], name[j], (unsigned long long)v);
    }
  }
}

static void metrics(struct daemon *d, struct proxy_control_response *resp)
{
  static const char *const actions[] = { "deny", "tunnel", "intercept", "bypass" };
  const struct proxy_counters *k = &d->ctx.counters;
  struct proxy_sandbox_stats st, sum;
  struct strbuf *b = &resp->body;
  struct daemon_sandbox *s;
  int i;

  sum = d->retired;
  for (s = d->sandboxes; s != NULL; s = s->next) {
    proxy_sandbox_stats(s->sb, &st);
    sum.dns_names += st.dns_names;
    sum.dns_queries += st.dns_queries;
    sum.dns_dropped += st.dns_dropped;
    sum.dns_refused += st.dns_refused;
    sum.certs_cached += st.certs_cached;
    sum.cert_hits += st.cert_hits;
    sum.cert_misses += st.cert_misses;
    sum.cert_evictions += st.cert_evictions;
    sum.cert_limited += st.cert_limited;
    sum.cert_minted += st.cert_minted;
  }
  resp->status = 200;
  resp->content_type = "text/plain; version=0.0.4";
  strbuf_addf(b, "# HELP authproxy_sandboxes Sandboxes attached.\n# TYPE authproxy_sandboxes gauge\n"
                 "authproxy_sandboxes %zu\n", d->nsandboxes);
  strbuf_addf(b, "# HELP authproxy_sandboxes_not_attached Sandboxes of the state directory "
                 "not served, without network: their namespace is gone, or re-attaching "
                 "failed (GET /v1/sandboxes lists them, with the reason).\n"
                 "# TYPE authproxy_sandboxes_not_attached gauge\n"
                 "authproxy_sandboxes_not_attached %zu\n", count_not_attached(d));
  /* The context's sum, which counts sandboxes still draining after a detach too. */
  strbuf_addf(b, "# HELP authproxy_write_queued_bytes Bytes waiting in write queues "
                 "(each sandbox's are bounded by --sandbox-queue-bytes, all of them by "
                 "--queue-bytes).\n"
                 "# TYPE authproxy_write_queued_bytes gauge\nauthproxy_write_queued_bytes %zu\n"
                 "# HELP authproxy_write_queue_max_bytes The bound on all write queues "
                 "(--queue-bytes).\n"
                 "# TYPE authproxy_write_queue_max_bytes gauge\n"
                 "authproxy_write_queue_max_bytes %zu\n"
                 "# HELP authproxy_write_queue_full_total Times all write queues reached "
                 "--queue-bytes: every connection was then read a TLS record at a time "
                 "until half of it was written.\n"
                 "# TYPE authproxy_write_queue_full_total counter\n"
                 "authproxy_write_queue_full_total %llu\n",
              d->ctx.queued, d->ctx.limits.total_queue_max,
              (unsigned long long)k->queue_full);
  /* The sandboxes' connections, as accepted_total and closed_total count them: idle
   * pooled upstreams are connection objects too (each of them among conns_active),
   * but have their own gauge; with them, this stayed above 0 for seconds after the
   * last connection had closed. */
  strbuf_addf(b, "# HELP authproxy_connections_active Open sandbox connections (idle pooled "
                 "upstreams: authproxy_upstream_pooled).\n"
                 "# TYPE authproxy_connections_active gauge\nauthproxy_connections_active %llu\n",
              (unsigned long long)(k->conns_active > d->ctx.npool
                                       ? k->conns_active - d->ctx.npool : 0));
  strbuf_adds(b, "# HELP authproxy_connections_total Connections decided, by action.\n"
                 "# TYPE authproxy_connections_total counter\n");
  for (i = 0; i < 4; i++)
    strbuf_addf(b, "authproxy_connections_total{action=\"%s\"} %llu\n", actions[i],
                (unsigned long long)k->actions[i]);
  strbuf_addf(b, "# HELP authproxy_connections_accepted_total Connections accepted.\n"
                 "# TYPE authproxy_connections_accepted_total counter\n"
                 "authproxy_connections_accepted_total %llu\n"
                 "# HELP authproxy_connections_refused_total Connections refused (caps, loops).\n"
                 "# TYPE authproxy_connections_refused_total counter\n"
                 "authproxy_connections_refused_total %llu\n",
              (unsigned long long)k->conns_accepted, (unsigned long long)k->conns_refused);
  proxy_labels_write(b, &d->ctx.closed_by_reason, "authproxy_connections_closed_total",
                     "reason", "Connections ended, by reason.");
  strbuf_addf(b, "# HELP authproxy_requests_total HTTP requests seen.\n"
                 "# TYPE authproxy_requests_total counter\nauthproxy_requests_total %llu\n",
              (unsigned long long)k->requests);
  proxy_labels_write(b, &d->ctx.denied_by_reason, "authproxy_requests_refused_total",
                     "reason", "Requests answered by the proxy (denied or malformed), by reason.");
  proxy_labels_write(b, &d->ctx.injected_by_rule, "authproxy_headers_injected_total", "rule",
                     "Headers injected, by rule.");
  strbuf_addf(b, "# HELP authproxy_bytes_total Bytes sandboxes sent (up) and received (down), "
                 "TLS records and the proxy's own answers included (closed connections).\n"
                 "# TYPE authproxy_bytes_total counter\n"
                 "authproxy_bytes_total{direction=\"up\"} %llu\n"
                 "authproxy_bytes_total{direction=\"down\"} %llu\n",
              (unsigned long long)k->bytes_up, (unsigned long long)k->bytes_down);
  strbuf_addf(b, "# HELP authproxy_timeouts_deferred_total Timeouts put off because the "
                 "peer's answer (bytes, or a connect that succeeded) waited behind a late "
                 "event loop (overload).\n"
                 "# TYPE authproxy_timeouts_deferred_total counter\n"
                 "authproxy_timeouts_deferred_total %llu\n",
              (unsigned long long)k->timers_late);
  strbuf_addf(b, "# HELP authproxy_reads_yielded_total Reads put off to the loop's next "
                 "turn: a connection read its share of one turn while others waited.\n"
                 "# TYPE authproxy_reads_yielded_total counter\n"
                 "authproxy_reads_yielded_total %llu\n",
              (unsigned long long)k->reads_yielded);
  strbuf_addf(b, "# HELP authproxy_setup_reads_yielded_total Reads of connections being "
                 "set up (first bytes, TLS handshakes) put off to the loop's next turn: "
                 "their sandbox had set up its share of one turn.\n"
                 "# TYPE authproxy_setup_reads_yielded_total counter\n"
                 "authproxy_setup_reads_yielded_total %llu\n",
              (unsigned long long)k->setup_reads_yielded);
  strbuf_addf(b, "# HELP authproxy_upstream_pooled Idle upstream connections kept for reuse.\n"
                 "# TYPE authproxy_upstream_pooled gauge\nauthproxy_upstream_pooled %llu\n"
                 "# HELP authproxy_upstream_parked_total Upstream connections put in a pool.\n"
                 "# TYPE authproxy_upstream_parked_total counter\n"
                 "authproxy_upstream_parked_total %llu\n"
                 "# HELP authproxy_upstream_reused_total Requests sent on a pooled upstream "
                 "connection.\n# TYPE authproxy_upstream_reused_total counter\n"
                 "authproxy_upstream_reused_total %llu\n"
                 "# HELP authproxy_upstream_pool_evicted_total Pooled upstream connections "
                 "closed to make room for a sandbox connection (a cap or a descriptor "
                 "share).\n# TYPE authproxy_upstream_pool_evicted_total counter\n"
                 "authproxy_upstream_pool_evicted_total %llu\n",
              (unsigned long long)d->ctx.npool, (unsigned long long)k->upstream_parked,
              (unsigned long long)k->upstream_reused, (unsigned long long)k->upstream_evicted);
  fd_budget_write(b, &d->ctx);
  strbuf_addf(b, "# HELP authproxy_upstream_errors_total Upstream resolution, connect and TLS "
                 "failures.\n# TYPE authproxy_upstream_errors_total counter\n"
                 "authproxy_upstream_errors_total %llu\n",
              (unsigned long long)k->upstream_errors);
  strbuf_addf(b, "# HELP authproxy_cert_cache_entries Leaf certificates cached.\n"
                 "# TYPE authproxy_cert_cache_entries gauge\nauthproxy_cert_cache_entries %zu\n"
                 "# HELP authproxy_cert_cache_hits_total Leaf lookups served from the cache.\n"
                 "# TYPE authproxy_cert_cache_hits_total counter\n"
                 "authproxy_cert_cache_hits_total %llu\n"
                 "# HELP authproxy_cert_minted_total Leaf certificates minted.\n"
                 "# TYPE authproxy_cert_minted_total counter\nauthproxy_cert_minted_total %llu\n"
                 "# HELP authproxy_cert_cache_evictions_total Leaves evicted.\n"
                 "# TYPE authproxy_cert_cache_evictions_total counter\n"
                 "authproxy_cert_cache_evictions_total %llu\n"
                 "# HELP authproxy_cert_rate_limited_total New names refused "
                 "(certificate_rate_limited): their sandbox's CA had spent its signing "
                 "budget.\n# TYPE authproxy_cert_rate_limited_total counter\n"
                 "authproxy_cert_rate_limited_total %llu\n",
              sum.certs_cached, (unsigned long long)sum.cert_hits,
              (unsigned long long)sum.cert_minted, (unsigned long long)sum.cert_evictions,
              (unsigned long long)sum.cert_limited);
  strbuf_addf(b, "# HELP authproxy_dns_names Synthetic names held.\n"
                 "# TYPE authproxy_dns_names gauge\nauthproxy_dns_names %zu\n"
                 "# HELP authproxy_dns_queries_total DNS queries answered.\n"
                 "# TYPE authproxy_dns_queries_total counter\nauthproxy_dns_queries_total %llu\n"
                 "# HELP authproxy_dns_dropped_total Malformed DNS queries dropped.\n"
                 "# TYPE authproxy_dns_dropped_total counter\nauthproxy_dns_dropped_total %llu\n",
              sum.dns_names, (unsigned long long)sum.dns_queries,
              (unsigned long long)sum.dns_dropped);
  proxy_cred_stats_write(b, &d->ctx.cred_stats);
  strbuf_addf(b, "# HELP authproxy_audit_records_total Audit records written.\n"
                 "# TYPE authproxy_audit_records_total counter\n"
                 "authproxy_audit_records_total %llu\n"
                 "# HELP authproxy_audit_dropped_total Audit records dropped (the log fell "
                 "behind, or a write failed).\n"
                 "# TYPE authproxy_audit_dropped_total counter\n"
                 "authproxy_audit_dropped_total %llu\n",
              (unsigned long long)proxy_audit_records(d->audit),
              (unsigned long long)proxy_audit_dropped(d->audit));
}

/* ---- router ---- */

void daemon_api(void *arg, const struct proxy_control_request *req,
                struct proxy_control_response *resp)
{
  struct daemon *d = arg;
  struct proxy_control_request as_get;
  const char *p = req->path;
  cJSON *out;

  /* HEAD is GET without the body (RFC 9110 9.3.2), which the transport leaves out: as
   * an unknown method it was told "no route" (404) for /healthz, 405 on a sandbox. No
   * GET changes anything. */
  if (strcmp(req->method, "HEAD") == 0) {
    as_get = *req;
    as_get.method = "GET";
    req = &as_get;
  }
  json_failures_before = rules_json_alloc_failures();
  if (d->stopping) {
    proxy_control_error(resp, 503, "stopping", "the daemon is stopping");
    return;
  }
  if (strcmp(p, "/healthz") == 0 && strcmp(req->method, "GET") == 0) {
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "status", "ok");
    cJSON_AddNumberToObject(out, "sandboxes", (double)d->nsandboxes);
    cJSON_AddNumberToObject(out, "not_attached", (double)count_not_attached(d));
    cJSON_AddNumberToObject(out, "uptime_seconds",
                            (double)((uv_now(&d->loop) - d->started_ms) / 1000));
    json_resp(resp, 200, out);
  } else if (strcmp(p, "/metrics") == 0 && strcmp(req->method, "GET") == 0) {
    metrics(d, resp);
  } else if (strcmp(p, "/v1/sandboxes") == 0 && strcmp(req->method, "GET") == 0) {
    list_sandboxes(d, resp);
  } else if (strncmp(p, "/v1/sandboxes/", 14) == 0) {
    sandbox_route(d, p + 14, req, resp);
  } else if (strcmp(p, "/v1/secrets") == 0 && strcmp(req->method, "GET") == 0) {
    out = cJSON_CreateObject();
    cJSON *names = cJSON_CreateArray();

    rules_secrets_list(d->secrets, secret_name, names);
    rules_json_add(out, "secrets", names);
    json_resp(resp, 200, out);
  } else if (strcmp(p, "/v1/configs") == 0 && strcmp(req->method, "GET") == 0) {
    list_configs(d, resp);
  } else if (strncmp(p, "/v1/configs/", 12) == 0 && p[12] != '\0' &&
             strlen(p + 12) <= DAEMON_NAME_MAX && strchr(p + 12, '/') == NULL) {
    config_route(d, p + 12, req, resp);
  } else if (strncmp(p, "/v1/secrets/", 12) == 0 && p[12] != '\0' &&
             strchr(p + 12, '/') == NULL) {
    secret_route(d, p + 12, req, resp);
  } else {
    proxy_control_error(resp, 404, "not_found", "no route for %s %.128s", req->method, p);
  }
}
