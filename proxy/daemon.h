/*
 * The daemon (`authproxy serve`): every attached sandbox on one loop, its state kept
 * sealed in the state directory, and the operations the control API exposes. Shared
 * by serve.c (lifecycle, persistence) and api.c (HTTP routes).
 */
#ifndef AUTHPROXY_DAEMON_H
#define AUTHPROXY_DAEMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "proxy/apiclient.h"
#include "proxy/control.h"
#include "proxy/proxy.h"
#include "proxy/seal.h"
#include "rules/rules.h"

#define DAEMON_NAME_MAX PROXY_API_NAME_MAX
#define DAEMON_CA_POOL 16
#define DAEMON_MAX_CONFIGS 4096

struct cJSON;

struct daemon_owner;

struct daemon_sandbox {
  struct daemon_sandbox *next;
  struct daemon_sandbox **pprev;  /* the pointer that points here, for O(1) unlinking */
  struct daemon_sandbox *hnext;   /* next in its bucket of daemon.index */
  struct daemon_sandbox *nsnext;  /* next in its bucket of daemon.nsindex */
  char name[DAEMON_NAME_MAX + 1];
  char *netns;              /* the path given at attach */
  dev_t ns_dev;             /* identity of that namespace, so a reused path (a new */
  ino_t ns_ino;             /* process with the same pid) is never mistaken for it */
  uint64_t ns_cookie;       /* its SO_NETNS_COOKIE (0: unknown), which, unlike the inode
                               number, no later namespace gets: a restart checks it */
  struct proxy_sandbox *sb;
  struct proxy_ca *ca;
  uint16_t port;            /* the proxy listener's port inside the namespace */
  struct daemon_owner *owner; /* attached by /proc/PID/ns/net: PID, watched (or NULL) */
};

/* A sandbox found in the state directory that could not be re-attached. */
struct daemon_lost {
  struct daemon_lost *next;
  char name[DAEMON_NAME_MAX + 1];
  char *netns;
  char *why;
};

/* A proxy_config stored by name (PUT /v1/configs/NAME) for attaches that name it. */
struct daemon_config {
  struct daemon_config *next;
  char name[DAEMON_NAME_MAX + 1];
  char *persist;            /* as pushed: templates unresolved, opaque values present */
  char *redacted;           /* for GET: no opaque value, templates unresolved */
};

struct daemon {
  uv_loop_t loop;
  struct proxy_ctx ctx;
  const char *state_dir;
  const char *control_path;
  const char *secrets_dir;
  const char *log_path;
  unsigned char key[PROXY_SEAL_KEY_LEN];
  struct rules_secrets *secrets;
  struct proxy_audit *audit;
  struct proxy_upstream_tls *upstream;
  struct proxy_control *control;
  struct daemon_sandbox *sandboxes;
  size_t nsandboxes;
  struct daemon_sandbox **index;   /* by name: chained buckets, index_size a power of 2 */
  struct daemon_sandbox **nsindex; /* by namespace (ns_dev, ns_ino): index_size buckets */
  size_t index_size;
  uint64_t index_key[2];           /* its SipHash key, random */
  struct daemon_lost *lost;
  struct daemon_config *configs;
  size_t nconfigs;
  enum netns_capture capture;
  size_t leaf_cache;
  unsigned busy_poll_us;
  /* CAs generated ahead on the thread pool, so attaching does not wait for key
   * generation (each is used once, by one sandbox). */
  struct proxy_ca *ca_pool[DAEMON_CA_POOL];
  int ca_pool_n;
  int ca_filling;
  uv_work_t ca_work;
  struct proxy_ca *ca_made;
  uv_signal_t sig[3];
  int nsig;
  int stopping;
  unsigned draining;        /* sandboxes closing */
  /* The counters of sandboxes detached or stopped (gauges left at zero), so that the
   * totals /metrics sums over the attached ones never go down. */
  struct proxy_sandbox_stats retired;
  uint64_t started_ms;
};

