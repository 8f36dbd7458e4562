/* fa_port_t on ESP-IDF (v5.x). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "esp_app_desc.h"
#include "esp_crt_bundle.h"
#include "esp_http_client.h"
#include "esp_idf_version.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "fa_port_esp.h"
#include "fa_port_esp_priv.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "mqtt_client.h"
#include "nvs.h"
#include "sdkconfig.h"

static const char *TAG = "fleet";

/* ---- clock ---- */

static int64_t p_now_s(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

static int64_t p_uptime_ms(void *ctx)
{
    (void)ctx;
    return esp_timer_get_time() / 1000;
}

/* ---- NVS ---- */

static fa_err_t p_kv_get(void *ctx, const char *key, char *buf, size_t cap)
{
    fa_esp_t *h = ctx;
    size_t len = cap;
    esp_err_t err = nvs_get_str(h->nvs, key, buf, &len);
    if (err == ESP_ERR_NVS_NOT_FOUND) {
        return FA_ERR_NOT_FOUND;
    }
    return err == ESP_OK ? FA_OK : FA_FAIL;
}

static fa_err_t p_kv_set(void *ctx, const char *key, const char *value)
{
    fa_esp_t *h = ctx;
    esp_err_t err = nvs_set_str(h->nvs, key, value);
    if (err == ESP_OK) {
        err = nvs_commit(h->nvs);
    }
    return err == ESP_OK ? FA_OK : FA_FAIL;
}

static fa_err_t p_kv_erase(void *ctx, const char *key)
{
    fa_esp_t *h = ctx;
    esp_err_t err = nvs_erase_key(h->nvs, key);
    if (err == ESP_ERR_NVS_NOT_FOUND) {
        return FA_OK;
    }
    if (err == ESP_OK) {
        err = nvs_commit(h->nvs);
    }
    return err == ESP_OK ? FA_OK : FA_FAIL;
}

/* ---- MQTT ---- */

static int p_publish(void *ctx, const char *topic, const void *data, size_t len, int qos, int retain)
{
    fa_esp_t *h = ctx;
    return esp_mqtt_client_publish(h->mqtt, topic, (const char *)data, (int)len, qos, retain);
}

static fa_err_t p_subscribe(void *ctx, const char *topic, int qos)
{
    fa_esp_t *h = ctx;
    return esp_mqtt_client_subscribe(h->mqtt, topic, qos) >= 0 ? FA_OK : FA_FAIL;
}

/* ---- slots ---- */

static int p_running_slot(void *ctx)
{
    (void)ctx;
    const esp_partition_t *run = esp_ota_get_running_partition();
    return run ? (int)(run->subtype - ESP_PARTITION_SUBTYPE_APP_OTA_MIN) : 0;
}

static fa_img_state_t p_running_state(void *ctx)
{
    (void)ctx;
    esp_ota_img_states_t st;
    if (esp_ota_get_state_partition(esp_ota_get_running_partition(), &st) != ESP_OK) {
        return FA_IMG_UNDEFINED;
    }
    return (fa_img_state_t)st;
}

static fa_err_t p_ota_begin(void *ctx, size_t size)
{
    fa_esp_t *h = ctx;
    h->update_part = esp_ota_get_next_update_partition(NULL);
    if (h->update_part == NULL) {
        return FA_ERR_NOT_FOUND;
    }
    if (size > h->update_part->size) {
        return FA_ERR_INVALID_SIZE;
    }
    /* Erases only what the image needs; refuses while the running image is on trial. */
    return esp_ota_begin(h->update_part, size, &h->ota);
}

/* esp_ota_resume() came with ESP-IDF v5.4.2; before it, a download cut by a reboot starts over. */
#if ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 4, 2)
#define FA_ESP_OTA_RESUME p_ota_resume
/* A download a reboot cut short: the slot keeps its first offset bytes (esp_ota_begin erased the
 * whole image's size when the update began, so nothing is erased now). */
static fa_err_t p_ota_resume(void *ctx, size_t size, size_t offset)
{
    fa_esp_t *h = ctx;
    h->update_part = esp_ota_get_next_update_partition(NULL);
    if (h->update_part == NULL) {
        return FA_ERR_NOT_FOUND;
    }
    if (size > h->update_part->size || offset > size) {
        return FA_ERR_INVALID_SIZE;
    }
    return esp_ota_resume(h->update_part, size, offset, &h->ota);
}
#else
#define FA_ESP_OTA_RESUME NULL
#endif

static fa_err_t p_ota_write(void *ctx, const void *data, size_t len)
{
    fa_esp_t *h = ctx;
    return esp_ota_write(h->ota, data, len);
}

static fa_err_t p_ota_end(void *ctx)
{
    fa_esp_t *h = ctx;
    esp_err_t err = esp_ota_end(h->ota); /* verifies the image (and its signature with secure boot) */
    h->ota = 0;
    return err;
}

static void p_ota_abort(void *ctx)
{
    fa_esp_t *h = ctx;
    if (h->ota) {
        esp_ota_abort(h->ota);
        h->ota = 0;
    }
}

static fa_err_t p_ota_set_boot(void *ctx)
{
    fa_esp_t *h = ctx;
    return esp_ota_set_boot_partition(h->update_part); /* written as NEW: the bootloader tries it once */
}

static fa_err_t p_mark_valid(void *ctx)
{
    (void)ctx;
    return esp_ota_mark_app_valid_cancel_rollback();
}

static void p_mark_invalid_and_reboot(void *ctx)
{
    (void)ctx;
    esp_ota_mark_app_invalid_rollback_and_reboot();
    esp_restart(); /* no rollback possible: a reset still leaves PENDING_VERIFY to the bootloader */
}

static void p_reboot(void *ctx)
{
    (void)ctx;
    esp_restart();
}

/* ---- logs ---- */

static void p_log(void *ctx, fa_log_level_t level, const char *msg)
{
    (void)ctx;
    switch (level) {
    case FA_LOG_ERROR: ESP_LOGE(TAG, "%s", msg); break;
    case FA_LOG_WARN: ESP_LOGW(TAG, "%s", msg); break;
    case FA_LOG_INFO: ESP_LOGI(TAG, "%s", msg); break;
    default: ESP_LOGD(TAG, "%s", msg); break;
    }
}

/* A debug session at level debug: every tag logs down to debug (within CONFIG_LOG_MAXIMUM_LEVEL). */
static void p_log_level(void *ctx, fa_log_level_t level)
{
    esp_log_level_set("*", level >= FA_LOG_DEBUG ? ESP_LOG_DEBUG : ESP_LOG_INFO);
}

static uint32_t p_heap_free(void *ctx)
{
    (void)ctx;
    return esp_get_free_heap_size();
}

static const char *p_reset_reason(void *ctx)
{
    (void)ctx;
    switch (esp_reset_reason()) {
    case ESP_RST_POWERON: return "poweron";
    case ESP_RST_SW: return "software";
    case ESP_RST_PANIC: return "panic";
    case ESP_RST_INT_WDT:
    case ESP_RST_TASK_WDT:
    case ESP_RST_WDT: return "watchdog";
    case ESP_RST_BROWNOUT: return "brownout";
    case ESP_RST_DEEPSLEEP: return "deepsleep";
    default: return "other";
    }
}

esp_err_t fa_esp_start(const fa_esp_config_t *c, fa_esp_t **out)
{
    fa_esp_t *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return ESP_ERR_NO_MEM;
    }
    h->events = xQueueCreate(CONFIG_FLEET_EVENT_QUEUE_LEN, sizeof(fa_esp_ev_t));
    h->logs = xQueueCreate(CONFIG_FLEET_LOG_QUEUE_LEN, FA_ESP_LOG_LINE);
    if (h->events == NULL || h->logs == NULL) {
        return ESP_ERR_NO_MEM;
    }
    ESP_ERROR_CHECK(nvs_open("fleet_agent", NVS_READWRITE, &h->nvs));
    const esp_app_desc_t *app = esp_app_get_description();
    snprintf(h->version, sizeof(h->version), "%s", app->version);

    fa_port_t *p = &h->port;
    *p = (fa_port_t){
        .ctx = h, .now_s = p_now_s, .uptime_ms = p_uptime_ms, .kv_get = p_kv_get, .kv_set = p_kv_set,
        .kv_erase = p_kv_erase, .mqtt_publish = p_publish, .mqtt_subscribe = p_subscribe,
        .running_slot = p_running_slot, .running_state = p_running_state, .ota_begin = p_ota_begin,
        .ota_write = p_ota_write, .ota_end = p_ota_end, .ota_abort = p_ota_abort, .ota_set_boot = p_ota_set_boot,
        .mark_valid = p_mark_valid, .mark_invalid_and_reboot = p_mark_invalid_and_reboot, .reboot = p_reboot,
        .http_open = fa_esp_http_open, .http_read = fa_esp_http_read, .http_close = fa_esp_http_close, .log = p_log,
        .heap_free = p_heap_free, .reset_reason = p_reset_reason, .ota_resume = FA_ESP_OTA_RESUME,
        .log_level = p_log_level,
    };
    h->ota_ca_pem = c->ota_ca_pem;
    h->cfg = (fa_config_t){
        .port = p, .device_id = c->device_id, .hw = c->hw, .fw_version = h->version,
        .secure_version = app->secure_version, .topic_prefix = CONFIG_FLEET_TOPIC_PREFIX, .kid = c->kid,
        .hmac_key = c->hmac_key, .hmac_key_len = c->hmac_key ? 32 : 0,
        .ecdsa_pub = c->ecdsa_pub, .ecdsa_pub_len = c->ecdsa_pub_len,
        .heartbeat_interval_s = CONFIG_FLEET_HEARTBEAT_INTERVAL_S,
        .confirm_timeout_s = CONFIG_FLEET_CONFIRM_TIMEOUT_S,
        .log_rate_per_s = CONFIG_FLEET_LOG_RATE_PER_S, .log_burst = CONFIG_FLEET_LOG_BURST,
        .log_batch_max = CONFIG_FLEET_LOG_BATCH_MAX,
    };
    esp_err_t err = fa_agent_create(&h->cfg, &h->agent);
    if (err != ESP_OK) {
        return err;
    }
    const char *will_topic, *will_msg;
    fa_agent_will(h->agent, &will_topic, &will_msg);
    esp_mqtt_client_config_t mc = {
        .broker.address.uri = c->broker_uri,
        .broker.verification.certificate = c->broker_ca_pem,
        .credentials.client_id = c->device_id,
        .credentials.username = c->mqtt_username,
        .credentials.authentication.password = c->mqtt_password,
        .credentials.authentication.certificate = c->client_cert_pem,
        .credentials.authentication.key = c->client_key_pem,
        .session.last_will = { .topic = will_topic, .msg = will_msg, .qos = 1, .retain = 1 },
        .session.protocol_ver = MQTT_PROTOCOL_V_5,
        .session.keepalive = 60,
        .buffer.size = 2048,
    };
    if (c->broker_ca_pem == NULL) {
        mc.broker.verification.crt_bundle_attach = esp_crt_bundle_attach;
    }
    h->mqtt = esp_mqtt_client_init(&mc);
    if (h->mqtt == NULL) {
        return ESP_FAIL;
    }
    esp_mqtt_client_register_event(h->mqtt, ESP_EVENT_ANY_ID, fa_esp_mqtt_event, h);
    fa_esp_log_target = h;
    h->prev_vprintf = esp_log_set_vprintf(fa_esp_log_hook);
    /* Jobs are verified in the agent task (decoded manifest, base64 and tokens on its stack). */
    if (xTaskCreate(fa_esp_agent_task, "fleet_agent", CONFIG_FLEET_TASK_STACK, h, 5, &h->task) != pdPASS) {
        return ESP_ERR_NO_MEM;
    }
    err = esp_mqtt_client_start(h->mqtt);
    *out = h;
    return err;
}
