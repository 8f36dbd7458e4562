/* A flash file: reads, writes and erases with pread/pwrite; a kill -9 loses nothing already written. */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "hf_flash.h"

static int file_read(void *ctx, uint32_t off, void *buf, size_t len)
{
    int fd = (int)(intptr_t)ctx;
    return pread(fd, buf, len, off) == (ssize_t)len ? 0 : -1;
}

static int file_write(void *ctx, uint32_t off, const void *buf, size_t len)
{
    int fd = (int)(intptr_t)ctx;
    if (off + len > HF_FLASH_SIZE || pwrite(fd, buf, len, off) != (ssize_t)len) {
        return -1;
    }
    return 0;
}

static int file_erase(void *ctx, uint32_t off, size_t len)
{
    static const uint8_t ff[4096] = { [0 ... 4095] = 0xFF };
    for (size_t done = 0; done < len; done += sizeof(ff)) {
        size_t n = len - done < sizeof(ff) ? len - done : sizeof(ff);
        if (file_write(ctx, off + (uint32_t)done, ff, n) != 0) {
            return -1;
        }
    }
    return 0;
}

int hf_file_open(hf_flash_t *f, const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
        return -1;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    f->ctx = (void *)(intptr_t)fd;
    f->read = file_read;
    f->write = file_write;
    f->erase = file_erase;
    if (size < (off_t)HF_FLASH_SIZE) { /* a new chip: all erased */
        if (file_erase(f->ctx, (uint32_t)size, HF_FLASH_SIZE - (size_t)size) != 0) {
            close(fd);
            return -1;
        }
    }
    return 0;
}

void hf_file_close(hf_flash_t *f)
{
    fsync((int)(intptr_t)f->ctx);
    close((int)(intptr_t)f->ctx);
}
