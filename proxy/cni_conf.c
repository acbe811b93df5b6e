/*
 * The CNI plugin's documents (cni.h): the network configuration it reads, the results
 * and errors it writes. No I/O: cni.c does that.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <cjson/cJSON.h>

#include "proxy/apiclient.h"
#include "proxy/cni.h"
#include "proxy/strbuf.h"
#include "rules/rules.h"

static const char *const versions[] = { PROXY_CNI_VERSIONS, NULL };

/* Keys of the CNI spec (and its conventions) that the plugin accepts and ignores. */
static const char *const ignored_keys[] = {
  "name", "type", "args", "runtimeConfig", "capabilities", "ipMasq", "ipam", "dns", NULL,
};

int proxy_cni_fail(struct proxy_cni_error *e, int code, const char *msg, const char *fmt,
                   ...)
{
  va_list ap;

  e->code = code;
  snprintf(e->msg, sizeof(e->msg), "%s", msg);
  va_start(ap, fmt);
  vsnprintf(e->details, sizeof(e->details), fmt, ap);
  va_end(ap);
  return -EINVAL;
}

int proxy_cni_oom(struct proxy_cni_error *e, const char *what)
{
  if (what == NULL)
    return proxy_cni_fail(e, PROXY_CNI_ERR_IO, "out of memory", "out of memory");
  return proxy_cni_fail(e, PROXY_CNI_ERR_IO, "out of memory", "%s: out of memory", what);
}

int proxy_cni_version_supported(const char *version)
{
  size_t i;

  for (i = 0; versions[i] != NULL; i++)
    if (strcmp(version, versions[i]) == 0)
      return 1;
  return 0;
}

/* A short, printable rendering of a JSON value for messages. */
static void value_text(const cJSON *v, char *buf, size_t size)
{
  char *text = cJSON_PrintUnformatted(v);
  size_t i;

  snprintf(buf, size, "%s", text ? text : "?");
  if (text != NULL) {
    explicit_bzero(text, strlen(text));
    free(text);
  }
  if (strlen(buf) == size - 1 && size > 4)
    memcpy(buf + size - 4, "...", 4);
  for (i = 0; buf[i] != '\0'; i++)
    if ((unsigned char)buf[i] < 0x20)
      buf[i] = ' ';
}

static int check_path(const cJSON *v, const char *key, size_t max, struct proxy_cni_error *e)
{
  if (!cJSON_IsString(v) || v->valuestring[0] != '/' || strlen(v->valuestring) > max)
    return proxy_cni_fail(e, PROXY_CNI_ERR_CONFIG, "invalid network configuration",
                          "\"%s\" must be an absolute path of at most %zu bytes", key, max);
  return 0;
}

int proxy_cni_parse_conf(const char *json, size_t len, struct proxy_cni_conf *c,
                         struct proxy_cni_error *e)
{
  struct rules_diag diag;
  const cJSON *it, *v;
  char text[160];
  size_t i, sources = 0;
  int r;

