<?php
// PHP GearmanWorker (pecl gearman on libgearman) for the interop tests.
//
// Usage: php worker.php HOST PORT FUNCTION MODE [LOG] [GATE] [TIMEOUT]
//
// MODE says what each job does:
//   echo       return the workload unchanged (binary-safe)
//   events     sendData("data1"), sendWarning("warn1"), sendStatus(1, 2), sendData("data2"),
//              then return "done:" . workload
//   fail       sendFail()
//   exception  sendException("boom:" . workload)
//   hold       sendStatus(1, 4), wait until the file GATE exists, then return "held:" . workload
//   count      return "ok:" . workload
//   sleep      sleep for workload seconds (a decimal), then return "slept:" . workload
// TIMEOUT registers the function with CAN_DO_TIMEOUT (milliseconds).
// Every job appends one line "<pid> <function> <hex(workload)>" to LOG (if given) before it
// starts its work, so tests can count how often each job ran. The worker prints "ready" once
// its abilities are registered and loops forever; the tests kill it.

if ($argc < 5) {
    fwrite(STDERR, "usage: worker.php HOST PORT FUNCTION MODE [LOG] [GATE]\n");
    exit(2);
}
[$_, $host, $port, $function, $mode] = $argv;
$log = $argv[5] ?? '';
$gate = $argv[6] ?? '';
$timeout = (int)($argv[7] ?? 0);

$worker = new GearmanWorker();
$worker->addServer($host, (int)$port);
$handler = function (GearmanJob $job) use ($mode, $log, $gate, $function) {
    $workload = $job->workload();
    if ($log !== '') {
        file_put_contents($log, getmypid() . " $function " . bin2hex($workload) . "\n", FILE_APPEND | LOCK_EX);
    }
    switch ($mode) {
        case 'echo':
            return $workload;
        case 'events':
            $job->sendData("data1");
            $job->sendWarning("warn1");
            $job->sendStatus(1, 2);
            $job->sendData("data2");
            return "done:" . $workload;
        case 'fail':
            $job->sendFail();
            return null;
        case 'exception':
            $job->sendException("boom:" . $workload);
            return null;
        case 'hold':
            $job->sendStatus(1, 4);
            while (!file_exists($gate)) {
                usleep(20000);
            }
            return "held:" . $workload;
        case 'count':
            return "ok:" . $workload;
        case 'sleep':
            usleep((int)(floatval($workload) * 1000000));
            return "slept:" . $workload;
    }
    fwrite(STDERR, "unknown mode $mode\n");
    exit(2);
};
if ($timeout > 0) {
    $worker->addFunction($function, $handler, null, $timeout);
} else {
    $worker->addFunction($function, $handler);
}
echo "ready\n";
while (true) {
    if (!$worker->work()) {
        fwrite(STDERR, "work() failed: " . $worker->returnCode() . " " . $worker->error() . "\n");
        usleep(100000);
    }
}
