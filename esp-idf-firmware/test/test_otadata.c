/* otadata as ESP-IDF lays it out and chooses between its two entries, and the bootloader's
 * trial-boot and rollback rules (APP_ROLLBACK_ENABLE + APP_ANTI_ROLLBACK). */
#include "test_support.h"

static memflash_t mf;
static hf_flash_t fl;

static int setup(void **state)
{
    (void)state;
    mf_init(&mf, &fl);
    return 0;
}

static hf_ota_entry_t entry(uint32_t seq, uint32_t st)
{
    hf_ota_entry_t e;
    memset(&e, 0xFF, sizeof(e));
    e.ota_seq = seq;
    e.ota_state = st;
    e.crc = hf_ota_select_crc(&e);
    return e;
}

static void read_ot(hf_ota_entry_t ot[2])
{
    assert_int_equal(hf_read_otadata(&fl, ot), 0);
}

static void test_layout_and_crc(void **state)
{
    (void)state;
    assert_int_equal(sizeof(hf_ota_entry_t), 32); /* esp_ota_select_entry_t */
    assert_int_equal(offsetof(hf_ota_entry_t, ota_state), 24);
    assert_int_equal(offsetof(hf_ota_entry_t, crc), 28);
    /* binascii.crc32(struct.pack('<I', seq), 0xFFFFFFFF), as ESP-IDF's otatool.py computes it */
    hf_ota_entry_t e = entry(1, HF_IMG_VALID);
    assert_int_equal(e.crc, 0x4743989au);
    e = entry(2, HF_IMG_NEW);
    assert_int_equal(e.crc, 0x55f63774u);
    e = entry(3, HF_IMG_VALID);
    assert_int_equal(e.crc, 0xed4a5011u);
    /* the crc covers ota_seq only, not the state */
    e.ota_state = HF_IMG_INVALID;
    assert_int_equal(hf_ota_select_crc(&e), 0xed4a5011u);
}

static void test_entry_selection(void **state)
{
    (void)state;
    hf_ota_entry_t two[2];
    two[0] = entry(1, HF_IMG_VALID);
    two[1] = entry(2, HF_IMG_VALID);
    assert_int_equal(hf_get_active_otadata(two), 1); /* highest seq wins */
    two[1] = entry(2, HF_IMG_UNDEFINED);
    assert_int_equal(hf_get_active_otadata(two), 1); /* rollback disabled images count as valid */
    two[1].crc ^= 1;
    assert_int_equal(hf_get_active_otadata(two), 0); /* bad crc */
    two[1] = entry(2, HF_IMG_INVALID);
    assert_int_equal(hf_get_active_otadata(two), 0);
    two[1] = entry(2, HF_IMG_ABORTED);
    assert_int_equal(hf_get_active_otadata(two), 0);
    two[1] = entry(2, HF_IMG_PENDING_VERIFY);
    assert_int_equal(hf_get_active_otadata(two), 1);
    two[0] = entry(UINT32_MAX, HF_IMG_VALID);
    two[1] = entry(UINT32_MAX, HF_IMG_VALID);
    assert_int_equal(hf_get_active_otadata(two), -1);
    two[0] = entry(5, HF_IMG_VALID);
    two[1] = entry(4, HF_IMG_VALID);
    assert_int_equal(hf_get_active_otadata(two), 0);
}

static void test_set_boot_partition_seq(void **state)
{
    (void)state;
    hf_ota_entry_t ot[2];
    /* blank otadata: sector 0 gets seq = slot + 1 */
    assert_int_equal(hf_set_boot_partition(&fl, 1), 0);
    read_ot(ot);
    assert_int_equal(ot[0].ota_seq, 2);
    assert_int_equal(ot[0].ota_state, HF_IMG_NEW);
    assert_int_equal(ot[1].ota_seq, UINT32_MAX);
    /* from seq 1 (slot 0) to slot 1: seq 2 in the other sector */
    assert_int_equal(hf_write_otadata(&fl, &(hf_ota_entry_t){ 0 }, 0), 0);
    hf_ota_entry_t e = entry(1, HF_IMG_VALID);
    assert_int_equal(hf_write_otadata(&fl, &e, 0), 0);
    assert_int_equal(hf_set_boot_partition(&fl, 1), 0);
    read_ot(ot);
    assert_int_equal(ot[1].ota_seq, 2);
    assert_int_equal(ot[1].ota_state, HF_IMG_NEW);
    assert_int_equal(ot[0].ota_seq, 1);
    /* then back to slot 0: seq 3 in sector 0 */
    assert_int_equal(hf_set_boot_partition(&fl, 0), 0);
    read_ot(ot);
    assert_int_equal(ot[0].ota_seq, 3);
    assert_int_equal((ot[0].ota_seq - 1) % 2, 0);
    assert_int_equal(hf_set_boot_partition(&fl, 1), 0);
    read_ot(ot);
    assert_int_equal(ot[1].ota_seq, 4);
}

