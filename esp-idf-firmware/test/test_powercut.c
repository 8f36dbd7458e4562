/* The slot state machine with a power cut at every flash step of an update: downloading into the
 * inactive slot, setting it to boot, the bootloader's trial boot, the app's confirmation. After
 * each cut the device boots again and again; an unconfirmed image never boots twice and the good
 * slot is never lost. */
#include "test_support.h"

static memflash_t mf;
static hf_flash_t fl;
static uint8_t img[70000];
static int img_len;

typedef struct {
    int boots_on_trial; /* boots of the new image while PENDING_VERIFY */
    int confirmed;
} history_t;

/* One boot: the bootloader, then what the app does (confirm, or crash before confirming). */
static int boot(uint32_t *efuse, history_t *h, int app_confirms)
{
    int slot = hf_bootloader(&fl, efuse);
    if (mf.dead) {
        return -2; /* the power went during the bootloader: nothing ran */
    }
    assert_true(slot == 0 || slot == 1); /* something always boots */
    uint32_t st = HF_IMG_UNDEFINED;
    hf_get_state_partition(&fl, slot, &st);
    if (slot == 1 && st == HF_IMG_PENDING_VERIFY) {
        h->boots_on_trial++;
        if (app_confirms && hf_mark_app_valid(&fl) == 0 && !mf.dead) {
            h->confirmed = 1;
        }
    }
    return slot;
}

/* Runs the update with the power cut at step `cut`; returns the number of steps it took when the
 * power never went. */
static long run(long cut, int app_confirms)
{
    uint32_t efuse = 0;
    history_t h = { 0, 0 };
    mf_init(&mf, &fl);
    assert_int_equal(fl.erase(fl.ctx, hf_slot_off(0), HF_SECTOR * 20), 0);
    static uint8_t good[70000];
    int n = hf_image_make(good, sizeof(good), "1.0.0", 0, "test", HF_SELFTEST_OK, 65536);
    assert_int_equal(fl.write(fl.ctx, hf_slot_off(0), good, (size_t)n), 0);
    assert_int_equal(boot(&efuse, &h, 0), 0); /* factory boot, seq 1 VALID */
    mf.ops = 0;
    mf.cut = cut;

    /* the update, as the agent and esp_ota_ops do it: erase, write in chunks, set boot */
    int ok = fl.erase(fl.ctx, hf_slot_off(1), ((size_t)img_len + HF_SECTOR - 1) / HF_SECTOR * HF_SECTOR) == 0;
    for (int off = 0; ok && off < img_len; off += 4096) {
        size_t k = img_len - off < 4096 ? (size_t)(img_len - off) : 4096;
        ok = fl.write(fl.ctx, hf_slot_off(1) + (uint32_t)off, img + off, k) == 0;
    }
    hf_image_info_t info;
    ok = ok && hf_image_check(&fl, hf_slot_off(1), HF_SLOT_SIZE, &info) == 0; /* esp_ota_end */
    ok = ok && hf_set_boot_partition(&fl, 1) == 0;
    if (ok) {
        boot(&efuse, &h, app_confirms); /* reboot into the new image */
    }
    long steps = mf.ops;

    /* power comes back (or never went): boot a few more times */
    mf.dead = 0;
    mf.cut = -1;
    int last = -1;
    for (int i = 0; i < 5; i++) {
        int slot = boot(&efuse, &h, app_confirms);
        if (i > 1) {
            assert_int_equal(slot, last); /* settled after at most one trial boot */
        }
        last = slot;
    }
    assert_true(h.boots_on_trial <= 1);
    if (h.confirmed) {
        assert_int_equal(last, 1);
    } else {
        /* the good slot is still there and it is what runs */
        assert_int_equal(last, 0);
        assert_int_equal(hf_image_check(&fl, hf_slot_off(0), HF_SLOT_SIZE, &info), 0);
        assert_string_equal(info.version, "1.0.0");
    }
    if (!app_confirms) {
        assert_false(h.confirmed);
    }
    return steps;
}

static void test_cut_everywhere(void **state)
{
    (void)state;
    img_len = hf_image_make(img, sizeof(img), "2.0.0", 0, "test", HF_SELFTEST_OK, 65536);
    for (int confirms = 0; confirms <= 1; confirms++) {
        long total = run(-1, confirms);
        assert_true(total > 10);
        for (long cut = 0; cut <= total; cut++) {
            run(cut, confirms);
        }
    }
    /* without any cut, a confirming image is what runs in the end */
    run(-1, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_everywhere),
    };
    return cmocka_run_group_tests_name("powercut", tests, NULL, NULL);
}
