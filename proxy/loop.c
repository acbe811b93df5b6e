/*
 * Running the loop, with busy polling (--busy-poll) when asked.
 *
 * A request through the proxy wakes its thread twice: once for the sandbox's bytes,
 * once for the upstream's answer. When the thread sleeps in epoll_wait, each wakeup
 * is an interrupt sent by the CPU that delivered the bytes and a return from idle on
 * the proxy's; under a hypervisor both are exits, tens of microseconds each, and the
 * sending CPU (running the sandbox's program and often the upstream) pays its share.
 * Polling without blocking for a while after each read or accept keeps the thread
 * running while traffic flows, so that delivering bytes to it is only a queue
 * operation. HAProxy's `busy-polling` does the same without the window: here a loop
 * that has seen no read or accept for busy_poll_us goes back to sleeping.
 */
#include "proxy/proxy.h"

void proxy_loop_stop(struct proxy_ctx *ctx)
{
  ctx->loop_stop = 1;
  uv_stop(ctx->loop);
}

void proxy_loop_run(struct proxy_ctx *ctx, unsigned busy_poll_us)
{
  uv_loop_t *loop = ctx->loop;
  uint64_t window = (uint64_t)busy_poll_us * 1000, seen, until;

  /* A stop asked before the run ends it at once, as uv_stop does uv_run. */
  if (window == 0) {
    uv_run(loop, UV_RUN_DEFAULT);
  } else {
    seen = ctx->io_events;
    until = uv_hrtime() + window;
    while (!ctx->loop_stop && uv_loop_alive(loop)) {
      /* NOWAIT polls with a zero timeout and runs what is due, timers included. */
      uv_run(loop, uv_hrtime() < until ? UV_RUN_NOWAIT : UV_RUN_ONCE);
      if (ctx->io_events != seen) {
        seen = ctx->io_events;
        until = uv_hrtime() + window;
      }
    }
  }
  ctx->loop_stop = 0;
}

/*
 * Lookups left running. libuv cannot cancel a getaddrinfo that a thread of its pool
 * has begun, and until the thread returns the request keeps the loop alive (and
 * libuv's exit handler joins the thread): with a resolver that never answers, up to
 * its whole timeout, 10 s with glibc's defaults. A stop does not wait for an answer
 * nobody will use: the request is orphaned, counted here (every process runs one
 * loop), and proxy_loop_finish stops waiting when only such requests are left.
 */
static unsigned lookups_orphaned;

void proxy_lookup_orphaned(void)
{
  lookups_orphaned++;
}

void proxy_lookup_orphan_done(void)
{
  lookups_orphaned--;
}

unsigned proxy_lookups_orphaned(void)
{
  return lookups_orphaned;
}

static void count_closing(uv_handle_t *h, void *arg)
{
  if (uv_is_closing(h))
    (*(unsigned *)arg)++;
}

int proxy_loop_finish(uv_loop_t *loop)
{
  unsigned closing;

  for (;;) {
    /* What is due, close callbacks included, without waiting. */
    if (uv_run(loop, UV_RUN_NOWAIT) == 0)
      return 0;
    if (lookups_orphaned > 0 && loop->active_handles == 0 &&
        loop->active_reqs.count <= lookups_orphaned) {
      closing = 0;
      uv_walk(loop, count_closing, &closing);
      if (closing == 0)
        return 1;
    }
    uv_run(loop, UV_RUN_ONCE);
  }
}
