-- wrk script: POST a new user per request, so every request is a real create (no 409s).
-- Each wrk thread numbers its own users to keep the bodies unique across threads.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
    thread:set("id", #threads)
    table.insert(threads, thread)
end

function init(args)
    thread_id = id
end

request = function()
    counter = counter + 1
    local body = string.format('{"id_in_service":"wrk-%d-%d@example.com","phone_number":"+3725%07d"}',
        thread_id, counter, counter % 10000000)
    return wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["Accept"] = "application/json",
        ["X-Service-Auth"] = "demo:demo",
    }, body)
end
