#!/usr/bin/perl
# Perl Gearman::Worker (CPAN Gearman 2.004) for the interop tests.
#
# Usage: perl worker.pl HOST PORT FUNCTION MODE [LOG] [GATE] [TIMEOUT]
#
# MODE says what each job does:
#   echo       return the workload unchanged (binary-safe)
#   events     send_work_data("data1"), send_work_warning("warn1"), set_status(1, 2),
#              send_work_data("data2"), then return "done:" . workload
#   fail       return undef (the worker sends WORK_FAIL)
#   exception  send_work_exception("boom:" . workload)
#   hold       set_status(1, 4), wait until the file GATE exists, then return "held:" . workload
#   count      return "ok:" . workload
#   sleep      sleep for workload seconds (a decimal), then return "slept:" . workload
# TIMEOUT registers the function with CAN_DO_TIMEOUT (the value as given, in milliseconds).
# Every job appends "<pid> <function> <hex(workload)>\n" to LOG (if given) when it starts. The
# worker prints "ready" once registered and loops forever; the tests kill it.
use strict;
use warnings;
use Gearman::Worker;
use Time::HiRes qw(usleep sleep);
use Fcntl qw(:flock);

my ($host, $port, $function, $mode, $log, $gate, $timeout) = @ARGV;
die "usage: worker.pl HOST PORT FUNCTION MODE [LOG] [GATE] [TIMEOUT]\n" unless defined $mode;
$| = 1;

my $worker = Gearman::Worker->new(job_servers => ["$host:$port"]);
my @timeout = (defined $timeout && $timeout ne '') ? ($timeout) : ();
$worker->register_function(
    $function => @timeout, sub {
        my $job      = shift;
        my $workload = $job->arg;
        if (defined $log && $log ne '') {
            open(my $fh, '>>', $log) or die "cannot open $log: $!";
            flock($fh, LOCK_EX);
            print $fh "$$ $function " . unpack('H*', $workload) . "\n";
            close($fh);
        }
        if ($mode eq 'echo')  { return $workload; }
        if ($mode eq 'count') { return "ok:$workload"; }
        if ($mode eq 'events') {
            $worker->send_work_data($job, "data1");
            $worker->send_work_warning($job, "warn1");
            # Gearman::Worker::send_work_status drops the denominator (a malformed
            # WORK_STATUS), so use Gearman::Job::set_status as real Perl workers do.
            $job->set_status(1, 2);
            $worker->send_work_data($job, "data2");
            return "done:$workload";
        }
        if ($mode eq 'fail') { return undef; }
        if ($mode eq 'sleep') {
            sleep($workload);
            return "slept:$workload";
        }
        if ($mode eq 'exception') {
            $worker->send_work_exception($job, "boom:$workload");
            return undef;
        }
        if ($mode eq 'hold') {
            $job->set_status(1, 4);
            usleep(20000) until -e $gate;
            return "held:$workload";
        }
        die "unknown mode $mode\n";
    }
);
print "ready\n";
$worker->work() while 1;
