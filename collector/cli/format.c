/* Text formatting for the strata CLI: values in their unit, relative times,
 * terminal-safe text and aligned tables. Nothing here prints; every result
 * goes into a caller's buffer. */
#include "format.h"

#include "err.h"
#include "util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A cell is never larger than a whole response may be. */
#define ST_FMT_CELL_MAX ((size_t)64 << 20)

struct unit_step {
    double factor;
    const char *name;
};

static const struct unit_step seconds_steps[] = {
    {1e-9, "ns"}, {1e-6, "µs"}, {1e-3, "ms"}, {1.0, "s"}};

static const struct unit_step byte_steps[] = {{1.0, "B"},
                                              {1024.0, "KiB"},
                                              {1048576.0, "MiB"},
                                              {1073741824.0, "GiB"},
                                              {1099511627776.0, "TiB"},
                                              {1125899906842624.0, "PiB"}};

/* Decimals that show x (>= 0) with three significant digits. The limits sit
 * at the rounding edges so 9.996 becomes "10.0" rather than "10.00". */
static int decimals_for(double x)
{
    int d = 2;
    double t = 9.995;
    if (x == 0.0 || !isfinite(x)) {
        return 0;
    }
    while (d > 0 && x >= t) {
        d--;
        t *= 10.0;
    }
    while (d < 6 && x < t / 10.0) {
        d++;
        t /= 10.0;
    }
    return d;
}

/* Picks the largest step that still shows at least "1.00", so 0.9996 s is
 * "1.00 s" and not "1000 ms". base is the step used for zero. */
static void fmt_scaled(double v, const struct unit_step *steps, size_t n, size_t base,
                       bool int_base, char *buf, size_t len)
{
    double a = fabs(v);
    size_t i = 0;
    double x;
    int d;

    if (v == 0.0) {
        snprintf(buf, len, "0 %s", steps[base].name);
        return;
    }
    for (size_t k = n; k-- > 0;) {
        if (a / steps[k].factor >= 0.9995) {
            i = k;
            break;
        }
    }
    x = v / steps[i].factor;
    d = (i == 0 && int_base) ? 0 : decimals_for(fabs(x));
    snprintf(buf, len, "%.*f %s", d, x, steps[i].name);
}

/* Integers print in full (counters, seq numbers); fractions get three
 * significant digits. */
static void fmt_plain(double v, char *buf, size_t len)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, len, "%.0f", v);
        return;
    }
    snprintf(buf, len, "%.*f", decimals_for(fabs(v)), v);
}

void st_fmt_value(double value, const char *unit, char *buf, size_t len)
{
    char num[ST_FMT_VALUE_LEN];

    if (buf == NULL || len == 0) {
        return;
    }
    if (isnan(value)) {
        snprintf(buf, len, "NaN");
    } else if (isinf(value)) {
        snprintf(buf, len, value > 0 ? "+Inf" : "-Inf");
    } else if (unit == NULL || unit[0] == '\0' || strcmp(unit, "1") == 0) {
        fmt_plain(value, buf, len);
    } else if (strcmp(unit, "s") == 0 || strcmp(unit, "ms") == 0) {
        double s = unit[0] == 'm' ? value / 1000.0 : value;
        fmt_scaled(s, seconds_steps, sizeof(seconds_steps) / sizeof(seconds_steps[0]), 3, false,
                   buf, len);
    } else if (strcmp(unit, "B") == 0 || strcmp(unit, "bytes") == 0) {
        fmt_scaled(value, byte_steps, sizeof(byte_steps) / sizeof(byte_steps[0]), 0, true, buf,
                   len);
    } else if (strcmp(unit, "ratio") == 0 || strcmp(unit, "%") == 0) {
        double pct = unit[0] == 'r' ? value * 100.0 : value;
        if (pct == 0.0) {
            snprintf(buf, len, "0 %%");
        } else {
            snprintf(buf, len, "%.*f %%", decimals_for(fabs(pct)), pct);
        }
    } else {
        fmt_plain(value, num, sizeof(num));
        snprintf(buf, len, "%s %s", num, unit);
    }
}

void st_fmt_ago(int64_t now_ms, int64_t then_ms, char *buf, size_t len)
{
    int64_t d;
    bool future;
    const char *u = "s";

    if (buf == NULL || len == 0) {
        return;
    }
    if (then_ms <= 0) {
        snprintf(buf, len, "never");
        return;
    }
    future = then_ms > now_ms;
    /* Whole seconds only: "0s ago" for anything under a second. */
    d = (future ? then_ms - now_ms : now_ms - then_ms) / 1000;
    if (d >= 86400) {
        d /= 86400;
        u = "d";
    } else if (d >= 3600) {
        d /= 3600;
        u = "h";
    } else if (d >= 60) {
        d /= 60;
        u = "m";
    }
    if (future) {
        snprintf(buf, len, "in %" PRId64 "%s", d, u);
    } else {
        snprintf(buf, len, "%" PRId64 "%s ago", d, u);
    }
}

