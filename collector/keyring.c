/* Agent keys: a sorted array for agent keys (binary search by id) and a
 * short list of group keys. */
#include "keyring.h"

#include "err.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct key {
    uint8_t id[16];
    uint8_t key[ST_ENV_KEY_MAX];
    size_t len;
};

struct st_keyring {
    struct key *agents;
    size_t nagents;
    struct key groups[ST_KEYRING_MAX_GROUPS];
    size_t ngroups;
};

static int cmp_id(const void *a, const void *b)
{
    return memcmp(((const struct key *)a)->id, ((const struct key *)b)->id, 16);
}

static int parse_key(const char *hex, struct key *k)
{
    size_t n = strlen(hex);
    if (n % 2 != 0 || n / 2 < 16 || n / 2 > ST_ENV_KEY_MAX) {
        return ST_EINVAL;
    }
    k->len = n / 2;
    return st_hex_decode(hex, k->key, k->len);
}

/* The next blank-separated field of *p (NUL-terminated in place), or NULL. */
static char *next_field(char **p)
{
    char *start = *p + strspn(*p, " \t\r");
    size_t n = strcspn(start, " \t\r");
    if (n == 0) {
        *p = start;
        return NULL;
    }
    *p = start + n + (start[n] != '\0');
    start[n] = '\0';
    return start;
}

/* One line: "agent <uuid> <hex>" or "group <name> <hex>". */
static int parse_line(st_keyring *kr, char *line, char *err, size_t errlen, int lineno,
                      const char *path)
{
    char *p = line;
    char *kind = next_field(&p);
    char *who = kind ? next_field(&p) : NULL;
    char *hex = who ? next_field(&p) : NULL;
    struct key k;
    memset(&k, 0, sizeof(k));
    if (kind == NULL || kind[0] == '#') {
        return ST_OK;
    }
    if (hex == NULL || next_field(&p) != NULL || parse_key(hex, &k) != ST_OK) {
        snprintf(err, errlen,
                 "%s:%d: expected 'agent UUID HEXKEY' or 'group NAME HEXKEY' "
                 "with a key of 16 to %d bytes",
                 path, lineno, ST_ENV_KEY_MAX);
        return ST_ECONFIG;
    }
    if (strcmp(kind, "agent") == 0 && st_uuid_parse(who, k.id) == ST_OK) {
        if (kr->nagents >= ST_KEYRING_MAX) {
            snprintf(err, errlen, "%s:%d: more than %d keys", path, lineno, ST_KEYRING_MAX);
            return ST_ECONFIG;
        }
        kr->agents[kr->nagents++] = k;
        return ST_OK;
    }
    if (strcmp(kind, "group") == 0 && kr->ngroups < ST_KEYRING_MAX_GROUPS) {
        kr->groups[kr->ngroups++] = k;
        return ST_OK;
    }
    snprintf(err, errlen, "%s:%d: '%s %s' is neither an agent UUID nor one of %d groups", path,
             lineno, kind, who, ST_KEYRING_MAX_GROUPS);
    return ST_ECONFIG;
}

int st_keyring_load(const char *path, st_keyring **out, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    st_keyring *kr;
    char *line;
    char *save = NULL;
    int lineno = 0;
    int rv = st_file_read(path, ST_KEYRING_FILE_MAX, &text, &len);
    if (rv != ST_OK) {
        snprintf(err, errlen, "%s: %s", path, st_strerror(rv));
        return rv;
    }
    kr = calloc(1, sizeof(*kr));
    if (kr == NULL || (kr->agents = calloc(len / 40 + 1, sizeof(*kr->agents))) == NULL) {
        free(kr);
        free(text);
        return ST_ENOMEM;
    }
    /* Lines are split by hand so that empty lines keep the numbering. */
    for (line = text; line != NULL && rv == ST_OK; line = save) {
        save = strchr(line, '\n');
        if (save != NULL) {
            *save++ = '\0';
        }
        lineno++;
        rv = parse_line(kr, line, err, errlen, lineno, path);
    }
    free(text);
    if (rv != ST_OK) {
        st_keyring_free(kr);
        return rv;
    }
    qsort(kr->agents, kr->nagents, sizeof(*kr->agents), cmp_id);
    for (size_t i = 1; i < kr->nagents; i++) {
        if (cmp_id(&kr->agents[i - 1], &kr->agents[i]) == 0) {
            char id[37];
            st_uuid_format(kr->agents[i].id, id);
            snprintf(err, errlen, "%s: agent %s is listed twice", path, id);
            st_keyring_free(kr);
            return ST_ECONFIG;
        }
    }
    *out = kr;
    return ST_OK;
}

void st_keyring_free(st_keyring *k)
{
    if (k == NULL) {
        return;
    }
    free(k->agents);
    free(k);
}

size_t st_keyring_size(const st_keyring *k)
{
    return k->nagents + k->ngroups;
}

int st_keyring_verify(const st_keyring *k, const uint8_t *buf, size_t len, const st_envelope *env)
{
    struct key probe;
    const struct key *own;
    int rv = ST_EENV_UNKNOWN_AGENT;
    if (!(env->flags & ST_ENV_FLAG_SIGNED)) {
        return ST_EENV_UNSIGNED;
    }
    memcpy(probe.id, env->agent_id, 16);
    own = bsearch(&probe, k->agents, k->nagents, sizeof(*k->agents), cmp_id);
    if (own != NULL) {
        return st_envelope_verify(buf, len, env, own->key, own->len);
    }
    for (size_t i = 0; i < k->ngroups; i++) {
        rv = st_envelope_verify(buf, len, env, k->groups[i].key, k->groups[i].len);
        if (rv == ST_OK) {
            return ST_OK;
        }
    }
    return rv;
}
