/*
 * Audit log writer. Records accumulate in `fill`; a flush hands `fill` to the thread
 * pool as `out` (uv_fs_write) and starts a new `fill`, so at most one write is in
 * flight and the loop never waits for the disk. A 200 ms timer flushes small batches.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "proxy/audit.h"
#include "proxy/log.h"
#include "proxy/proxy_internal.h"
#include "proxy/strbuf.h"

#define FLUSH_BYTES (64u << 10)
#define FLUSH_MS 200
/* A run of failed writes that begins this soon after the last one logged is not (a
 * disk that keeps filling and emptying logs two lines a second at most). */
#define FAIL_LOG_MS 1000

struct proxy_audit {
  uv_loop_t *loop;
  char *path; /* NULL for standard output */
  int fd;
  struct strbuf fill;
  struct strbuf out;
  size_t out_off;
  int writing;
  int closing;
  int torn;        /* the file ends inside a record that a failed write cut short */
  int ending_torn; /* the write in flight begins with the newline that ends it */
  uv_fs_t req;
  uv_timer_t timer;
  uint64_t dropped;
  uint64_t full_drops; /* records dropped because the buffer was full */
  uint64_t oom_drops;  /* records dropped because memory ran out */
  uint64_t records;
  uint64_t fail_run;      /* writes failed since the last whole batch was written */
  uint64_t fail_lost;     /* records those writes lost */
  uint64_t fail_said_ms;  /* loop time a run of failures was last logged as begun */
  int fail_said;          /* this run is in the log: its end will be too */
  unsigned close_ms;      /* how long the close waits for the file to take its records */
  uint64_t close_by;      /* uv_hrtime() when that wait ends */
  int abandoned;          /* the close gave up on the write in flight: the process ends
                             without it, and its callback (if it comes) frees */
  int timer_closed;
};

static void flush(struct proxy_audit *a);
static void finish_close(struct proxy_audit *a);
static void release(struct proxy_audit *a);

static const char *audit_name(const struct proxy_audit *a)
{
  return a->path != NULL ? a->path : "(standard output)";
}

static int open_file(const char *path, int nonblock)
{
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
                          (nonblock ? O_NONBLOCK : 0), 0600);

  return fd < 0 ? -errno : fd;
}

static int is_fifo(const char *path)
{
  struct stat st;

  return lstat(path, &st) == 0 && S_ISFIFO(st.st_mode);
}

static int is_symlink(const char *path)
{
  struct stat st;

  return lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
}

