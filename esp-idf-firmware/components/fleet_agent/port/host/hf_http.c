/* A plain HTTP/1.1 GET client for the host port, with Range for resuming (development stores
 * serve HTTP; the ESP-IDF port uses esp_http_client with TLS). */
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

/* ---- HTTP GET with Range ---- */

void hf_http_close(void *ctx)
{
    hf_port_t *hp = ctx;
    if (hp->http_fd >= 0) {
        close(hp->http_fd);
        hp->http_fd = -1;
    }
}

fa_err_t hf_http_open(void *ctx, const char *url, uint32_t offset, uint32_t *content_len)
{
    hf_port_t *hp = ctx;
    char host[128], port[8] = "80", req[1400];
    const char *path;
    if (strncmp(url, "http://", 7) != 0) {
        return FA_ERR_NOT_SUPPORTED; /* the host port speaks plain HTTP (development stores) */
    }
    const char *h = url + 7;
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
        snprintf(port, sizeof(port), "%s", colon + 1);
        *colon = '\0';
    }
    struct addrinfo hints = { 0 }, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0) {
        return FA_FAIL;
    }
    int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    struct timeval tv = { 10, 0 };
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        freeaddrinfo(res);
        return FA_FAIL;
    }
    freeaddrinfo(res);
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n", path, host, port);
    if (offset) {
        n += snprintf(req + n, sizeof(req) - (size_t)n, "Range: bytes=%lu-\r\n", (unsigned long)offset);
    }
    n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    if (n >= (int)sizeof(req) || send(fd, req, (size_t)n, 0) != n) {
        close(fd);
        return FA_FAIL;
    }
    /* Read the head. */
    size_t have = 0;
    char *end = NULL;
    while (have < sizeof(hp->http_buf) - 1) {
        ssize_t r = recv(fd, hp->http_buf + have, sizeof(hp->http_buf) - 1 - have, 0);
        if (r <= 0) {
            close(fd);
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
        close(fd);
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
    hp->http_fd = fd;
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
        ssize_t r = recv(hp->http_fd, hp->http_buf, sizeof(hp->http_buf), 0);
        if (r <= 0) {
            return r == 0 ? 0 : -1;
        }
        hp->http_have = (size_t)r;
        hp->http_pos = 0;
    }
}
