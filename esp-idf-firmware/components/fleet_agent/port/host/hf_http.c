/* An HTTP/1.1 GET client for the host port, with Range for resuming: https:// over mbedTLS with
 * the server verified against the CA given by --ca (hf_tls.c), http:// for development stores. */
#define _POSIX_C_SOURCE 200809L
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "hf_port.h"
#include "hf_tls.h"

static int tr_send(hf_port_t *hp, const void *buf, size_t len)
{
    if (hp->http_tls) {
        return hf_tls_send(hp->tls, buf, len);
    }
    return send(hp->http_fd, buf, len, 0) == (ssize_t)len ? 0 : -1;
}

/* > 0 bytes, 0 at the end, < 0 on an error: the same for both transports. */
static int tr_recv(hf_port_t *hp, void *buf, size_t len)
{
    if (hp->http_tls) {
        return hf_tls_recv(hp->tls, buf, len);
    }
    ssize_t r = recv(hp->http_fd, buf, len, 0);
    return r < 0 ? -1 : (int)r;
}

static int dial(const char *host, const char *port)
{
    struct addrinfo hints = { 0 }, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0) {
        return -1;
    }
    int fd = -1;
    /* "localhost" may name ::1 first while the server listens on 127.0.0.1 only: try each. */
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        struct timeval tv = { 10, 0 };
        if (fd >= 0) {
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        }
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

/* ---- HTTP GET with Range ---- */

void hf_http_close(void *ctx)
{
    hf_port_t *hp = ctx;
    if (hp->http_tls) {
        hf_tls_close(hp->tls);
        hp->http_tls = false;
    }
    if (hp->http_fd >= 0) {
        close(hp->http_fd);
        hp->http_fd = -1;
    }
}

fa_err_t hf_http_open(void *ctx, const char *url, uint32_t offset, uint32_t *content_len)
{
    hf_port_t *hp = ctx;
    char host[128], port[8] = "80", req[1400];
    const char *path, *h;
    bool tls = strncmp(url, "https://", 8) == 0;
    if (tls) {
        if (hp->tls == NULL) {
            return FA_ERR_NOT_SUPPORTED; /* no CA to verify the server with (--ca) */
        }
        h = url + 8;
        memcpy(port, "443", 4);
    } else if (strncmp(url, "http://", 7) == 0) {
        h = url + 7;
    } else {
        return FA_ERR_NOT_SUPPORTED;
    }
    path = strchr(h, '/');
    size_t hl = path ? (size_t)(path - h) : strlen(h);
    if (!path) {
        path = "/";
    }
    if (hl >= sizeof(host)) {
        return FA_ERR_INVALID_ARG;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *colon = strrchr(host, ':');
    if (colon) {
        if (strlen(colon + 1) >= sizeof(port)) {
            return FA_ERR_INVALID_ARG;
        }
        memcpy(port, colon + 1, strlen(colon + 1) + 1);
        *colon = '\0';
    }
    int fd = dial(host, port);
    if (fd < 0) {
        return FA_FAIL;
    }
    hp->http_fd = fd;
    if (tls) {
        if (hf_tls_connect(hp->tls, fd, host) != 0) {
            hf_http_close(ctx);
            return FA_ERR_INVALID_RESPONSE; /* the server could not prove who it is */
        }
        hp->http_tls = true;
    }
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n", path, host, port);
    if (n > 0 && n < (int)sizeof(req) && offset) {
        n += snprintf(req + n, sizeof(req) - (size_t)n, "Range: bytes=%lu-\r\n", (unsigned long)offset);
    }
    if (n > 0 && n < (int)sizeof(req)) {
        n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    }
    if (n <= 0 || n >= (int)sizeof(req) || tr_send(hp, req, (size_t)n) != 0) {
        hf_http_close(ctx);
        return FA_FAIL;
    }
    /* Read the head. */
    size_t have = 0;
    char *end = NULL;
    while (have < sizeof(hp->http_buf) - 1) {
        int r = tr_recv(hp, hp->http_buf + have, sizeof(hp->http_buf) - 1 - have);
        if (r <= 0) {
            hf_http_close(ctx);
            return FA_FAIL;
        }
        have += (size_t)r;
        hp->http_buf[have] = '\0';
        if ((end = strstr((char *)hp->http_buf, "\r\n\r\n")) != NULL) {
            break;
        }
    }
    int status = 0;
    if (end == NULL || sscanf((char *)hp->http_buf, "HTTP/%*s %d", &status) != 1 || (status != 200 && status != 206)) {
        hf_http_close(ctx);
        return FA_ERR_INVALID_RESPONSE;
    }
    *content_len = 0;
    for (char *l = strstr((char *)hp->http_buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
        if (strncasecmp(l + 2, "Content-Length:", 15) == 0) {
            *content_len = (uint32_t)strtoul(l + 17, NULL, 10);
        }
    }
    hp->http_skip = (status == 200) ? offset : 0;
    if (status == 200 && *content_len >= offset) {
        *content_len -= offset;
    }
    hp->http_pos = (size_t)(end + 4 - (char *)hp->http_buf);
    hp->http_have = have;
    return FA_OK;
}

int hf_http_read(void *ctx, void *buf, size_t len)
{
    hf_port_t *hp = ctx;
    for (;;) {
        if (hp->http_pos < hp->http_have) {
            size_t n = hp->http_have - hp->http_pos;
            if (hp->http_skip) {
                size_t k = n < hp->http_skip ? n : hp->http_skip;
                hp->http_pos += k;
                hp->http_skip -= (uint32_t)k;
                continue;
            }
            if (n > len) {
                n = len;
            }
            memcpy(buf, hp->http_buf + hp->http_pos, n);
            hp->http_pos += n;
            return (int)n;
        }
        int r = tr_recv(hp, hp->http_buf, sizeof(hp->http_buf));
        if (r <= 0) {
            return r;
        }
        hp->http_have = (size_t)r;
        hp->http_pos = 0;
    }
}
