/*
 * `authproxy jail [OPTIONS] -- CMD...`: the embedded default. Makes a fresh network
 * namespace whose only way out is this process, runs the proxy in-process on a libuv
 * loop, runs CMD inside the namespace (own mount namespace with the resolver pointed
 * at the responder and the sandbox CA trusted), and exits with CMD's status.
 *
 * Nothing outlives the jail: the namespace has no name, so it vanishes with its last
 * process. The jail is the subreaper of everything CMD starts, and when CMD ends it
 * kills what CMD left running (a server started in the background, a daemon that
 * detached with setsid), as a container runtime does when its first process ends. If
 * the jail dies first (SIGKILL), CMD is killed (PR_SET_PDEATHSIG) and the warden
 * (warden_main) kills what else is left in the jail's namespace.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <uv.h>

#include "netns/netns.h"
#include "proxy/audit.h"
#include "proxy/ca.h"
#include "proxy/cfgload.h"
#include "proxy/commands.h"
#include "proxy/coverage.h"
#include "proxy/log.h"
#include "proxy/options.h"
#include "proxy/proxy.h"
#include "proxy/rng.h"
#include "proxy/tls.h"
#include "rules/rules.h"

#define SYSTEM_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define NSSWITCH_PATH "/etc/nsswitch.conf"
#define NSSWITCH_HOSTS "hosts: files dns\n"
/*
 * Host services that resolve names for any user who connects, nobody included, and so
 * would carry CMD's names out in the host's DNS: nscd (glibc's _PATH_NSCDSOCKET,
 * /var/run/nscd/socket, asked first whatever nsswitch.conf says), systemd-resolved's
 * varlink socket (io.systemd.Resolve: nss-resolve), the system D-Bus
 * (system_bus_socket), where resolved serves org.freedesktop.resolve1 (resolvectl),
 * and avahi's socket (nss-mdns: multicast DNS queries on the host's networks).
 * The directories holding them are hidden, not the sockets: a service that restarts
 * under a running jail (an upgrade restarting resolved) unlinks its socket and binds
 * a new one, and the kernel detaches a mount whose mountpoint another namespace
 * unlinks, so /dev/null bound over the old socket left CMD the new one.
 */
static const struct {
  const char *dir;
  int resolv; /* CMD reads resolv.conf here: /etc/resolv.conf may link to resolved's */
} host_resolver_dirs[] = {
  { "/var/run/nscd", 0 },
  { "/run/systemd/resolve", 1 },
  { "/run/dbus", 0 },
  { "/var/run/dbus", 0 },
  { "/run/avahi-daemon", 0 },
  { "/var/run/avahi-daemon", 0 },
};
static const char *const hidden_dir_resolv[] = { "stub-resolv.conf", "resolv.conf" };

/* The jail's status when it fails itself, before CMD runs: as env(1), timeout(1) and
 * `docker run` do, one that 126 (CMD not executable), 127 (CMD not found) and CMD's
 * usual failures (1, 2) do not overlap. */
#define JAIL_FAILED 125

struct jail {
  uv_loop_t loop;
  struct proxy_ctx ctx;
  struct proxy_sandbox *sb;
  struct proxy_ca *ca;
  struct rules_config *cfg;
  struct rules_secrets *secrets;
  struct proxy_audit *audit;
  struct proxy_upstream_tls *upstream;
  int nsfd;
  int own_netns;
  struct rlimit nofile;   /* the caller's open-file limits, which CMD gets back */
  pid_t child;
  pid_t warden;           /* ends CMD's processes if the jail is killed (start_warden) */
  int warden_fd;          /* the warden's pipe: its end when the jail ends */
  int exit_status;
  int child_done;
  int signals_seen;
  uv_signal_t sig[3];
  int nsig;
  uv_async_t tty_async;   /* SIGINT or SIGQUIT to pass on (tty_signal) */
  int tty_async_open;
  unsigned tty_passed[2]; /* how many of tty_sent[] were passed on */
  uv_work_t pool_start;   /* starts libuv's threadpool (start_threadpool) */
  char tmpdir[4096];
  int files_pipe[2];         /* CMD's set-up to the jail: closed at exec (files_used) */
  char bundle[4096 + 32];
  char resolv[4096 + 32];
  char nsswitch[4096 + 32]; /* "" when the host has no /etc/nsswitch.conf */
  /* options */
  const char *config_path;
  const char *secrets_dir;
  const char *netns_path;
  const char *log_path;
  const char *user;
  struct proxy_common_opts common;
};

static void usage(FILE *f)
{
  fprintf(f,
    "usage: authproxy jail [OPTIONS] -- CMD [ARGS...]\n"
    "\n"
    "Runs CMD in a new network namespace whose only way out is authproxy, applying\n"
    "the proxy_config (header injection, egress policy, DNS remapping). Needs root.\n"
    "Exits with CMD's status; processes CMD leaves running are killed when it ends.\n"
    "SIGINT, SIGQUIT, SIGTERM and SIGHUP sent to the jail are passed on to CMD; the\n"
    "third ends it (SIGKILL). Ctrl-C and Ctrl-\\ at the terminal reach CMD directly.\n"
    "Status 125: the jail itself failed (an option, the config, a secret, the\n"
    "namespace), and CMD did not run; 126: CMD is not executable; 127: not found;\n"
    "128+N: CMD was killed by signal N.\n"
    "\n"
    "options:\n"
    "  --config FILE          proxy_config JSON (default: empty: allow all, inject nothing)\n"
    "  --secrets-dir DIR      where {KEY} templates of workspace_secret headers resolve\n"
    "  --user USER            run CMD as USER (default: the sudo caller, else root)\n"
    "  --log FILE             audit log, JSON Lines (\"-\": standard output, which CMD\n"
    "                         shares: it can print lines that look like records)\n"
    "  --netns PATH           use this existing namespace instead of a new one; it is\n"
    "                         left locked down (no network) when the jail exits\n"
    "  -h, --help             this help\n");
  proxy_common_usage(f);
}

