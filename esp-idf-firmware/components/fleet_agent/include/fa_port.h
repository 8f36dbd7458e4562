/* The port interface: everything the core needs from the platform, in one struct of
 * function pointers plus a context. port/esp_idf and port/host implement it. */
#ifndef FA_PORT_H
#define FA_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "fa_err.h"

/* Same values as esp_ota_img_states_t. */
typedef uint32_t fa_img_state_t;
#define FA_IMG_NEW 0x0u
#define FA_IMG_PENDING_VERIFY 0x1u
#define FA_IMG_VALID 0x2u
#define FA_IMG_INVALID 0x3u
#define FA_IMG_ABORTED 0x4u
#define FA_IMG_UNDEFINED 0xFFFFFFFFu

typedef enum { FA_LOG_ERROR = 1, FA_LOG_WARN, FA_LOG_INFO, FA_LOG_DEBUG } fa_log_level_t;

typedef struct fa_port {
    void *ctx;
    /* clock */
    int64_t (*now_s)(void *ctx);     /* wall clock, Unix seconds */
    int64_t (*uptime_ms)(void *ctx); /* monotonic, since boot */
    /* key-value store (NVS): short string values */
    fa_err_t (*kv_get)(void *ctx, const char *key, char *buf, size_t cap);
    fa_err_t (*kv_set)(void *ctx, const char *key, const char *value);
    fa_err_t (*kv_erase)(void *ctx, const char *key);
    /* MQTT: publish returns the message id (>= 0) or -1 */
    int (*mqtt_publish)(void *ctx, const char *topic, const void *data, size_t len, int qos, int retain);
    fa_err_t (*mqtt_subscribe)(void *ctx, const char *topic, int qos);
    /* partitions and boot slot */
    int (*running_slot)(void *ctx);
    fa_img_state_t (*running_state)(void *ctx);
    fa_err_t (*ota_begin)(void *ctx, size_t image_size); /* the inactive slot */
    fa_err_t (*ota_write)(void *ctx, const void *data, size_t len);
    fa_err_t (*ota_end)(void *ctx);      /* closes and validates the written image */
    void (*ota_abort)(void *ctx);
    fa_err_t (*ota_set_boot)(void *ctx); /* boot the slot just written, once, on trial */
    fa_err_t (*mark_valid)(void *ctx);   /* confirm the running image (cancel rollback) */
    void (*mark_invalid_and_reboot)(void *ctx);
    void (*reboot)(void *ctx);
    /* HTTP download, one at a time: GET url from byte offset (Range) */
    fa_err_t (*http_open)(void *ctx, const char *url, uint32_t offset, uint32_t *content_len);
    int (*http_read)(void *ctx, void *buf, size_t len); /* > 0 bytes, 0 end, < 0 error */
    void (*http_close)(void *ctx);
    /* optional (may be NULL) */
    void (*log)(void *ctx, fa_log_level_t level, const char *msg);
    uint32_t (*heap_free)(void *ctx);
    const char *(*reset_reason)(void *ctx);
    /* Reopens the inactive slot for an update a reboot cut short, keeping its first offset bytes
     * (esp_ota_resume); NULL: downloads start over after a reboot. */
    fa_err_t (*ota_resume)(void *ctx, size_t image_size, size_t offset);
    /* The level a debug session asked for (desired debug.level): the port logs down to it. */
    void (*log_level)(void *ctx, fa_log_level_t level);
} fa_port_t;

#endif
