/*
 * I/O on one end of a connection: reading into the loop's shared buffer, writing
 * with uv_try_write first and copying only what the kernel did not take, and
 * backpressure: an end is read only while its peer's write queue is under the limit.
 *
 * An idle connection holds no buffer at all: reads land in one buffer shared by the
 * loop and are handed on (or copied into c->pending) before the callback returns.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>

#include "proxy/log.h"
#include "proxy/proxy_internal.h"
#include "proxy/tls.h"

/* The smallest read: a full TLS record, so that TLS always makes progress. */
#define MIN_READ_BYTES (16 * 1024 + 512)
/*
 * What one end may read in one turn of the loop (one poll for I/O) before the other
 * ready connections, of every sandbox, get theirs. libuv reads a readable stream up
 * to 32 times in a row, and a fast upstream fills every read: an intercepted
 * download then held the loop for 100-200 ms at a time (32 reads of 256 KiB, each
 * decrypted and encrypted again), and every other connection of the daemon waited.
 * Past its budget an end's next read is refused (alloc_cb, read_cb: UV_ENOBUFS); its
 * socket stays readable, so the next poll hands it back at once. The budgets are
 * about 1-2 ms of the proxy's work on the benchmark machine: a relayed MiB costs
 * 0.3-1.1 ms there (plain HTTP, tunnelled TLS), an intercepted one 6.2 ms. A plain
 * budget of 1 MiB cost the plain 1 MiB benchmark about 15% more CPU per response
 * (the upstream was woken more often); 2 MiB leaves such responses in one turn. One
 * read may overshoot the budget by its own size; the byte budget never refuses the
 * first read of a turn (the setup budget below may).
 */
#define TURN_BYTES (2 * 1024 * 1024)
#define TURN_BYTES_TLS (256 * 1024)
/*
 * Reads one sandbox's connections being set up may take in one turn of the loop: a
 * sandbox-side end before its first request or relay (CONN_SNIFF: a ClientHello;
 * CONN_TLS_DOWN: the rest of the handshake), an upstream's in its TLS handshake. A
 * handshake step costs the loop 1-3 ms of mbedTLS public-key work (ECDHE, the
 * signature, the upstream's chain), and a sandbox that opens hundreds of intercepted
 * connections at once had all of their steps run in one turn while every other
 * sandbox's ready connections waited behind them: with 600 at once, a request of
 * another sandbox waited 1.3-1.5 s. Past the budget such a read waits for the next
 * turn, as a bulk read does past TURN_BYTES, and a burst of one sandbox's
 * connections (npm's, pip's) is set up over turns. Measured on the benchmark machine
 * with that burst, the other sandbox's requests took p50/max 7-8/27-40 ms with a
 * budget of 1, 11/31-39 ms with 2 and 23-28/38-66 ms with 4; the burst itself took
 * 5-10% longer than without one.
 *
 * A connection past the budget waits in its sandbox's queue with reading stopped, and
 * each turn the oldest SETUP_READS of them are read (proxy_setup_grant): handshakes
 * under way before new connections, since their clients have waited longest and give
 * up first (Go after 10 s). Refused reads used to stay on instead, and every poll
 * handed every waiting socket back to be refused again: a burst's cost grew with its
 * square. 1,500 ClientHellos took 5.6 s of the loop after their clients had gone
 * (14.5 million refused reads), and under 1,000 Go clients requests fell to 2 a
 * second for 20 s. New connections of a sandbox with a queue join it, so none passes
 * those waiting. An upstream's handshake waits among the handshakes under way: it
 * starts when the sandbox's first request is read, long after the sandbox's own
 * handshake passed the budget, so a sandbox that sends the requests of 1,000 set-up
 * connections at once had 526 upstream handshake steps run in one turn (the loop
 * held 0.2-1.3 s) while it was left out of the budget. Its timer counts a queued
 * ServerHello as read (conn.c), which refused reads left on did not: they made one
 * that came at once wait out the connect timeout (a 504 blaming the destination).
 */
