/*
 * device=gpu at configuration time (shared/GPU.md, rules 1 and 2): the
 * module links no CUDA; it dlopen()s the GPU backend
 * (libaiserve_gpu.so, built by `make gpu`), takes its table from the one
 * exported symbol and asks it to probe the driver and the device in a
 * child process, so that the master, which forks the workers, never
 * initialises CUDA.  Whatever the outcome, aiserve_model logs it in one
 * [emerg] line: a GPU model cannot be served yet (the forward pass on the
 * device is not built), and a host without a driver or without the
 * object says exactly which is missing.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <dlfcn.h>
#include <libgen.h>
#include <sys/wait.h>

#include "aiserve_gpu.h"
#include "ngx_http_aiserve_infer.h"


#define NGX_HTTP_AISERVE_GPU_MSG  512


char *
ngx_http_aiserve_gpu_library(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aiserve_main_conf_t *amcf = conf;

    ngx_str_t  *value;

    if (amcf->gpu_library.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    amcf->gpu_library = value[1];

    /* a bare file name is searched as dlopen() searches; a path is
     * relative to the prefix */
    if (ngx_strlchr(value[1].data, value[1].data + value[1].len, '/') != NULL
        && ngx_conf_full_name(cf->cycle, &amcf->gpu_library, 1) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* The default library: libaiserve_gpu.so beside the module's own file. */
static ngx_int_t
ngx_http_aiserve_gpu_default(ngx_conf_t *cf, ngx_str_t *path)
{
    Dl_info   info;
    u_char   *copy, *p;
    size_t    len;

    if (dladdr((void *) ngx_http_aiserve_gpu_default, &info) == 0
        || info.dli_fname == NULL)
    {
        ngx_str_set(path, AISERVE_GPU_LIBRARY);
        return NGX_OK;
    }

    len = ngx_strlen(info.dli_fname);
    copy = ngx_pnalloc(cf->pool, len + 1);
    path->data = ngx_pnalloc(cf->pool,
                             len + sizeof("/" AISERVE_GPU_LIBRARY));
    if (copy == NULL || path->data == NULL) {
        return NGX_ERROR;
    }

    ngx_cpystrn(copy, (u_char *) info.dli_fname, len + 1);
    p = (u_char *) dirname((char *) copy);
    p = ngx_sprintf(path->data, "%s/%s%Z", p, AISERVE_GPU_LIBRARY);
    path->len = p - path->data - 1;

    return NGX_OK;
}


/*
 * Runs BE->probe(DEVICE) in a child process; MSG gets its info line
 * (returns NGX_OK) or its error (NGX_DECLINED); NGX_ERROR when the child
 * could not run (MSG says why).
 */
static ngx_int_t
ngx_http_aiserve_gpu_probe(const aiserve_gpu_backend_t *be, int device,
    u_char *msg, size_t msg_len)
{
    int       fd[2], status;
    char      info[NGX_HTTP_AISERVE_GPU_MSG], err[NGX_HTTP_AISERVE_GPU_MSG];
    char      buf[NGX_HTTP_AISERVE_GPU_MSG + 1];
    u_char    ok;
    size_t    got;
    ssize_t   n;
    pid_t     pid;

    if (pipe(fd) == -1) {
        ngx_snprintf(msg, msg_len, "pipe() failed (%d)%Z", ngx_errno);
        return NGX_ERROR;
    }

    pid = fork();

    if (pid == -1) {
        ngx_snprintf(msg, msg_len, "fork() failed (%d)%Z", ngx_errno);
        close(fd[0]);
        close(fd[1]);
        return NGX_ERROR;
    }

    if (pid == 0) {
        close(fd[0]);
        info[0] = err[0] = '\0';
        ok = be->probe(device, info, sizeof(info), err, sizeof(err)) == 0;
        buf[0] = ok ? '1' : '0';
        n = ngx_cpystrn((u_char *) buf + 1, (u_char *) (ok ? info : err),
                        sizeof(buf) - 1) - (u_char *) buf;
        if (write(fd[1], buf, n) != n) {
            _exit(1);
        }
        _exit(0);
    }

    close(fd[1]);

    got = 0;
    for ( ;; ) {
        n = read(fd[0], buf + got, sizeof(buf) - 1 - got);
        if (n > 0) {
            got += n;
            if (got < sizeof(buf) - 1) {
                continue;
            }
        }
        if (n == -1 && ngx_errno == NGX_EINTR) {
            continue;
        }
        break;
    }
    close(fd[0]);
    buf[got] = '\0';

    while (waitpid(pid, &status, 0) == -1 && ngx_errno == NGX_EINTR) {
        /* retried */
    }

    if (got == 0) {
        if (WIFSIGNALED(status)) {
            ngx_snprintf(msg, msg_len, "the probe process was killed by "
                         "signal %d%Z", WTERMSIG(status));
        } else {
            ngx_snprintf(msg, msg_len, "the probe process exited with %d "
                         "and said nothing%Z", WEXITSTATUS(status));
        }
        return NGX_ERROR;
    }

    ngx_cpystrn(msg, (u_char *) buf + 1, msg_len);

    return buf[0] == '1' ? NGX_OK : NGX_DECLINED;
}


ngx_int_t
ngx_http_aiserve_gpu_check(ngx_conf_t *cf,
    ngx_http_aiserve_main_conf_t *amcf, ngx_str_t *name, ngx_str_t *param)
{
    void                        *so;
    u_char                       msg[NGX_HTTP_AISERVE_GPU_MSG];
    ngx_int_t                    device, rc;
    ngx_str_t                    path;
    aiserve_gpu_backend_get_pt   get;
    const aiserve_gpu_backend_t *be;

    device = 0;
    if (param->len > sizeof("device=gpu") - 1) {
        device = NGX_ERROR;
        if (param->data[sizeof("device=gpu") - 1] == ':') {
            device = ngx_atoi(param->data + sizeof("device=gpu:") - 1,
                              param->len - (sizeof("device=gpu:") - 1));
        }
        if (device == NGX_ERROR || device > 255) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid device \"%V\" in \"aiserve_model\", "
                               "use device=cpu, device=gpu or device=gpu:N",
                               param);
            return NGX_ERROR;
        }
    }

    path = amcf->gpu_library;
    if (path.data == NULL
        && ngx_http_aiserve_gpu_default(cf, &path) != NGX_OK)
    {
        return NGX_ERROR;
    }

    so = dlopen((char *) path.data, RTLD_NOW | RTLD_LOCAL);
    if (so == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" in \"aiserve_model\" \"%V\": cannot load "
                           "the GPU backend \"%V\": %s", param, name, &path,
                           dlerror());
        return NGX_ERROR;
    }

    get = (aiserve_gpu_backend_get_pt) dlsym(so, AISERVE_GPU_SYMBOL);
    if (get == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" in \"aiserve_model\" \"%V\": \"%V\" is "
                           "not an aiserve GPU backend: %s", param, name,
                           &path, dlerror());
        dlclose(so);
        return NGX_ERROR;
    }

    be = get(AISERVE_GPU_ABI);
    if (be == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" in \"aiserve_model\" \"%V\": \"%V\" was "
                           "built for another interface than this module's "
                           "(ABI %d): rebuild it with \"make gpu\"", param,
                           name, &path, AISERVE_GPU_ABI);
        dlclose(so);
        return NGX_ERROR;
    }

    rc = ngx_http_aiserve_gpu_probe(be, (int) device, msg, sizeof(msg));

    if (rc == NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" in \"aiserve_model\" \"%V\": %s (%s): the "
                           "forward pass on the GPU is not built yet, use "
                           "device=cpu", param, name, msg, be->version);
    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" in \"aiserve_model\" \"%V\": %s (GPU "
                           "backend \"%V\", %s)", param, name, msg, &path,
                           be->version);
    }

    dlclose(so);
    return NGX_ERROR;
}
