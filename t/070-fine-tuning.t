# aiserve_fine_tuning: fine-tuning jobs over HTTP (OpenAI's shape), really
# training the tiny models of models/ on the training fixtures uploaded
# through the Files API: create, poll until succeeded, the events (metrics
# with the training and validation loss, accuracy or F1), the checkpoints,
# the report (JSON and text), the model written; the jobs of one account
# are a 404 to another, exactly like a missing one; bad requests (400),
# files of another account (404), too many jobs (429); a file that failed
# validation (the job fails with its line and reason), a file whose kind
# does not fit the task (fails when it starts); cancel (takes effect
# within one chunk); a reload in the middle of a job (it completes, from
# the checkpoint the exiting worker saved); kill -9 of the worker running
# a job (another worker resumes it from its last checkpoint).  A job that
# succeeds has result files (purpose fine-tune-results) of its account:
# the step metrics CSV and the report, read through the Files API; a
# files store of version 1 (t/data/files-v1) is migrated at start.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http);
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
# the tools of the build under test (make test-clang: build-clang/tools):
# the models a job trains and the ones aiserve-train trains are compared
# bit for bit
my $tools = $ENV{TEST_NGINX_AISERVE_TOOLS} // "$root/tools";
my $db = meter_db('070');
$ENV{TEST_NGINX_METER_DB_070} = $db;
my $files = meter_dir() . '/files-070';
my $store = meter_dir() . '/ft-070';
my $logs = meter_log_dir();
File::Path::remove_tree($files, $store);

# a files store of version 1, migrated when nginx starts on it (TEST 17)
my $files_v1 = meter_dir() . '/files-v1-070';
File::Path::remove_tree($files_v1);
system('cp', '-r', "$root/t/data/files-v1", $files_v1) == 0
    or die "cp $root/t/data/files-v1: $?";
$ENV{TEST_NGINX_FILES_V1_070} = $files_v1;

my (%key, %id);
my %file;       # name -> file object
my %job;        # name -> job object
($id{alice}, $key{alice}) = meter_create_key($db, '--name', 'alice');
($id{bob}, $key{bob}) = meter_create_key($db, '--name', 'bob');
($id{carol}, $key{carol}) = meter_create_key($db, '--name', 'carol');
($id{ops}, $key{ops}) = meter_create_key($db, '--name', 'ops', '--admin');
($id{dave}, $key{dave}) = meter_create_key($db, '--name', 'dave',
                                           '--budget', 500, '--period',
                                           'month');

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(main_config => <<"EOC")
load_module $ENV{TEST_NGINX_AISERVE_MODULE};
EOC
        unless defined $block->main_config;
    $block->set_value(http_config => <<"EOC")
    access_log $logs/access.log;
    aiserve_model cls $root/models/tiny-bert-seq-cls task=classify;
    aiserve_model ner $root/models/tiny-bert-ner task=ner;
    aiserve_meter_db $db flush=100ms;
    aiserve_meter_zone meter070 1m;
    aiserve_price cls 0 training=2000000;
    aiserve_files_store $files tokenizer=$root/models/all-MiniLM-L6-v2;
    aiserve_fine_tuning_store $store jobs=2 jobs_per_account=3
                              chunk_steps=2 checkpoint_every=6;
