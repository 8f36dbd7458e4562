/* Shadow client: per-key handlers, delta application with version ordering, reports with seq. */
#ifndef FA_SHADOW_H
#define FA_SHADOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fa_json.h"
#include "fleet_agent.h"

#define FA_SH_MAX_KEYS 8
#define FA_SH_KEY_MAX 32
#define FA_SH_TOKS 256

typedef struct {
    char key[FA_SH_KEY_MAX];
    fa_shadow_handler_t fn;
    void *user;
} fa_sh_entry_t;

typedef struct {
    fa_sh_entry_t h[FA_SH_MAX_KEYS];
    int n;
    int64_t version;  /* the shadow version this device has applied */
    uint32_t stale;   /* deltas ignored because they were older than version */
    fj_tok_t toks[FA_SH_TOKS];
} fa_shadow_t;

void fa_shadow_init(fa_shadow_t *s);
fa_err_t fa_shadow_register(fa_shadow_t *s, const char *key, fa_shadow_handler_t fn, void *user);
/* An update/delta message. Applies its state through the handlers and writes the accepted part
 * as the members of a JSON object (without braces) into rep. Returns FA_OK,
 * FA_ERR_INVALID_VERSION for a delta older than the held version, FA_ERR_INVALID_ARG if malformed. */
fa_err_t fa_shadow_on_delta(fa_shadow_t *s, const char *msg, size_t len, char *rep, size_t cap);
/* A get/accepted document: applies desired (so state is restored after a reboot) and reports
 * the keys that were in the delta. */
fa_err_t fa_shadow_on_document(fa_shadow_t *s, const char *msg, size_t len, char *rep, size_t cap);
/* {"state":{"reported":{<rep>}},"seq":N,"clientToken":"..."} */
int fa_shadow_report(char *out, size_t cap, const char *rep, uint64_t seq);

#endif
