/*
 * `authproxy serve`: one daemon, one loop, every sandbox of the host.
 *
 * State directory layout (mode 0700, root):
 *   key                      AES-256-GCM key, 0600, created on first start
 *   secrets.sealed           secrets pushed through the API
 *   sandboxes/NAME.sealed    one per attached sandbox: its namespace (path and
 *                            identity), its proxy_config as pushed (opaque values
 *                            included) and its CA key and certificate
 *   configs/NAME.sealed      one per config stored by name (PUT /v1/configs/NAME):
 *                            as pushed, and redacted for GET
 * Every file holding a secret is sealed (seal.c); the directory holds no plaintext
 * secret value. The daemon holds an exclusive flock(2) on the directory while it
 * runs: one daemon per state directory (state_dir_lock).
 *
 * When the daemon stops or dies, sandboxes keep their rules: connections are
 * redirected to a port nothing listens on, so they fail (no network, never a direct
 * path). On start, every sandbox whose namespace still exists is attached again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <mbedtls/platform_util.h>

#include "netns/netns.h"
#include "proxy/apiclient.h"
#include "proxy/audit.h"
#include "proxy/ca.h"
#include "proxy/cfgload.h"
#include "proxy/commands.h"
#include "proxy/daemon.h"
#include "proxy/log.h"
#include "proxy/options.h"
#include "proxy/rng.h"
#include "proxy/siphash.h"
#include "proxy/tls.h"

/* The largest sealed state file read back at start; write_sealed refuses larger ones. */
#define STATE_MAX (4u << 20)
/* libuv's thread pool; half of it may resolve names at once (see proxy_cmd_serve). */
#define POOL_THREADS "32"

/* ---- errors ---- */

void daemon_error_init(struct daemon_error *e)
{
  memset(e, 0, sizeof(*e));
  rules_diag_init(&e->diag);
  e->status = 500;
  e->code = "internal_error";
}

void daemon_error_free(struct daemon_error *e)
{
  rules_diag_free(&e->diag);
}

static int fail(struct daemon_error *e, int status, const char *code, int ret,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int fail(struct daemon_error *e, int status, const char *code, int ret,
                const char *fmt, ...)
{
  va_list ap;

  e->status = status;
  e->code = code;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof(e->message), fmt, ap);
  va_end(ap);
  return ret;
}

int daemon_valid_name(const char *name)
{
  return proxy_api_name_ok(name, DAEMON_NAME_MAX);
}

/* ---- sandboxes by name ---- */

/*
 * Every API call names its sandbox, and a fleet host attaches thousands: a list
 * search per call made attaching N sandboxes quadratic. The list keeps attach order
 * for listings; chained hash tables (SipHash under a random key, like the leaf cache
 * and the DNS table; at most one sandbox per bucket on average) find them by name and
 * by namespace. Both tables have index_size buckets and grow together.
 */
#define INDEX_MIN 64

static size_t name_hash(const struct daemon *d, const char *name)
{
  return (size_t)proxy_siphash(d->index_key, name, strlen(name));
}

static size_t ns_hash(const struct daemon *d, dev_t dev, ino_t ino)
{
  uint64_t id[2] = { (uint64_t)dev, (uint64_t)ino };

  return (size_t)proxy_siphash(d->index_key, id, sizeof(id));
}

/* Room in the indexes for one more sandbox. Indexes that cannot grow keep working,
 * with longer chains; only the first allocation can fail an attach. */
static int index_reserve(struct daemon *d)
{
  struct daemon_sandbox **t, **nt, *s, *next;
  size_t size, i, b;

  if (d->index != NULL && d->nsandboxes < d->index_size)
    return 0;
  if (d->index == NULL &&
      proxy_rng(NULL, (unsigned char *)d->index_key, sizeof(d->index_key)) != 0)
    return -EIO;
  size = d->index != NULL ? d->index_size * 2 : INDEX_MIN;
  t = calloc(size, sizeof(*t));
  nt = calloc(size, sizeof(*nt));
  if (t == NULL || nt == NULL) {
    free(t);
    free(nt);
    return d->index != NULL ? 0 : -ENOMEM;
  }
  for (i = 0; i < d->index_size; i++) {
    for (s = d->index[i]; s != NULL; s = next) {
      next = s->hnext;
      b = name_hash(d, s->name) & (size - 1);
      s->hnext = t[b];
      t[b] = s;
    }
    for (s = d->nsindex[i]; s != NULL; s = next) {
      next = s->nsnext;
      b = ns_hash(d, s->ns_dev, s->ns_ino) & (size - 1);
      s->nsnext = nt[b];
      nt[b] = s;
    }
  }
  free(d->index);
  free(d->nsindex);
  d->index = t;
  d->nsindex = nt;
  d->index_size = size;
  return 0;
}

/* After index_reserve, with s->ns_dev and s->ns_ino set (they never change after). */
static void link_sandbox(struct daemon *d, struct daemon_sandbox *s)
{
  size_t b = name_hash(d, s->name) & (d->index_size - 1);
  size_t nb = ns_hash(d, s->ns_dev, s->ns_ino) & (d->index_size - 1);

  s->next = d->sandboxes;
  if (s->next != NULL)
    s->next->pprev = &s->next;
  s->pprev = &d->sandboxes;
  d->sandboxes = s;
  s->hnext = d->index[b];
  d->index[b] = s;
  s->nsnext = d->nsindex[nb];
  d->nsindex[nb] = s;
  d->nsandboxes++;
}

static void unlink_sandbox(struct daemon *d, struct daemon_sandbox *s)
{
  struct daemon_sandbox **pp = &d->index[name_hash(d, s->name) & (d->index_size - 1)];

  while (*pp != s)
    pp = &(*pp)->hnext;
  *pp = s->hnext;
  pp = &d->nsindex[ns_hash(d, s->ns_dev, s->ns_ino) & (d->index_size - 1)];
  while (*pp != s)
    pp = &(*pp)->nsnext;
  *pp = s->nsnext;
  *s->pprev = s->next;
  if (s->next != NULL)
    s->next->pprev = s->pprev;
  d->nsandboxes--;
}

struct daemon_sandbox *daemon_find(struct daemon *d, const char *name)
{
  struct daemon_sandbox *s;

  if (d->index == NULL)
    return NULL;
  for (s = d->index[name_hash(d, name) & (d->index_size - 1)]; s != NULL; s = s->hnext)
    if (strcmp(s->name, name) == 0)
      return s;
  return NULL;
}

/* The attached sandbox serving the namespace with this identity, or NULL. Attached
 * namespaces are alive (their listeners hold them), so no other has their inode. */
static struct daemon_sandbox *find_by_ns(struct daemon *d, dev_t dev, ino_t ino)
{
  struct daemon_sandbox *s;

  if (d->nsindex == NULL)
    return NULL;
  for (s = d->nsindex[ns_hash(d, dev, ino) & (d->index_size - 1)]; s != NULL;
       s = s->nsnext)
    if (s->ns_dev == dev && s->ns_ino == ino)
      return s;
  return NULL;
}

/* ---- sandboxes kept in the state directory but not attached ---- */

static void lost_free(struct daemon_lost *l)
{
  free(l->netns);
  free(l->why);
  free(l);
}

struct daemon_lost *daemon_lost_find(struct daemon *d, const char *name)
{
  struct daemon_lost *l;

  for (l = d->lost; l != NULL; l = l->next)
    if (strcmp(l->name, name) == 0)
      return l;
  return NULL;
}

/* Takes l off the list and frees it. */
static void lost_remove(struct daemon *d, struct daemon_lost *l)
{
  struct daemon_lost **pp;

  for (pp = &d->lost; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == l) {
      *pp = l->next;
      lost_free(l);
      return;
    }
  }
}

/* ---- state files ---- */

/* The length of NAME in a directory entry NAME.sealed (a state file), or 0. */
static size_t sealed_stem(const char *entry)
{
  size_t len = strlen(entry);

  return len > 7 && strcmp(entry + len - 7, ".sealed") == 0 ? len - 7 : 0;
}

static void state_path(const struct daemon *d, const char *name, char *buf, size_t size)
{
  snprintf(buf, size, "%s/sandboxes/%s.sealed", d->state_dir, name);
}

static void wipe_free(char *p)
{
  if (p != NULL) {
    mbedtls_platform_zeroize(p, strlen(p));
    free(p);
  }
}

/*
 * Seals a JSON document into path (0600). The text is wiped. Sandbox state is written
 * without fsync: it must survive the daemon, not the host (a reboot ends every
 * namespace it describes), and attaching is on the runtime's critical path. Secrets
 * and stored configs outlive reboots and are made durable.
 * A file larger than read_sealed accepts is refused with -EFBIG and path is left as it
 * was: written, it would stop the next start (secrets) or be lost at it (a config, a
 * sandbox), after the API had answered that it was stored.
 */
static int write_sealed(struct daemon *d, const char *path, const char *aad, char *json,
                        int durable)
{
  unsigned char *blob = NULL;
  size_t len;
  int r;

  r = proxy_seal(d->key, aad, json, strlen(json), &blob, &len);
  wipe_free(json);
  if (r != 0)
    return r;
  if (len > STATE_MAX)
    r = -EFBIG;
  else
    r = proxy_write_file_atomic(path, blob, len, 0600, durable);
  free(blob);
  return r;
}

/* What the operator can do about an attach or a state write that ran out of
 * descriptors (errno r, negative), as the end of a message: "" for another error. A
 * sandbox holds a few (its listeners and DNS sockets) for as long as it is attached,
 * so the step that runs out may be any of them. */
static const char *fd_fix(int r)
{
  if (r == -EMFILE)
    return "; the daemon has as many file descriptors open as it may: raise its limit "
           "(LimitNOFILE= in its unit, ulimit -Hn), or detach sandboxes no longer used";
  if (r == -ENFILE)
    return "; the host has as many files open as it may (fs.file-max)";
  return "";
}

/* What the operator can do about a state file that cannot be written or removed
 * (errno r, negative), as the end of a message: "" when it is not plain. */
static const char *state_fix(int r)
{
  switch (-r) {
  case ENOSPC:
  case EDQUOT:
    return "; free space on the state directory's filesystem, then try again";
  case EROFS:
    return "; make the state directory's filesystem writable, then try again";
  default:
    return fd_fix(r);
  }
}

/*
 * The API error for a state file that was not written: 507 when write_sealed refused
 * it as too large (fix says what the client can do about it), 500 otherwise. what says
 * what did not happen ("secret K was not stored").
 */
static int state_fail(struct daemon_error *e, int r, const char *what, const char *path,
                      const char *fix)
{
  if (r == -EFBIG)
    return fail(e, 507, "state_too_large", r,
                "%s: sealed, %s would be larger than the %u bytes (%u MiB) the daemon reads "
                "back at start; %s", what, path, STATE_MAX, STATE_MAX >> 20, fix);
  return fail(e, 500, "state_write_failed", r, "%s: cannot write %s: %s%s", what, path,
              strerror(-r), state_fix(r));
}

