#!/usr/bin/perl
# Seeds of t/fuzz/fuzz_body.c: the request bodies of the t/ suites (their
# "--- request" sections, and the "--- request eval" ones evaluated in a
# Safe compartment) and bodies of invalid UTF-8 of every kind (overlong
# forms, surrogates, code points above U+10FFFF, bytes that cannot start
# or continue a sequence, sequences cut short, NULs), each behind the
# layout header of fuzz_body.c: in one buffer, cut in pieces of memory,
# pieces in the temporary file, a file one byte short.  A suite's body
# gets one layout, in turn; an invalid one gets every layout, and one cut
# inside its first multi-byte sequence.
#
#   t/fuzz/body-seeds.pl DIR      (make fuzz-body)
use strict;
use warnings;
use Safe;
use Digest::MD5 qw(md5_hex);

my $dir = shift or die "usage: $0 DIR\n";
my %bodies;
my $n = 0;

sub add_request {
    my ($req) = @_;
    return unless defined $req && !ref $req;
    return unless $req =~ /\A(?:POST|PUT|PATCH) [^\n]*\n(.*)\z/s;
    my $body = $1;
    $body =~ s/\s+\z//;
    $bodies{$body} = 1 if length $body <= 8192;
}

for my $t (glob 't/0*.t') {
    open my $f, '<', $t or die "$t: $!";
    my $text = do { local $/; <$f> };
    while ($text =~ /^--- request\n((?:POST|PUT|PATCH) .*?)(?=^---|^===|\z)/msg) {
        add_request($1);
    }
    while ($text =~ /^--- request eval\n(.*?)(?=^---|^===|\z)/msg) {
        my $v = Safe->new->reval($1);
        next unless defined $v;
        add_request($_) for ref $v eq 'ARRAY' ? @$v : ($v);
    }
}

my @invalid = (
    "{\"input\": \"ab\xff\xfecd\"}",            # bytes never in UTF-8
    "{\"input\": \"lone \x80 continuation \xbf\"}",
    "{\"input\": \"x\xc3\xc3y\"}",                # a lead byte, no continuation
    "{\"input\": \"cut \xe2\x98\xc3\xa9t\xc3\xa9\"}",
    "{\"input\": \"end \xf0\x9f\x98\"}",
    "{\"input\": \"\xe2\x98",                     # cut short at the end
    "{\"input\": \"overlong \xc0\xaf \xc1\xbf \xe0\x80\xaf \xf0\x80\x80\xaf\"}",
    "{\"input\": \"surrogates \xed\xa0\x80\xed\xbf\xbf\"}",
    "{\"input\": \"above \xf4\x90\x80\x80 \xf5\x80\x80\x80\"}",
    "{\"input\": \"five \xf8\x90\x80\x80\x80 six \xfc\x84\x80\x80\x80\x80\"}",
    "{\"input\": \"nul \x00 raw, \\u0000 escaped\"}",
    "{\"input\": \"marker \xf4\x8f\xbf\xbf and \xff\"}",
    "{\"\xc3\": 1, \"input\": \"ok\"}",
    "{\"input\": [\"fine\", \"\xe2\x82\xac ok\", \"bad \xe2\x82\"]}",
    "\xef\xbb\xbf{\"input\": \"bom\"}",
    "{\"input\": \"\\ud800 escaped surrogate \xa4\"}",
    "{\"input\": \"caf\xc3\xa9 na\xc3\xafve \xe2\x98\x83 \xf0\x9f\x98\x80\"}",
);

# (byte 0, byte 1, cuts): layouts of fuzz_body.c
my @layouts = (
    [0, 0, []],                 # one buffer of memory
    [3, 0, [64, 128, 192]],     # four pieces of memory
    [3, 5, [64, 128, 192]],     # pieces 0 and 2 in the file
    [0, 1, []],                 # all in the file
    [8 | 1, 1, [128]],          # the file one byte short
);

sub seed {
    my ($l, $body) = @_;
    my @c = @{$l->[2]};
    my $hdr = pack('C C C6', $l->[0], $l->[1], @c, (0) x (6 - @c));
    my $seed = $hdr . $body;
    $n++;
    open my $o, '>:raw', "$dir/seed-" . md5_hex($seed) or die $!;
    print $o $seed;
    close $o;
}

mkdir $dir;
my $i = 0;
for my $body (sort keys %bodies) {
    seed($layouts[$i++ % @layouts], $body);
}
for my $body (@invalid) {
    seed($_, $body) for @layouts;
    # a cut right after the first byte of the first multi-byte sequence
    if ($body =~ /[\x80-\xff]/g) {
        my ($pos, $len) = (pos($body), length $body);
        my $c = int(($pos * 256 + $len - 1) / $len);
        seed([1, 2, [$c]], $body) if $c < 256;
    }
}
printf "%d bodies of the suites, %d of invalid UTF-8, %d seeds in %s\n",
    scalar(keys %bodies), scalar(@invalid), $n, $dir;
