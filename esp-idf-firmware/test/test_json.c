#include "test_support.h"
#include "fa_json.h"

static void test_parse_and_get(void **state)
{
    (void)state;
    const char *js = " {\"a\": 1, \"b\": {\"c\": [1, 2, {\"d\": null}]}, \"s\": \"x\\\"y\\u00e9\", \"t\": true} ";
    fj_tok_t t[32];
    int n = fj_parse(js, strlen(js), t, 32);
    assert_true(n > 0);
    assert_int_equal(t[0].type, FJ_OBJ);
    assert_int_equal(t[0].size, 4);
    int64_t v;
    int a = fj_get(js, t, n, 0, "a");
    assert_true(fj_i64(js, &t[a], &v));
    assert_int_equal(v, 1);
    int b = fj_get(js, t, n, 0, "b");
    assert_int_equal(t[b].type, FJ_OBJ);
    assert_int_equal(t[fj_get(js, t, n, b, "c")].type, FJ_ARR);
    char s[16];
    assert_true(fj_str(js, &t[fj_get(js, t, n, 0, "s")], s, sizeof(s)));
    assert_string_equal(s, "x\"y\xc3\xa9");
    assert_int_equal(t[fj_get(js, t, n, 0, "t")].type, FJ_TRUE);
    assert_int_equal(fj_get(js, t, n, 0, "missing"), -1);
    assert_int_equal(fj_get(js, t, n, 0, "c"), -1); /* nested keys are not top-level */
}

static void test_rejects_invalid(void **state)
{
    (void)state;
    const char *bad[] = { "", "{", "{\"a\":}", "{\"a\":1,}", "[1 2]", "{\"a\":01x}", "nul", "{\"a\":\"\x01\"}",
                          "{} {}", "{\"a\":\"\\q\"}", "{a:1}", "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]" };
    fj_tok_t t[64];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(fj_parse(bad[i], strlen(bad[i]), t, 64), -1);
    }
    /* too many tokens for the array */
    assert_int_equal(fj_parse("[1,2,3,4]", 9, t, 3), -1);
}

static void test_numbers(void **state)
{
    (void)state;
    fj_tok_t t[4];
    int64_t v;
    assert_int_equal(fj_parse("-42", 3, t, 4), 1);
    assert_true(fj_i64("-42", &t[0], &v));
    assert_int_equal(v, -42);
    assert_int_equal(fj_parse("1.5e3", 5, t, 4), 1);
    assert_false(fj_i64("1.5e3", &t[0], &v));
}

static void test_escape(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(fj_escape(out, sizeof(out), "a\"b\\c\n\x01"), 15);
    assert_string_equal(out, "a\\\"b\\\\c\\n\\u0001");
    assert_int_equal(fj_escape(out, 4, "abcdef"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_get),
        cmocka_unit_test(test_rejects_invalid),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