#define SETUP_READS 2
/* The largest read from the sandbox side outside a relay, and in a probe (whose
 * client's first read is sniffed after all): what it reads feeds the sniffer and the
 * HTTP engine's pending bytes, whose bounds (PROXY_HELLO_MAX_BYTES, max_header_bytes
 * + 64 KiB) are checked per read. */
#define SANDBOX_READ_BYTES (64 * 1024)

struct wreq {
  uv_write_t req;
  struct proxy_end *e;
  size_t len;
  char data[];
};

static void update_reading(struct proxy_end *e);

struct proxy_end *proxy_end_peer(struct proxy_end *e)
{
  struct proxy_conn *c = e->conn;

  return e == &c->down ? &c->up : &c->down;
}

/*
 * The daemon's budget (limits.total_queue_max) over every sandbox's queues works as a
 * sandbox's own does: once it is spent, every sandbox's ends read a record at a time,
 * and only while their peer holds less than a record, until half of it drains. The
 * sandboxes with an end stopped meanwhile are listed on the context, so that the
 * drain looks at their connections only.
 */
static void queue_stopped_add(struct proxy_sandbox *sb)
{
  struct proxy_ctx *ctx = sb->ctx;

  if (sb->queue_stopped)
    return;
  sb->queue_stopped = 1;
  sb->queue_stopped_prev = NULL;
  sb->queue_stopped_next = ctx->queue_stopped;
  if (ctx->queue_stopped != NULL)
    ctx->queue_stopped->queue_stopped_prev = sb;
  ctx->queue_stopped = sb;
}

void proxy_queue_stopped_remove(struct proxy_sandbox *sb)
{
  if (!sb->queue_stopped)
    return;
  if (sb->queue_stopped_prev != NULL)
    sb->queue_stopped_prev->queue_stopped_next = sb->queue_stopped_next;
  else
    sb->ctx->queue_stopped = sb->queue_stopped_next;
  if (sb->queue_stopped_next != NULL)
    sb->queue_stopped_next->queue_stopped_prev = sb->queue_stopped_prev;
  sb->queue_stopped = 0;
  sb->queue_stopped_next = sb->queue_stopped_prev = NULL;
}

static void total_queue_spent(struct proxy_ctx *ctx)
{
  ctx->queue_full = 1;
  ctx->counters.queue_full++;
  if (proxy_log_nth(ctx->counters.queue_full))
    log_warn("write queues of all sandboxes hold %zu bytes, the daemon's budget "
             "(--queue-bytes %zu): every connection is read a TLS record at a time "
             "until half of it is written (%llu time(s))",
             ctx->queued, ctx->limits.total_queue_max,
             (unsigned long long)ctx->counters.queue_full);
}

/* ---- connections waiting for a setup read (SETUP_READS) ---- */

/* e had a setup read refused: it stops reading and joins its sandbox's queue. A
 * connection has one end set up at a time (the sandbox's, then the upstream's). */
static void setup_park(struct proxy_end *e)
{
  struct proxy_conn *c = e->conn;
  struct proxy_sandbox *sb = c->sb;
  struct proxy_ctx *ctx = sb->ctx;
  unsigned q = e == &c->up || c->state == CONN_TLS_DOWN ? 0 : 1;

  if (c->park_end != NULL || c->state == CONN_CLOSING)
    return;
  uv_read_stop((uv_stream_t *)&e->tcp);
  e->reading = 0;
  e->parked = 1;
  c->park_end = e;
  c->park_q = q;
  c->park_next = NULL;
  c->park_prev = sb->park_tail[q];
  if (sb->park_tail[q] != NULL)
    sb->park_tail[q]->park_next = c;
  else
    sb->park_head[q] = c;
  sb->park_tail[q] = c;
  if (sb->nparked++ == 0) {
    sb->parked_prev = NULL;
    sb->parked_next = ctx->parked;
    if (ctx->parked != NULL)
      ctx->parked->parked_prev = sb;
    ctx->parked = sb;
  }
}

