/*
 * Internals of the data plane shared by its files: sandboxes, connections and their
 * two ends. Nothing outside proxy/ includes this.
 */
#ifndef AUTHPROXY_PROXY_INTERNAL_H
#define AUTHPROXY_PROXY_INTERNAL_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "proxy/proxy.h"
#include "rules/rules.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

/* A uv_buf_t over bytes libuv will only read (uv_buf_t has no const variant). */
static inline uv_buf_t proxy_buf(const void *p, size_t len)
{
  return uv_buf_init((char *)(uintptr_t)p, (unsigned)len);
}

struct proxy_dns;
struct proxy_dns_table;
struct proxy_cred_cache;
struct proxy_http;
struct proxy_tls;
struct proxy_tls_server;
struct proxy_conn;
struct proxy_dial_attempt;
struct proxy_hello;

struct proxy_listener {
  uv_tcp_t tcp;
  struct proxy_sandbox *sb;
  int transparent; /* TPROXY: the local address is the original destination */
};

struct proxy_sandbox {
  struct proxy_ctx *ctx;
  uint64_t serial;                      /* never reused in the process, unlike the
                                           name or the address: owns its upstream
                                           TLS sessions (tls.c) */
  struct proxy_tls_server *tls_server;  /* session tickets; NULL without a CA */
  char *name;
  struct rules_config *config;
  struct proxy_ca *ca;                  /* borrowed; NULL: no interception */
  struct proxy_dns_table *dns_table;
  struct proxy_dns *dns;
  struct proxy_cred_cache *creds;       /* dynamic credentials from the callback */
  struct proxy_limits limits;
  struct proxy_listener listeners[4];   /* tcp4, tcp6, tproxy4, tproxy6 */
  int nlisteners;
  uint16_t port;                        /* the listeners' port, to refuse loops */
  uint16_t tproxy_port;
  struct proxy_conn *conns;             /* list of open connections */
  unsigned nconns;
  size_t queued;                        /* bytes in all its ends' write queues */
  int queue_full;                       /* queued reached limits.sandbox_queue_max:
                                           none of its ends is read until half drains */
  int queue_stopped;                    /* in ctx->queue_stopped: an end stopped while
                                           the daemon's budget was spent */
  struct proxy_sandbox *queue_stopped_next, *queue_stopped_prev;
  struct proxy_sandbox *all_next, *all_prev; /* ctx->sandboxes */
  struct proxy_conn *pool;              /* idle upstream connections, newest first */
  unsigned npool;
  int fd_share_warned;                  /* refused at its share of descriptors */
  unsigned own_fds;                     /* its listeners and responder sockets */
  unsigned dial_fds;                    /* its connections' racing connect attempts
                                           beyond each one's first (conn.c) */
  uint32_t setup_turn;                  /* the loop turn setup_reads counts */
  unsigned setup_reads;                 /* reads of connections being set up (stream.c,
                                           SETUP_READS) in that turn */
  /* Connections whose end being set up (the sandbox's, or the upstream's in its
   * handshake) waits for a setup read, not read meanwhile (stream.c): [0] handshakes
   * under way, [1] new connections; each first in, first out. */
  struct proxy_conn *park_head[2], *park_tail[2];
  unsigned nparked;
  struct proxy_sandbox *parked_next, *parked_prev; /* ctx->parked, while nparked > 0 */
  uint64_t nc_refused;                  /* refused: outside the CA's nameConstraints */
  /* Events a sandbox can repeat at will, counted so that only the 1st, 10th, 100th
   * and every 1000th is logged (proxy_log_nth): */
  uint64_t tls_down_failed;             /* TLS handshakes with the sandbox that failed */
  uint64_t tls_up_failed;               /* upstream certificates that did not verify */
  uint64_t echo_masked;                 /* reads of a response that echoed a credential */
  uint64_t cred_overflow;               /* callback headers with no room beside the rules' */
  unsigned resolving;                   /* getaddrinfo requests in libuv's pool */
  struct proxy_conn *resolve_head;      /* connections waiting to resolve, in order */
  struct proxy_conn *resolve_tail;
  int handles;                          /* open listener handles + dns + drain timer */
  int closing;
  int drain_timer_closed;
  uv_timer_t drain_timer;
  void (*close_cb)(void *arg);
  void *close_arg;
};

