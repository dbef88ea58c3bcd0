/* Findings: one JSON record per (rule, entity) in the store, with its
 * history of transitions, an explainable priority, and links from symptoms
 * to the causes that share their entity and time window. */
#include "engine_internal.h"

#include "err.h"
#include "log.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const active_states[] = {"open", "dispatched", "applied", "validating"};

void st_finding_id(const char *rule, const char *entity, char out[17])
{
    /* The NUL between rule and entity keeps ("a", "bc") apart from ("ab", "c"). */
    uint64_t h = st_fnv1a(ST_FNV_SEED, rule, strlen(rule) + 1);
    h = st_fnv1a(h, entity, strlen(entity));
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

json_t *st_finding_load(st_engine *en, const char *id)
{
    char key[64];
    char *val = NULL;
    size_t len = 0;
    json_t *f;
    snprintf(key, sizeof(key), ST_FINDING_PREFIX "%.32s", id);
    if (st_store_kv_get(en->st, key, &val, &len) != ST_OK) {
        return NULL;
    }
    f = json_loadb(val, len, 0, NULL);
    free(val);
    if (f != NULL) {
        json_t *seen = st_seen_load(en);
        st_seen_patch(f, seen);
        json_decref(seen);
    }
    return f;
}

int st_finding_save(st_engine *en, json_t *f)
{
    char key[64];
    const char *id = json_string_value(json_object_get(f, "id"));
    char *text;
    int rv;
    if (id == NULL || (text = json_dumps(f, JSON_COMPACT)) == NULL) {
        return ST_EINVAL;
    }
    snprintf(key, sizeof(key), ST_FINDING_PREFIX "%.32s", id);
    st_run_forget(en); /* the next run loads the store's findings again */
    rv = st_store_kv_put(en->st, key, text, strlen(text));
    free(text);
    return rv;
}

bool st_finding_active(const json_t *f)
{
    const char *s = json_string_value(json_object_get(f, "status"));
    for (size_t i = 0; s != NULL && i < ST_ARRAY_LEN(active_states); i++) {
        if (strcmp(s, active_states[i]) == 0) {
            return true;
        }
    }
    return false;
}

void st_finding_transition(json_t *f, const char *status, int64_t now, const char *note)
{
    json_t *h = json_object_get(f, "history");
    const char *from = json_string_value(json_object_get(f, "status"));
    if (!json_is_array(h)) {
        h = json_array();
        json_object_set_new(f, "history", h);
    }
    json_array_append_new(h, json_pack("{s:I,s:s?,s:s,s:s?}", "unix_ms", (json_int_t)now, "from",
                                       from, "to", status, "note", note));
    while (json_array_size(h) > ST_HISTORY_MAX) {
        json_array_remove(h, 1); /* keep the first (detection) and the newest */
    }
    json_object_set_new(f, "status", json_string(status));
    json_object_set_new(f, "updated_unix_ms", json_integer(now));
}

static const char *severity_name(enum st_severity s)
{
    static const char *names[] = {"", "LOW", "MEDIUM", "HIGH", "CRITICAL"};
    return (size_t)s < ST_ARRAY_LEN(names) ? names[s] : "LOW";
}

/* Moves the candidate's JSON into the finding (stealing references);
 * seen is the end of the windows the candidate was found in (the run's
 * clock), so a run within the same step leaves the finding as it was
 * and the commit skips it. */
static void fill(json_t *f, st_candidate *c, int64_t seen)
{
    json_object_set_new(f, "severity", json_string(severity_name(c->severity)));
    json_object_set_new(f, "summary", json_string(c->summary));
    json_object_set_new(f, "labels", c->labels ? c->labels : json_object());
    json_object_set_new(f, "evidence", c->evidence ? c->evidence : json_object());
    json_object_set_new(f, "value", json_real(isfinite(c->value) ? c->value : 0));
    json_object_set_new(f, "threshold", json_real(isfinite(c->threshold) ? c->threshold : 0));
    json_object_set_new(f, "below", json_boolean(c->below));
    json_object_set_new(f, "traffic_share", json_real(c->traffic_share));
    json_object_set_new(f, "last_seen_unix_ms", json_integer(seen));
    if (c->measure != NULL) {
        json_object_set_new(f, "measure", c->measure);
    }
    json_object_set(json_object_get(f, "optimization"), "implementation",
                    c->implementation ? c->implementation : json_null());
    json_decref(c->implementation);
    c->labels = c->evidence = c->implementation = c->measure = NULL;
}

json_t *st_finding_upsert(st_engine *en, const st_rule *r, const char *layer, const char *opt,
                          st_candidate *c, int64_t now)
{
    char id[17];
    json_t *f;
    st_finding_id(r->id, c->entity, id);
    f = json_incref(st_run_finding(en, id));
    if (f == NULL) {
        f = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:{s:s},s:n,s:[],s:s}", "id", id, "rule", r->id,
                      "layer", layer, "entity", c->entity, "status", "open", "first_seen_unix_ms",
                      (json_int_t)now, "optimization", "type", opt, "caused_by", "causes",
                      "collector", en->name);
        if (f == NULL) {
            return NULL;
        }
        fill(f, c, st_eng_now(en->eng));
        st_finding_transition(f, "open", now, "detected");
        json_object_set_new(f, "detected_value", json_real(c->value));
        if (st_run_add_finding(en, id, f) != ST_OK) {
            json_decref(f);
            return NULL;
        }
    } else {
        const char *s = json_string_value(json_object_get(f, "status"));
        fill(f, c, st_eng_now(en->eng));
        /* A problem fixed or dismissed earlier that comes back is open
         * again; a finding under validation keeps its course. */
        if (s != NULL && (strcmp(s, "resolved") == 0 || strcmp(s, "ineffective") == 0)) {
            st_finding_transition(f, "open", now, "detected again");
            json_object_set_new(f, "detected_value", json_real(c->value));
        }
    }
    return f;
}

