/* Shared by the cmocka tests: an in-memory flash with power cuts, a fake port, signed jobs. */
#ifndef TEST_SUPPORT_H
#define TEST_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fa_crypto.h"
#include "fleet_agent.h"
#include "hf_flash.h"

/* ---- flash in RAM: every erase or write is one step; at step `cut` the power goes ---- */
typedef struct {
    uint8_t *mem;
    long ops;
    long cut; /* -1: never */
    int dead;
} memflash_t;

static int mf_read(void *ctx, uint32_t off, void *buf, size_t len)
{
    memflash_t *m = ctx;
    if (m->dead || off + len > HF_FLASH_SIZE) {
        return -1;
    }
    memcpy(buf, m->mem + off, len);
    return 0;
}

static int mf_step(memflash_t *m)
{
    if (m->dead) {
        return -1;
    }
    if (m->cut >= 0 && m->ops >= m->cut) {
        m->dead = 1;
        return -1;
    }
    m->ops++;
    return 0;
}

static int mf_write(void *ctx, uint32_t off, const void *buf, size_t len)
{
    memflash_t *m = ctx;
    if (mf_step(m) || off + len > HF_FLASH_SIZE) {
        return -1;
    }
    /* NOR flash: writing only clears bits */
    for (size_t i = 0; i < len; i++) {
        m->mem[off + i] &= ((const uint8_t *)buf)[i];
    }
    return 0;
}

static int mf_erase(void *ctx, uint32_t off, size_t len)
{
    memflash_t *m = ctx;
    if (mf_step(m) || off + len > HF_FLASH_SIZE) {
        return -1;
    }
    memset(m->mem + off, 0xFF, len);
    return 0;
}

static inline void mf_init(memflash_t *m, hf_flash_t *f)
{
    if (m->mem == NULL) {
        m->mem = malloc(HF_FLASH_SIZE);
    }
    memset(m->mem, 0xFF, HF_FLASH_SIZE);
    m->ops = 0;
    m->cut = -1;
    m->dead = 0;
    f->ctx = m;
    f->read = mf_read;
    f->write = mf_write;
    f->erase = mf_erase;
}

/* Writes an image straight into a slot (the factory flashing). */
static inline int put_image(hf_flash_t *f, int slot, const char *version, uint32_t secver)
{
    static uint8_t img[8192];
    int n = hf_image_make(img, sizeof(img), version, secver, "test", HF_SELFTEST_OK, 4096);
    assert_true(n > 0);
    assert_int_equal(f->erase(f->ctx, hf_slot_off(slot), HF_SECTOR * 2), 0);
    return f->write(f->ctx, hf_slot_off(slot), img, (size_t)n);
}

/* ---- base64 and signed jobs ---- */
static inline void b64enc(const uint8_t *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[v >> 18];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

static inline void hex_of(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        sprintf(out + 2 * i, "%02x", in[i]);
    }
}

typedef struct {
    const char *job_id, *device_id, *hw, *version, *url;
    const char *sha_hex; /* NULL: 64 zeros */
    uint32_t size, secure_version;
    long long expires_at;
    const char *envelope_job_id; /* NULL: same as job_id */
    const char *kid;             /* NULL: "k1" */
} job_spec_t;

/* A job envelope signed with HMAC-SHA256 under key. Returns its length. */
static inline int make_job(char *out, size_t cap, const uint8_t *key, size_t key_len, const job_spec_t *s)
{
    char man[1024], b64m[1500], b64s[64];
    uint8_t mac[32];
    int n = snprintf(man, sizeof(man),
                     "{\"device_id\":\"%s\",\"job_id\":\"%s\",\"version\":\"%s\",\"hw\":\"%s\",\"url\":\"%s\","
                     "\"sha256\":\"%s\",\"size\":%u,\"secure_version\":%u,\"issued_at\":1700000000,"
                     "\"expires_at\":%lld}",
                     s->device_id, s->job_id, s->version, s->hw, s->url,
                     s->sha_hex ? s->sha_hex : "0000000000000000000000000000000000000000000000000000000000000000",
                     s->size, s->secure_version, s->expires_at);
    assert_int_equal(fa_hmac_sha256(key, key_len, man, (size_t)n, mac), 0);
    b64enc((const uint8_t *)man, (size_t)n, b64m);
    b64enc(mac, 32, b64s);
    return snprintf(out, cap, "{\"job_id\":\"%s\",\"rollout_id\":\"r1\",\"alg\":\"hmac-sha256\",\"kid\":\"%s\","
                    "\"manifest\":\"%s\",\"sig\":\"%s\"}",
                    s->envelope_job_id ? s->envelope_job_id : s->job_id, s->kid ? s->kid : "k1", b64m, b64s);
}

#endif
