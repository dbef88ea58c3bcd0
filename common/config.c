/* YAML configuration: libyaml's event parser builds a small tree that keeps
 * the line of every node, and config-map rows bind that tree onto C structs
 * with errors that name the file, the line and the dotted key. */
#include "config.h"

#include "err.h"
#include "timeutil.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* Dotted key paths in messages; a longer path is cut, never overflowed. */
#define KEY_PATH_LEN 256
/* Keys longer than this get no "did you mean" suggestion. */
#define SUGGEST_MAX_KEY 64
#define SUGGEST_MAX_DISTANCE 2

struct map_entry {
    char *key;
    st_cfg_node *value;
};

struct st_cfg_node {
    enum st_cfg_node_type type;
    int line;     /* 1-based line where the node starts */
    int key_line; /* line of the key holding this node; 0 outside a mapping */
    bool null;    /* a plain scalar YAML reads as null */
    char *text;   /* scalars: NUL-terminated, no NUL inside */
    size_t n;     /* mapping entries or sequence items */
    size_t cap;
    struct map_entry *entries;
    st_cfg_node **items;
};

struct st_cfg_doc {
    char *name;
    st_cfg_node *root;
};

struct parser {
    yaml_parser_t yp;
    const char *name;
    const char *text;
    size_t len;
    st_cfg_error *err;
    char path[KEY_PATH_LEN]; /* key path of the node being parsed */
    size_t plen;
};

/* ---- error messages ---- */

__attribute__((format(printf, 4, 0))) static size_t vappend(char *buf, size_t size, size_t off,
                                                            const char *fmt, va_list ap)
{
    int n;
    if (off >= size) {
        return off;
    }
    n = vsnprintf(buf + off, size - off, fmt, ap);
    return n < 0 ? off : off + (size_t)n;
}

__attribute__((format(printf, 4, 5))) static size_t append(char *buf, size_t size, size_t off,
                                                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    off = vappend(buf, size, off, fmt, ap);
    va_end(ap);
    return off;
}

__attribute__((format(printf, 5, 0))) static int
vfail(st_cfg_error *err, const char *name, int line, const char *key, const char *fmt, va_list ap)
{
    size_t off = 0;
    if (err == NULL) {
        return ST_ECONFIG;
    }
    err->msg[0] = '\0';
    if (name != NULL && line > 0) {
        off = append(err->msg, sizeof(err->msg), off, "%s:%d: ", name, line);
    } else if (name != NULL) {
        off = append(err->msg, sizeof(err->msg), off, "%s: ", name);
    }
    if (key != NULL) {
        off = append(err->msg, sizeof(err->msg), off, "key '%s': ", key);
    }
    vappend(err->msg, sizeof(err->msg), off, fmt, ap);
    return ST_ECONFIG;
}

__attribute__((format(printf, 5, 6))) static int
fail_at(st_cfg_error *err, const char *name, int line, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(err, name, line, key, fmt, ap);
    va_end(ap);
    return ST_ECONFIG;
}

static int report_line(const st_cfg_node *n)
{
    if (n == NULL) {
        return 0;
    }
    return n->key_line > 0 ? n->key_line : n->line;
}

int st_cfg_fail(st_cfg_error *err, const st_cfg_doc *doc, const st_cfg_node *node, const char *key,
                const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(err, doc != NULL ? doc->name : NULL, report_line(node), key, fmt, ap);
    va_end(ap);
    return ST_ECONFIG;
}

/* ---- the document tree ---- */

static void node_free(st_cfg_node *n)
{
    if (n == NULL) {
        return;
    }
    for (size_t i = 0; i < n->n; i++) {
        if (n->type == ST_CFG_NODE_MAP) {
            free(n->entries[i].key);
            node_free(n->entries[i].value);
        } else {
            node_free(n->items[i]);
        }
    }
    free(n->entries);
    free(n->items);
    free(n->text);
    free(n);
}

static st_cfg_node *node_new(enum st_cfg_node_type type, int line)
{
    st_cfg_node *n = calloc(1, sizeof(*n));
    if (n != NULL) {
        n->type = type;
        n->line = line;
    }
    return n;
}

/* Makes room for one more entry or item in a mapping or sequence. */
static int node_reserve(st_cfg_node *n)
{
    size_t ncap;
    void *p;
    if (n->n < n->cap) {
        return ST_OK;
    }
    ncap = n->cap == 0 ? 8 : n->cap * 2;
    if (n->type == ST_CFG_NODE_MAP) {
        p = realloc(n->entries, ncap * sizeof(*n->entries));
        if (p != NULL) {
            n->entries = p;
        }
    } else {
        p = realloc(n->items, ncap * sizeof(*n->items));
        if (p != NULL) {
            n->items = p;
        }
    }
    if (p == NULL) {
        return ST_ENOMEM;
    }
    n->cap = ncap;
    return ST_OK;
}

static int event_line(const yaml_event_t *ev)
{
    return (int)ev->start_mark.line + 1;
}

/* ---- parsing: libyaml events into the tree ---- */

static const char *path_key(const struct parser *p)
{
    return p->plen > 0 ? p->path : NULL;
}

/* Appends ".key" (or "key" at the top) to the path; returns the old length
 * for path_pop. */
static size_t path_push_key(struct parser *p, const char *key)
{
    size_t old = p->plen;
    append(p->path, sizeof(p->path), p->plen, old > 0 ? ".%s" : "%s", key);
    p->plen = strlen(p->path);
    return old;
}

