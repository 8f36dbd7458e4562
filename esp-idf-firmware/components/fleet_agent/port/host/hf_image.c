/* Host app images in the ESP-IDF image format: esp_image_header_t, one segment whose data
 * starts with esp_app_desc_t, the checksum byte, then the appended SHA-256. */
#include <stdio.h>
#include <string.h>

#include "fa_crypto.h"
#include "hf_flash.h"

#define HDR_LEN 24
#define SEG_HDR_LEN 8
#define DESC_LEN 256
#define SELFTEST_TAG "FLEET-SELFTEST:"

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static size_t total_len(uint32_t data_len)
{
    size_t body = HDR_LEN + SEG_HDR_LEN + data_len;
    size_t padded = (body + 1 + 15) & ~(size_t)15; /* checksum byte is the last of a 16-byte block */
    return padded + 32;
}

int hf_image_make(uint8_t *buf, size_t cap, const char *version, uint32_t secure_version, const char *project,
                  hf_selftest_t selftest, size_t size)
{
    static const char *names[] = { "ok", "crash", "offline" };
    uint32_t data_len = DESC_LEN + 64;
    if (size > total_len(data_len)) {
        data_len = (uint32_t)(size - total_len(0)) & ~3u;
    }
    size_t total = total_len(data_len);
    if (total > cap || strlen(version) > 31 || strlen(project) > 31) {
        return -1;
    }
    memset(buf, 0, total);
    buf[0] = 0xE9;       /* ESP_IMAGE_HEADER_MAGIC */
    buf[1] = 1;          /* segment_count */
    buf[2] = 2;          /* spi_mode DIO */
    put32(buf + 4, 0x40380080u);
    buf[8] = 0xEE;       /* wp_pin */
    buf[12] = 5;         /* chip_id: ESP32-C3 */
    buf[23] = 1;         /* hash_appended */
    put32(buf + HDR_LEN, 0x3C000020u);
    put32(buf + HDR_LEN + 4, data_len);
    uint8_t *d = buf + HDR_LEN + SEG_HDR_LEN;
    put32(d, 0xABCD5432u);
    put32(d + 4, secure_version);
    memcpy(d + 16, version, strlen(version));
    memcpy(d + 48, project, strlen(project));
    memcpy(d + 80, "00:00:00", 8);
    memcpy(d + 96, "Jan  1 2026", 11);
    memcpy(d + 112, "host", 4);
    uint8_t *payload = d + DESC_LEN;
    snprintf((char *)payload, 64, SELFTEST_TAG "%s", names[selftest]);
    uint32_t x = 2463534242u ^ (uint32_t)strlen(version) ^ ((uint32_t)version[0] << 8);
    for (uint32_t i = 64; i < data_len - DESC_LEN; i++) { /* filler, different per version */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        payload[i] = (uint8_t)x;
    }
    uint8_t ck = 0xEF;
    for (uint32_t i = 0; i < data_len; i++) {
        ck ^= d[i];
    }
    buf[total - 33] = ck;
    fa_sha256_t *h = fa_sha256_start();
    if (h == NULL || fa_sha256_update(h, buf, total - 32) != 0 || fa_sha256_finish(h, buf + total - 32) != 0) {
        return -1;
    }
    return (int)total;
}

int hf_image_check(const hf_flash_t *f, uint32_t off, uint32_t max, hf_image_info_t *info)
{
    uint8_t head[HDR_LEN + SEG_HDR_LEN + DESC_LEN + 64];
    uint8_t buf[1024], digest[32], stored[32];
    if (f->read(f->ctx, off, head, sizeof(head)) != 0 || head[0] != 0xE9 || head[1] != 1 || head[23] != 1) {
        return -1;
    }
    uint32_t data_len = get32(head + HDR_LEN + 4);
    const uint8_t *d = head + HDR_LEN + SEG_HDR_LEN;
    if (data_len < DESC_LEN + 64 || data_len > max || total_len(data_len) > max || get32(d) != 0xABCD5432u) {
        return -1;
    }
    size_t total = total_len(data_len);
    /* esp_image_verify: checksum over the segment data and the appended SHA-256. */
    fa_sha256_t *h = fa_sha256_start();
    uint8_t ck = 0xEF;
    size_t data_start = HDR_LEN + SEG_HDR_LEN, data_end = data_start + data_len;
    for (size_t pos = 0; pos < total - 32; pos += sizeof(buf)) {
        size_t n = total - 32 - pos < sizeof(buf) ? total - 32 - pos : sizeof(buf);
        if (h == NULL || f->read(f->ctx, off + (uint32_t)pos, buf, n) != 0) {
            fa_sha256_finish(h, NULL);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            if (pos + i >= data_start && pos + i < data_end) {
                ck ^= buf[i];
            }
        }
        if (pos + n == total - 32 && buf[n - 1] != ck) {
            fa_sha256_finish(h, NULL);
            return -1;
        }
        fa_sha256_update(h, buf, n);
    }
    if (fa_sha256_finish(h, digest) != 0 || f->read(f->ctx, off + (uint32_t)total - 32, stored, 32) != 0 ||
        memcmp(digest, stored, 32) != 0) {
        return -1;
    }
    memset(info, 0, sizeof(*info));
    info->secure_version = get32(d + 4);
    memcpy(info->version, d + 16, 32);
    memcpy(info->project, d + 48, 32);
    info->size = (uint32_t)total;
    const char *st = (const char *)d + DESC_LEN;
    info->selftest = HF_SELFTEST_OK;
    if (strncmp(st, SELFTEST_TAG "crash", sizeof(SELFTEST_TAG) + 4) == 0) {
        info->selftest = HF_SELFTEST_CRASH;
    } else if (strncmp(st, SELFTEST_TAG "offline", sizeof(SELFTEST_TAG) + 6) == 0) {
        info->selftest = HF_SELFTEST_OFFLINE;
    }
    return 0;
}
