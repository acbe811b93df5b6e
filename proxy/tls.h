/*
 * TLS for intercepted connections (mbedTLS 2.28, TLS 1.2): the sandbox-facing server
 * with leaves minted by the sandbox's CA, and the upstream client that verifies the
 * destination against the system trust store plus --upstream-ca files.
 *
 * mbedTLS talks to libuv through BIO callbacks: ciphertext read by libuv is lent to
 * mbedTLS for the duration of one read callback; records mbedTLS writes go straight
 * to proxy_end_raw_write.
 */
#ifndef AUTHPROXY_TLS_H
#define AUTHPROXY_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct proxy_conn;
struct proxy_end;
struct proxy_sandbox;
struct proxy_tls;
struct proxy_upstream_tls;
struct proxy_tls_server;
struct mbedtls_ssl_config;

/* ---- upstream trust (one per process) ---- */

/*
 * Loads the system trust store (/etc/ssl/certs/ca-certificates.crt, or `system`
 * when given) plus each extra PEM file. Returns 0, or a negative errno with a message
 * naming the file in err.
 */
int proxy_upstream_tls_new(const char *system, const char *const *extra, size_t nextra,
                           struct proxy_upstream_tls **out, char *err, size_t errsz);
void proxy_upstream_tls_free(struct proxy_upstream_tls *u);

/*
 * Frees every upstream TLS session that connections of the sandbox with serial
 * `owner` (struct proxy_sandbox.serial) stored for resumption; for a sandbox being
 * freed, so that its sessions do not outlive it. Returns how many there were. NULL u
 * is a no-op.
 */
unsigned proxy_upstream_tls_drop_sessions(struct proxy_upstream_tls *u, uint64_t owner);

/* The verified client configuration (trust store, TLS 1.2, ALPN http/1.1), for other
 * clients of the daemon such as the credential callback. */
const struct mbedtls_ssl_config *proxy_upstream_tls_conf(const struct proxy_upstream_tls *u);

/* ---- per-sandbox server state: session ticket keys ---- */

int proxy_tls_server_new(struct proxy_tls_server **out);
void proxy_tls_server_free(struct proxy_tls_server *s);

/* ---- per connection ---- */

/* Terminates the sandbox's TLS with a leaf for c->name (or the original destination
 * address) and then runs the HTTP engine inside it. c->pending holds the ClientHello. */
void proxy_tls_intercept(struct proxy_conn *c);

/* Starts the upstream TLS handshake on a connected c->up; cb runs once. */
void proxy_tls_client_start(struct proxy_conn *c,
                            void (*cb)(struct proxy_conn *c, int status, const char *reason));

/* Ciphertext arrived on e (borrowed for the call). */
void proxy_tls_on_read(struct proxy_end *e, const char *data, size_t len);

/* The peer of e closed its TCP side. */
void proxy_tls_on_eof(struct proxy_end *e);

/* Encrypts and writes plaintext to e. */
int proxy_tls_write(struct proxy_end *e, const uv_buf_t *bufs, unsigned nbufs);

/* Queues a close_notify alert on e. */
void proxy_tls_close_notify(struct proxy_end *e);

/* Frees an end's TLS state. NULL is a no-op. */
void proxy_tls_free(struct proxy_tls *t);

/* 1 if the handshake is done and no record or plaintext is buffered: the session can
 * be handed to another connection object between requests. */
int proxy_tls_idle(const struct proxy_tls *t);

/* 1 if t holds bytes read from the peer that it has not handed on yet: ciphertext of
 * the read under way, a record come in part, plaintext not taken. */
int proxy_tls_buffered(const struct proxy_tls *t);

/*
 * 1 if the peer ended its stream with a close_notify alert; 0 if its TCP connection
 * ended without one, which anyone on the path can cause: then the end of what it
 * sent is not proven, and data delimited by that end may have been cut short.
 */
int proxy_tls_close_notified(const struct proxy_tls *t);

/* The TLS state now belongs to end e (its socket moved there). */
void proxy_tls_move(struct proxy_tls *t, struct proxy_end *e);

#endif
