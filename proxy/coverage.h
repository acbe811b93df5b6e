/*
 * Built for scripts/coverage.sh (AUTHPROXY_COVERAGE), a process that ends with _exit
 * writes its gcov counters first, which only exit() would do; otherwise nothing.
 */
#ifndef PROXY_COVERAGE_H
#define PROXY_COVERAGE_H

#ifdef AUTHPROXY_COVERAGE
void __gcov_dump(void);
#define proxy_coverage_dump() __gcov_dump()
#else
#define proxy_coverage_dump() ((void)0)
#endif

#endif
