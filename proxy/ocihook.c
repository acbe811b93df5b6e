/*
 * `authproxy oci-hook`: an OCI runtime hook that puts a container behind the daemon.
 *
 * As a createRuntime hook (the default mode; prestart behaves the same) it runs in the
 * runtime's namespaces after the container's namespaces exist and before its process
 * starts. It reads the container state from standard input and attaches
 * /proc/PID/ns/net as sandbox "oci-" + ID with the config the container's annotations
 * name:
 *   io.authproxy.config       a config stored in the daemon (ctl config-set NAME)
 *   io.authproxy.config-file  a file name looked up in --config-dir (never a path: the
 *                             annotation comes from whoever writes the container spec)
 * Any failure exits non-zero with the reason on standard error, and the runtime then
 * fails the container's creation: no container starts unprotected.
 *
 * As a poststop hook it detaches the sandbox; idempotent, and a daemon that is not
 * running is not an error (it forgets the sandbox when it starts and finds the
 * namespace gone).
 *
 * The daemon opens /proc/PID/ns/net itself, so it must share the runtime's PID
 * namespace (as a systemd service on the host does).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "proxy/apiclient.h"
#include "proxy/cfgload.h"
#include "proxy/commands.h"
#include "proxy/control.h"
#include "proxy/ocihook.h"
#include "proxy/strbuf.h"
#include "rules/rules.h"

#define HOOK_TIMEOUT_MS 20000
#define MAX_STATE (1u << 20)

static void usage(FILE *f)
{
  fprintf(f,
    "usage: authproxy oci-hook [--control SOCKET] [--config-dir DIR] [createRuntime|poststop]\n"
    "\n"
    "An OCI runtime hook. createRuntime (the default): attach the container's network\n"
    "namespace to `authproxy serve` as sandbox oci-ID, with the config named by the\n"
    "annotation " PROXY_OCI_ANNOTATION_CONFIG " (stored with `authproxy ctl config-set`)\n"
    "or " PROXY_OCI_ANNOTATION_FILE " (a file name in --config-dir); if that fails the\n"
    "hook fails and the container does not start. poststop: detach it.\n"
    "\n"
    "  --control SOCKET   the daemon's control socket (default " PROXY_API_DEFAULT_CONTROL ")\n"
    "  --config-dir DIR   where config-file annotations are looked up (default\n"
    "                     " PROXY_OCI_DEFAULT_CONFIG_DIR ")\n"
    "\n"
    "The container needs a network namespace of its own (linux.namespaces: network).\n"
    "See examples/oci-hooks.d/ and examples/oci-config-hooks.json.\n");
}

/*
 * Prints a failure (FMT ends with a newline) as "authproxy oci-hook: ..." on standard
 * error, which the runtime passes on in its own error, with strerror's text for ENOENT
 * reworded. podman classifies a runtime's error by its text: one that matches "no such
 * file or directory" is taken for a container command that does not exist, shown as
 * "OCI runtime attempted to invoke a command that was not found", and `podman run`
 * exits 127. The hook's commonest failure, no daemon (its socket absent), read so.
 */
static void hook_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void hook_error(const char *fmt, ...)
{
  static const char enoent[] = "no such file or directory";
  char msg[8192], *p = msg;
  size_t n = sizeof(enoent) - 1;
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fputs("authproxy oci-hook: ", stderr);
  while (*p != '\0') {
    if (strncasecmp(p, enoent, n) == 0) {
      fputs("does not exist", stderr);
      p += n;
    } else {
      fputc(*p++, stderr);
    }
  }
}

int proxy_oci_file_name_ok(const char *name)
{
  return proxy_api_name_ok(name, 255);
}

/* The daemon's name syntax, checked here for a message that names the annotation. */
static int config_name_ok(const char *name)
{
  return proxy_api_name_ok(name, PROXY_API_NAME_MAX);
}

int proxy_oci_parse_state(const char *json, size_t len, int need_pid,
                          struct proxy_oci_state *st, char *err, size_t errsz)
{
  const cJSON *ver, *id, *pid, *ann, *it;
  struct rules_diag diag;
  int r;

