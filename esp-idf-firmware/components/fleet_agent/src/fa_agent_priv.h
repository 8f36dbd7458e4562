#ifndef FA_AGENT_PRIV_H
#define FA_AGENT_PRIV_H

#include "fa_logstream.h"
#include "fa_manifest.h"
#include "fa_ota.h"
#include "fa_shadow.h"
#include "fleet_agent.h"

#define FA_TOPIC_MAX 160
#define FA_PAYLOAD_MAX 3072
#define FA_REP_MAX 1024

typedef enum { FA_OTA_IDLE = 0, FA_OTA_DOWNLOADING, FA_OTA_REBOOT_WAIT } fa_ota_phase_t;

struct fa_agent {
    fa_config_t cfg;
    const fa_port_t *port;
    char base[FA_TOPIC_MAX];       /* {p}/{id} */
    char will_topic[FA_TOPIC_MAX];
    bool connected;
    /* heartbeats */
    int64_t next_hb_ms;
    uint32_t hb_seq;
    int hb_msgid;
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
    fa_ota_phase_t phase;
    int last_pct;
    int reboot_msgid;
    int64_t reboot_deadline_ms;
    fa_ota_t ota;
    fa_shadow_t shadow;
    fa_logstream_t logs;
    char topic[FA_TOPIC_MAX];
    char payload[FA_PAYLOAD_MAX];
    char rep[FA_REP_MAX];
};

#define KV_PEND "ota_pend"  /* "job_id|slot|version" of an image set to boot on trial */
#define KV_DONE "ota_done"  /* the last job that reached a final state */
#define KV_SEQ "sh_seq"     /* shadow report seq, monotonic across reboots */

/* shared by fa_agent.c and fa_agent_ota.c */
/* True when snprintf returned n for a buffer of cap bytes without cutting the output. */
bool fa__fits(int n, size_t cap);
void fa__log(fa_agent_t *a, fa_log_level_t lvl, const char *fmt, const char *arg);
int64_t fa__now_ms(const fa_agent_t *a);
int64_t fa__now_s(const fa_agent_t *a);
int fa__pub(fa_agent_t *a, const char *suffix, const char *payload, int qos, int retain);
const char *fa__esc(char *buf, size_t cap, const char *s);
int fa__ota_status(fa_agent_t *a, const char *job, const char *state, int progress, const char *err);
void fa__set_final(fa_agent_t *a, const char *job, const char *state, const char *err);
bool fa__read_pending(fa_agent_t *a, char *job, int *slot, char *version);
void fa__on_job(fa_agent_t *a, const char *data, size_t len);
void fa__download(fa_agent_t *a);

#endif
