/* The agent's OTA half (see fa_agent_ota.h). */
#include "fa_agent_ota.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa_json.h"

#define KV_PEND "ota_pend"  /* "job_id|slot|version" of an image set to boot on trial */
#define KV_DONE "ota_done"  /* the last job that reached a final state */

static void jlog(fa_jobs_t *j, fa_log_level_t lvl, const char *fmt, const char *arg)
{
    char line[160];
    if (j->io.log && snprintf(line, sizeof(line), fmt, arg ? arg : "") >= 0) {
        j->io.log(j->io.ctx, lvl, line);
    }
}

static int64_t now_ms(const fa_jobs_t *j)
{
    return j->port->uptime_ms(j->port->ctx);
}

static const char *esc(char *buf, size_t cap, const char *s)
{
    return fj_escape(buf, cap, s) < 0 ? "" : buf;
}

static int status(fa_jobs_t *j, const char *job, const char *state, int progress, const char *err)
{
    char ej[2 * FA_ID_MAX], ee[200], ef[2 * FA_VER_MAX], pr[24] = "", er[220] = "";
    if (progress >= 0) {
        snprintf(pr, sizeof(pr), ",\"progress\":%d", progress);
    }
    if (err && snprintf(er, sizeof(er), ",\"error\":\"%s\"", esc(ee, sizeof(ee), err)) >= (int)sizeof(er)) {
        er[0] = '\0';
    }
    int n = snprintf(j->payload, sizeof(j->payload), "{\"job_id\":\"%s\",\"state\":\"%s\",\"fw\":\"%s\"%s%s,\"ts\":%lld}",
                     esc(ej, sizeof(ej), job), state, esc(ef, sizeof(ef), j->fw_version), pr, er,
                     (long long)j->port->now_s(j->port->ctx));
    if (n < 0 || (size_t)n >= sizeof(j->payload)) {
        return -1; /* never a cut JSON document */
    }
    return j->io.publish_status(j->io.ctx, j->payload);
}

/* A job reached a final state: reported until acknowledged. */
static void set_final(fa_jobs_t *j, const char *job, const char *state, const char *err)
{
    j->final_pending = true;
    j->final_msgid = -1;
    if (job != j->final_job) {
        snprintf(j->final_job, sizeof(j->final_job), "%s", job);
    }
    snprintf(j->final_state, sizeof(j->final_state), "%s", state);
    snprintf(j->final_error, sizeof(j->final_error), "%s", err ? err : "");
    j->final_msgid = status(j, job, state, -1, err);
}

