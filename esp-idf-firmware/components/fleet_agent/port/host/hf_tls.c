#include "hf_tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mbedtls/ctr_drbg.h"
#include "mbedtls/entropy.h"
#include "mbedtls/error.h"
#include "mbedtls/net_sockets.h"
#include "mbedtls/ssl.h"
#include "mbedtls/x509_crt.h"

struct hf_tls {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca;
    mbedtls_ssl_config conf;
    mbedtls_ssl_context ssl;
    mbedtls_net_context net;
    int active;
};

hf_tls_t *hf_tls_new(const char *ca_path)
{
    static const char pers[] = "fleet-device";
    hf_tls_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return NULL;
    }
    mbedtls_entropy_init(&t->entropy);
    mbedtls_ctr_drbg_init(&t->drbg);
    mbedtls_x509_crt_init(&t->ca);
    mbedtls_ssl_config_init(&t->conf);
    int rc = mbedtls_x509_crt_parse_file(&t->ca, ca_path);
    if (rc == 0) {
        rc = mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy, (const unsigned char *)pers,
                                   sizeof(pers) - 1);
    }
    if (rc == 0) {
        rc = mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT);
    }
    if (rc != 0) {
        char err[128];
        mbedtls_strerror(rc, err, sizeof(err));
        fprintf(stderr, "E tls: CA %s: %s\n", ca_path, err);
        mbedtls_ssl_config_free(&t->conf);
        mbedtls_x509_crt_free(&t->ca);
        mbedtls_ctr_drbg_free(&t->drbg);
        mbedtls_entropy_free(&t->entropy);
        free(t);
        return NULL;
    }
    /* Verification is required: a server whose chain or name does not match gets no request. */
    mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
    mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
    return t;
}

int hf_tls_connect(hf_tls_t *t, int fd, const char *host)
{
    mbedtls_ssl_init(&t->ssl);
    t->net.fd = fd;
    t->active = 1;
    int rc = mbedtls_ssl_setup(&t->ssl, &t->conf);
    if (rc == 0) {
        rc = mbedtls_ssl_set_hostname(&t->ssl, host); /* SNI and the name the certificate must carry */
    }
    if (rc == 0) {
        mbedtls_ssl_set_bio(&t->ssl, &t->net, mbedtls_net_send, mbedtls_net_recv, NULL);
        do {
            rc = mbedtls_ssl_handshake(&t->ssl);
        } while (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE);
    }
    if (rc != 0) {
        char err[128];
        mbedtls_strerror(rc, err, sizeof(err));
        fprintf(stderr, "E tls: %s: %s (verify flags 0x%x)\n", host, err,
                (unsigned)mbedtls_ssl_get_verify_result(&t->ssl));
        mbedtls_ssl_free(&t->ssl);
        t->active = 0;
        return -1;
    }
    return 0;
}

int hf_tls_send(hf_tls_t *t, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len > 0) {
        int n = mbedtls_ssl_write(&t->ssl, p, len);
        if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int hf_tls_recv(hf_tls_t *t, void *buf, size_t len)
{
    for (;;) {
        int n = mbedtls_ssl_read(&t->ssl, buf, len);
        if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE) {
            continue;
        }
        /* A server that just closes (no close_notify) ends the body like a plain socket's EOF:
         * the byte count against the manifest's size is what tells a cut download. */
        if (n == 0 || n == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || n == MBEDTLS_ERR_SSL_CONN_EOF) {
            return 0;
        }
        return n > 0 ? n : -1;
    }
}

void hf_tls_close(hf_tls_t *t)
{
    if (t->active) {
        (void)mbedtls_ssl_close_notify(&t->ssl);
        mbedtls_ssl_free(&t->ssl);
        t->active = 0;
    }
}