static bool is_cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

size_t st_fmt_width(const char *s)
{
    size_t w = 0;
    if (s == NULL) {
        return 0;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        w += !is_cont(*p);
    }
    return w;
}

int st_fmt_truncate(const char *s, size_t max_cols, st_buf *out)
{
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    size_t cols = 0;
    size_t i = 0;

    if (st_fmt_width((const char *)p) <= max_cols) {
        return st_buf_append_str(out, (const char *)p);
    }
    if (max_cols == 0) {
        return ST_OK;
    }
    /* Keep max_cols - 1 whole code points, then the ellipsis. */
    while (p[i] != '\0') {
        if (!is_cont(p[i]) && cols++ == max_cols - 1) {
            break;
        }
        i++;
    }
    int rv = st_buf_append(out, p, i);
    return rv != ST_OK ? rv : st_buf_append_str(out, "…");
}

/* Length of the valid UTF-8 sequence at p (1..4) and its code point, or 0
 * when the bytes are not valid UTF-8 (overlong, surrogate, past U+10FFFF). */
static size_t utf8_decode(const unsigned char *p, uint32_t *cp)
{
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t n;
    uint32_t c;

    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    if ((p[0] & 0xE0) == 0xC0) {
        n = 2;
        c = p[0] & 0x1F;
    } else if ((p[0] & 0xF0) == 0xE0) {
        n = 3;
        c = p[0] & 0x0F;
    } else if ((p[0] & 0xF8) == 0xF0) {
        n = 4;
        c = p[0] & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if (!is_cont(p[i])) { /* also stops at the NUL terminator */
            return 0;
        }
        c = (c << 6) | (p[i] & 0x3F);
    }
    if (c < min_cp[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
        return 0;
    }
    *cp = c;
    return n;
}

static bool is_control(uint32_t cp)
{
    return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0);
}

int st_fmt_sanitize(const char *s, bool keep_newlines, st_buf *out)
{
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    int rv = ST_OK;

    while (*p != '\0' && rv == ST_OK) {
        uint32_t cp = 0;
        size_t n = utf8_decode(p, &cp);
        if (n == 0) {
            rv = st_buf_append(out, "?", 1);
            p++;
        } else if (is_control(cp) && !(keep_newlines && (cp == '\n' || cp == '\t'))) {
            rv = st_buf_append(out, " ", 1);
            p += n;
        } else {
            rv = st_buf_append(out, p, n);
            p += n;
        }
    }
    return rv;
}

struct st_table {
    size_t ncols;
    char **headers;
    enum st_align *align;
    size_t *max_width;
    char **cells; /* rows * ncols, row-major */
    size_t rows;
    size_t cap_rows;
};

static char *sanitized_copy(const char *s)
{
    st_buf b;
    const char *str;
    st_buf_init(&b, ST_FMT_CELL_MAX);
    if (st_fmt_sanitize(s, false, &b) != ST_OK || st_buf_cstr(&b, &str) != ST_OK) {
        st_buf_free(&b);
        return NULL;
    }
    return (char *)st_buf_steal(&b, NULL);
}

st_table *st_table_new(size_t ncols, const char *const *headers)
{
    st_table *t;
    if (ncols == 0 || ncols > 256 || headers == NULL) {
        return NULL;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return NULL;
    }
    t->ncols = ncols;
    t->headers = calloc(ncols, sizeof(*t->headers));
    t->align = calloc(ncols, sizeof(*t->align));
    t->max_width = calloc(ncols, sizeof(*t->max_width));
    if (t->headers == NULL || t->align == NULL || t->max_width == NULL) {
        st_table_free(t);
        return NULL;
    }
    for (size_t i = 0; i < ncols; i++) {
        t->headers[i] = sanitized_copy(headers[i] != NULL ? headers[i] : "");
        if (t->headers[i] == NULL) {
            st_table_free(t);
            return NULL;
        }
    }
    return t;
}

void st_table_free(st_table *t)
{
    if (t == NULL) {
        return;
    }
    for (size_t i = 0; t->headers != NULL && i < t->ncols; i++) {
        free(t->headers[i]);
    }
    for (size_t i = 0; i < t->rows * t->ncols; i++) {
        free(t->cells[i]);
    }
    free(t->headers);
    free(t->align);
    free(t->max_width);
    free(t->cells);
    free(t);
}

void st_table_align(st_table *t, size_t col, enum st_align align)
{
    if (t != NULL && col < t->ncols) {
        t->align[col] = align;
    }
}

void st_table_max_width(st_table *t, size_t col, size_t max_cols)
{
    if (t != NULL && col < t->ncols) {
        t->max_width[col] = max_cols;
    }
}

size_t st_table_rows(const st_table *t)
{
    return t != NULL ? t->rows : 0;
}

