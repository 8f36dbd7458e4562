/* Crypto the core needs; crypto/fa_crypto_mbedtls.c implements it with mbedTLS (2.28 and 3.x). */
#ifndef FA_CRYPTO_H
#define FA_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "fa_err.h"

typedef struct fa_sha256 fa_sha256_t;

fa_sha256_t *fa_sha256_start(void);
fa_err_t fa_sha256_update(fa_sha256_t *h, const void *data, size_t len);
/* Writes the digest and frees h; out may be NULL to just free. */
fa_err_t fa_sha256_finish(fa_sha256_t *h, uint8_t out[32]);

fa_err_t fa_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t len, uint8_t out[32]);
/* HKDF-SHA256 with an empty salt. */
fa_err_t fa_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const void *info, size_t info_len,
                        uint8_t *out, size_t out_len);
/* pub: PEM (NUL-terminated, len includes the NUL) or DER SubjectPublicKeyInfo; sig: DER. */
fa_err_t fa_ecdsa_p256_verify(const uint8_t *pub, size_t pub_len, const uint8_t hash[32],
                              const uint8_t *sig, size_t sig_len);

#endif
