/* The agent: presence, heartbeats, shadow reports, trial boot confirmation, events from the port. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa_agent_priv.h"
#include "fa_crypto.h"

void fa__log(fa_agent_t *a, fa_log_level_t lvl, const char *fmt, const char *arg)
{
    char line[160];
    snprintf(line, sizeof(line), fmt, arg ? arg : "");
    if (a->port->log) {
        a->port->log(a->port->ctx, lvl, line);
    }
}

int64_t fa__now_ms(const fa_agent_t *a)
{
    return a->port->uptime_ms(a->port->ctx);
}

int64_t fa__now_s(const fa_agent_t *a)
{
    return a->port->now_s(a->port->ctx);
}

bool fa__fits(int n, size_t cap)
{
    return n >= 0 && (size_t)n < cap;
}

int fa__pub(fa_agent_t *a, const char *suffix, const char *payload, int qos, int retain)
{
    /* A cut topic would publish somewhere else: refuse instead. */
    if (!fa__fits(snprintf(a->topic, sizeof(a->topic), "%s/%s", a->base, suffix), sizeof(a->topic)) ||
        !a->connected) {
        return -1;
    }
    return a->port->mqtt_publish(a->port->ctx, a->topic, payload, strlen(payload), qos, retain);
}

const char *fa__esc(char *buf, size_t cap, const char *s)
{
    return fj_escape(buf, cap, s) < 0 ? "" : buf;
}

/* Reads KV_PEND into its parts; false when there is none. */
static fa_err_t debug_handler(void *user, const char *key, const char *json, size_t len)
{
    fa_agent_t *a = user;
    fj_tok_t t[12];
    int64_t until = 0;
    (void)key;
    int n = fj_parse(json, len, t, 12);
    if (n < 1 || t[0].type != FJ_OBJ) {
        fa_ls_set(&a->logs, false, 0, fa__now_ms(a));
        return FA_OK; /* null or not an object: no session */
    }
    int en = fj_get(json, t, n, 0, "enabled");
    int u = fj_get(json, t, n, 0, "until");
    bool enabled = en >= 0 && t[en].type == FJ_TRUE;
    if (u < 0 || !fj_i64(json, &t[u], &until)) {
        enabled = false;
    }
    fa_ls_set(&a->logs, enabled, until, fa__now_ms(a));
    fa__log(a, FA_LOG_INFO, "debug stream %s", enabled ? "open" : "closed");
    return FA_OK;
}

fa_err_t fa_derive_device_key(const uint8_t *master, size_t master_len, const char *device_id, uint8_t out[32])
{
    char info[96];
    int n = snprintf(info, sizeof(info), "fleet-ota-v1:%s", device_id);
    if (n < 0 || (size_t)n >= sizeof(info)) {
        return FA_ERR_INVALID_ARG;
    }
    return fa_hkdf_sha256(master, master_len, info, (size_t)n, out, 32);
}

/* ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$ (PROTOCOL.md §0): anything else would break topics. */
static bool valid_device_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 64) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '_' && c != '.' && c != ':' && c != '-'))) {
            return false;
        }
    }
    return true;
}

