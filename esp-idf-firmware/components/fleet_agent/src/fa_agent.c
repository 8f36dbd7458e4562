/* The agent: presence, heartbeats, shadow reports, the debug stream, events from the port; the OTA half
 * (fa_agent_ota.c) is reached through fa_agent_ota.h only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa_agent_priv.h"
#include "fa_crypto.h"

static void alog(fa_agent_t *a, fa_log_level_t lvl, const char *fmt, const char *arg)
{
    char line[160];
    if (a->port->log && snprintf(line, sizeof(line), fmt, arg ? arg : "") >= 0) {
        a->port->log(a->port->ctx, lvl, line);
    }
}

static int64_t now_ms(const fa_agent_t *a)
{
    return a->port->uptime_ms(a->port->ctx);
}

static int64_t now_s(const fa_agent_t *a)
{
    return a->port->now_s(a->port->ctx);
}

static bool fits(int n, size_t cap)
{
    return n >= 0 && (size_t)n < cap;
}

static int pub(fa_agent_t *a, const char *suffix, const char *payload, int qos, int retain)
{
    /* A cut topic would publish somewhere else: refuse instead. */
    if (!fits(snprintf(a->topic, sizeof(a->topic), "%s/%s", a->base, suffix), sizeof(a->topic)) ||
        !a->connected) {
        return -1;
    }
    return a->port->mqtt_publish(a->port->ctx, a->topic, payload, strlen(payload), qos, retain);
}

static const char *esc(char *buf, size_t cap, const char *s)
{
    return fj_escape(buf, cap, s) < 0 ? "" : buf;
}

/* The OTA half's view of the agent (fa_agent_ota.h). */
static int jobs_publish_status(void *ctx, const char *payload)
{
    return pub(ctx, "ota/status", payload, 1, 0);
}

static void jobs_log(void *ctx, fa_log_level_t level, const char *msg)
{
    fa_agent_t *a = ctx;
    if (a->port->log) {
        a->port->log(a->port->ctx, level, msg);
    }
}

static fa_err_t debug_handler(void *user, const char *key, const char *json, size_t len)
{
    fa_agent_t *a = user;
    fj_tok_t t[12];
    int64_t until = 0;
    (void)key;
    int n = fj_parse(json, len, t, 12);
    if (n < 1 || t[0].type != FJ_OBJ) {
        fa_ls_set(&a->logs, false, 0, now_ms(a));
        if (a->port->log_level) {
            a->port->log_level(a->port->ctx, FA_LOG_INFO);
        }
        return FA_OK; /* null or not an object: no session */
    }
    static const char *const names[] = { "error", "warn", "info", "debug", "verbose" };
    char lv[8] = "info";
    int en = fj_get(json, t, n, 0, "enabled");
    int u = fj_get(json, t, n, 0, "until");
    int l = fj_get(json, t, n, 0, "level");
    bool enabled = en >= 0 && t[en].type == FJ_TRUE;
    if (u < 0 || !fj_i64(json, &t[u], &until)) {
        enabled = false;
    }
    if (l >= 0 && !fj_str(json, &t[l], lv, sizeof(lv))) {
        lv[0] = '\0';
    }
    int level = 3; /* info: absent or unknown */
    for (int i = 0; i < 5; i++) {
        if (strcmp(lv, names[i]) == 0) {
            level = i + 1;
        }
    }
    fa_ls_set(&a->logs, enabled, until, now_ms(a));
    fa_ls_set_level(&a->logs, enabled ? level : 3);
    if (a->port->log_level) {
        /* The port logs down to the session's level (ESP-IDF: esp_log_level_set), back to info after. */
        a->port->log_level(a->port->ctx, enabled && level > 3 ? FA_LOG_DEBUG : FA_LOG_INFO);
    }
    alog(a, FA_LOG_INFO, "debug stream %s", enabled ? "open" : "closed");
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
    if (!fits(snprintf(a->base, sizeof(a->base), "%s/%s", a->cfg.topic_prefix, cfg->device_id), sizeof(a->base)) ||
        !fits(snprintf(a->will_topic, sizeof(a->will_topic), "%s/status", a->base), sizeof(a->will_topic))) {
        free(a);
        return FA_ERR_INVALID_ARG;
    }
    fa_shadow_init(&a->shadow);
    fa_ls_init(&a->logs, cfg->log_rate_per_s ? cfg->log_rate_per_s : 20, cfg->log_burst ? cfg->log_burst : 40,
               cfg->log_batch_max ? cfg->log_batch_max : 20);
    fa_shadow_register(&a->shadow, "debug", debug_handler, a);
    a->hb_msgid = -1;
    fa_jobs_io_t io = { a, jobs_publish_status, jobs_log };
    fa_jobs_init(&a->jobs, &a->cfg, &io);
    *out = a;
    return FA_OK;
}

