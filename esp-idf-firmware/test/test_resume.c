/* Resume across reboots: a power cut in the middle of a download, at several offsets; after the
 * reboot the retained job comes again and the download goes on from the last resume point (offset
 * and SHA-256 state kept in the KV store every FA_OTA_SAVE_EVERY bytes) with a Range request,
 * instead of starting over. The slot then holds the image byte for byte and its hash verifies.
 * Also: the portable SHA-256 against mbedTLS, its state saved and restored. */
#include "fake_port.h"
#include "fa_hash.h"
#include "fa_ota.h"

static void test_hash_matches_mbedtls_and_resumes(void **state)
{
    static uint8_t data[5000];
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t)(i * 131 + 7);
    }
    const size_t lens[] = { 0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 4999, 5000 };
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        uint8_t want[32], got[32];
        fa_sha256_t *h = fa_sha256_start();
        fa_sha256_update(h, data, lens[k]);
        fa_sha256_finish(h, want);
        fa_hash_t s;
        fa_hash_init(&s);
        fa_hash_update(&s, data, lens[k] / 2); /* in two uneven pieces */
        fa_hash_update(&s, data + lens[k] / 2, lens[k] - lens[k] / 2);
        fa_hash_final(&s, got);
        assert_memory_equal(got, want, 32);
    }
    /* saved at a block boundary, restored into a fresh state: the same digest */
    char hex[FA_HASH_STATE_HEX + 1];
    uint8_t a[32], b[32];
    fa_hash_t s, r;
    fa_hash_init(&s);
    fa_hash_update(&s, data, 64 * 40);
    assert_true(fa_hash_save(&s, hex));
    assert_true(fa_hash_load(&r, hex, 64 * 40));
    fa_hash_update(&s, data + 64 * 40, 999);
    fa_hash_update(&r, data + 64 * 40, 999);
    fa_hash_final(&s, a);
    fa_hash_final(&r, b);
    assert_memory_equal(a, b, 32);
    fa_hash_update(&s, data, 3);
    assert_false(fa_hash_save(&s, hex)); /* mid-block: refused */
    assert_false(fa_hash_load(&r, "zz", 64));
}

/* Downloads until the power goes after `cut` bytes, reboots, takes the job again. Returns the
 * offset the second download asked for. */
static uint32_t cut_and_resume(long cut)
{
    char trace[512], v[256];
    start_agent("1.0.0", 0, FA_IMG_VALID);
    F.cut_at = cut;
    send_job(sha_hex, "dev-1");
    if (setjmp(power_cut) == 0) {
        run_ticks(100);
        fail_msg("the power should have gone at byte %ld", cut);
    }
    /* power back: the same flash and NVS, a new boot of the old image */
    A = NULL; /* the dead device's agent is not touched again */
    F.cut_at = -1;
    F.powered_off = 0;
    int opens = F.opens;
    start_agent("1.0.0", 0, FA_IMG_VALID);
    send_job(sha_hex, "dev-1"); /* the retained job comes back */
    run_ticks(100);
    status_trace(trace, sizeof(trace));
    assert_non_null(strstr(trace, "verifying,rebooting")); /* sha256 and app header checked out */
    assert_true(F.set_boot);
    assert_int_equal(F.written, (size_t)image_len);
    assert_memory_equal(F.img, image, (size_t)image_len); /* the slot, byte for byte */
    assert_int_equal(f_kv_get(&F, FA_KV_RESUME, v, sizeof(v)), FA_ERR_NOT_FOUND); /* dropped once done */
    return F.ranges[opens % 8];
}

