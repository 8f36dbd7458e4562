/* The agent over a fake port: the whole OTA flow, sha mismatch, Range resume, trial boot
 * confirmation and timeout, rolled_back after a reboot, seq across reboots, the debug stream. */
#include "fake_port.h"

static void test_good_update(void **state)
{
    (void)state;
    char trace[512], v[128];
    start_agent("1.0.0", 0, FA_IMG_VALID);
    send_job(sha_hex, "dev-1");
    run_ticks(20);
    status_trace(trace, sizeof(trace));
    assert_int_equal(strncmp(trace, "downloading,downloading,", 24), 0); /* 0 %, then progress */
    assert_non_null(strstr(trace, "downloading,verifying,rebooting"));
    assert_non_null(strstr(last_on("fl/dev-1/ota/status")->payload, "\"progress\":100"));
    assert_int_equal(F.written, (size_t)image_len);
    assert_memory_equal(F.img, image, (size_t)image_len); /* streamed into the inactive slot */
    assert_true(F.set_boot);
    assert_int_equal(f_kv_get(&F, "ota_pend", v, sizeof(v)), FA_OK);
    assert_string_equal(v, "job-1|1|2.0.0");
    assert_false(F.rebooted);
    fa_agent_mqtt_published(A, last_on("fl/dev-1/ota/status")->mid); /* "rebooting" is acknowledged */
    run_ticks(1);
    assert_true(F.rebooted);
}

static void test_sha_mismatch_is_rejected(void **state)
{
    (void)state;
    char trace[512], bad[65], v[128];
    memcpy(bad, sha_hex, 65);
    bad[0] = bad[0] == '0' ? '1' : '0';
    start_agent("1.0.0", 0, FA_IMG_VALID);
    send_job(bad, "dev-1");
    run_ticks(20);
    status_trace(trace, sizeof(trace));
    assert_non_null(strstr(trace, "verifying,rejected"));
    assert_non_null(strstr(last_on("fl/dev-1/ota/status")->payload, "sha256 mismatch"));
    assert_false(F.set_boot);
    assert_false(F.begun); /* the slot write was aborted */
    fa_agent_mqtt_published(A, last_on("fl/dev-1/ota/status")->mid);
    assert_int_equal(f_kv_get(&F, "ota_done", v, sizeof(v)), FA_OK);
    assert_string_equal(v, "job-1");
}

static void test_refusal_is_published(void **state)
{
    (void)state;
    start_agent("1.0.0", 0, FA_IMG_VALID);
    send_job(sha_hex, "dev-2");
    const pub_t *p = last_on("fl/dev-1/ota/status");
    assert_non_null(p);
    assert_non_null(strstr(p->payload, "\"state\":\"rejected\""));
    assert_non_null(strstr(p->payload, "\"error\":\"wrong device id\""));
    assert_non_null(strstr(p->payload, "\"job_id\":\"job-1\""));
    assert_false(F.begun);
}

static void test_resumes_with_range(void **state)
{
    (void)state;
    char trace[512];
    F.break_at = 10000;
    start_agent("1.0.0", 0, FA_IMG_VALID);
    send_job(sha_hex, "dev-1");
    run_ticks(30);
    status_trace(trace, sizeof(trace));
    assert_non_null(strstr(trace, "rebooting"));
    assert_int_equal(F.opens, 2);
    assert_int_equal(F.ranges[0], 0);
    assert_true(F.ranges[1] > 0 && F.ranges[1] <= 10000); /* from where it broke */
    assert_memory_equal(F.img, image, (size_t)image_len);
}

static void test_trial_confirmed_by_heartbeat_ack(void **state)
{
    (void)state;
    char v[128];
    f_kv_set(&F, "ota_pend", "job-1|1|2.0.0");
    start_agent("2.0.0", 1, FA_IMG_PENDING_VERIFY);
    const pub_t *hb = last_on("fl/dev-1/heartbeat");
    assert_non_null(hb);
    assert_null(last_on("fl/dev-1/ota/status")); /* nothing claimed before the ack */
    send_job(sha_hex, "dev-1"); /* the retained job again: ignored */
    assert_false(F.begun);
    fa_agent_mqtt_published(A, hb->mid);
    assert_true(F.marked_valid);
    const pub_t *st = last_on("fl/dev-1/ota/status");
    assert_non_null(strstr(st->payload, "\"state\":\"succeeded\""));
    assert_non_null(strstr(st->payload, "\"fw\":\"2.0.0\""));
    fa_agent_mqtt_published(A, st->mid);
    assert_int_equal(f_kv_get(&F, "ota_done", v, sizeof(v)), FA_OK);
    assert_string_equal(v, "job-1");
    assert_int_equal(f_kv_get(&F, "ota_pend", v, sizeof(v)), FA_ERR_NOT_FOUND);
}

static void test_trial_times_out(void **state)
{
    (void)state;
    f_kv_set(&F, "ota_pend", "job-1|1|2.0.0");
    start_agent("2.0.0", 1, FA_IMG_PENDING_VERIFY);
    F.ms += 59000;
    fa_agent_tick(A);
    assert_false(F.marked_invalid);
    F.ms += 1500;
    fa_agent_tick(A);
    assert_true(F.marked_invalid);
    assert_false(F.marked_valid);
}

