-- The app of pipeline_spec's last tests: a pipeline that is one function
-- given to core.listen, without moonsocket.app.  Its request's headers
-- are made when first read, as an app's are.
local core = require "moonsocket.core"
local moonsocket = require "moonsocket"

local server = assert(core.listen {
  host = "127.0.0.1",
  port = tonumber(os.getenv("PORT")),
  handler = function(req)
    return 200, {}, (req.headers["x-who"] or "?") .. " " .. req.headers.host
      .. "\n"
  end,
  options = { log_level = "error" },
})
-- the line spec/helper.lua waits for, which app:listen writes
local host, port = server:address()
io.stderr:write("moonsocket: listening on ", host, ":", port, "\n")
moonsocket.run()
