/* The agent over a fake port: the whole OTA flow, sha mismatch, Range resume, trial boot
 * confirmation and timeout, rolled_back after a reboot, seq across reboots, the debug stream. */
#include "test_support.h"

#define NOW 1800000000LL
static const uint8_t KEY[32] = { 9 };

typedef struct {
    char topic[160];
    char payload[3072];
    int qos, retain, mid;
} pub_t;

typedef struct {
    int64_t now_s, ms;
    char kk[8][16], kv[8][256];
    int nkv;
    pub_t pubs[96];
    int npubs, next_mid;
    int slot;
    uint32_t state;
    uint8_t img[70000];
    size_t written;
    int begun, set_boot, rebooted, marked_valid, marked_invalid;
    const uint8_t *src;
    size_t src_len, src_pos;
    long break_at;
    int opens;
    uint32_t ranges[8];
} fake_t;

static fake_t F;
static fa_port_t P;
static fa_agent_t *A;
static uint8_t image[70000];
static int image_len;
static char sha_hex[65];

static int64_t f_now(void *c) { return ((fake_t *)c)->now_s; }
static int64_t f_ms(void *c) { return ((fake_t *)c)->ms; }
static int kv_idx(const char *k)
{
    for (int i = 0; i < F.nkv; i++) {
        if (!strcmp(F.kk[i], k)) return i;
    }
    return -1;
}
static fa_err_t f_kv_get(void *c, const char *k, char *b, size_t cap)
{
    (void)c;
    int i = kv_idx(k);
    if (i < 0 || !F.kv[i][0]) return FA_ERR_NOT_FOUND;
    snprintf(b, cap, "%s", F.kv[i]);
    return FA_OK;
}
static fa_err_t f_kv_set(void *c, const char *k, const char *v)
{
    (void)c;
    int i = kv_idx(k);
    if (i < 0) {
        i = F.nkv++;
        snprintf(F.kk[i], 16, "%s", k);
    }
    snprintf(F.kv[i], 256, "%s", v);
    return FA_OK;
}
static fa_err_t f_kv_erase(void *c, const char *k)
{
    (void)c;
    int i = kv_idx(k);
    if (i >= 0) F.kv[i][0] = '\0';
    return FA_OK;
}
static int f_pub(void *c, const char *t, const void *d, size_t n, int qos, int retain)
{
    (void)c;
    pub_t *p = &F.pubs[F.npubs++ % 96];
    snprintf(p->topic, sizeof(p->topic), "%s", t);
    snprintf(p->payload, sizeof(p->payload), "%.*s", (int)n, (const char *)d);
    p->qos = qos, p->retain = retain, p->mid = ++F.next_mid;
    return p->mid;
}
static fa_err_t f_sub(void *c, const char *t, int q) { (void)c, (void)t, (void)q; return FA_OK; }
static int f_slot(void *c) { return ((fake_t *)c)->slot; }
static fa_img_state_t f_state(void *c) { return ((fake_t *)c)->state; }
static fa_err_t f_begin(void *c, size_t n) { (void)n; ((fake_t *)c)->begun = 1; ((fake_t *)c)->written = 0; return FA_OK; }
static fa_err_t f_write(void *c, const void *d, size_t n)
{
    fake_t *f = c;
    assert_true(f->written + n <= sizeof(f->img));
    memcpy(f->img + f->written, d, n);
    f->written += n;
    return FA_OK;
}
static fa_err_t f_end(void *c) { (void)c; return FA_OK; }
static void f_abort(void *c) { ((fake_t *)c)->begun = 0; }
static fa_err_t f_set_boot(void *c) { ((fake_t *)c)->set_boot = 1; return FA_OK; }
static fa_err_t f_valid(void *c) { ((fake_t *)c)->marked_valid = 1; return FA_OK; }
static void f_invalid(void *c) { ((fake_t *)c)->marked_invalid = 1; }
static void f_reboot(void *c) { ((fake_t *)c)->rebooted = 1; }
static fa_err_t f_open(void *c, const char *url, uint32_t off, uint32_t *len)
{
    fake_t *f = c;
    (void)url;
    f->ranges[f->opens++ % 8] = off;
    f->src_pos = off;
    *len = (uint32_t)(f->src_len - off);
    return FA_OK;
}
static int f_read(void *c, void *b, size_t n)
{
    fake_t *f = c;
    if (f->break_at >= 0 && f->src_pos >= (size_t)f->break_at) {
        f->break_at = -1; /* the connection drops once, here */
        return -1;
    }
    size_t left = f->src_len - f->src_pos;
    if (f->break_at >= 0 && (size_t)f->break_at - f->src_pos < left) left = (size_t)f->break_at - f->src_pos;
    if (n > left) n = left;
    memcpy(b, f->src + f->src_pos, n);
    f->src_pos += n;
    return (int)n;
}
static void f_close(void *c) { (void)c; }

