/* State of the ESP-IDF port, shared by its files. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "esp_http_client.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "fa_port_esp.h"
#include "freertos/FreeRTOS.h"
#include "freertos/semphr.h"
#include "mqtt_client.h"
#include "nvs.h"

struct fa_esp {
    fa_port_t port;
    fa_config_t cfg;
    fa_agent_t *agent;
    esp_mqtt_client_handle_t mqtt;
    nvs_handle_t nvs;
    SemaphoreHandle_t lock; /* recursive: the agent logs while it holds it */
    const esp_partition_t *update_part;
    esp_ota_handle_t ota;
    esp_http_client_handle_t http;
    uint32_t http_skip;
    char *rx;               /* reassembly of MQTT data delivered in fragments */
    size_t rx_len;
    char rx_topic[160];
    char version[32];
    vprintf_like_t prev_vprintf;
};

fa_err_t fa_esp_http_open(void *ctx, const char *url, uint32_t offset, uint32_t *content_len);
int fa_esp_http_read(void *ctx, void *buf, size_t len);
void fa_esp_http_close(void *ctx);