static size_t path_push_index(struct parser *p, size_t i)
{
    size_t old = p->plen;
    append(p->path, sizeof(p->path), p->plen, "[%zu]", i);
    p->plen = strlen(p->path);
    return old;
}

static void path_pop(struct parser *p, size_t old)
{
    p->plen = old;
    p->path[old] = '\0';
}

static int parse_nomem(struct parser *p)
{
    fail_at(p->err, p->name, 0, NULL, "out of memory");
    return ST_ENOMEM;
}

static int line_of_offset(const struct parser *p, size_t offset)
{
    int line = 1;
    for (size_t i = 0; i < offset && i < p->len; i++) {
        line += p->text[i] == '\n';
    }
    return line;
}

static int syntax_error(struct parser *p)
{
    const yaml_parser_t *yp = &p->yp;
    const char *problem = yp->problem != NULL ? yp->problem : "malformed YAML";
    int line;
    if (yp->error == YAML_MEMORY_ERROR) {
        return parse_nomem(p);
    }
    /* The reader reports a byte offset, not a mark. */
    if (yp->error == YAML_READER_ERROR) {
        line = line_of_offset(p, yp->problem_offset);
        return fail_at(p->err, p->name, line, NULL, "syntax error: %s", problem);
    }
    line = (int)yp->problem_mark.line + 1;
    if (yp->context != NULL) {
        return fail_at(p->err, p->name, line, NULL, "syntax error: %s (%s at line %d)", problem,
                       yp->context, (int)yp->context_mark.line + 1);
    }
    return fail_at(p->err, p->name, line, NULL, "syntax error: %s", problem);
}

static int next_event(struct parser *p, yaml_event_t *ev)
{
    if (yaml_parser_parse(&p->yp, ev)) {
        return ST_OK;
    }
    return syntax_error(p);
}

/* Anchors, aliases and tags are refused: a configuration says what it
 * means where it says it, and aliases are the "billion laughs" lever. */
static int check_props(struct parser *p, const yaml_char_t *anchor, const yaml_char_t *tag,
                       int line)
{
    if (anchor != NULL) {
        return fail_at(p->err, p->name, line, path_key(p), "anchors (&%s) are not supported",
                       (const char *)anchor);
    }
    if (tag != NULL) {
        return fail_at(p->err, p->name, line, path_key(p), "tags (%s) are not supported",
                       (const char *)tag);
    }
    return ST_OK;
}

static bool plain_null(const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        return false;
    }
    return ev->data.scalar.length == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static int make_scalar(struct parser *p, const yaml_event_t *ev, st_cfg_node **out)
{
    size_t len = ev->data.scalar.length;
    int line = event_line(ev);
    st_cfg_node *n;
    int rv = check_props(p, ev->data.scalar.anchor, ev->data.scalar.tag, line);
    if (rv != ST_OK) {
        return rv;
    }
    if (len > ST_CFG_MAX_SCALAR) {
        return fail_at(p->err, p->name, line, path_key(p), "value is longer than %d bytes",
                       ST_CFG_MAX_SCALAR);
    }
    if (memchr(ev->data.scalar.value, '\0', len) != NULL) {
        return fail_at(p->err, p->name, line, path_key(p), "value holds a NUL byte");
    }
    if ((n = node_new(ST_CFG_NODE_SCALAR, line)) == NULL || (n->text = malloc(len + 1)) == NULL) {
        free(n);
        return parse_nomem(p);
    }
    memcpy(n->text, ev->data.scalar.value, len);
    n->text[len] = '\0';
    n->null = plain_null(ev);
    *out = n;
    return ST_OK;
}

static int parse_node(struct parser *p, const yaml_event_t *ev, int depth, st_cfg_node **out);

/* Reads one key (already in key_ev) and its value into map. */
static int parse_entry(struct parser *p, st_cfg_node *map, const yaml_event_t *key_ev, int depth)
{
    int line = event_line(key_ev);
    st_cfg_node *key = NULL;
    st_cfg_node *value = NULL;
    yaml_event_t ev;
    size_t old;
    int rv;
    if (key_ev->type == YAML_ALIAS_EVENT) {
        return fail_at(p->err, p->name, line, path_key(p), "aliases (*%s) are not supported",
                       (const char *)key_ev->data.alias.anchor);
    }
    if (key_ev->type != YAML_SCALAR_EVENT) {
        return fail_at(p->err, p->name, line, path_key(p), "mapping keys must be scalars");
    }
    if (key_ev->data.scalar.length > ST_CFG_MAX_SCALAR) {
        return fail_at(p->err, p->name, line, path_key(p), "a key is longer than %d bytes",
                       ST_CFG_MAX_SCALAR);
    }
    if ((rv = make_scalar(p, key_ev, &key)) != ST_OK) {
        return rv;
    }
    if (node_reserve(map) != ST_OK) {
        node_free(key);
        return parse_nomem(p);
    }
    old = path_push_key(p, key->text);
    if ((rv = next_event(p, &ev)) == ST_OK) {
        rv = parse_node(p, &ev, depth + 1, &value);
        yaml_event_delete(&ev);
    }
    path_pop(p, old);
    if (rv != ST_OK) {
        node_free(key);
        return rv;
    }
    value->key_line = line;
    map->entries[map->n].key = key->text;
    map->entries[map->n].value = value;
    map->n++;
    key->text = NULL;
    node_free(key);
    return ST_OK;
}

