# aiserve_meter: accounts and the admin API (aiserve_admin).  An account's
# limits and model list apply to all of its keys (the stricter of key and
# account refuses); a suspended account's keys get 403; the admin API
# creates, lists, updates, suspends accounts and creates, rotates, revokes
# keys, with the CLI's validation, JSON errors and an audit trail; a normal
# key never reaches it, whatever the path; a rotated key's old secret is
# refused from the second its grace period ends; a version 1 ledger is
# migrated when nginx opens it and its keys keep working.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use AiserveTest qw(aiserve_http aiserve_http_concurrent);
use AiserveMeter qw(meter_db meter_cli meter_create_key meter_usage
                    meter_embed_request meter_log_dir meter_json
                    meter_keys_in_logs);
use File::Copy ();
use JSON::PP ();
use Time::HiRes ();

repeat_each(1);
no_shuffle();

my $db = meter_db('054');
my $v1 = meter_db('054-v1');
my $logs = meter_log_dir();
my $root = $ENV{TEST_NGINX_AISERVE_ROOT};

# a copy of the version 1 ledger (made by the code before accounts)
mkdir $v1 or die "mkdir $v1: $!";
for my $f (qw(data.mdb hmac.key)) {
    File::Copy::copy("$root/t/data/ledger-v1/$f", "$v1/$f")
        or die "copy $f: $!";
    chmod 0600, "$v1/$f";
}
my $fixture = JSON::PP::decode_json(do {
    local $/;
    open my $in, '<', "$root/t/data/ledger-v1/keys.json" or die $!;
    <$in>;
});

my (%key, %id);
($id{admin}, $key{admin}) = meter_create_key($db, '--name', 'ops', '--admin');
($id{user}, $key{user}) = meter_create_key($db, '--name', 'user');

# acct_3: 30 tokens a minute for all of its keys; two keys without limits
my ($rc) = meter_cli($db, 'account', 'create', '--name', 'shared',
                     '--tpm', 30, '--models', 'tiny');
die "account create failed" if $rc;
($id{a1}, $key{a1}) = meter_create_key($db, '--account', 'acct_3',
                                       '--name', 'a1');
($id{a2}, $key{a2}) = meter_create_key($db, '--account', 'acct_3',
                                       '--name', 'a2', '--tpm', 1000);

add_block_preprocessor(sub {
    my $block = shift;
    # a zone holds the usage of one ledger: one zone name each
    my ($ledger, $zone) = $block->ledger ? ($v1, 'meter054v1')
                                         : ($db, 'meter054');
    $block->set_value(main_config => <<"EOC");
load_module $ENV{TEST_NGINX_AISERVE_MODULE};
error_log $logs/error.log info;
EOC
    $block->set_value(http_config => <<"EOC");
    access_log $logs/access.log;
    aiserve_model tiny $root/models/tiny-st-cls;
    aiserve_model tiny2 $root/models/tiny-st-max;
    aiserve_meter_db $ledger flush=100ms;
    aiserve_meter_zone $zone 1m;
EOC
    $block->set_value(config => <<"EOC") unless defined $block->config;
    location /v1/embeddings {
        aiserve_infer tiny api=openai;
        aiserve_meter on;
    }
    location /v2/embeddings {
        aiserve_infer tiny2 api=openai;
        aiserve_meter on;
    }
    location /admin/ {
        aiserve_admin;
    }
    location = /t {
        return 200 "ok\\n";
    }
EOC
});

sub embed {
    my ($secret, %opt) = @_;
    return aiserve_http(server_port(),
                        meter_embed_request($secret, $opt{input} // 'hello',
                                            %opt));
}

sub admin {
    my ($method, $path, $body, $secret) = @_;
    $secret //= $key{admin};
    my $r = aiserve_http(server_port(), {
        method  => $method,
        uri     => $path,
        headers => [ 'Authorization' => "Bearer $secret",
                     defined $body ? ('Content-Type' => 'application/json')
                                   : () ],
        defined $body ? (body => ref $body ? JSON::PP::encode_json($body)
                                           : $body) : (),
    });
    $r->{json} = meter_json($r->{body});
    return $r;
}

