#include "fa_ota.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The resume point: "job_id|sha256|size|offset|state". The image's sha256 is part of the key so a
 * job id reused for another image never continues a stranger's bytes. */
#define RES_MAX (FA_ID_MAX + 65 + 12 + 12 + FA_HASH_STATE_HEX + 8)

static void sha_hex(const uint8_t sha[32], char out[65])
{
    static const char d[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = d[sha[i] >> 4];
        out[2 * i + 1] = d[sha[i] & 15];
    }
    out[64] = '\0';
}

static void save_point(fa_ota_t *o)
{
    char rec[RES_MAX], sh[65], st[FA_HASH_STATE_HEX + 1];
    sha_hex(o->m.sha256, sh);
    if (!fa_hash_save(&o->hash, st)) {
        return;
    }
    int n = snprintf(rec, sizeof(rec), "%s|%s|%lu|%lu|%s", o->m.job_id, sh, (unsigned long)o->m.size,
                     (unsigned long)o->written, st);
    if (n > 0 && (size_t)n < sizeof(rec)) {
        (void)o->port->kv_set(o->port->ctx, FA_KV_RESUME, rec); /* best effort: without it, a reboot starts over */
    }
}

/* The offset a stored resume point for this job allows (restoring the hash), or 0. */
static uint32_t load_point(fa_ota_t *o)
{
    char rec[RES_MAX], want[FA_ID_MAX + 70], sh[65];
    const fa_port_t *p = o->port;
    if (p->ota_resume == NULL || p->kv_get(p->ctx, FA_KV_RESUME, rec, sizeof(rec)) != FA_OK) {
        return 0;
    }
    sha_hex(o->m.sha256, sh);
    int n = snprintf(want, sizeof(want), "%s|%s|%lu|", o->m.job_id, sh, (unsigned long)o->m.size);
    if (n <= 0 || (size_t)n >= sizeof(want) || strncmp(rec, want, (size_t)n) != 0) {
        return 0;
    }
    char *end = NULL;
    unsigned long off = strtoul(rec + n, &end, 10);
    if (end == NULL || *end != '|' || off == 0 || off >= o->m.size || off % FA_OTA_SAVE_EVERY != 0 ||
        !fa_hash_load(&o->hash, end + 1, off)) {
        return 0;
    }
    return (uint32_t)off;
}

fa_err_t fa_ota_begin(fa_ota_t *o, const fa_port_t *port, const fa_manifest_t *m, uint32_t own_secure_version)
{
    if (o->state != FA_OTA_STATE_IDLE) {
        return FA_ERR_INVALID_STATE;
    }
    memset(o, 0, offsetof(fa_ota_t, head));
    o->port = port;
    o->m = *m;
    o->own_secure_version = own_secure_version;
    uint32_t off = load_point(o);
    fa_err_t err = FA_FAIL;
    if (off > 0) {
        err = port->ota_resume(port->ctx, m->size, off);
    }
    if (err == FA_OK) {
        o->written = o->resumed_from = off; /* the app header was checked before that point was kept */
    } else {
        fa_hash_init(&o->hash);
        o->written = o->resumed_from = 0;
        err = port->ota_begin(port->ctx, m->size);
        if (err != FA_OK) {
            return err;
        }
    }
    o->next_save = o->written + FA_OTA_SAVE_EVERY;
    o->state = FA_OTA_STATE_BEGUN;
    return FA_OK;
}

static void close_http(fa_ota_t *o)
{
    if (o->state == FA_OTA_STATE_STREAMING) {
        o->port->http_close(o->port->ctx);
        o->state = FA_OTA_STATE_BEGUN;
    }
}

/* A broken connection is retried from where it broke (Range: bytes=written-). */
static fa_err_t broken(fa_ota_t *o)
{
    close_http(o);
    if (++o->retries > FA_OTA_MAX_RETRIES) {
        return FA_ERR_OTA_DOWNLOAD;
    }
    return FA_ERR_OTA_IN_PROGRESS;
}

static fa_err_t refuse(fa_ota_t *o, fa_refusal_t r, fa_refusal_t *why)
{
    close_http(o);
    *why = r;
    return FA_ERR_OTA_REFUSED;
}

/* The image header is checked as soon as it is in: the bootloader's anti-rollback would refuse an
 * image below the device's secure_version, so there is no point downloading the rest. */
