<?php
// What a Laravel (or plain PHP) app adds to push live updates through
// cometbox. Not run by the tests (no Laravel here): the same calls as
// publish.php and mint_token.php, in the shape a Laravel developer pastes.

// config/database.php: a second Redis connection pointing at the gateway.
//     'redis' => [
//         'client' => 'phpredis',            // or 'predis'
//         'cometbox' => [
//             'scheme' => 'unix',            // predis
//             'path' => env('COMETBOX_SOCKET', '/run/cometbox/backend.sock'),
//             'host' => env('COMETBOX_SOCKET', '/run/cometbox/backend.sock'), // phpredis takes the path as host
//             'port' => 0,
//         ],
//     ],

use Firebase\JWT\JWT;                  // composer require firebase/php-jwt
use Illuminate\Support\Facades\Redis;

class OrderController extends Controller
{
    public function ship(Order $order)
    {
        $order->ship();
        Redis::connection('cometbox')->publish(
            "user:{$order->user_id}",
            json_encode(['type' => 'order.shipped', 'order' => $order->id])
        );
        return response()->noContent();
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

// Plain PHP, no framework:
//     $redis = new Redis();
//     $redis->connect('/run/cometbox/backend.sock');
//     $redis->publish('user:42', json_encode(['text' => 'hi']));
