/*
 * Fuzz target for the rules library: arbitrary bytes as a proxy_config; when it
 * parses, connection and request decisions for destinations derived from the input
 * and from the config's own patterns, and serialization.
 *
 * Input: CONFIG_JSON [ "\n@@\n" PROBE_LINES ], each probe line
 * "name|address|port|method|path" ("-" for no name or no address).
 *
 * Invariants checked (abort on violation): decisions are well-formed; injected
 * values are valid header values, within bounds and unique per name; REDACTED
 * output never holds a secret; PERSIST output re-parses to the same PERSIST output;
 * host and path normalization are idempotent. The JSON intake (rules_json_parse)
 * accepts no object with a member name given twice, and refuses as such only text
 * that has one, naming two positions that each start a member name.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "rules/rules_internal.h"

#define SECRET_MARK "SECRETVALUE"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct rules_secrets *store(void)
{
  static struct rules_secrets *s;

  if (s == NULL) {
    s = rules_secrets_new(NULL);
    if (s == NULL)
      abort();
    rules_secrets_set(s, "A", SECRET_MARK "-A", strlen(SECRET_MARK "-A"));
    rules_secrets_set(s, "B", SECRET_MARK "-B", strlen(SECRET_MARK "-B"));
    rules_secrets_set(s, "OPENAI_API_KEY", SECRET_MARK "-openai", strlen(SECRET_MARK "-openai"));
    rules_secrets_set(s, "GITHUB_TOKEN", SECRET_MARK "-gh", strlen(SECRET_MARK "-gh"));
    rules_secrets_set(s, "CRLF", "x\r\ny", 4);
    rules_secrets_set(s, "EMPTY", "", 0);
  }
  return s;
}

static void check_decision(const struct rules_decision *d)
{
  if (d->action != RULES_DENY && d->action != RULES_TUNNEL && d->action != RULES_INTERCEPT &&
      d->action != RULES_BYPASS)
    abort();
  if ((d->action == RULES_DENY) != (d->reason != NULL))
    abort();
  if (memchr(d->entry, '\0', sizeof(d->entry)) == NULL)
    abort();
}

static void check_request(const struct rules_request_decision *r)
{
  size_t i, j;

  if (r->deny && (r->reason == NULL || r->nheaders != 0))
    abort();
  if (r->nheaders > RULES_MAX_INJECT || memchr(r->entry, '\0', sizeof(r->entry)) == NULL)
    abort();
  for (i = 0; i < r->nheaders; i++) {
    const struct rules_header *h = &r->headers[i];

    if (!rules_is_token(h->name, strlen(h->name)) ||
        rules_is_reserved_header(h->name, strlen(h->name)))
      abort();
    if (h->value_len > RULES_MAX_VALUE_LEN || strlen(h->value) != h->value_len ||
        !rules_is_valid_value(h->value, h->value_len))
      abort();
    for (j = 0; j < i; j++)
      if (strcasecmp(r->headers[j].name, h->name) == 0)
        abort();
    if (!rules_request_injects(r, h->name, strlen(h->name)))
      abort();
  }
}

/* Runs every decision for one destination. */
static void probe(const struct rules_config *cfg, const char *name, const char *ip,
                  uint16_t port, const char *method, const char *path, size_t plen)
{
  struct sockaddr_storage ss;
  struct rules_dest dest = { name, NULL, port };
  struct rules_decision d;
  struct rules_request_decision r;
  char host[RULES_MAX_NAME_LEN + 1];
  uint16_t out_port;

  memset(&ss, 0, sizeof(ss));
  if (ip != NULL) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
      s4->sin_family = AF_INET;
      dest.addr = (const struct sockaddr *)&ss;
    } else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
      s6->sin6_family = AF_INET6;
      dest.addr = (const struct sockaddr *)&ss;
    }
  }
  rules_decide_conn(cfg, &dest, &d);
  check_decision(&d);
  rules_decide_request(cfg, &dest, method, path, plen, &r);
  check_request(&r);
  if (dest.addr != NULL) {
    memset(&d, 0, sizeof(d));
    if (rules_check_resolved(cfg, dest.addr, port, 0, &d) == 0)
      check_decision(&d);
    rules_check_resolved(cfg, dest.addr, port, RULES_RESOLVED_REMAPPED, &d);
    rules_check_resolved(cfg, dest.addr, port, RULES_RESOLVED_INSPECTED, &d);
    if (rules_check_request_address(cfg, dest.addr, method, path, plen, &d) == 0)
      check_decision(&d);
    (void)rules_has_address_requests(cfg);
  }
  if (name != NULL && rules_remap(cfg, name, port, host, sizeof(host), &out_port) == 1 &&
      strlen(host) > RULES_MAX_NAME_LEN)
    abort();
}