static int is_socket(const char *path)
{
  struct stat st;

  return lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Makes fd's writes blocking again (they run on the thread pool); 0 or -errno. */
static int blocking(int fd)
{
  int flags = fcntl(fd, F_GETFL);

  if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
    return -errno;
  return 0;
}

int proxy_audit_open(uv_loop_t *loop, const char *path, struct proxy_audit **out)
{
  return proxy_audit_open_wait(loop, path, NULL, NULL, out);
}

int proxy_audit_open_wait(uv_loop_t *loop, const char *path, int (*wait)(void *arg),
                          void *arg, struct proxy_audit **out)
{
  struct proxy_audit *a;
  int fd;

  *out = NULL;
  if (strcmp(path, "-") == 0) {
    fd = STDOUT_FILENO;
  } else {
    /* A FIFO no reader has open (a log shipper not started yet) makes the open wait
     * for one, and the daemon with it, before it serves: say so, or it would look
     * hung with nothing in its log. */
    fd = open_file(path, 1);
    if (fd == -ELOOP && is_symlink(path)) {
      /* O_NOFOLLOW: strerror's "too many levels of symbolic links" for one link
       * would send the operator looking for a loop. */
      log_error("audit log %s: a symbolic link, which is not followed (whoever may "
                "change it could point the daemon's writes at any file); give --log "
                "the path of the file itself", path);
      return fd;
    }
    if (fd == -ENXIO && !is_fifo(path)) {
      /* A Unix socket (a log shipper's listener) or a device without a driver: no
       * reader will come, and waiting for one would hold the daemon, and every
       * sandbox it restores, for ever. */
      log_error("audit log %s: %s, which cannot be opened for writing; give --log a "
                "file, a FIFO, or - (standard output, which may be a socket)", path,
                is_socket(path) ? "a Unix socket" : "not a file nor a FIFO");
      return fd;
    }
    if (fd == -ENXIO) {
      log_warn("audit log %s: a FIFO that no reader has open; waiting for one before "
               "going on (start the reader, or give --log a file)", path);
      if (wait == NULL)
        fd = open_file(path, 0);
      while (wait != NULL && fd == -ENXIO) {
        if (wait(arg) != 0)
          return -ECANCELED;
        fd = open_file(path, 1);
      }
    }
    if (fd >= 0) {
      int r = blocking(fd);

      if (r != 0) {
        close(fd);
        return r;
      }
    }
    if (fd < 0)
      return fd;
  }
  a = calloc(1, sizeof(*a));
  if (a == NULL) {
    if (fd != STDOUT_FILENO)
      close(fd);
    return -ENOMEM;
  }
  a->loop = loop;
  a->fd = fd;
  if (fd != STDOUT_FILENO) {
    a->path = strdup(path);
    if (a->path == NULL) {
      close(fd);
      free(a);
      return -ENOMEM;
    }
  }
  strbuf_init(&a->fill);
  strbuf_init(&a->out);
  uv_timer_init(loop, &a->timer);
  a->timer.data = a;
  uv_unref((uv_handle_t *)&a->timer);
  *out = a;
  return 0;
}

const char *proxy_audit_strerror(const char *path, int err)
{
  if (err == -ELOOP && is_symlink(path))
    return "a symbolic link, which is not followed: give the file's own path";
  if (err == -ENXIO && is_fifo(path))
    return "a FIFO that no reader has open";
  if (err == -ENXIO)
    return "neither a file nor a FIFO (a socket or a device): give a file, a FIFO, or - "
           "for standard output";
  return strerror(-err);
}

int proxy_audit_reopen(struct proxy_audit *a)
{
  int fd, r;

  if (a == NULL || a->path == NULL)
    return 0;
  /* The loop opens: a FIFO whose reader went away (a log shipper restarting) must
   * fail the open (ENXIO), not hold the loop, and every sandbox, until one is back.
   * The writes stay blocking, on the thread pool: a full pipe waits, drops nothing. */
  fd = open_file(a->path, 1);
  if (fd < 0)
    return fd;
  r = blocking(fd);
  if (r != 0) {
    close(fd);
    return r;
  }
  /* A write in flight still uses the old fd; dup2 swaps the file under it safely. */
  if (dup2(fd, a->fd) < 0) {
    r = -errno;
    close(fd);
    return r;
  }
  close(fd);
  /* A record cut short is in the old file; the new one starts clean. */
  if (!a->writing)
    a->torn = 0;
  return 0;
}

/* The number of records (newlines) in p[0..len). */
static uint64_t count_records(const char *p, size_t len)
{
  const char *nl;
  uint64_t n = 0;

  /* len 0 first: p may be NULL then (an empty buffer). */
  while (len > 0) {
    nl = memchr(p, '\n', len);
    if (nl == NULL)
      break;
    n++;
    len -= (size_t)(nl - p) + 1;
    p = nl + 1;
  }
  return n;
}

static void write_cb(uv_fs_t *req)
{
  struct proxy_audit *a = req->data;
  ssize_t r = req->result;

  uv_fs_req_cleanup(req);
  a->writing = 0;
  if (a->abandoned) {
    /* The close gave up on this write (its reader took nothing) and counted what it
     * held as lost; the reader came back, or went away, before the process ended. */
    proxy_lookup_orphan_done();
    if (a->timer_closed)
      release(a);
    return;
  }
  if (r > 0 && a->ending_torn) {
    a->torn = 0;
    r--;
  }
  a->ending_torn = 0;
  if (r < 0) {
    uint64_t lost = count_records(a->out.data + a->out_off, a->out.len - a->out_off);

    /* What was not written is lost (a cut record too): count it, or the metrics
     * would say the log is complete. Each run of failures is logged from its
     * first (a disk that fills again a week later is news again; FAIL_LOG_MS), and
     * so is its end. */
    a->dropped += lost;
    a->fail_lost += lost;
    a->fail_run++;
    if (a->fail_run == 1 ? proxy_log_due(&a->fail_said_ms, uv_now(a->loop), FAIL_LOG_MS)
                         : proxy_log_nth(a->fail_run)) {
      a->fail_said = 1;
      log_error("audit log %s: write failed: %s; records are dropped until a write "
                "succeeds (%llu lost in %llu failed writes so far)", audit_name(a),
                uv_strerror((int)r), (unsigned long long)a->fail_lost,
                (unsigned long long)a->fail_run);
    }
    strbuf_reset(&a->out);
    a->out_off = 0;
  } else {
    /* The bytes written may end inside a record; if the rest then fails, the next
     * write must not continue that line. */
    if (r > 0)
      a->torn = a->out.data[a->out_off + (size_t)r - 1] != '\n';
    a->records += count_records(a->out.data + a->out_off, (size_t)r);
    a->out_off += (size_t)r;
    if (a->out_off >= a->out.len) {
      strbuf_reset(&a->out);
      a->out_off = 0;
      /* A whole batch reached the file (a part of one is not yet a disk with room). */
      if (a->fail_run > 0 && a->fail_said)
        log_warn("audit log %s: writing again, after %llu failed writes that lost %llu "
                 "records", audit_name(a), (unsigned long long)a->fail_run,
                 (unsigned long long)a->fail_lost);
      a->fail_run = 0;
      a->fail_lost = 0;
      a->fail_said = 0;
    }
  }
  if (a->closing)
    finish_close(a);
  else
    flush(a);
}

static void flush(struct proxy_audit *a)
{
  static char newline[] = "\n";
  struct strbuf tmp;
  uv_buf_t buf[2];
  unsigned n = 0;

  if (a->writing)
    return;
  if (a->out.len == 0) {
    if (a->fill.len == 0)
      return;
    tmp = a->out;
    a->out = a->fill;
    a->fill = tmp;
    a->out_off = 0;
  }
  /* After a failed write the file may end inside a record: before a new batch (a
   * batch continued at out_off completes that record), end that line, or the next
   * record would be glued to the fragment and neither could be read. */
  if (a->torn && a->out_off == 0)
    buf[n++] = uv_buf_init(newline, 1);
  buf[n++] = uv_buf_init(a->out.data + a->out_off, (unsigned)(a->out.len - a->out_off));
  a->req.data = a;
  if (uv_fs_write(a->loop, &a->req, a->fd, buf, n, -1, write_cb) == 0) {
    a->writing = 1;
    a->ending_torn = n == 2;
  }
}

static void timer_cb(uv_timer_t *t)
{
  flush(t->data);
}

/*
 * Records lost before a write was tried: the log cannot keep up (a slow disk, a
 * reader that stopped). Counted in the metrics, and logged (the 1st, 10th, 100th and
 * every 1000th time, with the count), since the jail has no metrics and an operator
 * reads the daemon's log first.
 */
static void dropped_full(struct proxy_audit *a, uint64_t n)
{
  a->dropped += n;
  a->full_drops += n;
  if (proxy_log_nth(a->full_drops))
    log_error("audit log %s: records are dropped: %u MiB wait for the file, which does "
              "not keep up (%llu dropped)", audit_name(a), PROXY_AUDIT_MAX_BUFFER >> 20,
              (unsigned long long)a->full_drops);
}

/* Records lost because memory ran out: building one, or growing the buffer. */
static void dropped_oom(struct proxy_audit *a, uint64_t n)
{
  uint64_t before = a->oom_drops;

  a->dropped += n;
  a->oom_drops += n;
  /* The first loss is logged even when it took several records at once. */
  if (before == 0 || proxy_log_nth(a->oom_drops))
    log_error("audit log %s: records are dropped: out of memory (%llu dropped)",
              audit_name(a), (unsigned long long)a->oom_drops);
}

void proxy_audit_lost(struct proxy_audit *a)
{
  if (a != NULL && !a->closing)
    dropped_oom(a, 1);
}

void proxy_audit_write_buf(struct proxy_audit *a, const struct strbuf *b)
{
  if (b->oom)
    proxy_audit_lost(a);
  else
    proxy_audit_write(a, b->data, b->len);
}

void proxy_audit_write(struct proxy_audit *a, const char *json, size_t len)
{
  if (a == NULL || a->closing)
    return;
  /* The batch being written waits in memory too: a stalled write and a full buffer
   * behind it held twice the bound. */
  if (a->fill.len + (a->out.len - a->out_off) + len + 1 > PROXY_AUDIT_MAX_BUFFER) {
    dropped_full(a, 1);
    return;
  }
  strbuf_add(&a->fill, json, len);
  strbuf_add(&a->fill, "\n", 1);
  if (a->fill.oom) {
    /* Every record buffered is gone with the buffer, not only this one. */
    dropped_oom(a, count_records(a->fill.data, a->fill.len) + 1);
    strbuf_free(&a->fill);
    return;
  }
  if (a->fill.len >= FLUSH_BYTES)
    flush(a);
  else if (!uv_is_active((uv_handle_t *)&a->timer))
    uv_timer_start(&a->timer, timer_cb, FLUSH_MS, 0);
}

/* Writes p[0..len) and returns how much was written: less than len after an error,
 * which errno says. With bounded (a FIFO, a socket: a reader that stops reading
 * would hold the write, and the daemon's or the jail's exit, for ever) it waits for
 * room until a->close_by at most (then ETIMEDOUT), and writes no more than the pipe
 * takes without blocking. */
static size_t write_all(struct proxy_audit *a, int bounded, const char *p, size_t len)
{
  size_t done = 0, chunk;

  while (done < len) {
    ssize_t n;

    chunk = len - done;
    if (bounded) {
      struct pollfd pfd = { .fd = a->fd, .events = POLLOUT };
      uint64_t now = uv_hrtime();
      int ms = now >= a->close_by ? 0 : (int)((a->close_by - now + 999999) / 1000000);
      int pr = poll(&pfd, 1, ms);

      if (pr < 0 && errno == EINTR)
        continue;
      if (pr == 0)
        errno = ETIMEDOUT;
      if (pr <= 0)
        break;
      if (chunk > PIPE_BUF)
        chunk = PIPE_BUF;
    }
    n = write(a->fd, p + done, chunk);

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      if (n == 0)
        errno = EIO;
      break;
    }
    done += (size_t)n;
  }
  return done;
}