void proxy_setup_unpark(struct proxy_conn *c)
{
  struct proxy_sandbox *sb = c->sb;
  struct proxy_ctx *ctx = sb->ctx;
  unsigned q = c->park_q;

  if (c->park_end == NULL)
    return;
  c->park_end->parked = 0;
  c->park_end = NULL;
  if (c->park_prev != NULL)
    c->park_prev->park_next = c->park_next;
  else
    sb->park_head[q] = c->park_next;
  if (c->park_next != NULL)
    c->park_next->park_prev = c->park_prev;
  else
    sb->park_tail[q] = c->park_prev;
  c->park_next = c->park_prev = NULL;
  if (--sb->nparked == 0) {
    if (sb->parked_prev != NULL)
      sb->parked_prev->parked_next = sb->parked_next;
    else
      ctx->parked = sb->parked_next;
    if (sb->parked_next != NULL)
      sb->parked_next->parked_prev = sb->parked_prev;
    sb->parked_next = sb->parked_prev = NULL;
  }
}

void proxy_setup_grant(struct proxy_ctx *ctx)
{
  struct proxy_sandbox *sb, *next;
  struct proxy_conn *c;
  struct proxy_end *e;

  for (sb = ctx->parked; sb != NULL; sb = next) {
    next = sb->parked_next; /* sb leaves the list when its queue empties */
    sb->setup_turn = ctx->turn;
    sb->setup_reads = 0;
    while (sb->setup_reads < SETUP_READS && sb->nparked > 0) {
      c = sb->park_head[0] != NULL ? sb->park_head[0] : sb->park_head[1];
      e = c->park_end;
      proxy_setup_unpark(c);
      e->granted = 1;
      sb->setup_reads++;
      update_reading(e);
    }
  }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct proxy_end *e = container_of(h, struct proxy_end, tcp);
  struct proxy_conn *c = e->conn;
  struct proxy_sandbox *sb = c->sb;
  struct proxy_ctx *ctx = sb->ctx;
  size_t queued = proxy_end_peer(e)->queued, limit = sb->limits.write_queue_max;
  size_t room = queued < limit ? limit - queued : 0;
  size_t sb_room = sb->queued < sb->limits.sandbox_queue_max
                       ? sb->limits.sandbox_queue_max - sb->queued
                       : 0;
  size_t total_room = ctx->queued < ctx->limits.total_queue_max
                          ? ctx->limits.total_queue_max - ctx->queued
                          : 0;
  size_t len = room < ctx->read_buf_size ? room : ctx->read_buf_size;

  (void)suggested;
  if (e->turn != ctx->turn) {
    e->turn = ctx->turn;
    e->turn_bytes = 0;
  } else if (e->turn_bytes >= (e->tls != NULL ? TURN_BYTES_TLS : TURN_BYTES)) {
    goto yield;
  }
  if (e == &c->down ? c->state == CONN_SNIFF || c->state == CONN_TLS_DOWN
                    : c->state == CONN_TLS_UP) {
    if (sb->setup_turn != ctx->turn) {
      sb->setup_turn = ctx->turn;
      sb->setup_reads = 0;
    }
    if (e->granted) {
      e->granted = 0; /* counted when its turn came (proxy_setup_grant) */
    } else if ((sb->nparked > 0 || sb->setup_reads >= SETUP_READS) && c->park_end == NULL) {
      ctx->counters.setup_reads_yielded++;
      e->parking = 1;
      buf->base = NULL;
      buf->len = 0;
      return;
    } else {
      sb->setup_reads++;
    }
  }
  /* The sandbox's budget is spent (or too little is left for a record), or the
   * daemon's for all sandboxes is. Its ends then read a record at a time, and only
   * while their peer has less than a record queued: a connection its program is
   * reading keeps going (a program that reads its connections one after another
   * would otherwise wait on the others for ever), and one that is not read holds at
   * most two records. Any other end stops here (read_cb gets UV_ENOBUFS) until its
   * peer's queue drains or half of the budget does (write_cb). */
  if (sb->queue_full || ctx->queue_full || sb_room < MIN_READ_BYTES ||
      total_room < MIN_READ_BYTES) {
    if (sb_room < MIN_READ_BYTES)
      sb->queue_full = 1;
    if (total_room < MIN_READ_BYTES && !ctx->queue_full)
      total_queue_spent(ctx);
    if (queued >= MIN_READ_BYTES) {
      buf->base = NULL;
      buf->len = 0;
      return;
    }
    len = MIN_READ_BYTES < ctx->read_buf_size ? MIN_READ_BYTES : ctx->read_buf_size;
    buf->base = ctx->read_buf;
    buf->len = len;
    return;
  }
  if (len > sb_room)
    len = sb_room;
  if (len > total_room)
    len = total_room;
  /* Backpressure is checked between reads, so one read may overshoot the peer's
   * queue limit by its own size: read no more than the room left, but a record. */
  if (len < MIN_READ_BYTES)
    len = MIN_READ_BYTES < ctx->read_buf_size ? MIN_READ_BYTES : ctx->read_buf_size;
  if (e == &c->down && (c->state != CONN_RELAY || c->probing) && len > SANDBOX_READ_BYTES)
    len = SANDBOX_READ_BYTES;
  buf->base = ctx->read_buf;
  buf->len = len;
  return;
yield:
  /* Its share of this turn is read: the socket stays readable, and the next poll
   * hands it back once the other ready connections have had theirs. */
  e->yielding = 1;
  ctx->counters.reads_yielded++;
  buf->base = NULL;
  buf->len = 0;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct proxy_end *e = container_of(s, struct proxy_end, tcp);
  struct proxy_conn *c = e->conn;

  if (n == UV_ENOBUFS && e->yielding) {
    /* Its turn is over: reading stays on, and the next poll finds it readable. */
    e->yielding = 0;
    return;
  }
  if (n == UV_ENOBUFS && e->parking) {
    e->parking = 0;
    setup_park(e);
    return;
  }
  if (n == 0 || c->state == CONN_CLOSING)
    return;
  if (n == UV_ENOBUFS) {
    /* alloc_cb found the sandbox's or the daemon's queue budget spent: not an end of
     * the stream. */
    uv_read_stop(s);
    e->reading = 0;
    if (c->sb->ctx->queue_full)
      queue_stopped_add(c->sb);
    return;
  }
  if (n < 0) {
    uv_read_stop(s);
    e->reading = 0;
    e->eof = 1;
    if (e->tls != NULL && n == UV_EOF) {
      proxy_tls_on_eof(e);
      return;
    }
    proxy_conn_on_eof(c, e, (int)n);
    return;
  }
  c->sb->ctx->io_events++;
  e->turn_bytes += (uint32_t)n;
  proxy_conn_touch(c);
  /* What crossed the sandbox's side: its bytes as read here, and bytes_down as
   * written to it (write_cb, proxy_end_raw_write), which include the proxy's own
   * answers and TLS records, never the upstream's. */
  if (e == &c->down)
    c->bytes_up += (uint64_t)n;
  if (e->tls != NULL) {
    proxy_tls_on_read(e, buf->base, (size_t)n);
    return;
  }
  proxy_conn_on_data(c, e, buf->base, (size_t)n);
}

