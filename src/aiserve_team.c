/*
 * aiserve thread team: a generation counter under a mutex starts a step,
 * an atomic counter hands out items, the last thread to finish signals
 * the caller.
 */
#include <pthread.h>
#include <stdlib.h>

#include "aiserve_team.h"

#define AISERVE_TEAM_MAX  64

/* With spinning on (aiserve_team_spin()), a thread between steps polls
 * this many times (a pause each, about 10 us in all) before it sleeps: a
 * forward pass on few tokens starts a step every few tens of
 * microseconds, and waking a sleeping thread costs about as much. */
#define AISERVE_TEAM_SPIN  400


struct aiserve_team_s {
    int               n_threads;
    int               started;          /* helpers running */
    int               stop;
    int               spin;             /* atomic */
    pthread_t         tid[AISERVE_TEAM_MAX];
    pthread_mutex_t   lock;
    pthread_cond_t    go;               /* caller -> helpers */
    pthread_cond_t    done;             /* helpers -> caller */
    unsigned long     generation;
    int               busy;             /* helpers still in the step */

    aiserve_team_fn   fn;
    void             *arg;
    size_t            n_items;
    size_t            next;             /* atomic */
};

typedef struct {
    aiserve_team_t  *team;
    int              index;
} aiserve_helper_t;

static aiserve_helper_t  *aiserve_team_helpers(aiserve_team_t *team);


static inline void
aiserve_team_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}


static void
aiserve_team_work(aiserve_team_t *t, int thread)
{
    size_t  i;

    for ( ;; ) {
        i = __atomic_fetch_add(&t->next, 1, __ATOMIC_RELAXED);
        if (i >= t->n_items) {
            return;
        }
        t->fn(t->arg, i, thread);
    }
}


static void *
aiserve_team_main(void *p)
{
    aiserve_helper_t  *h = p;
    aiserve_team_t    *t = h->team;
    unsigned long      seen = 0;
    int                i;

    pthread_mutex_lock(&t->lock);
    for ( ;; ) {
        while (t->generation == seen && !t->stop) {
            pthread_cond_wait(&t->go, &t->lock);
        }
        if (t->stop) {
            break;
        }
        seen = t->generation;
        pthread_mutex_unlock(&t->lock);

        aiserve_team_work(t, h->index);

        pthread_mutex_lock(&t->lock);
        if (__atomic_sub_fetch(&t->busy, 1, __ATOMIC_RELEASE) == 0) {
            pthread_cond_signal(&t->done);
        }
        pthread_mutex_unlock(&t->lock);

        for (i = __atomic_load_n(&t->spin, __ATOMIC_RELAXED)
                 ? 0 : AISERVE_TEAM_SPIN;
             i < AISERVE_TEAM_SPIN; i++)
        {
            if (__atomic_load_n(&t->generation, __ATOMIC_RELAXED) != seen
                || __atomic_load_n(&t->stop, __ATOMIC_RELAXED))
            {
                break;
            }
            aiserve_team_pause();
        }
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}


aiserve_team_t *
aiserve_team_create(int n_threads)
{
    aiserve_team_t  *t;

    t = calloc(1, sizeof(*t) + (size_t) AISERVE_TEAM_MAX
                               * sizeof(aiserve_helper_t));
    if (t == NULL) {
        return NULL;
    }
    t->n_threads = n_threads < 1 ? 1
                   : n_threads > AISERVE_TEAM_MAX ? AISERVE_TEAM_MAX
                   : n_threads;
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->go, NULL);
    pthread_cond_init(&t->done, NULL);
    return t;
}


static aiserve_helper_t *
aiserve_team_helpers(aiserve_team_t *team)
{
    return (aiserve_helper_t *) (team + 1);
}


int
aiserve_team_size(const aiserve_team_t *team)
{
    return team->n_threads;
}


static void
aiserve_team_start(aiserve_team_t *t)
{
    aiserve_helper_t  *h = aiserve_team_helpers(t);
    int                i;

    for (i = 1; i < t->n_threads; i++) {
        h[i].team = t;
        h[i].index = i;
        if (pthread_create(&t->tid[i], NULL, aiserve_team_main, &h[i]) != 0)
        {
            break;
        }
        t->started++;
    }
    /* fewer threads than asked: run with those that started */
    t->n_threads = t->started + 1;
}


void
aiserve_team_run(aiserve_team_t *t, aiserve_team_fn fn, void *arg,
    size_t n_items)
{
    size_t  i;

    if (t->n_threads > 1 && t->started == 0) {
        aiserve_team_start(t);
    }
    if (t->started == 0 || n_items < 2) {
        for (i = 0; i < n_items; i++) {
            fn(arg, i, 0);
        }
        return;
    }

    pthread_mutex_lock(&t->lock);
    t->fn = fn;
    t->arg = arg;
    t->n_items = n_items;
    t->next = 0;
    t->busy = t->started;
    __atomic_store_n(&t->generation, t->generation + 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&t->go);
    pthread_mutex_unlock(&t->lock);

    aiserve_team_work(t, 0);

    for (i = t->spin ? 0 : AISERVE_TEAM_SPIN; i < AISERVE_TEAM_SPIN; i++) {
        if (__atomic_load_n(&t->busy, __ATOMIC_ACQUIRE) == 0) {
            break;
        }
        aiserve_team_pause();
    }
    pthread_mutex_lock(&t->lock);
    while (t->busy > 0) {
        pthread_cond_wait(&t->done, &t->lock);
    }
    pthread_mutex_unlock(&t->lock);
}


void
aiserve_team_spin(aiserve_team_t *t, int on)
{
    __atomic_store_n(&t->spin, on, __ATOMIC_RELAXED);
}


void
aiserve_team_free(aiserve_team_t *t)
{
    int  i;

    if (t == NULL) {
        return;
    }
    pthread_mutex_lock(&t->lock);
    t->stop = 1;
    pthread_cond_broadcast(&t->go);
    pthread_mutex_unlock(&t->lock);
    for (i = 1; i <= t->started; i++) {
        pthread_join(t->tid[i], NULL);
    }
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->go);
    pthread_cond_destroy(&t->done);
    free(t);
}
