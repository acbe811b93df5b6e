/*
 * The credential callbacks of every sandbox a context serves. A callback answers
 * whoever reaches it with the credentials of whichever sandbox its request names, so
 * the proxy dials none of them for any sandbox: not its own sandbox's
 * (rules_check_resolved, and conn.c by name), nor another's, which a sandbox with no
 * callback, or one allowed to reach the host another's callback is on, could
 * otherwise ask for that sandbox's credentials.
 *
 * The list holds each distinct endpoint once, with the number of sandboxes that have
 * it (a fleet's sandboxes share one callback), as copies sorted by port and host:
 * a sandbox that comes, goes or changes its config costs a search, not a walk over
 * the others. Connections that already reach an endpoint new to the list are closed
 * then. When it cannot grow (memory), every dial is refused until it can.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/log.h"
#include "proxy/proxy_internal.h"

struct proxy_callback_ep {
  enum rules_callback_kind kind;
  uint16_t port;
  char host[RULES_MAX_NAME_LEN + 1];
  int has_address; /* rules_callback_has_address: else it is reached by name only */
  size_t users;    /* sandboxes whose config has it */
};

/* The callback of cfg that has an endpoint the proxy could dial, or NULL. */
static const struct rules_callback *dialable(const struct rules_config *cfg)
{
  const struct rules_callback *cb = cfg != NULL ? rules_config_callback(cfg) : NULL;

  if (cb == NULL || cb->kind == RULES_CB_UNIX || cb->host == NULL ||
      strlen(cb->host) > RULES_MAX_NAME_LEN)
    return NULL;
  return cb;
}

static int cmp(uint16_t port, const char *host, const struct proxy_callback_ep *e)
{
  if (port != e->port)
    return port < e->port ? -1 : 1;
  return strcmp(host, e->host);
}

/* The index of cb's endpoint in the list, or where it would go (*found 0). */
static size_t find(const struct proxy_ctx *ctx, const struct rules_callback *cb, int *found)
{
  size_t lo = 0, hi = ctx->ncallbacks, mid;
  int r;

  *found = 0;
  while (lo < hi) {
    mid = lo + (hi - lo) / 2;
    r = cmp(cb->port, cb->host, &ctx->callbacks[mid]);
    if (r == 0) {
      *found = 1;
      return mid;
    }
    if (r < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/* Adds a user of cb's endpoint: 1 if the endpoint is new, 0 if not, -ENOMEM. */
static int add(struct proxy_ctx *ctx, const struct rules_callback *cb)
{
  struct proxy_callback_ep *eps, *e;
  size_t i, cap;
  int found;

  i = find(ctx, cb, &found);
  if (found) {
    ctx->callbacks[i].users++;
    return 0;
  }
  if (ctx->ncallbacks == ctx->callbacks_cap) {
    cap = ctx->callbacks_cap > 0 ? ctx->callbacks_cap * 2 : 4;
    eps = realloc(ctx->callbacks, cap * sizeof(*eps));
    if (eps == NULL)
      return -ENOMEM;
    ctx->callbacks = eps;
    ctx->callbacks_cap = cap;
  }
  memmove(&ctx->callbacks[i + 1], &ctx->callbacks[i],
          (ctx->ncallbacks - i) * sizeof(*ctx->callbacks));
  ctx->ncallbacks++;
  e = &ctx->callbacks[i];
  e->kind = cb->kind;
  e->port = cb->port;
  memcpy(e->host, cb->host, strlen(cb->host) + 1);
  /* Decided once: a fleet's per-tenant callback names cost a dial nothing. */
  e->has_address = rules_callback_has_address(cb);
  e->users = 1;
  return 1;
}

static void drop(struct proxy_ctx *ctx, const struct rules_callback *cb)
{
  size_t i;
  int found;

  i = find(ctx, cb, &found);
  if (!found || --ctx->callbacks[i].users > 0)
    return;
  ctx->ncallbacks--;
  memmove(&ctx->callbacks[i], &ctx->callbacks[i + 1],
          (ctx->ncallbacks - i) * sizeof(*ctx->callbacks));
}

/* Lists every sandbox's callback anew after a failure to add one: 0 or -ENOMEM. */
static int rebuild(struct proxy_ctx *ctx)
{
  const struct rules_callback *cb;
  struct proxy_sandbox *sb;

  ctx->ncallbacks = 0;
  for (sb = ctx->sandboxes; sb != NULL; sb = sb->all_next) {
    if ((cb = dialable(sb->config)) != NULL && add(ctx, cb) < 0) {
      ctx->callbacks_stale = 1;
      return -ENOMEM;
    }
  }
  ctx->callbacks_stale = 0;
  return 0;
}

/* 0 when the list is current, else -1 (it cannot be built: refuse). */
static int current(struct proxy_ctx *ctx)
{
  return ctx->callbacks_stale && rebuild(ctx) != 0 ? -1 : 0;
}

void proxy_callbacks_update(struct proxy_ctx *ctx, const struct rules_config *added,
                            const struct rules_config *removed)
{
  const struct rules_callback *cb = dialable(added);
  struct proxy_sandbox *sb;
  struct proxy_conn *c, *next;
  uint16_t port = 0; /* the new endpoint's; 0: any (the whole list is new) */
  int r = 0;

  if (ctx->callbacks_stale) {
    /* The sandboxes' configs are as they will stay: list them all. */
    r = rebuild(ctx) == 0 ? 1 : -ENOMEM;
  } else {
    if (cb != NULL)
      r = add(ctx, cb);
    if (r > 0)
      port = cb->port;
    if (r < 0)
      ctx->callbacks_stale = 1;
    else if (dialable(removed) != NULL)
      drop(ctx, dialable(removed));
  }
  if (r < 0) {
    log_error("cannot list the sandboxes' credential callbacks: %s; every dial is refused "
              "until they can be", strerror(-r));
    return;
  }
  if (r == 0)
    return;
  /* An endpoint new to the list: what reaches it already is closed. */
  for (sb = ctx->sandboxes; sb != NULL; sb = sb->all_next) {
    for (c = sb->conns; c != NULL; c = next) {
      next = c->next;
      proxy_conn_recheck_callbacks(c, port);
    }
  }
}

void proxy_callbacks_free(struct proxy_ctx *ctx)
{
  free(ctx->callbacks);
  ctx->callbacks = NULL;
  ctx->ncallbacks = ctx->callbacks_cap = 0;
}

int proxy_callbacks_named(struct proxy_ctx *ctx, const char *host, uint16_t port)
{
  struct rules_callback cb;
  int found;

  if (current(ctx) != 0)
    return -1;
  memset(&cb, 0, sizeof(cb));
  cb.host = host;
  cb.port = port;
  (void)find(ctx, &cb, &found);
  return found;
}

int proxy_callbacks_reached(struct proxy_ctx *ctx, const struct sockaddr *sa, uint16_t port,
                            unsigned flags)
{
  struct rules_callback cb;
  size_t i;

  if (current(ctx) != 0)
    return -1;
  memset(&cb, 0, sizeof(cb));
  for (i = 0; i < ctx->ncallbacks; i++) {
    if (ctx->callbacks[i].port != port || !ctx->callbacks[i].has_address)
      continue;
    cb.kind = ctx->callbacks[i].kind;
    cb.port = ctx->callbacks[i].port;
    cb.host = ctx->callbacks[i].host;
    if (rules_callback_reached(&cb, sa, port, flags))
      return 1;
  }
  return 0;
}