int daemon_json_parse_own(const char *json, cJSON **out)
{
  return rules_json_parse_max(json, strlen(json), STATE_MAX, out, NULL);
}

/* Reads and unseals path; *json is NUL-terminated, wipe it with wipe_free. */
static int read_sealed(struct daemon *d, const char *path, const char *aad, char **json)
{
  unsigned char *plain = NULL;
  size_t plen, len;
  char *data = NULL;
  int r;

  *json = NULL;
  r = proxy_read_file(path, STATE_MAX, &data, &len);
  if (r != 0)
    return r;
  r = proxy_unseal(d->key, aad, data, len, &plain, &plen);
  free(data);
  if (r != 0)
    return r;
  *json = (char *)plain;
  return 0;
}

/* A config's stored form (templates unresolved, opaque values present): two configs
 * that store the same are the same config. Wipe with free_persisted. */
static char *persisted(const struct rules_config *cfg)
{
  return rules_config_to_json(cfg, RULES_SER_PERSIST, 0);
}

static void free_persisted(char *text)
{
  if (text != NULL) {
    mbedtls_platform_zeroize(text, strlen(text));
    free(text);
  }
}

static int persist_sandbox(struct daemon *d, const struct daemon_sandbox *s,
                           const struct rules_config *cfg)
{
  char path[4096], aad[DAEMON_NAME_MAX + 16], cookie[24];
  char *config = NULL, *key = NULL, *json = NULL;
  cJSON *root = NULL, *cfgobj = NULL;
  int r = -ENOMEM;

  config = persisted(cfg);
  key = proxy_ca_key_pem(s->ca);
  root = cJSON_CreateObject();
  if (config == NULL || key == NULL || root == NULL)
    goto out;
  if (daemon_json_parse_own(config, &cfgobj) != 0)
    goto out;
  if (s->ns_cookie != 0) {
    /* A string: a JSON number (a double) does not hold every 64-bit value. */
    snprintf(cookie, sizeof(cookie), "%llu", (unsigned long long)s->ns_cookie);
  }
  /* A file missing any of these would not bring the sandbox back as it was. */
  if (cJSON_AddStringToObject(root, "name", s->name) == NULL ||
      cJSON_AddStringToObject(root, "netns", s->netns) == NULL ||
      cJSON_AddNumberToObject(root, "ns_dev", (double)s->ns_dev) == NULL ||
      cJSON_AddNumberToObject(root, "ns_ino", (double)s->ns_ino) == NULL ||
      (s->ns_cookie != 0 && cJSON_AddStringToObject(root, "ns_cookie", cookie) == NULL) ||
      !cJSON_AddItemToObject(root, "proxy_config", cfgobj))
    goto out;
  cfgobj = NULL;
  if (cJSON_AddStringToObject(root, "ca_certificate", proxy_ca_cert_pem(s->ca)) == NULL ||
      cJSON_AddStringToObject(root, "ca_key", key) == NULL)
    goto out;
  json = cJSON_PrintUnformatted(root);
  if (json == NULL)
    goto out;
  state_path(d, s->name, path, sizeof(path));
  snprintf(aad, sizeof(aad), "sandbox:%s", s->name);
  r = write_sealed(d, path, aad, json, 0);
  json = NULL;
out:
  free_persisted(config);
  if (key != NULL) {
    mbedtls_platform_zeroize(key, PROXY_CA_KEY_PEM_MAX);
    free(key);
  }
  rules_json_free(cfgobj);
  rules_json_free(root);
  return r;
}

/* For attach (what: "was not attached") and update ("kept its config"). */
static int sandbox_state_fail(struct daemon *d, struct daemon_error *err, int r,
                              const char *name, const char *what)
{
  char path[4096], msg[DAEMON_NAME_MAX + 64];

  state_path(d, name, path, sizeof(path));
  snprintf(msg, sizeof(msg), "sandbox %s %s", name, what);
  return state_fail(err, r, msg, path, "give it a smaller proxy_config");
}

static void secrets_path(const struct daemon *d, char *buf, size_t size)
{
  snprintf(buf, size, "%s/secrets.sealed", d->state_dir);
}

/* Copies every pushed secret of from into a store (to) or a JSON object (json); the
 * first failure stops the copy, so that nothing is written with a secret missing. */
struct secrets_copy_ctx {
  const struct rules_secrets *from;
  struct rules_secrets *to;
  cJSON *json;
  int r;
};

static void secret_copy_cb(const char *key, void *arg)
{
  struct secrets_copy_ctx *c = arg;
  char *value = NULL;
  size_t len = 0;

  if (c->r != 0)
    return;
  c->r = rules_secrets_get(c->from, key, &value, &len);
  if (c->r != 0)
    return;
  if (c->to != NULL)
    c->r = rules_secrets_set(c->to, key, value, len);
  else if (cJSON_AddStringToObject(c->json, key, value) == NULL)
    c->r = -ENOMEM;
  rules_secret_free(value, len);
}

/*
 * A copy of the pushed secrets (over the same --secrets-dir). A change is made in a
 * copy, written, and only then swapped in, so that memory and disk agree whatever
 * fails: the API never answers an error for a secret the daemon then uses (or one
 * that comes back at the next start).
 */
static int secrets_copy(const struct daemon *d, struct rules_secrets **out)
{
  struct secrets_copy_ctx c = { .from = d->secrets };

  *out = NULL;
  c.to = rules_secrets_new(d->secrets_dir);
  if (c.to == NULL)
    return -ENOMEM;
  rules_secrets_list(d->secrets, secret_copy_cb, &c);
  if (c.r != 0) {
    rules_secrets_free(c.to);
    return c.r;
  }
  *out = c.to;
  return 0;
}

/* Writes the pushed secrets of st (d->secrets, or the copy about to replace it). */
static int persist_secrets(struct daemon *d, const struct rules_secrets *st)
{
  struct secrets_copy_ctx c = { .from = st };
  char path[4096], *json;

  secrets_path(d, path, sizeof(path));
  c.json = cJSON_CreateObject();
  if (c.json == NULL)
    return -ENOMEM;
  rules_secrets_list(st, secret_copy_cb, &c);
  json = c.r == 0 ? cJSON_PrintUnformatted(c.json) : NULL;
  rules_json_free(c.json);
  if (c.r != 0)
    return c.r;
  if (json == NULL)
    return -ENOMEM;
  return write_sealed(d, path, "secrets", json, 1);
}

static int load_secrets(struct daemon *d)
{
  char path[4096], *json = NULL;
  cJSON *root = NULL, *item;
  int r;

  secrets_path(d, path, sizeof(path));
  r = read_sealed(d, path, "secrets", &json);
  if (r == -ENOENT)
    return 0;
  if (r != 0) {
    if (r == -EBADMSG)
      log_error("serve: cannot read %s: it does not decrypt with the state key %s/key "
                "(another key, or the file was changed): restore the key it was sealed "
                "under, or, losing the pushed secrets, move the file away and push them "
                "again", path, d->state_dir);
    else
      log_error("serve: cannot read %s: %s", path, strerror(-r));
    return r;
  }
  r = daemon_json_parse_own(json, &root);
  wipe_free(json);
  if (r != 0) {
    log_error("serve: %s is malformed (it decrypts, but is not the JSON object the daemon "
              "writes); move it away to start without the pushed secrets", path);
    return r;
  }
  cJSON_ArrayForEach(item, root) {
    if (!cJSON_IsString(item))
      continue;
    r = rules_secrets_set(d->secrets, item->string, item->valuestring,
                          strlen(item->valuestring));
    if (r != 0) {
      /* Started without it, the daemon would drop it from the file at its next write. */
      log_error("serve: cannot load the pushed secret %s from %s: %s", item->string, path,
                strerror(-r));
      break;
    }
  }
  rules_json_free(root);
  return r;
}

/* ---- attach, update, detach ---- */

static int parse_config_with(const struct rules_secrets *secrets, const cJSON *proxy_config,
                             struct rules_config **cfg, struct daemon_error *err)
{
  int r;

  if (!cJSON_IsObject(proxy_config))
    return fail(err, 400, "invalid_request", -EINVAL,
                "proxy_config: must be a JSON object");
  r = rules_config_from_cjson(proxy_config, "proxy_config.", secrets, cfg, &err->diag);
  if (r == -EINVAL)
    return fail(err, 422, "invalid_config", r,
                "proxy_config was rejected: %zu error(s); see details", err->diag.count);
  if (r != 0)
    return fail(err, 500, "internal_error", r, "cannot parse proxy_config: %s", strerror(-r));
  return 0;
}

static int parse_config(struct daemon *d, const cJSON *proxy_config,
                        struct rules_config **cfg, struct daemon_error *err)
{
  return parse_config_with(d->secrets, proxy_config, cfg, err);
}

static int open_netns(const char *path, dev_t *dev, ino_t *ino, struct daemon_error *err)
{
  struct stat st;
  int fd = netns_open(path);

  if (fd == -ENOENT)
    return fail(err, 400, "netns_not_found", fd, "netns %s does not exist", path);
  if (fd == -EINVAL)
    return fail(err, 400, "not_a_netns", fd, "%s is not a network namespace", path);
  if (fd == -EMFILE || fd == -ENFILE)
    return fail(err, 500, "attach_failed", fd, "cannot open netns %s: %s%s", path,
                strerror(-fd), fd_fix(fd));
  if (fd < 0)
    return fail(err, 400, "netns_unavailable", fd, "cannot open netns %s: %s", path,
                strerror(-fd));
  if (fstat(fd, &st) != 0) {
    close(fd);
    return fail(err, 500, "netns_unavailable", -EIO, "cannot stat netns %s", path);
  }
  /* A container that shares the host's network namespace has nothing to capture. */
  if (netns_is_own(fd) == 1) {
    close(fd);
    return fail(err, 400, "host_netns", -EPERM,
                "%s is the daemon's own network namespace (the host's); attaching it would "
                "cut the host off the network: give the sandbox a namespace of its own",
                path);
  }
  *dev = st.st_dev;
  *ino = st.st_ino;
  return fd;
}

/*
 * A sandbox attached by /proc/PID/ns/net (the OCI hook's path) lives as long as process
 * PID: once it has exited the path names nothing (a restart would not re-attach it),
 * and its runtime may never detach it. podman runs the poststop hooks itself, and only
 * for containers it created: one whose creation failed after the createRuntime hook
 * attached it (a command not in its root filesystem) kept its sandbox, its namespace
 * (the listeners hold it) and its state file until the daemon restarted, and could not
 * be attached again under its name. A pidfd tells the loop when the process exits; the
 * sandbox is then detached as by DELETE.
 */
struct daemon_owner {
  uv_poll_t poll;
  int fd;
  pid_t pid;
  struct daemon *d;
  struct daemon_sandbox *s; /* NULL once the sandbox is closed */
};