fa_err_t fa_agent_create(const fa_config_t *cfg, fa_agent_t **out)
{
    if (cfg == NULL || out == NULL || cfg->port == NULL || cfg->device_id == NULL || cfg->hw == NULL ||
        cfg->fw_version == NULL) {
        return FA_ERR_INVALID_ARG;
    }
    if (!valid_device_id(cfg->device_id) || strlen(cfg->fw_version) >= FA_VER_MAX ||
        (cfg->topic_prefix && strlen(cfg->topic_prefix) > 64)) {
        return FA_ERR_INVALID_ARG; /* topics must fit FA_TOPIC_MAX */
    }
    fa_agent_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return FA_ERR_NO_MEM;
    }
    a->cfg = *cfg;
    a->port = cfg->port;
    if (!a->cfg.topic_prefix) {
        a->cfg.topic_prefix = "fleet";
    }
    if (!a->cfg.heartbeat_interval_s) {
        a->cfg.heartbeat_interval_s = 60;
    }
    if (!a->cfg.confirm_timeout_s) {
        a->cfg.confirm_timeout_s = 60;
    }
    if (!fa__fits(snprintf(a->base, sizeof(a->base), "%s/%s", a->cfg.topic_prefix, cfg->device_id), sizeof(a->base)) ||
        !fa__fits(snprintf(a->will_topic, sizeof(a->will_topic), "%s/status", a->base), sizeof(a->will_topic))) {
        free(a);
        return FA_ERR_INVALID_ARG;
    }
    fa_shadow_init(&a->shadow);
    fa_ls_init(&a->logs, cfg->log_rate_per_s ? cfg->log_rate_per_s : 20, cfg->log_burst ? cfg->log_burst : 40,
               cfg->log_batch_max ? cfg->log_batch_max : 20);
    fa_shadow_register(&a->shadow, "debug", debug_handler, a);
    a->hb_msgid = -1;
    a->final_msgid = -1;
    a->reboot_msgid = -1;

    char job[FA_ID_MAX], version[FA_VER_MAX];
    int slot = -1;
    bool pend = fa__read_pending(a, job, &slot, version);
    if (a->port->running_state(a->port->ctx) == FA_IMG_PENDING_VERIFY) {
        /* First boot of a new image: confirmed only by a heartbeat acknowledged in time. */
        a->trial = true;
        a->confirm_deadline_ms = fa__now_ms(a) + (int64_t)a->cfg.confirm_timeout_s * 1000;
        snprintf(a->final_job, sizeof(a->final_job), "%s", pend ? job : "");
        fa__log(a, FA_LOG_INFO, "trial boot of %s: waiting for a heartbeat ack", cfg->fw_version);
    } else if (pend) {
        if (slot == a->port->running_slot(a->port->ctx) && strcmp(version, cfg->fw_version) == 0) {
            fa__set_final(a, job, "succeeded", NULL); /* confirmed, but the report was cut off */
        } else {
            fa__set_final(a, job, "rolled_back", "the new image did not confirm; the previous slot booted");
            fa__log(a, FA_LOG_WARN, "rolled back from job %s", job);
        }
    }
    *out = a;
    return FA_OK;
}

void fa_agent_destroy(fa_agent_t *a)
{
    if (a) {
        fa_ota_abort(&a->ota);
        free(a);
    }
}

fa_err_t fa_agent_on_shadow_key(fa_agent_t *a, const char *key, fa_shadow_handler_t fn, void *user)
{
    return fa_shadow_register(&a->shadow, key, fn, user);
}

void fa_agent_will(const fa_agent_t *a, const char **topic, const char **payload)
{
    *topic = a->will_topic;
    *payload = "{\"online\":false}";
}

static void heartbeat(fa_agent_t *a)
{
    char ef[2 * FA_VER_MAX], eh[2 * FA_VER_MAX], extra[96] = "";
    size_t o = 0;
    if (a->port->heap_free) {
        o += (size_t)snprintf(extra, sizeof(extra), ",\"heap_free\":%lu", (unsigned long)a->port->heap_free(a->port->ctx));
    }
    if (a->port->reset_reason) {
        snprintf(extra + o, sizeof(extra) - o, ",\"reset_reason\":\"%s\"", a->port->reset_reason(a->port->ctx));
    }
    snprintf(a->payload, sizeof(a->payload),
             "{\"ts\":%lld,\"seq\":%lu,\"uptime_s\":%lld,\"fw\":\"%s\",\"slot\":%d,\"hw\":\"%s\"%s}",
             (long long)fa__now_s(a), (unsigned long)++a->hb_seq, (long long)(fa__now_ms(a) / 1000),
             fa__esc(ef, sizeof(ef), a->cfg.fw_version), a->port->running_slot(a->port->ctx),
             fa__esc(eh, sizeof(eh), a->cfg.hw), extra);
    int id = fa__pub(a, "heartbeat", a->payload, 1, 0);
    if (id >= 0) {
        a->hb_msgid = id;
    }
    a->next_hb_ms = fa__now_ms(a) + (int64_t)a->cfg.heartbeat_interval_s * 1000;
}

static void report(fa_agent_t *a, const char *rep)
{
    char v[24];
    uint64_t seq = 0;
    if (rep[0] == '\0') {
        return;
    }
    if (a->port->kv_get(a->port->ctx, KV_SEQ, v, sizeof(v)) == FA_OK) {
        seq = strtoull(v, NULL, 10) + 1;
    } else {
        /* No stored seq (new or wiped NVS): start from the clock, above any seq this device sent
         * before unless it reported more than once a second on average. */
        int64_t t = fa__now_s(a);
        seq = t > 0 ? (uint64_t)t : 1;
    }
    snprintf(v, sizeof(v), "%llu", (unsigned long long)seq);
    /* Stored before sending: a reboot never reuses a seq the daemon may have accepted. */
    if (a->port->kv_set(a->port->ctx, KV_SEQ, v) != FA_OK) {
        fa__log(a, FA_LOG_ERROR, "cannot store shadow seq%s", NULL);
        return;
    }
    if (fa_shadow_report(a->payload, sizeof(a->payload), rep, seq) > 0) {
        fa__pub(a, "shadow/update", a->payload, 1, 0);
    }
}

