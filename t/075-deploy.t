# Deployment of fine-tuned models without a reload (aiserve_fine_tuning_store,
# src/ngx_http_aiserve_deploy.c).  The setup really trains three tiny
# models with tools/aiserve-train (head, lora and full, on
# models/tiny-bert-seq-cls and t/data/train/sentiment-train.jsonl); the
# suite publishes them with tools/aiserve-models while nginx runs and calls
# them within a second, with no reload, through the location of their base:
# their scores are those tools/aiserve-embed computes from the same
# directories.  A model is visible and usable only by keys of its account
# (and admin keys): another account's call, a location of another base, a
# location without aiserve_meter are 404 model_not_found.  GET /v1/models
# lists the caller's models; DELETE /v1/models/{id} removes one for its
# owner in every worker; a restart (or a reload, TEST_NGINX_USE_HUP=1)
# loads the registry again.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http aiserve_http_concurrent);
use AiserveMeter qw(meter_db meter_dir meter_cli meter_json);
use File::Path ();
use JSON::PP ();
use Time::HiRes ();

master_on();
workers(2);
repeat_each(1);
no_shuffle();

my $root = $ENV{TEST_NGINX_AISERVE_ROOT};
# the tools of the build under test (make test-clang: build-clang/tools):
# the models a job trains and the ones aiserve-train trains are compared
# bit for bit
my $tools = $ENV{TEST_NGINX_AISERVE_TOOLS} // "$root/tools";
my $db = meter_db('075');
my $store = meter_dir() . '/ft-075';
my $work = meter_dir() . '/train-075';
my $base_dir = "$root/models/tiny-bert-seq-cls";
File::Path::remove_tree($store, $work);
File::Path::make_path($work);

# two accounts and an admin
my (%key, %acct);
for my $who ('alice', 'bob', 'ops') {
    my ($rc, $out) = meter_cli($db, 'create', '--name', $who,
                               $who eq 'ops' ? ('--admin') : ());
    die "aiserve-keys create: $out" if $rc;
    ($acct{$who}) = $out =~ /^account_id: (\S+)/m;
    ($key{$who}) = $out =~ /^api_key: (\S+)/m;
}

# the three models, trained for real
my %dir;
for my $mode ('head', 'lora', 'full') {
    $dir{$mode} = "$work/$mode";
    my @cmd = ("$tools/aiserve-train", '--model', $base_dir,
               '--task', 'classify',
               '--train', "$root/t/data/train/sentiment-train.jsonl",
               '--mode', $mode, '--epochs', 2, '--seed', 7,
               '--out', $dir{$mode}, '--json');
    system(join(' ', map { quotemeta } @cmd) . ' >/dev/null 2>&1') == 0
        or die "aiserve-train --mode $mode failed";
}

# a head over a sentence-transformers base (an embedding model)
$dir{st} = "$work/st";
system(join(' ', map { quotemeta } "$tools/aiserve-train", '--model',
            "$root/models/tiny-st-cls", '--task', 'classify', '--train',
            "$root/t/data/train/sentiment-train.jsonl", '--mode', 'head',
            '--epochs', 2, '--seed', 7, '--out', $dir{st}, '--json')
       . ' >/dev/null 2>&1') == 0
    or die "aiserve-train of the tiny-st-cls head failed";

my @texts = ('it was love of this album', 'the film was off');

# the scores tools/aiserve-embed computes from a model directory
sub reference {
    my ($dir, $tokenizer) = @_;
    my %ref;
    for my $text (@texts) {
        my $cmd = join ' ', map { quotemeta }
            "$tools/aiserve-embed", '--tokenizer',
            $tokenizer // $base_dir, $dir;
        my $out = `echo \Q$text\E | $cmd`;
        die "aiserve-embed $dir failed" if $?;
        my $j = JSON::PP::decode_json($out);
        my ($best) = sort { $b <=> $a } @{ $j->{scores} };
        $ref{$text} = { label => $j->{label}, score => $best };
    }
    return \%ref;
}