/* The PID of a path /proc/PID/ns/net, else 0. */
static pid_t path_owner(const char *path)
{
  const char *p = path + 6;
  long pid = 0;

  if (strncmp(path, "/proc/", 6) != 0 || *p < '1' || *p > '9')
    return 0;
  for (; *p >= '0' && *p <= '9'; p++) {
    pid = pid * 10 + (*p - '0');
    if (pid > 4194304) /* PID_MAX_LIMIT */
      return 0;
  }
  return strcmp(p, "/ns/net") == 0 ? (pid_t)pid : 0;
}

/*
 * A pidfd for the process by whose /proc path netns (dev, ino) is attached, checked to
 * be the process that has that namespace (not one that got its pid since). Returns it,
 * -ENOSYS when there is nothing to watch (another kind of path) or no way to (a kernel
 * before 5.3, a seccomp filter without pidfd_open), or a negative errno with err set:
 * the process has exited.
 */
static int owner_open(const char *netns, dev_t dev, ino_t ino, pid_t *pid,
                      struct daemon_error *err)
{
  static int warned;
  struct stat st;
  int fd = -1;

  *pid = path_owner(netns);
  if (*pid == 0)
    return -ENOSYS;
#ifdef SYS_pidfd_open
  fd = (int)syscall(SYS_pidfd_open, *pid, 0);
#else
  errno = ENOSYS;
#endif
  /* Out of descriptors is the daemon's state, not the kernel's: attached unwatched,
   * the sandbox would outlive its process. */
  if (fd < 0 && (errno == EMFILE || errno == ENFILE))
    return fail(err, 500, "attach_failed", -errno, "cannot watch process %d of %s: %s%s",
                (int)*pid, netns, strerror(errno), fd_fix(-errno));
  if (fd < 0 && errno != ESRCH) {
    if (!warned)
      log_warn("cannot watch the processes of sandboxes attached by /proc/PID/ns/net "
               "(pidfd_open: %s): each stays attached after its process exits, until "
               "it is detached", strerror(errno));
    warned = 1;
    return -ENOSYS;
  }
  if (fd >= 0 && stat(netns, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
    return fd;
  if (fd >= 0)
    close(fd);
  return fail(err, 400, "netns_not_found", -ESRCH,
              "netns %s does not exist: process %d has exited", netns, (int)*pid);
}

static void owner_closed(uv_handle_t *h)
{
  struct daemon_owner *o = h->data;

  close(o->fd);
  free(o);
}

static void owner_unwatch(struct daemon_sandbox *s)
{
  if (s->owner == NULL)
    return;
  s->owner->s = NULL;
  uv_close((uv_handle_t *)&s->owner->poll, owner_closed);
  s->owner = NULL;
}

static void owner_exited_cb(uv_poll_t *h, int status, int events)
{
  struct daemon_owner *o = h->data;
  struct daemon_sandbox *s = o->s;
  struct daemon_error err;

  (void)events;
  if (s == NULL)
    return;
  if (status < 0) {
    log_warn("sandbox %s: cannot watch process %d any longer (%s): it stays attached "
             "after the process exits, until it is detached", s->name, (int)o->pid,
             uv_strerror(status));
    owner_unwatch(s);
    return;
  }
  log_info("sandbox %s: process %d, by whose /proc path it was attached, has exited: "
           "detaching", s->name, (int)o->pid);
  daemon_error_init(&err);
  if (daemon_detach(o->d, s, &err) != 0) {
    log_warn("sandbox %s: cannot detach it: %s", s->name, err.message);
    owner_unwatch(s);
  }
  daemon_error_free(&err);
}

/* Takes ownership of fd (a pidfd of pid), watched until s is closed. */
static void owner_watch(struct daemon *d, struct daemon_sandbox *s, int fd, pid_t pid)
{
  struct daemon_owner *o = calloc(1, sizeof(*o));
  int r = o != NULL ? uv_poll_init(&d->loop, &o->poll, fd) : UV_ENOMEM;

  if (r != 0) {
    free(o);
    close(fd);
    log_warn("sandbox %s: cannot watch process %d (%s): it stays attached after the "
             "process exits, until it is detached", s->name, (int)pid, uv_strerror(r));
    return;
  }
  o->poll.data = o;
  o->fd = fd;
  o->pid = pid;
  o->d = d;
  o->s = s;
  s->owner = o;
  r = uv_poll_start(&o->poll, UV_READABLE, owner_exited_cb);
  if (r != 0) {
    log_warn("sandbox %s: cannot watch process %d (%s): it stays attached after the "
             "process exits, until it is detached", s->name, (int)pid, uv_strerror(r));
    owner_unwatch(s);
  }
}

static void ca_work_cb(uv_work_t *w)
{
  struct daemon *d = w->data;
  struct proxy_ca_opts opts;

  memset(&opts, 0, sizeof(opts));
  opts.cache_size = d->leaf_cache;
  d->ca_made = NULL;
  if (proxy_ca_generate(&opts, &d->ca_made) != 0)
    d->ca_made = NULL;
}

static void ca_pool_fill(struct daemon *d);

static void ca_done_cb(uv_work_t *w, int status)
{
  struct daemon *d = w->data;

  d->ca_filling = 0;
  if (status != 0 || d->ca_made == NULL)
    return; /* cancelled, or failed: attach generates on its own */
  if (d->stopping || d->ca_pool_n == DAEMON_CA_POOL) {
    proxy_ca_free(d->ca_made);
  } else {
    d->ca_pool[d->ca_pool_n++] = d->ca_made;
  }
  d->ca_made = NULL;
  ca_pool_fill(d);
}

/* Tops the pool up, one CA at a time on the thread pool. */
static void ca_pool_fill(struct daemon *d)
{
  if (d->ca_filling || d->stopping || d->ca_pool_n >= DAEMON_CA_POOL)
    return;
  d->ca_work.data = d;
  if (uv_queue_work(&d->loop, &d->ca_work, ca_work_cb, ca_done_cb) == 0)
    d->ca_filling = 1;
}

/* proven: ca comes from the sealed state of a sandbox attached with it (a restart). */
static int make_ca(struct daemon *d, const cJSON *ca, int proven, struct proxy_ca **out,
                   struct daemon_error *err)
{
  struct proxy_ca_opts opts;
  const cJSON *cert, *key;
  int r;

  memset(&opts, 0, sizeof(opts));
  opts.cache_size = d->leaf_cache;
  opts.proven = proven;
  if (ca == NULL || cJSON_IsNull(ca)) {
    if (d->ca_pool_n > 0) {
      *out = d->ca_pool[--d->ca_pool_n];
      d->ca_pool[d->ca_pool_n] = NULL;
      ca_pool_fill(d);
      return 0;
    }
    r = proxy_ca_generate(&opts, out);
    ca_pool_fill(d);
    if (r != 0)
      return fail(err, 500, "ca_failed", r, "cannot generate the sandbox CA: %s",
                  strerror(-r));
    return 0;
  }
  cert = cJSON_GetObjectItemCaseSensitive(ca, "certificate");
  key = cJSON_GetObjectItemCaseSensitive(ca, "key");
  if (!cJSON_IsObject(ca) || !cJSON_IsString(cert) || !cJSON_IsString(key) ||
      cJSON_GetArraySize(ca) != 2)
    return fail(err, 400, "invalid_request", -EINVAL,
                "ca: must be {\"certificate\": PEM, \"key\": PEM}");
  r = proxy_ca_import(&opts, cert->valuestring, strlen(cert->valuestring),
                      key->valuestring, strlen(key->valuestring), "ca.certificate",
                      "ca.key", out);
  if (r != 0)
    return fail(err, 400, "invalid_ca", r,
                "ca: the certificate and key were refused (see the daemon log for why)");
  return 0;
}

/*
 * Whether an attach of s's name asks for s as it is: the same path (which names s's
 * namespace, checked by the caller), the same config, and the CA s has if it names
 * one (without one it takes whatever CA the daemon made). An orchestrator that
 * retries an attach whose answer it lost (its timeout, a cut connection), or a CNI
 * runtime that repeats an ADD, asks exactly that; anything else is a clash. Returns 1
 * or 0; or, for a config or CA any attach would refuse (a secret deleted since, a key
 * not the certificate's), the error that refuses it, in err: the caller has that to
 * fix first, and a 409 would send it to PATCH or DELETE in vain.
 */
static int attach_repeats(struct daemon *d, const struct daemon_sandbox *s,
                          const char *netns, const cJSON *proxy_config, const cJSON *ca,
                          struct daemon_error *err)
{
  struct rules_config *cfg = NULL;
  struct proxy_ca *asked = NULL;
  char *want = NULL, *have = NULL;
  int same = 0, r;

  if (strcmp(netns, s->netns) != 0)
    return 0;
  r = parse_config(d, proxy_config, &cfg, err);
  if (r != 0)
    return r;
  /* The CA is taken before the configs are compared: one no attach would take is
   * that error whatever the config asks. */
  if (ca != NULL && !cJSON_IsNull(ca)) {
    r = make_ca(d, ca, 0, &asked, err);
    if (r != 0) {
      same = r;
      goto out;
    }
  }
  want = persisted(cfg);
  have = persisted(proxy_sandbox_config(s->sb));
  /* A secret's template stores the same whatever the secret's value: this attach
   * resolved it now, perhaps to another value than the sandbox has. */
  if (want == NULL || have == NULL || strcmp(want, have) != 0 ||
      !rules_config_same_values(cfg, proxy_sandbox_config(s->sb)))
    goto out;
  /* The import proves the key is the certificate's: the same certificate is the same
   * CA. */
  if (asked != NULL && strcmp(proxy_ca_cert_pem(asked), proxy_ca_cert_pem(s->ca)) != 0)
    goto out;
  same = 1;
out:
  free_persisted(want);
  free_persisted(have);
  proxy_ca_free(asked);
  rules_config_unref(cfg);
  return same;
}

/* The namespace a sandbox's state names, as recorded when it was attached. */
struct ns_identity {
  dev_t dev;
  ino_t ino;
  uint64_t cookie; /* 0: not recorded (state written before cookies were) */
};

static int attach(struct daemon *d, const char *name, const char *netns,
                  const cJSON *proxy_config, const cJSON *ca,
                  const struct ns_identity *expect, int persist,
                  struct daemon_sandbox **out, struct daemon_error *err)
{
  struct rules_config *cfg = NULL;
  struct netns_rules_opts o;
  struct daemon_sandbox *s = NULL, *other;
  struct daemon_lost *lost;
  struct netns_fds fds;
  struct stat nst;
  char msg[512];
  int nsfd = -1, ownerfd = -1, redirected = 0, r;
  pid_t owner = 0;

  *out = NULL;
  netns_fds_init(&fds);
  if (!daemon_valid_name(name))
    return fail(err, 400, "invalid_name", -EINVAL,
                "sandbox name \"%.64s\" must be 1-128 of [A-Za-z0-9_.-], starting with a "
                "letter or digit", name);
  other = daemon_find(d, name);
  /* Which namespace it serves: an orchestrator that retries an attach whose answer it
   * did not get (its timeout, a connection cut) finds its own namespace here, and one
   * attaching the name elsewhere learns that a PATCH would not move it. The same
   * namespace is the same inode, not the same path: a path may name a new namespace
   * since (`ip netns del` and `add` while the daemon holds the old one), and told
   * "an earlier attach that succeeded?" a caller would take a namespace without rules
   * for one attached. Attached namespaces are alive, so no other has their inode. */
  if (other != NULL && netns != NULL && netns[0] == '/' && stat(netns, &nst) == 0 &&
      nst.st_dev == other->ns_dev && nst.st_ino == other->ns_ino) {
    r = expect == NULL ? attach_repeats(d, other, netns, proxy_config, ca, err) : 0;
    if (r < 0)
      return r;
    if (r == 1) {
      log_info("sandbox %s: attach repeated (the same namespace, path and config): "
               "answered with the sandbox as it is", name);
      *out = other;
      return 1;
    }
    return fail(err, 409, "sandbox_exists", -EEXIST,
                "sandbox %s is already attached to %.200s, the namespace this attach names, "
                "but not as this attach asks (another config, CA or path): PATCH to change "
                "its config, or DELETE it first",
                name, other->netns);
  }
  if (other != NULL && netns != NULL && strcmp(other->netns, netns) == 0)
    return fail(err, 409, "sandbox_exists", -EEXIST,
                "sandbox %s is already attached, to the namespace that was at %.200s when "
                "it was attached; that path names another namespace now (or none): DELETE "
                "the sandbox first, then attach it again", name, netns);
  if (other != NULL)
    return fail(err, 409, "sandbox_exists", -EEXIST,
                "sandbox %s is already attached, to %.256s: PATCH to change its config, or "
                "DELETE it first to attach it to another namespace", name, other->netns);
  if (netns == NULL || netns[0] != '/')
    return fail(err, 400, "invalid_request", -EINVAL,
                "netns: must be an absolute path such as /var/run/netns/NAME or "
                "/proc/PID/ns/net");
  r = parse_config(d, proxy_config, &cfg, err);
  if (r != 0)
    goto out;
  r = index_reserve(d);
  if (r != 0) {
    r = fail(err, 500, "internal_error", r, "%s",
             r == -EIO ? "no random bytes for the sandbox index" : "out of memory");
    goto out;
  }
  s = calloc(1, sizeof(*s));
  if (s == NULL || (s->netns = strdup(netns)) == NULL) {
    r = fail(err, 500, "internal_error", -ENOMEM, "out of memory");
    goto out;
  }
  snprintf(s->name, sizeof(s->name), "%s", name);
  nsfd = open_netns(netns, &s->ns_dev, &s->ns_ino, err);
  if (nsfd < 0) {
    r = nsfd;
    goto out;
  }
  if (expect != NULL) {
    /* A restart: the path must still name the namespace attached before it. The
     * inode number alone is not enough: a namespace created after the old one was
     * freed often gets the same one. */
    uint64_t cookie = 0;

    if (expect->cookie != 0) {
      r = netns_cookie(nsfd, &cookie);
      if (r != 0) {
        r = fail(err, 500, "attach_failed", r,
                 "cannot tell whether %s is still the namespace attached: %s", netns,
                 strerror(-r));
        goto out;
      }
    }
    if (expect->ino != s->ns_ino || expect->dev != s->ns_dev || cookie != expect->cookie) {
      r = fail(err, 409, "netns_replaced", -ESTALE,
               "%s is now a different namespace than the one attached", netns);
      goto out;
    }
    s->ns_cookie = cookie;
  }
  /* This daemon's own sandbox may hold it (another container of a pod, a namespace a
   * runtime pools): name it, since that is what to detach; the sockets' clash below
   * could only blame another authproxy. Attached namespaces are alive (their listeners
   * hold them), so no other namespace has their inode number. */
  other = find_by_ns(d, s->ns_dev, s->ns_ino);
  if (other != NULL) {
    r = fail(err, 409, "netns_attached", -EBUSY,
             "%s is already attached as sandbox %s; a namespace is served once: detach "
             "that sandbox first", netns, other->name);
    goto out;
  }
  ownerfd = owner_open(netns, s->ns_dev, s->ns_ino, &owner, err);
  if (ownerfd < 0 && ownerfd != -ENOSYS) {
    r = ownerfd;
    goto out;
  }
  /* A restart's CA was checked when the sandbox was attached with it, and the state
   * that holds it is sealed with the daemon's key: what only the pair decides is not
   * proven again (the clock's checks are made again). */
  r = make_ca(d, ca, expect != NULL, &s->ca, err);
  if (r != 0)
    goto out;
  memset(&o, 0, sizeof(o));
  o.dns_port = NETNS_DNS_PORT;
  o.capture = d->capture;
  msg[0] = '\0';
  r = netns_attach(nsfd, &o, &fds, msg, sizeof(msg));
  if (r != 0) {
    r = fail(err, 500, "attach_failed", r, "sandbox %s was not attached: %s%s", name,
             msg[0] ? msg : strerror(-r), fd_fix(r));
    goto out;
  }
  redirected = 1;
  s->port = o.proxy_port;
  if (expect == NULL && netns_sock_cookie(fds.tcp4 >= 0 ? fds.tcp4 : fds.tcp6,
                                          &s->ns_cookie) != 0)
    s->ns_cookie = 0; /* a kernel before 5.14: a restart checks the inode only */
  r = proxy_sandbox_start(&d->ctx, name, cfg, s->ca, &fds, NULL, &s->sb);
  if (r != 0) {
    r = fail(err, 500, "attach_failed", r, "cannot serve sandbox %s: %s%s", name,
             strerror(-r), fd_fix(r));
    goto out;
  }
  if (persist) {
    r = persist_sandbox(d, s, cfg);
    if (r != 0) {
      sandbox_state_fail(d, err, r, name, "was not attached");
      goto out;
    }
  }
  link_sandbox(d, s);
  if (ownerfd >= 0) {
    owner_watch(d, s, ownerfd, owner);
    ownerfd = -1;
  }
  /* Attached again under that name (its state file now holds this attach): it is no
   * longer one the daemon failed to re-attach. */
  lost = daemon_lost_find(d, name);
  if (lost != NULL)
    lost_remove(d, lost);
  if (o.ipv4_only)
    log_info("sandbox %s: %s has IPv6 disabled (net.ipv6.conf.lo.disable_ipv6=1): only "
             "IPv4 is captured", name, netns);
  log_info("sandbox %s: attached %s (listener port %u)", name, netns, s->port);
  *out = s;
  s = NULL;
  r = 0;
out:
  if (s != NULL) {
    if (redirected) {
      /* The namespace's connections are redirected to listeners that will not serve
       * them (never started, or closing below): whichever step failed, replace the
       * redirects with the lockdown table, as a detach does, before the listeners go.
       * A redirect to a closed port has no way out either, but it would leave the
       * namespace with the rules and routes of an attached sandbox that nothing
       * serves, unlike a detach and unlike a failure at the last step. */
      msg[0] = '\0';
      if (netns_detach(nsfd, msg, sizeof(msg)) != 0)
        log_warn("sandbox %s: cannot lock its namespace down after the failed attach: %s",
                 name, msg);
    }
    /* Started but not persisted: stop serving. The CA is borrowed by connections that
     * may still be closing; they hold leaves, and proxy_ca_free waits for the last. */
    if (s->sb != NULL)
      proxy_sandbox_close(s->sb, 0, NULL, NULL);
    proxy_ca_free(s->ca);
    free(s->netns);
    free(s);
  }
  netns_fds_close(&fds);
  if (nsfd >= 0)
    close(nsfd);
  if (ownerfd >= 0)
    close(ownerfd);
  rules_config_unref(cfg);
  return r;
}

int daemon_attach(struct daemon *d, const char *name, const char *netns,
                  const cJSON *proxy_config, const cJSON *ca, struct daemon_sandbox **out,
                  struct daemon_error *err)
{
  return attach(d, name, netns, proxy_config, ca, NULL, 1, out, err);
}

int daemon_update(struct daemon *d, struct daemon_sandbox *s, const cJSON *proxy_config,
                  struct daemon_error *err)
{
  struct rules_config *cfg = NULL;
  int r;

  r = parse_config(d, proxy_config, &cfg, err);
  if (r != 0)
    return r;
  /* Persist first: a config the daemon would lose on restart is not applied. */
  r = persist_sandbox(d, s, cfg);
  if (r != 0) {
    rules_config_unref(cfg);
    return sandbox_state_fail(d, err, r, s->name, "kept its config");
  }
  proxy_sandbox_set_config(s->sb, cfg);
  rules_config_unref(cfg);
  log_info("sandbox %s: config updated", s->name);
  return 0;
}

static void maybe_exit(struct daemon *d);

/*
 * Adds what the counters of a sandbox going away grew by since from (all of them when
 * from is NULL) to the daemon's retired counters. /metrics reports each counter as the
 * sum over attached sandboxes: without this, detaching one made the sum go down,
 * which Prometheus takes for a restart of the counter (rate() and increase() then
 * count everything the other sandboxes had counted again).
 */
static void retire_stats(struct daemon *d, const struct proxy_sandbox_stats *now,
                         const struct proxy_sandbox_stats *from)
{
  static const struct proxy_sandbox_stats zero;
  struct proxy_sandbox_stats *r = &d->retired;

  if (from == NULL)
    from = &zero;
  r->dns_queries += now->dns_queries - from->dns_queries;
  r->dns_dropped += now->dns_dropped - from->dns_dropped;
  r->dns_refused += now->dns_refused - from->dns_refused;
  r->cert_hits += now->cert_hits - from->cert_hits;
  r->cert_misses += now->cert_misses - from->cert_misses;
  r->cert_evictions += now->cert_evictions - from->cert_evictions;
  r->cert_limited += now->cert_limited - from->cert_limited;
  r->cert_minted += now->cert_minted - from->cert_minted;
}

static void sandbox_closed(void *arg)
{
  struct daemon_sandbox *s = arg;

  proxy_ca_free(s->ca);
  free(s->netns);
  free(s);
}

struct close_ctx {
  struct daemon *d;
  struct daemon_sandbox *s;
  struct proxy_sandbox_stats at_close; /* its counters when it stopped being listed */
};

static void sandbox_closed_ctx(void *arg)
{
  struct close_ctx *cc = arg;
  struct daemon *d = cc->d;
  struct proxy_sandbox_stats now = cc->at_close;
  struct proxy_ca_stats cs;

  /* Connections that drained may have used the CA since (the DNS responder closed
   * at once): count that too. */
  if (cc->s->ca != NULL) {
    proxy_ca_stats(cc->s->ca, &cs);
    now.cert_hits = cs.hits;
    now.cert_misses = cs.misses;
    now.cert_evictions = cs.evictions;
    now.cert_limited = cs.limited;
    now.cert_minted = cs.minted;
  }
  retire_stats(d, &now, &cc->at_close);
  sandbox_closed(cc->s);
  free(cc);
  d->draining--;
  maybe_exit(d);
}

/* Stops serving s; with lockdown, also closes its namespace for good. */
static void close_sandbox(struct daemon *d, struct daemon_sandbox *s, int lockdown)
{
  struct close_ctx *cc = calloc(1, sizeof(*cc));
  struct proxy_sandbox_stats st_now;
  char msg[512];
  struct stat st;
  int fd;

  unlink_sandbox(d, s);
  owner_unwatch(s);
  proxy_sandbox_stats(s->sb, &st_now);
  retire_stats(d, &st_now, NULL);
  if (cc != NULL)
    cc->at_close = st_now;
  if (lockdown) {
    /* Replace the redirects with a drop-everything table before the listeners go, so
     * the namespace never has a moment with a way out (invariant I1). The namespace is
     * the one the listeners live in: its path may be gone (`ip netns del` while a
     * process still holds it) or name another namespace by now. The path serves only
     * where the kernel cannot say, and only if it still names the one attached. */
    fd = proxy_sandbox_netns_open(s->sb);
    if (fd < 0)
      fd = netns_open(s->netns);
    if (fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == s->ns_ino && st.st_dev == s->ns_dev) {
      msg[0] = '\0';
      if (netns_detach(fd, msg, sizeof(msg)) != 0)
        log_warn("sandbox %s: %s", s->name, msg);
    } else {
      log_warn("sandbox %s: cannot lock its namespace down: %s no longer names it and "
               "its sockets could not say which it is; it keeps its redirects to "
               "listeners that are gone (no network)", s->name, s->netns);
    }
    if (fd >= 0)
      close(fd);
  }
  d->draining++;
  if (cc == NULL) {
    /* Without memory for the context, close without waiting for connections. */
    proxy_sandbox_close(s->sb, 0, NULL, NULL);
    d->draining--;
    return;
  }
  cc->d = d;
  cc->s = s;
  proxy_sandbox_close(s->sb, d->ctx.limits.drain_ms, sandbox_closed_ctx, cc);
}

int daemon_detach(struct daemon *d, struct daemon_sandbox *s, struct daemon_error *err)
{
  char path[4096];

  state_path(d, s->name, path, sizeof(path));
  /* Detached with its state left, it would be attached again by the next start. */
  if (unlink(path) != 0 && errno != ENOENT) {
    int r = -errno;

    return fail(err, 500, "state_write_failed", r,
                "sandbox %s was not detached (it is served as before): cannot remove %s: "
                "%s%s", s->name, path, strerror(-r), state_fix(r));
  }
  log_info("sandbox %s: detaching (connections get %llu ms to finish)", s->name,
           (unsigned long long)d->ctx.limits.drain_ms);
  close_sandbox(d, s, 1);
  return 0;
}

/* Writes next and makes it the daemon's store; on failure next is freed and the
 * daemon's store, like the file, is as it was. */
static int secrets_commit(struct daemon *d, struct rules_secrets *next, const char *key,
                          const char *verb, struct daemon_error *err)
{
  char path[4096], what[128];
  int r = persist_secrets(d, next);

  if (r != 0) {
    rules_secrets_free(next);
    secrets_path(d, path, sizeof(path));
    snprintf(what, sizeof(what), "secret %.64s was not %s", key, verb);
    return state_fail(err, r, what, path,
                      "delete secrets no longer needed (DELETE /v1/secrets/KEY), or give "
                      "large ones to the daemon as files in its --secrets-dir");
  }
  rules_secrets_free(d->secrets);
  d->secrets = next;
  return 0;
}

int daemon_lost_forget(struct daemon *d, struct daemon_lost *l, struct daemon_error *err)
{
  char path[4096];

  /* The namespace is not touched: the path recorded for it may name another namespace
   * by now (a pid or a name used again), and it is never locked down on a path's word
   * alone. It has no way out meanwhile: it keeps the rules the daemon left in it
   * (connections redirected to a port nothing listens on since the daemon stopped, or
   * the lockdown table of a failed attach). Its runtime deletes it. */
  state_path(d, l->name, path, sizeof(path));
  if (unlink(path) != 0 && errno != ENOENT) {
    int r = -errno;

    return fail(err, 500, "state_write_failed", r, "cannot remove %s: %s%s", path,
                strerror(-r), state_fix(r));
  }
  log_info("sandbox %s: not attached; its state is forgotten", l->name);
  lost_remove(d, l);
  return 0;
}

int daemon_secret_set(struct daemon *d, const char *key, const char *value, size_t len,
                      struct daemon_error *err)
{
  struct rules_secrets *next = NULL;
  int r;

  r = secrets_copy(d, &next);
  if (r != 0)
    return fail(err, 500, "internal_error", r, "cannot store secret: %s", strerror(-r));
  r = rules_secrets_set(next, key, value, len);
  if (r != 0)
    rules_secrets_free(next);
  if (r == -EINVAL)
    return fail(err, 400, "invalid_secret", r,
                "secret %.64s: keys are [A-Za-z0-9_.-]+ not starting with a dot", key);
  if (r == -EFBIG)
    return fail(err, 400, "invalid_secret", r,
                "secret %.64s: the value is %zu bytes; values are at most %d bytes", key, len,
                RULES_MAX_SECRET_LEN);
  if (r == -ENOSPC)
    return fail(err, 507, "too_many_secrets", r,
                "secret %.64s: the daemon holds as many pushed secrets as it can; delete "
                "secrets no longer needed (DELETE /v1/secrets/KEY) first", key);
  if (r != 0)
    return fail(err, 500, "internal_error", r, "cannot store secret: %s", strerror(-r));
  return secrets_commit(d, next, key, "stored", err);
}

int daemon_secret_delete(struct daemon *d, const char *key, struct daemon_error *err)
{
  struct rules_secrets *next = NULL;
  int r;

  r = secrets_copy(d, &next);
  if (r != 0)
    return fail(err, 500, "internal_error", r, "cannot delete secret: %s", strerror(-r));
  r = rules_secrets_unset(next, key);
  if (r != 0)
    rules_secrets_free(next);
  if (r == -ENOENT)
    return fail(err, 404, "secret_not_found", r, "no secret %.64s was pushed", key);
  if (r != 0)
    return fail(err, 400, "invalid_secret", r, "secret %.64s: invalid key", key);
  return secrets_commit(d, next, key, "deleted", err);
}

/* ---- named configs ---- */

static void config_path(const struct daemon *d, const char *name, char *buf, size_t size)
{
  snprintf(buf, size, "%s/configs/%s.sealed", d->state_dir, name);
}

static void config_free(struct daemon_config *c)
{
  if (c == NULL)
    return;
  wipe_free(c->persist);
  free(c->redacted);
  free(c);
}

struct daemon_config *daemon_config_find(struct daemon *d, const char *name)
{
  struct daemon_config *c;

  for (c = d->configs; c != NULL; c = c->next)
    if (strcmp(c->name, name) == 0)
      return c;
  return NULL;
}

static int array_has(const cJSON *arr, const char *s)
{
  const cJSON *it;

  cJSON_ArrayForEach(it, arr)
    if (strcmp(it->valuestring, s) == 0)
      return 1;
  return 0;
}

/*
 * The distinct secret keys validation_store gathers at most: one more than a config
 * may name, so that the parser sees the config name too many and says so. Unbounded,
 * a config naming 60,000 held the loop for seconds (each checked against every one
 * before it) and filled the placeholder store (answered as "out of memory").
 */
#define TEMPLATE_KEYS_MAX (RULES_MAX_CONFIG_SECRETS + 1)

/* Appends to keys (*n of them) the secret keys a {KEY} template names, with the
 * grammar of rules_template_resolve ({{ and }} are literal), up to TEMPLATE_KEYS_MAX.
 * Malformed templates are left for the config parser to report. */
static void template_keys(const char *tmpl, cJSON *keys, size_t *n)
{
  size_t len = strlen(tmpl), i = 0, j;
  char key[256];

  while (i < len && *n < TEMPLATE_KEYS_MAX) {
    if ((tmpl[i] == '{' && tmpl[i + 1] == '{') || (tmpl[i] == '}' && tmpl[i + 1] == '}')) {
      i += 2;
      continue;
    }
    if (tmpl[i] != '{') {
      i++;
      continue;
    }
    for (j = i + 1; j < len && tmpl[j] != '}' && tmpl[j] != '{'; j++)
      ;
    if (j < len && tmpl[j] == '}' && j - i - 1 > 0 && j - i - 1 < sizeof(key)) {
      memcpy(key, tmpl + i + 1, j - i - 1);
      key[j - i - 1] = '\0';
      if (!array_has(keys, key) && rules_json_append(keys, cJSON_CreateString(key)))
        (*n)++;
      i = j + 1;
    } else {
      i++;
    }
  }
}

static void header_keys(const cJSON *headers, cJSON *keys, size_t *n)
{
  const cJSON *h, *type, *value;

  cJSON_ArrayForEach(h, headers) {
    type = cJSON_GetObjectItemCaseSensitive(h, "type");
    value = cJSON_GetObjectItemCaseSensitive(h, "value");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "workspace_secret") == 0 &&
        cJSON_IsString(value))
      template_keys(value->valuestring, keys, n);
  }
}

