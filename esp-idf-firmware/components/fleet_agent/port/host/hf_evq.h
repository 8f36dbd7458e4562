/* The host port's MQTT event queue. libmosquitto runs its callbacks on its network thread; they
 * only copy the event in here, and the app thread alone pops events and runs the core — the shape
 * the ESP-IDF port has with esp-mqtt, whose handler runs with esp-mqtt's client lock held. No lock
 * is ever held while the core runs, so the core may publish at any time. */
#ifndef HF_EVQ_H
#define HF_EVQ_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleet_agent.h"

/* HF_EV_SUBSCRIBED (a SUBACK) is for the port itself: the core does not track subscriptions. */
typedef enum { HF_EV_CONNECTED, HF_EV_DISCONNECTED, HF_EV_MESSAGE, HF_EV_PUBLISHED, HF_EV_SUBSCRIBED } hf_ev_type_t;

typedef struct {
    hf_ev_type_t type;
    int msg_id;     /* HF_EV_PUBLISHED */
    char *topic;    /* HF_EV_MESSAGE: copies, owned by the event */
    uint8_t *data;
    size_t len;
} hf_ev_t;

/* Slots kept free for connection events and PUBACKs: a flood of messages must not crowd out the
 * acknowledgement that confirms a trial boot. */
#define HF_EVQ_RESERVE 4

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    hf_ev_t *ring;
    size_t cap, head, count;
    size_t max_message; /* larger payloads are dropped */
    int full_wait_ms;   /* how long a producer waits for room before it drops */
    unsigned long dropped;
} hf_evq_t;

/**
 * @return 0, or -1 when memory or the pthread objects cannot be had.
 */
int hf_evq_init(hf_evq_t *q, size_t cap, size_t max_message, int full_wait_ms);
void hf_evq_destroy(hf_evq_t *q);
/**
 * Copies an event in (producer side: the MQTT network thread). Waits at most full_wait_ms for
 * room; waiting is safe here because the consumer never waits on the producer.
 * @return true if queued; false if dropped (counted in dropped).
 */
bool hf_evq_push(hf_evq_t *q, hf_ev_type_t type, int msg_id, const char *topic, const void *data, size_t len);
/**
 * Takes the oldest event (consumer side: the thread that runs the core).
 * @return true with *ev filled (release it with hf_ev_dispatch), false after timeout_ms.
 */
bool hf_evq_pop(hf_evq_t *q, hf_ev_t *ev, int timeout_ms);
/** Hands an event to the core and frees its copies. */
void hf_ev_dispatch(fa_agent_t *a, hf_ev_t *ev);
/** @return the number of events dropped so far. */
unsigned long hf_evq_dropped(hf_evq_t *q);

#endif