struct key_ref {
    const char *key;
    size_t idx;
};

static int key_ref_cmp(const void *a, const void *b)
{
    const struct key_ref *x = a;
    const struct key_ref *y = b;
    int c = strcmp(x->key, y->key);
    if (c != 0) {
        return c;
    }
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Sorting keeps this O(n log n) for a mapping with many keys; the error
 * names the first repeat in document order. */
static int check_duplicates(struct parser *p, const st_cfg_node *map)
{
    struct key_ref *refs;
    size_t dup = SIZE_MAX;
    size_t first = 0;
    size_t old;
    if (map->n < 2) {
        return ST_OK;
    }
    if ((refs = malloc(map->n * sizeof(*refs))) == NULL) {
        return parse_nomem(p);
    }
    for (size_t i = 0; i < map->n; i++) {
        refs[i].key = map->entries[i].key;
        refs[i].idx = i;
    }
    qsort(refs, map->n, sizeof(*refs), key_ref_cmp);
    for (size_t i = 1; i < map->n; i++) {
        /* Within a run of equal keys the earliest repeat follows the first. */
        if (strcmp(refs[i - 1].key, refs[i].key) == 0 && refs[i].idx < dup) {
            dup = refs[i].idx;
            first = refs[i - 1].idx;
        }
    }
    free(refs);
    if (dup == SIZE_MAX) {
        return ST_OK;
    }
    old = path_push_key(p, map->entries[dup].key);
    fail_at(p->err, p->name, map->entries[dup].value->key_line, p->path,
            "duplicate key (first at line %d)", map->entries[first].value->key_line);
    path_pop(p, old);
    return ST_ECONFIG;
}

static int parse_map(struct parser *p, int line, int depth, st_cfg_node **out)
{
    st_cfg_node *map = node_new(ST_CFG_NODE_MAP, line);
    yaml_event_t ev;
    int rv;
    if (map == NULL) {
        return parse_nomem(p);
    }
    for (;;) {
        if ((rv = next_event(p, &ev)) != ST_OK) {
            goto out;
        }
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        rv = parse_entry(p, map, &ev, depth);
        yaml_event_delete(&ev);
        if (rv != ST_OK) {
            goto out;
        }
    }
    rv = check_duplicates(p, map);
out:
    if (rv != ST_OK) {
        node_free(map);
        return rv;
    }
    *out = map;
    return ST_OK;
}

static int parse_seq(struct parser *p, int line, int depth, st_cfg_node **out)
{
    st_cfg_node *seq = node_new(ST_CFG_NODE_SEQ, line);
    yaml_event_t ev;
    int rv = ST_OK;
    if (seq == NULL) {
        return parse_nomem(p);
    }
    for (;;) {
        size_t old;
        if ((rv = next_event(p, &ev)) != ST_OK) {
            goto out;
        }
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (node_reserve(seq) != ST_OK) {
            yaml_event_delete(&ev);
            rv = parse_nomem(p);
            goto out;
        }
        old = path_push_index(p, seq->n);
        rv = parse_node(p, &ev, depth + 1, &seq->items[seq->n]);
        path_pop(p, old);
        yaml_event_delete(&ev);
        if (rv != ST_OK) {
            goto out;
        }
        seq->n++;
    }
out:
    if (rv != ST_OK) {
        node_free(seq);
        return rv;
    }
    *out = seq;
    return ST_OK;
}

static int parse_node(struct parser *p, const yaml_event_t *ev, int depth, st_cfg_node **out)
{
    int line = event_line(ev);
    int rv;
    if (depth > ST_CFG_MAX_DEPTH) {
        return fail_at(p->err, p->name, line, path_key(p), "nesting is deeper than %d levels",
                       ST_CFG_MAX_DEPTH);
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return make_scalar(p, ev, out);
    case YAML_MAPPING_START_EVENT:
        rv = check_props(p, ev->data.mapping_start.anchor, ev->data.mapping_start.tag, line);
        return rv != ST_OK ? rv : parse_map(p, line, depth, out);
    case YAML_SEQUENCE_START_EVENT:
        rv = check_props(p, ev->data.sequence_start.anchor, ev->data.sequence_start.tag, line);
        return rv != ST_OK ? rv : parse_seq(p, line, depth, out);
    case YAML_ALIAS_EVENT:
        return fail_at(p->err, p->name, line, path_key(p), "aliases (*%s) are not supported",
                       (const char *)ev->data.alias.anchor);
    default:
        return fail_at(p->err, p->name, line, path_key(p), "unexpected YAML event %d",
                       (int)ev->type);
    }
}

/* Expects an event of one type (the stream's frame around the document). */
static int expect_event(struct parser *p, yaml_event_type_t type, yaml_event_t *ev)
{
    int rv = next_event(p, ev);
    if (rv != ST_OK) {
        return rv;
    }
    if (ev->type != type) {
        rv = fail_at(p->err, p->name, event_line(ev), NULL, "unexpected YAML event %d",
                     (int)ev->type);
        yaml_event_delete(ev);
    }
    return rv;
}

/* Reads the document after DOCUMENT-START and checks that it is the only
 * one and a mapping (or empty). */
static int parse_document(struct parser *p, st_cfg_node **root)
{
    st_cfg_node *node = NULL;
    yaml_event_t ev;
    int rv;
    if ((rv = next_event(p, &ev)) != ST_OK) {
        return rv;
    }
    rv = parse_node(p, &ev, 1, &node);
    yaml_event_delete(&ev);
    if (rv != ST_OK || (rv = expect_event(p, YAML_DOCUMENT_END_EVENT, &ev)) != ST_OK) {
        goto out;
    }
    yaml_event_delete(&ev);
    if ((rv = next_event(p, &ev)) != ST_OK) {
        goto out;
    }
    if (ev.type != YAML_STREAM_END_EVENT) {
        rv = fail_at(p->err, p->name, event_line(&ev), NULL,
                     "only one YAML document is allowed in a configuration file");
    }
    yaml_event_delete(&ev);
    if (rv == ST_OK && node->type == ST_CFG_NODE_SCALAR && node->null) {
        node_free(node);
        node = NULL;
    } else if (rv == ST_OK && node->type != ST_CFG_NODE_MAP) {
        rv = fail_at(p->err, p->name, node->line, NULL, "the top level must be a mapping of keys");
    }
out:
    if (rv != ST_OK) {
        node_free(node);
        return rv;
    }
    *root = node;
    return ST_OK;
}

static int parse_stream(struct parser *p, st_cfg_node **root)
{
    yaml_event_t ev;
    int rv = expect_event(p, YAML_STREAM_START_EVENT, &ev);
    if (rv != ST_OK) {
        return rv;
    }
    yaml_event_delete(&ev);
    if ((rv = next_event(p, &ev)) != ST_OK) {
        return rv;
    }
    if (ev.type == YAML_STREAM_END_EVENT) {
        /* Nothing but comments and blank lines: all defaults. */
        yaml_event_delete(&ev);
        *root = NULL;
        return ST_OK;
    }
    if (ev.type != YAML_DOCUMENT_START_EVENT) {
        rv = fail_at(p->err, p->name, event_line(&ev), NULL, "unexpected YAML event %d",
                     (int)ev.type);
        yaml_event_delete(&ev);
        return rv;
    }
    yaml_event_delete(&ev);
    return parse_document(p, root);
}

int st_cfg_load_string(const char *name, const char *text, size_t len, st_cfg_doc **out,
                       st_cfg_error *err)
{
    struct parser p;
    st_cfg_doc *doc;
    int rv;
    if (name == NULL) {
        name = "<string>";
    }
    if (out == NULL || (text == NULL && len > 0)) {
        fail_at(err, name, 0, NULL, "invalid argument");
        return ST_EINVAL;
    }
    if (len > ST_CFG_MAX_FILE) {
        fail_at(err, name, 0, NULL, "file is larger than %u bytes", ST_CFG_MAX_FILE);
        return ST_ETOOBIG;
    }
    if ((doc = calloc(1, sizeof(*doc))) == NULL || (doc->name = strdup(name)) == NULL) {
        free(doc);
        fail_at(err, name, 0, NULL, "out of memory");
        return ST_ENOMEM;
    }
    memset(&p, 0, sizeof(p));
    p.name = doc->name;
    p.text = text != NULL ? text : "";
    p.len = len;
    p.err = err;
    if (!yaml_parser_initialize(&p.yp)) {
        st_cfg_doc_free(doc);
        fail_at(err, name, 0, NULL, "out of memory");
        return ST_ENOMEM;
    }
    yaml_parser_set_input_string(&p.yp, (const unsigned char *)p.text, len);
    rv = parse_stream(&p, &doc->root);
    yaml_parser_delete(&p.yp);
    if (rv != ST_OK) {
        st_cfg_doc_free(doc);
        return rv;
    }
    *out = doc;
    return ST_OK;
}

int st_cfg_load_file(const char *path, st_cfg_doc **out, st_cfg_error *err)
{
    char *text = NULL;
    size_t len = 0;
    int rv;
    int e;
    if (path == NULL || out == NULL) {
        fail_at(err, path, 0, NULL, "invalid argument");
        return ST_EINVAL;
    }
    errno = 0;
    rv = st_file_read(path, ST_CFG_MAX_FILE, &text, &len);
    e = errno;
    if (rv == ST_ETOOBIG) {
        fail_at(err, path, 0, NULL, "file is larger than %u bytes", ST_CFG_MAX_FILE);
        return rv;
    }
    if (rv == ST_ENOENT) {
        fail_at(err, path, 0, NULL, "no such file");
        return rv;
    }
    if (rv != ST_OK) {
        fail_at(err, path, 0, NULL, "cannot read: %s", e != 0 ? strerror(e) : st_strerror(rv));
        return rv;
    }
    rv = st_cfg_load_string(path, text, len, out, err);
    free(text);
    return rv;
}

void st_cfg_doc_free(st_cfg_doc *doc)
{
    if (doc == NULL) {
        return;
    }
    node_free(doc->root);
    free(doc->name);
    free(doc);
}

const st_cfg_node *st_cfg_root(const st_cfg_doc *doc)
{
    return doc != NULL ? doc->root : NULL;
}

const char *st_cfg_doc_name(const st_cfg_doc *doc)
{
    return doc != NULL ? doc->name : NULL;
}

/* ---- tree access ---- */

enum st_cfg_node_type st_cfg_node_type(const st_cfg_node *n)
{
    return n != NULL ? n->type : ST_CFG_NODE_SCALAR;
}

int st_cfg_node_line(const st_cfg_node *n)
{
    return n != NULL ? n->line : 0;
}

const char *st_cfg_scalar(const st_cfg_node *n)
{
    return n != NULL && n->type == ST_CFG_NODE_SCALAR ? n->text : NULL;
}

bool st_cfg_is_null(const st_cfg_node *n)
{
    return n != NULL && n->type == ST_CFG_NODE_SCALAR && n->null;
}

const st_cfg_node *st_cfg_get(const st_cfg_node *map, const char *key)
{
    if (map == NULL || map->type != ST_CFG_NODE_MAP || key == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < map->n; i++) {
        if (strcmp(map->entries[i].key, key) == 0) {
            return map->entries[i].value;
        }
    }
    return NULL;
}

size_t st_cfg_map_len(const st_cfg_node *map)
{
    return map != NULL && map->type == ST_CFG_NODE_MAP ? map->n : 0;
}

const char *st_cfg_map_key(const st_cfg_node *map, size_t i)
{
    return i < st_cfg_map_len(map) ? map->entries[i].key : NULL;
}

const st_cfg_node *st_cfg_map_value(const st_cfg_node *map, size_t i)
{
    return i < st_cfg_map_len(map) ? map->entries[i].value : NULL;
}

size_t st_cfg_seq_len(const st_cfg_node *seq)
{
    return seq != NULL && seq->type == ST_CFG_NODE_SEQ ? seq->n : 0;
}

const st_cfg_node *st_cfg_seq_at(const st_cfg_node *seq, size_t i)
{
    return i < st_cfg_seq_len(seq) ? seq->items[i] : NULL;
}

/* ---- values from text ---- */

static const struct {
    const char *name; /* for --help */
    const char *what; /* for "expected ..." */
} type_names[] = {
    [ST_CFG_STR] = {"string", "a string"},
    [ST_CFG_INT] = {"int", "an integer"},
    [ST_CFG_UINT] = {"uint", "a non-negative integer"},
    [ST_CFG_DOUBLE] = {"number", "a number"},
    [ST_CFG_BOOL] = {"bool", "true or false"},
    [ST_CFG_DURATION] = {"duration", "a duration"},
    [ST_CFG_SIZE] = {"size", "a size"},
    [ST_CFG_STRLIST] = {"list", "a list of strings"},
    [ST_CFG_NODE] = {"yaml", "a YAML value"},
    [ST_CFG_SECTION] = {"section", "a mapping"},
    [ST_CFG_IGNORE] = {"any", "a value"},
};

static const char *type_name(enum st_cfg_type t)
{
    return (size_t)t < ST_ARRAY_LEN(type_names) ? type_names[t].name : "?";
}

static const char *type_what(enum st_cfg_type t)
{
    return (size_t)t < ST_ARRAY_LEN(type_names) ? type_names[t].what : "?";
}

static const char *kind_name(enum st_cfg_node_type t)
{
    switch (t) {
    case ST_CFG_NODE_MAP:
        return "mapping";
    case ST_CFG_NODE_SEQ:
        return "sequence";
    default:
        return "scalar";
    }
}

static const struct {
    const char *text;
    bool value;
} bool_words[] = {{"true", true}, {"false", false}, {"yes", true},
                  {"no", false},  {"on", true},     {"off", false}};

static void format_bound(const st_cfg_map *row, double v, char *buf, size_t len)
{
    if (row->type == ST_CFG_DURATION) {
        st_duration_format((int64_t)v, buf, len);
    } else if (row->type == ST_CFG_DOUBLE) {
        snprintf(buf, len, "%g", v);
    } else {
        snprintf(buf, len, "%.0f", v);
    }
}

static int check_range(const st_cfg_map *row, double v, const char *text, char *why, size_t wlen)
{
    char lo[32];
    char hi[32];
    if (!(row->min < row->max) || (v >= row->min && v <= row->max)) {
        return ST_OK;
    }
    format_bound(row, row->min, lo, sizeof(lo));
    format_bound(row, row->max, hi, sizeof(hi));
    snprintf(why, wlen, "value '%.64s' out of range [%s, %s]", text, lo, hi);
    return ST_ECONFIG;
}

static int parse_signed(const st_cfg_map *row, const char *text, int64_t *field, char *why,
                        size_t wlen)
{
    int64_t v;
    bool dur = row->type == ST_CFG_DURATION;
    int rv = dur ? st_duration_parse(text, &v) : st_parse_i64(text, &v);
    if (rv != ST_OK) {
        snprintf(why, wlen,
                 dur ? "bad duration '%.64s' (use e.g. 250ms, 10s, 5m, 2h, 7d)"
                     : "bad integer '%.64s'",
                 text);
        return ST_ECONFIG;
    }
    if ((rv = check_range(row, (double)v, text, why, wlen)) != ST_OK) {
        return rv;
    }
    *field = v;
    return ST_OK;
}

static int parse_unsigned(const st_cfg_map *row, const char *text, uint64_t *field, char *why,
                          size_t wlen)
{
    uint64_t v;
    bool size = row->type == ST_CFG_SIZE;
    int rv = size ? st_size_parse(text, &v) : st_parse_u64(text, &v);
    if (rv != ST_OK) {
        snprintf(why, wlen,
                 size ? "bad size '%.64s' (use e.g. 4096, 512KiB, 64MiB)"
                      : "bad unsigned integer '%.64s'",
                 text);
        return ST_ECONFIG;
    }
    if ((rv = check_range(row, (double)v, text, why, wlen)) != ST_OK) {
        return rv;
    }
    *field = v;
    return ST_OK;
}

static int parse_number(const st_cfg_map *row, const char *text, double *field, char *why,
                        size_t wlen)
{
    double v;
    int rv;
    if (st_parse_double(text, &v) != ST_OK) {
        snprintf(why, wlen, "bad number '%.64s'", text);
        return ST_ECONFIG;
    }
    if ((rv = check_range(row, v, text, why, wlen)) != ST_OK) {
        return rv;
    }
    *field = v;
    return ST_OK;
}

static int parse_bool(const char *text, bool *field, char *why, size_t wlen)
{
    for (size_t i = 0; i < ST_ARRAY_LEN(bool_words); i++) {
        if (strcasecmp(text, bool_words[i].text) == 0) {
            *field = bool_words[i].value;
            return ST_OK;
        }
    }
    snprintf(why, wlen, "bad bool '%.64s' (use true/false, yes/no, on/off)", text);
    return ST_ECONFIG;
}

static int set_str(char **field, const char *text, char *why, size_t wlen)
{
    char *dup = strdup(text);
    if (dup == NULL) {
        snprintf(why, wlen, "out of memory");
        return ST_ENOMEM;
    }
    free(*field);
    *field = dup;
    return ST_OK;
}

static void list_free(st_cfg_strlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i]);
    }
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Adds s[0..n) with surrounding blanks trimmed; an empty item is skipped
 * so "a,b," works. l->v has room (allocated for the comma count). */
