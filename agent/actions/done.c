/* actions.done: the ids of actions already run, with their results, so that
 * none runs twice (see done.h). */
#include "done.h"

#include "actions.h"
#include "buf.h"
#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define INTERRUPTED "the agent stopped while this action ran; it is not run again"

struct entry {
    char *id;
    char *type;
    char *finding;
    Strata__V1__ActionResult *res; /* NULL while it runs */
};

struct st_done {
    char *path;
    size_t max;
    struct entry *ring; /* ring[(head + i) % max], oldest first */
    size_t head;
    size_t n;
    size_t lines; /* lines in the file */
    pthread_mutex_t mu;
};

static void entry_clear(struct entry *e)
{
    free(e->id);
    free(e->type);
    free(e->finding);
    st_action_result_free(e->res);
    memset(e, 0, sizeof(*e));
}

static struct entry *find(st_done *d, const char *id)
{
    for (size_t i = 0; i < d->n; i++) {
        struct entry *e = &d->ring[(d->head + i) % d->max];
        if (strcmp(e->id, id) == 0) {
            return e;
        }
    }
    return NULL;
}

/* Adds or updates id (mutex held); res is taken over (may be NULL). */
static int put(st_done *d, const char *id, const char *type, const char *finding,
               Strata__V1__ActionResult *res)
{
    struct entry *e = find(d, id);
    if (e != NULL) {
        st_action_result_free(e->res);
        e->res = res;
        return ST_OK;
    }
    if (d->n == d->max) { /* forget the oldest */
        entry_clear(&d->ring[d->head]);
        d->head = (d->head + 1) % d->max;
        d->n--;
    }
    e = &d->ring[(d->head + d->n) % d->max];
    e->id = strdup(id);
    e->type = strdup(type != NULL ? type : "");
    e->finding = strdup(finding != NULL ? finding : "");
    e->res = res;
    if (e->id == NULL || e->type == NULL || e->finding == NULL) {
        entry_clear(e);
        return ST_ENOMEM;
    }
    d->n++;
    return ST_OK;
}

/* ---- lines ---- */

static json_t *started_json(const char *id, const char *type, const char *finding)
{
    return json_pack("{s:s,s:s,s:s,s:I}", "id", id, "type", type, "finding_id", finding,
                     "started_unix_ms", (json_int_t)st_time_wall_ms());
}

static json_t *result_json(const Strata__V1__ActionResult *r)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:i,s:I,s:s,s:s,s:I}", "id", r->action_id, "type", r->type,
                     "finding_id", r->finding_id, "status", st_action_status_name((int)r->status),
                     "exit_status", r->exit_status, "duration_ms", (json_int_t)r->duration_ms,
                     "error", r->error, "output", r->output, "finished_unix_ms",
                     (json_int_t)st_time_wall_ms());
}

/* Appends the line of j (taken over) to b. */
static int add_line(st_buf *b, json_t *j)
{
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    int rv = text == NULL ? ST_ENOMEM : st_buf_append_str(b, text);
    if (rv == ST_OK) {
        rv = st_buf_append(b, "\n", 1);
    }
    free(text);
    json_decref(j);
    return rv;
}

static int append_durably(st_done *d, json_t *j)
{
    st_buf b;
    int fd;
    int rv;
    st_buf_init(&b, ST_DONE_MAX_LINE);
    if ((rv = add_line(&b, j)) != ST_OK) {
        st_buf_free(&b);
        return rv;
    }
    fd = open(d->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, b.data, b.len) != (ssize_t)b.len || fsync(fd) != 0) {
        ST_ERROR("actions", "cannot append to %s: %s", d->path, strerror(errno));
        rv = ST_EIO;
    }
    if (fd >= 0) {
        close(fd);
    }
    st_buf_free(&b);
    d->lines++;
    return rv;
}

/* Rewrites the file with one line per remembered id. */
static int rewrite(st_done *d)
{
    st_buf b;
    int rv = ST_OK;
    st_buf_init(&b, ST_DONE_MAX_FILE);
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < d->n && rv == ST_OK; i++) {
        const struct entry *e = &d->ring[(d->head + i) % d->max];
        rv = add_line(&b, e->res != NULL ? result_json(e->res)
                                         : started_json(e->id, e->type, e->finding));
    }
    pthread_mutex_unlock(&d->mu);
    if (rv == ST_OK) {
        rv = st_file_write_atomic(d->path, b.len > 0 ? (const void *)b.data : "", b.len);
    }
    if (rv != ST_OK) {
        ST_ERROR("actions", "cannot rewrite %s: %s", d->path, st_strerror(rv));
    } else {
        d->lines = d->n;
    }
    st_buf_free(&b);
    return rv;
}

/* ---- loading ---- */

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s != NULL ? s : "";
}

/* One line of the file into memory; false when it is not a record. */
static bool load_line(st_done *d, const char *line, size_t len)
{
    json_t *j = json_loadb(line, len, 0, NULL);
    const char *id = jstr(j, "id");
    Strata__V1__ActionResult *res = NULL;
    bool ok = j != NULL && id[0] != '\0' && strlen(id) <= ST_ACTION_MAX_ID;
    if (ok && json_object_get(j, "status") != NULL) {
        const char *err = jstr(j, "error");
        const char *out = jstr(j, "output");
        res = st_action_result_new(id, jstr(j, "type"), jstr(j, "finding_id"),
                                   st_action_status_parse(jstr(j, "status")),
                                   (int)json_integer_value(json_object_get(j, "exit_status")),
                                   (uint32_t)json_integer_value(json_object_get(j, "duration_ms")),
                                   err, strlen(err), out, strlen(out));
        ok = res != NULL;
    }
    ok = ok && put(d, id, jstr(j, "type"), jstr(j, "finding_id"), res) == ST_OK;
    json_decref(j);
    return ok;
}

