/*
 * ubsan_log_path.so: preloaded into nginx after libasan and libubsan by make
 * test-asan (TEST_NGINX_SANITIZER_PRELOAD), so UBSan's reports go to the
 * log_path of UBSAN_OPTIONS, where the runner reads them.  With both
 * runtimes preloaded, libubsan's start-up sets its report path through
 * __sanitizer_set_report_path(), an exported name that libasan, loaded
 * first, also defines: the call sets libasan's path and libubsan's reports
 * stay on stderr.  A worker's stderr is whichever error log nginx put
 * there, or nothing, and the worker exits with code 1 while no report file
 * appears.  Here libubsan's own function, looked up in libubsan itself,
 * is given the log_path of UBSAN_OPTIONS.  Each process then writes its
 * reports to LOG_PATH.PID.  Without libubsan loaded, or without a log_path,
 * it does nothing.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>


__attribute__((constructor)) static void
ubsan_log_path_init(void)
{
    const char  *opts, *p, *end;
    size_t       n;
    void        *h;
    void       (*set_report_path)(const char *);
    static char  path[4096];

    opts = getenv("UBSAN_OPTIONS");
    if (opts == NULL) {
        return;
    }

    p = strstr(opts, "log_path=");
    if (p == NULL || (p != opts && p[-1] != ':')) {
        return;
    }

    p += sizeof("log_path=") - 1;
    end = strchr(p, ':');
    n = end ? (size_t) (end - p) : strlen(p);
    if (n == 0 || n >= sizeof(path)) {
        return;
    }

    memcpy(path, p, n);
    path[n] = '\0';

    h = dlopen("libubsan.so.1", RTLD_NOLOAD | RTLD_LAZY);
    if (h == NULL) {
        return;
    }

    *(void **) &set_report_path = dlsym(h, "__sanitizer_set_report_path");
    if (set_report_path) {
        set_report_path(path);
    }
}
