/*
 * The subcommands of the authproxy executable. Each takes the arguments after its
 * name (argv[0] is the subcommand) and returns the process exit status.
 */
#ifndef AUTHPROXY_COMMANDS_H
#define AUTHPROXY_COMMANDS_H

/* `authproxy config check|show FILE [--secrets-dir D]`: validate or show a proxy_config. */
int proxy_cmd_config(int argc, char **argv);

int proxy_cmd_jail(int argc, char **argv);   /* jail [OPTIONS] -- CMD... */

int proxy_cmd_serve(int argc, char **argv);  /* serve --state-dir D --control S */
int proxy_cmd_ctl(int argc, char **argv);    /* ctl COMMAND ... */

/* The CNI plugin: `authproxy cni`, or argv[0] named authproxy-cni (main.c); CNI_* in
 * the environment, the network configuration on stdin. */
int proxy_cmd_cni(int argc, char **argv);

/* The OCI hook: oci-hook [--control S] [--config-dir D] [createRuntime|poststop]. */
int proxy_cmd_oci_hook(int argc, char **argv);

#endif
