/*
 * A small blocking client of the control API (HTTP/1.1 over the daemon's Unix socket),
 * shared by `authproxy ctl`, the CNI plugin and the OCI hook: one request per
 * connection (Connection: close), a deadline for the whole exchange, answers bounded
 * in size and parsed strictly.
 */
#ifndef AUTHPROXY_APICLIENT_H
#define AUTHPROXY_APICLIENT_H

#include <stddef.h>

#define PROXY_API_DEFAULT_CONTROL "/run/authproxy/control.sock"
#define PROXY_API_MAX_ANSWER (8u << 20)

struct cJSON;
struct strbuf;

struct proxy_api_answer {
  int status;      /* HTTP status */
  char *body;      /* NUL-terminated (the body holds no NUL the caller relies on) */
  size_t body_len;
};

/*
 * Sends METHOD PATH (with body/body_len as JSON when body is not NULL) to the daemon
 * at sock and reads the whole answer within timeout_ms. Returns 0 with *a filled (any
 * HTTP status; free it with proxy_api_answer_free), or a negative errno with a message
 * naming the socket and the fix in err: -ENOENT or -ECONNREFUSED when no daemon
 * listens there (see proxy_api_unreachable; also when the connection closed without
 * an answer and nothing listens any more: the daemon stopped), -ECONNRESET (closed
 * without an answer by a daemon still listening), -ETIMEDOUT, -EFBIG (answer larger than
 * PROXY_API_MAX_ANSWER), -EPROTO (malformed answer), -ENAMETOOLONG, -ENOMEM. The
 * request buffer is wiped before it is freed: it may carry a config or a secret.
 */
int proxy_api_call(const char *sock, const char *method, const char *path,
                   const char *body, size_t body_len, int timeout_ms,
                   struct proxy_api_answer *a, char *err, size_t errsz);

/*
 * Parses a complete HTTP/1.1 answer (raw, len bytes: status line, headers, body up to
 * the end of the connection or Content-Length) into *a. Returns 0, -EPROTO if it is
 * not a well-formed answer, or -ENOMEM. Pure, for tests and fuzzing.
 */
int proxy_api_parse_answer(const char *raw, size_t len, struct proxy_api_answer *a);

/* Frees the body; a zeroed answer is a no-op. */
void proxy_api_answer_free(struct proxy_api_answer *a);

/* 1 if a proxy_api_call result means nothing listens on the socket (daemon down). */
int proxy_api_unreachable(int ret);

/*
 * 1 if s is 1 to max characters of [A-Za-z0-9_.-] starting with a letter or digit:
 * the syntax of the daemon's sandbox and config names (max PROXY_API_NAME_MAX), and
 * of the ids and file names the runtime adapters derive names and paths from.
 */
int proxy_api_name_ok(const char *s, size_t max);

#define PROXY_API_NAME_MAX 128

/*
 * Parses an answer's body as JSON into *root (free with cJSON_Delete). Returns 0;
 * -EBADMSG if the body is not JSON; -ENOMEM if memory ran out parsing it, when what
 * the answer says is unknown (an answer taken for another error would be misread).
 */
int proxy_api_body_parse(const struct proxy_api_answer *a, struct cJSON **root);

/*
 * Reads an API error answer {"error": {"code", "message", "details": [{"path",
 * "message"}]}}. Returns 0 with the parsed tree in *root (free with cJSON_Delete) and
 * *code, *message and *details pointing into it (details may be NULL); else *root is
 * NULL and it returns -EBADMSG if the body is not such an error (the caller reports
 * the status and the raw body), or -ENOMEM as proxy_api_body_parse.
 */
int proxy_api_error_parse(const struct proxy_api_answer *a, struct cJSON **root,
                          const char **code, const char **message,
                          const struct cJSON **details);

/*
 * Writes a one-line account of an error answer into buf: "CODE: MESSAGE" followed by
 * "; PATH: MESSAGE" for every validation detail (truncated with "..." to fit), or
 * "HTTP STATUS: BODY" when the body is not an API error. Returns 0, or -ENOMEM when
 * memory ran out reading the answer (buf then holds the status and the raw body).
 */
int proxy_api_error_text(const struct proxy_api_answer *a, char *buf, size_t size);

/*
 * Appends an attach request body to b: {"netns": NETNS, "proxy_config": CONFIG} where
 * config_json is the JSON text of the config (already parsed strictly by the caller),
 * or {"netns": NETNS, "proxy_config_name": NAME} when config_json is NULL.
 */
void proxy_api_attach_body(struct strbuf *b, const char *netns, const char *config_json,
                           const char *config_name);

/*
 * Derives a daemon sandbox name ([A-Za-z0-9][A-Za-z0-9_.-]{0,127}) from a runtime's
 * container id: prefix + id when the id is at most 60 characters of [A-Za-z0-9_.-];
 * otherwise prefix + the first 51 characters with every other byte replaced by '_',
 * '-' and 8 hex digits of a hash of the whole id, so that ids sharing a prefix or
 * differing only in replaced bytes still get distinct names. prefix must be a valid
 * name start of at most 8 characters ("cni-", "oci-"). Returns 0, or -EINVAL for an
 * empty id or a bad prefix; size must be at least PROXY_API_NAME_SIZE.
 */
#define PROXY_API_NAME_SIZE 72
int proxy_api_derive_name(const char *prefix, const char *id, char *out, size_t size);

#endif