static void test_rolled_back_reported_once(void **state)
{
    (void)state;
    char v[128];
    f_kv_set(&F, "ota_pend", "job-1|1|2.0.0");
    start_agent("1.0.0", 0, FA_IMG_VALID); /* the bootloader went back to slot 0 */
    const pub_t *st = last_on("fl/dev-1/ota/status");
    assert_non_null(st);
    assert_non_null(strstr(st->payload, "\"state\":\"rolled_back\""));
    assert_non_null(strstr(st->payload, "\"job_id\":\"job-1\""));
    assert_non_null(strstr(st->payload, "\"fw\":\"1.0.0\""));
    fa_agent_mqtt_published(A, st->mid);
    assert_int_equal(f_kv_get(&F, "ota_done", v, sizeof(v)), FA_OK);
    int before = F.npubs;
    send_job(sha_hex, "dev-1"); /* the retained job must not be taken again */
    assert_int_equal(F.npubs, before);
    assert_false(F.begun);
}

static void test_seq_survives_reboot_and_debug_stream(void **state)
{
    (void)state;
    start_agent("1.0.0", 0, FA_IMG_VALID);
    const char *doc = "{\"state\":{\"desired\":{\"debug\":{\"enabled\":true,\"until\":1800000010}},"
                      "\"delta\":{\"debug\":{\"enabled\":true,\"until\":1800000010}}},\"version\":4}";
    fa_agent_mqtt_message(A, "fl/dev-1/shadow/get/accepted", doc, strlen(doc));
    const pub_t *r = last_on("fl/dev-1/shadow/update");
    assert_non_null(strstr(r->payload, "\"seq\":1800000000,")); /* first report: from the clock */
    assert_non_null(strstr(r->payload, "\"reported\":{\"debug\":{\"enabled\":true"));
    fa_agent_log_line(A, "hello from the app");
    run_ticks(1);
    const pub_t *logs = last_on("fl/dev-1/logs");
    assert_non_null(logs);
    assert_int_equal(logs->qos, 0);
    assert_non_null(strstr(logs->payload, "hello from the app"));
    /* reboot: the seq goes on from the stored value */
    start_agent("1.0.0", 0, FA_IMG_VALID);
    const char *delta = "{\"state\":{\"debug\":{\"enabled\":false,\"until\":0}},\"version\":5}";
    fa_agent_mqtt_message(A, "fl/dev-1/shadow/update/delta", delta, strlen(delta));
    assert_non_null(strstr(last_on("fl/dev-1/shadow/update")->payload, "\"seq\":1800000001,"));
    /* the stream stops at until even if nobody closes it */
    start_agent("1.0.0", 0, FA_IMG_VALID);
    const char *d2 = "{\"state\":{\"debug\":{\"enabled\":true,\"until\":1800000005}},\"version\":6}";
    fa_agent_mqtt_message(A, "fl/dev-1/shadow/update/delta", d2, strlen(d2));
    F.now_s = NOW + 5;
    fa_agent_log_line(A, "too late");
    run_ticks(30);
    assert_null(last_on("fl/dev-1/logs"));
}

static void test_device_id_must_be_topic_safe(void **state)
{
    (void)state;
    const char *bad[] = { "", "a/b", "+", "#", "$sys", "-lead", "x y",
                          "a123456789012345678901234567890123456789012345678901234567890123456789" };
    fa_config_t cfg = { 0 };
    fa_agent_t *a = NULL;
    cfg.port = &P;
    cfg.hw = "c3";
    cfg.fw_version = "1.0.0";
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cfg.device_id = bad[i];
        assert_int_equal(fa_agent_create(&cfg, &a), FA_ERR_INVALID_ARG);
    }
    cfg.device_id = "esp32c3-a1:b2_c3.d4-e5";
    assert_int_equal(fa_agent_create(&cfg, &a), FA_OK);
    fa_agent_destroy(a);
}

/* Rotation through the agent: a job under an unknown kid is refused with that reason, accepted once
 * the device has learned the key; a retired kid is refused with its own reason. */
static void test_kid_rotation(void **state)
{
    static const uint8_t KEY2[32] = { 5 };
    char job[2048];
    job_spec_t s = { "job-2", "dev-1", "c3", "1.0.0", "http://x/fw.bin", sha_hex, (uint32_t)image_len, 1, NOW + 600,
                     NULL, "k2" };
    start_agent("1.0.0", 0, FA_IMG_VALID);
    int n = make_job(job, sizeof(job), KEY2, 32, &s);
    fa_agent_mqtt_message(A, "fl/dev-1/ota/job", job, (size_t)n);
    assert_non_null(strstr(last_on("fl/dev-1/ota/status")->payload, "\"error\":\"unknown key id\""));
    fa_key_t k2 = { "k2", KEY2, 32, NULL, 0 };
    assert_int_equal(fa_agent_add_key(A, &k2), FA_OK);
    assert_int_equal(fa_agent_retire_key(A, "k1"), FA_OK);
    s.job_id = "job-3"; /* the running version: succeeded without a download */
    n = make_job(job, sizeof(job), KEY2, 32, &s);
    fa_agent_mqtt_message(A, "fl/dev-1/ota/job", job, (size_t)n);
    assert_non_null(strstr(last_on("fl/dev-1/ota/status")->payload, "\"state\":\"succeeded\""));
    s.job_id = "job-4";
    s.kid = "k1";
    n = make_job(job, sizeof(job), KEY, 32, &s);
    fa_agent_mqtt_message(A, "fl/dev-1/ota/job", job, (size_t)n);
    const char *p = last_on("fl/dev-1/ota/status")->payload;
    assert_non_null(strstr(p, "\"job_id\":\"job-4\""));
    assert_non_null(strstr(p, "\"error\":\"signed with a retired key\""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sha_mismatch_is_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusal_is_published, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resumes_with_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trial_confirmed_by_heartbeat_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trial_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rolled_back_reported_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_survives_reboot_and_debug_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_id_must_be_topic_safe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kid_rotation, setup, teardown),
    };
    return cmocka_run_group_tests_name("ota", tests, NULL, NULL);
}