static int grow_rows(st_table *t)
{
    size_t cap;
    char **p;
    if (t->rows < t->cap_rows) {
        return ST_OK;
    }
    if (t->rows >= ST_TABLE_MAX_ROWS) {
        return ST_ETOOBIG;
    }
    cap = t->cap_rows == 0 ? 16 : t->cap_rows * 2;
    p = realloc(t->cells, cap * t->ncols * sizeof(*p));
    if (p == NULL) {
        return ST_ENOMEM;
    }
    t->cells = p;
    t->cap_rows = cap;
    return ST_OK;
}

int st_table_add_row(st_table *t, const char *const *cells)
{
    char **row;
    int rv;
    if (t == NULL || cells == NULL) {
        return ST_EINVAL;
    }
    if ((rv = grow_rows(t)) != ST_OK) {
        return rv;
    }
    row = t->cells + t->rows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = sanitized_copy(cells[i] != NULL ? cells[i] : "");
        if (row[i] == NULL) {
            while (i-- > 0) {
                free(row[i]);
            }
            return ST_ENOMEM;
        }
    }
    t->rows++;
    return ST_OK;
}

/* "12", "-0.5", "1,024", "12.3 ms", "45.1 %": a number, optionally followed
 * by one space and a unit word. */
static bool looks_numeric(const char *s)
{
    bool digit = false;
    int dots = 0;
    if (*s == '-' || *s == '+') {
        s++;
    }
    for (; (*s >= '0' && *s <= '9') || *s == '.' || *s == ','; s++) {
        digit |= *s >= '0' && *s <= '9';
        dots += *s == '.';
    }
    /* "0.1.0" is a version, not a number. */
    if (!digit || dots > 1) {
        return false;
    }
    if (*s == '\0') {
        return true;
    }
    return s[0] == ' ' && s[1] != '\0' && strchr(s + 1, ' ') == NULL;
}

/* Cells that are empty or "-" (no value) do not decide a column. */
static bool column_is_numeric(const st_table *t, size_t col)
{
    bool any = false;
    for (size_t r = 0; r < t->rows; r++) {
        const char *c = t->cells[r * t->ncols + col];
        if (c[0] == '\0' || strcmp(c, "-") == 0) {
            continue;
        }
        if (!looks_numeric(c)) {
            return false;
        }
        any = true;
    }
    return any;
}

static size_t cell_width(const st_table *t, size_t col, const char *s)
{
    size_t w = st_fmt_width(s);
    return t->max_width[col] != 0 && w > t->max_width[col] ? t->max_width[col] : w;
}

static int pad(st_buf *out, size_t n)
{
    static const char spaces[] = "                                ";
    int rv = ST_OK;
    while (n > 0 && rv == ST_OK) {
        size_t k = n < sizeof(spaces) - 1 ? n : sizeof(spaces) - 1;
        rv = st_buf_append(out, spaces, k);
        n -= k;
    }
    return rv;
}

static int render_line(const st_table *t, char *const *cells, const size_t *widths,
                       const bool *right, st_buf *out)
{
    int rv = ST_OK;
    for (size_t c = 0; c < t->ncols && rv == ST_OK; c++) {
        size_t gap = widths[c] - cell_width(t, c, cells[c]);
        bool last = c + 1 == t->ncols;
        if (c > 0) {
            rv = st_buf_append(out, "  ", 2);
        }
        if (rv == ST_OK && right[c]) {
            rv = pad(out, gap);
        }
        if (rv == ST_OK) {
            size_t max = t->max_width[c] != 0 ? t->max_width[c] : SIZE_MAX;
            rv = st_fmt_truncate(cells[c], max, out);
        }
        if (rv == ST_OK && !right[c] && !last) {
            rv = pad(out, gap);
        }
    }
    return rv == ST_OK ? st_buf_append(out, "\n", 1) : rv;
}

int st_table_render(const st_table *t, st_buf *out)
{
    size_t *widths;
    bool *right;
    int rv = ST_OK;

    if (t == NULL || out == NULL) {
        return ST_EINVAL;
    }
    widths = calloc(t->ncols, sizeof(*widths));
    right = calloc(t->ncols, sizeof(*right));
    if (widths == NULL || right == NULL) {
        rv = ST_ENOMEM;
        goto out;
    }
    for (size_t c = 0; c < t->ncols; c++) {
        widths[c] = cell_width(t, c, t->headers[c]);
        for (size_t r = 0; r < t->rows; r++) {
            widths[c] = ST_MAX(widths[c], cell_width(t, c, t->cells[r * t->ncols + c]));
        }
        right[c] = t->align[c] == ST_ALIGN_RIGHT ||
                   (t->align[c] == ST_ALIGN_AUTO && column_is_numeric(t, c));
    }
    rv = render_line(t, t->headers, widths, right, out);
    for (size_t r = 0; r < t->rows && rv == ST_OK; r++) {
        rv = render_line(t, t->cells + r * t->ncols, widths, right, out);
    }
out:
    free(widths);
    free(right);
    return rv;
}
