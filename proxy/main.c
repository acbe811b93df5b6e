/*
 * authproxy: the command-line entry point. Dispatches to the subcommands.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "proxy/commands.h"
#include "proxy/coverage.h"
#include "proxy/options.h"
#include "proxy/proxy.h"

struct command {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *help;
  const char *output; /* its prefix, if what it prints on standard output is its result */
};

static int cmd_version(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  printf("authproxy %s\n", AUTHPROXY_VERSION);
  return 0;
}

/* jail's status is CMD's, and CMD shares its standard output; serve's standard output
 * is at most a log (serve --log -), whose write errors the log reports. */
static const struct command commands[] = {
  { "jail", proxy_cmd_jail, "run a command in a sandbox whose only way out is authproxy", NULL },
  { "serve", proxy_cmd_serve, "the daemon: every sandbox of the host, driven by the control API",
    NULL },
  { "ctl", proxy_cmd_ctl, "command-line client of the control API", "authproxy ctl" },
  { "version", cmd_version, "print the version", "authproxy" },
  { "config", proxy_cmd_config, "check a proxy_config file or show it redacted", "config" },
  { "cni", proxy_cmd_cni, "CNI plugin (also as an executable named authproxy-cni)",
    "authproxy-cni" },
  { "oci-hook", proxy_cmd_oci_hook, "OCI runtime hook: attach a container (createRuntime)",
    "authproxy oci-hook" },
};

/*
 * cJSON's memory is wiped before it goes back to the heap: configs with opaque values,
 * secrets and CA keys pass through its trees and print buffers, and the print buffers
 * grow by copying. (With its own free function cJSON copies instead of calling
 * realloc, so every old buffer comes through here.)
 */
static void json_free(void *p)
{
  if (p != NULL) {
    explicit_bzero(p, malloc_usable_size(p));
    free(p);
  }
}

static void usage(FILE *f)
{
  size_t i;

  fprintf(f, "usage: authproxy COMMAND [ARGS...]\n\ncommands:\n");
  for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
    fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
  fprintf(f, "\nRun `authproxy COMMAND --help` for a command's options.\n");
}

int main(int argc, char **argv)
{
  const char *base = argc > 0 ? strrchr(argv[0], '/') : NULL;
  cJSON_Hooks hooks = { rules_json_malloc, json_free };
  size_t i;
  int ret;

  /* Every command but version handles secrets, opaque values or CA keys (serve, jail,
   * ctl secret-set, config check, an inline proxy_config of CNI): a core file would
   * hold them in plaintext, and another process of the same user could read them
   * through ptrace or /proc/PID/mem (invariant I3). Not dumpable, the kernel writes
   * no core and allows neither. execve() resets it, so CMD of a jail is unaffected. */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    fprintf(stderr, "authproxy: cannot keep secrets out of core files (PR_SET_DUMPABLE): "
                    "%s\n", strerror(errno));
    return 1;
  }
  cJSON_InitHooks(&hooks);
  /* A CNI runtime runs the executable its configuration's "type" names, with no
   * arguments: installed as (a link named) authproxy-cni, this binary is the plugin. */
  base = base != NULL ? base + 1 : argc > 0 ? argv[0] : "";
  if (strcmp(base, "authproxy-cni") == 0)
    return proxy_finish_output("authproxy-cni", proxy_cmd_cni(argc, argv));
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return proxy_finish_output("authproxy", 0);
  }
  if (strcmp(argv[1], "--version") == 0)
    return proxy_finish_output("authproxy", cmd_version(argc - 1, argv + 1));
  for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
    if (strcmp(argv[1], commands[i].name) != 0)
      continue;
    ret = commands[i].fn(argc - 1, argv + 1);
    if (commands[i].output != NULL)
      ret = proxy_finish_output(commands[i].output, ret);
    /* exit() would join libuv's threads, one of them maybe still waiting for a
     * resolver that never answers (proxy_loop_finish). */
    if (proxy_lookups_orphaned() > 0) {
      fflush(NULL);
      proxy_coverage_dump();
      _exit(ret);
    }
    return ret;
  }
  fprintf(stderr, "authproxy: unknown command \"%s\"\n\n", argv[1]);
  usage(stderr);
  return 2;
}
