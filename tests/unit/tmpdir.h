/* A temporary directory for a unit test: made under /tmp, named after the
 * test so that a leftover says whose it is, and removed with everything the
 * test wrote into it. */
#ifndef ST_TEST_TMPDIR_H
#define ST_TEST_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Makes /tmp/st-NAME-XXXXXX into dir; dir, or NULL. */
static inline char *st_test_mkdtemp(char *dir, size_t cap, const char *name)
{
    snprintf(dir, cap, "/tmp/st-%s-XXXXXX", name);
    return mkdtemp(dir);
}

static inline int st_test_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* 0 when dir and what is in it are gone (cmocka's teardown convention). */
static inline int st_test_rmtree(const char *dir)
{
    return nftw(dir, st_test_rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

#endif
