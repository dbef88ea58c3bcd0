/* st_memtrim: releases resident library pages and changes no byte of any
 * loaded object, also while another thread loads a library. */
#define _GNU_SOURCE 1
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "memtrim.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

/* Relocated at load (a PIE's pointers): lives in RELRO, a private copy of
 * the file's page that a trim must keep. */
static const char *const relro_names[] = {"alpha", "beta", "gamma"};
static char writable[8192] = "written";

/* FNV-1a over every byte no one writes after loading (read-only segments
 * and RELRO, each object's relocated pointers), touching them all so that
 * they are resident. Writable data changes as the test runs (stdio, the
 * heap's arena). Reads raw memory, redzones between globals included: not
 * for AddressSanitizer's eyes. */
__attribute__((no_sanitize("address"))) static int sum_object(struct dl_phdr_info *info,
                                                              size_t size, void *arg)
{
    uint64_t *h = arg;
    (void)size;
    if (info->dlpi_name[0] != '\0' && info->dlpi_name[0] != '/') {
        return 0; /* the vDSO */
    }
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        const volatile unsigned char *p;
        bool fixed =
            ph->p_type == PT_GNU_RELRO || (ph->p_type == PT_LOAD && (ph->p_flags & PF_W) == 0);
        if (!fixed || (ph->p_flags & PF_R) == 0) {
            continue;
        }
        p = (const unsigned char *)(info->dlpi_addr + ph->p_vaddr);
        for (size_t j = 0; j < ph->p_memsz; j++) {
            *h = (*h ^ p[j]) * 1099511628211u;
        }
    }
    return 0;
}

static uint64_t sum_all(void)
{
    uint64_t h = 14695981039346656037u;
    dl_iterate_phdr(sum_object, &h);
    return h;
}

static long rss_file_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "RssFile: %ld kB", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    return kb;
}

static void test_releases_and_keeps_every_byte(void **state)
{
    uint64_t before, after;
    long rss_before, rss_after;
    size_t released;
    (void)state;
    writable[100] = 'x';
    before = sum_all();
    rss_before = rss_file_kb();
    released = st_memtrim();
    rss_after = rss_file_kb();
    /* Every segment was just read: there were pages to release, and the
     * process's file-backed RSS fell (by less than released: the code
     * running here faults its own pages back). */
    assert_true(released >= 64 * 1024);
    assert_true(rss_after < rss_before);
    after = sum_all();
    assert_int_equal(after, before);
    assert_string_equal(relro_names[1], "beta");
    assert_string_equal(writable, "written");
    assert_int_equal(writable[100], 'x');
    /* Released twice in a row: the second finds what the checksum and
     * this test's own code brought back. */
    assert_true(st_memtrim() > 0);
    assert_int_equal(sum_all(), before);
}

static atomic_int loading;

/* Loads and uses a library while the main thread trims: its text and
 * RELRO are being written by the loader right then. */
static void *load_lib(void *arg)
{
    const char *(*version)(void);
    void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    (void)arg;
    if (h != NULL) {
        *(void **)&version = dlsym(h, "curl_version");
        if (version == NULL || strncmp(version(), "libcurl/", 8) != 0) {
            h = NULL;
        }
    }
    atomic_store(&loading, 0);
    return h;
}

static void test_trim_while_loading(void **state)
{
    pthread_t th;
    void *h = NULL;
    uint64_t before, after;
    (void)state;
    atomic_store(&loading, 1);
    assert_int_equal(pthread_create(&th, NULL, load_lib, NULL), 0);
    while (atomic_load(&loading)) {
        (void)st_memtrim();
    }
    assert_int_equal(pthread_join(th, &h), 0);
    assert_non_null(h); /* loaded, relocated and called */
    before = sum_all();
    (void)st_memtrim();
    after = sum_all();
    assert_int_equal(after, before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_releases_and_keeps_every_byte),
        cmocka_unit_test(test_trim_while_loading),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