/* Writes the records in p[0..len) at close, unless an earlier write failed (*err);
 * counts those lost in *lost. */
static void write_at_close(struct proxy_audit *a, int bounded, const char *p, size_t len,
                           int *err, uint64_t *lost)
{
  size_t done = 0;

  if (*err == 0) {
    done = write_all(a, bounded, p, len);
    if (done < len)
      *err = errno;
  }
  *lost += count_records(p + done, len - done);
}

static void release(struct proxy_audit *a)
{
  if (a->fd >= 0 && a->fd != STDOUT_FILENO)
    close(a->fd);
  strbuf_free(&a->out);
  strbuf_free(&a->fill);
  free(a->path);
  free(a);
}

static void timer_closed(uv_handle_t *h)
{
  struct proxy_audit *a = h->data;

  a->timer_closed = 1;
  /* An abandoned write still in flight reads a->out: its callback frees. */
  if (!a->writing)
    release(a);
}

/* Writes what is left synchronously (the daemon is stopping) and frees. */
static void finish_close(struct proxy_audit *a)
{
  uint64_t lost = 0;
  struct stat st;
  int err = 0, bounded;

  bounded = fstat(a->fd, &st) == 0 && !S_ISREG(st.st_mode);
  if (a->torn && a->out_off == 0 && (a->out.len > 0 || a->fill.len > 0) &&
      write_all(a, bounded, "\n", 1) != 1)
    err = errno;
  if (a->out.len > a->out_off)
    write_at_close(a, bounded, a->out.data + a->out_off, a->out.len - a->out_off, &err,
                   &lost);
  if (a->fill.len > 0)
    write_at_close(a, bounded, a->fill.data, a->fill.len, &err, &lost);
  if (err == ETIMEDOUT) {
    a->dropped += lost;
    log_error("audit log %s: its reader did not take the last records within %u ms of "
              "the close (%llu records lost)", audit_name(a), a->close_ms,
              (unsigned long long)lost);
  } else if (err != 0) {
    /* The last chance to say so: the daemon or the jail is stopping. */
    a->dropped += lost;
    log_error("audit log: write failed at close: %s (%llu records lost)", strerror(err),
              (unsigned long long)lost);
  }
  strbuf_free(&a->out);
  strbuf_free(&a->fill);
  uv_close((uv_handle_t *)&a->timer, timer_closed);
}

