-- wrk script for POST /api/v1/auth/refresh (benches/load_rows.sh,
-- benches/scale.sh): refresh tokens rotate, so each is used once, as a
-- client does. Arguments: a file of refresh tokens (one a line, at least
-- connections + threads of them) and the number of wrk threads. Each
-- thread keeps its share of the tokens as a pool and puts back the new
-- token of every answer. One spare per thread: wrk calls the first
-- thread's request() once before it starts, to check the script, and
-- that token is never sent. With a third argument, each thread appends
-- the access token of every answer to that path with ".<thread>" added
-- (benches/scale.sh mints distinct valid access tokens this way).
local next_id = 0
function setup(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
end

function init(args)
    pool = {}
    local n, threads = 0, tonumber(args[2])
    for line in io.lines(args[1]) do
        if n % threads == id then pool[#pool + 1] = line end
        n = n + 1
    end
    if args[3] then
        out = io.open(args[3] .. "." .. id, "a")
        out:setvbuf("line")
    end
end

local empty = false
request = function()
    local t = table.remove(pool)
    if t == nil then
        t = "00000000-0000-0000-0000-000000000000.none"
        if not empty then
            empty = true
            io.stderr:write("a wrk thread ran out of refresh tokens\n")
        end
    end
    return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, '{"refresh_token":"' .. t .. '"}')
end

local shown = 0
response = function(status, headers, body)
    local t = body:match('"refresh_token":"([^"]+)"')
    if t then
        pool[#pool + 1] = t
        if out then out:write(body:match('"access_token":"([^"]+)"'), "\n") end
    elseif shown < 3 then -- the first failures of each thread, for the log
        shown = shown + 1
        io.stderr:write("refresh answered " .. status .. ": " .. body:sub(1, 200) .. "\n")
    end
end
