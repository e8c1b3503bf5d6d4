-- wrk script for benches/versus_nginx.rs: every connection requests the paths
-- listed in a file in turn, so a run touches every index file instead of one
-- hot URL.
--
--   wrk -s benches/rotate_paths.lua URL -- PATHS_FILE [gzip]
--
-- PATHS_FILE holds one path per line (e.g. /index/se/rd/serde). With "gzip"
-- every request carries `Accept-Encoding: gzip`, as cargo sends it.
--
-- Each wrk thread has its own Lua state: it reads the file once, builds every
-- request string up front (so the load generator spends its CPU on sockets,
-- not on formatting), and starts at its own offset so that the threads do not
-- walk the list in step.

local thread_count = 0

-- Runs in the main state once per thread, before the threads start.
function setup(thread)
   thread:set("thread_id", thread_count)
   thread_count = thread_count + 1
end

local requests = {}
local next_request = 1

function init(args)
   local paths_file = args[1]
   if paths_file == nil then
      error("rotate_paths.lua: pass the paths file after `--`")
   end
   if args[2] == "gzip" then
      wrk.headers["Accept-Encoding"] = "gzip"
   end
   for line in io.lines(paths_file) do
      if line ~= "" then
         requests[#requests + 1] = wrk.format("GET", line)
      end
   end
   if #requests == 0 then
      error("rotate_paths.lua: no paths in " .. paths_file)
   end
   -- `thread_id` is set by setup(); spread the threads over the list.
   local id = thread_id or 0
   next_request = (id * 7919) % #requests + 1
end

function request()
   local r = requests[next_request]
   next_request = next_request % #requests + 1
   return r
end
