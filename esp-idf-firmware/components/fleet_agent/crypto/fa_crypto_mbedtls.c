/* fa_crypto.h on mbedTLS, through the md/pk/hkdf APIs that are the same in 2.28 and 3.x. */
#include <stdlib.h>
#include <string.h>

#include "fa_crypto.h"
#include "mbedtls/hkdf.h"
#include "mbedtls/md.h"
#include "mbedtls/pk.h"

struct fa_sha256 {
    mbedtls_md_context_t md;
};

fa_sha256_t *fa_sha256_start(void)
{
    fa_sha256_t *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return NULL;
    }
    mbedtls_md_init(&h->md);
    if (mbedtls_md_setup(&h->md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 0) != 0 ||
        mbedtls_md_starts(&h->md) != 0) {
        mbedtls_md_free(&h->md);
        free(h);
        return NULL;
    }
    return h;
}

fa_err_t fa_sha256_update(fa_sha256_t *h, const void *data, size_t len)
{
    return mbedtls_md_update(&h->md, data, len) == 0 ? FA_OK : FA_FAIL;
}

fa_err_t fa_sha256_finish(fa_sha256_t *h, uint8_t out[32])
{
    int rc = 0;
    if (h == NULL) {
        return FA_ERR_INVALID_ARG;
    }
    if (out != NULL) {
        rc = mbedtls_md_finish(&h->md, out);
    }
    mbedtls_md_free(&h->md);
    free(h);
    return rc == 0 ? FA_OK : FA_FAIL;
}

fa_err_t fa_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t len, uint8_t out[32])
{
    return mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), key, key_len, msg, len, out) == 0
               ? FA_OK
               : FA_FAIL;
}

fa_err_t fa_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const void *info, size_t info_len, uint8_t *out,
                        size_t out_len)
{
    return mbedtls_hkdf(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), NULL, 0, ikm, ikm_len, info, info_len,
                        out, out_len) == 0
               ? FA_OK
               : FA_FAIL;
}

fa_err_t fa_ecdsa_p256_verify(const uint8_t *pub, size_t pub_len, const uint8_t hash[32], const uint8_t *sig,
                              size_t sig_len)
{
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    int rc = mbedtls_pk_parse_public_key(&pk, pub, pub_len);
    if (rc == 0 && !mbedtls_pk_can_do(&pk, MBEDTLS_PK_ECDSA)) {
        rc = -1;
    }
    if (rc == 0) {
        rc = mbedtls_pk_verify(&pk, MBEDTLS_MD_SHA256, hash, 32, sig, sig_len);
    }
    mbedtls_pk_free(&pk);
    return rc == 0 ? FA_OK : FA_FAIL;
}
