# aiserve_meter: no API key in any log of the metering suites.  Every
# t/05*-meter-*.t writes its access and error log lines also to
# <servroot>-meter/logs (the runner wipes logs/ per block); this
# file, run after them, greps those logs and the last logs/ directory for
# anything shaped like a key (ais_<type>_ + 38 alphanumerics), also once
# the line is percent-decoded (t/050 sends "ais%5Flive%5F...",
# "%2561is..." and keys glued to more characters).  Keys sent in a query
# string and the Authorization headers nginx logs at debug level must
# appear masked (ais_live_AbCd****...).

use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveMeter qw(meter_dir meter_keys_in_logs);

my $servroot = $ENV{TEST_NGINX_SERVROOT} // "$FindBin::Bin/servroot";
my @dirs = grep { -d } (meter_dir() . '/logs', "$servroot/logs");
my @logs = map { glob "$_/*.log" } @dirs;

plan skip_all => "no logs under $servroot (run the t/05*-meter-*.t "
                 . "suites first, in the same server root)"
    unless @logs;

my $lines = 0;
my $masked = 0;
for my $f (@logs) {
    open my $in, '<', $f or next;
    while (<$in>) {
        $lines++;
        $masked++ if /ais_[a-z]{1,8}_[A-Za-z0-9]{4}\*{34}/;
    }
}
ok($lines > 0, "read $lines log lines in " . scalar(@logs) . " files");
ok($masked > 0, "$masked lines hold a masked key (the suites sent keys "
                . "in query strings and headers)");

my @hits = meter_keys_in_logs(@dirs);
is(scalar @hits, 0, 'no API key in the logs of the metering suites')
    or diag explain [@hits[0 .. ($#hits < 9 ? $#hits : 9)]];

done_testing();
