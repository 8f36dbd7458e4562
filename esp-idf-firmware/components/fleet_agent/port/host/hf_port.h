/* The host implementation of fa_port_t. */
#ifndef HF_PORT_H
#define HF_PORT_H

#include <stdbool.h>
#include <stdint.h>

#include "fa_port.h"
#include "hf_flash.h"

struct mosquitto;

typedef struct {
    hf_flash_t flash;
    int running_slot;
    int64_t boot_ms; /* uptime counts from the (re)start of the process */
    const char *fw_version;
    fa_log_level_t log_level; /* what p_log prints: info, or debug during a debug session */
    struct mosquitto *mosq;
    int subs_pending; /* SUBSCRIBEs sent and not acknowledged yet */
    void (*reboot)(void *user); /* re-executes the process */
    void *reboot_user;
    void (*log_sink)(void *user, const char *line);
    void *log_user;
    /* the update being written */
    int ota_slot;
    uint32_t ota_size;
    uint32_t ota_written;
    bool ota_open;
    /* the download */
    struct hf_tls *tls;  /* from --ca: https:// URLs are verified against it; NULL: http:// only */
    bool http_tls;       /* the open connection is TLS */
    int http_fd;
    uint32_t http_skip; /* bytes to discard when a server ignored Range */
    uint8_t http_buf[4096];
    size_t http_have;
    size_t http_pos;
} hf_port_t;

void hf_port_init(hf_port_t *hp, fa_port_t *port);

/* KV in the nvs partition of the flash file (a flat table of 256-byte records). */
int hf_kv_get(const hf_flash_t *f, const char *key, char *buf, size_t cap);
int hf_kv_set(const hf_flash_t *f, const char *key, const char *value);
int hf_kv_erase(const hf_flash_t *f, const char *key);

/* HTTP GET with Range (hf_http.c) */
fa_err_t hf_http_open(void *ctx, const char *url, uint32_t offset, uint32_t *content_len);
int hf_http_read(void *ctx, void *buf, size_t len);
void hf_http_close(void *ctx);

#endif
