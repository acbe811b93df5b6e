/*
 * rules: the policy library of authproxy.
 *
 * Turns a sandbox's `proxy_config` JSON (the public Auth Proxy format, DESIGN.md
 * section 4) into an immutable, reference-counted config object; validates it with
 * the JSON path of every error; matches hosts, addresses and paths; and decides, for
 * a connection and for each request on it, what the proxy does and which headers it
 * injects. Pure C: no libuv, no sockets. The only I/O is the secret store reading
 * secret files when a config is pushed.
 *
 * Functions return 0 or a negative errno unless documented otherwise. Nothing here is
 * thread-safe beyond what is stated: a config is immutable after parsing and may be
 * read from any thread, but its reference count is not atomic (one event loop owns it).
 */
#ifndef AUTHPROXY_RULES_H
#define AUTHPROXY_RULES_H

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct cJSON;

/* Limits on what one config may hold. Validation rejects configs beyond them. */
#define RULES_MAX_RULES 256
#define RULES_MAX_HEADERS_PER_RULE 32
#define RULES_MAX_INJECT 64          /* distinct header names injected into a request */
#define RULES_MAX_PATTERNS 1024      /* entries in any one list (hosts, paths, no_proxy...) */
#define RULES_MAX_VALUE_LEN 8192     /* a header value after secret resolution */
#define RULES_MAX_NAME_LEN 253       /* a normalized host name */
#define RULES_MAX_SECRET_LEN 65536   /* a secret file */
#define RULES_MAX_CONFIG_SECRETS 256 /* distinct secrets one config's templates name */
#define RULES_MAX_CONFIG_LEN (1 << 20) /* the JSON text given to rules_config_parse */
/* Patterns with text between two stars ("/repos/" star "/pulls/" star) in one config:
 * each may be compared with the whole request path (8 KiB) or name on every decision,
 * on the loop every sandbox shares. */
#define RULES_MAX_SCAN_PATHS 128
#define RULES_MAX_SCAN_HOSTS 1024

/* ---- diagnostics ------------------------------------------------------------ */

/*
 * One validation error: the JSON path of the offending value (`rules[1].headers[0].name`,
 * with the caller's prefix, e.g. `proxy_config.`), and a message that says what is wrong
 * and how to fix it.
 */
struct rules_diag_entry {
  char *path;
  char *message;
};

/* A list of errors; every parse collects all of them, not just the first (a config
 * with more than 100 errors reports the first 100 and a count of the rest). */
struct rules_diag {
  struct rules_diag_entry *entries;
  size_t count;
  size_t cap;
};

void rules_diag_init(struct rules_diag *d);

/* Frees the entries; the struct itself is the caller's and is left empty. */
void rules_diag_free(struct rules_diag *d);

/* Appends an error (printf-style message). Returns 0 or -ENOMEM. d may be NULL, for a
 * caller that wants the verdict only: nothing is recorded. */