static int list_add_trimmed(st_cfg_strlist *l, const char *s, size_t n)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) {
        n--;
    }
    if (n == 0) {
        return ST_OK;
    }
    if ((l->v[l->n] = strndup(s, n)) == NULL) {
        return ST_ENOMEM;
    }
    l->n++;
    return ST_OK;
}

/* A list from text: comma-separated items (flags and defaults). */
static int set_list_text(st_cfg_strlist *field, const char *text, char *why, size_t wlen)
{
    st_cfg_strlist l = {NULL, 0};
    size_t cap = 1;
    const char *s = text;
    for (const char *c = text; *c != '\0'; c++) {
        cap += *c == ',';
    }
    if ((l.v = calloc(cap, sizeof(*l.v))) == NULL) {
        goto nomem;
    }
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t n = comma != NULL ? (size_t)(comma - s) : strlen(s);
        if (list_add_trimmed(&l, s, n) != ST_OK) {
            goto nomem;
        }
        if (comma == NULL) {
            break;
        }
        s = comma + 1;
    }
    list_free(field);
    *field = l;
    return ST_OK;
nomem:
    list_free(&l);
    snprintf(why, wlen, "out of memory");
    return ST_ENOMEM;
}

/* Parses text into the row's field; on failure why says what is wrong and
 * the field is left as it was. */
