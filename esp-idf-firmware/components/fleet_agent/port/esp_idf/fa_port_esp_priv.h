/* State of the ESP-IDF port, shared by its files. */
#pragma once

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esp_http_client.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "fa_port_esp.h"
#include "freertos/FreeRTOS.h"
#include "freertos/queue.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "mqtt_client.h"
#include "nvs.h"

/* What the esp-mqtt handler hands the agent task. esp-mqtt calls the handler with its client lock
 * held and esp_mqtt_client_publish takes that lock, so the handler must never wait for the agent:
 * it copies the event into a bounded queue and returns; the agent task alone runs the core. */
typedef enum { FA_EV_CONNECTED, FA_EV_DISCONNECTED, FA_EV_MESSAGE, FA_EV_PUBLISHED, FA_EV_CALL } fa_esp_ev_type_t;

typedef struct {
    fa_esp_ev_type_t type;
    int msg_id;   /* FA_EV_PUBLISHED */
    char *topic;  /* FA_EV_MESSAGE: one allocation, topic then data, owned by the event */
    char *data;
    size_t len;
    void *call;   /* FA_EV_CALL: a fa_esp_call_t from an application task */
} fa_esp_ev_t;

/* Queue slots a message may not take: connection events and PUBACKs (which confirm a trial boot)
 * still get in while a flood of messages fills the queue. */
#define FA_ESP_EV_RESERVE 4
#define FA_ESP_LOG_LINE 128

struct fa_esp {
    fa_port_t port;
    fa_config_t cfg;
    fa_agent_t *agent;
    esp_mqtt_client_handle_t mqtt;
    nvs_handle_t nvs;
    QueueHandle_t events;   /* fa_esp_ev_t, from the esp-mqtt task and application tasks */
    QueueHandle_t logs;     /* char[FA_ESP_LOG_LINE], from esp_log in any task */
    TaskHandle_t task;      /* the agent task: the only one that calls the core */
    uint32_t dropped;       /* events dropped (queue full, too large, no memory); esp-mqtt task only */
    atomic_size_t queued_bytes; /* copies of messages in the queue: added by esp-mqtt's task, taken
                                 * off by the agent task; bounded by CONFIG_FLEET_EVENT_QUEUE_BYTES */
    fa_esp_ev_t rx;         /* a message being reassembled from DATA fragments; esp-mqtt task only */
    bool rx_skip;           /* the rest of a dropped message's fragments */
    const esp_partition_t *update_part;
    esp_ota_handle_t ota;
    esp_http_client_handle_t http;
    uint32_t http_skip;
    const char *ota_ca_pem;  /* fa_esp_config_t.ota_ca_pem: overrides the Kconfig choice */
    char version[32];
    vprintf_like_t prev_vprintf;
};

/* fa_port_esp_events.c */
void fa_esp_mqtt_event(void *arg, esp_event_base_t base, int32_t id, void *data);
void fa_esp_agent_task(void *arg);
int fa_esp_log_hook(const char *fmt, va_list ap);
extern fa_esp_t *fa_esp_log_target;

fa_err_t fa_esp_http_open(void *ctx, const char *url, uint32_t offset, uint32_t *content_len);
int fa_esp_http_read(void *ctx, void *buf, size_t len);
void fa_esp_http_close(void *ctx);