EOC
        unless defined $block->http_config;
    $block->set_value(config => <<"EOC") unless defined $block->config;
    location /v1/files {
        aiserve_meter on;
        aiserve_files;
    }
    location /v1/fine_tuning/jobs {
        aiserve_meter on;
        aiserve_fine_tuning;
    }
    location /predict {
        aiserve_meter on;
        aiserve_infer cls api=predict;
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

sub api {
    my ($method, $path, $who, $body) = @_;
    my @h = (defined $who ? ('Authorization' => "Bearer $key{$who}") : ());
    if (defined $body) {
        push @h, 'Content-Type' => 'application/json';
        $body = JSON::PP::encode_json($body) if ref $body;
    }
    my $r = aiserve_http(server_port(), {
        method => $method, uri => $path, headers => \@h,
        defined $body ? (body => $body) : (),
    });
    $r->{json} = meter_json($r->{body})
        if ($r->{headers}{'content-type'} // '') =~ m{json};
    return $r;
}

sub upload {
    my ($who, $name, $content, $purpose) = @_;
    my $b = 'f0e1d2c3b4a5968778695a4b3c2d1e0f';
    $purpose //= 'fine-tune';
    my $body = "--$b\r\nContent-Disposition: form-data; name=\"purpose\""
             . "\r\n\r\n$purpose\r\n--$b\r\nContent-Disposition: form-data;"
             . " name=\"file\"; filename=\"$name\"\r\nContent-Type: "
             . "application/octet-stream\r\n\r\n$content\r\n--$b--\r\n";
    my $r = aiserve_http(server_port(), {
        method => 'POST', uri => '/v1/files',
        headers => [ Authorization => "Bearer $key{$who}",
                     'Content-Type' => "multipart/form-data; boundary=$b" ],
        body => $body });
    return meter_json($r->{body});
}

sub error_of {
    my ($r) = @_;
    return "$r->{status} " . ($r->{json}{error}{code} // '-');
}

# polls a job until cond($job) holds (or 60 s); the last record
sub wait_job {
    my ($who, $id, $cond) = @_;
    my $job;
    for (1 .. 600) {
        $job = api('GET', "/v1/fine_tuning/jobs/$id", $who)->{json};
        return $job if $cond->($job);
        Time::HiRes::sleep(0.1);
    }
    Test::More::diag("job $id: " . JSON::PP->new->canonical->encode($job));
    return $job;
}

sub final {
    my ($job) = @_;
    return ($job->{status} // '') =~ /^(succeeded|failed|cancelled)$/;
}

# every event (or checkpoint) of a job, newest first, through after/limit
# pages of 7
sub all_events {
    my ($who, $id, $route) = @_;
    my (@ev, $after);
    $route //= 'events';
    for (1 .. 1000) {
        my $q = "limit=7" . ($after ? "&after=$after" : '');
        my $r = api('GET', "/v1/fine_tuning/jobs/$id/$route?$q", $who);
        push @ev, @{ $r->{json}{data} };
        last unless $r->{json}{has_more};
        $after = $r->{json}{last_id};
    }
    return @ev;
}

# the step metrics events (not the validation ones), oldest first
sub metrics {
    return grep { $_->{type} eq 'metrics' && !defined $_->{data}{epoch} }
           reverse @_;
}

sub total_steps {
    my ($m) = metrics(@_);
    return $m->{data}{total_steps};
}

# model.safetensors of tools/aiserve-train run with the options a job of
# the base model cls takes from its hyperparameters (seed 42, one thread):
# batch_size sequences of the training file's mean tokens a batch
sub reference_model {
    my ($train, $valid, $epochs, $batch_size) = @_;
    my $f = $file{$train};
    my $out = meter_dir() . "/ref-070-$epochs-$batch_size";
    File::Path::remove_tree($out);
    my @cmd = ("$tools/aiserve-train", '--json',
               '--model', "$root/models/tiny-bert-seq-cls",
               '--task', 'classify',
               '--train', "$root/t/data/train/$train",
               $valid ? ('--validation', "$root/t/data/train/$valid") : (),
               '--epochs', $epochs, '--seed', 42, '--threads', 1,
               '--batch-tokens',
               int($batch_size * $f->{tokens} / $f->{examples} + 0.5),
               '--out', $out);
    system(join(' ', map { quotemeta } @cmd) . ' >/dev/null 2>&1') == 0
        or die "aiserve-train failed: @cmd";
    return slurp("$out/model.safetensors");
}

# the result files of a succeeded job: (file objects, contents) by file
# name
sub result_files {
    my ($who, $j) = @_;
    my (%obj, %content);
    for my $id (@{ $j->{result_files} }) {
        my $o = api('GET', "/v1/files/$id", $who)->{json};
        $obj{$o->{filename}} = $o;
        $content{$o->{filename}} =
            api('GET', "/v1/files/$id/content", $who)->{body};
    }
    return (\%obj, \%content);
}

# the rows of the step metrics CSV: [ { column => value } ] and its header
sub csv_rows {
    my ($text) = @_;
    my ($head, @lines) = split /\n/, $text // '';
    my @cols = split /,/, $head // '';
    my @rows;
    for my $l (@lines) {
        my @v = split /,/, $l, -1;
        push @rows, { map { $cols[$_] => $v[$_] } 0 .. $#cols };
    }
    return ($head, @rows);
}

sub master_pid {
    open my $in, '<', server_root() . '/logs/nginx.pid' or die $!;
    chomp(my $pid = <$in>);
    return $pid;
}


my $long = { model => 'cls', hyperparameters => { n_epochs => 40,
                                                   batch_size => 1 } };

my %checks = (
    upload => sub {
        for my $n ('sentiment-train.jsonl', 'sentiment-valid.jsonl',
                   'ner.jsonl') {
            $file{$n} = upload('alice', $n, slurp("$root/t/data/train/$n"));
            is($file{$n}{status}, 'processed', "$n uploaded");
        }
        $file{bad} = upload('alice', 'bad.jsonl',
            qq({"text": "fine", "label": "a"}\n{"text": "", "label": "b"}\n));
        is($file{bad}{status}, 'error', 'bad.jsonl: status error');
        $file{vunk} = upload('alice', 'vunk.jsonl',
            qq({"text": "fine", "label": "positive"}\n)
            . qq({"text": "so so", "label": "neutral"}\n));
        is($file{vunk}{status}, 'processed', 'vunk.jsonl uploaded');
    },

    train => sub {
        my $t0 = time;
        my $r = api('POST', '/v1/fine_tuning/jobs', 'alice', {
            model => 'cls', suffix => 'senti',
            training_file => $file{'sentiment-train.jsonl'}{id},
            validation_file => $file{'sentiment-valid.jsonl'}{id},
            method => { type => 'supervised', supervised => {
                hyperparameters => { n_epochs => 3, batch_size => 4 } } },
            metadata => { project => 'reviews', 'k' x 64 => 'v' x 512 },
        });
        my $j = $r->{json};
        is($r->{status}, 200, 'create: 200');
        like($j->{id}, qr/^ftjob-[0-9A-Za-z]{24}$/, 'create: an id');
        is($j->{object}, 'fine_tuning.job', 'create: object');
        is($j->{status}, 'queued', 'create: queued');
        is($j->{model}, 'cls', 'create: model');
        like($j->{organization_id}, qr/^acct_\d+$/, 'create: the account');
        is_deeply($j->{hyperparameters},
                  { n_epochs => 3, batch_size => 4,
                    learning_rate_multiplier => 'auto' },
                  'create: hyperparameters as given, "auto" for the rest');
        is($j->{task}, 'classify', 'create: task by the base model');
        is($j->{mode}, 'full', 'create: mode full');
        is($j->{seed}, 42, 'create: seed 42 by default');
        ok(abs($j->{created_at} - $t0) <= 5, 'create: created_at');
        is($j->{fine_tuned_model}, undef, 'create: no model yet');
        is_deeply($j->{metadata},
                  { project => 'reviews', 'k' x 64 => 'v' x 512 },
                  'create: metadata as given');
        $job{senti} = $j;

        $j = wait_job('alice', $j->{id}, \&final);
        is($j->{status}, 'succeeded', 'the job succeeds');
        (my $short = $j->{id}) =~ s/^ftjob-//;
        is($j->{fine_tuned_model}, "ft:cls:$j->{organization_id}:senti:$short",
           'fine_tuned_model: ft:<base>:<account>:<suffix>:<job>');
        ok($j->{finished_at} >= $j->{created_at}, 'finished_at');
        is($j->{hyperparameters}{n_epochs}, 3, 'n_epochs resolved');
        is($j->{hyperparameters}{learning_rate_multiplier}, 1,
           '"auto" learning_rate_multiplier resolved to 1');
        is($j->{method}{supervised}{hyperparameters}{n_epochs}, 3,
           '... in method too');
        ok($j->{trained_tokens} > 0 && $j->{trained_tokens} % 3 == 0,
           "trained_tokens: the file's tokens x 3 epochs "
           . "($j->{trained_tokens})");
        is($j->{estimated_finish}, undef, 'no estimated_finish when done');
        ok(-f "$store/jobs/$j->{id}/model/config.json"
           && -f "$store/jobs/$j->{id}/model/model.safetensors",
           'the model is written in DIR/jobs/ID/model');
        ok(slurp("$store/jobs/$j->{id}/model/model.safetensors")
           eq reference_model('sentiment-train.jsonl',
                              'sentiment-valid.jsonl', 3, 4),
           '... bit for bit the model aiserve-train trains with the same '
           . 'options');
        $job{senti} = $j;

        my $text = 'the film was a delight';
        my ($p, $base);
        for (1 .. 40) {
            $p = api('POST', '/predict', 'alice',
                     { inputs => $text, model => $j->{fine_tuned_model} });
            last if $p->{status} == 200;
            Time::HiRes::sleep(0.1);
        }
        is($p->{status}, 200, 'the fine-tuned model answers within seconds, '
           . 'no reload');
        $base = api('POST', '/predict', 'alice', { inputs => $text });
        is_deeply([ sort map { $_->{label} } @{ $p->{json} } ],
                  [ sort map { $_->{label} } @{ $base->{json} } ],
                  '... with the labels of its training file');
        isnt(JSON::PP->new->canonical->encode($p->{json}),
             JSON::PP->new->canonical->encode($base->{json}),
             '... and scores of its own, not the base\'s');
        is(error_of(api('POST', '/predict', 'bob',
                        { inputs => $text, model => $j->{fine_tuned_model} })),
           '404 model_not_found', '... for its account only');
        my @manifests = glob "$store/models/*/manifest.json";
        is(scalar @manifests, 1, 'published in the registry DIR/models');

        my @ev = all_events('alice', $j->{id});
        is($ev[0]{message}, 'The job has successfully completed',
           'events: the newest is the completion');
        is($ev[-1]{message}, 'Created fine-tuning job',
           'events: the oldest is the creation');
        my ($total) = $ev[-2]{message}
            =~ /^Fine-tuning job started \(worker \d+\): (\d+) steps$/;
        ok($total, "events: started, $total steps");
        my @steps = map { $_->{data}{step} } metrics(@ev);
        is($steps[-1], $total, 'metrics events up to the last step');
        ok(!grep({ $steps[$_] - $steps[$_ - 1] < 1
                   || $steps[$_] - $steps[$_ - 1] > 2 } 1 .. $#steps),
           'a metrics event per chunk of at most 2 steps');
        my @m = metrics(@ev);
        ok(!grep({ !($_->{data}{train_loss} > 0) } @m),
           '... its training loss');
        is($m[-1]{data}{trained_tokens}, $j->{trained_tokens},
           '... its trained_tokens, the last the job\'s');
        my @evals = grep { defined $_->{data}{epoch} } @ev;
        is_deeply([ map { $_->{data}{epoch} } reverse @evals ], [1, 2, 3],
                  'a validation metrics event per epoch');
        ok(!grep({ !($_->{data}{valid_loss} > 0
                      && defined $_->{data}{accuracy}) } @evals),
           '... with the validation loss and accuracy');
        my %seen;
        ok(!grep({ $seen{$_->{id}}++ || $_->{id} !~ /^ftevent-[0-9A-Za-z]{24}$/ } @ev),
           'event ids: ftevent-, unique across the pages');
        ok(!grep({ $_->{object} ne 'fine_tuning.job.event' } @ev),
           'event objects');

        my $r2 = api('GET', "/v1/fine_tuning/jobs/$j->{id}/events?limit=2",
                     'alice');
        is(scalar @{ $r2->{json}{data} }, 2, 'events limit=2');
        is($r2->{json}{has_more}, JSON::PP::true, '... has_more');

        my $c = api('GET', "/v1/fine_tuning/jobs/$j->{id}/checkpoints",
                    'alice')->{json};
        my @ck = map { $_->{step_number} } @{ $c->{data} };
        my %is_step = map { $_ => 1 } @steps;
        ok(@ck >= 5 && !grep({ $ck[$_ - 1] - $ck[$_] < 6 } 1 .. $#ck)
           && !grep({ !$is_step{$_} } @ck) && $ck[-1] >= 6,
           "checkpoints every 6 steps or more, newest first, at chunk "
           . "ends (@ck)");
        like($c->{data}[0]{id}, qr/^ftckpt-[0-9A-Za-z]{24}$/,
             'checkpoint id');
        is($c->{data}[0]{fine_tuning_job_id}, $j->{id}, '... its job');
        is($c->{data}[0]{fine_tuned_model_checkpoint},
           "$j->{fine_tuned_model}:ckpt-step-$ck[0]", '... its model name');
        ok($c->{data}[0]{metrics}{train_loss} > 0, '... its metrics');
        ok(!exists $c->{data}[0]{_dir}, '... no private field');
        is(error_of(api('POST', '/predict', 'alice',
                        { inputs => 'fine',
                          model => $c->{data}[0]{fine_tuned_model_checkpoint}
                        })),
           '404 model_not_found', '... a name that is not served');
        ok(-f "$store/jobs/$j->{id}/ckpt-$ck[0]/trainer.json"
           && !-e "$store/jobs/$j->{id}/ckpt-$ck[1]",
           'the last checkpoint kept on disk, the older ones removed');

        my $rep = api('GET', "/v1/fine_tuning/jobs/$j->{id}/report", 'alice');
        is($rep->{status}, 200, 'report: 200');
        is($rep->{json}{epoch}, 3, 'report: the last epoch');
        is($rep->{json}{examples}, 12, 'report: the validation examples');
        is($rep->{json}{accuracy}, $evals[0]{data}{accuracy},
           'report: the accuracy of the last metrics event');
        ok(exists $rep->{json}{report}{positive}
           && exists $rep->{json}{confusion_matrix},
           'report: per class, confusion matrix');
        $rep = api('GET', "/v1/fine_tuning/jobs/$j->{id}/report?format=text",
                   'alice');
        like($rep->{headers}{'content-type'}, qr{^text/plain},
             'report text: text/plain');
        like($rep->{body}, qr/precision\s+recall\s+f1-score\s+support/,
             'report text: sklearn\'s table');
        is(error_of(api('GET', "/v1/fine_tuning/jobs/$j->{id}/report?"
                               . "format=xml", 'alice')),
           '400 invalid_value', 'report format=xml: 400');

        # the result files: the step metrics and the report
        is(scalar @{ $j->{result_files} }, 2, 'result_files: two files');
        my ($obj, $content) = result_files('alice', $j);
        my $csv = $obj->{'step_metrics.csv'};
        is($csv->{purpose}, 'fine-tune-results',
           'step_metrics.csv: purpose fine-tune-results');
        is($csv->{status}, 'processed', '... processed');
        ok(!exists $csv->{examples} && !exists $csv->{tokens},
           '... without the fields of training data');
        is($csv->{bytes}, length $content->{'step_metrics.csv'},
           '... its bytes');
        my ($head, @rows) = csv_rows($content->{'step_metrics.csv'});
        is($head, 'step,train_loss,learning_rate,trained_tokens,epoch,'
                  . 'valid_loss,valid_accuracy,valid_f1', '... its header');
        is_deeply([ map { $_->{step} } @rows ], [ @steps ],
                  '... a row per step of the metrics events, in order');
        my %ev_at = map { $_->{data}{step} => $_->{data} } @m;
        ok(!grep({ $_->{train_loss} ne sprintf('%.6g',
                                               $ev_at{$_->{step}}{train_loss})
                   || $_->{trained_tokens}
                      ne $ev_at{$_->{step}}{trained_tokens} } @rows),
           '... the training loss and trained tokens of each');
        my @erows = grep { $_->{epoch} ne '' } @rows;
        is_deeply([ map { [ @$_{qw(step epoch valid_loss valid_accuracy)} ] }
                    @erows ],
                  [ map { [ $_->{data}{step}, $_->{data}{epoch},
                            sprintf('%.6g', $_->{data}{valid_loss}),
                            sprintf('%.6g', $_->{data}{accuracy}) ] }
                    reverse @evals ],
                  '... the evaluations in the rows of their steps');
        is($obj->{'report.json'}{purpose}, 'fine-tune-results',
           'report.json: purpose fine-tune-results');
        is($content->{'report.json'},
           api('GET', "/v1/fine_tuning/jobs/$j->{id}/report", 'alice')
           ->{body}, '... the bytes of the report route');

        my $rid = $csv->{id};
        is(api('GET', "/v1/files/$rid", 'bob')->{status}, 404,
           'a result file: 404 for another account');
        is(api('GET', "/v1/files/$rid/content", 'bob')->{status}, 404,
           '... its content too');
        is(api('GET', "/v1/files/$rid", 'ops')->{status}, 200,
           '... an admin key reads it');
        my $l = api('GET', '/v1/files?purpose=fine-tune-results', 'alice');
        is_deeply([ sort map { $_->{id} } @{ $l->{json}{data} } ],
                  [ sort @{ $j->{result_files} } ],
                  'listed by purpose fine-tune-results');

        my $all = api('GET', '/v1/files?limit=100', 'alice')->{json}{data};
        my $bytes = 0;
        $bytes += $_->{bytes} for @$all;
        my (undef, $out) = meter_cli($db, 'export', '--key', $id{alice},
                                     '--format', 'jsonl');
        my ($stored) = map { $_->{storage_bytes} }
                       grep { ($_->{api} // '') eq 'storage' }
                       map { meter_json($_) } split /\n/, $out;
        is($stored, $bytes, "the ledger's storage of alice: her files with "
           . "the result files ($bytes bytes)");

        my $bad = api('POST', '/v1/fine_tuning/jobs', 'alice',
                      { model => 'cls', training_file => $rid });
        is(error_of($bad), '400 invalid_value',
           'a result file as a training file: 400');
        is($bad->{json}{error}{param}, 'training_file', '... its param');
        my $up = upload('alice', 'x.csv', "step\n1\n", 'fine-tune-results');
        is($up->{error}{code}, 'invalid_value',
           'an upload cannot claim purpose fine-tune-results');
    },

    ner => sub {
        my $r = api('POST', '/v1/fine_tuning/jobs', 'alice', {
            model => 'ner', training_file => $file{'ner.jsonl'}{id},
            validation_file => $file{'ner.jsonl'}{id},
            hyperparameters => { n_epochs => 2, batch_size => 1,
                                 learning_rate_multiplier => 2 } });
        is($r->{json}{task}, 'ner', 'ner: the task of the base model');
        my $j = wait_job('alice', $r->{json}{id}, \&final);
        is($j->{status}, 'succeeded', 'ner: succeeds');
        is($j->{hyperparameters}{learning_rate_multiplier}, 2,
           'ner: learning_rate_multiplier kept');
        my $rep = api('GET', "/v1/fine_tuning/jobs/$j->{id}/report",
                      'alice')->{json};
        ok(defined $rep->{f1}, 'ner report: seqeval\'s f1');
        my @evals = grep { defined $_->{data}{epoch} }
                    all_events('alice', $j->{id});
        ok(defined $evals[0]{data}{f1}, 'ner metrics event: f1');

        $r = api('POST', '/v1/fine_tuning/jobs', 'alice', {
            model => 'cls', training_file => $file{'ner.jsonl'}{id} });
        is($r->{json}{status}, 'queued', 'tags for a classifier: queued');
        $j = wait_job('alice', $r->{json}{id}, \&final);
        is($j->{status}, 'failed', '... then failed when it starts');
        is($j->{error}{code}, 'invalid_training_file', '... its code');
        is($j->{error}{message},
           'ner.jsonl: the file has tags or spans: its task is "ner"',
           '... and why');
    },

    valid_labels => sub {
        my @cases = (
            [ 'vunk', 'vunk.jsonl:2: field "label": unknown label "neutral" '
                      . '(not in the training labels)',
              'a validation label the training file lacks' ],
            [ 'ner.jsonl', 'ner.jsonl: its labels are of another kind than '
                           . 'those of sentiment-train.jsonl',
              'validation tags for class labels' ],
        );
        for my $c (@cases) {
            my $r = api('POST', '/v1/fine_tuning/jobs', 'alice', {
                model => 'cls',
                training_file => $file{'sentiment-train.jsonl'}{id},
                validation_file => $file{$c->[0]}{id} });
            my $j = wait_job('alice', $r->{json}{id}, \&final);
            is($j->{status}, 'failed', "$c->[2]: failed when it starts");
            is_deeply($j->{error},
                      { code => 'invalid_validation_file',
                        message => $c->[1], param => 'validation_file' },
                      "$c->[2]: the validation file's error");
        }
    },

    modes => sub {
        for my $mode ('head', 'lora') {
            my $r = api('POST', '/v1/fine_tuning/jobs', 'alice', {
                model => 'cls', mode => $mode,
                training_file => $file{'sentiment-train.jsonl'}{id},
                validation_file => $file{'sentiment-valid.jsonl'}{id},
                hyperparameters => { n_epochs => 2 } });
            is($r->{json}{mode}, $mode, "$mode: created");
            my $j = wait_job('alice', $r->{json}{id}, \&final);
            is($j->{status}, 'succeeded', "$mode: succeeds");
            my @files = glob "$store/jobs/$j->{id}/model/*";
            ok(@files > 0, "$mode: its model written (@files)");
            my @ev = all_events('alice', $j->{id});
            is(scalar(grep { $_->{message} =~
                             /^The frozen encoder's features of \d+ examples computed$/ }
                      @ev), $mode eq 'head' ? 1 : 0,
               "$mode: the event of the features "
               . ($mode eq 'head' ? 'cached' : '(none)'));
        }
    },

    list_acl => sub {
        my $r = api('GET', '/v1/fine_tuning/jobs', 'alice');
        my @ids = map { $_->{id} } @{ $r->{json}{data} };
        is(scalar @ids, 7, 'list: alice\'s seven jobs');
        is($ids[-1], $job{senti}{id}, 'list: newest first');
        is($r->{json}{object}, 'list', 'list: object');
        $r = api('GET', '/v1/fine_tuning/jobs?limit=2', 'alice');
        is($r->{json}{has_more}, JSON::PP::true, 'limit=2: has_more');
        $r = api('GET', "/v1/fine_tuning/jobs?limit=2&after=$r->{json}{last_id}",
                 'alice');
        is_deeply([ map { $_->{id} } @{ $r->{json}{data} } ], [ @ids[2, 3] ],
                  'after: the next two');
        ok(!exists $r->{json}{data}[0]{_account}, 'no private fields');

        # OpenAI's metadata filter, as openai-python sends it (brackets
        # escaped) and as typed
        $r = api('GET', '/v1/fine_tuning/jobs?metadata%5Bproject%5D=reviews',
                 'alice');
        is_deeply([ map { $_->{id} } @{ $r->{json}{data} } ],
                  [ $job{senti}{id} ], 'metadata[project]=reviews: the job '
                  . 'with it');
        $r = api('GET', '/v1/fine_tuning/jobs?metadata[project]=other',
                 'alice');
        is_deeply($r->{json}{data}, [], 'metadata[project]=other: none');
        $r = api('GET', '/v1/fine_tuning/jobs?metadata=null&limit=5',
                 'alice');
        is_deeply([ map { $_->{id} } @{ $r->{json}{data} } ],
                  [ @ids[0 .. 4] ], 'metadata=null: the jobs without it');
        is($r->{json}{has_more}, JSON::PP::true, '... has_more');
        $r = api('GET', "/v1/fine_tuning/jobs?metadata=null&after=$ids[4]",
                 'alice');
        is_deeply([ map { $_->{id} } @{ $r->{json}{data} } ], [ $ids[5] ],
                  '... and after them, the last one');
        is($r->{json}{has_more}, JSON::PP::false, '... no more');

        my $id = $job{senti}{id};
        my $missing = api('GET',
            '/v1/fine_tuning/jobs/ftjob-000000000000000000000000', 'alice');
        is(error_of($missing), '404 not_found', 'a missing job: 404');
        for my $route ('', '/events', '/checkpoints', '/report') {
            my $b = api('GET', "/v1/fine_tuning/jobs/$id$route", 'bob');
            is($b->{body}, $missing->{body},
               "another account's job$route: 404 exactly like a missing one");
        }
        is(api('POST', "/v1/fine_tuning/jobs/$id/cancel", 'bob')->{body},
           $missing->{body}, '... and its cancel');
        is_deeply(api('GET', '/v1/fine_tuning/jobs', 'bob')->{json}{data},
                  [], "bob's list: none of alice's jobs");
        is(api('GET', "/v1/fine_tuning/jobs/$id", 'ops')->{status}, 200,
           'an admin key sees any job');
        is(api('GET', '/v1/fine_tuning/jobs', undef)->{status}, 401,
           'no key: 401');

        my $f = $file{'sentiment-train.jsonl'}{id};
        $r = api('POST', '/v1/fine_tuning/jobs', 'bob',
                 { model => 'cls', training_file => $f });
        is(error_of($r), '404 file_not_found',
           "another account's training file: 404");
        my $m = api('POST', '/v1/fine_tuning/jobs', 'bob',
                    { model => 'cls', training_file => 'file-' . ('0' x 24) });
        (my $a = $r->{json}{error}{message}) =~ s/file-\w+/FILE/;
        (my $b = $m->{json}{error}{message}) =~ s/file-\w+/FILE/;
        is($a, $b, '... exactly like a missing one');
    },

    bad_requests => sub {
        my $f = $file{'sentiment-train.jsonl'}{id};
        my @cases = (
            [ { model => 'nope', training_file => $f },
              '400 model_not_found', 'an unknown base model' ],
            [ { model => 'cls', training_file => $f, task => 'ner' },
              '400 invalid_task', 'task ner on a sequence classifier' ],
            [ { model => 'ner', training_file => $f, task => 'classify' },
              '400 invalid_task', 'task classify on a token classifier' ],
            [ { model => 'cls', training_file => $f, task => 'x' },
              '400 invalid_value', 'an unknown task' ],
            [ { model => 'cls', training_file => $f, mode => 'half' },
              '400 invalid_value', 'an unknown mode' ],
            [ { model => 'cls', training_file => $f,
                hyperparameters => { n_epochs => 'many' } },
              '400 invalid_value', 'n_epochs not a number' ],
            [ { model => 'cls', training_file => $f,
                hyperparameters => { n_epochs => 0 } },
              '400 invalid_value', 'n_epochs 0' ],
            [ { model => 'cls', training_file => $f,
                hyperparameters => { batch_size => 1.5 } },
              '400 invalid_value', 'batch_size not an integer' ],
            [ { model => 'cls', training_file => $f,
                hyperparameters => { warmup => 1 } },
              '400 unknown_parameter', 'an unknown hyperparameter' ],
            [ { model => 'cls', training_file => $f,
                hyperparameters => { n_epochs => 2 },
                method => { type => 'supervised', supervised => {
                    hyperparameters => { n_epochs => 3 } } } },
              '400 invalid_value',
              'hyperparameters and method\'s that differ' ],
            [ { model => 'cls', training_file => $f,
                method => { type => 'supervised', supervised => 3 } },
              '400 invalid_value', 'method.supervised not an object' ],
            [ { model => 'cls', training_file => $f, epochs => 1 },
              '400 unknown_parameter', 'an unknown parameter' ],
            [ { model => 'cls', training_file => $f, suffix => 'a:b' },
              '400 invalid_value', 'a suffix with ":"' ],
            [ { model => 'cls', training_file => $f,
                integrations => [ { type => 'wandb',
                                    wandb => { project => 'p' } } ] },
              '400 invalid_value', 'an integration (none is supported)' ],
            [ { model => 'cls', training_file => $f, integrations => 'x' },
              '400 invalid_value', 'integrations not a list' ],
            [ { model => 'cls', training_file => $f, metadata => 'x' },
              '400 invalid_value', 'metadata not an object' ],
            [ { model => 'cls', training_file => $f,
                metadata => { a => 1 } },
              '400 invalid_value', 'a metadata value not a string' ],
            [ { model => 'cls', training_file => $f,
                metadata => { a => { b => 'c' } } },
              '400 invalid_value', 'a metadata value an object' ],
            [ { model => 'cls', training_file => $f,
                metadata => { map { ("k$_" => 'v') } 1 .. 17 } },
              '400 invalid_value', '17 metadata keys' ],
            [ { model => 'cls', training_file => $f,
                metadata => { 'k' x 65 => 'v' } },
              '400 invalid_value', 'a metadata key of 65 characters' ],
            [ { model => 'cls', training_file => $f,
                metadata => { a => 'v' x 513 } },
              '400 invalid_value', 'a metadata value of 513 characters' ],
            [ { model => 'cls' },
              '400 missing_required_parameter', 'no training_file' ],
            [ { training_file => $f },
              '400 missing_required_parameter', 'no model' ],
            [ { model => 'cls', training_file => $f,
                validation_file => 'file-x' },
              '404 file_not_found', 'an unknown validation_file' ],
            [ '{"model": ', '400 invalid_json', 'invalid JSON' ],
            [ '[]', '400 invalid_json', 'not an object' ],
        );
        for my $c (@cases) {
            is(error_of(api('POST', '/v1/fine_tuning/jobs', 'alice', $c->[0])),
               $c->[1], "$c->[2]: $c->[1]");
        }
        is(error_of(api('PUT', '/v1/fine_tuning/jobs', 'alice')),
           '405 method_not_allowed', 'PUT: 405');
        is(error_of(api('GET', "/v1/fine_tuning/jobs/$job{senti}{id}/cancel",
                        'alice')),
           '405 method_not_allowed', 'GET cancel: 405');
        is(error_of(api('GET', "/v1/fine_tuning/jobs/$job{senti}{id}/x",
                        'alice')), '404 not_found', 'an unknown route: 404');
        is(error_of(api('GET', '/v1/fine_tuning/jobs?limit=0', 'alice')),
           '400 invalid_value', 'limit=0: 400');
        is(error_of(api('POST', "/v1/fine_tuning/jobs/$job{senti}{id}/cancel",
                        'alice')),
           '400 job_not_cancellable', 'cancel of a succeeded job: 400');
    },

    bad_file => sub {
        my $r = api('POST', '/v1/fine_tuning/jobs', 'alice',
                    { model => 'cls', training_file => $file{bad}{id} });
        is($r->{status}, 200, 'a file that failed validation: created');
        is($r->{json}{status}, 'failed', '... failed');
        is_deeply($r->{json}{error},
                  { code => 'invalid_training_file',
                    message => 'bad.jsonl:2: field "text": empty text',
                    param => 'training_file' },
                  '... with the line and reason');
        ok($r->{json}{finished_at}, '... finished');
        my @ev = all_events('alice', $r->{json}{id});
        is($ev[0]{level}, 'error', '... an error event');
        is($ev[0]{message}, 'bad.jsonl:2: field "text": empty text',
           '... with the reason');
    },

    cancel_limit => sub {
        my $f = $file{'sentiment-train.jsonl'}{id};
        my @ids;
        for (1 .. 3) {
            my $r = api('POST', '/v1/fine_tuning/jobs', 'carol',
                        { %$long, training_file => $f });
            is($r->{status}, 404, "carol cannot use alice's file");
        }
        my $cf = upload('carol', 'train.jsonl',
                        slurp("$root/t/data/train/sentiment-train.jsonl"));
        for (1 .. 3) {
            my $r = api('POST', '/v1/fine_tuning/jobs', 'carol',
                        { %$long, training_file => $cf->{id} });
            is($r->{status}, 200, "carol's job $_");
            push @ids, $r->{json}{id};
        }
        my $r = api('POST', '/v1/fine_tuning/jobs', 'carol',
                    { %$long, training_file => $cf->{id} });
        is(error_of($r), '429 too_many_jobs', 'a fourth: 429');

        # the first is running: cancel it within one chunk
        my $j = wait_job('carol', $ids[0], sub {
            ($_[0]{trained_tokens} // 0) > 0 });
        is($j->{status}, 'running', 'the first job runs');
        $r = api('POST', "/v1/fine_tuning/jobs/$ids[0]/cancel", 'carol');
        is($r->{json}{status}, 'cancelled', 'cancel: cancelled at once');
        ok($r->{json}{finished_at}, '... finished_at');
        my $at = $r->{json}{trained_tokens};
        Time::HiRes::sleep(1);
        my @ev = all_events('carol', $ids[0]);
        is($ev[0]{message}, 'Fine-tuning job cancelled',
           '... no event after the cancel: the next chunk stopped');
        $j = api('GET', "/v1/fine_tuning/jobs/$ids[0]", 'carol')->{json};
        is($j->{trained_tokens}, $at, '... nor any progress');
        is($j->{status}, 'cancelled', '... still cancelled');
        $r = api('POST', "/v1/fine_tuning/jobs/$ids[0]/cancel", 'carol');
        is(error_of($r), '400 job_not_cancellable', 'cancel again: 400');
        is($r->{json}{error}{message},
           'the job cannot be cancelled: its status is cancelled',
           '... saying why');
        for my $id (@ids[1, 2]) {
            is(api('POST', "/v1/fine_tuning/jobs/$id/cancel", 'carol')
               ->{json}{status}, 'cancelled', 'cancel the others');
        }
        is(api('POST', '/v1/fine_tuning/jobs', 'carol',
               { model => 'cls', training_file => $cf->{id},
                 hyperparameters => { n_epochs => 1 } })->{status},
           200, 'cancelled jobs no longer count: a new one');
    },

    reload => sub {
        my $copy = upload('alice', 'sentiment-train.jsonl',
                          slurp("$root/t/data/train/sentiment-train.jsonl"));
        my $r = api('POST', '/v1/fine_tuning/jobs', 'alice',
                    { %$long, training_file => $copy->{id} });
        my $id = $r->{json}{id};
        my $j = wait_job('alice', $id, sub {
            ($_[0]{trained_tokens} // 0) > 0 });
        is($j->{status}, 'running', 'reload: the job runs');
        is(api('DELETE', "/v1/files/$copy->{id}", 'alice')->{status}, 200,
           'its training file deleted while it runs (the job keeps a copy)');
        kill 'HUP', master_pid();
        $j = wait_job('alice', $id, \&final);
        is($j->{status}, 'succeeded', 'after a reload: it completes');
        my @ev = all_events('alice', $id);
        my ($exit) = grep { $_->{message} =~ /^Worker \d+ exiting/ } @ev;
        ok($exit, 'the exiting worker stopped between two chunks');
        my ($step) = ($exit->{message} // '') =~ /from step (\d+)/;
        $step //= -1;
        ok(grep({ index($_->{message}, "Resumed from the checkpoint at "
                                       . "step $step ") == 0 } @ev),
           "another worker resumed from the step it saved ($step)");
        my @steps = map { $_->{data}{step} } metrics(@ev);
        is($steps[-1], total_steps(@ev), 'every step trained, once: the last');
        ok(slurp("$store/jobs/$id/model/model.safetensors")
           eq reference_model('sentiment-train.jsonl', undef, 40, 1),
           'the model: bit for bit an uninterrupted run\'s');
        my %n;
        ok(!grep({ $n{$_}++ } @steps), '... none twice');
    },

    billing => sub {
        # every job ends (carol's last one trains meanwhile)
        for my $who ('alice', 'carol') {
            for my $j (@{ api('GET', '/v1/fine_tuning/jobs?limit=100',
                              $who)->{json}{data} }) {
                wait_job($who, $j->{id}, \&final);
            }
        }
        Time::HiRes::sleep(0.5);
        my ($rc, $out) = meter_cli($db, 'usage', '--json');
        my %ledger;
        for my $row (map { JSON::PP::decode_json($_) } split /\n/, $out) {
            $ledger{$row->{key_id}}{$row->{model}}{$_} += $row->{$_}
                for qw(trained_tokens cost_micro);
        }
        for my $who ('alice', 'carol') {
            my $trained = 0;
            for my $j (@{ api('GET', '/v1/fine_tuning/jobs?limit=100',
                              $who)->{json}{data} }) {
                $trained += $j->{trained_tokens} // 0 if $j->{model} eq 'cls';
            }
            my $row = $ledger{$id{$who}}{cls};
            ok($trained > 0, "$who trained tokens on cls ($trained)");
            is($row->{trained_tokens}, $trained,
               "$who: the ledger's trained tokens are the jobs' (cancelled "
               . "ones pay for what they trained)");
            is($row->{cost_micro}, 2 * $trained,
               "$who: charged at the training price (2 per token)");
        }

        my $f = upload('dave', 'train.jsonl',
                       slurp("$root/t/data/train/sentiment-train.jsonl"));
        my $r = api('POST', '/v1/fine_tuning/jobs', 'dave',
                    { model => 'cls', training_file => $f->{id} });
        is(error_of($r), '429 insufficient_quota',
           "over the key's budget (500 tokens, the file's $f->{tokens} x 3 "
           . 'epochs): 429');
        is($r->{json}{error}{type}, 'insufficient_quota', '... its type');
        is_deeply(api('GET', '/v1/fine_tuning/jobs', 'dave')->{json}{data},
                  [], '... no job made');
        $r = api('POST', '/v1/fine_tuning/jobs', 'dave',
                 { model => 'cls', training_file => $f->{id},
                   hyperparameters => { n_epochs => 1 } });
        ok($r->{status} == 200 || $f->{tokens} > 500,
           'one epoch fits the budget');
        wait_job('dave', $r->{json}{id}, \&final) if $r->{status} == 200;
    },

    kill9 => sub {
        my $r = api('POST', '/v1/fine_tuning/jobs', 'alice',
                    { %$long, training_file =>
                          $file{'sentiment-train.jsonl'}{id} });
        my $id = $r->{json}{id};
        my $c;
        for (1 .. 600) {
            $c = api('GET', "/v1/fine_tuning/jobs/$id/checkpoints",
                     'alice')->{json};
            last if @{ $c->{data} };
            Time::HiRes::sleep(0.05);
        }
        my ($started) = grep { $_->{message} =~ /^Fine-tuning job started/ }
                        all_events('alice', $id);
        my ($pid) = ($started->{message} // '') =~ /worker (\d+)/;
        ok($pid && kill(0, $pid), "the worker running it ($pid)");
        kill 'KILL', $pid;
        my $j = wait_job('alice', $id, \&final);
        is($j->{status}, 'succeeded', 'after kill -9: it completes');
        my @ev = all_events('alice', $id);
        my ($res) = grep { $_->{message} =~ /^Resumed from the checkpoint/ }
                    @ev;
        my ($step) = ($res->{message} // '') =~ /step (\d+) /;
        my %ck = map { $_->{step_number} => 1 }
                 all_events('alice', $id, 'checkpoints');
        ok($step && $ck{$step},
           "resumed by another worker from a checkpoint ($step)");
        ok($step >= $c->{data}[0]{step_number},
           '... the last one before the kill or later');
        my @steps = map { $_->{data}{step} } metrics(@ev);
        is($steps[-1], total_steps(@ev), 'the last step trained');
        ok(slurp("$store/jobs/$id/model/model.safetensors")
           eq reference_model('sentiment-train.jsonl', undef, 40, 1),
           'the model: bit for bit an uninterrupted run\'s');
        is(scalar @{ $j->{result_files} }, 1,
           'no validation file: one result file, the step metrics');
        my (undef, $content) = result_files('alice', $j);
        my (undef, @rows) = csv_rows($content->{'step_metrics.csv'});
        my %uniq = map { $_ => 1 } @steps;
        is_deeply([ map { $_->{step} } @rows ],
                  [ sort { $a <=> $b } keys %uniq ],
                  '... a row per step, once, the steps trained again '
                  . 'included');
    },

    migrated => sub {
        my $want = JSON::PP::decode_json(
            slurp("$root/t/data/files-v1/files.json"));
        my $r = api('GET', '/v1/files?order=asc', 'ops');
        is_deeply($r->{json}{data}, $want->{data},
                  'a store of version 1: every file as the old store '
                  . 'listed it');
        my $f = $want->{data}[0];
        is(api('GET', "/v1/files/$f->{id}/content", 'alice')->{body},
           slurp("$root/t/data/files-v1/$f->{id}"),
           "its content, for its account (alice's)");
        is(api('GET', "/v1/files/$want->{data}[3]{id}", 'alice')->{status},
           404, "bob's file: 404 for alice");
        my $n = upload('alice', 'classify.jsonl',
                       slurp("$root/t/data/train/classify.jsonl"));
        is($n->{status}, 'processed', 'a new upload beside them');
        is(scalar @{ api('GET', '/v1/files', 'ops')->{json}{data} }, 5,
           'five files listed');
    },
);

add_response_body_check(sub {
    my ($block) = @_;
    my $name = $block->ft_check or return;
    $name =~ s/\s+//g;
    $checks{$_}->() for split /,/, $name;
});

run_tests();

my @hits = meter_keys_in_logs($logs, server_root() . '/logs');
is(scalar @hits, 0, 'no API key in the logs of this suite')
    or Test::More::diag(Test::More::explain(\@hits));

__DATA__

=== TEST 1: upload, train, events, checkpoints, report
--- request
GET /t
--- ft_check: upload, train
--- response_body
ok
--- error_log eval
qr/aiserve fine-tuning: ftjob-\w+ claimed by worker \d+/
--- no_error_log
[error]



=== TEST 2: NER; a file whose kind does not fit the task fails when it starts
--- request
GET /t
--- ft_check: ner
--- response_body
ok
--- no_error_log
[error]



=== TEST 3: a validation file whose labels are not the training file's
--- request
GET /t
--- ft_check: valid_labels
--- response_body
ok
--- no_error_log
[error]



=== TEST 4: head and lora modes
--- request
GET /t
--- ft_check: modes
--- response_body
ok
--- no_error_log
[error]



=== TEST 5: list, after, limit; another account's job is a 404 like a missing one
--- request
GET /t
--- ft_check: list_acl
--- response_body
ok
--- no_error_log
[error]



=== TEST 6: bad requests
--- request
GET /t
--- ft_check: bad_requests
--- response_body
ok
--- no_error_log
[error]



=== TEST 7: a file that failed validation: the job fails with the line and reason
--- request
GET /t
--- ft_check: bad_file
--- response_body
ok
--- no_error_log
[error]



=== TEST 8: too many jobs (429); cancel within one chunk
--- request
GET /t
--- ft_check: cancel_limit
--- response_body
ok
--- no_error_log
[error]



=== TEST 9: a reload in the middle of a job whose file was deleted: it completes
--- request
GET /t
--- ft_check: reload
--- response_body
ok
--- no_error_log
[error]



=== TEST 10: kill -9 of the worker running a job: another resumes it
--- request
GET /t
--- ft_check: kill9
--- response_body
ok
--- error_log eval
qr/\[alert\] .* exited on signal 9/
--- no_error_log
[error]



=== TEST 11: training charges: reserved, settled, released; over budget: 429
--- request
GET /t
--- ft_check: billing
--- response_body
ok
--- no_error_log
[error]



=== TEST 12: a fine-tuning location needs aiserve_meter on
--- config
    location /v1/fine_tuning/jobs {
        aiserve_fine_tuning;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_fine_tuning" needs "aiserve_meter on" in its location/



=== TEST 13: aiserve_fine_tuning needs the store
--- http_config
    aiserve_meter_db $TEST_NGINX_METER_DB_070;
    aiserve_meter_zone meter070 1m;
--- config
    location /v1/fine_tuning/jobs {
        aiserve_meter on;
        aiserve_fine_tuning;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_fine_tuning" directive needs "aiserve_fine_tuning_store" before it in the http block/



=== TEST 14: aiserve_fine_tuning needs the files store
--- http_config
    aiserve_meter_db $TEST_NGINX_METER_DB_070;
    aiserve_meter_zone meter070 1m;
    aiserve_fine_tuning_store /nonexistent-070/ft;
--- config
    location /v1/fine_tuning/jobs {
        aiserve_meter on;
        aiserve_fine_tuning;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"aiserve_fine_tuning" directive needs "aiserve_files_store" before it in the http block \(the training files are the Files API's\)/



=== TEST 15: an invalid parameter of the store
--- http_config
    aiserve_fine_tuning_store /nonexistent-070/ft chunk_steps=0;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "chunk_steps=0" in "aiserve_fine_tuning_store"/



=== TEST 16: a lease under a second
--- http_config
    aiserve_fine_tuning_store /nonexistent-070/ft lease=500ms;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"lease=500ms" must be 1s or more in "aiserve_fine_tuning_store"/



=== TEST 17: a files store of version 1 is migrated at start
--- http_config
    aiserve_meter_db $TEST_NGINX_METER_DB_070 flush=100ms;
    aiserve_meter_zone meter070 1m;
    aiserve_files_store $TEST_NGINX_FILES_V1_070
        tokenizer=$TEST_NGINX_AISERVE_ROOT/models/all-MiniLM-L6-v2;
--- config
    location /v1/files {
        aiserve_meter on;
        aiserve_files;
    }
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- ft_check: migrated
--- response_body
ok
--- error_log
aiserve files: the store migrated to version 2 (4 records)
--- no_error_log
[error]



=== TEST 18: a map too small for the jobs' records (LMDB could not open it)
--- http_config
    aiserve_fine_tuning_store /nonexistent-070/ft map_size=64k;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"map_size=64k" must be 1m or more in "aiserve_fine_tuning_store"/
