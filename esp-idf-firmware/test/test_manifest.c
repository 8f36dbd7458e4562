/* Every refusal of an OTA job, HMAC and ECDSA verification, the per-device key derivation. */
#include "test_support.h"
#include "fa_manifest.h"

static const uint8_t KEY[32] = { 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
                                 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7 };
#define NOW 1800000000LL

static const char PUB[] = "-----BEGIN PUBLIC KEY-----\n"
                          "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEezAmbLsUhvBL+ipDvU5ViJ8Byf8b\n"
                          "s999R0NLzBQGMpwo73s8zmH3QX+vC4rZPC2k5rPyDtQY2j4n1oOtF5bSmw==\n"
                          "-----END PUBLIC KEY-----\n";
/* Signed with the matching private key by Python `cryptography` (ECDSA P-256, SHA-256, DER). */
static const char ECDSA_MAN[] =
    "eyJkZXZpY2VfaWQiOiJkZXYtMSIsImpvYl9pZCI6ImpvYi1lIiwidmVyc2lvbiI6IjIuMC4wIiwiaHciOiJjMyIsInVybCI6Imh0"
    "dHA6Ly8xMjcuMC4wLjE6MS9mdy5iaW4iLCJzaGEyNTYiOiIwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw"
    "MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwIiwic2l6ZSI6MTAwMCwic2VjdXJlX3ZlcnNpb24iOjEsImlzc3VlZF9hdCI6MTcwMDAw"
    "MDAwMCwiZXhwaXJlc19hdCI6NDEwMjQ0NDgwMH0=";
static const char ECDSA_SIG[] =
    "MEUCIEfghtD2EFBC8wpv0yxNDqZIBod1kBoarxezXEdS8RX0AiEA+duHEBCuTNVP9BAgntd4lB8uB4J4nU9INa4jbWfxAdc=";

static fa_key_t keys[2];
static char retired[FA_MAX_RETIRED][FA_KID_MAX];

static fa_verify_ctx_t vctx(void)
{
    keys[0] = (fa_key_t){ "k1", KEY, sizeof(KEY), NULL, 0 };
    keys[1] = (fa_key_t){ "e1", NULL, 0, (const uint8_t *)PUB, sizeof(PUB) };
    fa_verify_ctx_t v = { "dev-1", "c3", 2, NOW, keys, 2, retired, 0 };
    return v;
}

static job_spec_t good(void)
{
    job_spec_t s = { "job-1", "dev-1", "c3", "2.0.0", "http://127.0.0.1:1/fw.bin", NULL, 1000, 2, NOW + 600, NULL, NULL };
    return s;
}

static fa_refusal_t check_spec(const job_spec_t *s, const uint8_t *key, fa_manifest_t *m)
{
    char job[2048];
    int n = make_job(job, sizeof(job), key, 32, s);
    fa_verify_ctx_t v = vctx();
    return fa_job_check(job, (size_t)n, &v, m);
}

static void test_good_hmac_job(void **state)
{
    (void)state;
    fa_manifest_t m;
    job_spec_t s = good();
    assert_int_equal(check_spec(&s, KEY, &m), FA_REFUSE_NONE);
    assert_string_equal(m.job_id, "job-1");
    assert_string_equal(m.version, "2.0.0");
    assert_string_equal(m.url, "http://127.0.0.1:1/fw.bin");
    assert_int_equal(m.size, 1000);
    assert_int_equal(m.secure_version, 2);
    assert_string_equal(m.rollout_id, "r1");
}

