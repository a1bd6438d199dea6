<?php
// Mint a subscriber token (a JWT, HS256) as the app does per page view.
//
//   COMETBOX_JWT_SECRET_FILE=/etc/cometbox/jwt-secret php mint_token.php MAILBOX...
//
// With Composer, firebase/php-jwt does this in one call (see README.md).
// This file needs no Composer: it signs with PHP's own hash_hmac, since an
// HS256 JWT is exactly
// base64url(header) . "." . base64url(claims) . "." . base64url(HMAC-SHA256).
// TOKEN_TTL sets the lifetime in seconds (default 3600).

function base64url(string $bytes): string
{
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

function mint_token(array $mailboxes, string $secret, int $ttl = 3600): string
{
    $now = time();
    $header = base64url(json_encode(['alg' => 'HS256', 'typ' => 'JWT']));
    $claims = base64url(json_encode(['mailboxes' => array_values($mailboxes), 'exp' => $now + $ttl, 'nbf' => $now - 5]));
    $signature = base64url(hash_hmac('sha256', "$header.$claims", $secret, true));
    return "$header.$claims.$signature";
}

$mailboxes = array_slice($argv, 1);
$secretFile = getenv('COMETBOX_JWT_SECRET_FILE');
if (!$mailboxes || !$secretFile) {
    fwrite(STDERR, "usage: COMETBOX_JWT_SECRET_FILE=FILE php mint_token.php MAILBOX...\n");
    exit(2);
}
echo mint_token($mailboxes, trim(file_get_contents($secretFile)), (int) (getenv('TOKEN_TTL') ?: 3600)), "\n";
