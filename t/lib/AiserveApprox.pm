package AiserveApprox;

# Numeric comparison of aiserve's JSON answers with committed reference
# values (t/data/*.json*), for the t/0[1-4]*.t suites.  Works under aiserve's
# runner and openresty's Test::Nginx::Socket alike: a .t file registers the
# check with add_response_body_check() and a block lists, one per request,
# what each answer must equal:
#
#     add_response_body_check(\&AiserveApprox::check);
#     ...
#     --- json_approx eval
#     [ [ { label => "positive", score => 0.52 } ] ]
#     --- json_tolerance: 1e-4
#
# Numbers compare within the tolerance (absolute, default 1e-4), strings and
# structure exactly.  Helpers load the fixtures and build requests.

use strict;
use warnings;

use Exporter 'import';
use FindBin;
use B ();
use JSON::PP ();
use Test::More ();

our @EXPORT = qw(fixture routes_fixture minilm_cases json_request json_text
                 approx_diff);

my $json = JSON::PP->new->utf8->canonical->allow_nonref;
my $data = "$FindBin::Bin/data";
my %cache;

# fixture($kind) -> list of {request, response, model} from
# t/data/pipeline-fixtures.json (tools/gen-pipeline-fixtures.py).
sub fixture {
    my ($kind) = @_;
    $cache{pipeline} //= do {
        open my $f, '<:raw', "$data/pipeline-fixtures.json"
            or die "pipeline-fixtures.json: $!";
        local $/;
        $json->decode(<$f>);
    };
    return @{ $cache{pipeline}{$kind} };
}

# routes_fixture($kind) -> list of {request, response, model} from
# t/data/routes-fixtures.json (tools/gen-routes-fixtures.py).
sub routes_fixture {
    my ($kind) = @_;
    $cache{routes} //= do {
        open my $f, '<:raw', "$data/routes-fixtures.json"
            or die "routes-fixtures.json: $!";
        local $/;
        $json->decode(<$f>);
    };
    return @{ $cache{routes}{$kind} };
}

# minilm_cases() -> list of {text, input_ids, embedding} from the encoder's
# sentence-transformers reference (t/data/encoder-minilm.jsonl).
sub minilm_cases {
    $cache{minilm} //= do {
        open my $f, '<:raw', "$data/encoder-minilm.jsonl"
            or die "encoder-minilm.jsonl: $!";
        [ map { $json->decode($_) } grep { /\S/ } <$f> ];
    };
    return @{ $cache{minilm} };
}

# json_request("POST /uri", \%body) -> request text for --- request eval
sub json_request {
    my ($line, $body) = @_;
    return "$line\n" . $json->encode($body);
}

sub json_text { $json->encode($_[0]) }

# approx_diff($got, $want, $tol) -> '' when equal, else where they differ
sub approx_diff {
    my ($got, $want, $tol, $path) = @_;
    $path //= '$';
    if (!defined $want) {
        return defined $got ? "$path: want null, got " . $json->encode($got)
                            : '';
    }
    if (!defined $got) {
        return "$path: got null, want " . $json->encode($want);
    }
    if (ref $want eq 'HASH') {
        return "$path: want an object" unless ref $got eq 'HASH';
        my $gk = join ',', sort keys %$got;
        my $wk = join ',', sort keys %$want;
        return "$path: keys {$gk}, want {$wk}" if $gk ne $wk;
        for my $k (sort keys %$want) {
            my $d = approx_diff($got->{$k}, $want->{$k}, $tol, "$path.$k");
            return $d if $d ne '';
        }
        return '';
    }
    if (ref $want eq 'ARRAY') {
        return "$path: want an array" unless ref $got eq 'ARRAY';
        return "$path: " . @$got . " items, want " . @$want
            if @$got != @$want;
        for my $i (0 .. $#$want) {
            my $d = approx_diff($got->[$i], $want->[$i], $tol, "$path\[$i]");
            return $d if $d ne '';
        }
        return '';
    }
    if (JSON::PP::is_bool($want) || JSON::PP::is_bool($got)) {
        return (JSON::PP::is_bool($got) && JSON::PP::is_bool($want)
                && !!$got == !!$want) ? '' : "$path: $got, want $want";
    }
    if (ref $got) {
        return "$path: got " . $json->encode($got) . ", want $want";
    }
    my $num = qr/^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/;
    if ($want =~ $num && $got =~ $num
        && (B::svref_2object(\$want)->FLAGS & (B::SVp_IOK() | B::SVp_NOK())))
    {
        return abs($got - $want) <= $tol ? ''
             : "$path: $got, want $want (tolerance $tol)";
    }
    return $got eq $want ? '' : "$path: \"$got\", want \"$want\"";
}

# add_response_body_check() callback: --- json_approx (one expected value per
# request of the block), --- json_tolerance (default 1e-4).
sub check {
    my ($block, $body, $idx, $repeat_idx, $dry_run) = @_;
    my $all = $block->json_approx or return;
    my $name = $block->name;
    my $tol = $block->json_tolerance // 1e-4;
    $tol =~ s/\s+//g;
    my $want = $all->[$idx];
    my $got = eval { $json->decode($body) };
    if ($dry_run) {
        Test::More::pass("$name - json_approx (req $idx) - skipped");
        return;
    }
    if (!defined $got && $@) {
        Test::More::fail("$name - json_approx (req $idx) - response is JSON");
        Test::More::diag("$@: $body");
        return;
    }
    my $d = approx_diff($got, $want, $tol);
    Test::More::is($d, '', "$name - json_approx (req $idx) - answer equals "
                           . "the reference within $tol");
}

1;