static int parse_args(struct jail *j, int argc, char **argv)
{
  enum { O_CONFIG = 256, O_SECRETS, O_USER, O_LOG, O_NETNS };
  static const struct option own[] = {
    { "config", required_argument, NULL, O_CONFIG },
    { "secrets-dir", required_argument, NULL, O_SECRETS },
    { "user", required_argument, NULL, O_USER },
    { "log", required_argument, NULL, O_LOG },
    { "netns", required_argument, NULL, O_NETNS },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct option opts[32];
  int c, r;

  if (proxy_options_merge(own, opts, sizeof(opts) / sizeof(opts[0])) != 0)
    return -EINVAL;
  optind = 1;
  while ((c = getopt_long(argc, argv, "+vh", opts, NULL)) != -1) {
    switch (c) {
    case O_CONFIG: j->config_path = optarg; break;
    case O_SECRETS: j->secrets_dir = optarg; break;
    case O_USER: j->user = optarg; break;
    case O_LOG: j->log_path = optarg; break;
    case O_NETNS: j->netns_path = optarg; break;
    case 'h': usage(stdout); exit(proxy_finish_output("authproxy jail", 0));
    default:
      r = proxy_common_option("authproxy jail", c, optarg, &j->common);
      if (r < 0)
        return r;
      if (r == 0) {
        usage(stderr);
        return -EINVAL;
      }
      break;
    }
  }
  proxy_common_log_level(&j->common, PROXY_LOG_WARN);
  if (optind >= argc) {
    fprintf(stderr, "authproxy jail: no command given\n\n");
    usage(stderr);
    return -EINVAL;
  }
  return optind;
}

/* ---- files the sandbox sees ---- */

static int write_file(const char *path, const char *a, size_t alen, const char *b,
                      size_t blen)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  int ret = 0;

  if (fd < 0)
    return -errno;
  if (fchmod(fd, 0644) != 0 || (alen && write(fd, a, alen) != (ssize_t)alen) ||
      (blen && write(fd, b, blen) != (ssize_t)blen))
    ret = -errno ? -errno : -EIO;
  if (close(fd) != 0 && ret == 0)
    ret = -errno;
  return ret;
}

/* Where the jail's directory goes: $TMPDIR, else /tmp. */
static const char *jail_tmp(void)
{
  const char *tmp = getenv("TMPDIR");

  if (tmp == NULL || tmp[0] != '/' || strlen(tmp) > sizeof(((struct jail *)0)->tmpdir) - 24)
    tmp = "/tmp";
  return tmp;
}

/*
 * The jail's files are written, bind-mounted and removed by path, as root. In a
 * directory others may write without the sticky bit, another user could rename the
 * jail's directory away and put a symlink in its place, and root would then remove
 * (or mount) files elsewhere. Refuses such a directory, naming it.
 */
static int check_tmp(void)
{
  const char *tmp = jail_tmp();
  struct stat st;

  if (stat(tmp, &st) != 0) {
    int e = errno;

    fprintf(stderr, "authproxy jail: temporary directory %s: %s\n", tmp, strerror(e));
    return -e;
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    fprintf(stderr, "authproxy jail: temporary directory %s is writable by others and not "
                    "sticky (mode %04o): another user could swap the jail's files there; "
                    "set TMPDIR to /tmp or a directory only root can write\n",
            tmp, (unsigned)(st.st_mode & 07777));
    return -EPERM;
  }
  return 0;
}

/*
 * The host's /etc/nsswitch.conf with its hosts line replaced by "hosts: files dns", or
 * no file (*path emptied) when the host has none. A host's line may send lookups to
 * NSS modules that resolve on the host, not through the jail's resolv.conf: "resolve"
 * (systemd-resolved over its Unix socket, Fedora's default), "mdns4" (avahi), "sss";
 * they would hand CMD real addresses and carry its names out in the host's DNS.
 */
static int write_nsswitch(char *path)
{
  char *host = NULL, *out = NULL, *p, *end;
  size_t len = 0, n = 0;
  int r;

  r = proxy_read_file(NSSWITCH_PATH, 1u << 20, &host, &len);
  if (r == -ENOENT) {
    path[0] = '\0';
    return 0;
  }
  if (r != 0)
    return r;
  out = malloc(len + sizeof(NSSWITCH_HOSTS));
  if (out == NULL) {
    r = -ENOMEM;
    goto out;
  }
  for (p = host; p < host + len; p = end) {
    const char *q = p;

    end = memchr(p, '\n', (size_t)(host + len - p));
    end = end != NULL ? end + 1 : host + len;
    while (q < end && (*q == ' ' || *q == '\t'))
      q++;
    if ((size_t)(end - q) > 5 && memcmp(q, "hosts", 5) == 0) {
      for (q += 5; q < end && (*q == ' ' || *q == '\t'); q++)
        ;
      if (q < end && *q == ':')
        continue; /* replaced below */
    }
    memcpy(out + n, p, (size_t)(end - p));
    n += (size_t)(end - p);
  }
  if (n > 0 && out[n - 1] != '\n')
    out[n++] = '\n';
  r = write_file(path, out, n, NSSWITCH_HOSTS, sizeof(NSSWITCH_HOSTS) - 1);
out:
  free(out);
  free(host);
  return r;
}

/* The resolver files and the CA bundle (system CAs + the sandbox CA). */
static int prepare_files(struct jail *j)
{
  static const char resolv[] =
      "# written by authproxy jail: the sandbox's only resolver\n"
      "nameserver " NETNS_DNS_ADDR4 "\n"
      "options edns0\n";
  const char *pem = proxy_ca_cert_pem(j->ca);
  const char *tmp = jail_tmp();
  char *system = NULL;
  size_t slen = 0;
  int r;

  snprintf(j->tmpdir, sizeof(j->tmpdir), "%s/authproxy-jail.XXXXXX", tmp);
  if (mkdtemp(j->tmpdir) == NULL) {
    j->tmpdir[0] = '\0';
    return -errno;
  }
  /* Readable by CMD's user when it drops privileges; holds nothing secret. */
  if (chmod(j->tmpdir, 0755) != 0)
    return -errno;
  snprintf(j->resolv, sizeof(j->resolv), "%s/resolv.conf", j->tmpdir);
  snprintf(j->bundle, sizeof(j->bundle), "%s/ca-bundle.crt", j->tmpdir);
  r = write_file(j->resolv, resolv, sizeof(resolv) - 1, NULL, 0);
  if (r != 0)
    return r;
  snprintf(j->nsswitch, sizeof(j->nsswitch), "%s/nsswitch.conf", j->tmpdir);
  r = write_nsswitch(j->nsswitch);
  if (r != 0)
    return r;
  /* A host without a bundle has no public roots to pass on. Any other failure (out of
   * memory, a read error) must not hand CMD a bundle with the sandbox CA alone: every
   * host the proxy only tunnels would then fail to verify, unexplained. */
  r = proxy_read_file(SYSTEM_BUNDLE, 64u << 20, &system, &slen);
  if (r != 0 && r != -ENOENT) {
    fprintf(stderr, "authproxy jail: cannot read %s: %s\n", SYSTEM_BUNDLE, strerror(-r));
    return r;
  }
  if (r != 0)
    slen = 0;
  r = write_file(j->bundle, system ? system : "", slen, pem, strlen(pem));
  free(system);
  return r;
}

static void remove_files(struct jail *j)
{
  if (j->tmpdir[0] == '\0')
    return;
  unlink(j->resolv);
  if (j->nsswitch[0] != '\0')
    unlink(j->nsswitch);
  unlink(j->bundle);
  rmdir(j->tmpdir);
}