/* One side of a connection. */
struct proxy_end {
  uv_tcp_t tcp;
  struct proxy_conn *conn;
  struct proxy_tls *tls;     /* NULL: plaintext */
  size_t queued;             /* bytes in uv_write requests not yet completed */
  unsigned open : 1;         /* tcp initialized (needs uv_close) */
  unsigned reading : 1;      /* uv_read_start is active */
  unsigned want_read : 1;    /* the state machine wants data from this side */
  unsigned eof : 1;          /* the peer sent FIN */
  unsigned shut : 1;         /* we sent (or queued) FIN */
  unsigned connected : 1;
  unsigned closing : 1;      /* uv_close pending: tcp may not be initialized again yet */
  unsigned unproven : 1;     /* its TLS ends without close_notify: what it relays ended
                                so (proxy_tls_close_notified), and is passed on so */
  unsigned yielding : 1;     /* alloc_cb refused a read: its turn's budget is spent */
  unsigned parking : 1;      /* alloc_cb refused a setup read: it waits its turn */
  unsigned parked : 1;       /* in its sandbox's park queue, not read (stream.c) */
  unsigned granted : 1;      /* its turn came: its next setup read is counted already */
  uint32_t turn;             /* the loop turn turn_bytes counts (ctx->turn) */
  uint32_t turn_bytes;       /* bytes read in that turn (stream.c, TURN_BYTES) */
  int outq;                  /* its socket's send queue when proxy_end_taking looked */
};

enum conn_state {
  CONN_SNIFF,       /* reading the first bytes */
  CONN_RESOLVE,     /* waiting for the upstream address */
  CONN_CONNECT,     /* connecting upstream */
  CONN_TLS_DOWN,    /* TLS handshake with the sandbox */
  CONN_TLS_UP,      /* TLS handshake with the upstream */
  CONN_HTTP,        /* the HTTP engine drives both ends */
  CONN_RELAY,       /* bytes relayed both ways */
  CONN_LINGER,      /* a local answer was sent; draining the sandbox before closing */
  CONN_POOLED,      /* no sandbox side: an idle upstream kept for reuse (pool) */
  CONN_CLOSING,
};

enum conn_kind { KIND_UNKNOWN, KIND_TLS, KIND_HTTP, KIND_OTHER };

enum name_source { NAME_NONE, NAME_DNS, NAME_SNI, NAME_HOST, NAME_ADDR };

/* Called when the upstream is ready for plaintext (connected, TLS done) or failed.
 * status is 0 or a negative errno / UV error; reason names a failure. */
typedef void (*conn_ready_cb)(struct proxy_conn *c, int status, const char *reason);

