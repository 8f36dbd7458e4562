#include "fa_manifest.h"

#include <string.h>

#include "fa_crypto.h"
#include "fa_json.h"

#define JOB_TOKS 24
#define MAN_TOKS 32
#define MAN_MAX 2048
#define SIG_MAX 160

const char *fa_refusal_str(fa_refusal_t r)
{
    switch (r) {
    case FA_REFUSE_NONE: return "ok";
    case FA_REFUSE_MALFORMED: return "malformed job or manifest";
    case FA_REFUSE_ALG: return "unsupported or unconfigured signature algorithm";
    case FA_REFUSE_SIGNATURE: return "bad signature";
    case FA_REFUSE_JOB_ID: return "manifest job_id does not match the job";
    case FA_REFUSE_DEVICE: return "wrong device id";
    case FA_REFUSE_HW: return "wrong hardware";
    case FA_REFUSE_EXPIRED: return "expired";
    case FA_REFUSE_SECURE_VERSION: return "secure_version below the device's";
    case FA_REFUSE_SIZE: return "image size does not match the manifest";
    case FA_REFUSE_SHA256: return "sha256 mismatch";
    case FA_REFUSE_IMAGE: return "not a valid app image";
    case FA_REFUSE_KEY_UNKNOWN: return "unknown key id";
    case FA_REFUSE_KEY_RETIRED: return "signed with a retired key";
    }
    return "refused";
}

static int b64_val(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

int fa_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    while (len > 0 && in[len - 1] == '=') {
        len--;
    }
    if (len % 4 == 1) {
        return -1;
    }
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_val(in[i]);
        if (v < 0) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap) {
                return -1;
            }
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (int)o;
}

static bool hex32(const char *s, uint8_t out[32])
{
    for (int i = 0; i < 64; i++) {
        char c = s[i];
        int v;
        if (c >= '0' && c <= '9') {
            v = c - '0';
        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            v = (c | 0x20) - 'a' + 10;
        } else {
            return false;
        }
        if (i & 1) {
            out[i / 2] |= (uint8_t)v;
        } else {
            out[i / 2] = (uint8_t)(v << 4);
        }
    }
    return s[64] == '\0';
}

static bool get_str(const char *js, const fj_tok_t *t, int n, const char *key, char *out, size_t cap)
{
    int i = fj_get(js, t, n, 0, key);
    return i >= 0 && fj_str(js, &t[i], out, cap) && out[0] != '\0';
}

static bool get_u32(const char *js, const fj_tok_t *t, int n, const char *key, uint32_t *out)
{
    int64_t v;
    int i = fj_get(js, t, n, 0, key);
    if (i < 0 || !fj_i64(js, &t[i], &v) || v < 0 || v > 0xFFFFFFFFLL) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

static bool get_i64(const char *js, const fj_tok_t *t, int n, const char *key, int64_t *out)
{
    int i = fj_get(js, t, n, 0, key);
    return i >= 0 && fj_i64(js, &t[i], out);
}

/* Constant-time comparison, so timing does not leak how much of a MAC matched. */
static bool ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++) {
        d |= (uint8_t)(a[i] ^ b[i]);
    }
    return d == 0;
}

/* The key the job's kid names. A retired kid is refused as such even if a key still carries it. */
static const fa_key_t *find_key(const fa_verify_ctx_t *v, const char *kid, fa_refusal_t *why)
{
    for (size_t i = 0; i < v->nretired; i++) {
        if (strcmp(v->retired[i], kid) == 0) {
            *why = FA_REFUSE_KEY_RETIRED;
            return NULL;
        }
    }
    for (size_t i = 0; i < v->nkeys; i++) {
        if (v->keys[i].kid != NULL && strcmp(v->keys[i].kid, kid) == 0) {
            return &v->keys[i];
        }
    }
    *why = FA_REFUSE_KEY_UNKNOWN;
    return NULL;
}

static fa_refusal_t verify_sig(const char *alg, const uint8_t *man, size_t man_len, const uint8_t *sig,
                               size_t sig_len, const fa_key_t *v)
{
    uint8_t digest[32];
    if (strcmp(alg, "hmac-sha256") == 0) {
        if (v->hmac_key == NULL || v->hmac_key_len == 0) {
            return FA_REFUSE_ALG;
        }
        if (sig_len != 32 || fa_hmac_sha256(v->hmac_key, v->hmac_key_len, man, man_len, digest) != 0 ||
            !ct_equal(digest, sig, 32)) {
            return FA_REFUSE_SIGNATURE;
        }
        return FA_REFUSE_NONE;
    }
    if (strcmp(alg, "ecdsa-p256") == 0) {
        if (v->ecdsa_pub == NULL || v->ecdsa_pub_len == 0) {
            return FA_REFUSE_ALG;
        }
        fa_sha256_t *h = fa_sha256_start();
        if (h == NULL || fa_sha256_update(h, man, man_len) != 0 || fa_sha256_finish(h, digest) != 0) {
            return FA_REFUSE_SIGNATURE;
        }
        if (fa_ecdsa_p256_verify(v->ecdsa_pub, v->ecdsa_pub_len, digest, sig, sig_len) != 0) {
            return FA_REFUSE_SIGNATURE;
        }
        return FA_REFUSE_NONE;
    }
    return FA_REFUSE_ALG;
}

