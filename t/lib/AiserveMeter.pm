package AiserveMeter;

# Helpers for the metering suites (t/05*-meter-*.t): the key CLI
# (tools/aiserve-keys) on a suite's ledger, usage totals, embeddings
# requests with a key, and the check that no API key reached a log.
# Loaded after Test::Nginx::Socket, like AiserveTest.

use strict;
use warnings;

use Exporter 'import';
use File::Path ();
use JSON::PP ();

our @EXPORT_OK = qw(meter_dir meter_db meter_cli meter_create_key meter_usage
                    meter_embed_request meter_keys_in_logs meter_log_dir
                    meter_json meter_key_decode);

my $root = $ENV{TEST_NGINX_AISERVE_ROOT}
           // do { require Cwd; Cwd::getcwd() };
my $cli = ($ENV{TEST_NGINX_AISERVE_TOOLS} // "$root/tools") . "/aiserve-keys";

# The suites' own files live beside the server root, never in it (the
# server root belongs to the runner; openresty's deletes it for every
# block): <servroot>-meter/, ignored by git like t/servroot*/.
sub meter_dir {
    my $servroot = $ENV{TEST_NGINX_SERVROOT} // "$root/t/servroot";
    $servroot =~ s{/+$}{};
    return "$servroot-meter";
}

# meter_db($name) -> a fresh ledger directory for one suite; it outlives
# the blocks' restarts.
sub meter_db {
    my ($name) = @_;
    my $db = meter_dir() . "/db-$name";
    File::Path::remove_tree($db);
    File::Path::make_path(meter_dir());
    return $db;
}

# Logs of every metering suite are also written here (see the suites'
# http_config), so t/059-meter-logs.t can grep the logs of the whole run.
sub meter_log_dir {
    my $dir = meter_dir() . "/logs";
    File::Path::make_path($dir);
    return $dir;
}

# meter_cli($db, @args) -> (exit status, stdout)
sub meter_cli {
    my ($db, @args) = @_;
    my $cmd = join ' ', map { quotemeta } $cli, '--db', $db, @args;
    my $out = `$cmd 2>/dev/null`;
    return ($? >> 8, $out);
}

# meter_create_key($db, @options) -> (key id "key_N", secret)
sub meter_create_key {
    my ($db, @opts) = @_;
    my ($rc, $out) = meter_cli($db, 'create', @opts);
    die "aiserve-keys create failed ($rc): $out" if $rc;
    my ($id) = $out =~ /^key_id: (\S+)/m;
    my ($secret) = $out =~ /^api_key: (\S+)/m;
    die "unexpected aiserve-keys output: $out" unless $id && $secret;
    return ($id, $secret);
}

# meter_usage($db) -> { key_N => { requests, prompt_tokens, ... } } summed
# over models and days, read with "aiserve-keys usage --by total --json".
sub meter_usage {
    my ($db) = @_;
    my ($rc, $out) = meter_cli($db, 'usage', '--by', 'total', '--json');
    die "aiserve-keys usage failed ($rc)" if $rc;
    my %u;
    for my $line (split /\n/, $out) {
        my $row = JSON::PP::decode_json($line);
        my $t = $u{ $row->{key_id} } //= {};
        $t->{$_} += $row->{$_}
            for qw(requests prompt_tokens compute_usec bytes_in bytes_out
                   errors cost_micro);
    }
    return \%u;
}

# meter_embed_request($secret, $input, %opt) -> request hash for
# AiserveTest::aiserve_http(_concurrent): POST /v1/embeddings.
sub meter_embed_request {
    my ($secret, $input, %opt) = @_;
    my $body = JSON::PP->new->canonical->encode(
        { model => $opt{model} // 'tiny', input => $input });
    return {
        method  => 'POST',
        uri     => $opt{uri} // '/v1/embeddings',
        headers => [
            'Content-Type' => 'application/json',
            defined $secret ? ('Authorization' => "Bearer $secret") : (),
        ],
        body    => $body,
    };
}

sub meter_json {
    my ($text) = @_;
    my $v = eval { JSON::PP::decode_json($text) };
    return $v;
}

# meter_key_decode($text) -> $text percent-decoded three times over (what
# the server's mask reads through: "%2561is%5Flive_..." is a key).
sub meter_key_decode {
    my ($text) = @_;
    $text =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge for 1 .. 3;
    return $text;
}

# meter_keys_in_logs(@dirs) -> lines of *.log files under @dirs that hold
# something shaped like an API key (ais_<type>_ + 38 alphanumerics, glued
# to anything), also once percent-decoded.
sub meter_keys_in_logs {
    my (@dirs) = @_;
    my @hits;
    for my $dir (@dirs) {
        next unless -d $dir;
        for my $f (glob("$dir/*.log")) {
            open my $in, '<', $f or next;
            while (my $line = <$in>) {
                push @hits, "$f: $line"
                    if meter_key_decode($line)
                       =~ /ais_[a-z]{1,8}_[A-Za-z0-9]{38}/;
            }
        }
    }
    return @hits;
}

1;
