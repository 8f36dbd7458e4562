/* Streaming an image into the inactive slot, esp_https_ota style: begin / perform / finish / abort
 * over an explicit handle state. Hashes as it goes, resumes a broken connection with an HTTP Range
 * request, and every FA_OTA_SAVE_EVERY bytes keeps a resume point (offset and running SHA-256
 * state) in the key-value store, so a download cut by a reboot goes on from there. */
#ifndef FA_OTA_H
#define FA_OTA_H

#include <stdbool.h>
#include <stdint.h>

#include "fa_hash.h"
#include "fa_manifest.h"
#include "fa_port.h"

#define FA_OTA_MAX_RETRIES 5
#define FA_OTA_CHUNK 2048
#define FA_OTA_SAVE_EVERY (16u * 1024u) /* a multiple of 64 (the hash block) and of the flash page */
#define FA_KV_RESUME "ota_res"          /* "job_id|sha256 hex|size|offset|hash state hex" */

typedef enum {
    FA_OTA_STATE_IDLE = 0,  /* nothing held; begin() next */
    FA_OTA_STATE_BEGUN,     /* the slot is open, no connection (before the first request, after a break) */
    FA_OTA_STATE_STREAMING, /* the slot and the connection are open */
    FA_OTA_STATE_WRITTEN,   /* every byte written and hashed, the connection closed; finish() next */
} fa_ota_state_t;

typedef struct {
    const fa_port_t *port;
    fa_manifest_t m;
    fa_ota_state_t state;
    fa_hash_t hash;
    uint32_t written;
    uint32_t resumed_from;  /* the offset a reboot-cut download went on from, 0 if it started afresh */
    uint32_t retries;
    uint32_t own_secure_version;
    uint32_t next_save;     /* where the next resume point is kept */
    uint8_t head[FA_APP_HEAD_LEN];
    uint8_t buf[FA_OTA_CHUNK];
} fa_ota_t;

/**
 * Opens the inactive slot for m. When the store holds a resume point for this job and image (and
 * the port can resume), reopens the slot keeping the bytes already written and restores the hash.
 * @return FA_OK; FA_ERR_INVALID_STATE if o is not idle; the port's error when the slot cannot be
 *         opened (FA_ERR_INVALID_SIZE, FA_ERR_NOT_FOUND, ...).
 */
fa_err_t fa_ota_begin(fa_ota_t *o, const fa_port_t *port, const fa_manifest_t *m, uint32_t own_secure_version);
/**
 * Moves the download on by one chunk (opening the connection first if needed).
 * @return FA_ERR_OTA_IN_PROGRESS while bytes remain; FA_OK once all m.size bytes are written;
 *         FA_ERR_OTA_REFUSED with *why set (the server's size differs, the app header is not a valid
 *         image or its secure_version is below the device's); FA_ERR_OTA_DOWNLOAD after more than
 *         FA_OTA_MAX_RETRIES broken connections; FA_ERR_INVALID_STATE if not begun; the port's
 *         error for a failed flash write.
 */
fa_err_t fa_ota_perform(fa_ota_t *o, fa_refusal_t *why);
/**
 * Checks the SHA-256 against the manifest, closes and validates the slot, sets it to boot next and
 * drops the resume point. The handle is idle afterwards, whatever the outcome.
 * @return FA_OK; FA_ERR_OTA_REFUSED with *why = FA_REFUSE_SHA256 or FA_REFUSE_IMAGE;
 *         FA_ERR_INVALID_STATE unless perform() returned FA_OK; the port's error from set_boot.
 */
fa_err_t fa_ota_finish(fa_ota_t *o, fa_refusal_t *why);
/**
 * Closes the connection and releases the slot. The resume point stays: a job that failed for good
 * is dropped by fa_ota_forget().
 * @return FA_OK; FA_ERR_INVALID_STATE if nothing was begun.
 */
fa_err_t fa_ota_abort(fa_ota_t *o);
/**
 * Drops the resume point from the store.
 * @return the port's kv_erase result (FA_OK when there was none).
 */
fa_err_t fa_ota_forget(const fa_port_t *port);
/** @return the share of the image written, 0..100. */
int fa_ota_progress(const fa_ota_t *o);

#endif
