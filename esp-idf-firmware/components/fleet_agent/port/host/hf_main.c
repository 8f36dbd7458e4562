/* fleet-device: the host "chip". `run` boots like an ESP32 (bootloader picks the slot from
 * otadata, the app runs the fleet agent over libmosquitto); `reboot` re-executes the process and a
 * crash is a panic reset. `mkimage`, `flash` and `info` make and inspect images and flash files. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <mosquitto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fa_crypto.h"
#include "fleet_agent.h"
#include "hf_evq.h"
#include "hf_port.h"
#include "hf_tls.h"
#include "hf_tools.h"


static char **g_argv; /* for re-executing the process on reboot and panic */
static volatile sig_atomic_t g_stop;

static void reexec(void)
{
    for (int fd = 3; fd < 1024; fd++) {
        close(fd);
    }
    execv("/proc/self/exe", g_argv);
    _exit(127);
}

static void on_panic(int sig)
{
    static const char msg[] = "E panic: guru meditation, rebooting\n";
    (void)sig;
    (void)!write(2, msg, sizeof(msg) - 1);
    reexec();
}

static void on_term(int sig)
{
    (void)sig;
    g_stop = 1;
}

typedef struct {
    hf_port_t hp;
    fa_port_t port;
    fa_agent_t *agent;
    struct mosquitto *mosq;
    hf_evq_t evq; /* libmosquitto's thread -> the app thread, which alone runs the core */
} app_t;

static void reboot_cb(void *user)
{
    app_t *app = user;
    fprintf(stderr, "I reboot: restarting\n");
    fflush(stderr);
    (void)app;
    /* No DISCONNECT and no mosquitto_destroy (its thread is still running): exec drops the socket
     * and the broker sends the Last Will, as on a reset. */
    reexec();
}

static void log_sink(void *user, const char *line)
{
    app_t *app = user;
    if (app->agent) {
        fa_agent_log_line(app->agent, line);
    }
}

/* libmosquitto's callbacks run on its network thread: they only queue a copy of the event. */
static void on_connect(struct mosquitto *m, void *user, int rc)
{
    app_t *app = user;
    (void)m;
    if (rc == 0) {
        hf_evq_push(&app->evq, HF_EV_CONNECTED, 0, NULL, NULL, 0);
    }
}

static void on_disconnect(struct mosquitto *m, void *user, int rc)
{
    (void)m;
    (void)rc;
    hf_evq_push(&((app_t *)user)->evq, HF_EV_DISCONNECTED, 0, NULL, NULL, 0);
}

static void on_message(struct mosquitto *m, void *user, const struct mosquitto_message *msg)
{
    (void)m;
    hf_evq_push(&((app_t *)user)->evq, HF_EV_MESSAGE, 0, msg->topic, msg->payload, (size_t)msg->payloadlen);
}

static void on_subscribe(struct mosquitto *m, void *user, int mid, int qos_count, const int *granted)
{
    (void)m;
    hf_evq_push(&((app_t *)user)->evq, HF_EV_SUBSCRIBED, mid, NULL, NULL, 0);
}

static void on_publish(struct mosquitto *m, void *user, int mid)
{
    (void)m;
    hf_evq_push(&((app_t *)user)->evq, HF_EV_PUBLISHED, mid, NULL, NULL, 0);
}

static fa_err_t print_handler(void *user, const char *key, const char *json, size_t len)
{
    app_t *app = user;
    char line[300];
    snprintf(line, sizeof(line), "shadow %s = %.*s", key, (int)len, json);
    app->port.log(app->port.ctx, FA_LOG_INFO, line);
    return FA_OK;
}

static int hexdec(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > cap) {
        return -1;
    }
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) {
            return -1;
        }
        out[i] = (uint8_t)v;
    }
    return (int)(n / 2);
}

