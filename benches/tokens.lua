-- wrk script for GET /api/v1/auth/verify over a working set of distinct
-- access tokens (benches/scale.sh, the validation cache curve).
-- Arguments: a file of access tokens, one a line, and how many of them to
-- use (n). Every thread cycles over all n, from its own offset, so the
-- node's validation cache holds the whole working set.
local next_id = 0
function setup(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
end

function init(args)
    tokens = {}
    local n = tonumber(args[2])
    for line in io.lines(args[1]) do
        if #tokens >= n then break end
        tokens[#tokens + 1] = "Bearer " .. line
    end
    i = (id * 7919) % #tokens
end

request = function()
    i = i % #tokens + 1
    return wrk.format(nil, nil, {["Authorization"] = tokens[i]})
end
