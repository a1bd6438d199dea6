# What a Rails app adds to push live updates through cometbox. Not run by the
# tests (no Rails here): the same calls as publish.rb and mint_token.rb, in
# the shape a Rails developer pastes.

# config/initializers/cometbox.rb
# One connection per process; redis-rb is thread-safe (wrap it in a
# ConnectionPool for Puma with many threads).
COMETBOX = Redis.new(path: ENV.fetch("COMETBOX_SOCKET", "/run/cometbox/backend.sock"))
COMETBOX_JWT_SECRET = File.binread(ENV.fetch("COMETBOX_JWT_SECRET_FILE", "/etc/cometbox/jwt-secret")).strip

# app/jobs/notify_user_job.rb: publish after the transaction, off the request.
class NotifyUserJob < ApplicationJob
  queue_as :default

  def perform(user_id, event)
    COMETBOX.publish("user:#{user_id}", event.to_json)
  end
end

# app/controllers/orders_controller.rb
class OrdersController < ApplicationController
  def ship
    order = current_user.orders.find(params[:id])
    order.ship!
    NotifyUserJob.perform_later(order.user_id, { type: "order.shipped", order: order.id })
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