static bool head_ok(fa_ota_t *o)
{
    fa_app_desc_t desc;
    return fa_app_desc_parse(o->head, FA_APP_HEAD_LEN, &desc) && desc.secure_version >= o->own_secure_version;
}

fa_err_t fa_ota_perform(fa_ota_t *o, fa_refusal_t *why)
{
    const fa_port_t *p = o->port;
    *why = FA_REFUSE_NONE;
    if (o->state == FA_OTA_STATE_WRITTEN) {
        return FA_OK;
    }
    if (o->state == FA_OTA_STATE_IDLE) {
        return FA_ERR_INVALID_STATE;
    }
    if (o->state == FA_OTA_STATE_BEGUN) {
        uint32_t len = 0;
        if (p->http_open(p->ctx, o->m.url, o->written, &len) != FA_OK) {
            return broken(o);
        }
        o->state = FA_OTA_STATE_STREAMING;
        if (len != 0 && len != o->m.size - o->written) {
            return refuse(o, FA_REFUSE_SIZE, why);
        }
    }
    /* Reads stop at the next save point, so a resume point always sits on a hash block boundary. */
    uint32_t want = o->m.size - o->written;
    if (want > sizeof(o->buf)) {
        want = sizeof(o->buf);
    }
    if (want > o->next_save - o->written) {
        want = o->next_save - o->written;
    }
    int n = p->http_read(p->ctx, o->buf, want);
    if (n <= 0) {
        return broken(o); /* error, or the body ended early */
    }
    if (o->written < FA_APP_HEAD_LEN) {
        uint32_t k = FA_APP_HEAD_LEN - o->written;
        memcpy(o->head + o->written, o->buf, (uint32_t)n < k ? (uint32_t)n : k);
        if (o->written + (uint32_t)n >= FA_APP_HEAD_LEN && !head_ok(o)) {
            return refuse(o, FA_REFUSE_IMAGE, why);
        }
    }
    fa_hash_update(&o->hash, o->buf, (size_t)n);
    fa_err_t err = p->ota_write(p->ctx, o->buf, (size_t)n);
    if (err != FA_OK) {
        return err;
    }
    o->written += (uint32_t)n;
    if (o->written == o->m.size) {
        /* The server must not have more than the manifest says. */
        int extra = p->http_read(p->ctx, o->buf, 1);
        close_http(o);
        if (extra > 0) {
            return refuse(o, FA_REFUSE_SIZE, why);
        }
        o->state = FA_OTA_STATE_WRITTEN;
        return FA_OK;
    }
    if (o->written == o->next_save) {
        save_point(o);
        o->next_save += FA_OTA_SAVE_EVERY;
    }
    return FA_ERR_OTA_IN_PROGRESS;
}

fa_err_t fa_ota_finish(fa_ota_t *o, fa_refusal_t *why)
{
    uint8_t digest[32];
    *why = FA_REFUSE_NONE;
    if (o->state != FA_OTA_STATE_WRITTEN) {
        return FA_ERR_INVALID_STATE;
    }
    fa_hash_final(&o->hash, digest);
    if (memcmp(digest, o->m.sha256, 32) != 0) {
        fa_ota_abort(o);
        *why = FA_REFUSE_SHA256;
        return FA_ERR_OTA_REFUSED;
    }
    o->state = FA_OTA_STATE_IDLE; /* the port closes the slot in ota_end, whatever it answers */
    fa_ota_forget(o->port);
    if (o->port->ota_end(o->port->ctx) != FA_OK) {
        *why = FA_REFUSE_IMAGE;
        return FA_ERR_OTA_REFUSED;
    }
    return o->port->ota_set_boot(o->port->ctx);
}

fa_err_t fa_ota_abort(fa_ota_t *o)
{
    if (o->state == FA_OTA_STATE_IDLE) {
        return FA_ERR_INVALID_STATE;
    }
    close_http(o);
    o->port->ota_abort(o->port->ctx);
    o->state = FA_OTA_STATE_IDLE;
    return FA_OK;
}

fa_err_t fa_ota_forget(const fa_port_t *port)
{
    return port->kv_erase(port->ctx, FA_KV_RESUME);
}

int fa_ota_progress(const fa_ota_t *o)
{
    return o->m.size ? (int)((uint64_t)o->written * 100 / o->m.size) : 0;
}