void fa_agent_destroy(fa_agent_t *a)
{
    if (a) {
        fa_jobs_release(&a->jobs);
        free(a);
    }
}

fa_err_t fa_agent_on_shadow_key(fa_agent_t *a, const char *key, fa_shadow_handler_t fn, void *user)
{
    return a ? fa_shadow_register(&a->shadow, key, fn, user) : FA_ERR_INVALID_ARG;
}

fa_err_t fa_agent_add_key(fa_agent_t *a, const fa_key_t *key)
{
    return a ? fa_jobs_add_key(&a->jobs, key) : FA_ERR_INVALID_ARG;
}

fa_err_t fa_agent_retire_key(fa_agent_t *a, const char *kid)
{
    return a ? fa_jobs_retire_key(&a->jobs, kid) : FA_ERR_INVALID_ARG;
}

fa_err_t fa_agent_will(const fa_agent_t *a, const char **topic, const char **payload)
{
    if (a == NULL || topic == NULL || payload == NULL) {
        return FA_ERR_INVALID_ARG;
    }
    *topic = a->will_topic;
    *payload = "{\"online\":false}";
    return FA_OK;
}

static void heartbeat(fa_agent_t *a)
{
    char ef[2 * FA_VER_MAX], eh[2 * FA_VER_MAX], heap[32] = "", reason[64] = "";
    /* Optional fields are left out rather than cut; a heartbeat that does not fit is not sent. */
    if (a->port->heap_free &&
        !fits(snprintf(heap, sizeof(heap), ",\"heap_free\":%lu", (unsigned long)a->port->heap_free(a->port->ctx)),
              sizeof(heap))) {
        heap[0] = '\0';
    }
    if (a->port->reset_reason &&
        !fits(snprintf(reason, sizeof(reason), ",\"reset_reason\":\"%s\"", a->port->reset_reason(a->port->ctx)),
              sizeof(reason))) {
        reason[0] = '\0';
    }
    a->next_hb_ms = now_ms(a) + (int64_t)a->cfg.heartbeat_interval_s * 1000;
    if (!fits(snprintf(a->payload, sizeof(a->payload),
                       "{\"ts\":%lld,\"seq\":%lu,\"uptime_s\":%lld,\"fw\":\"%s\",\"slot\":%d,\"hw\":\"%s\"%s%s}",
                       (long long)now_s(a), (unsigned long)++a->hb_seq, (long long)(now_ms(a) / 1000),
                       esc(ef, sizeof(ef), a->cfg.fw_version), a->port->running_slot(a->port->ctx),
                       esc(eh, sizeof(eh), a->cfg.hw), heap, reason),
              sizeof(a->payload))) {
        return;
    }
    int id = pub(a, "heartbeat", a->payload, 1, 0);
    if (id >= 0) {
        char seq[12];
        snprintf(seq, sizeof(seq), "%lu", (unsigned long)a->hb_seq);
        a->hb_msgid = id;
        alog(a, FA_LOG_DEBUG, "heartbeat %s sent", seq);
    }
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
        int64_t t = now_s(a);
        seq = t > 0 ? (uint64_t)t : 1;
    }
    snprintf(v, sizeof(v), "%llu", (unsigned long long)seq);
    /* Stored before sending: a reboot never reuses a seq the daemon may have accepted. */
    if (a->port->kv_set(a->port->ctx, KV_SEQ, v) != FA_OK) {
        alog(a, FA_LOG_ERROR, "cannot store shadow seq%s", NULL);
        return;
    }
    if (fa_shadow_report(a->payload, sizeof(a->payload), rep, seq) > 0) {
        pub(a, "shadow/update", a->payload, 1, 0);
    }
}

