/* fa_port_t on ESP-IDF (v5.x). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "esp_app_desc.h"
#include "esp_crt_bundle.h"
#include "esp_http_client.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "fa_port_esp.h"
#include "fa_port_esp_priv.h"
#include "freertos/FreeRTOS.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "mqtt_client.h"
#include "nvs.h"
#include "sdkconfig.h"

static const char *TAG = "fleet";


/* esp_log_set_vprintf() takes no user pointer: the log hook needs this one static. */
static fa_esp_t *s_log_target;

#define LOCK(h) xSemaphoreTakeRecursive((h)->lock, portMAX_DELAY)
#define UNLOCK(h) xSemaphoreGiveRecursive((h)->lock)

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

/* Every ESP_LOG line also goes to the debug stream (dropped there unless a session is open). */
static int log_hook(const char *fmt, va_list ap)
{
    fa_esp_t *h = s_log_target;
    char line[160];
    va_list copy;
    va_copy(copy, ap);
    int n = h && h->prev_vprintf ? h->prev_vprintf(fmt, ap) : vprintf(fmt, ap);
    if (h && h->agent && xSemaphoreTakeRecursive(h->lock, 0) == pdTRUE) {
        vsnprintf(line, sizeof(line), fmt, copy);
        fa_agent_log_line(h->agent, line);
        UNLOCK(h);
    }
    va_end(copy);
    return n;
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

/* ---- MQTT events and the agent task ---- */

static void mqtt_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    fa_esp_t *h = arg;
    esp_mqtt_event_handle_t ev = data;
    (void)base;
    LOCK(h);
    switch ((esp_mqtt_event_id_t)id) {
    case MQTT_EVENT_CONNECTED:
        fa_agent_mqtt_connected(h->agent);
        break;
    case MQTT_EVENT_DISCONNECTED:
        fa_agent_mqtt_disconnected(h->agent);
        break;
    case MQTT_EVENT_PUBLISHED:
        fa_agent_mqtt_published(h->agent, ev->msg_id);
        break;
    case MQTT_EVENT_DATA:
        if (ev->current_data_offset == 0) {
            int tl = ev->topic_len < (int)sizeof(h->rx_topic) - 1 ? ev->topic_len : (int)sizeof(h->rx_topic) - 1;
            memcpy(h->rx_topic, ev->topic, (size_t)tl);
            h->rx_topic[tl] = '\0';
            h->rx_len = 0;
        }
        if (ev->total_data_len > CONFIG_FLEET_MAX_MESSAGE) {
            break; /* too large for this device: dropped */
        }
        memcpy(h->rx + ev->current_data_offset, ev->data, (size_t)ev->data_len);
        h->rx_len = (size_t)(ev->current_data_offset + ev->data_len);
        if (h->rx_len == (size_t)ev->total_data_len) {
            fa_agent_mqtt_message(h->agent, h->rx_topic, h->rx, h->rx_len);
        }
        break;
    default:
        break;
    }
    UNLOCK(h);
}

static void agent_task(void *arg)
{
    fa_esp_t *h = arg;
    for (;;) {
        LOCK(h);
        fa_agent_tick(h->agent);
        UNLOCK(h);
        vTaskDelay(pdMS_TO_TICKS(20));
    }
}

esp_err_t fa_esp_on_shadow_key(fa_esp_t *h, const char *key, fa_shadow_handler_t fn, void *user)
{
    LOCK(h);
    esp_err_t err = fa_agent_on_shadow_key(h->agent, key, fn, user);
    UNLOCK(h);
    return err;
}

esp_err_t fa_esp_start(const fa_esp_config_t *c, fa_esp_t **out)
{
    fa_esp_t *h = calloc(1, sizeof(*h));
    if (h == NULL || (h->rx = malloc(CONFIG_FLEET_MAX_MESSAGE)) == NULL) {
        free(h);
        return ESP_ERR_NO_MEM;
    }
    h->lock = xSemaphoreCreateRecursiveMutex();
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
        .heap_free = p_heap_free, .reset_reason = p_reset_reason,
    };
    h->cfg = (fa_config_t){
        .port = p, .device_id = c->device_id, .hw = c->hw, .fw_version = h->version,
        .secure_version = app->secure_version, .topic_prefix = CONFIG_FLEET_TOPIC_PREFIX,
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
        /* Jobs are verified in the MQTT event handler: it needs the agent's stack size. */
        .task.stack_size = CONFIG_FLEET_TASK_STACK,
    };
    if (c->broker_ca_pem == NULL) {
        mc.broker.verification.crt_bundle_attach = esp_crt_bundle_attach;
    }
    h->mqtt = esp_mqtt_client_init(&mc);
    if (h->mqtt == NULL) {
        return ESP_FAIL;
    }
    esp_mqtt_client_register_event(h->mqtt, ESP_EVENT_ANY_ID, mqtt_event, h);
    s_log_target = h;
    h->prev_vprintf = esp_log_set_vprintf(log_hook);
    if (xTaskCreate(agent_task, "fleet_agent", CONFIG_FLEET_TASK_STACK, h, 5, NULL) != pdPASS) {
        return ESP_ERR_NO_MEM;
    }
    err = esp_mqtt_client_start(h->mqtt);
    *out = h;
    return err;
}
