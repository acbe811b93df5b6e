/*
 * Tests of proxy/httphead.c. The protocol cases live in the .txt files of
 * tests/data/http/ (the format is in tests/data/http/README.md): the bytes a sandbox
 * sends, the verdict, and for rewrite cases the injected headers and the exact bytes
 * upstream must see. Every case is also checked for split reads: each strict prefix of an
 * accepted head is NEED_MORE, and a prefix of a refused one is NEED_MORE or the same
 * verdict. The tests below the data runner cover what a data file cannot express.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/httphead.h"
#include "test.h"

#define CASE_MAX_BYTES 16384
#define CASE_MAX_CHECKS 24
#define CASE_MAX_INJECT 8

struct http_case {
  char file[256];
  char name[128];
  int line;
  char head[CASE_MAX_BYTES]; /* "> " lines */
  size_t head_len;
  char extra[CASE_MAX_BYTES]; /* "+ " lines: body or pipelined bytes after the head */
  size_t extra_len;
  size_t max_head;
  int has_expect;
  enum proxy_http_status status;
  char reason[64];
  size_t nchecks;
  char check_key[CASE_MAX_CHECKS][32];
  char check_val[CASE_MAX_CHECKS][256];
  size_t ninject;
  char inject_name[CASE_MAX_INJECT][64];
  char inject_value[CASE_MAX_INJECT][256];
  size_t inject_len[CASE_MAX_INJECT];
  int has_upstream;
  char upstream[CASE_MAX_BYTES]; /* "< " lines */
  size_t upstream_len;
};

#define CASE_FAIL(c, ...)                                                         \
  do {                                                                            \
    fprintf(stderr, "%s: case \"%s\" (line %d): ", (c)->file, (c)->name,          \
            (c)->line);                                                           \
    TEST_FAIL_(__VA_ARGS__);                                                      \
  } while (0)

static const char *status_name(enum proxy_http_status st)
{
  switch (st) {
  case PROXY_HTTP_OK:
    return "OK";
  case PROXY_HTTP_NEED_MORE:
    return "NEED_MORE";
  case PROXY_HTTP_BAD:
    return "BAD";
  case PROXY_HTTP_TOO_LARGE:
    return "TOO_LARGE";
  case PROXY_HTTP_NOT_IMPL:
    return "NOT_IMPL";
  }
  return "?";
}

static int parse_status(const char *s, enum proxy_http_status *st)
{
  static const enum proxy_http_status all[] = {
    PROXY_HTTP_OK, PROXY_HTTP_NEED_MORE, PROXY_HTTP_BAD, PROXY_HTTP_TOO_LARGE,
    PROXY_HTTP_NOT_IMPL,
  };
  size_t i;

  for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
    if (strcmp(s, status_name(all[i])) == 0) {
      *st = all[i];
      return 0;
    }
  }
  return -EINVAL;
}

