<?php
// What a Laravel (or plain PHP) app adds to push live updates through
// cometbox. Not run by the tests (it needs a Laravel app): the same calls as
// publish.php and mint_token.php, in the shape a Laravel developer pastes.

// config/database.php: a second Redis connection pointing at the gateway.
//     'redis' => [
//         'client' => 'phpredis',            // or 'predis'
//         'cometbox' => [
//             'scheme' => 'unix',            // predis
//             'path' => env('COMETBOX_SOCKET', '/run/cometbox/cometbox.sock'),
//             'host' => env('COMETBOX_SOCKET', '/run/cometbox/cometbox.sock'), // phpredis takes the path as host
//             'port' => 0,
//             'timeout' => 0.5,              // a gateway that is down costs milliseconds
//             'read_timeout' => 0.5,
//         ],
//     ],

use Firebase\JWT\JWT;                  // composer require firebase/php-jwt
use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Log;
use Illuminate\Support\Facades\Redis;

class OrderController extends Controller
{
    public function ship(Order $order)
    {
        DB::transaction(function () use ($order) {
            $order->ship();
            // After COMMIT: a rolled-back ship tells nobody, and a browser
            // that reloads on the message finds the order shipped.
            DB::afterCommit(fn () => self::notify(
                "user:{$order->user_id}",
                ['type' => 'order.shipped', 'order' => $order->id]
            ));
        });
        return response()->noContent();
    }

    // A live update is a courtesy: the order is shipped whether or not a
    // browser hears of it now (a page that reconnects reloads its state). So
    // a gateway that is down is logged and the request carries on.
    private static function notify(string $mailbox, array $event): void
    {
        try {
            Redis::connection('cometbox')->publish($mailbox, json_encode($event));
        } catch (\RedisException | \Predis\Connection\ConnectionException $e) {
            Log::warning("cometbox: {$mailbox} not told: {$e->getMessage()}");
        } catch (\Predis\Response\ServerException $e) { // predis: the gateway refused it
            Log::warning("cometbox: {$mailbox} refused: {$e->getMessage()}");
        }
    }

    public function dashboard()
    {
        $mailbox = 'user:' . auth()->id();
        $token = JWT::encode(
            ['mailboxes' => [$mailbox], 'exp' => time() + 3600],
            trim(file_get_contents(env('COMETBOX_JWT_SECRET_FILE'))),
            'HS256'
        );
        return view('dashboard', ['mailbox' => $mailbox, 'token' => $token]);
    }
}

// Plain PHP, no framework (phpredis throws RedisException when the gateway
// is down; publish() returns false when it refuses the message):
//     try {
//         $redis = new Redis();
//         $redis->connect('/run/cometbox/cometbox.sock', 0, 0.5);  // 0.5 s timeout
//         $redis->publish('user:42', json_encode(['text' => 'hi']));
//     } catch (RedisException $e) {
//         error_log("cometbox: user:42 not told: " . $e->getMessage());
//     }