static void start_agent(const char *fw, int slot, uint32_t state)
{
    F.slot = slot;
    F.state = state;
    F.npubs = 0;
    fa_config_t cfg = { 0 };
    cfg.port = &P;
    cfg.device_id = "dev-1";
    cfg.hw = "c3";
    cfg.fw_version = fw;
    cfg.secure_version = 1;
    cfg.topic_prefix = "fl";
    cfg.hmac_key = KEY;
    cfg.hmac_key_len = 32;
    if (A) fa_agent_destroy(A);
    assert_int_equal(fa_agent_create(&cfg, &A), FA_OK);
    fa_agent_mqtt_connected(A);
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    F.now_s = NOW;
    F.ms = 1000;
    F.break_at = -1;
    P = (fa_port_t){ &F, f_now, f_ms, f_kv_get, f_kv_set, f_kv_erase, f_pub, f_sub, f_slot, f_state, f_begin,
                     f_write, f_end, f_abort, f_set_boot, f_valid, f_invalid, f_reboot, f_open, f_read, f_close,
                     NULL, NULL, NULL, NULL, NULL };
    image_len = hf_image_make(image, sizeof(image), "2.0.0", 1, "test", HF_SELFTEST_OK, 65536);
    uint8_t d[32];
    fa_sha256_t *h = fa_sha256_start();
    fa_sha256_update(h, image, (size_t)image_len);
    fa_sha256_finish(h, d);
    hex_of(d, 32, sha_hex);
    F.src = image;
    F.src_len = (size_t)image_len;
    A = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fa_agent_destroy(A);
    A = NULL;
    return 0;
}

static void send_job(const char *sha, const char *device)
{
    char job[2048];
    job_spec_t s = { "job-1", device, "c3", "2.0.0", "http://x/fw.bin", sha, (uint32_t)image_len, 1, NOW + 600, NULL, NULL };
    int n = make_job(job, sizeof(job), KEY, 32, &s);
    fa_agent_mqtt_message(A, "fl/dev-1/ota/job", job, (size_t)n);
}

/* The states published on ota/status, in order, as "state" or "state:progress". */
static void status_trace(char *out, size_t cap)
{
    out[0] = '\0';
    for (int i = 0; i < F.npubs; i++) {
        if (strcmp(F.pubs[i].topic, "fl/dev-1/ota/status") != 0) continue;
        const char *s = strstr(F.pubs[i].payload, "\"state\":\"") + 9;
        snprintf(out + strlen(out), cap - strlen(out), "%s%.*s", out[0] ? "," : "", (int)(strchr(s, '"') - s), s);
    }
}

static const pub_t *last_on(const char *topic)
{
    for (int i = F.npubs - 1; i >= 0; i--) {
        if (!strcmp(F.pubs[i].topic, topic)) return &F.pubs[i];
    }
    return NULL;
}

static void run_ticks(int n)
{
    for (int i = 0; i < n; i++) {
        F.ms += 10;
        fa_agent_tick(A);
    }
}

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
    };
    return cmocka_run_group_tests_name("ota", tests, NULL, NULL);
}