/* An error for the API: HTTP status, code, message, and validation details. */
struct daemon_error {
  int status;
  const char *code;
  char message[512];
  struct rules_diag diag;
};

void daemon_error_init(struct daemon_error *e);
void daemon_error_free(struct daemon_error *e);

/* 1 if name is [A-Za-z0-9][A-Za-z0-9_.-]{0,127}. */
int daemon_valid_name(const char *name);

struct daemon_sandbox *daemon_find(struct daemon *d, const char *name);

/*
 * Parses JSON text the daemon itself wrote: its state files (unsealed) and the
 * serialized configs it keeps. As strict as rules_json_parse, a member name given
 * twice included (the daemon writes none: its objects have fixed names, or are maps
 * that hold each key once), but bounded by the state file limit rather than by what
 * one request may carry (RULES_MAX_CONFIG_LEN): a state file holds more than a
 * request (a stored config keeps two forms of a config, the secrets file every
 * pushed secret). On success *out is a tree to free with rules_json_free. Returns 0,
 * -EINVAL or -ENOMEM.
 */
int daemon_json_parse_own(const char *json, struct cJSON **out);

/*
 * Attaches: validates the config (resolving secrets now), opens the namespace,
 * creates (or imports) the CA, installs rules and sockets, starts serving, persists.
 * proxy_config and ca are borrowed cJSON objects (ca may be NULL). Returns 0 with the
 * new sandbox, 1 with the one already attached when the attach repeats it exactly (its
 * name, namespace path, config, and CA if one is given), or an error: on failure
 * nothing is left behind and err says why.
 */
int daemon_attach(struct daemon *d, const char *name, const char *netns,
                  const struct cJSON *proxy_config, const struct cJSON *ca,
                  struct daemon_sandbox **out, struct daemon_error *err);

/* Validates and swaps in a new config; persists. */
int daemon_update(struct daemon *d, struct daemon_sandbox *s,
                  const struct cJSON *proxy_config, struct daemon_error *err);

/* Stops serving (connections drain), locks the namespace down, forgets the state. */
int daemon_detach(struct daemon *d, struct daemon_sandbox *s, struct daemon_error *err);

/* A sandbox listed under not_attached (kept in the state directory, not attached). */
struct daemon_lost *daemon_lost_find(struct daemon *d, const char *name);

/*
 * Removes l's state file and takes it off the list (l is freed), so that a later start
 * does not attach a sandbox its runtime has deleted. Its namespace is left as it is.
 */
int daemon_lost_forget(struct daemon *d, struct daemon_lost *l, struct daemon_error *err);

/*
 * Stores proxy_config (borrowed) under name, replacing a config of that name, sealed
 * in STATE_DIR/configs. It is validated as an attach would validate it, except that
 * a {KEY} template naming a secret that exists nowhere yet is accepted: templates are
 * resolved at each attach, so a secret may be pushed after the config. The names of
 * such secrets are appended to missing (a cJSON array, borrowed; may be NULL).
 * Sandboxes attached earlier keep the config they were attached with.
 */
int daemon_config_set(struct daemon *d, const char *name, const struct cJSON *proxy_config,
                      struct cJSON *missing, struct daemon_error *err);

struct daemon_config *daemon_config_find(struct daemon *d, const char *name);

/* Forgets a stored config and removes its state file (attached sandboxes keep theirs). */
int daemon_config_delete(struct daemon *d, struct daemon_config *c, struct daemon_error *err);

/* Secrets pushed through the API, sealed in the state directory. */
int daemon_secret_set(struct daemon *d, const char *key, const char *value, size_t len,
                      struct daemon_error *err);
int daemon_secret_delete(struct daemon *d, const char *key, struct daemon_error *err);

/* The control API handler (api.c). */
void daemon_api(void *arg, const struct proxy_control_request *req,
                struct proxy_control_response *resp);

#endif
