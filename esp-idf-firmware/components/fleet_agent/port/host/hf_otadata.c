/* otadata exactly as ESP-IDF reads and writes it (bootloader_common.c, bootloader_utility.c,
 * esp_ota_ops.c), on a hf_flash_t. */
#include <string.h>

#include "hf_flash.h"

uint32_t hf_crc32_le(uint32_t crc, const uint8_t *buf, size_t len)
{
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= buf[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

uint32_t hf_ota_select_crc(const hf_ota_entry_t *s)
{
    uint8_t seq[4];
    memcpy(seq, &s->ota_seq, 4); /* little-endian on the ESP32 and on x86/arm hosts */
    return hf_crc32_le(UINT32_MAX, seq, 4);
}

bool hf_ota_select_invalid(const hf_ota_entry_t *s)
{
    return s->ota_seq == UINT32_MAX || s->ota_state == HF_IMG_INVALID || s->ota_state == HF_IMG_ABORTED;
}

bool hf_ota_select_valid(const hf_ota_entry_t *s)
{
    return !hf_ota_select_invalid(s) && s->crc == hf_ota_select_crc(s);
}

int hf_select_otadata(const hf_ota_entry_t two[2], const bool valid[2], bool max)
{
    if (valid[0] && valid[1]) {
        uint32_t a = two[0].ota_seq, b = two[1].ota_seq;
        uint32_t cond = max ? (a > b ? a : b) : (a < b ? a : b);
        return cond == a ? 0 : 1;
    }
    if (valid[0]) {
        return 0;
    }
    if (valid[1]) {
        return 1;
    }
    return -1;
}

int hf_get_active_otadata(const hf_ota_entry_t two[2])
{
    bool valid[2] = { hf_ota_select_valid(&two[0]), hf_ota_select_valid(&two[1]) };
    return hf_select_otadata(two, valid, true);
}

int hf_read_otadata(const hf_flash_t *f, hf_ota_entry_t two[2])
{
    if (f->read(f->ctx, HF_OTADATA_OFF, &two[0], sizeof(two[0])) != 0 ||
        f->read(f->ctx, HF_OTADATA_OFF + HF_SECTOR, &two[1], sizeof(two[1])) != 0) {
        return -1;
    }
    return 0;
}

/* Erase, then write: a power cut in between leaves an all-0xFF (invalid) entry. */
int hf_write_otadata(const hf_flash_t *f, const hf_ota_entry_t *e, int sector)
{
    uint32_t off = HF_OTADATA_OFF + HF_SECTOR * (uint32_t)sector;
    if (f->erase(f->ctx, off, HF_SECTOR) != 0) {
        return -1;
    }
    return f->write(f->ctx, off, e, sizeof(*e));
}

static bool slot_loadable(const hf_flash_t *f, int slot, uint32_t efuse, hf_image_info_t *info)
{
    /* try_load_partition + check_anti_rollback */
    return hf_image_check(f, hf_slot_off(slot), HF_SLOT_SIZE, info) == 0 && info->secure_version >= efuse;
}

static bool crc_bad_or_blank(const hf_ota_entry_t *e)
{
    return e->ota_seq == UINT32_MAX || e->crc != hf_ota_select_crc(e);
}

int hf_bootloader(const hf_flash_t *f, uint32_t *efuse)
{
    hf_ota_entry_t ot[2];
    hf_image_info_t info;
    int boot_index = -1; /* FACTORY_INDEX: there is no factory partition */
    bool initial = false;
    if (hf_read_otadata(f, ot) != 0) {
        return -1;
    }
    /* An image still on trial at reset never gets a second boot. */
    for (int i = 0; i < 2; i++) {
        if (ot[i].ota_state == HF_IMG_PENDING_VERIFY) {
            ot[i].ota_state = HF_IMG_ABORTED;
            hf_write_otadata(f, &ot[i], i);
        }
    }
    if (crc_bad_or_blank(&ot[0]) && crc_bad_or_blank(&ot[1])) {
        initial = true;
    } else {
        bool valid[2];
        for (int i = 0; i < 2; i++) {
            valid[i] = hf_ota_select_valid(&ot[i]) &&
                       slot_loadable(f, (int)((ot[i].ota_seq - 1) % HF_APP_COUNT), *efuse, &info);
        }
        int active = hf_select_otadata(ot, valid, true);
        if (active != -1) {
            boot_index = (int)((ot[active].ota_seq - 1) % HF_APP_COUNT);
            if (ot[active].ota_state == HF_IMG_NEW) {
                ot[active].ota_state = HF_IMG_PENDING_VERIFY;
                hf_write_otadata(f, &ot[active], active);
            }
            if (ot[active].ota_state == HF_IMG_VALID &&
                hf_image_check(f, hf_slot_off(boot_index), HF_SLOT_SIZE, &info) == 0 &&
                info.secure_version > *efuse) {
                *efuse = info.secure_version; /* update_anti_rollback */
            }
        }
    }
    /* bootloader_utility_load_boot_image: backwards from boot_index, then forwards. */
    for (int idx = boot_index; idx >= 0; idx--) {
        if (slot_loadable(f, idx, *efuse, &info)) {
            goto found;
        }
    }
    for (int idx = boot_index + 1; idx < HF_APP_COUNT; idx++) {
        if (slot_loadable(f, idx, *efuse, &info)) {
            boot_index = idx;
            goto found;
        }
    }
    return -1;
found:
    if (boot_index < 0) {
        boot_index = 0;
    }
    if (initial) { /* set_actual_ota_seq */
        hf_ota_entry_t e;
        memset(&e, 0xFF, sizeof(e));
        e.ota_seq = (uint32_t)boot_index + 1;
        e.ota_state = HF_IMG_VALID;
        e.crc = hf_ota_select_crc(&e);
        hf_write_otadata(f, &e, 0);
        if (info.secure_version > *efuse) {
            *efuse = info.secure_version;
        }
    }
    return boot_index;
}

int hf_set_boot_partition(const hf_flash_t *f, int slot)
{
    hf_ota_entry_t ot[2];
    if (slot < 0 || slot >= HF_APP_COUNT || hf_read_otadata(f, ot) != 0) {
        return -1;
    }
    int active = hf_get_active_otadata(ot);
    if (active != -1) {
        uint32_t seq = ot[active].ota_seq;
        uint32_t i = 0;
        while (seq > (uint32_t)(slot + 1) % HF_APP_COUNT + i * HF_APP_COUNT) {
            i++;
        }
        int next = (~active) & 1;
        ot[next].ota_state = HF_IMG_NEW; /* rollback enabled */
        ot[next].ota_seq = (uint32_t)(slot + 1) % HF_APP_COUNT + i * HF_APP_COUNT;
        ot[next].crc = hf_ota_select_crc(&ot[next]);
        return hf_write_otadata(f, &ot[next], next);
    }
    ot[0].ota_state = HF_IMG_NEW;
    ot[0].ota_seq = (uint32_t)slot + 1;
    ot[0].crc = hf_ota_select_crc(&ot[0]);
    return hf_write_otadata(f, &ot[0], 0);
}

static int set_current_state(const hf_flash_t *f, uint32_t state)
{
    hf_ota_entry_t ot[2];
    if (hf_read_otadata(f, ot) != 0) {
        return -1;
    }
    int active = hf_get_active_otadata(ot);
    if (active == -1) {
        return -1;
    }
    if (ot[active].ota_state == state) {
        return 0;
    }
    if (state == HF_IMG_INVALID) {
        /* esp_ota_check_rollback_is_possible: the other entry must be bootable. */
        if (!hf_ota_select_valid(&ot[active ^ 1])) {
            return -1;
        }
    }
    ot[active].ota_state = state;
    ot[active].crc = hf_ota_select_crc(&ot[active]);
    return hf_write_otadata(f, &ot[active], active);
}

int hf_mark_app_valid(const hf_flash_t *f)
{
    return set_current_state(f, HF_IMG_VALID);
}

int hf_mark_app_invalid(const hf_flash_t *f)
{
    return set_current_state(f, HF_IMG_INVALID);
}

int hf_get_state_partition(const hf_flash_t *f, int slot, uint32_t *state)
{
    hf_ota_entry_t ot[2];
    if (hf_read_otadata(f, ot) != 0) {
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        if (ot[i].ota_seq != UINT32_MAX && (ot[i].ota_seq - 1) % HF_APP_COUNT == (uint32_t)slot) {
            *state = ot[i].ota_state;
            return 0;
        }
    }
    return -1;
}