/* ---- the child ---- */

/*
 * Binds SRC over DST in CMD's mount namespace. A DST that is itself a bind of a file
 * since removed (in a jail run inside a jail, /etc/resolv.conf is the outer jail's,
 * whose directory is gone once its CMD started) cannot be mounted on (ENOENT): that
 * mount is detached first, in this namespace only.
 */
static int bind_over(const char *src, const char *dst)
{
  struct stat st;
  int tries;

  if (stat(dst, &st) != 0)
    return -errno;
  for (tries = 0; mount(src, dst, NULL, MS_BIND, NULL) != 0; tries++)
    if (errno != ENOENT || tries == 8 || umount2(dst, MNT_DETACH) != 0)
      return -errno;
  return 0;
}

/*
 * Mounts an empty directory of CMD's mount namespace over DIR (host_resolver_dirs),
 * holding, when RESOLV is not NULL, only that file under the names /etc/resolv.conf
 * may link to. 0, or a negative errno (-ENOENT, -ENOTDIR: DIR is not there to hide).
 */
static int hide_dir(const char *dir, const char *resolv)
{
  char path[PATH_MAX];
  struct stat st;
  size_t i;
  int fd, r;

  if (stat(dir, &st) != 0)
    return -errno;
  if (!S_ISDIR(st.st_mode))
    return -ENOTDIR;
  if (mount("authproxy", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "mode=0755,size=64k") != 0)
    return -errno;
  for (i = 0; resolv != NULL && i < sizeof(hidden_dir_resolv) / sizeof(hidden_dir_resolv[0]);
       i++) {
    snprintf(path, sizeof(path), "%s/%s", dir, hidden_dir_resolv[i]);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
      return -errno;
    close(fd);
    r = bind_over(resolv, path);
    if (r != 0)
      return r;
  }
  return 0;
}

static int drop_privileges(const char *user, struct passwd **pw_out)
{
  struct passwd *pw = NULL;
  const char *sudo_uid = getenv("SUDO_UID");
  char *end;
  uid_t uid;

  *pw_out = NULL;
  if (user != NULL) {
    pw = getpwnam(user);
    if (pw == NULL) {
      uid = (uid_t)strtoul(user, &end, 10);
      if (*user == '\0' || *end != '\0') {
        fprintf(stderr, "authproxy jail: --user: no such user \"%s\"\n", user);
        return -ENOENT;
      }
      pw = getpwuid(uid);
      if (pw == NULL) {
        fprintf(stderr, "authproxy jail: --user: no passwd entry for uid %u\n", uid);
        return -ENOENT;
      }
    }
  } else if (sudo_uid != NULL) {
    uid = (uid_t)strtoul(sudo_uid, &end, 10);
    if (*sudo_uid == '\0' || *end != '\0') {
      fprintf(stderr, "authproxy jail: SUDO_UID=%s is not a uid; give --user\n", sudo_uid);
      return -EINVAL;
    }
    pw = getpwuid(uid);
    if (pw == NULL) {
      /* Running CMD as root instead would give it the proxy's memory and secrets. */
      fprintf(stderr, "authproxy jail: the sudo caller's uid %u has no passwd entry "
                      "here; give --user USER\n", uid);
      return -ENOENT;
    }
  }
  if (pw == NULL || pw->pw_uid == 0) {
    fprintf(stderr, "authproxy jail: warning: CMD runs as root, which can read the "
                    "proxy's memory and the secrets directory; use --user or sudo\n");
    return 0;
  }
  if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
      setuid(pw->pw_uid) != 0) {
    fprintf(stderr, "authproxy jail: cannot switch to user %s: %s\n", pw->pw_name,
            strerror(errno));
    return -EPERM;
  }
  if (setuid(0) == 0) {
    fprintf(stderr, "authproxy jail: privileges could not be dropped\n");
    return -EPERM;
  }
  *pw_out = pw;
  return 0;
}

/*
 * Whether a directory of PATH holds a file named NAME. execvp() answers EACCES, not
 * ENOENT, for a command that is nowhere when some directory of PATH could not be
 * searched, as root's PATH (/root/.local/bin, ...) cannot by CMD's user; a shell
 * says "not found" then, and exits 127.
 */
static int in_path(const char *name)
{
  const char *path = getenv("PATH"), *p, *end;
  char file[PATH_MAX];
  struct stat st;
  int n;

  if (path == NULL)
    path = "/bin:/usr/bin"; /* execvp's default */
  for (p = path;; p = end + 1) {
    end = strchrnul(p, ':');
    if (end == p) /* an empty entry is the current directory */
      n = snprintf(file, sizeof(file), "%s", name);
    else
      n = snprintf(file, sizeof(file), "%.*s/%s", (int)(end - p), p, name);
    if (n > 0 && (size_t)n < sizeof(file) && stat(file, &st) == 0 && !S_ISDIR(st.st_mode))
      return 1;
    if (*end == '\0')
      return 0;
  }
}

/*
 * Unsets the package managers' own proxy settings, which they read before the generic
 * variables: npm's (which pnpm and yarn 1 read too; npm takes npm_config_* in any
 * letter case), yarn's, pip's and cargo's. npm with npm_config_https_proxy sent a
 * CONNECT to the corporate proxy through authproxy, and failed every request with
 * "400 Bad Request - [object Object]".
 */
static void unset_tool_proxy_vars(void)
{
  /* npm and yarn read the name after their prefix with each '_' as '-'
   * ("npm_config_https-proxy" is https-proxy too): there a '-' stands for '_'. */
  static const struct {
    const char *name;
    size_t prefix;
  } names[] = {
    { "npm_config_proxy", 11 }, { "npm_config_https_proxy", 11 },
    { "npm_config_noproxy", 11 }, { "yarn_http_proxy", 5 },
    { "yarn_https_proxy", 5 }, { "pip_proxy", 9 }, { "cargo_http_proxy", 16 },
  };
  char name[64];
  size_t i, k, m, len;
  int found;

  /* environ changes with each unsetenv: start again after each. */
  do {
    found = 0;
    for (i = 0; environ[i] != NULL && !found; i++) {
      const char *e = environ[i], *eq = strchr(e, '=');

      /* An entry without '=' (execve takes any string) is no variable: getenv and
       * the tools never see it, and unsetenv would leave it for this loop to find
       * again, forever. */
      if (eq == NULL)
        continue;
      len = (size_t)(eq - e);
      for (k = 0; k < sizeof(names) / sizeof(names[0]) && !found; k++) {
        if (len != strlen(names[k].name))
          continue;
        for (m = 0; m < len; m++)
          if (tolower((unsigned char)e[m]) != names[k].name[m] &&
              !(m >= names[k].prefix && e[m] == '-' && names[k].name[m] == '_'))
            break;
        found = m == len;
      }
      if (found) {
        memcpy(name, e, len);
        name[len] = '\0';
        unsetenv(name);
      }
    }
  } while (found);
}

