/* Fleet agent: the device side of the fleet protocol (shadow, heartbeats, presence, OTA with
 * trial boot, debug log streaming), plain C99 behind fa_port_t. No hidden globals: all state
 * lives in the fa_agent_t handle. One task calls the functions of a handle (the ports queue
 * MQTT events to it); none of them blocks. */
#ifndef FLEET_AGENT_H
#define FLEET_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fa_err.h"
#include "fa_port.h"

typedef struct fa_agent fa_agent_t;

#define FA_KID_MAX 65 /* a kid is 1..64 characters */
#define FA_MAX_KEYS 4

/* A job-signing key, named by the kid jobs carry. Either part may be NULL; the memory stays the
 * caller's and must outlive the agent. */
typedef struct {
    const char *kid;
    const uint8_t *hmac_key;  /* this device's HMAC key under kid (HKDF of that fleet master key) */
    size_t hmac_key_len;
    const uint8_t *ecdsa_pub; /* the fleet signing public key under kid, PEM (NUL counted) or DER */
    size_t ecdsa_pub_len;
} fa_key_t;

typedef struct {
    const fa_port_t *port;
    const char *device_id;
    const char *hw;
    const char *fw_version;      /* of the running image */
    uint32_t secure_version;     /* of the running image */
    const char *topic_prefix;    /* {p}, "fleet" when NULL */
    /* The first key, for a device with one: hmac_key and/or ecdsa_pub under kid ("k1" when NULL,
     * the planner's default). More keys: fa_agent_add_key(). */
    const char *kid;
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

/**
 * Creates the agent and reads what the previous boot left (a job set to boot, a trial boot).
 * @return FA_OK with *out set; FA_ERR_INVALID_ARG for a missing field, a device id that is not
 *         topic-safe or too long a prefix or version; FA_ERR_NO_MEM.
 */
fa_err_t fa_agent_create(const fa_config_t *cfg, fa_agent_t **out);
/**
 * Releases the agent and the update slot (a download's resume point stays for the next boot).
 * @return nothing; a NULL handle is ignored.
 */
void fa_agent_destroy(fa_agent_t *a);
/**
 * Registers a handler for a desired shadow key.
 * @return FA_OK; FA_ERR_INVALID_ARG (no key or handler, key too long); FA_ERR_NO_MEM when all
 *         FA_SH_MAX_KEYS slots are taken.
 */
fa_err_t fa_agent_on_shadow_key(fa_agent_t *a, const char *key, fa_shadow_handler_t fn, void *user);
/**
 * Trusts one more job-signing key (a rotation: the device learns the new key before jobs use it).
 * @return FA_OK; FA_ERR_INVALID_ARG (no kid, kid too long, no key material); FA_ERR_NO_MEM when
 *         FA_MAX_KEYS keys are held.
 */
fa_err_t fa_agent_add_key(fa_agent_t *a, const fa_key_t *key);
/**
 * Stops trusting a kid: jobs signed under it are refused ("signed with a retired key").
 * @return FA_OK; FA_ERR_INVALID_ARG (no kid, too long); FA_ERR_NO_MEM when the retired list is full.
 */
fa_err_t fa_agent_retire_key(fa_agent_t *a, const char *kid);
/**
 * The Last Will for the port's MQTT connect: retained, QoS 1.
 * @return FA_OK with *topic and *payload pointing into the agent; FA_ERR_INVALID_ARG for NULLs.
 */
fa_err_t fa_agent_will(const fa_agent_t *a, const char **topic, const char **payload);

/* Events from the port, in the order they happened, from the agent's one task. */
/**
 * The MQTT session is up: subscribes, publishes status, asks for the shadow, heartbeats.
 * @return FA_OK; FA_ERR_INVALID_ARG for NULL.
 */
fa_err_t fa_agent_mqtt_connected(fa_agent_t *a);
/**
 * The MQTT session is down.
 * @return FA_OK; FA_ERR_INVALID_ARG for NULL.
 */
fa_err_t fa_agent_mqtt_disconnected(fa_agent_t *a);
/**
 * A message on a subscribed topic.
 * @return FA_OK when handled (a refused job or a stale delta is handled too); FA_ERR_NOT_MINE for
 *         a topic outside this device's subtree or one it does not handle; FA_ERR_INVALID_ARG for
 *         NULLs or a shadow message that is not valid.
 */
fa_err_t fa_agent_mqtt_message(fa_agent_t *a, const char *topic, const void *data, size_t len);
/**
 * A PUBACK for a QoS 1 publish (msg_id as the port's mqtt_publish returned it).
 * @return FA_OK; FA_ERR_INVALID_ARG for a negative id or NULL.
 */
fa_err_t fa_agent_mqtt_published(fa_agent_t *a, int msg_id);
/**
 * Drives timers, the download and log batches; call every few tens of ms.
 * @return FA_OK; FA_ERR_INVALID_ARG for NULL.
 */
fa_err_t fa_agent_tick(fa_agent_t *a);
/**
 * One log line for the debug stream (cheap: dropped unless a session is open at its level).
 * @return FA_OK if kept for the stream; FA_ERR_INVALID_STATE when no session wants it.
 */
fa_err_t fa_agent_log_line(fa_agent_t *a, const char *line);

/**
 * Derives the per-device OTA key: HKDF-SHA256(master, salt = empty, "fleet-ota-v1:" + id, 32).
 * @return FA_OK; FA_ERR_INVALID_ARG when the id is too long; FA_FAIL from the crypto library.
 */
fa_err_t fa_derive_device_key(const uint8_t *master, size_t master_len, const char *device_id,
                              uint8_t out[32]);

#endif
