/*
 * A config back to JSON: REDACTED for display and the control API (opaque values
 * absent, templates unresolved), PERSIST for the state dir (as pushed). A small
 * writer of its own rather than cJSON, because PERSIST output holds opaque values
 * and cJSON's buffers would be freed unwiped; this writer wipes every buffer it
 * outgrows. Resolved secret values are never read here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules_internal.h"

#define JW_MAX_DEPTH 8

struct jw {
  char *buf;
  size_t len, cap;
  int pretty, depth, oom, after_key;
  unsigned char items[JW_MAX_DEPTH];  /* the container at each depth has items */
  unsigned char inline_[JW_MAX_DEPTH]; /* a list of strings kept on one line */
};

static void put(struct jw *w, const char *s, size_t n)
{
  if (w->oom)
    return;
  if (w->len + n + 1 > w->cap) {
    size_t cap = w->cap ? w->cap : 512;
    char *nb;

    while (cap < w->len + n + 1)
      cap *= 2;
    nb = malloc(cap);
    if (nb == NULL) {
      w->oom = 1;
      return;
    }
    if (w->buf != NULL) {
      memcpy(nb, w->buf, w->len);
      explicit_bzero(w->buf, w->cap);
      free(w->buf);
    }
    w->buf = nb;
    w->cap = cap;
  }
  memcpy(w->buf + w->len, s, n);
  w->len += n;
  w->buf[w->len] = '\0';
}

static void newline(struct jw *w)
{
  static const char spaces[] = "                ";
  int i;

  if (!w->pretty)
    return;
  put(w, "\n", 1);
  for (i = 0; i < w->depth; i++)
    put(w, spaces, 2);
}

/* Separator before a key or an array element. */
static void sep(struct jw *w)
{
  if (w->after_key) {
    w->after_key = 0;
    return;
  }
  if (w->items[w->depth])
    put(w, ",", 1);
  if (w->inline_[w->depth]) {
    if (w->items[w->depth] && w->pretty)
      put(w, " ", 1);
    w->items[w->depth] = 1;
    return;
  }
  w->items[w->depth] = 1;
  newline(w);
}

static void open_(struct jw *w, char ch)
{
  sep(w);
  put(w, &ch, 1);
  if (w->depth + 1 < JW_MAX_DEPTH)
    w->depth++;
  w->items[w->depth] = 0;
  w->inline_[w->depth] = 0;
}

/* An array of strings, written on one line: ["a", "b"]. */
static void open_inline(struct jw *w)
{
  open_(w, '[');
  w->inline_[w->depth] = 1;
}

static void close_(struct jw *w, char ch)
{
  int had = w->items[w->depth] && !w->inline_[w->depth];

  w->depth--;
  if (had)
    newline(w);
  put(w, &ch, 1);
}