static int parse_value(const st_cfg_map *row, const char *text, void *base, char *why, size_t wlen)
{
    void *field = (char *)base + row->offset;
    switch (row->type) {
    case ST_CFG_STR:
        return set_str(field, text, why, wlen);
    case ST_CFG_INT:
    case ST_CFG_DURATION:
        return parse_signed(row, text, field, why, wlen);
    case ST_CFG_UINT:
    case ST_CFG_SIZE:
        return parse_unsigned(row, text, field, why, wlen);
    case ST_CFG_DOUBLE:
        return parse_number(row, text, field, why, wlen);
    case ST_CFG_BOOL:
        return parse_bool(text, field, why, wlen);
    case ST_CFG_STRLIST:
        return set_list_text(field, text, why, wlen);
    default:
        snprintf(why, wlen, "%s cannot be set from text", type_what(row->type));
        return ST_ECONFIG;
    }
}

/* ---- defaults, release, keys ---- */

static void join_key(char *buf, size_t len, const char *prefix, const char *key)
{
    if (prefix != NULL && prefix[0] != '\0') {
        snprintf(buf, len, "%s.%s", prefix, key);
    } else {
        snprintf(buf, len, "%s", key);
    }
}

static int defaults_rows(const st_cfg_map *rows, void *base, const char *prefix, st_cfg_error *err);

