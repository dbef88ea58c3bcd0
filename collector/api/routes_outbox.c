/* GET /v1/deliveries: webhook deliveries as the outbox stored them, so
 * failed ones are visible without reading logs. */
#include "routes_outbox.h"

#include "err.h"
#include "outbox.h"
#include "util.h"

#include <string.h>

#define DEFAULT_LIMIT 100

const char *const st_route_deliveries_params[] = {"status", "limit", NULL};

int st_route_deliveries(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    const char *status = st_param_get(req, "status");
    const char *limit = st_param_get(req, "limit");
    uint64_t n = DEFAULT_LIMIT;
    json_t *arr = NULL;
    int rv;
    if (d->store == NULL) {
        return st_resp_error(resp, 503, "the store is not open");
    }
    if (status != NULL && strcmp(status, "pending") != 0 && strcmp(status, "delivered") != 0 &&
        strcmp(status, "failed") != 0) {
        return st_resp_error(resp, 400,
                             "parameter 'status': unknown status '%.32s' (pending, delivered, "
                             "failed)",
                             status);
    }
    if (limit != NULL && (st_parse_u64(limit, &n) != ST_OK || n == 0 || n > ST_OUTBOX_MAX_LIST)) {
        return st_resp_error(resp, 400, "parameter 'limit': a number from 1 to %d",
                             ST_OUTBOX_MAX_LIST);
    }
    if ((rv = st_outbox_list(d->store, status, (size_t)n, &arr)) != ST_OK) {
        return st_resp_error(resp, 500, "store: %s", st_strerror(rv));
    }
    return st_resp_json(resp, json_pack("{s:o}", "deliveries", arr));
}