static void test_power_cut_at_several_offsets(void **state)
{
    /* before the first resume point, on one, between, and in the last read (the image is 64 KiB:
     * the power goes while checking that the server has nothing more) */
    const long cuts[] = { 5000, 16384, 30000, 50001, 65000, 65536 };
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        setup(NULL);
        uint32_t from = cut_and_resume(cuts[i]);
        long last = cuts[i] < image_len ? cuts[i] : image_len - 1; /* no resume point at the very end */
        uint32_t want = (uint32_t)(last / FA_OTA_SAVE_EVERY * FA_OTA_SAVE_EVERY);
        assert_int_equal(from, want); /* the last resume point at or before the cut; 0 before the first */
        assert_int_equal(F.resumes, want ? 1 : 0);
        teardown(NULL);
    }
}

static void test_resume_point_of_another_image_is_ignored(void **state)
{
    char trace[512];
    start_agent("1.0.0", 0, FA_IMG_VALID);
    /* a resume point for the same job id but another image: never continue a stranger's bytes */
    f_kv_set(&F, FA_KV_RESUME, "job-1|0000000000000000000000000000000000000000000000000000000000000000|65824|16384|"
                               "6a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19");
    send_job(sha_hex, "dev-1");
    run_ticks(100);
    status_trace(trace, sizeof(trace));
    assert_non_null(strstr(trace, "rebooting"));
    assert_int_equal(F.ranges[0], 0);
    assert_int_equal(F.resumes, 0);
}

static void test_failed_job_drops_its_resume_point(void **state)
{
    char bad[65], v[256];
    memcpy(bad, sha_hex, 65);
    bad[0] = bad[0] == '0' ? '1' : '0';
    start_agent("1.0.0", 0, FA_IMG_VALID);
    send_job(bad, "dev-1");
    run_ticks(100);
    assert_non_null(strstr(last_on("fl/dev-1/ota/status")->payload, "sha256 mismatch"));
    assert_int_equal(f_kv_get(&F, FA_KV_RESUME, v, sizeof(v)), FA_ERR_NOT_FOUND);
}

/* The handle's state machine, as esp_https_ota's: calls out of order are refused. */
static void test_ota_handle_states(void **state)
{
    static fa_ota_t o;
    fa_refusal_t why;
    fa_manifest_t m = { 0 };
    memset(&o, 0, sizeof(o));
    assert_int_equal(o.state, FA_OTA_STATE_IDLE);
    assert_int_equal(fa_ota_perform(&o, &why), FA_ERR_INVALID_STATE);
    assert_int_equal(fa_ota_finish(&o, &why), FA_ERR_INVALID_STATE);
    assert_int_equal(fa_ota_abort(&o), FA_ERR_INVALID_STATE);
    m.size = (uint32_t)image_len;
    assert_int_equal(fa_ota_begin(&o, &P, &m, 1), FA_OK);
    assert_int_equal(o.state, FA_OTA_STATE_BEGUN);
    assert_int_equal(fa_ota_begin(&o, &P, &m, 1), FA_ERR_INVALID_STATE);
    assert_int_equal(fa_ota_perform(&o, &why), FA_ERR_OTA_IN_PROGRESS);
    assert_int_equal(o.state, FA_OTA_STATE_STREAMING);
    assert_int_equal(fa_ota_finish(&o, &why), FA_ERR_INVALID_STATE); /* not all written */
    assert_int_equal(fa_ota_abort(&o), FA_OK);
    assert_int_equal(o.state, FA_OTA_STATE_IDLE);
    assert_false(F.begun);
}

static int setup_resume(void **state)
{
    with_resume = true;
    return setup(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_matches_mbedtls_and_resumes),
        cmocka_unit_test_setup_teardown(test_power_cut_at_several_offsets, setup_resume, teardown),
        cmocka_unit_test_setup_teardown(test_resume_point_of_another_image_is_ignored, setup_resume, teardown),
        cmocka_unit_test_setup_teardown(test_failed_job_drops_its_resume_point, setup_resume, teardown),
        cmocka_unit_test_setup_teardown(test_ota_handle_states, setup_resume, teardown),
    };
    return cmocka_run_group_tests_name("resume", tests, NULL, NULL);
}
