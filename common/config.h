/* YAML configuration: a small document tree that keeps line numbers, and a
 * config map (Fluent Bit style rows of {type, key, default, offset,
 * description}) that binds a mapping onto a C struct. Every error names the
 * file, the line and the key: "agent.yaml:12: key 'interval': bad duration
 * 'fast'". Unknown keys are errors. */
#ifndef ST_CONFIG_H
#define ST_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_CFG_MAX_FILE (1u << 20) /* configuration files larger than this are refused */
#define ST_CFG_MAX_DEPTH 32
#define ST_CFG_MAX_SCALAR 4096

typedef struct st_cfg_error {
    char msg[512];
} st_cfg_error;

enum st_cfg_node_type { ST_CFG_NODE_SCALAR, ST_CFG_NODE_MAP, ST_CFG_NODE_SEQ };

typedef struct st_cfg_doc st_cfg_doc;
typedef struct st_cfg_node st_cfg_node;

/* Parses a YAML file (at most ST_CFG_MAX_FILE bytes) or a string; name is
 * used in error messages. Anchors/aliases and tags are refused; duplicate
 * keys are errors. ST_ECONFIG / ST_ENOENT / ST_ETOOBIG with err filled. */
int st_cfg_load_file(const char *path, st_cfg_doc **out, st_cfg_error *err);
int st_cfg_load_string(const char *name, const char *text, size_t len, st_cfg_doc **out,
                       st_cfg_error *err);
void st_cfg_doc_free(st_cfg_doc *doc);
/* The root node (a mapping), or NULL for an empty document. */
const st_cfg_node *st_cfg_root(const st_cfg_doc *doc);
const char *st_cfg_doc_name(const st_cfg_doc *doc);

enum st_cfg_node_type st_cfg_node_type(const st_cfg_node *n);
/* The 1-based line where the node starts (0 for NULL). */
int st_cfg_node_line(const st_cfg_node *n);
/* Scalar text (NULL for maps and sequences). A YAML null (`key:` with
 * nothing, `~`, `null`) is a scalar whose text is as written. */
const char *st_cfg_scalar(const st_cfg_node *n);
/* True for a plain scalar that YAML reads as null: empty, ~, null. */
bool st_cfg_is_null(const st_cfg_node *n);
/* Mapping access: value for key or NULL; entries in document order. */
const st_cfg_node *st_cfg_get(const st_cfg_node *map, const char *key);
size_t st_cfg_map_len(const st_cfg_node *map);
const char *st_cfg_map_key(const st_cfg_node *map, size_t i);
const st_cfg_node *st_cfg_map_value(const st_cfg_node *map, size_t i);
/* Sequence access. */
size_t st_cfg_seq_len(const st_cfg_node *seq);
const st_cfg_node *st_cfg_seq_at(const st_cfg_node *seq, size_t i);

/* Formats "<file>:<line>: key '<key>': <message>" into err and returns
 * ST_ECONFIG. When node is the value of a mapping entry the line is that of
 * its key, so a nested block is reported where its key stands. node may be
 * NULL (no line), doc NULL (no file), key NULL (no key clause). */
int st_cfg_fail(st_cfg_error *err, const st_cfg_doc *doc, const st_cfg_node *node, const char *key,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

enum st_cfg_type {
    ST_CFG_STR,      /* char *, strdup'd */
    ST_CFG_INT,      /* int64_t */
    ST_CFG_UINT,     /* uint64_t */
    ST_CFG_DOUBLE,   /* double */
    ST_CFG_BOOL,     /* bool: true/false/yes/no/on/off */
    ST_CFG_DURATION, /* int64_t milliseconds: "250ms", "1s", "5m" */
    ST_CFG_SIZE,     /* uint64_t bytes: "64MiB" */
    ST_CFG_STRLIST,  /* st_cfg_strlist: a sequence of scalars */
    ST_CFG_NODE,     /* const st_cfg_node *: kept for the owner to parse (samplers) */
    ST_CFG_SECTION,  /* a nested mapping bound with .sub rows at the same base */
    ST_CFG_IGNORE,   /* a known key that someone else reads (a sampler's interval) */
};

typedef struct st_cfg_strlist {
    char **v;
    size_t n;
} st_cfg_strlist;

typedef struct st_cfg_map {
    enum st_cfg_type type;
    const char *key;
    const char *def;              /* default as text (NULL: zero / NULL) */
    size_t offset;                /* offsetof(struct, field) */
    const char *desc;             /* one line for --help and docs */
    const struct st_cfg_map *sub; /* ST_CFG_SECTION rows, terminated by key NULL */
    double min, max;              /* numeric range when min < max */
} st_cfg_map;

/* Sets every field to its default (rows terminated by a row with key NULL).
 * Fields are overwritten without being freed: base must be zeroed or
 * released. A default that does not parse is a programming error: ST_EINVAL.
 * A STRLIST default is comma-separated text. */
int st_cfg_defaults(const st_cfg_map *rows, void *base, st_cfg_error *err);
/* Binds a mapping node onto base: defaults first, then each key; unknown
 * keys, wrong node types, bad values and out-of-range numbers are errors
 * (ST_ECONFIG). map may be NULL (defaults only). A null value means NULL for
 * STR, an empty list for STRLIST, defaults for SECTION, and is an error for
 * the other scalar types. ST_CFG_NODE fields point into doc and live as long
 * as it does. On error base holds what was bound so far: release it. */
int st_cfg_bind(const st_cfg_doc *doc, const st_cfg_node *map, const st_cfg_map *rows, void *base,
                st_cfg_error *err);
/* Sets one field from text (command-line flags use this): key is a row key,
 * dotted for section rows ("statsd.listen"), and '-' matches '_'. A STRLIST
 * takes comma-separated items. Errors read "flag '--key': bad duration 'x'";
 * ST_ECONFIG (SECTION and NODE rows cannot be set from text). */
int st_cfg_set(const st_cfg_map *rows, void *base, const char *key, const char *value,
               st_cfg_error *err);
/* Frees the strings and lists that binding allocated and zeroes them; safe
 * to call twice and on a struct that only holds defaults. */
void st_cfg_release(const st_cfg_map *rows, void *base);
/* Calls out once per row with "<prefix>key (type, default X): description"
 * (no newline); section rows are followed by their rows with dotted keys.
 * prefix NULL means two spaces. */
void st_cfg_usage(const st_cfg_map *rows, const char *prefix, void (*out)(const char *line));

#endif