/* The syntax of secret keys ([A-Za-z0-9_.-]+, no leading dot); others are left for
 * the config parser to report. */
static int secret_key_ok(const char *k)
{
  size_t i;

  if (k[0] == '\0' || k[0] == '.')
    return 0;
  for (i = 0; k[i] != '\0'; i++)
    if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= 'A' && k[i] <= 'Z') ||
          (k[i] >= '0' && k[i] <= '9') || k[i] == '_' || k[i] == '.' || k[i] == '-'))
      return 0;
  return 1;
}

static void pushed_name(const char *key, void *arg)
{
  rules_json_append(arg, cJSON_CreateString(key));
}

/*
 * A secret store for validating a config to be stored: the daemon's directory, copies
 * of the pushed secrets the config names, and a placeholder for every named secret
 * that exists nowhere yet (appended to missing). Everything else about a secret (an
 * empty value, a CR in it, an unreadable file) is still an error.
 */
static struct rules_secrets *validation_store(struct daemon *d, const cJSON *proxy_config,
                                              cJSON *missing)
{
  cJSON *keys = cJSON_CreateArray(), *pushed = cJSON_CreateArray();
  const cJSON *rules, *rule, *it;
  struct rules_secrets *st = rules_secrets_new(d->secrets_dir);
  unsigned long failures = rules_json_alloc_failures();
  char *value = NULL;
  size_t len, n = 0;
  int r, ok = keys != NULL && pushed != NULL && st != NULL;

  rules = cJSON_GetObjectItemCaseSensitive(proxy_config, "rules");
  cJSON_ArrayForEach(rule, rules)
    header_keys(cJSON_GetObjectItemCaseSensitive(rule, "headers"), keys, &n);
  header_keys(cJSON_GetObjectItemCaseSensitive(
                  cJSON_GetObjectItemCaseSensitive(proxy_config, "callback"), "headers"),
              keys, &n);
  rules_secrets_list(d->secrets, pushed_name, pushed);
  cJSON_ArrayForEach(it, keys) {
    if (!ok)
      break;
    if (!secret_key_ok(it->valuestring))
      continue;
    if (array_has(pushed, it->valuestring)) {
      r = rules_secrets_get(d->secrets, it->valuestring, &value, &len);
      if (r == 0)
        ok = rules_secrets_set(st, it->valuestring, value, len) == 0;
      rules_secret_free(value, len);
      value = NULL;
      continue;
    }
    r = rules_secrets_get(d->secrets, it->valuestring, &value, &len);
    if (r == 0)
      rules_secret_free(value, len);
    value = NULL;
    if (r == -ENOENT) {
      ok = rules_secrets_set(st, it->valuestring, "unresolved", 10) == 0;
      if (missing != NULL)
        rules_json_append(missing, cJSON_CreateString(it->valuestring));
    }
  }
  cJSON_Delete(keys);
  cJSON_Delete(pushed);
  /* A name cJSON could not add to keys or pushed (out of memory) is missing from the
   * store: the config was refused as naming a secret that is not found, a 422 for a
   * secret pushed, which a control plane does not retry. */
  if (rules_json_alloc_failures() != failures)
    ok = 0;
  if (!ok) {
    rules_secrets_free(st);
    return NULL;
  }
  return st;
}

