<?php
// PHP GearmanClient (pecl gearman on libgearman) for the interop tests.
//
// Usage: php client.php HOST PORT COMMAND ARGS...
//   do FUNCTION WORKLOAD [UNIQUE] [noexc]
//        doNormal; prints JSON {"code": returnCode, "result": ..., "handle": ...}.
//        With "noexc" the client does not enable the server's "exceptions" option.
//   tasks FUNCTION WORKLOAD [noexc]
//        one addTask with every callback set, runTasks; prints JSON {"events": [[kind, data], ...]}
//   file FUNCTION IN OUT  doNormal with the bytes of file IN, writes the result to OUT; prints JSON
//   many FUNCTION N       N addTask jobs "job-<i>" (unique "u-<i>") run concurrently; prints JSON
//                         {"complete": {workload: result}, "other": [...]}
//   bg FUNCTION WORKLOAD [UNIQUE]   doBackground; prints JSON {"code": ..., "handle": ...}
//   status HANDLE         jobStatus; prints JSON [known, running, numerator, denominator]
// Binary strings in the JSON output are hex-encoded under keys ending in "_hex".

[$_, $host, $port, $command] = $argv;
$args = array_slice($argv, 4);
$noexc = in_array('noexc', $args, true);
$args = array_values(array_filter($args, fn($a) => $a !== 'noexc'));

$client = new GearmanClient();
$client->addServer($host, (int)$port, !$noexc);
$client->setTimeout(30000);

function out($value) {
    echo json_encode($value, JSON_UNESCAPED_SLASHES), "\n";
}

switch ($command) {
    case 'do':
        $unique = $args[2] ?? null;
        $result = $client->doNormal($args[0], $args[1], $unique);
        out(['code' => $client->returnCode(), 'result_hex' => bin2hex((string)$result),
             'handle' => $client->doJobHandle()]);
        break;
    case 'tasks':
        $events = [];
        $rec = function ($kind) use (&$events) {
            return function (GearmanTask $t) use ($kind, &$events) {
                $item = [$kind, (string)$t->data()];
                if ($kind === 'status') {
                    $item = [$kind, $t->taskNumerator() . '/' . $t->taskDenominator()];
                }
                $events[] = $item;
            };
        };
        $client->setDataCallback($rec('data'));
        $client->setWarningCallback($rec('warning'));
        $client->setStatusCallback($rec('status'));
        $client->setCompleteCallback($rec('complete'));
        $client->setFailCallback($rec('fail'));
        $client->setExceptionCallback($rec('exception'));
        $client->addTask($args[0], $args[1]);
        $ok = $client->runTasks();
        out(['ok' => $ok, 'code' => $client->returnCode(), 'events' => $events]);
        break;
    case 'file':
        $data = file_get_contents($args[1]);
        $result = $client->doNormal($args[0], $data);
        file_put_contents($args[2], (string)$result);
        out(['code' => $client->returnCode(), 'length' => strlen((string)$result)]);
        break;
    case 'many':
        $complete = [];
        $other = [];
        $client->setCompleteCallback(function (GearmanTask $t) use (&$complete) {
            $complete[] = [$t->unique(), (string)$t->data()];
        });
        $client->setFailCallback(function (GearmanTask $t) use (&$other) {
            $other[] = ['fail', $t->unique()];
        });
        $client->setExceptionCallback(function (GearmanTask $t) use (&$other) {
            $other[] = ['exception', $t->unique()];
        });
        for ($i = 0; $i < (int)$args[1]; $i++) {
            $client->addTask($args[0], "job-$i", null, "u-$i");
        }
        $ok = $client->runTasks();
        out(['ok' => $ok, 'code' => $client->returnCode(), 'complete' => $complete, 'other' => $other]);
        break;
    case 'bg':
        $unique = $args[2] ?? null;
        $handle = $client->doBackground($args[0], $args[1], $unique);
        out(['code' => $client->returnCode(), 'handle' => $handle]);
        break;
    case 'status':
        out($client->jobStatus($args[0]));
        break;
    default:
        fwrite(STDERR, "unknown command $command\n");
        exit(2);
}
