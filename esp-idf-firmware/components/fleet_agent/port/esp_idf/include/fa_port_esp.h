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
    const char *ota_ca_pem;        /* may be NULL: CONFIG_FLEET_OTA_TLS_* decides (bundle or embedded CA) */
    const char *kid;               /* the kid of hmac_key / ecdsa_pub, "k1" when NULL */
    const uint8_t *hmac_key;       /* the per-device OTA key, 32 bytes, from NVS */
    const uint8_t *ecdsa_pub;      /* PEM (NUL included in ecdsa_pub_len), may be NULL */
    size_t ecdsa_pub_len;
} fa_esp_config_t;

typedef struct fa_esp fa_esp_t;

/**
 * Starts MQTT and the agent task. Wi-Fi must be up and the clock set (SNTP) before.
 * @return ESP_OK with *out set; ESP_ERR_NO_MEM; ESP_FAIL when the MQTT client cannot be created;
 *         fa_agent_create()'s errors.
 */
esp_err_t fa_esp_start(const fa_esp_config_t *cfg, fa_esp_t **out);
/* The calls below run on the agent task (the only one that touches the agent) and wait for it; from
 * a shadow handler (already on the agent task) they run directly. */
/**
 * Registers a shadow key handler.
 * @return fa_agent_on_shadow_key()'s result; ESP_ERR_NO_MEM.
 */
esp_err_t fa_esp_on_shadow_key(fa_esp_t *h, const char *key, fa_shadow_handler_t fn, void *user);
/**
 * Trusts one more job-signing key (a rotation); the key's memory must outlive the agent.
 * @return fa_agent_add_key()'s result; ESP_ERR_NO_MEM.
 */
esp_err_t fa_esp_add_key(fa_esp_t *h, const fa_key_t *key);
/**
 * Stops trusting a kid.
 * @return fa_agent_retire_key()'s result; ESP_ERR_NO_MEM.
 */
esp_err_t fa_esp_retire_key(fa_esp_t *h, const char *kid);
