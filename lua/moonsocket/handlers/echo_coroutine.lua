-- moonsocket.handlers.echo_coroutine: the echo handler in coroutine form,
-- a receive loop per connection.
return function(ws)
  while true do
    local msg, kind = ws:receive()
    if not msg then return end
    ws:send(msg, kind)
  end
end