fa_refusal_t fa_job_check(const char *job, size_t len, const fa_verify_ctx_t *v, fa_manifest_t *out)
{
    fj_tok_t t[JOB_TOKS > MAN_TOKS ? JOB_TOKS : MAN_TOKS];
    static const size_t b64_cap = (MAN_MAX + 2) / 3 * 4 + 4;
    char b64[(MAN_MAX + 2) / 3 * 4 + 4];
    uint8_t man[MAN_MAX + 1];
    uint8_t sig[SIG_MAX];
    char alg[16];
    char kid[FA_KID_MAX];
    char sig_b64[(SIG_MAX + 2) / 3 * 4 + 4];

    memset(out, 0, sizeof(*out));
    int n = fj_parse(job, len, t, JOB_TOKS);
    if (n < 1 || t[0].type != FJ_OBJ) {
        return FA_REFUSE_MALFORMED;
    }
    int i = fj_get(job, t, n, 0, "job_id");
    if (i < 0 || !fj_str(job, &t[i], out->job_id, sizeof(out->job_id)) || out->job_id[0] == '\0') {
        return FA_REFUSE_MALFORMED;
    }
    (void)get_str(job, t, n, "rollout_id", out->rollout_id, sizeof(out->rollout_id));
    if (!get_str(job, t, n, "alg", alg, sizeof(alg)) || !get_str(job, t, n, "kid", kid, sizeof(kid)) ||
        !get_str(job, t, n, "manifest", b64, b64_cap) ||
        !get_str(job, t, n, "sig", sig_b64, sizeof(sig_b64))) {
        return FA_REFUSE_MALFORMED;
    }
    int man_len = fa_b64_decode(b64, strlen(b64), man, MAN_MAX);
    int sig_len = fa_b64_decode(sig_b64, strlen(sig_b64), sig, sizeof(sig));
    if (man_len <= 0 || sig_len <= 0) {
        return FA_REFUSE_MALFORMED;
    }
    /* Nothing in the manifest is trusted before its signature checks out. */
    fa_refusal_t r = FA_REFUSE_NONE;
    const fa_key_t *key = find_key(v, kid, &r);
    if (key == NULL) {
        return r;
    }
    r = verify_sig(alg, man, (size_t)man_len, sig, (size_t)sig_len, key);
    if (r != FA_REFUSE_NONE) {
        return r;
    }
    const char *js = (const char *)man;
    n = fj_parse(js, (size_t)man_len, t, MAN_TOKS);
    char job_id[FA_ID_MAX];
    char sha_hex[66];
    if (n < 1 || t[0].type != FJ_OBJ || !get_str(js, t, n, "job_id", job_id, sizeof(job_id)) ||
        !get_str(js, t, n, "device_id", out->device_id, sizeof(out->device_id)) ||
        !get_str(js, t, n, "version", out->version, sizeof(out->version)) ||
        !get_str(js, t, n, "hw", out->hw, sizeof(out->hw)) ||
        !get_str(js, t, n, "url", out->url, sizeof(out->url)) ||
        !get_str(js, t, n, "sha256", sha_hex, sizeof(sha_hex)) || !hex32(sha_hex, out->sha256) ||
        !get_u32(js, t, n, "size", &out->size) || out->size == 0 ||
        !get_u32(js, t, n, "secure_version", &out->secure_version) ||
        !get_i64(js, t, n, "expires_at", &out->expires_at)) {
        return FA_REFUSE_MALFORMED;
    }
    (void)get_i64(js, t, n, "issued_at", &out->issued_at);
    if (strcmp(job_id, out->job_id) != 0) {
        return FA_REFUSE_JOB_ID;
    }
    if (strcmp(out->device_id, v->device_id) != 0) {
        return FA_REFUSE_DEVICE;
    }
    if (strcmp(out->hw, v->hw) != 0) {
        return FA_REFUSE_HW;
    }
    if (out->expires_at <= v->now) {
        return FA_REFUSE_EXPIRED;
    }
    if (out->secure_version < v->secure_version) {
        return FA_REFUSE_SECURE_VERSION;
    }
    return FA_REFUSE_NONE;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

bool fa_app_desc_parse(const uint8_t *head, size_t len, fa_app_desc_t *out)
{
    /* esp_image_header_t starts with magic 0xE9; esp_app_desc_t: magic_word, secure_version,
     * reserv1[2], version[32], project_name[32], ... */
    if (len < FA_APP_HEAD_LEN || head[0] != 0xE9) {
        return false;
    }
    const uint8_t *d = head + FA_APP_DESC_OFFSET;
    if (le32(d) != FA_APP_DESC_MAGIC) {
        return false;
    }
    out->secure_version = le32(d + 4);
    memcpy(out->version, d + 16, 32);
    out->version[32] = '\0';
    memcpy(out->project_name, d + 48, 32);
    out->project_name[32] = '\0';
    return true;
}
