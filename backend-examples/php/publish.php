<?php
// Publish one message to a cometbox mailbox with phpredis (or predis).
//
//   php publish.php [--predis] MAILBOX [PAYLOAD]   # PAYLOAD omitted: read stdin
//
// Prints how many waiting subscribers the gateway handed the message to.
// Socket: COMETBOX_SOCKET (default /tmp/cometbox.sock).

$args = array_slice($argv, 1);
$usePredis = ($args[0] ?? '') === '--predis';
if ($usePredis) {
    array_shift($args);
}
if (count($args) < 1 || count($args) > 2) {
    fwrite(STDERR, "usage: php publish.php [--predis] MAILBOX [PAYLOAD]\n");
    exit(2);
}
[$mailbox] = $args;
$payload = $args[1] ?? stream_get_contents(STDIN);
$socket = getenv('COMETBOX_SOCKET') ?: '/tmp/cometbox.sock';

if ($usePredis) {
    // Debian's php-predis; with Composer: require 'vendor/autoload.php'.
    require_once 'Predis/autoload.php';
    $redis = new Predis\Client(['scheme' => 'unix', 'path' => $socket]);
} else {
    // phpredis (Debian php-redis, or pecl install redis).
    $redis = new Redis();
    $redis->connect($socket);
}
echo $redis->publish($mailbox, $payload), "\n";