/* Reads the file line by line; a line over ST_DONE_MAX_LINE is skipped. */
static int load(st_done *d)
{
    FILE *f = fopen(d->path, "re");
    char *line = malloc(ST_DONE_MAX_LINE);
    size_t total = 0;
    size_t bad = 0;
    if (line == NULL || f == NULL) {
        int rv = line == NULL ? ST_ENOMEM : errno == ENOENT ? ST_OK : ST_EIO;
        if (rv == ST_EIO) {
            ST_ERROR("actions", "cannot read %s: %s", d->path, strerror(errno));
        }
        free(line);
        if (f != NULL) {
            fclose(f);
        }
        return rv;
    }
    while (total < ST_DONE_MAX_FILE && fgets(line, ST_DONE_MAX_LINE, f) != NULL) {
        size_t len = strlen(line);
        bool whole = len > 0 && line[len - 1] == '\n';
        total += len;
        if (!whole && !feof(f)) { /* too long: skip to its end */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n') {
                total++;
            }
            bad++;
            continue;
        }
        bad += len > 1 && !load_line(d, line, len) ? 1 : 0;
    }
    if (bad > 0) {
        ST_WARN("actions", "%s: skipped %zu malformed lines", d->path, bad);
    }
    free(line);
    fclose(f);
    return ST_OK;
}

/* Actions that started but never finished: recorded as failed, reported. */
static int settle_interrupted(st_done *d, st_done_interrupted_fn fn, void *arg)
{
    for (size_t i = 0; i < d->n; i++) {
        struct entry *e = &d->ring[(d->head + i) % d->max];
        if (e->res != NULL) {
            continue;
        }
        e->res = st_action_result_new(e->id, e->type, e->finding,
                                      STRATA__V1__ACTION_STATUS__ACTION_FAILED, 0, 0, INTERRUPTED,
                                      strlen(INTERRUPTED), NULL, 0);
        if (e->res == NULL) {
            return ST_ENOMEM;
        }
        ST_WARN("actions", "action %s (%s) was running when the agent stopped: not run again",
                e->id, e->type);
        if (fn != NULL) {
            fn(arg, e->res);
        }
    }
    return ST_OK;
}

int st_done_open(const char *path, size_t max, st_done_interrupted_fn fn, void *arg, st_done **out)
{
    st_done *d;
    int rv;
    if (max == 0) {
        return ST_EINVAL;
    }
    if ((d = calloc(1, sizeof(*d))) == NULL) {
        return ST_ENOMEM;
    }
    d->max = max;
    pthread_mutex_init(&d->mu, NULL);
    if ((d->path = strdup(path)) == NULL || (d->ring = calloc(max, sizeof(*d->ring))) == NULL) {
        st_done_close(d);
        return ST_ENOMEM;
    }
    if ((rv = load(d)) != ST_OK || (rv = settle_interrupted(d, fn, arg)) != ST_OK ||
        (rv = rewrite(d)) != ST_OK) {
        st_done_close(d);
        return rv;
    }
    *out = d;
    return ST_OK;
}

bool st_done_lookup(st_done *d, const char *id, Strata__V1__ActionResult **res)
{
    struct entry *e;
    bool known;
    pthread_mutex_lock(&d->mu);
    e = find(d, id);
    known = e != NULL;
    if (res != NULL) {
        *res = e != NULL && e->res != NULL ? st_action_result_dup(e->res) : NULL;
    }
    pthread_mutex_unlock(&d->mu);
    return known;
}

int st_done_started(st_done *d, const Strata__V1__Action *a)
{
    char type[ST_ACTION_MAX_TEXT + 1];
    char finding[ST_ACTION_MAX_TEXT + 1];
    int rv;
    st_action_text(a->type, strlen(a->type), type, sizeof(type));
    st_action_text(a->finding_id, strlen(a->finding_id), finding, sizeof(finding));
    pthread_mutex_lock(&d->mu);
    rv = put(d, a->id, type, finding, NULL);
    pthread_mutex_unlock(&d->mu);
    if (rv != ST_OK) {
        return rv;
    }
    return append_durably(d, started_json(a->id, type, finding));
}

int st_done_finished(st_done *d, const Strata__V1__ActionResult *r)
{
    Strata__V1__ActionResult *copy = st_action_result_dup(r);
    int rv;
    if (copy == NULL) {
        return ST_ENOMEM;
    }
    pthread_mutex_lock(&d->mu);
    rv = put(d, r->action_id, r->type, r->finding_id, copy);
    pthread_mutex_unlock(&d->mu);
    if (rv != ST_OK) {
        return rv; /* put freed the copy */
    }
    if ((rv = append_durably(d, result_json(r))) == ST_OK && d->lines > 3 * d->max) {
        rv = rewrite(d);
    }
    return rv;
}

void st_done_close(st_done *d)
{
    if (d == NULL) {
        return;
    }
    for (size_t i = 0; d->ring != NULL && i < d->n; i++) {
        entry_clear(&d->ring[(d->head + i) % d->max]);
    }
    pthread_mutex_destroy(&d->mu);
    free(d->ring);
    free(d->path);
    free(d);
}