struct proxy_conn {
  struct proxy_sandbox *sb;
  struct proxy_conn *next, *prev;
  struct proxy_conn *park_next, *park_prev; /* sb->park_head[park_q] (stream.c) */
  unsigned park_q;
  struct proxy_end *park_end;       /* its end in that queue (stream.c), or NULL */
  uint64_t id;
  struct proxy_end down;            /* the sandbox side */
  struct proxy_end up;              /* the upstream side */
  uv_timer_t timer;
  int handles;                      /* handles open (down, up, timer) */
  int ops;                          /* outstanding requests that hold c (getaddrinfo) */
  uv_getaddrinfo_t *gai;            /* the name lookup in flight, or NULL */
  enum conn_state state;
  enum conn_kind kind;
  struct rules_config *cfg;         /* config the connection was decided under */
  uint32_t cfg_changes;             /* times cfg was replaced (a swap, a request's) */
  uint32_t cfg_changes_filtered;    /* ... when its upstream addresses were checked */
  struct sockaddr_storage dst;      /* original destination */
  uint16_t port;                    /* destination port */
  char name[RULES_MAX_NAME_LEN + 1];
  enum name_source name_src;
  int name_agreed;                  /* a name the client sent agreed with it (SNI, Host) */
  int synth_unknown;                /* sent to a synthetic address the DNS table does not
                                       hold: the name it names must have it (conn.c) */
  enum rules_action action;
  const char *reason;               /* why denied / failed (static) */
  char entry[64];                   /* rule or entry that decided */
  int intercept_tls;                /* TLS terminated on both sides */
  int alpn_not_http11;              /* the ClientHello's ALPN list lacks http/1.1:
                                       1, or 2 when it offers h2 */
  int no_tls12;                     /* the ClientHello does not offer TLS 1.2:
                                       2 when it offers 1.3, 1 when older only */
  int h2c;                          /* opened with the HTTP/2 preface, relayed as it is */
  int probing;                      /* relayed after a silence at a destination that
                                       intercepts; neither side has sent a byte yet
                                       (proxy_conn_resniff): PROBE_INJECT, or
                                       PROBE_INSPECT where request-level policy
                                       refuses a server that speaks first */
  char *pending;                    /* sandbox bytes not yet handled */
  size_t pending_len, pending_cap;
  struct proxy_http *http;
  struct addrinfo *ai, *ai_next;    /* upstream addresses being tried */
  struct proxy_dial_attempt *attempts; /* connect attempts racing (conn.c), each a handle */
  int remapped;
  char dial_host[RULES_MAX_NAME_LEN + 1];
  uint16_t dial_port;
  conn_ready_cb ready_cb;
  uint64_t dial_deadline_ms;         /* when the dial (resolution, connects, TLS) fails */
  unsigned dial_late;                /* connect timeouts granted anew (conn.c) */
  uint64_t start_ms;
  uint64_t last_active_ms;
  uint64_t timer_ms;                /* the current phase's timeout */
  size_t linger_queued;             /* LINGER: down.queued when the timer was armed */
  uint64_t linger_end_ms;           /* LINGER: when discarding ends however much comes */
  uint64_t bytes_up, bytes_down;    /* read from the sandbox, written to it (its side:
                                       its TLS records and the proxy's own answers
                                       included; the upstream's bytes never) */
  int audited;
  struct proxy_conn *progress_next, *progress_prev; /* ctx's audit order (conn.c) */
  uint64_t progress_due_ms;         /* when its next open-connection record is due */
  int progress_listed;              /* in that list */
  int decided;                      /* the policy chose action: the record names it */
  int dial_deferred;                /* dial once the previous upstream has closed */
  struct proxy_conn *pool_next, *pool_prev; /* CONN_POOLED: the sandbox's pool */
  struct proxy_conn *all_next, *all_prev;   /* ... and every sandbox's (ctx) */
  struct proxy_conn *resolve_next, *resolve_prev; /* the sandbox's resolve queue */
  int resolve_queued;               /* in that queue */
  int sent_at_detach;               /* in its TLS handshake when its sandbox began to
                                       close, the client's next flight come already
                                       (proxy_sandbox_close): a request may be with it */
};

/* ---- callbacks.c ---- */

/* A sandbox's config with a credential callback came (added), went (removed) or
 * both (NULL for neither); connections that reach an endpoint new to the daemon's
 * list are closed. */
void proxy_callbacks_update(struct proxy_ctx *ctx, const struct rules_config *added,
                            const struct rules_config *removed);

/* 1 if host (normalized) and port name a sandbox's credential callback, 0 if not, -1
 * if the callbacks cannot be listed (refuse). */
int proxy_callbacks_named(struct proxy_ctx *ctx, const char *host, uint16_t port);

/* 1 if sa and port are a sandbox's credential callback's endpoint
 * (rules_callback_reached, with its flags), 0 if not, -1 if the callbacks cannot be
 * listed (refuse). */
int proxy_callbacks_reached(struct proxy_ctx *ctx, const struct sockaddr *sa, uint16_t port,
                            unsigned flags);

void proxy_callbacks_free(struct proxy_ctx *ctx);

/* ---- conn.c ---- */

/* Closes c if its upstream is a credential callback's endpoint now listed (dials
 * under way check their addresses again); port: the new endpoint's (c is left alone
 * if it dials another), 0 for any. */
void proxy_conn_recheck_callbacks(struct proxy_conn *c, uint16_t port);

/* Accepts a connection from a listener and starts sniffing. */
void proxy_conn_accept(struct proxy_listener *l);

/* Closes the connection; `reset` sends RST to the sandbox instead of FIN, and to the
 * upstream too when the connection relays bytes. The reason (static, may be NULL) is
 * recorded for the audit log. Idempotent. */
void proxy_conn_close(struct proxy_conn *c, int reset, const char *reason);

/* c's sandbox is closing: if c is closed too, it stops waiting for its name lookup
 * and may be freed. */
void proxy_conn_sandbox_closing(struct proxy_conn *c);

