#define _POSIX_C_SOURCE 200809L
#include "hf_port.h"

#include <mosquitto.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define KV_REC 256
#define KV_KEY 16

/* ---- key-value store ---- */

static int kv_find(const hf_flash_t *f, const char *key, int *free_slot)
{
    uint8_t k[KV_KEY];
    *free_slot = -1;
    for (int i = 0; i < (int)(HF_NVS_SIZE / KV_REC); i++) {
        if (f->read(f->ctx, HF_NVS_OFF + (uint32_t)i * KV_REC, k, KV_KEY) != 0) {
            return -1;
        }
        if (k[0] == 0xFF) {
            if (*free_slot < 0) {
                *free_slot = i;
            }
            continue;
        }
        if (strncmp((const char *)k, key, KV_KEY) == 0) {
            return i;
        }
    }
    return -1;
}

int hf_kv_get(const hf_flash_t *f, const char *key, char *buf, size_t cap)
{
    char rec[KV_REC];
    int fr;
    int i = kv_find(f, key, &fr);
    if (i < 0 || f->read(f->ctx, HF_NVS_OFF + (uint32_t)i * KV_REC, rec, KV_REC) != 0) {
        return FA_ERR_NOT_FOUND;
    }
    rec[KV_REC - 1] = '\0';
    if (strlen(rec + KV_KEY) >= cap) {
        return FA_ERR_INVALID_SIZE;
    }
    strcpy(buf, rec + KV_KEY);
    return FA_OK;
}

int hf_kv_set(const hf_flash_t *f, const char *key, const char *value)
{
    char rec[KV_REC];
    int fr;
    if (strlen(key) >= KV_KEY || strlen(value) >= KV_REC - KV_KEY) {
        return FA_ERR_INVALID_ARG;
    }
    int i = kv_find(f, key, &fr);
    if (i < 0) {
        i = fr;
    }
    if (i < 0) {
        return FA_ERR_NO_MEM;
    }
    memset(rec, 0, sizeof(rec));
    strcpy(rec, key);
    strcpy(rec + KV_KEY, value);
    return f->write(f->ctx, HF_NVS_OFF + (uint32_t)i * KV_REC, rec, KV_REC) == 0 ? FA_OK : FA_FAIL;
}

int hf_kv_erase(const hf_flash_t *f, const char *key)
{
    int fr;
    int i = kv_find(f, key, &fr);
    if (i < 0) {
        return FA_OK;
    }
    return f->erase(f->ctx, HF_NVS_OFF + (uint32_t)i * KV_REC, KV_REC) == 0 ? FA_OK : FA_FAIL;
}

static fa_err_t p_kv_get(void *ctx, const char *key, char *buf, size_t cap)
{
    return hf_kv_get(&((hf_port_t *)ctx)->flash, key, buf, cap);
}

static fa_err_t p_kv_set(void *ctx, const char *key, const char *value)
{
    return hf_kv_set(&((hf_port_t *)ctx)->flash, key, value);
}

static fa_err_t p_kv_erase(void *ctx, const char *key)
{
    return hf_kv_erase(&((hf_port_t *)ctx)->flash, key);
}

/* ---- clock ---- */