  memset(c, 0, sizeof(*c));
  rules_diag_init(&diag);
  r = rules_json_parse(json, len, &c->root, &diag);
  if (r == -ENOMEM) {
    rules_diag_free(&diag);
    return proxy_cni_oom(e, NULL);
  }
  if (r != 0) {
    proxy_cni_fail(e, PROXY_CNI_ERR_DECODE, "cannot decode the network configuration",
                   "standard input is not JSON: %s",
                   diag.count ? diag.entries[0].message : "malformed");
    rules_diag_free(&diag);
    return -EINVAL;
  }
  rules_diag_free(&diag);
  r = -EINVAL;
  if (!cJSON_IsObject(c->root)) {
    proxy_cni_fail(e, PROXY_CNI_ERR_DECODE, "cannot decode the network configuration",
                   "the network configuration must be a JSON object");
    goto out;
  }
  v = cJSON_GetObjectItemCaseSensitive(c->root, "cniVersion");
  if (!cJSON_IsString(v) || v->valuestring[0] == '\0' || strlen(v->valuestring) > 32) {
    proxy_cni_fail(e, PROXY_CNI_ERR_CONFIG, "invalid network configuration",
                   "\"cniVersion\" is required (a string such as \"1.0.0\")");
    goto out;
  }
  c->version = v->valuestring;
  snprintf(e->version, sizeof(e->version), "%s", c->version);
  if (!proxy_cni_version_supported(c->version)) {
    proxy_cni_fail(e, PROXY_CNI_ERR_VERSION, "incompatible CNI version",
                   "cniVersion %s is not supported; use one of 0.3.0, 0.3.1, 0.4.0, 1.0.0",
                   c->version);
    goto out;
  }
  v = cJSON_GetObjectItemCaseSensitive(c->root, "name");
  if (!cJSON_IsString(v) || v->valuestring[0] == '\0') {
    proxy_cni_fail(e, PROXY_CNI_ERR_CONFIG, "invalid network configuration",
                   "\"name\" (the network's name) is required");
    goto out;
  }
  v = cJSON_GetObjectItemCaseSensitive(c->root, "type");
  if (!cJSON_IsString(v) || v->valuestring[0] == '\0') {
    proxy_cni_fail(e, PROXY_CNI_ERR_CONFIG, "invalid network configuration",
                   "\"type\" (the plugin's executable, e.g. \"authproxy-cni\") is required");
    goto out;
  }
  c->control = PROXY_API_DEFAULT_CONTROL;
  cJSON_ArrayForEach(it, c->root) {
    const char *k = it->string;

    if (strcmp(k, "cniVersion") == 0)
      continue;
    if (strcmp(k, "control") == 0) {
      if (check_path(it, k, sizeof(((struct sockaddr_un *)0)->sun_path) - 1, e) != 0)
        goto out;
      c->control = it->valuestring;
    } else if (strcmp(k, "proxy_config") == 0) {
      if (!cJSON_IsObject(it)) {
        proxy_cni_fail(e, PROXY_CNI_ERR_CONFIG, "invalid network configuration",
                       "\"proxy_config\" must be an object (a proxy_config)");
        goto out;
      }
      c->proxy_config = it;
      sources++;
    } else if (strcmp(k, "proxy_config_file") == 0) {
      if (check_path(it, k, 4095, e) != 0)
        goto out;
      c->proxy_config_file = it->valuestring;
      sources++;
    } else if (strcmp(k, "proxy_config_name") == 0) {
      if (!cJSON_IsString(it) ||
          !proxy_api_name_ok(it->valuestring, PROXY_API_NAME_MAX)) {
        proxy_cni_fail(e, PROXY_CNI_ERR_CONFIG, "invalid network configuration",
                       "\"proxy_config_name\" must be the name of a stored config: 1-128 of "
                       "[A-Za-z0-9_.-], starting with a letter or digit");
        goto out;
      }
      c->proxy_config_name = it->valuestring;
      sources++;
    } else if (strcmp(k, "prevResult") == 0) {
      if (!cJSON_IsObject(it)) {
        proxy_cni_fail(e, PROXY_CNI_ERR_CONFIG, "invalid network configuration",
                       "\"prevResult\" must be an object (the previous plugin's result)");
        goto out;
      }
      c->prev_result = it;
    } else {
      for (i = 0; ignored_keys[i] != NULL; i++)
        if (strcmp(k, ignored_keys[i]) == 0)
          break;
      if (ignored_keys[i] == NULL) {
        /* An object or array is not shown: under a misspelled key it is most likely an
         * inline proxy_config, whose opaque values must not reach the error, which
         * runtimes log and show to whoever reads the pod's events. */
        if (cJSON_IsObject(it) || cJSON_IsArray(it)) {
          snprintf(text, sizeof(text), "an %s value", cJSON_IsObject(it) ? "object" : "array");
        } else {
          memcpy(text, "value ", 6);
          value_text(it, text + 6, sizeof(text) - 6);
        }
        proxy_cni_fail(e, PROXY_CNI_ERR_FIELD, "unsupported field in network configuration",
                       "unknown key \"%.64s\" with %s; the plugin's keys are control, "
                       "proxy_config, proxy_config_file and proxy_config_name", k, text);
        goto out;
      }
    }
  }
  if (sources != 1) {
    proxy_cni_fail(e, PROXY_CNI_ERR_CONFIG, "invalid network configuration",
                   "%s one of \"proxy_config\" (inline), \"proxy_config_file\" (a path) or "
                   "\"proxy_config_name\" (stored with `authproxy ctl config-set`)",
                   sources == 0 ? "give" : "give only");
    goto out;
  }
  return 0;
out:
  proxy_cni_conf_free(c);
  return r;
}

void proxy_cni_conf_free(struct proxy_cni_conf *c)
{
  rules_json_free(c->root);
  memset(c, 0, sizeof(*c));
}

