/* lkd_dist.h - what the data-parallel binding files share (l_dist.c,
 * l_dist_grads.c) and what main.c calls around the Lua state. */
#ifndef LKD_DIST_H
#define LKD_DIST_H

#include "dist_backend.h"
#include "lkd.h"

/* Before the Lua state: loads the MPI plugin when a launcher started kdseg
 * and sets the threads per process; nonzero (a message printed) if it must
 * stop. */
int lkd_dist_start(void);
/* At exit: MPI_Finalize (status 0) or MPI_Abort, which ends every rank. */
void lkd_dist_finish(int status);
/* The backend while MPI runs with this process, else NULL. */
const kd_dist_backend *lkd_dist(void);
/* Raises "fn: rank r of n: <MPI's message>". */
int lkd_dist_raise(lua_State *L, const char *fn);
void lkd_open_dist_grads(lua_State *L);

#endif