/* The policy denied c before or outside conn_decide (an unknown synthetic address, a
 * Host or SNI that disagrees): its action is deny, counted in
 * authproxy_connections_total once, as conn_decide counts its decisions. */
void proxy_conn_mark_denied(struct proxy_conn *c);

/* Starts resolving and connecting the upstream; cb runs once. */
void proxy_conn_dial(struct proxy_conn *c, conn_ready_cb cb);

/* (Re)arms the connection's timer for the current phase. */
void proxy_conn_arm_timer(struct proxy_conn *c, uint64_t ms);

/* Marks activity for the idle timeout. */
void proxy_conn_touch(struct proxy_conn *c);

/* Appends to / consumes from c->pending. */
int proxy_conn_pending_append(struct proxy_conn *c, const char *data, size_t len);
/* What c->probing holds for a probe (0: none). */
enum { PROBE_INJECT = 1, PROBE_INSPECT = 2 };
/* c is probing and its client spoke first after all: judge those bytes (conn.c). */
void proxy_conn_resniff(struct proxy_conn *c, const char *data, size_t len);
/* c's probe, if it is one, is settled without its client speaking first (the server
 * spoke first, or it ends): counted now as a relay, or as denied where request-level
 * policy applies (PROBE_INSPECT), and no longer a probe. */
void proxy_conn_probe_settled(struct proxy_conn *c);
void proxy_conn_pending_consume(struct proxy_conn *c, size_t n);

/* Drain the sandbox side after a local answer, then close (lingering close). */
void proxy_conn_linger(struct proxy_conn *c);

/* Learns the destination name from a source; it must agree with a name already
 * known. Returns 0, or -EINVAL / -EPERM with *reason set. */
int proxy_conn_set_name(struct proxy_conn *c, const char *raw, size_t len,
                        enum name_source src, const char **reason);

/* 1 if c->name is an IP address literal. */
int proxy_conn_name_is_ip(const struct proxy_conn *c);

/* The destination as the rules see it. */
void proxy_conn_dest(const struct proxy_conn *c, struct rules_dest *d);

/* The sniffer found a ClientHello. */
void proxy_conn_on_hello(struct proxy_conn *c, const struct proxy_hello *hello);

/*
 * The upstream pool: idle keep-alive upstream connections of the HTTP engine (plain,
 * or TLS verified for the name), kept per sandbox for the next request to the same
 * name, port, dial target and config, within the sandbox's pool limits. Never shared
 * across sandboxes: each sandbox has its own pool.
 *
 * proxy_conn_park_upstream moves c's upstream into the pool, if its transport is
 * clean (connected, nothing queued, no TLS bytes pending); the HTTP engine checks
 * that no request is in flight. Returns 0 (c->up is then closed), or -EAGAIN.
 * proxy_conn_release_upstream parks it, or closes it when it cannot be parked.
 * proxy_conn_reuse_upstream gives c a pooled connection for its destination that the
 * upstream has said nothing on since it was parked (proxy_conn_upstream_fresh): 0
 * (c->up is open and connected), or -ENOENT.
 */
int proxy_conn_park_upstream(struct proxy_conn *c);
void proxy_conn_release_upstream(struct proxy_conn *c);
int proxy_conn_reuse_upstream(struct proxy_conn *c);

/*
 * 1 if the upstream end e, idle since its last answer, can carry another request:
 * open, and the upstream has sent nothing since (no FIN, no reset, no byte, nothing
 * buffered by TLS). The loop may not have read what a server sent while it ended
 * its keep-alive connection: a request sent down it would be lost (and one that may
 * not be repeated, a POST, would fail), and bytes waiting there answer no request.
 */
int proxy_conn_upstream_fresh(struct proxy_end *e);

/* 1 if the sandbox sent c bytes the proxy has not read yet (they wait in the socket:
 * the loop reads connections being set up a few at a time), or has read but not yet
 * decrypted (its TLS session holds them), or c cannot tell. */
int proxy_conn_down_unread(const struct proxy_conn *c);

/* 1 if c has received nothing from the sandbox yet, nor has anything waiting: it
 * carries no work a detach or a stop should wait for. */
int proxy_conn_unused(const struct proxy_conn *c);

/* Closes c's upstream end only; a later dial waits for the close to complete. */
void proxy_conn_close_upstream(struct proxy_conn *c);

/* Closes every pooled connection of sb (it is detaching). */
void proxy_conn_pool_flush(struct proxy_sandbox *sb);

