/*
 * The audit log: JSON Lines, one record per connection and per HTTP request (DESIGN.md
 * section 6). Never a header value, a secret, a query string or a body.
 *
 * Records are appended to an in-memory buffer and written by the libuv thread pool,
 * so a slow disk never blocks the loop; the buffer is bounded and records beyond it
 * are dropped and counted rather than growing memory.
 */
#ifndef AUTHPROXY_AUDIT_H
#define AUTHPROXY_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct proxy_conn;
struct proxy_audit;

#define PROXY_AUDIT_MAX_BUFFER (8u << 20)

/* Opens path for appending (created 0600), or standard output for "-". */
int proxy_audit_open(uv_loop_t *loop, const char *path, struct proxy_audit **out);

/* The same, but while path is a FIFO without a reader it calls wait(arg) between
 * tries instead of blocking in open(2) (where a signal handled by the loop is not
 * seen); a wait that returns nonzero gives up: -ECANCELED. */
int proxy_audit_open_wait(uv_loop_t *loop, const char *path, int (*wait)(void *arg),
                          void *arg, struct proxy_audit **out);

/* What an error of the opens here means for --log path, where strerror would send
 * the operator looking for a loop (-ELOOP: a symbolic link, not followed) or a
 * missing device (-ENXIO: a FIFO without a reader, or a socket). */
const char *proxy_audit_strerror(const char *path, int err);

/* Reopens the file (after log rotation, on SIGHUP); a FIFO without a reader fails
 * with -ENXIO at once, and the old file stays in use. */
int proxy_audit_reopen(struct proxy_audit *a);

/* Writes what is buffered, closes and frees (once a write in flight completes, so
 * the loop must run a little longer). A FIFO or socket (not a regular file, whose
 * writes end by themselves) whose reader takes nothing is waited for ms at most
 * (PROXY_AUDIT_CLOSE_MS for proxy_audit_close): the records it did not take are then
 * counted lost and logged, and a write left in flight is orphaned
 * (proxy_lookup_orphaned), so proxy_loop_finish does not wait for it. NULL is a
 * no-op. */
#define PROXY_AUDIT_CLOSE_MS 5000
void proxy_audit_close(struct proxy_audit *a);
void proxy_audit_close_within(struct proxy_audit *a, unsigned ms);

/* Records dropped (the buffer was full, or a write failed and lost them), and
 * records written to the file (counted once written, not when buffered). */
uint64_t proxy_audit_dropped(const struct proxy_audit *a);
uint64_t proxy_audit_records(const struct proxy_audit *a);

/* One request on an HTTP connection. Strings borrowed. */
struct proxy_audit_request {
  const char *method;
  size_t method_len;
  const char *path;      /* query excluded by the writer */
  size_t path_len;
  int path_truncated;    /* path holds only the first bytes of a longer one */
  const char *action;    /* "forward", "deny", "reject" */
  const char *reason;    /* NULL when forwarded and answered whole; else why not (a
                            forwarded request the connection's end cut short has the
                            connection's reason) */
  const char *rule;      /* first rule that injected, or the deciding entry */
  int status;            /* response status, 0 if none */
  const char *const *injected; /* header names */
  size_t ninjected;
  uint64_t bytes_up, bytes_down;
  uint64_t duration_ms;
};

/* The connection record, written once when the connection closes. */
void proxy_audit_conn(struct proxy_conn *c);

/* A record of a connection still open ("event":"conn_open"): the connection record's
 * members as they stand, its bytes and duration so far. Written every
 * limits.audit_interval_ms while it stays open (conn.c). */
void proxy_audit_conn_open(struct proxy_conn *c);

/* A request record. */
void proxy_audit_request(struct proxy_conn *c, const struct proxy_audit_request *r);

struct strbuf;

/* Appends the record's "time":"2026-11-26T18:27:36.123Z" member (UTC, milliseconds). */
void proxy_audit_add_time(struct strbuf *b);

/* Appends one raw record (a JSON object without newline) for other subsystems. */
void proxy_audit_write(struct proxy_audit *a, const char *json, size_t len);

/*
 * Counts one record that could not be built (out of memory) as dropped, and logs it
 * as such: the metrics and the log say the file is incomplete. A no-op for NULL.
 */
void proxy_audit_lost(struct proxy_audit *a);

struct strbuf;

/* A record built in b: appended as proxy_audit_write does, or, if building it ran out
 * of memory (b->oom), counted lost as proxy_audit_lost does. */
void proxy_audit_write_buf(struct proxy_audit *a, const struct strbuf *b);

#endif
