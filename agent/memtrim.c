/* Releasing start-up pages: see memtrim.h for why. */
#define _GNU_SOURCE 1
#include "memtrim.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Pagemap entries read at once: 4 KiB, 2 MiB of address space. */
#define PAGEMAP_BATCH 512
/* /proc/self/pagemap, one 64-bit entry per page (Documentation/admin-guide/
 * mm/pagemap.rst): present, and backed by the file (not a private copy). */
#define PM_PRESENT (UINT64_C(1) << 63)
#define PM_FILE (UINT64_C(1) << 61)

static atomic_bool auto_on = true;

struct trim {
    int pagemap;
    uintptr_t page;
    size_t released;
};

/* An object whose code the loader writes to while relocating it (text
 * relocations) may have private copies of read-only pages. The pagemap
 * check below would keep those too; this one also covers an object being
 * relocated right now by a dlopen in another thread. */
static bool has_textrel(const struct dl_phdr_info *info)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_DYNAMIC) {
            continue;
        }
        for (const ElfW(Dyn) *d = (const ElfW(Dyn) *)(info->dlpi_addr + ph->p_vaddr);
             d->d_tag != DT_NULL; d++) {
            if (d->d_tag == DT_TEXTREL ||
                (d->d_tag == DT_FLAGS && (d->d_un.d_val & DF_TEXTREL) != 0)) {
                return true;
            }
        }
    }
    return false;
}

static void release_run(struct trim *t, uintptr_t from, uintptr_t to)
{
    if (from < to && madvise((void *)from, to - from, MADV_DONTNEED) == 0) {
        t->released += to - from;
    }
}

/* Drops the mappings of the pages in [lo, hi) that are resident and still
 * the file's own, one madvise per run of them. A run ends with its batch of
 * pagemap entries, so that a page is dropped microseconds after it was
 * seen to be the file's: a writer from outside (a uprobe being installed,
 * a debugger's breakpoint) turns it into a private copy, and a private
 * copy dropped is its write undone. */
static void release_range(struct trim *t, uintptr_t lo, uintptr_t hi)
{
    uint64_t pm[PAGEMAP_BATCH];
    uintptr_t at = lo;
    while (at < hi) {
        size_t n = (size_t)((hi - at) / t->page);
        uintptr_t run = 0;
        ssize_t got;
        n = n < PAGEMAP_BATCH ? n : PAGEMAP_BATCH;
        got = pread(t->pagemap, pm, n * sizeof(pm[0]), (off_t)(at / t->page * sizeof(pm[0])));
        if (got <= 0) {
            return; /* nothing is released that was not checked */
        }
        n = (size_t)got / sizeof(pm[0]);
        for (size_t i = 0; i < n; i++, at += t->page) {
            bool own = (pm[i] & (PM_PRESENT | PM_FILE)) == (PM_PRESENT | PM_FILE);
            if (own && run == 0) {
                run = at;
            } else if (!own && run != 0) {
                release_run(t, run, at);
                run = 0;
            }
        }
        if (run != 0) {
            release_run(t, run, at); /* [run, at): every page checked */
        }
    }
}

/* Called with the loader's list locked: every object seen here stays
 * mapped until the callback returns (the agent never unloads a library:
 * lazylib keeps its handles, glibc its NSS modules). */
static int release_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct trim *t = arg;
    (void)size;
    /* The program itself (no name) and libraries by path; not the vDSO. */
    if (info->dlpi_name[0] != '\0' && info->dlpi_name[0] != '/') {
        return 0;
    }
    if (has_textrel(info)) {
        return 0;
    }
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo, hi;
        if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W) != 0) {
            continue;
        }
        /* Whole pages inside the segment only: an edge page may be shared
         * with a writable neighbour. */
        lo = (info->dlpi_addr + ph->p_vaddr + t->page - 1) & ~(t->page - 1);
        hi = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz) & ~(t->page - 1);
        if (lo < hi) {
            release_range(t, lo, hi);
        }
    }
    return 0;
}

/* A debugger writes its breakpoints into read-only pages: while one is
 * attached (TracerPid in /proc/self/status), nothing is released. */
static bool traced(void)
{
    char buf[2048];
    const char *p;
    ssize_t n;
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return true;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return true;
    }
    buf[n] = '\0';
    p = strstr(buf, "\nTracerPid:");
    return p == NULL || strtol(p + strlen("\nTracerPid:"), NULL, 10) != 0;
}

size_t st_memtrim(void)
{
    struct trim t = {.pagemap = -1, .page = (uintptr_t)sysconf(_SC_PAGESIZE)};
    (void)malloc_trim(0);
    if (traced()) {
        return 0;
    }
    /* Without pagemap there is no telling a private copy from the file's
     * page: release nothing. */
    if ((t.pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)) < 0) {
        return 0;
    }
    (void)dl_iterate_phdr(release_object, &t);
    close(t.pagemap);
    return t.released;
}

void st_memtrim_set_auto(bool on)
{
    atomic_store(&auto_on, on);
}

size_t st_memtrim_auto(void)
{
    return atomic_load(&auto_on) ? st_memtrim() : 0;
}