/* Denies a TLS connection: a 403 inside intercepted TLS when possible, else RST. */
void proxy_conn_deny_tls(struct proxy_conn *c, const char *reason);

/*
 * The sandbox's config became cfg (borrowed) while c was open. A connection not decided
 * yet is decided under cfg. One whose bytes are relayed opaquely (a tunnel, a no_proxy
 * bypass, an upgraded connection), decided once, is closed (reason "config_changed")
 * when cfg would not let it through as it is: it denies the name or the address the
 * upstream was dialed at, intercepts a tunnel, or sends the name elsewhere (dns.remap);
 * otherwise it goes on under cfg. Requests the HTTP engine reads need nothing here: each
 * takes the config current when it arrives (http.c).
 */
void proxy_conn_config_swapped(struct proxy_conn *c, struct rules_config *cfg);

/* ---- sandbox.c ---- */

/* A connection of sb was freed. */
void proxy_sandbox_conn_gone(struct proxy_sandbox *sb);

/* ---- stream.c: I/O on one end ---- */

/* Data read from an end, after TLS decryption. */
typedef void (*end_data_cb)(struct proxy_conn *c, struct proxy_end *e, const char *data,
                            size_t len);

/* Starts or stops wanting data from e; reading also pauses under backpressure. */
void proxy_end_want_read(struct proxy_end *e, int want);

/* 1 if bytes wait unread in e's socket while e is being read: the loop is late, the
 * peer is not silent. For timers that judge silence, when their timeout is due: a 1
 * is counted as a deferred timeout (counters.timers_late). */
int proxy_end_unread(struct proxy_end *e);

/* 1 if the peer took bytes of what e's socket had queued to send (its kernel send
 * queue changed) since the last call: a peer that reads slowly is not silent. For
 * timers that judge silence, when their timeout is due. */
int proxy_end_taking(struct proxy_end *e);

/* proxy_end_taking for both of c's ends: 1 if either peer took bytes (timers that
 * judge a connection silent, when their timeout is due). */
int proxy_conn_passing(struct proxy_conn *c);

/* Writes bytes (copied as needed) to e, encrypting if e has TLS. Returns 0 or a
 * negative error (the connection is then being closed). */
int proxy_end_write(struct proxy_end *e, const uv_buf_t *bufs, unsigned nbufs);

/* Writes ciphertext / plaintext bytes to e's socket, bypassing TLS. */
int proxy_end_raw_write(struct proxy_end *e, const uv_buf_t *bufs, unsigned nbufs);

/* Sends FIN on e after queued data. */
void proxy_end_shutdown(struct proxy_end *e);

/* The other end of c. */
struct proxy_end *proxy_end_peer(struct proxy_end *e);

/* Takes c out of its sandbox's park queue, if one of its ends waits there (stream.c):
 * when c, or its upstream side, closes. */
void proxy_setup_unpark(struct proxy_conn *c);

/* At each turn of the loop, before its poll: each sandbox's connections waiting for
 * a setup read are read, SETUP_READS of them, oldest first. */
void proxy_setup_grant(struct proxy_ctx *ctx);

/* Takes sb out of ctx->queue_stopped (if it is in it), before sb is freed. */
void proxy_queue_stopped_remove(struct proxy_sandbox *sb);

/* Dispatches data to the connection's state machine (conn.c). */
void proxy_conn_on_data(struct proxy_conn *c, struct proxy_end *e, const char *data,
                        size_t len);

/* EOF or error from an end (status UV_EOF or an error). */
void proxy_conn_on_eof(struct proxy_conn *c, struct proxy_end *e, int status);

/* The write queue of e drained below the low-water mark. */
void proxy_conn_on_drain(struct proxy_conn *c, struct proxy_end *e);

/* ---- relay.c ---- */

/* Switches c to relaying bytes both ways, first flushing c->pending upstream. */
void proxy_relay_start(struct proxy_conn *c);
void proxy_relay_on_data(struct proxy_conn *c, struct proxy_end *e, const char *data,
                         size_t len);
void proxy_relay_on_eof(struct proxy_conn *c, struct proxy_end *e);
void proxy_relay_on_drain(struct proxy_conn *c, struct proxy_end *e);

/* ---- http.c ---- */