static void check_normalizers(const char *s, size_t len)
{
  char a[512], b[512];
  int n, m, fa = 0, fb = 0;

  n = rules_normalize_host(s, len, a, sizeof(a));
  if (n >= 0) {
    m = rules_normalize_host(a, (size_t)n, b, sizeof(b));
    if (m != n || strcmp(a, b) != 0)
      abort();
  }
  n = rules_normalize_path(s, len, a, sizeof(a), &fa);
  if (n >= 0) {
    m = rules_normalize_path(a, (size_t)n, b, sizeof(b), &fb);
    if (m != n || strcmp(a, b) != 0)
      abort();
  }
}

/* Turns a host pattern into a destination name it should match ('*' becomes 'x'). */
static void glob_to_name(const struct rules_hostpat *p, char *out, size_t size)
{
  size_t i, w;

  if (p->kind == RULES_HP_ADDR || p->glob == NULL) {
    snprintf(out, size, "%s", p->text);
    return;
  }
  w = (size_t)snprintf(out, size, "%s",
                       p->kind == RULES_HP_SUFFIX   ? "x"
                       : p->kind == RULES_HP_DOMAIN ? "x."
                                                    : "");
  for (i = 0; p->glob[i] != '\0' && w + 1 < size; i++)
    out[w++] = p->glob[i] == '*' ? 'x' : p->glob[i];
  out[w] = '\0';
}

static void probe_patterns(const struct rules_config *cfg, const struct rules_hostpat *v,
                           size_t n)
{
  char name[RULES_MAX_NAME_LEN + 8];
  size_t i;

  for (i = 0; i < n && i < 16; i++) {
    glob_to_name(&v[i], name, sizeof(name));
    probe(cfg, name, v[i].kind == RULES_HP_ADDR ? "10.0.0.1" : NULL,
          v[i].port ? v[i].port : 443, "POST", "/repos/a/git-receive-pack", 25);
  }
}

static void probe_lines(const struct rules_config *cfg, const char *p, size_t len)
{
  char line[1024], *f[5], *save = NULL;
  const char *end = p + len;
  int lines = 0;

  while (p < end && lines++ < 32) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
    int k;

    if (l >= sizeof(line))
      l = sizeof(line) - 1;
    memcpy(line, p, l);
    line[l] = '\0';
    p = nl ? nl + 1 : end;
    check_normalizers(line, strlen(line));
    for (k = 0; k < 5; k++) {
      f[k] = strtok_r(k == 0 ? line : NULL, "|", &save);
      if (f[k] == NULL)
        break;
    }
    if (k < 5)
      continue;
    probe(cfg, strcmp(f[0], "-") ? f[0] : NULL, strcmp(f[1], "-") ? f[1] : NULL,
          (uint16_t)strtoul(f[2], NULL, 10), f[3], f[4], strlen(f[4]));
  }
}

static void exercise(const struct rules_config *cfg, const char *tail, size_t tail_len)
{
  static const char *const names[] = { "api.github.com", "github.com", "a.b.example.com",
                                       "localhost",      "127.0.0.1",  "::1",
                                       "10.1.2.3",       "api.openai.com" };
  size_t i;

  for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    probe(cfg, names[i], NULL, 443, "GET", "/repos/a/b?q", 12);
    probe(cfg, names[i], "198.18.0.1", 80, "post", "/x/../repos/%2e%2e/a%2Fb", 24);
  }
  probe(cfg, NULL, "10.1.2.3", 22, NULL, "/", 1);
  probe(cfg, NULL, "::ffff:127.0.0.1", 443, "GET", "//a//b", 6);
  for (i = 0; i < cfg->nrules && i < 8; i++)
    probe_patterns(cfg, cfg->rules[i].hosts, cfg->rules[i].nhosts);
  probe_patterns(cfg, cfg->no_proxy, cfg->nno_proxy);
  for (i = 0; i < cfg->ndeny && i < 8; i++)
    probe_patterns(cfg, cfg->deny[i].hosts, cfg->deny[i].nhosts);
  for (i = 0; i < cfg->nallow && i < 8; i++)
    probe_patterns(cfg, cfg->allow[i].hosts, cfg->allow[i].nhosts);
  if (cfg->callback != NULL)
    probe_patterns(cfg, cfg->callback->hosts, cfg->callback->nhosts);
  if (tail != NULL)
    probe_lines(cfg, tail, tail_len);
}

static void serialize(const struct rules_config *cfg, int check_secrets)
{
  struct rules_config *again = NULL;
  struct rules_diag d;
  char *red, *p1, *p2, summary[256];
  int pretty;

  rules_config_summary(cfg, summary, sizeof(summary));
  for (pretty = 0; pretty <= 1; pretty++) {
    red = rules_config_to_json(cfg, RULES_SER_REDACTED, pretty);
    if (red == NULL)
      abort();
    if (check_secrets && strstr(red, SECRET_MARK) != NULL)
      abort();
    free(red);
  }
  p1 = rules_config_to_json(cfg, RULES_SER_PERSIST, 0);
  if (p1 == NULL)
    abort();
  rules_diag_init(&d);
  if (rules_config_parse(p1, strlen(p1), "", store(), &again, &d) != 0) {
    fprintf(stderr, "PERSIST output does not parse:\n%s\n", p1);
    abort();
  }
  p2 = rules_config_to_json(again, RULES_SER_PERSIST, 0);
  if (p2 == NULL || strcmp(p1, p2) != 0) {
    fprintf(stderr, "PERSIST round trip differs:\n%s\n%s\n", p1, p2 ? p2 : "(null)");
    abort();
  }
  free(p1);
  free(p2);
  rules_config_unref(again);
  rules_diag_free(&d);
}

