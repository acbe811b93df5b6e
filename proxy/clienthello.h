/*
 * TLS ClientHello parsing for sniffing: finds the SNI (and the offered ALPN
 * protocols) in the first bytes a client sends, across TLS records and TCP segments.
 * Pure, incremental in the simplest way: call again with more bytes.
 */
#ifndef AUTHPROXY_CLIENTHELLO_H
#define AUTHPROXY_CLIENTHELLO_H

#include <stddef.h>
#include <stdint.h>

/* The most bytes a hello may span before it is refused (records included). */
#define PROXY_HELLO_MAX_BYTES (64 * 1024)

/*
 * The most records a hello may span before it is refused. The parser is called again
 * with everything received so far each time more arrives, and walks every record
 * header each time: without this bound a hello cut into 1-byte records and sent a
 * byte at a time (10,000 records in 64 KiB) cost over a second of CPU in the event
 * loop every sandbox shares. Clients send a hello in one record, at most 5 at 16 KiB
 * each (the sandbox-facing mbedTLS server itself accepts only one).
 */
#define PROXY_HELLO_MAX_RECORDS 64

enum proxy_hello_status {
  PROXY_HELLO_OK = 0,        /* a complete, well-formed ClientHello */
  PROXY_HELLO_NEED_MORE = 1, /* a valid prefix of one: read more */
  PROXY_HELLO_NOT_TLS = 2,   /* the first bytes are not a TLS handshake record */
  PROXY_HELLO_INVALID = 3,   /* TLS, but malformed, oversized or ambiguous: deny */
};

struct proxy_hello {
  char sni[256];          /* host_name from server_name, NUL-terminated, as sent */
  size_t sni_len;         /* 0 when the hello had no server_name extension */
  int alpn_http11;        /* offered "http/1.1" */
  int alpn_h2;            /* offered "h2" */
  int has_alpn;
  uint16_t version;       /* client_version of the hello */
  int tls13_offered;      /* supported_versions lists 0x0304 */
  int tls12_offered;      /* supported_versions lists 0x0303, or, without that
                             extension, client_version is at least 0x0303 */
  size_t record_bytes;    /* bytes of the records that carried the hello */
};

/*
 * Parses buf[0..len) as the start of a TLS connection. On PROXY_HELLO_OK, *out is
 * filled. INVALID covers: a record type other than handshake before the hello ends,
 * a handshake type other than client_hello, any length that overruns its container,
 * duplicate extensions, a server_name list with more than one host_name or an empty
 * one, a name with a NUL byte, and a hello over PROXY_HELLO_MAX_BYTES or in more than
 * PROXY_HELLO_MAX_RECORDS records.
 */
enum proxy_hello_status proxy_hello_parse(const uint8_t *buf, size_t len,
                                          struct proxy_hello *out);

#endif
