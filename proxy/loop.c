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
