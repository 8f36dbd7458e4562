/* The agent under MQTT load, with the locking esp-mqtt has: its network task holds the client lock
 * while it calls the event handler, and publish takes the same (recursive) lock. Shadow deltas
 * (QoS 1) and PUBACKs arrive as fast as the device answers while the core publishes heartbeats
 * from its tick and a report for every delta.
 *
 * Default: the port's shape (hf_evq: the handler only queues a copy, the agent thread alone runs
 * the core) must finish with every delta reported, every QoS 1 publish acknowledged to the core,
 * nothing dropped. `--old-locking` runs the shape the ports had before: the handler takes the
 * agent lock and calls the core, the agent thread holds that lock while it ticks (and publishes).
 * A watchdog reports a deadlock when nothing moves for 3 s; that mode exits 0 when it deadlocks. */
#define _GNU_SOURCE
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "hf_evq.h"
#include "test_support.h"

#define RUN_MS 1500 /* deltas keep coming for this long */
#define WINDOW 16   /* deltas in flight before the fake broker waits for reports: below the queue's room */
#define QUEUE_LEN 64
#define STALL_MS 3000

typedef struct {
    pthread_mutex_t api_lock; /* esp-mqtt's client lock (recursive, as MQTT_API_LOCK) */
    int next_mid;
    int acks[4096];           /* PUBACKs the fake broker owes, FIFO */
    unsigned ack_head, ack_n;
    long sent, reports, qos1_pubs, acks_sent;
    char last_report[256];
} fake_mqtt_t;

static fake_mqtt_t M;
static bool old_locking;
static pthread_mutex_t agent_lock = PTHREAD_MUTEX_INITIALIZER; /* old shape only */
static hf_evq_t Q;
static fa_agent_t *A;
static fa_port_t P;
static int64_t t0_ms;
static char kv_seq[32];
static volatile int marked_valid, marked_invalid;
/* progress, for the watchdog */
static pthread_mutex_t prog_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t prog_cv;
static long progress;
static volatile int quiesce; /* the agent stops ticking so the last PUBACKs can catch up */
static volatile int net_stop;
static int sending_done;
static long acks_to_core; /* PUBLISHED events the core was given */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void bump(void)
{
    pthread_mutex_lock(&prog_mu);
    progress++;
    pthread_cond_broadcast(&prog_cv);
    pthread_mutex_unlock(&prog_mu);
}

/* Counters read by the watchdog without the locks (which a deadlock would hold). */
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_SEQ_CST)
#define INC(x) __atomic_add_fetch(&(x), 1, __ATOMIC_SEQ_CST)

/* ---- the port under the core ---- */
static int64_t p_now(void *c) { return 1800000000LL; }
/* Time runs 10x: a 1 s heartbeat is a publish from the tick every 100 ms. */
static int64_t p_ms(void *c) { return (mono_ms() - t0_ms) * 10; }
static fa_err_t p_kv_get(void *c, const char *k, char *b, size_t cap)
{
    if (strcmp(k, "sh_seq") != 0 || !kv_seq[0]) return FA_ERR_NOT_FOUND;
    snprintf(b, cap, "%s", kv_seq);
    return FA_OK;
}
static fa_err_t p_kv_set(void *c, const char *k, const char *v)
{
    if (!strcmp(k, "sh_seq")) snprintf(kv_seq, sizeof(kv_seq), "%s", v);
    return FA_OK;
}
static fa_err_t p_kv_erase(void *c, const char *k) { return FA_OK; }

static int p_publish(void *c, const char *topic, const void *d, size_t n, int qos, int retain)
{
    pthread_mutex_lock(&M.api_lock); /* as esp_mqtt_client_publish */
    int mid = ++M.next_mid;
    if (qos == 1) {
        INC(M.qos1_pubs);
        assert_true(M.ack_n < 4096);
        M.acks[(M.ack_head + M.ack_n++) % 4096] = mid;
    }
    if (strstr(topic, "/shadow/update") && !strstr(topic, "delta")) {
        INC(M.reports);
        snprintf(M.last_report, sizeof(M.last_report), "%.*s", (int)n, (const char *)d);
    }
    pthread_mutex_unlock(&M.api_lock);
    return mid;
}
static fa_err_t p_sub(void *c, const char *t, int q) { return FA_OK; }
static int p_slot(void *c) { return 1; }
static fa_img_state_t p_state(void *c) { return FA_IMG_PENDING_VERIFY; } /* the hb ack confirms it */
static fa_err_t p_nop_sz(void *c, size_t n) { return FA_ERR_NOT_SUPPORTED; }
static fa_err_t p_nop_w(void *c, const void *d, size_t n) { return FA_ERR_NOT_SUPPORTED; }
static fa_err_t p_nop(void *c) { return FA_ERR_NOT_SUPPORTED; }
static void p_void(void *c) {}
static fa_err_t p_valid(void *c) { marked_valid = 1; return FA_OK; }
static void p_invalid(void *c) { marked_invalid = 1; }
static fa_err_t p_open(void *c, const char *u, uint32_t o, uint32_t *l) { return FA_ERR_NOT_SUPPORTED; }
static int p_read(void *c, void *b, size_t n) { return -1; }

