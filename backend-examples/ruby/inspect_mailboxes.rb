#!/usr/bin/env ruby
# Ask the gateway about mailboxes with redis-rb's generic command call.
#
#   ruby inspect_mailboxes.rb numsub MAILBOX...   # subscribers per mailbox
#   ruby inspect_mailboxes.rb channels [PATTERN]  # mailboxes with subscribers
#   ruby inspect_mailboxes.rb del MAILBOX...      # drop retained mail
#   ruby inspect_mailboxes.rb info [SECTION]      # gateway statistics
#
# Prints the reply as JSON. Socket: COMETBOX_SOCKET (default /tmp/cometbox.sock).
require "json"
require "redis"

what, *args = ARGV
abort "usage: inspect_mailboxes.rb numsub|channels|del|info [ARGS...]" unless %w[numsub channels del info].include?(what)
redis = Redis.new(path: ENV.fetch("COMETBOX_SOCKET", "/tmp/cometbox.sock"))

reply =
  case what
  when "numsub" then redis.call("PUBSUB", "NUMSUB", *args).each_slice(2).to_h
  when "channels" then redis.call("PUBSUB", "CHANNELS", *args).sort
  when "del" then redis.call("DEL", *args)
  when "info"
    # INFO is text in "# Section" / "key:value" lines.
    redis.call("INFO", *args).lines.map(&:strip).reject { |l| l.empty? || l.start_with?("#") }
         .to_h { |l| l.split(":", 2) }
  end
puts JSON.generate(reply)