struct collect {
    json_t *arr;
};

static int collect_one(void *arg, const char *key, const char *val, size_t len)
{
    struct collect *c = arg;
    json_t *f = json_loadb(val, len, 0, NULL);
    (void)key;
    if (f != NULL) {
        json_array_append_new(c->arr, f);
    }
    return 0;
}

json_t *st_findings_all(st_engine *en)
{
    struct collect c = {json_array()};
    json_t *seen;
    size_t i;
    json_t *f;
    if (c.arr != NULL) {
        st_store_kv_scan(en->st, ST_FINDING_PREFIX, collect_one, &c);
    }
    if (c.arr != NULL && (seen = st_seen_load(en)) != NULL) {
        json_array_foreach(c.arr, i, f)
        {
            st_seen_patch(f, seen);
        }
        json_decref(seen);
    }
    return c.arr;
}

/* ---- priority and correlation ---- */

static double severity_weight(const char *s)
{
    if (s == NULL) {
        return 1;
    }
    return strcmp(s, "CRITICAL") == 0 ? 4
           : strcmp(s, "HIGH") == 0   ? 3
           : strcmp(s, "MEDIUM") == 0 ? 2
                                      : 1;
}

static double excess_of(const json_t *f)
{
    double v = json_number_value(json_object_get(f, "value"));
    double t = json_number_value(json_object_get(f, "threshold"));
    double x;
    if (json_is_true(json_object_get(f, "below"))) {
        x = v > 0 ? t / v - 1 : 4;
    } else {
        x = t > 0 ? v / t - 1 : (v > 0 ? 1 : 0);
    }
    return x < 0 ? 0 : (x > 4 ? 4 : x);
}

static const char *label_of(const json_t *f, const char *k)
{
    return json_string_value(json_object_get(json_object_get(f, "labels"), k));
}

/* Causes sit upstream: edge and CDN caches in front of origins, databases
 * behind functions. */
static bool is_cause(const json_t *f)
{
    const char *layer = json_string_value(json_object_get(f, "layer"));
    const char *rule = json_string_value(json_object_get(f, "rule"));
    return layer != NULL && rule != NULL &&
           (strcmp(layer, "database") == 0 || strncmp(rule, "infrastructure.", 15) == 0);
}

static bool is_symptom(const json_t *f)
{
    const char *layer = json_string_value(json_object_get(f, "layer"));
    const char *rule = json_string_value(json_object_get(f, "rule"));
    return layer != NULL && rule != NULL &&
           (strncmp(rule, "regression.", 11) == 0 || strcmp(layer, "function") == 0 ||
            strcmp(layer, "frontend") == 0);
}

/* The labels correlation compares, looked up once per finding: a run
 * compares every cause with every symptom (150 × 1,300 at 1,000 hosts). */
struct ents {
    const char *host;
    const char *route;
    const char *role;
};

