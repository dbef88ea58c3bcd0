/* st_memtrim: releases resident library pages and changes no byte of any
 * loaded object, also while another thread loads a library. */
#define _GNU_SOURCE 1
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "memtrim.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Relocated at load (a PIE's pointers): lives in RELRO, a private copy of
 * the file's page that a trim must keep. */
static const char *const relro_names[] = {"alpha", "beta", "gamma"};
static char writable[8192] = "written";
/* Read-only pages of this program's own: one gets a private copy the way a
 * debugger's breakpoint does (a forced write through /proc/self/mem), one
 * is only read. The kernel maps a faulting page's neighbours in its 64 KiB
 * block too: the second 64 KiB hold no constant the test uses. */
#define PAGE 4096
#define AROUND (64 * 1024)
static const char rodata[2 * AROUND] __attribute__((aligned(AROUND))) = {1};

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

static uint64_t pagemap_of(const void *p)
{
    uint64_t e = 0;
    int fd = open("/proc/self/pagemap", O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &e, sizeof(e), (off_t)((uintptr_t)p / PAGE * sizeof(e))), sizeof(e));
    close(fd);
    return e;
}

#define PM_PRESENT (UINT64_C(1) << 63)
#define PM_FILE (UINT64_C(1) << 61)

static void test_releases_and_keeps_every_byte(void **state)
{
    const volatile char *copied = &rodata[PAGE];
    const volatile char *read_only = &rodata[AROUND + PAGE];
    char mark[PAGE];
    uint64_t before;
    int fd;
    (void)state;
    memset(mark, 'P', sizeof(mark));
    fd = open("/proc/self/mem", O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, mark, sizeof(mark), (off_t)(uintptr_t)copied), sizeof(mark));
    close(fd);
    assert_int_equal(copied[0], 'P');
    assert_int_equal(pagemap_of((const void *)copied) & (PM_PRESENT | PM_FILE), PM_PRESENT);
    writable[100] = 'x';
    before = sum_all(); /* every page of every object resident */
    assert_int_equal(pagemap_of((const void *)read_only) & (PM_PRESENT | PM_FILE),
                     PM_PRESENT | PM_FILE);
    assert_true(st_memtrim() >= 64 * 1024);
    /* The file's page went; the private copy, RELRO and data stayed. */
    assert_int_equal(pagemap_of((const void *)read_only) & PM_PRESENT, 0);
    assert_int_equal(pagemap_of((const void *)copied) & PM_PRESENT, PM_PRESENT);
    assert_int_equal(copied[0], 'P');
    assert_int_equal(copied[PAGE - 1], 'P');
    assert_int_equal(read_only[0], 0);
    assert_int_equal(sum_all(), before);
    assert_string_equal(relro_names[1], "beta");
    assert_string_equal(writable, "written");
    assert_int_equal(writable[100], 'x');
    /* Twice in a row: the second finds what the checksum and this test's
     * own code brought back. */
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
