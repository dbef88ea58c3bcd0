/* Releasing the pages the agent touched once.
 *
 * A process's RSS counts every page of a shared library it has touched,
 * for as long as it runs. Most of the agent's are touched once: the
 * dynamic loader's symbol lookups and relocations across the thirty
 * libraries libcurl and libpq bring, OpenSSL's and GnuTLS's
 * initialisation, configuration parsing. With every sampler on they are
 * about half the agent's RSS (6 of 12.5 MiB, BENCHMARKS.md), while the
 * code a sampling tick runs is a few hundred kB.
 *
 * st_memtrim() drops this process's mappings of the pages of loaded
 * objects' read-only segments (code, constants, symbol tables) and gives
 * free heap pages back (malloc_trim). The pages stay in the page cache,
 * shared with every other process using the libraries; the ones the agent
 * still uses fault back in on their next use (a minor fault while the page
 * cache holds them, as it does unless memory is short), so the RSS settles
 * at what the agent actually uses. Nothing written is touched: writable
 * segments, RELRO (written by the loader, then made read-only) and any
 * page the kernel reports as a private copy rather than the file's are
 * left alone, and nothing at all while a debugger is attached. Left: a
 * uprobe (perf, bpftrace) installed into a page in the microseconds
 * between the check and the release is lost for this process. */
#ifndef ST_MEMTRIM_H
#define ST_MEMTRIM_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes of pages released from mappings (not counting the heap's). Safe
 * from any thread, also while another loads a library. */
size_t st_memtrim(void);
/* Whether the agent trims on its own (memory_trim: 0 turns it off): the
 * trims right after a library is loaded ask st_memtrim_auto. On unless
 * turned off. */
void st_memtrim_set_auto(bool on);
size_t st_memtrim_auto(void);

#endif