int rules_diag_add(struct rules_diag *d, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- secret store ------------------------------------------------------------- */

/*
 * Where `{KEY}` templates of workspace_secret headers are resolved: a directory with
 * one file per key (Kubernetes secret volumes, systemd credentials; one trailing
 * newline is trimmed, symlinks are followed), overlaid with values set through the
 * API. Keys are [A-Za-z0-9_.-]+, never starting with a dot.
 */
struct rules_secrets;

/* Creates a store reading files from dir (borrowed, copied; may be NULL for none). */
struct rules_secrets *rules_secrets_new(const char *dir);

/* Sets an in-memory value for key (copied), overriding a file of the same name. */
int rules_secrets_set(struct rules_secrets *s, const char *key, const char *value,
                      size_t len);

/* Removes an in-memory value; -ENOENT if there was none. */
int rules_secrets_unset(struct rules_secrets *s, const char *key);

/*
 * Looks key up. On success *value is a malloc'd NUL-terminated copy the caller must
 * wipe and free (rules_secret_free). Returns -ENOENT when the key exists nowhere,
 * -EINVAL for a malformed key or a file that is not a regular file (a FIFO or device
 * is never opened for blocking reads), -EFBIG for a file over RULES_MAX_SECRET_LEN,
 * or the errno of a failed read. rules_secrets_dir names the place searched.
 */
int rules_secrets_get(const struct rules_secrets *s, const char *key, char **value,
                      size_t *len);

/* The directory searched (or NULL), for error messages. */
const char *rules_secrets_dir(const struct rules_secrets *s);

/*
 * Marks a store that never takes values through the control API (the jail's, the
 * config command's): its errors then say to create the file or give --secrets-dir,
 * not to push the secret to an API no one serves.
 */
void rules_secrets_files_only(struct rules_secrets *s);

/* Whether s was marked with rules_secrets_files_only. */
int rules_secrets_is_files_only(const struct rules_secrets *s);

/* Calls cb for the name of every in-memory key, in sorted order (never the value). */
void rules_secrets_list(const struct rules_secrets *s,
                        void (*cb)(const char *key, void *arg), void *arg);

/* Wipes every value and frees the store. NULL is a no-op. */
void rules_secrets_free(struct rules_secrets *s);

/* Wipes and frees a value returned by rules_secrets_get. NULL is a no-op. */
void rules_secret_free(char *value, size_t len);

/* ---- config --------------------------------------------------------------------- */

struct rules_config;

/*
 * Parses JSON text strictly: beyond cJSON's syntax checks it rejects text after the
 * value, raw control characters in strings, NUL (raw or \u0000), which cJSON would
 * silently truncate a string at, invalid UTF-8, and an object, at any depth, that
 * gives one member name twice (names compared as decoded, so "a" and "\u0061" are
 * one): cJSON's lookups find the first of the two, other JSON readers the last. Use
 * it for any JSON that carries a proxy_config (the control API's request bodies)
 * before rules_config_from_cjson, and for any other JSON read from outside. On
 * success *out is a tree to free. Returns 0, -EINVAL (one diag entry with an empty
 * path and a message giving line and column; for a repeated name, also the name, its
 * JSON path such as $.rules[2].headers[0].value, and where it was first given), or
 * -ENOMEM. Time and memory are O(n log n) in the size of the text. Free the tree with
 * rules_json_free.
 */
int rules_json_parse(const char *json, size_t len, struct cJSON **out,
                     struct rules_diag *diag);

/*
 * cJSON's allocator for the process (cJSON_InitHooks): malloc, counting the
 * allocations that fail. cJSON's builders (cJSON_AddStringToObject...) return NULL
 * and leave the member out when one fails; rules_json_alloc_failures, compared before
 * and after a tree is built, says whether it is complete. A test's own allocator
 * calls rules_json_count_failure for each failure it makes.
 */
void *rules_json_malloc(size_t size);
void rules_json_count_failure(void);
unsigned long rules_json_alloc_failures(void);

/*
 * cJSON_AddItemToObject and cJSON_AddItemToArray, but an item they do not take (the
 * container is NULL, or copying the member's name ran out of memory) is deleted, not
 * lost. 1 if added, else 0; rules_json_alloc_failures tells the tree is incomplete.
 */
int rules_json_add(struct cJSON *obj, const char *name, struct cJSON *item);
int rules_json_append(struct cJSON *arr, struct cJSON *item);

/* What to tell of a rules_json_parse that returned r: "out of memory" for -ENOMEM, the
 * first diagnostic for another failure, otherwise (r 0, or no diagnostic) otherwise. */
const char *rules_json_error(int r, const struct rules_diag *diag, const char *otherwise);

/* rules_json_parse with another bound than RULES_MAX_CONFIG_LEN on len: for JSON the
 * process wrote itself, such as the daemon's state files. */
int rules_json_parse_max(const char *json, size_t len, size_t max, struct cJSON **out,
                         struct rules_diag *diag);

/*
 * Wipes every string and key of a cJSON tree, then deletes it. A tree that held a
 * proxy_config holds its opaque values: free it with this, not cJSON_Delete. NULL is
 * a no-op.
 */
void rules_json_free(struct cJSON *root);

/*
 * Parses, validates and resolves a proxy_config. `json`/`len` is the JSON text of the
 * proxy_config object itself (at most RULES_MAX_CONFIG_LEN bytes, read with
 * rules_json_parse). A field set to null is the same as a field left out. Every error
 * is appended to diag (which must be initialized) with its JSON path prefixed by
 * path_prefix ("" or e.g. "proxy_config.").
 * Secrets are resolved against `secrets` (borrowed; may be NULL when the config has
 * no workspace_secret header). On success *out holds a new config with one reference.
 * Returns 0, -EINVAL when the config was rejected (diag says why), or -ENOMEM.
 */
int rules_config_parse(const char *json, size_t len, const char *path_prefix,
                       const struct rules_secrets *secrets, struct rules_config **out,
                       struct rules_diag *diag);

/*
 * As rules_config_parse, from an already parsed cJSON object (borrowed). cJSON cuts a
 * string at an embedded NUL without a trace: parse the text with rules_json_parse.
 */
int rules_config_from_cjson(const struct cJSON *obj, const char *path_prefix,
                            const struct rules_secrets *secrets,
                            struct rules_config **out, struct rules_diag *diag);

/* Takes a reference. Returns cfg. */
struct rules_config *rules_config_ref(struct rules_config *cfg);

/* Drops a reference; the last one wipes every secret value and frees. NULL is a no-op. */
void rules_config_unref(struct rules_config *cfg);

enum rules_ser_mode {
  /* For display and the control API: opaque values absent, workspace_secret values
   * shown as their unresolved templates. Never contains a secret. */
  RULES_SER_REDACTED,
  /* For the daemon's state dir, to be encrypted by the caller: the config as pushed
   * (templates unresolved, opaque values present). */
  RULES_SER_PERSIST,
};

/*
 * Serializes cfg as JSON (malloc'd, NUL-terminated, pretty when pretty != 0; NULL
 * when out of memory). The sections the pushed config had are written back, with
 * callback defaults made explicit; dns.remap keys come out sorted. A PERSIST string
 * holds opaque values: explicit_bzero it before freeing.
 */
char *rules_config_to_json(const struct rules_config *cfg, enum rules_ser_mode mode,
                           int pretty);

/*
 * 1 if a and b, which serialize the same (RULES_SER_PERSIST), resolved their headers
 * to the same values: a workspace_secret's template stores the same whatever its
 * secret's value was when the config was pushed.
 */
int rules_config_same_values(const struct rules_config *a, const struct rules_config *b);

/* Writes a one-line summary ("3 rules, 4 headers (3 from secrets), ...") into buf. */
void rules_config_summary(const struct rules_config *cfg, char *buf, size_t size);

/*
 * Appends to out (initialized by the caller) a warning, with the JSON path it is
 * about, for each part of a valid config that can never do what it says: a rule's or
 * the callback's host name that egress refuses or no_proxy relays untouched on every
 * port, an egress.allow host name a deny entry covers on every port, an allow entry
 * with paths or methods under default allow (it refuses nothing), and a dns.remap
 * target on the host's loopback without a port while egress leaves the name open on
 * any port. Globs are not compared with each other: only what is sure is reported.
 * For `config check`; at most 100. Returns 0 or -ENOMEM.
 */
int rules_config_warnings(const struct rules_config *cfg, struct rules_diag *out);

/* ---- names, addresses and paths ------------------------------------------------ */

/*
 * Normalizes a destination host name: lowercase, one trailing dot stripped; rejects
 * empty labels, labels over 63 bytes, names over 253 bytes, and bytes outside
 * [a-z0-9-_.] (IPv6 literals in brackets are accepted and returned without brackets,
 * in canonical form; so is a bare IPv6 literal, so normalizing is idempotent). Also
 * rejects names with a numeric last label that are not a dotted-quad address, and
 * numeric forms resolvers read as IPv4 addresses (127.1, 2130706433, 0x7f000001):
 * they would be matched as names but connect to addresses.
 * Returns the length written to out (NUL-terminated, size >= RULES_MAX_NAME_LEN + 1)
 * or -EINVAL.
 */
int rules_normalize_host(const char *in, size_t len, char *out, size_t size);

/* Flags returned by rules_normalize_path. */
#define RULES_PATH_AMBIGUOUS 1 /* had %2F, %5C, a backslash, %00, ';', "//", a
                                  dot-segment or "%25" before hex digits: servers
                                  disagree on it */

/*
 * Normalizes a request path for matching: the query is excluded, percent-encoded
 * printable ASCII is decoded except '%', '*', '?', '#', '/', '\' and ';' (other
 * encodings get uppercase hex digits), dot-segments are removed (RFC 3986 5.2.4),
 * duplicate slashes are kept as sent.
 * Returns the length written to out (NUL-terminated), -EINVAL for a malformed
 * percent-encoding, a path not starting with '/', or a space, control byte or '#'
 * in it, or -ENOSPC when size is not larger than the path without its query;
 * *flags (may be NULL) receives RULES_PATH_* bits.
 */
int rules_normalize_path(const char *in, size_t len, char *out, size_t size, int *flags);

/* Glob match of a normalized host against a normalized pattern; `*` matches any run. */
int rules_host_glob_match(const char *pattern, const char *host);

/* Glob match of a normalized path against a path pattern; `*` matches any run. */
int rules_path_glob_match(const char *pattern, const char *path);

/* ---- decisions -------------------------------------------------------------------- */

enum rules_action {
  RULES_DENY,      /* refuse: 403 with reason for HTTP and intercepted TLS, else reset */
  RULES_TUNNEL,    /* relay bytes (TLS after reading the SNI; plain HTTP still parsed) */
  RULES_INTERCEPT, /* terminate TLS / parse HTTP, decide and inject per request */
  RULES_BYPASS,    /* no_proxy: relay untouched, no parsing, no injection */
};

/*
 * How patterns apply (match_hosts, no_proxy, egress, callback.match_hosts):
 * - A host glob applies to names: `*` matches any run of characters, so
 *   `*.github.com` matches `a.github.com` and `a.b.github.com`, not `github.com`.
 *   `*` alone matches every destination, names and addresses.
 * - An IP or CIDR entry applies to dest->addr and to a name that is itself an IP
 *   literal; a v4-mapped IPv6 address is compared as IPv4. An address-only flow
 *   (name NULL) is matched by IP/CIDR entries and `*` only.
 * - An optional `:port` restricts the port; IPv6 with a port is `[2001:db8::1]:443`
 *   (a range: `[2001:db8::/32]:443`).
 * - In no_proxy only, a leading dot (`.example.com`, as in curl's NO_PROXY) means the
 *   domain itself and all its subdomains.
 */

/* A connection's destination as the proxy knows it. */
struct rules_dest {
  const char *name;            /* normalized name, or NULL for an address-only flow */
  const struct sockaddr *addr; /* original destination (NULL if unknown) */
  uint16_t port;               /* destination port */
};

struct rules_decision {
  enum rules_action action;
  const char *reason; /* static code when denied: "egress_deny", "egress_not_allowed",
                         "invalid_name", ...; NULL otherwise */
  char entry[64];     /* what decided, for logs: "egress.deny[2]", "no_proxy[0]", a rule
                         name, or "" */
  int inspect;        /* 1 when request-level egress policy (an entry with paths or
                         methods, step 4 below) applies: the connection may only be
                         served by reading its requests, never relayed as opaque bytes */
};

/*
 * Connection-level decision (no path known yet), in this order:
 * 1. a name that is not normalized: deny "invalid_name";
 * 2. an egress.deny entry without paths/methods matching: deny "egress_deny";
 * 3. egress.default "deny" and no egress.allow entry's hosts match: deny
 *    "egress_not_allowed" (rules' match_hosts never allow implicitly);
 * 4. an egress.deny entry with paths/methods matching, or, under default deny, only
 *    egress.allow entries with paths/methods matching: intercept, even for a no_proxy
 *    host, since only an intercepted request shows its path and method (no_proxy
 *    never overrides a deny);
 * 5. a no_proxy entry matching: bypass;
 * 6. a rule with headers matching host and port (its match_paths are for requests),
 *    the callback's match_hosts, or any other egress entry with paths/methods
 *    matching: intercept;
 * 7. else tunnel.
 * out->entry names what decided: "egress.deny[2]", "no_proxy[0]", a rule name,
 * "callback", or "". out->inspect is set in case 4 only.
 */
void rules_decide_conn(const struct rules_config *cfg, const struct rules_dest *dest,
                       struct rules_decision *out);

/* Flags of rules_check_resolved. */
#define RULES_RESOLVED_REMAPPED 1  /* dns.remap named the target */
#define RULES_RESOLVED_INSPECTED 2 /* the connection's requests are read and decided
                                      (plain HTTP or intercepted, not no_proxy) */
#define RULES_RESOLVED_HOST_LOCAL 4 /* the address is one of the dialing host's own
                                       (its kernel routes it as local): a connection
                                       to it reaches the host itself, like loopback */

/*
 * Checks an address the proxy resolved for a destination before dialing it: denied by
 * an egress.deny IP/CIDR entry, or in a range that must not be reached from the host
 * (loopback, link-local incl. cloud metadata, unspecified, multicast, the synthetic
 * 198.18.0.0/15, and an address of the host's own: RULES_RESOLVED_HOST_LOCAL, which
 * the caller learns from the host's kernel) unless the operator chose it: RULES_RESOLVED_REMAPPED in flags, or
 * an egress.allow IP/CIDR entry covering it. A NAT64 address (64:ff9b::/96) is checked
 * as the IPv4 address it embeds as well. An egress.deny entry with paths or
 * methods whose IP/CIDR covers the address denies it too unless the connection is
 * RULES_RESOLVED_INSPECTED: relayed as opaque bytes, its requests could not be held
 * to that entry (an inspected one's are, by rules_check_request_address). The
 * callback's own address and port (any loopback address, or the host's own, for a
 * loopback callback) are
 * refused whatever the flags and entries say ("callback_endpoint"): it hands out any
 * sandbox's credentials. Returns 1 when allowed (*out is left untouched, so it may
 * hold the connection's decision), else 0 with out->action RULES_DENY, out->reason
 * "egress_deny", "blocked_address" or "callback_endpoint" and out->entry set.
 */
int rules_check_resolved(const struct rules_config *cfg, const struct sockaddr *addr,
                         uint16_t port, unsigned flags, struct rules_decision *out);

/* 1 if sa is a NAT64 address (64:ff9b::/96, which rules_check_resolved also checks as
 * the IPv4 address it embeds), with that IPv4 address in *out; else 0. */
int rules_nat64_ipv4(const struct sockaddr *sa, struct sockaddr_in *out);

/* 1 if an egress.deny entry with paths or methods names an IP or CIDR: named
 * requests must then be checked against the address they are sent to as well. */
int rules_has_address_requests(const struct rules_config *cfg);

/*
 * Request-level egress.deny entries (paths or methods) with IP/CIDR hosts, applied to
 * the address a request's upstream is connected to (addr, whose port counts): a
 * named request is decided by its name (rules_decide_request), where such entries
 * never match, so this holds it to them once the address is known. Paths are judged
 * as in rules_decide_request (ambiguous paths match every deny). Returns 1 when
 * allowed, else 0 with out->action RULES_DENY, out->reason ("egress_deny",
 * "invalid_path", "path_too_long" or "blocked_address" for an address that is not
 * IPv4 or IPv6) and out->entry set.
 */
int rules_check_request_address(const struct rules_config *cfg, const struct sockaddr *addr,
                                const char *method, const char *path, size_t path_len,
                                struct rules_decision *out);

/* One header to inject; pointers into the config, valid while a reference is held. */
struct rules_header {
  const char *name;
  const char *value; /* resolved; may contain no CR, LF or NUL */
  size_t value_len;
  const char *rule;  /* name of the rule it came from */
  int secret;        /* workspace_secret or opaque (a plaintext value is not one) */
  int plain_http;    /* its rule has allow_plain_http: it may go over plain HTTP */
};

struct rules_request_decision {
  int deny;           /* 1: answer 403 */
  const char *reason; /* as in rules_decision */
  char entry[64];
  size_t nheaders;
  struct rules_header headers[RULES_MAX_INJECT];
  int callback;       /* 1: the callback's match_hosts cover this destination */
};

/*
 * Request-level decision on an intercepted or plain HTTP connection: egress entries
 * with paths/methods, then the headers of every rule matching host, port and path, in
 * rule order, the first rule winning per header name (case-insensitive). `path` is
 * the raw request path (query included or not); it is normalized here. A path that
 * cannot be normalized is denied ("invalid_path", or "path_too_long" beyond 8 KiB
 * without the query); an ambiguous one matches deny entries but never a rule's
 * match_paths nor an allow entry's paths. Egress methods are uppercase in the config
 * and compared with the request method ignoring case, so "post" cannot slip past a
 * POST deny on a lenient server. Under default deny a request must match an allow
 * entry completely. A name that is not normalized is denied ("invalid_name").
 */
void rules_decide_request(const struct rules_config *cfg, const struct rules_dest *dest,
                          const char *method, const char *path, size_t path_len,
                          struct rules_request_decision *out);

/* Returns 1 if name (case-insensitive) is a header the request decision injects. */
/*
 * For a request that would go out in cleartext (plain HTTP, not intercepted TLS): the
 * name of the first rule whose secret header (workspace_secret or opaque) d injects
 * without that rule's allow_plain_http, or "callback" when the callback's credentials
 * would be asked for without its allow_plain_http; NULL when the request may go as it
 * is. A secret goes only to an upstream verified by TLS unless the config says so.
 */
const char *rules_request_needs_tls(const struct rules_config *cfg,
                                    const struct rules_request_decision *d);

int rules_request_injects(const struct rules_request_decision *d, const char *name,
                          size_t len);

/*
 * dns.remap: if name has a remap, writes the target host (without brackets) to host
 * and its port (the original port when the target has none) to *out_port and returns
 * 1; else returns 0. Returns -ENOSPC when host is too small (RULES_MAX_NAME_LEN + 1
 * always suffices).
 */
int rules_remap(const struct rules_config *cfg, const char *name, uint16_t port,
                char *host, size_t size, uint16_t *out_port);

/* ---- callback ----------------------------------------------------------------------- */

enum rules_callback_kind { RULES_CB_HTTP, RULES_CB_HTTPS, RULES_CB_UNIX };

/* The credential callback of a config (borrowed pointers into it). */
struct rules_callback {
  enum rules_callback_kind kind;
  const char *url;       /* as configured */
  const char *host;      /* http(s): host without brackets; unix: NULL */
  uint16_t port;         /* http(s) */
  const char *path;      /* request path ("/" if none) */
  const char *socket;    /* unix: the socket path */
  uint32_t ttl_seconds;  /* 0 means: never cache */
  uint32_t timeout_ms;
  size_t nheaders;       /* headers sent to the callback itself */
  const struct rules_header *headers;
  int plain_http;        /* allow_plain_http: its answers may go over plain HTTP */
};

/* Returns the callback or NULL when the config has none. */
const struct rules_callback *rules_config_callback(const struct rules_config *cfg);

/*
 * 1 if addr and port are callback cb's endpoint as rules_check_resolved refuses it for
 * the config's own callback (its address when its URL gives one; for a loopback
 * callback any loopback address, or one of the host's own with
 * RULES_RESOLVED_HOST_LOCAL in flags, at its port; a NAT64 address as the IPv4
 * address it embeds too), or if addr is not an address; else 0. For the callbacks of
 * other configs a daemon serves (the proxy refuses them all).
 */
int rules_callback_reached(const struct rules_callback *cb, const struct sockaddr *addr,
                           uint16_t port, unsigned flags);

/* 1 if rules_callback_reached can find cb at an address: its URL gives one, or
 * localhost; 0 for another host name (reached by that name only). */
int rules_callback_has_address(const struct rules_callback *cb);

/* ---- header syntax (shared with the HTTP path and the callback client) ------------- */

/* 1 if s[0..len) is a non-empty RFC 9110 token. */
int rules_is_token(const char *s, size_t len);

/* The value of hex digit c (either case), or -1: what a percent-escape's digits mean. */
int rules_hex_value(unsigned char c);

/* 1 if the name (case-insensitive) is hop-by-hop or framing and may not be injected:
 * Connection, Keep-Alive, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization,
 * TE, Trailer, Transfer-Encoding, Upgrade, Host, Content-Length. */
int rules_is_reserved_header(const char *name, size_t len);

/* 1 if the value may be sent: no CR, LF or NUL (and no other control byte but HTAB). */
int rules_is_valid_value(const char *v, size_t len);

#endif
