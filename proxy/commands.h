/*
 * The subcommands of the authproxy executable. Each takes the arguments after its
 * name (argv[0] is the subcommand) and returns the process exit status.
 */
#ifndef AUTHPROXY_COMMANDS_H
#define AUTHPROXY_COMMANDS_H


int proxy_cmd_jail(int argc, char **argv);   /* jail [OPTIONS] -- CMD... */

#endif
