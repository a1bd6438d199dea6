#!/usr/bin/env ruby
# Mint a subscriber token (a JWT) with ruby-jwt, as the app does per page view.
#
#   COMETBOX_JWT_SECRET_FILE=/etc/cometbox/jwt-secret ruby mint_token.rb MAILBOX...
#
# HS256 with the secret the gateway reads from auth.jwt-secret-file.
# TOKEN_TTL sets the lifetime in seconds (default 3600). A name ending in '*'
# grants a prefix ("room:*").
require "jwt"

abort "usage: COMETBOX_JWT_SECRET_FILE=FILE ruby mint_token.rb MAILBOX..." if ARGV.empty? || !ENV["COMETBOX_JWT_SECRET_FILE"]
secret = File.binread(ENV["COMETBOX_JWT_SECRET_FILE"]).strip
now = Time.now.to_i
claims = { mailboxes: ARGV, exp: now + Integer(ENV.fetch("TOKEN_TTL", "3600")), nbf: now - 5 }
puts JWT.encode(claims, secret, "HS256")
