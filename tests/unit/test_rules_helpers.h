/*
 * Helpers shared by the rules tests: parse a config expecting success or a given
 * error, build destinations, and run decisions.
 */
#ifndef AUTHPROXY_TEST_RULES_HELPERS_H
#define AUTHPROXY_TEST_RULES_HELPERS_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <strings.h>

#include "rules/rules.h"
#include "test.h"

static inline void print_diag(const struct rules_diag *d)
{
  size_t i;

  for (i = 0; i < d->count; i++)
    fprintf(stderr, "  diag: %s: %s\n", d->entries[i].path, d->entries[i].message);
}

/* Parses json and fails the test with every error when it is rejected. */
static inline struct rules_config *parse_ok(const char *json,
                                            const struct rules_secrets *secrets)
{
  struct rules_config *cfg = NULL;
  struct rules_diag d;
  int ret;

  rules_diag_init(&d);
  ret = rules_config_parse(json, strlen(json), "", secrets, &cfg, &d);
  if (ret != 0) {
    print_diag(&d);
    TEST_FAIL_("config rejected (%d): %s", ret, json);
  }
  ASSERT_EQ(d.count, 0);
  ASSERT_NOT_NULL(cfg);
  rules_diag_free(&d);
  return cfg;
}

/*
 * Parses json expecting rejection with an error at exactly path whose message
 * contains fragment. Returns the number of errors.
 */
static inline size_t parse_err(const char *json, const struct rules_secrets *secrets,
                               const char *path, const char *fragment)
{
  struct rules_config *cfg = NULL;
  struct rules_diag d;
  size_t i, n;
  int ret, found = 0;

  rules_diag_init(&d);
  ret = rules_config_parse(json, strlen(json), "", secrets, &cfg, &d);
  if (ret != -EINVAL || cfg != NULL) {
    print_diag(&d);
    TEST_FAIL_("expected -EINVAL, got %d for %s", ret, json);
  }
  for (i = 0; i < d.count; i++)
    if (strcmp(d.entries[i].path, path) == 0 && strstr(d.entries[i].message, fragment))
      found = 1;
  if (!found) {
    print_diag(&d);
    TEST_FAIL_("no error at \"%s\" containing \"%s\" for %s", path, fragment, json);
  }
  n = d.count;
  rules_diag_free(&d);
  return n;
}

static inline struct rules_config *load_config(const char *rel,
                                               const struct rules_secrets *secrets)
{
  char buf[65536];
  FILE *f = fopen(test_data_path(rel), "rb");
  size_t n;

  if (f == NULL)
    TEST_FAIL_("cannot open %s", test_data_path(rel));
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  return parse_ok(buf, secrets);
}

static inline struct rules_secrets *test_secrets(void)
{
  struct rules_secrets *s = rules_secrets_new(test_data_path("config/secrets"));

  ASSERT_NOT_NULL(s);
  return s;
}

/* Storage for a destination address. */
struct test_addr {
  struct sockaddr_storage ss;
};

static inline const struct sockaddr *test_sa(struct test_addr *a, const char *ip)
{
  memset(a, 0, sizeof(*a));
  if (strchr(ip, ':') != NULL) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->ss;

    s6->sin6_family = AF_INET6;
    ASSERT_EQ(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&a->ss;

    s4->sin_family = AF_INET;
    ASSERT_EQ(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
  }
  return (const struct sockaddr *)&a->ss;
}

/* The same with a port, as a connected peer's address carries one. */
static inline const struct sockaddr *test_sa_port(struct test_addr *a, const char *ip,
                                                  uint16_t port)
{
  test_sa(a, ip);
  if (a->ss.ss_family == AF_INET6)
    ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
  else
    ((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
  return (const struct sockaddr *)&a->ss;
}

/* Connection decision for name (may be NULL) and address ip (may be NULL). */
static inline struct rules_decision conn_decide(const struct rules_config *cfg,
                                                const char *name, const char *ip,
                                                uint16_t port)
{
  struct rules_decision d;
  struct test_addr a;
  struct rules_dest dest = { name, ip ? test_sa(&a, ip) : NULL, port };

  memset(&d, 0x5a, sizeof(d));
  rules_decide_conn(cfg, &dest, &d);
  return d;
}

static inline enum rules_action conn_action(const struct rules_config *cfg, const char *name,
                                            uint16_t port)
{
  return conn_decide(cfg, name, NULL, port).action;
}

/* Request decision into *out. */
static inline void req_decide(const struct rules_config *cfg, const char *name,
                              uint16_t port, const char *method, const char *path,
                              struct rules_request_decision *out)
{
  struct rules_dest dest = { name, NULL, port };

  memset(out, 0x5a, sizeof(*out));
  rules_decide_request(cfg, &dest, method, path, strlen(path), out);
}

/* The injected value of header name (case-insensitive), or NULL. */
static inline const char *req_header(const struct rules_request_decision *d,
                                     const char *name)
{
  size_t i;

  for (i = 0; i < d->nheaders; i++)
    if (strcasecmp(d->headers[i].name, name) == 0)
      return d->headers[i].value;
  return NULL;
}

#endif
