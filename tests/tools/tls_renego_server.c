/*
 * tls_renego_server CERT KEY PORT_FILE BYTES: a TLS 1.2 upstream on 127.0.0.1 that
 * asks to renegotiate. It accepts one connection, completes the handshake, reads a
 * request head, and then sends HelloRequest messages until BYTES bytes of them are
 * out or a write has waited 2 s, without ever reading again. A client that refuses
 * renegotiation answers each with a warning alert, which this server leaves unread.
 * If all were sent, it answers "ok" (Content-Length: 2). It prints "sent N" (the
 * bytes of HelloRequest records written) and then holds the connection open, still
 * not reading, until it is killed. Python's ssl module cannot send a HelloRequest.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

struct io {
  int fd;
  size_t sent;
};

static int io_send(void *ctx, const unsigned char *buf, size_t len)
{
  struct io *io = ctx;
  ssize_t n = send(io->fd, buf, len, MSG_NOSIGNAL);

  if (n < 0)
    return MBEDTLS_ERR_SSL_TIMEOUT;
  io->sent += (size_t)n;
  return (int)n;
}

static int io_recv(void *ctx, unsigned char *buf, size_t len)
{
  struct io *io = ctx;
  ssize_t n = recv(io->fd, buf, len, 0);

  if (n < 0)
    return MBEDTLS_ERR_SSL_TIMEOUT;
  return n == 0 ? MBEDTLS_ERR_SSL_CONN_EOF : (int)n;
}

int main(int argc, char **argv)
{
  static const char *alpn[] = { "http/1.1", NULL };
  struct sockaddr_in sa;
  socklen_t salen = sizeof(sa);
  struct timeval tv = { .tv_sec = 2 };
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_x509_crt crt;
  mbedtls_pk_context key;
  mbedtls_ssl_config conf;
  mbedtls_ssl_context ssl;
  struct io io = { .fd = -1 };
  char head[8192];
  size_t got = 0, limit, start;
  FILE *f;
  int lfd, one = 1, r;

  if (argc != 5) {
    fprintf(stderr, "usage: tls_renego_server CERT KEY PORT_FILE BYTES\n");
    return 2;
  }
  limit = strtoull(argv[4], NULL, 10);
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  mbedtls_x509_crt_init(&crt);
  mbedtls_pk_init(&key);
  mbedtls_ssl_config_init(&conf);
  mbedtls_ssl_init(&ssl);
  if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, NULL, 0) != 0 ||
      mbedtls_x509_crt_parse_file(&crt, argv[1]) != 0 ||
      mbedtls_pk_parse_keyfile(&key, argv[2], NULL) != 0 ||
      mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                  MBEDTLS_SSL_PRESET_DEFAULT) != 0)
    return 2;
  mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
  mbedtls_ssl_conf_alpn_protocols(&conf, alpn);
  mbedtls_ssl_conf_renegotiation(&conf, MBEDTLS_SSL_RENEGOTIATION_ENABLED);
  if (mbedtls_ssl_conf_own_cert(&conf, &crt, &key) != 0 || mbedtls_ssl_setup(&ssl, &conf) != 0)
    return 2;

  lfd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 4) != 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &salen) != 0)
    return 2;
  f = fopen(argv[3], "w");
  if (f == NULL)
    return 2;
  fprintf(f, "%u\n", ntohs(sa.sin_port));
  fclose(f);

  io.fd = accept(lfd, NULL, NULL);
  if (io.fd < 0)
    return 2;
  setsockopt(io.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  mbedtls_ssl_set_bio(&ssl, &io, io_send, io_recv, NULL);
  r = mbedtls_ssl_handshake(&ssl);
  if (r != 0) {
    fprintf(stderr, "handshake: -0x%04x\n", (unsigned)-r);
    return 2;
  }
  while (got < sizeof(head) - 1) {
    r = mbedtls_ssl_read(&ssl, (unsigned char *)head + got, sizeof(head) - 1 - got);
    if (r <= 0)
      return 2;
    got += (size_t)r;
    head[got] = '\0';
    if (strstr(head, "\r\n\r\n") != NULL)
      break;
  }
  start = io.sent;
  while (io.sent - start < limit) {
    r = mbedtls_ssl_renegotiate(&ssl);
    if (r != 0)
      break;
  }
  if (io.sent - start >= limit)
    mbedtls_ssl_write(&ssl, (const unsigned char *)"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                      40);
  printf("sent %zu\n", io.sent - start);
  fflush(stdout);
  for (;;)
    pause();
}