static void child_main(struct jail *j, pid_t parent, char **cmd)
{
  static const char *const ca_vars[] = {
    "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
  };
  /* A proxy CMD's environment names (a root shell keeps the caller's; sudo drops
   * them) would be reached through authproxy, whose names then disagree: every
   * request denied. The jail's way out needs none. */
  static const char *const proxy_vars[] = {
    "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
    "ALL_PROXY",  "ftp_proxy",  "FTP_PROXY",   "no_proxy",    "NO_PROXY",
  };
  struct passwd *pw;
  const char *bundle = j->bundle;
  sigset_t all;
  size_t i;
  int r;

  close(j->warden_fd);
  for (i = 1; i < NSIG; i++)
    signal((int)i, SIG_DFL);
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  if (j->nofile.rlim_max != 0)
    setrlimit(RLIMIT_NOFILE, &j->nofile);

  if (setns(j->nsfd, CLONE_NEWNET) != 0) {
    fprintf(stderr, "authproxy jail: setns: %s\n", strerror(errno));
    _exit(JAIL_FAILED);
  }
  if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
    fprintf(stderr, "authproxy jail: private mount namespace: %s\n", strerror(errno));
    _exit(JAIL_FAILED);
  }
  for (i = 0; i < sizeof(host_resolver_dirs) / sizeof(host_resolver_dirs[0]); i++) {
    r = hide_dir(host_resolver_dirs[i].dir, host_resolver_dirs[i].resolv ? j->resolv : NULL);
    if (r != 0 && r != -ENOENT && r != -ENOTDIR) {
      fprintf(stderr, "authproxy jail: cannot hide the host's name service sockets in %s: "
              "%s\n", host_resolver_dirs[i].dir, strerror(-r));
      _exit(JAIL_FAILED);
    }
  }
  r = bind_over(j->resolv, "/etc/resolv.conf");
  if (r != 0)
    fprintf(stderr, "authproxy jail: warning: cannot replace /etc/resolv.conf (%s); DNS "
            "to any server is still answered by the proxy\n", strerror(-r));
  /* Name lookups must reach the responder, as DNS: not NSS modules or an nscd that
   * resolve on the host (glibc asks nscd first, whatever nsswitch.conf says). A
   * lookup answered there would carry the name out in the host's DNS. */
  if (j->nsswitch[0] != '\0' && (r = bind_over(j->nsswitch, NSSWITCH_PATH)) != 0) {
    fprintf(stderr, "authproxy jail: cannot replace %s: %s\n", NSSWITCH_PATH, strerror(-r));
    _exit(JAIL_FAILED);
  }
  if (bind_over(j->bundle, SYSTEM_BUNDLE) == 0)
    bundle = SYSTEM_BUNDLE;
  else
    (void)!write(j->files_pipe[1], "k", 1); /* CMD reads the jail's copy: keep it */
  /* The secrets and the config (which may hold opaque values) are the proxy's, not
   * CMD's (invariant I3): in CMD's view the directory is empty and the file is. */
  if (j->secrets_dir != NULL &&
      mount("authproxy", j->secrets_dir, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "size=0,mode=0500") != 0 && errno != ENOENT) {
    fprintf(stderr, "authproxy jail: cannot hide the secrets directory %s from CMD: %s\n",
            j->secrets_dir, strerror(errno));
    _exit(JAIL_FAILED);
  }
  if (j->config_path != NULL && strcmp(j->config_path, "-") != 0 &&
      (r = bind_over("/dev/null", j->config_path)) != 0) {
    fprintf(stderr, "authproxy jail: cannot hide the config %s from CMD: %s\n",
            j->config_path, strerror(-r));
    _exit(JAIL_FAILED);
  }
  for (i = 0; i < sizeof(ca_vars) / sizeof(ca_vars[0]); i++)
    setenv(ca_vars[i], bundle, 1);
  for (i = 0; i < sizeof(proxy_vars) / sizeof(proxy_vars[0]); i++)
    unsetenv(proxy_vars[i]);
  unset_tool_proxy_vars();
  if (drop_privileges(j->user, &pw) != 0)
    _exit(JAIL_FAILED);
  /* CMD must not outlive the proxy that is its only way out. Set after the switch of
   * user, which clears it; then check the parent did not die before it was set. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent)
    _exit(JAIL_FAILED);
  /* No setuid program or file capability gives CMD back what was dropped (a cached
   * sudo credential of the caller's, say, would take it out of the namespace). */
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    fprintf(stderr, "authproxy jail: no_new_privs: %s\n", strerror(errno));
    _exit(JAIL_FAILED);
  }
  if (pw != NULL) {
    setenv("HOME", pw->pw_dir, 1);
    setenv("USER", pw->pw_name, 1);
    setenv("LOGNAME", pw->pw_name, 1);
  }
  execvp(cmd[0], cmd);
  r = errno;
  if (r == EACCES && strchr(cmd[0], '/') == NULL && !in_path(cmd[0]))
    r = ENOENT;
  fprintf(stderr, "authproxy jail: cannot run %s: %s\n", cmd[0], strerror(r));
  _exit(r == ENOENT ? 127 : 126);
}

/* ---- the parent ---- */

/*
 * Waits until CMD has started (its end of the pipe closes at exec) or failed to, then
 * removes the jail's files: CMD's mount namespace holds its own binds of them. A jail
 * killed with SIGKILL then leaves no directory behind. Kept when CMD reads the CA
 * bundle from the directory (the bind over the system bundle failed).
 */
static void files_used(struct jail *j)
{
  char c;
  ssize_t n;

  close(j->files_pipe[1]);
  j->files_pipe[1] = -1;
  do
    n = read(j->files_pipe[0], &c, 1);
  while (n < 0 && errno == EINTR);
  close(j->files_pipe[0]);
  j->files_pipe[0] = -1;
  if (n == 0 && j->child > 0) {
    /* The warden first: once removed, the name is anyone's to take in TMPDIR. */
    if (j->warden_fd >= 0)
      (void)!write(j->warden_fd, "f", 1);
    remove_files(j);
    j->tmpdir[0] = '\0';
  }
}

