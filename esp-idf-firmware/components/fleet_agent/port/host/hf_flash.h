/* Host port: a flash file laid out like partitions.csv, otadata in ESP-IDF's format with the
 * bootloader's and esp_ota_ops' rules, and app images with an ESP-IDF app descriptor. */
#ifndef HF_FLASH_H
#define HF_FLASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HF_SECTOR 0x1000u
#define HF_NVS_OFF 0x9000u
#define HF_NVS_SIZE 0x6000u
#define HF_OTADATA_OFF 0xf000u
#define HF_PHY_OFF 0x11000u
#define HF_OTA0_OFF 0x20000u
#define HF_SLOT_SIZE 0x1E0000u
#define HF_OTA1_OFF (HF_OTA0_OFF + HF_SLOT_SIZE)
#define HF_FLASH_SIZE 0x400000u
#define HF_APP_COUNT 2

/* Flash operations; any may fail (a power cut in the unit tests). */
typedef struct {
    void *ctx;
    int (*read)(void *ctx, uint32_t off, void *buf, size_t len);
    int (*write)(void *ctx, uint32_t off, const void *buf, size_t len);
    int (*erase)(void *ctx, uint32_t off, size_t len); /* sets to 0xFF */
} hf_flash_t;

/* esp_ota_select_entry_t, byte for byte. */
typedef struct {
    uint32_t ota_seq;
    uint8_t seq_label[20];
    uint32_t ota_state;
    uint32_t crc; /* crc32_le(UINT32_MAX, &ota_seq, 4) */
} hf_ota_entry_t;

enum { HF_IMG_NEW = 0, HF_IMG_PENDING_VERIFY = 1, HF_IMG_VALID = 2, HF_IMG_INVALID = 3, HF_IMG_ABORTED = 4 };
#define HF_IMG_UNDEFINED 0xFFFFFFFFu

static inline uint32_t hf_slot_off(int slot)
{
    return slot == 0 ? HF_OTA0_OFF : HF_OTA1_OFF;
}

/* otadata (hf_otadata.c) */
uint32_t hf_crc32_le(uint32_t crc, const uint8_t *buf, size_t len); /* esp_rom_crc32_le */
uint32_t hf_ota_select_crc(const hf_ota_entry_t *s);
bool hf_ota_select_invalid(const hf_ota_entry_t *s);
bool hf_ota_select_valid(const hf_ota_entry_t *s);
int hf_select_otadata(const hf_ota_entry_t two[2], const bool valid[2], bool max);
int hf_get_active_otadata(const hf_ota_entry_t two[2]);
int hf_read_otadata(const hf_flash_t *f, hf_ota_entry_t two[2]);
int hf_write_otadata(const hf_flash_t *f, const hf_ota_entry_t *e, int sector);

/* The second stage bootloader with APP_ROLLBACK and APP_ANTI_ROLLBACK enabled; efuse_secver is the
 * device's secure version (raised when a VALID image with a higher one boots). Returns the slot
 * to run, or -1 when nothing is bootable. */
int hf_bootloader(const hf_flash_t *f, uint32_t *efuse_secver);

/* esp_ota_ops */
int hf_set_boot_partition(const hf_flash_t *f, int slot);  /* esp_rewrite_ota_data */
int hf_mark_app_valid(const hf_flash_t *f);                /* esp_ota_mark_app_valid_cancel_rollback */
int hf_mark_app_invalid(const hf_flash_t *f);              /* ..._invalid_rollback (without the reboot) */
int hf_get_state_partition(const hf_flash_t *f, int slot, uint32_t *state);

/* Images (hf_image.c): esp_image_header_t, one segment header, esp_app_desc_t, payload,
 * then a SHA-256 of everything before it (hash_appended). */
typedef enum { HF_SELFTEST_OK = 0, HF_SELFTEST_CRASH, HF_SELFTEST_OFFLINE } hf_selftest_t;

typedef struct {
    char version[33];
    char project[33];
    uint32_t secure_version;
    hf_selftest_t selftest;
    uint32_t size; /* whole image, hash included */
} hf_image_info_t;

/* Builds an image of about `size` bytes into buf; returns its length or -1. */
int hf_image_make(uint8_t *buf, size_t cap, const char *version, uint32_t secure_version, const char *project,
                  hf_selftest_t selftest, size_t size);
/* Checks an image in flash at off (max bytes); fills info. 0 when loadable. */
int hf_image_check(const hf_flash_t *f, uint32_t off, uint32_t max, hf_image_info_t *info);

/* A file-backed flash (hf_file.c). */
int hf_file_open(hf_flash_t *f, const char *path);
void hf_file_close(hf_flash_t *f);

#endif