int daemon_config_set(struct daemon *d, const char *name, const cJSON *proxy_config,
                      cJSON *missing, struct daemon_error *err)
{
  struct rules_config *cfg = NULL;
  struct rules_secrets *st = NULL;
  struct daemon_config *c = NULL, *old, **pp;
  char path[4096], aad[DAEMON_NAME_MAX + 16], what[DAEMON_NAME_MAX + 32], *copy = NULL;
  struct strbuf file;
  int r;

  if (!daemon_valid_name(name))
    return fail(err, 400, "invalid_name", -EINVAL,
                "config name \"%.64s\" must be 1-128 of [A-Za-z0-9_.-], starting with a "
                "letter or digit", name);
  old = daemon_config_find(d, name);
  if (old == NULL && d->nconfigs >= DAEMON_MAX_CONFIGS)
    return fail(err, 507, "too_many_configs", -ENOSPC,
                "%d configs are stored; delete one (DELETE /v1/configs/NAME) first",
                DAEMON_MAX_CONFIGS);
  if (cJSON_IsObject(proxy_config)) {
    st = validation_store(d, proxy_config, missing);
    if (st == NULL)
      return fail(err, 500, "internal_error", -ENOMEM, "out of memory");
  }
  r = parse_config_with(st, proxy_config, &cfg, err);
  rules_secrets_free(st);
  if (r != 0)
    return r;
  c = calloc(1, sizeof(*c));
  if (c != NULL) {
    c->persist = rules_config_to_json(cfg, RULES_SER_PERSIST, 0);
    c->redacted = rules_config_to_json(cfg, RULES_SER_REDACTED, 0);
  }
  rules_config_unref(cfg);
  if (c == NULL || c->persist == NULL || c->redacted == NULL) {
    config_free(c);
    return fail(err, 500, "internal_error", -ENOMEM, "out of memory");
  }
  snprintf(c->name, sizeof(c->name), "%s", name);
  /* The state file keeps both forms, so a restart needs no secret to show it. The
   * pushed form holds opaque values: what growing the buffer gives back is wiped. */
  strbuf_init(&file);
  file.secret = 1;
  strbuf_adds(&file, "{\"proxy_config\":");
  strbuf_adds(&file, c->persist);
  strbuf_adds(&file, ",\"redacted\":");
  strbuf_adds(&file, c->redacted);
  strbuf_adds(&file, "}");
  if (file.oom) {
    if (file.data != NULL)
      mbedtls_platform_zeroize(file.data, file.len);
    strbuf_free(&file);
    config_free(c);
    return fail(err, 500, "internal_error", -ENOMEM, "out of memory");
  }
  copy = strbuf_take(&file);
  config_path(d, name, path, sizeof(path));
  snprintf(aad, sizeof(aad), "config:%s", name);
  /* Persist first: a config the daemon would lose on restart is not stored. */
  r = write_sealed(d, path, aad, copy, 1);
  if (r != 0) {
    config_free(c);
    snprintf(what, sizeof(what), "config %s was not stored", name);
    return state_fail(err, r, what, path, "store a smaller config");
  }
  for (pp = &d->configs; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == old) {
      *pp = old->next;
      config_free(old);
      d->nconfigs--;
      break;
    }
  }
  c->next = d->configs;
  d->configs = c;
  d->nconfigs++;
  log_info("config %s: stored", name);
  return 0;
}

