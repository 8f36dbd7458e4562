/* ESP-IDF port: esp-mqtt events and log lines into bounded queues, the agent task that alone runs
 * the core. esp-mqtt dispatches its events from its own task with its client lock (a recursive
 * mutex, MQTT_API_LOCK) held, and esp_mqtt_client_publish takes that same lock: a handler that
 * waited for the agent while the agent published would lock both tasks for good. So nothing here
 * that runs in another task ever waits for the agent task. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa_port_esp_priv.h"
#include "sdkconfig.h"

static const char *TAG = "fleet";

/* esp_log_set_vprintf() takes no user pointer: the log hook needs this one static. */
fa_esp_t *fa_esp_log_target;

/* The heap a queued message holds: its one allocation (topic and data, each NUL-terminated). */
static size_t ev_bytes(const fa_esp_ev_t *e)
{
    return e->type == FA_EV_MESSAGE ? (size_t)(e->data - e->topic) + e->len + 1 : 0;
}

/* Never blocks (the caller may hold esp-mqtt's lock). A message must leave the reserved slots free
 * and fit the byte budget: the queue bounds the heap its copies take, not only their number. */
static void push(fa_esp_t *h, fa_esp_ev_t *e)
{
    size_t bytes = ev_bytes(e);
    bool room = e->type != FA_EV_MESSAGE || (uxQueueSpacesAvailable(h->events) > FA_ESP_EV_RESERVE &&
                                             atomic_load(&h->queued_bytes) + bytes <= CONFIG_FLEET_EVENT_QUEUE_BYTES);
    if (room) {
        atomic_fetch_add(&h->queued_bytes, bytes);
        if (xQueueSend(h->events, e, 0) == pdTRUE) {
            return;
        }
        atomic_fetch_sub(&h->queued_bytes, bytes);
    }
    free(e->topic);
    h->dropped++;
}

static void rx_reset(fa_esp_t *h)
{
    free(h->rx.topic);
    memset(&h->rx, 0, sizeof(h->rx));
    h->rx_skip = false;
}

/* esp-mqtt delivers a message larger than its buffer as several DATA events (the topic only with
 * the first). Returns true when *out holds a whole message, copied. */
static bool reassemble(fa_esp_t *h, esp_mqtt_event_handle_t ev, fa_esp_ev_t *out)
{
    if (ev->current_data_offset == 0) {
        rx_reset(h);
        size_t total = (size_t)ev->total_data_len;
        if (ev->total_data_len < 0 || total > CONFIG_FLEET_MAX_MESSAGE || ev->topic_len <= 0 ||
            (h->rx.topic = malloc((size_t)ev->topic_len + 1 + total + 1)) == NULL) {
            h->rx_skip = true; /* too large for this device, or no memory: dropped */
            h->dropped++;
            return false;
        }
        memcpy(h->rx.topic, ev->topic, (size_t)ev->topic_len);
        h->rx.topic[ev->topic_len] = '\0';
        h->rx.type = FA_EV_MESSAGE;
        h->rx.data = h->rx.topic + ev->topic_len + 1;
        h->rx.len = 0;
    }
    if (h->rx_skip || h->rx.topic == NULL) {
        return false;
    }
    size_t total = (size_t)ev->total_data_len;
    size_t off = (size_t)ev->current_data_offset;
    if (ev->data_len < 0 || off != h->rx.len || off + (size_t)ev->data_len > total) {
        rx_reset(h); /* out of order: drop rather than hand on a mangled message */
        h->rx_skip = true;
        h->dropped++;
        return false;
    }
    memcpy(h->rx.data + off, ev->data, (size_t)ev->data_len);
    h->rx.len = off + (size_t)ev->data_len;
    if (h->rx.len < total) {
        return false;
    }
    h->rx.data[h->rx.len] = '\0';
    *out = h->rx;
    memset(&h->rx, 0, sizeof(h->rx)); /* the event owns the allocation now */
    return true;
}

void fa_esp_mqtt_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    fa_esp_t *h = arg;
    esp_mqtt_event_handle_t ev = data;
    fa_esp_ev_t e = { 0 };
    switch ((esp_mqtt_event_id_t)id) {
    case MQTT_EVENT_CONNECTED:
        e.type = FA_EV_CONNECTED;
        break;
    case MQTT_EVENT_DISCONNECTED:
        rx_reset(h); /* a message cut by the disconnect never completes */
        e.type = FA_EV_DISCONNECTED;
        break;
    case MQTT_EVENT_PUBLISHED:
        e.type = FA_EV_PUBLISHED;
        e.msg_id = ev->msg_id;
        break;
    case MQTT_EVENT_DATA:
        if (!reassemble(h, ev, &e)) {
            return;
        }
        break;
    default:
        return;
    }
    push(h, &e);
}

/* Every ESP_LOG line also goes to the debug stream (dropped there unless a session is open). The
 * line is copied into the log queue; the agent task hands it to the core. */
