/*
 * Budgets of file descriptors for the daemon's own sockets that sandboxes cause but
 * that are not their connections: DNS over TCP clients and credential callback
 * calls. Each is bounded per sandbox by its module; a budget bounds them for all
 * sandboxes together, so that many sandboxes cannot take the quarter of
 * RLIMIT_NOFILE that the connections' share leaves for the control socket
 * (proxy_ctx_init). Plain integers: the loop's thread only.
 */
#ifndef AUTHPROXY_FDBUDGET_H
#define AUTHPROXY_FDBUDGET_H

#include <errno.h>
#include <stdint.h>

/* How often refusals at a descriptor budget or share are logged at most, with their
 * count (proxy_log_due). */
#define PROXY_FD_BUDGET_LOG_MS (5 * 1000)

struct proxy_fd_budget {
  uint64_t used;      /* descriptors held */
  uint64_t max;       /* at most this many; 0: unbounded */
  uint64_t refused;   /* takes refused at max */
  uint64_t logged_ms; /* loop time of the last refusal logged; 0: none yet */
};

/* Takes one descriptor from b (NULL: no budget). 0, or -EMFILE (counted as
 * refused) when b's max are held. */
static inline int proxy_fd_budget_take(struct proxy_fd_budget *b)
{
  if (b == NULL)
    return 0;
  if (b->max != 0 && b->used >= b->max) {
    b->refused++;
    return -EMFILE;
  }
  b->used++;
  return 0;
}

/* Gives back one descriptor taken from b (NULL: nothing). */
static inline void proxy_fd_budget_put(struct proxy_fd_budget *b)
{
  if (b != NULL && b->used > 0)
    b->used--;
}

#endif
