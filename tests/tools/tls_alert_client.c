/*
 * tls_alert_client HOST PORT: a TLS 1.2 client (no certificate check) that, once the
 * handshake is done, sends a warning no_renegotiation alert and an HTTP request for
 * HOST in one write(), then prints the response's first line, or "timeout" when none
 * comes within 5 seconds. Python's ssl module cannot send an alert of its choosing;
 * this is how a TLS stack that refuses a renegotiation answers, and the record that
 * follows must not be lost.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>

struct io {
  int fd;
  int cork;             /* collect what mbedTLS sends instead of sending it */
  unsigned char out[4096];
  size_t out_len;
};

static int io_send(void *ctx, const unsigned char *buf, size_t len)
{
  struct io *io = ctx;
  ssize_t n;

  if (io->cork) {
    if (len > sizeof(io->out) - io->out_len)
      return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    memcpy(io->out + io->out_len, buf, len);
    io->out_len += len;
    return (int)len;
  }
  n = send(io->fd, buf, len, MSG_NOSIGNAL);
  return n < 0 ? MBEDTLS_ERR_SSL_INTERNAL_ERROR : (int)n;
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
  struct addrinfo hints, *ai;
  struct timeval tv = { .tv_sec = 5 };
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_ssl_config conf;
  mbedtls_ssl_context ssl;
  struct io io = { .fd = -1 };
  char req[512], resp[512];
  size_t got = 0;
  int r = 0, len;

  if (argc != 3) {
    fprintf(stderr, "usage: tls_alert_client HOST PORT\n");
    return 2;
  }
  memset(&hints, 0, sizeof(hints));
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(argv[1], argv[2], &hints, &ai) != 0)
    return 2;
  io.fd = socket(ai->ai_family, SOCK_STREAM, 0);
  if (io.fd < 0 || connect(io.fd, ai->ai_addr, ai->ai_addrlen) != 0)
    return 2;
  freeaddrinfo(ai);
  setsockopt(io.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  mbedtls_ssl_config_init(&conf);
  mbedtls_ssl_init(&ssl);
  if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, NULL, 0) != 0 ||
      mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                  MBEDTLS_SSL_PRESET_DEFAULT) != 0)
    return 2;
  mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_NONE);
  mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
  mbedtls_ssl_conf_alpn_protocols(&conf, alpn);
  if (mbedtls_ssl_setup(&ssl, &conf) != 0 || mbedtls_ssl_set_hostname(&ssl, argv[1]) != 0)
    return 2;
  mbedtls_ssl_set_bio(&ssl, &io, io_send, io_recv, NULL);
  r = mbedtls_ssl_handshake(&ssl);
  if (r != 0) {
    fprintf(stderr, "handshake: -0x%04x\n", (unsigned)-r);
    return 2;
  }

  io.cork = 1;
  len = snprintf(req, sizeof(req),
                 "GET /after-alert HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", argv[1]);
  if (mbedtls_ssl_send_alert_message(&ssl, MBEDTLS_SSL_ALERT_LEVEL_WARNING,
                                     MBEDTLS_SSL_ALERT_MSG_NO_RENEGOTIATION) != 0 ||
      mbedtls_ssl_write(&ssl, (const unsigned char *)req, (size_t)len) != len)
    return 2;
  io.cork = 0;
  if (send(io.fd, io.out, io.out_len, MSG_NOSIGNAL) != (ssize_t)io.out_len)
    return 2;

  while (got < sizeof(resp) - 1 && memchr(resp, '\n', got) == NULL) {
    r = mbedtls_ssl_read(&ssl, (unsigned char *)resp + got, sizeof(resp) - 1 - got);
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  resp[got] = '\0';
  resp[strcspn(resp, "\r\n")] = '\0';
  printf("%s\n", r == MBEDTLS_ERR_SSL_TIMEOUT ? "timeout" : got > 0 ? resp : "closed");
  close(io.fd);
  mbedtls_ssl_free(&ssl);
  mbedtls_ssl_config_free(&conf);
  mbedtls_ctr_drbg_free(&drbg);
  mbedtls_entropy_free(&entropy);
  return 0;
}
