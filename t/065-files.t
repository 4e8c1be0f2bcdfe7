# aiserve_files: the Files API.  Real multipart uploads (as the openai
# client sends them) of the training data fixtures and a banking77 slice;
# validation on the thread pool with the examples, labels and tokens that
# transformers' tokenizer counts (t/data/files/tokens.json, made by
# tools/gen-files-goldens.py); list with after/limit/purpose; retrieve;
# content byte-identical; delete; the files of one account are a 404 to
# another, exactly like a missing file, and visible to admin keys; the
# per-account quota (429) and client_max_body_size (413, JSON); a bad
# file's status_details; the files survive a reload; the configuration
# errors of a location without aiserve_meter on or a store without a
# tokenizer.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http);
use POSIX ();
use AiserveMeter qw(meter_db meter_dir meter_cli meter_create_key
                    meter_json meter_log_dir meter_keys_in_logs);
use File::Path ();
use JSON::PP ();
use Time::HiRes ();

master_on();
workers(2);
repeat_each(1);
no_shuffle();

my $root = $ENV{TEST_NGINX_AISERVE_ROOT};
my $db = meter_db('065');
my $store = meter_dir() . '/files-065';
my $logs = meter_log_dir();
File::Path::remove_tree($store);

my (%key, %id);
($id{alice}, $key{alice}) = meter_create_key($db, '--name', 'alice');
($id{bob}, $key{bob}) = meter_create_key($db, '--name', 'bob');
($id{carol}, $key{carol}) = meter_create_key($db, '--name', 'carol');
($id{ops}, $key{ops}) = meter_create_key($db, '--name', 'ops', '--admin');

my $golden = JSON::PP::decode_json(slurp("$root/t/data/files/tokens.json"));

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(main_config => <<"EOC")
load_module $ENV{TEST_NGINX_AISERVE_MODULE};
EOC
        unless defined $block->main_config;
    $block->set_value(http_config => <<"EOC")
    access_log $logs/access.log;
    aiserve_meter_db $db flush=100ms;
    aiserve_meter_zone meter065 1m;
    aiserve_files_store $store tokenizer=$root/models/all-MiniLM-L6-v2
                        quota=64k;
EOC
        unless defined $block->http_config;
    $block->set_value(config => <<"EOC") unless defined $block->config;
    location /v1/files {
        aiserve_meter on;
        aiserve_files;
        client_max_body_size 48k;
    }
    location = /v1/usage {
        aiserve_usage;
    }
    location = /t {
        return 200 "ok\\n";
    }
EOC
});

sub slurp {
    my ($path) = @_;
    open my $in, '<:raw', $path or die "$path: $!";
    local $/;
    return <$in>;
}

# a multipart/form-data body as httpx (the openai client) writes it:
# purpose, then file (file_first: the other order)
sub multipart {
    my (%f) = @_;
    my $b = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
    my ($purpose, $file) = ('', '');
    if (defined $f{purpose}) {
        $purpose = "--$b\r\nContent-Disposition: form-data; "
                 . "name=\"purpose\"\r\n\r\n$f{purpose}\r\n";
    }
    if (defined $f{content}) {
        $file = "--$b\r\nContent-Disposition: form-data; name=\"file\"; "
              . "filename=\"$f{filename}\"\r\nContent-Type: "
              . "application/octet-stream\r\n\r\n$f{content}\r\n";
    }
    my $body = ($f{file_first} ? $file . $purpose : $purpose . $file)
             . "--$b--\r\n";
    return ("multipart/form-data; boundary=$b", $body);
}