static bool read_pending(fa_jobs_t *j, char *job, int *slot, char *version)
{
    char v[FA_ID_MAX + FA_VER_MAX + 8];
    if (j->port->kv_get(j->port->ctx, KV_PEND, v, sizeof(v)) != FA_OK) {
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

void fa_jobs_init(fa_jobs_t *j, const fa_config_t *cfg, const fa_jobs_io_t *io)
{
    memset(j, 0, sizeof(*j));
    j->port = cfg->port;
    j->io = *io;
    j->fw_version = cfg->fw_version;
    j->secure_version = cfg->secure_version;
    j->confirm_timeout_s = cfg->confirm_timeout_s ? cfg->confirm_timeout_s : 60;
    j->verify.device_id = cfg->device_id;
    j->verify.hw = cfg->hw;
    j->verify.secure_version = cfg->secure_version;
    j->verify.keys = j->keys;
    j->verify.retired = j->retired;
    j->final_msgid = j->reboot_msgid = -1;
    if (cfg->hmac_key || cfg->ecdsa_pub) {
        fa_key_t k = { cfg->kid ? cfg->kid : "k1", cfg->hmac_key, cfg->hmac_key_len, cfg->ecdsa_pub, cfg->ecdsa_pub_len };
        (void)fa_jobs_add_key(j, &k);
    }
    char job[FA_ID_MAX], version[FA_VER_MAX];
    int slot = -1;
    bool pend = read_pending(j, job, &slot, version);
    if (j->port->running_state(j->port->ctx) == FA_IMG_PENDING_VERIFY) {
        /* First boot of a new image: confirmed only by a heartbeat acknowledged in time. */
        j->trial = true;
        j->confirm_deadline_ms = now_ms(j) + (int64_t)j->confirm_timeout_s * 1000;
        snprintf(j->final_job, sizeof(j->final_job), "%s", pend ? job : "");
        jlog(j, FA_LOG_INFO, "trial boot of %s: waiting for a heartbeat ack", cfg->fw_version);
    } else if (pend) {
        if (slot == j->port->running_slot(j->port->ctx) && strcmp(version, cfg->fw_version) == 0) {
            set_final(j, job, "succeeded", NULL); /* confirmed, but the report was cut off */
        } else {
            set_final(j, job, "rolled_back", "the new image did not confirm; the previous slot booted");
            jlog(j, FA_LOG_WARN, "rolled back from job %s", job);
        }
    }
}

fa_err_t fa_jobs_add_key(fa_jobs_t *j, const fa_key_t *key)
{
    if (key == NULL || key->kid == NULL || key->kid[0] == '\0' || strlen(key->kid) >= FA_KID_MAX ||
        (key->hmac_key == NULL && key->ecdsa_pub == NULL)) {
        return FA_ERR_INVALID_ARG;
    }
    for (size_t i = 0; i < j->verify.nkeys; i++) {
        if (strcmp(j->keys[i].kid, key->kid) == 0) {
            j->keys[i] = *key; /* the same kid again: the newer material */
            return FA_OK;
        }
    }
    if (j->verify.nkeys >= FA_MAX_KEYS) {
        return FA_ERR_NO_MEM;
    }
    j->keys[j->verify.nkeys++] = *key;
    return FA_OK;
}

fa_err_t fa_jobs_retire_key(fa_jobs_t *j, const char *kid)
{
    if (kid == NULL || kid[0] == '\0' || strlen(kid) >= FA_KID_MAX) {
        return FA_ERR_INVALID_ARG;
    }
    if (j->verify.nretired >= FA_MAX_RETIRED) {
        return FA_ERR_NO_MEM;
    }
    memcpy(j->retired[j->verify.nretired++], kid, strlen(kid) + 1);
    return FA_OK;
}

void fa_jobs_connected(fa_jobs_t *j)
{
    if (j->final_pending) {
        j->final_msgid = status(j, j->final_job, j->final_state, -1, j->final_error[0] ? j->final_error : NULL);
    }
}

static bool job_seen(fa_jobs_t *j, const char *job)
{
    char done[FA_ID_MAX];
    if (j->port->kv_get(j->port->ctx, KV_DONE, done, sizeof(done)) == FA_OK && strcmp(done, job) == 0) {
        return true;
    }
    if ((j->final_pending || j->trial) && strcmp(j->final_job, job) == 0) {
        return true;
    }
    return j->phase != FA_JOB_IDLE && strcmp(j->ota.m.job_id, job) == 0;
}

void fa_jobs_on_job(fa_jobs_t *j, const char *data, size_t len)
{
    fa_manifest_t m;
    if (len == 0) {
        return; /* withdrawn */
    }
    j->verify.now = j->port->now_s(j->port->ctx);
    fa_refusal_t why = fa_job_check(data, len, &j->verify, &m);
    if (m.job_id[0] != '\0' && job_seen(j, m.job_id)) {
        return; /* a retained job this device already finished or is finishing */
    }
    if (j->trial || j->phase != FA_JOB_IDLE) {
        return; /* busy: the job is retained and comes back after the reboot */
    }
    if (why != FA_REFUSE_NONE) {
        jlog(j, FA_LOG_WARN, "job refused: %s", fa_refusal_str(why));
        set_final(j, m.job_id, "rejected", fa_refusal_str(why));
        return;
    }
    if (strcmp(m.version, j->fw_version) == 0) {
        set_final(j, m.job_id, "succeeded", NULL);
        return;
    }
    if (fa_ota_begin(&j->ota, j->port, &m, j->secure_version) != FA_OK) {
        set_final(j, m.job_id, "failed", "cannot open the update slot");
        return;
    }
    if (j->ota.resumed_from > 0) {
        char at[16];
        snprintf(at, sizeof(at), "%lu", (unsigned long)j->ota.resumed_from);
        jlog(j, FA_LOG_INFO, "resuming the download at byte %s", at);
    }
    jlog(j, FA_LOG_INFO, "downloading %s", m.version);
    j->phase = FA_JOB_DOWNLOADING;
    j->last_pct = fa_ota_progress(&j->ota);
    status(j, m.job_id, "downloading", j->last_pct, NULL);
}

static void download(fa_jobs_t *j)
{
    fa_refusal_t why = FA_REFUSE_NONE;
    fa_err_t err = FA_ERR_OTA_IN_PROGRESS;
    for (int i = 0; i < 8 && err == FA_ERR_OTA_IN_PROGRESS; i++) {
        err = fa_ota_perform(&j->ota, &why);
    }
    int pct = fa_ota_progress(&j->ota);
    if (err == FA_ERR_OTA_IN_PROGRESS) {
        if (pct / 10 > j->last_pct / 10) {
            j->last_pct = pct;
            status(j, j->ota.m.job_id, "downloading", pct, NULL);
        }
        return;
    }
    const char *job = j->ota.m.job_id;
    if (err == FA_OK) {
        status(j, job, "verifying", 100, NULL);
        err = fa_ota_finish(&j->ota, &why);
    }
    if (err != FA_OK) {
        (void)fa_ota_abort(&j->ota);
        (void)fa_ota_forget(j->port); /* failed for good: a retry starts afresh */
        j->phase = FA_JOB_IDLE;
        if (err == FA_ERR_OTA_REFUSED) {
            set_final(j, job, "rejected", fa_refusal_str(why));
        } else {
            set_final(j, job, "failed", err == FA_ERR_OTA_DOWNLOAD ? "download failed" : "flash write failed");
        }
        return;
    }
    char v[FA_ID_MAX + FA_VER_MAX + 8];
    int next = 1 - j->port->running_slot(j->port->ctx);
    int n = snprintf(v, sizeof(v), "%s|%d|%s", job, next, j->ota.m.version);
    if (n > 0 && (size_t)n < sizeof(v)) {
        j->port->kv_set(j->port->ctx, KV_PEND, v);
    }
    j->phase = FA_JOB_REBOOT_WAIT;
    j->reboot_msgid = status(j, job, "rebooting", 100, NULL);
    j->reboot_deadline_ms = now_ms(j) + 3000;
}

void fa_jobs_published(fa_jobs_t *j, int msg_id)
{
    if (j->final_pending && msg_id == j->final_msgid) {
        j->port->kv_set(j->port->ctx, KV_DONE, j->final_job);
        j->port->kv_erase(j->port->ctx, KV_PEND);
        j->final_pending = false;
    }
    if (j->phase == FA_JOB_REBOOT_WAIT && msg_id == j->reboot_msgid) {
        j->reboot_deadline_ms = 0; /* acknowledged: reboot now */
    }
}

void fa_jobs_heartbeat_acked(fa_jobs_t *j)
{
    if (j->trial && j->port->mark_valid(j->port->ctx) == FA_OK) {
        j->trial = false;
        jlog(j, FA_LOG_INFO, "image %s confirmed", j->fw_version);
        if (j->final_job[0]) {
            set_final(j, j->final_job, "succeeded", NULL);
        }
    }
}

bool fa_jobs_tick(fa_jobs_t *j, int64_t ms)
{
    if (j->trial && ms >= j->confirm_deadline_ms) {
        jlog(j, FA_LOG_ERROR, "no heartbeat ack within the confirm timeout: rolling back%s", NULL);
        j->port->mark_invalid_and_reboot(j->port->ctx);
        return false;
    }
    if (j->phase == FA_JOB_DOWNLOADING) {
        download(j);
    } else if (j->phase == FA_JOB_REBOOT_WAIT && ms >= j->reboot_deadline_ms) {
        jlog(j, FA_LOG_INFO, "rebooting into the new image%s", NULL);
        j->port->reboot(j->port->ctx);
        return false;
    }
    return true;
}

void fa_jobs_release(fa_jobs_t *j)
{
    (void)fa_ota_abort(&j->ota);
}