/* One line on what the sandbox did, for -v. */
static void log_summary(const struct jail *j)
{
  const struct proxy_counters *k = &j->ctx.counters;
  struct proxy_ca_stats cs;

  proxy_ca_stats(j->ca, &cs);
  log_info("jail: %llu connections (%llu tunnel, %llu intercept, %llu bypass, %llu deny), "
           "%llu requests (%llu denied, %llu malformed), %llu headers injected; "
           "certificates: %zu cached, %llu minted, %llu evicted",
           (unsigned long long)k->conns_accepted, (unsigned long long)k->actions[RULES_TUNNEL],
           (unsigned long long)k->actions[RULES_INTERCEPT],
           (unsigned long long)k->actions[RULES_BYPASS], (unsigned long long)k->actions[RULES_DENY],
           (unsigned long long)k->requests, (unsigned long long)k->requests_denied,
           (unsigned long long)k->requests_bad, (unsigned long long)k->headers_injected,
           cs.entries, (unsigned long long)cs.minted, (unsigned long long)cs.evictions);
}

static void sandbox_closed(void *arg)
{
  struct jail *j = arg;

  j->sb = NULL;
  proxy_loop_stop(&j->ctx);
}

static void close_walk(uv_handle_t *h, void *arg)
{
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* The parent process id in /proc/PID/stat, or -1. */
static pid_t parent_of(const char *pid)
{
  char path[300], buf[512], *p; /* a directory entry's name is up to 255 bytes */
  ssize_t n;
  int fd;

  snprintf(path, sizeof(path), "/proc/%s/stat", pid);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  /* "PID (COMM) STATE PPID ...": COMM may hold anything, ')' included. */
  p = strrchr(buf, ')');
  if (p == NULL || p[1] != ' ' || p[2] == '\0' || p[3] != ' ')
    return -1;
  return (pid_t)strtol(p + 4, NULL, 10);
}

/* Which processes kill_where ends: CMD's leftovers, by parent or by namespace. */
struct victims {
  pid_t parent;          /* children of this process (0: any parent) */
  const struct stat *ns; /* in this network namespace, its st_dev and st_ino (NULL: any) */
  pid_t except;
};

/*
 * Sends SIGKILL to every process v picks; returns how many there were. One picked by
 * its namespace is held by a pidfd while that is read, so a pid that ends and is
 * reused meanwhile is not killed in its stead; a child keeps its pid until reaped.
 */
static int kill_where(const struct victims *v)
{
  char path[300];
  struct dirent *de;
  struct stat st;
  int n = 0, pfd;
  DIR *d;

  d = opendir("/proc");
  if (d == NULL)
    return 0;
  while ((de = readdir(d)) != NULL) {
    pid_t pid;

    if (!isdigit((unsigned char)de->d_name[0]))
      continue;
    pid = (pid_t)strtol(de->d_name, NULL, 10);
    if (pid == v->except || (v->parent != 0 && parent_of(de->d_name) != v->parent))
      continue;
    if (v->ns == NULL) {
      kill(pid, SIGKILL);
      n++;
      continue;
    }
    pfd = pidfd_open(pid, 0);
    if (pfd < 0)
      continue;
    snprintf(path, sizeof(path), "/proc/%s/ns/net", de->d_name);
    if (stat(path, &st) == 0 && st.st_dev == v->ns->st_dev && st.st_ino == v->ns->st_ino) {
      (void)pidfd_send_signal(pfd, SIGKILL, NULL, 0);
      n++;
    }
    close(pfd);
  }
  closedir(d);
  return n;
}

/* Sends SIGKILL to every child of this process but EXCEPT; returns how many there
 * were. */
static int kill_children(pid_t except)
{
  struct victims v = { .parent = getpid(), .except = except };

  return kill_where(&v);
}

/*
 * CMD has ended: kills what it left running. Being their subreaper, the jail is the
 * parent of every orphan; killing its children hands their own children to it, so
 * this goes round until none is left (or 2 s have passed: a process stuck in the
 * kernel cannot be hurried, and the jail must still end).
 */
static void end_leftovers(pid_t warden)
{
  uint64_t deadline = uv_hrtime() + 2000000000ULL;
  int n, total = 0;

  for (;;) {
    n = kill_children(warden);
    while (waitpid(-1, NULL, WNOHANG) > 0)
      total++;
    if (n == 0)
      break;
    if (uv_hrtime() > deadline) {
      log_warn("jail: %d processes CMD left behind have not ended 2 s after SIGKILL", n);
      return;
    }
    usleep(1000);
  }
  if (total > 0)
    log_info("jail: CMD left %d processes running; they were killed", total);
}

/*
 * Sends SIGKILL to every process in the network namespace NS but this one; returns how
 * many there were.
 */
static int kill_in_netns(const struct stat *ns)
{
  struct victims v = { .ns = ns, .except = getpid() };

  return kill_where(&v);
}

/*
 * The warden: a process of the jail's that waits for the jail to end. A jail killed
 * with SIGKILL (a CI runner's after its grace period, or one that kills the job's
 * process group) runs no end_leftovers: CMD died of PR_SET_PDEATHSIG, but what it had
 * started, the process it was waiting on included, went to init and kept running,
 * holding the step's output pipe, for which the runner then waited for ever. Told
 * nothing before its pipe closes, the warden kills every process left in the jail's
 * own namespace (only CMD's descendants are there: the jail's own sockets in it are
 * not processes; a process that moved to a namespace of its own, with a user namespace
 * of its own, is not found), and removes the jail's files if the jail had not. In
 * a session of its own, holding none of the jail's files but that pipe and the
 * namespace, it outlives a SIGKILL to the jail's process group and holds no output
 * pipe open. It lives in the jail's own namespace, not beside the jail: in a jail run
 * inside a jail, the outer one's warden kills every process in the outer namespace,
 * and an inner warden there died with the inner jail before it could end the inner
 * CMD's processes, which then kept running.
 */
static void warden_main(struct jail *j, int fd)
{
  static const int ignored[] = { SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGTSTP, SIGTTIN,
                                 SIGTTOU, SIGPIPE };
  unsigned lo, hi;
  uint64_t deadline;
  struct stat ns;
  sigset_t none;
  size_t i;
  ssize_t n;
  char c;
  int null;

  (void)setsid();
  if (j->own_netns)
    (void)setns(j->nsfd, CLONE_NEWNET);
  for (i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
    signal(ignored[i], SIG_IGN);
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
  }
  lo = (unsigned)(fd < j->nsfd ? fd : j->nsfd);
  hi = (unsigned)(fd < j->nsfd ? j->nsfd : fd);
  if (lo > 3)
    close_range(3, lo - 1, 0);
  if (hi > lo + 1)
    close_range(lo + 1, hi - 1, 0);
  close_range(hi + 1, ~0U, 0);
  /* 'f': the jail removed its files, and their names may since be another's (a
   * symlink put in TMPDIR under its directory's name); 'd': it ended everything. */
  for (;;) {
    n = read(fd, &c, 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n != 1 || c != 'f')
      break;
    j->tmpdir[0] = '\0';
  }
  if (n != 0) {
    proxy_coverage_dump();
    _exit(0); /* the jail ended as it should, and ended all of CMD's itself */
  }
  if (j->own_netns && fstat(j->nsfd, &ns) == 0) {
    deadline = uv_hrtime() + 2000000000ULL;
    while (kill_in_netns(&ns) > 0 && uv_hrtime() < deadline)
      usleep(1000);
  }
  remove_files(j);
  proxy_coverage_dump();
  _exit(0);
}

/*
 * Starts the warden (warden_main) once the jail has its namespace and files, and
 * before CMD. 0, or a negative errno.
 */
static int start_warden(struct jail *j)
{
  int p[2], r;

  if (pipe2(p, O_CLOEXEC) != 0)
    return -errno;
  j->warden = fork();
  if (j->warden < 0) {
    r = -errno;
    j->warden = 0;
    close(p[0]);
    close(p[1]);
    return r;
  }
  if (j->warden == 0) {
    close(p[1]);
    warden_main(j, p[0]);
  }
  close(p[0]);
  j->warden_fd = p[1];
  return 0;
}

/* The jail has ended everything itself: the warden leaves without looking (nor
 * removing files: the jail does, after this). */
static void stop_warden(struct jail *j)
{
  if (j->warden_fd < 0)
    return;
  (void)!write(j->warden_fd, "d", 1);
  close(j->warden_fd);
  j->warden_fd = -1;
  while (waitpid(j->warden, NULL, 0) < 0 && errno == EINTR)
    ;
}

/*
 * SIGINT and SIGQUIT come either from the terminal, which sends Ctrl-C and Ctrl-\ to
 * its whole foreground process group (CMD included: it had them already, and a REPL
 * or an agent that handles Ctrl-C must not be killed for it, nor the jail die of
 * Ctrl-\), or from a process that signals the jail alone (kill, a supervisor), which
 * means them for CMD. Only the siginfo tells which, and uv_signal_t does not pass it
 * on: these two have a handler of their own, which counts the ones to pass on and
 * wakes the loop (uv_async_send is async-signal-safe).
 */
static const int tty_signums[2] = { SIGINT, SIGQUIT };
static volatile sig_atomic_t tty_sent[2];
static volatile pid_t tty_cmd_pid;
static uv_async_t *volatile tty_wake;

static void tty_signal(int signum, siginfo_t *si, void *uctx)
{
  int saved = errno;
  uv_async_t *wake = tty_wake;
  pid_t pg;

  (void)uctx;
  /* si_code > 0: the kernel's, i.e. the terminal's. Sent by CMD, or by a process in
   * the group the jail or CMD leads (kill 0, kill -PGID): CMD had it too (as sudo
   * decides what to relay). */
  if (wake == NULL || si->si_code > 0)
    goto out;
  if (si->si_pid != 0) {
    if (si->si_pid == tty_cmd_pid)
      goto out;
    pg = getpgid(si->si_pid);
    if (pg == getpid() || (tty_cmd_pid > 0 && pg == tty_cmd_pid))
      goto out;
  }
  tty_sent[signum == SIGQUIT]++;
  uv_async_send(wake);
out:
  errno = saved;
}

static int tty_signals_start(struct jail *j)
{
  struct sigaction sa;
  size_t i;

  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = tty_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigfillset(&sa.sa_mask);
  tty_wake = &j->tty_async;
  for (i = 0; i < 2; i++)
    if (sigaction(tty_signums[i], &sa, NULL) != 0)
      return -errno;
  return 0;
}

/* Back to the default: no signal is passed on once CMD has ended. */
static void tty_signals_stop(struct jail *j)
{
  size_t i;

  for (i = 0; i < 2; i++)
    signal(tty_signums[i], SIG_DFL);
  tty_wake = NULL;
  if (j->tty_async_open && !uv_is_closing((uv_handle_t *)&j->tty_async))
    uv_close((uv_handle_t *)&j->tty_async, NULL);
}

static volatile sig_atomic_t jail_continued;

static void on_sigcont(int signum)
{
  (void)signum;
  jail_continued = 1;
}

/*
 * CMD stopped on its own (bash's `suspend` stops its own process group, not the
 * jail's; `kill -STOP`): the jail stops too, as sudo does, so the shell that started
 * it sees the job stopped and takes the terminal back. Without this that shell waits
 * for a job that never ends, and once its terminal is closed nothing ever continues
 * CMD or ends the jail. Continued (fg, bg), the jail gives the terminal back to CMD's
 * process group if it had it, and continues CMD. A jail no shell could continue (its
 * process group orphaned: started by a supervisor) is not stopped by SIGTSTP, and
 * leaves CMD as it is, for whoever stopped it.
 */
static void follow_stop(struct jail *j, int signo)
{
  pid_t own = getpgrp(), cmd_pg = getpgid(j->child), fg = -1;
  int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  struct sigaction sa, old;

  if (fd >= 0)
    fg = tcgetpgrp(fd);
  if ((signo == SIGTTIN || signo == SIGTTOU) && fg == own && cmd_pg > 0 && cmd_pg != own) {
    /* CMD's group wants the terminal the jail's group holds: it is CMD's. */
    (void)tcsetpgrp(fd, cmd_pg);
  } else {
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigcont;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    jail_continued = 0;
    sigaction(SIGCONT, &sa, &old);
    /* SIGSTOP would stop even a jail that no one can continue. */
    kill(getpid(), signo == SIGSTOP ? SIGTSTP : signo);
    sigaction(SIGCONT, &old, NULL);
    if (!jail_continued) {
      if (fd >= 0)
        close(fd);
      return;
    }
    /* Only the foreground may hand the terminal on. */
    if (fd >= 0 && fg == cmd_pg && cmd_pg != own && tcgetpgrp(fd) == own)
      (void)tcsetpgrp(fd, cmd_pg);
  }
  if (fd >= 0)
    close(fd);
  if (cmd_pg > 0 && cmd_pg != own)
    killpg(cmd_pg, SIGCONT);
  else
    kill(j->child, SIGCONT);
}

static void reap(struct jail *j)
{
  int status, stopped = 0;
  pid_t r;

  while ((r = waitpid(-1, &status, WNOHANG | WUNTRACED)) > 0) {
    if (r != j->child)
      continue;
    if (WIFSTOPPED(status)) {
      stopped = WSTOPSIG(status);
      continue;
    }
    j->child_done = 1;
    if (WIFEXITED(status))
      j->exit_status = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
      j->exit_status = 128 + WTERMSIG(status);
  }
  if (stopped && !j->child_done)
    follow_stop(j, stopped);
  if (j->child_done && j->sb != NULL) {
    int i;

    for (i = 0; i < j->nsig; i++)
      uv_signal_stop(&j->sig[i]);
    tty_signals_stop(j);
    end_leftovers(j->warden);
    proxy_sandbox_close(j->sb, 0, sandbox_closed, j);
  }
}

/* Passes a signal on; CMD decides how to end. A third one ends it for good. */
static void pass_on(struct jail *j, int signum)
{
  j->signals_seen++;
  if (j->child <= 0 || j->child_done)
    return;
  if (j->signals_seen >= 3)
    kill(j->child, SIGKILL);
  else
    kill(j->child, signum);
}

static void signal_cb(uv_signal_t *s, int signum)
{
  struct jail *j = s->data;

  if (signum == SIGCHLD) {
    reap(j);
    return;
  }
  pass_on(j, signum);
}

static void tty_async_cb(uv_async_t *a)
{
  struct jail *j = a->data;
  size_t i;

  for (i = 0; i < 2; i++) {
    unsigned sent = (unsigned)tty_sent[i];

    while (j->tty_passed[i] != sent) {
      j->tty_passed[i]++;
      pass_on(j, tty_signums[i]);
    }
  }
}

static int start_signals(struct jail *j)
{
  static const int sigs[] = { SIGCHLD, SIGTERM, SIGHUP };
  size_t i;
  int r;

  r = uv_async_init(&j->loop, &j->tty_async, tty_async_cb);
  if (r != 0)
    return r;
  j->tty_async.data = j;
  j->tty_async_open = 1;
  r = tty_signals_start(j);
  if (r != 0)
    return r;
  for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
    r = uv_signal_init(&j->loop, &j->sig[i]);
    if (r != 0)
      return r;
    j->sig[i].data = j;
    j->nsig++;
    r = uv_signal_start(&j->sig[i], signal_cb, sigs[i]);
    if (r != 0)
      return r;
  }
  return 0;
}