/* The write in flight at close did not complete in time: a reader that stopped
 * reading holds it (a thread of the pool, which cannot be cancelled). Its records,
 * and those after it, are lost; the loop no longer waits for it (proxy_loop_finish). */
static void close_timeout_cb(uv_timer_t *t)
{
  struct proxy_audit *a = t->data;
  uint64_t lost;

  if (!a->writing)
    return;
  lost = count_records(a->out.data + a->out_off, a->out.len - a->out_off) +
         count_records(a->fill.data, a->fill.len);
  a->dropped += lost;
  log_error("audit log %s: its reader did not take the last records within %u ms of the "
            "close (up to %llu records lost)", audit_name(a), a->close_ms,
            (unsigned long long)lost);
  a->abandoned = 1;
  strbuf_free(&a->fill);
  proxy_lookup_orphaned();
  uv_close((uv_handle_t *)&a->timer, timer_closed);
}

void proxy_audit_close(struct proxy_audit *a)
{
  proxy_audit_close_within(a, PROXY_AUDIT_CLOSE_MS);
}

void proxy_audit_close_within(struct proxy_audit *a, unsigned ms)
{
  struct stat st;

  if (a == NULL)
    return;
  a->closing = 1;
  a->close_ms = ms;
  a->close_by = uv_hrtime() + (uint64_t)ms * 1000000;
  /* A write in flight belongs to the thread pool; its callback finishes the close,
   * unless it is still waiting when the time is up. */
  if (!a->writing) {
    finish_close(a);
    return;
  }
  /* A regular file's write ends by itself (written or failed): wait for it. */
  if (fstat(a->fd, &st) == 0 && S_ISREG(st.st_mode))
    return;
  uv_timer_stop(&a->timer);
  uv_timer_start(&a->timer, close_timeout_cb, ms, 0);
}

