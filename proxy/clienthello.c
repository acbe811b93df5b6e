/*
 * TLS ClientHello sniffing (RFC 8446 sections 4.1.2 and 5.1, RFC 5246 section 7.4.1.2,
 * RFC 6066 section 3, RFC 7301 section 3.1).
 *
 * The parser is stateless: the caller passes everything received so far and calls
 * again when more arrives. It works in two passes. The first walks the record
 * headers only, which is cheap, and decides between NOT_TLS, INVALID and NEED_MORE
 * without looking at the body; it also rejects, as early as the bytes allow, every
 * record or handshake header that cannot start a valid hello, so that a peer cannot
 * make us wait for 64 KiB of a hello that is already known to be bad. Only when the
 * whole hello has arrived does the second pass parse the body, reading through the
 * records in place (no reassembly buffer, no allocation).
 *
 * The walk is repeated from the start on every call, so its cost per call must be
 * bounded: a hello may span at most PROXY_HELLO_MAX_RECORDS records. Without that, a
 * hello of 10,000 one-byte records sent a byte at a time cost about a second of CPU.
 *
 * Strictness is deliberate: a hello that different TLS stacks could read differently
 * (two names, duplicated extensions, lengths that disagree) is denied by the caller,
 * so nothing here tries to be lenient.
 *
 * An SSLv2-compatible hello (first byte with the high bit set, RFC 5246 appendix
 * E.2) is reported as PROXY_HELLO_NOT_TLS, since its first byte is not 0x16: it has
 * no SNI and modern servers refuse it, so the caller handles it like any other
 * unrecognized protocol rather than as a TLS connection with a name.
 */
#include <string.h>

#include "proxy/clienthello.h"

#define TLS_RECORD_HANDSHAKE 22
#define TLS_HANDSHAKE_CLIENT_HELLO 1
#define TLS_RECORD_HEADER 5
#define TLS_HANDSHAKE_HEADER 4
#define TLS_MAX_FRAGMENT 16384 /* 2^14: larger plaintext records are record_overflow */

#define EXT_SERVER_NAME 0
#define EXT_ALPN 16
#define EXT_SUPPORTED_VERSIONS 43
#define SNI_HOST_NAME 0

/*
 * Reads the handshake message sequentially across the records that carry it. The
 * record walk has already checked every record header up to the end of the message,
 * and the callers below never read past a container end that lies within the
 * message, so these helpers need no bounds checks of their own.
 */
struct hs_reader {
  const uint8_t *buf;
  size_t pos;  /* index in buf of the next payload byte */
  size_t left; /* payload bytes left in the current record */
  size_t off;  /* offset of the next byte within the handshake message */
};

