#include "fa_json.h"

#include <string.h>

#define FJ_MAX_DEPTH 16

typedef struct {
    const char *js;
    size_t len;
    size_t pos;
    fj_tok_t *toks;
    int ntoks;
    int count;
} fj_parser_t;

static void skip_ws(fj_parser_t *p)
{
    while (p->pos < p->len) {
        char c = p->js[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            break;
        }
        p->pos++;
    }
}

static int new_tok(fj_parser_t *p, fj_type_t type, size_t start)
{
    if (p->count >= p->ntoks) {
        return -1;
    }
    fj_tok_t *t = &p->toks[p->count];
    t->type = (uint8_t)type;
    t->start = (int)start;
    t->end = -1;
    t->size = 0;
    return p->count++;
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int parse_string(fj_parser_t *p)
{
    size_t start = ++p->pos; /* after the opening quote */
    while (p->pos < p->len) {
        unsigned char c = (unsigned char)p->js[p->pos];
        if (c == '"') {
            int i = new_tok(p, FJ_STR, start);
            if (i < 0) {
                return -1;
            }
            p->toks[i].end = (int)p->pos;
            p->pos++;
            return i;
        }
        if (c < 0x20) {
            return -1;
        }
        if (c == '\\') {
            p->pos++;
            if (p->pos >= p->len) {
                return -1;
            }
            c = (unsigned char)p->js[p->pos];
            if (c == 'u') {
                for (int k = 1; k <= 4; k++) {
                    if (p->pos + k >= p->len || !is_hex(p->js[p->pos + k])) {
                        return -1;
                    }
                }
                p->pos += 4;
            } else if (!strchr("\"\\/bfnrt", c)) {
                return -1;
            }
        }
        p->pos++;
    }
    return -1;
}

static int parse_number(fj_parser_t *p)
{
    size_t s = p->pos;
    if (p->pos < p->len && p->js[p->pos] == '-') {
        p->pos++;
    }
    size_t digits = p->pos;
    while (p->pos < p->len && p->js[p->pos] >= '0' && p->js[p->pos] <= '9') {
        p->pos++;
    }
    if (p->pos == digits) {
        return -1;
    }
    if (p->pos < p->len && p->js[p->pos] == '.') {
        p->pos++;
        size_t f = p->pos;
        while (p->pos < p->len && p->js[p->pos] >= '0' && p->js[p->pos] <= '9') {
            p->pos++;
        }
        if (p->pos == f) {
            return -1;
        }
    }
    if (p->pos < p->len && (p->js[p->pos] == 'e' || p->js[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (p->js[p->pos] == '+' || p->js[p->pos] == '-')) {
            p->pos++;
        }
        size_t e = p->pos;
        while (p->pos < p->len && p->js[p->pos] >= '0' && p->js[p->pos] <= '9') {
            p->pos++;
        }
        if (p->pos == e) {
            return -1;
        }
    }
    int i = new_tok(p, FJ_NUM, s);
    if (i >= 0) {
        p->toks[i].end = (int)p->pos;
    }
    return i;
}

static int parse_literal(fj_parser_t *p, const char *word, fj_type_t type)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->js + p->pos, word, n) != 0) {
        return -1;
    }
    int i = new_tok(p, type, p->pos);
    p->pos += n;
    if (i >= 0) {
        p->toks[i].end = (int)p->pos;
    }
    return i;
}

static int parse_value(fj_parser_t *p, int depth);

static int parse_container(fj_parser_t *p, int depth, int is_obj)
{
    if (depth > FJ_MAX_DEPTH) {
        return -1;
    }
    int i = new_tok(p, is_obj ? FJ_OBJ : FJ_ARR, p->pos);
    if (i < 0) {
        return -1;
    }
    char close = is_obj ? '}' : ']';
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->js[p->pos] == close) {
        p->pos++;
        p->toks[i].end = (int)p->pos;
        return i;
    }
    for (;;) {
        skip_ws(p);
        if (is_obj) {
            if (p->pos >= p->len || p->js[p->pos] != '"' || parse_string(p) < 0) {
                return -1;
            }
            skip_ws(p);
            if (p->pos >= p->len || p->js[p->pos] != ':') {
                return -1;
            }
            p->pos++;
        }
        if (parse_value(p, depth + 1) < 0) {
            return -1;
        }
        p->toks[i].size++;
        skip_ws(p);
        if (p->pos >= p->len) {
            return -1;
        }
        if (p->js[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->js[p->pos] == close) {
            p->pos++;
            p->toks[i].end = (int)p->pos;
            return i;
        }
        return -1;
    }
}

static int parse_value(fj_parser_t *p, int depth)
{
    skip_ws(p);
    if (p->pos >= p->len) {
        return -1;
    }
    switch (p->js[p->pos]) {
    case '{': return parse_container(p, depth, 1);
    case '[': return parse_container(p, depth, 0);
    case '"': return parse_string(p);
    case 't': return parse_literal(p, "true", FJ_TRUE);
    case 'f': return parse_literal(p, "false", FJ_FALSE);
    case 'n': return parse_literal(p, "null", FJ_NULL);
    default: return parse_number(p);
    }
}