int daemon_config_delete(struct daemon *d, struct daemon_config *c, struct daemon_error *err)
{
  struct daemon_config **pp;
  char path[4096];

  config_path(d, c->name, path, sizeof(path));
  if (unlink(path) != 0 && errno != ENOENT) {
    int r = -errno;

    return fail(err, 500, "state_write_failed", r, "cannot remove %s: %s%s", path,
                strerror(-r), state_fix(r));
  }
  for (pp = &d->configs; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      d->nconfigs--;
      break;
    }
  }
  log_info("config %s: deleted", c->name);
  config_free(c);
  return 0;
}

/* Makes a daemon_config from a state file's JSON text. */
static int config_reload(struct daemon *d, const char *name, const char *json)
{
  const cJSON *cfg, *red;
  struct daemon_config *c;
  cJSON *root = NULL;

  if (daemon_json_parse_own(json, &root) != 0)
    return -EINVAL;
  cfg = cJSON_GetObjectItemCaseSensitive(root, "proxy_config");
  red = cJSON_GetObjectItemCaseSensitive(root, "redacted");
  if (!cJSON_IsObject(cfg) || !cJSON_IsObject(red)) {
    rules_json_free(root);
    return -EINVAL;
  }
  c = calloc(1, sizeof(*c));
  if (c == NULL) {
    rules_json_free(root);
    return -ENOMEM;
  }
  snprintf(c->name, sizeof(c->name), "%s", name);
  c->persist = cJSON_PrintUnformatted(cfg);
  c->redacted = cJSON_PrintUnformatted(red);
  rules_json_free(root);
  if (c->persist == NULL || c->redacted == NULL) {
    config_free(c);
    return -ENOMEM;
  }
  c->next = d->configs;
  d->configs = c;
  d->nconfigs++;
  return 0;
}

/* Reads the stored configs back. One that cannot be read is logged and skipped (its
 * file is kept for a later start, with the right key, to read). */
static void load_configs(struct daemon *d)
{
  char dir[4096], path[4096], aad[DAEMON_NAME_MAX + 16], name[DAEMON_NAME_MAX + 1];
  struct daemon_config *c;
  struct dirent **ents;
  char *json;
  size_t len;
  int i, n, r;

  snprintf(dir, sizeof(dir), "%s/configs", d->state_dir);
  n = scandir(dir, &ents, NULL, alphasort);
  if (n < 0)
    return;
  for (i = 0; i < n; i++) {
    len = sealed_stem(ents[i]->d_name);
    json = NULL;
    if (len > 0 && len <= DAEMON_NAME_MAX) {
      memcpy(name, ents[i]->d_name, len);
      name[len] = '\0';
      if (!daemon_valid_name(name) || d->nconfigs >= DAEMON_MAX_CONFIGS)
        goto next;
      config_path(d, name, path, sizeof(path));
      snprintf(aad, sizeof(aad), "config:%s", name);
      r = read_sealed(d, path, aad, &json);
      if (r != 0) {
        log_error("config %s: cannot read %s: %s; it is not available", name, path,
                  r == -EBADMSG ? "it does not decrypt with the state key" : strerror(-r));
        goto next;
      }
      r = config_reload(d, name, json);
      if (r != 0)
        log_error("config %s: %s is malformed; it is not available", name, path);
    }
next:
    wipe_free(json);
    free(ents[i]);
  }
  free(ents);
  for (c = d->configs; c != NULL; c = c->next)
    log_debug("config %s: loaded", c->name);
}

/* ---- restart ---- */

static void add_lost(struct daemon *d, const char *name, const char *netns, const char *why)
{
  struct daemon_lost *l = calloc(1, sizeof(*l));

  if (l == NULL)
    return;
  snprintf(l->name, sizeof(l->name), "%s", name);
  l->netns = strdup(netns ? netns : "");
  l->why = strdup(why);
  l->next = d->lost;
  d->lost = l;
}

