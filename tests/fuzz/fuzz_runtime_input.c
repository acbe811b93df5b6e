/*
 * Fuzz target for what the runtime adapters read: the control API's answers
 * (proxy_api_parse_answer), the CNI network configuration (proxy_cni_parse_conf and the
 * ADD result built from it) and the OCI container state (proxy_oci_parse_state).
 *
 * Input: one selector byte (low two bits: 0 answer, 1 CNI configuration, 2 OCI state,
 * 3 all three), then the document.
 *
 * Invariants checked (abort on violation): an accepted answer has a status from 100 to
 * 599 and a NUL-terminated body of the stated length without NUL; a rejected one leaves
 * no body. An accepted CNI configuration has a supported version, exactly one config
 * source, and an ADD result that is a JSON object whose cniVersion is that version and
 * whose dns.nameservers is exactly the responder; a rejected one leaves no tree and an
 * error code of the spec (1-7) whose error document is JSON. An accepted OCI state has
 * a non-empty id, a pid in range when one was required, and annotation values that
 * never hold a '/' in a config file name.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proxy/apiclient.h"
#include "proxy/cni.h"
#include "proxy/ocihook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void answer(const char *p, size_t n)
{
  struct proxy_api_answer a;
  char text[256];

  if (proxy_api_parse_answer(p, n, &a) != 0) {
    if (a.body != NULL)
      abort();
    return;
  }
  if (a.status < 100 || a.status > 599 || a.body == NULL || a.body[a.body_len] != '\0' ||
      strlen(a.body) != a.body_len)
    abort();
  proxy_api_error_text(&a, text, sizeof(text));
  if (strlen(text) >= sizeof(text))
    abort();
  proxy_api_answer_free(&a);
}

static void cni(const char *p, size_t n)
{
  struct proxy_cni_error e;
  struct proxy_cni_conf c;
  const cJSON *ver, *ns;
  cJSON *res;
  char *text;

  memset(&e, 0, sizeof(e));
  if (proxy_cni_parse_conf(p, n, &c, &e) != 0) {
    if (c.root != NULL || e.code < 1 || e.code > 7)
      abort();
    text = proxy_cni_error_json(e.version[0] ? e.version : NULL, &e);
    res = text ? cJSON_Parse(text) : NULL;
    if (text != NULL && res == NULL)
      abort();
    cJSON_Delete(res);
    free(text);
    return;
  }
  if (!proxy_cni_version_supported(c.version) || c.control == NULL || c.control[0] != '/' ||
      (c.proxy_config != NULL) + (c.proxy_config_file != NULL) +
              (c.proxy_config_name != NULL) != 1)
    abort();
  text = proxy_cni_add_result(&c);
  if (text != NULL) {
    res = cJSON_Parse(text);
    ver = cJSON_GetObjectItemCaseSensitive(res, "cniVersion");
    ns = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(res, "dns"),
                                          "nameservers");
    if (!cJSON_IsObject(res) || !cJSON_IsString(ver) ||
        strcmp(ver->valuestring, c.version) != 0 || cJSON_GetArraySize(ns) != 1 ||
        !cJSON_IsString(ns->child) || strcmp(ns->child->valuestring, PROXY_CNI_NAMESERVER) != 0)
      abort();
    cJSON_Delete(res);
    free(text);
  }
  proxy_cni_conf_free(&c);
}

static void oci(const char *p, size_t n, int need_pid)
{
  struct proxy_oci_state st;
  char err[512];

  if (proxy_oci_parse_state(p, n, need_pid, &st, err, sizeof(err)) != 0) {
    if (st.root != NULL || err[0] == '\0')
      abort();
    return;
  }
  if (st.id == NULL || st.id[0] == '\0' || st.pid < 0 || (need_pid && st.pid == 0) ||
      (st.config_file != NULL && strchr(st.config_file, '/') != NULL) ||
      (st.config_file != NULL && st.config_name != NULL))
    abort();
  proxy_oci_state_free(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *p = (const char *)data + 1;
  size_t n;
  int sel;

  if (size == 0)
    return 0;
  sel = data[0] & 3;
  n = size - 1;
  if (sel == 0 || sel == 3)
    answer(p, n);
  if (sel == 1 || sel == 3)
    cni(p, n);
  if (sel == 2 || sel == 3)
    oci(p, n, (data[0] & 4) != 0);
  return 0;
}