static int64_t p_now_s(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t p_uptime_ms(void *ctx)
{
    return mono_ms() - ((hf_port_t *)ctx)->boot_ms;
}

/* ---- MQTT ---- */

static int p_publish(void *ctx, const char *topic, const void *data, size_t len, int qos, int retain)
{
    hf_port_t *hp = ctx;
    int mid = 0;
    if (mosquitto_publish(hp->mosq, &mid, topic, (int)len, data, qos, retain != 0) != MOSQ_ERR_SUCCESS) {
        return -1;
    }
    return mid;
}

static fa_err_t p_subscribe(void *ctx, const char *topic, int qos)
{
    hf_port_t *hp = ctx;
    if (mosquitto_subscribe(hp->mosq, NULL, topic, qos) != MOSQ_ERR_SUCCESS) {
        return FA_FAIL;
    }
    hp->subs_pending++;
    return FA_OK;
}

/* ---- slots ---- */

static int p_running_slot(void *ctx)
{
    return ((hf_port_t *)ctx)->running_slot;
}

static fa_img_state_t p_running_state(void *ctx)
{
    hf_port_t *hp = ctx;
    uint32_t st;
    if (hf_get_state_partition(&hp->flash, hp->running_slot, &st) != 0) {
        return FA_IMG_UNDEFINED;
    }
    return (fa_img_state_t)st;
}

static fa_err_t p_ota_begin(void *ctx, size_t size)
{
    hf_port_t *hp = ctx;
    /* esp_ota_begin refuses while the running image is still on trial. */
    if (p_running_state(ctx) == FA_IMG_PENDING_VERIFY) {
        return FA_ERR_INVALID_STATE;
    }
    if (size == 0 || size > HF_SLOT_SIZE) {
        return FA_ERR_INVALID_SIZE;
    }
    hp->ota_slot = 1 - hp->running_slot;
    hp->ota_size = (uint32_t)size;
    hp->ota_written = 0;
    size_t erase = (size + HF_SECTOR - 1) / HF_SECTOR * HF_SECTOR;
    if (hp->flash.erase(hp->flash.ctx, hf_slot_off(hp->ota_slot), erase) != 0) {
        return FA_FAIL;
    }
    hp->ota_open = true;
    return FA_OK;
}

/* esp_ota_resume: the slot was erased for this image when the update began; the bytes before offset
 * are kept and writing goes on from there (bytes rewritten after the last resume point are the same
 * bytes again, which NOR flash takes). */
static fa_err_t p_ota_resume(void *ctx, size_t size, size_t offset)
{
    hf_port_t *hp = ctx;
    if (p_running_state(ctx) == FA_IMG_PENDING_VERIFY) {
        return FA_ERR_INVALID_STATE;
    }
    if (size == 0 || size > HF_SLOT_SIZE || offset > size) {
        return FA_ERR_INVALID_SIZE;
    }
    hp->ota_slot = 1 - hp->running_slot;
    hp->ota_size = (uint32_t)size;
    hp->ota_written = (uint32_t)offset;
    hp->ota_open = true;
    return FA_OK;
}

static fa_err_t p_ota_write(void *ctx, const void *data, size_t len)
{
    hf_port_t *hp = ctx;
    if (!hp->ota_open || hp->ota_written + len > hp->ota_size) {
        return FA_ERR_INVALID_SIZE;
    }
    if (hp->flash.write(hp->flash.ctx, hf_slot_off(hp->ota_slot) + hp->ota_written, data, len) != 0) {
        return FA_FAIL;
    }
    hp->ota_written += (uint32_t)len;
    return FA_OK;
}

static fa_err_t p_ota_end(void *ctx)
{
    hf_port_t *hp = ctx;
    hf_image_info_t info;
    if (!hp->ota_open) {
        return FA_ERR_INVALID_STATE;
    }
    hp->ota_open = false;
    return hf_image_check(&hp->flash, hf_slot_off(hp->ota_slot), HF_SLOT_SIZE, &info) == 0
               ? FA_OK
               : FA_ERR_OTA_VALIDATE_FAILED;
}

static void p_ota_abort(void *ctx)
{
    ((hf_port_t *)ctx)->ota_open = false;
}

static fa_err_t p_ota_set_boot(void *ctx)
{
    hf_port_t *hp = ctx;
    return hf_set_boot_partition(&hp->flash, hp->ota_slot) == 0 ? FA_OK : FA_FAIL;
}

static fa_err_t p_mark_valid(void *ctx)
{
    return hf_mark_app_valid(&((hf_port_t *)ctx)->flash) == 0 ? FA_OK : FA_FAIL;
}

static void p_reboot(void *ctx)
{
    hf_port_t *hp = ctx;
    hp->reboot(hp->reboot_user);
}

static void p_mark_invalid_and_reboot(void *ctx)
{
    hf_port_t *hp = ctx;
    hf_mark_app_invalid(&hp->flash);
    hp->reboot(hp->reboot_user);
}

static void p_log(void *ctx, fa_log_level_t level, const char *msg)
{
    hf_port_t *hp = ctx;
    static const char lv[] = "?EWID";
    char line[256];
    if (level > hp->log_level) {
        return; /* debug lines only while a debug session asks for them */
    }
    snprintf(line, sizeof(line), "%c (%s) fleet: %s", lv[level <= 4 ? level : 0], hp->fw_version, msg);
    fprintf(stderr, "%s\n", line);
    if (hp->log_sink) {
        hp->log_sink(hp->log_user, line);
    }
}

static void p_log_level(void *ctx, fa_log_level_t level)
{
    ((hf_port_t *)ctx)->log_level = level;
}

static const char *p_reset_reason(void *ctx)
{
    (void)ctx;
    return getenv("FLEET_RESET_REASON") ? getenv("FLEET_RESET_REASON") : "poweron";
}

void hf_port_init(hf_port_t *hp, fa_port_t *p)
{
    memset(p, 0, sizeof(*p));
    hp->http_fd = -1;
    hp->boot_ms = mono_ms();
    hp->log_level = FA_LOG_INFO;
    p->ctx = hp;
    p->now_s = p_now_s;
    p->uptime_ms = p_uptime_ms;
    p->kv_get = p_kv_get;
    p->kv_set = p_kv_set;
    p->kv_erase = p_kv_erase;
    p->mqtt_publish = p_publish;
    p->mqtt_subscribe = p_subscribe;
    p->running_slot = p_running_slot;
    p->running_state = p_running_state;
    p->ota_begin = p_ota_begin;
    p->ota_write = p_ota_write;
    p->ota_end = p_ota_end;
    p->ota_abort = p_ota_abort;
    p->ota_set_boot = p_ota_set_boot;
    p->mark_valid = p_mark_valid;
    p->mark_invalid_and_reboot = p_mark_invalid_and_reboot;
    p->reboot = p_reboot;
    p->http_open = hf_http_open;
    p->http_read = hf_http_read;
    p->http_close = hf_http_close;
    p->log = p_log;
    p->reset_reason = p_reset_reason;
    p->ota_resume = p_ota_resume;
    p->log_level = p_log_level;
}
