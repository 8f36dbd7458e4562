/* The agent's OTA side: taking a job, the download, the final status of a job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa_agent_priv.h"

int fa__ota_status(fa_agent_t *a, const char *job, const char *state, int progress, const char *err)
{
    char ej[2 * FA_ID_MAX], ee[200], ef[2 * FA_VER_MAX], extra[260] = "";
    size_t o = 0;
    if (progress >= 0) {
        o += (size_t)snprintf(extra + o, sizeof(extra) - o, ",\"progress\":%d", progress);
    }
    if (err) {
        snprintf(extra + o, sizeof(extra) - o, ",\"error\":\"%s\"", fa__esc(ee, sizeof(ee), err));
    }
    snprintf(a->payload, sizeof(a->payload), "{\"job_id\":\"%s\",\"state\":\"%s\",\"fw\":\"%s\"%s,\"ts\":%lld}",
             fa__esc(ej, sizeof(ej), job), state, fa__esc(ef, sizeof(ef), a->cfg.fw_version), extra,
             (long long)fa__now_s(a));
    return fa__pub(a, "ota/status", a->payload, 1, 0);
}

void fa__set_final(fa_agent_t *a, const char *job, const char *state, const char *err)
{
    a->final_pending = true;
    a->final_msgid = -1;
    if (job != a->final_job) {
        snprintf(a->final_job, sizeof(a->final_job), "%s", job);
    }
    snprintf(a->final_state, sizeof(a->final_state), "%s", state);
    snprintf(a->final_error, sizeof(a->final_error), "%s", err ? err : "");
    if (a->connected) {
        a->final_msgid = fa__ota_status(a, job, state, -1, err);
    }
}

bool fa__read_pending(fa_agent_t *a, char *job, int *slot, char *version)
{
    char v[FA_ID_MAX + FA_VER_MAX + 8];
    if (a->port->kv_get(a->port->ctx, KV_PEND, v, sizeof(v)) != FA_OK) {
        return false;
    }
    char *p1 = strchr(v, '|');
    char *p2 = p1 ? strchr(p1 + 1, '|') : NULL;
    /* A record that does not fit the fields is not ours: treat it as absent, never cut it. */
    if (p2 == NULL || (size_t)(p1 - v) >= FA_ID_MAX || strlen(p2 + 1) >= FA_VER_MAX) {
        return false;
    }
    *p1 = *p2 = '\0';
    memcpy(job, v, (size_t)(p1 - v) + 1);
    *slot = atoi(p1 + 1);
    memcpy(version, p2 + 1, strlen(p2 + 1) + 1);
    return true;
}

static bool job_seen(fa_agent_t *a, const char *job)
{
    char done[FA_ID_MAX];
    if (a->port->kv_get(a->port->ctx, KV_DONE, done, sizeof(done)) == FA_OK && strcmp(done, job) == 0) {
        return true;
    }
    if ((a->final_pending || a->trial) && strcmp(a->final_job, job) == 0) {
        return true;
    }
    return a->phase != FA_OTA_IDLE && strcmp(a->ota.m.job_id, job) == 0;
}

void fa__on_job(fa_agent_t *a, const char *data, size_t len)
{
    fa_manifest_t m;
    if (len == 0) {
        return; /* withdrawn */
    }
    fa_verify_ctx_t v = { a->cfg.device_id, a->cfg.hw, a->cfg.secure_version, fa__now_s(a), a->cfg.hmac_key,
                          a->cfg.hmac_key_len, a->cfg.ecdsa_pub, a->cfg.ecdsa_pub_len };
    fa_refusal_t why = fa_job_check(data, len, &v, &m);
    if (m.job_id[0] != '\0' && job_seen(a, m.job_id)) {
        return; /* a retained job this device already finished or is finishing */
    }
    if (a->trial || a->phase != FA_OTA_IDLE) {
        return; /* busy: the job is retained and comes back after the reboot */
    }
    if (why != FA_REFUSE_NONE) {
        fa__log(a, FA_LOG_WARN, "job refused: %s", fa_refusal_str(why));
        fa__set_final(a, m.job_id, "rejected", fa_refusal_str(why));
        return;
    }
    if (strcmp(m.version, a->cfg.fw_version) == 0) {
        fa__set_final(a, m.job_id, "succeeded", NULL);
        return;
    }
    fa_err_t err = fa_ota_begin(&a->ota, a->port, &m);
    if (err != FA_OK) {
        fa__set_final(a, m.job_id, "failed", "cannot open the update slot");
        return;
    }
    fa__log(a, FA_LOG_INFO, "downloading %s", m.version);
    a->phase = FA_OTA_DOWNLOADING;
    a->last_pct = 0;
    fa__ota_status(a, m.job_id, "downloading", 0, NULL);
}

void fa__download(fa_agent_t *a)
{
    fa_refusal_t why = FA_REFUSE_NONE;
    fa_err_t err = FA_OTA_IN_PROGRESS;
    for (int i = 0; i < 8 && err == FA_OTA_IN_PROGRESS; i++) {
        err = fa_ota_perform(&a->ota, &why);
    }
    int pct = fa_ota_progress(&a->ota);
    if (err == FA_OTA_IN_PROGRESS) {
        if (pct / 10 > a->last_pct / 10) {
            a->last_pct = pct;
            fa__ota_status(a, a->ota.m.job_id, "downloading", pct, NULL);
        }
        return;
    }
    const char *job = a->ota.m.job_id;
    if (err == FA_OK) {
        fa__ota_status(a, job, "verifying", 100, NULL);
        err = fa_ota_finish(&a->ota, a->cfg.secure_version, &why);
    }
    if (err != FA_OK) {
        fa_ota_abort(&a->ota);
        a->phase = FA_OTA_IDLE;
        if (why != FA_REFUSE_NONE) {
            fa__set_final(a, job, "rejected", fa_refusal_str(why));
        } else {
            fa__set_final(a, job, "failed", err == FA_ERR_TIMEOUT ? "download failed" : "flash write failed");
        }
        return;
    }
    char v[FA_ID_MAX + FA_VER_MAX + 8];
    int next = 1 - a->port->running_slot(a->port->ctx);
    if (fa__fits(snprintf(v, sizeof(v), "%s|%d|%s", job, next, a->ota.m.version), sizeof(v))) {
        a->port->kv_set(a->port->ctx, KV_PEND, v);
    }
    a->phase = FA_OTA_REBOOT_WAIT;
    a->reboot_msgid = fa__ota_status(a, job, "rebooting", 100, NULL);
    a->reboot_deadline_ms = fa__now_ms(a) + 3000;
}
