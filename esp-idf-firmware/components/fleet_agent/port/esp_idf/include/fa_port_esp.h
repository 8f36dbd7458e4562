/* ESP-IDF port of the fleet agent: esp_ota_ops + the bootloader's app rollback, esp_http_client,
 * esp-mqtt (MQTT 5), NVS, esp_timer, esp_log_set_vprintf. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "esp_err.h"
#include "fleet_agent.h"

typedef struct {
    const char *device_id;
    const char *hw;                /* e.g. CONFIG_IDF_TARGET */
    const char *broker_uri;        /* CONFIG_FLEET_BROKER_URI */
    const char *mqtt_username;     /* may be NULL */
    const char *mqtt_password;     /* development; production uses the client certificate below */
    const char *client_cert_pem;   /* may be NULL */
    const char *client_key_pem;    /* may be NULL */
    const char *broker_ca_pem;     /* may be NULL: the certificate bundle is used for mqtts:// */
    const uint8_t *hmac_key;       /* the per-device OTA key, 32 bytes, from NVS */
    const uint8_t *ecdsa_pub;      /* PEM (NUL included in ecdsa_pub_len), may be NULL */
    size_t ecdsa_pub_len;
} fa_esp_config_t;

typedef struct fa_esp fa_esp_t;

/* Starts MQTT and the agent task. Wi-Fi must be up and the clock set (SNTP) before. */
esp_err_t fa_esp_start(const fa_esp_config_t *cfg, fa_esp_t **out);
/* Registers a shadow key handler (may be called before or after start). */
esp_err_t fa_esp_on_shadow_key(fa_esp_t *h, const char *key, fa_shadow_handler_t fn, void *user);
