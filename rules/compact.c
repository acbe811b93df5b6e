/*
 * Compaction: a config is parsed into a growing arena (chunks double, so up to half
 * of the last one is slack), then copied once into a single chunk of exactly the
 * size it needs. A daemon holding thousands of configs pays for what they contain,
 * not for how they grew. Strings shared in the original (a pattern whose text is
 * already normalized, a plaintext value that is also its pushed form) stay shared.
 */
#include <errno.h>
#include <string.h>

#include "rules/rules_internal.h"

struct copier {
  struct rules_arena *a;
  int oom;
};

static void *dup_mem(struct copier *c, const void *p, size_t n)
{
  void *q;

  if (p == NULL || n == 0)
    return NULL;
  q = rules_arena_alloc(c->a, n);
  if (q == NULL) {
    c->oom = 1;
    return NULL;
  }
  memcpy(q, p, n);
  return q;
}

static const char *dup_str(struct copier *c, const char *s)
{
  return s ? dup_mem(c, s, strlen(s) + 1) : NULL;
}

static struct rules_hostpat *dup_hostpats(struct copier *c, const struct rules_hostpat *v,
                                          size_t n)
{
  struct rules_hostpat *d = dup_mem(c, v, n * sizeof(*v));
  size_t i;

  for (i = 0; d != NULL && i < n; i++) {
    d[i].text = dup_str(c, v[i].text);
    d[i].glob = v[i].glob == v[i].text ? d[i].text : dup_str(c, v[i].glob);
  }
  return d;
}

static struct rules_pathpat *dup_pathpats(struct copier *c, const struct rules_pathpat *v,
                                          size_t n)
{
  struct rules_pathpat *d = dup_mem(c, v, n * sizeof(*v));
  size_t i;

  for (i = 0; d != NULL && i < n; i++) {
    d[i].text = dup_str(c, v[i].text);
    d[i].glob = v[i].glob == v[i].text ? d[i].text : dup_str(c, v[i].glob);
  }
  return d;
}

static void dup_headers(struct copier *c, const struct rules_header *h,
                        const struct rules_hdrmeta *m, size_t n, const char *owner,
                        struct rules_header **dh, struct rules_hdrmeta **dm)
{
  size_t i;

  *dh = dup_mem(c, h, n * sizeof(*h));
  *dm = dup_mem(c, m, n * sizeof(*m));
  if (*dh == NULL || *dm == NULL)
    return;
  for (i = 0; i < n; i++) {
    (*dh)[i].name = dup_str(c, h[i].name);
    (*dh)[i].value = dup_mem(c, h[i].value, h[i].value_len + 1);
    (*dh)[i].rule = owner;
    (*dm)[i].pushed = m[i].pushed == h[i].value ? (*dh)[i].value : dup_str(c, m[i].pushed);
  }
}

static struct rules_egress *dup_egress(struct copier *c, const struct rules_egress *v,
                                       size_t n)
{
  struct rules_egress *d = dup_mem(c, v, n * sizeof(*v));
  size_t i, j;

  for (i = 0; d != NULL && i < n; i++) {
    d[i].hosts = dup_hostpats(c, v[i].hosts, v[i].nhosts);
    d[i].paths = dup_pathpats(c, v[i].paths, v[i].npaths);
    d[i].methods = dup_mem(c, v[i].methods, v[i].nmethods * sizeof(*v[i].methods));
    for (j = 0; d[i].methods != NULL && j < v[i].nmethods; j++)
      d[i].methods[j] = dup_str(c, v[i].methods[j]);
  }
  return d;
}

static void dup_callback(struct copier *c, const struct rules_cb *s, struct rules_cb **out)
{
  struct rules_cb *d = dup_mem(c, s, sizeof(*s));

  *out = d;
  if (d == NULL)
    return;
  d->pub.url = dup_str(c, s->pub.url);
  d->pub.host = dup_str(c, s->pub.host);
  d->pub.path = dup_str(c, s->pub.path);
  d->pub.socket = dup_str(c, s->pub.socket);
  d->hosts = dup_hostpats(c, s->hosts, s->nhosts);
  /* The owner "callback" is a string literal, not arena memory. */
  dup_headers(c, s->hdrs, s->meta, s->pub.nheaders, s->hdrs ? s->hdrs[0].rule : NULL,
              &d->hdrs, &d->meta);
  d->pub.headers = d->hdrs;
}

int rules_config_compact(const struct rules_config *src, struct rules_config **out)
{
  struct rules_arena arena = { 0 };
  struct copier c = { &arena, 0 };
  struct rules_config *d;
  size_t i;

  *out = NULL;
  /* Every allocation below was made, with the same alignment, for src: its total is
   * an upper bound for the copy. */
  if (rules_arena_reserve(&arena, rules_arena_used(&src->arena)) != 0)
    return -ENOMEM;
  d = dup_mem(&c, src, sizeof(*src));
  if (d == NULL)
    goto fail;
  d->rules = dup_mem(&c, src->rules, src->nrules * sizeof(*src->rules));
  for (i = 0; d->rules != NULL && i < src->nrules; i++) {
    const struct rules_rule *r = &src->rules[i];
    struct rules_rule *dr = &d->rules[i];

    dr->name = dup_str(&c, r->name);
    dr->hosts = dup_hostpats(&c, r->hosts, r->nhosts);
    dr->paths = dup_pathpats(&c, r->paths, r->npaths);
    dup_headers(&c, r->hdrs, r->meta, r->nhdrs, dr->name, &dr->hdrs, &dr->meta);
  }
  d->no_proxy = dup_hostpats(&c, src->no_proxy, src->nno_proxy);
  if (src->callback != NULL)
    dup_callback(&c, src->callback, &d->callback);
  d->allow = dup_egress(&c, src->allow, src->nallow);
  d->deny = dup_egress(&c, src->deny, src->ndeny);
  d->remap = dup_mem(&c, src->remap, src->nremap * sizeof(*src->remap));
  for (i = 0; d->remap != NULL && i < src->nremap; i++) {
    d->remap[i].name = dup_str(&c, src->remap[i].name);
    d->remap[i].target = dup_str(&c, src->remap[i].target);
    d->remap[i].host = dup_str(&c, src->remap[i].host);
  }
  if (c.oom)
    goto fail;
  d->arena = arena;
  *out = d;
  return 0;
fail:
  rules_arena_free(&arena);
  return -ENOMEM;
}