uint64_t proxy_audit_dropped(const struct proxy_audit *a)
{
  return a ? a->dropped : 0;
}

uint64_t proxy_audit_records(const struct proxy_audit *a)
{
  return a ? a->records : 0;
}

/* ---- records ---- */

static const char *const action_names[] = { "deny", "tunnel", "intercept", "bypass" };
static const char *const source_names[] = { "none", "dns", "sni", "host", "addr" };
static const char *const kind_names[] = { "unknown", "tls", "http", "other" };

void proxy_audit_add_time(struct strbuf *b)
{
  struct timeval tv;
  struct tm tm;

  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  strbuf_addf(b, "\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900,
              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
              (int)(tv.tv_usec / 1000));
}

static void add_common(struct strbuf *b, struct proxy_conn *c, const char *event)
{
  char addr[INET6_ADDRSTRLEN + 8];

  strbuf_add(b, "{", 1);
  proxy_audit_add_time(b);
  strbuf_addf(b, ",\"event\":\"%s\",\"sandbox\":", event);
  strbuf_add_json_str(b, c->sb->name, strlen(c->sb->name));
  strbuf_addf(b, ",\"conn\":%llu", (unsigned long long)c->id);
  if (c->dst.ss_family == AF_INET || c->dst.ss_family == AF_INET6) {
    uv_ip_name((const struct sockaddr *)&c->dst, addr, sizeof(addr));
    strbuf_addf(b, c->dst.ss_family == AF_INET6 ? ",\"dst\":\"[%s]:%u\"" : ",\"dst\":\"%s:%u\"",
                addr, c->port);
  }
  if (c->name_src != NAME_NONE) {
    strbuf_adds(b, ",\"name\":");
    strbuf_add_json_str(b, c->name, strlen(c->name));
    strbuf_addf(b, ",\"name_source\":\"%s\"", source_names[c->name_src]);
  }
}