static void restore_one(struct daemon *d, const char *name)
{
  char path[4096], aad[DAEMON_NAME_MAX + 16], *json = NULL;
  const cJSON *netns, *cfg, *dev, *ino, *cert, *key;
  struct daemon_sandbox *s = NULL;
  struct daemon_error err;
  cJSON *root = NULL, *ca = NULL;
  const cJSON *cookie;
  struct ns_identity expect;
  char *end = NULL;
  int r;

  daemon_error_init(&err);
  state_path(d, name, path, sizeof(path));
  snprintf(aad, sizeof(aad), "sandbox:%s", name);
  r = read_sealed(d, path, aad, &json);
  if (r != 0) {
    log_error("sandbox %s: cannot read its state %s: %s; it stays without network", name,
              path, r == -EBADMSG ? "it does not decrypt with the state key" : strerror(-r));
    add_lost(d, name, NULL, "state unreadable");
    goto out;
  }
  r = daemon_json_parse_own(json, &root);
  netns = cJSON_GetObjectItemCaseSensitive(root, "netns");
  cfg = cJSON_GetObjectItemCaseSensitive(root, "proxy_config");
  dev = cJSON_GetObjectItemCaseSensitive(root, "ns_dev");
  ino = cJSON_GetObjectItemCaseSensitive(root, "ns_ino");
  cert = cJSON_GetObjectItemCaseSensitive(root, "ca_certificate");
  key = cJSON_GetObjectItemCaseSensitive(root, "ca_key");
  cookie = cJSON_GetObjectItemCaseSensitive(root, "ns_cookie");
  memset(&expect, 0, sizeof(expect));
  if (cJSON_IsString(cookie)) {
    errno = 0;
    expect.cookie = strtoull(cookie->valuestring, &end, 10);
  }
  if (r != 0 || !cJSON_IsString(netns) || !cJSON_IsObject(cfg) || !cJSON_IsNumber(dev) ||
      !cJSON_IsNumber(ino) || !cJSON_IsString(cert) || !cJSON_IsString(key) ||
      (cookie != NULL && (!cJSON_IsString(cookie) || end == cookie->valuestring ||
                          *end != '\0' || errno != 0 || expect.cookie == 0))) {
    log_error("sandbox %s: state %s is malformed; it stays without network", name, path);
    add_lost(d, name, NULL, "state malformed");
    goto out;
  }
  ca = cJSON_CreateObject();
  if (ca == NULL || cJSON_AddStringToObject(ca, "certificate", cert->valuestring) == NULL ||
      cJSON_AddStringToObject(ca, "key", key->valuestring) == NULL) {
    log_error("sandbox %s: out of memory restoring it; it stays without network", name);
    add_lost(d, name, NULL, "out of memory");
    goto out;
  }
  expect.dev = (dev_t)dev->valuedouble;
  expect.ino = (ino_t)ino->valuedouble;
  r = attach(d, name, netns->valuestring, cfg, ca, &expect, 0, &s, &err);
  if (r == 0) {
    log_info("sandbox %s: re-attached after restart", name);
    goto out;
  }
  if (err.code != NULL &&
      (strcmp(err.code, "netns_not_found") == 0 || strcmp(err.code, "netns_replaced") == 0)) {
    /* The namespace is gone (or its path now names another one): forget it. Any other
     * failure keeps the state, whatever its errno (a missing kernel feature is
     * -ENOENT too). */
    log_warn("sandbox %s: %s; forgetting it", name, err.message);
    add_lost(d, name, netns->valuestring, err.message);
    unlink(path);
  } else {
    /* Kept: a later start (with the missing secret, say) may succeed. The reason
     * listed under not_attached (and given to a GET of it) says what was wrong: a
     * config refused says "see details", and only the log had them. */
    char why[1024];

    snprintf(why, sizeof(why), "%s%s%s%s%s", err.message, err.diag.count ? ": " : "",
             err.diag.count ? err.diag.entries[0].path : "",
             err.diag.count && err.diag.entries[0].path[0] ? ": " : "",
             err.diag.count ? err.diag.entries[0].message : "");
    log_error("sandbox %s: cannot re-attach: %s; it stays without network", name, why);
    add_lost(d, name, netns->valuestring, why);
  }
out:
  rules_json_free(ca);
  rules_json_free(root);
  wipe_free(json);
  daemon_error_free(&err);
}

/*
 * Removes what writes that never finished left in dir: NAME.sealed.tmp.PID files
 * (proxy_write_file_atomic) and key.tmp.XXXXXX (the state key's first write), which a
 * daemon killed mid-write leaves behind. They are sealed, but one could outlive a
 * secret deleted later. Only a daemon holding the directory's lock calls this, so no
 * write of another daemon is under way.
 */
static void remove_stale_tmp(const char *dir)
{
  struct dirent **ents;
  char path[4096];
  int i, n;

  n = scandir(dir, &ents, NULL, alphasort);
  if (n < 0)
    return;
  for (i = 0; i < n; i++) {
    const char *name = ents[i]->d_name;

    if ((strstr(name, ".sealed.tmp.") != NULL || strncmp(name, "key.tmp.", 8) == 0) &&
        snprintf(path, sizeof(path), "%s/%s", dir, name) < (int)sizeof(path)) {
      if (unlink(path) == 0)
        log_info("serve: removed %s, left by a write that did not finish", path);
      else
        log_warn("serve: cannot remove %s, left by a write that did not finish: %s", path,
                 strerror(errno));
    }
    free(ents[i]);
  }
  free(ents);
}

/* How many NAME.sealed files dir holds (0 when it cannot be read). */
static size_t count_sealed(const char *dir)
{
  struct dirent **ents;
  size_t count = 0;
  int i, n;

  n = scandir(dir, &ents, NULL, NULL);
  if (n < 0)
    return 0;
  for (i = 0; i < n; i++) {
    if (sealed_stem(ents[i]->d_name) > 0)
      count++;
    free(ents[i]);
  }
  free(ents);
  return count;
}

/*
 * 0 unless the state key is missing while state sealed under a key is there: a new
 * key would leave every sandbox without network and every stored config unavailable,
 * and the next writes would seal new state beside the old under another key. A key
 * lost (deleted, or left out of a backup) must be restored; a fresh start is chosen
 * by moving the state away, not made by accident.
 */
static int key_missing_with_state(const struct daemon *d)
{
  char path[4096];
  struct stat st;
  size_t nsandboxes, nconfigs;
  int secrets;

  /* lstat: a symlink, even a dangling one, is no missing key; proxy_seal_key_load
   * refuses it for what it is (advice to restore the key would have it copied
   * through the link). */
  snprintf(path, sizeof(path), "%s/key", d->state_dir);
  if (lstat(path, &st) == 0 || errno != ENOENT)
    return 0;
  snprintf(path, sizeof(path), "%s/secrets.sealed", d->state_dir);
  secrets = access(path, F_OK) == 0;
  snprintf(path, sizeof(path), "%s/sandboxes", d->state_dir);
  nsandboxes = count_sealed(path);
  snprintf(path, sizeof(path), "%s/configs", d->state_dir);
  nconfigs = count_sealed(path);
  if (!secrets && nsandboxes == 0 && nconfigs == 0)
    return 0;
  fprintf(stderr,
          "authproxy serve: the state key %s/key is missing, but %s holds state sealed "
          "under one (%s%zu sandbox(es), %zu stored config(s)), which no new key can "
          "read: restore the key from a backup, or, to start afresh and lose that "
          "state, move the directory's sealed files away\n",
          d->state_dir, d->state_dir, secrets ? "pushed secrets, " : "", nsandboxes,
          nconfigs);
  return -ENOKEY;
}

static void restore(struct daemon *d)
{
  char dir[4096], name[DAEMON_NAME_MAX + 1];
  struct dirent **ents;
  size_t len, left = 0;
  int i, n;

  snprintf(dir, sizeof(dir), "%s/sandboxes", d->state_dir);
  n = scandir(dir, &ents, NULL, alphasort);
  if (n < 0)
    return;
  /* A signal that came while the daemon started (waiting for a FIFO's reader, say)
   * is taken before the first sandbox, and one during the restore before the next. */
  uv_run(&d->loop, UV_RUN_NOWAIT);
  for (i = 0; i < n; i++) {
    len = sealed_stem(ents[i]->d_name);
    if (d->stopping) {
      /* Its state is kept, and the namespace its rules: no network until a start. */
      if (len > 0)
        left++;
    } else if (len > 0 && len <= DAEMON_NAME_MAX) {
      memcpy(name, ents[i]->d_name, len);
      name[len] = '\0';
      if (daemon_valid_name(name)) {
        restore_one(d, name);
        /* Serves what the sandboxes restored so far have waiting (their DNS queries,
         * connections queued on their listeners) before the next: with 1,000 to
         * restore, the first no longer waits for the last. The control socket still
         * opens once all are back, so the API never shows a partial restore. */
        uv_run(&d->loop, UV_RUN_NOWAIT);
      }
    }
    free(ents[i]);
  }
  free(ents);
  if (left > 0)
    log_info("serve: stopped while restoring; %zu sandbox(es) not re-attached yet keep "
             "their rules and have no network until the daemon is back", left);
}

/* ---- lifecycle ---- */

static void control_closed(void *arg)
{
  struct daemon *d = arg;

  d->control = NULL;
  maybe_exit(d);
}

static void maybe_exit(struct daemon *d)
{
  int i;

  if (!d->stopping || d->draining > 0 || d->sandboxes != NULL)
    return;
  if (d->control != NULL) {
    proxy_control_close(d->control, control_closed, d);
    return;
  }
  for (i = 0; i < d->nsig; i++)
    if (!uv_is_closing((uv_handle_t *)&d->sig[i]))
      uv_close((uv_handle_t *)&d->sig[i], NULL);
  proxy_ctx_close(&d->ctx);
  if (d->audit != NULL) {
    /* A reader that stopped reading gets as long as the connections had to drain,
     * and a second at least: a reader that reads takes the last records in that. */
    proxy_audit_close_within(d->audit, d->ctx.limits.drain_ms > 1000
                                           ? (unsigned)d->ctx.limits.drain_ms : 1000);
    d->audit = NULL;
    d->ctx.audit = NULL;
  }
  /* The rest (the audit log's last write) is proxy_loop_finish's, which does not
   * wait for name lookups left to a silent resolver, as the run would. */
  proxy_loop_stop(&d->ctx);
}

static void stop(struct daemon *d)
{
  if (d->stopping)
    return;
  d->stopping = 1;
  if (d->ca_filling)
    uv_cancel((uv_req_t *)&d->ca_work);
  log_info("serve: stopping; %zu sandbox(es) keep their rules and have no network until "
           "the daemon is back", d->nsandboxes);
  while (d->sandboxes != NULL)
    close_sandbox(d, d->sandboxes, 0);
  maybe_exit(d);
}

static void signal_cb(uv_signal_t *sig, int signum)
{
  struct daemon *d = sig->data;
  int r;

  if (signum == SIGHUP) {
    /* Said as it is: a rotation that expects a reopen finds out from the log. */
    if (d->log_path == NULL || strcmp(d->log_path, "-") == 0) {
      log_info("serve: SIGHUP: the audit log is %s, with no file to reopen",
               d->log_path == NULL ? "off (no --log)" : "standard output");
      return;
    }
    if (d->audit == NULL) {
      log_info("serve: SIGHUP: the audit log %s is not open yet (its FIFO's reader is "
               "awaited); it is opened when one comes", d->log_path);
      return;
    }
    r = proxy_audit_reopen(d->audit);
    if (r != 0)
      log_error("serve: cannot reopen the audit log %s: %s", d->log_path,
                proxy_audit_strerror(d->log_path, r));
    else
      log_info("serve: audit log reopened (%s)", d->log_path);
    return;
  }
  stop(d);
}

/* Waiting for the audit log FIFO's reader: the loop runs (a tenth of a second at a
 * time) so that a SIGTERM or SIGINT stops the daemon there too. A blocking open(2)
 * is restarted after the loop's signal handler, and the daemon ignored both until
 * a reader came. */
struct fifo_wait {
  struct daemon *d;
  uv_timer_t timer;
};

static void fifo_tick(uv_timer_t *t)
{
  (void)t;
}

static int fifo_wait(void *arg)
{
  struct fifo_wait *fw = arg;

  if (!fw->d->stopping) {
    uv_timer_start(&fw->timer, fifo_tick, 100, 0);
    uv_run(&fw->d->loop, UV_RUN_ONCE);
  }
  return fw->d->stopping;
}

static void usage(FILE *f)
{
  fprintf(f,
    "usage: authproxy serve --state-dir DIR --control SOCKET [OPTIONS]\n"
    "\n"
    "The daemon: serves every sandbox attached through the control API (a Unix\n"
    "socket, root only) from one event loop; re-attaches them after a restart.\n"
    "\n"
    "options:\n"
    "  --state-dir DIR        sealed state (created 0700); required\n"
    "  --control SOCKET       control API socket (created 0600); required\n"
    "  --secrets-dir DIR      where {KEY} templates resolve, besides pushed secrets\n"
    "  --log FILE             audit log, JSON Lines (\"-\": standard output); SIGHUP reopens\n"
    "  -h, --help             this help\n");
  proxy_common_usage(f);
}