static void test_refusals(void **state)
{
    (void)state;
    fa_manifest_t m;
    job_spec_t s;
    uint8_t other[32] = { 1 };

    s = good();
    assert_int_equal(check_spec(&s, other, &m), FA_REFUSE_SIGNATURE);
    assert_string_equal(m.job_id, "job-1"); /* known, so the refusal can name the job */
    s = good(), s.device_id = "dev-2";
    assert_int_equal(check_spec(&s, KEY, &m), FA_REFUSE_DEVICE);
    s = good(), s.hw = "s3";
    assert_int_equal(check_spec(&s, KEY, &m), FA_REFUSE_HW);
    s = good(), s.expires_at = NOW;
    assert_int_equal(check_spec(&s, KEY, &m), FA_REFUSE_EXPIRED);
    s = good(), s.expires_at = NOW - 1;
    assert_int_equal(check_spec(&s, KEY, &m), FA_REFUSE_EXPIRED);
    s = good(), s.secure_version = 1;
    assert_int_equal(check_spec(&s, KEY, &m), FA_REFUSE_SECURE_VERSION);
    s = good(), s.envelope_job_id = "job-other";
    assert_int_equal(check_spec(&s, KEY, &m), FA_REFUSE_JOB_ID);
    s = good(), s.sha_hex = "zz";
    assert_int_equal(check_spec(&s, KEY, &m), FA_REFUSE_MALFORMED);
    s = good(), s.size = 0;
    assert_int_equal(check_spec(&s, KEY, &m), FA_REFUSE_MALFORMED);
}

static void test_tampered_manifest(void **state)
{
    (void)state;
    char job[2048];
    fa_manifest_t m;
    job_spec_t s = good();
    int n = make_job(job, sizeof(job), KEY, 32, &s);
    /* flip one base64 character of the manifest: still valid base64, different bytes */
    char *man = strstr(job, "\"manifest\":\"") + 12;
    man[10] = man[10] == 'A' ? 'B' : 'A';
    fa_verify_ctx_t v = vctx();
    assert_int_equal(fa_job_check(job, (size_t)n, &v, &m), FA_REFUSE_SIGNATURE);
}

static void test_malformed_envelopes(void **state)
{
    (void)state;
    fa_manifest_t m;
    fa_verify_ctx_t v = vctx();
    const char *bad[] = {
        "not json",
        "[]",
        "{\"alg\":\"hmac-sha256\",\"kid\":\"k1\",\"manifest\":\"e30=\",\"sig\":\"AAAA\"}",           /* no job_id */
        "{\"job_id\":\"j\",\"alg\":\"hmac-sha256\",\"kid\":\"k1\",\"manifest\":\"!!!\",\"sig\":\"AAAA\"}", /* bad base64 */
        "{\"job_id\":\"j\",\"alg\":\"hmac-sha256\",\"kid\":\"k1\",\"sig\":\"AAAA\"}",                 /* no manifest */
        "{\"job_id\":\"j\",\"alg\":\"hmac-sha256\",\"manifest\":\"e30=\",\"sig\":\"AAAA\"}",           /* no kid */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(fa_job_check(bad[i], strlen(bad[i]), &v, &m), FA_REFUSE_MALFORMED);
    }
    const char *alg = "{\"job_id\":\"j\",\"alg\":\"rsa\",\"kid\":\"k1\",\"manifest\":\"e30=\",\"sig\":\"AAAA\"}";
    assert_int_equal(fa_job_check(alg, strlen(alg), &v, &m), FA_REFUSE_ALG);
    keys[0].hmac_key = NULL; /* a device without an HMAC key under k1 refuses hmac jobs signed under it */
    job_spec_t s = good();
    char job[2048];
    int n = make_job(job, sizeof(job), KEY, 32, &s);
    assert_int_equal(fa_job_check(job, (size_t)n, &v, &m), FA_REFUSE_ALG);
}

static int ecdsa_job(char *out, size_t cap, const char *man_b64)
{
    return snprintf(out, cap, "{\"job_id\":\"job-e\",\"alg\":\"ecdsa-p256\",\"kid\":\"e1\",\"manifest\":\"%s\",\"sig\":\"%s\"}",
                    man_b64, ECDSA_SIG);
}

static void test_ecdsa(void **state)
{
    (void)state;
    char job[2048], tampered[sizeof(ECDSA_MAN)];
    fa_manifest_t m;
    fa_verify_ctx_t v = vctx();
    v.secure_version = 1;
    int n = ecdsa_job(job, sizeof(job), ECDSA_MAN);
    assert_int_equal(fa_job_check(job, (size_t)n, &v, &m), FA_REFUSE_NONE);
    assert_string_equal(m.version, "2.0.0");
    memcpy(tampered, ECDSA_MAN, sizeof(tampered));
    tampered[20] = tampered[20] == 'A' ? 'B' : 'A';
    n = ecdsa_job(job, sizeof(job), tampered);
    assert_int_equal(fa_job_check(job, (size_t)n, &v, &m), FA_REFUSE_SIGNATURE);
    keys[1].ecdsa_pub = NULL; /* no signing key configured under e1 */
    n = ecdsa_job(job, sizeof(job), ECDSA_MAN);
    assert_int_equal(fa_job_check(job, (size_t)n, &v, &m), FA_REFUSE_ALG);
}