static fa_err_t led(void *user, const char *key, const char *json, size_t len) { return FA_OK; }

/* ---- the event handler, as the port registers it with the MQTT client ---- */
static void handler(hf_ev_type_t type, int mid, const char *topic, const void *data, size_t len)
{
    if (!old_locking) {
        hf_evq_push(&Q, type, mid, topic, data, len);
        return;
    }
    pthread_mutex_lock(&agent_lock); /* the old shape: waits for the agent with the client lock held */
    switch (type) {
    case HF_EV_MESSAGE: fa_agent_mqtt_message(A, topic, data, len); break;
    case HF_EV_PUBLISHED: fa_agent_mqtt_published(A, mid); INC(acks_to_core); break;
    default: break;
    }
    pthread_mutex_unlock(&agent_lock);
}

/* The client's network task at full rate: a PUBACK whenever one is owed, a new delta whenever
 * fewer than WINDOW are unanswered, each delivered with the client lock held. */
static void *network_task(void *arg)
{
    char topic[] = "fl/dev-1/shadow/update/delta", msg[128];
    for (;;) {
        pthread_mutex_lock(&M.api_lock);
        bool did = false;
        if (M.ack_n) {
            int mid = M.acks[M.ack_head];
            M.ack_head = (M.ack_head + 1) % 4096;
            M.ack_n--;
            M.acks_sent++;
            handler(HF_EV_PUBLISHED, mid, NULL, NULL, 0);
            did = true;
        }
        if (!sending_done && M.sent - M.reports < WINDOW) {
            INC(M.sent);
            int n = snprintf(msg, sizeof(msg), "{\"state\":{\"led\":\"v%ld\"},\"version\":%ld}", M.sent, M.sent);
            handler(HF_EV_MESSAGE, 0, topic, msg, (size_t)n);
            did = true;
        }
        pthread_mutex_unlock(&M.api_lock);
        if (did) {
            bump();
        }
        if (!sending_done && mono_ms() - t0_ms >= RUN_MS) {
            __atomic_store_n(&sending_done, 1, __ATOMIC_SEQ_CST);
        }
        if (net_stop) {
            return NULL;
        }
        if (!did) {
            sched_yield(); /* waiting for the device to answer */
        }
    }
}

static volatile int agent_stop;

static void *agent_task(void *arg)
{
    while (!agent_stop) {
        if (old_locking) {
            pthread_mutex_lock(&agent_lock);
            fa_agent_tick(A);
            pthread_mutex_unlock(&agent_lock);
            struct timespec ts = { 0, 1000000 }; /* the old task's vTaskDelay between ticks */
            nanosleep(&ts, NULL);
        } else {
            hf_ev_t ev;
            if (hf_evq_pop(&Q, &ev, 5)) {
                if (ev.type == HF_EV_PUBLISHED) {
                    INC(acks_to_core);
                }
                hf_ev_dispatch(A, &ev);
                bump();
            }
            if (!quiesce) {
                fa_agent_tick(A);
            }
        }
    }
    return NULL;
}

/* Waits for cond(); false on a deadlock: nothing moved for STALL_MS. */
static bool wait_for(bool (*cond)(void))
{
    for (;;) {
        pthread_mutex_lock(&prog_mu);
        long seen = progress;
        pthread_mutex_unlock(&prog_mu);
        if (cond()) {
            return true;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += STALL_MS / 1000;
        pthread_mutex_lock(&prog_mu);
        int rc = 0;
        while (progress == seen && rc == 0) {
            rc = pthread_cond_timedwait(&prog_cv, &prog_mu, &until);
        }
        bool stalled = progress == seen;
        pthread_mutex_unlock(&prog_mu);
        if (stalled && !cond()) {
            return false;
        }
    }
}

static bool all_reported(void)
{
    return LOAD(sending_done) && LOAD(M.reports) == LOAD(M.sent);
}

static bool all_acked(void)
{
    return LOAD(acks_to_core) == LOAD(M.qos1_pubs);
}

/* Starts both tasks; true if the run finished, false if it deadlocked (threads left stuck). */
static bool run(void)
{
    pthread_mutexattr_t ra;
    pthread_mutexattr_init(&ra);
    pthread_mutexattr_settype(&ra, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&M.api_lock, &ra);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&prog_cv, &ca);
    assert_int_equal(hf_evq_init(&Q, QUEUE_LEN, 4096, 0), 0); /* 0: never waits, as under esp-mqtt's lock */
    t0_ms = mono_ms();
    P = (fa_port_t){ NULL, p_now, p_ms, p_kv_get, p_kv_set, p_kv_erase, p_publish, p_sub, p_slot, p_state,
                     p_nop_sz, p_nop_w, p_nop, p_void, p_nop, p_valid, p_invalid, p_void, p_open, p_read,
                     p_void, NULL, NULL, NULL, NULL, NULL };
    fa_config_t cfg = { .port = &P, .device_id = "dev-1", .hw = "c3", .fw_version = "2.0.0",
                        .topic_prefix = "fl", .heartbeat_interval_s = 1 };
    assert_int_equal(fa_agent_create(&cfg, &A), FA_OK);
    assert_int_equal(fa_agent_on_shadow_key(A, "led", led, NULL), FA_OK);
    handler(HF_EV_CONNECTED, 0, NULL, NULL, 0);
    if (old_locking) {
        fa_agent_mqtt_connected(A);
    }
    pthread_t net, agent;
    pthread_create(&agent, NULL, agent_task, NULL);
    pthread_create(&net, NULL, network_task, NULL);
    if (!wait_for(all_reported)) {
        return false;
    }
    quiesce = 1;
    if (!wait_for(all_acked)) {
        return false;
    }
    net_stop = 1;
    agent_stop = 1;
    pthread_join(net, NULL);
    pthread_join(agent, NULL);
    return true;
}

