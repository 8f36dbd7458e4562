/* The debug log stream: token-bucket rate limit, batches, drop counts, stop at until. */
#include "test_support.h"
#include "fa_json.h"
#include "fa_logstream.h"

static fa_logstream_t ls;

static int count_lines(const char *payload, int64_t *dropped)
{
    fj_tok_t t[64];
    int n = fj_parse(payload, strlen(payload), t, 64);
    assert_true(n > 0);
    int l = fj_get(payload, t, n, 0, "lines");
    int d = fj_get(payload, t, n, 0, "dropped");
    assert_true(l >= 0 && d >= 0);
    assert_true(fj_i64(payload, &t[d], dropped));
    return t[l].size;
}

static void test_rate_limit_and_drops(void **state)
{
    (void)state;
    char out[4096];
    int64_t dropped;
    fa_ls_init(&ls, 10, 10, 8); /* 10 lines/s, burst 10, 8 per batch */
    fa_ls_set(&ls, true, 1000, 0);
    for (int i = 0; i < 100; i++) {
        char line[32];
        snprintf(line, sizeof(line), "line %d\n", i);
        fa_ls_push(&ls, line, 500);
    }
    /* the ring holds FA_LS_RING lines, the rest are counted as dropped */
    assert_int_equal(ls.count, FA_LS_RING);
    assert_true(fa_ls_batch(&ls, 500, 0, out, sizeof(out)) > 0);
    assert_int_equal(count_lines(out, &dropped), 8);
    assert_int_equal(dropped, 100 - FA_LS_RING);
    assert_non_null(strstr(out, "\"line 0\""));
    /* too soon for the next batch */
    assert_int_equal(fa_ls_batch(&ls, 500, 100, out, sizeof(out)), 0);
    /* 250 ms later: 2 tokens left from the burst plus 2.5 refilled */
    assert_true(fa_ls_batch(&ls, 500, 250, out, sizeof(out)) > 0);
    assert_int_equal(count_lines(out, &dropped), 4);
    assert_int_equal(dropped, 0);
    /* over 3 seconds no more than rate * time lines leave */
    int sent = 0;
    for (int64_t ms = 500; ms <= 3500; ms += 250) {
        if (fa_ls_batch(&ls, 500, ms, out, sizeof(out)) > 0) {
            sent += count_lines(out, &dropped);
        }
    }
    assert_true(sent <= 31);
    assert_int_equal(sent, FA_LS_RING - 12);
}

static void test_stops_at_until(void **state)
{
    (void)state;
    char out[4096];
    fa_ls_init(&ls, 100, 100, 50);
    fa_ls_push(&ls, "before the session", 10);
    assert_int_equal(ls.count, 0); /* nothing is kept without a session */
    fa_ls_set(&ls, true, 20, 0);
    fa_ls_push(&ls, "during", 10);
    assert_int_equal(ls.count, 1);
    /* cut off: nobody closes the session, the deadline does */
    assert_int_equal(fa_ls_batch(&ls, 20, 1000, out, sizeof(out)), 0);
    assert_false(ls.enabled);
    fa_ls_push(&ls, "after", 21);
    assert_int_equal(ls.count, 0);
}

static void test_escapes_lines(void **state)
{
    (void)state;
    char out[512];
    int64_t dropped;
    fa_ls_init(&ls, 10, 10, 10);
    fa_ls_set(&ls, true, 100, 0);
    fa_ls_push(&ls, "quote \" and \\ tab\t", 1);
    assert_true(fa_ls_batch(&ls, 1, 1000, out, sizeof(out)) > 0);
    assert_int_equal(count_lines(out, &dropped), 1);
    assert_non_null(strstr(out, "quote \\\" and \\\\ tab\\t"));
}

/* desired debug.level: lines below it are not streamed; a line's level is its ESP-IDF letter. */
static void test_level_filters_lines(void **state)
{
    assert_int_equal(fa_ls_line_level("E (12) wifi: gone"), 1);
    assert_int_equal(fa_ls_line_level("\033[0;33mW (12) tag: x\033[0m"), 2);
    assert_int_equal(fa_ls_line_level("D (1.0.0) fleet: heartbeat"), 4);
    assert_int_equal(fa_ls_line_level("app tick 3"), 3); /* no letter: info */
    fa_ls_init(&ls, 10, 10, 8);
    fa_ls_set(&ls, true, 1000, 0);
    assert_true(fa_ls_push(&ls, "I (1) a: kept", 1));
    assert_false(fa_ls_push(&ls, "D (1) a: not at info", 1)); /* info is the default */
    fa_ls_set_level(&ls, 4);
    assert_true(fa_ls_push(&ls, "D (1) a: kept at debug", 1));
    assert_false(fa_ls_push(&ls, "V (1) a: verbose", 1));
    fa_ls_set_level(&ls, 2);
    assert_false(fa_ls_push(&ls, "I (1) a: not at warn", 1));
    assert_true(fa_ls_push(&ls, "E (1) a: kept at warn", 1));
    assert_int_equal(ls.count, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_limit_and_drops),
        cmocka_unit_test(test_stops_at_until),
        cmocka_unit_test(test_escapes_lines),
        cmocka_unit_test(test_level_filters_lines),
    };
    return cmocka_run_group_tests_name("logstream", tests, NULL, NULL);
}
