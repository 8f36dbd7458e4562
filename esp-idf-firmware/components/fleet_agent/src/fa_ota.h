/* Streaming an image into the inactive slot, esp_https_ota style: begin / perform / finish / abort.
 * Hashes as it goes and resumes a broken download with an HTTP Range request. */
#ifndef FA_OTA_H
#define FA_OTA_H

#include <stdbool.h>
#include <stdint.h>

#include "fa_crypto.h"
#include "fa_manifest.h"
#include "fa_port.h"

#define FA_OTA_IN_PROGRESS 1 /* perform(): call again */
#define FA_OTA_MAX_RETRIES 5
#define FA_OTA_CHUNK 2048

typedef struct {
    const fa_port_t *port;
    fa_manifest_t m;
    fa_sha256_t *sha;
    uint32_t written;
    uint32_t retries;
    bool begun;
    bool open;
    uint8_t head[FA_APP_HEAD_LEN];
    uint8_t buf[FA_OTA_CHUNK];
} fa_ota_t;

fa_err_t fa_ota_begin(fa_ota_t *o, const fa_port_t *port, const fa_manifest_t *m);
/* FA_OTA_IN_PROGRESS while bytes remain, FA_OK once all size bytes are written, or an error
 * (with *why set when the job must be refused rather than failed). */
fa_err_t fa_ota_perform(fa_ota_t *o, fa_refusal_t *why);
/* Checks sha256 and the app descriptor, closes the slot and sets it to boot next. */
fa_err_t fa_ota_finish(fa_ota_t *o, uint32_t own_secure_version, fa_refusal_t *why);
void fa_ota_abort(fa_ota_t *o);
int fa_ota_progress(const fa_ota_t *o);

#endif