static void pool_start_work(uv_work_t *w)
{
  (void)w;
}

/*
 * Starts libuv's threadpool (name lookups, audit writes) now, its threads blocking
 * every signal: signals belong to the main thread. libuv starts it on first use from
 * the loop, where its threads would take the process's signals as they come, the
 * SIGCONT that continues a stopped jail among them; follow_stop would then look for
 * it before that thread's handler ran, and leave CMD stopped.
 */
/*
 * A --log FIFO that no reader has open makes the audit log's open wait for one. The
 * jail waits here, before it has made anything a signal would leave behind (its
 * directory in TMPDIR, the rules of a --netns namespace): a Ctrl-C or a kill while it
 * waits, the likely answer to a jail that seems stuck, used to leave its directory.
 * Returns a descriptor of the FIFO to hold until the log is open (the reader's end
 * stays matched meanwhile), or -1: not a FIFO, or an error the log's open reports.
 */
static int fifo_reader_wait(const char *path)
{
  struct stat st;
  int fd;

  if (strcmp(path, "-") == 0 || lstat(path, &st) != 0 || !S_ISFIFO(st.st_mode))
    return -1;
  fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd >= 0 || errno != ENXIO)
    return fd;
  fprintf(stderr, "authproxy jail: --log %s: a FIFO that no reader has open; waiting for "
                  "one before going on (start the reader, or give --log a file)\n", path);
  do
    fd = open(path, O_WRONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  return fd;
}

