/* The agent's OTA half: taking a job (verified with the key its kid names), the download, trial
 * boot confirmation, the final status of a job. It knows nothing of the agent: what it needs —
 * publishing on ota/status and logging — comes through fa_jobs_io_t, and it formats its
 * messages in its own buffer. fa_agent.c calls in; nothing here calls back into fa_agent.c. */
#ifndef FA_AGENT_OTA_H
#define FA_AGENT_OTA_H

#include <stdbool.h>
#include <stdint.h>

#include "fa_manifest.h"
#include "fa_ota.h"
#include "fleet_agent.h"

#define FA_STATUS_MAX 512

typedef struct {
    void *ctx;
    /* Publishes payload on {p}/{id}/ota/status at QoS 1; returns the message id, -1 if offline. */
    int (*publish_status)(void *ctx, const char *payload);
    void (*log)(void *ctx, fa_log_level_t level, const char *msg);
} fa_jobs_io_t;

typedef enum { FA_JOB_IDLE = 0, FA_JOB_DOWNLOADING, FA_JOB_REBOOT_WAIT } fa_job_phase_t;

typedef struct {
    const fa_port_t *port;
    fa_jobs_io_t io;
    const char *fw_version;
    uint32_t secure_version;
    uint32_t confirm_timeout_s;
    fa_verify_ctx_t verify;     /* device id, hw, secure_version and the keys below */
    fa_key_t keys[FA_MAX_KEYS];
    char retired[FA_MAX_RETIRED][FA_KID_MAX];
    /* trial boot of a new image */
    bool trial;
    int64_t confirm_deadline_ms;
    /* the final status of a job, published until acknowledged */
    bool final_pending;
    int final_msgid;
    char final_job[FA_ID_MAX];
    char final_state[16];
    char final_error[96];
    /* the update in progress */
    fa_job_phase_t phase;
    int last_pct;
    int reboot_msgid;
    int64_t reboot_deadline_ms;
    fa_ota_t ota;
    char payload[FA_STATUS_MAX];
} fa_jobs_t;

/* Sets up from the config and what the previous boot left in the store (KV_PEND). */
void fa_jobs_init(fa_jobs_t *j, const fa_config_t *cfg, const fa_jobs_io_t *io);
fa_err_t fa_jobs_add_key(fa_jobs_t *j, const fa_key_t *key);
fa_err_t fa_jobs_retire_key(fa_jobs_t *j, const char *kid);
/* Connected: a final status not yet acknowledged goes out again. */
void fa_jobs_connected(fa_jobs_t *j);
void fa_jobs_on_job(fa_jobs_t *j, const char *data, size_t len);
void fa_jobs_published(fa_jobs_t *j, int msg_id);
/* A heartbeat was acknowledged: a trial boot is confirmed. */
void fa_jobs_heartbeat_acked(fa_jobs_t *j);
/* Confirmation deadline, download, reboot. Returns false if the device is rebooting. */
bool fa_jobs_tick(fa_jobs_t *j, int64_t now_ms);
void fa_jobs_release(fa_jobs_t *j);

#endif
