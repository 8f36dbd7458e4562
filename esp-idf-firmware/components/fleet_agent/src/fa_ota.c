#include "fa_ota.h"

#include <string.h>

fa_err_t fa_ota_begin(fa_ota_t *o, const fa_port_t *port, const fa_manifest_t *m)
{
    memset(o, 0, offsetof(fa_ota_t, head));
    o->port = port;
    o->m = *m;
    o->sha = fa_sha256_start();
    if (o->sha == NULL) {
        return FA_ERR_NO_MEM;
    }
    fa_err_t err = port->ota_begin(port->ctx, m->size);
    if (err != FA_OK) {
        fa_sha256_finish(o->sha, NULL);
        o->sha = NULL;
        return err;
    }
    o->begun = true;
    return FA_OK;
}

static void close_http(fa_ota_t *o)
{
    if (o->open) {
        o->port->http_close(o->port->ctx);
        o->open = false;
    }
}

/* A broken connection is retried from where it broke (Range: bytes=written-). */
static fa_err_t broken(fa_ota_t *o)
{
    close_http(o);
    if (++o->retries > FA_OTA_MAX_RETRIES) {
        return FA_ERR_TIMEOUT;
    }
    return FA_OTA_IN_PROGRESS;
}

fa_err_t fa_ota_perform(fa_ota_t *o, fa_refusal_t *why)
{
    const fa_port_t *p = o->port;
    *why = FA_REFUSE_NONE;
    if (!o->begun) {
        return FA_ERR_INVALID_STATE;
    }
    if (o->written == o->m.size) {
        return FA_OK;
    }
    if (!o->open) {
        uint32_t len = 0;
        if (p->http_open(p->ctx, o->m.url, o->written, &len) != FA_OK) {
            return broken(o);
        }
        o->open = true;
        if (len != 0 && len != o->m.size - o->written) {
            close_http(o);
            *why = FA_REFUSE_SIZE;
            return FA_ERR_INVALID_SIZE;
        }
    }
    uint32_t want = o->m.size - o->written;
    if (want > sizeof(o->buf)) {
        want = sizeof(o->buf);
    }
    int n = p->http_read(p->ctx, o->buf, want);
    if (n <= 0) {
        return broken(o); /* error, or the body ended early */
    }
    if (o->written < FA_APP_HEAD_LEN) {
        uint32_t k = FA_APP_HEAD_LEN - o->written;
        memcpy(o->head + o->written, o->buf, (uint32_t)n < k ? (uint32_t)n : k);
    }
    if (fa_sha256_update(o->sha, o->buf, (size_t)n) != FA_OK) {
        return FA_FAIL;
    }
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
            *why = FA_REFUSE_SIZE;
            return FA_ERR_INVALID_SIZE;
        }
        return FA_OK;
    }
    return FA_OTA_IN_PROGRESS;
}

fa_err_t fa_ota_finish(fa_ota_t *o, uint32_t own_secure_version, fa_refusal_t *why)
{
    uint8_t digest[32];
    fa_app_desc_t desc;
    *why = FA_REFUSE_NONE;
    if (!o->begun || o->written != o->m.size) {
        return FA_ERR_INVALID_STATE;
    }
    fa_err_t err = fa_sha256_finish(o->sha, digest);
    o->sha = NULL;
    if (err != FA_OK) {
        return err;
    }
    if (memcmp(digest, o->m.sha256, 32) != 0) {
        *why = FA_REFUSE_SHA256;
        fa_ota_abort(o);
        return FA_ERR_OTA_VALIDATE_FAILED;
    }
    /* The bootloader's anti-rollback would refuse an image below the device's secure_version. */
    if (!fa_app_desc_parse(o->head, o->written, &desc) || desc.secure_version < own_secure_version) {
        *why = FA_REFUSE_IMAGE;
        fa_ota_abort(o);
        return FA_ERR_OTA_VALIDATE_FAILED;
    }
    o->begun = false;
    err = o->port->ota_end(o->port->ctx);
    if (err != FA_OK) {
        *why = FA_REFUSE_IMAGE;
        return err;
    }
    return o->port->ota_set_boot(o->port->ctx);
}

void fa_ota_abort(fa_ota_t *o)
{
    close_http(o);
    if (o->sha != NULL) {
        fa_sha256_finish(o->sha, NULL);
        o->sha = NULL;
    }
    if (o->begun) {
        o->port->ota_abort(o->port->ctx);
        o->begun = false;
    }
}

int fa_ota_progress(const fa_ota_t *o)
{
    return o->m.size ? (int)((uint64_t)o->written * 100 / o->m.size) : 0;
}
