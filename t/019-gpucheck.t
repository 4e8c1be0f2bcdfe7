# The device check's tools on a host without a GPU (tools/aiserve-gpucheck,
# tools/gpucheck.sh; shared/GPU.md section 6): `plan` prints the lane
# workspace of shared/GPU.md's table; `probe` and `kernels` fail with exit
# 2 and the loader's or the driver's reason, never a pass; gpucheck.sh's
# kernels stage fails, says why in its summary, and writes results.json
# with the FAIL verdict.  On a host with a CUDA driver the no-GPU cases
# are skipped (the device check itself runs there).  Not a Test::Nginx
# suite: it runs once.

use strict;
use warnings;
use Test::More;
use FindBin;
use File::Temp ();
use JSON::PP ();

plan skip_all => 'the GPU check tools do not depend on HUP mode'
    if $ENV{TEST_NGINX_USE_HUP};

my $root = "$FindBin::Bin/..";
my $tool = ($ENV{TEST_NGINX_AISERVE_TOOLS} // "$root/tools")
           . "/aiserve-gpucheck";
my $so = "$root/build/libaiserve_gpu.so";
my $driver = grep { -e "$_/libcuda.so.1" }
    qw(/usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /lib/x86_64-linux-gnu);

# run(@cmd) -> (exit code, stdout and stderr)
sub run {
    my $out = qx{@_ 2>&1};
    return ($? >> 8, $out);
}

my ($rc, $out) = run($tool, qw(plan --hidden-size 384 --intermediate-size
                               1536 --tokens 4096 --batch 32));
is($rc, 0, 'plan for MiniLM sizes');
like($out, qr/activations 31457280 bytes \(7680 a token\)/,
     'MiniLM: 7,680 bytes of activations a token, 30 MiB at 4096 tokens');
like($out, qr/^gemm_workspace +\d+$/m, 'the cuBLASLt workspace is laid out');

($rc, $out) = run($tool, qw(plan --hidden-size 768));
is($rc, 2, 'plan without intermediate_size: exit 2');
like($out, qr/intermediate_size 0.*none may be 0/, '... saying which size');

($rc, $out) = run($tool, qw(probe --lib /nonexistent/libaiserve_gpu.so));
is($rc, 2, 'probe without the backend: exit 2');
like($out, qr{cannot load the GPU backend: /nonexistent/libaiserve_gpu\.so: cannot open shared object file},
     "... with dlopen's reason");

($rc, $out) = run($tool, qw(kernels --lib libm.so.6));
is($rc, 2, 'kernels on a foreign library: exit 2');
like($out, qr/"libm\.so\.6" is not an aiserve GPU backend/, '... saying so');

SKIP: {
    skip 'a CUDA driver is installed: the device check runs here', 6
        if $driver;
    skip 'build/libaiserve_gpu.so is not built (no nvcc)', 6 unless -e $so;

    ($rc, $out) = run($tool, 'kernels', '--lib', $so);
    is($rc, 2, 'kernels without a driver: exit 2, no check passes');
    like($out, qr/no usable GPU: CUDA driver not found \(libcuda\.so\.1: /,
         "... with the driver's reason");
    unlike($out, qr/^PASS/m, '... and no PASS line');

    my $dir = File::Temp::tempdir(CLEANUP => 1);
    ($rc, $out) = run("cd $root && GPUCHECK_ONLY=kernels tools/gpucheck.sh $dir");
    is($rc, 1, 'gpucheck.sh without a GPU: exit 1');
    like($out, qr/^kernels +FAIL: no usable GPU or backend/m,
         '... its summary names the failed stage and why');
    my $res = JSON::PP::decode_json(do {
        local $/;
        open my $fh, '<', "$dir/results.json" or die "results.json: $!";
        <$fh>;
    });
    is($res->{verdict}, 'FAIL', '... and results.json says FAIL');
}

done_testing();