  memset(st, 0, sizeof(*st));
  rules_diag_init(&diag);
  r = rules_json_parse(json, len, &st->root, &diag);
  if (r == -ENOMEM) {
    snprintf(err, errsz, "cannot read the container state: out of memory");
    rules_diag_free(&diag);
    return r;
  }
  if (r != 0) {
    snprintf(err, errsz, "the container state on standard input is not JSON: %s",
             diag.count ? diag.entries[0].message : "malformed");
    rules_diag_free(&diag);
    return -EINVAL;
  }
  rules_diag_free(&diag);
  ver = cJSON_GetObjectItemCaseSensitive(st->root, "ociVersion");
  id = cJSON_GetObjectItemCaseSensitive(st->root, "id");
  pid = cJSON_GetObjectItemCaseSensitive(st->root, "pid");
  ann = cJSON_GetObjectItemCaseSensitive(st->root, "annotations");
  r = -EINVAL;
  if (!cJSON_IsObject(st->root) || !cJSON_IsString(ver) || !cJSON_IsString(id) ||
      id->valuestring[0] == '\0' || strlen(id->valuestring) > 1024) {
    snprintf(err, errsz, "standard input is not an OCI container state (it needs "
                         "\"ociVersion\" and \"id\"); is this running as an OCI hook?");
    goto out;
  }
  st->id = id->valuestring;
  if (pid != NULL && !cJSON_IsNull(pid)) {
    if (!cJSON_IsNumber(pid) || pid->valuedouble < 0 || pid->valuedouble > 4194304 ||
        pid->valuedouble != (double)(long)pid->valuedouble) {
      snprintf(err, errsz, "container %.128s: \"pid\" is not a process id", st->id);
      goto out;
    }
    st->pid = (long)pid->valuedouble;
  }
  if (need_pid && st->pid <= 0) {
    snprintf(err, errsz, "container %.128s: the state has no \"pid\"; run the hook as a "
                         "createRuntime (or prestart) hook, when the container process "
                         "exists", st->id);
    goto out;
  }
  if (ann != NULL && !cJSON_IsNull(ann)) {
    if (!cJSON_IsObject(ann)) {
      snprintf(err, errsz, "container %.128s: \"annotations\" is not an object", st->id);
      goto out;
    }
    cJSON_ArrayForEach(it, ann) {
      if (strcmp(it->string, PROXY_OCI_ANNOTATION_CONFIG) == 0) {
        if (!cJSON_IsString(it) || !config_name_ok(it->valuestring)) {
          snprintf(err, errsz, "container %.128s: annotation " PROXY_OCI_ANNOTATION_CONFIG
                   " must name a stored config: 1-128 of [A-Za-z0-9_.-], starting with a "
                   "letter or digit", st->id);
          goto out;
        }
        st->config_name = it->valuestring;
      } else if (strcmp(it->string, PROXY_OCI_ANNOTATION_FILE) == 0) {
        if (!cJSON_IsString(it) || !proxy_oci_file_name_ok(it->valuestring)) {
          snprintf(err, errsz, "container %.128s: annotation " PROXY_OCI_ANNOTATION_FILE
                   " must be a file name in the config directory ([A-Za-z0-9_.-], "
                   "starting with a letter or digit; no '/'), not a path", st->id);
          goto out;
        }
        st->config_file = it->valuestring;
      }
    }
  }
  if (st->config_name != NULL && st->config_file != NULL) {
    snprintf(err, errsz, "container %.128s: set one of the annotations "
             PROXY_OCI_ANNOTATION_CONFIG " and " PROXY_OCI_ANNOTATION_FILE ", not both",
             st->id);
    goto out;
  }
  return 0;
out:
  proxy_oci_state_free(st);
  return r;
}

void proxy_oci_state_free(struct proxy_oci_state *st)
{
  rules_json_free(st->root);
  memset(st, 0, sizeof(*st));
}

/*
 * Reads DIR/NAME: a regular file (not followed if it is a symbolic link, never a FIFO
 * opened for blocking reads) holding a JSON object, at most what the daemon accepts.
 */