/*
 * Whether bytes wait unread in e's socket while e is being read. Timers that judge an
 * end silent must ask first: libuv runs expired timers before it polls for input, so
 * a loop that was busy past a deadline (accepting a flood, or stopped) would take
 * bytes that arrived in time for silence. Sniffing would relay an HTTP request as
 * opaque bytes, without the headers its rules inject; an idle timeout would drop a
 * request already sent. Bytes left unread on purpose (backpressure) do not count, or
 * a stalled connection would never time out.
 */
int proxy_end_unread(struct proxy_end *e)
{
  uv_os_fd_t fd;
  int n;

  /* A connection waiting for its setup read was stopped for its turn, not for
   * backpressure. */
  if (!e->open || !(e->reading || e->parked) || uv_fileno((uv_handle_t *)&e->tcp, &fd) != 0)
    return 0;
  if (ioctl(fd, FIONREAD, &n) != 0 || n <= 0)
    return 0;
  /* Callers ask only when a timeout is due, so this counts the deferred ones. */
  e->conn->sb->ctx->counters.timers_late++;
  return 1;
}

/*
 * Whether e's peer took some of what the kernel had queued to send since the last
 * look. An upload to an upstream slower than the sandbox ends with the sandbox's last
 * byte read long before the upstream has read it: what the kernel holds (megabytes
 * with its send buffer grown) leaves at the upstream's pace, with nothing to read and
 * no write of the proxy's to complete, and a timeout that only counted those took the
 * upload still going out for a silent connection (a 504 before the upstream, still
 * reading, could answer; a tunnel cut). A queue that does not move (a peer that
 * stopped reading) is silence after one look.
 */
