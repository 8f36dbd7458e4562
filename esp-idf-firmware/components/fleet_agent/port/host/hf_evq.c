#define _POSIX_C_SOURCE 200809L
#include "hf_evq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int hf_evq_init(hf_evq_t *q, size_t cap, size_t max_message, int full_wait_ms)
{
    memset(q, 0, sizeof(*q));
    if (cap <= HF_EVQ_RESERVE || (q->ring = calloc(cap, sizeof(hf_ev_t))) == NULL) {
        return -1;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* waits must not jump with the wall clock */
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->not_empty, &ca);
    pthread_cond_init(&q->not_full, &ca);
    pthread_condattr_destroy(&ca);
    q->cap = cap;
    q->max_message = max_message;
    q->full_wait_ms = full_wait_ms;
    return 0;
}

static void ev_free(hf_ev_t *ev)
{
    free(ev->topic);
    free(ev->data);
    ev->topic = NULL;
    ev->data = NULL;
}

void hf_evq_destroy(hf_evq_t *q)
{
    while (q->count) {
        ev_free(&q->ring[q->head]);
        q->head = (q->head + 1) % q->cap;
        q->count--;
    }
    free(q->ring);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    pthread_mutex_destroy(&q->mu);
}

static struct timespec deadline(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

bool hf_evq_push(hf_evq_t *q, hf_ev_type_t type, int msg_id, const char *topic, const void *data, size_t len)
{
    hf_ev_t ev = { type, msg_id, NULL, NULL, 0 };
    if (type == HF_EV_MESSAGE) {
        /* Copied before taking the lock: the library frees its buffers when the callback returns. */
        if (len > q->max_message || (ev.topic = strdup(topic)) == NULL ||
            (ev.data = malloc(len + 1)) == NULL) {
            ev_free(&ev);
            pthread_mutex_lock(&q->mu);
            q->dropped++;
            pthread_mutex_unlock(&q->mu);
            return false;
        }
        memcpy(ev.data, data, len);
        ev.data[len] = '\0';
        ev.len = len;
    }
    /* Messages leave HF_EVQ_RESERVE slots for the small control events. */
    size_t limit = type == HF_EV_MESSAGE ? q->cap - HF_EVQ_RESERVE : q->cap;
    struct timespec until = deadline(q->full_wait_ms);
    pthread_mutex_lock(&q->mu);
    int rc = 0;
    while (q->count >= limit && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&q->not_full, &q->mu, &until);
    }
    if (q->count >= limit) {
        q->dropped++;
        pthread_mutex_unlock(&q->mu);
        ev_free(&ev);
        return false;
    }
    q->ring[(q->head + q->count) % q->cap] = ev;
    q->count++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
    return true;
}

bool hf_evq_pop(hf_evq_t *q, hf_ev_t *ev, int timeout_ms)
{
    struct timespec until = deadline(timeout_ms);
    pthread_mutex_lock(&q->mu);
    int rc = 0;
    while (q->count == 0 && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&q->not_empty, &q->mu, &until);
    }
    bool got = q->count > 0;
    if (got) {
        *ev = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_cond_broadcast(&q->not_full);
    }
    pthread_mutex_unlock(&q->mu);
    return got;
}

void hf_ev_dispatch(fa_agent_t *a, hf_ev_t *ev)
{
    switch (ev->type) {
    case HF_EV_CONNECTED: fa_agent_mqtt_connected(a); break;
    case HF_EV_DISCONNECTED: fa_agent_mqtt_disconnected(a); break;
    case HF_EV_MESSAGE: fa_agent_mqtt_message(a, ev->topic, ev->data, ev->len); break;
    case HF_EV_PUBLISHED: fa_agent_mqtt_published(a, ev->msg_id); break;
    case HF_EV_SUBSCRIBED: break;
    }
    ev_free(ev);
}

unsigned long hf_evq_dropped(hf_evq_t *q)
{
    pthread_mutex_lock(&q->mu);
    unsigned long n = q->dropped;
    pthread_mutex_unlock(&q->mu);
    return n;
}
