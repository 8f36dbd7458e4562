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

#endif