static void test_no_deadlock_nothing_lost_under_load(void **state)
{
    int64_t t = mono_ms();
    if (!run()) {
        fail_msg("deadlock: nothing moved for %d ms (sent %ld deltas, %ld reports)", STALL_MS, M.sent, M.reports);
    }
    fprintf(stderr, "  %ld deltas, %ld QoS 1 publishes, %ld PUBACKs in %lld ms\n", M.sent, M.qos1_pubs,
            M.acks_sent, (long long)(mono_ms() - t));
    assert_int_equal(hf_evq_dropped(&Q), 0);
    char last[32];
    snprintf(last, sizeof(last), "\"led\":\"v%ld\"", M.sent);
    assert_true(M.sent > 1000);
    assert_int_equal(M.reports, M.sent);                 /* every delta reached the core and was reported */
    assert_non_null(strstr(M.last_report, last));
    assert_int_equal(acks_to_core, M.qos1_pubs);         /* every QoS 1 publish acknowledged to the core */
    assert_true(marked_valid);                           /* ... including the heartbeat's */
    assert_false(marked_invalid);
    assert_true(M.qos1_pubs > M.sent + 5);               /* heartbeats from the tick came in between */
    fa_agent_destroy(A);
    hf_evq_destroy(&Q);
}

/* The queue's bounds: a message that does not fit (queue short of its reserve, or too large) is
 * dropped and counted, never waited for; PUBACKs and connection events still get the reserve. */
static void test_queue_is_bounded_and_counts_drops(void **state)
{
    hf_evq_t q;
    hf_ev_t ev;
    assert_int_equal(hf_evq_init(&q, 8, 16, 0), 0);
    int queued = 0;
    for (int i = 0; i < 10; i++) {
        queued += hf_evq_push(&q, HF_EV_MESSAGE, 0, "t", "payload", 7);
    }
    assert_int_equal(queued, 8 - HF_EVQ_RESERVE);
    assert_false(hf_evq_push(&q, HF_EV_MESSAGE, 0, "t", "0123456789abcdefX", 17)); /* > max_message */
    assert_int_equal(hf_evq_dropped(&q), 10 - queued + 1);
    for (int i = 0; i < HF_EVQ_RESERVE; i++) {
        assert_true(hf_evq_push(&q, HF_EV_PUBLISHED, 100 + i, NULL, NULL, 0));
    }
    assert_false(hf_evq_push(&q, HF_EV_PUBLISHED, 200, NULL, NULL, 0)); /* full: dropped too */
    /* in order, payloads copied (the library's buffers are gone by now) */
    assert_true(hf_evq_pop(&q, &ev, 0));
    assert_int_equal(ev.type, HF_EV_MESSAGE);
    assert_string_equal(ev.topic, "t");
    assert_memory_equal(ev.data, "payload", 7);
    free(ev.topic);
    free(ev.data);
    hf_evq_destroy(&q); /* frees what is still queued */
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--old-locking")) {
        old_locking = true;
        bool done = run();
        printf("old locking: %s after %ld deltas, %ld reports, %ld PUBACKs\n",
               done ? "finished" : "DEADLOCK (nothing moved for 3 s)", M.sent, M.reports, M.acks_sent);
        fflush(stdout);
        _exit(done ? 1 : 0); /* the stuck threads cannot be joined */
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_is_bounded_and_counts_drops),
        cmocka_unit_test(test_no_deadlock_nothing_lost_under_load),
    };
    return cmocka_run_group_tests_name("mqtt_load", tests, NULL, NULL);
}