static int parse_args(struct daemon *d, struct proxy_common_opts *o, int argc, char **argv)
{
  enum { O_STATE = 256, O_CONTROL, O_SECRETS, O_LOG };
  static const struct option own[] = {
    { "state-dir", required_argument, NULL, O_STATE },
    { "control", required_argument, NULL, O_CONTROL },
    { "secrets-dir", required_argument, NULL, O_SECRETS },
    { "log", required_argument, NULL, O_LOG },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct option opts[32];
  int c, r;

  if (proxy_options_merge(own, opts, sizeof(opts) / sizeof(opts[0])) != 0)
    return -EINVAL;
  optind = 1;
  while ((c = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
    switch (c) {
    case O_STATE: d->state_dir = optarg; break;
    case O_CONTROL: d->control_path = optarg; break;
    case O_SECRETS: d->secrets_dir = optarg; break;
    case O_LOG: d->log_path = optarg; break;
    case 'h': usage(stdout); exit(proxy_finish_output("authproxy serve", 0));
    default:
      r = proxy_common_option("authproxy serve", c, optarg, o);
      if (r < 0)
        return r;
      if (r == 0) {
        usage(stderr);
        return -EINVAL;
      }
      break;
    }
  }
  proxy_common_log_level(o, PROXY_LOG_INFO);
  if (optind != argc) {
    fprintf(stderr, "authproxy serve: unexpected argument \"%s\"\n", argv[optind]);
    return -EINVAL;
  }
  if (d->state_dir == NULL || d->control_path == NULL) {
    fprintf(stderr, "authproxy serve: --state-dir and --control are required\n\n");
    usage(stderr);
    return -EINVAL;
  }
  d->capture = o->capture;
  d->leaf_cache = o->leaf_cache;
  d->busy_poll_us = o->busy_poll_us;
  return 0;
}

/*
 * Takes the state directory for this daemon alone: an exclusive flock(2) on the
 * directory itself, held (by the returned descriptor) until the process ends, however
 * it ends. A second daemon on the same directory would try to re-attach every sandbox
 * found there (in namespaces the first one serves), list the first one's live
 * sandboxes as not attached (a DELETE through it would remove their state), and the
 * two would overwrite each other's secrets and configs from their own copies in
 * memory. Returns the descriptor or a negative errno (reported on stderr).
 */
static int state_dir_lock(const char *dir)
{
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int r;

  if (fd < 0) {
    r = -errno;
    fprintf(stderr, "authproxy serve: cannot open %s: %s\n", dir, strerror(-r));
    return r;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    r = -errno;
    close(fd);
    if (r == -EWOULDBLOCK)
      fprintf(stderr, "authproxy serve: %s is in use by another authproxy serve (one "
              "daemon per state directory): stop that daemon first, or give this one a "
              "--state-dir of its own\n", dir);
    else
      fprintf(stderr, "authproxy serve: cannot lock %s: %s\n", dir, strerror(-r));
    return r;
  }
  return fd;
}

/* Creates dir 0700, or checks an existing one is private. */
static int private_dir(const char *dir)
{
  struct stat st;

  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "authproxy serve: cannot create %s: %s\n", dir, strerror(errno));
    return -errno;
  }
  if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "authproxy serve: %s is not a directory\n", dir);
    return -ENOTDIR;
  }
  if (st.st_mode & 077) {
    fprintf(stderr, "authproxy serve: %s is accessible by group or others (mode %03o): "
            "chmod 700 %s\n", dir, (unsigned)(st.st_mode & 0777), dir);
    return -EPERM;
  }
  return 0;
}

int proxy_cmd_serve(int argc, char **argv)
{
  static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
  struct proxy_common_opts o;
  struct daemon *d;
  char err[512], sub[4096];
  size_t i;
  int r, ret = 1, lockfd = -1, orphans = 0;

  d = calloc(1, sizeof(*d));
  if (d == NULL)
    return 1;
  proxy_common_opts_init(&o);
  if (parse_args(d, &o, argc, argv) != 0) {
    free(d);
    return 2;
  }
  if (geteuid() != 0) {
    fprintf(stderr, "authproxy serve: must run as root (it manages network namespaces "
                    "and nftables rules)\n");
    free(d);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  umask(077);
  /* libuv's thread pool (4 threads unless told) runs at most half of its threads'
   * worth of getaddrinfo at once, for the whole process, and a name whose servers
   * never answer holds a thread for the resolver's whole timeout: with each sandbox
   * at one lookup of an upstream name in flight (limits.resolve_max) and one of its
   * callback's host, POOL_THREADS / 4 sandboxes must resolve such names before
   * another waits. Read once, at the pool's first
   * use; an operator's own setting wins. */
  if (setenv("UV_THREADPOOL_SIZE", POOL_THREADS, 0) != 0)
    fprintf(stderr, "authproxy serve: warning: cannot size libuv's thread pool: %s\n",
            strerror(errno));
  /* Two descriptors per connection, for every sandbox: the soft limit is usually
   * 1024 (LimitNOFILE= in the unit, or ulimit -Hn, sets what this can reach). */
  r = proxy_nofile_raise(NULL);
  if (r != 0)
    fprintf(stderr, "authproxy serve: warning: cannot raise the open-file limit: %s\n",
            strerror(-r));
  if (private_dir(d->state_dir) != 0)
    goto out;
  /* Before anything in it is read: restoring sandboxes touches their namespaces. */
  lockfd = state_dir_lock(d->state_dir);
  if (lockfd < 0)
    goto out;
  snprintf(sub, sizeof(sub), "%s/sandboxes", d->state_dir);
  if (private_dir(sub) != 0)
    goto out;
  snprintf(sub, sizeof(sub), "%s/configs", d->state_dir);
  if (private_dir(sub) != 0)
    goto out;
  remove_stale_tmp(sub);
  snprintf(sub, sizeof(sub), "%s/sandboxes", d->state_dir);
  remove_stale_tmp(sub);
  remove_stale_tmp(d->state_dir);
  r = proxy_rng_init();
  if (r != 0) {
    fprintf(stderr, "authproxy serve: cannot seed the random generator\n");
    goto out;
  }
  if (key_missing_with_state(d) != 0)
    goto out;
  snprintf(sub, sizeof(sub), "%s/key", d->state_dir);
  err[0] = '\0';
  if (proxy_seal_key_load(sub, d->key, err, sizeof(err)) != 0) {
    fprintf(stderr, "authproxy serve: %s\n", err);
    goto out;
  }
  d->secrets = rules_secrets_new(d->secrets_dir);
  if (d->secrets == NULL || load_secrets(d) != 0)
    goto out;
  err[0] = '\0';
  r = proxy_upstream_tls_new(NULL, o.upstream_ca, o.nupstream_ca, &d->upstream, err,
                             sizeof(err));
  if (r != 0) {
    fprintf(stderr, "authproxy serve: %s\n", err[0] ? err : strerror(-r));
    goto out;
  }
  r = uv_loop_init(&d->loop);
  if (r != 0) {
    fprintf(stderr, "authproxy serve: cannot start the event loop: %s\n", uv_strerror(r));
    goto out;
  }
  r = proxy_ctx_init(&d->ctx, &d->loop);
  if (r != 0) {
    fprintf(stderr, "authproxy serve: cannot start the proxy: %s\n", strerror(-r));
    goto out_loop;
  }
  d->ctx.limits = o.limits;
  d->ctx.upstream_tls = d->upstream;
  d->started_ms = uv_now(&d->loop);
  /* Before what may take a while (the audit log's FIFO waiting for its reader, the
   * restore: sandboxes are served as each is back): a SIGHUP (a reload) or SIGTERM
   * then would otherwise kill the daemon, cutting what it serves, unlogged. */
  for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
    uv_signal_init(&d->loop, &d->sig[i]);
    d->sig[i].data = d;
    d->nsig++;
    uv_signal_start(&d->sig[i], signal_cb, sigs[i]);
  }
  if (d->log_path != NULL) {
    struct fifo_wait fw = { .d = d };

    uv_timer_init(&d->loop, &fw.timer);
    r = proxy_audit_open_wait(&d->loop, d->log_path, fifo_wait, &fw, &d->audit);
    uv_close((uv_handle_t *)&fw.timer, NULL);
    uv_run(&d->loop, UV_RUN_NOWAIT);
    if (r != 0 && r != -ECANCELED) {
      fprintf(stderr, "authproxy serve: --log %s: %s\n", d->log_path,
              proxy_audit_strerror(d->log_path, r));
      goto out_loop;
    }
    /* Cancelled: stopped while waiting; the restore below keeps every sandbox. */
    d->ctx.audit = d->audit;
  }
  load_configs(d);
  restore(d);
  if (d->stopping) {
    /* Stopped while starting: what was restored drains; no control socket opens. */
    proxy_loop_run(&d->ctx, d->busy_poll_us);
    ret = 0;
    goto out_loop;
  }
  ca_pool_fill(d);
  err[0] = '\0';
  r = proxy_control_start(&d->loop, d->control_path, daemon_api, d, &d->control, err,
                          sizeof(err));
  if (r != 0) {
    fprintf(stderr, "authproxy serve: %s\n", err);
    stop(d);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    goto out_loop;
  }
  log_info("serve: listening on %s; %zu sandbox(es) attached", d->control_path,
           d->nsandboxes);
  proxy_loop_run(&d->ctx, d->busy_poll_us);
  ret = 0;
out_loop:
  for (i = 0; i < (size_t)d->nsig; i++)
    if (!uv_is_closing((uv_handle_t *)&d->sig[i]))
      uv_close((uv_handle_t *)&d->sig[i], NULL);
  proxy_ctx_close(&d->ctx);
  /* With lookups left to a silent resolver the loop stays, for their threads. */
  orphans = proxy_loop_finish(&d->loop);
  while (d->ca_pool_n > 0)
    proxy_ca_free(d->ca_pool[--d->ca_pool_n]);
  if (!orphans && uv_loop_close(&d->loop) != 0)
    log_warn("serve: handles left open at exit");
  proxy_ctx_cleanup(&d->ctx);
out:
  while (d->lost != NULL)
    lost_remove(d, d->lost);
  while (d->configs != NULL) {
    struct daemon_config *c = d->configs;

    d->configs = c->next;
    config_free(c);
  }
  free(d->index);
  free(d->nsindex);
  rules_secrets_free(d->secrets);
  proxy_upstream_tls_free(d->upstream);
  mbedtls_platform_zeroize(d->key, sizeof(d->key));
  if (!orphans)
    free(d);
  /* Last: the state files are no longer written. */
  if (lockfd >= 0)
    close(lockfd);
  return ret;
}