void fa_agent_mqtt_connected(fa_agent_t *a)
{
    static const char *const subs[] = { "ota/job", "shadow/update/delta", "shadow/get/accepted" };
    char ef[2 * FA_VER_MAX];
    a->connected = true;
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (fa__fits(snprintf(a->topic, sizeof(a->topic), "%s/%s", a->base, subs[i]), sizeof(a->topic))) {
            a->port->mqtt_subscribe(a->port->ctx, a->topic, 1);
        }
    }
    snprintf(a->payload, sizeof(a->payload), "{\"online\":true,\"fw\":\"%s\",\"ts\":%lld}",
             fa__esc(ef, sizeof(ef), a->cfg.fw_version), (long long)fa__now_s(a));
    fa__pub(a, "status", a->payload, 1, 1);
    fa__pub(a, "shadow/get", "{\"clientToken\":\"boot\"}", 1, 0);
    heartbeat(a);
    if (a->final_pending) {
        a->final_msgid = fa__ota_status(a, a->final_job, a->final_state, -1, a->final_error[0] ? a->final_error : NULL);
    }
}

void fa_agent_mqtt_disconnected(fa_agent_t *a)
{
    a->connected = false;
    a->hb_msgid = -1;
}

void fa_agent_mqtt_message(fa_agent_t *a, const char *topic, const void *data, size_t len)
{
    size_t bl = strlen(a->base);
    if (strncmp(topic, a->base, bl) != 0 || topic[bl] != '/') {
        return;
    }
    const char *t = topic + bl + 1;
    fa_err_t err = FA_OK;
    if (strcmp(t, "ota/job") == 0) {
        fa__on_job(a, data, len);
        return;
    }
    if (strcmp(t, "shadow/update/delta") == 0) {
        err = fa_shadow_on_delta(&a->shadow, data, len, a->rep, sizeof(a->rep));
    } else if (strcmp(t, "shadow/get/accepted") == 0) {
        err = fa_shadow_on_document(&a->shadow, data, len, a->rep, sizeof(a->rep));
    } else {
        return;
    }
    if (err == FA_OK) {
        report(a, a->rep);
    }
}

void fa_agent_mqtt_published(fa_agent_t *a, int msg_id)
{
    if (msg_id < 0) {
        return;
    }
    if (a->trial && msg_id == a->hb_msgid) {
        if (a->port->mark_valid(a->port->ctx) == FA_OK) {
            a->trial = false;
            fa__log(a, FA_LOG_INFO, "image %s confirmed", a->cfg.fw_version);
            if (a->final_job[0]) {
                fa__set_final(a, a->final_job, "succeeded", NULL);
            }
        }
    }
    if (a->final_pending && msg_id == a->final_msgid) {
        a->port->kv_set(a->port->ctx, KV_DONE, a->final_job);
        a->port->kv_erase(a->port->ctx, KV_PEND);
        a->final_pending = false;
    }
    if (a->phase == FA_OTA_REBOOT_WAIT && msg_id == a->reboot_msgid) {
        a->reboot_deadline_ms = 0; /* acknowledged: reboot now */
    }
}

void fa_agent_tick(fa_agent_t *a)
{
    int64_t ms = fa__now_ms(a);
    if (a->trial && ms >= a->confirm_deadline_ms) {
        fa__log(a, FA_LOG_ERROR, "no heartbeat ack within the confirm timeout: rolling back%s", NULL);
        a->port->mark_invalid_and_reboot(a->port->ctx);
        return;
    }
    if (a->connected && ms >= a->next_hb_ms) {
        heartbeat(a);
    }
    if (a->phase == FA_OTA_DOWNLOADING) {
        fa__download(a);
    } else if (a->phase == FA_OTA_REBOOT_WAIT && ms >= a->reboot_deadline_ms) {
        fa__log(a, FA_LOG_INFO, "rebooting into the new image%s", NULL);
        a->port->reboot(a->port->ctx);
        return;
    }
    if (a->connected) {
        int n = fa_ls_batch(&a->logs, fa__now_s(a), ms, a->payload, sizeof(a->payload));
        if (n > 0) {
            fa__pub(a, "logs", a->payload, 0, 0);
        }
    }
}

void fa_agent_log_line(fa_agent_t *a, const char *line)
{
    fa_ls_push(&a->logs, line, fa__now_s(a));
}