static int default_one(const st_cfg_map *row, void *base, const char *path, st_cfg_error *err)
{
    void *field = (char *)base + row->offset;
    char why[256];
    int rv;
    switch (row->type) {
    case ST_CFG_SECTION:
        return row->sub != NULL ? defaults_rows(row->sub, base, path, err) : ST_OK;
    case ST_CFG_IGNORE:
        return ST_OK;
    case ST_CFG_NODE:
        *(const st_cfg_node **)field = NULL;
        return ST_OK;
    case ST_CFG_STR:
        *(char **)field = NULL;
        break;
    case ST_CFG_STRLIST:
        memset(field, 0, sizeof(st_cfg_strlist));
        break;
    case ST_CFG_BOOL:
        *(bool *)field = false;
        break;
    case ST_CFG_INT:
    case ST_CFG_DURATION:
        *(int64_t *)field = 0;
        break;
    case ST_CFG_UINT:
    case ST_CFG_SIZE:
        *(uint64_t *)field = 0;
        break;
    case ST_CFG_DOUBLE:
        *(double *)field = 0;
        break;
    }
    if (row->def == NULL) {
        return ST_OK;
    }
    if ((rv = parse_value(row, row->def, base, why, sizeof(why))) != ST_OK) {
        fail_at(err, NULL, 0, path, "bad default: %s", why);
        return rv == ST_ENOMEM ? rv : ST_EINVAL;
    }
    return ST_OK;
}