static int read_config_file(const char *dir, const char *name, char **text, char *err,
                            size_t errsz)
{
  struct rules_diag diag;
  struct strbuf b;
  struct stat st;
  cJSON *tree = NULL;
  char buf[16384];
  int dfd, fd = -1, r;

  *text = NULL;
  strbuf_init(&b);
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    r = -errno;
    snprintf(err, errsz, "config directory %s: %s (set --config-dir)", dir, strerror(-r));
    return r;
  }
  fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    r = -errno;
    snprintf(err, errsz, "config file %s/%s: %s", dir, name,
             r == -ELOOP ? "is a symbolic link (not followed)" : strerror(-r));
    goto out;
  }
  /* Each refusal says which it is: "not a regular file of at most 1 MiB" had the owner
   * of a large regular file look for what was irregular about it. */
  if (fstat(fd, &st) != 0) {
    r = -errno;
    snprintf(err, errsz, "config file %s/%s: %s", dir, name, strerror(-r));
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    r = -EINVAL;
    snprintf(err, errsz, "config file %s/%s: is %s, not a regular file holding a proxy_config",
             dir, name, S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                                                               : "a socket or device");
    goto out;
  }
  if ((size_t)st.st_size > PROXY_CONTROL_MAX_BODY) {
    r = -EFBIG;
    snprintf(err, errsz, "config file %s/%s: is %lld bytes, more than the 1 MiB the daemon "
             "takes", dir, name, (long long)st.st_size);
    goto out;
  }
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      r = -errno;
      snprintf(err, errsz, "config file %s/%s: %s", dir, name, strerror(-r));
      goto out;
    }
    if (n == 0)
      break;
    strbuf_add(&b, buf, (size_t)n);
    if (b.oom || b.len > PROXY_CONTROL_MAX_BODY) {
      r = b.oom ? -ENOMEM : -EFBIG;
      snprintf(err, errsz, "config file %s/%s: %s", dir, name,
               b.oom ? "out of memory" : "larger than 1 MiB");
      goto out;
    }
  }
  explicit_bzero(buf, sizeof(buf));
  rules_diag_init(&diag);
  r = rules_json_parse(b.data ? b.data : "", b.len, &tree, &diag);
  if (r != 0 || !cJSON_IsObject(tree)) {
    snprintf(err, errsz, "config file %s/%s: %s", dir, name,
             rules_json_error(r, &diag, "must hold a JSON object (a proxy_config)"));
    r = r == -ENOMEM ? r : -EINVAL;
  }
  rules_diag_free(&diag);
  rules_json_free(tree);
  if (r == 0)
    *text = strbuf_take(&b);
out:
  if (b.data != NULL)
    explicit_bzero(b.data, b.len);
  strbuf_free(&b);
  if (fd >= 0)
    close(fd);
  close(dfd);
  return r;
}

static int hook_attach(const char *sock, const char *config_dir,
                       const struct proxy_oci_state *st, const char *name)
{
  struct proxy_api_answer a;
  struct strbuf body;
  char netns[64], path[160], err[1024], text[3072], *cfg = NULL;
  int r;

  if (st->config_name == NULL && st->config_file == NULL) {
    hook_error("container %s has neither the annotation "
            PROXY_OCI_ANNOTATION_CONFIG " nor " PROXY_OCI_ANNOTATION_FILE "; it is not "
            "started unprotected (annotate it, or run the hook only for annotated "
            "containers)\n", st->id);
    return 1;
  }
  if (st->config_file != NULL && read_config_file(config_dir, st->config_file, &cfg, err,
                                                  sizeof(err)) != 0) {
    hook_error("container %s: %s\n", st->id, err);
    return 1;
  }
  snprintf(netns, sizeof(netns), "/proc/%ld/ns/net", st->pid);
  strbuf_init(&body);
  proxy_api_attach_body(&body, netns, cfg, st->config_name);
  if (cfg != NULL) {
    explicit_bzero(cfg, strlen(cfg));
    free(cfg);
  }
  snprintf(path, sizeof(path), "/v1/sandboxes/%s", name);
  r = body.oom ? -ENOMEM
               : proxy_api_call(sock, "PUT", path, body.data, body.len, HOOK_TIMEOUT_MS, &a,
                                err, sizeof(err));
  if (body.data != NULL)
    explicit_bzero(body.data, body.len);
  strbuf_free(&body);
  if (r != 0) {
    hook_error("container %s: cannot attach it: %s\n", st->id,
            r == -ENOMEM ? "out of memory" : err);
    return 1;
  }
  /* 200: attached so already (the hook run again for the same process). */
  if (a.status != 201 && a.status != 200) {
    proxy_api_error_text(&a, text, sizeof(text));
    hook_error("container %s: the daemon refused to attach %s as "
            "sandbox %s: %s\n", st->id, netns, name, text);
    proxy_api_answer_free(&a);
    return 1;
  }
  proxy_api_answer_free(&a);
  return 0;
}