sub error_of {
    my ($r) = @_;
    my $j = $r->{json} // meter_json($r->{body});
    return "$r->{status} " . ($j->{error}{code} // '-');
}

my %checks = (
    account_limits => sub {
        # the account's 30 tokens a minute hold for both keys together
        my ($ok, $n) = (0, 0);
        my $last;
        while ($n < 40) {
            $last = embed($key{ $n % 2 ? 'a2' : 'a1' });
            last if $last->{status} != 200;
            $ok += meter_json($last->{body})->{usage}{prompt_tokens};
            $n++;
        }
        is($last->{status}, 429, "429 after $n requests of both keys");
        is(meter_json($last->{body})->{error}{code}, 'rate_limit_exceeded',
           '... rate_limit_exceeded');
        like(meter_json($last->{body})->{error}{message}, qr/account/,
             '... for the account: ' . meter_json($last->{body})->{error}{message});
        ok($ok <= 30 + 3 && $ok >= 30 - 6,
           "the account's tokens a minute used by two keys: $ok");
        ok($n >= 2, 'both keys were admitted before');

        my $r = embed($key{a1}, uri => '/v2/embeddings', model => 'tiny2');
        is(error_of($r), '403 model_not_allowed',
           "a model outside the account's list: 403");
        $r = embed($key{user}, uri => '/v2/embeddings', model => 'tiny2');
        is($r->{status}, 200, 'another account is not limited by it');

        ($rc) = meter_cli($db, 'account', 'suspend', 'acct_3');
        is($rc, 0, 'aiserve-keys account suspend');
        $r = embed($key{a2});
        is(error_of($r), '403 account_suspended',
           "a suspended account's key: 403");
        ($rc) = meter_cli($db, 'account', 'unsuspend', 'acct_3');
        $r = embed($key{a2}, uri => '/v2/embeddings', model => 'tiny2');
        is(error_of($r), '403 model_not_allowed',
           'unsuspended: the model list applies again');
    },

    admin_refused => sub {
        my @paths = ('/admin/accounts', '/admin//accounts',
                     '/admin/%2Faccounts', '/admin/accounts/',
                     '/v1/../admin/accounts', '/admin/./accounts',
                     '/admin/x/../accounts', '/admin/%61ccounts',
                     '/admin/keys/..%2Fkeys', '/admin/audit');
        for my $p (@paths) {
            for my $m ('GET', 'POST') {
                my $r = admin($m, $p, $m eq 'POST' ? { name => 'x' } : undef,
                              $key{user});
                is(error_of($r), '403 admin_key_required',
                   "a normal key: $m $p is 403");
            }
        }
        my $r = aiserve_http(server_port(), { uri => '/admin/accounts' });
        is($r->{status}, 401, 'no key: 401');
        $r = admin('GET', '/admin/accounts', undef,
                   'ais_live_' . ('A' x 38));
        is($r->{status}, 401, 'an unknown key: 401');
        my $l = admin('GET', '/admin/accounts');
        is(scalar(grep { $_->{name} eq 'x' } @{ $l->{json}{data} }), 0,
           'nothing was created by the refused requests');
    },

    admin_accounts => sub {
        my $r = admin('POST', '/admin/accounts',
                      { name => 'acme', tpm => 100000, budget => 5000000,
                        period => 'month', models => ['tiny'] });
        is($r->{status}, 201, 'POST accounts: 201');
        like($r->{json}{id}, qr/^acct_\d+$/, "id $r->{json}{id}");
        is_deeply([$r->{json}{name}, $r->{json}{tpm}, $r->{json}{budget},
                   $r->{json}{period}, $r->{json}{models},
                   $r->{json}{status}],
                  ['acme', 100000, 5000000, 'month', ['tiny'], 'active'],
                  'the account as created');
        my $acct = $r->{json}{id};

        for my $bad (
            [{ name => 'x', colour => 'red' }, '400 unknown_parameter',
             'an unknown field'],
            [{ budget => 10 }, '400 invalid_value', 'a budget without a period'],
            [{ tpm => -1 }, '400 invalid_value', 'a negative limit'],
            [{ tpm => 100000000000001 }, '400 invalid_value',
             'a limit over 10^14'],
            [{ tpm => '5' }, '400 invalid_value', 'a number as a string'],
            [{ rpm => 1.5 }, '400 invalid_value', 'a fraction'],
            [{ period => 'week' }, '400 invalid_value', 'an unknown period'],
            [{ models => 'tiny' }, '400 invalid_value',
             'models not an array'],
            [{ name => 'n' x 64 }, '400 invalid_value', 'a name too long'],
            ['{"name": ', '400 invalid_json', 'broken JSON'],
            ['[1]', '400 invalid_json', 'not an object'],
            ['{"name":"a","name":"b"}', '400 invalid_json',
             'a duplicate field'])
        {
            $r = admin('POST', '/admin/accounts', $bad->[0]);
            is(error_of($r), $bad->[1], "$bad->[2]: $bad->[1]");
            ok(defined $r->{json}{error}{message}, '... with a message: '
               . ($r->{json}{error}{message} // ''));
        }
        $r = admin('POST', '/admin/accounts', { tpm => -1 });
        is($r->{json}{error}{param}, 'tpm', 'the error names the field');

        $r = admin('GET', "/admin/accounts/$acct");
        is($r->{json}{id}, $acct, 'GET accounts/ID');
        $r = admin('GET', '/admin/accounts/acct_99999');
        is(error_of($r), '404 not_found', 'a missing account: 404');
        $r = admin('GET', '/admin/nothing');
        is(error_of($r), '404 not_found', 'an unknown route: 404');
        $r = admin('POST', '/admin/accounts', { name => "a\nb" });
        is(error_of($r) . " $r->{json}{error}{param}",
           '400 invalid_value name',
           'a name with a control character: 400');
        $r = admin('GET', "/admin/accounts/$acct");
        is($r->{headers}{'cache-control'}, 'no-store',
           'admin answers are cached nowhere');
        $r = admin('PUT', "/admin/accounts/$acct");
        is(error_of($r), '405 method_not_allowed', 'PUT: a JSON 405');
        is($r->{headers}{allow},
           'GET, HEAD, POST, DELETE', '... with Allow');
        $r = admin('PATCH', "/admin/keys");
        is(error_of($r), '405 method_not_allowed', 'PATCH: a JSON 405');
        $r = admin('GET', "/admin/keys?account_id=$acct");
        is(error_of($r), '400 unknown_parameter',
           'a query string is never ignored (it would list every key)');

        $r = admin('POST', "/admin/accounts/$acct", { rpm => 60,
                                                       name => 'acme inc' });
        is_deeply([$r->{status}, $r->{json}{rpm}, $r->{json}{tpm},
                   $r->{json}{name}], [200, 60, 100000, 'acme inc'],
                  'update: fields given change, the others stay');

        $r = admin('GET', '/admin/accounts');
        ok(scalar(grep { $_->{id} eq $acct } @{ $r->{json}{data} }),
           'GET accounts lists it');
        my ($rc2, $out) = meter_cli($db, 'account', 'show', $acct);
        like($out, qr/acme inc/, 'aiserve-keys sees the change');

        # a key under the account: the secret once
        $r = admin('POST', "/admin/accounts/$acct/keys",
                   { name => 'prod', expires => '2020-01-01' });
        is(error_of($r), '400 invalid_value', 'an expiry in the past: 400');
        like($r->{json}{error}{message}, qr/in the past/,
             'the CLI\'s message: ' . $r->{json}{error}{message});
        $r = admin('POST', "/admin/accounts/$acct/keys",
                   { name => 'prod', expires => '+30d', type => 'test' });
        is($r->{status}, 201, 'POST accounts/ID/keys: 201');
        like($r->{json}{api_key}, qr/^ais_test_[A-Za-z0-9]{38}$/,
             'the secret, shown once');
        is($r->{json}{account_id}, $acct, 'under the account');
        is($r->{headers}{'cache-control'}, 'no-store',
           'the secret: Cache-Control: no-store');
        my ($kid, $secret) = ($r->{json}{id}, $r->{json}{api_key});
        $key{prod} = $secret;
        $id{prod} = $kid;
        $id{acme} = $acct;
        my $e = embed($secret);
        is($e->{status}, 200, 'the new key works');

        $r = admin('GET', "/admin/keys/$kid");
        is($r->{json}{id}, $kid, 'GET keys/ID');
        ok(!exists $r->{json}{api_key}, '... without the secret');
        $r = admin('GET', "/admin/accounts/$acct/keys");
        is_deeply([map { $_->{id} } @{ $r->{json}{data} }], [$kid],
                  'GET accounts/ID/keys');
        $r = admin('POST', "/admin/keys/$kid", { tpm => 5, bogus => 1 });
        is(error_of($r), '400 unknown_parameter',
           'key update with an unknown field');
        $r = admin('POST', "/admin/keys/$kid", { rpm => 100 });
        is($r->{json}{rpm}, 100, 'key update');

        $r = admin('POST', "/admin/accounts/$acct/suspend");
        is($r->{json}{status}, 'suspended', 'suspend');
        is(error_of(embed($secret)), '403 account_suspended',
           "the account's key: 403");
        $r = admin('POST', "/admin/accounts/$acct/unsuspend");
        is(embed($secret)->{status}, 200, 'unsuspended: 200');
    },

    rotate => sub {
        my $kid = $id{prod};
        my $old = $key{prod};
        my $e = embed($old);
        is($e->{status}, 200, 'before the rotation');
        my $r = admin('POST', "/admin/keys/$kid/rotate",
                      { grace_period => '31d' });
        is(error_of($r), '400 invalid_value', 'a grace over 30 days: 400');
        $r = admin('POST', "/admin/keys/$kid/rotate", { grace_period => 2 });
        is($r->{status}, 200, 'rotate with a grace of 2 s');
        is($r->{json}{id}, $kid, 'the same key id');
        my $new = $r->{json}{api_key};
        isnt($new, $old, 'a new secret');
        my $until = $r->{json}{previous_secret_expires_at};
        ok($until >= time + 1 && $until <= time + 3,
           "the old one valid until $until");

        # both work during the grace period; the old one, from $until on,
        # is refused (nginx's clock is read once per event loop turn: a
        # few milliseconds of slack)
        my (@ok, @refused);
        while (Time::HiRes::time() < $until + 1.5) {
            my $t0 = Time::HiRes::time();
            my $s = embed($old)->{status};
            my $t1 = Time::HiRes::time();
            push @{ $s == 200 ? \@ok : \@refused }, [$t0, $t1, $s];
            Time::HiRes::sleep(0.05);
        }
        ok(@ok && @refused, scalar(@ok) . ' accepted, then '
           . scalar(@refused) . ' refused');
        ok(!grep({ $_->[0] >= $until + 0.05 } @ok),
           'no request with the old secret accepted after its grace ended');
        ok(!grep({ $_->[1] < $until - 0.05 } @refused),
           'none refused before');
        ok(!grep({ $_->[2] != 401 } @refused), 'refused with 401');
        is(embed($new)->{status}, 200, 'the new secret works');

        Time::HiRes::sleep(0.35);
        my $u = meter_usage($db)->{$kid};
        ok($u->{requests} >= 2 + @ok,
           "the key's usage history continues under $kid: $u->{requests}");

        $r = admin('POST', "/admin/keys/$kid/revoke");
        is($r->{json}{status}, 'revoked', 'revoke');
        is(embed($new)->{status}, 401, 'a revoked key: 401');
        $r = admin('POST', "/admin/keys/$kid/rotate");
        is(error_of($r), '409 key_revoked', 'rotate a revoked key: 409');
    },

    audit => sub {
        my $r = admin('GET', '/admin/audit');
        my @mine = grep { $_->{actor} eq $id{admin} } @{ $r->{json}{data} };
        my %actions = map { $_->{action} => 1 } @mine;
        ok($actions{$_}, "audit: $_ by $id{admin}")
            for qw(account.create account.update account.suspend
                   account.unsuspend key.create key.update key.rotate
                   key.revoke);
        ok(!grep({ $_->{time} } @mine) && !grep({ !$_->{effective_at} } @mine),
           'each entry has its time');
        my ($rot) = grep { $_->{action} eq 'key.rotate' } @mine;
        is($rot->{detail}, 'grace_period=2', 'the rotation\'s grace period');
        my ($rc2, $out) = meter_cli($db, 'audit');
        like($out, qr/cli:\S+\s+account\.suspend\s+acct_3/,
             'the CLI\'s changes are in it too');
    },

    delete => sub {
        my $r = admin('POST', '/admin/accounts', { name => 'leaving' });
        my $acct = $r->{json}{id};
        my (@secret, @kid);
        for my $n (1, 2) {
            $r = admin('POST', "/admin/accounts/$acct/keys",
                       { name => "leaving-$n" });
            push @secret, $r->{json}{api_key};
            push @kid, $r->{json}{id};
        }
        is(embed($secret[0])->{status}, 200, 'a key of the account works');

        $r = admin('DELETE', "/admin/keys/$kid[0]");
        is($r->{status}, 200, "DELETE keys/$kid[0]: 200");
        ok($r->{json}{deleted} && $r->{json}{status} eq 'revoked',
           '... revoked, "deleted": true');
        is(embed($secret[0])->{status}, 401, 'its secret: 401');
        is(error_of(admin('DELETE', "/admin/keys/$kid[0]")),
           '409 key_revoked', 'DELETE of a revoked key: 409');
        is(error_of(admin('POST', "/admin/keys/$kid[0]",
                          { tpm => 5 })),
           '409 key_revoked', 'changing a revoked key: 409');
        is(error_of(admin('DELETE', '/admin/keys/key_99999')),
           '404 not_found', 'DELETE of an unknown key: 404');
        is(error_of(admin('DELETE', '/admin/audit')), '404 not_found',
           'DELETE of another route: 404');
        is(admin('DELETE', "/admin/keys/$kid[1]", undef, $secret[1])
           ->{status}, 403, 'DELETE with a normal key: 403');

        is(embed($secret[1])->{status}, 200, 'the other key still works');
        $r = admin('DELETE', "/admin/accounts/$acct");
        is($r->{status}, 200, "DELETE accounts/$acct: 200");
        is_deeply([$r->{json}{status}, $r->{json}{keys_revoked},
                   $r->{json}{deleted} ? 1 : 0], ['closed', 1, 1],
                  '... closed, its one active key revoked');
        is(embed($secret[1])->{status}, 401, 'its keys: 401');
        is(error_of(admin('DELETE', "/admin/accounts/$acct")),
           '409 account_closed', 'closed again: 409');
        is(error_of(admin('POST', "/admin/accounts/$acct/unsuspend")),
           '409 account_closed', 'a closed account is not reopened');
        is(error_of(admin('POST', "/admin/accounts/$acct/keys", {})),
           '409 account_closed', 'nor given a key');
        is(admin('GET', "/admin/accounts/$acct")->{json}{status}, 'closed',
           'GET shows it closed');

        Time::HiRes::sleep(0.35);
        my $u = meter_usage($db);
        ok($u->{$kid[0]}{requests} == 1 && $u->{$kid[1]}{requests} == 1,
           'their usage stays in the ledger');
        my $audit = admin('GET', '/admin/audit')->{json}{data};
        ok((grep { $_->{action} eq 'account.close'
                   && $_->{detail} eq 'keys_revoked=1' } @$audit),
           'the audit trail has the closing');
        my ($rc2, $out) = meter_cli($db, 'account', 'unsuspend', $acct);
        isnt($rc2, 0, 'aiserve-keys does not reopen it either');
    },

    migrated => sub {
        my $k = $fixture->{keys};
        my $r = embed($k->{key_1});
        is($r->{status}, 200, 'a key of the version 1 ledger works');
        is(embed($k->{key_3})->{status}, 401, 'its revoked key stays revoked');
        $r = embed($k->{key_2}, uri => '/v2/embeddings', model => 'tiny2');
        is($r->{status}, 200, 'its admin key, without a model list');
        $r = embed($k->{key_1}, uri => '/v2/embeddings', model => 'tiny2');
        is(error_of($r), '403 model_not_allowed',
           "key_1's model list still holds");
        my ($rc2, $out) = meter_cli($v1, 'account', 'list');
        is(scalar(() = $out =~ /^acct_\d/mg), 3,
           'three accounts, one per key');
        Time::HiRes::sleep(0.35);
        my $u = meter_usage($v1);
        is($u->{key_1}{requests}, 3 + 1,
           'key_1: its 3 old requests and the new one');
        is($u->{key_2}{prompt_tokens} > 8 ? 1 : 0, 1, 'key_2 counts on');
    },
);

add_response_body_check(sub {
    my ($block) = @_;
    my $name = $block->meter_check or return;
    $name =~ s/\s+//g;
    $checks{$name}->();
});

run_tests();

my @hits = meter_keys_in_logs($logs, server_root() . '/logs');
is(scalar @hits, 0, 'no API key in the logs of this suite')
    or Test::More::diag(Test::More::explain(\@hits));

__DATA__

=== TEST 1: an account's limits and model list hold for all of its keys
--- request
GET /t
--- meter_check: account_limits
--- response_body
ok
--- no_error_log
[error]



=== TEST 2: a normal key never reaches the admin API, whatever the path
--- request
GET /t
--- meter_check: admin_refused
--- response_body
ok
--- no_error_log
[error]



=== TEST 3: admin API: accounts and keys, validation, JSON errors
--- request
GET /t
--- meter_check: admin_accounts
--- response_body
ok
--- no_error_log
[error]



=== TEST 4: rotate: the old secret valid for its grace period, refused from its end
--- request
GET /t
--- meter_check: rotate
--- response_body
ok
--- timeout: 20
--- no_error_log
[error]



=== TEST 5: the audit trail: who, what, when
--- request
GET /t
--- meter_check: audit
--- response_body
ok
--- no_error_log
[error]



=== TEST 6: DELETE revokes a key, closes an account (its keys revoked, its usage kept)
--- request
GET /t
--- meter_check: delete
--- response_body
ok
--- no_error_log
[error]



=== TEST 7: a version 1 ledger, migrated when nginx opens it
--- ledger: v1
--- request
GET /t
--- meter_check: migrated
--- response_body
ok
--- no_error_log
[error]
