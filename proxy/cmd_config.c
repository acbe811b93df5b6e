/*
 * `authproxy config check|show FILE [--secrets-dir D]`: validates a proxy_config
 * the way a push would (secrets resolved), and prints every error or a summary, or
 * the redacted config.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/cfgload.h"
#include "proxy/commands.h"
#include "rules/rules.h"

static void usage(FILE *f)
{
  fprintf(f,
          "usage: authproxy config check FILE [--secrets-dir DIR]\n"
          "       authproxy config show FILE [--secrets-dir DIR]\n"
          "\n"
          "Validates a proxy_config JSON file as a push would, resolving the\n"
          "{KEY} templates of workspace_secret headers against DIR (one file per key).\n"
          "FILE may be - for standard input.\n"
          "\n"
          "  check   print every error (config: PATH: MESSAGE) and exit 1,\n"
          "          or print a one-line summary and exit 0, after a warning\n"
          "          (config: PATH: warning: MESSAGE) for each part that can\n"
          "          never do what it says\n"
          "  show    print the config as JSON with opaque values left out and\n"
          "          workspace_secret values as their templates\n"
          "\n"
          "options:\n"
          "  --secrets-dir DIR   where secret files are read (without it, a config\n"
          "                      with workspace_secret headers cannot be resolved)\n"
          "  -h, --help          show this help\n");
}

/* The config text may hold opaque values: every copy is wiped before it is freed. */
static void wipe_free(char *p, size_t len)
{
  if (p == NULL)
    return;
  explicit_bzero(p, len);
  free(p);
}

static int load(const char *file, char **buf, size_t *len)
{
  return proxy_read_file(file, RULES_MAX_CONFIG_LEN, buf, len);
}

int proxy_cmd_config(int argc, char **argv)
{
  const char *sub = NULL, *file = NULL, *dir = NULL, *name;
  struct rules_secrets *secrets = NULL;
  struct rules_config *cfg = NULL;
  struct rules_diag diag;
  char *text = NULL, *json = NULL, summary[256];
  size_t len = 0, i;
  struct stat st;
  int ret, status = 1;

  rules_diag_init(&diag);
  for (i = 1; i < (size_t)argc; i++) {
    const char *a = argv[i];

    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    }
    if (strcmp(a, "--secrets-dir") == 0) {
      if (i + 1 == (size_t)argc) {
        fprintf(stderr, "config: --secrets-dir needs a directory\n");
        return 2;
      }
      dir = argv[++i];
    } else if (strncmp(a, "--secrets-dir=", 14) == 0) {
      dir = a + 14;
    } else if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "config: unknown option %s\n\n", a);
      usage(stderr);
      return 2;
    } else if (sub == NULL) {
      sub = a;
    } else if (file == NULL) {
      file = a;
    } else {
      fprintf(stderr, "config: unexpected argument %s\n\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (sub == NULL || (strcmp(sub, "check") != 0 && strcmp(sub, "show") != 0)) {
    if (sub != NULL)
      fprintf(stderr, "config: unknown subcommand %s\n\n", sub);
    usage(stderr);
    return 2;
  }
  if (file == NULL) {
    fprintf(stderr, "config: %s needs a FILE (or - for standard input)\n", sub);
    return 2;
  }
  name = strcmp(file, "-") == 0 ? "<stdin>" : file;
  if (dir != NULL) {
    if (stat(dir, &st) != 0) {
      fprintf(stderr, "config: --secrets-dir %s: %s\n", dir, strerror(errno));
      goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
      fprintf(stderr, "config: --secrets-dir %s: not a directory\n", dir);
      goto out;
    }
  }
  /* Without a directory there is no store at all, and errors say so. */
  if (dir != NULL) {
    secrets = rules_secrets_new(dir);
    if (secrets == NULL) {
      fprintf(stderr, "config: out of memory\n");
      goto out;
    }
    rules_secrets_files_only(secrets);
  }
  ret = load(file, &text, &len);
  if (ret == -EFBIG) {
    fprintf(stderr, "config: %s: larger than the %d byte limit\n", name,
            RULES_MAX_CONFIG_LEN);
    goto out;
  }
  if (ret != 0) {
    fprintf(stderr, "config: cannot read %s: %s\n", name, strerror(-ret));
    goto out;
  }
  ret = rules_config_parse(text, len, "", secrets, &cfg, &diag);
  if (ret == -ENOMEM) {
    fprintf(stderr, "config: out of memory\n");
    goto out;
  }
  if (ret != 0) {
    for (i = 0; i < diag.count; i++) {
      if (diag.entries[i].path[0] != '\0')
        fprintf(stderr, "config: %s: %s\n", diag.entries[i].path, diag.entries[i].message);
      else
        fprintf(stderr, "config: %s: %s\n", name, diag.entries[i].message);
    }
    goto out;
  }
  if (strcmp(sub, "check") == 0) {
    if (rules_config_warnings(cfg, &diag) != 0) {
      fprintf(stderr, "config: out of memory\n");
      goto out;
    }
    for (i = 0; i < diag.count; i++)
      fprintf(stderr, "config: %s: warning: %s\n", diag.entries[i].path,
              diag.entries[i].message);
    rules_config_summary(cfg, summary, sizeof(summary));
    printf("%s: ok: %s\n", name, summary);
  } else {
    json = rules_config_to_json(cfg, RULES_SER_REDACTED, 1);
    if (json == NULL) {
      fprintf(stderr, "config: out of memory\n");
      goto out;
    }
    fputs(json, stdout);
  }
  status = 0; /* main() reports the output's write errors */
out:
  if (json != NULL)
    wipe_free(json, strlen(json));
  wipe_free(text, len);
  rules_config_unref(cfg);
  rules_secrets_free(secrets);
  rules_diag_free(&diag);
  return status;
}
