/*
 * For the timers that judge a peer silent (conn.c's dial, callback_client.c's call):
 * libuv runs expired timers before it polls for input, so a loop that ran late past
 * a deadline would take an answer that came in time for silence. They ask the socket
 * first.
 */
#ifndef AUTHPROXY_SOCKREADY_H
#define AUTHPROXY_SOCKREADY_H

#include <poll.h>

#include <uv.h>

/*
 * What the socket of h holds that the loop has not handled yet. For a connect in
 * flight (connecting): 1 if it connected (writable without an error or hangup), -1 if
 * it failed. Otherwise: 1 if bytes, or the end of the connection, wait to be read.
 * 0: nothing (or no socket). SO_ERROR is not read, since that would clear a failure
 * libuv's own connect callback is still to read.
 */
static inline int proxy_socket_answered(const uv_handle_t *h, int connecting)
{
  struct pollfd p;
  uv_os_fd_t fd;

  if (uv_fileno(h, &fd) != 0)
    return 0;
  p.fd = fd;
  p.events = connecting ? POLLOUT : POLLIN;
  p.revents = 0;
  if (poll(&p, 1, 0) != 1)
    return 0;
  return !connecting || p.revents == POLLOUT ? 1 : -1;
}

#endif