int proxy_end_taking(struct proxy_end *e)
{
  uv_os_fd_t fd;
  int n, before = e->outq;

  if (!e->open || !e->connected || uv_fileno((uv_handle_t *)&e->tcp, &fd) != 0 ||
      ioctl(fd, SIOCOUTQ, &n) != 0)
    return 0;
  e->outq = n;
  return n != before;
}

/* Whether either end's peer took queued bytes since the last look; both ends are
 * asked, each taking its new baseline. */
int proxy_conn_passing(struct proxy_conn *c)
{
  int up = proxy_end_taking(&c->up);

  return proxy_end_taking(&c->down) || up;
}

/* Reading is on when the state machine wants data and the peer can take more. */
static void update_reading(struct proxy_end *e)
{
  struct proxy_conn *c = e->conn;
  struct proxy_end *peer = proxy_end_peer(e);
  struct proxy_sandbox *sb = c->sb;
  int wanted = e->want_read && !e->eof && e->open && c->state != CONN_CLOSING && !e->parked;
  int want = wanted && peer->queued < sb->limits.write_queue_max &&
             (!(sb->queue_full || sb->ctx->queue_full) || peer->queued < MIN_READ_BYTES);

  if (want && !e->reading) {
    if (uv_read_start((uv_stream_t *)&e->tcp, alloc_cb, read_cb) == 0)
      e->reading = 1;
  } else if (!want && e->reading) {
    uv_read_stop((uv_stream_t *)&e->tcp);
    e->reading = 0;
  }
  /* Stopped while the daemon's budget is spent: the drain must look at it. */
  if (wanted && !want && sb->ctx->queue_full)
    queue_stopped_add(sb);
}

void proxy_end_want_read(struct proxy_end *e, int want)
{
  e->want_read = want ? 1 : 0;
  update_reading(e);
}

/* Every open end of sb's connections reads again if its budgets now allow. */
static void sandbox_read_again(struct proxy_sandbox *sb)
{
  struct proxy_conn *c;

  for (c = sb->conns; c != NULL; c = c->next) {
    if (c->state == CONN_CLOSING)
      continue;
    update_reading(&c->down);
    update_reading(&c->up);
  }
}

/* Half of the sandbox's budget drained: every end that stopped for it reads again. */
static void sandbox_queue_drained(struct proxy_sandbox *sb)
{
  sb->queue_full = 0;
  sandbox_read_again(sb);
}

/*
 * Half of the daemon's budget drained: every end stopped for it reads again (those of
 * a sandbox whose own budget is spent stay as that says).
 */
static void total_queue_drained(struct proxy_ctx *ctx)
{
  struct proxy_sandbox *sb;

  ctx->queue_full = 0;
  while ((sb = ctx->queue_stopped) != NULL) {
    proxy_queue_stopped_remove(sb);
    sandbox_read_again(sb);
  }
}

