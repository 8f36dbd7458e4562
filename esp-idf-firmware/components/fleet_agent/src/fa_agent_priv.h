#ifndef FA_AGENT_PRIV_H
#define FA_AGENT_PRIV_H

#include "fa_agent_ota.h"
#include "fa_logstream.h"
#include "fa_shadow.h"
#include "fleet_agent.h"

#define FA_TOPIC_MAX 160
#define FA_PAYLOAD_MAX 3072
#define FA_REP_MAX 1024

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
    fa_jobs_t jobs;                /* the OTA half: reached only through fa_agent_ota.h */
    fa_shadow_t shadow;
    fa_logstream_t logs;
    char topic[FA_TOPIC_MAX];      /* scratch for the agent's own publishes */
    char payload[FA_PAYLOAD_MAX];
    char rep[FA_REP_MAX];
};

#define KV_SEQ "sh_seq"     /* shadow report seq, monotonic across reboots */

#endif