my %ref = map { $_ => reference($dir{$_}) } 'head', 'lora', 'full';
$ref{st} = reference($dir{st}, "$root/models/tiny-st-cls");
$ref{base} = reference($base_dir);

my %id;     # mode -> published id

sub models_cli {
    my (@args) = @_;
    my $cmd = join ' ', map { quotemeta } "$tools/aiserve-models",
                                           '--store', $store, @args;
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

sub publish {
    my ($mode, $who, $base) = @_;
    my ($rc, $out) = models_cli('publish', '--base', $base // 'tiny',
                                '--account', $acct{$who}, '--suffix', $mode,
                                $dir{$mode});
    die "aiserve-models publish: $out" if $rc;
    chomp $out;
    return $out;
}

sub api {
    my ($method, $path, $who, $body) = @_;
    my @h = (defined $who ? ('Authorization' => "Bearer $key{$who}") : ());
    push @h, 'Content-Type' => 'application/json' if defined $body;
    my $r = aiserve_http(server_port(), {
        method => $method, uri => $path, headers => \@h,
        defined $body ? (body => JSON::PP::encode_json($body)) : (),
    });
    $r->{json} = meter_json($r->{body})
        if ($r->{headers}{'content-type'} // '') =~ m{json};
    return $r;
}

sub predict {
    my ($who, $model, $text, $uri) = @_;
    return api('POST', $uri // '/predict', $who,
               { inputs => $text, defined $model ? (model => $model) : () });
}

sub error_of {
    my ($r) = @_;
    return "$r->{status} " . ($r->{json}{error}{code} // '-');
}

# every request (on its own connection: both workers answer) scores as
# the reference of $mode
sub served_as {
    my ($who, $model, $mode, $what, $n, $uri) = @_;
    my $ok = 1;
    for my $i (1 .. ($n // 6)) {
        my $text = $texts[$i % 2];
        my $r = predict($who, $model, $text, $uri);
        my $got = $r->{json};
        unless ($r->{status} == 200 && ref $got eq 'ARRAY'
                && $got->[0]{label} eq $ref{$mode}{$text}{label}
                && abs($got->[0]{score} - $ref{$mode}{$text}{score}) < 1e-5)
        {
            Test::More::diag("$what: $r->{status} $r->{body}");
            $ok = 0;
        }
    }
    ok($ok, $what);
}

sub ids_of {
    my ($r) = @_;
    return [ map { $_->{id} } @{ $r->{json}{data} // [] } ];
}

my %checks = (
    references => sub {
        for my $mode ('head', 'lora', 'full') {
            ok(abs($ref{$mode}{$texts[0]}{score}
                   - $ref{base}{$texts[0]}{score}) > 1e-4,
               "the trained $mode model scores unlike its base");
        }
    },

    publish => sub {
        my $name = 'ft:tiny:' . $acct{alice} . ':head:'
                 . 'ABCDEFGHIJKLMNOPQRSTUVWX';
        is(error_of(predict('alice', $name, $texts[0])),
           '404 model_not_found', 'an unknown fine-tuned model: 404');

        my $t0 = Time::HiRes::time();
        $id{head} = publish('head', 'alice');
        like($id{head}, qr/^ft:tiny:\Q$acct{alice}\E:head:[0-9A-Za-z]{24}$/,
             'aiserve-models publish: the id');
        my $left = 1.0 - (Time::HiRes::time() - $t0);
        Time::HiRes::sleep($left) if $left > 0;
        served_as('alice', $id{head}, 'head',
                  'a second after publishing, every worker serves it', 8);
        served_as('alice', undef, 'base', 'the base is served as before');
        served_as('alice', 'tiny', 'base', '... also by its name');
    },

    acl => sub {
        my $missing = predict('bob', 'ft:tiny:acct_9::none', $texts[0]);
        my $r = predict('bob', $id{head}, $texts[0]);
        is(error_of($r), '404 model_not_found',
           "another account's model: 404");
        (my $body = $r->{body}) =~ s/\Q$id{head}\E/ID/;
        (my $other = $missing->{body}) =~ s/ft:tiny:acct_9::none/ID/;
        is($body, $other, '... exactly like a missing model');
        served_as('ops', $id{head}, 'head', 'an admin key uses any model');
        is(predict(undef, $id{head}, $texts[0])->{status}, 401,
           'no key: 401');
    },

    list => sub {
        my $r = api('GET', '/v1/models', 'alice');
        is_deeply(ids_of($r), [ 'tiny', 'ner', 'st', $id{head} ],
                  "alice's list: the bases and her model");
        my ($m) = grep { $_->{id} eq $id{head} } @{ $r->{json}{data} };
        is($m->{object}, 'model', '... a model object');
        is($m->{owned_by}, $acct{alice}, '... owned_by her account');
        ok(abs($m->{created} - time) < 60, '... created');
        is_deeply(ids_of(api('GET', '/v1/models', 'bob')), [ 'tiny', 'ner', 'st' ],
                  "bob's list: the bases only");
        is(api('GET', "/v1/models/$id{head}", 'alice')->{json}{owned_by},
           $acct{alice}, 'retrieve: her model');
        is(error_of(api('GET', "/v1/models/$id{head}", 'bob')),
           '404 model_not_found', "retrieve: bob gets a 404");
    },

    more => sub {
        my $t0 = Time::HiRes::time();
        $id{lora} = publish('lora', 'alice');
        $id{full} = publish('full', 'bob');
        my $left = 1.0 - (Time::HiRes::time() - $t0);
        Time::HiRes::sleep($left) if $left > 0;
        served_as('alice', $id{lora}, 'lora', 'a LoRA model, in a second');
        served_as('bob', $id{full}, 'full', 'a full model, in a second');
        is(error_of(predict('alice', $id{full}, $texts[0])),
           '404 model_not_found', "alice cannot use bob's model");
        is_deeply(ids_of(api('GET', '/v1/models', 'ops')),
                  [ 'tiny', 'ner', 'st', @id{'head', 'lora', 'full'} ],
                  'an admin lists every model');
        my ($rc, $out) = models_cli('list', '--json');
        my @listed = map { JSON::PP::decode_json($_) } split /\n/, $out;
        is_deeply([ sort map { "$_->{id} $_->{mode} $_->{account}" } @listed ],
                  [ sort "$id{head} head $acct{alice}",
                         "$id{lora} lora $acct{alice}",
                         "$id{full} full $acct{bob}" ],
                  'aiserve-models list: the three, their modes and owners');
    },

    mixed => sub {
        # requests for the base and its three fine-tuned models at once:
        # each gets its own model's scores
        my (@reqs, @want);
        for my $i (0 .. 23) {
            my $mode = ('base', 'head', 'lora', 'full')[$i % 4];
            my $who = $mode eq 'full' ? 'bob' : 'alice';
            my $text = $texts[$i % 2];
            push @reqs, { method => 'POST', uri => '/predict',
                          headers => [ Authorization => "Bearer $key{$who}",
                                       'Content-Type' => 'application/json' ],
                          body => JSON::PP::encode_json({ inputs => $text,
                              $mode eq 'base' ? () : (model => $id{$mode}) }) };
            push @want, $ref{$mode}{$text};
        }
        my @res = aiserve_http_concurrent(server_port(), \@reqs, 24);
        my $ok = 1;
        for my $i (0 .. $#res) {
            my $got = meter_json($res[$i]{body});
            $ok = 0 unless ($res[$i]{status} // 0) == 200
                && abs($got->[0]{score} - $want[$i]{score}) < 1e-5;
        }
        ok($ok, '24 concurrent requests over the base and 3 fine-tuned '
                . 'models: each scored by its own model (the base and its '
                . 'head in shared batches: the error_log check)');
    },

    tei => sub {
        my $t0 = Time::HiRes::time();
        $id{st} = publish('st', 'alice', 'st');
        my $left = 1.0 - (Time::HiRes::time() - $t0);
        Time::HiRes::sleep($left) if $left > 0;
        served_as('alice', $id{st}, 'st', 'api=tei of an embedding base: '
                  . 'a classifier over it answers as /predict', 4, '/tei');
        my $all = api('POST', '/tei', 'alice',
                      { inputs => $texts[0], model => $id{st},
                        top_k => undef });
        my $top = api('POST', '/tei', 'alice',
                      { inputs => $texts[0], model => $id{st}, top_k => 1 });
        ok($all->{status} == 200 && $top->{status} == 200
           && @{ $top->{json} } == 1 && @{ $all->{json} } > 1
           && $top->{json}[0]{label} eq $all->{json}[0]{label},
           "... with the fields of /predict: top_k ($top->{status})");
        my $hf = api('POST', '/tei', 'alice',
                     { inputs => $texts[0], model => $id{st},
                       parameters => { top_k => 1 } });
        is_deeply($hf->{json}[0], $top->{json},
                  '... in parameters too (the Inference API\'s [[...]])');
        is(error_of(api('POST', '/tei', 'alice',
                        { inputs => $texts[0], top_k => 1 })),
           '422 unknown_field', '... the base (/embed) has no top_k');
        my $r = predict('alice', undef, $texts[0], '/tei');
        ok($r->{status} == 200 && ref $r->{json}[0] eq 'ARRAY'
           && @{ $r->{json}[0] } == 32, '... the base itself as /embed');
        is(error_of(api('POST', '/v1/embeddings', 'alice',
                        { input => $texts[0], model => $id{st} })),
           '404 model_not_found',
           'api=openai (embeddings) cannot answer with a classifier: 404');
        is(api('POST', '/v1/embeddings', 'alice',
               { input => $texts[0], model => 'st' })->{status}, 200,
           '... the base can');
        models_cli('remove', $id{st});
    },

    restarted => sub {
        # no wait: the new workers loaded the registry at their start
        served_as('alice', $id{head}, 'head', 'after a restart: the head');
        served_as('alice', $id{lora}, 'lora', '... the LoRA model');
        served_as('bob', $id{full}, 'full', '... the full model');
    },

    elsewhere => sub {
        is(error_of(predict('alice', $id{head}, $texts[0], '/ner')),
           '404 model_not_found', 'a location of another base: 404');
        is(error_of(predict(undef, $id{head}, $texts[0], '/open')),
           '404 model_not_found',
           'a location without aiserve_meter: no account, 404');
        is(predict(undef, undef, $texts[0], '/open')->{status}, 200,
           '... where the base is served without a key');

        my ($rc, $out) = models_cli('publish', '--base', 'other',
                                    '--account', $acct{alice}, $dir{head});
        is($rc, 0, 'a model of a base nginx does not serve: published');
        chomp $out;
        Time::HiRes::sleep(0.6);
        is(error_of(predict('alice', $out, $texts[0])),
           '404 model_not_found', '... and not served');
        models_cli('remove', $out);
    },

    delete => sub {
        my $r = api('DELETE', "/v1/models/$id{head}", 'bob');
        is(error_of($r), '404 model_not_found',
           "bob deletes alice's model: 404");
        served_as('alice', $id{head}, 'head', '... it is still served', 2);
        $r = api('DELETE', '/v1/models/tiny', 'ops');
        is(error_of($r), '404 model_not_found',
           'a base model cannot be deleted: 404');
        like($r->{json}{error}{message}, qr/"tiny" is a base model/,
             '... and the message says why');

        my $t0 = Time::HiRes::time();
        $r = api('DELETE', "/v1/models/$id{head}", 'alice');
        is_deeply($r->{json}, { id => $id{head}, object => 'model',
                                deleted => JSON::PP::true },
                  "the owner deletes it: OpenAI's deleted object");
        is(error_of(api('DELETE', "/v1/models/$id{head}", 'alice')),
           '404 model_not_found', 'a second delete: 404');
        my ($rc, $out) = models_cli('list');
        unlike($out, qr/\Q$id{head}\E/, 'gone from the registry');
        ok(!grep({ /head/ } glob("$store/models/*")), '... and from the disk');

        $r = api('DELETE', "/v1/models/$id{full}", 'ops');
        is($r->{json}{deleted}, JSON::PP::true, 'an admin deletes any model');

        my $left = 1.0 - (Time::HiRes::time() - $t0);
        Time::HiRes::sleep($left) if $left > 0;
        my $ok = 1;
        for (1 .. 6) {
            $ok = 0 if error_of(predict('alice', $id{head}, $texts[0]))
                       ne '404 model_not_found';
            $ok = 0 if error_of(predict('bob', $id{full}, $texts[0]))
                       ne '404 model_not_found';
        }
        ok($ok, 'a second later no worker serves them');
        is_deeply(ids_of(api('GET', '/v1/models', 'ops')),
                  [ 'tiny', 'ner', 'st', $id{lora} ], 'the list: the one left');

        ($rc, $out) = models_cli('remove', $id{lora});
        is($rc, 0, 'aiserve-models remove');
        Time::HiRes::sleep(1.0);
        is(error_of(predict('alice', $id{lora}, $texts[0])),
           '404 model_not_found', '... a second later: 404');
    },
);

add_response_body_check(sub {
    my ($block) = @_;
    my $name = $block->deploy_check or return;
    $name =~ s/\s+//g;
    $checks{$_}->() for split /,/, $name;
});

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(main_config => <<"EOC")
load_module $ENV{TEST_NGINX_AISERVE_MODULE};
EOC
        unless defined $block->main_config;
    $block->set_value(http_config => <<"EOC")
    aiserve_model tiny $base_dir;
    aiserve_model ner $root/models/tiny-bert-ner;
    aiserve_model st $root/models/tiny-st-cls;
    aiserve_meter_db $db flush=100ms;
    aiserve_meter_zone meter075 1m;
    aiserve_fine_tuning_store $store;
EOC
        unless defined $block->http_config;
    $block->set_value(config => <<"EOC") unless defined $block->config;
    location /predict {
        aiserve_meter on;
        aiserve_infer tiny api=predict;
    }
    location /ner {
        aiserve_meter on;
        aiserve_infer ner;
    }
    location /tei {
        aiserve_meter on;
        aiserve_infer st api=tei;
    }
    location /v1/embeddings {
        aiserve_meter on;
        aiserve_infer st;
    }
    location /open {
        aiserve_infer tiny api=predict;
    }
    location /v1/models {
        aiserve_meter on;
        aiserve_endpoint models;
    }
    location = /t {
        return 200 "ok\\n";
    }
EOC
});

run_tests();

__DATA__

=== TEST 1: publish while nginx runs: served within a second, to its account only
--- request
GET /t
--- deploy_check: references, publish, acl, list
--- response_body
ok
--- error_log
aiserve model "ft:tiny:
loaded (head over "tiny")
--- no_error_log
[error]



=== TEST 2: LoRA and full models; requests for several models of one base at once; api=tei
--- request
GET /t
--- deploy_check: more, mixed, tei
--- response_body
ok
--- error_log
loaded (lora over "tiny")
loaded (full over "tiny")
heads of fine-tuned models: one encoder pass
--- no_error_log
[error]



=== TEST 3: a restart (or reload) loads the registry again
--- request
GET /t
--- deploy_check: restarted
--- response_body
ok
--- no_error_log
[error]



=== TEST 4: other bases, a location without a meter, a model of a base not served
--- request
GET /t
--- deploy_check: elsewhere
--- response_body
ok
--- no_error_log
[error]



=== TEST 5: DELETE /v1/models/{id}: the owner or an admin; every worker drops it
--- request
GET /t
--- deploy_check: delete
--- response_body
ok
--- error_log eval
[qr/aiserve model "ft:tiny:\S+" deleted/, qr/aiserve model "ft:tiny:\S+" removed/]
--- no_error_log
[error]



=== TEST 6: aiserve_fine_tuning_store twice
--- http_config
    aiserve_fine_tuning_store /tmp/a;
    aiserve_fine_tuning_store /tmp/b;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_fine_tuning_store" directive is duplicate/
