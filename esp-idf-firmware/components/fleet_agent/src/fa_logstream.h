/* Debug log streaming: a ring of lines, a token-bucket rate limit, batches, drop counts,
 * and a deadline (desired debug.until) after which it stops on its own. */
#ifndef FA_LOGSTREAM_H
#define FA_LOGSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FA_LS_RING 32
#define FA_LS_LINE 128
#define FA_LS_FLUSH_MS 250

typedef struct {
    char lines[FA_LS_RING][FA_LS_LINE];
    uint32_t head;       /* oldest line */
    uint32_t count;
    uint32_t dropped;    /* since the last batch */
    uint32_t dropped_total;
    bool enabled;
    int level;           /* lines above it (1 error .. 4 debug, 5 verbose) are not streamed */
    int64_t until_s;
    uint32_t rate_per_s;
    uint32_t burst;
    uint32_t batch_max;
    int64_t tokens_milli; /* 1000 = one line */
    int64_t last_refill_ms;
    int64_t last_flush_ms;
} fa_logstream_t;

void fa_ls_init(fa_logstream_t *ls, uint32_t rate_per_s, uint32_t burst, uint32_t batch_max);
/* Opens (or closes, enabled = false) a session that ends at until_s (wall clock). */
void fa_ls_set(fa_logstream_t *ls, bool enabled, int64_t until_s, int64_t now_ms);
bool fa_ls_active(const fa_logstream_t *ls, int64_t now_s);
/* The session's level: 1 error, 2 warn, 3 info (the default), 4 debug, 5 verbose. */
void fa_ls_set_level(fa_logstream_t *ls, int level);
/* The level of an ESP-IDF style line ("W (123) tag: ...", colours allowed); 3 when it has none. */
int fa_ls_line_level(const char *line);
/* Keeps a line for the next batch; false when no session is open or its level filters it out. */
bool fa_ls_push(fa_logstream_t *ls, const char *line, int64_t now_s);
/* Builds the next batch payload into out when one is due; returns its length, 0 when there is
 * nothing to send now, -1 if out is too small. Stops the session at until_s. */
int fa_ls_batch(fa_logstream_t *ls, int64_t now_s, int64_t now_ms, char *out, size_t cap);

#endif