int fj_parse(const char *js, size_t len, fj_tok_t *toks, int ntoks)
{
    fj_parser_t p = { js, len, 0, toks, ntoks, 0 };
    if (js == NULL || parse_value(&p, 0) < 0) {
        return -1;
    }
    skip_ws(&p);
    return p.pos == len ? p.count : -1;
}

int fj_next(const fj_tok_t *toks, int n, int i)
{
    int end = toks[i].end;
    int j = i + 1;
    /* Children start after the parent starts and end before it ends. */
    while (j < n && toks[j].start < end) {
        j++;
    }
    return j;
}

bool fj_key_eq(const char *js, const fj_tok_t *t, const char *key)
{
    size_t n = strlen(key);
    return t->type == FJ_STR && (size_t)(t->end - t->start) == n && memcmp(js + t->start, key, n) == 0;
}

int fj_get(const char *js, const fj_tok_t *toks, int n, int obj, const char *key)
{
    if (obj < 0 || obj >= n || toks[obj].type != FJ_OBJ) {
        return -1;
    }
    int i = obj + 1;
    for (int m = 0; m < toks[obj].size && i < n; m++) {
        int v = i + 1;
        if (v >= n) {
            return -1;
        }
        if (fj_key_eq(js, &toks[i], key)) {
            return v;
        }
        i = fj_next(toks, n, v);
    }
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    return (c | 0x20) - 'a' + 10;
}

bool fj_str(const char *js, const fj_tok_t *t, char *out, size_t cap)
{
    if (t->type != FJ_STR || cap == 0) {
        return false;
    }
    size_t o = 0;
    for (int i = t->start; i < t->end; i++) {
        unsigned cp = (unsigned char)js[i];
        if (cp == '\\') {
            char e = js[++i];
            switch (e) {
            case 'n': cp = '\n'; break;
            case 't': cp = '\t'; break;
            case 'r': cp = '\r'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'u':
                cp = (unsigned)(hexval(js[i + 1]) << 12 | hexval(js[i + 2]) << 8 |
                                hexval(js[i + 3]) << 4 | hexval(js[i + 4]));
                i += 4;
                break;
            default: cp = (unsigned char)e; break;
            }
            if (cp >= 0x80) { /* encode as UTF-8 (surrogates are passed through as-is) */
                char tmp[3];
                size_t k = 0;
                if (cp < 0x800) {
                    tmp[k++] = (char)(0xC0 | (cp >> 6));
                } else {
                    tmp[k++] = (char)(0xE0 | (cp >> 12));
                    tmp[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                }
                tmp[k++] = (char)(0x80 | (cp & 0x3F));
                if (o + k >= cap) {
                    return false;
                }
                memcpy(out + o, tmp, k);
                o += k;
                continue;
            }
        }
        if (o + 1 >= cap || cp == 0) {
            return false;
        }
        out[o++] = (char)cp;
    }
    out[o] = '\0';
    return true;
}

bool fj_i64(const char *js, const fj_tok_t *t, int64_t *out)
{
    if (t->type != FJ_NUM) {
        return false;
    }
    int i = t->start;
    int neg = 0;
    if (js[i] == '-') {
        neg = 1;
        i++;
    }
    int64_t v = 0;
    for (; i < t->end; i++) {
        char c = js[i];
        if (c < '0' || c > '9') {
            return false; /* fractions and exponents are not integers */
        }
        if (v > (INT64_MAX - 9) / 10) {
            return false;
        }
        v = v * 10 + (c - '0');
    }
    *out = neg ? -v : v;
    return true;
}

int fj_escape(char *dst, size_t cap, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (const unsigned char *s = (const unsigned char *)src; *s; s++) {
        char esc = 0;
        switch (*s) {
        case '"': esc = '"'; break;
        case '\\': esc = '\\'; break;
        case '\n': esc = 'n'; break;
        case '\r': esc = 'r'; break;
        case '\t': esc = 't'; break;
        default: break;
        }
        if (esc) {
            if (o + 2 >= cap) {
                return -1;
            }
            dst[o++] = '\\';
            dst[o++] = esc;
        } else if (*s < 0x20) {
            if (o + 6 >= cap) {
                return -1;
            }
            dst[o++] = '\\';
            dst[o++] = 'u';
            dst[o++] = '0';
            dst[o++] = '0';
            dst[o++] = hex[*s >> 4];
            dst[o++] = hex[*s & 15];
        } else {
            if (o + 1 >= cap) {
                return -1;
            }
            dst[o++] = (char)*s;
        }
    }
    if (o >= cap) {
        return -1;
    }
    dst[o] = '\0';
    return (int)o;
}