int fa_esp_log_hook(const char *fmt, va_list ap)
{
    fa_esp_t *h = fa_esp_log_target;
    char line[FA_ESP_LOG_LINE];
    va_list copy;
    va_copy(copy, ap);
    int n = h && h->prev_vprintf ? h->prev_vprintf(fmt, ap) : vprintf(fmt, ap);
    if (h && h->logs) {
        int w = vsnprintf(line, sizeof(line), fmt, copy);
        if (w >= 0) {
            xQueueSend(h->logs, line, 0); /* a full queue drops the line: logging never waits */
        }
    }
    va_end(copy);
    return n;
}

/* ---- the agent task ---- */

/* A call an application task makes on the agent task, waiting for its result. */
typedef struct {
    fa_err_t (*fn)(fa_agent_t *a, const void *arg1, void *arg2, void *arg3);
    const void *arg1;
    void *arg2, *arg3;
    esp_err_t result;
    SemaphoreHandle_t done;
} fa_esp_call_t;

static void dispatch(fa_esp_t *h, fa_esp_ev_t *e)
{
    switch (e->type) {
    case FA_EV_CONNECTED: fa_agent_mqtt_connected(h->agent); break;
    case FA_EV_DISCONNECTED: fa_agent_mqtt_disconnected(h->agent); break;
    case FA_EV_PUBLISHED: fa_agent_mqtt_published(h->agent, e->msg_id); break;
    case FA_EV_MESSAGE: fa_agent_mqtt_message(h->agent, e->topic, e->data, e->len); break;
    case FA_EV_CALL: {
        fa_esp_call_t *c = e->call;
        c->result = c->fn(h->agent, c->arg1, c->arg2, c->arg3);
        xSemaphoreGive(c->done);
        break;
    }
    }
    atomic_fetch_sub(&h->queued_bytes, ev_bytes(e));
    free(e->topic);
}

void fa_esp_agent_task(void *arg)
{
    fa_esp_t *h = arg;
    const TickType_t period = pdMS_TO_TICKS(20) ? pdMS_TO_TICKS(20) : 1;
    TickType_t next = xTaskGetTickCount();
    uint32_t dropped = 0;
    char line[FA_ESP_LOG_LINE];
    for (;;) {
        /* Events are handled as they come; timers, downloads and log batches every 20 ms. */
        TickType_t now = xTaskGetTickCount();
        TickType_t wait = (int32_t)(next - now) > 0 ? next - now : 0;
        fa_esp_ev_t e;
        if (xQueueReceive(h->events, &e, wait) == pdTRUE) {
            dispatch(h, &e);
        }
        while (xQueueReceive(h->logs, line, 0) == pdTRUE) {
            fa_agent_log_line(h->agent, line);
        }
        if ((int32_t)(xTaskGetTickCount() - next) < 0) {
            continue;
        }
        next = xTaskGetTickCount() + period;
        fa_agent_tick(h->agent);
        uint32_t d = h->dropped; /* written by the esp-mqtt task only; a 32-bit read is atomic here */
        if (d != dropped) {
            ESP_LOGW(TAG, "%lu MQTT events dropped (queue full, too large or no memory)", (unsigned long)d);
            dropped = d;
        }
    }
}

static esp_err_t call(fa_esp_t *h, fa_err_t (*fn)(fa_agent_t *, const void *, void *, void *), const void *arg1,
                      void *arg2, void *arg3)
{
    if (xTaskGetCurrentTaskHandle() == h->task) {
        return fn(h->agent, arg1, arg2, arg3); /* from a handler: already the agent task */
    }
    /* Another task: the agent task makes the call. Waiting is safe here: the agent task never
     * waits for an application task. */
    fa_esp_call_t c = { fn, arg1, arg2, arg3, ESP_FAIL, xSemaphoreCreateBinary() };
    if (c.done == NULL) {
        return ESP_ERR_NO_MEM;
    }
    fa_esp_ev_t e = { .type = FA_EV_CALL, .call = &c };
    xQueueSend(h->events, &e, portMAX_DELAY);
    xSemaphoreTake(c.done, portMAX_DELAY);
    vSemaphoreDelete(c.done);
    return c.result;
}

static fa_err_t do_shadow_key(fa_agent_t *a, const void *key, void *fn, void *user)
{
    fa_shadow_handler_t handler;
    memcpy(&handler, fn, sizeof(handler)); /* a function pointer travels by address, not as void * */
    return fa_agent_on_shadow_key(a, key, handler, user);
}

static fa_err_t do_add_key(fa_agent_t *a, const void *key, void *unused1, void *unused2)
{
    return fa_agent_add_key(a, key);
}

static fa_err_t do_retire_key(fa_agent_t *a, const void *kid, void *unused1, void *unused2)
{
    return fa_agent_retire_key(a, kid);
}

esp_err_t fa_esp_on_shadow_key(fa_esp_t *h, const char *key, fa_shadow_handler_t fn, void *user)
{
    return call(h, do_shadow_key, key, &fn, user);
}

esp_err_t fa_esp_add_key(fa_esp_t *h, const fa_key_t *key)
{
    return call(h, do_add_key, key, NULL, NULL);
}

esp_err_t fa_esp_retire_key(fa_esp_t *h, const char *kid)
{
    return call(h, do_retire_key, kid, NULL, NULL);
}