static void write_cb(uv_write_t *req, int status)
{
  struct wreq *w = container_of(req, struct wreq, req);
  struct proxy_end *e = w->e;
  struct proxy_conn *c = e->conn;
  struct proxy_sandbox *sb = c->sb;
  struct proxy_ctx *ctx = sb->ctx;
  size_t limit = sb->limits.write_queue_max;
  size_t before = e->queued;

  e->queued -= w->len;
  sb->queued -= w->len;
  ctx->queued -= w->len;
  if (status == 0 && e == &c->down)
    c->bytes_down += w->len;
  /* Bytes passed: the peer took what the kernel had queued. */
  if (status == 0)
    proxy_conn_touch(c);
  free(w);
  if (sb->queue_full && sb->queued < sb->limits.sandbox_queue_max / 2)
    sandbox_queue_drained(sb);
  if (ctx->queue_full && ctx->queued < ctx->limits.total_queue_max / 2)
    total_queue_drained(ctx);
  if (status < 0) {
    if (status != UV_ECANCELED && c->state != CONN_CLOSING) {
      log_debug("conn %llu: write to %s failed: %s", (unsigned long long)c->id,
                e == &c->down ? "sandbox" : "upstream", uv_strerror(status));
      if (e == &c->up && proxy_http_on_up_write_error(c) == 0)
        return;
      proxy_conn_close(c, 1, "write_failed");
    }
    return;
  }
  if (c->state == CONN_CLOSING)
    return;
  if ((before >= limit / 2 && e->queued < limit / 2) ||
      ((sb->queue_full || ctx->queue_full) && before >= MIN_READ_BYTES &&
       e->queued < MIN_READ_BYTES))
    update_reading(proxy_end_peer(e));
  if (e->queued == 0)
    proxy_conn_on_drain(c, e);
}

int proxy_end_raw_write(struct proxy_end *e, const uv_buf_t *bufs, unsigned nbufs)
{
  struct proxy_conn *c = e->conn;
  size_t total = 0, off = 0, rem, skip;
  struct wreq *w;
  uv_buf_t b;
  unsigned i;
  int r;

  if (!e->open || e->shut || c->state == CONN_CLOSING)
    return UV_EPIPE;
  for (i = 0; i < nbufs; i++)
    total += bufs[i].len;
  if (total == 0)
    return 0;
  if (e->queued == 0 && e->connected) {
    r = uv_try_write((uv_stream_t *)&e->tcp, bufs, nbufs);
    if (r > 0)
      off = (size_t)r;
    else if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS)
      return r;
    if (e == &c->down)
      c->bytes_down += off;
    if (off == total)
      return 0;
  }
  rem = total - off;
  w = malloc(sizeof(*w) + rem);
  if (w == NULL)
    return UV_ENOMEM;
  w->e = e;
  w->len = rem;
  /* Copy what the kernel did not take: skip `off` bytes across the buffers. */
  skip = off;
  rem = 0;
  for (i = 0; i < nbufs; i++) {
    if (skip >= bufs[i].len) {
      skip -= bufs[i].len;
      continue;
    }
    memcpy(w->data + rem, bufs[i].base + skip, bufs[i].len - skip);
    rem += bufs[i].len - skip;
    skip = 0;
  }
  b = uv_buf_init(w->data, (unsigned)w->len);
  r = uv_write(&w->req, (uv_stream_t *)&e->tcp, &b, 1, write_cb);
  if (r < 0) {
    free(w);
    return r;
  }
  e->queued += w->len;
  c->sb->queued += w->len;
  c->sb->ctx->queued += w->len;
  if (e->queued >= c->sb->limits.write_queue_max)
    update_reading(proxy_end_peer(e));
  return 0;
}

int proxy_end_write(struct proxy_end *e, const uv_buf_t *bufs, unsigned nbufs)
{
  if (e->tls != NULL)
    return proxy_tls_write(e, bufs, nbufs);
  return proxy_end_raw_write(e, bufs, nbufs);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
  (void)status;
  free(req);
}

void proxy_end_shutdown(struct proxy_end *e)
{
  uv_shutdown_t *req;

  if (!e->open || e->shut)
    return;
  if (e->tls != NULL && !e->unproven)
    proxy_tls_close_notify(e);
  e->shut = 1;
  req = malloc(sizeof(*req));
  if (req == NULL)
    return;
  if (uv_shutdown(req, (uv_stream_t *)&e->tcp, shutdown_cb) != 0)
    free(req);
}