static int cmd_run(int argc, char **argv)
{
    static app_t app;
    static uint8_t key[64], pub[4096];
    static const char *shadow_keys[8];
    static const char *add_keys[FA_MAX_KEYS], *retired[4];
    static uint8_t add_key_bytes[FA_MAX_KEYS][32];
    int nkeys = 0, nadd = 0, nretired = 0;
    const char *flash = NULL, *id = NULL, *hw = NULL, *broker = "mqtt://127.0.0.1:1883", *prefix = "fleet";
    const char *keyhex = NULL, *masterhex = NULL, *pubpath = NULL, *ca = NULL;
    fa_config_t cfg = { 0 };
    int chatter_ms = 0;
    static struct option opts[] = {
        { "flash", 1, 0, 'f' }, { "id", 1, 0, 'i' }, { "hw", 1, 0, 'w' }, { "broker", 1, 0, 'b' },
        { "prefix", 1, 0, 'p' }, { "key", 1, 0, 'k' }, { "master-key", 1, 0, 'm' }, { "ecdsa-pub", 1, 0, 'e' },
        { "hb", 1, 0, 'h' }, { "confirm", 1, 0, 'c' }, { "shadow-key", 1, 0, 's' }, { "chatter-ms", 1, 0, 'C' },
        { "log-rate", 1, 0, 'r' }, { "log-burst", 1, 0, 'B' },
        { "kid", 1, 0, 'K' }, { "add-key", 1, 0, 'A' }, { "retire-kid", 1, 0, 'R' },
        { "ca", 1, 0, 'T' }, { 0, 0, 0, 0 },
    };
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'f': flash = optarg; break;
        case 'i': id = optarg; break;
        case 'w': hw = optarg; break;
        case 'b': broker = optarg; break;
        case 'p': prefix = optarg; break;
        case 'k': keyhex = optarg; break;
        case 'm': masterhex = optarg; break;
        case 'e': pubpath = optarg; break;
        case 'h': cfg.heartbeat_interval_s = (uint32_t)atoi(optarg); break;
        case 'c': cfg.confirm_timeout_s = (uint32_t)atoi(optarg); break;
        case 's': if (nkeys < 8) shadow_keys[nkeys++] = optarg; break;
        case 'C': chatter_ms = atoi(optarg); break;
        case 'r': cfg.log_rate_per_s = (uint32_t)atoi(optarg); break;
        case 'B': cfg.log_burst = (uint32_t)atoi(optarg); break;
        case 'K': cfg.kid = optarg; break;
        case 'A': if (nadd < FA_MAX_KEYS - 1) add_keys[nadd++] = optarg; break; /* KID:MASTERHEX */
        case 'R': if (nretired < 4) retired[nretired++] = optarg; break;
        case 'T': ca = optarg; break;
        default: return hf_usage();
        }
    }
    if (!flash || !id || !hw) {
        return hf_usage();
    }
    signal(SIGSEGV, on_panic);
    signal(SIGABRT, on_panic);
    signal(SIGBUS, on_panic);
    signal(SIGILL, on_panic);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGPIPE, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* a panic re-exec inherits the blocked signal */

    /* ---- second stage bootloader ---- */
    hf_image_info_t info;
    if (hf_file_open(&app.hp.flash, flash) != 0) {
        fprintf(stderr, "E boot: cannot open flash %s: %s\n", flash, strerror(errno));
        return 1;
    }
    uint32_t efuse = hf_efuse_read(&app.hp.flash), before = efuse;
    int slot = hf_bootloader(&app.hp.flash, &efuse);
    if (efuse != before) {
        hf_efuse_write(&app.hp.flash, efuse);
    }
    if (slot < 0 || hf_image_check(&app.hp.flash, hf_slot_off(slot), HF_SLOT_SIZE, &info) != 0) {
        fprintf(stderr, "E boot: no bootable app partition\n");
        return 3;
    }
    uint32_t state = HF_IMG_UNDEFINED;
    hf_get_state_partition(&app.hp.flash, slot, &state);
    fprintf(stderr, "I boot: slot=%d fw=%s secure_version=%u state=%u\n", slot, info.version, info.secure_version,
            state);
    fflush(stderr);

    /* ---- the app ---- */
    if (info.selftest == HF_SELFTEST_CRASH) {
        fprintf(stderr, "E app: self-test failed\n");
        abort();
    }
    hf_port_init(&app.hp, &app.port);
    app.hp.running_slot = slot;
    app.hp.fw_version = info.version;
    app.hp.reboot = reboot_cb;
    app.hp.reboot_user = &app;
    app.hp.log_sink = log_sink;
    app.hp.log_user = &app;
    if (ca != NULL && (app.hp.tls = hf_tls_new(ca)) == NULL) {
        return 2;
    }
    cfg.port = &app.port;
    cfg.device_id = id;
    cfg.hw = hw;
    cfg.fw_version = info.version;
    cfg.secure_version = info.secure_version;
    cfg.topic_prefix = prefix;
    if (keyhex) {
        int n = hexdec(keyhex, key, sizeof(key));
        cfg.hmac_key = key;
        cfg.hmac_key_len = n > 0 ? (size_t)n : 0;
    } else if (masterhex) {
        uint8_t master[64];
        int n = hexdec(masterhex, master, sizeof(master));
        if (n <= 0 || fa_derive_device_key(master, (size_t)n, id, key) != FA_OK) {
            fprintf(stderr, "E app: bad --master-key\n");
            return 2;
        }
        cfg.hmac_key = key;
        cfg.hmac_key_len = 32;
    }
    if (pubpath) {
        FILE *pf = fopen(pubpath, "rb");
        size_t n = pf ? fread(pub, 1, sizeof(pub) - 1, pf) : 0;
        if (pf) {
            fclose(pf);
        }
        pub[n] = '\0';
        cfg.ecdsa_pub = pub;
        cfg.ecdsa_pub_len = n + 1;
    }
    if (fa_agent_create(&cfg, &app.agent) != FA_OK) {
        fprintf(stderr, "E app: bad configuration\n");
        return 2;
    }
    for (int i = 0; i < nkeys; i++) {
        fa_agent_on_shadow_key(app.agent, shadow_keys[i], print_handler, &app);
    }
    /* Keys the device learned later (a rotation), each named by its kid; and kids it retired. */
    for (int i = 0; i < nadd; i++) {
        static char kids[FA_MAX_KEYS][FA_KID_MAX];
        const char *colon = strchr(add_keys[i], ':');
        uint8_t master[64];
        int n = colon ? hexdec(colon + 1, master, sizeof(master)) : -1;
        size_t kl = colon ? (size_t)(colon - add_keys[i]) : 0;
        if (n <= 0 || kl == 0 || kl >= FA_KID_MAX ||
            fa_derive_device_key(master, (size_t)n, id, add_key_bytes[i]) != FA_OK) {
            fprintf(stderr, "E app: bad --add-key (KID:MASTERHEX)\n");
            return 2;
        }
        memcpy(kids[i], add_keys[i], kl);
        kids[i][kl] = '\0';
        fa_key_t k = { kids[i], add_key_bytes[i], 32, NULL, 0 };
        if (fa_agent_add_key(app.agent, &k) != FA_OK) {
            return 2;
        }
    }
    for (int i = 0; i < nretired; i++) {
        if (fa_agent_retire_key(app.agent, retired[i]) != FA_OK) {
            return 2;
        }
    }
    /* 64 events; a producer waits up to 1 s for room (libmosquitto holds no lock the app thread
     * needs while a callback runs, so this only slows the broker down) before it drops. */
    if (hf_evq_init(&app.evq, 64, 65536, 1000) != 0) {
        return 2;
    }
    mosquitto_lib_init();
    app.mosq = mosquitto_new(id, true, &app);
    app.hp.mosq = app.mosq;
    mosquitto_int_option(app.mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_max_inflight_messages_set(app.mosq, 50);
    const char *wt, *wp;
    fa_agent_will(app.agent, &wt, &wp);
    mosquitto_will_set(app.mosq, wt, (int)strlen(wp), wp, 1, true);
    mosquitto_connect_callback_set(app.mosq, on_connect);
    mosquitto_disconnect_callback_set(app.mosq, on_disconnect);
    mosquitto_message_callback_set(app.mosq, on_message);
    mosquitto_publish_callback_set(app.mosq, on_publish);
    mosquitto_subscribe_callback_set(app.mosq, on_subscribe);
    char host[128] = "127.0.0.1";
    int port = 1883;
    if (sscanf(broker, "mqtt://%127[^:]:%d", host, &port) < 1) {
        return hf_usage();
    }
    bool offline = info.selftest == HF_SELFTEST_OFFLINE; /* a broken network stack never connects */
    bool started = false;
    unsigned long dropped = 0;
    int64_t next_try = 0, next_tick = 0, next_chatter = 0;
    unsigned chatter_n = 0;
    /* Reconnects after the first connection are the network thread's job, at most 1 s apart. */
    mosquitto_reconnect_delay_set(app.mosq, 1, 1, false);
    while (!g_stop) {
        int64_t now = app.port.uptime_ms(app.port.ctx);
        if (!offline && !started && now >= next_try) {
            next_try = now + 1000;
            started = mosquitto_connect(app.mosq, host, port, 30) == MOSQ_ERR_SUCCESS &&
                      mosquitto_loop_start(app.mosq) == MOSQ_ERR_SUCCESS;
        }
        hf_ev_t ev;
        if (hf_evq_pop(&app.evq, &ev, 20)) {
            if (ev.type == HF_EV_CONNECTED) {
                app.hp.subs_pending = 0;
            }
            bool suback = ev.type == HF_EV_SUBSCRIBED && app.hp.subs_pending > 0;
            hf_ev_dispatch(app.agent, &ev);
            /* SUBSCRIBEs leave from the network thread later: "connected" is logged only once the
             * broker acknowledged them all, so whoever waits for the line can publish to the device. */
            if (suback && --app.hp.subs_pending == 0) {
                fprintf(stderr, "I mqtt: connected\n");
            }
        }
        if (now < next_tick) {
            continue; /* events are handled as they come; the timers every 20 ms */
        }
        next_tick = now + 20;
        fa_agent_tick(app.agent);
        if (hf_evq_dropped(&app.evq) != dropped) {
            char line[64];
            dropped = hf_evq_dropped(&app.evq);
            snprintf(line, sizeof(line), "mqtt: %lu events dropped (queue full)", dropped);
            app.port.log(app.port.ctx, FA_LOG_WARN, line);
        }
        if (chatter_ms > 0 && now >= next_chatter) {
            char line[64];
            next_chatter = now + chatter_ms;
            snprintf(line, sizeof(line), "app tick %u", ++chatter_n);
            fa_agent_log_line(app.agent, line);
        }
    }
    fprintf(stderr, "I app: stopped\n");
    return 0;
}

int main(int argc, char **argv)
{
    g_argv = argv;
    if (argc < 2) {
        return hf_usage();
    }
    if (!strcmp(argv[1], "run")) return cmd_run(argc, argv);
    if (!strcmp(argv[1], "mkimage")) return hf_cmd_mkimage(argc, argv);
    if (!strcmp(argv[1], "flash")) return hf_cmd_flash(argc, argv);
    if (!strcmp(argv[1], "info")) return hf_cmd_info(argc, argv);
    return hf_usage();
}