static uint16_t load16(const uint8_t *p)
{
  return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static void next_record_if_needed(struct hs_reader *r)
{
  if (r->left == 0) {
    r->left = load16(r->buf + r->pos + 3);
    r->pos += TLS_RECORD_HEADER;
  }
}

static uint8_t read_byte(struct hs_reader *r)
{
  next_record_if_needed(r);
  r->left--;
  r->off++;
  return r->buf[r->pos++];
}

static void skip_bytes(struct hs_reader *r, size_t n)
{
  while (n > 0) {
    size_t k;

    next_record_if_needed(r);
    k = n < r->left ? n : r->left;
    r->pos += k;
    r->left -= k;
    r->off += k;
    n -= k;
  }
}

/* Each reader fails (returns -1) when the field would cross end, the end of the
 * enclosing length-prefixed container. */
static int get_u8(struct hs_reader *r, size_t end, size_t *v)
{
  if (end - r->off < 1)
    return -1;
  *v = read_byte(r);
  return 0;
}

static int get_u16(struct hs_reader *r, size_t end, size_t *v)
{
  size_t hi;

  if (end - r->off < 2)
    return -1;
  hi = read_byte(r);
  *v = hi << 8 | read_byte(r);
  return 0;
}

static int skip(struct hs_reader *r, size_t end, size_t n)
{
  if (end - r->off < n)
    return -1;
  skip_bytes(r, n);
  return 0;
}

/* server_name (RFC 6066 section 3): exactly one entry, of type host_name, 1..255
 * bytes, without NUL. Other name types do not exist in practice; a list that mixes
 * them in is treated as ambiguous rather than skipped. */
static int parse_server_name(struct hs_reader *r, size_t end, struct proxy_hello *out)
{
  size_t list_len, type, name_len, i;

  if (get_u16(r, end, &list_len) != 0 || list_len != end - r->off || list_len == 0)
    return -1;
  if (get_u8(r, end, &type) != 0 || type != SNI_HOST_NAME)
    return -1;
  if (get_u16(r, end, &name_len) != 0 || name_len == 0 || name_len > end - r->off)
    return -1;
  if (name_len >= sizeof(out->sni))
    return -1;
  for (i = 0; i < name_len; i++) {
    out->sni[i] = (char)read_byte(r);
    if (out->sni[i] == '\0')
      return -1;
  }
  out->sni[name_len] = '\0';
  out->sni_len = name_len;
  /* Anything left is a second entry: more than one name is ambiguous. */
  return r->off == end ? 0 : -1;
}

/* application_layer_protocol_negotiation (RFC 7301 section 3.1): a non-empty list of
 * non-empty protocol names that fills the extension exactly. */
static int parse_alpn(struct hs_reader *r, size_t end, struct proxy_hello *out)
{
  size_t list_len, plen, i;
  char proto[8];

  if (get_u16(r, end, &list_len) != 0 || list_len != end - r->off || list_len < 2)
    return -1;
  while (r->off < end) {
    if (get_u8(r, end, &plen) != 0 || plen == 0 || plen > end - r->off)
      return -1;
    if (plen > sizeof(proto)) {
      skip_bytes(r, plen);
      continue;
    }
    for (i = 0; i < plen; i++)
      proto[i] = (char)read_byte(r);
    if (plen == 8 && memcmp(proto, "http/1.1", 8) == 0)
      out->alpn_http11 = 1;
    else if (plen == 2 && memcmp(proto, "h2", 2) == 0)
      out->alpn_h2 = 1;
  }
  out->has_alpn = 1;
  return 0;
}

/* supported_versions in a ClientHello (RFC 8446 section 4.2.1): a one-byte length,
 * then 1..127 two-byte versions. */
static int parse_supported_versions(struct hs_reader *r, size_t end,
                                    struct proxy_hello *out)
{
  size_t list_len, v;

  if (get_u8(r, end, &list_len) != 0 || list_len != end - r->off || list_len < 2 ||
      list_len % 2 != 0)
    return -1;
  /* The list replaces client_version (RFC 8446 section 4.2.1). */
  out->tls12_offered = 0;
  while (r->off < end) {
    if (get_u16(r, end, &v) != 0)
      return -1;
    if (v == 0x0304)
      out->tls13_offered = 1;
    else if (v == 0x0303)
      out->tls12_offered = 1;
  }
  return 0;
}

/* Parses the complete handshake message [0, msg_len) carried by the records that
 * start at buf[0]. */
static enum proxy_hello_status parse_body(const uint8_t *buf, size_t msg_len,
                                          struct proxy_hello *out)
{
  /* One bit per extension type: duplicates must be found in any hello, and a
   * hello can hold thousands of extensions, so a quadratic scan will not do. */
  uint64_t seen[65536 / 64];
  struct hs_reader r = { .buf = buf, .pos = 0, .left = 0, .off = 0 };
  size_t end = msg_len, v, n, ext_len;

  skip_bytes(&r, TLS_HANDSHAKE_HEADER);
  /* legacy_version: any SSL 3 / TLS 1.x value; TLS 1.3 is offered in an extension. */
  if (get_u16(&r, end, &v) != 0 || v >> 8 != 3)
    return PROXY_HELLO_INVALID;
  out->version = (uint16_t)v;
  out->tls12_offered = v >= 0x0303;
  if (skip(&r, end, 32) != 0) /* random */
    return PROXY_HELLO_INVALID;
  if (get_u8(&r, end, &n) != 0 || n > 32 || skip(&r, end, n) != 0) /* session id */
    return PROXY_HELLO_INVALID;
  if (get_u16(&r, end, &n) != 0 || n < 2 || n % 2 != 0 || skip(&r, end, n) != 0)
    return PROXY_HELLO_INVALID; /* cipher suites */
  if (get_u8(&r, end, &n) != 0 || n < 1 || skip(&r, end, n) != 0)
    return PROXY_HELLO_INVALID; /* compression methods */
  if (r.off == end)
    return PROXY_HELLO_OK; /* no extensions at all (SSL 3 style) */
  if (get_u16(&r, end, &ext_len) != 0 || ext_len != end - r.off)
    return PROXY_HELLO_INVALID;

  memset(seen, 0, sizeof(seen));
  while (r.off < end) {
    size_t type, elen, ext_end;
    int rc;

    if (get_u16(&r, end, &type) != 0 || get_u16(&r, end, &elen) != 0 ||
        elen > end - r.off)
      return PROXY_HELLO_INVALID;
    if (seen[type / 64] & (UINT64_C(1) << (type % 64)))
      return PROXY_HELLO_INVALID;
    seen[type / 64] |= UINT64_C(1) << (type % 64);
    ext_end = r.off + elen;
    switch (type) {
    case EXT_SERVER_NAME:
      rc = parse_server_name(&r, ext_end, out);
      break;
    case EXT_ALPN:
      rc = parse_alpn(&r, ext_end, out);
      break;
    case EXT_SUPPORTED_VERSIONS:
      rc = parse_supported_versions(&r, ext_end, out);
      break;
    default:
      skip_bytes(&r, elen);
      rc = 0;
      break;
    }
    if (rc != 0 || r.off != ext_end)
      return PROXY_HELLO_INVALID;
  }
  return PROXY_HELLO_OK;
}

enum proxy_hello_status proxy_hello_parse(const uint8_t *buf, size_t len,
                                          struct proxy_hello *out)
{
  size_t pos = 0;      /* start of the current record in buf */
  size_t hs_off = 0;   /* offset in the handshake message where this record starts */
  size_t msg_len = 0;  /* header + body length of the message, once known */
  size_t nrec = 0;     /* records started so far */
  uint8_t hdr[TLS_HANDSHAKE_HEADER];
  enum proxy_hello_status st;

  memset(out, 0, sizeof(*out));
  if (len == 0)
    return PROXY_HELLO_NEED_MORE;
  if (buf[0] != TLS_RECORD_HANDSHAKE)
    return PROXY_HELLO_NOT_TLS;

  for (;;) {
    size_t avail = len - pos, rlen, payload, i;

    if (avail == 0)
      return PROXY_HELLO_NEED_MORE;
    /* This walk runs again over everything each time bytes arrive: the record count
     * bounds its cost per call (see PROXY_HELLO_MAX_RECORDS). */
    if (++nrec > PROXY_HELLO_MAX_RECORDS)
      return PROXY_HELLO_INVALID;
    /* An alert, change_cipher_spec or application data record cannot come before
     * the hello is complete. */
    if (buf[pos] != TLS_RECORD_HANDSHAKE)
      return PROXY_HELLO_INVALID;
    if (avail >= 2 && buf[pos + 1] != 3)
      return PROXY_HELLO_INVALID;
    if (avail < TLS_RECORD_HEADER)
      return PROXY_HELLO_NEED_MORE;
    rlen = load16(buf + pos + 3);
    /* Zero-length handshake fragments are forbidden (RFC 8446 section 5.1); they
     * would also let a peer send headers forever without progress. */
    if (rlen == 0 || rlen > TLS_MAX_FRAGMENT)
      return PROXY_HELLO_INVALID;
    /* Every accepted record ends within the limit, so pos <= PROXY_HELLO_MAX_BYTES and
     * the subtraction cannot wrap (subtracting the header too could, 1 to 4 bytes
     * short of the limit). */
    if (TLS_RECORD_HEADER + rlen > PROXY_HELLO_MAX_BYTES - pos)
      return PROXY_HELLO_INVALID;
    payload = avail - TLS_RECORD_HEADER < rlen ? avail - TLS_RECORD_HEADER : rlen;

    /* Collect the handshake header, which may itself be split across records. */
    for (i = 0; i < payload && hs_off + i < TLS_HANDSHAKE_HEADER; i++)
      hdr[hs_off + i] = buf[pos + TLS_RECORD_HEADER + i];
    if (hs_off + i >= 1 && hdr[0] != TLS_HANDSHAKE_CLIENT_HELLO)
      return PROXY_HELLO_INVALID;
    if (msg_len == 0 && hs_off + i >= TLS_HANDSHAKE_HEADER) {
      size_t body = (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
      size_t min_records;

      msg_len = TLS_HANDSHAKE_HEADER + body;
      /* Refuse now what cannot fit the limit even in the fewest records. */
      min_records = (msg_len + TLS_MAX_FRAGMENT - 1) / TLS_MAX_FRAGMENT;
      if (msg_len + min_records * TLS_RECORD_HEADER > PROXY_HELLO_MAX_BYTES)
        return PROXY_HELLO_INVALID;
    }
    /* The record that completes the hello must end with it: anything after the
     * hello in the same record is a second handshake message, which no client may
     * send before the server answers. */
    if (msg_len != 0 && hs_off + rlen > msg_len)
      return PROXY_HELLO_INVALID;
    if (payload < rlen)
      return PROXY_HELLO_NEED_MORE;
    pos += TLS_RECORD_HEADER + rlen;
    hs_off += rlen;
    if (msg_len != 0 && hs_off == msg_len)
      break;
  }

  st = parse_body(buf, msg_len, out);
  if (st != PROXY_HELLO_OK) {
    memset(out, 0, sizeof(*out));
    return st;
  }
  out->record_bytes = pos;
  return PROXY_HELLO_OK;
}