static int hexval(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Appends the unescaped bytes of s (\r \n \t \0 \s \\ \xHH) to out[*len..cap). */
static int unescape(const char *s, char *out, size_t *len, size_t cap)
{
  while (*s != '\0') {
    char c = *s++;

    if (c == '\\') {
      char e = *s++;

      switch (e) {
      case 'r':
        c = '\r';
        break;
      case 'n':
        c = '\n';
        break;
      case 't':
        c = '\t';
        break;
      case '0':
        c = '\0';
        break;
      case 's':
        c = ' ';
        break;
      case '\\':
        c = '\\';
        break;
      case 'x': {
        int hi = hexval(s[0]), lo = hi < 0 ? -1 : hexval(s[1]);

        if (lo < 0)
          return -EINVAL;
        c = (char)(hi * 16 + lo);
        s += 2;
        break;
      }
      default:
        return -EINVAL;
      }
    }
    if (*len >= cap)
      return -ENOSPC;
    out[(*len)++] = c;
  }
  return 0;
}

static void copy_str(char *dst, size_t size, const char *src, struct http_case *c)
{
  if (strlen(src) >= size)
    CASE_FAIL(c, "\"%s\" is too long for this test's buffers", src);
  strcpy(dst, src);
}

/* Applies one line of a case file to c. */
static void parse_directive(struct http_case *c, char *line)
{
  char *arg = strchr(line, ' ');
  int ret = 0;

  if (arg != NULL)
    *arg++ = '\0';
  else
    arg = line + strlen(line);
  if (strcmp(line, ">") == 0) {
    ret = unescape(arg, c->head, &c->head_len, sizeof(c->head));
  } else if (strcmp(line, "+") == 0) {
    ret = unescape(arg, c->extra, &c->extra_len, sizeof(c->extra));
  } else if (strcmp(line, "<") == 0) {
    c->has_upstream = 1;
    ret = unescape(arg, c->upstream, &c->upstream_len, sizeof(c->upstream));
  } else if (strcmp(line, "max") == 0) {
    c->max_head = strtoul(arg, NULL, 10);
  } else if (strcmp(line, "expect") == 0) {
    char *reason = strchr(arg, ' ');

    if (reason != NULL) {
      *reason++ = '\0';
      copy_str(c->reason, sizeof(c->reason), reason, c);
    }
    if (parse_status(arg, &c->status) != 0)
      CASE_FAIL(c, "unknown status \"%s\"", arg);
    c->has_expect = 1;
  } else if (strcmp(line, "check") == 0) {
    char *val = strchr(arg, ' ');
    size_t n = 0;

    if (c->nchecks == CASE_MAX_CHECKS)
      CASE_FAIL(c, "too many check lines");
    if (val != NULL)
      *val++ = '\0';
    copy_str(c->check_key[c->nchecks], sizeof(c->check_key[0]), arg, c);
    /* A missing value is the empty string: "check field:x-empty". */
    ret = unescape(val != NULL ? val : "", c->check_val[c->nchecks],
                   &n, sizeof(c->check_val[0]) - 1);
    c->check_val[c->nchecks][n] = '\0';
    c->nchecks++;
  } else if (strcmp(line, "inject") == 0) {
    char *colon = strchr(arg, ':');
    size_t n = c->ninject;

    if (colon == NULL || n == CASE_MAX_INJECT)
      CASE_FAIL(c, "malformed or too many inject lines");
    *colon++ = '\0';
    if (*colon == ' ')
      colon++;
    copy_str(c->inject_name[n], sizeof(c->inject_name[0]), arg, c);
    ret = unescape(colon, c->inject_value[n], &c->inject_len[n],
                   sizeof(c->inject_value[0]));
    c->ninject++;
  } else {
    CASE_FAIL(c, "unknown directive \"%s\"", line);
  }
  if (ret != 0)
    CASE_FAIL(c, "bad escape or too many bytes in \"%s\"", arg);
}

static void field_value(const struct http_case *c, const struct proxy_http_request *req,
                        const char *name, char *out, size_t size)
{
  int i = proxy_http_find(req, name);

  if (i < 0) {
    snprintf(out, size, "-");
    return;
  }
  if (req->fields[i].value_len >= size)
    CASE_FAIL(c, "field %s too long to check", name);
  memcpy(out, req->fields[i].value, req->fields[i].value_len);
  out[req->fields[i].value_len] = '\0';
}

/* The struct member a "check" line names, printed as the data files spell it. */
static void actual_value(const struct http_case *c, const struct proxy_http_request *req,
                         const char *key, char *out, size_t size)
{
  static const char *const forms[] = { "origin", "absolute", "authority", "asterisk" };

  if (strcmp(key, "method") == 0)
    snprintf(out, size, "%.*s", (int)req->method_len, req->method);
  else if (strcmp(key, "target") == 0)
    snprintf(out, size, "%.*s", (int)req->target_len, req->target);
  else if (strcmp(key, "form") == 0)
    snprintf(out, size, "%s", forms[req->form]);
  else if (strcmp(key, "path") == 0)
    snprintf(out, size, "%.*s", (int)req->path_len, req->path);
  else if (strcmp(key, "authority") == 0 && req->authority == NULL)
    snprintf(out, size, "-");
  else if (strcmp(key, "authority") == 0)
    snprintf(out, size, "%.*s", (int)req->authority_len, req->authority);
  else if (strcmp(key, "version") == 0)
    snprintf(out, size, "%d", req->version_minor);
  else if (strcmp(key, "keep_alive") == 0)
    snprintf(out, size, "%d", req->keep_alive);
  else if (strcmp(key, "upgrade") == 0)
    snprintf(out, size, "%d", req->upgrade);
  else if (strcmp(key, "chunked") == 0)
    snprintf(out, size, "%d", req->chunked);
  else if (strcmp(key, "content_length") == 0)
    snprintf(out, size, "%lld", (long long)req->content_length);
  else if (strcmp(key, "expect_continue") == 0)
    snprintf(out, size, "%d", req->expect_continue);
  else if (strcmp(key, "nfields") == 0)
    snprintf(out, size, "%zu", req->nfields);
  else if (strcmp(key, "host") == 0)
    field_value(c, req, "host", out, size);
  else if (strncmp(key, "field:", 6) == 0)
    field_value(c, req, key + 6, out, size);
  else
    CASE_FAIL(c, "unknown check key \"%s\"", key);
}

static void run_rewrite(const struct http_case *c, const struct proxy_http_request *req)
{
  struct rules_request_decision d;
  char *out;
  size_t bound, i;
  int n;

  memset(&d, 0, sizeof(d));
  for (i = 0; i < c->ninject; i++) {
    d.headers[i].name = c->inject_name[i];
    d.headers[i].value = c->inject_value[i];
    d.headers[i].value_len = c->inject_len[i];
    d.headers[i].rule = "test";
  }
  d.nheaders = c->ninject;
  bound = proxy_http_rewrite_bound(req, &d);
  out = malloc(bound);
  ASSERT_NOT_NULL(out);
  n = proxy_http_rewrite(req, &d, out, bound);
  if (n < 0)
    CASE_FAIL(c, "rewrite failed: %d", n);
  if ((size_t)n > bound)
    CASE_FAIL(c, "rewrite wrote %d bytes, bound was %zu", n, bound);
  if ((size_t)n != c->upstream_len || memcmp(out, c->upstream, (size_t)n) != 0) {
    fprintf(stderr, "%s: case \"%s\": upstream bytes differ\n", c->file, c->name);
    fprintf(stderr, "expected:\n%.*s\nactual:\n%.*s\n", (int)c->upstream_len, c->upstream,
            n, out);
    test_hexdump_("expected", c->upstream, c->upstream_len);
    test_hexdump_("actual", out, (size_t)n);
    abort();
  }
  if (proxy_http_rewrite(req, &d, out, (size_t)n - 1) != -ENOSPC)
    CASE_FAIL(c, "rewrite into %d bytes did not fail with -ENOSPC", n - 1);
  if (proxy_http_rewrite(req, &d, NULL, 0) != -ENOSPC)
    CASE_FAIL(c, "rewrite into 0 bytes did not fail with -ENOSPC");
  free(out);
}

static void run_case(struct http_case *c)
{
  struct proxy_http_request *req = malloc(sizeof(*req));
  struct proxy_http_request *part = malloc(sizeof(*part));
  char *all = malloc(c->head_len + c->extra_len + 1);
  enum proxy_http_status st, st2;
  const char *why = NULL, *why2 = NULL;
  char actual[512];
  size_t len = c->head_len + c->extra_len, i;

  ASSERT(req != NULL && part != NULL && all != NULL);
  if (!c->has_expect)
    CASE_FAIL(c, "no expect line");
  memcpy(all, c->head, c->head_len);
  memcpy(all + c->head_len, c->extra, c->extra_len);

  st = proxy_http_parse_request(all, len, c->max_head, req, &why);
  if (st != c->status || (why == NULL) != (c->reason[0] == '\0') ||
      (why != NULL && strcmp(why, c->reason) != 0))
    CASE_FAIL(c, "got %s %s, expected %s %s", status_name(st), why ? why : "",
              status_name(c->status), c->reason);

  if (st == PROXY_HTTP_OK) {
    if (req->head != all || req->head_len != c->head_len)
      CASE_FAIL(c, "head_len %zu, expected %zu (the \"> \" lines)", req->head_len,
                c->head_len);
    for (i = 0; i < c->nchecks; i++) {
      actual_value(c, req, c->check_key[i], actual, sizeof(actual));
      if (strcmp(actual, c->check_val[i]) != 0)
        CASE_FAIL(c, "%s is \"%s\", expected \"%s\"", c->check_key[i], actual,
                  c->check_val[i]);
    }
  } else if (c->nchecks > 0 || c->has_upstream) {
    CASE_FAIL(c, "check and upstream lines need an accepted head");
  }

  /* Split reads: no prefix may be accepted or get another verdict. */
  for (i = 0; i < (st == PROXY_HTTP_OK ? c->head_len : len); i++) {
    st2 = proxy_http_parse_request(all, i, c->max_head, part, &why2);
    if (st == PROXY_HTTP_OK && st2 != PROXY_HTTP_NEED_MORE)
      CASE_FAIL(c, "prefix of %zu bytes: %s %s, expected NEED_MORE", i, status_name(st2),
                why2 ? why2 : "");
    if (st != PROXY_HTTP_OK && st2 != PROXY_HTTP_NEED_MORE &&
        (st2 != st || strcmp(why2, why) != 0))
      CASE_FAIL(c, "prefix of %zu bytes: %s %s, expected NEED_MORE or %s %s", i,
                status_name(st2), why2, status_name(st), why);
  }

  if (c->has_upstream)
    run_rewrite(c, req);
  else if (c->ninject > 0)
    CASE_FAIL(c, "inject lines without upstream lines");
  free(all);
  free(part);
  free(req);
}

static char *read_file(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long n;

  if (f == NULL)
    TEST_FAIL_("cannot open %s: %s", path, strerror(errno));
  if (fseek(f, 0, SEEK_END) != 0)
    TEST_FAIL_("cannot seek %s", path);
  n = ftell(f);
  if (n < 0 || fseek(f, 0, SEEK_SET) != 0)
    TEST_FAIL_("cannot size %s", path);
  buf = malloc((size_t)n + 1);
  ASSERT_NOT_NULL(buf);
  if (fread(buf, 1, (size_t)n, f) != (size_t)n)
    TEST_FAIL_("cannot read %s", path);
  buf[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static void new_case(struct http_case *c, const char *file, const char *name, int line)
{
  memset(c, 0, sizeof(*c));
  snprintf(c->file, sizeof(c->file), "%s", file);
  copy_str(c->name, sizeof(c->name), name, c);
  c->line = line;
  c->max_head = 8192;
}

/* Runs every case of one file; returns how many there were. */
static int run_file(const char *path, const char *file)
{
  struct http_case *c = malloc(sizeof(*c));
  size_t len;
  char *text = read_file(path, &len), *p = text, *nl;
  int lineno = 0, ncases = 0, open = 0;

  ASSERT_NOT_NULL(c);
  while (*p != '\0') {
    nl = strchr(p, '\n');
    if (nl != NULL)
      *nl = '\0';
    lineno++;
    if (strncmp(p, "=== ", 4) == 0) {
      if (open)
        run_case(c);
      new_case(c, file, p + 4, lineno);
      open = 1;
      ncases++;
    } else if (p[0] != '\0' && p[0] != '#') {
      if (!open)
        TEST_FAIL_("%s:%d: directive before the first \"=== name\" line", file, lineno);
      parse_directive(c, p);
    }
    if (nl == NULL)
      break;
    p = nl + 1;
  }
  if (open)
    run_case(c);
  free(text);
  free(c);
  return ncases;
}

static int is_case_file(const struct dirent *e)
{
  size_t n = strlen(e->d_name);

  return n > 4 && strcmp(e->d_name + n - 4, ".txt") == 0;
}

TEST(data_cases)
{
  struct dirent **names;
  char path[1024];
  int i, n, total = 0;

  n = scandir(test_data_path("http"), &names, is_case_file, alphasort);
  if (n < 0)
    TEST_FAIL_("cannot list %s: %s", test_data_path("http"), strerror(errno));
  ASSERT_GT(n, 0);
  for (i = 0; i < n; i++) {
    snprintf(path, sizeof(path), "%s/%s", test_data_path("http"), names[i]->d_name);
    total += run_file(path, names[i]->d_name);
    free(names[i]);
  }
  free(names);
  /* Guards against a data file silently losing its cases. */
  ASSERT_GE(total, 150);
}

/* Builds "GET / HTTP/1.1\r\n" + n fields + "\r\n" into buf; returns the length. */
static size_t head_with_fields(char *buf, size_t size, int n)
{
  size_t len = (size_t)snprintf(buf, size, "GET / HTTP/1.1\r\nHost: a\r\n");
  int i;

  for (i = 1; i < n; i++)
    len += (size_t)snprintf(buf + len, size - len, "X-F%d: %d\r\n", i, i);
  len += (size_t)snprintf(buf + len, size - len, "\r\n");
  ASSERT_LT(len, size);
  return len;
}

TEST(field_limit)
{
  static struct proxy_http_request req;
  static char buf[8192];
  const char *why;
  size_t len;

  len = head_with_fields(buf, sizeof(buf), PROXY_HTTP_MAX_FIELDS);
  ASSERT_EQ(proxy_http_parse_request(buf, len, sizeof(buf), &req, &why), PROXY_HTTP_OK);
  ASSERT_EQ(req.nfields, PROXY_HTTP_MAX_FIELDS);
  ASSERT_EQ(req.host_field, 0);
  ASSERT_EQ(proxy_http_find(&req, "x-f127"), 127);

  len = head_with_fields(buf, sizeof(buf), PROXY_HTTP_MAX_FIELDS + 1);
  ASSERT_EQ(proxy_http_parse_request(buf, len, sizeof(buf), &req, &why),
            PROXY_HTTP_TOO_LARGE);
  ASSERT_STREQ(why, "too_many_fields");
  /* The limit applies as soon as the 129th line is complete, not at the end. */
  ASSERT_EQ(proxy_http_parse_request(buf, len - 2, sizeof(buf), &req, &why),
            PROXY_HTTP_TOO_LARGE);
}

TEST(head_size_limit)
{
  static struct proxy_http_request req;
  static char buf[8192];
  const char *why = "unset";
  size_t len = head_with_fields(buf, sizeof(buf), 10);

  /* Exactly max_head bytes is accepted; one byte less than the head is 431. */
  ASSERT_EQ(proxy_http_parse_request(buf, len, len, &req, &why), PROXY_HTTP_OK);
  ASSERT_NULL(why);
  ASSERT_EQ(proxy_http_parse_request(buf, len, len - 1, &req, &why), PROXY_HTTP_TOO_LARGE);
  ASSERT_STREQ(why, "head_too_large");
  /* Fewer bytes than max_head and no end yet: wait. */
  ASSERT_EQ(proxy_http_parse_request(buf, len - 1, len, &req, &why), PROXY_HTTP_NEED_MORE);
  ASSERT_NULL(why);
  /* A stream of header bytes that never ends is refused once max_head is buffered. */
  memset(buf, 'a', sizeof(buf));
  memcpy(buf, "GET / HTTP/1.1\r\nX: ", 19);
  ASSERT_EQ(proxy_http_parse_request(buf, sizeof(buf), 4096, &req, &why),
            PROXY_HTTP_TOO_LARGE);
  ASSERT_EQ(proxy_http_parse_request(buf, 4095, 4096, &req, &why), PROXY_HTTP_NEED_MORE);
  ASSERT_EQ(proxy_http_parse_request(buf, 0, 4096, &req, &why), PROXY_HTTP_NEED_MORE);
  /* A NULL reason pointer is allowed. */
  ASSERT_EQ(proxy_http_parse_request(buf, sizeof(buf), 4096, &req, NULL),
            PROXY_HTTP_TOO_LARGE);
}

TEST(find_is_case_insensitive)
{
  static const char head[] = "GET / HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nx-one: 2\r\n\r\n";
  static struct proxy_http_request req;

  ASSERT_EQ(proxy_http_parse_request(head, sizeof(head) - 1, 1024, &req, NULL),
            PROXY_HTTP_OK);
  ASSERT_EQ(proxy_http_find(&req, "X-ONE"), 1);
  ASSERT_EQ(proxy_http_find(&req, "host"), 0);
  ASSERT_EQ(proxy_http_find(&req, "X-On"), -1);
  ASSERT_EQ(proxy_http_find(&req, "X-One-"), -1);
}

static void parse_ok(const char *head, struct proxy_http_request *req)
{
  const char *why = NULL;

  if (proxy_http_parse_request(head, strlen(head), 8192, req, &why) != PROXY_HTTP_OK)
    TEST_FAIL_("refused (%s): %s", why, head);
}

TEST(rewrite_refuses_unsafe_decisions)
{
  static const char want[] = "GET / HTTP/1.1\r\nHost: a\r\nX-Key: ok\r\nX-Other: b\r\n\r\n";
  static struct proxy_http_request req;
  struct rules_request_decision d;
  char out[1024];

  parse_ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &req);
  memset(&d, 0, sizeof(d));
  d.nheaders = 1;
  d.headers[0].name = "X-Key";
  d.headers[0].value = "a\r\nX-Evil: 1";
  d.headers[0].value_len = strlen(d.headers[0].value);
  ASSERT_EQ(proxy_http_rewrite(&req, &d, out, sizeof(out)), -EINVAL);

  d.headers[0].value = "ok";
  d.headers[0].value_len = 2;
  d.headers[0].name = "Content-Length";
  ASSERT_EQ(proxy_http_rewrite(&req, &d, out, sizeof(out)), -EINVAL);
  d.headers[0].name = "X Key";
  ASSERT_EQ(proxy_http_rewrite(&req, &d, out, sizeof(out)), -EINVAL);
  d.headers[0].name = NULL;
  ASSERT_EQ(proxy_http_rewrite(&req, &d, out, sizeof(out)), -EINVAL);

  /* Two copies of one name (any case, '_' for '-') would reach upstream twice. */
  d.nheaders = 2;
  d.headers[0].name = "X-Key";
  d.headers[1].name = "x_key";
  d.headers[1].value = "b";
  d.headers[1].value_len = 1;
  ASSERT_EQ(proxy_http_rewrite(&req, &d, out, sizeof(out)), -EINVAL);

  d.nheaders = RULES_MAX_INJECT + 1;
  ASSERT_EQ(proxy_http_rewrite(&req, &d, out, sizeof(out)), -EINVAL);

  d.nheaders = 2;
  d.headers[1].name = "X-Other";
  ASSERT_EQ(proxy_http_rewrite(&req, &d, out, sizeof(out)), (int)sizeof(want) - 1);
  ASSERT_MEMEQ(out, want, sizeof(want) - 1);
}

/* The most headers a decision may inject, long values and an empty one among them:
 * written whole into exactly the bound the caller sizes its buffer by. */
TEST(rewrite_bound_covers_injected_headers)
{
  static struct proxy_http_request req;
  static struct rules_request_decision d;
  static char names[RULES_MAX_INJECT][16], value[2048], out[RULES_MAX_INJECT * 2200];
  size_t bound, i;
  int n;

  parse_ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &req);
  memset(value, 'v', sizeof(value));
  for (i = 0; i < RULES_MAX_INJECT; i++) {
    snprintf(names[i], sizeof(names[i]), "X-Key-%zu", i);
    d.headers[i].name = names[i];
    d.headers[i].value = i == 0 ? NULL : value; /* an empty value may come as NULL */
    d.headers[i].value_len = i == 0 ? 0 : sizeof(value);
  }
  d.nheaders = RULES_MAX_INJECT;
  bound = proxy_http_rewrite_bound(&req, &d);
  ASSERT_LE(bound, sizeof(out));
  n = proxy_http_rewrite(&req, &d, out, bound);
  ASSERT_GT(n, (int)((RULES_MAX_INJECT - 1) * sizeof(value)));
  ASSERT_LE((size_t)n, bound);
  ASSERT(memmem(out, (size_t)n, "\r\nX-Key-0: \r\n", strlen("\r\nX-Key-0: \r\n")) != NULL);
  ASSERT(memmem(out, (size_t)n, "\r\nX-Key-63: vvvv", strlen("\r\nX-Key-63: vvvv")) != NULL);
}

TEST(rewrite_without_decision)
{
  static const char head[] = "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: mine\r\n\r\n";
  static struct proxy_http_request req;
  char out[256];
  size_t bound;
  int n;

  parse_ok(head, &req);
  bound = proxy_http_rewrite_bound(&req, NULL);
  ASSERT_LE(sizeof(head) - 1, bound);
  ASSERT_LE(bound, sizeof(out));
  n = proxy_http_rewrite(&req, NULL, out, bound);
  ASSERT_EQ(n, (int)sizeof(head) - 1);
  ASSERT_MEMEQ(out, head, sizeof(head) - 1);
}

TEST(rewrite_bound_covers_connection_growth)
{
  /* Every Connection option without spaces: the canonical field is longer. */
  static const char head[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection:close,upgrade\r\n"
                             "Connection:upgrade\r\nUpgrade:websocket\r\n\r\n";
  static const char want[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, upgrade\r\n"
                             "Upgrade:websocket\r\n\r\n";
  static struct proxy_http_request req;
  char out[256];
  int n;

  parse_ok(head, &req);
  ASSERT_EQ(req.upgrade, 1);
  ASSERT_EQ(req.keep_alive, 0);
  ASSERT_LE(proxy_http_rewrite_bound(&req, NULL), sizeof(out));
  n = proxy_http_rewrite(&req, NULL, out, proxy_http_rewrite_bound(&req, NULL));
  ASSERT_EQ(n, (int)sizeof(want) - 1);
  ASSERT_MEMEQ(out, want, sizeof(want) - 1);
}

TEST(rewrite_close_is_hop_by_hop)
{
  /* HTTP/1.1: the sandbox's close ends its own connection; the upstream connection
   * stays open for the pool, and what close named is still dropped. */
  static const char h11[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Hop\r\n"
                            "X-Hop: 1\r\nAccept: */*\r\n\r\n";
  static const char w11[] = "GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
  /* HTTP/1.0 closes unless it asks otherwise: close is kept. */
  static const char h10[] = "GET / HTTP/1.0\r\nHost: a\r\nConnection: close\r\n\r\n";
  static struct proxy_http_request req;
  char out[256];
  int n;

  parse_ok(h11, &req);
  ASSERT_EQ(req.keep_alive, 0);
  ASSERT_EQ(proxy_http_upstream_keep_alive(&req), 1);
  n = proxy_http_rewrite(&req, NULL, out, proxy_http_rewrite_bound(&req, NULL));
  ASSERT_EQ(n, (int)sizeof(w11) - 1);
  ASSERT_MEMEQ(out, w11, sizeof(w11) - 1);

  parse_ok(h10, &req);
  ASSERT_EQ(proxy_http_upstream_keep_alive(&req), 0);
  n = proxy_http_rewrite(&req, NULL, out, proxy_http_rewrite_bound(&req, NULL));
  ASSERT_EQ(n, (int)sizeof(h10) - 1);
  ASSERT_MEMEQ(out, h10, sizeof(h10) - 1);
}

TEST(content_length_limit)
{
  static const char over[] =
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9007199254740993\r\n\r\n";
  static struct proxy_http_request req;
  const char *why;

  parse_ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9007199254740992\r\n\r\n", &req);
  ASSERT_EQ(req.content_length, INT64_C(9007199254740992));
  ASSERT_EQ(proxy_http_parse_request(over, sizeof(over) - 1, 8192, &req, &why),
            PROXY_HTTP_BAD);
  ASSERT_STREQ(why, "invalid_content_length");
  /* Leading zeros do not count towards the limit; the value does. */
  parse_ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
           "000000000000000000000000000000000000000000000000000000000000012\r\n\r\n",
           &req);
  ASSERT_EQ(req.content_length, 12);
}
