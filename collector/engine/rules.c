/* The rule table of DESIGN.md "Targets, rules, optimizations": one row per
 * rule with its default severity, optimization type and threshold; the
 * checks live in rules_<layer>.c. */
#include "rules.h"

#include "rules_checks.h"

#include <stddef.h>
#include <string.h>

const st_rule st_rules[] = {
    {"database.seq_scan_index", "database", ST_SEV_HIGH, "ADD_INDEX", 0.2, "s",
     "statement mean time > 200 ms and its table is read by sequential scans",
     st_check_seq_scan_index},
    {"database.inefficient_query", "database", ST_SEV_MEDIUM, "OPTIMIZE_QUERY", 0.2, "s",
     "statement mean time > 200 ms, indexes used, many rows read per row returned",
     st_check_inefficient_query},
    {"database.wide_join", "database", ST_SEV_MEDIUM, "DENORMALIZE", 5, "",
     "statement joins more than 5 tables on a hot path", st_check_wide_join},
    {"database.cold_table", "database", ST_SEV_LOW, "ARCHIVE", 90, "d",
     "table not read for more than 90 days", st_check_cold_table},
    {"function.n_plus_one", "function", ST_SEV_HIGH, "BATCH_QUERIES", 0.5, "s",
     "function p95 > 500 ms issuing many cheap statements per call (N+1)", st_check_n_plus_one},
    {"function.large_result", "function", ST_SEV_MEDIUM, "PAGINATION", 0.5, "s",
     "function p95 > 500 ms reading many rows or returning large responses per call",
     st_check_large_result},
    {"function.repeated_work", "function", ST_SEV_MEDIUM, "CACHING", 0.5, "s",
     "function p95 > 500 ms repeating the same costly statement per call", st_check_repeated_work},
    {"function.large_objects", "function", ST_SEV_MEDIUM, "STREAMING_PROCESSING",
     10.0 * 1024 * 1024, "B", "process holds objects larger than 10 MiB", st_check_large_objects},
    {"function.memory_leak", "function", ST_SEV_HIGH, "MEMORY_LEAK_FIX", 1024.0 * 1024, "B/h",
     "RSS grows steadily over the leak window without plateau", st_check_memory_leak},
    {"frontend.bundle_size", "frontend", ST_SEV_MEDIUM, "CODE_SPLITTING", 250.0 * 1024, "B",
     "main bundle > 250 KiB gz, chunk > 100 KiB or total > 1 MiB", st_check_bundle_size},
    {"frontend.unused_code", "frontend", ST_SEV_LOW, "TREE_SHAKING", 0, "B",
     "bundles ship unused bytes", st_check_unused_code},
    {"frontend.duplicate_code", "frontend", ST_SEV_LOW, "DEDUPLICATION", 0, "B",
     "bundles ship duplicate bytes", st_check_duplicate_code},
    {"frontend.slow_component", "frontend", ST_SEV_MEDIUM, "COMPONENT_OPTIMIZATION", 0.016, "s",
     "component render p95 > 16 ms (one 60 fps frame)", st_check_slow_component},
    {"realtime.update_rate", "realtime", ST_SEV_MEDIUM, "THROTTLE_UPDATES", 10, "1/s",
     "more than 10 updates per second per subscription", st_check_update_rate},
    {"realtime.bandwidth", "realtime", ST_SEV_MEDIUM, "DATA_COMPRESSION", 1024.0 * 1024, "B/s",
     "more than 1 MiB/s on a channel", st_check_bandwidth},
    {"realtime.stability", "realtime", ST_SEV_HIGH, "CONNECTION_RESILIENCE", 0.95, "ratio",
     "connection stability below 0.95", st_check_stability},
    {"infrastructure.browser_cache", "infrastructure", ST_SEV_MEDIUM, "BROWSER_CACHING", 0.8,
     "ratio", "browser cache hit ratio below 0.8", st_check_browser_cache},
    {"infrastructure.cdn_cache", "infrastructure", ST_SEV_MEDIUM, "CDN_OPTIMIZATION", 0.9, "ratio",
     "CDN / edge cache hit ratio below 0.9", st_check_cdn_cache},
    {"infrastructure.api_cache", "infrastructure", ST_SEV_MEDIUM, "API_CACHING", 0.5, "ratio",
     "API cache hit ratio below 0.5", st_check_api_cache},
    {NULL, NULL, 0, NULL, 0, NULL, NULL, NULL},
};

const st_rule *st_rule_find(const char *id)
{
    if (id == NULL) {
        return NULL;
    }
    for (const st_rule *r = st_rules; r->id != NULL; r++) {
        if (strcmp(r->id, id) == 0) {
            return r;
        }
    }
    return NULL;
}
