/*
 * exit_delay.so: preloaded into nginx by t/063-worker-exit.t to widen a
 * race of the worker's exit that load makes rare.  nginx's thread pools
 * let each thread go with pthread_exit() and do not wait for it; the
 * worker then dlclose()s the modules and calls exit().  Here a thread that
 * calls pthread_exit() first sleeps AISERVE_EXIT_DELAY_THREAD_MS, and
 * dlclose() sleeps AISERVE_EXIT_DELAY_DLCLOSE_MS after it returns, so the
 * let-go threads run their thread-specific data destructors after the
 * modules were unloaded and before the process ends, as a thread that the
 * scheduler kept waiting does under load.  Each delayed call appends a
 * line to the file AISERVE_EXIT_DELAY_LOG ("pthread_exit" or "dlclose"),
 * so the test knows the window was opened.  Real nginx, real module: only
 * the timing is changed.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static void
exit_delay_note(const char *what)
{
    const char  *path = getenv("AISERVE_EXIT_DELAY_LOG");
    int          fd;

    if (path == NULL) {
        return;
    }
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0666);
    if (fd >= 0) {
        (void) write(fd, what, strlen(what));
        (void) write(fd, "\n", 1);
        close(fd);
    }
}


static void
exit_delay_sleep(const char *name)
{
    const char  *ms = getenv(name);

    if (ms != NULL) {
        usleep((useconds_t) atoi(ms) * 1000);
    }
}


void
pthread_exit(void *retval)
{
    void  (*next)(void *) __attribute__((noreturn));

    *(void **) &next = dlsym(RTLD_NEXT, "pthread_exit");
    exit_delay_note("pthread_exit");
    exit_delay_sleep("AISERVE_EXIT_DELAY_THREAD_MS");
    next(retval);
}


int
dlclose(void *handle)
{
    int  (*next)(void *);
    int    rc;

    *(void **) &next = dlsym(RTLD_NEXT, "dlclose");
    rc = next(handle);
    exit_delay_note("dlclose");
    exit_delay_sleep("AISERVE_EXIT_DELAY_DLCLOSE_MS");
    return rc;
}