static struct ents ents_of(const json_t *f)
{
    return (struct ents){label_of(f, "host"), label_of(f, "route"), label_of(f, "role")};
}

static bool same(const char *x, const char *y)
{
    return x != NULL && y != NULL && strcmp(x, y) == 0;
}

static bool downstream(const struct ents *cause, const struct ents *sym)
{
    if (same(cause->route, sym->route) || same(cause->host, sym->host)) {
        return true;
    }
    /* A fleet-wide cause (no host, no route) touches every symptom; an
     * edge or CDN cause touches what runs behind it. */
    if (cause->host == NULL && cause->route == NULL) {
        return true;
    }
    return cause->role != NULL &&
           (strcmp(cause->role, "edge") == 0 || strcmp(cause->role, "cdn") == 0) &&
           (sym->role == NULL || strcmp(sym->role, "app") == 0 || strcmp(sym->role, "db") == 0);
}

static bool recent(const json_t *f, int64_t now, int64_t window)
{
    return now - json_integer_value(json_object_get(f, "last_seen_unix_ms")) <= 2 * window;
}

/* An active, recent cause and its weight, in the order of all. */
struct cause {
    json_t *f;
    double weight;
    struct ents e;
};

static double cause_weight(const json_t *c)
{
    return severity_weight(json_string_value(json_object_get(c, "severity"))) * (1 + excess_of(c));
}

/* Links each active symptom to its strongest active cause (the first of
 * equals). Causes are few (databases, caches) and symptoms many (every
 * function of every app host): the causes are picked out once, not
 * searched for among all findings for every symptom. */
static void correlate(json_t *all, int64_t now, int64_t window)
{
    struct cause *cs = calloc(json_array_size(all) + 1, sizeof(*cs));
    size_t n = 0;
    size_t i;
    json_t *s;
    if (cs == NULL) {
        return;
    }
    json_array_foreach(all, i, s)
    {
        if (st_finding_active(s) && is_cause(s) && recent(s, now, window)) {
            cs[n].f = s;
            cs[n].e = ents_of(s);
            cs[n++].weight = cause_weight(s);
        }
    }
    json_array_foreach(all, i, s)
    {
        const struct cause *best = NULL;
        struct ents se;
        if (!st_finding_active(s) || !is_symptom(s) || !recent(s, now, window)) {
            continue;
        }
        se = ents_of(s);
        for (size_t k = 0; k < n; k++) {
            if (cs[k].f != s && downstream(&cs[k].e, &se) &&
                (best == NULL || cs[k].weight > best->weight)) {
                best = &cs[k];
            }
        }
        if (best != NULL) {
            json_object_set(s, "caused_by", json_object_get(best->f, "id"));
            json_array_append(json_object_get(best->f, "causes"), json_object_get(s, "id"));
        }
    }
    free(cs);
}

static void score(json_t *f)
{
    const char *sev = json_string_value(json_object_get(f, "severity"));
    double w = severity_weight(sev);
    double x = excess_of(f);
    double t = json_number_value(json_object_get(f, "traffic_share"));
    bool cause = json_array_size(json_object_get(f, "causes")) > 0;
    bool symptom =
        !json_is_null(json_object_get(f, "caused_by")) && json_object_get(f, "caused_by") != NULL;
    double role = cause ? 1.5 : (symptom ? 0.7 : 1.0);
    double total = round(100.0 * w * (1 + x) * (0.5 + 0.5 * t) * role) / 100.0;
    json_object_set_new(f, "priority", json_real(total));
    json_object_set_new(f, "score",
                        json_pack("{s:s,s:f,s:f,s:f,s:f,s:s,s:f,s:s}", "severity", sev ? sev : "",
                                  "severity_weight", w, "distance_past_threshold", x,
                                  "traffic_share", t, "role_factor", role, "role",
                                  cause ? "cause" : (symptom ? "symptom" : "independent"), "total",
                                  total, "formula",
                                  "severity_weight * (1 + distance) * (0.5 + 0.5 * traffic) * "
                                  "role_factor"));
}

void st_findings_rank(st_engine *en, json_t *all)
{
    size_t i;
    json_t *f;
    json_array_foreach(all, i, f)
    {
        json_object_set_new(f, "caused_by", json_null());
        json_object_set_new(f, "causes", json_array());
    }
    /* last_seen is on the run's clock (fill) */
    correlate(all, st_eng_now(en->eng), st_eng_window(en->eng));
    json_array_foreach(all, i, f)
    {
        score(f);
    }
}
