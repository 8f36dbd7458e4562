/* A fake port for the agent tests: KV, publishes, the update slot and an HTTP source in memory.
 * F survives start_agent(), as flash and NVS survive a reboot. */
#ifndef FAKE_PORT_H
#define FAKE_PORT_H

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
    int opens, resumes;
    long cut_at;       /* >= 0: the power goes once the source has served this many bytes */
    int powered_off;
    uint32_t ranges[8];
} fake_t;

static fake_t F;
static jmp_buf power_cut;
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
/* esp_ota_begin erases what the image needs */
static fa_err_t f_begin(void *c, size_t n)
{
    fake_t *f = c;
    f->begun = 1;
    f->written = 0;
    memset(f->img, 0xFF, sizeof(f->img));
    return FA_OK;
}
/* esp_ota_resume: the bytes before off stay */
static fa_err_t f_resume(void *c, size_t n, size_t off)
{
    fake_t *f = c;
    f->begun = 1;
    f->written = off;
    f->resumes++;
    return FA_OK;
}
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
    if (f->cut_at >= 0) {
        if (f->src_pos >= (size_t)f->cut_at) {
            f->powered_off = 1;
            longjmp(power_cut, 1); /* the CPU stops here: nothing after this line of the device runs */
        }
        if (n > (size_t)f->cut_at - f->src_pos) n = (size_t)f->cut_at - f->src_pos;
    }
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

static bool with_resume; /* a port with esp_ota_resume */

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    F.now_s = NOW;
    F.ms = 1000;
    F.break_at = -1;
    F.cut_at = -1;
    P = (fa_port_t){ &F, f_now, f_ms, f_kv_get, f_kv_set, f_kv_erase, f_pub, f_sub, f_slot, f_state, f_begin,
                     f_write, f_end, f_abort, f_set_boot, f_valid, f_invalid, f_reboot, f_open, f_read, f_close,
                     NULL, NULL, NULL, NULL, NULL };
    if (with_resume) P.ota_resume = f_resume;
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

#endif