/* Starts the HTTP engine on c (c->pending holds the first bytes). */
void proxy_http_start(struct proxy_conn *c);
void proxy_http_on_data(struct proxy_conn *c, struct proxy_end *e, const char *data,
                        size_t len);
void proxy_http_on_eof(struct proxy_conn *c, struct proxy_end *e);
void proxy_http_on_drain(struct proxy_conn *c, struct proxy_end *e);
void proxy_http_on_timeout(struct proxy_conn *c);
void proxy_http_free(struct proxy_http *h);

/* The upstream failed (reset, read error): 0 if the engine took it over (a request
 * retried on a new connection, answered 502 upstream_reset, or an answer cut short
 * whose framing shows the cut written out before the sandbox's end), else the caller
 * closes. */
int proxy_http_on_up_error(struct proxy_conn *c);

/* A write to the upstream failed: 0 if the engine took it over (a request body cut
 * off, whose answer, or end, is read from the upstream first), else the caller
 * closes. */
int proxy_http_on_up_write_error(struct proxy_conn *c);

/* The upstream's connection failed (reset, a TLS fatal alert or bad record) in the
 * middle of an answer whose framing shows the cut (chunked, a Content-Length): 0 if
 * the answer was ended as cut short (end_cut_short: what is queued written out, then
 * the sandbox's end without a close_notify; audited once with REASON), else -1 and
 * the caller closes. */
int proxy_http_on_up_cut(struct proxy_conn *c, const char *reason);

/* The sandbox side is ending: give a keep-alive upstream between requests back to the
 * pool. */
void proxy_http_park(struct proxy_conn *c);

/* 1 if c is an HTTP connection between requests, or before its first (a TLS
 * handshake done, no request yet): its last answer relayed whole (it may still be
 * queued toward a slow reader: a lingering close writes it first), nothing of a next
 * request received, nor waiting unread in the socket. */
int proxy_http_idle(const struct proxy_conn *c);

/* Trims the heap a second from now if the open connections or the sandboxes have
 * fallen to a quarter of their peak since the last trim (sandbox.c). */
void proxy_ctx_trim_later(struct proxy_ctx *ctx);

/* 1 if c's HTTP engine has a request in flight: decided to go upstream, its answer
 * not relayed whole. */
int proxy_http_in_flight(const struct proxy_conn *c);

/* 1 if cfg's egress policy refuses the request in flight: by its name and port, or
 * by its method and path. A config swap cuts it (proxy_conn_config_swapped). */
int proxy_http_refuses(const struct proxy_conn *c, const struct rules_config *cfg);

/* The connection is closing (c->reason says why): a request it cut short, forwarded
 * or not, gets its audit record now. */
void proxy_http_on_close(struct proxy_conn *c);

/*
 * Whether the request waiting for a new upstream may be sent to addr (an IPv4 or
 * IPv6 address the dial resolved) at port: request-level egress entries on addresses
 * (rules_check_request_address). 1, or 0 with *d the denial. Checked before the
 * dial, so that a denied request does not even connect.
 */
int proxy_http_address_allowed(const struct proxy_conn *c, const struct sockaddr *addr,
                               uint16_t port, struct rules_decision *d);

/* override_method and preflight_method (http.c), for the unit tests: the method a
 * request's override fields or `_method` query parameter name (0, or -EINVAL), and
 * the one a CORS preflight asks for (1, or 0 with out ""), uppercased into out. */
struct proxy_http_request;
int proxy_http_override_method(const struct proxy_http_request *req, char *out, size_t size);
int proxy_http_preflight_method(const struct proxy_http_request *req, char *out, size_t size);

/* ---- response.c: answers the proxy gives itself ---- */

/*
 * Appends to out a complete local HTTP response (JSON body with error, reason, host,
 * rule and a message; Connection: close), and makes reason c's if it has none.
 * status: 400, 403, 408, 421, 431, 500, 501, 502, 503, 504.
 */
void proxy_error_response(struct proxy_conn *c, int status, const char *reason,
                          const char *entry, struct strbuf *out);

/* Writes such an answer (borrowed; nothing if it is incomplete) to the sandbox, then
 * lingers and closes. */
void proxy_respond(struct proxy_conn *c, const struct strbuf *answer);

/* A short human explanation of a reason code. */
const char *proxy_reason_message(const char *reason);

/* ---- misc ---- */

uint64_t proxy_now_ms(const struct proxy_conn *c);

#endif
