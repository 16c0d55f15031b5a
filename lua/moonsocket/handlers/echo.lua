-- moonsocket.handlers.echo: sends every message back as it came, text as
-- text and binary as binary (callback form: no coroutine per socket).
local _M = { _VERSION = "0.1.0" }

function _M.message(ws, msg, kind)
  ws:send(msg, kind)
end

return _M
