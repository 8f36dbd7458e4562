/* Delta application through per-key handlers, version ordering, the report document. */
#include "test_support.h"
#include "fa_shadow.h"

static fa_shadow_t sh;
static char seen[8][64];
static int nseen;

static fa_err_t handler(void *user, const char *key, const char *json, size_t len)
{
    (void)user;
    snprintf(seen[nseen++ % 8], 64, "%s=%.*s", key, (int)len, json);
    return FA_OK;
}

static fa_err_t refuse(void *user, const char *key, const char *json, size_t len)
{
    (void)user, (void)key, (void)json, (void)len;
    return FA_FAIL;
}

static int setup(void **state)
{
    (void)state;
    fa_shadow_init(&sh);
    nseen = 0;
    assert_int_equal(fa_shadow_register(&sh, "led", handler, NULL), FA_OK);
    assert_int_equal(fa_shadow_register(&sh, "cfg", handler, NULL), FA_OK);
    assert_int_equal(fa_shadow_register(&sh, "locked", refuse, NULL), FA_OK);
    return 0;
}

static fa_err_t delta(const char *msg, char *rep)
{
    return fa_shadow_on_delta(&sh, msg, strlen(msg), rep, 512);
}

static void test_delta_reaches_handlers_and_is_reported(void **state)
{
    (void)state;
    char rep[512];
    assert_int_equal(delta("{\"state\":{\"led\":\"on\",\"cfg\":{\"a\":[1,2]},\"other\":3},\"version\":5,"
                           "\"timestamp\":1}", rep), FA_OK);
    assert_int_equal(nseen, 2);
    assert_string_equal(seen[0], "led=\"on\"");
    assert_string_equal(seen[1], "cfg={\"a\":[1,2]}");
    assert_string_equal(rep, "\"led\":\"on\",\"cfg\":{\"a\":[1,2]}"); /* no handler for other */
    assert_int_equal(sh.version, 5);
}

static void test_old_deltas_are_ignored(void **state)
{
    (void)state;
    char rep[512];
    assert_int_equal(delta("{\"state\":{\"led\":\"on\"},\"version\":7}", rep), FA_OK);
    assert_int_equal(delta("{\"state\":{\"led\":\"off\"},\"version\":6}", rep), FA_ERR_INVALID_VERSION);
    assert_int_equal(delta("{\"state\":{\"led\":\"off\"},\"version\":7}", rep), FA_ERR_INVALID_VERSION);
    assert_int_equal(nseen, 1);
    assert_int_equal(sh.stale, 2);
    assert_int_equal(delta("{\"state\":{\"led\":\"off\"},\"version\":8}", rep), FA_OK);
    assert_string_equal(seen[1], "led=\"off\"");
}

static void test_refused_and_malformed(void **state)
{
    (void)state;
    char rep[512];
    assert_int_equal(delta("{\"state\":{\"locked\":true},\"version\":2}", rep), FA_OK);
    assert_string_equal(rep, ""); /* the handler refused: nothing reported */
    assert_int_equal(delta("{\"state\":{\"led\":1}}", rep), FA_ERR_INVALID_ARG);
    assert_int_equal(delta("{\"state\":[],\"version\":9}", rep), FA_ERR_INVALID_ARG);
    assert_int_equal(delta("garbage", rep), FA_ERR_INVALID_ARG);
}

static void test_document_applies_desired_reports_delta(void **state)
{
    (void)state;
    char rep[512];
    const char *doc = "{\"state\":{\"desired\":{\"led\":\"on\",\"cfg\":1},\"reported\":{\"cfg\":1},"
                      "\"delta\":{\"led\":\"on\"}},\"metadata\":{},\"version\":3,\"timestamp\":1}";
    assert_int_equal(fa_shadow_on_document(&sh, doc, strlen(doc), rep, sizeof(rep)), FA_OK);
    assert_int_equal(nseen, 2); /* both applied, so local state matches desired after a reboot */
    assert_string_equal(rep, "\"led\":\"on\"");
    const char *sync = "{\"state\":{\"desired\":{\"led\":\"on\"},\"reported\":{\"led\":\"on\"}},\"version\":4}";
    assert_int_equal(fa_shadow_on_document(&sh, sync, strlen(sync), rep, sizeof(rep)), FA_OK);
    assert_string_equal(rep, "");
}

static void test_report_document(void **state)
{
    (void)state;
    char out[256];
    assert_true(fa_shadow_report(out, sizeof(out), "\"led\":\"on\"", 42) > 0);
    assert_string_equal(out, "{\"state\":{\"reported\":{\"led\":\"on\"}},\"seq\":42,\"clientToken\":\"r42\"}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_delta_reaches_handlers_and_is_reported, setup),
        cmocka_unit_test_setup(test_old_deltas_are_ignored, setup),
        cmocka_unit_test_setup(test_refused_and_malformed, setup),
        cmocka_unit_test_setup(test_document_applies_desired_reports_delta, setup),
        cmocka_unit_test_setup(test_report_document, setup),
    };
    return cmocka_run_group_tests_name("shadow", tests, NULL, NULL);
}