static void start_threadpool(struct jail *j)
{
  sigset_t all, old;

  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  (void)uv_queue_work(&j->loop, &j->pool_start, pool_start_work, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static int attach_ns(struct jail *j, struct netns_fds *fds)
{
  struct netns_rules_opts o;
  char err[512];
  int r;

  if (j->netns_path != NULL) {
    j->nsfd = netns_open(j->netns_path);
    if (j->nsfd < 0) {
      fprintf(stderr, "authproxy jail: --netns %s: %s\n", j->netns_path,
              j->nsfd == -EINVAL ? "not a network namespace" : strerror(-j->nsfd));
      return j->nsfd;
    }
    if (netns_is_own(j->nsfd) == 1) {
      fprintf(stderr, "authproxy jail: --netns %s is the jail's own network namespace "
                      "(the host's); give the sandbox a namespace of its own\n",
              j->netns_path);
      /* Not a sandbox's: the exit's lockdown is not for it either. */
      close(j->nsfd);
      j->nsfd = -1;
      return -EPERM;
    }
  } else {
    j->nsfd = netns_create();
    if (j->nsfd < 0) {
      fprintf(stderr, "authproxy jail: cannot create a network namespace: %s%s\n",
              strerror(-j->nsfd), j->nsfd == -EPERM ? " (run as root)" : "");
      return j->nsfd;
    }
    j->own_netns = 1;
  }
  memset(&o, 0, sizeof(o));
  o.dns_port = NETNS_DNS_PORT;
  o.capture = j->common.capture;
  err[0] = '\0';
  r = netns_attach(j->nsfd, &o, fds, err, sizeof(err));
  if (r != 0) {
    fprintf(stderr, "authproxy jail: %s\n", err[0] ? err : strerror(-r));
    return r;
  }
  if (o.ipv4_only)
    log_info("jail: %s has IPv6 disabled (net.ipv6.conf.lo.disable_ipv6=1): only IPv4 is "
             "captured", j->netns_path != NULL ? j->netns_path : "the namespace");
  return 0;
}

int proxy_cmd_jail(int argc, char **argv)
{
  struct proxy_ca_opts caopts;
  struct netns_fds fds;
  struct jail *j;
  sigset_t all, old;
  char err[512];
  int first, i, r, ret = JAIL_FAILED, orphans = 0, fifo = -1;

  j = calloc(1, sizeof(*j));
  if (j == NULL)
    return JAIL_FAILED;
  j->nsfd = -1;
  j->files_pipe[0] = j->files_pipe[1] = -1;
  j->warden_fd = -1;
  j->exit_status = JAIL_FAILED;
  netns_fds_init(&fds);
  proxy_common_opts_init(&j->common);
  first = parse_args(j, argc, argv);
  if (first < 0)
    goto out;
  if (geteuid() != 0) {
    fprintf(stderr, "authproxy jail: must run as root (it creates a network namespace "
                    "and nftables rules); try: sudo authproxy jail ...\n");
    goto out;
  }
  signal(SIGPIPE, SIG_IGN);
  /* The proxy holds two descriptors per connection; CMD gets the caller's limits. */
  r = proxy_nofile_raise(&j->nofile);
  if (r != 0)
    fprintf(stderr, "authproxy jail: warning: cannot raise the open-file limit: %s\n",
            strerror(-r));
  r = proxy_rng_init();
  if (r != 0) {
    fprintf(stderr, "authproxy jail: cannot seed the random generator: %s\n", strerror(-r));
    goto out;
  }
  j->secrets = rules_secrets_new(j->secrets_dir);
  if (j->secrets == NULL)
    goto out;
  rules_secrets_files_only(j->secrets);
  if (j->config_path != NULL) {
    struct rules_diag warn;
    size_t w;

    if (proxy_load_config(j->config_path, j->secrets, "authproxy jail: config", stderr,
                          &j->cfg) != 0)
      goto out;
    /* What `config check` warns of: a developer reads it here, before CMD runs. */
    rules_diag_init(&warn);
    if (rules_config_warnings(j->cfg, &warn) == 0)
      for (w = 0; w < warn.count; w++)
        fprintf(stderr, "authproxy jail: config: %s: warning: %s\n", warn.entries[w].path,
                warn.entries[w].message);
    rules_diag_free(&warn);
  } else {
    struct rules_diag diag;

    rules_diag_init(&diag);
    r = rules_config_parse("{}", 2, "", NULL, &j->cfg, &diag);
    rules_diag_free(&diag);
    if (r != 0)
      goto out;
  }
  memset(&caopts, 0, sizeof(caopts));
  caopts.cache_size = j->common.leaf_cache;
  r = proxy_ca_generate(&caopts, &j->ca);
  if (r != 0) {
    fprintf(stderr, "authproxy jail: cannot generate the sandbox CA: %s\n", strerror(-r));
    goto out;
  }
  err[0] = '\0';
  r = proxy_upstream_tls_new(NULL, j->common.upstream_ca, j->common.nupstream_ca,
                             &j->upstream, err, sizeof(err));
  if (r != 0) {
    fprintf(stderr, "authproxy jail: %s\n", err[0] ? err : strerror(-r));
    goto out;
  }
  if (j->log_path != NULL)
    fifo = fifo_reader_wait(j->log_path);
  if (check_tmp() != 0)
    goto out;
  if (attach_ns(j, &fds) != 0)
    goto out;
  r = prepare_files(j);
  if (r != 0) {
    fprintf(stderr, "authproxy jail: cannot write the sandbox's resolver and CA files: %s\n",
            strerror(-r));
    goto out;
  }
  r = start_warden(j);
  if (r != 0) {
    fprintf(stderr, "authproxy jail: cannot start the process that ends CMD's if the jail "
                    "is killed: %s\n", strerror(-r));
    goto out;
  }

  r = uv_loop_init(&j->loop);
  if (r != 0) {
    fprintf(stderr, "authproxy jail: cannot start the event loop: %s\n", uv_strerror(r));
    goto out;
  }
  start_threadpool(j);
  r = proxy_ctx_init(&j->ctx, &j->loop);
  if (r != 0) {
    fprintf(stderr, "authproxy jail: cannot start the proxy: %s\n", strerror(-r));
    goto out_loop;
  }
  j->ctx.limits = j->common.limits;
  /* One sandbox: there is no other to keep descriptors for, only the jail's own
   * files (listeners, responder, log, namespace); and it may have both the name
   * lookups libuv runs at once. */
  if (j->ctx.fd_limit > 256)
    j->ctx.fd_share = j->ctx.fd_conns_share = j->ctx.fd_limit - 128;
  if (j->ctx.limits.resolve_max < 2)
    j->ctx.limits.resolve_max = 2;
  j->ctx.upstream_tls = j->upstream;
  if (j->log_path != NULL) {
    r = proxy_audit_open(&j->loop, j->log_path, &j->audit);
    if (r != 0) {
      fprintf(stderr, "authproxy jail: --log %s: %s\n", j->log_path,
              proxy_audit_strerror(j->log_path, r));
      goto out_loop;
    }
    j->ctx.audit = j->audit;
  }
  if (fifo >= 0) {
    close(fifo);
    fifo = -1;
  }
  r = proxy_sandbox_start(&j->ctx, "jail", j->cfg, j->ca, &fds, NULL, &j->sb);
  if (r != 0)
    goto out_loop;

  /* Orphans among CMD's descendants come to the jail, which ends them with CMD. */
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    fprintf(stderr, "authproxy jail: cannot become the subreaper of CMD's processes: %s\n",
            strerror(errno));
    goto out_loop;
  }
  /* Signals stay blocked across fork so none is lost between the two. */
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &old);
  r = start_signals(j);
  if (r == 0) {
    pid_t parent = getpid();

    if (pipe2(j->files_pipe, O_CLOEXEC) != 0) {
      r = -errno;
    } else {
      j->child = fork();
      if (j->child == 0)
        child_main(j, parent, argv + first);
      tty_cmd_pid = j->child;
    }
  }
  sigprocmask(SIG_SETMASK, &old, NULL);
  if (j->files_pipe[0] >= 0)
    files_used(j);
  if (r != 0 || j->child < 0) {
    fprintf(stderr, "authproxy jail: cannot start %s: %s\n", argv[first],
            r != 0 ? uv_strerror(r) : strerror(errno));
    j->child = 0;
    proxy_sandbox_close(j->sb, 0, sandbox_closed, j);
  } else {
    reap(j); /* CMD may have ended before SIGCHLD was being watched. */
  }
  proxy_loop_run(&j->ctx, j->common.busy_poll_us);
  ret = j->child > 0 ? j->exit_status : JAIL_FAILED;
  log_summary(j);

out_loop:
  if (j->sb != NULL)
    proxy_sandbox_close(j->sb, 0, sandbox_closed, j);
  /* With a write in flight on the thread pool, the audit log finishes closing (its
   * last write, then its timer) from the loop: let it, and every other close, run
   * before the walk, which would otherwise close the log's timer under it. */
  proxy_audit_close(j->audit);
  j->ctx.audit = NULL;
  tty_signals_stop(j);
  for (i = 0; i < j->nsig; i++)
    if (!uv_is_closing((uv_handle_t *)&j->sig[i]))
      uv_close((uv_handle_t *)&j->sig[i], NULL);
  (void)proxy_loop_finish(&j->loop);
  uv_walk(&j->loop, close_walk, NULL);
  /* With lookups left to a silent resolver the loop stays, for their threads. */
  orphans = proxy_loop_finish(&j->loop);
  if (!orphans)
    uv_loop_close(&j->loop);
  proxy_ctx_cleanup(&j->ctx);
out:
  if (fifo >= 0)
    close(fifo);
  netns_fds_close(&fds);
  if (j->nsfd >= 0) {
    if (!j->own_netns) {
      /* A namespace that outlives the jail must not gain network by its leaving. */
      err[0] = '\0';
      if (netns_detach(j->nsfd, err, sizeof(err)) != 0)
        fprintf(stderr, "authproxy jail: warning: %s\n", err);
    }
    close(j->nsfd);
  }
  stop_warden(j);
  remove_files(j);
  rules_config_unref(j->cfg);
  rules_secrets_free(j->secrets);
  proxy_upstream_tls_free(j->upstream);
  proxy_ca_free(j->ca);
  if (!orphans)
    free(j);
  return ret;
}