static int hook_detach(const char *sock, const struct proxy_oci_state *st, const char *name)
{
  struct proxy_api_answer a;
  const char *code = "", *msg;
  const cJSON *details;
  char path[160], err[1024], text[3072];
  cJSON *root;
  int r, ret = 0;

  snprintf(path, sizeof(path), "/v1/sandboxes/%s", name);
  r = proxy_api_call(sock, "DELETE", path, NULL, 0, HOOK_TIMEOUT_MS, &a, err, sizeof(err));
  if (r != 0) {
    hook_error("container %s: %s%s\n", st->id, err,
            proxy_api_unreachable(r) ? "; nothing to detach now (a restarted daemon "
                                       "forgets sandboxes whose namespace is gone)" : "");
    return proxy_api_unreachable(r) ? 0 : 1;
  }
  r = proxy_api_error_parse(&a, &root, &code, &msg, &details);
  if (a.status != 200 && strcmp(code, "sandbox_not_found") != 0) {
    /* Its code not decoded for want of memory, an answer that the sandbox is gone
     * (success) would read as a failure to detach it. */
    if (r == -ENOMEM || proxy_api_error_text(&a, text, sizeof(text)) == -ENOMEM)
      hook_error("container %s: cannot read the daemon's answer to detaching sandbox "
                 "%s: out of memory\n", st->id, name);
    else
      hook_error("container %s: cannot detach sandbox %s: %s\n",
              st->id, name, text);
    ret = 1;
  }
  cJSON_Delete(root);
  proxy_api_answer_free(&a);
  return ret;
}

int proxy_cmd_oci_hook(int argc, char **argv)
{
  static const struct option opts[] = {
    { "control", required_argument, NULL, 'c' },
    { "config-dir", required_argument, NULL, 'd' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *sock = PROXY_API_DEFAULT_CONTROL, *config_dir = PROXY_OCI_DEFAULT_CONFIG_DIR;
  char name[PROXY_API_NAME_SIZE], err[1024], *in = NULL;
  struct proxy_oci_state st;
  int c, poststop = 0, ret = 1, r;
  size_t len;

  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'c': sock = optarg; break;
    case 'd': config_dir = optarg; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    if (strcmp(argv[optind], "poststop") == 0) {
      poststop = 1;
    } else if (strcmp(argv[optind], "createRuntime") != 0 &&
               strcmp(argv[optind], "prestart") != 0) {
      hook_error("unknown stage \"%s\" (createRuntime or "
                      "poststop)\n", argv[optind]);
      return 2;
    }
    optind++;
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }
  r = proxy_read_file("-", MAX_STATE, &in, &len);
  if (r != 0) {
    hook_error("cannot read the container state from standard input: %s\n",
               r == -EFBIG ? "larger than 1 MiB" : strerror(-r));
    return 1;
  }
  if (proxy_oci_parse_state(in, len, !poststop, &st, err, sizeof(err)) != 0) {
    hook_error("%s\n", err);
    goto out;
  }
  if (proxy_api_derive_name("oci-", st.id, name, sizeof(name)) != 0) {
    hook_error("container id \"%.64s\" is empty\n", st.id);
    goto out;
  }
  ret = poststop ? hook_detach(sock, &st, name) : hook_attach(sock, config_dir, &st, name);
out:
  proxy_oci_state_free(&st);
  free(in);
  return ret;
}
