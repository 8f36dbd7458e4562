#include "fa_logstream.h"

#include <stdio.h>
#include <string.h>

#include "fa_json.h"

void fa_ls_init(fa_logstream_t *ls, uint32_t rate_per_s, uint32_t burst, uint32_t batch_max)
{
    memset(ls, 0, sizeof(*ls));
    ls->rate_per_s = rate_per_s ? rate_per_s : 1;
    ls->burst = burst ? burst : 1;
    ls->batch_max = batch_max ? batch_max : 1;
    ls->level = 3;
}

void fa_ls_set_level(fa_logstream_t *ls, int level)
{
    ls->level = level;
}

int fa_ls_line_level(const char *line)
{
    static const char letters[] = "EWIDV";
    if (line[0] == '\033' && line[1] == '[') { /* CONFIG_LOG_COLORS: "\033[0;33mW (..." */
        const char *m = strchr(line, 'm');
        line = m ? m + 1 : line;
    }
    const char *l = line[0] ? strchr(letters, line[0]) : NULL;
    if (l != NULL && line[1] == ' ' && line[2] == '(') {
        return (int)(l - letters) + 1;
    }
    return 3;
}

void fa_ls_set(fa_logstream_t *ls, bool enabled, int64_t until_s, int64_t now_ms)
{
    if (enabled && !ls->enabled) {
        ls->tokens_milli = (int64_t)ls->burst * 1000;
        ls->last_refill_ms = now_ms;
        ls->last_flush_ms = now_ms - FA_LS_FLUSH_MS; /* the first batch may go at once */
        ls->head = ls->count = 0;
        ls->dropped = ls->dropped_total = 0;
    }
    ls->enabled = enabled;
    ls->until_s = until_s;
    if (!enabled) {
        ls->head = ls->count = 0;
    }
}

bool fa_ls_active(const fa_logstream_t *ls, int64_t now_s)
{
    return ls->enabled && now_s < ls->until_s;
}

bool fa_ls_push(fa_logstream_t *ls, const char *line, int64_t now_s)
{
    if (!fa_ls_active(ls, now_s) || fa_ls_line_level(line) > ls->level) {
        return false;
    }
    if (ls->count == FA_LS_RING) {
        ls->dropped++;
        ls->dropped_total++;
        return true; /* counted: the stream reports it */
    }
    char *slot = ls->lines[(ls->head + ls->count) % FA_LS_RING];
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
        n--;
    }
    if (n >= FA_LS_LINE) {
        n = FA_LS_LINE - 1;
    }
    memcpy(slot, line, n);
    slot[n] = '\0';
    ls->count++;
    return true;
}

static void refill(fa_logstream_t *ls, int64_t now_ms)
{
    int64_t dt = now_ms - ls->last_refill_ms;
    if (dt <= 0) {
        return;
    }
    ls->tokens_milli += dt * (int64_t)ls->rate_per_s;
    if (ls->tokens_milli > (int64_t)ls->burst * 1000) {
        ls->tokens_milli = (int64_t)ls->burst * 1000;
    }
    ls->last_refill_ms = now_ms;
}

int fa_ls_batch(fa_logstream_t *ls, int64_t now_s, int64_t now_ms, char *out, size_t cap)
{
    if (!ls->enabled) {
        return 0;
    }
    if (now_s >= ls->until_s) {
        fa_ls_set(ls, false, ls->until_s, now_ms);
        return 0;
    }
    refill(ls, now_ms);
    if ((ls->count == 0 && ls->dropped == 0) || now_ms - ls->last_flush_ms < FA_LS_FLUSH_MS ||
        ls->tokens_milli < 1000) {
        return 0;
    }
    int o = snprintf(out, cap, "{\"lines\":[");
    if (o < 0 || (size_t)o >= cap) {
        return -1;
    }
    uint32_t sent = 0;
    while (ls->count > 0 && sent < ls->batch_max && ls->tokens_milli >= 1000) {
        const char *line = ls->lines[ls->head];
        if ((size_t)o + 2 >= cap) {
            return -1;
        }
        if (sent) {
            out[o++] = ',';
        }
        out[o++] = '"';
        int e = fj_escape(out + o, cap - (size_t)o - 1, line);
        if (e < 0 || (size_t)(o + e) + 1 >= cap) {
            return -1;
        }
        o += e;
        out[o++] = '"';
        ls->head = (ls->head + 1) % FA_LS_RING;
        ls->count--;
        ls->tokens_milli -= 1000;
        sent++;
    }
    int m = snprintf(out + o, cap - (size_t)o, "],\"dropped\":%lu,\"dropped_total\":%lu,\"ts\":%lld}",
                     (unsigned long)ls->dropped, (unsigned long)ls->dropped_total, (long long)now_s);
    if (m < 0 || (size_t)(o + m) >= cap) {
        return -1;
    }
    ls->dropped = 0;
    ls->last_flush_ms = now_ms;
    return o + m;
}