/* Whether any object in n, its children or its later siblings repeats a name. */
static int has_repeat(const cJSON *n)
{
  const cJSON *a, *b;

  for (; n != NULL; n = n->next) {
    if (cJSON_IsObject(n))
      for (a = n->child; a != NULL; a = a->next)
        for (b = a->next; b != NULL; b = b->next)
          if (strcmp(a->string, b->string) == 0)
            return 1;
    if (has_repeat(n->child))
      return 1;
  }
  return 0;
}

/* The offset of line/column (1-based, columns in bytes) in text, or len. */
static size_t offset_of(const char *text, size_t len, size_t line, size_t col)
{
  size_t off = 0;

  for (; line > 1 && off < len; off++)
    if (text[off] == '\n')
      line--;
  return col >= 1 && col - 1 <= len - off ? off + col - 1 : len;
}

/* Checks that the position "line L, column C" read at p starts a string (a member
 * name); returns its offset. */
static size_t check_name_at(const char *text, size_t len, const char *p)
{
  size_t line, col, off;

  if (p == NULL || sscanf(p, "line %zu, column %zu", &line, &col) != 2)
    abort();
  off = offset_of(text, len, line, col);
  if (off >= len || text[off] != '"')
    abort();
  return off;
}

static void check_json(const char *text, size_t len)
{
  static const char dup[] = "duplicate member name \"";
  struct rules_diag d;
  cJSON *root = NULL;
  const char *m, *p;
  size_t second;

  rules_diag_init(&d);
  if (rules_json_parse(text, len, &root, &d) == 0) {
    if (has_repeat(root))
      abort();
    rules_json_free(root);
  } else if (d.count == 1 && strncmp(d.entries[0].message, dup, strlen(dup)) == 0) {
    root = cJSON_ParseWithLength(text, len);
    if (root == NULL || !has_repeat(root))
      abort();
    cJSON_Delete(root);
    /* The name is quoted with '"' and '\\' escaped: skip to its closing quote. */
    m = d.entries[0].message + strlen(dup);
    while (*m != '\0' && *m != '"')
      m += m[0] == '\\' && m[1] != '\0' ? 2 : 1;
    if (strncmp(m, "\" at ", 5) != 0)
      abort();
    second = check_name_at(text, len, m + 5);
    /* The path in between may hold any printable text; the last match is ours. */
    for (p = NULL; (m = strstr(m, "; first given at ")) != NULL; m++)
      p = m + strlen("; first given at ");
    if (check_name_at(text, len, p) >= second)
      abort();
  }
  rules_diag_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *text = (const char *)data, *sep, *tail = NULL;
  struct rules_config *cfg = NULL;
  struct rules_diag d;
  size_t len = size, i, tail_len = 0;
  int ret;

  sep = memmem(text, size, "\n@@\n", 4);
  if (sep != NULL) {
    len = (size_t)(sep - text);
    tail = sep + 4;
    tail_len = size - len - 4;
  }
  check_json(text, len);
  rules_diag_init(&d);
  ret = rules_config_parse(text, len, "proxy_config.", store(), &cfg, &d);
  if (ret == 0) {
    if (cfg == NULL || d.count != 0)
      abort();
    exercise(cfg, tail, tail_len);
    serialize(cfg, memmem(text, size, SECRET_MARK, strlen(SECRET_MARK)) == NULL);
    rules_config_unref(cfg);
  } else {
    if (cfg != NULL || ret != -EINVAL || d.count == 0 || d.count > RULES_MAX_ERRORS + 1)
      abort();
    for (i = 0; i < d.count; i++) {
      /* Messages are printable: user text in them is escaped, secrets never appear. */
      const unsigned char *m = (const unsigned char *)d.entries[i].message;
      const unsigned char *p = (const unsigned char *)d.entries[i].path;

      for (; *m != '\0'; m++)
        if (*m < 0x20 || *m >= 0x7f)
          abort();
      for (; *p != '\0'; p++)
        if (*p < 0x20 || *p >= 0x7f)
          abort();
      if (strstr(d.entries[i].message, SECRET_MARK) != NULL &&
          memmem(text, size, SECRET_MARK, strlen(SECRET_MARK)) == NULL)
        abort();
    }
  }
  rules_diag_free(&d);
  return 0;
}
