#!/usr/bin/perl
# Perl Gearman::Client (CPAN Gearman 2.004) for the interop tests.
#
# Usage: perl client.pl HOST PORT COMMAND ARGS...
#   do FUNCTION WORKLOAD [UNIQ] [exc]
#        runs one foreground task with every callback set (exceptions => 1 with "exc");
#        prints "created HANDLE" once the server has answered JOB_CREATED, then (when the task
#        ends) JSON {"events": [[kind, data], ...], "result": ...}
#   file FUNCTION IN OUT   do_task with the bytes of file IN; writes the result to OUT
#   bg FUNCTION WORKLOAD [UNIQ]   dispatch_background; prints JSON {"handle": ...}
#   status HANDLE          get_status; prints JSON {"known":..,"running":..,"numerator":..,"denominator":..}
# Values are printed as they are (the tests pass ASCII through "do"; "file" keeps binary in files).
use strict;
use warnings;
use Gearman::Client;
use Gearman::Task;
use JSON::PP;

my ($host, $port, $command, @args) = @ARGV;
die "usage: client.pl HOST PORT COMMAND ARGS...\n" unless defined $command;
my $exc = grep { $_ eq 'exc' } @args;
@args = grep { $_ ne 'exc' } @args;
$| = 1;

my $client = Gearman::Client->new(job_servers => ["$host:$port"], exceptions => $exc ? 1 : 0);
my $json = JSON::PP->new->canonical;

sub slurp {
    my ($path) = @_;
    open(my $fh, '<:raw', $path) or die "cannot open $path: $!";
    local $/;
    my $data = <$fh>;
    close($fh);
    return $data;
}

if ($command eq 'do') {
    my ($function, $workload, $uniq) = @args;
    my @events;
    my %opts = (
        on_data      => sub { push @events, ['data',      ${ $_[0] }] },
        on_warning   => sub { push @events, ['warning',   ${ $_[0] }] },
        on_status    => sub { push @events, ['status',    "$_[0]/$_[1]"] },
        on_complete  => sub { push @events, ['complete',  ${ $_[0] }] },
        on_fail      => sub { push @events, ['fail',      defined $_[0] ? "$_[0]" : ''] },
        on_exception => sub { push @events, ['exception', "$_[0]"] },
        timeout      => 30,
    );
    $opts{uniq} = $uniq if defined $uniq && $uniq ne '';
    # do_task, split up so that the test learns when the server has answered JOB_CREATED.
    my $result;
    my $on_complete = $opts{on_complete};
    $opts{on_complete} = sub { $result = $_[0]; $on_complete->(@_) };
    my $taskset = $client->new_task_set;
    my $handle = $taskset->add_task(Gearman::Task->new($function, \$workload, \%opts));
    print "created ", (defined $handle ? $handle : ''), "\n";
    $taskset->wait(timeout => 30);
    print $json->encode({events => \@events, result => defined $result ? $$result : undef}), "\n";
}
elsif ($command eq 'file') {
    my ($function, $in, $out) = @args;
    my $data = slurp($in);
    my $result = $client->do_task($function, \$data, {timeout => 60});
    die "no result\n" unless defined $result;
    open(my $fh, '>:raw', $out) or die "cannot open $out: $!";
    print $fh $$result;
    close($fh);
    print $json->encode({length => length($$result)}), "\n";
}
elsif ($command eq 'bg') {
    my ($function, $workload, $uniq) = @args;
    my %opts;
    $opts{uniq} = $uniq if defined $uniq && $uniq ne '';
    my $handle = $client->dispatch_background($function, $workload, \%opts);
    print $json->encode({handle => $handle}), "\n";
}
elsif ($command eq 'status') {
    my $status = $client->get_status($args[0]);
    die "no status reply\n" unless $status;
    my ($num, $den) = @{ $status->progress || [0, 0] };
    print $json->encode({known => $status->known ? 1 : 0, running => $status->running ? 1 : 0,
                         numerator => $num + 0, denominator => $den + 0}), "\n";
}
else {
    die "unknown command $command\n";
}
