/*
 * Bookkeeping for the sockets of one sandbox.
 */
#include <unistd.h>

#include "netns/netns.h"

static int *fd_slots(struct netns_fds *f, size_t *n)
{
  *n = sizeof(*f) / sizeof(int);
  return (int *)f;
}

void netns_fds_init(struct netns_fds *f)
{
  size_t i, n;
  int *v = fd_slots(f, &n);

  for (i = 0; i < n; i++)
    v[i] = -1;
}

void netns_fds_close(struct netns_fds *f)
{
  size_t i, n;
  int *v = fd_slots(f, &n);

  for (i = 0; i < n; i++) {
    if (v[i] >= 0)
      close(v[i]);
    v[i] = -1;
  }
}
