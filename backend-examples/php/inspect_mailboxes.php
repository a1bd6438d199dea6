<?php
// Ask the gateway about mailboxes with the clients' generic command calls:
// phpredis rawCommand() or predis executeRaw().
//
//   php inspect_mailboxes.php [--predis] numsub MAILBOX...
//   php inspect_mailboxes.php [--predis] channels [PATTERN]
//   php inspect_mailboxes.php [--predis] del MAILBOX...
//   php inspect_mailboxes.php [--predis] info [SECTION]
//
// Prints the reply as JSON. Socket: COMETBOX_SOCKET (default /tmp/cometbox.sock).

$args = array_slice($argv, 1);
$usePredis = ($args[0] ?? '') === '--predis';
if ($usePredis) {
    array_shift($args);
}
$what = array_shift($args);
$commands = ['numsub' => ['PUBSUB', 'NUMSUB'], 'channels' => ['PUBSUB', 'CHANNELS'],
             'del' => ['DEL'], 'info' => ['INFO']];
if (!isset($commands[$what])) {
    fwrite(STDERR, "usage: php inspect_mailboxes.php [--predis] numsub|channels|del|info [ARGS...]\n");
    exit(2);
}
$command = array_merge($commands[$what], $args);
$socket = getenv('COMETBOX_SOCKET') ?: '/tmp/cometbox.sock';

if ($usePredis) {
    require_once 'Predis/autoload.php';
    $redis = new Predis\Client(['scheme' => 'unix', 'path' => $socket]);
    $reply = $redis->executeRaw($command);
} else {
    $redis = new Redis();
    $redis->connect($socket);
    $reply = $redis->rawCommand(...$command);
}

if ($what === 'numsub') {
    $pairs = [];
    for ($i = 0; $i < count($reply); $i += 2) {
        $pairs[$reply[$i]] = (int) $reply[$i + 1];
    }
    $reply = (object) $pairs;
} elseif ($what === 'channels') {
    sort($reply);
} elseif ($what === 'info') {
    // INFO is text in "# Section" / "key:value" lines.
    $fields = [];
    foreach (preg_split('/\r?\n/', $reply) as $line) {
        if ($line !== '' && $line[0] !== '#') {
            [$key, $value] = explode(':', $line, 2);
            $fields[$key] = $value;
        }
    }
    $reply = (object) $fields;
}
echo json_encode($reply), "\n";