static int defaults_rows(const st_cfg_map *rows, void *base, const char *prefix, st_cfg_error *err)
{
    for (const st_cfg_map *row = rows; row->key != NULL; row++) {
        char path[KEY_PATH_LEN];
        int rv;
        join_key(path, sizeof(path), prefix, row->key);
        if ((rv = default_one(row, base, path, err)) != ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

int st_cfg_defaults(const st_cfg_map *rows, void *base, st_cfg_error *err)
{
    if (rows == NULL || base == NULL) {
        fail_at(err, NULL, 0, NULL, "invalid argument");
        return ST_EINVAL;
    }
    return defaults_rows(rows, base, NULL, err);
}

void st_cfg_release(const st_cfg_map *rows, void *base)
{
    if (rows == NULL || base == NULL) {
        return;
    }
    for (const st_cfg_map *row = rows; row->key != NULL; row++) {
        void *field = (char *)base + row->offset;
        switch (row->type) {
        case ST_CFG_STR:
            free(*(char **)field);
            *(char **)field = NULL;
            break;
        case ST_CFG_STRLIST:
            list_free(field);
            break;
        case ST_CFG_NODE:
            *(const st_cfg_node **)field = NULL;
            break;
        case ST_CFG_SECTION:
            st_cfg_release(row->sub, base);
            break;
        default:
            break;
        }
    }
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a);
    size_t lb = strlen(b);
    size_t row[SUGGEST_MAX_KEY + 1];
    if (la > SUGGEST_MAX_KEY || lb > SUGGEST_MAX_KEY) {
        return SIZE_MAX;
    }
    for (size_t j = 0; j <= lb; j++) {
        row[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = ST_MIN(row[j] + 1, row[j - 1] + 1);
            row[j] = ST_MIN(best, diag + (a[i - 1] != b[j - 1]));
            diag = up;
        }
    }
    return row[lb];
}

/* The row key closest to key within SUGGEST_MAX_DISTANCE edits, if any;
 * a suggestion must keep something of the key, so "a" never suggests "b". */
static const char *suggest(const st_cfg_map *rows, const char *key)
{
    const char *best = NULL;
    size_t best_d = SUGGEST_MAX_DISTANCE + 1;
    for (const st_cfg_map *row = rows; row->key != NULL; row++) {
        size_t d = edit_distance(key, row->key);
        if (d < best_d && d < strlen(row->key)) {
            best = row->key;
            best_d = d;
        }
    }
    return best;
}

/* Row lookup by the first n bytes of key; flags also match '-' to '_'. */
static const st_cfg_map *find_row(const st_cfg_map *rows, const char *key, size_t n, bool flag)
{
    for (const st_cfg_map *row = rows; row->key != NULL; row++) {
        size_t i = 0;
        for (; i < n && row->key[i] != '\0'; i++) {
            char c = flag && key[i] == '-' ? '_' : key[i];
            if (c != row->key[i]) {
                break;
            }
        }
        if (i == n && row->key[i] == '\0') {
            return row;
        }
    }
    return NULL;
}

/* ---- binding the tree ---- */

static int bind_map(const st_cfg_doc *doc, const st_cfg_node *map, const st_cfg_map *rows,
                    void *base, const char *prefix, st_cfg_error *err);

static int bind_list(const st_cfg_doc *doc, const st_cfg_node *node, st_cfg_strlist *field,
                     const char *path, st_cfg_error *err)
{
    st_cfg_strlist l = {NULL, 0};
    size_t n = node->type == ST_CFG_NODE_SEQ ? node->n : (node->null ? 0 : 1);
    if (node->type == ST_CFG_NODE_MAP) {
        return st_cfg_fail(err, doc, node, path, "expected a list of strings, got a mapping");
    }
    if (n > 0 && (l.v = calloc(n, sizeof(*l.v))) == NULL) {
        st_cfg_fail(err, doc, node, path, "out of memory");
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const st_cfg_node *item = node->type == ST_CFG_NODE_SEQ ? node->items[i] : node;
        if (item->type != ST_CFG_NODE_SCALAR || item->null) {
            char key[KEY_PATH_LEN + 24];
            snprintf(key, sizeof(key), "%s[%zu]", path, i);
            list_free(&l);
            return st_cfg_fail(err, doc, item, key, "expected a string, got %s",
                               item->null ? "an empty value" : kind_name(item->type));
        }
        if ((l.v[i] = strdup(item->text)) == NULL) {
            list_free(&l);
            st_cfg_fail(err, doc, node, path, "out of memory");
            return ST_ENOMEM;
        }
        l.n++;
    }
    list_free(field);
    *field = l;
    return ST_OK;
}

static int bind_value(const st_cfg_doc *doc, const st_cfg_map *row, const st_cfg_node *node,
                      void *base, const char *path, st_cfg_error *err)
{
    void *field = (char *)base + row->offset;
    char why[256];
    int rv;
    switch (row->type) {
    case ST_CFG_SECTION:
        if (node->type == ST_CFG_NODE_SCALAR && node->null) {
            return ST_OK; /* "section:" with everything commented out */
        }
        if (node->type != ST_CFG_NODE_MAP) {
            return st_cfg_fail(err, doc, node, path, "expected a mapping, got a %s",
                               kind_name(node->type));
        }
        return row->sub != NULL ? bind_map(doc, node, row->sub, base, path, err) : ST_OK;
    case ST_CFG_IGNORE:
        return ST_OK;
    case ST_CFG_NODE:
        *(const st_cfg_node **)field = node;
        return ST_OK;
    case ST_CFG_STRLIST:
        return bind_list(doc, node, field, path, err);
    default:
        break;
    }
    if (node->type != ST_CFG_NODE_SCALAR) {
        return st_cfg_fail(err, doc, node, path, "expected %s, got a %s", type_what(row->type),
                           kind_name(node->type));
    }
    if (node->null && row->type == ST_CFG_STR) {
        free(*(char **)field);
        *(char **)field = NULL;
        return ST_OK;
    }
    if (node->null) {
        return st_cfg_fail(err, doc, node, path, "empty value, expected %s", type_what(row->type));
    }
    if ((rv = parse_value(row, node->text, base, why, sizeof(why))) != ST_OK) {
        st_cfg_fail(err, doc, node, path, "%s", why);
    }
    return rv;
}

static int bind_map(const st_cfg_doc *doc, const st_cfg_node *map, const st_cfg_map *rows,
                    void *base, const char *prefix, st_cfg_error *err)
{
    for (size_t i = 0; i < map->n; i++) {
        const struct map_entry *e = &map->entries[i];
        const st_cfg_map *row = find_row(rows, e->key, strlen(e->key), false);
        char path[KEY_PATH_LEN];
        int rv;
        join_key(path, sizeof(path), prefix, e->key);
        if (row == NULL) {
            const char *hint = suggest(rows, e->key);
            if (hint != NULL) {
                return st_cfg_fail(err, doc, e->value, path, "unknown key (did you mean '%s'?)",
                                   hint);
            }
            return st_cfg_fail(err, doc, e->value, path, "unknown key");
        }
        if ((rv = bind_value(doc, row, e->value, base, path, err)) != ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

int st_cfg_bind(const st_cfg_doc *doc, const st_cfg_node *map, const st_cfg_map *rows, void *base,
                st_cfg_error *err)
{
    int rv = st_cfg_defaults(rows, base, err);
    if (rv != ST_OK || map == NULL) {
        return rv;
    }
    if (map->type != ST_CFG_NODE_MAP) {
        return st_cfg_fail(err, doc, map, NULL, "expected a mapping of keys, got a %s",
                           kind_name(map->type));
    }
    return bind_map(doc, map, rows, base, NULL, err);
}

/* ---- flags and help ---- */

/* Walks "a.b.c" through section rows to the row for c. */
static const st_cfg_map *find_flag_row(const st_cfg_map *rows, const char *key)
{
    const char *dot;
    while ((dot = strchr(key, '.')) != NULL) {
        const st_cfg_map *row = find_row(rows, key, (size_t)(dot - key), true);
        if (row == NULL || row->type != ST_CFG_SECTION || row->sub == NULL) {
            return NULL;
        }
        rows = row->sub;
        key = dot + 1;
    }
    return find_row(rows, key, strlen(key), true);
}

int st_cfg_set(const st_cfg_map *rows, void *base, const char *key, const char *value,
               st_cfg_error *err)
{
    const st_cfg_map *row;
    char why[256];
    int rv;
    if (rows == NULL || base == NULL || key == NULL) {
        fail_at(err, NULL, 0, NULL, "invalid argument");
        return ST_EINVAL;
    }
    if ((row = find_flag_row(rows, key)) == NULL) {
        return fail_at(err, NULL, 0, NULL, "flag '--%s': unknown flag", key);
    }
    if (row->type == ST_CFG_SECTION || row->type == ST_CFG_NODE || row->type == ST_CFG_IGNORE) {
        return fail_at(err, NULL, 0, NULL, "flag '--%s': cannot be set from the command line", key);
    }
    if (value == NULL) {
        return fail_at(err, NULL, 0, NULL, "flag '--%s': needs a value", key);
    }
    if ((rv = parse_value(row, value, base, why, sizeof(why))) != ST_OK) {
        fail_at(err, NULL, 0, NULL, "flag '--%s': %s", key, why);
    }
    return rv;
}

static void usage_rows(const st_cfg_map *rows, const char *prefix, const char *parent,
                       void (*out)(const char *line))
{
    for (const st_cfg_map *row = rows; row->key != NULL; row++) {
        char key[KEY_PATH_LEN];
        char line[1024];
        size_t off;
        join_key(key, sizeof(key), parent, row->key);
        off = append(line, sizeof(line), 0, "%s%s (%s", prefix, key, type_name(row->type));
        if (row->def != NULL) {
            off = append(line, sizeof(line), off, ", default %s", row->def);
        }
        off = append(line, sizeof(line), off, ")");
        if (row->desc != NULL) {
            append(line, sizeof(line), off, ": %s", row->desc);
        }
        out(line);
        if (row->type == ST_CFG_SECTION && row->sub != NULL) {
            usage_rows(row->sub, prefix, key, out);
        }
    }
}

void st_cfg_usage(const st_cfg_map *rows, const char *prefix, void (*out)(const char *line))
{
    if (rows == NULL || out == NULL) {
        return;
    }
    usage_rows(rows, prefix != NULL ? prefix : "  ", NULL, out);
}
