/* Helpers every action type shares: parameters, failures and the UTF-8
 * cleaning that keeps a result acceptable to the collector. */
#include "actions.h"

#include "err.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void st_action_fail(st_action_out *o, int status, const char *fmt, ...)
{
    va_list ap;
    o->status = status;
    va_start(ap, fmt);
    vsnprintf(o->error, sizeof(o->error), fmt, ap);
    va_end(ap);
}

const char *st_action_param(const Strata__V1__Action *a, const char *key)
{
    for (size_t i = 0; i < a->n_params; i++) {
        if (a->params[i]->key != NULL && strcmp(a->params[i]->key, key) == 0) {
            return a->params[i]->value != NULL ? a->params[i]->value : "";
        }
    }
    return NULL;
}

static bool listed(const char *const *list, const char *key)
{
    for (size_t i = 0; list != NULL && list[i] != NULL; i++) {
        if (strcmp(list[i], key) == 0) {
            return true;
        }
    }
    return false;
}

bool st_action_check_params(const Strata__V1__Action *a, const char *const *required,
                            const char *const *optional, bool strict, st_action_out *o)
{
    const int refused = STRATA__V1__ACTION_STATUS__ACTION_REFUSED;
    if (a->n_params > ST_ACTION_MAX_PARAMS) {
        st_action_fail(o, refused, "more than %d parameters", ST_ACTION_MAX_PARAMS);
        return false;
    }
    for (size_t i = 0; i < a->n_params; i++) {
        const char *k = a->params[i]->key != NULL ? a->params[i]->key : "";
        const char *v = a->params[i]->value != NULL ? a->params[i]->value : "";
        if (strict && !listed(required, k) && !listed(optional, k)) {
            st_action_fail(o, refused, "parameter '%.64s' is not accepted", k);
            return false;
        }
        if (strlen(v) > ST_ACTION_MAX_PARAM) {
            st_action_fail(o, refused, "parameter '%.64s' is longer than %d bytes", k,
                           ST_ACTION_MAX_PARAM);
            return false;
        }
        for (size_t j = 0; j < i; j++) {
            if (a->params[j]->key != NULL && strcmp(a->params[j]->key, k) == 0) {
                st_action_fail(o, refused, "parameter '%.64s' is given twice", k);
                return false;
            }
        }
    }
    for (size_t i = 0; required != NULL && required[i] != NULL; i++) {
        const char *v = st_action_param(a, required[i]);
        if (v == NULL || v[0] == '\0') {
            st_action_fail(o, refused, "parameter '%s' is missing", required[i]);
            return false;
        }
    }
    return true;
}

/* Length of the well-formed UTF-8 sequence at p[0..n) (RFC 3629: no
 * overlongs, no surrogates, nothing past U+10FFFF), 0 when there is none.
 * NUL counts as malformed: the collector refuses it in strings. */
static size_t seq_len(const unsigned char *p, size_t n)
{
    unsigned char lo = 0x80, hi = 0xBF;
    size_t len;
    if (p[0] >= 0x01 && p[0] <= 0x7F) {
        return 1;
    }
    if (p[0] >= 0xC2 && p[0] <= 0xDF) {
        len = 2;
    } else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
        len = 3;
        lo = p[0] == 0xE0 ? 0xA0 : 0x80;
        hi = p[0] == 0xED ? 0x9F : 0xBF;
    } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
        len = 4;
        lo = p[0] == 0xF0 ? 0x90 : 0x80;
        hi = p[0] == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < len; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF) {
            return 0;
        }
    }
    return len;
}

size_t st_action_text(const void *src, size_t n, char *out, size_t cap)
{
    static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */
    const unsigned char *p = src;
    size_t len = 0;
    size_t i = 0;
    while (i < n) {
        size_t k = seq_len(p + i, n - i);
        const void *from = k > 0 ? (const void *)(p + i) : (const void *)replacement;
        size_t take = k > 0 ? k : 3;
        if (len + take >= cap) {
            break;
        }
        memcpy(out + len, from, take);
        len += take;
        i += k > 0 ? k : 1;
    }
    out[len] = '\0';
    return len;
}

static char *text_copy(const void *p, size_t n)
{
    char tmp[ST_ACTION_MAX_TEXT + 1];
    size_t len = st_action_text(p != NULL ? p : "", p != NULL ? n : 0, tmp, sizeof(tmp));
    char *s = malloc(len + 1);
    if (s != NULL) {
        memcpy(s, tmp, len + 1);
    }
    return s;
}

static char *str_copy(const char *s)
{
    return text_copy(s, s != NULL ? strlen(s) : 0);
}

Strata__V1__ActionResult *st_action_result_new(const char *id, const char *type,
                                               const char *finding_id, int status, int exit_status,
                                               uint32_t duration_ms, const void *error,
                                               size_t error_len, const void *output,
                                               size_t output_len)
{
    Strata__V1__ActionResult *r = malloc(sizeof(*r));
    if (r == NULL) {
        return NULL;
    }
    strata__v1__action_result__init(r);
    r->status = (Strata__V1__ActionStatus)status;
    r->exit_status = exit_status;
    r->duration_ms = duration_ms;
    r->action_id = str_copy(id);
    r->type = str_copy(type);
    r->finding_id = str_copy(finding_id);
    r->error = text_copy(error, error_len);
    r->output = text_copy(output, output_len);
    if (r->action_id == NULL || r->type == NULL || r->finding_id == NULL || r->error == NULL ||
        r->output == NULL) {
        st_action_result_free(r);
        return NULL;
    }
    return r;
}

Strata__V1__ActionResult *st_action_result_dup(const Strata__V1__ActionResult *r)
{
    return st_action_result_new(r->action_id, r->type, r->finding_id, (int)r->status,
                                r->exit_status, r->duration_ms, r->error, strlen(r->error),
                                r->output, strlen(r->output));
}

void st_action_result_free(Strata__V1__ActionResult *r)
{
    if (r == NULL) {
        return;
    }
    free(r->action_id);
    free(r->type);
    free(r->finding_id);
    free(r->error);
    free(r->output);
    free(r);
}

static const char *const status_names[] = {"unspecified", "ok", "failed", "refused", "timeout"};

const char *st_action_status_name(int status)
{
    return status >= 0 && (size_t)status < ST_ARRAY_LEN(status_names) ? status_names[status]
                                                                      : "unspecified";
}

int st_action_status_parse(const char *name)
{
    for (size_t i = 1; name != NULL && i < ST_ARRAY_LEN(status_names); i++) {
        if (strcmp(name, status_names[i]) == 0) {
            return (int)i;
        }
    }
    return 0;
}
