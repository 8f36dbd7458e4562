/* A small strict JSON tokenizer (jsmn-like, our own) and string helpers. */
#ifndef FA_JSON_H
#define FA_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { FJ_OBJ = 1, FJ_ARR, FJ_STR, FJ_NUM, FJ_TRUE, FJ_FALSE, FJ_NULL } fj_type_t;

typedef struct {
    uint8_t type;
    int start;  /* offset of the first byte (inside the quotes for strings) */
    int end;    /* offset after the last byte */
    int size;   /* members of an object (key+value pairs) or elements of an array */
} fj_tok_t;

/* Tokenizes the whole of js; returns the number of tokens or -1 when the text is not one
 * valid JSON value, or does not fit in ntoks tokens. */
int fj_parse(const char *js, size_t len, fj_tok_t *toks, int ntoks);
/* Index of the token after the subtree rooted at i. */
int fj_next(const fj_tok_t *toks, int n, int i);
/* Index of the value of key in the object at obj, or -1. */
int fj_get(const char *js, const fj_tok_t *toks, int n, int obj, const char *key);
/* Copies the unescaped string at tok into out (NUL-terminated); false if not a string or too long. */
bool fj_str(const char *js, const fj_tok_t *t, char *out, size_t cap);
bool fj_i64(const char *js, const fj_tok_t *t, int64_t *out);
bool fj_key_eq(const char *js, const fj_tok_t *t, const char *key);
/* Writes src JSON-escaped (without quotes) into dst; returns the length or -1 if it does not fit. */
int fj_escape(char *dst, size_t cap, const char *src);

#endif
