# What a Rails app adds to push live updates through cometbox. Not run by the
# tests (it needs a Rails app): the same calls as publish.rb and
# mint_token.rb, in the shape a Rails developer pastes.

# config/initializers/cometbox.rb
# One connection per process; redis-rb is thread-safe (wrap it in a
# ConnectionPool for Puma with many threads).
# Short timeouts and no reconnect attempt: a gateway that is down or stuck
# must cost half a second, not a multiple of it.
COMETBOX = Redis.new(path: ENV.fetch("COMETBOX_SOCKET", "/run/cometbox/cometbox.sock"),
                     connect_timeout: 0.5, read_timeout: 0.5, write_timeout: 0.5,
                     reconnect_attempts: 0)
COMETBOX_JWT_SECRET = File.binread(ENV.fetch("COMETBOX_JWT_SECRET_FILE", "/etc/cometbox/jwt-secret")).strip

# app/jobs/notify_user_job.rb: publish after the transaction, off the request.
# A live update is a courtesy: the order is shipped whether or not a browser
# hears of it now (a page that reconnects reloads its state). So a gateway
# that is down is logged and the job is done, not retried into a stale
# notification minutes later.
class NotifyUserJob < ApplicationJob
  queue_as :default

  def perform(user_id, event)
    COMETBOX.publish("user:#{user_id}", event.to_json)
  rescue Redis::BaseConnectionError => e # CannotConnectError, TimeoutError, ConnectionError
    Rails.logger.warn("cometbox: user:#{user_id} not told (#{e.class}: #{e.message})")
  rescue Redis::CommandError => e # refused: too large, a bad mailbox name, a full store
    Rails.logger.warn("cometbox: user:#{user_id} refused: #{e.message}")
  end
end

# app/controllers/orders_controller.rb
class OrdersController < ApplicationController
  def ship
    order = current_user.orders.find(params[:id])
    Order.transaction do
      order.ship!
      # Enqueued after COMMIT (Rails 7.2 does this for every job by default;
      # older: `after_commit` on the model), so a rolled-back ship tells
      # nobody and a browser that reloads finds the order shipped.
      ActiveRecord.after_all_transactions_commit do
        NotifyUserJob.perform_later(order.user_id, { type: "order.shipped", order: order.id })
      end
    end
    head :no_content
  end
end

# app/helpers/cometbox_helper.rb: the token and URL the page subscribes with.
module CometboxHelper
  def cometbox_token(*mailboxes, ttl: 1.hour)
    JWT.encode({ mailboxes: mailboxes, exp: ttl.from_now.to_i }, COMETBOX_JWT_SECRET, "HS256")
  end
end

# app/views/dashboard/show.html.erb
#   <script src="<%= ENV["COMETBOX_URL"] %>/cometbox.js"></script>
#   <script>
#     cometbox.subscribe("/mailbox/<%= u "user:#{current_user.id}" %>", {
#       baseUrl: "<%= ENV["COMETBOX_URL"] %>",
#       token: "<%= cometbox_token("user:#{current_user.id}") %>",
#       onMessage(data) { showNotification(JSON.parse(data)) },
#     });
#   </script>
