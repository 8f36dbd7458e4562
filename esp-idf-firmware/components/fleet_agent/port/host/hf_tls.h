/* TLS for the host port's downloads: mbedTLS (2.28 and 3.x), the server certificate verified
 * against a CA file and the URL's host name, as esp_http_client does with a configured CA. */
#ifndef HF_TLS_H
#define HF_TLS_H

#include <stddef.h>

typedef struct hf_tls hf_tls_t;

/**
 * Loads the CA certificate(s) from a PEM file and seeds the DRBG.
 * @return the context, or NULL (unreadable or invalid CA, no memory).
 */
hf_tls_t *hf_tls_new(const char *ca_path);
/**
 * TLS handshake over a connected socket, verifying the server's chain and name.
 * @return 0, or -1 (handshake or verification failed; the reason is logged to stderr).
 */
int hf_tls_connect(hf_tls_t *t, int fd, const char *host);
/** @return 0 when all len bytes were sent, -1 otherwise. */
int hf_tls_send(hf_tls_t *t, const void *buf, size_t len);
/** @return bytes read (> 0), 0 at the end of the stream, -1 on an error. */
int hf_tls_recv(hf_tls_t *t, void *buf, size_t len);
/** Ends the session (close_notify) and forgets it; the socket stays the caller's. */
void hf_tls_close(hf_tls_t *t);

#endif
