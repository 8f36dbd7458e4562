#include "fa_shadow.h"

#include <stdio.h>
#include <string.h>

void fa_shadow_init(fa_shadow_t *s)
{
    memset(s, 0, sizeof(*s));
}

fa_err_t fa_shadow_register(fa_shadow_t *s, const char *key, fa_shadow_handler_t fn, void *user)
{
    if (key == NULL || fn == NULL || strlen(key) >= FA_SH_KEY_MAX) {
        return FA_ERR_INVALID_ARG;
    }
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->h[i].key, key) == 0) {
            s->h[i].fn = fn;
            s->h[i].user = user;
            return FA_OK;
        }
    }
    if (s->n >= FA_SH_MAX_KEYS) {
        return FA_ERR_NO_MEM;
    }
    fa_sh_entry_t *e = &s->h[s->n++];
    memcpy(e->key, key, strlen(key) + 1);
    e->fn = fn;
    e->user = user;
    return FA_OK;
}

/* The raw text of a value, quotes included for strings. */
static void span(const fj_tok_t *t, int *start, int *end)
{
    *start = t->start;
    *end = t->end;
    if (t->type == FJ_STR) {
        (*start)--;
        (*end)++;
    }
}

static const fa_sh_entry_t *find(const fa_shadow_t *s, const char *js, const fj_tok_t *k)
{
    for (int i = 0; i < s->n; i++) {
        if (fj_key_eq(js, k, s->h[i].key)) {
            return &s->h[i];
        }
    }
    return NULL;
}

#define REPORT_ALL (-1)
#define REPORT_NONE (-2)

/* Runs handlers for each member of obj; members also present in report_filter (an object
 * token, REPORT_ALL or REPORT_NONE) are appended to rep. */
static fa_err_t apply(fa_shadow_t *s, const char *js, int n, int obj, int report_filter, char *rep,
                      size_t cap)
{
    const fj_tok_t *t = s->toks;
    size_t o = strlen(rep);
    int i = obj + 1;
    for (int m = 0; m < t[obj].size; m++) {
        int k = i;
        int v = i + 1;
        i = fj_next(t, n, v);
        const fa_sh_entry_t *e = find(s, js, &t[k]);
        if (e == NULL) {
            continue; /* no handler: the key is not this firmware's business */
        }
        int a, b;
        span(&t[v], &a, &b);
        if (e->fn(e->user, e->key, js + a, (size_t)(b - a)) != FA_OK) {
            continue;
        }
        if (report_filter == REPORT_NONE) {
            continue;
        }
        if (report_filter >= 0) {
            char key[FA_SH_KEY_MAX];
            if (!fj_str(js, &t[k], key, sizeof(key)) || fj_get(js, t, n, report_filter, key) < 0) {
                continue;
            }
        }
        int w = snprintf(rep + o, cap - o, "%s\"%s\":%.*s", o ? "," : "", e->key, b - a, js + a);
        if (w < 0 || (size_t)w >= cap - o) {
            rep[o] = '\0';
            return FA_ERR_NO_MEM;
        }
        o += (size_t)w;
    }
    return FA_OK;
}

/* Parse a delta or a document: its token count, the index of its "state" object, its version. */
static fa_err_t parse_head(fa_shadow_t *s, const char *msg, size_t len, int *n, int *st, int64_t *version)
{
    *n = fj_parse(msg, len, s->toks, FA_SH_TOKS);
    if (*n < 1 || s->toks[0].type != FJ_OBJ) {
        return FA_ERR_INVALID_ARG;
    }
    *st = fj_get(msg, s->toks, *n, 0, "state");
    int ver = fj_get(msg, s->toks, *n, 0, "version");
    if (*st < 0 || s->toks[*st].type != FJ_OBJ || ver < 0 || !fj_i64(msg, &s->toks[ver], version)) {
        return FA_ERR_INVALID_ARG;
    }
    return FA_OK;
}

fa_err_t fa_shadow_on_delta(fa_shadow_t *s, const char *msg, size_t len, char *rep, size_t cap)
{
    int64_t version = 0;
    int n = 0, st = -1;
    rep[0] = '\0';
    fa_err_t err = parse_head(s, msg, len, &n, &st, &version);
    if (err != FA_OK) {
        return err;
    }
    /* QoS 1 may deliver an old delta after a newer document: never go backwards. */
    if (version <= s->version) {
        s->stale++;
        return FA_ERR_INVALID_VERSION;
    }
    s->version = version;
    return apply(s, msg, n, st, REPORT_ALL, rep, cap);
}

fa_err_t fa_shadow_on_document(fa_shadow_t *s, const char *msg, size_t len, char *rep, size_t cap)
{
    int64_t version = 0;
    int n = 0, st = -1;
    rep[0] = '\0';
    fa_err_t err = parse_head(s, msg, len, &n, &st, &version);
    if (err != FA_OK) {
        return err;
    }
    if (version < s->version) {
        s->stale++;
        return FA_ERR_INVALID_VERSION;
    }
    s->version = version;
    int desired = fj_get(msg, s->toks, n, st, "desired");
    int delta = fj_get(msg, s->toks, n, st, "delta");
    if (desired < 0 || s->toks[desired].type != FJ_OBJ) {
        return FA_OK;
    }
    if (delta < 0 || s->toks[delta].type != FJ_OBJ) {
        return apply(s, msg, n, desired, REPORT_NONE, rep, cap); /* in sync: restore, report nothing */
    }
    return apply(s, msg, n, desired, delta, rep, cap);
}

int fa_shadow_report(char *out, size_t cap, const char *rep, uint64_t seq)
{
    int w = snprintf(out, cap, "{\"state\":{\"reported\":{%s}},\"seq\":%llu,\"clientToken\":\"r%llu\"}", rep,
                     (unsigned long long)seq, (unsigned long long)seq);
    return (w < 0 || (size_t)w >= cap) ? -1 : w;
}
