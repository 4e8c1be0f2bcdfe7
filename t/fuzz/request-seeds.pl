#!/usr/bin/perl
# Seeds of t/fuzz/fuzz_request.c: the request bodies of the t/ suites (the
# bodies of their "--- request" sections, and the "request" objects of the
# fixtures in t/data/ that the suites send), each written once for every
# api= and model the target pairs (the first byte, see fuzz_request.c).
#
#   t/fuzz/request-seeds.pl DIR      (make fuzz-request)
use strict;
use warnings;
use JSON::PP ();
use File::Find ();
use Digest::MD5 qw(md5_hex);

my $dir = shift or die "usage: $0 DIR\n";
my $json = JSON::PP->new->canonical;
my %bodies;

sub add {
    my ($body) = @_;
    my $doc = eval { $json->decode($body) };
    return unless ref $doc eq 'HASH';
    $bodies{$body} = 1 if length $body <= 8192;
}

for my $t (glob 't/0*.t') {
    open my $f, '<', $t or die "$t: $!";
    my $text = do { local $/; <$f> };
    while ($text =~ /^--- request\n(?:POST|PUT) [^\n]*\n(.*?)(?=^---|^===|\z)/msg) {
        my $body = $1;
        $body =~ s/\s+\z//;
        add($body);
    }
}

File::Find::find(sub {
    return unless /\.json$/ && -s $_ < 4_000_000;
    open my $f, '<', $_ or return;
    my $doc = eval { $json->decode(do { local $/; <$f> }) } or return;
    my @todo = ($doc);
    while (defined(my $x = shift @todo)) {
        if (ref $x eq 'HASH') {
            add($json->encode($x->{request})) if ref $x->{request} eq 'HASH';
            push @todo, values %$x;
        } elsif (ref $x eq 'ARRAY') {
            push @todo, @$x;
        }
    }
}, 't/data');

# (api, model) pairs: api= numbers of ngx_http_aiserve_infer.h, models of
# fuzz_request.c (0 embeddings, 1 classification, 2 rerank, 3 NER)
my @pairs = ((map { [$_, 0] } 0, 1, 4, 6, 7, 8, 10),
             (map { [$_, 1] } 2, 3, 10), (map { [$_, 2] } 3, 10),
             [5, 3], [10, 3]);
mkdir $dir;
my $n = 0;
for my $body (sort keys %bodies) {
    for my $p (@pairs) {
        my $sel = $p->[0] | ($p->[1] << 4) | ($n++ % 3 == 0 ? 64 : 0);
        my $seed = chr($sel) . $body;
        open my $o, '>', "$dir/seed-" . md5_hex($seed) or die $!;
        print $o $seed;
        close $o;
    }
}
printf "%d bodies, %d seeds in %s\n", scalar(keys %bodies), $n, $dir;