static void test_bootloader_trial_and_rollback(void **state)
{
    (void)state;
    uint32_t efuse = 0, st;
    hf_ota_entry_t ot[2];
    put_image(&fl, 0, "1.0.0", 0);
    /* blank otadata, no factory: boots ota_0 and writes its seq (set_actual_ota_seq) */
    assert_int_equal(hf_bootloader(&fl, &efuse), 0);
    read_ot(ot);
    assert_int_equal(ot[0].ota_seq, 1);
    assert_int_equal(ot[0].ota_state, HF_IMG_VALID);

    put_image(&fl, 1, "2.0.0", 0);
    assert_int_equal(hf_set_boot_partition(&fl, 1), 0);
    assert_int_equal(hf_bootloader(&fl, &efuse), 1); /* NEW -> booted on trial */
    assert_int_equal(hf_get_state_partition(&fl, 1, &st), 0);
    assert_int_equal(st, HF_IMG_PENDING_VERIFY);
    /* reset before confirmation: aborted, the previous slot boots, and keeps booting */
    assert_int_equal(hf_bootloader(&fl, &efuse), 0);
    assert_int_equal(hf_get_state_partition(&fl, 1, &st), 0);
    assert_int_equal(st, HF_IMG_ABORTED);
    assert_int_equal(hf_bootloader(&fl, &efuse), 0);

    /* again, this time confirmed */
    assert_int_equal(hf_set_boot_partition(&fl, 1), 0);
    assert_int_equal(hf_bootloader(&fl, &efuse), 1);
    assert_int_equal(hf_mark_app_valid(&fl), 0);
    assert_int_equal(hf_bootloader(&fl, &efuse), 1);
    assert_int_equal(hf_bootloader(&fl, &efuse), 1);
    assert_int_equal(hf_get_state_partition(&fl, 1, &st), 0);
    assert_int_equal(st, HF_IMG_VALID);
}

static void test_mark_invalid_rolls_back(void **state)
{
    (void)state;
    uint32_t efuse = 0;
    put_image(&fl, 0, "1.0.0", 0);
    put_image(&fl, 1, "2.0.0", 0);
    assert_int_equal(hf_bootloader(&fl, &efuse), 0);
    /* the running image cannot be invalidated when there is nothing to roll back to */
    hf_ota_entry_t ot[2];
    read_ot(ot);
    assert_int_equal(hf_mark_app_invalid(&fl), -1);
    assert_int_equal(hf_set_boot_partition(&fl, 1), 0);
    assert_int_equal(hf_bootloader(&fl, &efuse), 1);
    assert_int_equal(hf_mark_app_invalid(&fl), 0);
    assert_int_equal(hf_bootloader(&fl, &efuse), 0);
}

static void test_anti_rollback(void **state)
{
    (void)state;
    uint32_t efuse = 0;
    put_image(&fl, 0, "1.0.0", 3);
    assert_int_equal(hf_bootloader(&fl, &efuse), 0);
    assert_int_equal(efuse, 3); /* burnt on the first VALID boot */
    put_image(&fl, 1, "0.9.0", 2);
    assert_int_equal(hf_set_boot_partition(&fl, 1), 0);
    assert_int_equal(hf_bootloader(&fl, &efuse), 0); /* secure_version 2 < eFuse 3: never selected */
}

static void test_torn_image_falls_back(void **state)
{
    (void)state;
    uint32_t efuse = 0;
    uint8_t zero[16] = { 0 };
    put_image(&fl, 0, "1.0.0", 0);
    put_image(&fl, 1, "2.0.0", 0);
    assert_int_equal(hf_bootloader(&fl, &efuse), 0);
    assert_int_equal(hf_set_boot_partition(&fl, 1), 0);
    fl.write(fl.ctx, hf_slot_off(1) + 1000, zero, sizeof(zero)); /* corrupt: the hash no longer matches */
    assert_int_equal(hf_bootloader(&fl, &efuse), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_layout_and_crc, setup),
        cmocka_unit_test_setup(test_entry_selection, setup),
        cmocka_unit_test_setup(test_set_boot_partition_seq, setup),
        cmocka_unit_test_setup(test_bootloader_trial_and_rollback, setup),
        cmocka_unit_test_setup(test_mark_invalid_rolls_back, setup),
        cmocka_unit_test_setup(test_anti_rollback, setup),
        cmocka_unit_test_setup(test_torn_image_falls_back, setup),
    };
    return cmocka_run_group_tests_name("otadata", tests, NULL, NULL);
}
