/* Image download for the ESP-IDF port: esp_http_client over HTTPS with the server verified (the app's
 * CA, a CA embedded from CONFIG_FLEET_OTA_CA_PEM_FILE, or the certificate bundle), Range. */
#include <stdio.h>
#include <string.h>

#include "esp_crt_bundle.h"
#include "fa_port_esp_priv.h"
#include "sdkconfig.h"

#if CONFIG_FLEET_OTA_TLS_CUSTOM_CA
extern const char _binary_fleet_ota_ca_start[]; /* target_add_binary_data(... TEXT): NUL-terminated */
#endif

/* ---- HTTP(S) download with Range ---- */

void fa_esp_http_close(void *ctx)
{
    fa_esp_t *h = ctx;
    if (h->http) {
        esp_http_client_close(h->http);
        esp_http_client_cleanup(h->http);
        h->http = NULL;
    }
}

fa_err_t fa_esp_http_open(void *ctx, const char *url, uint32_t offset, uint32_t *content_len)
{
    fa_esp_t *h = ctx;
    char range[32];
    esp_http_client_config_t hc = {
        .url = url,
        .timeout_ms = 10000,
        .buffer_size = 2048,
    };
    if (strncmp(url, "https://", 8) != 0) {
#if !CONFIG_FLEET_OTA_ALLOW_HTTP
        return FA_ERR_NOT_SUPPORTED; /* production fetches images over HTTPS only */
#endif
    } else if (h->ota_ca_pem != NULL) {
        hc.cert_pem = h->ota_ca_pem;
    } else {
#if CONFIG_FLEET_OTA_TLS_CUSTOM_CA
        hc.cert_pem = _binary_fleet_ota_ca_start;
#else
        hc.crt_bundle_attach = esp_crt_bundle_attach;
#endif
    }
    h->http = esp_http_client_init(&hc);
    if (h->http == NULL) {
        return FA_ERR_NO_MEM;
    }
    if (offset) {
        snprintf(range, sizeof(range), "bytes=%lu-", (unsigned long)offset);
        esp_http_client_set_header(h->http, "Range", range);
    }
    esp_err_t err = esp_http_client_open(h->http, 0);
    if (err != ESP_OK) {
        fa_esp_http_close(ctx);
        return err;
    }
    int64_t len = esp_http_client_fetch_headers(h->http);
    int status = esp_http_client_get_status_code(h->http);
    if (len < 0 || (status != 200 && status != 206)) {
        fa_esp_http_close(ctx);
        return FA_ERR_INVALID_RESPONSE;
    }
    /* A server that ignored Range sends everything: skip what we already have. */
    h->http_skip = status == 200 ? offset : 0;
    *content_len = (uint32_t)(status == 200 && len >= offset ? len - offset : len);
    return FA_OK;
}

int fa_esp_http_read(void *ctx, void *buf, size_t len)
{
    fa_esp_t *h = ctx;
    for (;;) {
        int n = esp_http_client_read(h->http, buf, (int)len);
        if (n <= 0 || h->http_skip == 0) {
            return n;
        }
        if ((uint32_t)n <= h->http_skip) {
            h->http_skip -= (uint32_t)n;
            continue;
        }
        memmove(buf, (char *)buf + h->http_skip, (size_t)n - h->http_skip);
        n -= (int)h->http_skip;
        h->http_skip = 0;
        return n;
    }
}
