/* The dashboard: its files, bundled and embedded at build time
 * (cmake/web_assets.cmake generates the table from collector/web), and the
 * handlers that serve them from memory (rows in routes.c). */
#ifndef ST_API_WEB_H
#define ST_API_WEB_H

#include <stdbool.h>
#include <stddef.h>

#include "http.h"

typedef struct st_web_asset {
    const char *path;         /* URL path: "/" or "/assets/app-2D7HLAKT.js" */
    const char *content_type; /* with charset for text */
    const char *etag;         /* quoted prefix of the SHA-256 of the bytes */
    bool immutable;           /* content-hashed name: a browser may cache it for good */
    const unsigned char *data;
    size_t len;
} st_web_asset;

/* Generated: every embedded file, index.html at "/". */
extern const st_web_asset st_web_assets[];
extern const size_t st_web_nassets;

/* The asset served at path (exact match, no decoding), or NULL. */
const st_web_asset *st_web_find(const char *path);

/* Cache-Control for an asset: immutable for content-hashed names, and
 * revalidation for index.html, which names the current ones. */
const char *st_web_cache_control(const st_web_asset *a);

/* GET / -> index.html. Needs no token: the page asks for one when the API
 * does. */
int st_route_index(const struct st_api_deps *d, const st_req *req, st_resp *resp);
/* GET /assets/<name> -> the embedded file with its Content-Type; 404 for a
 * name that is not embedded. */
int st_route_asset(const struct st_api_deps *d, const st_req *req, st_resp *resp);

#endif