sub api {
    my ($method, $path, $who, %opt) = @_;
    my @h = (defined $who ? ('Authorization' => "Bearer $key{$who}") : ());
    my $body;
    if (defined $opt{content} || defined $opt{purpose}) {
        my $type;
        ($type, $body) = multipart(%opt);
        push @h, 'Content-Type' => $type;
    }
    push @h, @{ $opt{headers} // [] };
    my $r = aiserve_http(server_port(), {
        method => $method, uri => $path, headers => \@h,
        defined $body ? (body => $body) : (),
    });
    $r->{json} = meter_json($r->{body})
        if ($r->{headers}{'content-type'} // '') =~ m{json};
    return $r;
}

sub upload {
    my ($who, $path, %opt) = @_;
    my ($name) = $path =~ m{([^/]+)$};
    return api('POST', '/v1/files', $who, purpose => 'fine-tune',
               filename => $opt{filename} // $name,
               content => $opt{content} // slurp($path), %opt);
}

sub error_of {
    my ($r) = @_;
    return "$r->{status} " . ($r->{json}{error}{code} // '-');
}

sub ids_of {
    my ($r) = @_;
    return [ map { $_->{id} } @{ $r->{json}{data} // [] } ];
}

my %uploaded;       # name -> file object, across the checks

my @fixtures = ("$root/t/data/train/classify.jsonl",
                "$root/t/data/train/ner.jsonl",
                "$root/t/data/train/ner.conll",
                "$root/t/data/files/banking77-train-slice.csv");

my %checks = (
    upload => sub {
        for my $path (@fixtures) {
            my ($name) = $path =~ m{([^/]+)$};
            my $t0 = time;
            my $r = upload('alice', $path);
            my $f = $r->{json};
            is($r->{status}, 200, "$name: 200");
            like($f->{id}, qr/^file-[0-9a-f]{24}$/, "$name: an id");
            is($f->{object}, 'file', "$name: object");
            is($f->{bytes}, -s $path, "$name: bytes");
            is($f->{filename}, $name, "$name: filename");
            is($f->{purpose}, 'fine-tune', "$name: purpose");
            ok(abs($f->{created_at} - $t0) <= 5, "$name: created_at");
            is($f->{status}, 'processed', "$name: processed");
            is($f->{status_details}, undef, "$name: no details");
            my $g = $golden->{$name};
            is($f->{examples}, $g->{examples}, "$name: examples");
            is($f->{tokens}, $g->{tokens},
               "$name: tokens as transformers counts them");
            is($f->{num_labels}, $g->{num_labels}, "$name: labels")
                if defined $g->{num_labels};
            $uploaded{$name} = $f;
        }
        is($uploaded{'ner.conll'}{format}, 'conll', 'CoNLL detected');
        is($uploaded{'banking77-train-slice.csv'}{format}, 'csv',
           'CSV detected, its "category" column the label');
    },

    list => sub {
        my @ids = reverse map { $uploaded{(m{([^/]+)$})[0]}{id} } @fixtures;
        my $r = api('GET', '/v1/files', 'alice');
        is($r->{status}, 200, 'list: 200');
        is($r->{json}{object}, 'list', 'list: object');
        is_deeply(ids_of($r), \@ids, 'list: newest first');
        is($r->{json}{has_more}, JSON::PP::false, 'list: no more');
        is($r->{json}{first_id}, $ids[0], 'list: first_id');
        is($r->{json}{last_id}, $ids[-1], 'list: last_id');

        $r = api('GET', '/v1/files?limit=2', 'alice');
        is_deeply(ids_of($r), [ @ids[0, 1] ], 'limit=2: the newest two');
        is($r->{json}{has_more}, JSON::PP::true, 'limit=2: has_more');
        $r = api('GET', "/v1/files?limit=2&after=$r->{json}{last_id}",
                 'alice');
        is_deeply(ids_of($r), [ @ids[2, 3] ], 'after: the next two');
        is($r->{json}{has_more}, JSON::PP::false, 'after: no more');

        $r = api('GET', '/v1/files?order=asc&limit=3', 'alice');
        is_deeply(ids_of($r), [ reverse @ids[1 .. 3] ],
                  'order=asc: oldest first');
        $r = api('GET', "/v1/files?order=asc&after=$ids[2]", 'alice');
        is_deeply(ids_of($r), [ @ids[1, 0] ], 'order=asc, after');
        is(error_of(api('GET', '/v1/files?order=up', 'alice')),
           '400 invalid_value', 'order=up: 400');

        $r = api('GET', '/v1/files?purpose=fine-tune', 'alice');
        is(scalar @{ ids_of($r) }, 4, 'purpose=fine-tune: all four');
        $r = api('GET', '/v1/files?purpose=batch', 'alice');
        is_deeply(ids_of($r), [], 'purpose=batch: none');

        is(error_of(api('GET', '/v1/files?limit=0', 'alice')),
           '400 invalid_value', 'limit=0: 400');
        is(error_of(api('GET', '/v1/files?limit=1001', 'alice')),
           '400 invalid_value', 'limit=1001: 400');
    },

    retrieve => sub {
        for my $path (@fixtures) {
            my ($name) = $path =~ m{([^/]+)$};
            my $f = $uploaded{$name};
            my $r = api('GET', "/v1/files/$f->{id}", 'alice');
            is_deeply($r->{json}, $f, "$name: retrieved as uploaded");
            $r = api('GET', "/v1/files/$f->{id}/content", 'alice');
            is($r->{status}, 200, "$name: content 200");
            ok($r->{body} eq slurp($path), "$name: content byte-identical");
            is($r->{headers}{'content-type'}, 'application/octet-stream',
               "$name: content type");
        }
    },

    acl => sub {
        my $f = $uploaded{'classify.jsonl'};
        my $missing = api('GET', '/v1/files/file-000000000000000000000000',
                          'alice');
        is(error_of($missing), '404 not_found', 'a missing file: 404');

        my $r = api('GET', "/v1/files/$f->{id}", 'bob');
        is($r->{status}, 404, "another account's file: 404");
        is($r->{body}, $missing->{body}, '... exactly like a missing one');
        $r = api('GET', "/v1/files/$f->{id}/content", 'bob');
        is($r->{body}, $missing->{body}, '... its content too');
        $r = api('DELETE', "/v1/files/$f->{id}", 'bob');
        is($r->{body}, $missing->{body}, '... and its delete');
        is(api('GET', "/v1/files/$f->{id}", 'alice')->{status}, 200,
           "the owner's file is still there");
        ok(-f "$store/$f->{id}", '... on disk too');
        is_deeply(ids_of(api('GET', '/v1/files', 'bob')), [],
                  "bob's list: none of alice's files");

        $r = api('GET', "/v1/files/$f->{id}", 'ops');
        is($r->{status}, 200, 'an admin key sees any file');
        $r = api('GET', "/v1/files/$f->{id}/content", 'ops');
        ok($r->{body} eq slurp($fixtures[0]), '... and its content');
        is(scalar @{ ids_of(api('GET', '/v1/files', 'ops')) }, 4,
           '... and lists every account\'s');

        is(api('GET', '/v1/files', undef)->{status}, 401, 'no key: 401');
    },

    bad_files => sub {
        my $r = upload('bob', 'bad.jsonl', content =>
            qq({"text": "fine", "label": "a"}\n{"text": "", "label": "b"}\n));
        is($r->{status}, 200, 'an invalid file is stored: 200');
        is($r->{json}{status}, 'error', '... with status error');
        is($r->{json}{status_details},
           'bad.jsonl:2: field "text": empty text',
           '... and the line and reason');
        is(api('GET', "/v1/files/$r->{json}{id}", 'bob')->{json}{status},
           'error', '... kept in its record');

        $r = upload('bob', 'bad.csv', content =>
            "text,label\nhello,a\n\"open quote,b\n");
        like($r->{json}{status_details}, qr/^bad\.csv:3: /,
             'CSV: the line of the unterminated quote');

        $r = upload('bob', 'bad.conll', content =>
            "EU\tB-ORG\nrejects\tX-Y\n");
        like($r->{json}{status_details}, qr/^bad\.conll:2: .*X-Y/,
             'CoNLL: the line of the invalid tag');

        $r = upload('bob', 'x.jsonl', content => "{\"text\": \"a\"\n");
        like($r->{json}{status_details}, qr/^x\.jsonl:1: /,
             'JSONL: invalid JSON on line 1');

        for my $first (0, 1) {
            $r = upload('bob', 'empty.jsonl', content => '',
                        file_first => $first);
            is($r->{json}{status}, 'error',
               "an empty file (" . ($first ? 'first' : 'last')
               . ' part): status error');
            is($r->{json}{bytes}, 0, '... 0 bytes');
            like($r->{json}{status_details}, qr/^empty\.jsonl: no examples/,
                 '... and why');
        }

        $r = upload('bob', 'x', filename => 'C:\\data\\dir/ok.jsonl',
                    file_first => 1, content => slurp($fixtures[0]));
        is($r->{json}{filename}, 'ok.jsonl', 'a path: its base name kept');
        is($r->{json}{status}, 'processed', '... file part first: parsed');
        ok(api('GET', "/v1/files/$r->{json}{id}/content", 'bob')->{body}
           eq slurp($fixtures[0]), '... content byte-identical');

        $r = aiserve_http(server_port(), {
            method => 'POST', uri => '/v1/files',
            headers => [ Authorization => "Bearer $key{bob}",
                         'Content-Type' => 'multipart/form-data; boundary=zz' ],
            body => "--zz\r\nContent-Disposition: form-data; name=\"file\"; "
                  . "filename=\"e.csv\"\r\n\r\n--zz\r\nContent-Disposition: "
                  . "form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n--zz--" });
        is(meter_json($r->{body})->{bytes}, 0,
           'an empty part sharing its CRLF with the delimiter: 0 bytes, '
           . 'the next part read');

        $r = api('POST', '/v1/files', 'bob', purpose => 'batch',
                 filename => 'a.jsonl', content => "{}\n");
        is(error_of($r), '400 invalid_value', 'purpose=batch: 400');
        is(meter_json($r->{body})->{error}{param}, 'purpose',
           '... param purpose');
        $r = api('POST', '/v1/files', 'bob', purpose => 'fine-tune');
        is(error_of($r), '400 missing_required_parameter', 'no file: 400');
        $r = aiserve_http(server_port(), {
            method => 'POST', uri => '/v1/files',
            headers => [ Authorization => "Bearer $key{bob}",
                         'Content-Type' => 'application/json' ],
            body => '{"purpose": "fine-tune"}' });
        is(meter_json($r->{body})->{error}{code}, 'invalid_content_type',
           'not multipart: 400 invalid_content_type');
        $r = aiserve_http(server_port(), {
            method => 'POST', uri => '/v1/files',
            headers => [ Authorization => "Bearer $key{bob}",
                         'Content-Type' => 'multipart/form-data; boundary=zz' ],
            body => "--zz\r\nContent-Disposition: form-data; name=\"file\"" });
        is(meter_json($r->{body})->{error}{code}, 'invalid_multipart',
           'a truncated form: 400 invalid_multipart');
        is(error_of(api('PUT', '/v1/files', 'bob')),
           '405 method_not_allowed', 'PUT: 405');
    },

    limits => sub {
        my $row = "a text of some length for the quota checks,label_a\n";
        my $content = "text,label\n" . ($row x 700);   # about 36k
        my $r = upload('carol', 'big1.csv', content => $content);
        is($r->{status}, 200, 'carol: 36k stored');
        my $first = $r->{json}{id};
        $r = upload('carol', 'big2.csv', content => $content);
        is(error_of($r), '429 storage_quota_exceeded',
           'over the 64k quota: 429');
        is($r->{json}{error}{type}, 'insufficient_quota', '... its type');
        is(scalar @{ ids_of(api('GET', '/v1/files', 'carol')) }, 1,
           '... nothing listed');
        my @on_disk = grep { !/meta$/ } glob "$store/*";
        is(scalar(grep { -s $_ == length $content } @on_disk), 1,
           '... nothing kept on disk');

        is(api('DELETE', "/v1/files/$first", 'carol')->{json}{deleted},
           JSON::PP::true, 'delete gives the bytes back');
        $r = upload('carol', 'big2.csv', content => $content);
        is($r->{status}, 200, '... the next upload fits');

        $r = upload('carol', 'huge.csv', content => $row x 1000);
        is(error_of($r), '413 request_too_large',
           'over client_max_body_size: 413 JSON');
        is($r->{headers}{'content-type'}, 'application/json',
           '... as application/json');

        my ($type, $body) = multipart(purpose => 'fine-tune',
                                      filename => 'huge.csv',
                                      content => $row x 1000);
        my $chunked = sprintf("%x\r\n%s\r\n0\r\n\r\n", length $body, $body);
        $r = aiserve_http(server_port(), {
            method => 'POST', uri => '/v1/files',
            headers => [ Authorization => "Bearer $key{carol}",
                         'Content-Type' => $type,
                         'Transfer-Encoding' => 'chunked' ],
            body => $chunked });
        is($r->{status}, 413, 'a chunked body over the limit: 413');
        is(meter_json($r->{body})->{error}{code}, 'request_too_large',
           '... JSON too');
    },

    delete => sub {
        my $f = $uploaded{'ner.jsonl'};
        my $stored = 0;
        $stored += $_->{bytes} for @{ api('GET', '/v1/files', 'alice')
                                      ->{json}{data} };
        my $storage = sub {
            my (undef, $out) = meter_cli($db, 'export', '--key', $id{alice},
                                         '--format', 'jsonl');
            my @rows = grep { ($_->{api} // '') eq 'storage' }
                       map { meter_json($_) } split /\n/, $out;
            return \@rows;
        };
        my $rows = $storage->();
        is_deeply([map { [$_->{model}, $_->{storage_bytes},
                          $_->{cost_micro}] } @$rows],
                  [['files', $stored, 0]],
                  "the ledger's storage row of alice: the $stored bytes "
                  . 'her files take, not charged');
        my $today = POSIX::strftime('%Y-%m-%d', gmtime);
        my $u = api('GET', "/v1/usage?start_time=$today&group_by=api",
                    'alice');
        my ($res) = grep { ($_->{api} // '') eq 'storage' }
                    @{ $u->{json}{data}[0]{results} };
        is($res->{storage_bytes}, $stored,
           '/v1/usage group_by=api: storage_bytes of the storage route');
        my $r = api('DELETE', "/v1/files/$f->{id}", 'alice');
        is_deeply($r->{json}, { id => $f->{id}, object => 'file',
                                deleted => JSON::PP::true },
                  'delete: OpenAI\'s FileDeleted');
        is(api('GET', "/v1/files/$f->{id}", 'alice')->{status}, 404,
           'then 404');
        is(api('DELETE', "/v1/files/$f->{id}", 'alice')->{status}, 404,
           'a second delete: 404');
        ok(!-e "$store/$f->{id}", 'its content is removed');
        ok(!grep({ $_ eq $f->{id} } @{ ids_of(api('GET', '/v1/files',
                                                  'alice')) }),
           'not listed');
        delete $uploaded{'ner.jsonl'};
        $rows = $storage->();
        is($rows->[0]{storage_bytes}, $stored,
           'after the delete the row keeps the day\'s peak');
        my $r2 = upload('alice', "$root/t/data/train/ner.jsonl");
        is($r2->{status}, 200, 'uploaded again');
        is($storage->()->[0]{storage_bytes}, $stored,
           '... the same bytes again: the peak stays');
        api('DELETE', "/v1/files/$r2->{json}{id}", 'alice');
    },

    # what a worker killed during an upload leaves; the next start (not a
    # reload) removes it
    plant => sub {
        for my $name ('.tmp-file-00000000000000000000000a',
                      'file-00000000000000000000000b') {
            open my $out, '>', "$store/$name" or die "$store/$name: $!";
            print $out "partial";
            close $out;
        }
    },

    recovered => sub {
        SKIP: {
            Test::More::skip('nginx is not restarted in HUP mode', 3)
                if $ENV{TEST_NGINX_USE_HUP};
            ok(!-e "$store/.tmp-file-00000000000000000000000a",
               'a temporary file of a killed upload: removed at the start');
            ok(!-e "$store/file-00000000000000000000000b",
               'a content without its record: removed');
            my $log = slurp(server_root() . '/logs/error.log');
            like($log, qr/aiserve files: removed 2 partial uploads, 0 /,
                 '... and logged');
        }
        is(scalar @{ ids_of(api('GET', '/v1/files', 'alice')) }, 4,
           "alice's files are all there");
    },

    reload => sub {
        open my $in, '<', server_root() . '/logs/nginx.pid' or die $!;
        chomp(my $master = <$in>);
        kill 'HUP', $master;
        Time::HiRes::sleep(1.5);
        my $f = $uploaded{'banking77-train-slice.csv'};
        my $r = api('GET', "/v1/files/$f->{id}", 'alice');
        is_deeply($r->{json}, $f, 'after a reload: the record');
        $r = api('GET', "/v1/files/$f->{id}/content", 'alice');
        ok($r->{body} eq slurp($fixtures[3]), '... the content');
        is(scalar @{ ids_of(api('GET', '/v1/files', 'alice')) }, 3,
           '... the list');
        $r = upload('alice', $fixtures[0]);
        is($r->{json}{status}, 'processed', '... and uploads');
    },
);

add_response_body_check(sub {
    my ($block) = @_;
    my $name = $block->files_check or return;
    $name =~ s/\s+//g;
    $checks{$_}->() for split /,/, $name;
});

run_tests();

my @hits = meter_keys_in_logs($logs, server_root() . '/logs');
is(scalar @hits, 0, 'no API key in the logs of this suite')
    or Test::More::diag(Test::More::explain(\@hits));

__DATA__

=== TEST 1: upload, validate (on the thread pool), list, retrieve, content
--- request
GET /t
--- files_check: upload, list, retrieve
--- response_body
ok
--- error_log
added to thread pool "default"
aiserve files: stored file-
--- no_error_log
[error]



=== TEST 2: another account's file is a 404, exactly like a missing one; admin keys see all
--- request
GET /t
--- files_check: acl
--- response_body
ok
--- no_error_log
[error]



=== TEST 3: bad files: stored with status error and the line and reason; bad forms: 400
--- request
GET /t
--- files_check: bad_files
--- response_body
ok
--- no_error_log
[error]



=== TEST 4: quota (429) and client_max_body_size (413 JSON)
--- request
GET /t
--- files_check: limits
--- response_body
ok
--- error_log
client intended to send too large body
client intended to send too large chunked body
--- no_error_log
[alert]
[crit]



=== TEST 5: delete
--- request
GET /t
--- files_check: delete
--- response_body
ok
--- no_error_log
[error]



=== TEST 6: the files survive a reload
--- request
GET /t
--- files_check: reload
--- response_body
ok
--- no_error_log
[error]



=== TEST 7: what a killed upload leaves is removed at the next start
--- request
GET /t
--- files_check: plant
--- response_body
ok



=== TEST 8: (the next start)
--- request
GET /t
--- files_check: recovered
--- response_body
ok
--- no_error_log
[error]



=== TEST 9: a files location needs aiserve_meter on
--- config
    location /v1/files {
        aiserve_files;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_files" needs "aiserve_meter on" in its location/



=== TEST 10: the store needs a tokenizer
--- http_config
    aiserve_files_store /nonexistent-065;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_files_store" needs tokenizer=MODEL_DIR/



=== TEST 11: a map too small for the files' records
--- http_config
    aiserve_files_store /nonexistent-065
        tokenizer=$TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2 map_size=1;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"map_size=1" must be 1m or more in "aiserve_files_store"/
