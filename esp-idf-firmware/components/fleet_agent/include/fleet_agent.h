/* Fleet agent: the device side of the fleet protocol (shadow, heartbeats, presence, OTA with
 * trial boot, debug log streaming), plain C99 behind fa_port_t. No hidden globals: all state
 * lives in the fa_agent_t handle. The caller serialises calls on one handle. */
#ifndef FLEET_AGENT_H
#define FLEET_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fa_err.h"
#include "fa_port.h"

typedef struct fa_agent fa_agent_t;

typedef struct {
    const fa_port_t *port;
    const char *device_id;
    const char *hw;
    const char *fw_version;      /* of the running image */
    uint32_t secure_version;     /* of the running image */
    const char *topic_prefix;    /* {p}, "fleet" when NULL */
    const uint8_t *hmac_key;     /* per-device key (HKDF of the fleet master key), may be NULL */
    size_t hmac_key_len;
    const uint8_t *ecdsa_pub;    /* fleet signing public key, PEM or DER, may be NULL */
    size_t ecdsa_pub_len;
    uint32_t heartbeat_interval_s; /* 60 when 0 */
    uint32_t confirm_timeout_s;    /* 60 when 0 */
    uint32_t log_rate_per_s;       /* 20 when 0 */
    uint32_t log_burst;            /* 40 when 0 */
    uint32_t log_batch_max;        /* 20 when 0 */
} fa_config_t;

/* A shadow key handler gets the desired value (raw JSON text). Returning FA_OK reports the
 * same value back as reported; anything else leaves reported alone. */
typedef fa_err_t (*fa_shadow_handler_t)(void *user, const char *key, const char *json, size_t len);

fa_err_t fa_agent_create(const fa_config_t *cfg, fa_agent_t **out);
void fa_agent_destroy(fa_agent_t *a);
fa_err_t fa_agent_on_shadow_key(fa_agent_t *a, const char *key, fa_shadow_handler_t fn, void *user);

/* Last Will for the port's MQTT connect: retained, QoS 1. */
void fa_agent_will(const fa_agent_t *a, const char **topic, const char **payload);

/* Events from the port. */
void fa_agent_mqtt_connected(fa_agent_t *a);
void fa_agent_mqtt_disconnected(fa_agent_t *a);
void fa_agent_mqtt_message(fa_agent_t *a, const char *topic, const void *data, size_t len);
void fa_agent_mqtt_published(fa_agent_t *a, int msg_id); /* PUBACK */
/* Drives timers, the download and log batches; call every few tens of ms. */
void fa_agent_tick(fa_agent_t *a);
/* One log line for the debug stream (cheap; dropped unless a debug session is open). */
void fa_agent_log_line(fa_agent_t *a, const char *line);

/* Derives the per-device OTA key: HKDF-SHA256(master, salt = empty, "fleet-ota-v1:" + id, 32). */
fa_err_t fa_derive_device_key(const uint8_t *master, size_t master_len, const char *device_id,
                              uint8_t out[32]);

#endif