/* Rotation: the kid picks the key; an unknown kid and a retired one are refused with their reason;
 * a new key is accepted once the device has it. */
static void test_kid_selects_the_key(void **state)
{
    static const uint8_t KEY2[32] = { 2 };
    fa_manifest_t m;
    char job[2048];
    job_spec_t s = good();
    s.kid = "k2";
    int n = make_job(job, sizeof(job), KEY2, 32, &s);
    fa_verify_ctx_t v = vctx();
    assert_int_equal(fa_job_check(job, (size_t)n, &v, &m), FA_REFUSE_KEY_UNKNOWN);
    assert_string_equal(fa_refusal_str(FA_REFUSE_KEY_UNKNOWN), "unknown key id");
    fa_key_t ring[3] = { keys[0], keys[1], { "k2", KEY2, 32, NULL, 0 } };
    v.keys = ring;
    v.nkeys = 3; /* learned k2 */
    assert_int_equal(fa_job_check(job, (size_t)n, &v, &m), FA_REFUSE_NONE);
    s.kid = "k1"; /* k1's key under the wrong kid does not verify */
    n = make_job(job, sizeof(job), KEY2, 32, &s);
    assert_int_equal(fa_job_check(job, (size_t)n, &v, &m), FA_REFUSE_SIGNATURE);
    n = make_job(job, sizeof(job), KEY, 32, &s);
    assert_int_equal(fa_job_check(job, (size_t)n, &v, &m), FA_REFUSE_NONE);
    snprintf(retired[0], sizeof(retired[0]), "k1");
    v.nretired = 1; /* retired k1, even though its key is still held */
    assert_int_equal(fa_job_check(job, (size_t)n, &v, &m), FA_REFUSE_KEY_RETIRED);
    assert_string_equal(fa_refusal_str(FA_REFUSE_KEY_RETIRED), "signed with a retired key");
    assert_string_equal(m.job_id, "job-1"); /* known, so the refusal can be reported for it */
}

static void test_device_key_derivation(void **state)
{
    (void)state;
    /* HKDF-SHA256(IKM = 00..1f, salt = empty, info = "fleet-ota-v1:dev-1", L = 32), from Python. */
    uint8_t master[32], out[32];
    char hex[65];
    for (int i = 0; i < 32; i++) {
        master[i] = (uint8_t)i;
    }
    assert_int_equal(fa_derive_device_key(master, 32, "dev-1", out), FA_OK);
    hex_of(out, 32, hex);
    assert_string_equal(hex, "8321509f73d29f8be79a5528f38ed390f52dc27cdaf453d9ff3bc9d60dc32e1c");
}

static void test_app_desc(void **state)
{
    (void)state;
    uint8_t img[8192];
    fa_app_desc_t d;
    int n = hf_image_make(img, sizeof(img), "3.1.4", 5, "proj", HF_SELFTEST_OK, 4096);
    assert_true(n > 0);
    assert_true(fa_app_desc_parse(img, (size_t)n, &d));
    assert_string_equal(d.version, "3.1.4");
    assert_string_equal(d.project_name, "proj");
    assert_int_equal(d.secure_version, 5);
    img[FA_APP_DESC_OFFSET] ^= 1;
    assert_false(fa_app_desc_parse(img, (size_t)n, &d));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_hmac_job),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_tampered_manifest),
        cmocka_unit_test(test_malformed_envelopes),
        cmocka_unit_test(test_ecdsa),
        cmocka_unit_test(test_kid_selects_the_key),
        cmocka_unit_test(test_device_key_derivation),
        cmocka_unit_test(test_app_desc),
    };
    return cmocka_run_group_tests_name("manifest", tests, NULL, NULL);
}
