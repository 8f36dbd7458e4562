/* SHA-256 of a streamed image, in plain C so its running state can be saved and restored: a
 * download cut by a reboot resumes hashing where it stopped (mbedTLS, and ESP-IDF's hardware SHA
 * behind it, keep that state private). */
#ifndef FA_HASH_H
#define FA_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t len;     /* bytes hashed */
    uint8_t block[64];
} fa_hash_t;

#define FA_HASH_STATE_HEX 64 /* the saved state: h[0..7], big-endian, as hex */

void fa_hash_init(fa_hash_t *s);
void fa_hash_update(fa_hash_t *s, const void *data, size_t len);
void fa_hash_final(fa_hash_t *s, uint8_t out[32]);
/* Writes the state as 64 hex digits (plus NUL); only at a block boundary (len % 64 == 0), where
 * the state is h alone. Returns false elsewhere. */
bool fa_hash_save(const fa_hash_t *s, char hex[FA_HASH_STATE_HEX + 1]);
/* Restores a state saved after len bytes (a multiple of 64). Returns false if hex is malformed. */
bool fa_hash_load(fa_hash_t *s, const char *hex, uint64_t len);

#endif
