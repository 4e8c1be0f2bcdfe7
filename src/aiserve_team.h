/*
 * aiserve thread team: a caller and n-1 helper threads that share the items
 * of one parallel step (rows of a matrix product, attention heads, rows of
 * a LayerNorm).  One team belongs to one scratch, i.e. to one thread that
 * runs forward passes; it is started on its first parallel step, so
 * nothing runs before a forward pass is asked for (after nginx's fork()).
 */
#ifndef AISERVE_TEAM_H
#define AISERVE_TEAM_H

#include <stddef.h>

typedef struct aiserve_team_s  aiserve_team_t;

/* Runs item i of a step; thread is 0 (the caller) .. n_threads-1. */
typedef void (*aiserve_team_fn)(void *arg, size_t item, int thread);

/*
 * A team of n_threads (>= 1; 1 runs everything in the caller).  The helper
 * threads are created on the first aiserve_team_run() that uses them.
 * Returns NULL when out of memory.
 */
aiserve_team_t *aiserve_team_create(int n_threads);

/* Stops and joins the helpers. */
void aiserve_team_free(aiserve_team_t *team);

int aiserve_team_size(const aiserve_team_t *team);

/*
 * Runs fn(arg, i, thread) for every i in [0, n_items), items handed out
 * one at a time to the caller and the helpers; returns when all are done.
 * If the helpers cannot be started the caller runs every item.
 */
void aiserve_team_run(aiserve_team_t *team, aiserve_team_fn fn, void *arg,
    size_t n_items);

/*
 * Spinning on: between steps the threads poll for about 10 us before they
 * sleep, which saves a wake-up per step when steps are short (a forward
 * pass on few tokens).  Off (the default) they sleep at once: a thread
 * that polls takes the CPU from other work on a loaded machine, which
 * measured here slowed long passes more than it sped up short ones.
 */
void aiserve_team_spin(aiserve_team_t *team, int on);

#endif /* AISERVE_TEAM_H */
