#!/usr/bin/env ruby
# Publish one message to a cometbox mailbox with redis-rb.
#
#   ruby publish.rb MAILBOX [PAYLOAD]    # PAYLOAD omitted: read stdin as bytes
#
# Prints how many waiting subscribers the gateway handed the message to.
# Socket: COMETBOX_SOCKET (default /tmp/cometbox.sock).
require "redis"

abort "usage: ruby publish.rb MAILBOX [PAYLOAD]" unless [1, 2].include?(ARGV.size)
mailbox = ARGV[0]
payload = ARGV[1] || $stdin.binmode.read

redis = Redis.new(path: ENV.fetch("COMETBOX_SOCKET", "/tmp/cometbox.sock"))
puts redis.publish(mailbox, payload)
