# device=gpu on a host that cannot serve it (shared/GPU.md, "failure
# path"): aiserve_model stops the configuration with one [emerg] line that
# names the directive, the model and the reason: the GPU backend's object
# missing or foreign (dlopen, dlsym), or, where `make gpu` built it, the
# CUDA driver missing (this is a test for hosts without one; on a host
# with a driver and a device the line says the device and that the GPU
# forward pass is not built yet).  aiserve_gpu_library and device=gpu:N
# parse as documented.

use Test::Nginx::Socket 'no_plan';
use File::Basename qw(dirname);

# the module under test may be another build's (make test-asan,
# make test-clang): the default library is the one beside it
my $so = dirname($ENV{TEST_NGINX_AISERVE_MODULE}) . "/libaiserve_gpu.so";
my $driver = grep { -e "$_/libcuda.so.1" }
    qw(/usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /lib/x86_64-linux-gnu);

# what the default library (beside the module) gives on this host
$ENV{TEST_NGINX_GPU_EXPECT} =
    !-e $so ? qq{cannot load the GPU backend "$so": $so: cannot open shared object file}
    : $driver ? qq{the forward pass on the GPU is not built yet, use device=cpu}
    : qq{CUDA driver not found (libcuda.so.1: cannot open shared object file: No such file or directory) (GPU backend "$so", aiserve-gpu 1 cuda };

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the GPU backend's object is missing: dlopen's reason
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_gpu_library /nonexistent/libaiserve_gpu.so;
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls device=gpu;
--- config
--- must_die
--- error_log
"device=gpu" in "aiserve_model" "m": cannot load the GPU backend "/nonexistent/libaiserve_gpu.so": /nonexistent/libaiserve_gpu.so: cannot open shared object file: No such file or directory



=== TEST 2: a library that is not the GPU backend
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_gpu_library libm.so.6;
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls device=gpu:0;
--- config
--- must_die
--- error_log
"device=gpu:0" in "aiserve_model" "m": "libm.so.6" is not an aiserve GPU backend: /lib/x86_64-linux-gnu/libm.so.6: undefined symbol: aiserve_gpu_backend_get



=== TEST 3: the default library (beside the module) on this host: without make gpu, dlopen's reason; with it and no driver, the driver's
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls device=gpu;
--- config
--- must_die
--- error_log eval
$ENV{TEST_NGINX_GPU_EXPECT}



=== TEST 4: device=gpu:N takes a device number
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls device=gpu:x;
--- config
--- must_die
--- error_log
invalid device "device=gpu:x" in "aiserve_model", use device=cpu, device=gpu or device=gpu:N



=== TEST 5: an unknown device
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls device=tpu;
--- config
--- must_die
--- error_log
invalid device "device=tpu" in "aiserve_model", use device=cpu, device=gpu or device=gpu:N



=== TEST 6: aiserve_gpu_library given twice
--- main_config
load_module $TEST_NGINX_AISERVE_MODULE;
--- http_config
aiserve_model m $TEST_NGINX_AISERVE_ROOT/models/tiny-bert-seq-cls;
aiserve_gpu_library /opt/lib/libaiserve_gpu.so;
aiserve_gpu_library /opt/lib/libaiserve_gpu.so;
--- config
--- must_die
--- error_log
"aiserve_gpu_library" directive is duplicate