static void conn_record(struct proxy_audit *a, struct proxy_conn *c, const char *event)
{
  struct strbuf b;

  strbuf_init(&b);
  add_common(&b, c, event);
  strbuf_addf(&b, ",\"protocol\":\"%s\"", kind_names[c->kind]);
  /* Only a decision of the policy is an action: a connection that ended before one
   * (the sandbox closed it, a malformed first request, a limit) has its reason
   * alone, or a security team would count it among the denials. Nor is a probe's
   * relay, until it is settled (an open connection's record). */
  if (c->decided && !c->probing)
    strbuf_addf(&b, ",\"action\":\"%s\"", action_names[c->action]);
  if (c->intercept_tls)
    strbuf_adds(&b, ",\"tls\":\"intercepted\"");
  if (c->entry[0] != '\0') {
    strbuf_adds(&b, ",\"rule\":");
    strbuf_add_json_str(&b, c->entry, strnlen(c->entry, sizeof(c->entry)));
  }
  if (c->reason != NULL)
    strbuf_addf(&b, ",\"reason\":\"%s\"", c->reason);
  strbuf_addf(&b, ",\"bytes_up\":%llu,\"bytes_down\":%llu,\"duration_ms\":%llu}",
              (unsigned long long)c->bytes_up, (unsigned long long)c->bytes_down,
              (unsigned long long)(uv_now(c->sb->ctx->loop) - c->start_ms));
  proxy_audit_write_buf(a, &b);
  strbuf_free(&b);
}

void proxy_audit_conn(struct proxy_conn *c)
{
  struct proxy_audit *a = c->sb->ctx->audit;

  if (a == NULL || c->audited)
    return;
  c->audited = 1;
  conn_record(a, c, "conn");
}

void proxy_audit_conn_open(struct proxy_conn *c)
{
  struct proxy_audit *a = c->sb->ctx->audit;

  if (a != NULL && !c->audited)
    conn_record(a, c, "conn_open");
}

void proxy_audit_request(struct proxy_conn *c, const struct proxy_audit_request *r)
{
  struct proxy_audit *a = c->sb->ctx->audit;
  struct strbuf b;
  size_t i, plen;

  if (a == NULL)
    return;
  strbuf_init(&b);
  add_common(&b, c, "request");
  strbuf_adds(&b, ",\"method\":");
  strbuf_add_json_str(&b, r->method, r->method_len);
  /* The query may carry tokens: never log it. */
  for (plen = 0; plen < r->path_len && r->path[plen] != '?'; plen++)
    ;
  strbuf_adds(&b, ",\"path\":");
  strbuf_add_json_str(&b, r->path, plen);
  if (r->path_truncated)
    strbuf_adds(&b, ",\"path_truncated\":true");
  strbuf_addf(&b, ",\"action\":\"%s\"", r->action);
  if (r->reason != NULL)
    strbuf_addf(&b, ",\"reason\":\"%s\"", r->reason);
  if (r->rule != NULL && r->rule[0] != '\0') {
    strbuf_adds(&b, ",\"rule\":");
    strbuf_add_json_str(&b, r->rule, strlen(r->rule));
  }
  if (r->status > 0)
    strbuf_addf(&b, ",\"status\":%d", r->status);
  strbuf_adds(&b, ",\"injected\":[");
  for (i = 0; i < r->ninjected; i++) {
    if (i > 0)
      strbuf_add(&b, ",", 1);
    strbuf_add_json_str(&b, r->injected[i], strlen(r->injected[i]));
  }
  strbuf_addf(&b, "],\"bytes_up\":%llu,\"bytes_down\":%llu,\"duration_ms\":%llu}",
              (unsigned long long)r->bytes_up, (unsigned long long)r->bytes_down,
              (unsigned long long)r->duration_ms);
  proxy_audit_write_buf(a, &b);
  strbuf_free(&b);
}
