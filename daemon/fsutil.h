/* Small filesystem helpers shared by the daemon, the spawner and the ledger. */
#ifndef SANDPOOL_FSUTIL_H
#define SANDPOOL_FSUTIL_H

#include <sys/types.h>

/* mkdir -p: missing parents get 0755, path itself mode. 0 or -errno. */
int fs_mkdir_p(const char *path, mode_t mode) __attribute__((warn_unused_result));
/* The same for the directory that holds path. */
int fs_mkdir_parents(const char *path) __attribute__((warn_unused_result));

#endif
