/* OTA job parsing and verification: pure functions over the job message bytes. */
#ifndef FA_MANIFEST_H
#define FA_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleet_agent.h"

typedef enum {
    FA_REFUSE_NONE = 0,
    FA_REFUSE_MALFORMED,
    FA_REFUSE_ALG,
    FA_REFUSE_SIGNATURE,
    FA_REFUSE_JOB_ID,
    FA_REFUSE_DEVICE,
    FA_REFUSE_HW,
    FA_REFUSE_EXPIRED,
    FA_REFUSE_SECURE_VERSION,
    FA_REFUSE_SIZE,
    FA_REFUSE_SHA256,
    FA_REFUSE_IMAGE,
    FA_REFUSE_KEY_UNKNOWN,
    FA_REFUSE_KEY_RETIRED,
} fa_refusal_t;

#define FA_ID_MAX 65
#define FA_VER_MAX 33
#define FA_URL_MAX 1024 /* pre-signed S3 URLs are long */

typedef struct {
    char job_id[FA_ID_MAX];      /* from the job envelope (known even when the rest is refused) */
    char rollout_id[FA_ID_MAX];
    char device_id[FA_ID_MAX];
    char version[FA_VER_MAX];
    char hw[FA_VER_MAX];
    char url[FA_URL_MAX];
    uint8_t sha256[32];
    uint32_t size;
    uint32_t secure_version;
    int64_t issued_at;
    int64_t expires_at;
} fa_manifest_t;

#define FA_MAX_RETIRED 4

typedef struct {
    const char *device_id;
    const char *hw;
    uint32_t secure_version;
    int64_t now;
    const fa_key_t *keys;  /* the keys this device trusts, by kid */
    size_t nkeys;
    char (*retired)[FA_KID_MAX]; /* kids it no longer trusts: refused with their own reason */
    size_t nretired;
} fa_verify_ctx_t;

/* The first 32 + 256 bytes of an ESP-IDF app image: image header, first segment header,
 * then esp_app_desc_t. */
#define FA_APP_DESC_OFFSET 32
#define FA_APP_DESC_MAGIC 0xABCD5432u
#define FA_APP_HEAD_LEN (FA_APP_DESC_OFFSET + 256)

typedef struct {
    uint32_t secure_version;
    char version[33];
    char project_name[33];
} fa_app_desc_t;

const char *fa_refusal_str(fa_refusal_t r);
/* Parses and verifies a job message with the key its kid names; out->job_id is filled whenever
 * the envelope has one. */
fa_refusal_t fa_job_check(const char *job, size_t len, const fa_verify_ctx_t *v, fa_manifest_t *out);
/* Decodes standard base64; returns the decoded length or -1. */
int fa_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap);
/* Reads the app descriptor from an image head (FA_APP_HEAD_LEN bytes); false when the magic is wrong. */
bool fa_app_desc_parse(const uint8_t *head, size_t len, fa_app_desc_t *out);

#endif