fa_err_t fa_agent_mqtt_connected(fa_agent_t *a)
{
    static const char *const subs[] = { "ota/job", "shadow/update/delta", "shadow/get/accepted" };
    char ef[2 * FA_VER_MAX];
    if (a == NULL) {
        return FA_ERR_INVALID_ARG;
    }
    a->connected = true;
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (fits(snprintf(a->topic, sizeof(a->topic), "%s/%s", a->base, subs[i]), sizeof(a->topic))) {
            a->port->mqtt_subscribe(a->port->ctx, a->topic, 1);
        }
    }
    if (fits(snprintf(a->payload, sizeof(a->payload), "{\"online\":true,\"fw\":\"%s\",\"ts\":%lld}",
                      esc(ef, sizeof(ef), a->cfg.fw_version), (long long)now_s(a)), sizeof(a->payload))) {
        pub(a, "status", a->payload, 1, 1);
    }
    pub(a, "shadow/get", "{\"clientToken\":\"boot\"}", 1, 0);
    heartbeat(a);
    fa_jobs_connected(&a->jobs);
    return FA_OK;
}

fa_err_t fa_agent_mqtt_disconnected(fa_agent_t *a)
{
    if (a == NULL) {
        return FA_ERR_INVALID_ARG;
    }
    a->connected = false;
    a->hb_msgid = -1;
    return FA_OK;
}

fa_err_t fa_agent_mqtt_message(fa_agent_t *a, const char *topic, const void *data, size_t len)
{
    if (a == NULL || topic == NULL || (data == NULL && len > 0)) {
        return FA_ERR_INVALID_ARG;
    }
    size_t bl = strlen(a->base);
    if (strncmp(topic, a->base, bl) != 0 || topic[bl] != '/') {
        return FA_ERR_NOT_MINE;
    }
    const char *t = topic + bl + 1;
    fa_err_t err = FA_OK;
    if (strcmp(t, "ota/job") == 0) {
        fa_jobs_on_job(&a->jobs, data, len);
        return FA_OK;
    }
    if (strcmp(t, "shadow/update/delta") == 0) {
        err = fa_shadow_on_delta(&a->shadow, data, len, a->rep, sizeof(a->rep));
    } else if (strcmp(t, "shadow/get/accepted") == 0) {
        err = fa_shadow_on_document(&a->shadow, data, len, a->rep, sizeof(a->rep));
    } else {
        return FA_ERR_NOT_MINE;
    }
    if (err == FA_OK) {
        alog(a, FA_LOG_DEBUG, "shadow: reporting %s", a->rep);
        report(a, a->rep);
    }
    return err == FA_ERR_INVALID_VERSION ? FA_OK : err; /* a stale delta is handled: ignored */
}

fa_err_t fa_agent_mqtt_published(fa_agent_t *a, int msg_id)
{
    if (a == NULL || msg_id < 0) {
        return FA_ERR_INVALID_ARG;
    }
    if (msg_id == a->hb_msgid) {
        fa_jobs_heartbeat_acked(&a->jobs);
    }
    fa_jobs_published(&a->jobs, msg_id);
    return FA_OK;
}

fa_err_t fa_agent_tick(fa_agent_t *a)
{
    if (a == NULL) {
        return FA_ERR_INVALID_ARG;
    }
    int64_t ms = now_ms(a);
    if (!fa_jobs_tick(&a->jobs, ms)) {
        return FA_OK; /* rebooting */
    }
    if (a->connected && ms >= a->next_hb_ms) {
        heartbeat(a);
    }
    if (a->connected) {
        int n = fa_ls_batch(&a->logs, now_s(a), ms, a->payload, sizeof(a->payload));
        if (n > 0) {
            pub(a, "logs", a->payload, 0, 0);
        }
    }
    return FA_OK;
}

fa_err_t fa_agent_log_line(fa_agent_t *a, const char *line)
{
    if (a == NULL || line == NULL) {
        return FA_ERR_INVALID_ARG;
    }
    return fa_ls_push(&a->logs, line, now_s(a)) ? FA_OK : FA_ERR_INVALID_STATE;
}