char *proxy_cni_add_result(const struct proxy_cni_conf *c)
{
  cJSON *res, *dns, *ns;
  char *text;

  res = c->prev_result ? cJSON_Duplicate(c->prev_result, 1) : cJSON_CreateObject();
  if (res == NULL)
    return NULL;
  /* The result speaks the configuration's version (libcni converted prevResult to
   * it before calling the plugin). */
  cJSON_DeleteItemFromObjectCaseSensitive(res, "cniVersion");
  if (cJSON_AddStringToObject(res, "cniVersion", c->version) == NULL)
    goto oom;
  dns = cJSON_GetObjectItemCaseSensitive(res, "dns");
  if (!cJSON_IsObject(dns)) {
    cJSON_DeleteItemFromObjectCaseSensitive(res, "dns");
    dns = cJSON_AddObjectToObject(res, "dns");
    if (dns == NULL)
      goto oom;
  }
  cJSON_DeleteItemFromObjectCaseSensitive(dns, "nameservers");
  ns = cJSON_AddArrayToObject(dns, "nameservers");
  if (ns == NULL || !cJSON_AddItemToArray(ns, cJSON_CreateString(PROXY_CNI_NAMESERVER)))
    goto oom;
  text = cJSON_PrintUnformatted(res);
  cJSON_Delete(res);
  return text;
oom:
  cJSON_Delete(res);
  return NULL;
}

/*
 * Written with strbuf's JSON writer, not cJSON's, which copies a string's bytes as they
 * are: details quote what the runtime or the daemon sent, cut to fit (an unknown key's
 * value, the daemon's message), and a cut inside a character left bytes no strict JSON
 * reader takes, so the runtime reported an undecodable answer instead of the error.
 * The writer escapes every non-ASCII character and writes U+FFFD for a byte that
 * begins none.
 */
char *proxy_cni_error_json(const char *version, const struct proxy_cni_error *e)
{
  struct strbuf b;

  if (version == NULL)
    version = "1.0.0";
  strbuf_init(&b);
  strbuf_adds(&b, "{\"cniVersion\":");
  strbuf_add_json_str(&b, version, strlen(version));
  strbuf_addf(&b, ",\"code\":%d,\"msg\":", e->code);
  strbuf_add_json_str(&b, e->msg, strnlen(e->msg, sizeof(e->msg)));
  strbuf_adds(&b, ",\"details\":");
  strbuf_add_json_str(&b, e->details, strnlen(e->details, sizeof(e->details)));
  strbuf_adds(&b, "}");
  return strbuf_take(&b); /* NULL when out of memory */
}

char *proxy_cni_version_json(const char *version)
{
  struct strbuf b;
  size_t i;

  if (version == NULL)
    version = "1.0.0";
  /* The project's writer, whose out of memory is all or nothing: cJSON left out a
   * member or a version it could not allocate and printed the rest, and a runtime
   * read a shorter list of supported versions. */
  strbuf_init(&b);
  strbuf_adds(&b, "{\"cniVersion\":");
  strbuf_add_json_str(&b, version, strlen(version));
  strbuf_adds(&b, ",\"supportedVersions\":[");
  for (i = 0; versions[i] != NULL; i++) {
    if (i > 0)
      strbuf_adds(&b, ",");
    strbuf_add_json_str(&b, versions[i], strlen(versions[i]));
  }
  strbuf_adds(&b, "]}");
  return strbuf_take(&b); /* NULL when out of memory */
}

/* A Linux interface name as the spec puts it: 1-15 bytes, not . or .., no / : or
 * whitespace. */
static int valid_ifname(const char *s)
{
  size_t i;

  if (s == NULL || s[0] == '\0' || strlen(s) > 15 || strcmp(s, ".") == 0 ||
      strcmp(s, "..") == 0)
    return 0;
  for (i = 0; s[i] != '\0'; i++)
    if (s[i] == '/' || s[i] == ':' || (unsigned char)s[i] <= 0x20 ||
        (unsigned char)s[i] == 0x7f)
      return 0;
  return 1;
}

int proxy_cni_check_env(const char *command, const char *(*getenv_fn)(const char *name),
                        struct proxy_cni_error *e)
{
  const char *id = getenv_fn("CNI_CONTAINERID"), *ifname = getenv_fn("CNI_IFNAME");
  const char *netns = getenv_fn("CNI_NETNS");
  char bad[128] = "";
  int netns_needed = strcmp(command, "DEL") != 0;

  /* The spec's container id: [A-Za-z0-9][A-Za-z0-9_.-]*, here at most 1024 long. */
  if (!proxy_api_name_ok(id, 1024))
    strcat(bad, " CNI_CONTAINERID");
  if (!valid_ifname(ifname))
    strcat(bad, " CNI_IFNAME");
  if ((netns_needed || (netns != NULL && netns[0] != '\0')) &&
      (netns == NULL || netns[0] != '/' || strlen(netns) > 4095))
    strcat(bad, " CNI_NETNS");
  if (bad[0] == '\0')
    return 0;
  return proxy_cni_fail(e, PROXY_CNI_ERR_ENV, "invalid environment variables",
                        "%s: invalid or missing:%s (CNI_CONTAINERID: [A-Za-z0-9][A-Za-z0-9_.-]*; "
                        "CNI_IFNAME: 1-15 bytes without / : or spaces; CNI_NETNS: an absolute "
                        "path, required but for DEL)", command, bad);
}