static void string(struct jw *w, const char *s)
{
  static const char hex[] = "0123456789abcdef";
  size_t i, run = 0;

  put(w, "\"", 1);
  for (i = 0; s[i] != '\0'; i++) {
    unsigned char ch = (unsigned char)s[i];
    char esc[6] = { '\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15] };

    if (ch != '"' && ch != '\\' && ch >= 0x20)
      continue;
    put(w, s + run, i - run);
    run = i + 1;
    if (ch == '"' || ch == '\\') {
      esc[1] = (char)ch;
      put(w, esc, 2);
    } else {
      put(w, esc, 6);
    }
  }
  put(w, s + run, i - run);
  put(w, "\"", 1);
}

static void key(struct jw *w, const char *k)
{
  sep(w);
  string(w, k);
  put(w, w->pretty ? ": " : ":", w->pretty ? 2 : 1);
  w->after_key = 1;
}

static void str(struct jw *w, const char *s)
{
  sep(w);
  string(w, s);
}

static void num(struct jw *w, unsigned long v)
{
  char b[24];
  int n = snprintf(b, sizeof(b), "%lu", v);

  sep(w);
  put(w, b, (size_t)n);
}

static void boolean(struct jw *w, int v)
{
  sep(w);
  put(w, v ? "true" : "false", v ? 4 : 5);
}

static void hostpats(struct jw *w, const char *k, const struct rules_hostpat *v, size_t n)
{
  size_t i;

  key(w, k);
  open_inline(w);
  for (i = 0; i < n; i++)
    str(w, v[i].text);
  close_(w, ']');
}

static void pathpats(struct jw *w, const char *k, const struct rules_pathpat *v, size_t n)
{
  size_t i;

  key(w, k);
  open_inline(w);
  for (i = 0; i < n; i++)
    str(w, v[i].text);
  close_(w, ']');
}

static void headers(struct jw *w, const struct rules_header *h,
                    const struct rules_hdrmeta *m, size_t n, enum rules_ser_mode mode)
{
  static const char *const types[] = { "workspace_secret", "plaintext", "opaque" };
  size_t i;

  key(w, "headers");
  open_(w, '[');
  for (i = 0; i < n; i++) {
    open_(w, '{');
    key(w, "name");
    str(w, h[i].name);
    key(w, "type");
    str(w, types[m[i].type]);
    /* m->pushed is the template for workspace_secret: never the resolved value. */
    if (m[i].type != RULES_HDR_OPAQUE || mode == RULES_SER_PERSIST) {
      key(w, "value");
      str(w, m[i].pushed);
    }
    close_(w, '}');
  }
  close_(w, ']');
}

static void egress_list(struct jw *w, const char *k, const struct rules_egress *v, size_t n)
{
  size_t i, j;

  key(w, k);
  open_(w, '[');
  for (i = 0; i < n; i++) {
    const struct rules_egress *e = &v[i];

    if (!e->object) {
      str(w, e->hosts[0].text);
      continue;
    }
    open_(w, '{');
    hostpats(w, "hosts", e->hosts, e->nhosts);
    if (e->npaths != 0)
      pathpats(w, "paths", e->paths, e->npaths);
    if (e->nmethods != 0) {
      key(w, "methods");
      open_inline(w);
      for (j = 0; j < e->nmethods; j++)
        str(w, e->methods[j]);
      close_(w, ']');
    }
    close_(w, '}');
  }
  close_(w, ']');
}

char *rules_config_to_json(const struct rules_config *cfg, enum rules_ser_mode mode,
                           int pretty)
{
  struct jw w;
  size_t i;

  memset(&w, 0, sizeof(w));
  w.pretty = pretty != 0;
  w.after_key = 1; /* the top-level object takes no separator */
  open_(&w, '{');
  if (cfg->have & RULES_HAVE_RULES) {
    key(&w, "rules");
    open_(&w, '[');
    for (i = 0; i < cfg->nrules; i++) {
      const struct rules_rule *r = &cfg->rules[i];

      open_(&w, '{');
      key(&w, "name");
      str(&w, r->name);
      hostpats(&w, "match_hosts", r->hosts, r->nhosts);
      if (r->npaths != 0)
        pathpats(&w, "match_paths", r->paths, r->npaths);
      if (r->nhdrs != 0)
        headers(&w, r->hdrs, r->meta, r->nhdrs, mode);
      if (r->plain_http) {
        key(&w, "allow_plain_http");
        boolean(&w, 1);
      }
      close_(&w, '}');
    }
    close_(&w, ']');
  }
  if (cfg->have & RULES_HAVE_NO_PROXY)
    hostpats(&w, "no_proxy", cfg->no_proxy, cfg->nno_proxy);
  if (cfg->callback != NULL) {
    const struct rules_cb *cb = cfg->callback;

    key(&w, "callback");
    open_(&w, '{');
    key(&w, "url");
    str(&w, cb->pub.url);
    hostpats(&w, "match_hosts", cb->hosts, cb->nhosts);
    key(&w, "ttl_seconds");
    num(&w, cb->pub.ttl_seconds);
    key(&w, "timeout_ms");
    num(&w, cb->pub.timeout_ms);
    if (cb->pub.nheaders != 0)
      headers(&w, cb->hdrs, cb->meta, cb->pub.nheaders, mode);
    if (cb->pub.plain_http) {
      key(&w, "allow_plain_http");
      boolean(&w, 1);
    }
    close_(&w, '}');
  }
  if (cfg->have & RULES_HAVE_EGRESS) {
    key(&w, "egress");
    open_(&w, '{');
    key(&w, "default");
    str(&w, cfg->default_deny ? "deny" : "allow");
    egress_list(&w, "allow", cfg->allow, cfg->nallow);
    egress_list(&w, "deny", cfg->deny, cfg->ndeny);
    close_(&w, '}');
  }
  if (cfg->have & RULES_HAVE_DNS) {
    key(&w, "dns");
    open_(&w, '{');
    if (cfg->have & RULES_HAVE_REMAP) {
      key(&w, "remap");
      open_(&w, '{');
      for (i = 0; i < cfg->nremap; i++) {
        key(&w, cfg->remap[i].name);
        str(&w, cfg->remap[i].target);
      }
      close_(&w, '}');
    }
    close_(&w, '}');
  }
  close_(&w, '}');
  if (w.pretty)
    put(&w, "\n", 1);
  if (w.oom) {
    if (w.buf != NULL) {
      explicit_bzero(w.buf, w.cap);
      free(w.buf);
    }
    return NULL;
  }
  return w.buf;
}

static int same_headers(const struct rules_header *a, const struct rules_header *b, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (a[i].value_len != b[i].value_len || memcmp(a[i].value, b[i].value, a[i].value_len) != 0)
      return 0;
  return 1;
}

int rules_config_same_values(const struct rules_config *a, const struct rules_config *b)
{
  size_t i;

  if (a->nrules != b->nrules || (a->callback == NULL) != (b->callback == NULL))
    return 0;
  for (i = 0; i < a->nrules; i++)
    if (a->rules[i].nhdrs != b->rules[i].nhdrs ||
        !same_headers(a->rules[i].hdrs, b->rules[i].hdrs, a->rules[i].nhdrs))
      return 0;
  if (a->callback != NULL &&
      (a->callback->pub.nheaders != b->callback->pub.nheaders ||
       !same_headers(a->callback->hdrs, b->callback->hdrs, a->callback->pub.nheaders)))
    return 0;
  return 1;
}

void rules_config_summary(const struct rules_config *cfg, char *buf, size_t size)
{
  size_t i, j, nhdrs = 0, nsecret = 0, nopaque = 0;
  char cb[48];

  if (size == 0)
    return;
  for (i = 0; i < cfg->nrules; i++) {
    for (j = 0; j < cfg->rules[i].nhdrs; j++) {
      nhdrs++;
      nsecret += cfg->rules[i].meta[j].type == RULES_HDR_SECRET;
      nopaque += cfg->rules[i].meta[j].type == RULES_HDR_OPAQUE;
    }
  }
  if (cfg->callback == NULL)
    snprintf(cb, sizeof(cb), "no callback");
  else
    snprintf(cb, sizeof(cb), "%s callback for %u host pattern%s",
             cfg->callback->pub.kind == RULES_CB_UNIX    ? "unix"
             : cfg->callback->pub.kind == RULES_CB_HTTPS ? "https"
                                                         : "http",
             cfg->callback->nhosts, cfg->callback->nhosts == 1 ? "" : "s");
  snprintf(buf, size,
           "%u rule%s, %zu header%s (%zu from secrets, %zu opaque), %u no_proxy "
           "entr%s, egress default %s (%u allow, %u deny), %s, %u dns remap%s",
           cfg->nrules, cfg->nrules == 1 ? "" : "s", nhdrs, nhdrs == 1 ? "" : "s",
           nsecret, nopaque, cfg->nno_proxy, cfg->nno_proxy == 1 ? "y" : "ies",
           cfg->default_deny ? "deny" : "allow", cfg->nallow, cfg->ndeny, cb, cfg->nremap,
           cfg->nremap == 1 ? "" : "s");
}
